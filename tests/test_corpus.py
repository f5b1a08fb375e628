"""The bad-input corpus: hostile and awkward inputs, outputs, options, model files and signals.

Each case runs the real CLI (in-process through click's runner, or as a real process where
pipes, file descriptors, signals or memory matter) and asserts the exit status, the message a
user reads (one line, no traceback, no "internal error") and what was or was not written. The
files come from tests/corpus.py, generated at test time.

`invert` (a test plugin) stands for any command where only the I/O matters, `slow` (identity,
0.2 s per tile) where the pixels must come back exactly.
"""

from __future__ import annotations

import io
import os
import signal
import stat
import subprocess
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import pytest
from PIL import Image

import corpus
from conftest import imgen_cmd, imgen_env
from imgen_cli import errors
from imgen_cli import io as imgio

PLUGINS = Path(__file__).resolve().parent.parent / "plugins"
LIMIT_MESSAGE = "above the 200 MP limit (raise it with --max-pixels)"


@dataclass
class Case:
    kind: str  # the class
    name: str
    prepare: Callable  # prepare(tmp_path) -> (args, stdin: bytes, a binary stream or None)
    code: int
    message: str | None = None  # must appear in stderr
    check: Callable | None = None  # check(tmp_path, stdout bytes, stderr)
    runner: Callable | None = None  # a real process instead of click's runner
    quiet_stderr: bool = False  # stderr must be empty

    @property
    def id(self):
        return f"{self.kind}-{self.name}"


def write(tmp_path, name, data):
    path = tmp_path / name
    path.write_bytes(data)
    return path


def image_file(tmp_path, name, array=None, fmt="PNG", **kwargs):
    return write(tmp_path, name, corpus.encoded(corpus.small() if array is None else array, fmt, **kwargs))


def decoded(path_or_bytes):
    data = path_or_bytes.read_bytes() if isinstance(path_or_bytes, Path) else path_or_bytes
    return imgio.decode(data, max_pixels=None)


def files(tmp_path, sub=""):
    return sorted(os.listdir(tmp_path / sub))


# -- real processes -----------------------------------------------------------------------------


def process(args, stdout=subprocess.PIPE, preexec=None, cwd=None, measure=False):
    """A real imgen process; returns (exit status, stdout, stderr, peak RSS in MB or None).

    With `measure` the process is started through imgen_cli.testing.measured, so its peak is its
    own and not this test process's (which wait4 would report for a direct child)."""
    from imgen_cli.testing import measured, measurement

    err_path = Path(cwd or ".") / ".stderr"
    report = Path(cwd or ".") / ".peak"
    command = imgen_cmd() + [str(a) for a in args]
    with open(err_path, "wb") as err:
        proc = subprocess.Popen(measured(command, report) if measure else command, stdout=stdout, stderr=err,
                                env=imgen_env(), cwd=cwd, preexec_fn=preexec)
        out = proc.communicate()[0] or b""
    text = err_path.read_text()
    err_path.unlink()
    peak = None
    if measure:
        peak = measurement(report)["peak_rss"] / 2**20
        report.unlink()
    return proc.returncode, out, text, peak


def in_process(imgen):
    def run(case, tmp_path):
        args, stdin = case.prepare(tmp_path)
        result = imgen(args, input=stdin)
        return result.exit_code, result.stdout_bytes, result.stderr

    return run


def as_process(**kwargs):
    def run(case, tmp_path):
        args, _ = case.prepare(tmp_path)
        code, out, err, _ = process(args, cwd=tmp_path, **kwargs)
        return code, out, err

    return run


# -- cases --------------------------------------------------------------------------------------

CASES: list[Case] = []


def case(*args, **kwargs):
    CASES.append(Case(*args, **kwargs))


