"""What a user meets before any pixel is computed: usage errors, help examples, the options each
command offers, shell completion; and what happens to animated and multi-page inputs."""

import io
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import imgen_cmd, run_imgen

from imgen_cli import errors

ROOT = Path(__file__).resolve().parent.parent
DATA = Path(__file__).resolve().parent / "data"
STYLES = sorted(p.stem for p in (ROOT / "plugins" / "imgen_restyle" / "styles").glob("*.jpg"))


def user(args, cwd=None, env=None):
    """The installed `imgen`, built-in plugins only, as a user runs it."""
    environment = {k: v for k, v in os.environ.items() if k not in ("IMGEN_PLUGINS", "PYTHONPATH")}
    return subprocess.run(imgen_cmd() + [str(a) for a in args], capture_output=True, text=True, cwd=cwd,
                          env={**environment, **(env or {})}, timeout=120)


def usage_error(result) -> list[str]:
    """The stderr lines of a usage error, checked to look like imgen's own errors."""
    lines = result.stderr.splitlines()
    assert result.returncode == errors.USAGE, result.stderr
    assert lines and lines[0].startswith("imgen: error: "), result.stderr
    assert len(lines) <= 2 and all(not line.startswith(("Usage:", "Error:")) for line in lines), result.stderr
    assert len(lines) == 1 or re.fullmatch(r"Try 'imgen( [a-z-]+)? --help' for help\.", lines[1]), lines
    return lines


# -- usage errors -------------------------------------------------------------------------------


def test_a_mistyped_command_gets_did_you_mean():
    lines = usage_error(user(["sr4", "photo.jpg"]))
    assert lines == ["imgen: error: no such command 'sr4' (did you mean 'sr'?)", "Try 'imgen --help' for help."]
    assert usage_error(user(["plugn"]))[0] == "imgen: error: no such command 'plugn' (did you mean 'plugins'?)"
    # after a `+` only chainable commands are suggested
    assert usage_error(user(["denoise", "+", "srr"]))[0] == "imgen: error: no such command 'srr' (did you mean 'sr'?)"
    assert usage_error(user(["zzzz"]))[0] == "imgen: error: no such command 'zzzz'"
    # imgen ray runs plugin commands only: no host command is suggested there
    assert usage_error(user(["ray", "plugn", "x.png", "-o", "out/"]))[0] == "imgen: error: no such command 'plugn'"


def test_click_errors_read_as_imgen_errors():
    lines = usage_error(user(["sr", "--scal", "2", "x.png"]))
    assert lines == ["imgen: error: no such option '--scal' (did you mean '--scale' or '--outscale'?)",
                     "Try 'imgen sr --help' for help."]
    assert usage_error(user(["sr", "--kind", "foo"]))[0] == (
        "imgen: error: invalid value for '--kind': 'foo' is not one of 'fidelity', 'real'.")
    assert usage_error(user(["models", "--jso"]))[0] == "imgen: error: no such option '--jso' (did you mean '--json'?)"
    assert usage_error(user(["install"]))[0] == "imgen: error: missing argument 'PACKAGE...'."
    assert usage_error(user(["denoise", "+", "models"]))[0] == "imgen: error: 'models' cannot be chained"


def test_click_errors_in_process_look_the_same(imgen):
    result = imgen(["sr", "--scal", "2"])
    assert result.exit_code == errors.USAGE
    assert result.stderr.splitlines()[0] == "imgen: error: no such option '--scal' (did you mean '--scale' or '--outscale'?)"


def test_other_front_ends_word_click_errors_the_same(imgen_registry):
    from imgen_cli import UsageError
    from imgen_cli.api import Pipeline

    for chain, message in (("sr --scal 2", "no such option '--scal' (did you mean '--scale' or '--outscale'?)"),
                           ("sr --kind x", "invalid value for '--kind': 'x' is not one of 'fidelity', 'real'."),
                           ("lowlight --tile 0", "--tile: not an option of lowlight (lowlight processes each "
                                                 "image whole, never in tiles)")):
        with pytest.raises(UsageError) as caught:
            Pipeline(chain)
        assert str(caught.value) == message


def test_an_unknown_style_lists_the_built_in_ones(tmp_path):
    photo = shutil.copy(DATA / "kite.png", tmp_path / "photo.png")
    lines = usage_error(user(["restyle", "--style", "Mosaic", photo], cwd=tmp_path))
    assert lines[0] == f"imgen: error: --style Mosaic: neither a file nor a built-in style; built-in: {', '.join(STYLES)}"
    typo = usage_error(user(["restyle", "--style", "autum", photo], cwd=tmp_path))[0]
    assert "(did you mean 'autumn'?)" in typo
    # Any case names a built-in style: the line gets past the style to the next check (-o x.gif,
    # a usage error of its own) without running the network.
    upper = usage_error(user(["restyle", "--style", "AUTUMN", photo, "-o", "x.gif"], cwd=tmp_path))[0]
    assert "GIF" in upper and "style" not in upper
    assert sorted(p.name for p in tmp_path.iterdir()) == ["photo.png"]


