"""From inputs to written outputs: naming, reading, running, encoding, writing; the per-file job.

The rules a user can rely on:
- an input is never overwritten, an existing output only with --overwrite;
- every output's name and format are settled before anything is computed, so --skip-existing
  skips an input before its model is loaded or its pixels decoded;
- outputs are written atomically, so an interrupted run leaves no partial file;
- a batch goes on past a bad input and ends with a summary and a non-zero status;
- nothing but image bytes goes to stdout, and never to a terminal.

The pieces serve every front end (the CLI, a service, a Ray job) with the CLI's exact rules:

    name, fmt = choose_output("photo.jpg", data[:16], settings, naming("sr", 4))  # "photo-sr-x4.jpg", "jpeg"
    done = convert(pipeline, data, "photo.jpg", fmt, settings)   # bytes in, an encoded image out
    write_output(name, done.data, overwrite=settings.overwrite)  # atomic; refuses to clobber

A PNG is encoded as it is written (io.Encoded): `done.data` holds the pixels until then, and
`bytes(done.data)` gives the whole file where bytes are needed (a service's response). Given the
output file (`convert(..., output=name)`), a PNG is written while the pipeline makes it, row band
by row band (io.PngFile), and the whole image is never held: `write_output` then puts the file
in place.

`choose_output` names the output of one input from its name and first bytes (the format is
sniffed, never guessed from the name): the forced `--format`, else the output name's extension,
else the input's own format where it can be written, else PNG; PNG on stdout. `plan` does it for
a whole command line (folders, `-o FILE|FOLDER|-`), `run_job` is one file of the CLI (exists
check, read, convert, write, messages) and `run` the CLI's batch loop (with `workers`, several
files converted at once in threads, written in order).

`naming` makes the names of derived outputs: `--name TEMPLATE`, `--suffix TEXT` or the default
`{stem}-{command}[-x{scale}].{ext}`; `find_inputs` leaves out of a folder input the files named
like its outputs, so a rerun never processes the first run's results.
"""

from __future__ import annotations

import contextlib
import os
import sys
import time
import traceback
from dataclasses import dataclass, field, replace
from pathlib import Path

from . import io as imageio_
from .contract import ImageInput
from .errors import BROKEN_PIPE, FAILED, INTERRUPTED, OK, USAGE, ImgenError, InputError, OutputError, \
    PluginError, UsageError

STDIO = "-"
# Enough leading bytes for io.sniff to tell every format apart.
HEAD = 16


@dataclass(frozen=True)
class Job:
    """One input and where its output goes, in which format (settled before any compute)."""

    source: str  # a path, or "-" for stdin
    output: str  # a path, or "-" for stdout
    format: str  # the format written: png, jpeg, webp, tiff, bmp


@dataclass(frozen=True)
class Settings:
    output: str | None = None
    format: str | None = None
    quality: int | None = None
    strip: bool = False
    overwrite: bool = False
    skip_existing: bool = False
    max_pixels: int | None = imageio_.DEFAULT_MAX_PIXELS


@dataclass(frozen=True)
class Converted:
    """An encoded output and what the CLI says about it."""

    data: bytes | imageio_.Encoded | imageio_.PngFile  # Encoded: made as it is written; PngFile: written
    format: str
    warnings: tuple[str, ...]
    size_in: tuple[int, int]  # (width, height)
    size_out: tuple[int, int]
    about: dict | None = None  # the pipeline's describe() for this image (the model a target size chose)


# The fields of a name template (--name), for messages and help.
NAME_FIELDS = ("stem", "ext", "command", "scale", "model")


