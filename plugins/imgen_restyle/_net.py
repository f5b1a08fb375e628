"""The restyle network: a small autoencoder with AdaIN at every level of its latent space.

The encoder gives three levels: the pixels themselves as 2x2 blocks (1/2 size, 12 channels),
learned features at 1/2 and at 1/4 size. Restyling replaces each level's per-channel mean and
standard deviation with the style image's (AdaIN, Huang & Belongie 2017). The decoder adds a
learned correction to the restyled pixel level, so an untrained decoder (its last layer starts at
zero) is exactly an autoencoder and a colour transfer, and training only has to learn texture. Statistics are passed in explicitly so that a
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
    """Pixels to three levels: 2x2 pixel blocks, features at 1/2 (`width` channels) and at 1/4
    (`4 * width` channels) resolution.

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
        f0 = F.pixel_unshuffle(x, 2)
        f1 = self.level1(f0)
        return [f0, f1, self.level2(f1)]


class Decoder(nn.Module):
    """The encoder's three levels back to an RGB image: the pixel level plus a learned correction.

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
        nn.init.zeros_(self.fine[-1].weight)
        nn.init.zeros_(self.fine[-1].bias)

    def forward(self, feats: list[torch.Tensor]) -> torch.Tensor:
        f0, f1, f2 = feats
        up = F.interpolate(self.deep(f2), size=f1.shape[-2:], mode="nearest")
        return F.pixel_shuffle(f0 + self.fine(torch.cat([f1, up], 1)), 2)


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


def config_from_state(state: dict) -> dict:
    """Restyler keyword arguments that match a state dict: the width of the first level."""
    return {"width": state["encoder.level1.0.weight"].shape[0]}
