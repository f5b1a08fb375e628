"""imgen sharpen: unsharp-mask sharpening, a third-party imgen plugin.

The front module imports neither torch nor numpy at top level, so listing commands
(`imgen --help`) stays instant however many plugins are installed; torch is imported inside
the functions the host calls while it processes an image.
"""

from __future__ import annotations

import click

from imgen_cli import Command, Tiling, gaussian_blur, gaussian_radius, hookimpl

__version__ = "0.1.0"


def sharpen(x, ctx):
    """Unsharp mask: add back `amount` times the detail a Gaussian blur removes."""
    amount, sigma, threshold = ctx.options["amount"], ctx.options["radius"], ctx.options["threshold"]
    # The detail layer is a small difference of two close values; in fp16 it would band.
    x = x.float()
    # Replicated borders: the detail at the image's edge is measured against the edge itself.
    detail = x - gaussian_blur(x, sigma, padding="replicate")
    if threshold > 0:
        # Faint detail is mostly noise and film grain: leave it as it is, sharpen only edges.
        detail = detail * (detail.abs() >= threshold)
    return x + amount * detail


def _tiling(ctx) -> Tiling:
    # The blur sees gaussian_radius pixels around each output pixel and the rest is pointwise, so
    # that radius is the honest overlap: tiled output equals untiled output.
    return Tiling(overlap=gaussian_radius(ctx.options["radius"]), bytes_per_pixel=64)


@hookimpl
def register_commands(register):
    register(Command(
        name="sharpen",
        help=(
            "Sharpen with an unsharp mask.\n\n"
            "Adds AMOUNT times the difference between the image and a Gaussian blur of RADIUS "
            "pixels. Small radii (0.5-1.5) crisp fine detail; larger ones (3-10) add local "
            "contrast. --threshold leaves faint detail (noise, grain, skin) untouched."
        ),
        process=sharpen,
        params=[
            click.Option(["--amount"], type=click.FloatRange(0, 10), default=1.0, show_default=True,
                         help="Strength: 0 changes nothing, 1 doubles the detail."),
            click.Option(["--radius"], type=click.FloatRange(0.1, 100), default=1.0, show_default=True,
                         help="Gaussian standard deviation of the blur, in pixels."),
            click.Option(["--threshold"], type=click.FloatRange(0, 1), default=0.0, show_default=True,
                         help="Sharpen only where the detail exceeds this fraction of full scale "
                              "(0.02 is about 5 levels of 255)."),
        ],
        tiling=_tiling,
        # Any number of channels: grey stays grey, colour is sharpened per channel.
        channels=None,
        # Shown under "Examples" in `imgen sharpen --help`.
        examples=[
            ("imgen sharpen photo.jpg", "Double the fine detail; writes photo-sharpen.jpg"),
            ("imgen sharpen --radius 5 --amount 0.5 photo.jpg", "Local contrast instead of crisp edges"),
            ("imgen sharpen --threshold 0.02 portrait.jpg", "Leave skin and grain alone"),
        ],
    ))
