"""Can sharpening buy `sr-real-x4` Real-ESRGAN's naturalness without losing bicubic's Y-PSNR?

    PYTHONPATH=plugins:. python benchmarks/sweep_sr_sharpen.py [--crop 512] [--strengths 3]

The same held-out crops and degradations as `bench_sr.py --parts real` (so its bicubic and
Real-ESRGAN rows apply), upscaled by the shipped `sr-real-x4`, then unsharp-masked
(out + amount * (out - gaussian(out, sigma))) at a few settings. Prints the mean NIQE, edge
contrast and Y-PSNR of each: the trade-off between the three bars of issue #14.
"""

from __future__ import annotations

import argparse

import numpy as np
import torch
from scipy import ndimage

from bench_sr import SWEEP, table, y_psnr
from imgen_cli import datasets
from imgen_cli.metrics import niqe
from imgen_sr import _loader
from imgen_sr.degrade import degrade_fixed
from imgen_sr.train import centre_crop, crop_to_multiple, edge_contrast, pil_resize, upscale

SETTINGS = [(sigma, amount) for sigma in (1.0, 2.0) for amount in (0.5, 1.0, 1.5)]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--crop", type=int, default=512)
    ap.add_argument("--strengths", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    _, val_files = datasets.split(datasets.image_files(datasets.data_root() / "photos"))
    crops = [centre_crop(datasets.load_rgb(p), args.crop) for p in val_files]
    net = _loader("real_x4")().eval()
    scores: dict[str, list] = {}
    for degradation in SWEEP[: args.strengths]:
        for i, hr in enumerate(crops):
            hr = crop_to_multiple(hr, 4)
            lr = degrade_fixed(hr, i, *degradation, scale=4)
            out = upscale(net, lr)
            outs = {"bicubic": pil_resize(lr, (hr.shape[1], hr.shape[0])), "sr-real-x4": out}
            x = out.astype(np.float64)
            for sigma, amount in SETTINGS:
                sharp = x + amount * (x - ndimage.gaussian_filter(x, (sigma, sigma, 0)))
                outs[f"sr-real-x4, unsharp sigma {sigma} amount {amount}"] = sharp.clip(0, 255).round().astype(np.uint8)
            for name, image in outs.items():
                scores.setdefault(name, []).append((niqe(image), edge_contrast(image, hr, 4), y_psnr(image, hr, 4)))
    print(f"{len(crops)} held-out {args.crop}px crops x {args.strengths} strengths\n")
    table({name: tuple(np.mean(rows, 0)) for name, rows in scores.items()})


if __name__ == "__main__":
    main()
