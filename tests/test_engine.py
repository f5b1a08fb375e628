"""The execution engine through the CLI: seamless tiling, OOM recovery, precision, alpha, grey, depth."""

import os

import click
import numpy as np
import pytest

from imgen_cli import Command, Model, Tiling, hookimpl
from imgen_cli import io as imgio
from imgen_cli.testing import natural_image


def read(path):
    return imgio.decode(path.read_bytes()).array


def write(path, array):
    path.write_bytes(imgio.encode(imgio.Picture(array, "png"), "png")[0])
    return path


class EnginePlugin:
    """Commands that exercise one engine feature each."""

    def __init__(self):
        self.calls = []

    @hookimpl
    def register_commands(self, register):
        def blur(x, ctx):
            import torch.nn.functional as F

            # Two 5x5 box blurs: receptive-field radius 4.
            for _ in range(2):
                x = F.avg_pool2d(F.pad(x, (2, 2, 2, 2), mode="replicate"), 5, stride=1)
            return x

        def oom_above_64(x, ctx):
            self.calls.append(tuple(x.shape[-2:]))
            if max(x.shape[-2:]) > 64:
                raise RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB")
            return x * 0.5

        def nan_in_low_precision(x, ctx):
            import torch

            self.calls.append(x.dtype)
            return x * float("nan") if x.dtype != torch.float32 else x.sqrt()

        def shuffle(x, ctx):
            import torch.nn.functional as F

            # Needs even sizes: pixel-unshuffle, a 3x3 mean, shuffle back.
            y = F.pixel_unshuffle(x, 2)
            y = F.avg_pool2d(F.pad(y, (1, 1, 1, 1), mode="replicate"), 3, stride=1)
            return F.pixel_shuffle(y, 2)

        def channels_seen(x, ctx):
            self.calls.append(x.shape[1])
            return x

        register(Command("blur", "Blur.", blur, tiling=Tiling(overlap=4)))
        register(Command("halve", "Halve.", oom_above_64, tiling=Tiling(overlap=0)))
        register(Command("sqrt", "Square root.", nan_in_low_precision, tiling=Tiling(overlap=0)))
        register(Command("shuffle", "Shuffle.", shuffle, tiling=Tiling(overlap=4, multiple=2)))
        register(Command("onechannel", "Per channel.", channels_seen, channels=1, tiling=Tiling(overlap=0)))

        def convolve(x, ctx):
            import torch

            net = ctx.model()
            self.calls.append(net.weight.is_contiguous(memory_format=torch.channels_last))
            return net(x)

        register(Command("convolve", "A fixed 3x3 convolution.", convolve, tiling=Tiling(overlap=1)))

        def nearest_x4(x, ctx):
            return x.repeat_interleave(4, -2).repeat_interleave(4, -1)

        def outscale(ctx):
            factor = ctx.options["outscale"]
            return None if factor is None else tuple(max(1, round(n * factor)) for n in ctx.image_size)

        def fail_below_the_first_row(x, ctx):
            if any(row > 0 for row, _ in ctx.offsets):
                raise RuntimeError("broke on a later row of tiles")
            self.calls.append(ctx.offsets)
            return x

        register(Command("latefail", "Fail after the first row of tiles.", fail_below_the_first_row,
                         tiling=Tiling(overlap=0)))

        register(Command("upfour", "Nearest x4, then --outscale.", nearest_x4, tiling=Tiling(scale=4, overlap=0),
                         params=[click.Option(["--outscale"], type=float)], output_size=outscale))

    @hookimpl
    def register_models(self, register):
        def load():
            import torch

            conv = torch.nn.Conv2d(3, 3, 3, padding=1, padding_mode="replicate")
            generator = torch.Generator().manual_seed(0)
            with torch.no_grad():
                conv.weight.copy_(torch.rand(conv.weight.shape, generator=generator) / 27)
                conv.bias.zero_()
            return conv

        register(Model("convolve-cl", "convolve", load, default=True, channels_last=True))
        register(Model("convolve-plain", "convolve", load))


@pytest.fixture
def engine_plugin(test_plugins):
    plugin = EnginePlugin()
    test_plugins.add(plugin, "engine-test")
    return plugin