# Bombs and limits: the size comes from the header, before any pixel is decoded, in every format.
for fmt, (w, h, mp) in {"png": (100000, 100000, "10000 MP"), "jpeg": (60000, 60000, "3600 MP"),
                        "webp": (16384, 16384, "268 MP"), "bmp": (20000, 20000, "400 MP"),
                        "gif": (65535, 65535, "4295 MP"), "tiff": (16384, 16384, "268 MP")}.items():
    case("bombs", f"forged-{fmt}-header",
         lambda t, fmt=fmt, w=w, h=h: (["invert", write(t, f"big.{fmt}", corpus.forged(fmt, w, h)), "-o", "o.png"], None),
         errors.FAILED, f"{w}x{h}, {mp}, {LIMIT_MESSAGE}", check=lambda t, o, e, fmt=fmt: files(t) == [f"big.{fmt}"])


def _real_bomb(case, tmp_path):
    """A valid 260 KB PNG that decodes to 268 MB: refused with far less than that in memory (a
    small image's run peaks near 230 MB with torch loaded)."""
    bomb = write(tmp_path, "bomb.png", corpus.png_bomb(16384, 16384))
    code, out, err, peak = process(["invert", bomb, "-o", tmp_path / "o.png"], cwd=tmp_path, measure=True)
    assert peak < 400, f"refusing the bomb took {peak:.0f} MB"
    return code, out, err


case("bombs", "real-png-bomb-268MP", None, errors.FAILED, f"16384x16384, 268 MP, {LIMIT_MESSAGE}",
     runner=_real_bomb)
case("bombs", "pixel-limit-option",
     lambda t: (["invert", image_file(t, "in.png"), "--max-pixels", "500"], None),
     errors.FAILED, "32x24, 0.00077 MP, above the 0.0005 MP limit")
case("bombs", "icc-bomb-16-bit-png",
     lambda t: (["slow", write(t, "in.png", corpus.png16(corpus.small(8, 8, 3, "uint16"), corpus.icc_bomb(64 << 20))),
                 "-o", "o.png"], None),
     errors.OK, "ICC profile above 4 MB once inflated: dropped",
     check=lambda t, o, e: decoded(t / "o.png").icc is None and decoded(t / "o.png").array.dtype == np.uint16)
case("bombs", "icc-and-text-bomb-8-bit-png",
     lambda t: (["slow", write(t, "in.png", corpus.with_chunks(corpus.encoded(corpus.small()), corpus.text_bomb(64 << 20),
                                                               corpus.icc_bomb(64 << 20))), "-o", "o.png"], None),
     errors.OK, "ICC profile above 4 MB once inflated: dropped",
     check=lambda t, o, e: np.array_equal(decoded(t / "o.png").array, corpus.small()))
case("bombs", "dev-zero-input", lambda t: (["invert", "/dev/zero", "-o", "o.png"], None),
     errors.FAILED, "/dev/zero: not a supported image")
case("bombs", "dev-zero-stdin", lambda t: (["invert", "-o", "o.png", "-"], open("/dev/zero", "rb")), errors.FAILED,
     "-: not a supported image")


class EndlessPNG(io.RawIOBase):
    """A stdin that starts like a PNG and never ends."""

    def __init__(self):
        self.head = corpus.encoded(corpus.small())[:40]

    def readable(self):
        return True

    def readinto(self, buffer):
        n = len(buffer)
        chunk, self.head = self.head[:n], self.head[n:]
        buffer[:len(chunk)] = chunk
        buffer[len(chunk):n] = bytes(n - len(chunk))
        return n


case("bombs", "endless-stdin", lambda t: (["invert", "--max-pixels", "1000", "-o", "o.png", "-"],
                                          io.BufferedReader(EndlessPNG())),
     errors.FAILED, "GB of input, above the 0.017 GB that --max-pixels allows")


# Silent wrong output: orientation, colour models, layouts, depth, frames.
def _orientation_png16(t):
    array = corpus.small(10, 14, 3, "uint16")
    path = write(t, "in.png", corpus.png16(array, corpus.chunk(b"eXIf", corpus.exif_orientation(6))))
    return ["slow", path, "-o", "o.png"], None


case("wrong-output", "exif-orientation-16-bit-png", _orientation_png16, errors.OK,
     check=lambda t, o, e: np.array_equal(decoded(t / "o.png").array, np.rot90(corpus.small(10, 14, 3, "uint16"), -1)))
