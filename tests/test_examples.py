"""The shell scripts in examples/ run as a user would run them, and shell completion works as
docs/completion.md says."""

import os
import pty
import re
import shlex
import subprocess
import sys
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


def run_script(name: str, out: Path, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", str(EXAMPLES / name), str(out)], env=user_env(), timeout=300, **kwargs)


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


def test_pipe_and_in_process_chains_make_the_same_image(tmp_path):
    results = {}
    for name in ("pipe_chain.sh", "inprocess_chain.sh"):
        out = tmp_path / name
        done = run_script(name, out, capture_output=True, text=True)
        assert done.returncode == 0, done.stderr
        written = Path(done.stdout.strip())
        assert written.parent == out and written.is_file()
        with Image.open(written) as im:
            assert im.size == (2 * SOURCE_SIZE[0], 2 * SOURCE_SIZE[1]) and im.mode == "RGB"
        results[name] = image(written)
    # The pipe rounds the image to 8 bits between the steps; otherwise the two are the same work.
    difference = np.abs(results["pipe_chain.sh"] - results["inprocess_chain.sh"])
    assert difference.mean() < 0.5 and np.percentile(difference, 99.9) <= 4


def test_batch_folder_writes_every_image_with_progress_on_a_terminal(tmp_path):
    # stderr on a pseudo-terminal, as in an interactive shell: the progress bar shows there.
    leader, follower = pty.openpty()
    try:
        done = run_script("batch_folder.sh", tmp_path, stdout=subprocess.PIPE, stderr=follower, text=True)
        os.close(follower)
        chunks = []
        while True:
            try:
                chunk = os.read(leader, 65536)
            except OSError:  # the terminal's other end is closed: all read
                break
            if not chunk:
                break
            chunks.append(chunk)
    finally:
        os.close(leader)
    stderr = b"".join(chunks).decode(errors="replace")
    assert done.returncode == 0, stderr
    assert Path(done.stdout.strip()) == tmp_path / "upscaled"
    sources = sorted(p for p in (EXAMPLES / "images").iterdir() if p.suffix in (".png", ".jpg"))
    outputs = sorted((tmp_path / "upscaled").iterdir())
    assert [p.name for p in outputs] == [p.name for p in sources]
    for output in outputs:
        with Image.open(output) as im:
            assert im.size == (2 * SOURCE_SIZE[0], 2 * SOURCE_SIZE[1])
    assert re.search(r"images:\s+\d+%\|", stderr), stderr  # the bar
    assert f"{len(sources)} written" in stderr  # the summary



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


@pytest.mark.parametrize("shell, marker", [("bash", "complete -o nosort -F _imgen_completion imgen"),
                                           ("zsh", "#compdef imgen"),
                                           ("fish", "complete --no-files --command imgen")])
def test_completion_scripts_are_generated_for_each_shell(shell, marker):
    done = subprocess.run(["imgen"], env={**user_env(), "_IMGEN_COMPLETE": f"{shell}_source"},
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and marker in done.stdout
    assert f"_IMGEN_COMPLETE={shell}_source imgen" in (ROOT / "docs" / "completion.md").read_text()
