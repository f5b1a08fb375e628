"""The imgen command as a user meets it: discovery, inputs and outputs, pipes, chains, errors."""

import io
import json
import os
import pty
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from conftest import DATA, count_loads, imgen_cmd, imgen_env, run_imgen, run_imgen_on_terminal
from imgen_cli import errors


def read(path_or_bytes):
    source = io.BytesIO(path_or_bytes) if isinstance(path_or_bytes, bytes) else path_or_bytes
    with Image.open(source) as im:
        return np.asarray(im)


# -- discovery ----------------------------------------------------------------------------------


def test_help_lists_one_subcommand_per_plugin_command(imgen, test_plugins):
    result = imgen(["--help"])
    assert result.exit_code == 0
    for name in ("plugins", "models", "tinyup", "fill", "invert", *test_plugins.commands):
        assert f"  {name} " in result.stdout


def test_version(imgen):
    import imgen_cli

    result = imgen(["--version"])
    assert result.exit_code == 0
    assert imgen_cli.__version__ in result.stdout


def test_plugins_json_lists_builtin_and_third_party(imgen, test_plugins):
    rows = {row["name"]: row for row in json.loads(imgen(["plugins", "--json"]).stdout)}
    tiny = rows["imgen_test_tiny"]
    assert tiny["builtin"] is False and tiny["version"] == "9.9"
    assert tiny["commands"] == ["tinyup", "fill", "smooth", "slow", "flipalpha", "invert"] and tiny["models"] == ["tiny-x2"]
    builtins = [row for row in rows.values() if row["builtin"]]
    assert builtins, "built-in plugins come through the imgen entry-point group"
    assert all(row["distribution"] == "imgen" and row["version"] for row in builtins)


def test_plugins_table(imgen, test_plugins):
    result = imgen(["plugins"])
    assert result.exit_code == 0
    assert "imgen_test_tiny" in result.stdout and "third-party" in result.stdout


def test_models_lists_registered_models(imgen, test_plugins):
    rows = json.loads(imgen(["models", "--json"]).stdout)
    tiny = [row for row in rows if row["name"] == "tiny-x2"][0]
    assert tiny["command"] == "tinyup" and tiny["scale"] == 2 and tiny["default"] is True


def test_broken_plugin_is_reported_and_others_keep_working(tmp_path):
    image = DATA / "kite.png"
    plugins = "imgen_test_broken,imgen_test_tiny"
    listing = run_imgen(["plugins", "--json"], plugins=plugins)
    assert listing.returncode == 0
    rows = {row["name"]: row for row in json.loads(listing.stdout)}
    assert "No module named 'imgen_no_such_dependency'" in rows["imgen_test_broken"]["error"]
    assert rows["imgen_test_tiny"]["error"] is None

    help_text = run_imgen(["--help"], plugins=plugins).stdout.decode()
    assert "imgen_test_broken" in help_text and "tinyup" in help_text

    used = run_imgen(["imgen_test_broken", image], plugins=plugins)
    assert used.returncode == errors.PLUGIN
    assert used.stderr.decode().strip().splitlines() == [
        "imgen: error: imgen_test_broken: plugin 'imgen_test_broken' failed to load: "
        "ModuleNotFoundError: No module named 'imgen_no_such_dependency'"]

    works = run_imgen(["invert", image, "-o", tmp_path / "ok.png"], plugins=plugins)
    assert works.returncode == 0, works.stderr

    # --debug shows the plugin's own traceback, from its failed import.
    debug = run_imgen(["imgen_test_broken", "--debug", image], plugins=plugins).stderr.decode()
    assert "Traceback" in debug and "imgen_test_broken.py" in debug and "import imgen_no_such_dependency" in debug
    listing_debug = run_imgen(["--debug", "plugins"], plugins=plugins).stderr.decode()
    assert "import imgen_no_such_dependency" in listing_debug