def test_a_built_in_style_resolves_in_any_case():
    from imgen_cli import batch
    from imgen_cli.plugins import Registry, get_plugin_manager

    registry = Registry(get_plugin_manager())
    registry.load_entry_points()
    style = registry.commands["restyle"].inputs[0]
    assert batch.match_input(style, "AUTUMN", "photo.png") == str(ROOT / "plugins/imgen_restyle/styles/autumn.jpg")


def test_gif_output_is_refused_naming_the_formats_imgen_writes(tmp_path):
    photo = shutil.copy(DATA / "kite.png", tmp_path / "photo.png")
    lines = usage_error(user(["denoise", photo, "-o", "x.gif"], cwd=tmp_path))
    assert lines == ["imgen: error: -o x.gif: imgen reads GIF but cannot write it (it writes PNG, JPEG, WebP, TIFF or BMP)"]
    assert usage_error(user(["denoise", photo, "-o", "x.xyz"], cwd=tmp_path))[0].startswith(
        "imgen: error: -o x.xyz: unknown image extension")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["photo.png"]


def test_a_model_whose_scale_contradicts_scale_is_a_usage_error(tmp_path):
    photo = shutil.copy(DATA / "kite.png", tmp_path / "photo.png")
    lines = usage_error(user(["sr", "--scale", "2", "--model", "sr-real-x4", photo, "-o", "out.png"], cwd=tmp_path))
    assert lines == ["imgen: error: model 'sr-real-x4' scales x4 but --scale is 2: give one of them (see `imgen models`)"]
    # A weights file's scale is known once loaded: refused then, before anything is written.
    weights = shutil.copy(ROOT / "plugins/imgen_sr/weights/real_x4.safetensors", tmp_path / "mine.safetensors")
    result = user(["sr", "--scale", "2", "--model", weights, photo, "-o", "out.png"], cwd=tmp_path)
    assert result.returncode == errors.USAGE
    assert f"model '{weights}' scales x4 but --scale is 2" in result.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mine.safetensors", "photo.png"]


# -- help: examples and the options offered ----------------------------------------------------------


def all_commands(registry):
    from imgen_cli.cli import HOST_COMMANDS

    return [*HOST_COMMANDS, *sorted(registry.commands)]


def test_every_command_has_examples_in_its_help(imgen, test_plugins):
    """Built-in, host and third-party commands (the test plugins give no examples: they get
    generic ones, which must name the command and its required inputs)."""
    for name in [*all_commands(test_plugins), "metrics fit-niqe"]:
        result = imgen([*name.split(), "--help"])
        assert result.exit_code == 0, result.output
        examples = result.stdout.split("\nExamples:\n", 1)
        assert len(examples) == 2, f"imgen {name} --help has no examples"
        lines = [line.strip() for line in examples[1].splitlines() if line.strip().startswith("imgen ")]
        assert len(lines) >= 1 and all(line.startswith(("imgen ", "curl ")) for line in lines), examples[1]
        assert any(name.split()[0] in line for line in lines), (name, lines)
    fill = imgen(["fill", "--help"]).stdout
    assert "imgen fill --mask mask.png photo.jpg" in fill  # a required input is in the generic example
    assert "\nExamples:\n  Upscale a photo 4x" in imgen(["--help"]).stdout


def test_every_example_of_a_chain_parses(imgen_registry):
    """Each example that runs commands (not a pipe or a host command) is a valid command line."""
    import click

    from imgen_cli import chain
    from imgen_cli.cli import HOST_COMMANDS, cli

    examples = list(cli.examples)
    for name in imgen_registry.commands:
        examples += chain.click_command(imgen_registry, name).examples
    checked = 0
    for line, _ in examples:
        words = shlex.split(line)
        if words[0] != "imgen" or words[1] in HOST_COMMANDS or set(words) & {"|", "<", ">", "&"} or ";" in line:
            continue
        contexts = chain.parse_contexts(words[1:], imgen_registry, click.Context(cli, info_name="imgen"),
                                        reserved=HOST_COMMANDS)
        chain.merge_shared(contexts)
        checked += 1
    assert checked >= 20


