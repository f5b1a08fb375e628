"""The restyle network: a small two-level autoencoder with AdaIN at both levels of its latent space.

The encoder gives features at 1/2 and 1/4 of the input size; restyling replaces each level's
per-channel mean and standard deviation with the style image's (AdaIN, Huang & Belongie 2017)
and the decoder turns the result back into pixels. Statistics are passed in explicitly so that a
large image cut into tiles is normalised with its whole-image statistics, not per tile.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

EPS = 1e-5


def conv(cin: int, cout: int, stride: int = 1) -> nn.Conv2d:
    # Reflection padding keeps tile borders free of the dark rim zero padding teaches.
    return nn.Conv2d(cin, cout, 3, stride=stride, padding=1, padding_mode="reflect")


class Encoder(nn.Module):
    """Pixels to features at 1/2 (`width` channels) and 1/4 (`4 * width` channels) resolution.

    Args:
        width: channels of the 1/2-resolution level (default 16).
    """

    def __init__(self, width: int = 16):
        super().__init__()
        self.level1 = nn.Sequential(conv(12, width), nn.ReLU(inplace=True), conv(width, width))
        self.level2 = nn.Sequential(
            nn.ReLU(), conv(width, 4 * width, stride=2), nn.ReLU(inplace=True), conv(4 * width, 4 * width)
        )

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        f1 = self.level1(F.pixel_unshuffle(x, 2))
        return [f1, self.level2(f1)]


class Decoder(nn.Module):
    """Features at 1/4 and 1/2 resolution back to an RGB image.

    Args:
        width: channels of the 1/2-resolution level, as in the encoder (default 16).
    """

    def __init__(self, width: int = 16):
        super().__init__()
        self.deep = nn.Sequential(conv(4 * width, 4 * width), nn.ReLU(inplace=True), conv(4 * width, width))
        self.fine = nn.Sequential(
            nn.ReLU(), conv(2 * width, width), nn.ReLU(inplace=True), conv(width, width), nn.ReLU(inplace=True),
            conv(width, 12),
        )

    def forward(self, feats: list[torch.Tensor]) -> torch.Tensor:
        f1, f2 = feats
        up = F.interpolate(self.deep(f2), size=f1.shape[-2:], mode="nearest")
        return F.pixel_shuffle(self.fine(torch.cat([f1, up], 1)), 2)


def moments(feats: list[torch.Tensor]) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Per-image, per-channel (mean, std) of each level, shaped (N, C, 1, 1)."""
    out = []
    for f in feats:
        var, mean = torch.var_mean(f.float(), dim=(2, 3), keepdim=True, correction=0)
        out.append((mean.to(f.dtype), (var + EPS).sqrt().to(f.dtype)))
    return out


def adain(feats, content_moments, style_moments) -> list[torch.Tensor]:
    """Each level whitened with the content's moments and coloured with the style's."""
    return [
        (f - cm) / cs * ss + sm
        for f, (cm, cs), (sm, ss) in zip(feats, content_moments, style_moments)
    ]


class Restyler(nn.Module):
    """Encoder, AdaIN and decoder in one module; `forward(x)` reconstructs x (the autoencoder).

    Args:
        width: channels of the 1/2-resolution level (default 16); the 1/4 level has four times as many.
    """

    #: Input pixels each output pixel depends on, either side (for tiling).
    radius = 40
    #: Input sides must be a multiple of this.
    multiple = 4

    def __init__(self, width: int = 16):
        super().__init__()
        self.encoder = Encoder(width)
        self.decoder = Decoder(width)

    def encode(self, x: torch.Tensor) -> list[torch.Tensor]:
        return self.encoder(x)

    def restyle(self, x: torch.Tensor, content_moments, style_moments) -> torch.Tensor:
        return self.decoder(adain(self.encoder(x), content_moments, style_moments))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.encoder(x))
