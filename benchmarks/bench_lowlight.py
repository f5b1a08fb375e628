"""Quality and speed of `imgen lowlight` against classical brightening.

    PYTHONPATH=plugins:. python benchmarks/bench_lowlight.py            # quality + speed
    PYTHONPATH=plugins:. python benchmarks/bench_lowlight.py --no-speed

Quality: each held-out photo (imgen_cli.datasets.VALIDATION, never trained on) is darkened
`--trials` times as x_low = k * x^g (g 1.8..2.6, k 0.15..0.35) with mild Poisson-Gaussian noise
(photon peak 500..2000 at white, read noise sigma 0.002..0.006) and quantized to 8 bits, with a
fixed seed. Each method's output is scored against the original photo with imgen_cli.metrics:
PSNR (RGB, 0..1) and SSIM (Wang et al.'s Gaussian window 11/1.5, mean over RGB). Baselines: auto gamma (the power that maps mean luminance
to 0.5), CLAHE on L of Lab (OpenCV, clip 2, 8x8 tiles) and global histogram equalization of Y in
YCrCb. A second table passes the original photos through unchanged-exposure: a well-exposed photo
should come out close to itself.

Speed: a darkened, noisy 4000x3000 (12 MP) photo on the CPU, the model's processing only (the
host's float tensor in, tensor out), wall and CPU time with 2 and 1 threads, then PNG/JPEG decode
and encode of the same photo through imageio.
Needs opencv-python-headless (benchmark-only).
"""

from __future__ import annotations

import argparse
import io
import statistics
import time

import cv2
import imageio.v3 as iio
import numpy as np
import torch

from imgen_cli.datasets import data_root, image_files, load_rgb, split
from imgen_cli.metrics import psnr, ssim


def darken(x: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, str]:
    g, k = rng.uniform(1.8, 2.6), rng.uniform(0.15, 0.35)
    peak, sigma = rng.uniform(500, 2000), rng.uniform(0.002, 0.006)
    low = k * x**g
    low = rng.poisson(low * peak) / peak + rng.normal(0, sigma, low.shape)
    return np.round(np.clip(low, 0, 1) * 255) / 255, f"g={g:.2f} k={k:.2f}"


def auto_gamma(x: np.ndarray) -> np.ndarray:
    lum = x @ np.array([0.299, 0.587, 0.114])
    p = np.log(0.5) / np.log(max(lum.mean(), 1e-4))
    return x**p


def clahe_lab(x: np.ndarray) -> np.ndarray:
    lab = cv2.cvtColor(to8(x), cv2.COLOR_RGB2LAB)
    lab[..., 0] = cv2.createCLAHE(clipLimit=2.0, tileGridSize=(8, 8)).apply(lab[..., 0])
    return cv2.cvtColor(lab, cv2.COLOR_LAB2RGB) / 255.0


def hist_eq(x: np.ndarray) -> np.ndarray:
    ycc = cv2.cvtColor(to8(x), cv2.COLOR_RGB2YCrCb)
    ycc[..., 0] = cv2.equalizeHist(ycc[..., 0])
    return cv2.cvtColor(ycc, cv2.COLOR_YCrCb2RGB) / 255.0


def to8(x: np.ndarray) -> np.ndarray:
    return np.round(np.clip(x, 0, 1) * 255).astype(np.uint8)


def load_model(weights: str | None):
    import imgen_lowlight

    if weights:
        imgen_lowlight.WEIGHTS = weights
    return imgen_lowlight._load().eval()


def ours(net, exposure: float, strength: float, denoise: float):
    def run(x: np.ndarray) -> np.ndarray:
        t = torch.from_numpy(np.ascontiguousarray(x.transpose(2, 0, 1)))[None].float()
        y = net(t, exposure=exposure, strength=strength, denoise=denoise)
        return y[0].clamp(0, 1).permute(1, 2, 0).double().numpy()

    return run