@dataclass(frozen=True)
class Naming:
    """How a derived output is named: a template with the fields of NAME_FIELDS.

    `explicit` is True when the user gave it (--name, --suffix): it then names outputs in an
    output folder too, where by default an output keeps its input's name.
    """

    template: str
    command: str = ""
    scale: float = 1
    model: str = ""
    explicit: bool = False

    def render(self, stem: str, ext: str) -> str:
        return self.template.format(stem=stem, ext=ext, **self._fixed())

    def _fixed(self) -> dict:
        return {"command": self.command, "scale": _number(self.scale), "model": self.model}

    def own(self, filename: str) -> bool:
        """Whether `filename` looks like what this naming writes (any stem, any image extension;
        for default names, any factor or size): a folder input never takes the outputs of an
        earlier run of the same command."""
        return self._pattern().fullmatch(filename) is not None

    def _pattern(self):
        import re
        import string

        if not self.explicit:
            # Default names of this command at any factor or target size: an x2 run never takes
            # the outputs of an x4 run either.
            return re.compile("(.+)-" + re.escape(self.command) + r"(-x[0-9.]+|-[0-9]+x[0-9]+|-[wh][0-9]+)?"
                              r"\.[A-Za-z0-9]+", re.IGNORECASE)

        # The extension a format adds or changes (with_extension): any extension matches.
        ending = re.fullmatch(r"(.*)\.(\{ext\}|[A-Za-z0-9]+)", self.template, re.DOTALL)
        base = ending.group(1) if ending else self.template
        parts = []
        for literal, name, spec, _ in string.Formatter().parse(base):
            parts.append(re.escape(literal))
            if name == "stem":
                parts.append("(.+)")
            elif name == "ext":
                parts.append("[^.]*")
            elif name is not None:
                parts.append(re.escape(format(self._fixed()[name], spec)))
        return re.compile("".join(parts) + r"\.[A-Za-z0-9]+", re.IGNORECASE)


def _number(value: float):
    """2.0 as 2, 3.5 as 3.5: a scale as a user writes it."""
    return int(value) if float(value).is_integer() else value


def naming(command: str, scale: float = 1, model: str = "", suffix: str | None = None,
           template: str | None = None, size: str = "") -> Naming:
    """The Naming of a run: `--name TEMPLATE`, else `--suffix TEXT` (`{stem}TEXT.{ext}`), else
    the default `{stem}-COMMAND.{ext}`, with `-SIZE` for a target size (`800x600`, `w800`) or
    `-xSCALE` when the run changes the size by a factor."""
    import string

    if suffix is not None and template is not None:
        raise UsageError("--suffix and --name both name the output: give one")
    if template is None and suffix is not None:
        if os.sep in suffix or "/" in suffix:
            raise UsageError(f"--suffix {suffix}: a name part, not a path (use -o FOLDER for folders)")
        template = "{stem}" + suffix.replace("{", "{{").replace("}", "}}") + ".{ext}"
    explicit = template is not None
    if template is None:
        tag = f"-{size}" if size else "-x{scale}" if scale != 1 else ""
        template = "{stem}-{command}" + tag + ".{ext}"
    if os.sep in template or "/" in template:
        raise UsageError(f"--name {template}: a file name, not a path (use -o FOLDER for folders)")
    try:
        used = [name for _, name, _, _ in string.Formatter().parse(template) if name is not None]
    except ValueError as exc:
        raise UsageError(f"--name {template}: {exc} (write {{{{ and }}}} for braces)") from None
    for name in used:
        if name not in NAME_FIELDS:
            raise UsageError(f"--name {template}: unknown field {{{name}}} "
                             f"(use {', '.join('{' + f + '}' for f in NAME_FIELDS)})")
    result = Naming(template, command=command, scale=scale, model=model, explicit=explicit)
    try:
        result.render("x", "png")
    except (ValueError, TypeError) as exc:
        raise UsageError(f"--name {template}: {exc}") from None
    if not result.render("x", "png").strip("."):
        raise UsageError(f"--name {template}: gives an empty name")
    return result