@pytest.mark.parametrize("command,tile", [("blur", 40), ("blur", 64), ("tinyup", 48), ("tinyup", 33),
                                          ("shuffle", 50), ("shuffle", 37)])
def test_tiled_output_matches_untiled(imgen, engine_plugin, tmp_path, command, tile):
    source = write(tmp_path / "in.png", natural_image(131, 177, 3, seed=3))
    assert imgen([command, source, "--tile", "0", "-o", "whole.png"]).exit_code == 0
    result = imgen([command, source, "--tile", tile, "-o", "tiled.png"])
    assert result.exit_code == 0, result.stderr
    whole, tiled = read(tmp_path / "whole.png"), read(tmp_path / "tiled.png")
    assert whole.shape == tiled.shape
    assert np.abs(whole.astype(int) - tiled.astype(int)).max() <= 1


def test_models_declaring_channels_last_get_channels_last_weights(imgen, engine_plugin, tmp_path):
    source = write(tmp_path / "in.png", natural_image(64, 80, 3, seed=1))
    for model in ("convolve-cl", "convolve-plain"):
        result = imgen(["convolve", "--model", model, source, "-o", f"{model}.png"])
        assert result.exit_code == 0, result.stderr
    assert engine_plugin.calls == [True, False]
    fast, plain = read(tmp_path / "convolve-cl.png"), read(tmp_path / "convolve-plain.png")
    assert np.abs(fast.astype(int) - plain.astype(int)).max() <= 1
    assert np.abs(fast.astype(int) - read(source).astype(int)).max() > 8  # the convolution did run


def test_odd_sizes_are_padded_for_networks_that_need_a_multiple(imgen, engine_plugin, tmp_path):
    source = write(tmp_path / "in.png", natural_image(41, 57, 3))
    result = imgen(["shuffle", source, "-o", "out.png"])
    assert result.exit_code == 0, result.stderr
    assert read(tmp_path / "out.png").shape == (41, 57, 3)


def test_out_of_memory_halves_the_tile_and_carries_on(imgen, engine_plugin, tmp_path):
    source = write(tmp_path / "in.png", natural_image(150, 150, 3))
    result = imgen(["halve", "-v", source, "--tile", "256", "-o", "out.png"])
    assert result.exit_code == 0, result.stderr
    assert "out of memory" in result.stderr
    # Every call after the first of 64 pixels is at most 64 (on a GPU several tiles go in one call).
    sizes = [max(shape) for shape in engine_plugin.calls]
    assert 128 in sizes and 64 in sizes and max(sizes[sizes.index(64):]) <= 64, sizes
    expected = np.round(read(source) / 2 + 1e-6)
    assert np.abs(read(tmp_path / "out.png") - expected).max() <= 1


def test_reduced_precision_nan_is_retried_in_fp32(imgen, engine_plugin, tmp_path):
    import torch

    source = write(tmp_path / "in.png", natural_image(32, 32, 3))
    result = imgen(["sqrt", "-v", source, "--precision", "bf16", "-o", "out.png"])
    assert result.exit_code == 0, result.stderr
    assert engine_plugin.calls == [torch.bfloat16, torch.float32]
    assert "retrying in fp32" in result.stderr
    expected = np.sqrt(read(source) / 255) * 255
    assert np.abs(read(tmp_path / "out.png") - expected).max() <= 1


def test_auto_precision_is_fp32_on_cpu(imgen, engine_plugin, tmp_path):
    import torch

    source = write(tmp_path / "in.png", natural_image(16, 16, 3))
    assert imgen(["sqrt", source, "--device", "cpu"]).exit_code == 0
    assert engine_plugin.calls == [torch.float32]


def test_alpha_is_untouched_when_size_is_kept(imgen, test_plugins, tmp_path):
    rgba = natural_image(64, 80, 4, seed=5)
    source = write(tmp_path / "in.png", rgba)
    assert imgen(["invert", source, "-o", "out.png"]).exit_code == 0
    out = read(tmp_path / "out.png")
    assert out.shape == (64, 80, 4)
    assert np.array_equal(out[:, :, 3], rgba[:, :, 3])
    assert np.array_equal(out[:, :, :3], 255 - rgba[:, :, :3])


