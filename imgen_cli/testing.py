"""Pytest fixtures for testing imgen plugins, used by imgen's own tests too.

In a plugin's `conftest.py`:

    pytest_plugins = ["imgen_cli.testing"]

    def test_my_command(imgen, tmp_image):
        result = imgen(["mycommand", str(tmp_image()), "-o", "out.png"])
        assert result.exit_code == 0, result.stderr
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest


@pytest.fixture
def imgen_registry():
    """A fresh registry (installed entry points only) for the duration of one test.

    Register a test plugin with `imgen_registry.add(module_or_object, "name")`.
    """
    from .plugins import Registry, get_plugin_manager, set_registry

    registry = Registry(get_plugin_manager())
    registry.load_entry_points()
    set_registry(registry)
    yield registry
    set_registry(None)


@pytest.fixture
def imgen(imgen_registry, tmp_path, monkeypatch):
    """Run the imgen CLI in-process, in `tmp_path`: `imgen(args, input=bytes) -> click Result`.

    The result has `.exit_code`, `.stdout_bytes` (image bytes) and `.stderr` (messages).
    """
    from click.testing import CliRunner

    from .cli import cli

    monkeypatch.chdir(tmp_path)

    def run(args, input=None, **kwargs):
        return CliRunner().invoke(cli, [str(a) for a in args], input=input, catch_exceptions=False, **kwargs)

    return run


# Peak RSS of a command alone. wait4 reports a child's peak as at least its parent's: Linux counts
# the parent's memory, which a vfork()ed or fork()ed child shares until exec, and keeps the
# largest figure across exec. So a test or benchmark that has itself loaded torch would see its
# own peak in every command it measures. This small launcher forks the command from a process
# that holds next to nothing and writes what wait4 says of that command alone.
_MEASURE = """
import json, os, signal, sys
pid = os.fork()
if pid == 0:
    for name in ("SIGPIPE", "SIGXFSZ"):  # Python ignores these; the command gets the defaults
        signal.signal(getattr(signal, name), signal.SIG_DFL)
    os.execvp(sys.argv[2], sys.argv[2:])
_, status, usage = os.wait4(pid, 0)
with open(sys.argv[1], "w") as report:
    json.dump({"peak_rss": usage.ru_maxrss * 1024, "cpu_s": usage.ru_utime + usage.ru_stime}, report)
code = os.waitstatus_to_exitcode(status)
sys.exit(128 - code if code < 0 else code)
"""


def measured(command: list, report: str | Path) -> list[str]:
    """`command` wrapped so that, once it has ended, `report` holds its own peak resident memory
    (bytes) and CPU seconds as JSON (read it with `measurement`). The exit status is the
    command's (128 + N for a signal N); stdin, stdout and stderr are passed through."""
    return [sys.executable, "-c", _MEASURE, str(report), *map(str, command)]


def measurement(report: str | Path) -> dict:
    """{"peak_rss": bytes, "cpu_s": seconds} of a command run through `measured`."""
    return json.loads(Path(report).read_text())


def natural_image(height: int = 96, width: int = 128, channels: int = 3, dtype: str = "uint8", seed: int = 0):
    """A deterministic image with smooth gradients, edges and texture (not flat noise)."""
    import numpy as np

    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    planes = []
    for c in range(channels):
        phase = rng.uniform(0, 6.28)
        plane = 0.5 + 0.3 * np.sin(xx / (7 + 3 * c) + phase) * np.cos(yy / (11 + c))
        plane += 0.15 * ((xx + 2 * yy + 9 * c) % 40 < 20)
        plane += rng.normal(0, 0.03, size=plane.shape)
        planes.append(plane)
    image = np.clip(np.stack(planes, axis=2), 0, 1)
    top = 65535 if dtype == "uint16" else 255
    return (image * top + 0.5).astype(dtype)


@pytest.fixture
def tmp_image(tmp_path):
    """Write a natural-looking test image: `tmp_image(name="in.png", **natural_image kwargs) -> Path`."""
    from .io import Picture, encode, format_for_path

    def make(name: str = "in.png", **kwargs) -> Path:
        array = natural_image(**kwargs)
        path = tmp_path / name
        data, _ = encode(Picture(array, "png"), format_for_path(name) or "png")
        path.write_bytes(data)
        return path

    return make
