import imageio.v3 as iio
import numpy as np
import pytest


def laplacian_energy(image: np.ndarray) -> float:
    """Mean squared 4-neighbour Laplacian: grows when edges get crisper."""
    x = image.astype(np.float64)
    lap = 4 * x[1:-1, 1:-1] - x[:-2, 1:-1] - x[2:, 1:-1] - x[1:-1, :-2] - x[1:-1, 2:]
    return float((lap ** 2).mean())


def sharpened(imgen, source, *options):
    result = imgen(["sharpen", source, "-o", "out.png", "--overwrite", *options])
    assert result.exit_code == 0, result.stderr
    return iio.imread("out.png")


def test_sharpen_is_listed(imgen):
    result = imgen(["--help"])
    assert "sharpen" in result.output and "unsharp mask" in result.output


def test_sharpening_adds_edge_contrast_and_keeps_brightness(imgen, tmp_image):
    source = tmp_image()
    original = iio.imread(source)
    out = sharpened(imgen, source, "--amount", "1.5")
    assert out.shape == original.shape and out.dtype == original.dtype
    assert laplacian_energy(out) > 1.5 * laplacian_energy(original)
    # An unsharp mask adds a zero-mean detail layer: the average brightness stays put.
    assert abs(out.astype(float).mean() - original.astype(float).mean()) < 1.0


def test_zero_amount_changes_nothing(imgen, tmp_image):
    source = tmp_image()
    assert np.array_equal(sharpened(imgen, source, "--amount", "0"), iio.imread(source))


def test_threshold_leaves_faint_detail_alone(imgen, tmp_image):
    source = tmp_image()
    original = iio.imread(source).astype(int)
    full = sharpened(imgen, source, "--amount", "2").astype(int)
    gated = sharpened(imgen, source, "--amount", "2", "--threshold", "0.04").astype(int)
    changed_full = (np.abs(full - original) > 1).mean()
    changed_gated = (np.abs(gated - original) > 1).mean()
    assert changed_gated < 0.5 * changed_full  # flat, noisy areas are kept as they were...
    assert laplacian_energy(gated) > 1.2 * laplacian_energy(original)  # ...while edges are sharpened


@pytest.mark.parametrize("radius", ["0.7", "3"])
def test_tiles_match_the_whole_image(imgen, tmp_image, radius):
    source = tmp_image(height=150, width=170)
    whole = sharpened(imgen, source, "--radius", radius, "--tile", "0").astype(int)
    tiled = sharpened(imgen, source, "--radius", radius, "--tile", "48").astype(int)
    assert np.abs(whole - tiled).max() <= 1


def test_grey_stays_grey_and_16_bit_stays_16_bit(imgen, tmp_image):
    source = tmp_image("grey.png", channels=1, dtype="uint16")
    out = sharpened(imgen, source)
    assert out.ndim == 2 and out.dtype == np.uint16
    assert laplacian_energy(out) > laplacian_energy(iio.imread(source))


def test_bad_option_is_a_usage_error(imgen, tmp_image):
    result = imgen(["sharpen", tmp_image(), "--radius", "0"])
    assert result.exit_code == 2
