"""Region logic of `imgen inpaint`: find the holes, crop around them with context, fill, paste back.

The network runs only on crops around clusters of holes, so a small mask in a 12 MP photo costs a
few small crops, not the whole photo. Crops too large for the network's budget are filled at a
lower resolution and the prediction is upscaled. Pixels outside the (dilated) mask are copied from
the input, so they come back bit for bit.
"""

from __future__ import annotations

import math
from collections import defaultdict, deque

import numpy as np
import torch
import torch.nn.functional as F

from imgen_cli import InputError, UsageError

# Side of the coarse cells in which holes are grouped into regions.
CELL = 16
# Context kept around a region on every side: at least this, or the region's own size (a crop
# that cuts through the surroundings of a large hole gives a worse fill than the whole image), but
# no more than twice its short side: a long thin stroke is never far from known pixels.
MIN_CONTEXT = 64
# Longest crop side the network runs at; larger crops are downscaled first (the net's cost grows
# with area, and far context matters less than the hole's neighbourhood).
MAX_SIDE = 1024
# Side of the buckets in which crops that might be merged are looked up.
BUCKET = 256
# Crops up to SMALL a side are grown to a multiple of ROUND and filled BATCH to a network call.
SMALL, ROUND, BATCH = 256, 16, 16
# A hole gets synthesized texture when it is at least this many pixels from the known region
# somewhere (twice it wide): a scratch or wire is better filled smoothly (its smooth fill is
# close to the truth, and copied texture would only add error), a removed object is not.
THICK = 8


def _holes(x: torch.Tensor, ctx) -> torch.Tensor:
    """The fill mask as an (N, 1, H, W) bool tensor, from --mask or from the alpha channel."""
    # The command's validate has made sure exactly one of the two is given.
    if ctx.options.get("mask_from_alpha", False):
        if ctx.alpha is None:
            raise UsageError("--mask-from-alpha needs an image with an alpha channel", ctx.source)
        return ctx.alpha < 0.5
    return ctx.inputs["mask"] > 0


def _grow(mask: torch.Tensor, radius: int) -> torch.Tensor:
    """Dilate a (1, 1, H, W) bool mask by a square of `radius`, separably so large radii stay cheap."""
    if radius <= 0:
        return mask
    k = 2 * radius + 1
    m = mask.float()
    m = F.max_pool2d(m, (1, k), stride=1, padding=(0, radius))
    m = F.max_pool2d(m, (k, 1), stride=1, padding=(radius, 0))
    return m > 0