def test_plugins_shows_version_location_and_warns_of_torch_at_import():
    listing = run_imgen(["plugins", "--json"], plugins="imgen_test_tiny,imgen_test_heavy")
    rows = {row["name"]: row for row in json.loads(listing.stdout)}
    heavy, tiny = rows["imgen_test_heavy"], rows["imgen_test_tiny"]
    assert heavy["imports_torch"] is True and tiny["imports_torch"] is False
    assert tiny["version"] == "9.9" and tiny["location"] == str(DATA.parent / "plugins")
    assert all(row["location"] and row["imports_torch"] is False for row in rows.values() if row["builtin"])
    table = run_imgen(["plugins"], plugins="imgen_test_heavy").stdout.decode()
    assert "warning:" in table.split("imgen_test_heavy")[1]


def test_load_plugins_allow_list_keeps_builtins_only_when_empty(imgen_registry, monkeypatch):
    from imgen_cli.plugins import Registry, allow_list, get_plugin_manager

    monkeypatch.setenv("IMGEN_LOAD_PLUGINS", "")
    assert allow_list() == set()
    registry = Registry(get_plugin_manager())
    registry.load_entry_points(allow_list())
    everything = imgen_registry  # all installed entry points
    assert {n for n, i in everything.plugins.items() if i.builtin} == set(registry.plugins)
    assert all(info.builtin for info in registry.plugins.values())
    monkeypatch.setenv("IMGEN_LOAD_PLUGINS", " Imgen_Sharpen , sr")
    assert allow_list() == {"imgen-sharpen", "sr"}
    monkeypatch.delenv("IMGEN_LOAD_PLUGINS")
    assert allow_list() is None


def test_install_runs_pip_of_imgens_own_python_or_uv(monkeypatch):
    import importlib.util
    import shutil

    from imgen_cli import cli

    assert cli.installer("install") == [sys.executable, "-m", "pip", "install"]
    assert cli.installer("uninstall") == [sys.executable, "-m", "pip", "uninstall", "--yes"]
    # An environment made by `uv tool install` has no pip: uv installs into it from outside.
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    monkeypatch.setattr(shutil, "which", lambda name: "/opt/uv/bin/uv" if name == "uv" else None)
    assert cli.installer("install") == ["/opt/uv/bin/uv", "pip", "install", "--python", sys.executable]
    monkeypatch.setattr(shutil, "which", lambda name: None)
    with pytest.raises(errors.UsageError, match="neither pip nor uv"):
        cli.installer("install")


def test_plugin_whose_hook_raises_is_isolated(imgen, imgen_registry):
    from imgen_cli import hookimpl

    class Raising:
        @hookimpl
        def register_commands(self, register):
            raise RuntimeError("boom")

    info = imgen_registry.add(Raising(), "raising")
    assert info.error == "RuntimeError: boom"
    result = imgen(["raising", "x.png"])
    assert result.exit_code == errors.PLUGIN
    assert "boom" in result.stderr
    assert imgen(["plugins"]).exit_code == 0


def python_ok(code: str) -> None:
    """Run `code` in a fresh interpreter (module caches empty) and require it to succeed."""
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, env=imgen_env(), timeout=60)
    assert done.returncode == 0, done.stderr.decode()


def test_help_does_not_import_torch():
    python_ok("import sys; from imgen_cli.cli import main\n"
              "try:\n    main(['--help'])\nexcept SystemExit:\n    pass\n"
              "try:\n    main(['plugins'])\nexcept SystemExit:\n    pass\n"
              "heavy = [m for m in ('torch', 'numpy', 'imageio', 'PIL') if m in sys.modules]\n"
              "assert not heavy, heavy")


def test_no_host_module_imports_torch_when_imported():
    # Plugins' front modules import host helpers freely; none of them may drag torch in.
    python_ok("import importlib, pkgutil, sys, imgen_cli\n"
              "for info in pkgutil.iter_modules(imgen_cli.__path__):\n"
              "    if info.name != '__main__':\n"
              "        importlib.import_module('imgen_cli.' + info.name)\n"
              "assert 'torch' not in sys.modules")


# -- inputs and outputs -------------------------------------------------------------------------


def test_default_output_is_written_beside_the_input_and_announced(imgen, test_plugins, tmp_image):
    source = tmp_image("photo.png")
    result = imgen(["tinyup", source])
    assert result.exit_code == 0, result.stderr
    out = source.with_name("photo-tinyup-x2.png")  # a size-changing command names its factor
    assert read(out).shape == (192, 256, 3)
    assert f"wrote {out}" in result.stderr
    assert result.stdout_bytes == b""


