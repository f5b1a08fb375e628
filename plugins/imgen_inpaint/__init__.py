"""The `inpaint` command: fill masked regions of photos with a network trained by the project.

This module is the plugin's front door and imports neither torch nor numpy; the network (`_net.py`)
and the region logic (`_fill.py`) are imported when an image is processed.
"""

from __future__ import annotations

from pathlib import Path

import click

from imgen_cli import Command, ImageInput, Model, Tiling, UsageError, hookimpl

WEIGHTS = Path(__file__).resolve().parent / "weights"
MODEL = "inpaint-ffc"


def _load():
    from safetensors.torch import load_file

    from ._net import InpaintNet

    net = InpaintNet()
    net.load_state_dict(load_file(str(WEIGHTS / "inpaint.safetensors")))
    return net


def _process(x, ctx):
    from ._fill import inpaint

    return inpaint(x, ctx)


def _validate(options, inputs):
    """Exactly one source of holes, checked before any image is read."""
    if options["mask_from_alpha"] and inputs["mask"]:
        raise UsageError("give either --mask or --mask-from-alpha, not both")
    if not options["mask_from_alpha"] and not inputs["mask"]:
        raise UsageError("inpaint needs --mask FILE|FOLDER or --mask-from-alpha")


@hookimpl
def register_models(register):
    register(
        Model(
            name=MODEL,
            command="inpaint",
            load=_load,
            default=True,
            weights=str(WEIGHTS / "inpaint.safetensors"),
            channels_last=True,
            description="Harmonic fill refined by a LaMa-style Fourier-convolution network, texture for large holes by patch synthesis",
        )
    )


@hookimpl
def register_commands(register):
    register(
        Command(
            name="inpaint",
            help=(
                "Fill masked regions: remove objects or repair damage.\n\n"
                "The mask comes from --mask (white or any non-zero pixel = fill; a folder of masks "
                "for a batch, matched by file stem) or from the image's own transparency with "
                "--mask-from-alpha (pixels under 50% opacity are filled and made opaque). The mask "
                "must have the image's size. Holes wider than about 16 pixels get texture and structure "
                "copied from the rest of the photo; thinner ones (and all with --smooth) a smooth fill. "
                "--dilate grows the mask by N pixels and blends the grown ring softly into the surroundings. Only the regions around the holes are processed; "
                "every pixel outside the (grown) mask is returned unchanged."
            ),
            process=_process,
            validate=_validate,
            params=[
                click.Option(
                    ["--mask-from-alpha"],
                    is_flag=True,
                    help="Fill the transparent pixels of the input instead of reading --mask.",
                ),
                click.Option(
                    ["--smooth"],
                    is_flag=True,
                    help="Fill every hole smoothly, without copying texture into the large ones (faster).",
                ),
                click.Option(
                    ["--dilate"],
                    type=click.IntRange(0, 64),
                    default=0,
                    show_default=True,
                    metavar="N",
                    help="Grow the mask by N pixels before filling.",
                ),
            ],
            inputs=[ImageInput("mask", help="Mask image (non-zero = fill), or a folder of them.", mode="L",
                               spatial=True)],
            # Filling needs the whole image: the region logic crops around the holes itself.
            tiling=Tiling(tileable=False),
            channels=3,
            examples=[
                ("imgen inpaint photo.jpg --mask mask.png -o clean.jpg", "Fill what the mask marks in white"),
                ("imgen inpaint photos/ --mask masks/ -o clean/", "A folder, each photo with the mask of the same name"),
                ("imgen inpaint --mask-from-alpha cutout.png -o filled.png", "Fill the transparent pixels"),
                ("imgen inpaint --dilate 4 --smooth scan.png --mask scratches.png -o fixed.png",
                 "Thin scratches: grow the mask, smooth fill"),
            ],
            alpha="keep",
        )
    )
