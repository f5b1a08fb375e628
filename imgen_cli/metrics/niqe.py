"""NIQE, a no-reference quality score (Mittal, Soundararajan and Bovik, 2013): lower is better.

An image's natural-scene statistics are compared with those of pristine photos. The luminance
(0..255 scale) is normalised into MSCN coefficients (local mean subtracted and divided by the local
deviation, 7x7 Gaussian window of sigma 7/6); in every 96x96 patch, at full and half resolution,
a generalised Gaussian is fitted to the coefficients and an asymmetric one to the products of
horizontal, vertical and both diagonal neighbours: 36 numbers per patch. The pristine model is
the mean and covariance of those numbers over the sharp patches (local deviation above 0.75 of
the image's sharpest patch) of a set of pristine photos; an image's score is the distance between
that model and the mean and covariance of all its own patches.

The model shipped with imgen (`niqe_pristine.npz` beside this file) was fitted by the project on
its own training photos, so scores are comparable with each other but not with published NIQE
values (those use the authors' MATLAB model); every score says which parameter file made it.
Half resolution is made by 2x2 averaging rather than MATLAB's bicubic imresize.
"""

from __future__ import annotations

import hashlib
import io
import os
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy import ndimage, special

PATCH = 96
SHARPNESS = 0.75  # a pristine patch is at least this sharp relative to its image's sharpest
FORMAT = "imgen-niqe-1"
BUILTIN = Path(__file__).resolve().parent / "niqe_pristine.npz"
# Shape grids for the moment-matching fits (the reference code's 0.2:0.001:10).
_SHAPES = np.arange(0.2, 10, 0.001)
_GGD_RATIO = special.gamma(1 / _SHAPES) * special.gamma(3 / _SHAPES) / special.gamma(2 / _SHAPES) ** 2
_AGGD_RATIO = 1 / _GGD_RATIO
# Neighbour offsets (rows, columns) of the paired products: horizontal, vertical, two diagonals.
_SHIFTS = ((0, 1), (1, 0), (1, 1), (-1, 1))


@dataclass
class NiqeParams:
    """A pristine model: the mean (36,) and covariance (36, 36) of sharp-patch features."""

    mean: np.ndarray
    cov: np.ndarray
    images: int
    patches: int
    patch: int = PATCH
    sharpness: float = SHARPNESS
    path: str | None = None
    sha256: str | None = None

    def describe(self) -> str:
        """Which parameter file produced a score, for reports."""
        name = "built-in" if self.path == str(BUILTIN) else self.path or "in memory"
        digest = f", sha256 {self.sha256[:12]}" if self.sha256 else ""
        return f"{name} ({self.images} images, {self.patches} patches{digest})"

    def to_bytes(self) -> bytes:
        """The .npz file, byte for byte the same for the same model (no time stamps inside)."""
        arrays = {"format": np.array(FORMAT), "mean": self.mean, "cov": self.cov, "images": np.array(self.images),
                  "patches": np.array(self.patches), "patch": np.array(self.patch),
                  "sharpness": np.array(self.sharpness)}
        buffer = io.BytesIO()
        with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
            for key, value in arrays.items():
                entry = zipfile.ZipInfo(f"{key}.npy", date_time=(1980, 1, 1, 0, 0, 0))
                entry.compress_type = zipfile.ZIP_DEFLATED
                with archive.open(entry, "w") as f:
                    np.lib.format.write_array(f, np.asarray(value), allow_pickle=False)
        return buffer.getvalue()

    def save(self, path: str | os.PathLike) -> None:
        Path(path).write_bytes(self.to_bytes())