def test_a_command_can_set_the_output_alpha(imgen, test_plugins, tmp_path):
    rgba = natural_image(48, 64, 4, seed=6)
    source = write(tmp_path / "in.png", rgba)
    # The new alpha travels on through the chain; the input file is not touched.
    assert imgen(["flipalpha", source, "+", "invert", "-o", "out.png"]).exit_code == 0
    out = read(tmp_path / "out.png")
    assert np.array_equal(out[:, :, 3], 255 - rgba[:, :, 3])
    assert np.array_equal(out[:, :, :3], 255 - rgba[:, :, :3])
    assert np.array_equal(read(source), rgba)


def test_alpha_is_resized_with_the_image_without_dark_fringes(imgen, test_plugins, tmp_path):
    # A light disc on a fully transparent background whose hidden colour is black.
    yy, xx = np.mgrid[0:64, 0:64]
    inside = (yy - 32) ** 2 + (xx - 32) ** 2 < 20 ** 2
    rgba = np.zeros((64, 64, 4), np.uint8)
    rgba[inside] = (230, 200, 120, 255)
    source = write(tmp_path / "in.png", rgba)
    result = imgen(["tinyup", source, "-o", "out.png"])
    assert result.exit_code == 0, result.stderr
    out = read(tmp_path / "out.png")
    assert out.shape == (128, 128, 4)
    edge = (out[:, :, 3] > 20) & (out[:, :, 3] < 235)
    assert edge.sum() > 50
    # Edge pixels keep the disc's colour instead of being darkened toward the hidden black.
    assert out[edge][:, 0].mean() > 200


def test_grey_stays_grey_and_16_bit_stays_16_bit(imgen, test_plugins, tmp_path):
    grey16 = natural_image(40, 48, 1, dtype="uint16")
    source = write(tmp_path / "in.png", grey16)
    result = imgen(["tinyup", source, "-o", "out.png"])
    assert result.exit_code == 0, result.stderr
    out = read(tmp_path / "out.png")
    assert out.shape == (80, 96, 1) and out.dtype == np.uint16
    assert len(np.unique(out)) > 256  # real 16-bit values, not 8-bit ones scaled up


def test_single_channel_commands_see_one_channel_at_a_time(imgen, engine_plugin, tmp_path):
    source = write(tmp_path / "in.png", natural_image(20, 20, 3))
    assert imgen(["onechannel", source, "-o", "out.png"]).exit_code == 0
    assert engine_plugin.calls == [1]
    assert np.array_equal(read(tmp_path / "out.png"), read(source))


def test_bleed_colour_fills_only_transparent_pixels():
    import torch

    from imgen_cli.engine import bleed_colour

    rgb = torch.zeros(1, 3, 8, 8)
    rgb[..., :4] = 0.8
    alpha = torch.zeros(1, 1, 8, 8)
    alpha[..., :4] = 1
    filled = bleed_colour(rgb, alpha)
    assert torch.equal(filled[..., :4], rgb[..., :4])
    assert torch.allclose(filled[..., 4:], torch.full_like(filled[..., 4:], 0.8))


def test_tile_spans_cover_with_required_overlap():
    from imgen_cli.engine import _spans, _weights

    spans = _spans(1000, 256, 40, 4)
    assert spans[0][0] == 0 and spans[-1][1] == 1000
    assert all(b - a == 256 and a % 4 == 0 for a, b in spans)
    assert all(spans[i][1] - spans[i + 1][0] >= 40 for i in range(len(spans) - 1))
    total = np.zeros(2000)
    for i, (a, b) in enumerate(spans):
        total[2 * a:2 * b] += _weights(spans, i, 2, 8, "cpu").numpy()
    assert np.allclose(total, 1)


@pytest.mark.parametrize("overlap,multiple", [(2, 1), (26, 2), (96, 8), (128, 8)])
def test_tile_weights_sum_to_one_even_when_the_overlap_is_wide(overlap, multiple):
    from imgen_cli.engine import _weights, _windows

    # A --tile barely larger than the overlaps: windows must still not pile up three ramps.
    spans, feather = _windows(700, 256, overlap, multiple)
    assert spans[0][0] == 0 and spans[-1][1] == 700
    assert all(spans[i][1] - spans[i + 1][0] >= 2 * overlap for i in range(len(spans) - 1))
    total = np.zeros(700)
    for i, (a, b) in enumerate(spans):
        total[a:b] += _weights(spans, i, 1, feather, "cpu").numpy()
    assert np.allclose(total, 1)