@dataclass
class Inputs:
    """The inputs of a run, folders expanded (see `find_inputs`)."""

    sources: list[str]
    # source -> its folder relative to the folder input it was found in ("" for files as given
    # and for a folder's own files), which an output folder mirrors.
    below: dict[str, str]
    from_folder: bool = False
    skipped_subfolders: list[str] = field(default_factory=list)  # left out without --recursive
    own_outputs: list[str] = field(default_factory=list)  # files left out as outputs of this command
    output_folders: list[str] = field(default_factory=list)  # -o FOLDER inside an input, not walked


def expand_inputs(inputs: tuple[str, ...], stdin_is_tty: bool) -> list[str]:
    """Files as given, folders replaced by their images (sorted), nothing or `-` meaning stdin."""
    return find_inputs(inputs, stdin_is_tty).sources


def _is_image_name(name: str) -> bool:
    return not name.startswith(".") and os.path.splitext(name)[1].lower() in (*imageio_.EXTENSIONS, ".gif")


def find_inputs(inputs: tuple[str, ...], stdin_is_tty: bool, recursive: bool = False,
                naming: Naming | None = None, output: str | None = None) -> Inputs:
    """Files as given; folders replaced by their images (sorted; with `recursive` their
    subfolders' too, hidden ones and the output folder left out); nothing or `-` meaning stdin.

    A folder's file that `naming` would write beside its input (`photo-sr-x4.jpg` for `sr`) is
    left out when outputs go beside the inputs, so a second run never processes the first one's
    outputs.
    """
    if not inputs:
        if stdin_is_tty:
            raise UsageError("no input: give image files, folders, or - to read stdin")
        return Inputs([STDIO], {STDIO: ""})
    if list(inputs).count(STDIO) > 1:
        raise UsageError("stdin (-) can be read only once")
    found = Inputs([], {})
    out_folder = os.path.realpath(output) if output and output != STDIO else None
    for item in inputs:
        if item == STDIO or not os.path.isdir(item):
            found.sources.append(item)
            found.below.setdefault(item, "")
            continue
        found.from_folder = True
        count, left_out, own = len(found.sources), len(found.skipped_subfolders), len(found.own_outputs)
        for folder, subfolders, names in os.walk(item):
            subfolders.sort()
            visible = [d for d in subfolders if not d.startswith(".")]
            if not recursive:
                found.skipped_subfolders += [os.path.join(folder, d) for d in visible]
                visible = []
            elif out_folder is not None:
                # Outputs mirrored into a folder below the input are never read back as inputs.
                kept = [d for d in visible if os.path.realpath(os.path.join(folder, d)) != out_folder]
                found.output_folders += [os.path.join(folder, d) for d in visible if d not in kept]
                visible = kept
            subfolders[:] = visible
            below = os.path.relpath(folder, item)
            below = "" if below == os.curdir else below
            for name in sorted(names):
                path = os.path.join(folder, name)
                if not _is_image_name(name) or not os.path.isfile(path):
                    continue
                beside = out_folder is None or (naming is not None and naming.explicit and os.path.realpath(
                    folder) == os.path.realpath(os.path.join(output, below)))
                if naming is not None and beside and naming.own(name):
                    found.own_outputs.append(path)
                    continue
                found.sources.append(path)
                found.below[path] = below
        if len(found.sources) == count and len(found.own_outputs) == own:
            if len(found.skipped_subfolders) > left_out:
                raise UsageError(f"{item}: no images in the folder itself; -r takes its subfolders' too")
            raise UsageError(f"{item}: folder has no images")
    if STDIO in found.sources and len(found.sources) > 1:
        raise UsageError("stdin (-) cannot be mixed with other inputs")
    return found


