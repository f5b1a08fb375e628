"""The man pages in man/ are generated from the click command tree and must match it."""

import dataclasses
import importlib.util
import re
import shutil
import subprocess
from pathlib import Path

import click
import pytest

ROOT = Path(__file__).resolve().parent.parent
MAN = ROOT / "man"

spec = importlib.util.spec_from_file_location("make_man", ROOT / "scripts" / "make_man.py")
make_man = importlib.util.module_from_spec(spec)
spec.loader.exec_module(make_man)

PAGES = sorted(p.name for p in MAN.glob("*.1"))


def test_committed_pages_match_a_fresh_rendering(tmp_path):
    assert make_man.main(["--out", str(tmp_path)]) == 0
    fresh = sorted(p.name for p in tmp_path.glob("*.1"))
    assert fresh == PAGES, "run: python scripts/make_man.py"
    stale = [name for name in fresh
             if make_man.undated((tmp_path / name).read_text()) != make_man.undated((MAN / name).read_text())]
    assert not stale, f"stale man pages {stale}; run: python scripts/make_man.py"


def test_rendering_does_not_depend_on_what_ran_before():
    from click.testing import CliRunner

    from imgen_cli.cli import cli

    first = make_man.render_pages()
    CliRunner().invoke(cli, ["sr", "--help"])  # click caches help options on first use
    assert make_man.render_pages() == first


def test_one_page_per_builtin_and_host_command():
    registry = make_man.builtin_registry()
    builtin = [name for name, owner in registry.command_owner.items() if registry.plugins[owner].builtin]
    assert builtin, "the built-in plugins register commands"
    from imgen_cli.cli import HOST_COMMANDS

    expected = {"imgen.1", *(f"imgen-{name}.1" for name in (*HOST_COMMANDS, *builtin))}
    assert set(PAGES) == expected


def test_a_new_option_makes_its_page_stale():
    registry = make_man.builtin_registry()
    name = sorted(n for n, owner in registry.command_owner.items() if registry.plugins[owner].builtin)[0]
    command = registry.commands[name]
    registry.commands[name] = dataclasses.replace(
        command, params=[*command.params, click.Option(["--new-knob"], type=int, default=3, help="Turn it.")])
    pages = make_man.render_pages(registry)
    assert make_man.stale_pages(pages, MAN) == [f"imgen-{name}.1"]
    assert "\\fB\\-\\-new\\-knob\\fR \\fIINTEGER\\fR\nTurn it. Default: 3." in pages[f"imgen-{name}.1"]


def test_check_mode_names_stale_missing_and_left_over_pages(tmp_path, capsys):
    shutil.copytree(MAN, tmp_path, dirs_exist_ok=True)
    assert make_man.main(["--check", "--out", str(tmp_path)]) == 0
    page = tmp_path / "imgen-models.1"
    page.write_text(page.read_text().replace("Machine", "Robot"))
    (tmp_path / "imgen-plugins.1").unlink()
    (tmp_path / "imgen-gone.1").write_text(".TH IMGEN\\-GONE 1\n")
    before = {p.name: p.read_text() for p in tmp_path.iterdir()}
    assert make_man.main(["--check", "--out", str(tmp_path)]) == 1
    message = capsys.readouterr().err
    assert "imgen-gone.1, imgen-models.1, imgen-plugins.1" in message
    assert {p.name: p.read_text() for p in tmp_path.iterdir()} == before, "--check writes nothing"


def test_an_unchanged_page_keeps_its_date(tmp_path):
    shutil.copytree(MAN, tmp_path, dirs_exist_ok=True)
    page = tmp_path / "imgen.1"
    page.write_text(re.sub(r'^(\.TH \S+ 1 )"[^"]*"', r'\1"2000-01-01"', page.read_text(), count=1, flags=re.M))
    assert make_man.main(["--out", str(tmp_path)]) == 0
    assert '.TH IMGEN 1 "2000-01-01"' in page.read_text()


def render(path: Path, tool: str) -> subprocess.CompletedProcess:
    commands = {"groff": ["groff", "-ww", "-b", "-man", "-Tutf8", str(path)],
                "mandoc": ["mandoc", "-Tlint", "-Wstyle", str(path)]}
    if shutil.which(tool) is None:
        if tool == "groff":
            pytest.fail("groff is needed to check the man pages: apt-get install groff-base")
        pytest.skip(f"{tool} is not installed (apt-get install mandoc)")
    return subprocess.run(commands[tool], capture_output=True, text=True, timeout=60)


@pytest.mark.parametrize("tool", ["groff", "mandoc"])
@pytest.mark.parametrize("page", PAGES)
def test_page_renders_without_warnings(page, tool):
    result = render(MAN / page, tool)
    assert result.returncode == 0 and result.stderr == "", result.stderr
    if tool == "mandoc":
        assert result.stdout == "", result.stdout