case("wrong-output", "orientation-tiff",
     lambda t: (["slow", write(t, "in.tif", corpus.tiff(corpus.small(10, 14), extratags=[(274, 3, 1, 8, False)])),
                 "-o", "o.png"], None),
     errors.OK, check=lambda t, o, e: np.array_equal(decoded(t / "o.png").array, np.rot90(corpus.small(10, 14), 1)))
case("wrong-output", "cmyk-jpeg-profile-not-copied",
     lambda t: (["slow", write(t, "in.jpg", corpus.cmyk_jpeg()), "-o", "o.jpg"], None), errors.OK,
     check=lambda t, o, e: (Image.open(t / "o.jpg").mode == "RGB"
                            and Image.open(t / "o.jpg").info.get("icc_profile") is None))
case("wrong-output", "cmyk-tiff",
     lambda t: (["slow", write(t, "in.tif", corpus.cmyk_tiff()[0]), "-o", "o.png"], None), errors.OK,
     check=lambda t, o, e: np.array_equal(decoded(t / "o.png").array, corpus.cmyk_tiff()[1]))
case("wrong-output", "palette-tiff",
     lambda t: (["slow", write(t, "in.tif", corpus.palette_tiff()[0]), "-o", "o.png"], None), errors.OK,
     check=lambda t, o, e: np.array_equal(decoded(t / "o.png").array, corpus.palette_tiff()[1]))
case("wrong-output", "planar-tiff",
     lambda t: (["slow", write(t, "in.tif", corpus.tiff(np.moveaxis(corpus.small(), 2, 0), planarconfig="separate",
                                                      photometric="rgb")), "-o", "o.png"], None), errors.OK,
     check=lambda t, o, e: np.array_equal(decoded(t / "o.png").array, corpus.small()))
case("wrong-output", "float-hdr-tiff-clipped",
     lambda t: (["slow", write(t, "in.tif", corpus.tiff(corpus.small().astype(np.float32) / 100, photometric="rgb")), "-o", "o.png"], None),
     errors.OK, "32-bit float samples read as 16-bit integers, values outside 0..1 clipped",
     check=lambda t, o, e: decoded(t / "o.png").array.dtype == np.uint16)
for fmt in ("webp", "jpg"):
    case("wrong-output", f"16-bit-to-{fmt}-warns",
         lambda t, fmt=fmt: (["slow", write(t, "in.png", corpus.png16(corpus.small(8, 8, 3, "uint16"))), "-o", f"o.{fmt}"],
                             None),
         errors.OK, "holds 8 bits per channel: 16-bit image reduced to 8 bits")
for fmt in ("gif", "png", "webp"):
    case("wrong-output", f"animated-{fmt}-first-frame",
         lambda t, fmt=fmt: (["slow", write(t, f"in.{fmt}", corpus.animated(fmt)[0]), "-o", "o.png"], None), errors.OK,
         "has 3 frames: only the first is used",
         check=lambda t, o, e, fmt=fmt: np.array_equal(decoded(t / "o.png").array[:, :, :3], corpus.animated(fmt)[1]))
case("wrong-output", "multi-page-tiff-first-page",
     lambda t: (["slow", write(t, "in.tif", corpus.tiff(np.stack([corpus.small(seed=k) for k in range(3)]))),
                 "-o", "o.png"], None),
     errors.OK, "has 3 pages: only the first is used",
     check=lambda t, o, e: np.array_equal(decoded(t / "o.png").array, corpus.small()))


# Output devices, pipes and writes.
case("outputs", "closed-stdout", lambda t: (["invert", image_file(t, "in.png"), "-o", "-"], None), errors.FAILED,
     "imgen: error: -: stdout is closed", runner=as_process(stdout=None, preexec=lambda: os.close(1)))
case("outputs", "full-stdout", lambda t: (["invert", image_file(t, "in.png"), "-o", "-"], None), errors.FAILED,
     "imgen: error: -: No space left on device", runner=lambda c, t: _to_dev_full(c, t))


