"""Quality metrics: the library (imgen_cli.metrics) against scikit-image and NIQE's behaviour on
real held-out photo crops, and `imgen metrics` through the real CLI."""

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import DATA, read

ROOT = Path(__file__).resolve().parent.parent
CROPS = [DATA / "bridge.png", DATA / "kite.png", DATA / "wood.png", ROOT / "examples" / "images" / "raindrops.png"]


def noisy(image: np.ndarray, sigma: float, seed: int = 0) -> np.ndarray:
    top = np.iinfo(image.dtype).max
    rng = np.random.default_rng(seed)
    return np.clip(np.round(image + rng.normal(0, sigma * top / 255, image.shape)), 0, top).astype(image.dtype)


def blurred(image: np.ndarray, sigma: float) -> np.ndarray:
    from scipy import ndimage

    if sigma == 0:
        return image
    smooth = ndimage.gaussian_filter(image.astype(np.float32), (sigma, sigma, 0))
    return np.clip(np.round(smooth), 0, 255).astype(np.uint8)


def jpeg(image: np.ndarray, quality: int) -> np.ndarray:
    from imgen_cli import io

    data, _ = io.encode(io.Picture(image, "png"), "jpeg", quality=quality)
    return io.decode(data).array


def distorted_pairs():
    for path in CROPS:
        clean = read(path)
        yield path.stem, clean, noisy(clean, 10)
        yield path.stem, clean, blurred(clean, 1.5)
        yield path.stem, clean, jpeg(clean, 30)


# -- the library ---------------------------------------------------------------------------------


def test_psnr_and_ssim_agree_with_scikit_image_on_real_photo_pairs():
    from skimage.metrics import peak_signal_noise_ratio, structural_similarity

    from imgen_cli.metrics import psnr, rgb_to_y, ssim

    wang = dict(gaussian_weights=True, sigma=1.5, use_sample_covariance=False)
    for name, ref, out in distorted_pairs():
        assert psnr(ref, out) == pytest.approx(peak_signal_noise_ratio(ref, out, data_range=255), abs=0.01), name
        expected = structural_similarity(ref, out, data_range=255, channel_axis=2, **wang)
        assert ssim(ref, out) == pytest.approx(expected, abs=0.001), name
        y_ref, y_out = rgb_to_y(ref), rgb_to_y(out)
        assert psnr(ref, out, channel="y") == pytest.approx(
            peak_signal_noise_ratio(y_ref, y_out, data_range=255), abs=0.01), name
        assert ssim(ref, out, channel="y", crop_border=4) == pytest.approx(
            structural_similarity(y_ref[4:-4, 4:-4], y_out[4:-4, 4:-4], data_range=255, **wang), abs=0.001), name


def test_16_bit_pairs_are_compared_in_16_bits_like_scikit_image():
    from skimage.metrics import peak_signal_noise_ratio, structural_similarity

    from imgen_cli.metrics import psnr, ssim

    ref = read(DATA / "kite.png").astype(np.uint16) * 257 + np.random.default_rng(1).integers(0, 257, (256, 256, 3)).astype(np.uint16)
    out = noisy(ref, 3)
    assert psnr(ref, out) == pytest.approx(peak_signal_noise_ratio(ref, out, data_range=65535), abs=0.01)
    assert ssim(ref, out) == pytest.approx(structural_similarity(
        ref, out, data_range=65535, channel_axis=2, gaussian_weights=True, sigma=1.5, use_sample_covariance=False),
        abs=0.001)
    # The low byte matters: an 8-bit comparison of the same pair would see no difference at all.
    assert psnr(ref, ref + 1) == pytest.approx(20 * np.log10(65535), abs=1e-6)


def test_rgb_to_y_is_bt601_studio_swing_as_matlab_computes_it():
    from imgen_cli.metrics import rgb_to_y

    pixels = np.array([[[255, 255, 255], [0, 0, 0], [255, 0, 0], [0, 255, 0], [0, 0, 255]]], np.uint8)
    assert rgb_to_y(pixels)[0] == pytest.approx([235, 16, 16 + 65.481, 16 + 128.553, 16 + 24.966])
    assert rgb_to_y(pixels.astype(np.uint16) * 257)[0, :2] == pytest.approx([235 * 257, 16 * 257])
    assert rgb_to_y(np.array([[255, 0]], np.uint8))[0] == pytest.approx([235, 16])  # grey counts as R = G = B


