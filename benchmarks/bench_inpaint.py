"""Quality and speed of `imgen inpaint` against OpenCV's Telea and Navier-Stokes inpainting.

    pip install opencv-python-headless      # benchmark-only peer, not an imgen dependency
    PYTHONPATH=plugins:. python benchmarks/bench_inpaint.py [--scale 0.5] [--figures docs/img]

(Until the `inpaint` entry point is installed, prefix the command with IMGEN_PLUGINS=imgen_inpaint.)

Every held-out photo (imgen_cli.datasets.VALIDATION, never trained on), resized by `--scale`, gets
two (`--masks`) masks of large holes (boxes of 64-192 px a side and thick strokes, 10-25% of the photo; the
object-removal case) and two of thin strokes (3-12 px wide; scratches and wires), fixed seed. Every
method fills the same 8-bit image: cv2.inpaint TELEA and NS (radius 5), the previous shipped fill
(`imgen inpaint --smooth`: harmonic guess plus network) and imgen's default (the same plus
synthesized texture in thick holes), through the Python API. Scores, from imgen_cli.metrics where
they exist, against the untouched photo and averaged over the cases of each set:

- hole PSNR: PSNR of the pixels inside the holes;
- SSIM of the whole image (on luma, Y of BT.601);
- texture ratio: the variance of the image minus its Gaussian blur (sigma 1.5) inside the holes,
  over the same in a 16-pixel ring around them (averaged over channels). A smooth fill scores near
  0, one as detailed as its surroundings near 1;
- NIQE (no-reference, lower is more natural) of a 256x256 crop centred on the largest hole, large
  holes only.

imgen's pixels outside the mask are checked to equal the input's.

Speed: a 512x512 crop with a hole region covering most of it (model loaded, median of 3), and a
12 MP photo (a held-out photo upscaled to 4000x3000) with two small holes (and once with 1500
scattered 4x4 specks, as dust on a scan): filled in memory through the API, and run end to end by
the `imgen` CLI in a subprocess with JPEG and with PNG files, next to the start-up alone (Python,
torch and imgen imported) which every CLI run pays before it reads an image.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from scipy import ndimage

from imgen_cli.api import Pipeline
from imgen_cli.datasets import data_root, image_files, load_rgb, split
from imgen_cli.metrics import niqe, psnr, ssim
from imgen_inpaint.masks import large_holes, random_mask, specks, thin_strokes

SETS = {"large": large_holes, "thin": thin_strokes}
METHODS = ("telea", "ns", "previous", "imgen")
NIQE_SIDE = 256
RING = 16


def hole_psnr(clean: np.ndarray, out: np.ndarray, mask: np.ndarray) -> float:
    return psnr(clean[mask][None], out[mask][None])


def texture_ratio(image: np.ndarray, mask: np.ndarray) -> float:
    """High-frequency energy inside the holes over that in a RING-pixel ring just outside them."""
    x = image.astype(np.float64)
    detail = x - ndimage.gaussian_filter(x, sigma=(1.5, 1.5, 0), mode="reflect")
    ring = ndimage.binary_dilation(mask, np.ones((2 * RING + 1, 2 * RING + 1), bool)) & ~mask
    return float(detail[mask].var(axis=0).mean() / max(detail[ring].var(axis=0).mean(), 1e-12))


def niqe_box(mask: np.ndarray) -> tuple[slice, slice]:
    """A NIQE_SIDE square centred on the largest connected hole (clipped to the image)."""
    labels, count = ndimage.label(mask)
    largest = 1 + int(np.argmax(ndimage.sum(mask, labels, np.arange(1, count + 1))))
    rows, cols = np.nonzero(labels == largest)
    side = min(NIQE_SIDE, *mask.shape)
    top = min(max((rows.min() + rows.max()) // 2 - side // 2, 0), mask.shape[0] - side)
    left = min(max((cols.min() + cols.max()) // 2 - side // 2, 0), mask.shape[1] - side)
    return slice(top, top + side), slice(left, left + side)


def cases(scale: float, per_set: int = 2, seed: int = 11):
    rng = np.random.default_rng(seed)
    _, val_files = split(image_files(data_root() / "photos"))
    for path in val_files:
        photo = Image.fromarray(load_rgb(path))
        if scale != 1:
            photo = photo.resize((round(photo.width * scale), round(photo.height * scale)), Image.BOX)
        photo = np.asarray(photo)
        for kind, make in SETS.items():
            for k in range(per_set):
                yield kind, f"{path.stem}-{kind}{k}", photo, make(photo.shape[0], photo.shape[1], rng)


def quality(scale: float, figures: Path | None, per_set: int = 2) -> None:
    import cv2

    pipelines = {"previous": Pipeline("inpaint --smooth", device="cpu"), "imgen": Pipeline("inpaint", device="cpu")}
    keys = ("psnr", "ssim", "texture", "niqe")
    scores = {kind: {m: {k: [] for k in keys} for m in METHODS} for kind in SETS}
    seconds = {kind: {m: 0.0 for m in METHODS} for kind in SETS}
    reference_niqe = []
    unchanged = True
    shown = []
    for kind, case, photo, mask in cases(scale, per_set):
        masked = photo.copy()
        masked[mask] = 255
        m8 = mask.astype(np.uint8) * 255
        outs = {}
        for name in METHODS:
            start = time.perf_counter()
            if name == "telea":
                out = cv2.inpaint(masked, m8, 5, cv2.INPAINT_TELEA)
            elif name == "ns":
                out = cv2.inpaint(masked, m8, 5, cv2.INPAINT_NS)
            else:
                out = pipelines[name](masked, mask=m8)
            seconds[kind][name] += time.perf_counter() - start
            outs[name] = out
            entry = scores[kind][name]
            entry["psnr"].append(hole_psnr(photo, out, mask))
            entry["ssim"].append(ssim(photo, out, channel="y"))
            entry["texture"].append(texture_ratio(out, mask))
            if kind == "large":
                entry["niqe"].append(niqe(out[niqe_box(mask)]))
        if kind == "large":
            reference_niqe.append(niqe(photo[niqe_box(mask)]))
            shown.append((_largest_box(mask), case, masked, outs, photo, mask))
        for name in ("previous", "imgen"):
            unchanged &= bool((outs[name][~mask] == masked[~mask]).all())
        print(f"{case:18s} cover {mask.mean():5.1%}  " + "  ".join(
            f"{n} {scores[kind][n]['psnr'][-1]:5.2f} dB tex {scores[kind][n]['texture'][-1]:4.2f}" for n in METHODS),
            flush=True)
    for kind in SETS:
        count = len(scores[kind]["imgen"]["psnr"])
        print(f"\n{kind} holes: {count} cases at scale {scale}")
        print(f"{'method':10s} {'hole PSNR':>10s} {'SSIM':>7s} {'texture':>8s} {'NIQE':>6s} {'s/image':>8s}")
        for name in METHODS:
            entry = scores[kind][name]
            quality_niqe = f"{np.mean(entry['niqe']):6.2f}" if entry["niqe"] else "     -"
            print(f"{name:10s} {np.mean(entry['psnr']):10.2f} {np.mean(entry['ssim']):7.4f} "
                  f"{np.mean(entry['texture']):8.2f} {quality_niqe} {seconds[kind][name] / count:8.3f}")
        best = {k: max(np.mean(scores[kind][m][k]) for m in ("telea", "ns")) for k in ("psnr", "ssim")}
        print(f"imgen - best of Telea/NS: {np.mean(scores[kind]['imgen']['psnr']) - best['psnr']:+.2f} dB inside the "
              f"holes, SSIM {np.mean(scores[kind]['imgen']['ssim']) - best['ssim']:+.4f}")
    print(f"NIQE of the original photos' crops: {np.mean(reference_niqe):.2f}")
    print(f"pixels outside the mask unchanged: {unchanged}")
    if figures:
        figures.mkdir(parents=True, exist_ok=True)
        # The cases with the largest holes show best how each method handles them.
        shown.sort(key=lambda s: -s[0])
        for i, (_, case, masked, outs, photo, mask) in enumerate(shown[:3]):
            rows, cols = niqe_box(mask)
            crops = [im[rows, cols] for im in (masked, outs["telea"], outs["previous"], outs["imgen"], photo)]
            gap = np.full((crops[0].shape[0], 6, 3), 255, np.uint8)
            strip = np.concatenate([c for crop in crops for c in (crop, gap)][:-1], 1)
            Image.fromarray(strip).save(figures / f"inpaint_{i + 1}.png", optimize=True)
            print(f"figure {figures / f'inpaint_{i + 1}.png'}: {case} (masked | Telea | previous | imgen | original)")


def _largest_box(mask: np.ndarray) -> int:
    """Area of the mask's bounding box, a rough size of its largest hole."""
    rows, cols = np.nonzero(mask)
    return int((np.ptp(rows) + 1) * (np.ptp(cols) + 1)) if len(rows) else 0


