"""What `imgen restyle` does per image: whole-image statistics in `prepare`, the network per tile.

AdaIN needs the content's feature statistics. Taken per tile they would differ from tile to tile
and show seams, so `prepare` measures them once on the whole image (in chunks, so any size fits),
together with the style's statistics and the colour map, and `process` only applies them.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from imgen_cli import gaussian_blur

from ._color import apply_lut, fit_colour_map, transport_lut
from ._net import EPS, moments

#: Long side of the style image, in pixels, before its statistics are taken.
STYLE_SIDE = 512
#: Long side of the preview rendered in `prepare` to fit the colour map.
PREVIEW_SIDE = 512
#: Side of the chunks the whole-image content statistics are gathered in.
CHUNK = 1024
#: Colour samples drawn for fitting the colour map.
SAMPLES = 1 << 14
#: Gaussian sigma, in pixels, that separates the fine detail `--detail` restores from the base.
DETAIL_SIGMA = 2.0


def resize_long(image: torch.Tensor, side: int, multiple: int = 4) -> torch.Tensor:
    """`image` scaled so its long side is `side` (sides rounded to `multiple`), antialiased."""
    h, w = image.shape[-2:]
    scale = side / max(h, w)
    size = (max(multiple, round(h * scale / multiple) * multiple), max(multiple, round(w * scale / multiple) * multiple))
    return F.interpolate(image.float(), size=size, mode="bilinear", antialias=scale < 1, align_corners=False)


def _pad(x: torch.Tensor, multiple: int = 4) -> torch.Tensor:
    ph, pw = -x.shape[-2] % multiple, -x.shape[-1] % multiple
    if not (ph or pw):
        return x
    mode = "reflect" if ph < x.shape[-2] and pw < x.shape[-1] else "replicate"
    return F.pad(x, (0, pw, 0, ph), mode=mode)


def content_moments(net, x: torch.Tensor, device, dtype) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Per-channel (mean, std) of the encoder's levels over the whole image, gathered chunk by chunk."""
    sums, squares, count = None, None, None
    for y0 in range(0, x.shape[-2], CHUNK):
        for x0 in range(0, x.shape[-1], CHUNK):
            chunk = _pad(x[..., y0:y0 + CHUNK, x0:x0 + CHUNK]).to(device, dtype)
            feats = [f.float() for f in net.encode(chunk)]
            if sums is None:
                sums = [torch.zeros_like(f[:, :, :1, :1]) for f in feats]
                squares = [torch.zeros_like(f[:, :, :1, :1]) for f in feats]
                count = [0] * len(feats)
            for i, f in enumerate(feats):
                sums[i] += f.sum((2, 3), keepdim=True)
                squares[i] += (f * f).sum((2, 3), keepdim=True)
                count[i] += f.shape[-2] * f.shape[-1]
    out = []
    for s, q, n in zip(sums, squares, count):
        mean = s / n
        std = (q / n - mean * mean).clamp_min(0).add(EPS).sqrt()
        out.append((mean.to(dtype), std.to(dtype)))
    return out


def _pixels(image: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Up to SAMPLES RGB pixels (P, 3) of `image`, drawn at random."""
    rgb = image.float().permute(0, 2, 3, 1).reshape(-1, 3)
    if rgb.shape[0] > SAMPLES:
        rgb = rgb[torch.randperm(rgb.shape[0], generator=generator)[:SAMPLES].to(rgb.device)]
    return rgb


@torch.no_grad()
def prepare(x: torch.Tensor, ctx) -> None:
    """Style statistics, whole-image content statistics and the colour map, into ctx.state."""
    if ctx.options.get("strength", 1.0) == 0:
        return
    net = ctx.model()
    device, dtype = ctx.device, ctx.dtype
    style = resize_long(ctx.inputs["style"], STYLE_SIDE).to(device)
    style_moments = moments(net.encode(style.to(dtype)))
    ctx.state["style"] = style_moments
    ctx.state["content"] = content_moments(net, x, device, dtype)
    ctx.info(f"style statistics from {style.shape[-1]}x{style.shape[-2]}, "
             f"content statistics from the whole {x.shape[-1]}x{x.shape[-2]} image")

    # The colour map is fitted on a small rendering of the whole image and then applied to every
    # tile, so all tiles share one colour transform.
    small = resize_long(x, min(PREVIEW_SIDE, max(x.shape[-2:]))).to(device, dtype)
    preview = net.restyle(small, moments(net.encode(small)), style_moments).float().clamp(0, 1)
    generator = torch.Generator().manual_seed(0)
    if ctx.options.get("preserve_color"):
        luma, original = _luma(preview), _luma(small.float())
        ctx.state["luma"] = (luma.mean(), luma.std() + 1e-3, original.mean(), original.std())
    else:
        colour_map = fit_colour_map(_pixels(preview, generator), _pixels(style, generator))
        flat = preview.permute(1, 0, 2, 3).reshape(3, -1)
        # A margin, as full-resolution pixels reach a little past the preview's extremes.
        low = (flat.amin(1) - 0.02).clamp(0, 1)
        high = torch.maximum((flat.amax(1) + 0.02).clamp(0, 1), low + 0.05)
        ctx.state["colour"] = (transport_lut(colour_map, low, high).to(device), low, high)


@torch.no_grad()
def process(x: torch.Tensor, ctx) -> torch.Tensor:
    strength = ctx.options.get("strength", 1.0)
    if strength == 0:
        return x
    net = ctx.model()
    y = net.restyle(x, ctx.state["content"], ctx.state["style"]).float().clamp(0, 1)
    x = x.float()
    if "luma" in ctx.state:
        # Colour preservation after Gatys et al. 2016: the stylised luma, moved to the photo's mean
        # and contrast, replaces the photo's luma; the photo's chroma stays.
        mean, std, target_mean, target_std = ctx.state["luma"]
        luma = (_luma(y) - mean) / std * target_std + target_mean
        y = x + (luma - _luma(x))
    else:
        y = apply_lut(y, *ctx.state["colour"])
    detail = ctx.options.get("detail", 0.0)
    if detail:
        # Clamped so that --strength blends two valid images.
        y = restore_detail(x, y, detail).clamp(0, 1)
    return x + strength * (y - x)


def restore_detail(photo: torch.Tensor, styled: torch.Tensor, amount: float) -> torch.Tensor:
    """`styled` with `amount` of its fine luma detail replaced by the photo's.

    Fine detail is luma minus its Gaussian blur (DETAIL_SIGMA): edges and small features, not the
    colours and broad strokes of the style. Replacing it, rather than adding the photo's on top,
    keeps the total contrast of the texture where photo and style both have some. The change is
    the same in R, G and B, so chroma is untouched.
    """
    def fine(rgb):
        luma = _luma(rgb)
        return luma - gaussian_blur(luma, DETAIL_SIGMA, padding="replicate")

    return styled + amount * (fine(photo) - fine(styled))


def _luma(rgb: torch.Tensor) -> torch.Tensor:
    """Rec. 601 luma; adding the same amount to R, G and B changes luma alone, not chroma."""
    return (0.299 * rgb[:, 0:1] + 0.587 * rgb[:, 1:2] + 0.114 * rgb[:, 2:3]).float()
