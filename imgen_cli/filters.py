"""Small tensor filters shared by the host, plugins and their recipes (torch has no Gaussian blur of
its own, and torchvision, which has one, does not install beside the CPU torch build this project
uses). Plugins import them from `imgen_cli`.

Like the rest of the host package it imports torch only when a filter runs, so importing it never
slows `imgen --help`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch


def gaussian_radius(sigma: float) -> int:
    """How far `gaussian_blur` reaches: round(3 * sigma), at least 1 (the overlap it needs when tiled)."""
    return max(1, int(3 * sigma + 0.5))


def gaussian_blur(x: torch.Tensor, sigma: float, padding: str = "reflect") -> torch.Tensor:
    """Each channel of an (N, C, H, W) batch blurred by a Gaussian of `sigma` pixels.

    Separable (two 1-D passes), radius `gaussian_radius(sigma)`, borders padded by `padding`
    ("reflect" or "replicate") so the output has the input's size.
    """
    import torch
    import torch.nn.functional as F

    radius = gaussian_radius(sigma)
    t = torch.arange(-radius, radius + 1, dtype=x.dtype, device=x.device)
    g = torch.exp(-0.5 * (t / sigma) ** 2)
    g = g / g.sum()
    c = x.shape[1]
    x = F.pad(x, (radius, radius, radius, radius), mode=padding)
    x = F.conv2d(x, g.view(1, 1, 1, -1).expand(c, 1, 1, -1), groups=c)
    return F.conv2d(x, g.view(1, 1, -1, 1).expand(c, 1, -1, 1), groups=c)


def resize(x: torch.Tensor, size, mode: str = "bicubic") -> torch.Tensor:
    """Resize (N, C, H, W) to `size` (h, w), antialiased when shrinking, clamped to 0..1."""
    import torch.nn.functional as F

    antialias = size[0] < x.shape[-2] or size[1] < x.shape[-1]
    return F.interpolate(x.float(), size=tuple(size), mode=mode, align_corners=False,
                         antialias=antialias).clamp(0, 1)
