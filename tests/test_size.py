"""Output size (--width, --height, --fit) and strength (--blend) through the real CLI on crops of
real photos, the Python API and an `imgen ray` actor: sizes, sr's choice of scale, exact ends of
the blend, usage errors. (Through `imgen serve` and `imgen --server`: tests/test_serve.py.)"""

import numpy as np
import pytest

from conftest import DATA, read, write


def crop(tmp_path, width, height, name="in.png", photo="kite.png"):
    return write(tmp_path / name, np.ascontiguousarray(read(DATA / photo)[:height, :width]))


def bicubic(array, size):
    """The reference resize: imgen_cli.resize (torch bicubic, antialiased when shrinking), rounded."""
    import torch

    from imgen_cli import resize

    x = torch.from_numpy(np.array(array)).permute(2, 0, 1)[None].float() / 255
    return (resize(x, size)[0].permute(1, 2, 0) * 255).round().to(torch.uint8).numpy()


def run(imgen, args):
    result = imgen(args)
    assert result.exit_code == 0, result.stderr
    return result


@pytest.mark.parametrize("size, box, kind, model, out", [
    ((40, 30), "80x80", "real", "sr-real-x2", (80, 60)),          # landscape, x2 reaches the box exactly
    ((30, 40), "100x100", "real", "sr-real-x4", (75, 100)),       # portrait, needs 2.5: x4 then shrink
    ((32, 32), "90x60", "fidelity", "sr-fidelity-x2", (60, 60)),  # square in a wide box: 1.875 -> x2
    ((30, 30), "90x90", "fidelity", "sr-fidelity-x3", (90, 90)),  # fidelity has x3
    ((24, 16), "200x200", "real", "sr-real-x4", (200, 133)),      # beyond x4: x4, then enlarged
])
def test_fit_picks_the_smallest_scale_that_reaches_the_box(imgen, tmp_path, size, box, kind, model, out):
    source = crop(tmp_path, *size)
    result = run(imgen, ["sr", "--kind", kind, "--fit", box, source, "-o", "out.png", "-v"])
    assert f"sr: {model} for {size[0]}x{size[1]} ->" in result.stderr
    assert read(tmp_path / "out.png").shape == (out[1], out[0], 3)
    # The scale the host chose is the model that ran: the same as asking for it by name, resized.
    run(imgen, ["sr", "--model", model, source, "-o", "plain.png"])
    plain = read(tmp_path / "plain.png")
    if plain.shape[:2] == (out[1], out[0]):
        assert (tmp_path / "out.png").read_bytes() == (tmp_path / "plain.png").read_bytes()
    else:
        assert np.abs(read(tmp_path / "out.png").astype(int) - bicubic(plain, (out[1], out[0]))).max() <= 1


@pytest.mark.parametrize("jobs", ["1", "2"])
def test_records_name_the_model_each_image_ran(imgen, tmp_path, jobs):
    import json

    crop(tmp_path, 40, 30, name="a.png")
    crop(tmp_path, 10, 8, name="b.png")
    result = run(imgen, ["sr", "--fit", "80x80", "a.png", "b.png", "-o", "out/", "--json", "--jobs", jobs])
    records = [json.loads(line) for line in result.stdout.splitlines()]
    assert [(r["input"], r["model"], r["size_out"]) for r in records[:2]] == [
        ("a.png", "sr-real-x2", [80, 60]), ("b.png", "sr-real-x4", [80, 64])]


def test_width_height_and_exact_size_as_a_final_resize(imgen, tmp_path):
    source = crop(tmp_path, 80, 60)
    run(imgen, ["denoise", "--sigma", "10", source, "-o", "plain.png"])
    plain = read(tmp_path / "plain.png")
    for args, shape in [(["--width", "50"], (38, 50)), (["--height", "30"], (30, 40)),
                        (["--width", "50", "--height", "20"], (20, 50)), (["--width", "120"], (90, 120))]:
        run(imgen, ["denoise", "--sigma", "10", *args, source, "-o", "out.png", "--overwrite"])
        out = read(tmp_path / "out.png")
        assert out.shape == (*shape, 3), args
        # A high-quality (antialiased bicubic) resize of the plain output, on the float result.
        assert np.abs(out.astype(int) - bicubic(plain, shape)).max() <= 1, args


def test_size_given_in_any_step_sizes_the_chains_output(imgen, tmp_path):
    source = crop(tmp_path, 48, 36)
    result = run(imgen, ["denoise", "--fit", "100x100", "+", "sr", source, "-o", "a.png", "-v"])
    assert "sr-real-x4 for 48x36 -> 100x75" in result.stderr
    assert read(tmp_path / "a.png").shape == (75, 100, 3)
    run(imgen, ["denoise", "+", "sr", "--fit", "100x100", source, "-o", "b.png"])
    assert (tmp_path / "a.png").read_bytes() == (tmp_path / "b.png").read_bytes()
    # An explicit --scale is kept: x2, then enlarged to the target.
    result = run(imgen, ["sr", "--scale", "2", "--width", "144", source, "-o", "c.png", "-v"])
    # (no per-image choice is made: -v names the one model, never "MODEL for WxH -> ...")
    assert " for 48x36" not in result.stderr and "model sr-real-x2 on" in result.stderr
    assert read(tmp_path / "c.png").shape == (108, 144, 3)