@pytest.mark.parametrize("tool", ["groff", "mandoc"])
def test_help_text_is_escaped_for_roff(tmp_path, tool):
    from imgen_cli.cli import cli

    command = click.Command("tricky", help=(
        ".dot at the start would be a request\n\n'quote too, and a back\\slash and a \"quote\"\n\n"
        "Unicode stays: é × → done.\n\n\b\n  example --with-dashes \\n\n  .and a dot"),
        params=[click.Option(["--weird-opt"], default="a\\b", help="Uses '-' and \\fB."),
                click.Option(["-x", "--x-ray/--no-x-ray"], help=".Starts with a dot.")])
    root = make_man.root_context(cli)
    page = tmp_path / "imgen-tricky.1"
    page.write_text(make_man.command_page("tricky", command, root, "0.0", "2026-01-01", ["tricky"]))
    result = render(page, tool)
    assert result.returncode == 0 and result.stderr == "" and (tool == "groff" or result.stdout == ""), (
        result.stderr + result.stdout)
    if tool == "groff":
        text = " ".join(re.sub(".\b", "", result.stdout).split())  # no overstrike bold
        for expected in (".dot at the start would be a request", "'quote too, and a back\\slash and a \"quote\"",
                         "Unicode stays: é × → done.", "example --with-dashes \\n", ".and a dot",
                         "--weird-opt", "Uses '-' and \\fB. Default: a\\b.", "-x, --x-ray, --no-x-ray",
                         ".Starts with a dot."):
            assert expected in text


# -- installed pages: `man imgen` after `pip install` -----------------------------------------------


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """The project built into a wheel and installed (without dependencies) under a fresh prefix,
    laid out as a virtual environment is: PREFIX/bin/imgen, PREFIX/share/man/man1."""
    import sys

    if importlib.util.find_spec("setuptools") is None:
        pytest.skip("building the wheel offline needs setuptools in this environment")
    base = tmp_path_factory.mktemp("wheel")
    source = base / "src"
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, source / name)
    for name in ("imgen_cli", "plugins", "man"):
        shutil.copytree(ROOT / name, source / name, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q"]
    subprocess.run([*pip, "wheel", "--no-deps", "--no-build-isolation", "-w", str(base / "dist"), str(source)],
                   check=True, capture_output=True, timeout=300)
    wheel = next((base / "dist").glob("imgen-*.whl"))
    prefix = base / "prefix"
    # --ignore-installed: with --prefix alone pip would first uninstall the imgen running these tests.
    subprocess.run([*pip, "install", "--no-deps", "--no-compile", "--ignore-installed", "--prefix", str(prefix), str(wheel)],
                   check=True, capture_output=True, timeout=300)
    return wheel, prefix


def test_the_wheel_installs_every_page_where_man_looks(installed):
    import zipfile

    wheel, prefix = installed
    in_wheel = sorted(Path(name).name for name in zipfile.ZipFile(wheel).namelist() if name.endswith(".1"))
    assert in_wheel == PAGES
    assert all(f"/data/share/man/man1/{page}" in " ".join(zipfile.ZipFile(wheel).namelist()) for page in PAGES)
    assert sorted(p.name for p in (prefix / "share" / "man" / "man1").glob("*.1")) == PAGES
    assert (prefix / "bin" / "imgen").exists()


def test_man_finds_the_installed_page_from_path(installed):
    """man-db derives PREFIX/share/man from PREFIX/bin on PATH (an activated venv), as the README says."""
    _, prefix = installed
    if shutil.which("man") is None or shutil.which("manpath") is None:
        pytest.skip("man-db is not installed")
    env = {"PATH": f"{prefix / 'bin'}:/usr/bin:/bin", "HOME": str(prefix)}
    found = subprocess.run(["man", "-w", "imgen"], capture_output=True, text=True, env=env, timeout=60)
    assert found.returncode == 0 and found.stdout.strip() == str(prefix / "share/man/man1/imgen.1"), found.stderr
    sr = subprocess.run(["man", "-w", "imgen-sr"], capture_output=True, text=True, env=env, timeout=60)
    assert sr.stdout.strip() == str(prefix / "share/man/man1/imgen-sr.1")
    # Without the venv on PATH, MANPATH with a trailing colon adds it to the usual places.
    plain = {"PATH": "/usr/bin:/bin", "HOME": str(prefix), "MANPATH": f"{prefix / 'share/man'}:"}
    found = subprocess.run(["man", "-w", "imgen"], capture_output=True, text=True, env=plain, timeout=60)
    assert found.stdout.strip() == str(prefix / "share/man/man1/imgen.1"), found.stderr
