"""Colour helpers: sRGB <-> CIE Lab, and a colour-distribution transfer baked into a lookup table.

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


def _limit_slope(qs: torch.Tensor, qt: torch.Tensor, max_slope: float) -> torch.Tensor:
    """Target quantiles whose map from `qs` is at most `max_slope` steep, same median as `qt`."""
    step_s, step_t = qs.diff(dim=1), qt.diff(dim=1)
    limited = torch.minimum(step_t, max_slope * step_s)
    out = torch.cat([torch.zeros_like(qt[:, :1]), limited.cumsum(1)], 1)
    middle = qt.shape[1] // 2
    return out + (qt[:, middle] - out[:, middle])[:, None]


def fit_colour_map(source: torch.Tensor, target: torch.Tensor, steps: int = 2, quantiles: int = 128,
                   max_slope: float = 2.0, seed: int = 0) -> dict:
    """A colour map moving the RGB points `source` (P, 3) towards the distribution of `target` (Q, 3).

    First each RGB channel is matched by quantiles (histogram matching): for a photo with little
    colour, the new colours then follow its brightness, which keeps its structure. Then a few
    sliced optimal-transport steps in Lab (Pitie et al. 2005: rotate at random, match the three
    1-D marginals) bring the joint distribution closer than per-channel matching can. Each Lab
    step is kept at most `max_slope` steep, so faint noise is not stretched into blotches.
    Returns the map for `transport_lut`.
    """
    generator = torch.Generator().manual_seed(seed)
    levels = torch.linspace(0, 1, quantiles, device=source.device)
    source, target = source.float(), target.float()
    ramp = torch.arange(quantiles, device=source.device) * 1e-5
    # Strictly increasing source quantiles keep the 1-D maps well defined on flat regions.
    rgb = (_quantiles(source, levels) + ramp, _quantiles(target, levels))
    source = torch.stack([_interp(source[:, d], rgb[0][d], rgb[1][d]) for d in range(3)], 1)
    source, target = _to_lab(source), _to_lab(target)
    plan = []
    for _ in range(steps):
        rotation, _ = torch.linalg.qr(torch.randn(3, 3, generator=generator))
        rotation = rotation.to(source.device)
        qs = _quantiles(source @ rotation, levels) + ramp * 10
        qt = _limit_slope(qs, _quantiles(target @ rotation, levels), max_slope)
        plan.append((rotation, qs, qt))
        source = _apply_step(source, rotation, qs, qt)
    return {"rgb": rgb, "lab": plan}


def _to_lab(points: torch.Tensor) -> torch.Tensor:
    return rgb_to_lab(points.T.reshape(1, 3, -1, 1)).reshape(3, -1).T


def _apply_step(points, rotation, qs, qt):
    p = points @ rotation
    moved = torch.stack([_interp(p[:, d], qs[d], qt[d]) for d in range(3)], 1)
    return moved @ rotation.T


def transport_lut(colour_map: dict, low: torch.Tensor, high: torch.Tensor, size: int = 33) -> torch.Tensor:
    """The colour map as an RGB -> RGB lookup table (1, 3, size, size, size) for `apply_lut`.

    Baking the Lab-space map into a table makes applying it one trilinear lookup per pixel,
    instead of two colour conversions and a dozen 1-D interpolations. The table spans only the
    box `low`..`high` (per RGB channel) the image's colours occupy: a photo fills a small part of
    the RGB cube, and a table over the whole cube would blur a steep map there.
    """
    qs, qt = colour_map["rgb"]
    # The table is built where the map lives (the map's device: the GPU when the photo is there).
    axis = torch.linspace(0, 1, size, device=qs.device)
    b, g, r = torch.meshgrid(axis, axis, axis, indexing="ij")
    grid = torch.stack([r, g, b], 0).reshape(1, 3, size, size * size)
    low, high = low.float().to(qs.device).reshape(1, 3, 1, 1), high.float().to(qs.device).reshape(1, 3, 1, 1)
    points = (low + grid * (high - low)).permute(0, 2, 3, 1).reshape(-1, 3)
    points = _to_lab(torch.stack([_interp(points[:, d], qs[d], qt[d]) for d in range(3)], 1))
    for rotation, qs, qt in colour_map["lab"]:
        points = _apply_step(points, rotation, qs, qt)
    moved = points.reshape(1, size, size * size, 3).permute(0, 3, 1, 2)
    return lab_to_rgb(moved).reshape(1, 3, size, size, size)


def apply_lut(rgb: torch.Tensor, lut: torch.Tensor, low: torch.Tensor, high: torch.Tensor) -> torch.Tensor:
    """Map (N, 3, H, W) RGB through a table from `transport_lut` over `low`..`high`, trilinearly."""
    n, _, h, w = rgb.shape
    low, high = low.to(rgb.device).reshape(1, 3, 1, 1), high.to(rgb.device).reshape(1, 3, 1, 1)
    unit = ((rgb.float() - low) / (high - low)).clamp(0, 1)
    # grid_sample wants (x, y, z) = (r, g, b) in -1..1 for a volume indexed [b][g][r].
    grid = (unit * 2 - 1).permute(0, 2, 3, 1).reshape(n, 1, h, w, 3)
    out = F.grid_sample(lut.to(rgb.device).expand(n, -1, -1, -1, -1), grid, mode="bilinear",
                        padding_mode="border", align_corners=True)
    return out.reshape(n, 3, h, w)
