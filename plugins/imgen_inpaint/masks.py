"""Random free-form masks in the manner of LaMa's generator: thick strokes and boxes of many sizes;
and scattered specks, as dust on a scan.

Used by the training recipe, the benchmark and the tests; numpy only.
"""

from __future__ import annotations

import numpy as np


def _stroke(mask: np.ndarray, rng: np.random.Generator, max_width: float, width: float | None = None) -> None:
    """Draw one thick polyline: a random walk of 2-8 segments with round joints."""
    h, w = mask.shape
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    y, x = rng.uniform(0, h), rng.uniform(0, w)
    radius = rng.uniform(0.1, 1.0) * max_width / 2 + 1 if width is None else width / 2
    angle = rng.uniform(0, 2 * np.pi)
    for _ in range(rng.integers(2, 9)):
        angle += rng.uniform(-np.pi / 2, np.pi / 2)
        length = rng.uniform(0.05, 0.35) * max(h, w)
        y2 = float(np.clip(y + length * np.sin(angle), 0, h - 1))
        x2 = float(np.clip(x + length * np.cos(angle), 0, w - 1))
        dy, dx = y2 - y, x2 - x
        t = np.clip(((yy - y) * dy + (xx - x) * dx) / max(dy * dy + dx * dx, 1e-6), 0, 1)
        mask[(yy - y - t * dy) ** 2 + (xx - x - t * dx) ** 2 <= radius**2] = 1
        y, x = y2, x2


def _box(mask: np.ndarray, rng: np.random.Generator) -> None:
    h, w = mask.shape
    bh, bw = int(rng.uniform(0.1, 0.5) * h) + 1, int(rng.uniform(0.1, 0.5) * w) + 1
    top, left = rng.integers(0, h - bh + 1), rng.integers(0, w - bw + 1)
    mask[top : top + bh, left : left + bw] = 1


def random_mask(height: int, width: int, rng: np.random.Generator, coverage: tuple[float, float] = (0.05, 0.4),
                kind: str | None = None) -> np.ndarray:
    """A (height, width) float32 mask of 0s and 1s (1 = hole) whose hole share lies in `coverage`.

    `kind` is "strokes", "boxes" or "mixed"; None draws one (half strokes, a quarter each of the
    others). Draws again until the coverage fits, so the share is always in range.
    """
    kind = kind or rng.choice(["strokes", "strokes", "boxes", "mixed"])
    max_width = 0.12 * min(height, width)
    low, high = coverage
    while True:
        mask = np.zeros((height, width), np.float32)
        while mask.mean() < low:
            if kind == "strokes" or (kind == "mixed" and rng.random() < 0.6):
                _stroke(mask, rng, max_width)
            else:
                _box(mask, rng)
        if mask.mean() <= high:
            return mask


def specks(height: int, width: int, count: int, rng: np.random.Generator, size: int = 4) -> np.ndarray:
    """A (height, width) bool mask of `count` size x size squares at uniformly random places."""
    mask = np.zeros((height, width), bool)
    for y, x in zip(rng.integers(0, height - size, count), rng.integers(0, width - size, count)):
        mask[y : y + size, x : x + size] = True
    return mask


def large_holes(height: int, width: int, rng: np.random.Generator, coverage: tuple[float, float] = (0.10, 0.25),
                sizes: tuple[int, int] = (64, 192)) -> np.ndarray:
    """A (height, width) bool mask of object-removal holes covering a share in `coverage` of it.

    Boxes whose sides, and thick strokes whose widths, lie in `sizes` (pixels) for the boxes and in
    a third of it for the strokes (a 64-192 px long stroke segment of 21-64 px): the holes a
    removed person, sign or car leaves, too wide for any smooth fill to look like the photo.
    """
    yy, xx = np.mgrid[0:height, 0:width]
    low, high = coverage
    while True:
        mask = np.zeros((height, width), bool)
        while mask.mean() < low:
            if rng.random() < 0.5:
                bh, bw = rng.integers(sizes[0], sizes[1] + 1, 2)
                top, left = rng.integers(0, height - bh + 1), rng.integers(0, width - bw + 1)
                mask[top : top + bh, left : left + bw] = True
            else:
                radius = rng.uniform(sizes[0], sizes[1]) / 6
                y, x = rng.uniform(0, height), rng.uniform(0, width)
                angle = rng.uniform(0, 2 * np.pi)
                for _ in range(rng.integers(1, 3)):
                    length = rng.uniform(*sizes)
                    y2 = float(np.clip(y + length * np.sin(angle), 0, height - 1))
                    x2 = float(np.clip(x + length * np.cos(angle), 0, width - 1))
                    dy, dx = y2 - y, x2 - x
                    t = np.clip(((yy - y) * dy + (xx - x) * dx) / max(dy * dy + dx * dx, 1e-6), 0, 1)
                    mask |= (yy - y - t * dy) ** 2 + (xx - x - t * dx) ** 2 <= radius**2
                    y, x, angle = y2, x2, angle + rng.uniform(-np.pi / 2, np.pi / 2)
        if mask.mean() <= high:
            return mask


def thin_strokes(height: int, width: int, rng: np.random.Generator, coverage: tuple[float, float] = (0.03, 0.08),
                 widths: tuple[float, float] = (3, 12)) -> np.ndarray:
    """A (height, width) bool mask of scratches and wires: strokes `widths` pixels wide."""
    mask = np.zeros((height, width), np.float32)
    while mask.mean() < coverage[0]:
        _stroke(mask, rng, 0, width=rng.uniform(*widths))
    if mask.mean() > coverage[1]:
        return thin_strokes(height, width, rng, coverage, widths)
    return mask > 0