def test_crop_border_ignores_what_lies_in_the_border():
    from imgen_cli.metrics import psnr, ssim

    ref = read(DATA / "wood.png")
    out = ref.copy()
    out[:3] = 0
    out[:, -3:] = 255
    assert psnr(ref, out, crop_border=3) == float("inf")
    assert ssim(ref, out, crop_border=3) == pytest.approx(1.0)
    assert psnr(ref, out) < 25
    with pytest.raises(ValueError, match="leaves nothing"):
        psnr(ref, out, crop_border=128)


def test_ms_ssim_is_one_for_identical_images_and_falls_with_distortion():
    from imgen_cli.metrics import ms_ssim

    ref = read(ROOT / "examples" / "images" / "raindrops.png")
    assert ms_ssim(ref, ref) == pytest.approx(1.0)
    scores = [ms_ssim(ref, noisy(ref, sigma)) for sigma in (5, 15, 30)]
    assert 1 > scores[0] > scores[1] > scores[2] > 0
    with pytest.raises(ValueError, match="176 pixels"):
        ms_ssim(ref[:150], ref[:150])


def test_grey_against_colour_counts_as_r_equals_g_equals_b():
    from imgen_cli.metrics import psnr, ssim

    grey = read(DATA / "bridge.png")[:, :, :1]
    colour = np.repeat(grey, 3, axis=2)
    assert psnr(grey, colour) == float("inf") and psnr(grey[:, :, 0], colour, channel="y") == float("inf")
    assert ssim(grey, noisy(colour, 10)) < 0.9


def test_mismatched_sizes_are_refused_with_both_sizes():
    from imgen_cli.metrics import psnr

    with pytest.raises(ValueError, match="256x256 .reference. and 255x256"):
        psnr(read(DATA / "kite.png"), read(DATA / "kite.png")[:, :255])


def test_niqe_rises_with_blur_noise_and_jpeg_on_held_out_crops():
    from imgen_cli.metrics import niqe

    crops = [read(path) for path in CROPS]
    for name, distort, steps in (("blur", blurred, (0, 1, 2, 3)), ("noise", noisy, (0, 5, 10, 20)),
                                 ("jpeg", jpeg, (90, 50, 30, 10))):
        means = [np.mean([niqe(distort(crop, step)) for crop in crops]) for step in steps]
        assert all(b > a for a, b in zip(means, means[1:])), f"{name} {steps}: {np.round(means, 2)}"


def test_shipped_niqe_params_say_what_they_are():
    from imgen_cli.metrics import load_params

    params = load_params()
    assert params.mean.shape == (36,) and params.cov.shape == (36, 36)
    assert params.images == 19 and params.patches > 100
    assert params.describe().startswith("built-in (19 images")
    assert np.all(np.linalg.eigvalsh(params.cov) > -1e-9), "a covariance is positive semi-definite"


def test_fit_niqe_round_trips_and_refuses_too_little_data(tmp_path):
    from imgen_cli.metrics import fit_niqe, load_params, niqe
    from imgen_cli.testing import natural_image

    images = [natural_image(480, 480, seed=seed) for seed in range(3)]
    params = fit_niqe(images)
    params.save(tmp_path / "p.npz")
    again = load_params(tmp_path / "p.npz")
    assert np.array_equal(again.mean, params.mean) and again.patches == params.patches
    assert again.to_bytes() == params.to_bytes(), "the file is the same for the same model"
    assert niqe(images[0], again) < niqe(blurred(images[0], 3), again)
    with pytest.raises(ValueError, match="too few"):
        fit_niqe([read(DATA / "kite.png")])
    np.savez(tmp_path / "other.npz", mean=np.zeros(36))
    with pytest.raises(ValueError, match="not an imgen NIQE parameter file"):
        load_params(tmp_path / "other.npz")


def test_niqe_refuses_images_smaller_than_a_patch_and_flat_ones():
    from imgen_cli.metrics import niqe

    with pytest.raises(ValueError, match="at least 96x96"):
        niqe(np.zeros((95, 200, 3), np.uint8))
    with pytest.raises(ValueError, match="no textured patch"):
        niqe(np.full((200, 200), 128, np.uint8))
