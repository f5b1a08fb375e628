"""Small tensor filters shared by plugins and their recipes (torch has no Gaussian blur of its own,
and torchvision, which has one, does not install beside the CPU torch build this project uses).

Like the rest of the host package it imports torch only when a filter runs, so importing it never
slows `imgen --help`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch


def gaussian_blur(x: torch.Tensor, sigma: float, padding: str = "reflect") -> torch.Tensor:
    """Each channel of an (N, C, H, W) batch blurred by a Gaussian of `sigma` pixels.

    Separable (two 1-D passes), radius round(3 * sigma) but at least 1, borders padded by
    `padding` ("reflect" or "replicate") so the output has the input's size.
    """
    import torch
    import torch.nn.functional as F

    radius = max(1, int(3 * sigma + 0.5))
    t = torch.arange(-radius, radius + 1, dtype=x.dtype, device=x.device)
    g = torch.exp(-0.5 * (t / sigma) ** 2)
    g = g / g.sum()
    c = x.shape[1]
    x = F.pad(x, (radius, radius, radius, radius), mode=padding)
    x = F.conv2d(x, g.view(1, 1, 1, -1).expand(c, 1, 1, -1), groups=c)
    return F.conv2d(x, g.view(1, 1, -1, 1).expand(c, 1, -1, 1), groups=c)
