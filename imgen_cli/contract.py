"""What a plugin registers: commands, models, extra image inputs and tiling facts.

These are plain descriptions; the host does the work (reading, writing, device, precision,
tiling, alpha and bit depth). Importing this module imports neither torch nor numpy, so a plugin's
front module can build its registrations without slowing down `imgen --help`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Literal, Sequence, Union

if TYPE_CHECKING:  # pragma: no cover
    import click
    import torch

    from .engine import Context

PRECISIONS = ("fp32", "fp16", "bf16")
DEVICE_KINDS = ("cpu", "cuda", "mps")


@dataclass(frozen=True)
class Tiling:
    """How the engine may cut an image into tiles for a command's process function.

    Args:
        scale: output size / input size, an integer (1 for same-size filters, 2-4 for upscalers).
        overlap: receptive-field radius of the process function, in input pixels. Tiles are
            extended by this margin (plus a feather band) on every side that touches another tile,
            so tiled output matches untiled output when the radius is honest.
        tileable: False when process must see the whole image at once (global statistics,
            inpainting). The engine then never tiles and OOM is a plain error.
        multiple: input height and width must be a multiple of this (the engine pads by
            reflection and crops the output back).
        bytes_per_pixel: rough peak memory per input pixel of one process call, used by
            `--tile auto` to size tiles from free memory.
    """

    scale: int = 1
    overlap: int = 16
    tileable: bool = True
    multiple: int = 1
    bytes_per_pixel: int = 4096


@dataclass(frozen=True)
class ImageInput:
    """An extra image a command reads besides the main input: a mask, a style reference.

    It becomes the option `--NAME` (a file, or for a batch a folder matched by file stem). Its
    tensor reaches process as `ctx.inputs[NAME]`: (N, C, H, W) float 0..1 on the same device.

    Args:
        name: option and key name (`mask` -> `--mask`, `ctx.inputs["mask"]`).
        help: option help text.
        mode: "L" delivers 1 channel, "RGB" 3 channels (alpha dropped, grey expanded).
        required: usage error when missing (unless `optional_when` names a flag that is set).
        spatial: True when it must have exactly the main image's size; the engine then crops it
            with every tile. A size mismatch is an error, never a silent resize.
        resolve: maps a value that is not an existing file to one (a built-in style name to its
            file), or returns None to let the host report a missing file.
        choices_help: extra words for the help text, e.g. the list of built-in names.
    """

    name: str
    help: str = ""
    mode: Literal["L", "RGB"] = "RGB"
    required: bool = False
    spatial: bool = True
    resolve: Callable[[str], str | None] | None = None
    choices_help: str = ""


@dataclass
class Model:
    """A trained network a command can run.

    Args:
        name: unique id, e.g. `sr-fidelity-x4`; users pass it to `--model`.
        task: the command that runs it (`sr`).
        load: called once per process, with no arguments, to build the network with its weights
            (an nn.Module or any callable taking and returning a tensor). Import torch and the
            network code inside it, not at module top. The host moves it to the device and
            precision, sets eval mode and caches it.
        description: one line for `imgen models` and `imgen plugins`.
        scale: output size / input size.
        default: the model a command uses when the user picks none.
        devices: device kinds it runs on.
        precisions: precisions it is safe in; `--precision auto` uses fp16/bf16 on GPUs only
            when listed here.
        weights: path of its weights file, for listings.
        channels_last: the host stores the weights channels-last, so oneDNN and cuDNN may pick
            faster convolutions (8-40% less time for imgen's denoise, sr and inpaint networks on
            CPU; benchmarks/bench_channels_last.py). Measure: a network of few channels can be
            slower. Only for networks that never `.view()` an activation, which may then be
            channels-last too.
        meta: anything else a command wants to match on, e.g. {"kind": "real", "scale": 4}.
    """

    name: str
    task: str
    load: Callable[[], Any]
    description: str = ""
    scale: int = 1
    default: bool = False
    devices: tuple[str, ...] = DEVICE_KINDS
    precisions: tuple[str, ...] = ("fp32",)
    weights: str | None = None
    channels_last: bool = False
    meta: dict[str, Any] = field(default_factory=dict)


ProcessFn = Callable[["torch.Tensor", "Context"], "torch.Tensor"]
PrepareFn = Callable[["torch.Tensor", "Context"], None]
SelectFn = Callable[[dict], Union[str, None]]


@dataclass
class Command:
    """A subcommand of `imgen`, built by the host from this description.

    The host adds the shared options (inputs, `-o`, `--overwrite`, `--device`, `--tile`, ...)
    itself; `params` holds only the command's own click options.

    Args:
        name: the subcommand (`sr`).
        help: the help text; its first line is the summary in `imgen --help`.
        process: `process(x, ctx) -> y`. `x` is (N, C, H, W) float in 0..1 on `ctx.device`, in
            `ctx.dtype`. Return the same N and C, size `H*scale` x `W*scale`. Called once per tile
            (or once per image when not tileable); must not keep state between calls except
            through `ctx.state`. Values outside 0..1 are clamped by the host.
        params: click parameters of this command (`click.Option(["--scale"], ...)`).
        inputs: extra image inputs (masks, style references).
        tiling: a Tiling, or `tiling(ctx) -> Tiling` when it depends on options (`--scale`).
        prepare: optional `prepare(x, ctx)` called once per image on the whole image (x on
            `ctx.device` when it fits, else on the CPU) before tiling; store results in
            `ctx.state` (a noise estimate, curve parameters).
        select_model: optional `select_model(options) -> model name` when the choice depends on
            options; otherwise `--model` or the task's default model is used.
        channels: 3 when process wants RGB (grey images are expanded and converted back), 1 when
            it wants one channel (colour images are processed per channel), None for either.
        alpha: "separate": the host keeps alpha out of process and resizes it itself when the
            image is resized; "keep": same, and alpha also reaches process as `ctx.alpha`
            (read it, do not write into it). A command that changes the alpha it writes (inpaint
            makes filled pixels opaque) sets `ctx.output_alpha` to a whole-image (N, 1, H, W)
            tensor in 0..1, from a process that is not tiled (`Tiling(tileable=False)`) or from
            finish; the host writes that instead.
        finish: optional `finish(y, ctx) -> y` after tiling, on the whole output (a final resize).
        build_model: optional `build_model(state_dict) -> network` for `--model FILE`: builds this
            command's own architecture from a user's weights file (a fine-tuned model).
        model_purposes: spandrel purposes ("SR", "Restoration", "Inpainting", ...) whose models this
            command can run through `--model FILE` when spandrel is installed.
    """

    name: str
    help: str
    process: ProcessFn
    params: Sequence["click.Parameter"] = ()
    inputs: Sequence[ImageInput] = ()
    tiling: Union[Tiling, Callable[["Context"], Tiling]] = Tiling()
    prepare: PrepareFn | None = None
    select_model: SelectFn | None = None
    channels: int | None = 3
    alpha: Literal["separate", "keep"] = "separate"
    finish: ProcessFn | None = None
    build_model: Callable[[dict], Any] | None = None
    model_purposes: tuple[str, ...] = ()
