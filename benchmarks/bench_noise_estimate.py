"""Accuracy of the denoise plugin's blind noise estimate: `PYTHONPATH=plugins:. python benchmarks/bench_noise_estimate.py`.

Ten images: each held-out photo (imgen_cli.datasets.VALIDATION) as a 256x256 centre crop and whole
at half size. Gaussian noise at each sigma (0-255 scale), clipped and rounded to 8 bits as in a
noisy PNG, fixed seed. Prints every estimate and their mean.
"""

from __future__ import annotations

import numpy as np
import torch

from imgen_cli.datasets import data_root, image_files, load_rgb, split
from imgen_denoise._estimate import estimate_sigma

SIGMAS = (5, 15, 25, 50, 75)


def images() -> list[torch.Tensor]:
    _, held_out = split(image_files(data_root() / "photos"))
    out = []
    for path in held_out:
        photo = load_rgb(path)
        h, w = photo.shape[:2]
        for crop in (photo[(h - 256) // 2:(h + 256) // 2, (w - 256) // 2:(w + 256) // 2], photo[::2, ::2]):
            out.append(torch.from_numpy(np.ascontiguousarray(crop)).permute(2, 0, 1)[None].float() / 255)
    return out


def main() -> None:
    clean = images()
    print("sigma | estimates (crop, half size per photo) | mean")
    for sigma in SIGMAS:
        estimates = []
        for x in clean:
            noise = torch.randn(x.shape, generator=torch.Generator().manual_seed(1)) * sigma / 255
            noisy = torch.round((x + noise).clamp(0, 1) * 255) / 255
            estimates.append(float(estimate_sigma(noisy)) * 255)
        print(f"{sigma} | {' '.join(f'{e:.1f}' for e in estimates)} | {np.mean(estimates):.1f}")


if __name__ == "__main__":
    main()
