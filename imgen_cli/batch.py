"""From inputs to written outputs: naming, reading, running, encoding, writing; the per-file job.

The rules a user can rely on:
- an input is never overwritten, an existing output only with --overwrite;
- every output's name and format are settled before anything is computed, so --skip-existing
  skips an input before its model is loaded or its pixels decoded;
- outputs are written atomically, so an interrupted run leaves no partial file;
- a batch goes on past a bad input and ends with a summary and a non-zero status;
- nothing but image bytes goes to stdout, and never to a terminal.

The pieces serve every front end (the CLI, a service, a Ray job) with the CLI's exact rules:

    name, fmt = choose_output("photo.jpg", data[:16], settings, suffix="sr")  # "photo-sr.jpg", "jpeg"
    done = convert(pipeline, data, "photo.jpg", fmt, settings)   # bytes in, encoded bytes out
    write_output(name, done.data, overwrite=settings.overwrite)  # atomic; refuses to clobber

`choose_output` names the output of one input from its name and first bytes (the format is
sniffed, never guessed from the name): the forced `--format`, else the output name's extension,
else the input's own format where it can be written, else PNG; PNG on stdout. `plan` does it for
a whole command line (folders, `-o FILE|FOLDER|-`), `run_job` is one file of the CLI (exists
check, read, convert, write, messages) and `run` the CLI's batch loop.
"""

from __future__ import annotations

import os
import sys
import traceback
from dataclasses import dataclass
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

    data: bytes
    format: str
    warnings: tuple[str, ...]
    size_in: tuple[int, int]  # (width, height)
    size_out: tuple[int, int]


def expand_inputs(inputs: tuple[str, ...], stdin_is_tty: bool) -> list[str]:
    """Files as given, folders replaced by their images (sorted), nothing or `-` meaning stdin."""
    if not inputs:
        if stdin_is_tty:
            raise UsageError("no input: give image files, folders, or - to read stdin")
        return [STDIO]
    if list(inputs).count(STDIO) > 1:
        raise UsageError("stdin (-) can be read only once")
    sources: list[str] = []
    for item in inputs:
        if item != STDIO and os.path.isdir(item):
            found = sorted(str(p) for p in Path(item).iterdir()
                           if p.is_file() and not p.name.startswith(".")
                           and p.suffix.lower() in (*imageio_.EXTENSIONS, ".gif"))
            if not found:
                raise UsageError(f"{item}: folder has no images")
            sources.extend(found)
        else:
            sources.append(item)
    if STDIO in sources and len(sources) > 1:
        raise UsageError("stdin (-) cannot be mixed with other inputs")
    return sources


def choose_output(source: str, head: bytes | None, settings: Settings, suffix: str,
                  folder: str | os.PathLike | None = None) -> tuple[str, str]:
    """(output name, format) for one input under the CLI's rules.

    `head` is the input's first bytes (None when unknown, as for stdin before it is read);
    `folder` is the output folder of a batch; `suffix` names derived outputs (`photo-SUFFIX.jpg`).
    """
    forced = imageio_.check_format(settings.format) if settings.format else None
    output = settings.output
    if folder is None and (output == STDIO or (output is None and source == STDIO)):
        return STDIO, forced or "png"
    if folder is None and output:
        return output, forced or imageio_.output_format(output)
    if folder is not None:
        name = str(Path(folder) / (Path(source).name if source != STDIO else "stdin.png"))
    else:
        stem, ext = os.path.splitext(source)
        name = f"{stem}-{suffix}{ext}"
    fmt = forced or _derived_format(name, imageio_.sniff(head) if head else None)
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


def plan(sources: list[str], settings: Settings, suffix: str, stdout_is_tty: bool) -> list[Job]:
    """Every output's name and format, refusing what would clobber inputs or a terminal."""
    output = settings.output
    several = len(sources) > 1
    folder = None
    if output and output != STDIO and (several or output.endswith(os.sep) or os.path.isdir(output)):
        folder = Path(output)
        if folder.exists() and not folder.is_dir():
            raise UsageError(f"-o {output}: not a folder, but there are {len(sources)} inputs")
    elif several and output == STDIO:
        raise UsageError("-o - (stdout) takes a single input")
    elif several and output:
        raise UsageError(f"-o {output}: give a folder for {len(sources)} inputs")
    jobs: list[Job] = []
    for source in sources:
        name, fmt = choose_output(source, _head(source), settings, suffix, folder)
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


