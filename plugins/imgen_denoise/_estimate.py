"""Blind noise-level estimation: Chen, Zhu and Heng, "An Efficient Statistical Method for Image
Noise Level Estimation", ICCV 2015.

Patches of an image span a low-dimensional subspace for the image content plus white noise in every
direction. The eigenvalues of the patch covariance that belong to noise alone all equal sigma^2, so
their mean equals their median; the content eigenvalues are larger and skew the mean upwards. The
estimate is the mean of the largest tail of the sorted eigenvalues whose mean and median agree.
Unlike the median of a wavelet subband (Donoho's MAD), texture barely biases it.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

PATCH = 7
# Enough patches for a stable 147x147 covariance; more only costs time.
MAX_PATCHES = 40_000


def estimate_sigma(x: torch.Tensor, patch: int = PATCH, max_patches: int = MAX_PATCHES) -> torch.Tensor:
    """The standard deviation of additive white Gaussian noise in each image of a batch.

    Args:
        x: (N, C, H, W) image in 0..1, all channels sharing one noise level.
        patch: patch side. Default 7.
        max_patches: at most this many patches, on a regular grid, per image. Default 40000.

    Returns:
        (N,) float32 tensor of sigma on the 0..1 scale, on the CPU.
    """
    out = []
    for img in x.detach().float().cpu():
        # A grey image expanded to RGB repeats one noise field; copies would add no information
        # and make the covariance singular.
        if img.shape[0] > 1 and bool((img == img[:1]).all()):
            img = img[:1]
        c, h, w = img.shape
        count = max(1, (h - patch + 1) * (w - patch + 1))
        stride = max(1, math.ceil((count / max_patches) ** 0.5))
        cols = F.unfold(img[None], patch, stride=stride)[0]  # (C*patch*patch, L)
        # Clipping at black and white shrinks the noise there; leave such patches out while
        # enough others remain.
        inside = ((cols > 0.5 / 255) & (cols < 1 - 0.5 / 255)).all(0)
        if int(inside.sum()) >= 8 * cols.shape[0]:
            cols = cols[:, inside]
        cols = cols - cols.mean(1, keepdim=True)
        cov = (cols @ cols.T).double() / max(1, cols.shape[1] - 1)
        # numpy's LAPACK call starts in milliseconds; torch's first eigvalsh can take seconds.
        eig = torch.from_numpy(np.linalg.eigvalsh(cov.numpy())).flip(0).clamp_min(0)  # descending
        out.append(_noise_variance(eig).sqrt())
    return torch.stack(out).float()


def _noise_variance(eig: torch.Tensor) -> torch.Tensor:
    # Drop the largest eigenvalue one at a time until the remaining tail is symmetric about its mean.
    for i in range(eig.numel()):
        tail = eig[i:]
        tau = tail.mean()
        if (tail > tau).sum() >= (tail < tau).sum():
            return tau
    return eig[-1]
