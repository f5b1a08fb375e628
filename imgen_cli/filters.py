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


def _resample_taps(n_in: int, n_out: int, antialias: bool):
    """The source indices and weights of each output position of `resize` along one axis.

    The formulas of torch's bicubic `interpolate` (align_corners=False): Keys' cubic with a = -0.75
    on the four nearest source pixels, borders repeated; when antialiasing, the filter (a = -0.5)
    stretched over the source pixels an output pixel covers, as Pillow does. Returns (n_out, K)
    int64 indices, each within [0, n_in), and float32 weights; rows are padded with zero weights.
    """
    import torch

    scale = n_in / n_out
    out = torch.arange(n_out, dtype=torch.float64)
    if not antialias:
        a = -0.75
        real = scale * (out + 0.5) - 0.5
        first = real.floor()
        t = real - first
        weights = torch.stack([_cubic_far(t + 1, a), _cubic_near(t, a), _cubic_near(1 - t, a), _cubic_far(2 - t, a)], 1)
        index = (first[:, None] + torch.arange(-1, 3, dtype=torch.float64)).clamp(0, n_in - 1).long()
        return index, weights.float()
    support = 2.0 * scale if scale >= 1 else 2.0
    invscale = 1 / scale if scale >= 1 else 1.0
    centre = scale * (out + 0.5)
    # int() of torch's C++ truncates towards zero; both ends are then clamped into the image.
    low = (centre - support + 0.5).trunc().clamp_min(0)
    high = (centre + support + 0.5).trunc().clamp_max(n_in)
    k = int((high - low).max())
    j = torch.arange(k, dtype=torch.float64)
    x = ((j[None, :] + low[:, None] - centre[:, None] + 0.5) * invscale).abs()
    w = torch.where(x < 1, _cubic_near(x, -0.5), torch.where(x < 2, _cubic_far(x, -0.5), torch.zeros_like(x)))
    w = torch.where(j[None, :] < (high - low)[:, None], w, torch.zeros_like(w))
    total = w.sum(1, keepdim=True)
    w = torch.where(total != 0, w / total, w)
    index = (low[:, None] + j[None, :]).clamp_max(n_in - 1).long()
    return index, w.float()


def _cubic_near(x, a: float):
    return ((a + 2) * x - (a + 3)) * x * x + 1


def _cubic_far(x, a: float):
    return ((a * x - 5 * a) * x + 8 * a) * x - 4 * a


class BandResize:
    """`resize` of an image that arrives as bands of rows, top to bottom.

    `push(band)` takes the next rows of the (N, C, H, W) source and returns the output rows that
    those rows complete (possibly none), so a resize never holds more than a few bands of source
    and output rows instead of both whole images. The result equals `resize` of the whole image
    up to float rounding.

    Args:
        size_in: (height, width) of the whole source.
        size_out: (height, width) of the whole output.
        rows: output rows computed per step, bounding the temporary memory.
    """

    def __init__(self, size_in, size_out, rows: int = 128):
        antialias = size_out[0] < size_in[0] or size_out[1] < size_in[1]
        self.row_index, self.row_weights = _resample_taps(size_in[0], size_out[0], antialias)
        self.col_index, self.col_weights = _resample_taps(size_in[1], size_out[1], antialias)
        # Output row r is complete once source row needed[r] has arrived (taps only move down).
        self.needed = self.row_index.max(1).values.cummax(0).values
        self.lowest = self.row_index.min(1).values
        self.height_out = size_out[0]
        self.rows = rows
        self.buffer = None  # source rows [first, first + buffer rows)
        self.first = 0
        self.done = 0  # output rows [0, done) have been returned

    def push(self, band):
        """The output rows [top, top + rows) that `band` completes, as (top, tensor), or None."""
        import torch

        if self.buffer is None and band.device != self.row_index.device:
            # The taps follow the image (a CUDA output); `needed` and `lowest` stay on the CPU.
            self.row_index, self.row_weights, self.col_index, self.col_weights = (
                t.to(band.device) for t in (self.row_index, self.row_weights, self.col_index, self.col_weights))
        self.buffer = band if self.buffer is None else torch.cat([self.buffer, band], -2)
        arrived = self.first + self.buffer.shape[-2]
        end = int(torch.searchsorted(self.needed, arrived - 1, right=True))
        if end <= self.done:
            return None
        top = self.done
        parts = [self._rows(start, min(start + self.rows, end)) for start in range(top, end, self.rows)]
        self.done = end
        if end < self.height_out:
            keep = int(self.lowest[end:].min()) - self.first
            if keep > 0:
                self.buffer = self.buffer[..., keep:, :].clone()
                self.first += keep
        return top, torch.cat(parts, -2)

    def _rows(self, start: int, stop: int):
        index = self.row_index[start:stop] - self.first
        weights = self.row_weights[start:stop].to(self.buffer.dtype)
        tall = None
        for k in range(index.shape[1]):
            term = self.buffer.index_select(-2, index[:, k]) * weights[:, k, None]
            tall = term if tall is None else tall.add_(term)
        out = None
        col_weights = self.col_weights.to(tall.dtype)
        for k in range(self.col_index.shape[1]):
            term = tall.index_select(-1, self.col_index[:, k]) * col_weights[:, k]
            out = term if out is None else out.add_(term)
        return out.clamp_(0, 1)
