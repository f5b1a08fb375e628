"""Curve estimation network for low-light enhancement (Zero-DCE++ style).

A small CNN looks at a downscaled copy of the photo and predicts one curve parameter per pixel and
colour channel. The light-enhancement curve LE(x) = x + a*x*(1-x) is applied `iterations` times
with that map, upsampled to full resolution. LE keeps 0 at 0 and 1 at 1 and is monotonic for
|a| <= 1, so the output never clips and never inverts tones, whatever the network predicts.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def apply_curves(x: torch.Tensor, a: torch.Tensor, iterations: int) -> torch.Tensor:
    """LE applied `iterations` times with the same parameter map `a` (same size as `x`)."""
    for _ in range(iterations):
        x = x + a * x * (1 - x)
    return x


def _upsample_rows(a: torch.Tensor, height: int, start: int, stop: int) -> torch.Tensor:
    """Rows start..stop of the map `a`, already resized to full width, resized to `height` rows.

    Matches F.interpolate(mode="bilinear", align_corners=False). Resizing the whole map at
    once for a 12-megapixel photo costs more memory traffic than the curve itself; a band of
    rows stays in cache.
    """
    h = a.shape[-2]
    rows = torch.arange(start, stop, device=a.device, dtype=torch.float32)
    src = ((rows + 0.5) * (h / height) - 0.5).clamp(min=0)
    lo = src.floor().long().clamp(max=h - 1)
    hi = (lo + 1).clamp(max=h - 1)
    w = (src - lo).to(a.dtype).view(1, 1, -1, 1)
    return torch.lerp(a[:, :, lo], a[:, :, hi], w)


class CurveNet(nn.Module):
    """Predicts curve parameter maps from a low-resolution view of the image.

    Seven 3x3 convolutions with symmetric skip concatenations (as in Zero-DCE), plus a global
    branch: the mean and max of the middle features, so the curves depend on the exposure of the
    whole picture and not only on a 15-pixel neighbourhood (a shadow in a bright photo must not be
    treated like a dark photo). A constant plane holding the target exposure is a fourth input, so
    one network serves every `--exposure`.

    Args:
        channels: width of every hidden layer (default 32).
        iterations: how many times the curve is applied (default 8).
        size: long side of the downscaled copy the curves are estimated on (default 256).
    """

    def __init__(self, channels: int = 32, iterations: int = 8, size: int = 256):
        super().__init__()
        self.iterations = iterations
        self.size = size
        c = channels
        self.conv1 = nn.Conv2d(4, c, 3, padding=1, padding_mode="replicate")
        self.conv2 = nn.Conv2d(c, c, 3, padding=1, padding_mode="replicate")
        self.conv3 = nn.Conv2d(c, c, 3, padding=1, padding_mode="replicate")
        self.conv4 = nn.Conv2d(c, c, 3, padding=1, padding_mode="replicate")
        self.glob = nn.Linear(2 * c, c)
        self.conv5 = nn.Conv2d(2 * c, c, 3, padding=1, padding_mode="replicate")
        self.conv6 = nn.Conv2d(2 * c, c, 3, padding=1, padding_mode="replicate")
        self.conv7 = nn.Conv2d(2 * c, 3, 3, padding=1, padding_mode="replicate")

    def predict(self, small: torch.Tensor, exposure: float | torch.Tensor) -> torch.Tensor:
        """Curve parameters in -1..1, same size as `small` (N, 3, h, w).

        `exposure` is the target mean level, a float or one value per image (N,).
        """
        n, _, h, w = small.shape
        e = torch.as_tensor(exposure, dtype=small.dtype, device=small.device).reshape(-1, 1, 1, 1)
        x = torch.cat([small, e.expand(n, 1, h, w)], dim=1)
        x1 = F.relu(self.conv1(x))
        x2 = F.relu(self.conv2(x1))
        x3 = F.relu(self.conv3(x2))
        x4 = F.relu(self.conv4(x3))
        g = self.glob(torch.cat([x4.mean(dim=(2, 3)), x4.amax(dim=(2, 3))], dim=1))
        x4 = F.relu(x4 + g[:, :, None, None])
        x5 = F.relu(self.conv5(torch.cat([x3, x4], dim=1)))
        x6 = F.relu(self.conv6(torch.cat([x2, x5], dim=1)))
        return torch.tanh(self.conv7(torch.cat([x1, x6], dim=1)))

    def downscale(self, x: torch.Tensor) -> torch.Tensor:
        """The copy the curves are estimated on: area-averaged to `size` on the long side."""
        h, w = x.shape[-2:]
        f = self.size / max(h, w)
        if f >= 1:
            return x
        return F.interpolate(x, size=(max(1, round(h * f)), max(1, round(w * f))), mode="area")

    @torch.no_grad()
    def forward(self, x: torch.Tensor, exposure: float = 0.5, strength: float = 1.0, denoise: float = 4.0) -> torch.Tensor:
        """Enhance a batch (N, 3, H, W) in 0..1 at full resolution.

        `strength` scales the curve parameters (0 leaves the image unchanged, 2 roughly doubles
        the correction; clamped so the curve stays monotonic). `denoise` is the strength of the
        shadow smoothing done before the curves (see `smooth_noise`; 0 turns it off). The work
        is done in bands of rows small enough to stay in cache, so a large photo never needs a
        full-size copy of the parameter map.
        """
        h, w = x.shape[-2:]
        a = (self.predict(self.downscale(x), exposure) * strength).clamp(-1, 1)
        a = F.interpolate(a, size=(a.shape[-2], w), mode="bilinear", align_corners=False)
        eps = denoise * noise_level(x) ** 2 if denoise > 0 and strength > 0 else 0.0
        band = max(8, (1 << 17) // (w * x.shape[0]))
        out = torch.empty_like(x)
        for start in range(0, h, band):
            stop = min(start + band, h)
            a_band = _upsample_rows(a, h, start, stop)
            y = smooth_noise(x, start, stop, eps) if eps > 0 else x[:, :, start:stop].clone()
            one_plus_a = a_band + 1
            tmp = torch.empty_like(y)
            # x + a*x*(1-x) == x * (1 + a - a*x): three in-place passes per iteration.
            for _ in range(self.iterations):
                torch.mul(a_band, y, out=tmp)
                torch.sub(one_plus_a, tmp, out=tmp)
                y.mul_(tmp)
            out[:, :, start:stop] = y
        return out


def noise_level(x: torch.Tensor) -> float:
    """Robust estimate of the input's noise standard deviation, from every 8th row.

    Median absolute difference of horizontal neighbours (of the channel mean), scaled for a
    Gaussian. Texture inflates it a little; on the clean training photos it averages 0.007.
    """
    rows = x[:, :, ::8].float().mean(dim=1)
    d = (rows[..., 1:] - rows[..., :-1]).abs().flatten()
    return float(1.4826 * d.median() / 2**0.5)


def _box(t: torch.Tensor, radius: int) -> torch.Tensor:
    """Mean over (2r+1)^2 windows of a tensor padded by r on every side (valid part only)."""
    k = 2 * radius + 1
    h, w = t.shape[-2] - 2 * radius, t.shape[-1] - 2 * radius
    rows = t[..., 0:w].clone()
    for i in range(1, k):
        rows += t[..., i : i + w]
    out = rows[..., 0:h, :].clone()
    for i in range(1, k):
        out += rows[..., i : i + h, :]
    return out.mul_(1 / (k * k))


def smooth_noise(x: torch.Tensor, start: int, stop: int, eps: float, radius: int = 2) -> torch.Tensor:
    """Rows start..stop of `x` with flat areas smoothed by a guided filter.

    Each pixel moves towards its (2r+1)^2 box mean by eps / (local variance + eps), the variance
    taken on the channel mean: where it is near the noise variance (eps is a few times it) the
    noise goes; edges and texture have far more variance and stay. The curves amplify shadow
    noise several times, so this decides how grainy a brightened night photo looks.
    """
    h = x.shape[-2]
    lo, hi = max(0, start - radius), min(h, stop + radius)
    pad = (radius, radius, radius - (start - lo), radius - (hi - stop))
    xb = F.pad(x[:, :, lo:hi], pad, mode="replicate")
    lum = xb.mean(dim=1, keepdim=True)
    mean = _box(xb, radius)
    lum_mean = mean.mean(dim=1, keepdim=True)
    var = _box(lum.mul_(lum), radius).sub_(lum_mean.mul_(lum_mean)).clamp_(min=0)
    keep = var.div_(var + eps)
    centre = xb[:, :, radius : radius + stop - start, radius : radius + x.shape[-1]]
    return mean.add_((centre - mean).mul_(keep))


def config_from_state(state: dict) -> dict:
    """CurveNet keyword arguments that match a state dict: the width. `iterations` and `size` are
    not in the tensors (the recipe records iterations in the file's metadata) and keep their defaults."""
    return {"channels": state["conv1.weight"].shape[0]}
