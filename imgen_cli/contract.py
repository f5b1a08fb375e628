"""The plugin contract: what a plugin registers (commands, models, extra image inputs, tiling
facts), what loading a model gives the host, and the context a command's functions receive.

Registrations are immutable descriptions; the host does the work (reading, writing, device,
precision, tiling, alpha and bit depth). Importing this module imports neither torch nor numpy, so a
plugin's front module can build its registrations without slowing down `imgen --help`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Literal, Mapping, Sequence, Union

if TYPE_CHECKING:  # pragma: no cover
    import click
    import torch

# Every precision the host knows, in its order of preference on GPUs (after fp32 on CPUs).
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
        bytes_per_pixel: peak memory per input pixel of one process call (measure it: the
            network's activations, not the image), used by `--tile auto` to size tiles from what
            the memory budget leaves; too high only makes tiles smaller and runs slower.
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
        required: usage error when missing. An input that is needed unless some option is set
            (inpaint's `--mask` unless `--mask-from-alpha`) is not required; the command's
            `validate` says when it is missing.
        spatial: True when it must have exactly the main image's size; the engine then crops it
            with every tile. A size mismatch is an error, never a silent resize.
        resolve: maps a value that is not an existing file to one (a built-in style name to its
            file), or returns None to let the host report a missing file.
        choices_help: extra words for the help text, e.g. the list of built-in names.
        names: `names() -> list of str`, the built-in names `resolve` accepts. The shell completes
            them, and a value that is neither a file nor resolved is a usage error listing them,
            before any image is read. Must be cheap (no torch).
    """

    name: str
    help: str = ""
    mode: Literal["L", "RGB"] = "RGB"
    required: bool = False
    spatial: bool = True
    resolve: Callable[[str], str | None] | None = None
    choices_help: str = ""
    names: Callable[[], Sequence[str]] | None = None


@dataclass(frozen=True)
class Model:
    """A trained network a command can run.

    Args:
        name: unique id, e.g. `sr-fidelity-x4`; users pass it to `--model`.
        command: the command that runs it (`sr`).
        load: called with no arguments when a step first needs the model, once per process and
            precision, to build the network with its weights: an nn.Module or any callable taking
            and returning a tensor, or a `Loaded` when what was loaded decides the scale, size
            multiple or precisions. Import torch and the network code inside it, not at module
            top. The host moves the network to the device and precision, sets eval mode and
            caches it.
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
    """

    name: str
    command: str
    load: Callable[[], Any]
    description: str = ""
    scale: int = 1
    default: bool = False
    devices: tuple[str, ...] = DEVICE_KINDS
    precisions: tuple[str, ...] = ("fp32",)
    weights: str | None = None
    channels_last: bool = False


@dataclass(frozen=True)
class Loaded:
    """What loading a model gives the host, in the manner of spandrel's model descriptors.

    A `Model.load` or `Command.build_model` that returns a bare network gets one filled in from the
    `Model`'s fields; one that only learns these facts from the weights (a community model file)
    returns a `Loaded` itself. The host never writes them back into the registered `Model`.

    Args:
        network: the callable the command runs (`ctx.model()` returns it).
        scale: output size / input size of the network.
        multiple: input height and width must be multiples of this (the host pads and crops).
        precisions: precisions it is safe in (see `Model.precisions`).
        channels_last: store the weights channels-last (see `Model.channels_last`).
        architecture: a name for messages and listings (`ESRGAN`, `CompactSR`).
    """

    network: Any
    scale: int = 1
    multiple: int = 1
    precisions: tuple[str, ...] = ("fp32",)
    channels_last: bool = False
    architecture: str = ""


ProcessFn = Callable[["torch.Tensor", "Context"], "torch.Tensor"]
PrepareFn = Callable[["torch.Tensor", "Context"], None]
SelectFn = Callable[[dict], Union[str, None]]
ValidateFn = Callable[[dict, dict], None]


