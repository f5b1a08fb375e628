"""Texture for large holes: coarse-to-fine patch synthesis that copies from the known part of the crop.

A small network trained for minutes on a CPU cannot invent texture (see docs/inpaint.md), but the
photo around a hole already holds the texture that belongs there. This stage finds, for every
patch over a hole, the most similar fully known patch of the crop (a nearest-neighbour field
searched PatchMatch-style: random initialisation, propagation of good matches to neighbours,
random search at shrinking radii; Barnes et al. 2009) and sets each hole pixel to the weighted
vote of the matched patches covering it, alternating the two (Wexler et al. 2007) from a coarse
level of an image pyramid to full size. Patches are compared by a few principal components of
their pixels plus their mean colour against the smooth fill's (the "guide"), which keeps the
copied texture on the structure and shading the smooth fill continues across the hole.

Everything is batched tensor code (gathers over the list of hole pixels), so it runs on CPU and
CUDA alike. The random draws come from one seeded CPU generator whatever the device, so the output
is repeatable and the same texture is copied on a GPU as on the CPU.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

# Patch side (odd) and the number of principal components a patch is compared by: 16 of the 147
# values of a 7x7 RGB patch keep the structure at a tenth of the cost of comparing all of them.
PATCH, COMPONENTS = 7, 16
# The coarsest level is no smaller than this (pixels, short side): patches need context to match.
MIN_SIDE = 24
# Per level, coarsest first: EM iterations (search + vote), search passes per iteration and the
# largest random-search radius (None: the whole level). The coarsest level finds where to copy
# from anywhere in the crop; finer levels only refine the matches they inherit, locally, which is
# what keeps a 512-pixel region within its time budget on a CPU.
COARSEST, MIDDLE, FINEST = (5, 2, None), (2, 1, 16), (1, 1, 4)


class _Random:
    """Seeded draws made on the CPU and moved to `device`: CUDA's generator gives other numbers
    than the CPU's for one seed, and with it other copied texture."""

    def __init__(self, seed: int, device):
        self.generator = torch.Generator().manual_seed(seed)
        self.device = device

    def randint(self, high: int, count: int) -> torch.Tensor:
        return torch.randint(high, (count,), generator=self.generator).to(self.device)

    def rand(self, *size: int) -> torch.Tensor:
        return torch.rand(size, generator=self.generator).to(self.device)


def _erode_steps(hole: torch.Tensor, cap: int) -> torch.Tensor:
    """Chessboard distance (in pixels, at most `cap`) of every hole pixel to the known region."""
    dist = torch.zeros_like(hole, dtype=torch.float32)
    inner = hole.float()
    for _ in range(cap):
        if not bool(inner.any()):
            break
        dist += inner
        inner = -F.max_pool2d(-inner, 3, stride=1, padding=1)
    return dist


def depth(hole: torch.Tensor, cap: int) -> torch.Tensor:
    """(N, 1, H, W) distance of hole pixels from the nearest known pixel, capped at `cap`."""
    # Pixels outside the image count as known (a hole touching the border is filled from inside).
    return _erode_steps(F.pad(hole, (1, 1, 1, 1), value=False), cap)[..., 1:-1, 1:-1]