def regions(mask: np.ndarray, dilate: int = 0) -> tuple[list[tuple[int, int, int, int]], np.ndarray]:
    """Crops, with context, around the clusters of holes in `mask`, and which holes each one owns.

    Holes closer than their dilation plus a cell fall into one cluster, so one crop fills them
    together and sees both; clusters whose crops overlap so much that one crop around both costs
    no more pixels than the two are merged too. Returns the (top, left, bottom, right) crop of
    every cluster and a coarse label map: cell (i, j) covers pixels [i*CELL, (i+1)*CELL) x [j*CELL, (j+1)*CELL) and
    holds the index of the cluster whose holes lie there, or -1.

    Args:
        mask: (H, W) bool array, True = fill.
        dilate: how far the mask will be grown, in pixels.
    """
    h, w = mask.shape
    gh, gw = math.ceil(h / CELL), math.ceil(w / CELL)
    padded = np.zeros((gh * CELL, gw * CELL), bool)
    padded[:h, :w] = mask
    coarse = padded.reshape(gh, CELL, gw, CELL).any(axis=(1, 3))
    reach = math.ceil(2 * dilate / CELL) + 1
    label = np.full(coarse.shape, -1, np.int64)
    extents = []  # (top, left, bottom, right) of each cluster's cells, in pixels
    for start in map(tuple, np.argwhere(coarse)):
        if label[start] >= 0:
            continue
        label[start] = len(extents)
        queue, cells = deque([start]), [start]
        while queue:
            cy, cx = queue.popleft()
            y0, y1 = max(cy - reach, 0), min(cy + reach + 1, gh)
            x0, x1 = max(cx - reach, 0), min(cx + reach + 1, gw)
            for ny, nx in np.argwhere(coarse[y0:y1, x0:x1] & (label[y0:y1, x0:x1] < 0)):
                cell = (y0 + ny, x0 + nx)
                label[cell] = len(extents)
                queue.append(cell)
                cells.append(cell)
        ys, xs = np.array(cells).T
        extents.append((ys.min() * CELL, xs.min() * CELL, (ys.max() + 1) * CELL, (xs.max() + 1) * CELL))

    def crop(extent: tuple[int, int, int, int]) -> tuple[int, int, int, int]:
        top, left, bottom, right = extent
        top, left, bottom, right = top - dilate, left - dilate, bottom + dilate, right + dilate
        sides = sorted((bottom - top, right - left))
        margin = min(2 * sides[0], max(MIN_CONTEXT, sides[1]))
        return max(top - margin, 0), max(left - margin, 0), min(bottom + margin, h), min(right + margin, w)

    def area(box: tuple[int, int, int, int]) -> int:
        return (box[2] - box[0]) * (box[3] - box[1])

    # Clusters whose crops overlap a lot are filled in one crop when that costs no more pixels than
    # two: one network call instead of two over nearly the same context. Candidates are found
    # through a grid of buckets, so a mask of thousands of specks stays cheap.
    alive = dict(enumerate(extents))
    parent = list(range(len(extents)))
    grid: dict[tuple[int, int], set[int]] = defaultdict(set)

    def buckets(box: tuple[int, int, int, int]) -> list[tuple[int, int]]:
        top, left, bottom, right = box
        return [(y, x) for y in range(top // BUCKET, (bottom - 1) // BUCKET + 1)
                for x in range(left // BUCKET, (right - 1) // BUCKET + 1)]

    for k, extent in alive.items():
        for cell in buckets(crop(extent)):
            grid[cell].add(k)
    work = list(alive)
    while work:
        k = work.pop()
        if k not in alive:
            continue
        box = crop(alive[k])
        for j in sorted({j for cell in buckets(box) for j in grid[cell]} - {k}):
            a, b = alive[k], alive[j]
            union = (min(a[0], b[0]), min(a[1], b[1]), max(a[2], b[2]), max(a[3], b[3]))
            if area(crop(union)) <= area(box) + area(crop(b)):
                for gone, extent in ((j, b), (k, a)):
                    for cell in buckets(crop(extent)):
                        grid[cell].discard(gone)
                del alive[j]
                parent[j] = k
                alive[k] = union
                for cell in buckets(crop(union)):
                    grid[cell].add(k)
                work.append(k)
                break

    def root(k: int) -> int:
        while parent[k] != k:
            k = parent[k]
        return k

    kept = sorted(alive)
    index = {k: n for n, k in enumerate(kept)}
    lookup = np.array([index[root(k)] for k in range(len(extents))] + [-1], np.int64)
    return [crop(alive[k]) for k in kept], lookup[label]


def _owned(label: np.ndarray, k: int, top: int, left: int, bottom: int, right: int) -> np.ndarray:
    """(bottom-top, right-left) bool array: the pixels whose coarse cell belongs to cluster k."""
    cells = label[top // CELL : (bottom - 1) // CELL + 1, left // CELL : (right - 1) // CELL + 1] == k
    full = np.repeat(np.repeat(cells, CELL, 0), CELL, 1)
    oy, ox = top % CELL, left % CELL
    return full[oy : oy + bottom - top, ox : ox + right - left]


def _batches(boxes: list[tuple[int, int, int, int]], size: tuple[int, int]):
    """Group the crops into network calls: `(index, box)` lists whose boxes all have one shape.

    A mask of many specks makes hundreds of small crops, and one call per crop would cost more in
    per-call overhead than in filling. Crops up to SMALL pixels a side are grown to a shape rounded
    up to a multiple of ROUND (more context, shifted to stay inside the image) and filled up to
    BATCH at a time; larger crops go one per call. Crops of one call do not see each other's
    fills: to each, the other's holes are holes still to be filled.
    """
    h, w = size
    groups: dict[tuple[int, int], list] = defaultdict(list)
    for k, (top, left, bottom, right) in enumerate(boxes):
        if max(bottom - top, right - left) > SMALL:
            yield [(k, (top, left, bottom, right))]
            continue
        shape = (min(math.ceil((bottom - top) / ROUND) * ROUND, h), min(math.ceil((right - left) / ROUND) * ROUND, w))
        top = min(max(top - (shape[0] - (bottom - top)) // 2, 0), h - shape[0])
        left = min(max(left - (shape[1] - (right - left)) // 2, 0), w - shape[1])
        group = groups[shape]
        group.append((k, (top, left, top + shape[0], left + shape[1])))
        if len(group) == BATCH:
            yield group
            groups[shape] = []
    for group in groups.values():
        if group:
            yield group


def _texture(filled: torch.Tensor, holes: torch.Tensor) -> torch.Tensor:
    """Replace the smooth fill of the thick holes of (n, 3, h, w) crops by synthesized texture.

    Holes are judged one connected component at a time: a component whose deepest pixel lies at
    least THICK pixels from the known region is synthesized as a whole, thinner ones keep the
    smooth fill. Every crop is synthesized with the same seed, so equal inputs give equal outputs.
    """
    from scipy import ndimage

    from ._synth import synthesize

    out = filled.clone()
    for i in range(filled.shape[0]):
        unknown = holes[i, 0].cpu().numpy() > 0.5
        if not unknown.any():
            continue
        distance = ndimage.distance_transform_cdt(np.pad(unknown, 1), metric="chessboard")[1:-1, 1:-1]
        labels, count = ndimage.label(unknown)
        deepest = np.asarray(ndimage.maximum(distance, labels, np.arange(1, count + 1)))
        thick = (deepest >= THICK)[labels - 1] & unknown
        if not thick.any():
            continue
        hole = torch.from_numpy(unknown).to(filled.device)
        synthesized = synthesize(filled[i].float(), hole, seed=0).to(filled.dtype)
        out[i] = torch.where(torch.from_numpy(thick).to(filled.device), synthesized, filled[i])
    return out


def _fill_crop(net, image: torch.Tensor, holes: torch.Tensor, texture: bool = True) -> torch.Tensor:
    """The fill of (n, 3, h, w) crops, downscaled when their long side exceeds MAX_SIDE.

    The network gives the smooth fill (harmonic guess plus its correction); with `texture`, the
    thick holes then get texture copied from the crop's known pixels (see _synth.py).
    """
    h, w = image.shape[-2:]
    factor = MAX_SIDE / max(h, w)
    if factor >= 1:
        filled = net(image, holes.to(image.dtype))
        return _texture(filled, holes) if texture else filled
    size = (max(round(h * factor), 4), max(round(w * factor), 4))
    small = F.interpolate(image, size=size, mode="bilinear", antialias=True, align_corners=False)
    # Any hole pixel makes its small pixel a hole, so no object colour leaks into the fill.
    small_holes = F.adaptive_max_pool2d(holes.to(image.dtype), size)
    filled = net(small, small_holes)
    if texture:
        filled = _texture(filled, small_holes)
    return F.interpolate(filled, size=(h, w), mode="bicubic", align_corners=False)


def inpaint(x: torch.Tensor, ctx) -> torch.Tensor:
    """Fill the holes of a batch (N, 3, H, W); pixels outside the dilated mask are copied from x."""
    holes = _holes(x, ctx).to(x.device)
    if bool(holes.flatten(1).all(dim=1).any()):
        # With no known pixel the network has nothing to continue and returns black.
        raise InputError("the mask covers the whole image: there is nothing left to fill it from", ctx.source)
    radius = int(ctx.options.get("dilate") or 0)
    texture = not ctx.options.get("smooth", False)
    net = ctx.model()
    out = x.clone()
    for n in range(x.shape[0]):
        boxes, label = regions(holes[n, 0].cpu().numpy(), radius)
        ctx.info(f"{len(boxes)} region(s) to fill: " + ", ".join(f"{r - l}x{b - t}" for t, l, b, r in boxes))
        # Holes not filled yet: the network sees them as holes in every crop they reach into, but
        # each crop writes only its own cluster's holes, which it sees with their full context.
        missing = holes[n : n + 1].clone()
        for batch in _batches(boxes, x.shape[-2:]):
            jobs = []
            for k, (top, left, bottom, right) in batch:
                # Dilate on a crop padded by the radius, so holes just outside the crop still grow into it.
                pt, pl = max(top - radius, 0), max(left - radius, 0)
                pb, pr = min(bottom + radius, x.shape[-2]), min(right + radius, x.shape[-1])
                owned = torch.from_numpy(_owned(label, k, pt, pl, pb, pr)).to(x.device)
                own = holes[n : n + 1, :, pt:pb, pl:pr] & owned
                inner = (slice(None), slice(None), slice(top - pt, bottom - pt), slice(left - pl, right - pl))
                unknown = _grow(missing[:, :, pt:pb, pl:pr], radius)[inner]
                own_grown = _grow(own, radius)[inner]
                jobs.append((own[inner], own_grown, unknown | own_grown))
            crops = torch.cat([out[n : n + 1, :, t:b, l:r] for _, (t, l, b, r) in batch])
            filled = _fill_crop(net, crops, torch.cat([job[2] for job in jobs]), texture).to(x.dtype)
            for i, ((_, (top, left, bottom, right)), (own, own_grown, _)) in enumerate(zip(batch, jobs)):
                crop = out[n : n + 1, :, top:bottom, left:right]
                weight = _seam(own, own_grown, radius)
                blended = filled[i : i + 1] * weight + crop * (1 - weight)
                out[n : n + 1, :, top:bottom, left:right] = torch.where(own_grown, blended, crop)
                missing[:, :, top:bottom, left:right] &= ~own
    if ctx.options.get("mask_from_alpha") and ctx.alpha is not None:
        # Filled pixels are no longer missing: the host writes this alpha with the output.
        ctx.output_alpha = ctx.alpha.masked_fill(holes.to(ctx.alpha.device), 1.0)
    return out


def _seam(core: torch.Tensor, grown: torch.Tensor, radius: int) -> torch.Tensor:
    """Blend weight: 1 on the user's mask, falling to 0 across the ring that --dilate added."""
    if radius <= 0:
        return core.float()
    k = 2 * radius + 1
    # A box mean, separably: the share of mask pixels within `radius`.
    near = F.avg_pool2d(core.float(), (1, k), stride=1, padding=(0, radius), count_include_pad=False)
    near = F.avg_pool2d(near, (k, 1), stride=1, padding=(radius, 0), count_include_pad=False)
    ramp = (2 * near).clamp(0, 1)
    return torch.where(core, torch.ones_like(ramp), torch.where(grown, ramp, torch.zeros_like(ramp)))
