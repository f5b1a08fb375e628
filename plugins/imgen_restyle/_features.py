"""Fixed random convolutional features: the feature space of the training losses and the benchmark.

No pretrained classifier (VGG) is available to this project. Multi-scale statistics of untrained
convolutional filters are known to capture texture well (Ustyuzhaninov et al., "What does it take
to generate natural textures?", ICLR 2017), so the losses use such a network, built from a seed.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class RandomFeatures(nn.Module):
    """A frozen stack of random 3x3 (or `kernel`) convolutions with ReLU and 2x average pooling.

    Args:
        widths: output channels of each level (default (32, 64, 128)).
        kernel: convolution size (default 3).
        seed: seed of the weights (default 0); a different seed gives an independent network.
    """

    def __init__(self, widths: tuple[int, ...] = (32, 64, 128), kernel: int = 3, seed: int = 0):
        super().__init__()
        generator = torch.Generator().manual_seed(seed)
        self.convs = nn.ModuleList()
        cin = 3
        for cout in widths:
            layer = nn.Conv2d(cin, cout, kernel, padding=kernel // 2, padding_mode="reflect")
            fan_in = cin * kernel * kernel
            # He-scaled weights keep activations of similar size at every level.
            layer.weight.data = torch.randn(layer.weight.shape, generator=generator) * (2 / fan_in) ** 0.5
            layer.bias.data = torch.randn(cout, generator=generator) * 0.1
            self.convs.append(layer)
            cin = cout
        self.requires_grad_(False)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        # Centred input so the random filters respond to structure rather than mean brightness.
        h = (x - 0.5) * 2
        feats = []
        for i, layer in enumerate(self.convs):
            if i:
                h = F.avg_pool2d(h, 2)
            h = F.relu(layer(h))
            feats.append(h)
        return feats


def gram(f: torch.Tensor) -> torch.Tensor:
    """(N, C, C) Gram matrices normalised by the number of positions."""
    n, c, h, w = f.shape
    flat = f.reshape(n, c, h * w)
    return flat @ flat.transpose(1, 2) / (h * w)
