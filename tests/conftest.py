import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

pytest_plugins = ["imgen_cli.testing"]

HERE = Path(__file__).resolve().parent
TEST_PLUGINS = HERE / "plugins"
DATA = HERE / "data"
sys.path.insert(0, str(TEST_PLUGINS))


def read(path):
    """An image file as the numpy array Pillow decodes."""
    import numpy as np
    from PIL import Image

    with Image.open(path) as im:
        return np.asarray(im)


def write(path: Path, array) -> Path:
    from PIL import Image

    Image.fromarray(array).save(path)
    return path


def assert_light_front_module(name: str) -> None:
    """Importing a plugin's front module must import neither torch nor numpy (`imgen --help`)."""
    code = f"import sys, {name}; assert 'torch' not in sys.modules and 'numpy' not in sys.modules"
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(HERE.parent / "plugins"), env.get("PYTHONPATH")]))
    subprocess.run([sys.executable, "-c", code], check=True, env=env)


@pytest.fixture(autouse=True)
def _seed():
    import numpy as np
    import torch

    torch.manual_seed(0)
    np.random.seed(0)


@pytest.fixture
def test_plugins(imgen_registry):
    """The registry with the test-suite plugins (tiny upscaler, masked fill, invert) added."""
    import imgen_test_tiny

    imgen_registry.add(imgen_test_tiny, "imgen_test_tiny")
    yield imgen_registry


def count_loads(registry, name: str, monkeypatch) -> list:
    """Swap registered model `name` for a copy whose load is counted; returns the list of calls."""
    import dataclasses

    model = registry.models[name]
    calls = []
    monkeypatch.setitem(registry.models, name,
                        dataclasses.replace(model, load=lambda: calls.append(1) or model.load()))
    return calls


def imgen_env(plugins: str = "imgen_test_tiny", extra: dict | None = None) -> dict:
    env = dict(os.environ, **(extra or {}))
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(TEST_PLUGINS), env.get("PYTHONPATH")]))
    env["IMGEN_PLUGINS"] = plugins
    env.pop("NO_COLOR", None)
    return env


def imgen_cmd() -> list[str]:
    """The installed console script of this interpreter's environment."""
    script = Path(sys.executable).with_name("imgen")
    return [str(script)] if script.exists() else [sys.executable, "-m", "imgen_cli"]


def run_imgen_on_terminal(args, extra_env=None):
    """Run imgen with stderr on a pseudo-terminal (stdout piped): (process, bytes shown there)."""
    import pty

    leader, follower = pty.openpty()
    try:
        proc = subprocess.run(imgen_cmd() + [str(a) for a in args], stderr=follower, stdout=subprocess.PIPE,
                              env=imgen_env(extra=extra_env), timeout=120)
        os.set_blocking(leader, False)
        shown = b""
        try:
            while chunk := os.read(leader, 65536):
                shown += chunk
        except (BlockingIOError, OSError):
            pass
    finally:
        os.close(follower)
        os.close(leader)
    return proc, shown


def run_imgen(args, input=None, plugins="imgen_test_tiny", cwd=None, extra_env=None, **kwargs):
    return subprocess.run(imgen_cmd() + [str(a) for a in args], input=input, capture_output=True,
                          env=imgen_env(plugins, extra_env), cwd=cwd, timeout=300, **kwargs)


@pytest.fixture(autouse=True)
def _sigint_not_ignored():
    """A shell without job control (`.ci/run &` in a script) starts background commands with
    SIGINT ignored, and every process they start inherits that; imgen, rightly, keeps ignoring
    it, so the Ctrl-C tests saw it run to the end (exit 0). Before each test the suite's SIGINT
    is made the default again, which the imgen it starts then inherits."""
    if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