def choose_output(source: str, head: bytes | None, settings: Settings, naming: Naming | None = None,
                  folder: str | os.PathLike | None = None) -> tuple[str, str]:
    """(output name, format) for one input under the CLI's rules.

    `head` is the input's first bytes (None when unknown, as for stdin before it is read);
    `folder` is the output folder of a batch; `naming` names derived outputs beside the input
    (`photo-sr-x4.jpg`), and in `folder` too when the user gave it.
    """
    forced = imageio_.check_format(settings.format) if settings.format else None
    output = settings.output
    if folder is None and (output == STDIO or (output is None and source == STDIO)):
        return STDIO, forced or "png"
    if folder is None and output:
        return output, forced or imageio_.output_format(output)
    sniffed = imageio_.sniff(head) if head else None
    if source == STDIO:
        stem, ext, where = "stdin", "png", None
    else:
        where, base = os.path.split(source)
        stem, ext = os.path.splitext(base)
        ext = ext[1:] or (imageio_.FORMATS.get(sniffed, ".png")[1:])
    if folder is not None:
        if naming is not None and naming.explicit:
            name = str(Path(folder) / naming.render(stem, ext))
        else:
            name = str(Path(folder) / (os.path.basename(source) if source != STDIO else "stdin.png"))
    else:
        if naming is None:
            raise ValueError("an output beside its input needs a naming")
        name = os.path.join(where or "", naming.render(stem, ext))
    fmt = forced or _derived_format(name, sniffed)
    return with_extension(name, fmt), fmt


def _derived_format(name: str, sniffed: str | None) -> str:
    """A derived output keeps its input's format: the extension's, unless the bytes are of a
    format that cannot be written (GIF), which becomes PNG."""
    if sniffed is not None and sniffed not in imageio_.FORMATS:
        return "png"
    return imageio_.format_for_path(name) or (sniffed if sniffed in imageio_.FORMATS else "png")


def with_extension(name: str, fmt: str) -> str:
    """`name` with an extension that matches `fmt` (kept when it already does)."""
    if imageio_.format_for_path(name) == fmt:
        return name
    return os.path.splitext(name)[0] + imageio_.FORMATS[fmt]


def plan(sources: list[str] | Inputs, settings: Settings, naming: Naming | None, stdout_is_tty: bool) -> list[Job]:
    """Every output's name and format, refusing what would clobber inputs or a terminal.

    `sources` is a list of inputs, or an Inputs whose folder inputs make -o a folder that mirrors
    their subfolders."""
    found = sources if isinstance(sources, Inputs) else Inputs(list(sources), {})
    sources = found.sources
    output = settings.output
    several = len(sources) > 1 or found.from_folder
    folder = None
    if output and output != STDIO and (several or output.endswith(os.sep) or os.path.isdir(output)):
        folder = Path(output)
        if folder.exists() and not folder.is_dir():
            raise UsageError(f"-o {output}: not a folder, but there are {len(sources)} inputs")
        if not folder.exists() and (imageio_.format_for_path(output) or output.lower().endswith(".gif")):
            count = f"{len(sources)} inputs" if len(sources) > 1 else "a folder input"
            raise UsageError(f"-o {output}: names one file, but {count} need a folder "
                             "(-o FOLDER, or one input per run)")
    elif several and output == STDIO:
        raise UsageError("-o - (stdout) takes a single input")
    jobs: list[Job] = []
    for source in sources:
        into = folder / found.below.get(source, "") if folder is not None else None
        name, fmt = choose_output(source, _head(source), settings, naming, into)
        if name == STDIO and stdout_is_tty:
            raise UsageError("refusing to write image data to a terminal: redirect stdout or use -o FILE")
        if name != STDIO and source != STDIO and _same_file(source, name):
            raise UsageError(f"{source}: output would overwrite the input; choose another -o")
        jobs.append(Job(source, name, fmt))
    return jobs


def _head(source: str) -> bytes | None:
    """The first bytes of an input file; None for stdin or a file that cannot be read (reading it
    for real reports why, in its turn)."""
    if source == STDIO:
        return None
    try:
        with open(source, "rb") as f:
            return f.read(HEAD)
    except OSError:
        return None


