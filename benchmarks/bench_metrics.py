"""NIQE's validation table and the speed of PSNR + SSIM, for docs/metrics.md.

    python benchmarks/bench_metrics.py niqe [--data DIR]     # markdown table of NIQE under distortions
    python benchmarks/bench_metrics.py speed [--repeat 3]    # seconds for a 12-megapixel pair

niqe: every held-out photo (imgen_cli.datasets.VALIDATION, never used to fit the shipped model)
at full size is blurred (Gaussian, sigma 0 to 3), given Gaussian noise (sigma 0 to 20 on the
0-255 scale, fixed seed) or JPEG-compressed (quality 95 to 10, through imgen's own encoder), each
result rounded to 8 bits as a saved image would be, and scored with the shipped NIQE model.
The table gives each photo's score per step and the mean, and says whether every step rises.

speed: a 4000x3000 photo (a held-out photo upscaled) against a noisy copy, 8-bit RGB, timed for
PSNR + SSIM on RGB and on Y, and MS-SSIM, best of --repeat runs, arrays already decoded; wall
and CPU seconds (the CPU time of all threads, which a loaded machine does not inflate).
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np
from scipy import ndimage

from imgen_cli import io
from imgen_cli.datasets import data_root, image_files, split
from imgen_cli.metrics import load_params, ms_ssim, niqe, psnr, ssim

STEPS = {
    "blur sigma": (0, 0.5, 1, 1.5, 2, 3),
    "noise sigma": (0, 2, 5, 10, 15, 20),
    "JPEG quality": (95, 90, 75, 50, 30, 20, 10),
}


def distort(image: np.ndarray, kind: str, step: float, seed: int = 0) -> np.ndarray:
    if kind == "blur sigma":
        if step == 0:
            return image
        smooth = ndimage.gaussian_filter(image.astype(np.float32), (step, step, 0))
        return np.clip(np.round(smooth), 0, 255).astype(np.uint8)
    if kind == "noise sigma":
        noise = np.random.default_rng(seed).normal(0, step, image.shape)
        return np.clip(np.round(image + noise), 0, 255).astype(np.uint8)
    data, _ = io.encode(io.Picture(image, "png"), "jpeg", quality=int(step))
    return io.decode(data).array


def read(path) -> np.ndarray:
    return io.decode(io.read_bytes(str(path)), str(path)).array


def niqe_table(folder) -> None:
    _, held_out = split(image_files(folder))
    params = load_params()
    photos = {path.stem: read(path) for path in held_out}
    print(f"NIQE with {params.describe()}; lower is better.\n")
    for kind, steps in STEPS.items():
        rows = {name: [niqe(distort(photo, kind, step), params) for step in steps] for name, photo in photos.items()}
        means = np.mean(list(rows.values()), axis=0)
        print(f"| {kind} | " + " | ".join(f"{s:g}" for s in steps) + " |")
        print("|---" * (len(steps) + 1) + "|")
        for name, scores in rows.items():
            print(f"| {name} | " + " | ".join(f"{v:.2f}" for v in scores) + " |")
        print("| **mean** | " + " | ".join(f"**{v:.2f}**" for v in means) + " |")
        rising = all(b > a for a, b in zip(means, means[1:]))
        print(f"\nmean rises at every step: {'yes' if rising else 'NO'}\n")


def speed(folder, repeat: int) -> None:
    from PIL import Image

    _, held_out = split(image_files(folder))
    photo = Image.fromarray(read(held_out[0])).resize((4000, 3000), Image.BICUBIC)
    ref = np.asarray(photo)
    out = distort(ref, "noise sigma", 5)
    # On a shared machine wall time measures the neighbours too; CPU time is the work done.
    print(f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")
    print(f"{ref.shape[1]}x{ref.shape[0]} 8-bit RGB pair ({ref.shape[0] * ref.shape[1] / 1e6:.0f} MP), "
          f"best of {repeat}:")
    for label, work in (
        ("PSNR + SSIM, RGB", lambda: (psnr(ref, out), ssim(ref, out))),
        ("PSNR + SSIM, Y", lambda: (psnr(ref, out, channel="y"), ssim(ref, out, channel="y"))),
        ("MS-SSIM, RGB", lambda: ms_ssim(ref, out)),
    ):
        walls, cpus = [], []
        for _ in range(repeat):
            start, start_cpu = time.perf_counter(), time.process_time()
            result = work()
            walls.append(time.perf_counter() - start)
            cpus.append(time.process_time() - start_cpu)
        print(f"  {label}: {min(walls):.2f} s wall, {min(cpus):.2f} s CPU (all threads)  {np.round(result, 4)}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("what", choices=["niqe", "speed"])
    ap.add_argument("--data", default=None, help="folder of photos (default: data_root()/photos)")
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    folder = args.data or data_root() / "photos"
    if args.what == "niqe":
        niqe_table(folder)
    else:
        speed(folder, args.repeat)


if __name__ == "__main__":
    main()
