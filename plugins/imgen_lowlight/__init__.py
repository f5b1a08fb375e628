"""The `lowlight` command: brighten under-exposed photos with learned curves (Zero-DCE++ style).

Only hook implementations live here; torch and the network are imported when the model loads.
"""

from __future__ import annotations

from pathlib import Path

import click

from imgen_cli import Command, Model, Tiling, hookimpl

WEIGHTS = Path(__file__).resolve().parent / "weights" / "lowlight.safetensors"

# The exposure range the network was conditioned on in training; outside it the curves are guesses.
EXPOSURE_RANGE = (0.35, 0.65)
# Chosen on the training photos (darkened), never on the held-out ones.
DEFAULT_EXPOSURE = 0.5
# Guided-filter threshold in units of the estimated noise variance (see _net.smooth_noise).
DENOISE = 4.0


def _load():
    from safetensors.torch import load_file

    from ._net import CurveNet, config_from_state

    state = load_file(str(WEIGHTS))
    net = CurveNet(**config_from_state(state))
    net.load_state_dict(state)
    return net


def _process(x, ctx):
    net = ctx.model()
    denoise = DENOISE if ctx.options["denoise"] else 0.0
    return net(x, exposure=ctx.options["exposure"], strength=ctx.options["strength"], denoise=denoise)


@hookimpl
def register_models(register):
    register(
        Model(
            name="lowlight-curves",
            command="lowlight",
            load=_load,
            default=True,
            # The curve is iterated 8 times; half precision bands smooth gradients in 16-bit output.
            precisions=("fp32",),
            weights=str(WEIGHTS),
            description="Zero-reference curve estimation (Zero-DCE++ style), 70k parameters",
        )
    )


@hookimpl
def register_commands(register):
    register(
        Command(
            name="lowlight",
            help=(
                "Brighten under-exposed photos: lift shadows, keep highlights and colours.\n\n"
                "Curves are estimated on a small copy of the whole image and applied at full "
                "resolution, so the image is never tiled. Well-exposed photos come out nearly "
                "unchanged. For noisy night shots chain a denoiser first: "
                "`imgen denoise + lowlight night.jpg`."
            ),
            process=_process,
            params=[
                click.Option(
                    ["--exposure"],
                    type=click.FloatRange(*EXPOSURE_RANGE),
                    default=DEFAULT_EXPOSURE,
                    show_default=True,
                    help="Target mean level of an under-exposed image (0 black, 1 white).",
                ),
                click.Option(
                    ["--strength"],
                    type=click.FloatRange(0.0, 2.0),
                    default=1.0,
                    show_default=True,
                    help="Scale of the correction: 0 leaves the image as is, 2 roughly doubles it.",
                ),
                click.Option(
                    ["--denoise/--no-denoise"],
                    default=True,
                    show_default=True,
                    help="Smooth flat areas as much as the measured noise before lifting them "
                    "(edges and texture are kept). For heavy noise chain the denoise command.",
                ),
            ],
            tiling=Tiling(tileable=False),
            examples=[
                ("imgen lowlight dark.jpg", "Brighten an under-exposed photo; writes dark-lowlight.jpg"),
                ("imgen lowlight --exposure 0.6 night/ -o brighter/", "Brighter, over a folder"),
                ("imgen lowlight night/ --suffix _bright", "Outputs beside the inputs: night/a.jpg -> night/a_bright.jpg"),
                ("imgen lowlight --no-denoise dark.png -o out.png", "Without smoothing flat areas"),
                ("imgen denoise + lowlight night.jpg -o fixed.jpg", "A grainy night shot: denoise first, in one process"),
            ],
        )
    )