def _to_dev_full(case, tmp_path):
    with open("/dev/full", "wb") as full:
        args, _ = case.prepare(tmp_path)
        code, out, err, _ = process(args, stdout=full, cwd=tmp_path)
    return code, out, err


def _reader_gone(case, tmp_path):
    args, _ = case.prepare(tmp_path)
    proc = subprocess.Popen(imgen_cmd() + [str(a) for a in args], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            env=imgen_env(), cwd=tmp_path)
    proc.stdout.close()  # the reader is gone before the image is written
    err = proc.stderr.read().decode()
    return proc.wait(timeout=120), b"", err


case("outputs", "reader-closes-pipe", lambda t: (["invert", image_file(t, "in.png", corpus.small(256, 256)), "-o", "-"],
                                                 None),
     errors.BROKEN_PIPE, quiet_stderr=True, runner=_reader_gone)


def _short_writes(imgen):
    def run(case, tmp_path):
        real = os.write
        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(os, "write", lambda fd, data: real(fd, bytes(data[:1000])))
            result = imgen(["slow", image_file(tmp_path, "in.png", corpus.small(64, 64)), "-o", "o.png"])
        return result.exit_code, result.stdout_bytes, result.stderr

    return run


case("outputs", "short-writes-completed", None, errors.OK, runner="short",
     check=lambda t, o, e: np.array_equal(decoded(t / "o.png").array, corpus.small(64, 64)))
case("outputs", "dev-null-overwrite", lambda t: (["invert", image_file(t, "in.png"), "-o", "/dev/null", "--overwrite", "--format", "png"], None),
     errors.OK, check=lambda t, o, e: stat.S_ISCHR(os.stat("/dev/null").st_mode))
case("outputs", "dev-full-overwrite", lambda t: (["invert", image_file(t, "in.png"), "-o", "/dev/full", "--overwrite", "--format", "png"], None),
     errors.FAILED, "imgen: error: /dev/full: No space left on device",
     check=lambda t, o, e: stat.S_ISCHR(os.stat("/dev/full").st_mode))


def _fifo_output(t):
    fifo = t / "out.png"
    os.mkfifo(fifo)
    received = t / "received.png"

    def drain():
        with open(fifo, "rb") as f:
            data = f.read()
        # Whole or absent: the check polls for the file and must not read it half-written.
        partial = t / "received.part"
        partial.write_bytes(data)
        os.replace(partial, received)

    threading.Thread(target=drain, daemon=True).start()
    return ["slow", image_file(t, "in.png"), "-o", fifo, "--overwrite"], None


def _fifo_check(t, o, e):
    for _ in range(100):
        if (t / "received.png").exists():
            break
        time.sleep(0.05)
    return stat.S_ISFIFO(os.stat(t / "out.png").st_mode) and np.array_equal(decoded(t / "received.png").array,
                                                                            corpus.small())


case("outputs", "fifo-output-written-into", _fifo_output, errors.OK, check=_fifo_check)
case("outputs", "242-byte-output-name",
     lambda t: (["invert", image_file(t, "in.png"), "-o", "n" * 238 + ".png"], None), errors.OK,
     check=lambda t, o, e: files(t) == ["in.png", "n" * 238 + ".png"])


def _wait_until_idle(pid: int, timeout: float = 120) -> None:
    """Until the process is in the slow tiles: torch loaded and no CPU time used for half a second
    (each tile sleeps 0.2 s). A signal during start-up could land inside a library's import,
    which some libraries catch, and would test them rather than imgen."""
    maps, stat_file = Path(f"/proc/{pid}/maps"), Path(f"/proc/{pid}/stat")

    def cpu():
        fields = stat_file.read_text().rsplit(")", 1)[1].split()
        return int(fields[11]) + int(fields[12])  # utime + stime

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if "libtorch" in maps.read_text():
            before = cpu()
            time.sleep(0.5)
            if cpu() == before:
                return
        else:
            time.sleep(0.2)
    raise AssertionError("imgen never reached its slow tiles")


