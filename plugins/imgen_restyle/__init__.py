"""The `restyle` command: render a photo in the colours and texture of a style image.

This module is the plugin's front door and imports neither torch nor numpy; the network
(`_net.py`), the colour helpers (`_color.py`) and the pipeline (`_pipeline.py`) are imported when
an image is processed.
"""

from __future__ import annotations

from pathlib import Path

import click

from imgen_cli import Command, ImageInput, Model, Tiling, hookimpl

HERE = Path(__file__).resolve().parent
WEIGHTS = HERE / "weights"
STYLES = HERE / "styles"
MODEL = "restyle-adain"


def builtin_styles() -> list[str]:
    return sorted(p.stem for p in STYLES.glob("*.jpg"))


def _resolve_style(value: str) -> str | None:
    """A built-in style name (`autumn`, any case) to its file; None lets the host report it."""
    for name in builtin_styles():
        if name.lower() == value.lower():
            return str(STYLES / f"{name}.jpg")
    return None


def _load():
    from safetensors.torch import load_file

    from ._net import Restyler, config_from_state

    state = load_file(str(WEIGHTS / "restyle.safetensors"))
    net = Restyler(**config_from_state(state))
    net.load_state_dict(state)
    return net


def _prepare(x, ctx) -> None:
    from ._pipeline import prepare

    prepare(x, ctx)


def _process(x, ctx):
    from ._pipeline import process

    return process(x, ctx)


@hookimpl
def register_models(register):
    register(
        Model(
            name=MODEL,
            command="restyle",
            load=_load,
            default=True,
            precisions=("fp32", "fp16", "bf16"),
            weights=str(WEIGHTS / "restyle.safetensors"),
            description="Two-level AdaIN autoencoder for arbitrary style transfer, trained by imgen",
        )
    )


@hookimpl
def register_commands(register):
    register(
        Command(
            name="restyle",
            help=(
                "Render photos in the look of a style image: its colours and its texture.\n\n"
                "--style is any image file or a built-in style name. The style image is resized to "
                "512 pixels on its long side; its feature statistics replace the photo's in the "
                "network's latent space (AdaIN), and the output's colours are then moved to the "
                "style's colour distribution in Lab. --detail restores the photo's "
                "fine edges over the style's texture, --strength blends with the photo; "
                "--preserve-color keeps the photo's colours and transfers texture and lightness only."
            ),
            process=_process,
            prepare=_prepare,
            params=[
                click.Option(
                    ["--strength"],
                    type=click.FloatRange(0, 1),
                    default=1.0,
                    show_default=True,
                    help="0 returns the photo, 1 the full style.",
                ),
                click.Option(
                    ["--detail"],
                    type=click.FloatRange(0, 1),
                    default=0.5,
                    show_default=True,
                    help="How much of the photo's fine detail (edges finer than about 2 pixels) to "
                    "restore over the style's texture: 0 leaves the network's output, 1 keeps all "
                    "of the photo's fine detail.",
                ),
                click.Option(
                    ["--preserve-color"],
                    is_flag=True,
                    default=False,
                    help="Keep the photo's colours (Lab a, b); transfer texture and lightness only.",
                ),
            ],
            inputs=[
                ImageInput(
                    "style",
                    help="Style image file, or the name of a built-in style.",
                    mode="RGB",
                    spatial=False,
                    required=True,
                    resolve=_resolve_style,
                    names=builtin_styles,
                    choices_help="Built-in: " + ", ".join(builtin_styles()) + ".",
                )
            ],
            # An output pixel depends on input pixels up to 25 away (measured); 40 leaves a margin.
            # Sides must be multiples of 4 (two 2x downsamplings). A call peaks at about 300 bytes
            # per input pixel (benchmarks/bench_memory.py --tile-cost).
            tiling=Tiling(scale=1, overlap=40, multiple=4, bytes_per_pixel=512),
            channels=3,
            examples=[
                ("imgen restyle --style autumn photo.jpg", "A built-in style; writes photo-restyle.jpg"),
                ("imgen restyle --style painting.jpg photo.jpg -o painted.png", "Any image as the style"),
                ("imgen restyle --style string --strength 0.6 --preserve-color photo.jpg",
                 "Lighter, keeping the photo's colours"),
            ],
        )
    )