def load_params(path: str | os.PathLike | None = None) -> NiqeParams:
    """A pristine model saved by `fit_niqe(...).save()` (default: the one shipped with imgen)."""
    path = Path(path) if path else BUILTIN
    try:
        data = path.read_bytes()
        with np.load(io.BytesIO(data), allow_pickle=False) as npz:
            if str(npz.get("format", "")) != FORMAT:
                raise ValueError(f"not an imgen NIQE parameter file (no format {FORMAT!r})")
            mean, cov = npz["mean"].astype(np.float64), npz["cov"].astype(np.float64)
            if mean.shape != (36,) or cov.shape != (36, 36):
                raise ValueError(f"mean {mean.shape} and covariance {cov.shape}, expected (36,) and (36, 36)")
            return NiqeParams(mean, cov, images=int(npz["images"]), patches=int(npz["patches"]),
                              patch=int(npz["patch"]), sharpness=float(npz["sharpness"]), path=str(path),
                              sha256=hashlib.sha256(data).hexdigest())
    except (OSError, KeyError, ValueError, EOFError, zipfile.BadZipFile) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise ValueError(f"{path}: cannot read NIQE parameters ({reason})") from None


def niqe(image: np.ndarray, params: NiqeParams | None = None) -> float:
    """The NIQE score of an image (H, W) or (H, W, C), uint8, uint16 or float 0..1: lower is better."""
    params = params or _builtin()
    features, _ = patch_features(image, params.patch)
    features = features[np.isfinite(features).all(axis=1)]
    if len(features) == 0:
        raise ValueError("no textured patch to score (a flat image?)")
    mean = features.mean(axis=0)
    cov = np.cov(features, rowvar=False) if len(features) > 1 else np.zeros((36, 36))
    diff = params.mean - mean
    return float(np.sqrt(diff @ np.linalg.pinv((params.cov + cov) / 2) @ diff))


def fit_niqe(images, patch: int = PATCH, sharpness: float = SHARPNESS) -> NiqeParams:
    """Fit a pristine model on an iterable of images (arrays as `niqe` takes)."""
    kept, count = [], 0
    for image in images:
        features, sharp = patch_features(image, patch)
        selected = features[(sharp > sharpness * sharp.max()) & np.isfinite(features).all(axis=1)]
        kept.append(selected)
        count += 1
    features = np.concatenate(kept) if kept else np.zeros((0, 36))
    if len(features) < 37:
        raise ValueError(f"{len(features)} sharp patches from {count} images: too few for a 36-feature model "
                         f"(give more or larger images)")
    return NiqeParams(features.mean(axis=0), np.cov(features, rowvar=False), images=count,
                      patches=len(features), patch=patch, sharpness=sharpness)


def patch_features(image: np.ndarray, patch: int = PATCH) -> tuple[np.ndarray, np.ndarray]:
    """(features (n, 36), sharpness (n,)) of the image's n whole patch x patch tiles."""
    grey = _grey(image)
    if min(grey.shape) < patch:
        raise ValueError(f"NIQE needs at least {patch}x{patch} pixels, not {grey.shape[1]}x{grey.shape[0]}")
    rows, cols = grey.shape[0] // patch, grey.shape[1] // patch
    grey = grey[:rows * patch, :cols * patch]
    per_scale, sharpness = [], None
    for scale in (1, 2):
        coefficients, deviation = _mscn(grey)
        size = patch // scale
        blocks = _blocks(coefficients, rows, cols, size)
        if sharpness is None:
            sharpness = _blocks(deviation, rows, cols, size).mean(axis=(1, 2))
        per_scale.append(_block_features(blocks))
        grey = _halve(grey)
    return np.concatenate(per_scale, axis=1), sharpness


def _builtin() -> NiqeParams:
    global _BUILTIN_PARAMS
    if _BUILTIN_PARAMS is None:
        _BUILTIN_PARAMS = load_params(BUILTIN)
    return _BUILTIN_PARAMS


_BUILTIN_PARAMS: NiqeParams | None = None