def _signal(signum, name="x.bmp"):
    def run(case, tmp_path):
        out = tmp_path / "out"
        out.mkdir()
        big = image_file(tmp_path, "in.png", corpus.small(256, 256))
        proc = subprocess.Popen(imgen_cmd() + ["slow", str(big), "--tile", "32", "-o", str(out / name)],
                                stderr=subprocess.PIPE, env=imgen_env())
        _wait_until_idle(proc.pid)
        proc.send_signal(signum)
        err = proc.communicate(timeout=120)[1].decode()
        return proc.returncode, b"", err

    return run


case("signals", "SIGTERM", None, 143, "imgen: interrupted", runner=_signal(signal.SIGTERM),
     check=lambda t, o, e: files(t, "out") == [])
# A PNG file is written while the tiles run: its temporary file is there when the signal comes.
for signum, code in ((signal.SIGTERM, 143), (signal.SIGINT, 130)):
    case("signals", f"{signal.Signals(signum).name}-while-a-png-is-streamed", None, code, "imgen: interrupted",
         runner=_signal(signum, "x.png"), check=lambda t, o, e: files(t, "out") == [])


# Tiny images: every command gives a same-size (or scaled) output from 1x1 up.
TINY = [(1, 1), (1, 7), (7, 1), (2, 2), (3, 3)]


def _tiny(command, *options, scale=1, masks=False, alpha=False):
    def prepare(t):
        (t / "in").mkdir()
        for h, w in TINY:
            image_file(t / "in", f"{h}x{w}.png", corpus.small(h, w, 4 if alpha else 3))
        extra = []
        if masks:
            (t / "masks").mkdir()
            for h, w in TINY:
                mask = np.full((h, w), 255, np.uint8)
                mask.flat[0] = 0  # one known pixel: a mask over everything is refused
                image_file(t / "masks", f"{h}x{w}.png", mask)
            extra = ["--mask", t / "masks"]
        return [command, *options, *extra, t / "in", "-o", t / "out"], None

    def check(t, o, e):
        for h, w in TINY:
            array = decoded(t / "out" / f"{h}x{w}.png").array
            assert array.shape == (h * scale, w * scale, 4 if alpha else 3), (h, w, array.shape)
        return True

    return prepare, check


for command, options, scale, kwargs in (("denoise", (), 1, {}), ("lowlight", (), 1, {}), ("sr", (), 4, {}),
                                        ("inpaint", (), 1, {"masks": True}),
                                        ("restyle", ("--style", "autumn"), 1, {"alpha": True})):
    prepare, check = _tiny(command, *options, scale=scale, **kwargs)
    case("tiny", f"{command}-1x1-1x7-7x1-2x2-3x3", prepare, errors.OK, "5 written", check=check)

case("wrong-output", "inpaint-all-white-mask",
     lambda t: (["inpaint", image_file(t, "in.png"), "--mask", image_file(t, "mask.png", np.full((24, 32), 255, np.uint8)),
                 "-o", "o.png"], None),
     errors.FAILED, "in.png: the mask covers the whole image: there is nothing left to fill it from",
     check=lambda t, o, e: "o.png" not in files(t))


# Data loss: no input of a run (image, mask, style, model) is ever one of its outputs, and no two
# results share a name; found before any compute, whatever the flags (exit 2).
def _unchanged(*names):
    return lambda t, o, e: all((t / n).read_bytes() == (t / f".{Path(n).name}.orig").read_bytes() for n in names)


def _keep(t, *paths):
    for path in paths:
        (t / f".{path.name}").with_name(f".{path.name}.orig").write_bytes(path.read_bytes())
    return paths


def _mask_is_output(t):
    image, mask = image_file(t, "in.png"), image_file(t, "mask.png", np.zeros((24, 32), np.uint8))
    _keep(t, mask)
    return ["inpaint", image, "--mask", mask, "-o", mask, "--overwrite"], None


