"""How much texture can a fill carry before its whole-image SSIM drops below OpenCV's?

    pip install opencv-python-headless      # benchmark-only peer
    IMGEN_PLUGINS=imgen_inpaint PYTHONPATH=plugins:. python benchmarks/sweep_inpaint_texture.py

The large-hole cases of `bench_inpaint.py --masks 1` (held-out photos at half size, same seed),
filled by Telea, NS, imgen's smooth fill (`--smooth`: G) and imgen's default with synthesized
texture (S). Then mixtures of the two inside the holes, which trade texture for SSIM:
- "detail": G plus the synthesized detail S - gaussian(S, sigma), scaled by `amount`;
- "ramp": the synthesized fill faded in over the first `depth` pixels from the hole's edge, where
  the smooth fill is most likely right (optionally only its detail, sigma 2);
- "capped": G plus the detail of S (sigma 2), scaled per case so its texture ratio is at most `cap`;
- "energy-matched": G plus the detail of S, scaled down wherever its local energy exceeds the
  energy of the ring's detail continued into the hole (texture only where the surroundings have it);
- "fade out": S (or its detail) near the hole's edge, where copied structure continues the known
  one, fading to G deeper in.
Prints hole PSNR, whole-image SSIM (Y) and texture ratio (bench_inpaint's) averaged over the cases,
and the correlation between S's detail and the lost detail by distance from the hole's edge:
copied texture lowers SSIM unless it correlates with what was lost.
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
    bands = [(0, 4), (4, 8), (8, 16), (16, 32), (32, None)]
    sums = {band: np.zeros(3) for band in bands}  # sum of xy, xx, yy per depth band
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
        truth = photo.astype(np.float64)

        def inpainted(values):
            return np.where(inside, values, s).clip(0, 255).round().astype(np.uint8)

        def detail(sigma, image=s):
            return image - ndimage.gaussian_filter(image, (sigma, sigma, 0))

        copied, lost = detail(2.0), detail(2.0, truth)
        for low, high in bands:
            band = mask & (depth[..., 0] > low) & (True if high is None else depth[..., 0] <= high)
            x, y = copied[band], lost[band]
            sums[(low, high)] += [(x * y).sum(), (x * x).sum(), (y * y).sum()]

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
        # The ring's detail energy continued into the hole (a normalised blur of the known part).
        known = ~mask[..., None]
        ring_energy = ndimage.gaussian_filter(np.where(known, copied ** 2, 0), (8, 8, 0))
        expected = ring_energy / np.maximum(ndimage.gaussian_filter(known.astype(float), (8, 8, 0)), 1e-3)
        energy = ndimage.gaussian_filter(copied ** 2, (4, 4, 0))
        outs["energy-matched detail sigma 2"] = inpainted(g + copied * np.sqrt(np.clip(expected / np.maximum(energy, 1e-6), 0, 1)))
        outs["S faded out over 16 px"] = inpainted(g + np.clip(1 - depth / 16, 0, 1) * (s - g))
        outs["detail sigma 2 faded out over 24 px"] = inpainted(g + np.clip(1 - depth / 24, 0, 1) * copied)
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
    print("\n| distance from the hole's edge (px) | correlation of S's detail with the lost detail |")
    print("|---|---|")
    for (low, high), (xy, xx, yy) in sums.items():
        print(f"| {low}-{high if high else 'centre'} | {xy / np.sqrt(xx * yy):.3f} |")


if __name__ == "__main__":
    main()