def convert(pipeline, data: bytes, source: str, fmt: str, settings: Settings, inputs: dict | None = None) -> Converted:
    """Decode `data`, run the pipeline on it and encode the result as `fmt` (see `choose_output`).

    `source` names the input in messages and matches extra inputs given as folders (`--mask DIR`);
    `inputs` gives extra image inputs by name (arrays or paths), as `Pipeline.run_array` takes them.
    """
    picture = imageio_.decode(data, source, settings.max_pixels)
    height, width = picture.array.shape[:2]
    picture.array = pipeline.run_array(picture.array, source=source, inputs=inputs)
    encoded, warnings = imageio_.encode(picture, fmt, quality=settings.quality, strip=settings.strip)
    out_h, out_w = picture.array.shape[:2]
    return Converted(encoded, fmt, (*picture.warnings, *warnings), (width, height), (out_w, out_h))


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


def write_output(output: str, data: bytes, overwrite: bool, stdout=None) -> None:
    """Write to stdout ("-") or atomically to a file, creating its folder; never over an existing
    file without `overwrite`."""
    if output == STDIO:
        imageio_.write_stdout(data, stdout)
        return
    parent = Path(output).parent
    if str(parent) and not parent.exists():
        try:
            parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise OutputError(exc.strerror or str(exc), str(parent)) from None
    imageio_.write_atomic(output, data, overwrite=overwrite)


def run_job(job: Job, pipeline, settings: Settings, reporter, convert=convert) -> str:
    """One file of the CLI: "skipped" when its output exists and --skip-existing says so (before
    anything is read or loaded), else read, convert, write and say so; "written". `convert` makes
    the pixels: this module's, or another with its signature (imgen --server's, over HTTP)."""
    if job.output != STDIO and os.path.exists(job.output):
        if settings.skip_existing:
            reporter.info(f"{job.output}: exists, skipped")
            return "skipped"
        if not settings.overwrite:
            raise ImgenError("exists (use --overwrite to replace it, --skip-existing to skip it)", job.output)
    done = convert(pipeline, read_input(job.source, max_pixels=settings.max_pixels), job.source, job.format, settings)
    for warning in done.warnings:
        reporter.say(f"{job.source}: {warning}")
    write_output(job.output, done.data, overwrite=settings.overwrite)
    if job.output != STDIO:
        (w, h), (new_w, new_h) = done.size_in, done.size_out
        reporter.say(f"wrote {job.output} ({w}x{h} -> {new_w}x{new_h})")
    return "written"


def run(jobs: list[Job], pipeline, settings: Settings, reporter, convert=convert) -> int:
    """The CLI's batch: every job in turn, past bad inputs, with progress and a summary; returns
    the exit status. A plugin or usage failure stops it (it would repeat for every input).

    `reporter` has say(message), info(message), error(exception), progress(total, desc, unit)
    and a `debug` flag, as report.Reporter.
    """
    summary = Summary()
    several = len(jobs) > 1
    bar = reporter.progress(total=len(jobs), desc="images", unit="img") if several else None
    try:
        for job in jobs:
            try:
                outcome = run_job(job, pipeline, settings, reporter, convert)
            except ImgenError as exc:
                reporter.error(exc if exc.source else type(exc)(exc.message, job.source))
                summary.failed += 1
                if isinstance(exc, PluginError) or (exc.exit_code == USAGE and not exc.source):
                    # the same failure would repeat for every input; one naming a file is that file's
                    return exc.exit_code
            except KeyboardInterrupt as exc:
                print("imgen: interrupted", file=sys.stderr)
                return getattr(exc, "exit_code", INTERRUPTED)
            except BrokenPipeError:
                silence_stdout()
                return BROKEN_PIPE
            except Exception as exc:  # a plugin bug: one line, and the traceback with --debug
                reporter.error(ImgenError(f"internal error: {type(exc).__name__}: {exc}", job.source))
                if reporter.debug:
                    traceback.print_exception(exc, file=sys.stderr)
                summary.failed += 1
            else:
                if outcome == "skipped":
                    summary.skipped += 1
                else:
                    summary.written += 1
            if bar is not None:
                bar.update(1)
    finally:
        if bar is not None:
            bar.close()
    if several:
        reporter.say(summary.line())
    return summary.exit_code


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