@dataclass(frozen=True)
class Command:
    """A subcommand of `imgen`, built by the host from this description.

    The host adds the shared options (inputs, `-o`, `--overwrite`, `--device`, `--tile`, ...)
    itself; `params` holds only the command's own click options.

    Args:
        name: the subcommand (`sr`).
        help: the help text; its first line is the summary in `imgen --help`.
        process: `process(x, ctx) -> y`. `x` is (N, C, H, W) float in 0..1 on `ctx.device`, in
            `ctx.dtype`, with C = 3 for `channels=3`, 1 for `channels=1`, the image's own (1 or 3)
            for None. Return (N, C, H*scale, W*scale) with the same N and C: the host checks the
            shape and that every value is finite after each call, and reports anything else as an
            error of the plugin (exit status 3). Values outside 0..1 are clamped by the host.
            Called once per tile (or once per image when not tileable); must not keep state between
            calls except through `ctx.state`. `ctx.offsets` and `ctx.image_size` say where the
            tiles lie in the image, for position-dependent work (a vignette).
        params: click parameters of this command (`click.Option(["--scale"], ...)`).
        inputs: extra image inputs (masks, style references).
        tiling: a Tiling, or `tiling(ctx) -> Tiling` when it depends on options (`--scale`).
        prepare: optional `prepare(x, ctx)` called once per image on the whole image (x on
            `ctx.device` when it fits, else on the CPU) before tiling; store results in
            `ctx.state` (a noise estimate, curve parameters).
        select_model: optional `select_model(options) -> model name` when the choice depends on
            options; otherwise `--model` or the command's default model is used.
        validate: optional `validate(options, inputs)` called before any image is read, with the
            command's options and {image input name: True when given}; raise
            `imgen_cli.UsageError` for a combination the command cannot run (exit status 2).
        channels: 3 when process wants RGB (grey images are expanded and converted back), 1 when
            it wants one channel (colour images are processed per channel), None for either.
        alpha: "separate": the host keeps alpha out of process and resizes it itself when the
            image is resized; "keep": same, and alpha also reaches process as `ctx.alpha`
            (read it, do not write into it). A command that changes the alpha it writes (inpaint
            makes filled pixels opaque) sets `ctx.output_alpha` to a whole-image (N, 1, H, W)
            tensor in 0..1, from a process that is not tiled (`Tiling(tileable=False)`) or from
            finish; the host writes that instead.
        output_size: optional `output_size(ctx) -> (height, width) | None`: the size the host
            resizes the step's output to (a final factor such as sr's --outscale), from
            `ctx.image_size`, `ctx.scale` and the options; None keeps the output as process made
            it. The host resizes (bicubic, antialiased when shrinking, as `imgen_cli.resize`) band
            by band as tiles finish, so no whole float copy of the output is ever held.
        finish: optional `finish(y, ctx) -> y` after tiling, on the whole output; any size, the
            same N and C, finite values. It holds the step's whole output as float (12 bytes per
            RGB pixel): for a resize, use `output_size`.
        build_model: optional `build_model(state_dict) -> network or Loaded` for `--model FILE`:
            builds this command's own architecture from a user's weights file (a fine-tuned model).
        model_purposes: spandrel purposes ("SR", "Restoration", "Inpainting", ...) whose models this
            command can run through `--model FILE` when spandrel is installed.
        models_by_scale: optional `models_by_scale(options) -> {scale: model name}` for a command
            that can reach a target size (`--fit`, `--width`, `--height`) at several scales: the
            registered models it may run for these options, by scale; empty when the options fix
            the scale (`--scale`). The host then runs, per image, the smallest scale that
            reaches the target (the largest when none does) and resizes to it. Not called when
            `--model` is given.
        scale_option: the name of the command's option that asks for a scale factor (sr's
            `scale`). When it is given, a `--model` of another scale is a usage error: a
            registered model's before any image is read, a model file's once it is loaded.
        examples: (command line, what it does) pairs shown under "Examples" in `--help` and in
            the man page; a command without any gets generic ones.
    """

    name: str
    help: str
    process: ProcessFn
    params: Sequence["click.Parameter"] = ()
    inputs: Sequence[ImageInput] = ()
    tiling: Union[Tiling, Callable[["Context"], Tiling]] = Tiling()
    prepare: PrepareFn | None = None
    select_model: SelectFn | None = None
    validate: ValidateFn | None = None
    channels: int | None = 3
    alpha: Literal["separate", "keep"] = "separate"
    output_size: Callable[["Context"], Union[tuple[int, int], None]] | None = None
    finish: ProcessFn | None = None
    build_model: Callable[[dict], Any] | None = None
    model_purposes: tuple[str, ...] = ()
    models_by_scale: Callable[[dict], Mapping[int, str]] | None = None
    scale_option: str | None = None
    examples: Sequence[tuple[str, str]] = ()


class Context:
    """What a command's process, prepare, tiling and finish functions see: one per image and step.

    Attributes:
        options: the command's own option values, by parameter name.
        device, dtype: where and in what precision `process` runs (torch objects).
        source: the input's name (a path, or "-"), for messages.
        scale: the step's output size / input size, once its tiling is known.
        image_size: (height, width) of the whole input image of this step.
        offsets: one (top, left) per item of the batch `process` gets: where that tile starts in
            the image, in input pixels ((0, 0) for a whole image). A colour image processed per
            channel (`channels=1`) has one entry per channel of each tile.
        state: a dict for results of `prepare` (kept for the image's whole step).
        inputs: extra image inputs by name, cropped with each tile when spatial.
        alpha: the image's alpha (N, 1, H, W) for commands with `alpha="keep"`, else None.
        output_alpha: set it to replace the alpha the host writes (see `Command.alpha`).
    """

    def __init__(self, command: Command, options: Mapping[str, Any], device, dtype, source: str = "-",
                 loader: Callable[[str | None], Loaded] | None = None,
                 info: Callable[[str], None] | None = None):
        self.command = command
        self.options = options
        self.device = device
        self.dtype = dtype
        self.source = source
        self.scale: int = 1
        self.image_size: tuple[int, int] = (0, 0)
        self.offsets: tuple[tuple[int, int], ...] = ((0, 0),)
        self.state: dict = {}
        self.inputs: dict = {}
        self.alpha = None
        self.output_alpha = None
        self._loader = loader
        self._info = info

    def loaded(self, name: str | None = None) -> Loaded:
        """The step's model (or the registered model `name`), loaded on this device and precision."""
        if self._loader is None:
            from .errors import PluginError

            raise PluginError(f"command {self.command.name!r} has no model to load")
        return self._loader(name)

    def model(self, name: str | None = None):
        """The network of `loaded(name)`: call it on tensors."""
        return self.loaded(name).network

    def info(self, message: str) -> None:
        """A message on stderr, shown with --verbose."""
        if self._info is not None:
            self._info(f"{self.command.name}: {message}")