def quality(photos, methods, trials: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    scores = {name: ([], []) for name in methods}
    kept = {name: [] for name in methods if name != "dark input"}
    print(f"{'photo':<12} {'darkening':<14} " + " ".join(f"{n:>18}" for n in methods))
    for path in photos:
        x = load_rgb(path) / 255.0
        for _ in range(trials):
            low, desc = darken(x, rng)
            row = []
            for name, fn in methods.items():
                y = np.clip(fn(low), 0, 1)
                p, s = psnr(x, y), ssim(x, y)
                scores[name][0].append(p)
                scores[name][1].append(s)
                row.append(f"{p:6.2f} dB / {s:.3f}")
            print(f"{path.stem:<12} {desc:<14} " + " ".join(f"{r:>18}" for r in row), flush=True)
        for name, fn in methods.items():
            if name != "dark input":
                kept[name].append(psnr(x, np.clip(fn(x), 0, 1)))
    print(f"\nmean over {len(scores['dark input'][0])} darkened held-out photos (PSNR dB / SSIM):")
    for name, (p, s) in scores.items():
        print(f"  {name:<14} {statistics.mean(p):6.2f} / {statistics.mean(s):.4f}")
    best = max((statistics.mean(scores[n][0]), n) for n in ("auto gamma", "CLAHE (Lab L)", "hist. eq."))
    gain = statistics.mean(scores["lowlight"][0]) - best[0]
    print(f"  lowlight vs best baseline ({best[1]}): {gain:+.2f} dB PSNR")
    print("\nwell-exposed originals passed through (PSNR dB vs themselves):")
    print(" ".join(f"{p.stem}" for p in photos))
    for name, p in kept.items():
        print(f"  {name:<14} " + " ".join(f"{v:6.2f}" for v in p) + f"   min {min(p):.2f}")


def speed(net, photo, exposure: float, strength: float, denoise: float) -> None:
    x = cv2.resize(load_rgb(photo), (4000, 3000), interpolation=cv2.INTER_CUBIC)
    low, _ = darken(x / 255.0, np.random.default_rng(0))
    t = torch.from_numpy(low.transpose(2, 0, 1).copy())[None].float()
    print("\n12 MP (4000x3000) dark noisy photo, processing only (float tensor in and out):")
    for threads in (2, 1):
        torch.set_num_threads(threads)
        wall, cpu = [], []
        for _ in range(3):
            start, start_cpu = time.perf_counter(), time.process_time()
            net(t, exposure=exposure, strength=strength, denoise=denoise)
            wall.append(time.perf_counter() - start)
            cpu.append(time.process_time() - start_cpu)
        print(f"  {threads} thread(s): wall median {statistics.median(wall):.2f} s (best {min(wall):.2f} s), "
              f"CPU time median {statistics.median(cpu):.2f} s")
    with open("/proc/loadavg") as f:
        print(f"  1-minute load average: {f.read().split()[0]} (other jobs on the machine inflate wall time)")
    for ext, kw in ((".png", {}), (".jpg", {"quality": 95})):
        buf = io.BytesIO()
        start = time.perf_counter()
        iio.imwrite(buf, x, extension=ext, **kw)
        enc = time.perf_counter() - start
        data = buf.getvalue()
        start = time.perf_counter()
        iio.imread(data, extension=ext)
        dec = time.perf_counter() - start
        print(f"  {ext[1:]:<4} 8-bit via imageio: decode {dec:.2f} s, encode {enc:.2f} s ({len(data) / 1e6:.1f} MB)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", default=None, help="dataset folder holding photos/")
    ap.add_argument("--weights", default=None, help="safetensors to test instead of the shipped weights")
    ap.add_argument("--split", choices=("validation", "train"), default="validation",
                    help="photos to score: the held-out ones (default) or the training ones, for tuning")
    ap.add_argument("--trials", type=int, default=4, help="random darkenings per photo")
    ap.add_argument("--seed", type=int, default=5)
    ap.add_argument("--exposure", type=float, default=None, help="default: the command's default")
    ap.add_argument("--strength", type=float, default=1.0)
    ap.add_argument("--no-denoise", action="store_true", help="lowlight without its shadow smoothing")
    ap.add_argument("--no-speed", action="store_true")
    args = ap.parse_args()

    import imgen_lowlight

    exposure = imgen_lowlight.DEFAULT_EXPOSURE if args.exposure is None else args.exposure
    denoise = 0.0 if args.no_denoise else imgen_lowlight.DENOISE
    train, val = split(image_files(data_root(args.data) / "photos"))
    photos = val if args.split == "validation" else train
    net = load_model(args.weights)
    methods = {
        "dark input": lambda x: x,
        "auto gamma": auto_gamma,
        "CLAHE (Lab L)": clahe_lab,
        "hist. eq.": hist_eq,
        "lowlight": ours(net, exposure, args.strength, denoise),
    }
    print(f"lowlight exposure={exposure} strength={args.strength} denoise={denoise}, {args.split} photos\n")
    with torch.no_grad():
        quality(photos, methods, args.trials, args.seed)
        if not args.no_speed:
            speed(net, val[0], exposure, args.strength, denoise)


if __name__ == "__main__":
    main()