def median_seconds(call, runs: int = 3) -> float:
    """The median wall time of `runs` calls."""
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        call()
        times.append(time.perf_counter() - start)
    return float(np.median(times))


def speed(pipeline: Pipeline) -> None:
    _, val_files = split(image_files(data_root() / "photos"))
    photo = load_rgb(val_files[0])
    rng = np.random.default_rng(5)
    crop = np.ascontiguousarray(photo[:512, :512])
    mask = np.zeros((512, 512), np.uint8)
    mask[96:416, 96:416] = random_mask(320, 320, rng, coverage=(0.3, 0.5)).astype(np.uint8) * 255
    mask[40:60, 40:472] = 255  # one stroke near the border, so the region spans the whole crop
    pipeline(crop, mask=mask)
    seconds = median_seconds(lambda: pipeline(crop, mask=mask))
    print(f"\n512x512 hole region (mask covers {(mask > 0).mean():.0%}): {seconds:.3f} s (median of 3)")

    big = np.asarray(Image.fromarray(photo).resize((4000, 3000), Image.BICUBIC))
    small = np.zeros((3000, 4000), np.uint8)
    small[1400:1520, 2000:2090] = 255
    small[600:620, 900:1200] = 255
    with tempfile.TemporaryDirectory() as tmp:
        Image.fromarray(big).save(f"{tmp}/photo.png", compress_level=1)
        Image.fromarray(big).save(f"{tmp}/photo.jpg", quality=92)
        Image.fromarray(small).save(f"{tmp}/mask.png")
        print("12 MP photo (4000x3000), two small holes:")
        seconds = median_seconds(lambda: pipeline(big, mask=small))
        print(f"  fill in memory (model loaded): {seconds:.2f} s (median of 3)")
        dust = specks(3000, 4000, 1500, rng).astype(np.uint8) * 255
        start = time.perf_counter()
        pipeline(big, mask=dust)
        print(f"  1500 scattered 4x4 specks instead, in memory: {time.perf_counter() - start:.1f} s")
        startup = []
        for _ in range(2):
            start = time.perf_counter()
            subprocess.run([sys.executable, "-c", "import torch, imgen_cli.cli, imgen_cli.engine"], check=True)
            startup.append(time.perf_counter() - start)
        print(f"  start-up alone (Python, torch and imgen imported), which every CLI run pays: {min(startup):.2f} s "
              "(best of 2)")
        for ext in ("jpg", "png"):
            command = [sys.executable, "-m", "imgen_cli", "inpaint", "--mask", f"{tmp}/mask.png", f"{tmp}/photo.{ext}",
                       "-o", f"{tmp}/out.{ext}", "--overwrite", "--device", "cpu", "--quiet"]
            times = []
            for _ in range(2):
                start = time.perf_counter()
                subprocess.run(command, check=True, env=os.environ.copy())
                times.append(time.perf_counter() - start)
            print(f"  `imgen inpaint` CLI end to end, {ext.upper()} in and out: {min(times):.2f} s (best of 2); "
                  f"after start-up: {min(times) - min(startup):.2f} s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scale", type=float, default=0.5, help="resize the held-out photos by this first")
    parser.add_argument("--figures", type=Path, default=None, help="write side-by-side crops here")
    parser.add_argument("--skip-speed", action="store_true")
    parser.add_argument("--skip-quality", action="store_true")
    parser.add_argument("--masks", type=int, default=2, help="masks per photo of each set (large, thin)")
    args = parser.parse_args()
    torch.manual_seed(0)
    if not args.skip_quality:
        quality(args.scale, args.figures, args.masks)
    if not args.skip_speed:
        speed(Pipeline("inpaint", device="cpu"))


if __name__ == "__main__":
    main()
