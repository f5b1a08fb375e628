"""Colour helpers: sRGB <-> CIE Lab, and sliced optimal transport of colours as a pointwise map.

The colour map is fitted once per image (on a small rendering of the whole output) and then
applied pixel by pixel, so every tile of a large image gets exactly the same colours.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

# sRGB (D65) to XYZ, rows X, Y, Z; XYZ divided by the D65 white point.
_RGB2XYZ = torch.tensor(
    [[0.412453, 0.357580, 0.180423], [0.212671, 0.715160, 0.072169], [0.019334, 0.119193, 0.950227]]
)
_WHITE = torch.tensor([0.950456, 1.0, 1.088754])
_DELTA = 6 / 29


def rgb_to_lab(rgb: torch.Tensor) -> torch.Tensor:
    """(N, 3, H, W) sRGB in 0..1 to Lab (L 0..100)."""
    rgb = rgb.float().clamp(0, 1)
    linear = torch.where(rgb > 0.04045, ((rgb + 0.055) / 1.055) ** 2.4, rgb / 12.92)
    m = (_RGB2XYZ / _WHITE[:, None]).to(rgb.device)
    xyz = torch.einsum("ij,njhw->nihw", m, linear)
    f = torch.where(xyz > _DELTA**3, xyz.clamp_min(1e-12) ** (1 / 3), xyz / (3 * _DELTA**2) + 4 / 29)
    return torch.stack([116 * f[:, 1] - 16, 500 * (f[:, 0] - f[:, 1]), 200 * (f[:, 1] - f[:, 2])], 1)


def lab_to_rgb(lab: torch.Tensor) -> torch.Tensor:
    """Lab to (N, 3, H, W) sRGB, clamped to 0..1."""
    lab = lab.float()
    fy = (lab[:, 0] + 16) / 116
    f = torch.stack([fy + lab[:, 1] / 500, fy, fy - lab[:, 2] / 200], 1)
    xyz = torch.where(f > _DELTA, f**3, 3 * _DELTA**2 * (f - 4 / 29))
    m = torch.linalg.inv(_RGB2XYZ / _WHITE[:, None]).to(lab.device)
    linear = torch.einsum("ij,njhw->nihw", m, xyz).clamp(0, 1)
    return torch.where(linear > 0.0031308, 1.055 * linear.clamp_min(1e-12) ** (1 / 2.4) - 0.055, 12.92 * linear)


def _interp(x: torch.Tensor, xp: torch.Tensor, fp: torch.Tensor) -> torch.Tensor:
    """np.interp for 1-D increasing `xp`, extrapolating with the end slopes held flat."""
    i = torch.searchsorted(xp, x.contiguous()).clamp(1, len(xp) - 1)
    x0, x1, y0, y1 = xp[i - 1], xp[i], fp[i - 1], fp[i]
    t = ((x - x0) / (x1 - x0).clamp_min(1e-6)).clamp(0, 1)
    return y0 + t * (y1 - y0)


def _quantiles(points: torch.Tensor, levels: torch.Tensor) -> torch.Tensor:
    """(3, Q) quantiles of each column of (P, 3) `points`, by sorting (torch.quantile is slow)."""
    ordered = points.sort(0).values
    index = (levels * (len(ordered) - 1)).round().long()
    return ordered[index].T.contiguous()


def fit_sliced_transport(source: torch.Tensor, target: torch.Tensor, steps: int = 10, quantiles: int = 128,
                         seed: int = 0) -> list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    """A colour map moving the points `source` (P, 3) towards the distribution of `target` (Q, 3).

    Each step rotates colour space at random and matches the three 1-D marginals by quantiles
    (Pitie et al. 2005); repeated, this matches the joint distribution, not only each channel.
    Returns the steps as (rotation, source quantiles, target quantiles) for `apply_transport`.
    """
    generator = torch.Generator().manual_seed(seed)
    levels = torch.linspace(0, 1, quantiles, device=source.device)
    source, target = source.float(), target.float()
    plan = []
    for _ in range(steps):
        rotation, _ = torch.linalg.qr(torch.randn(3, 3, generator=generator))
        rotation = rotation.to(source.device)
        ps, pt = source @ rotation, target @ rotation
        qs, qt = _quantiles(ps, levels), _quantiles(pt, levels)
        # Strictly increasing source quantiles keep the 1-D maps well defined on flat regions.
        qs = qs + torch.arange(quantiles, device=qs.device) * 1e-4
        plan.append((rotation, qs, qt))
        source = _apply_step(source, rotation, qs, qt)
    return plan


def _apply_step(points, rotation, qs, qt):
    p = points @ rotation
    moved = torch.stack([_interp(p[:, d], qs[d], qt[d]) for d in range(3)], 1)
    return moved @ rotation.T


def apply_transport(points: torch.Tensor, plan) -> torch.Tensor:
    """Apply a fitted colour map to points (P, 3)."""
    points = points.float()
    for rotation, qs, qt in plan:
        points = _apply_step(points, rotation.to(points.device), qs.to(points.device), qt.to(points.device))
    return points


def transport_lut(plan, size: int = 25) -> torch.Tensor:
    """The colour map as an RGB -> RGB lookup table (1, 3, size, size, size) for `apply_lut`.

    Baking the Lab-space map into a table over the RGB cube makes applying it one trilinear
    lookup per pixel, instead of two colour conversions and a dozen 1-D interpolations.
    """
    axis = torch.linspace(0, 1, size)
    b, g, r = torch.meshgrid(axis, axis, axis, indexing="ij")
    grid = torch.stack([r, g, b], 0).reshape(1, 3, size, size * size)
    lab = rgb_to_lab(grid).permute(0, 2, 3, 1).reshape(-1, 3)
    moved = apply_transport(lab, plan).reshape(1, size, size * size, 3).permute(0, 3, 1, 2)
    return lab_to_rgb(moved).reshape(1, 3, size, size, size)


def apply_lut(rgb: torch.Tensor, lut: torch.Tensor) -> torch.Tensor:
    """Map (N, 3, H, W) RGB in 0..1 through a table from `transport_lut`, trilinearly."""
    n, _, h, w = rgb.shape
    # grid_sample wants (x, y, z) = (r, g, b) in -1..1 for a volume indexed [b][g][r].
    grid = (rgb.float().clamp(0, 1) * 2 - 1).permute(0, 2, 3, 1).reshape(n, 1, h, w, 3)
    out = F.grid_sample(lut.to(rgb.device).expand(n, -1, -1, -1, -1), grid, mode="bilinear",
                        padding_mode="border", align_corners=True)
    return out.reshape(n, 3, h, w)
