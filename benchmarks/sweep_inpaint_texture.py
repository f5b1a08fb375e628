"""How much texture can a fill carry before its whole-image SSIM drops below OpenCV's?

    pip install opencv-python-headless      # benchmark-only peer
    IMGEN_PLUGINS=imgen_inpaint PYTHONPATH=plugins:. python benchmarks/sweep_inpaint_texture.py

The large-hole cases of `bench_inpaint.py --masks 1` (held-out photos at half size, same seed),
filled by Telea, NS, imgen's smooth fill (`--smooth`: G) and imgen's default with synthesized
texture (S). Then mixtures of the two inside the holes, which trade texture for SSIM:
- "detail": G plus the synthesized detail S - gaussian(S, sigma), scaled by `amount`;
- "ramp": the synthesized fill faded in over the first `depth` pixels from the hole's edge, where
  the smooth fill is most likely right (optionally only its detail, sigma 2);
- "capped": G plus the detail of S (sigma 2), scaled per case so its texture ratio is at most `cap`.
Prints hole PSNR, whole-image SSIM (Y) and texture ratio (bench_inpaint's) averaged over the cases.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from bench_inpaint import cases, hole_psnr, texture_ratio
from imgen_cli.api import Pipeline
from imgen_cli.metrics import ssim


def main() -> None:
    import cv2

    smooth, textured = Pipeline("inpaint --smooth", device="cpu"), Pipeline("inpaint", device="cpu")
    fills: dict[str, list] = {}
    for kind, case, photo, mask in cases(0.5, 1):
        if kind != "large":
            continue
        masked = photo.copy()
        masked[mask] = 255
        m8 = mask.astype(np.uint8) * 255
        g = smooth(masked, mask=m8).astype(np.float64)
        s = textured(masked, mask=m8).astype(np.float64)
        inside = mask[..., None]
        depth = ndimage.distance_transform_edt(mask)[..., None]

        def inpainted(values):
            return np.where(inside, values, s).clip(0, 255).round().astype(np.uint8)

        def detail(sigma):
            return s - ndimage.gaussian_filter(s, (sigma, sigma, 0))

        outs = {"cv2 TELEA": cv2.inpaint(masked, m8, 5, cv2.INPAINT_TELEA),
                "cv2 NS": cv2.inpaint(masked, m8, 5, cv2.INPAINT_NS),
                "imgen --smooth (G)": inpainted(g), "imgen default (S)": inpainted(s)}
        for sigma in (1.0, 2.0, 3.0, 5.0):
            for amount in (1.0, 0.8):
                outs[f"detail sigma {sigma} amount {amount}"] = inpainted(g + amount * detail(sigma))
        for width in (4, 8, 16):
            weight = np.clip(depth / width, 0, 1)
            outs[f"ramp depth {width}"] = inpainted(g + weight * (s - g))
            outs[f"ramp depth {width}, detail sigma 2"] = inpainted(g + weight * detail(2.0))
        for cap in (0.6, 0.8):
            ratio = texture_ratio(inpainted(g + detail(2.0)), mask)
            outs[f"capped at {cap}"] = inpainted(g + min(1.0, np.sqrt(cap / max(ratio, 1e-6))) * detail(2.0))
        for name, out in outs.items():
            fills.setdefault(name, []).append((hole_psnr(photo, out, mask), ssim(photo, out, channel="y"),
                                               texture_ratio(out, mask)))
        print(f"{case} done", flush=True)
    print(f"\n{len(fills['cv2 TELEA'])} large-hole cases\n")
    print("| fill | hole PSNR | SSIM (Y) | texture ratio |")
    print("|---|---|---|---|")
    for name, rows in fills.items():
        p, q, t = np.mean(rows, 0)
        print(f"| {name} | {p:.2f} | {q:.4f} | {t:.2f} |")


if __name__ == "__main__":
    main()
