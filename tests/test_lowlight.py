"""The lowlight plugin through the real CLI: registration, brightening, leaving good photos alone."""

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import DATA, assert_light_front_module, read, write
from imgen_cli.metrics import psnr


def darken(array: np.ndarray, k: float = 0.25, g: float = 2.2, top: int = 255) -> np.ndarray:
    """The under-exposure of the benchmark, without noise: k * x^g."""
    x = array.astype(np.float64) / top
    return np.round(k * x**g * top).astype(array.dtype)


def run(imgen, args) -> None:
    result = imgen(["lowlight", *map(str, args)])
    assert result.exit_code == 0, result.stderr


def test_registers_command_and_model(imgen_registry):
    assert imgen_registry.command_owner["lowlight"] == "lowlight"
    command = imgen_registry.commands["lowlight"]
    assert command.tiling.tileable is False
    model = imgen_registry.default_model("lowlight")
    assert model.name == "lowlight-curves" and model.command == "lowlight"
    assert Path(model.weights).stat().st_size < 5 * 2**20


def test_front_module_imports_no_torch():
    assert_light_front_module("imgen_lowlight")


def test_weights_load_without_training_code():
    code = (
        "import sys, imgen_lowlight; net = imgen_lowlight._load(); "
        "assert 'imgen_lowlight.train' not in sys.modules; "
        "assert sum(p.numel() for p in net.parameters()) < 200_000"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


@pytest.mark.parametrize("name", ["kite.png", "wood.png"])
def test_dark_photo_gets_brighter_without_clipping(imgen, tmp_path, name):
    original = read(DATA / name)
    dark = darken(original)
    run(imgen, [write(tmp_path / "dark.png", dark), "-o", "out.png"])
    out = read(tmp_path / "out.png")
    assert out.shape == original.shape and out.dtype == np.uint8
    assert out.mean() > 3 * dark.mean() and out.mean() > 0.6 * original.mean()
    assert np.mean(out == 255) < 0.05  # highlights kept, not blown out
    # Closer to the photo before darkening than the dark input is (a crop's own exposure is
    # unknown to the model, so not by as much as on whole photos).
    assert psnr(out, original) > psnr(dark, original) + 3


@pytest.mark.parametrize("name", ["bridge.png", "kite.png", "wood.png"])
def test_well_exposed_photo_stays_close(imgen, tmp_path, name):
    original = read(DATA / name)
    run(imgen, [DATA / name, "-o", "out.png"])
    assert psnr(read(tmp_path / "out.png"), original) > 30


def test_options_ask_for_more_or_less(imgen, tmp_path):
    dark = darken(read(DATA / "kite.png"))
    src = write(tmp_path / "dark.png", dark)
    means = {}
    for name, args in {
        "none": ["--strength", "0"],
        "half": ["--strength", "0.5"],
        "default": [],
        "brighter": ["--exposure", "0.6"],
    }.items():
        run(imgen, [src, "-o", f"{name}.png", *args])
        means[name] = read(tmp_path / f"{name}.png").astype(np.float64).mean()
    assert abs(means["none"] - dark.mean()) < 0.5  # strength 0 leaves the image as it is
    assert means["none"] < means["half"] < means["default"] < means["brighter"]


def test_sixteen_bit_in_sixteen_bit_out(imgen, tmp_path):
    original = read(DATA / "kite.png").astype(np.uint16) * 257
    dark = darken(original, top=65535)
    src = tmp_path / "dark16.png"
    Image.fromarray(dark[..., 1]).save(src)  # PIL writes 16-bit greyscale PNGs, not RGB
    run(imgen, [src, "-o", "out16.png"])
    out = read(tmp_path / "out16.png")
    assert out.shape == dark[..., 1].shape and out.dtype in (np.uint16, np.int32)
    assert out.mean() > 3 * dark[..., 1].mean()
    # Curves are applied in float to 16-bit values, so the lifted shadows keep fine steps.
    assert len(np.unique(out)) > 4 * len(np.unique(darken(read(DATA / "kite.png"))[..., 1]))


def test_alpha_is_untouched(imgen, tmp_path):
    dark = darken(read(DATA / "wood.png"))
    alpha = np.tile(np.linspace(0, 255, dark.shape[1]).astype(np.uint8), (dark.shape[0], 1))
    src = write(tmp_path / "rgba.png", np.dstack([dark, alpha]))
    run(imgen, [src, "-o", "out.png"])
    out = read(tmp_path / "out.png")
    assert out.shape == (*dark.shape[:2], 4)
    np.testing.assert_array_equal(out[..., 3], alpha)
    visible = alpha > 0
    assert out[..., :3][visible].mean() > 2 * dark[visible].mean()


def test_never_tiled_so_takes_no_tile_option(imgen, tmp_path):
    src = write(tmp_path / "dark.png", darken(read(DATA / "bridge.png")))
    result = imgen(["lowlight", src, "-o", "tiled.png", "--tile", "64"])
    assert result.exit_code == 2 and "lowlight processes each image whole, never in tiles" in result.stderr
    assert "--tile" not in imgen(["lowlight", "--help"]).stdout