def refuse_collisions(jobs: list[Job], protected: list[str]) -> None:
    """Refuse, before any compute, a run that would write over one of its own inputs (main images,
    masks, styles, model files: `protected`) or write two results to one name. Flags do not
    change this: --overwrite is for results of earlier runs, never for this run's inputs."""
    inputs = {}
    for path in protected:
        if path and path != STDIO:
            candidates = [path]
            if os.path.isdir(path):
                candidates = [str(p) for p in Path(path).iterdir() if p.is_file()]
            for candidate in candidates:
                inputs.setdefault(_identity(candidate), candidate)
    written: dict = {}
    for job in jobs:
        if job.output in (None, STDIO):
            continue
        key = _identity(job.output)
        if key in inputs:
            raise UsageError(f"{job.source}: its output {job.output} would overwrite the input {inputs[key]}; "
                             "choose another -o")
        if key in written:
            raise UsageError(f"{written[key]} and {job.source} would both be written to {job.output}; "
                             "give them different names or separate runs")
        written[key] = job.source


def _identity(path: str):
    """What makes two paths the same file: device and inode when it exists, else the real path."""
    try:
        info = os.stat(path)
        return (info.st_dev, info.st_ino)
    except OSError:
        return os.path.realpath(path)


def _same_file(a: str, b: str) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:
        return os.path.abspath(a) == os.path.abspath(b)


def read_input(source: str, stdin=None, max_pixels: int | None = None) -> bytes:
    """The bytes of an input file, or of stdin for "-", up to what `max_pixels` allows."""
    limit = imageio_.byte_limit(max_pixels)
    if source == STDIO:
        if stdin is None and sys.stdin is None:
            raise InputError("stdin is closed", STDIO)
        data = imageio_.read_stream(stdin if stdin is not None else sys.stdin.buffer, STDIO, limit)
        if not data:
            raise InputError("stdin is empty", STDIO)
        return data
    return imageio_.read_bytes(source, limit)


def read_source(source: str, max_pixels: int | None, stdin=None) -> imageio_.Picture:
    """An input (a path, or "-" for stdin) read and decoded."""
    return imageio_.decode(read_input(source, stdin, max_pixels), source, max_pixels)


def convert(pipeline, data: bytes, source: str, fmt: str, settings: Settings, inputs: dict | None = None,
            output: str | None = None) -> Converted:
    """Decode `data`, run the pipeline on it and encode the result as `fmt` (see `choose_output`);
    a PNG is encoded when it is written (`write_output`), or, given the `output` file it goes to,
    written there as the pipeline finishes its rows (see io.PngFile; `write_output` commits it).

    `source` names the input in messages and matches extra inputs given as folders (`--mask DIR`);
    `inputs` gives extra image inputs by name (arrays or paths), as `Pipeline.run_array` takes them.
    """
    picture = imageio_.decode(data, source, settings.max_pixels)
    del data  # the encoded input (53 MB for a 24 MP PNG) is not held while the pipeline runs
    height, width = picture.array.shape[:2]
    about = pipeline.describe if hasattr(pipeline, "describe") else (lambda: None)
    stream, made = None, []
    if output not in (None, STDIO) and fmt == "png" and not imageio_.is_stream(output):
        made = make_parent(output)
        stream = imageio_.PngFile(output, None if settings.strip else picture.icc,
                                  None if settings.strip else picture.exif)
    try:
        picture.array = pipeline.run_array(picture.array, source=source, inputs=inputs, stream=stream)
        if picture.array is None:
            out_h, out_w = stream.size
            return Converted(stream, fmt, (*picture.warnings, *stream.warnings), (width, height), (out_w, out_h),
                             about())
    except BaseException:
        if stream is not None:
            stream.discard()
            for folder in made:  # and the folders made for it (a failure never left any before)
                try:
                    folder.rmdir()
                except OSError:
                    break
        raise
    if stream is not None:  # not streamed (a final resize to --width, --fit)
        stream.discard()
    out_h, out_w = picture.array.shape[:2]
    encoded, warnings = imageio_.encoder(picture, fmt, quality=settings.quality, strip=settings.strip)
    return Converted(encoded, fmt, (*picture.warnings, *warnings), (width, height), (out_w, out_h), about())


