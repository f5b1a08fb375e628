"""Full-reference metrics: PSNR, SSIM and MS-SSIM, with the conventions of the literature.

Every function takes the reference first and the image to judge second, as numpy arrays
(H, W) or (H, W, C), and the same keyword conventions:

- `data_range`: the peak value. By default it follows the dtype: 255 for uint8, 65535 for
  uint16, 1.0 for floats (taken as 0..1). An 8-bit image compared with a 16-bit one is then
  first widened to 16 bits (x257, exact), so 16-bit pairs are always compared in 16 bits. An
  explicit data_range takes the values as they are, whatever their dtypes.
- `channel`: "rgb" compares every colour channel (SSIM and MS-SSIM are averaged over channels,
  PSNR's mean squared error is over all values); "y" compares BT.601 luma computed as MATLAB's
  rgb2ycbcr does (16..235 on an 8-bit scale, not rounded), the convention of the super-resolution
  literature, with the full data range (255) as PSNR's peak. A grey image compared with a colour
  one counts as colour with R = G = B. Alpha channels are ignored.
- `crop_border`: pixels removed from every side first (SR papers crop the scale factor).

SSIM is that of Wang et al. (2004): an 11x11 Gaussian window of sigma 1.5, K1 = 0.01, K2 = 0.03,
population (not sample) covariances, averaged over the positions where the window lies entirely
inside the image. It equals scikit-image's `structural_similarity(gaussian_weights=True,
sigma=1.5, use_sample_covariance=False, data_range=...)`. Unlike Wang's MATLAB script, large
images are not downsampled first. MS-SSIM (Wang et al. 2003) uses five scales with the paper's
weights, 2x2 averaging between scales, and negative contrast terms clipped to zero as the common
implementations do; it needs images of at least 176 pixels a side.
"""

from __future__ import annotations

import math
import os
from concurrent.futures import ThreadPoolExecutor

import numpy as np

SIGMA = 1.5
RADIUS = 5  # the 11x11 window of Wang et al.: int(3.5 * 1.5 + 0.5)
K1, K2 = 0.01, 0.03
# Wang's window, as MATLAB's fspecial('gaussian', 11, 1.5) and scipy's gaussian_filter build it.
KERNEL = np.exp(-0.5 * (np.arange(-RADIUS, RADIUS + 1) / SIGMA) ** 2).astype(np.float32)
KERNEL /= KERNEL.sum()
MS_WEIGHTS = (0.0448, 0.2856, 0.3001, 0.2363, 0.1333)
MS_MIN_SIDE = (2 * RADIUS + 1) * 2 ** (len(MS_WEIGHTS) - 1)  # the coarsest scale still holds a window
# MATLAB rgb2ycbcr's luma row, for RGB in 0..1 giving Y in 16/255..235/255.
Y_WEIGHTS = np.array([65.481, 128.553, 24.966]) / 255.0
Y_OFFSET = 16.0 / 255.0
CHANNELS = ("rgb", "y")


def data_range_of(image: np.ndarray) -> float:
    """The peak value implied by a dtype: 255 (uint8), 65535 (uint16), 1.0 (floats)."""
    dtype = np.asarray(image).dtype
    if dtype == np.uint8:
        return 255.0
    if dtype == np.uint16:
        return 65535.0
    if dtype.kind == "f":
        return 1.0
    raise ValueError(f"no implied data range for {dtype} images; pass data_range")


def rgb_to_y(image: np.ndarray, data_range: float | None = None) -> np.ndarray:
    """BT.601 luma (H, W) as float64, computed as MATLAB's rgb2ycbcr and SR papers do.

    On an 8-bit scale Y runs from 16 to 235; other data ranges scale the same way. Values are
    not rounded. A grey image (H, W) or (H, W, 1) counts as R = G = B; alpha is ignored.
    """
    return _luma(_planes(image), float(data_range or data_range_of(image)), np.float64)


def _luma(planes: np.ndarray, top: float, dtype) -> np.ndarray:
    # Grey repeats its plane, so that it gives exactly the luma of the same image stored as RGB.
    red, green, blue = (0, 0, 0) if planes.shape[2] == 1 else (0, 1, 2)
    # A sum of planes, not `@`, which numpy runs slowly on strided integer data.
    luma = np.multiply(planes[:, :, red], Y_WEIGHTS[0], dtype=dtype)
    luma += np.multiply(planes[:, :, green], Y_WEIGHTS[1], dtype=dtype)
    luma += np.multiply(planes[:, :, blue], Y_WEIGHTS[2], dtype=dtype)
    luma += Y_OFFSET * top
    return luma


def crop(image: np.ndarray, border: int) -> np.ndarray:
    """The image without `border` pixels on every side."""
    if border < 0:
        raise ValueError(f"crop border must be 0 or more, not {border}")
    if border == 0:
        return image
    height, width = image.shape[:2]
    if 2 * border >= min(height, width):
        raise ValueError(f"crop border {border} leaves nothing of a {width}x{height} image")
    return image[border:height - border, border:width - border]


