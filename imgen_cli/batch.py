"""From command-line inputs to written outputs: planning names, reading, running, writing.

The rules a user can rely on:
- an input is never overwritten, an existing output only with --overwrite;
- outputs are written atomically, so an interrupted run leaves no partial file;
- a batch goes on past a bad input and ends with a summary and a non-zero status;
- nothing but image bytes goes to stdout, and never to a terminal.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass, field
from pathlib import Path

from . import io as imageio_
from .contract import ImageInput
from .errors import FAILED, OK, InputError, OutputError, UsageError

STDIO = "-"


@dataclass
class Job:
    source: str  # a path, or "-" for stdin
    output: str | None = None  # a path, or "-" for stdout; None until planned
    format: str | None = None  # forced output format
    inputs: dict = field(default_factory=dict)  # step index -> {name: path}


@dataclass
class Settings:
    output: str | None = None
    format: str | None = None
    quality: int | None = None
    strip: bool = False
    overwrite: bool = False
    skip_existing: bool = False
    max_pixels: int | None = None


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


def plan(sources: list[str], settings: Settings, suffix: str, stdout_is_tty: bool) -> list[Job]:
    """Decide each output's name and format, refusing what would clobber inputs or a terminal."""
    output = settings.output
    forced = imageio_.check_format(settings.format) if settings.format else None
    several = len(sources) > 1
    jobs: list[Job] = []
    folder = None
    if output and output != STDIO and (several or output.endswith(os.sep) or os.path.isdir(output)):
        folder = Path(output)
        if folder.exists() and not folder.is_dir():
            raise UsageError(f"-o {output}: not a folder, but there are {len(sources)} inputs")
    elif several and output == STDIO:
        raise UsageError("-o - (stdout) takes a single input")
    elif several and output:
        raise UsageError(f"-o {output}: give a folder for {len(sources)} inputs")
    for source in sources:
        job = Job(source, format=forced)
        if output == STDIO or (output is None and source == STDIO):
            job.output = STDIO
        elif folder is not None:
            name = Path(source).name if source != STDIO else "stdin.png"
            job.output = str(folder / name)
        elif output:
            job.output = output
            if not forced and imageio_.format_for_path(output) is None:
                raise UsageError(f"-o {output}: unknown image extension (use --format)")
        else:
            stem, ext = os.path.splitext(source)
            job.output = f"{stem}-{suffix}{ext}"
        if forced and (folder is not None or not output):
            fix_extension(job, forced)
        if job.output == STDIO and stdout_is_tty:
            raise UsageError("refusing to write image data to a terminal: redirect stdout or use -o FILE")
        if job.output != STDIO and source != STDIO and _same_file(source, job.output):
            raise UsageError(f"{source}: output would overwrite the input; choose another -o")
        jobs.append(job)
    return jobs


def _same_file(a: str, b: str) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:
        return os.path.abspath(a) == os.path.abspath(b)


def output_format(job: Job, picture: imageio_.Picture) -> str:
    """Forced format, else the output name's, else the input's own (PNG on stdout)."""
    if job.format:
        return job.format
    if job.output == STDIO:
        return "png"
    by_name = imageio_.format_for_path(job.output)
    if by_name:
        return by_name
    return picture.format if picture.format in imageio_.FORMATS else "png"


def fix_extension(job: Job, fmt: str) -> None:
    """In folder and beside-input mode, make the extension match the format actually written."""
    if job.output in (None, STDIO) or imageio_.format_for_path(job.output) == fmt:
        return
    stem, _ = os.path.splitext(job.output)
    job.output = stem + imageio_.FORMATS[fmt]


def read_source(source: str, max_pixels: int | None, stdin=None) -> imageio_.Picture:
    if source == STDIO:
        stream = stdin if stdin is not None else sys.stdin.buffer
        data = stream.read()
        if not data:
            raise InputError("stdin is empty", "-")
        return imageio_.decode(data, "-", max_pixels)
    return imageio_.decode(imageio_.read_bytes(source), source, max_pixels)


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
    return fit_channels(imageio_.decode(imageio_.read_bytes(path), path, max_pixels).array, spec)


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


def write_output(job: Job, data: bytes, overwrite: bool, stdout=None) -> None:
    if job.output == STDIO:
        stream = stdout if stdout is not None else sys.stdout.buffer
        stream.write(data)
        stream.flush()
        return
    parent = Path(job.output).parent
    if str(parent) and not parent.exists():
        try:
            parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise OutputError(exc.strerror or str(exc), str(parent)) from None
    imageio_.write_atomic(job.output, data, overwrite=overwrite)


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