# -- steps resolved once, descriptors, checked output, positions ---------------------------------


class CheckedPlugin:
    """Commands whose output breaks the process contract, a user-model command whose weights
    decide its precisions, and a position-dependent vignette."""

    def __init__(self):
        self.dtypes, self.builds = [], 0

    @hookimpl
    def register_commands(self, register):
        import click

        def crop(x, ctx):
            return x[..., 1:, :]

        def nan(x, ctx):
            return x * float("nan")

        def wrong_channels(x, ctx):
            return x[:, :1]

        def run(x, ctx):
            self.dtypes.append(x.dtype)
            return ctx.model()(x)

        def build(state):
            import torch

            from imgen_cli import Loaded

            self.builds += 1
            conv = torch.nn.Conv2d(3, 3, 1)
            conv.load_state_dict(state)
            # The weights file, not a registration, says which precisions this network is safe in.
            return Loaded(conv, scale=1, precisions=("fp32", "bf16"), architecture="Conv1x1")

        def vignette(x, ctx):
            import torch

            height, width = ctx.image_size
            rows = []
            for (top, left) in ctx.offsets:
                yy = torch.arange(top, top + x.shape[-2], dtype=x.dtype, device=x.device)[:, None]
                xx = torch.arange(left, left + x.shape[-1], dtype=x.dtype, device=x.device)[None, :]
                r2 = ((yy - height / 2) / height) ** 2 + ((xx - width / 2) / width) ** 2
                rows.append(1 - r2)
            return x * torch.stack(rows)[:, None]

        register(Command("crop", "Return one row too few.", crop, tiling=Tiling(overlap=0)))
        register(Command("nan", "Return NaN.", nan, tiling=Tiling(overlap=0)))
        register(Command("grey", "Return one channel of three.", wrong_channels, tiling=Tiling(overlap=0)))
        register(Command("runfile", "Run a user's 1x1 convolution.", run, build_model=build,
                         params=[click.Option(["--unused"], is_flag=True)], tiling=Tiling(overlap=0)))
        register(Command("vignette", "Darken towards the corners.", vignette, tiling=Tiling(overlap=0)))


@pytest.fixture
def checked_plugin(imgen_registry):
    plugin = CheckedPlugin()
    info = imgen_registry.add(plugin, "checked-test")
    assert info.error is None, info.error
    return plugin


@pytest.mark.parametrize("command,message", [
    ("crop", "crop: process returned shape (1, 3, 39, 48), expected (1, 3, 40, 48)"),
    ("grey", "grey: process returned shape (1, 1, 40, 48), expected (1, 3, 40, 48)"),
    ("nan", "nan: process returned NaN or infinite values"),
])
def test_wrong_shape_or_nan_output_is_a_plugin_error(imgen, checked_plugin, tmp_path, command, message):
    source = write(tmp_path / "in.png", natural_image(40, 48, 3))
    result = imgen([command, source, "--precision", "fp32", "-o", "out.png"])
    assert result.exit_code == 3, result.stderr
    assert result.stderr.strip() == f"imgen: error: {source}: {message}"
    assert not (tmp_path / "out.png").exists()


def test_user_model_runs_every_image_in_one_dtype_and_loads_once(imgen, imgen_registry, checked_plugin, tmp_path,
                                                                  monkeypatch):
    import torch
    from safetensors.torch import save_file

    from imgen_cli import engine, models

    folder = tmp_path / "models"
    folder.mkdir()
    save_file({"weight": torch.eye(3)[:, :, None, None] * 0.5, "bias": torch.zeros(3)},
              str(folder / "halve.safetensors"))
    monkeypatch.setenv("IMGEN_MODELS", str(folder))
    listings = []
    original = models.user_model_files
    monkeypatch.setattr(models, "user_model_files", lambda: listings.append(1) or original())
    # The precision policy sees a GPU; the tensors stay on the CPU (bf16 convolutions run there).
    monkeypatch.setattr(engine, "device_kind", lambda device: "cuda")
    sources = [write(tmp_path / f"{name}.png", natural_image(64, 64, 3, seed=i)) for i, name in enumerate("ab")]
    result = imgen(["runfile", "--model", "halve", *sources, "--tile", "32", "-o", "out"])
    assert result.exit_code == 0, result.stderr
    assert checked_plugin.builds == 1 and listings == [1]
    assert len(checked_plugin.dtypes) > 2 and set(checked_plugin.dtypes) == {torch.bfloat16}
    for source in sources:
        expected = read(source) / 2
        assert np.abs(read(tmp_path / "out" / source.name) - expected).max() <= 2
    assert not any(name.startswith("file:") for name in imgen_registry.models)  # kept out of the registry