def _style_is_output(t):
    image, style = image_file(t, "in.png"), image_file(t, "style.png", corpus.small(seed=3))
    _keep(t, style)
    return ["restyle", image, "--style", style, "-o", style, "--overwrite"], None


def _model_is_output(t):
    model = write(t, "m.safetensors", (PLUGINS / "imgen_denoise" / "weights" / "ffdnet.safetensors").read_bytes())
    _keep(t, model)
    return ["denoise", image_file(t, "in.png"), "--model", model, "-o", model, "--format", "png", "--overwrite"], None


def _derived_is_input(t):
    (t / "in").mkdir()
    paths = [image_file(t / "in", "a.png"), image_file(t / "in", "a-invert.png", corpus.small(seed=2))]
    for path in paths:
        (t / f".{path.name}.orig").write_bytes(path.read_bytes())
    # Named explicitly: from a folder, a file named like this command's output is left out.
    return ["invert", *paths, "--overwrite"], None


def _mask_folder_is_output(t):
    for folder in ("photos", "masks"):
        (t / folder).mkdir()
    image_file(t / "photos", "a.png")
    mask = image_file(t / "masks", "a.png", np.zeros((24, 32), np.uint8))
    (t / ".a.png.orig").write_bytes(mask.read_bytes())
    return ["inpaint", "--mask", t / "masks", t / "photos", "-o", t / "masks", "--overwrite"], None


case("data-loss", "mask-is-output", _mask_is_output, errors.USAGE, "would overwrite the input",
     check=_unchanged("mask.png"))
case("data-loss", "style-is-output", _style_is_output, errors.USAGE, "would overwrite the input",
     check=_unchanged("style.png"))
case("data-loss", "model-is-output", _model_is_output, errors.USAGE, "would overwrite the input",
     check=_unchanged("m.safetensors"))
case("data-loss", "derived-output-is-an-input", _derived_is_input, errors.USAGE,
     "its output", check=_unchanged("in/a.png", "in/a-invert.png"))
case("data-loss", "mask-folder-is-output-folder", _mask_folder_is_output, errors.USAGE, "would overwrite the input",
     check=_unchanged("masks/a.png"))


def _same_stem(*names, options=()):
    def prepare(t):
        paths = []
        for name in names:
            (t / name).parent.mkdir(exist_ok=True)
            paths.append(image_file(t, name, fmt="JPEG" if name.endswith(".jpg") else "PNG"))
        return ["invert", *paths, "-o", t / "out", *options], None

    return prepare


case("data-loss", "same-name-into-one-folder", _same_stem("a.png", "sub/a.png"), errors.USAGE,
     "would both be written to", check=lambda t, o, e: "out" not in files(t))
case("data-loss", "same-stem-forced-format", _same_stem("x.png", "x.jpg", options=("--format", "png")),
     errors.USAGE, "would both be written to", check=lambda t, o, e: "out" not in files(t))


# Batch semantics: a per-file problem fails that file; the rest are written.
def _alpha_batch(t):
    (t / "in").mkdir()
    cutout = corpus.small(24, 32, 4)
    cutout[8:16, 8:16, 3] = 0
    image_file(t / "in", "a.png", cutout)
    image_file(t / "in", "b.png", corpus.small(24, 32, 3))
    return ["inpaint", "--mask-from-alpha", t / "in", "-o", t / "out"], None


case("batch", "mask-from-alpha-without-alpha", _alpha_batch, errors.FAILED,
     "b.png: --mask-from-alpha needs an image with an alpha channel",
     check=lambda t, o, e: files(t, "out") == ["a.png"] and "1 written, 1 failed" in e)


# Model files: refused pickles exit 2, anything unreadable or of the wrong architecture exit 3.
def _model(name, data, command="denoise"):
    return lambda t: ([command, image_file(t, "in.png"), "--model", write(t, name, data() if callable(data) else data),
                       "-o", "o.png"], None)


def _ffdnet():
    return (PLUGINS / "imgen_denoise" / "weights" / "ffdnet.safetensors").read_bytes()


