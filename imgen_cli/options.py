"""Options every command shares, written once and added by the host to each plugin command.

In a chain (`imgen denoise + sr in.jpg`) each segment may set them; a value set in two segments
must agree. Inputs may be given in one segment only.
"""

from __future__ import annotations

import math

import click

from .contract import DEVICE_KINDS, PRECISIONS
from .io import DEFAULT_MAX_PIXELS, FORMATS



class NameOrPath(click.ParamType):
    """A value that is a name from a list (a built-in style, a registered model) or a file.

    Kept as given; what it means is settled when the chain is resolved. The shell completes the
    names matching what was typed (in any case) beside the files; with no name matching, the
    shell's own file completion takes over.
    """

    name = "name_or_path"

    def __init__(self, names, suffixes: tuple[str, ...] = ()):
        self.names = names
        self.suffixes = suffixes  # files listed beside the names: these kinds only

    def convert(self, value, param, ctx):
        return value

    def shell_complete(self, ctx, param, incomplete):
        from click.shell_completion import CompletionItem

        names = [n for n in self.names() if n.lower().startswith(incomplete.lower())]
        if not names:
            return [CompletionItem(incomplete, type="file")]
        # bash shows the files too only when they are listed here beside the names.
        return [CompletionItem(n) for n in names] + [CompletionItem(p) for p in _paths(incomplete, self.suffixes)]


def _paths(incomplete: str, suffixes: tuple[str, ...] = ()) -> list[str]:
    """Folders (with a trailing /) and files (with one of `suffixes`, if any) whose path starts
    with `incomplete`."""
    import os

    folder, start = os.path.split(incomplete)
    try:
        entries = sorted(os.scandir(os.path.expanduser(folder) or "."), key=lambda e: e.name)
    except OSError:
        return []
    return [os.path.join(folder, e.name) + ("/" if e.is_dir() else "") for e in entries
            if e.name.startswith(start) and (start.startswith(".") or not e.name.startswith("."))
            and (e.is_dir() or not suffixes or e.name.lower().endswith(suffixes))]


def _complete_device(ctx, param, incomplete):
    # The kinds only: listing cuda:N would import torch on every TAB.
    return [kind for kind in ("auto", *DEVICE_KINDS) if kind.startswith(incomplete)]


def verbosity_options(f):
    f = click.option("--debug", is_flag=True, help="Show tracebacks for errors.")(f)
    f = click.option("-v", "--verbose", is_flag=True, help="More messages on stderr.")(f)
    f = click.option("-q", "--quiet", is_flag=True, help="No progress bars or messages, only errors.")(f)
    return f


def withheld(command=None) -> dict[str, str]:
    """Shared options that `command` (a contract Command) would ignore, with the reason: they are
    not offered, and giving one says why. None: withhold nothing."""
    tiling = getattr(command, "tiling", None)
    if tiling is not None and not callable(tiling) and not tiling.tileable:
        return {"tile": f"{command.name} processes each image whole, never in tiles"}
    return {}


