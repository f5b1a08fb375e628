"""imgen sr: super-resolution with the project's own compact networks.

This module is the plugin's front door: hook implementations only, no torch import, so that
`imgen --help` stays instant. The network lives in `_net.py`, the training recipe in `train.py`.
"""

from __future__ import annotations

from pathlib import Path

import click

from imgen_cli import Command, Model, Tiling, hookimpl

WEIGHTS = Path(__file__).resolve().parent / "weights"

# Tile overlap for networks that do not declare their receptive field (a --model FILE loaded by
# spandrel); CompactSR declares its own (`radius`: 21 input pixels for the 8-block real models,
# 13 for the 4-block fidelity ones), and tiles that overlap by that much match the untiled output.
OVERLAP = 24

# Most images people upscale are JPEGs from phones and the web, noisy and compressed; the real
# model cleans those up where the fidelity model would sharpen the artefacts along with the
# detail. Fidelity stays one option away for clean, lossless sources.
DEFAULT_KIND = "real"
DEFAULT_SCALE = 4

# (kind, scale) -> weight file stem. The real models exist at x4 and x2; x3 resizes the x4
# output, as Real-ESRGAN's --outscale does.
SHIPPED = {("fidelity", 2): "fidelity_x2", ("fidelity", 3): "fidelity_x3",
           ("fidelity", 4): "fidelity_x4", ("real", 2): "real_x2", ("real", 4): "real_x4"}

DESCRIPTIONS = {
    "fidelity": "x{s} for clean images: trained on PIL bicubic downscaling, highest PSNR",
    "real": "x{s} for real photos: distilled from Real-ESRGAN x4plus on second-order blur/noise/JPEG",
}


def _model_name(kind: str, scale: int) -> str:
    return f"sr-{kind}-x{scale}"


def _build(state: dict):
    """A CompactSR of whatever size `state` holds: shipped weights or a user's fine-tune."""
    from ._net import CompactSR, config_from_state

    net = CompactSR(**config_from_state(state))
    net.load_state_dict(state)
    return net


def _loader(stem: str):
    def load():
        from safetensors.torch import load_file

        return _build(load_file(str(WEIGHTS / f"{stem}.safetensors")))

    return load


@hookimpl
def register_models(register):
    for (kind, scale), stem in SHIPPED.items():
        register(Model(
            name=_model_name(kind, scale), command="sr", load=_loader(stem), scale=scale,
            default=(kind, scale) == (DEFAULT_KIND, DEFAULT_SCALE),
            description=DESCRIPTIONS[kind].format(s=scale), precisions=("fp32", "fp16", "bf16"),
            weights=str(WEIGHTS / f"{stem}.safetensors"), channels_last=True,
        ))


def _select(options: dict) -> str:
    kind = options.get("kind") or DEFAULT_KIND
    scale = int(options.get("scale") or DEFAULT_SCALE)
    if (kind, scale) not in SHIPPED:
        scale = max(s for k, s in SHIPPED if k == kind)
    return _model_name(kind, scale)


def _by_scale(options: dict) -> dict[int, str]:
    # --scale or --outscale fix the factor; otherwise a target size picks among the kind's models.
    if options.get("scale") or options.get("outscale"):
        return {}
    kind = options.get("kind") or DEFAULT_KIND
    return {scale: _model_name(k, scale) for k, scale in SHIPPED if k == kind}


def _tiling(ctx) -> Tiling:
    # The loaded model decides the factor: a --model FILE may differ from --scale. (Its size
    # multiple, if any, the host applies itself.) CompactSR declares its own receptive field.
    # CompactSR peaks at about 1,200 (x2) to 1,350 (x4) bytes per input pixel of a call
    # (benchmarks/bench_memory.py --tile-cost); other architectures may take more.
    loaded = ctx.loaded()
    overlap = getattr(loaded.network, "radius", None)
    if overlap is None:
        return Tiling(scale=loaded.scale, overlap=OVERLAP, bytes_per_pixel=2048)
    return Tiling(scale=loaded.scale, overlap=overlap, bytes_per_pixel=1536)


def _process(x, ctx):
    return ctx.model()(x)


def _output_size(ctx):
    """--outscale, or --scale when the model's factor differs: the host resizes the output to it."""
    target = ctx.options.get("outscale") or (float(ctx.options["scale"]) if ctx.options.get("scale") else None)
    if target is None or target == ctx.scale:
        return None
    return tuple(max(1, round(n * target)) for n in ctx.image_size)


def _positive(ctx, param, value):
    if value is not None and value <= 0:
        raise click.BadParameter("must be greater than 0")
    return value


@hookimpl
def register_commands(register):
    register(Command(
        name="sr",
        help=(
            "Upscale images 2x, 3x or 4x with a trained super-resolution network.\n\n"
            f"The default is the 'real' x{DEFAULT_SCALE} model, made for everyday photos (JPEG, noise, "
            "slight blur). Use --kind fidelity for clean, lossless images, where it keeps the "
            "most faithful detail. --outscale gives any final factor: the model's factor first, "
            "then a high-quality resize."
        ),
        process=_process,
        params=[
            click.Option(["--scale"], type=click.Choice(["2", "3", "4"]), default=None,
                         help=f"Upscaling factor; picks the model trained for it (default {DEFAULT_SCALE}, "
                              "or the factor of --model)."),
            click.Option(["--kind"], type=click.Choice(["fidelity", "real"]), default=DEFAULT_KIND,
                         show_default=True,
                         help="fidelity: clean images, highest PSNR. real: photos with noise and JPEG "
                              "artefacts (x4 and x2 models; x3 resizes the x4 output)."),
            click.Option(["--outscale"], type=float, default=None, callback=_positive,
                         help="Final size factor, any value (e.g. 3.5): upscale with the model, then resize."),
        ],
        tiling=_tiling,
        select_model=_select,
        model_purposes=("SR",),
        scale_option="scale",
        output_size=_output_size,
        examples=[
            ("imgen sr photo.jpg", "Upscale 4x with the model for everyday photos; writes photo-sr-x4.jpg"),
            ("imgen sr --scale 2 --kind fidelity scan.png -o scan-2x.png", "2x with the model for clean, lossless images"),
            ("imgen sr --scale 4 --outscale 3.5 photo.jpg", "Any final factor: the x4 model, then a resize"),
            ("imgen sr --fit 1920x1080 photo.jpg -o wallpaper.png",
             "Fit a screen: the smallest scale that reaches it, then a resize"),
            ("imgen sr --model RealESRGAN_x4plus.pth photos/ -o big/", "A community model file over a folder"),
            ("imgen sr --scale 2 photos/ --name '{stem}@2x.{ext}'", "Outputs named from a template"),
            ("imgen denoise + sr --scale 2 noisy.jpg -o big.png", "Denoise first, in the same process"),
        ],
        build_model=_build,
        models_by_scale=_by_scale,
    ))
