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
        # Clipping at black and white shrinks the noise near them, so two estimates are made and
        # the larger kept (clipping only ever lowers either):
        # - from the patches without a clipped pixel. That selection keeps the patches whose
        #   noise happened to point away from the limit, so it reads strong noise low (about 10%
        #   at sigma 50 on a photo with a bright sky);
        # - from the patches at most half clipped (a blown-out sky holds no noise at all),
        #   corrected for the variance that clipping a Gaussian of each patch's mean removes
        #   (the censored normal), by fixed-point iteration. It misses clipping inside textured
        #   patches whose mean is far from the limit, which the first estimate does not see.
        clipped = ((cols <= 0.5 / 255) | (cols >= 1 - 0.5 / 255)).float().mean(0)
        unclipped = _patch_sigma(_enough(cols, clipped == 0))
        cols = _enough(cols, clipped <= 0.5)
        seen, means = _patch_sigma(cols), cols.mean(0).double()
        sigma = seen
        for _ in range(4):
            sigma = seen / _clipped_share(means, sigma).sqrt()
        sigma = torch.maximum(sigma, unclipped)
        out.append(sigma)
    return torch.stack(out).float()


def _enough(cols: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
    """The columns marked in `keep`, or all of them when too few for a stable covariance."""
    return cols[:, keep] if int(keep.sum()) >= 8 * cols.shape[0] else cols


def _patch_sigma(cols: torch.Tensor) -> torch.Tensor:
    """Noise sigma seen in the patches (columns of `cols`), clipping included."""
    cols = cols - cols.mean(1, keepdim=True)
    cov = (cols @ cols.T).double() / max(1, cols.shape[1] - 1)
    # numpy's LAPACK call starts in milliseconds; torch's first eigvalsh can take seconds.
    eig = torch.from_numpy(np.linalg.eigvalsh(cov.numpy())).flip(0).clamp_min(0)  # descending
    return _noise_variance(eig).sqrt()


def _clipped_share(means: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """Mean over patches of Var(clip(X, 0, 1)) / sigma^2 for X ~ N(patch mean, sigma^2)."""
    sigma = float(sigma)
    if sigma <= 1e-6:
        return torch.tensor(1.0, dtype=torch.float64)
    normal = torch.distributions.Normal(torch.tensor(0.0, dtype=torch.float64), torch.tensor(1.0, dtype=torch.float64))
    mu = means.clamp(0, 1)
    a, b = (0 - mu) / sigma, (1 - mu) / sigma
    cdf_a, cdf_b = normal.cdf(a), normal.cdf(b)
    pdf_a, pdf_b = normal.log_prob(a).exp(), normal.log_prob(b).exp()
    inside = cdf_b - cdf_a
    first = (1 - cdf_b) + mu * inside + sigma * (pdf_a - pdf_b)
    second = (1 - cdf_b) + (mu * mu + sigma * sigma) * inside + 2 * mu * sigma * (pdf_a - pdf_b) \
        + sigma * sigma * (a * pdf_a - b * pdf_b)
    share = ((second - first * first) / sigma**2).clamp(0.05, 1)
    return share.mean()


def _noise_variance(eig: torch.Tensor) -> torch.Tensor:
    # Drop the largest eigenvalue one at a time until the remaining tail is symmetric about its mean.
    for i in range(eig.numel()):
        tail = eig[i:]
        tau = tail.mean()
        if (tail > tau).sum() >= (tail < tau).sum():
            return tau
    return eig[-1]
