"""The `denoise` command: remove Gaussian-like noise, at a level estimated from the image or given.

This module is the plugin's front door and imports neither torch nor numpy; the network
(`_net.py`) and the noise estimator (`_estimate.py`) are imported when an image is processed.
"""

from __future__ import annotations

from pathlib import Path

import click

from imgen_cli import Command, Model, Tiling, hookimpl

WEIGHTS = Path(__file__).resolve().parent / "weights"
MODEL = "denoise-ffdnet"
MAX_SIGMA = 75.0


def _load(weights: str | Path = WEIGHTS / "ffdnet.safetensors"):
    from safetensors.torch import load_file

    from ._net import FFDNet, config_from_state

    state = load_file(str(weights))
    net = FFDNet(**config_from_state(state))
    net.load_state_dict(state)
    return net


def _prepare(x, ctx) -> None:
    """Fix the noise level for the whole image before it is cut into tiles."""
    strength = ctx.options.get("strength", 1.0)
    sigma = ctx.options.get("sigma")
    if sigma is None:
        from ._estimate import estimate_sigma

        estimate = float(estimate_sigma(x).max()) * 255
        ctx.info(f"estimated noise sigma {estimate:.1f} (0-255 scale)")
        sigma = estimate
    level = min(max(sigma * strength, 0.0), MAX_SIGMA)
    if strength != 1.0:
        ctx.info(f"sigma {sigma:.1f} x strength {strength:g} = {level:.1f}")
    ctx.state["sigma"] = level / 255


def _process(x, ctx):
    model = ctx.model()
    if hasattr(model, "purpose"):  # a community model run through spandrel: image in, image out
        run = model
    else:
        sigma = ctx.state["sigma"]

        def run(image):
            return model(image, sigma)

    if not ctx.options.get("tta"):
        return run(x)
    # The network is not exactly flip-equivariant, so its errors on the four flips of an image are
    # partly independent and their mean is closer to the clean image.
    out = run(x)
    for dims in ((-1,), (-2,), (-2, -1)):
        out += run(x.flip(dims)).flip(dims)
    return out / 4


@hookimpl
def register_models(register):
    register(
        Model(
            name=MODEL,
            command="denoise",
            load=_load,
            default=True,
            precisions=("fp32", "fp16", "bf16"),
            weights=str(WEIGHTS / "ffdnet.safetensors"),
            channels_last=True,
            description="FFDNet-style denoiser for Gaussian noise of sigma 0..75, trained by imgen",
        )
    )


@hookimpl
def register_commands(register):
    register(
        Command(
            name="denoise",
            help=(
                "Remove noise from photos.\n\n"
                "By default the noise level is estimated from each image (Chen et al. 2015, shown "
                "with --verbose); --sigma sets it instead, on the 0-255 scale. --strength scales the "
                "level the network is told: below 1 keeps more detail (and noise), above 1 smooths more. "
                "--tta trades time for quality."
            ),
            process=_process,
            prepare=_prepare,
            params=[
                click.Option(
                    ["--sigma"],
                    type=click.FloatRange(0, MAX_SIGMA),
                    default=None,
                    help="Noise standard deviation on the 0-255 scale; estimated from the image when omitted.",
                ),
                click.Option(
                    ["--strength"],
                    type=click.FloatRange(0, 4),
                    default=1.0,
                    show_default=True,
                    help="Multiply the noise level (estimated or given) by this.",
                ),
                click.Option(
                    ["--tta"],
                    is_flag=True,
                    help="Average the network's output over four flips of the image: about 0.3 dB "
                    "better, four times slower.",
                ),
            ],
            # The network sees 25 half-resolution pixels, 25 input pixels either side. A call
            # peaks at about 490 bytes per input pixel (benchmarks/bench_memory.py --tile-cost).
            tiling=Tiling(scale=1, overlap=26, multiple=2, bytes_per_pixel=768),
            channels=3,
            model_purposes=("Restoration",),
            examples=[
                ("imgen denoise noisy.jpg", "Noise level estimated from the image; writes noisy-denoise.jpg"),
                ("imgen denoise --sigma 25 scan.png -o clean.png", "A known noise level (0-255 scale)"),
                ("imgen denoise --strength 0.7 photos/ -o clean/", "Gentler, over a folder (keeps more texture)"),
                ("imgen denoise --blend 0.5 film.jpg -o half.jpg", "Half way between the photo and the result"),
                ("imgen denoise --tta night.png -o best.png", "Slower and slightly better: four flips averaged"),
            ],
        )
    )