case("models", "pickle-refused", _model("evil.pth", corpus.evil_pickle), errors.USAGE,
     "evil.pth: refused: this file needs unrestricted unpickling", check=lambda t, o, e: "pwned.txt" not in files(t))
for name, data, why in (
        ("truncated.safetensors", lambda: _ffdnet()[:5000], "not a readable safetensors file"),
        ("empty.safetensors", b"", "empty file, not a weights file"),
        ("garbage.safetensors", corpus.garbage, "not a readable safetensors file"),
        ("huge-header.safetensors", corpus.huge_header_safetensors, "not a readable safetensors file"),
        ("empty.pth", b"", "empty file, not a weights file"),
        ("garbage.pth", corpus.garbage, "not a readable PyTorch weights file")):
    case("models", name, _model(name, data), errors.PLUGIN, f"{name}: {why}")
case("models", "denoise-weights-given-to-sr", _model("ffdnet.safetensors", _ffdnet, "sr"), errors.PLUGIN,
     "ffdnet.safetensors: cannot build a network from it: not an imgen sr network: its tensors do not match (")


# NaN and infinite options are usage errors.
for command, option, value in (("denoise", "--sigma", "nan"), ("denoise", "--sigma", "inf"),
                               ("denoise", "--strength", "nan"), ("sr", "--outscale", "nan"),
                               ("sr", "--outscale", "inf"), ("lowlight", "--exposure", "nan"),
                               ("lowlight", "--strength", "-inf"), ("restyle", "--strength", "nan"),
                               ("restyle", "--detail", "nan")):
    case("options", f"{command}{option}-{value}",
         lambda t, c=command, o=option, v=value: ([c, o, v, image_file(t, "in.png"), "-o", "o.png"], None),
         errors.USAGE, f"imgen: error: invalid value for '{option}'", check=lambda t, o, e: files(t) == ["in.png"])


def _with_env(imgen, **env):
    def run(case, tmp_path):
        args, stdin = case.prepare(tmp_path)
        with pytest.MonkeyPatch.context() as patch:
            for key, value in env.items():
                patch.setenv(key, value)
            result = imgen(args, input=stdin)
        return result.exit_code, result.stdout_bytes, result.stderr

    return run


case("options", "IMGEN_MEMORY-not-a-size", lambda t: (["smooth", image_file(t, "in.png"), "-o", "o.png"], None),
     errors.USAGE, "IMGEN_MEMORY='LOTS': give bytes with an optional K, M, G or T", runner="memory")
case("options", "IMGEN_MEMORY-nan", lambda t: (["smooth", image_file(t, "in.png"), "-o", "o.png"], None),
     errors.USAGE, "IMGEN_MEMORY='NAN': at least 64M", runner="memory-nan")
# Refused whether or not a budget is used (a fixed --tile here; the GPU's memory on a GPU).
case("options", "IMGEN_MEMORY-with-fixed-tile",
     lambda t: (["smooth", image_file(t, "in.png"), "--tile", "64", "-o", "o.png"], None),
     errors.USAGE, "IMGEN_MEMORY='LOTS': give bytes with an optional K, M, G or T", runner="memory")


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_corpus(case, imgen, test_plugins, tmp_path):
    runner = {None: in_process(imgen), "short": _short_writes(imgen), "memory": _with_env(imgen, IMGEN_MEMORY="lots"),
              "memory-nan": _with_env(imgen, IMGEN_MEMORY="nan")}.get(case.runner, case.runner)
    code, stdout, stderr = runner(case, tmp_path)
    assert code == case.code, stderr
    assert "Traceback" not in stderr and "internal error" not in stderr and "failed: " not in stderr, stderr
    lines = [line for line in stderr.splitlines() if line.strip()]
    if case.quiet_stderr:
        assert lines == []
    errors_seen = [line for line in lines if line.startswith("imgen: error:")]
    assert len(errors_seen) <= 1, stderr
    if case.message:
        assert case.message in stderr, stderr
    if case.check:
        assert case.check(tmp_path, stdout, stderr), stderr