def test_position_dependent_commands_see_tile_offsets(imgen, checked_plugin, tmp_path):
    source = write(tmp_path / "in.png", natural_image(131, 177, 3, seed=2))
    assert imgen(["vignette", source, "--tile", "0", "-o", "whole.png"]).exit_code == 0
    result = imgen(["vignette", source, "--tile", "48", "-o", "tiled.png"])
    assert result.exit_code == 0, result.stderr
    whole, tiled = read(tmp_path / "whole.png").astype(int), read(tmp_path / "tiled.png").astype(int)
    assert np.abs(whole - tiled).max() <= 1
    corner, centre = whole[:5, :5].mean() / read(source)[:5, :5].mean(), whole[60:70, 85:95].mean() / read(source)[60:70, 85:95].mean()
    assert corner < 0.6 < 0.95 < centre


def test_band_resize_equals_a_whole_resize():
    import torch

    from imgen_cli.filters import BandResize, resize

    for size_in, size_out in [((40, 50), (160, 200)), ((160, 200), (120, 150)), ((37, 53), (100, 30)),
                              ((1, 1), (3, 5)), ((100, 80), (13, 11))]:
        x = torch.rand(1, 3, *size_in, generator=torch.Generator().manual_seed(1))
        whole = resize(x, size_out)
        for band in (1, 7, 64):
            resizer, out, done = BandResize(size_in, size_out, rows=5), torch.zeros_like(whole), 0
            for row in range(0, size_in[0], band):
                finished = resizer.push(x[..., row:row + band, :])
                if finished is not None:
                    top, rows = finished
                    assert top == done  # output rows come in order, each once
                    out[..., top:top + rows.shape[-2], :] = rows
                    done = top + rows.shape[-2]
            assert done == size_out[0]
            assert float((out - whole).abs().max()) < 1e-4


def test_band_resize_follows_the_device_of_its_bands():
    # On a GPU the output bands are CUDA tensors; taps left on the CPU fail in index_select
    # ("Tensor on device cpu is not on the expected device"). The meta device stands in for
    # one here: it checks devices as CUDA does, without a GPU.
    import torch

    from imgen_cli.filters import BandResize

    resizer, rows = BandResize((40, 30), (100, 75)), 0
    for _ in range(0, 40, 8):
        finished = resizer.push(torch.empty(1, 3, 8, 30, device="meta"))
        if finished is not None:
            assert finished[1].device.type == "meta" and finished[1].shape[-1] == 75
            rows += finished[1].shape[-2]
    assert rows == 100


@pytest.mark.parametrize("outscale", [None, 3.0, 1.5])
def test_output_size_resizes_band_by_band_and_tiled_equals_untiled(imgen, engine_plugin, tmp_path, outscale):
    import torch

    from imgen_cli import resize

    image = natural_image(61, 75, 3, seed=7)
    source = write(tmp_path / "in.png", image)
    extra = ["--outscale", outscale] if outscale else []
    assert imgen(["upfour", source, *extra, "--tile", "0", "-o", "whole.png"]).exit_code == 0
    result = imgen(["upfour", source, *extra, "--tile", "40", "-o", "tiled.png"])
    assert result.exit_code == 0, result.stderr
    whole, tiled = read(tmp_path / "whole.png").astype(int), read(tmp_path / "tiled.png").astype(int)
    factor = outscale or 4
    assert whole.shape == tiled.shape == (round(61 * factor), round(75 * factor), 3)
    assert np.abs(whole - tiled).max() <= 1
    x = torch.from_numpy(image).permute(2, 0, 1)[None].float() / 255
    expected = resize(x.repeat_interleave(4, -2).repeat_interleave(4, -1), whole.shape[:2])
    expected = (expected[0].permute(1, 2, 0) * 255).round().numpy()
    assert np.abs(whole - expected).max() <= 1


