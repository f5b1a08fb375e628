"""Test plugins: a tiny x2 torch upscaler with a model, a masked fill with an extra image input,
and a pointwise filter with no model. Loaded by the tests through IMGEN_PLUGINS or pm.register."""

import click

from imgen_cli import Command, ImageInput, Model, Tiling, hookimpl

__version__ = "9.9"


def _build(state):
    network = _load_upscaler()
    network.load_state_dict(state)
    return network


def _load_upscaler():
    import torch

    class TinyUp(torch.nn.Module):
        # Two 3x3 convs: receptive-field radius 2 input pixels, so overlap 2 is honest.
        scale = 2

        def __init__(self):
            super().__init__()
            g = torch.Generator().manual_seed(0)
            self.body = torch.nn.Conv2d(3, 8, 3, padding=1)
            self.tail = torch.nn.Conv2d(8, 12, 3, padding=1)
            for p in self.parameters():
                p.data = torch.randn(p.shape, generator=g) * 0.1

        def forward(self, x):
            up = torch.nn.functional.interpolate(x, scale_factor=2, mode="nearest")
            residual = torch.nn.functional.pixel_shuffle(self.tail(torch.relu(self.body(x))), 2)
            return up + 0.1 * residual

    return TinyUp()


def _upscale(x, ctx):
    return ctx.model()(x)


def _fill(x, ctx):
    mask = ctx.inputs["mask"] > 0.5
    value = ctx.options["value"]
    return torch_where(mask, value, x)


def _flip_alpha(x, ctx):
    ctx.output_alpha = 1 - ctx.alpha
    return x


def torch_where(mask, value, x):
    import torch

    return torch.where(mask.expand_as(x), torch.full_like(x, value), x)


def _smooth(x, ctx):
    import torch.nn.functional as F

    # Two 3x3 means: receptive-field radius 2.
    for _ in range(2):
        x = F.avg_pool2d(F.pad(x, (1, 1, 1, 1), mode="replicate"), 3, stride=1)
    return x


def _slow(x, ctx):
    import time

    time.sleep(0.2)
    return x


def _invert(x, ctx):
    if ctx.options["fail"]:
        raise RuntimeError("asked to fail")
    return 1 - x


@hookimpl
def register_models(register):
    register(Model(name="tiny-x2", command="tinyup", load=_load_upscaler, scale=2, default=True,
                   precisions=("fp32", "fp16"), description="random tiny x2 upscaler"))


@hookimpl
def register_commands(register):
    register(Command(name="tinyup", help="Upscale 2x with a tiny random network.", process=_upscale,
                     tiling=lambda ctx: Tiling(scale=ctx.model().scale, overlap=2, bytes_per_pixel=2048),
                     build_model=_build, model_purposes=("SR",)))
    register(Command(name="fill", help="Paint masked pixels a constant value.", process=_fill,
                     params=[click.Option(["--value"], type=float, default=1.0)],
                     inputs=[ImageInput("mask", help="Mask (white = fill).", mode="L", required=True)],
                     tiling=Tiling(overlap=0)))
    register(Command(name="smooth", help="Smooth with a small mean filter.", process=_smooth,
                     tiling=Tiling(overlap=2, bytes_per_pixel=256)))
    register(Command(name="slow", help="Take 0.2 s per tile.", process=_slow, tiling=Tiling(overlap=0)))
    register(Command(name="flipalpha", help="Write the inverted alpha, colours unchanged.", process=_flip_alpha,
                     alpha="keep", tiling=Tiling(tileable=False)))
    register(Command(name="invert", help="Invert colours.", process=_invert, channels=None,
                     params=[click.Option(["--fail"], is_flag=True)], tiling=Tiling(overlap=0)))