def psnr(ref: np.ndarray, out: np.ndarray, *, data_range: float | None = None, channel: str = "rgb",
         crop_border: int = 0, mask: np.ndarray | None = None) -> float:
    """Peak signal-to-noise ratio in dB (infinite for identical images).

    `mask` (H, W), true where pixels count, limits the mean squared error to those pixels (an
    inpainted hole, say); it is cropped with the image."""
    a, b, top = prepare(ref, out, data_range, channel, crop_border)
    if mask is not None:
        mask = np.asarray(mask, dtype=bool)
        mask = mask[:, :, 0] if mask.ndim == 3 and mask.shape[2] == 1 else mask
        if mask.shape != np.shape(ref)[:2]:
            raise ValueError(f"mask is {mask.shape[1::-1]}, the images {_size(np.asarray(ref))}")
        mask = crop(mask, crop_border)
        if not mask.any():
            raise ValueError("the mask selects no pixel")
        a, b = a[mask][None], b[mask][None]
    # In bands of rows, so that no image-sized temporary is made. Differences are exact in
    # float32 (16-bit values), squares are summed in float64; the casts are numpy's fast ones
    # (np.subtract(..., dtype=float64) on integers and BLAS's float64 dot were 50x slower here).
    squared = 0.0
    rows = max(1, (1 << 18) // (a.shape[1] * a.shape[2]))
    for first in range(0, a.shape[0], rows):
        diff = np.subtract(a[first:first + rows], b[first:first + rows], dtype=np.float32).astype(np.float64)
        squared += float(np.square(diff, out=diff).sum())
    mse = squared / a.size
    return math.inf if mse == 0 else 10 * math.log10(top * top / mse)


def ssim(ref: np.ndarray, out: np.ndarray, *, data_range: float | None = None, channel: str = "rgb",
         crop_border: int = 0) -> float:
    """Mean structural similarity (Wang et al. 2004), averaged over channels."""
    a, b, top = prepare(ref, out, data_range, channel, crop_border)
    if min(a.shape[:2]) < 2 * RADIUS + 1:
        raise ValueError(f"SSIM needs at least {2 * RADIUS + 1}x{2 * RADIUS + 1} pixels")
    return float(np.mean([_ssim_cs(a[:, :, c], b[:, :, c], top)[0] for c in range(a.shape[2])]))


def ms_ssim(ref: np.ndarray, out: np.ndarray, *, data_range: float | None = None, channel: str = "rgb",
            crop_border: int = 0) -> float:
    """Multi-scale SSIM (Wang et al. 2003), averaged over channels."""
    a, b, top = prepare(ref, out, data_range, channel, crop_border)
    if min(a.shape[:2]) < MS_MIN_SIDE:
        raise ValueError(f"MS-SSIM needs at least {MS_MIN_SIDE} pixels a side, not {a.shape[1]}x{a.shape[0]}")
    scores = []
    for c in range(a.shape[2]):
        x, y = a[:, :, c], b[:, :, c]
        score = 1.0
        for level, weight in enumerate(MS_WEIGHTS):
            full, contrast = _ssim_cs(x, y, top)
            last = level == len(MS_WEIGHTS) - 1
            score *= max(full if last else contrast, 0.0) ** weight
            if not last:
                x, y = _halve(x), _halve(y)
        scores.append(score)
    return float(np.mean(scores))


def prepare(ref: np.ndarray, out: np.ndarray, data_range: float | None = None, channel: str = "rgb",
            crop_border: int = 0) -> tuple[np.ndarray, np.ndarray, float]:
    """Both images as (H, W, C) arrays under the conventions above (views of the inputs where
    possible, float32 luma for "y"), and the peak value."""
    if channel not in CHANNELS:
        raise ValueError(f"channel must be one of {', '.join(CHANNELS)}, not {channel!r}")
    ref, out = np.asarray(ref), np.asarray(out)
    if ref.shape[:2] != out.shape[:2]:
        raise ValueError(f"sizes differ: {_size(ref)} (reference) and {_size(out)}")
    if data_range is None:
        ref, out = _same_depth(ref, out)
    top = float(data_range or data_range_of(ref))
    a, b = _planes(ref), _planes(out)
    if channel == "y":
        a, b = _luma(a, top, np.float32)[:, :, None], _luma(b, top, np.float32)[:, :, None]
    elif a.shape[2] != b.shape[2]:
        a, b = _colour(a), _colour(b)
    return crop(a, crop_border), crop(b, crop_border), top


def _size(image: np.ndarray) -> str:
    return f"{image.shape[1]}x{image.shape[0]}"


def _same_depth(ref: np.ndarray, out: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    if ref.dtype == out.dtype:
        return ref, out
    widen = {np.dtype(np.uint8): np.dtype(np.uint16)}
    if widen.get(ref.dtype) == out.dtype:
        return ref.astype(np.uint16) * 257, out
    if widen.get(out.dtype) == ref.dtype:
        return ref, out.astype(np.uint16) * 257
    if ref.dtype.kind == "f" and out.dtype.kind == "f":
        return ref, out
    raise ValueError(f"cannot compare a {ref.dtype} reference with a {out.dtype} image")


def _planes(image: np.ndarray) -> np.ndarray:
    """(H, W, C) with C 1 or 3: alpha dropped."""
    image = np.asarray(image)
    if image.ndim == 2:
        return image[:, :, None]
    if image.ndim != 3 or image.shape[2] not in (1, 2, 3, 4):
        raise ValueError(f"expected an (H, W) or (H, W, C) image with 1 to 4 channels, not {image.shape}")
    return image[:, :, :3] if image.shape[2] == 4 else image[:, :, :1] if image.shape[2] == 2 else image


def _colour(planes: np.ndarray) -> np.ndarray:
    return np.repeat(planes, 3, axis=2) if planes.shape[2] == 1 else planes


def _ssim_cs(x: np.ndarray, y: np.ndarray, top: float) -> tuple[float, float]:
    """(mean SSIM, mean contrast-structure term) of one channel, over the positions where the
    window lies entirely inside the image (Wang's 'valid' filtering, scikit-image's crop).

    The image is processed in bands of rows, in threads (numpy releases the GIL), so that the
    filtered maps stay in cache and are never held whole: a 12-megapixel channel takes a fraction
    of a second. Variances are shift-invariant, so the data is centred first and float32 loses
    no digits to the cancellation in E[x^2] - E[x]^2."""
    offset = 0.5 * (float(np.mean(x, dtype=np.float64)) + float(np.mean(y, dtype=np.float64)))
    xc = np.subtract(x, offset, dtype=np.float32)
    yc = np.subtract(y, offset, dtype=np.float32)
    rows = x.shape[0] - 2 * RADIUS
    workers = min(os.cpu_count() or 1, 4) if x.size > 1_000_000 else 1
    step = -(-rows // workers)
    bands = [(start, min(start + step, rows)) for start in range(0, rows, step)]
    consts = ((K1 * top) ** 2, (K2 * top) ** 2, offset)
    if workers == 1:
        sums = [_band_sums(xc, yc, *band, *consts) for band in bands]
    else:
        with ThreadPoolExecutor(workers) as pool:
            sums = list(pool.map(lambda band: _band_sums(xc, yc, *band, *consts), bands))
    count = rows * (x.shape[1] - 2 * RADIUS)
    return sum(s for s, _ in sums) / count, sum(c for _, c in sums) / count


def _band_sums(xc, yc, first: int, last: int, c1: float, c2: float, offset: float, rows: int = 32):
    """Sums of the SSIM and contrast-structure maps over output rows first..last-1."""
    width = xc.shape[1]
    maps = np.empty((4, rows + 2 * RADIUS, width), np.float32)
    total_s = total_c = 0.0
    for top in range(first, last, rows):
        n = min(rows, last - top)
        xs, ys = xc[top:top + n + 2 * RADIUS], yc[top:top + n + 2 * RADIUS]
        m = maps[:, :n + 2 * RADIUS]
        m[0], m[1] = xs, ys
        np.multiply(xs, xs, out=m[2])
        m[2] += ys * ys  # only the sum of the two variances is needed
        np.multiply(xs, ys, out=m[3])
        mx, my, squares, product = _window(m)
        mxy = mx * my
        contrast = (2 * (product - mxy) + c2) / (squares - mx * mx - my * my + c2)
        mx += offset
        my += offset
        luminance = (2 * mx * my + c1) / (mx * mx + my * my + c1)
        total_c += float(contrast.sum(dtype=np.float64))
        total_s += float((luminance * contrast).sum(dtype=np.float64))
    return total_s, total_c


def _window(maps: np.ndarray) -> np.ndarray:
    """The Gaussian window applied to (n, h, w) maps, 'valid' positions only: (n, h-10, w-10).

    Written as symmetric tap pairs on slices, which is faster than scipy.ndimage here."""
    h, w = maps.shape[1:]
    vertical = maps[:, RADIUS:h - RADIUS] * KERNEL[RADIUS]
    for i in range(RADIUS):
        vertical += (maps[:, i:h - 2 * RADIUS + i] + maps[:, 2 * RADIUS - i:h - i]) * KERNEL[i]
    out = vertical[:, :, RADIUS:w - RADIUS] * KERNEL[RADIUS]
    for i in range(RADIUS):
        out += (vertical[:, :, i:w - 2 * RADIUS + i] + vertical[:, :, 2 * RADIUS - i:w - i]) * KERNEL[i]
    return out


def _halve(x: np.ndarray) -> np.ndarray:
    """2x2 block means in float32 (an odd last row or column is dropped)."""
    x = x.astype(np.float32, copy=False)
    h, w = x.shape[0] // 2 * 2, x.shape[1] // 2 * 2
    return x[:h:2, :w:2] * 0.25 + x[1:h:2, :w:2] * 0.25 + x[:h:2, 1:w:2] * 0.25 + x[1:h:2, 1:w:2] * 0.25