def test_stdin_goes_to_stdout_as_png(imgen, test_plugins, tmp_image):
    data = tmp_image("in.jpg").read_bytes()
    result = imgen(["invert"], input=data)
    assert result.exit_code == 0, result.stderr
    assert result.stdout_bytes.startswith(b"\x89PNG")
    assert read(result.stdout_bytes).shape == (96, 128, 3)


def test_dash_means_stdin_and_stdout(imgen, test_plugins, tmp_image):
    data = tmp_image("in.png").read_bytes()
    result = imgen(["invert", "-", "-o", "-", "--format", "webp", "--quality", "100"], input=data)
    assert result.stdout_bytes[8:12] == b"WEBP"
    assert np.array_equal(read(result.stdout_bytes), 255 - read(data))


def test_format_is_sniffed_from_bytes_not_name(imgen, test_plugins, tmp_image, tmp_path):
    png_named_jpg = tmp_path / "liar.jpg"
    png_named_jpg.write_bytes(tmp_image("x.png").read_bytes())
    result = imgen(["invert", png_named_jpg, "-o", "out.png"])
    assert result.exit_code == 0, result.stderr
    assert np.array_equal(read(tmp_path / "out.png"), 255 - read(png_named_jpg))


def test_output_format_follows_extension_or_format_option(imgen, test_plugins, tmp_image, tmp_path):
    source = tmp_image("in.png")
    imgen(["invert", source, "-o", "a.jpg"])
    assert (tmp_path / "a.jpg").read_bytes()[:3] == b"\xff\xd8\xff"
    imgen(["invert", source, "--format", "tiff"])
    assert (tmp_path / "in-invert.tif").read_bytes()[:4] == b"II*\x00"
    assert imgen(["invert", source, "-o", "a.xyz"]).exit_code == errors.USAGE


def test_folder_input_and_output_keep_each_format(imgen, test_plugins, tmp_image, tmp_path):
    folder = tmp_path / "album"
    folder.mkdir()
    for name in ("a.jpg", "b.png", "c.webp"):
        (folder / name).write_bytes(tmp_image(name).read_bytes())
    (folder / "notes.txt").write_text("not an image")
    result = imgen(["invert", folder, "-o", "done"])
    assert result.exit_code == 0, result.stderr
    assert sorted(os.listdir(tmp_path / "done")) == ["a.jpg", "b.png", "c.webp"]
    assert (tmp_path / "done" / "a.jpg").read_bytes()[:3] == b"\xff\xd8\xff"
    assert "3 written" in result.stderr


def test_existing_output_is_never_overwritten_without_overwrite(imgen, test_plugins, tmp_image, tmp_path):
    source = tmp_image("in.png")
    (tmp_path / "out.png").write_bytes(b"precious")
    result = imgen(["invert", source, "-o", "out.png"])
    assert result.exit_code == errors.FAILED
    assert result.stderr.strip() == "imgen: error: out.png: exists (use --overwrite to replace it, " \
                                    "--skip-existing to skip it)"
    assert (tmp_path / "out.png").read_bytes() == b"precious"
    assert imgen(["invert", source, "-o", "out.png", "--skip-existing"]).exit_code == 0
    assert (tmp_path / "out.png").read_bytes() == b"precious"
    assert imgen(["invert", source, "-o", "out.png", "--overwrite"]).exit_code == 0
    assert read(tmp_path / "out.png").shape == (96, 128, 3)


def test_skip_existing_skips_before_loading_the_model(imgen, test_plugins, tmp_image, tmp_path, monkeypatch):
    calls = count_loads(test_plugins, "tiny-x2", monkeypatch)
    # PNG bytes named .gif: the output is a PNG, out/b.png, which only the bytes can tell.
    sources = [tmp_image("a.png"), tmp_image("b.gif", seed=1)]
    assert imgen(["tinyup", *sources, "-o", "out"]).exit_code == 0
    assert len(calls) == 1 and sorted(os.listdir(tmp_path / "out")) == ["a.png", "b.png"]
    # Names and formats are settled from the names and first bytes: nothing is decoded or loaded.
    (tmp_path / "a.png").write_bytes(b"\x89PNG\r\n\x1a\n but not decodable")
    again = imgen(["tinyup", *sources, "-o", "out", "--skip-existing", "-v"])
    assert again.exit_code == 0, again.stderr
    assert len(calls) == 1 and "0 written, 2 skipped" in again.stderr


