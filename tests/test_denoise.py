"""The denoise plugin through the real CLI: registration, loading, quality, estimator, tiling, formats."""

import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import DATA, assert_light_front_module, read, write
from imgen_cli.metrics import psnr

CROPS = ("bridge", "kite", "wood")


def noisy(clean: np.ndarray, sigma: float, seed: int = 0) -> np.ndarray:
    """Additive Gaussian noise on the 0-255 scale, clipped and rounded as a noisy PNG would be."""
    rng = np.random.default_rng(seed)
    return np.clip(np.round(clean + rng.normal(0, sigma, clean.shape)), 0, 255).astype(np.uint8)


def test_registers_command_and_model(imgen_registry):
    assert imgen_registry.command_owner["denoise"] == "denoise"
    model = imgen_registry.default_model("denoise")
    assert model.name == "denoise-ffdnet" and model.command == "denoise"
    assert Path(model.weights).stat().st_size < 5 * 2**20


def test_front_module_imports_no_torch():
    assert_light_front_module("imgen_denoise")


def test_model_loads_without_training_code():
    import torch

    import imgen_denoise

    net = imgen_denoise._load()
    assert net(torch.rand(1, 3, 33, 35), 0.1).shape == (1, 3, 33, 35)
    assert "imgen_denoise.train" not in sys.modules


@pytest.mark.parametrize("sigma", [15, 25, 50])
def test_blind_denoising_raises_psnr_on_real_crop(imgen, tmp_path, sigma):
    clean = read(DATA / "kite.png")[:128, :128]
    src = write(tmp_path / "noisy.png", noisy(clean, sigma))
    result = imgen(["denoise", src, "-o", "out.png"])
    assert result.exit_code == 0, result.stderr
    gain = psnr(read(tmp_path / "out.png"), clean) - psnr(read(src), clean)
    assert gain > 6, f"sigma {sigma}: only {gain:+.2f} dB"


def test_given_sigma_and_verbose_estimate(imgen, tmp_path):
    clean = read(DATA / "wood.png")[:128, :128]
    src = write(tmp_path / "noisy.png", noisy(clean, 25))
    result = imgen(["denoise", "-v", src, "-o", "blind.png"])
    assert result.exit_code == 0, result.stderr
    estimate = float(result.stderr.split("estimated noise sigma ")[1].split()[0])
    assert 20 <= estimate <= 30
    result = imgen(["denoise", "--sigma", "25", src, "-o", "given.png"])
    assert result.exit_code == 0, result.stderr
    assert psnr(read(tmp_path / "given.png"), clean) > psnr(read(src), clean) + 6


def test_strength_trades_smoothing(imgen, tmp_path):
    clean = read(DATA / "bridge.png")[:96, :96]
    src = write(tmp_path / "noisy.png", noisy(clean, 25))
    detail, quality = {}, {}
    for strength in ("0.25", "0.5", "1", "2"):
        result = imgen(["denoise", "--sigma", "25", "--strength", strength, src, "-o", f"s{strength}.png"])
        assert result.exit_code == 0, result.stderr
        out = read(tmp_path / f"s{strength}.png")
        detail[strength] = np.abs(np.diff(out.astype(np.float64), axis=1)).mean()
        quality[strength] = psnr(out, clean)
    # A lower level keeps more of the fine variation (texture and noise); the true level is best.
    assert detail["0.25"] > detail["0.5"] > detail["1"]
    assert quality["1"] > max(quality["0.5"], quality["2"])


@pytest.mark.parametrize("name", CROPS)
@pytest.mark.parametrize("grey", [False, True])
def test_estimator_within_20_percent(name, grey):
    import torch

    from imgen_denoise._estimate import estimate_sigma

    clean = read(DATA / f"{name}.png").astype(np.float64)
    if grey:
        clean = clean.mean(2, keepdims=True)
    for sigma in (5, 15, 25, 50):
        x = torch.from_numpy(noisy(clean, sigma, seed=sigma)).permute(2, 0, 1)[None].float() / 255
        if grey:
            x = x.expand(-1, 3, -1, -1)  # how the host hands grey images to an RGB command
        estimate = float(estimate_sigma(x)[0]) * 255
        assert abs(estimate - sigma) <= 0.2 * sigma, f"{name} sigma {sigma}: estimated {estimate:.1f}"


def test_tiled_matches_untiled(imgen, tmp_path):
    clean = read(DATA / "bridge.png")[:200, :230]
    src = write(tmp_path / "noisy.png", noisy(clean, 25))
    for tile in ("0", "160"):
        result = imgen(["denoise", "--sigma", "25", "--tile", tile, src, "-o", f"t{tile}.png"])
        assert result.exit_code == 0, result.stderr
    whole, tiled = read(tmp_path / "t0.png").astype(int), read(tmp_path / "t160.png").astype(int)
    assert np.abs(whole - tiled).max() <= 1


def test_grey_image_is_denoised_and_stays_grey(imgen, tmp_path):
    clean = np.asarray(Image.fromarray(read(DATA / "wood.png")[:128, :128]).convert("L"))
    src = write(tmp_path / "noisy.png", noisy(clean, 25))
    result = imgen(["denoise", src, "-o", "out.png"])
    assert result.exit_code == 0, result.stderr
    out = read(tmp_path / "out.png")
    assert out.shape == clean.shape
    assert psnr(out, clean) > psnr(read(src), clean) + 6


def test_16_bit_and_alpha_survive(imgen, tmp_path):
    from imgen_cli.io import Picture, decode, encode

    clean = read(DATA / "kite.png")[:96, :96].astype(np.float64) * 257
    rng = np.random.default_rng(1)
    rgb = np.clip(np.round(clean + rng.normal(0, 25 * 257, clean.shape)), 0, 65535)
    alpha = np.tile(np.linspace(0, 65535, 96), (96, 1))[..., None].round()
    (tmp_path / "in.png").write_bytes(encode(Picture(np.concatenate([rgb, alpha], 2).astype(np.uint16), "png"), "png")[0])
    result = imgen(["denoise", "in.png", "-o", "out.png"])
    assert result.exit_code == 0, result.stderr
    out = decode((tmp_path / "out.png").read_bytes()).array
    assert out.dtype == np.uint16 and out.shape == (96, 96, 4)
    assert (out[..., 3] == alpha[..., 0]).all()
    assert psnr(clean, out[..., :3], data_range=65535) > psnr(clean, rgb, data_range=65535) + 6


def test_tta_averages_four_flips_and_denoises_better(imgen, tmp_path):
    clean = read(DATA / "bridge.png")[:128, :128]
    src = write(tmp_path / "noisy.png", noisy(clean, 25))
    for name, extra in (("plain.png", []), ("tta.png", ["--tta"])):
        result = imgen(["denoise", "--sigma", "25", *extra, src, "-o", name])
        assert result.exit_code == 0, result.stderr
    plain, tta = psnr(read(tmp_path / "plain.png"), clean), psnr(read(tmp_path / "tta.png"), clean)
    assert tta > plain + 0.1, f"--tta {tta:.2f} dB, without {plain:.2f} dB"
