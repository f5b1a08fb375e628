"""Quality and speed of `imgen inpaint` against OpenCV's Telea and Navier-Stokes inpainting.

    pip install opencv-python-headless      # benchmark-only peer, not an imgen dependency
    PYTHONPATH=plugins:. python benchmarks/bench_inpaint.py [--scale 0.5] [--figures docs/img]

(Until the `inpaint` entry point is installed, prefix the command with IMGEN_PLUGINS=imgen_inpaint.)

Every held-out photo (imgen_cli.datasets.VALIDATION, never trained on), resized by `--scale`, gets
four free-form masks covering 10-25% of it (strokes, boxes, mixed; fixed seed). Every method fills
the same 8-bit image: cv2.inpaint TELEA and NS (radius 5), the harmonic guess the network starts
from, and imgen through its Python API. Scores: PSNR of the pixels inside the holes, and SSIM of the
whole image (grey, 11x11 Gaussian window), both against the untouched photo and averaged over the
cases. imgen's pixels outside the mask are checked to equal the input's.

Speed: a 512x512 crop with a hole region covering most of it (model loaded, median of 3), and a
12 MP photo (a held-out photo upscaled to 4000x3000) with two small holes (and once with 1500
scattered 4x4 specks, as dust on a scan): filled in memory through the API, and run end to end by
the `imgen` CLI in a subprocess (start-up, torch import, reading and writing included) with JPEG
and with PNG files, next to the time of a bare `import torch`.
"""

from __future__ import annotations

import argparse
import math
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from imgen_cli.api import Pipeline
from imgen_cli.datasets import data_root, image_files, load_rgb, split
from imgen_inpaint._net import harmonic_fill
from imgen_inpaint.masks import random_mask, specks

KINDS = ("strokes", "strokes", "boxes", "mixed")


def hole_psnr(clean: np.ndarray, out: np.ndarray, mask: np.ndarray) -> float:
    diff = clean[mask].astype(np.float64) - out[mask].astype(np.float64)
    return 10 * math.log10(255.0**2 / max(np.mean(diff**2), 1e-10))


def ssim(a: np.ndarray, b: np.ndarray) -> float:
    """Mean SSIM (Wang et al. 2004) of the grey versions of two 8-bit RGB images."""
    def grey(x):
        return torch.from_numpy(x.astype(np.float64) @ np.array([0.299, 0.587, 0.114]))[None, None]

    x, y = grey(a), grey(b)
    t = torch.arange(11, dtype=torch.float64) - 5
    g = torch.exp(-(t**2) / (2 * 1.5**2))
    g = (g / g.sum())
    window = (g[:, None] * g[None, :])[None, None]

    def blur(z):
        return F.conv2d(z, window)

    mx, my = blur(x), blur(y)
    vx, vy, cxy = blur(x * x) - mx**2, blur(y * y) - my**2, blur(x * y) - mx * my
    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
    s = ((2 * mx * my + c1) * (2 * cxy + c2)) / ((mx**2 + my**2 + c1) * (vx + vy + c2))
    return float(s.mean())


def harmonic(image: np.ndarray, mask: np.ndarray) -> np.ndarray:
    x = torch.from_numpy(image).permute(2, 0, 1)[None].float() / 255
    m = torch.from_numpy(mask.astype(np.float32))[None, None]
    out = harmonic_fill(x, m)[0].permute(1, 2, 0).numpy()
    return np.clip(np.round(out * 255), 0, 255).astype(np.uint8)


def cases(scale: float, seed: int = 11):
    rng = np.random.default_rng(seed)
    _, val_files = split(image_files(data_root() / "photos"))
    for path in val_files:
        photo = Image.fromarray(load_rgb(path))
        if scale != 1:
            photo = photo.resize((round(photo.width * scale), round(photo.height * scale)), Image.BOX)
        photo = np.asarray(photo)
        for k, kind in enumerate(KINDS):
            mask = random_mask(photo.shape[0], photo.shape[1], rng, coverage=(0.10, 0.25), kind=kind) > 0
            yield f"{path.stem}-{k}", photo, mask