def test_every_man_page_has_examples():
    pages = sorted((ROOT / "man").glob("*.1"))
    assert len(pages) == 13
    for page in pages:
        text = page.read_text()
        section = text.split("\n.SH EXAMPLES\n", 1)
        assert len(section) == 2, f"{page.name} has no EXAMPLES section"
        body = section[1].split("\n.SH ", 1)[0]
        assert re.search(r"^\.EX\n(imgen|curl) ", body, re.M), page.name


def test_examples_given_by_a_plugin_are_shown(imgen, imgen_registry):
    import dataclasses

    command = imgen_registry.commands["denoise"]
    imgen_registry.commands["denoise"] = dataclasses.replace(
        command, examples=[("imgen denoise --sigma 7 x.png", "A made-up example")])
    text = imgen(["denoise", "--help"]).stdout
    assert "A made-up example:\n      imgen denoise --sigma 7 x.png" in text
    assert "imgen denoise --tta" not in text


def untiled(command) -> bool:
    return not callable(command.tiling) and not command.tiling.tileable


def test_tile_is_offered_only_by_commands_that_tile(imgen, test_plugins, tmp_path):
    never = sorted(name for name, command in test_plugins.commands.items() if untiled(command))
    assert {"inpaint", "lowlight", "flipalpha"} <= set(never)
    for name, command in test_plugins.commands.items():
        offered = "--tile" in imgen([name, "--help"]).stdout
        assert offered != untiled(command), name
    source = tmp_path / "in.png"
    Image.fromarray(np.full((80, 60, 4), 200, np.uint8)).save(source)  # flipalpha needs alpha
    refused = imgen(["flipalpha", "--tile", "64", source])
    assert refused.exit_code == errors.USAGE
    assert refused.stderr.splitlines()[0] == (
        "imgen: error: --tile: not an option of flipalpha (flipalpha processes each image whole, never in tiles)")
    # In a chain --tile goes with a step that tiles.
    chained = imgen(["flipalpha", "+", "invert", "--tile", "32", source, "-o", "out.png"])
    assert chained.exit_code == 0, chained.stderr
    out = np.asarray(Image.open(tmp_path / "out.png"))
    assert (out[..., :3] == 55).all() and (out[..., 3] == 55).all()


# -- completion -----------------------------------------------------------------------------------


def protocol(words: list[str], cwd, extra_env=None) -> list[tuple[str, str]]:
    """click's bash completion protocol through the installed script: (type, value) pairs."""
    env = {k: v for k, v in os.environ.items() if k not in ("IMGEN_PLUGINS", "PYTHONPATH")}
    env.update(extra_env or {}, _IMGEN_COMPLETE="bash_complete", COMP_WORDS=" ".join(words), COMP_CWORD=str(len(words) - 1),
               PYTHONPROFILEIMPORTTIME="1")
    done = subprocess.run(imgen_cmd(), capture_output=True, text=True, env=env, cwd=cwd, timeout=60)
    assert done.returncode == 0, done.stderr
    imported = {line.split("|")[-1].strip().split(".")[0] for line in done.stderr.splitlines() if "|" in line}
    assert not imported & {"torch", "numpy"}, "completion must stay fast"
    return [tuple(line.split(",", 1)) for line in done.stdout.splitlines()]


def bash(words: list[str], cwd) -> list[str]:
    """What bash offers for the last of `words`, through the script docs/completion.md installs."""
    if shutil.which("bash") is None:
        pytest.skip("bash is not installed")
    env = {k: v for k, v in os.environ.items() if k not in ("IMGEN_PLUGINS", "PYTHONPATH")}
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    script = ('eval "$(_IMGEN_COMPLETE=bash_source imgen)"\n'
              f"COMP_WORDS=({' '.join(shlex.quote(w) for w in words)}); COMP_CWORD={len(words) - 1}\n"
              'COMPREPLY=(); _imgen_completion imgen; printf "%s\\n" "${COMPREPLY[@]}"\n')
    done = subprocess.run(["bash", "-c", script], capture_output=True, text=True, env=env, cwd=cwd, timeout=60)
    assert done.returncode == 0, done.stderr
    return done.stdout.split()


@pytest.fixture
def folder(tmp_path):
    """A working folder with an image, a weights file and a subfolder."""
    shutil.copy(DATA / "kite.png", tmp_path / "photo.png")
    (tmp_path / "mine.safetensors").write_bytes(b"")
    (tmp_path / "shots").mkdir()
    return tmp_path