def test_output_size_of_a_padded_tiny_image(imgen, engine_plugin, tmp_path):
    source = write(tmp_path / "in.png", natural_image(5, 3, 4, seed=8))
    result = imgen(["upfour", source, "--outscale", "2.5", "-o", "out.png"])
    assert result.exit_code == 0, result.stderr
    assert read(tmp_path / "out.png").shape == (12, 8, 4)


PEAK_RSS = """
import sys
sys.path.insert(0, sys.argv[1])
import numpy as np
from imgen_cli.api import Pipeline
from imgen_cli.plugins import get_registry
from imgen_cli.testing import natural_image
from test_engine import EnginePlugin

registry = get_registry()
registry.add(EnginePlugin(), "engine-test")
pipeline = Pipeline(["upfour"], registry=registry, device="cpu", tile=256)
pipeline.run_array(natural_image(64, 64, 1))  # imports and first-call set-up out of the measurement
image = natural_image(1536, 1536, 1)
with open("/proc/self/clear_refs", "w") as f:
    f.write("5")  # the peak (VmHWM) starts again from the present resident size
fields = lambda: {l.split(":")[0]: int(l.split()[1]) * 1024 for l in open("/proc/self/status") if l.startswith("Vm")}
start = fields()["VmRSS"]
out = pipeline.run_array(image)
assert out.shape == (6144, 6144, 1) and out.dtype == np.uint8
print(fields()["VmHWM"] - start)
"""