def shared_params(command=None) -> list[click.Parameter]:
    """Fresh click parameters for one command (click parameters must not be shared between
    commands); for a contract `command`, without the options it would ignore (see `withheld`)."""
    params = [
        click.Argument(["inputs"], nargs=-1, type=click.Path(), metavar="[INPUT]..."),
        # A Path so that the shell completes file names; it is written, so not checked for reading.
        click.Option(["-o", "--output"], metavar="PATH", type=click.Path(readable=False),
                     help="Output file (one input), folder (several inputs, or a folder input) or - for stdout. "
                          "Default: a new file beside each input; stdout for stdin."),
        click.Option(["--format"], type=click.Choice(sorted(FORMATS) + ["jpg", "tif"], case_sensitive=False),
                     help="Output format. Default: from the output name, else the input's format (PNG on stdout)."),
        click.Option(["--quality"], type=click.IntRange(1, 100), help="JPEG/WebP quality [default: 95; WebP 100 = lossless]."),
        click.Option(["--strip"], is_flag=True, help="Drop ICC profile and EXIF from outputs."),
        click.Option(["--overwrite"], is_flag=True, help="Replace existing output files."),
        click.Option(["--skip-existing"], is_flag=True, help="Skip inputs whose output exists (for re-runs)."),
        click.Option(["-r", "--recursive"], is_flag=True,
                     help="Take the images of subfolders too; -o FOLDER mirrors the tree."),
        click.Option(["--suffix"], metavar="TEXT",
                     help="Name outputs STEM+TEXT.EXT (--suffix _big: photo_big.jpg). "
                          "Default: -COMMAND, plus -xSCALE when the size changes (photo-sr-x4.jpg), "
                          "or the target size (photo-sr-1920x1080.jpg)."),
        click.Option(["--name", "name_template"], metavar="TEMPLATE",
                     help="Name outputs from a template with the fields {stem}, {ext}, {command}, {scale}, "
                          "{model} (--name '{stem}-{command}{scale}x.{ext}'); also in -o FOLDER."),
        click.Option(["--dry-run"], is_flag=True,
                     help="Print what would be done (input -> output, model) and stop: nothing loaded or written."),
        click.Option(["--json", "as_json"], is_flag=True,
                     help="Print one JSON record per input and a summary on stdout (JSON Lines)."),
        click.Option(["--report"], metavar="FILE", type=click.Path(readable=False),
                     help="Write the JSON records of --json to FILE (JSON Lines)."),
        click.Option(["--jobs"], default="auto", show_default=True, metavar="auto|N", callback=_jobs,
                     help="Files processed at once on the CPU, each with its share of the threads; "
                          "auto: 2 for several images of up to 4 MP, else 1."),
        click.Option(["--device"], default="auto", show_default=True, metavar="auto|cpu|cuda|cuda:N|mps",
                     shell_complete=_complete_device, help="Where to run. A device named explicitly must exist."),
        click.Option(["--precision"], type=click.Choice(["auto", *PRECISIONS]), default="auto",
                     show_default=True, help="auto: fp16 on GPUs for models that support it, fp32 on CPU."),
        click.Option(["--tile"], default="auto", show_default=True, metavar="auto|PIXELS|0",
                     help="Tile side for large images; auto sizes from the memory budget (IMGEN_MEMORY, default 1.75G), 0 never tiles."),
        click.Option(["--threads"], type=click.IntRange(1, 1024), help="CPU threads for torch."),
        click.Option(["--max-pixels"], type=click.IntRange(0), default=DEFAULT_MAX_PIXELS, show_default=True,
                     help="Refuse larger images (decompression bombs); 0 for no limit."),
    ]
    for option in reversed(verbosity_options(lambda: None).__click_params__):
        params.append(option)
    left_out = withheld(command)
    return [param for param in params if param.name not in left_out]


def shared_defaults() -> dict:
    """The default of every shared option, for a step that does not offer it."""
    # What click makes of no words at all (its sentinels resolved: flags False, inputs ()).
    return click.Command("defaults", params=shared_params()).make_context("defaults", []).params


class WithExamples:
    """A click command or group with an "Examples" section after its options (and a man page
    section, see scripts/make_man.py): `examples` is a list of (command line, what it does)."""

    def __init__(self, *args, examples=(), **kwargs):
        super().__init__(*args, **kwargs)
        self.examples = list(examples)

    def format_epilog(self, ctx, formatter):
        if self.examples:
            with formatter.section("Examples"):
                for i, (line, caption) in enumerate(self.examples):
                    if i:
                        formatter.write_paragraph()
                    formatter.write_text(caption.rstrip(".:") + ":")
                    formatter.write(" " * (formatter.current_indent + 4) + line + "\n")
        super().format_epilog(ctx, formatter)


class ExampleCommand(WithExamples, click.Command):
    pass


def generic_examples(command) -> list[tuple[str, str]]:
    """Examples for a plugin command that gives none: the ways every command is run."""
    name = command.name
    required = [spec.name for spec in command.inputs if spec.required]

    def needs(folder: bool) -> str:
        return "".join(f" --{n.replace('_', '-')} {n}s/" if folder else f" --{n.replace('_', '-')} {n}.png"
                       for n in required)

    return [
        (f"imgen {name}{needs(False)} photo.jpg", "One image; the result is written beside it, named after it and the command"),
        (f"imgen {name}{needs(True)} photos/ -o out/", "Every image of a folder, into another folder"),
        (f"imgen {name}{needs(False)} - < in.png > out.png", "Standard input to standard output (PNG)"),
    ]