def test_input_is_never_overwritten(imgen, test_plugins, tmp_image):
    source = tmp_image("in.png")
    before = source.read_bytes()
    result = imgen(["invert", source, "-o", source, "--overwrite"])
    assert result.exit_code == errors.USAGE
    assert "would overwrite the input" in result.stderr
    assert source.read_bytes() == before


def test_batch_goes_on_past_bad_files_with_summary(imgen, test_plugins, tmp_image, tmp_path):
    good = tmp_image("good.png")
    (tmp_path / "bad.png").write_bytes(b"not an image at all")
    result = imgen(["invert", "missing.png", "bad.png", good, "-o", "out"])
    assert result.exit_code == errors.FAILED
    lines = result.stderr.strip().splitlines()
    assert "imgen: error: missing.png: no such file" in lines
    assert "imgen: error: bad.png: not a supported image (PNG, JPEG, WebP, TIFF, BMP or GIF)" in lines
    assert lines[-1] == "imgen: 1 written, 2 failed"
    assert "Traceback" not in result.stderr
    assert (tmp_path / "out" / "good.png").exists()


def test_usage_errors_exit_2(imgen, test_plugins, tmp_image):
    source = tmp_image("in.png")
    assert imgen(["tinyup", "--no-such-option", source]).exit_code == errors.USAGE
    assert imgen(["nosuchcommand", source]).exit_code == errors.USAGE
    two = imgen(["invert", source, source, "-o", "-"])
    assert two.exit_code == errors.USAGE and "single input" in two.stderr
    assert imgen(["fill", source]).exit_code == errors.USAGE  # --mask is required
    assert imgen(["invert", source, "--tile", "banana"]).exit_code == errors.USAGE


def test_named_device_that_is_missing_is_an_error_not_a_fallback(imgen, test_plugins, tmp_image):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    result = imgen(["tinyup", tmp_image("in.png"), "--device", "cuda"])
    assert result.exit_code == errors.USAGE
    assert result.stderr.strip() == "imgen: error: --device cuda: CUDA is not available on this machine"


def test_pixel_limit_refuses_decompression_bombs(imgen, test_plugins, tmp_image):
    source = tmp_image("in.png")
    result = imgen(["invert", source, "--max-pixels", "1000"])
    assert result.exit_code == errors.FAILED
    assert "MP limit" in result.stderr and "--max-pixels" in result.stderr
    assert imgen(["invert", source, "--max-pixels", "20000"]).exit_code == 0


def test_debug_shows_the_traceback(imgen, test_plugins, tmp_image):
    source = tmp_image("in.png")
    plain = imgen(["invert", "--fail", source])
    assert plain.exit_code == errors.FAILED
    assert plain.stderr.strip() == f"imgen: error: {source}: invert failed: RuntimeError: asked to fail"
    debug = imgen(["invert", "--fail", "--debug", source])
    assert "Traceback" in debug.stderr and "asked to fail" in debug.stderr


def test_quiet_prints_nothing_on_success(imgen, test_plugins, tmp_image):
    result = imgen(["invert", "-q", tmp_image("in.png")])
    assert result.exit_code == 0 and result.stderr == ""


def test_interrupted_write_leaves_no_partial_file(imgen, test_plugins, tmp_image, tmp_path, monkeypatch):
    def disk_full(fd):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", disk_full)
    result = imgen(["invert", tmp_image("in.png"), "-o", "out.png"])
    assert result.exit_code == errors.FAILED
    assert result.stderr.strip() == "imgen: error: out.png: No space left on device"
    assert sorted(os.listdir(tmp_path)) == ["in.png"]


# -- real processes and pipes -------------------------------------------------------------------