@pytest.mark.skipif(not os.path.exists("/proc/self/clear_refs"), reason="needs Linux's peak-RSS reset")
def test_the_output_is_never_held_as_a_whole_float_copy():
    import subprocess
    import sys
    from pathlib import Path

    # A fresh interpreter: this one's heap keeps what earlier tests freed, which would hide a peak.
    run = subprocess.run([sys.executable, "-c", PEAK_RSS, str(Path(__file__).parent)], capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    peak = int(run.stdout)
    # x4 of a 1536x1536 grey image: the uint8 output is 36 MiB, as float RGB it would be 432 MiB;
    # a full-width band of 256-pixel tiles, twice, would be about 300 MiB.
    assert peak < 6144 * 6144 * 3 * 4 / 2, f"{peak / 2**20:.0f} MiB"


STREAMED_PEAK = (PEAK_RSS.replace("tile=256", "tile=128").replace("natural_image(1536, 1536, 1)",
                                                                   "natural_image(2048, 2048, 1)")
                 .replace("out = pipeline.run_array(image)", """\
from imgen_cli import io as imgio
stream = imgio.PngFile(sys.argv[2])
out = pipeline.run_array(image, stream=stream)
assert out is None and stream.size == (8192, 8192)
stream.commit()""").replace("assert out.shape == (6144, 6144, 1) and out.dtype == np.uint8\n", ""))


@pytest.mark.skipif(not os.path.exists("/proc/self/clear_refs"), reason="needs Linux's peak-RSS reset")
def test_a_streamed_png_is_never_held_whole(tmp_path):
    import subprocess
    import sys
    from pathlib import Path

    out = tmp_path / "out.png"
    run = subprocess.run([sys.executable, "-c", STREAMED_PEAK, str(Path(__file__).parent), str(out)],
                         capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    peak = int(run.stdout)
    # x4 of 2048x2048 grey: the 64 MiB uint8 output is never made, only a band of rows (8192 x
    # 512 bytes) at a time beside one tile's floats. Held whole, the same run peaks at 83 MiB;
    # streamed it took 40 MiB.
    assert peak < 8192 * 8192, f"{peak / 2**20:.0f} MiB"
    expected = natural_image(2048, 2048, 1).repeat(4, axis=0).repeat(4, axis=1)
    assert np.array_equal(read(out), expected)
    assert os.listdir(tmp_path) == ["out.png"]


@pytest.mark.parametrize("args,channels", [
    (["blur", "--tile", "48"], 3), (["upfour", "--outscale", "2.5", "--tile", "40"], 3),
    (["blur", "--tile", "48", "--blend", "0.5"], 3), (["upfour", "--tile", "0"], 3),
    # alpha goes out with the colour rows: resized (x4, then 2.5), as is, or the command's own
    (["upfour", "--tile", "40"], 4), (["upfour", "--outscale", "2.5", "--tile", "40"], 2),
    (["blur", "--tile", "48"], 4), (["flipalpha"], 4)])
def test_a_png_file_written_while_tiling_has_the_bytes_of_one_written_after(imgen, engine_plugin, tmp_path, args,
                                                                              channels, monkeypatch):
    # To a file a PNG is streamed row band by row band as tiles finish (the outscale's resize
    # and the blend on the way); to stdout it is encoded after. Same pixels, same bytes.
    bands = []
    rows = imgio.PngFile.rows
    monkeypatch.setattr(imgio.PngFile, "rows", lambda self, band: (bands.append(len(band)), rows(self, band)))
    source = write(tmp_path / "in.png", natural_image(150, 130, channels))
    to_file = imgen([*args, source, "-o", "out.png"])
    assert sum(bands) == imgio.decode((tmp_path / "out.png").read_bytes()).array.shape[0]
    assert len(bands) > 1 or "0" in args or "flipalpha" in args, bands  # band by band when tiled
    to_stdout = imgen([*args, source, "-o", "-"])
    assert to_file.exit_code == 0 and to_stdout.exit_code == 0, to_file.stderr + to_stdout.stderr
    assert (tmp_path / "out.png").read_bytes() == to_stdout.stdout_bytes


@pytest.mark.parametrize("output", ["out.png", "new/deeper/out.png"])
def test_a_failure_while_streaming_leaves_no_file(imgen, engine_plugin, tmp_path, output):
    # nor the folders made for it
    source = write(tmp_path / "in.png", natural_image(150, 150, 3))
    result = imgen(["latefail", source, "--tile", "64", "-o", output])
    assert result.exit_code == 1 and "latefail failed: RuntimeError: broke on a later row" in result.stderr
    assert engine_plugin.calls, "no tile ran before the failure"
    assert sorted(os.listdir(tmp_path)) == ["in.png"]


def test_a_full_disk_while_streaming_is_one_error_and_leaves_no_file(imgen, engine_plugin, tmp_path, monkeypatch):
    import errno

    written = []

    def write_all(fd, data):  # the disk fills up after 20 KB, in the middle of the tiles
        if sum(written) + len(data) > 20_000:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        written.append(len(data))

    monkeypatch.setattr(imgio, "write_all", write_all)
    source = write(tmp_path / "in.png", natural_image(150, 150, 3))
    result = imgen(["blur", source, "--tile", "48", "-o", "out.png"])
    assert result.exit_code == 1, result.stderr
    assert result.stderr.strip() == "imgen: error: out.png: No space left on device"
    assert written and sorted(os.listdir(tmp_path)) == ["in.png"]


@pytest.mark.parametrize("size", [[], ["--width", "150"]])
def test_alpha_goes_into_the_output_band_by_band_as_a_whole_resize_would(imgen, test_plugins, tmp_path,
                                                                          monkeypatch, size):
    import torch

    from imgen_cli import engine
    from imgen_cli.filters import resize

    rgba = natural_image(60, 80, 4, seed=7)
    rgba[20:40, 30:50, 3] = 0  # hard edges, where resampling shows most
    source = write(tmp_path / "in.png", rgba)
    monkeypatch.setattr(engine, "ALPHA_BAND_BYTES", 1)  # one input row per band
    result = imgen(["tinyup", source, *size, "-o", "out.png"])
    assert result.exit_code == 0, result.stderr
    out = read(tmp_path / "out.png")
    # What the engine did before: the whole alpha plane resized to the step's size (x2), then to
    # the size asked for, as floats, then quantized.
    whole = resize(torch.from_numpy(rgba[:, :, 3] / 255.0).float()[None, None], (120, 160))
    if size:
        assert out.shape[:2] == (113, 150)
        whole = resize(whole, (113, 150))
    expected = engine._quantize(whole[0, 0], 255.0, np.uint8)
    assert np.abs(out[:, :, 3].astype(int) - expected).max() <= 1
    assert out[:, :, 3].min() == 0 and out[:, :, 3].max() > 200