def step_params() -> list[click.Parameter]:
    """Fresh click parameters the host adds to every command, kept per step (not merged as the
    shared ones are): strength and output size (see `sizing`)."""
    from .sizing import MAX_SIDE

    return finite_floats([
        click.Option(["--blend"], type=click.FloatRange(0, 1), default=1.0, show_default=True, metavar="0..1",
                     help="Mix this step's result with its input (resized to the result's size): "
                          "1 the result, 0 the input."),
        click.Option(["--width"], type=click.IntRange(1, MAX_SIDE), metavar="PIXELS",
                     help="Output width; the height follows the aspect ratio unless --height is given "
                          "too (then the size is exact). For the chain's output, wherever written."),
        click.Option(["--height"], type=click.IntRange(1, MAX_SIDE), metavar="PIXELS",
                     help="Output height; the width follows the aspect ratio unless --width is given too."),
        click.Option(["--fit"], type=Box(), metavar="WxH",
                     help="Output as large as fits in W x H, keeping the aspect ratio. For the chain's "
                          "output; sr runs the smallest scale that reaches it."),
    ])


def host_options() -> tuple[set[str], set[str]]:
    """(flags, parameter names) of the options the host adds to every command: a plugin command
    declaring one of them would shadow it or be shadowed (see plugins.Registry)."""
    params = [p for p in (*shared_params(), *step_params()) if isinstance(p, click.Option)]
    return {opt for p in params for opt in (*p.opts, *p.secondary_opts)}, {p.name for p in params}


class Box(click.ParamType):
    """`WxH`, two whole numbers of pixels (1..MAX_SIDE): a (width, height) tuple."""

    name = "WxH"

    def convert(self, value, param, ctx):
        from .sizing import MAX_SIDE

        if isinstance(value, tuple):
            return value
        parts = str(value).strip().lower().split("x")
        if len(parts) != 2 or not all(p.strip().isdigit() for p in parts):
            self.fail(f"{value!r} is not WIDTHxHEIGHT in pixels (e.g. 1920x1080)", param, ctx)
        width, height = (int(p) for p in parts)
        if not (1 <= width <= MAX_SIDE and 1 <= height <= MAX_SIDE):
            self.fail(f"{value!r}: width and height must be 1 to {MAX_SIDE} pixels", param, ctx)
        return BoxSize(width, height)


class BoxSize(tuple):
    """(width, height) that prints as it is written, `WxH` (imgen --server resends options as text)."""

    def __new__(cls, width: int, height: int):
        return super().__new__(cls, (width, height))

    def __str__(self) -> str:
        return f"{self[0]}x{self[1]}"


def _jobs(ctx, param, value):
    if value is None or value == "auto" or isinstance(value, int):
        return value
    text = str(value).strip().lower()
    if text == "auto":
        return "auto"
    if text.isdigit() and 1 <= int(text) <= 256:
        return int(text)
    raise click.BadParameter(f"{value!r} is not auto or a number of files from 1 to 256", ctx=ctx, param=param)


def finite_floats(params) -> list[click.Parameter]:
    """`params` with NaN and infinity refused, as usage errors, by every float option.

    click's FLOAT and FloatRange accept 'nan' and 'inf' (a NaN passes every range comparison),
    which would flow into a network as a black or NaN image. The host applies this to each
    plugin command's own options, so no plugin has to remember it.
    """
    for param in params:
        if isinstance(param.type, click.types.FloatParamType) and not getattr(param, "_imgen_finite", False):
            param.callback = _finite_check(param.callback)
            param._imgen_finite = True
    return list(params)


def _finite_check(inner):
    def check(ctx, param, value):
        values = value if isinstance(value, (tuple, list)) else (value,)
        if any(isinstance(v, float) and not math.isfinite(v) for v in values):
            raise click.BadParameter(f"{value!r} is not a finite number", ctx=ctx, param=param)
        return inner(ctx, param, value) if inner is not None else value

    return check