def match_input(spec: ImageInput, value: str | None, source: str) -> str | None:
    """The file for an extra input (`--mask`) of one source: the file itself, or for a folder the
    image with the same stem."""
    if value is None:
        return None
    if os.path.isdir(value):
        stem = Path(source).stem
        for candidate in sorted(Path(value).iterdir()):
            if candidate.stem == stem and candidate.suffix.lower() in (*imageio_.EXTENSIONS, ".gif"):
                return str(candidate)
        raise InputError(f"no --{spec.name} named {stem}.* in {value}", source)
    if os.path.exists(value):
        return value
    if spec.resolve is not None:
        resolved = spec.resolve(value)
        if resolved:
            return resolved
    raise InputError(f"--{spec.name} {value}: no such file", source)


def extra_array(path: str, spec: ImageInput, max_pixels: int | None):
    """An extra input read from a file, with the channels its spec asks for."""
    data = imageio_.read_bytes(path, imageio_.byte_limit(max_pixels))
    return fit_channels(imageio_.decode(data, path, max_pixels).array, spec)


def fit_channels(array, spec: ImageInput):
    """(H, W, C) without alpha, as 1 channel for mode "L" or 3 for mode "RGB"."""
    import numpy as np

    if array.shape[2] in (2, 4):
        array = array[:, :, :-1]
    if spec.mode == "L" and array.shape[2] == 3:
        weights = np.array([0.299, 0.587, 0.114], dtype=np.float32)
        array = (array.astype(np.float32) @ weights)[:, :, None].round().astype(array.dtype)
    elif spec.mode == "RGB" and array.shape[2] == 1:
        array = np.repeat(array, 3, axis=2)
    return array


def write_output(output: str, data: bytes | imageio_.Encoded | imageio_.PngFile, overwrite: bool,
                 stdout=None) -> None:
    """Write (and for an Encoded PNG, encode) to stdout ("-") or atomically to a file, creating
    its folder; never over an existing file without `overwrite`. A PngFile (written by `convert`
    as it was made) is put in place."""
    if isinstance(data, imageio_.PngFile):
        data.commit(overwrite)
        return
    if output == STDIO:
        imageio_.write_stdout(data, stdout)
        return
    make_parent(output)
    imageio_.write_atomic(output, data, overwrite=overwrite)


def make_parent(output: str) -> list[Path]:
    """Create the folder an output file goes into; returns the folders made, deepest first."""
    parent = Path(output).parent
    made = []
    while str(parent) not in ("", ".") and not parent.exists():
        made.append(parent)
        parent = parent.parent
    if made:
        try:
            made[0].mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise OutputError(exc.strerror or str(exc), str(made[0])) from None
    return made


SKIPPED, WRITTEN, FAILED_STATUS, PLANNED = "skipped", "written", "failed", "planned"


def exists_skipped(job: Job, settings: Settings) -> bool:
    """Whether `job` is skipped because its output exists (--skip-existing); an error when it
    exists and --overwrite does not allow replacing it. Decided before anything is read or loaded."""
    if job.output != STDIO and os.path.exists(job.output):
        if settings.skip_existing:
            return True
        if not settings.overwrite:
            raise ImgenError("exists (use --overwrite to replace it, --skip-existing to skip it)", job.output)
    return False


def run_job(job: Job, pipeline, settings: Settings, reporter, convert=convert) -> str:
    """One file of the CLI: "skipped" when its output exists and --skip-existing says so (before
    anything is read or loaded), else read, convert, write and say so; "written". `convert` makes
    the pixels: this module's, or another with its signature (imgen --server's, over HTTP)."""
    return _finish(job, _compute(job, pipeline, settings, convert, stream=True), settings, reporter).status


@dataclass
class Outcome:
    """What became of one job: its status, the converted image and how long it took."""

    status: str
    done: Converted | None = None
    seconds: float = 0.0


