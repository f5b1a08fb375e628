"""Third-party plugins as their authors publish them: the example package installed by pip,
listed, used in a pipe with a built-in and removed again; and the guide's minimal plugin."""

import importlib.metadata as metadata
import importlib.util
import json
import re
import shlex
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import DATA, count_loads, imgen_cmd, imgen_env, run_imgen

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "examples" / "imgen-sharpen"
GUIDE = ROOT / "docs" / "plugins.md"


def laplacian_energy(image: np.ndarray) -> float:
    x = image.astype(np.float64)
    lap = 4 * x[1:-1, 1:-1] - x[:-2, 1:-1] - x[2:, 1:-1] - x[1:-1, :-2] - x[1:-1, 2:]
    return float((lap ** 2).mean())


def listed_plugins(plugins: str = "", **env) -> dict:
    result = run_imgen(["plugins", "--json"], plugins=plugins, extra_env=env)
    assert result.returncode == 0, result.stderr.decode()
    return {row["name"]: row for row in json.loads(result.stdout)}


def installed(distribution: str) -> bool:
    try:
        metadata.distribution(distribution)
    except metadata.PackageNotFoundError:
        return False
    return True


def test_example_plugin_installs_lists_works_in_a_pipe_and_uninstalls(tmp_path):
    # `imgen install` and `imgen uninstall`: pip in imgen's own environment.
    if installed("imgen-sharpen"):
        pytest.skip("imgen-sharpen is already installed here; this test installs and removes it itself")
    # Build from a copy: pip leaves build/ and *.egg-info beside the sources.
    source = tmp_path / "imgen-sharpen"
    shutil.copytree(EXAMPLE, source, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info", "build",
                                                                  ".pytest_cache"))
    try:
        done = run_imgen(["install", "--no-deps", "--no-build-isolation", "--no-index", "--disable-pip-version-check", "-q", source], plugins="")
        assert done.returncode == 0, done.stderr.decode()

        row = listed_plugins()["sharpen"]
        assert row["builtin"] is False and row["error"] is None and row["imports_torch"] is False
        assert row["distribution"] == "imgen-sharpen" and row["version"] == "0.1.0"
        assert row["commands"] == ["sharpen"] and row["location"].endswith("imgen_sharpen")
        # The allow-list: built-ins always, third-party plugins only when named.
        assert "sharpen" not in listed_plugins(IMGEN_LOAD_PLUGINS="")
        assert "sharpen" in listed_plugins(IMGEN_LOAD_PLUGINS="imgen-sharpen")
        assert "sharpen" in listed_plugins(IMGEN_LOAD_PLUGINS="sharpen,something-else")
        # Named in IMGEN_PLUGINS as well as installed: loaded once, not reported as a clash.
        both = listed_plugins(plugins="imgen_sharpen")
        assert both["sharpen"]["error"] is None and "imgen_sharpen" not in both
        table = run_imgen(["plugins"], plugins="").stdout.decode()
        assert re.search(r"sharpen\s+0\.1\.0\s+third-party\s+sharpen", table)
        assert re.search(r"\n  sharpen\s+Sharpen with an unsharp mask", run_imgen(["--help"], plugins="").stdout.decode())

        # A real shell pipe: a built-in upscaler feeding the third-party sharpener.
        imgen, q = shlex.join(imgen_cmd()), shlex.quote
        script = (f"{imgen} sr --scale 2 --kind fidelity - < {q(str(DATA / 'kite.png'))}"
                  f" | tee {q(str(tmp_path / 'sr.png'))} | {imgen} sharpen --amount 1.5 - > {q(str(tmp_path / 'out.png'))}")
        piped = subprocess.run(["bash", "-o", "pipefail", "-c", script], capture_output=True,
                               env=imgen_env(""), timeout=300)
        assert piped.returncode == 0, piped.stderr.decode()
        upscaled = np.asarray(Image.open(tmp_path / "sr.png"))
        out = np.asarray(Image.open(tmp_path / "out.png"))
        assert out.shape == upscaled.shape == (512, 512, 3)
        assert laplacian_energy(out) > 1.5 * laplacian_energy(upscaled)
        assert abs(out.mean() - upscaled.mean()) < 1.0
    finally:
        removed = run_imgen(["uninstall", "imgen-sharpen"], plugins="")
    assert removed.returncode == 0, removed.stderr.decode()

    assert not installed("imgen-sharpen")
    assert "sharpen" not in listed_plugins()
    gone = run_imgen(["sharpen", DATA / "kite.png"], plugins="")
    assert gone.returncode == 2 and b"such command 'sharpen'" in gone.stderr.lower()


