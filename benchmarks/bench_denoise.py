"""Quality and speed of `imgen denoise` against CBM3D and OpenCV non-local means.

    pip install bm3d opencv-python-headless      # benchmark-only peers, not imgen dependencies
    PYTHONPATH=plugins:. python benchmarks/bench_denoise.py [--crop 256] [--weights FILE]

Every held-out photo (imgen_cli.datasets.VALIDATION, never trained on) is centre-cropped, given
additive Gaussian noise at sigma 15, 25 and 50 (0-255 scale, fixed seed) and saved to 8 bits, as
a noisy PNG would be; every method denoises the same 8-bit image and is scored by PSNR against the
clean crop after its output is rounded to 8 bits. CBM3D (the `bm3d` package) is given the true
sigma; OpenCV's fastNlMeansDenoisingColored gets, per level, the h (= hColor) with the best mean
PSNR from a grid, an oracle choice in its favour. imgen runs with the true sigma and blind (its own
estimate, timing included), each without and with --tta (the mean over four flips). Seconds per
megapixel come from the same runs.
"""

from __future__ import annotations

import argparse
import time
from types import SimpleNamespace

import numpy as np
import torch

from imgen_cli.datasets import data_root, image_files, load_rgb, split
from imgen_cli.metrics import psnr
from imgen_denoise import WEIGHTS, _load, _prepare, _process

SIGMAS = (15, 25, 50)
NLM_FACTORS = (0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0)


def to_u8(x: np.ndarray) -> np.ndarray:
    return np.clip(np.round(x * 255), 0, 255).astype(np.uint8)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default=None, help="folder of photos (default: data_root()/photos)")
    ap.add_argument("--crop", type=int, default=256, help="centre crop side; 0 for whole photos (CBM3D is slow)")
    ap.add_argument("--weights", default=str(WEIGHTS / "ffdnet.safetensors"))
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--no-bm3d", action="store_true", help="skip CBM3D (minutes per level)")
    args = ap.parse_args()

    import cv2
    folder = args.data or data_root() / "photos"
    _, val_files = split(image_files(folder))
    cleans = []
    for path in val_files:
        im = load_rgb(path)
        if args.crop:
            h, w = im.shape[:2]
            y, x = max(0, (h - args.crop) // 2), max(0, (w - args.crop) // 2)
            im = im[y : y + args.crop, x : x + args.crop]
        cleans.append(np.ascontiguousarray(im))
    megapixels = sum(c.shape[0] * c.shape[1] for c in cleans) / 1e6

    # Channels-last, as the host loads it (the model declares channels_last).
    net = _load(args.weights).eval().to(memory_format=torch.channels_last)

    def imgen(noisy: np.ndarray, sigma: float | None, tta: bool = False) -> tuple[np.ndarray, float]:
        # The plugin's own prepare and process, with the few context fields they use.
        ctx = SimpleNamespace(options={"sigma": sigma, "strength": 1.0, "tta": tta}, state={}, info=lambda message: None,
                              model=lambda name=None: net)
        with torch.inference_mode():
            x = torch.from_numpy(noisy).permute(2, 0, 1)[None].float() / 255
            _prepare(x, ctx)
            y = _process(x, ctx).clamp(0, 1)[0].permute(1, 2, 0).numpy()
        return to_u8(y), ctx.state["sigma"] * 255

    scores: dict[str, dict[int, list[float]]] = {}
    seconds: dict[str, float] = {}
    estimates: dict[int, list[float]] = {s: [] for s in SIGMAS}

    def record(method: str, sigma: int, value: float, took: float) -> None:
        scores.setdefault(method, {s: [] for s in SIGMAS})[sigma].append(value)
        seconds[method] = seconds.get(method, 0.0) + took

    rng = np.random.default_rng(args.seed)
    nlm: dict[int, dict[float, list[float]]] = {s: {f: [] for f in NLM_FACTORS} for s in SIGMAS}
    nlm_time: dict[int, dict[float, float]] = {s: {f: 0.0 for f in NLM_FACTORS} for s in SIGMAS}
    for path, clean in zip(val_files, cleans):
        for sigma in SIGMAS:
            noisy = to_u8(clean / 255 + rng.normal(0, sigma / 255, clean.shape))
            record("noisy input", sigma, psnr(clean, noisy), 0.0)

            t = time.perf_counter()
            out, _ = imgen(noisy, sigma)
            record("imgen, true sigma", sigma, psnr(clean, out), time.perf_counter() - t)
            t = time.perf_counter()
            out, estimate = imgen(noisy, None)
            record("imgen, blind", sigma, psnr(clean, out), time.perf_counter() - t)
            estimates[sigma].append(estimate)
            for blind in (False, True):
                t = time.perf_counter()
                out, _ = imgen(noisy, None if blind else sigma, tta=True)
                record(f"imgen --tta, {'blind' if blind else 'true sigma'}", sigma, psnr(clean, out),
                       time.perf_counter() - t)

            if not args.no_bm3d:
                import bm3d

                t = time.perf_counter()
                out = bm3d.bm3d_rgb(noisy / 255.0, sigma / 255.0)
                record("CBM3D, true sigma", sigma, psnr(clean, to_u8(out)), time.perf_counter() - t)

            for f in NLM_FACTORS:
                h = f * sigma
                t = time.perf_counter()
                out = cv2.fastNlMeansDenoisingColored(noisy, None, h, h, 7, 21)
                nlm_time[sigma][f] += time.perf_counter() - t
                nlm[sigma][f].append(psnr(clean, out))
            print(f"{path.stem} sigma {sigma}: " + ", ".join(f"{m} {v[sigma][-1]:.2f}" for m, v in scores.items()),
                  flush=True)

    for sigma in SIGMAS:
        best = max(NLM_FACTORS, key=lambda f: np.mean(nlm[sigma][f]))
        scores.setdefault("OpenCV NLM, best h", {s: [] for s in SIGMAS})[sigma] = nlm[sigma][best]
        seconds["OpenCV NLM, best h"] = seconds.get("OpenCV NLM, best h", 0.0) + nlm_time[sigma][best]
        print(f"NLM best h at sigma {sigma}: {best * sigma:.1f}")

    crop = f"{args.crop}x{args.crop} centre crops" if args.crop else "whole photos"
    print(f"\n{len(cleans)} held-out photos ({', '.join(p.stem for p in val_files)}), {crop}, "
          f"torch threads {torch.get_num_threads()}\n")
    print("| method | " + " | ".join(f"sigma {s}" for s in SIGMAS) + " | s/MP |")
    print("|---|" + "---|" * (len(SIGMAS) + 1))
    runs = len(SIGMAS) * megapixels
    for method, per in scores.items():
        speed = f"{seconds[method] / runs:.2f}" if seconds.get(method) else "-"
        print(f"| {method} | " + " | ".join(f"{np.mean(per[s]):.2f}" for s in SIGMAS) + f" | {speed} |")
    print("\nblind estimate (mean, min..max): " + ", ".join(
        f"sigma {s}: {np.mean(v):.1f} ({min(v):.1f}..{max(v):.1f})" for s, v in estimates.items()))
    if "CBM3D, true sigma" in seconds:
        for method in ("imgen, blind", "imgen --tta, blind"):
            print(f"{method} is {seconds['CBM3D, true sigma'] / seconds[method]:.1f}x faster than CBM3D "
                  f"(estimate included)")


if __name__ == "__main__":
    main()
