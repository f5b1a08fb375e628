"""The shell scripts in examples/ run as a user would run them, and shell completion works as
docs/completion.md says."""

import os
import pty
import re
import shlex
import subprocess
import sys
import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"
SCRIPTS = sorted(p.name for p in EXAMPLES.glob("*.sh"))
SOURCE_SIZE = (512, 384)  # examples/images/*: width, height


def user_env() -> dict:
    """A shell whose `imgen` is this interpreter's, with no test plugins."""
    env = {k: v for k, v in os.environ.items() if k not in ("IMGEN_PLUGINS", "PYTHONPATH")}
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    return env


@dataclass
class Run:
    out: Path
    returncode: int
    stdout: str
    stderr: str


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, Run]:
    """Every script, run once into its own folder. They start together: they are independent,
    and on a busy machine most of their time is spent starting Python and torch."""
    base = tmp_path_factory.mktemp("examples")
    # batch_folder.sh gets a pseudo-terminal as stderr, as in an interactive shell, where the
    # progress bar shows.
    leader, follower = pty.openpty()
    started = {}
    for name in SCRIPTS:
        started[name] = subprocess.Popen(
            ["bash", str(EXAMPLES / name), str(base / name)], env=user_env(), text=True,
            stdout=subprocess.PIPE, stderr=follower if name == "batch_folder.sh" else subprocess.PIPE)
    os.close(follower)
    terminal: list[bytes] = []
    reader = threading.Thread(target=_drain, args=(leader, terminal))
    reader.start()
    results = {}
    try:
        for name, process in started.items():
            stdout, stderr = process.communicate(timeout=300)
            results[name] = Run(base / name, process.returncode, stdout, stderr or "")
    finally:
        for process in started.values():
            process.kill()
        reader.join(timeout=10)
        os.close(leader)
    results["batch_folder.sh"].stderr = b"".join(terminal).decode(errors="replace")
    return results


def _drain(fd: int, chunks: list[bytes]) -> None:
    """Read a pseudo-terminal until every writer has closed it (a full one would block them)."""
    while True:
        try:
            chunk = os.read(fd, 65536)
        except OSError:
            return
        if not chunk:
            return
        chunks.append(chunk)


def image(path: Path) -> np.ndarray:
    with Image.open(path) as im:
        return np.asarray(im.convert("RGB")).astype(np.float64)


def test_there_are_the_three_examples():
    assert SCRIPTS == ["batch_folder.sh", "inprocess_chain.sh", "pipe_chain.sh"]


@pytest.mark.parametrize("name", SCRIPTS)
def test_script_is_strict_and_parses(name):
    text = (EXAMPLES / name).read_text()
    assert text.startswith("#!/usr/bin/env bash\n") and "\nset -euo pipefail\n" in text
    assert os.access(EXAMPLES / name, os.X_OK)
    assert subprocess.run(["bash", "-n", str(EXAMPLES / name)]).returncode == 0


def test_pipe_and_in_process_chains_make_the_same_image(runs):
    results = {}
    for name in ("pipe_chain.sh", "inprocess_chain.sh"):
        run = runs[name]
        assert run.returncode == 0, run.stderr
        written = Path(run.stdout.strip())
        assert written.parent == run.out and written.is_file()
        with Image.open(written) as im:
            assert im.size == (2 * SOURCE_SIZE[0], 2 * SOURCE_SIZE[1]) and im.mode == "RGB"
        results[name] = image(written)
    # The pipe rounds the image to 8 bits between the steps; otherwise the two are the same work.
    difference = np.abs(results["pipe_chain.sh"] - results["inprocess_chain.sh"])
    assert difference.mean() < 0.5 and np.percentile(difference, 99.9) <= 4


def test_batch_folder_writes_every_image_with_progress_on_a_terminal(runs):
    run = runs["batch_folder.sh"]
    assert run.returncode == 0, run.stderr
    assert Path(run.stdout.strip()) == run.out / "upscaled"
    sources = sorted(p for p in (EXAMPLES / "images").iterdir() if p.suffix in (".png", ".jpg"))
    outputs = sorted((run.out / "upscaled").iterdir())
    assert [p.name for p in outputs] == [p.name for p in sources]
    for output in outputs:
        with Image.open(output) as im:
            assert im.size == (2 * SOURCE_SIZE[0], 2 * SOURCE_SIZE[1])
    assert re.search(r"images:\s+\d+%\|", run.stderr), run.stderr  # the bar
    assert f"{len(sources)} written" in run.stderr  # the summary


# -- shell completion (docs/completion.md) --------------------------------------------------------


def completions(*words: str) -> list[str]:
    """What bash offers for the last of `words` on TAB, through the script the docs install."""
    script = ('eval "$(_IMGEN_COMPLETE=bash_source imgen)"\n'
              f"COMP_WORDS=({' '.join(shlex.quote(w) for w in words)}); COMP_CWORD={len(words) - 1}\n"
              'COMPREPLY=(); _imgen_completion imgen; printf "%s\\n" "${COMPREPLY[@]}"\n')
    done = subprocess.run(["bash", "-c", script], capture_output=True, text=True, env=user_env(), timeout=60)
    assert done.returncode == 0, done.stderr
    return done.stdout.split()


def test_bash_completion_offers_plugin_commands_and_their_options():
    assert {"sr", "plugins", "models"} <= set(completions("imgen", ""))
    assert completions("imgen", "plu") == ["plugins"]
    assert completions("imgen", "sr", "--sc") == ["--scale"]
    assert completions("imgen", "sr", "--kind", "") == ["fidelity", "real"]


def test_bash_completion_follows_a_chain_to_its_last_step():
    assert "sr" in completions("imgen", "denoise", "in.png", "+", "")
    assert completions("imgen", "denoise", "+", "sr", "--sc") == ["--scale"]
    assert completions("imgen", "sr", "--scale", "2", "+", "denoise", "--stre") == ["--strength"]


@pytest.mark.parametrize("shell, marker", [("bash", "complete -o nosort -F _imgen_completion imgen"),
                                           ("zsh", "#compdef imgen"),
                                           ("fish", "complete --no-files --command imgen")])
def test_completion_scripts_are_generated_for_each_shell(shell, marker):
    done = subprocess.run(["imgen"], env={**user_env(), "_IMGEN_COMPLETE": f"{shell}_source"},
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and marker in done.stdout
    assert f"_IMGEN_COMPLETE={shell}_source imgen" in (ROOT / "docs" / "completion.md").read_text()