def test_bash_completes_style_names_in_any_case_and_image_files(folder):
    assert bash(["imgen", "restyle", "--style", "a"], folder) == ["autumn"]
    assert bash(["imgen", "restyle", "--style", "A"], folder) == ["autumn"]
    everything = bash(["imgen", "restyle", "--style", ""], folder)
    assert everything == [*STYLES, "photo.png", "shots/"]  # images and folders, not mine.safetensors
    # no name matches: the shell's own file completion (click's "file" type)
    assert protocol(["imgen", "restyle", "--style", "ph"], folder) == [("file", "ph")]


def test_bash_completes_registered_models_and_weights_files(folder):
    assert bash(["imgen", "sr", "--model", "sr-real"], folder) == ["sr-real-x2", "sr-real-x4"]
    offered = bash(["imgen", "sr", "--model", ""], folder)
    assert offered[:5] == ["sr-fidelity-x2", "sr-fidelity-x3", "sr-fidelity-x4", "sr-real-x2", "sr-real-x4"]
    assert "mine.safetensors" in offered and "shots/" in offered and "photo.png" not in offered
    assert bash(["imgen", "denoise", "--model", ""], folder)[0] == "denoise-ffdnet"
    assert protocol(["imgen", "sr", "--model", "mi"], folder) == [("file", "mi")]


def test_user_model_folder_names_complete(folder):
    models = folder / "models"
    models.mkdir()
    (models / "my-finetune.safetensors").write_bytes(b"")
    pairs = protocol(["imgen", "sr", "--model", "my"], folder, {"IMGEN_MODELS": str(models)})
    assert pairs == [("plain", "my-finetune")]


def test_paths_complete_for_output_and_mask(folder):
    assert protocol(["imgen", "sr", "photo.png", "-o", ""], folder) == [("file", "")]
    assert protocol(["imgen", "sr", "--output", "ou"], folder) == [("file", "ou")]
    assert protocol(["imgen", "inpaint", "--mask", "m"], folder) == [("file", "m")]
    assert protocol(["imgen", "sr", "ph"], folder) == [("file", "ph")]
    assert protocol(["imgen", "sr", "--report", "r"], folder) == [("file", "r")]


def test_devices_complete_without_torch(folder):
    assert bash(["imgen", "sr", "--device", ""], folder) == ["auto", "cpu", "cuda", "mps"]
    assert protocol(["imgen", "denoise", "--device", "c"], folder) == [("plain", "cpu"), ("plain", "cuda")]


def test_after_a_plus_only_chainable_commands(folder):
    first = bash(["imgen", ""], folder)
    assert {"plugins", "models", "serve", "sr", "denoise"} <= set(first)
    after = bash(["imgen", "denoise", "photo.png", "+", ""], folder)
    assert after == ["denoise", "inpaint", "lowlight", "restyle", "sr"]
    assert bash(["imgen", "denoise", "+", "m"], folder) == []  # not `models`
    assert bash(["imgen", "denoise", "+", "restyle", "--style", "s"], folder) == ["string", "shots/"]


# -- animated and multi-page inputs ---------------------------------------------------------------


def frames(count: int, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 256, (12, 10, 3), dtype=np.uint8) for _ in range(count)]


def animated(fmt: str, pictures: list[np.ndarray]) -> bytes:
    images = [Image.fromarray(p) for p in pictures]
    buffer = io.BytesIO()
    if fmt == "TIFF":
        images[0].save(buffer, "TIFF", save_all=True, append_images=images[1:])
    else:
        extra = {"lossless": True} if fmt == "WEBP" else {}
        if fmt == "GIF":  # a palette that holds the first frame exactly
            images = [im.quantize(256, method=Image.Quantize.FASTOCTREE) for im in images]
        images[0].save(buffer, fmt, save_all=True, append_images=images[1:], duration=100, loop=0, **extra)
    return buffer.getvalue()


@pytest.mark.parametrize("fmt, suffix, count, kind", [("GIF", "gif", 3, "frames"), ("WEBP", "webp", 3, "frames"),
                                                       ("TIFF", "tif", 2, "pages")])
def test_only_the_first_frame_is_processed_and_a_warning_says_so(tmp_path, fmt, suffix, count, kind):
    source = tmp_path / f"anim.{suffix}"
    source.write_bytes(animated(fmt, frames(count)))
    with Image.open(source) as im:
        assert getattr(im, "n_frames", 1) == count
        first = np.asarray(im.convert("RGB"))
    result = run_imgen(["invert", source, "-o", tmp_path / "out.png"])
    assert result.returncode == 0, result.stderr
    assert f"imgen: {source}: has {count} {kind}: only the first is used" in result.stderr.decode()
    with Image.open(tmp_path / "out.png") as out:
        assert getattr(out, "n_frames", 1) == 1
        np.testing.assert_array_equal(np.asarray(out.convert("RGB")), 255 - first)