def guide_block(language: str, after: str) -> str:
    """The first ```language block after the line that contains `after` in docs/plugins.md."""
    text = GUIDE.read_text()
    start = text.index(after)
    match = re.compile(rf"```{language}\n(.*?)```", re.S).search(text, start)
    return match.group(1)


def code_lines(text: str) -> int:
    return sum(1 for line in text.splitlines() if line.strip() and not line.strip().startswith("#"))


def test_the_guides_minimal_plugin_works_and_is_under_30_lines(imgen, imgen_registry, tmp_image):
    toml = guide_block("toml", "`pyproject.toml`:")
    module = guide_block("python", "`imgen_sharpen/__init__.py`:")
    assert '[project.entry-points.imgen]\nsharpen = "imgen_sharpen"' in toml
    assert 'dependencies = ["imgen>=0.2,<0.3"]' in toml

    # The guide's module replaces the example package, in case that is installed here.
    imgen_registry.remove("sharpen")
    spec = importlib.util.spec_from_loader("guide_sharpen", loader=None)
    plugin = importlib.util.module_from_spec(spec)
    exec(compile(module, "docs/plugins.md", "exec"), plugin.__dict__)
    info = imgen_registry.add(plugin, "guide_sharpen")
    assert info.error is None and info.commands == ["sharpen"]
    assert "torch" not in re.findall(r"^(?:import|from) (\w+)", module, re.M)

    source = tmp_image(height=80, width=90)
    result = imgen(["sharpen", "--amount", "1.5", source, "-o", "out.png"])
    assert result.exit_code == 0, result.stderr
    before, after = np.asarray(Image.open(source)), np.asarray(Image.open("out.png"))
    assert after.shape == before.shape
    assert laplacian_energy(after) > 1.5 * laplacian_energy(before)

    lines = code_lines(toml) + code_lines(module)
    assert lines < 30, f"a minimal plugin takes {lines} lines"
    guide = GUIDE.read_text()
    assert f"{code_lines(module)} lines of Python" in guide
    assert f"| **total** | **{lines}** ({len(toml.splitlines()) + len(module.splitlines())} with blank lines) |" in guide


def test_the_guides_plugin_with_a_model_loads_it_once_and_runs_it(imgen, imgen_registry, tmp_path, monkeypatch):
    import torch
    from safetensors.torch import save_file

    module = guide_block("python", "## A plugin with a model")
    package = tmp_path / "imgen_tone"
    (package / "weights").mkdir(parents=True)
    (package / "__init__.py").write_text(module)
    # A warm grade: red up, blue down.
    weight = torch.diag(torch.tensor([1.1, 1.0, 0.8]))[:, :, None, None]
    save_file({"weight": weight, "bias": torch.zeros(3)}, str(package / "weights" / "tone.safetensors"))
    monkeypatch.syspath_prepend(str(tmp_path))
    import imgen_tone

    info = imgen_registry.add(imgen_tone, "tone")
    assert info.error is None and info.commands == ["tone"] and info.models == ["tone-warm"]
    assert "torch" not in re.findall(r"^(?:import|from) (\w+)", module, re.M)
    loads = count_loads(imgen_registry, "tone-warm", monkeypatch)
    for name in ("a.png", "b.png"):
        Image.fromarray(np.full((40, 50, 3), 128, np.uint8)).save(tmp_path / name)
    result = imgen(["tone", tmp_path / "a.png", tmp_path / "b.png", "-o", "out"])
    assert result.exit_code == 0, result.stderr
    assert len(loads) == 1
    for name in ("a.png", "b.png"):
        out = np.asarray(Image.open(tmp_path / "out" / name)).astype(int)
        assert (np.abs(out - [141, 128, 102]) <= 1).all()