def test_blend_ends_are_exact_and_half_is_between(imgen, tmp_path):
    source = crop(tmp_path, 64, 48, photo="wood.png")
    original = read(source)
    run(imgen, ["denoise", "--sigma", "25", source, "-o", "plain.png"])
    run(imgen, ["denoise", "--sigma", "25", "--blend", "1", source, "-o", "one.png"])
    run(imgen, ["denoise", "--sigma", "25", "--blend", "0", source, "-o", "zero.png"])
    run(imgen, ["denoise", "--sigma", "25", "--blend", "0.5", source, "-o", "half.png"])
    assert (tmp_path / "one.png").read_bytes() == (tmp_path / "plain.png").read_bytes()
    assert np.array_equal(read(tmp_path / "zero.png"), original)
    plain, half = read(tmp_path / "plain.png").astype(int), read(tmp_path / "half.png").astype(int)
    assert np.abs(half - (original.astype(int) + plain) / 2).max() <= 1
    assert np.abs(half - plain).mean() > 1 and np.abs(half - original).mean() > 1


def test_sr_blends_with_the_bicubic_input(imgen, tmp_path):
    source = crop(tmp_path, 40, 32)
    run(imgen, ["sr", "--scale", "2", source, "-o", "plain.png"])
    run(imgen, ["sr", "--scale", "2", "--blend", "1", source, "-o", "one.png"])
    run(imgen, ["sr", "--scale", "2", "--blend", "0", source, "-o", "zero.png"])
    run(imgen, ["sr", "--scale", "2", "--blend", "0.25", source, "-o", "quarter.png"])
    assert (tmp_path / "one.png").read_bytes() == (tmp_path / "plain.png").read_bytes()
    resized = bicubic(read(source), (64, 80)).astype(int)
    assert np.abs(read(tmp_path / "zero.png").astype(int) - resized).max() <= 1
    plain = read(tmp_path / "plain.png").astype(int)
    assert np.abs(read(tmp_path / "quarter.png") - (0.75 * resized + 0.25 * plain)).max() <= 1.5


def test_each_step_blends_its_own_result(imgen, tmp_path):
    source = crop(tmp_path, 40, 32)
    run(imgen, ["sr", "--scale", "2", source, "-o", "plain.png"])
    # denoise at 0 hands sr its input unchanged: the chain's output is sr's alone.
    run(imgen, ["denoise", "--blend", "0", "+", "sr", "--scale", "2", source, "-o", "chain.png"])
    assert (tmp_path / "chain.png").read_bytes() == (tmp_path / "plain.png").read_bytes()


@pytest.mark.parametrize("args, message", [
    (["--fit", "0x5"], "1 to 65535 pixels"),
    (["--fit", "abc"], "not WIDTHxHEIGHT"),
    (["--fit", "10x"], "not WIDTHxHEIGHT"),
    (["--blend", "1.5"], "0<=x<=1"),
    (["--blend", "-0.1"], "0<=x<=1"),
    (["--blend", "nan"], "not a finite number"),
    (["--width", "0"], "--width"),
    (["--fit", "10x10", "--width", "5"], "contradict"),
    (["--width", "10", "+", "denoise", "--width", "20"], "different values"),
])
def test_bad_values_are_usage_errors(imgen, tmp_path, args, message):
    source = crop(tmp_path, 20, 20)
    result = imgen(["denoise", *args, source, "-o", "out.png"])
    assert result.exit_code == 2, result.stderr
    assert message in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / "out.png").exists()


def test_a_target_over_max_pixels_is_refused_per_file(imgen, tmp_path):
    source = crop(tmp_path, 20, 20)
    result = imgen(["denoise", "--width", "20000", source, "-o", "out.png"])
    assert result.exit_code == 1, result.stderr
    assert "--width 20000 would make it 20000x20000, 400 MP, above the 200 MP limit" in result.stderr
    result = imgen(["denoise", "--fit", "2000x1500", "--max-pixels", "1000000", source, "-o", "out.png"])
    assert result.exit_code == 1 and "above the 1 MP limit" in result.stderr


def test_a_plugin_declaring_a_host_option_is_refused(imgen_registry):
    import types

    import click

    from imgen_cli import Command, hookimpl

    def register_commands(register):
        register(Command("shrink", "Declares its own --width.", lambda x, ctx: x,
                         params=[click.Option(["--width"], type=int)]))

    plugin = types.SimpleNamespace(register_commands=hookimpl(register_commands))
    info = imgen_registry.add(plugin, "clash")
    assert "shrink" not in imgen_registry.commands
    assert "declares --width, an option the host adds to every command" in info.error


def test_python_api_takes_them_from_the_chain_string(tmp_path):
    from imgen_cli import UsageError
    from imgen_cli.api import Pipeline

    image = read(DATA / "bridge.png")[:75, :100]
    out = Pipeline("denoise + sr --fit 800x600")(image)
    assert out.shape == (600, 800, 3)
    assert Pipeline("denoise --width 50 --blend 0")(image).shape == (38, 50, 3)
    with pytest.raises(UsageError, match="not WIDTHxHEIGHT"):
        Pipeline("sr --fit 800by600")


def test_ray_actor_runs_the_same_chain(tmp_path):
    """imgen ray's actor, called as Ray Data calls it (without a cluster): it builds its Pipeline
    from the chain's words, so --fit and --blend reach it as they reach the CLI."""
    from imgen_cli import batch, scaleout

    source = crop(tmp_path, 40, 30)
    files, settings = scaleout.prepare(["sr", "--fit", "80x80", "--blend", "0.5"], [str(source)],
                                       batch.Settings(output=str(tmp_path / "out")))
    rows = scaleout.ChainActor(settings)({"bytes": [source.read_bytes()], "path": [files[0]]})
    assert list(rows["status"]) == [scaleout.WRITTEN], rows["error"]
    assert read(rows["output"][0]).shape == (60, 80, 3)