def _compute(job: Job, pipeline, settings: Settings, convert, stream: bool = False) -> Outcome:
    """The part of a job that may run beside others: the exists check, reading and converting
    (with `stream`, a PNG file is written as it is made; `_finish` puts it in place)."""
    started = time.perf_counter()
    if exists_skipped(job, settings):
        return Outcome(SKIPPED)
    # The input's bytes are passed on, not kept here: convert drops them once decoded.
    done = convert(pipeline, read_input(job.source, max_pixels=settings.max_pixels), job.source, job.format, settings,
                   output=job.output if stream else None)
    return Outcome(WRITTEN, done, time.perf_counter() - started)


def _finish(job: Job, outcome: Outcome, settings: Settings, reporter, show_writing: bool = True) -> Outcome:
    """Messages and the write (for a PNG, its encoding too), in the main thread, in the order of
    the inputs. `show_writing`: a phase while a file is encoded and written, which takes long for
    a big image (not shown beside the bar of several jobs at once)."""
    if outcome.status == SKIPPED:
        reporter.info(f"{job.output}: exists, skipped")
        return outcome
    done = outcome.done
    try:
        for warning in done.warnings:
            reporter.say(f"{job.source}: {warning}")
        started = time.perf_counter()
        writing = contextlib.nullcontext()
        if show_writing and job.output != STDIO and isinstance(done.data, imageio_.Encoded):
            writing = reporter.phase(f"writing {job.output}, {imageio_.megapixels(done.size_out[0] * done.size_out[1])}…")
        with writing:
            write_output(job.output, done.data, overwrite=settings.overwrite)
    finally:
        if isinstance(done.data, imageio_.PngFile):
            done.data.discard()  # nothing once committed; else (an error, a signal) the temporary file
    outcome.seconds += time.perf_counter() - started
    if job.output != STDIO:
        (w, h), (new_w, new_h) = done.size_in, done.size_out
        timing = f" in {outcome.seconds:.2f} s" if reporter.verbose else ""
        reporter.say(f"wrote {job.output} ({w}x{h} -> {new_w}x{new_h}){timing}")
    return outcome


def record(job: Job, status: str, error: str | None = None, done: Converted | None = None,
           seconds: float = 0.0, about: dict | None = None) -> dict:
    """One input's record for --json and --report (see README, "Scripting")."""
    return {"input": job.source, "output": job.output, "status": status, "error": error,
            "size_in": list(done.size_in) if done else None, "size_out": list(done.size_out) if done else None,
            **(about or {"model": None, "device": None, "precision": None}), "seconds": round(seconds, 3)}


def _staged(jobs: list[Job], compute, workers: int, cancel=None):
    """(job, result()) in the order of `jobs`; with workers > 1, up to `workers` jobs computing
    at once in threads ahead of the one handed out (torch and the codecs release the GIL)."""
    if workers <= 1:
        for job in jobs:
            yield job, (lambda job=job: compute(job))
        return
    from collections import deque
    from concurrent.futures import ThreadPoolExecutor

    pool = ThreadPoolExecutor(workers, thread_name_prefix="imgen-job")
    window: deque = deque()
    finished = False
    try:
        for job in jobs:
            window.append((job, pool.submit(compute, job)))
            if len(window) >= workers:
                ready, future = window.popleft()
                yield ready, future.result
        while window:
            ready, future = window.popleft()
            yield ready, future.result
        finished = True
    finally:
        # An early end (a failure that stops the batch, Ctrl-C) starts no further job, and those
        # running stop at their next tile (`cancel`); they write nothing (the caller writes).
        if not finished and cancel is not None:
            cancel()
        pool.shutdown(wait=False, cancel_futures=True)