def test_pipes_both_ways_through_real_processes(tmp_path):
    source = (DATA / "kite.png").read_bytes()
    env = imgen_env()
    first = subprocess.Popen(imgen_cmd() + ["invert"], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, env=env)
    second = subprocess.Popen(imgen_cmd() + ["tinyup"], stdin=first.stdout, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, env=env)
    first.stdout.close()
    first.stdin.write(source)
    first.stdin.close()
    out, err = second.communicate(timeout=120)
    assert first.wait(timeout=60) == 0 and second.returncode == 0, err
    assert read(out).shape == (512, 512, 3)

    chained = run_imgen(["invert", "+", "tinyup", "-"], input=source)
    assert chained.returncode == 0, chained.stderr
    # One process skips the 8-bit rounding between steps: at most one level apart.
    assert np.abs(read(chained.stdout).astype(int) - read(out).astype(int)).max() <= 1


def test_closed_pipe_ends_quietly(imgen, test_plugins, tmp_image, monkeypatch):
    # `imgen ... | head -c 10`: the reader goes away mid-write. (Simulated: this sandbox's pipes
    # do not report EPIPE to the writer, so a real `head` cannot trigger it here.)
    from imgen_cli import batch

    def reader_gone(job, data, overwrite, stdout=None):
        raise BrokenPipeError(32, "Broken pipe")

    monkeypatch.setattr(batch, "write_output", reader_gone)
    result = imgen(["invert", "-"], input=tmp_image("in.png").read_bytes())
    assert result.exit_code == errors.BROKEN_PIPE
    assert result.stderr == ""


def test_image_bytes_never_go_to_a_terminal():
    leader, follower = pty.openpty()
    try:
        proc = subprocess.run(imgen_cmd() + ["invert", "-"], input=(DATA / "kite.png").read_bytes(),
                              stdout=follower, stderr=subprocess.PIPE, env=imgen_env(), timeout=60)
    finally:
        os.close(follower)
        os.close(leader)
    assert proc.returncode == errors.USAGE
    assert b"refusing to write image data to a terminal" in proc.stderr


def test_ctrl_c_exits_130_and_leaves_no_file(tmp_path):
    import signal
    import time

    proc = subprocess.Popen(imgen_cmd() + ["slow", DATA / "kite.png", "--tile", "32", "-o", tmp_path / "out.png"],
                            stderr=subprocess.PIPE, env=imgen_env())
    time.sleep(4)  # start-up, then a few of the 81 slow tiles
    proc.send_signal(signal.SIGINT)
    err = proc.communicate(timeout=60)[1].decode()
    assert proc.returncode == errors.INTERRUPTED
    assert err.strip().splitlines()[-1] == "imgen: interrupted"
    assert "Traceback" not in err
    assert os.listdir(tmp_path) == []


def test_progress_bars_only_on_a_terminal(tmp_path):
    # (--jobs 1: tile bars are drawn when files run one at a time)
    proc, shown = run_imgen_on_terminal(["slow", DATA / "kite.png", DATA / "wood.png", "--tile", "128",
                                         "-o", tmp_path / "out", "--jobs", "1"])
    assert proc.returncode == 0 and proc.stdout == b""
    assert b"images" in shown and b"tiles" in shown and b"%" in shown
    piped = run_imgen(["slow", DATA / "kite.png", "--tile", "128", "-o", tmp_path / "again.png"])
    assert piped.stderr.decode().strip().splitlines() == [
        f"imgen: wrote {tmp_path / 'again.png'} (256x256 -> 256x256)"]


@pytest.mark.parametrize("no_color", [False, True])
def test_no_color_is_respected(no_color):
    leader, follower = pty.openpty()
    env = imgen_env("imgen_test_broken")
    env["TERM"] = "xterm-256color"
    env["COLUMNS"] = "200"
    if no_color:
        env["NO_COLOR"] = "1"
    try:
        proc = subprocess.run(imgen_cmd() + ["plugins"], stdout=follower, stderr=subprocess.PIPE, env=env,
                              timeout=60)
        os.set_blocking(leader, False)
        shown = os.read(leader, 1 << 20)
    finally:
        os.close(follower)
        os.close(leader)
    assert proc.returncode == 0 and b"imgen_test_broken" in shown
    red = b"\x1b[31m"  # the error status; bold headers are not colour and may stay
    assert (red in shown) is not no_color