def _down(image: torch.Tensor, hole: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Half-size image (mean of the known pixels of each cell) and hole (any hole pixel in a cell)."""
    known = (~hole).float()
    total = F.avg_pool2d(image * known, 2, ceil_mode=True)
    weight = F.avg_pool2d(known, 2, ceil_mode=True)
    small_hole = F.max_pool2d(hole.float(), 2, ceil_mode=True) > 0
    return torch.where(small_hole, F.avg_pool2d(image, 2, ceil_mode=True), total / weight.clamp_min(1e-6)), small_hole


class _Level:
    """One pyramid level: the target pixels (centres of patches over the hole) and valid sources."""

    def __init__(self, image: torch.Tensor, hole: torch.Tensor, guide: torch.Tensor):
        self.image, self.hole, self.guide = image, hole, guide  # (3, H, W), (H, W) bool, (3, H, W)
        h, w = hole.shape
        self.h, self.w = h, w
        r = PATCH // 2
        near = F.max_pool2d(hole[None, None].float(), PATCH, stride=1, padding=r)[0, 0] > 0
        valid = ~near
        valid[:r], valid[h - r :], valid[:, :r], valid[:, w - r :] = False, False, False, False
        self.valid = valid.flatten()
        self.sources = self.valid.nonzero()[:, 0]
        self.targets = near.flatten().nonzero()[:, 0]
        self.index = torch.full((h * w,), -1, dtype=torch.long, device=hole.device)
        self.index[self.targets] = torch.arange(len(self.targets), device=hole.device)
        self.holes = hole.flatten().nonzero()[:, 0]
        # The box around the targets, where their descriptors are recomputed every iteration.
        ty, tx = self.targets // w, self.targets % w
        if len(self.targets):
            self.box = (int(ty.min()), int(ty.max()) + 1, int(tx.min()), int(tx.max()) + 1)
            self.local = (ty - self.box[0]) * (self.box[3] - self.box[2]) + (tx - self.box[2])


def _basis(level: _Level, random: _Random) -> torch.Tensor:
    """(COMPONENTS, 3, PATCH, PATCH) principal directions of the level's known patches."""
    r = PATCH // 2
    device = level.image.device
    picks = level.sources[random.randint(len(level.sources), min(4096, len(level.sources)))]
    ys, xs = picks // level.w, picks % level.w
    d = torch.arange(-r, r + 1, device=device)
    py = (ys[:, None, None] + d[None, :, None]).expand(-1, PATCH, PATCH)
    px = (xs[:, None, None] + d[None, None, :]).expand(-1, PATCH, PATCH)
    patches = level.image[:, py, px].permute(1, 0, 2, 3).reshape(len(picks), -1)  # (n, 3*P*P)
    patches = patches - patches.mean(0)
    cov = patches.T @ patches / max(len(picks) - 1, 1)
    _, vectors = torch.linalg.eigh(cov.double())
    k = min(COMPONENTS, vectors.shape[1])
    return vectors[:, -k:].T.to(level.image.dtype).reshape(k, 3, PATCH, PATCH).contiguous()


def _describe(image: torch.Tensor, basis: torch.Tensor, extra: torch.Tensor) -> torch.Tensor:
    """(k + 3, H*W) descriptor of the patch centred at every pixel: its components and mean colour."""
    r = PATCH // 2
    padded = F.pad(image[None], (r, r, r, r), mode="replicate")
    comps = F.conv2d(padded, basis)[0]
    return torch.cat([comps, extra], 0).flatten(1)


def _patch_mean(image: torch.Tensor, weight: float) -> torch.Tensor:
    r = PATCH // 2
    return weight * F.avg_pool2d(F.pad(image[None], (r, r, r, r), mode="replicate"), PATCH, stride=1)[0]


class _Field:
    """The nearest-neighbour field of one level: a source centre (flat index) per target pixel."""

    def __init__(self, level: _Level, source: torch.Tensor, random: _Random):
        self.level, self.random = level, random
        self.nnf = source
        self.cost = torch.full(source.shape, float("inf"), device=source.device)

    def _random_sources(self, count: int) -> torch.Tensor:
        level = self.level
        return level.sources[self.random.randint(len(level.sources), count)]

    def _try(self, cand_y: torch.Tensor, cand_x: torch.Tensor, targets_desc: torch.Tensor, sources_desc: torch.Tensor,
             ok: torch.Tensor | None = None) -> None:
        level = self.level
        inside = (cand_y >= 0) & (cand_y < level.h) & (cand_x >= 0) & (cand_x < level.w)
        cand = cand_y.clamp(0, level.h - 1) * level.w + cand_x.clamp(0, level.w - 1)
        good = inside & level.valid[cand]
        if ok is not None:
            good &= ok
        cost = (sources_desc[:, cand] - targets_desc).square().sum(0)
        better = good & (cost < self.cost)
        self.nnf = torch.where(better, cand, self.nnf)
        self.cost = torch.where(better, cost, self.cost)

    def search(self, targets_desc: torch.Tensor, sources_desc: torch.Tensor, passes: int,
               reach: int | None = None) -> None:
        """Refresh the costs for new target descriptors, then propagate and randomly search."""
        level = self.level
        self.cost = (sources_desc[:, self.nnf] - targets_desc).square().sum(0)
        ty, tx = level.targets // level.w, level.targets % level.w
        for _ in range(passes):
            # Propagation: a neighbour's match, shifted back by the step to the neighbour, is a
            # coherent candidate; steps of 1 and 4 pixels spread good matches quickly in parallel.
            for step in (1, 4):
                for dy, dx in ((0, step), (0, -step), (step, 0), (-step, 0)):
                    ny, nx = ty + dy, tx + dx
                    inside = (ny >= 0) & (ny < level.h) & (nx >= 0) & (nx < level.w)
                    k = level.index[ny.clamp(0, level.h - 1) * level.w + nx.clamp(0, level.w - 1)]
                    ok = inside & (k >= 0)
                    src = self.nnf[k.clamp_min(0)]
                    self._try(src // level.w - dy, src % level.w - dx, targets_desc, sources_desc, ok)
            # Random search around the current match at halving radii, and one draw from anywhere.
            sy, sx = self.nnf // level.w, self.nnf % level.w
            radius = max(level.h, level.w) / 2 if reach is None else reach
            while radius >= 1:
                jitter = (self.random.rand(2, len(self.nnf)) * 2 - 1) * radius
                self._try(sy + jitter[0].round().long(), sx + jitter[1].round().long(), targets_desc, sources_desc)
                sy, sx = self.nnf // level.w, self.nnf % level.w
                radius /= 2
            if reach is None:
                anywhere = self._random_sources(len(self.nnf))
                self._try(anywhere // level.w, anywhere % level.w, targets_desc, sources_desc)

    def vote(self, image: torch.Tensor, hard: bool = False) -> torch.Tensor:
        """The image with every hole pixel set to the similarity-weighted mean of the votes on it.

        With `hard`, every pixel takes the vote of the best-matching patch covering it instead:
        no averaging of slightly misaligned copies, so the texture keeps its full contrast.
        """
        level = self.level
        r = PATCH // 2
        if hard:
            weight = torch.where(torch.isfinite(self.cost), -self.cost, torch.full_like(self.cost, -1e30))
        else:
            # Wexler et al.'s weights: a match counts by its similarity, on the scale of its typical cost.
            finite = self.cost[torch.isfinite(self.cost)]
            scale = 2 * torch.quantile(finite[:100000], 0.75).clamp_min(1e-8) if len(finite) else 1.0
            weight = torch.exp(-self.cost / scale)
        qy, qx = level.holes // level.w, level.holes % level.w
        total = torch.zeros((3, len(level.holes)), dtype=image.dtype, device=image.device)
        norm = torch.zeros(len(level.holes), dtype=image.dtype, device=image.device)
        flat = image.flatten(1)
        for dy in range(-r, r + 1):
            for dx in range(-r, r + 1):
                cy, cx = qy - dy, qx - dx
                inside = (cy >= 0) & (cy < level.h) & (cx >= 0) & (cx < level.w)
                k = level.index[cy.clamp(0, level.h - 1) * level.w + cx.clamp(0, level.w - 1)].clamp_min(0)
                src = self.nnf[k] + dy * level.w + dx
                if hard:
                    wk = torch.where(inside, weight[k], torch.full_like(norm, -3e30))
                    if dy == -r and dx == -r:
                        best = torch.full_like(norm, -2e30)
                    take = wk > best
                    best = torch.where(take, wk, best)
                    total = torch.where(take, flat[:, src], total)
                    norm = torch.where(take, torch.ones_like(norm), norm)
                    continue
                wk = torch.where(inside, weight[k], torch.zeros_like(norm))
                total += flat[:, src] * wk
                norm += wk
        out = flat.clone()
        filled = total / norm.clamp_min(1e-12)
        out[:, level.holes] = torch.where(norm > 0, filled, out[:, level.holes])
        return out.view_as(image)


def synthesize(image: torch.Tensor, hole: torch.Tensor, seed: int = 0, guide_weight: float = 1.0) -> torch.Tensor:
    """Fill the holes of one image with texture copied from its known part.

    Args:
        image: (3, H, W) with the holes already holding a smooth fill (the guide the copied
            patches must agree with in mean colour).
        hole: (H, W) bool, True where pixels are to be synthesized.
        seed: seed of the random search, so the output is repeatable.
        guide_weight: how strongly a patch's mean colour must match the guide's (0 ignores it).

    Returns the (3, H, W) image with the holes replaced; returns `image` unchanged when the crop
    has too few fully known patches to copy from.
    """
    random = _Random(seed, image.device)
    guide_scale = math.sqrt(guide_weight * PATCH * PATCH)
    levels = [_Level(image, hole, image)]
    while min(levels[-1].h, levels[-1].w) >= 2 * MIN_SIDE and bool(levels[-1].hole.any()):
        # A level coarser than the hole's own size (relative to the patch) adds nothing.
        thick = depth(levels[-1].hole[None, None], 4).amax()
        if thick < 4:
            break
        small, small_hole = _down(levels[-1].image[None], levels[-1].hole[None, None])
        levels.append(_Level(small[0], small_hole[0, 0], small[0]))
    if any(len(level.sources) < 16 for level in levels) or not bool(hole.any()):
        return image
    field = None
    estimate = None
    for depth_index, level in enumerate(reversed(levels)):
        finest = level is levels[0]
        rounds, passes, reach = COARSEST if depth_index == 0 else FINEST if finest else MIDDLE
        if estimate is None:
            estimate = level.image
            field = _Field(level, level.sources[random.randint(len(level.sources), len(level.targets))], random)
        else:
            up = F.interpolate(estimate[None], size=(level.h, level.w), mode="bilinear", align_corners=False)[0]
            estimate = torch.where(level.hole, up, level.image)
            field = _upsample(field, level, random)
        basis = _basis(level, random)
        sources_desc = _describe(level.image, basis, _patch_mean(level.image, guide_scale))
        guide_mean = _patch_mean(level.guide, guide_scale).flatten(1)[:, level.targets]

        def targets_desc():
            r = PATCH // 2
            y0, y1, x0, x1 = level.box
            padded = F.pad(estimate[None], (r, r, r, r), mode="replicate")[..., y0 : y1 + 2 * r, x0 : x1 + 2 * r]
            comps = F.conv2d(padded, basis)[0].flatten(1)[:, level.local]
            return torch.cat([comps, guide_mean], 0)

        if depth_index:
            # The upsampled field copies full-resolution patches: voting with it first gives the
            # estimate this level's texture, which a search against the blurry upsampled
            # estimate would trade for smooth patches.
            field.cost = (sources_desc[:, field.nnf] - targets_desc()).square().sum(0)
            estimate = field.vote(estimate)
        for round_index in range(rounds):
            field.search(targets_desc(), sources_desc, passes, reach)
            # The last vote at full size copies each pixel from the best patch over it rather than
            # averaging all of them: averaging slightly different copies is what blurs texture.
            estimate = field.vote(estimate, hard=finest and round_index == rounds - 1)
    return torch.where(hole, estimate, image)


def _upsample(coarse: _Field, level: _Level, random: _Random) -> _Field:
    """The field of the next finer level: each target takes its coarse parent's match, doubled."""
    parent_level = coarse.level
    ty, tx = level.targets // level.w, level.targets % level.w
    py, px = (ty // 2).clamp(max=parent_level.h - 1), (tx // 2).clamp(max=parent_level.w - 1)
    k = parent_level.index[py * parent_level.w + px]
    src = coarse.nnf[k.clamp_min(0)]
    sy = (src // parent_level.w) * 2 + ty % 2
    sx = (src % parent_level.w) * 2 + tx % 2
    inside = (sy < level.h) & (sx < level.w) & (k >= 0)
    cand = sy.clamp(max=level.h - 1) * level.w + sx.clamp(max=level.w - 1)
    good = inside & level.valid[cand]
    fallback = level.sources[random.randint(len(level.sources), len(level.targets))]
    return _Field(level, torch.where(good, cand, fallback), random)