def _grey(image: np.ndarray) -> np.ndarray:
    """Luminance on the 0..255 scale the MSCN constant assumes, as NIQE's rgb2gray computes it."""
    from .fullref import data_range_of

    image = np.asarray(image)
    scale = 255.0 / data_range_of(image)
    if image.ndim == 3 and image.shape[2] in (2, 4):
        image = image[:, :, :-1]
    if image.ndim == 3 and image.shape[2] == 3:
        grey = image[:, :, 0] * 0.2989 + image[:, :, 1] * 0.5870 + image[:, :, 2] * 0.1140
    elif image.ndim == 3 and image.shape[2] == 1:
        grey = image[:, :, 0].astype(np.float64)
    elif image.ndim == 2:
        grey = image.astype(np.float64)
    else:
        raise ValueError(f"expected an (H, W) or (H, W, C) image, not {image.shape}")
    return grey * scale


def _mscn(grey: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean-subtracted contrast-normalised coefficients and the local deviation (7x7 window)."""
    sigma = 7 / 6
    smooth = lambda x: ndimage.gaussian_filter(x, sigma, truncate=3 / sigma, mode="nearest")  # noqa: E731
    mean = smooth(grey)
    deviation = np.sqrt(np.abs(smooth(grey * grey) - mean * mean))
    return (grey - mean) / (deviation + 1), deviation


def _blocks(x: np.ndarray, rows: int, cols: int, size: int) -> np.ndarray:
    return x[:rows * size, :cols * size].reshape(rows, size, cols, size).swapaxes(1, 2).reshape(-1, size, size)


def _block_features(blocks: np.ndarray) -> np.ndarray:
    """18 features per block: GGD (shape, variance) of the coefficients, then AGGD (shape, mean,
    left variance, right variance) of each neighbour product; neighbours wrap around within the
    block, as in the reference implementation."""
    flat = blocks.reshape(len(blocks), -1)
    columns = list(_ggd(flat))
    for shift in _SHIFTS:
        products = (blocks * np.roll(blocks, shift, axis=(1, 2))).reshape(len(blocks), -1)
        columns.extend(_aggd(products))
    return np.stack(columns, axis=1)


def _nearest(grid: np.ndarray, values: np.ndarray) -> np.ndarray:
    """The shape whose moment ratio in `grid` (monotonic in the shape) is nearest each value;
    NaN stays NaN."""
    order = np.argsort(grid)
    ratios = grid[order]
    right = np.clip(np.searchsorted(ratios, values), 1, len(ratios) - 1)
    left = right - 1
    index = np.where(np.abs(values - ratios[left]) <= np.abs(ratios[right] - values), left, right)
    return np.where(np.isfinite(values), _SHAPES[order[index]], np.nan)


def _ggd(x: np.ndarray):
    with np.errstate(divide="ignore", invalid="ignore"):
        variance = np.mean(x * x, axis=1)
        ratio = variance / np.mean(np.abs(x), axis=1) ** 2
    return _nearest(_GGD_RATIO, ratio), variance


def _aggd(x: np.ndarray):
    negative, positive = x < 0, x > 0
    with np.errstate(divide="ignore", invalid="ignore"):
        left = np.sqrt(np.sum(x * x * negative, axis=1) / negative.sum(axis=1))
        right = np.sqrt(np.sum(x * x * positive, axis=1) / positive.sum(axis=1))
        gamma = left / right
        ratio = np.mean(np.abs(x), axis=1) ** 2 / np.mean(x * x, axis=1)
        normalised = ratio * (gamma ** 3 + 1) * (gamma + 1) / (gamma ** 2 + 1) ** 2
    shape = _nearest(_AGGD_RATIO, normalised)
    g1, g2, g3 = special.gamma(1 / shape), special.gamma(2 / shape), special.gamma(3 / shape)
    mean = (right - left) * (g2 / g1) * np.sqrt(g1 / g3)
    return shape, mean, left * left, right * right


def _halve(x: np.ndarray) -> np.ndarray:
    h, w = x.shape[0] // 2 * 2, x.shape[1] // 2 * 2
    return (x[:h:2, :w:2] + x[1:h:2, :w:2] + x[:h:2, 1:w:2] + x[1:h:2, 1:w:2]) * 0.25