def test_no_input_on_a_terminal_is_a_usage_error():
    leader, follower = pty.openpty()
    try:
        proc = subprocess.run(imgen_cmd() + ["invert"], stdin=follower, capture_output=False,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=imgen_env(), timeout=60)
    finally:
        os.close(follower)
        os.close(leader)
    assert proc.returncode == errors.USAGE
    assert b"no input" in proc.stderr


# -- chains -------------------------------------------------------------------------------------


def test_chain_runs_steps_in_one_process(imgen, test_plugins, tmp_image, tmp_path):
    source = tmp_image("in.png")
    result = imgen(["invert", "+", "tinyup", "+", "invert", source, "-o", "out.png"])
    assert result.exit_code == 0, result.stderr
    out = read(tmp_path / "out.png")
    assert out.shape == (192, 256, 3)
    imgen(["tinyup", source, "-o", "plain.png"])
    # invert(tinyup(invert(x))) differs from tinyup(x): the network is not linear.
    assert np.abs(out.astype(int) - read(tmp_path / "plain.png").astype(int)).max() > 2


def test_chain_options_must_agree_and_inputs_come_once(imgen, test_plugins, tmp_image):
    source = tmp_image("in.png")
    clash = imgen(["invert", "--tile", "64", "+", "tinyup", "--tile", "128", source])
    assert clash.exit_code == errors.USAGE and "--tile" in clash.stderr
    twice = imgen(["invert", source, "+", "tinyup", source])
    assert twice.exit_code == errors.USAGE
    assert imgen(["invert", "+", source]).exit_code == errors.USAGE
    assert imgen(["invert", "+"]).exit_code == errors.USAGE


def test_model_is_loaded_once_across_files_and_steps(imgen, test_plugins, tmp_image, monkeypatch):
    calls = count_loads(test_plugins, "tiny-x2", monkeypatch)
    a, b = tmp_image("a.png"), tmp_image("b.png", seed=1)
    result = imgen(["tinyup", "+", "tinyup", a, b, "-o", "out"])
    assert result.exit_code == 0, result.stderr
    assert len(calls) == 1


def test_extra_image_input_mask(imgen, test_plugins, tmp_image, tmp_path):
    source = tmp_image("in.png")
    mask = np.zeros((96, 128), np.uint8)
    mask[10:30, 40:90] = 255
    Image.fromarray(mask).save(tmp_path / "mask.png")
    result = imgen(["fill", "--mask", "mask.png", "--value", "0", source, "-o", "out.png"])
    assert result.exit_code == 0, result.stderr
    out, original = read(tmp_path / "out.png"), read(source)
    assert (out[10:30, 40:90] == 0).all()
    assert np.array_equal(out[mask == 0], original[mask == 0])

    Image.fromarray(mask[:50]).save(tmp_path / "small.png")
    wrong = imgen(["fill", "--mask", "small.png", source, "-o", "bad.png"])
    assert wrong.exit_code == errors.FAILED
    assert "--mask is 128x50 but the image is 128x96: sizes must match" in wrong.stderr


def test_mask_folder_is_matched_by_stem(imgen, test_plugins, tmp_image, tmp_path):
    photos, masks = tmp_path / "photos", tmp_path / "masks"
    photos.mkdir(), masks.mkdir()
    for i, name in enumerate(("a", "b")):
        (photos / f"{name}.png").write_bytes(tmp_image(f"{name}.png", seed=i).read_bytes())
        mask = np.zeros((96, 128), np.uint8)
        mask[:, : 30 * (i + 1)] = 255
        Image.fromarray(mask).save(masks / f"{name}.png")
    result = imgen(["fill", "--mask", masks, "--value", "1", photos, "-o", "out"])
    assert result.exit_code == 0, result.stderr
    assert (read(tmp_path / "out" / "a.png")[:, :30] == 255).all()
    assert not (read(tmp_path / "out" / "a.png")[:, 30:60] == 255).all()
    assert (read(tmp_path / "out" / "b.png")[:, :60] == 255).all()
