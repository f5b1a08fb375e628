"""The super-resolution network: a compact residual body at low resolution, a pixel-shuffle tail.

Imported only when a model is loaded, never by the plugin's front module.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class ResBlock(nn.Module):
    """conv-ReLU-conv with an identity skip.

    Args:
        channels: feature channels (default 32).
    """

    def __init__(self, channels: int = 32):
        super().__init__()
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=1)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv2(F.relu(self.conv1(x), inplace=True))


class CompactSR(nn.Module):
    """Late-upsampling SR network that predicts a residual over a bicubic upsample.

    Every convolution runs on the low-resolution grid, so the cost per output pixel falls with
    the square of the scale; only the last layer's sub-pixel shuffle reaches output resolution.
    The bicubic skip means the network starts from a sensible image and only learns the detail
    bicubic misses, which is what lets it train in minutes on a CPU.

    Args:
        scale: upscaling factor, 2, 3 or 4 (default 4).
        channels: feature channels of the body (default 32).
        blocks: residual blocks in the body (default 4).
    """

    def __init__(self, scale: int = 4, channels: int = 32, blocks: int = 4):
        super().__init__()
        self.scale = scale
        self.head = nn.Conv2d(3, channels, 3, padding=1)
        self.body = nn.Sequential(*[ResBlock(channels) for _ in range(blocks)])
        self.fuse = nn.Conv2d(channels, channels, 3, padding=1)
        self.tail = nn.Conv2d(channels, 3 * scale * scale, 3, padding=1)
        self.shuffle = nn.PixelShuffle(scale)
        # A zero tail makes the untrained network exactly bicubic, so training starts at the
        # baseline instead of below it.
        nn.init.zeros_(self.tail.weight)
        nn.init.zeros_(self.tail.bias)

    @property
    def radius(self) -> int:
        """Receptive-field radius in input pixels: one per 3x3 conv (head, two per block, fuse,
        tail) plus the bicubic skip's two-pixel support. Tiles overlapping by this much join
        without seams."""
        return len(self.body) * 2 + 3 + 2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        base = F.interpolate(x, scale_factor=self.scale, mode="bicubic", align_corners=False)
        feat = self.head(x)
        feat = feat + self.fuse(self.body(feat))
        return base + self.shuffle(self.tail(feat))


def config_from_state(state: dict) -> dict:
    """CompactSR keyword arguments that match a state dict (scale, channels, blocks)."""
    channels = state["head.weight"].shape[0]
    blocks = len({k.split(".")[1] for k in state if k.startswith("body.")})
    scale = int(round((state["tail.weight"].shape[0] / 3) ** 0.5))
    return {"scale": scale, "channels": channels, "blocks": blocks}