def quality(pipeline: Pipeline, scale: float, figures: Path | None) -> None:
    import cv2

    names = ("telea", "ns", "harmonic", "imgen")
    scores = {name: ([], []) for name in names}
    seconds = {name: 0.0 for name in names}
    unchanged = True
    shown = []
    for case, photo, mask in cases(scale):
        masked = photo.copy()
        masked[mask] = 255
        m8 = mask.astype(np.uint8) * 255
        outs = {}
        for name in names:
            start = time.perf_counter()
            if name == "telea":
                out = cv2.inpaint(masked, m8, 5, cv2.INPAINT_TELEA)
            elif name == "ns":
                out = cv2.inpaint(masked, m8, 5, cv2.INPAINT_NS)
            elif name == "harmonic":
                out = harmonic(masked, mask)
            else:
                out = pipeline(masked, mask=m8)
            seconds[name] += time.perf_counter() - start
            outs[name] = out
            scores[name][0].append(hole_psnr(photo, out, mask))
            scores[name][1].append(ssim(photo, out))
        unchanged &= bool((outs["imgen"][~mask] == masked[~mask]).all())
        shown.append((scores["imgen"][0][-1] - max(scores["telea"][0][-1], scores["ns"][0][-1]), case, masked,
                      outs["telea"], outs["imgen"], mask))
        print(f"{case:14s} cover {mask.mean():5.1%}  " + "  ".join(
            f"{n} {scores[n][0][-1]:5.2f}" for n in names), flush=True)
    print(f"\n{len(scores['imgen'][0])} cases at scale {scale}, masks covering 10-25%")
    print(f"{'method':10s} {'hole PSNR':>10s} {'SSIM':>7s} {'s/image':>8s}")
    for name in names:
        psnrs, ssims = scores[name]
        print(f"{name:10s} {np.mean(psnrs):10.2f} {np.mean(ssims):7.4f} {seconds[name] / len(psnrs):8.3f}")
    best = max(np.mean(scores["telea"][0]), np.mean(scores["ns"][0]))
    print(f"imgen - best of Telea/NS: {np.mean(scores['imgen'][0]) - best:+.2f} dB inside the holes, "
          f"SSIM {np.mean(scores['imgen'][1]) - max(np.mean(scores['telea'][1]), np.mean(scores['ns'][1])):+.4f}")
    print(f"pixels outside the mask unchanged: {unchanged}")
    if figures:
        figures.mkdir(parents=True, exist_ok=True)
        # The cases with the largest boxes show best how each method handles a large hole.
        shown.sort(key=lambda s: -_largest_box(s[5]))
        for i, (_, case, masked, telea, ours, mask) in enumerate(shown[:3]):
            rows, cols = np.nonzero(mask)
            cy, cx = int(rows.mean()), int(cols.mean())
            side = min(320, *mask.shape)
            top = min(max(cy - side // 2, 0), mask.shape[0] - side)
            left = min(max(cx - side // 2, 0), mask.shape[1] - side)
            crops = [im[top : top + side, left : left + side] for im in (masked, telea, ours)]
            gap = np.full((side, 8, 3), 255, np.uint8)
            strip = np.concatenate([crops[0], gap, crops[1], gap, crops[2]], 1)
            Image.fromarray(strip).save(figures / f"inpaint_{i + 1}.png", optimize=True)
            print(f"figure {figures / f'inpaint_{i + 1}.png'}: {case} (masked | Telea | imgen)")


def _largest_box(mask: np.ndarray) -> int:
    """Area of the mask's bounding box, a rough size of its largest hole."""
    rows, cols = np.nonzero(mask)
    return int((np.ptp(rows) + 1) * (np.ptp(cols) + 1)) if len(rows) else 0


def speed(pipeline: Pipeline) -> None:
    _, val_files = split(image_files(data_root() / "photos"))
    photo = load_rgb(val_files[0])
    rng = np.random.default_rng(5)
    crop = np.ascontiguousarray(photo[:512, :512])
    mask = np.zeros((512, 512), np.uint8)
    mask[96:416, 96:416] = random_mask(320, 320, rng, coverage=(0.3, 0.5)).astype(np.uint8) * 255
    mask[40:60, 40:472] = 255  # one stroke near the border, so the region spans the whole crop
    pipeline(crop, mask=mask)
    times = []
    for _ in range(3):
        start = time.perf_counter()
        pipeline(crop, mask=mask)
        times.append(time.perf_counter() - start)
    print(f"\n512x512 hole region (mask covers {(mask > 0).mean():.0%}): {np.median(times):.3f} s (median of 3)")

    big = np.asarray(Image.fromarray(photo).resize((4000, 3000), Image.BICUBIC))
    small = np.zeros((3000, 4000), np.uint8)
    small[1400:1520, 2000:2090] = 255
    small[600:620, 900:1200] = 255
    with tempfile.TemporaryDirectory() as tmp:
        Image.fromarray(big).save(f"{tmp}/photo.png", compress_level=1)
        Image.fromarray(big).save(f"{tmp}/photo.jpg", quality=92)
        Image.fromarray(small).save(f"{tmp}/mask.png")
        print("12 MP photo (4000x3000), two small holes:")
        times = []
        for _ in range(3):
            start = time.perf_counter()
            pipeline(big, mask=small)
            times.append(time.perf_counter() - start)
        print(f"  fill in memory (model loaded): {np.median(times):.2f} s (median of 3)")
        dust = specks(3000, 4000, 1500, rng).astype(np.uint8) * 255
        start = time.perf_counter()
        pipeline(big, mask=dust)
        print(f"  1500 scattered 4x4 specks instead, in memory: {time.perf_counter() - start:.1f} s")
        start = time.perf_counter()
        subprocess.run([sys.executable, "-c", "import torch"], check=True)
        print(f"  a bare `python -c 'import torch'`, which every CLI run pays: {time.perf_counter() - start:.2f} s")
        for ext in ("jpg", "png"):
            command = [sys.executable, "-m", "imgen_cli", "inpaint", "--mask", f"{tmp}/mask.png", f"{tmp}/photo.{ext}",
                       "-o", f"{tmp}/out.{ext}", "--overwrite", "--device", "cpu", "--quiet"]
            times = []
            for _ in range(2):
                start = time.perf_counter()
                subprocess.run(command, check=True, env=os.environ.copy())
                times.append(time.perf_counter() - start)
            print(f"  `imgen inpaint` CLI end to end, {ext.upper()} in and out: {min(times):.2f} s (best of 2)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scale", type=float, default=0.5, help="resize the held-out photos by this first")
    parser.add_argument("--figures", type=Path, default=None, help="write side-by-side crops here")
    parser.add_argument("--skip-speed", action="store_true")
    args = parser.parse_args()
    torch.manual_seed(0)
    pipeline = Pipeline("inpaint", device="cpu")
    quality(pipeline, args.scale, args.figures)
    if not args.skip_speed:
        speed(pipeline)


if __name__ == "__main__":
    main()