def run(jobs: list[Job], pipeline, settings: Settings, reporter, convert=convert, workers: int = 1,
        on_record=None) -> int:
    """The CLI's batch: every job in turn (or `workers` at once), past bad inputs, with progress
    and a summary; returns the exit status. A plugin or usage failure stops it (it would repeat
    for every input). Outputs are written, and reported, in the order of `jobs`.

    `reporter` has say(message), info(message), error(exception), progress(total, desc, unit),
    phase(message) and `debug` and `verbose` flags, as report.Reporter. `on_record(dict)`, when
    given, receives a `record` per job, then a summary record (see `summary_record`).
    """
    summary = Summary()
    several = len(jobs) > 1
    started = time.perf_counter()
    about = pipeline.describe if hasattr(pipeline, "describe") else (lambda: None)
    emit = on_record or (lambda r: None)
    bar = reporter.progress(total=len(jobs), desc="images", unit="img") if several else None

    def compute(job):
        # One file at a time: a PNG goes to its file as it is made. Several: each is finished and
        # written in input order by this thread, so none is streamed (its file would stay open).
        outcome = _compute(job, pipeline, settings, convert, stream=workers <= 1)
        if workers > 1 and outcome.done is not None and isinstance(outcome.done.data, imageio_.Encoded):
            # Several files at once: a PNG is deflated here, beside the other jobs, not later in
            # the one thread that writes in input order; waiting, it holds its file, not its pixels.
            outcome.done = replace(outcome.done, data=bytes(outcome.done.data))
        return outcome

    engine = getattr(pipeline, "engine", None)
    if hasattr(engine, "cancelled"):
        engine.cancelled.clear()
    staged = _staged(jobs, compute, workers, cancel=engine.cancelled.set if hasattr(engine, "cancelled") else None)
    try:
        for job, result in staged:
            try:
                outcome = _finish(job, result(), settings, reporter, show_writing=workers <= 1)
            except ImgenError as exc:
                shown = exc if exc.source else type(exc)(exc.message, job.source)
                reporter.error(shown)
                summary.failed += 1
                emit(record(job, FAILED_STATUS, str(shown), about=about()))
                if isinstance(exc, PluginError) or (exc.exit_code == USAGE and not exc.source):
                    # the same failure would repeat for every input; one naming a file is that file's
                    emit(summary_record(summary, time.perf_counter() - started))
                    return exc.exit_code
            except KeyboardInterrupt as exc:
                print("imgen: interrupted", file=sys.stderr)
                return getattr(exc, "exit_code", INTERRUPTED)
            except BrokenPipeError:
                silence_stdout()
                return BROKEN_PIPE
            except Exception as exc:  # a plugin bug: one line, and the traceback with --debug
                error = ImgenError(f"internal error: {type(exc).__name__}: {exc}", job.source)
                reporter.error(error)
                if reporter.debug:
                    traceback.print_exception(exc, file=sys.stderr)
                summary.failed += 1
                emit(record(job, FAILED_STATUS, str(error), about=about()))
            else:
                if outcome.status == SKIPPED:
                    summary.skipped += 1
                else:
                    summary.written += 1
                emit(record(job, outcome.status, done=outcome.done, seconds=outcome.seconds,
                            about=(outcome.done and outcome.done.about) or about()))
            if bar is not None:
                bar.update(1)
    finally:
        staged.close()
        if bar is not None:
            bar.close()
    if several:
        reporter.say(summary.line())
    emit(summary_record(summary, time.perf_counter() - started))
    return summary.exit_code


def summary_record(summary: Summary, seconds: float) -> dict:
    """The last record of --json and --report: counts and the whole run's time."""
    return {"summary": True, "written": summary.written, "skipped": summary.skipped, "failed": summary.failed,
            "seconds": round(seconds, 3)}


def silence_stdout() -> None:
    """After the reader of stdout went away: Python would complain again when flushing at exit."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):
        pass


@dataclass
class Summary:
    written: int = 0
    skipped: int = 0
    failed: int = 0

    @property
    def exit_code(self) -> int:
        return FAILED if self.failed else OK

    def line(self) -> str:
        parts = [f"{self.written} written"]
        if self.skipped:
            parts.append(f"{self.skipped} skipped")
        if self.failed:
            parts.append(f"{self.failed} failed")
        return ", ".join(parts)


