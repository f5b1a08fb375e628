"""The Python API: the CLI's engine on arrays, PIL images and paths, models loaded once."""

import numpy as np
import pytest
from PIL import Image

from imgen_cli.api import Pipeline, run
from imgen_cli.errors import PluginError, UsageError
from imgen_cli.testing import natural_image

from conftest import count_loads


def test_numpy_in_numpy_out_same_as_cli(imgen, test_plugins, tmp_image, tmp_path):
    source = tmp_image("in.png")
    assert imgen(["invert", "+", "tinyup", source, "-o", "cli.png"]).exit_code == 0
    array = np.asarray(Image.open(source))
    out = Pipeline("invert + tinyup")(array)
    assert out.dtype == np.uint8 and out.shape == (192, 256, 3)
    assert np.array_equal(out, np.asarray(Image.open(tmp_path / "cli.png")))


def test_pil_grey_path_and_float_inputs(test_plugins, tmp_image):
    pipeline = Pipeline(["tinyup"], tile=64)
    pil = Image.fromarray(natural_image(40, 50, 1)[:, :, 0])
    out = pipeline(pil)
    assert isinstance(out, Image.Image) and out.mode == "L" and out.size == (100, 80)
    from_path = pipeline(tmp_image("p.png"))
    assert from_path.shape == (192, 256, 3)
    floats = pipeline(natural_image(20, 20, 3).astype(np.float32) / 255)
    assert floats.dtype == np.float32 and floats.shape == (40, 40, 3) and 0 <= floats.min() <= floats.max() <= 1


def test_extra_inputs_as_arrays(test_plugins):
    photo = natural_image(30, 40, 3)
    mask = np.zeros((30, 40), np.uint8)
    mask[5:10] = 255
    out = run("fill --value 0", photo, mask=mask)
    assert (out[5:10] == 0).all() and np.array_equal(out[10:], photo[10:])
    with pytest.raises(UsageError):
        run("fill", photo)


def test_models_are_loaded_once_per_pipeline(test_plugins, monkeypatch):
    calls = count_loads(test_plugins, "tiny-x2", monkeypatch)
    pipeline = Pipeline("tinyup")
    for seed in range(3):
        pipeline(natural_image(16, 16, 3, seed=seed))
    assert len(calls) == 1


def test_bad_chains_raise_imgens_usage_error_not_clicks(test_plugins):
    import click

    cases = {"nosuchcommand": "no such command 'nosuchcommand'",
             "fill --value notanumber": "'notanumber' is not a valid float",
             "invert --no-such-option": "--no-such-option",
             "invert +": "empty step in chain",
             "tinyup --model nope": "unknown model 'nope'"}
    for chain, message in cases.items():
        with pytest.raises(UsageError, match=message) as caught:
            Pipeline(chain)
        assert not isinstance(caught.value, click.ClickException)
        assert caught.value.exit_code == 2


def test_broken_plugin_raises_plugin_error(imgen_registry):
    from imgen_cli.plugins import PluginInfo

    info = PluginInfo(name="gone", module="gone", error="ImportError: nope")
    imgen_registry.broken_commands["gone"] = info
    with pytest.raises(PluginError, match="nope"):
        Pipeline("gone")
