"""Quality metrics: the library (imgen_cli.metrics) against scikit-image and NIQE's behaviour on
real held-out photo crops, and `imgen metrics` through the real CLI."""

from pathlib import Path

import numpy as np
import pytest

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


# -- imgen metrics through the CLI ----------------------------------------------------------------


def save(path: Path, array: np.ndarray) -> Path:
    from imgen_cli import io

    data, _ = io.encode(io.Picture(array, "png"), io.format_for_path(path) or "png")
    path.write_bytes(data)
    return path


def scores(result) -> dict:
    import json

    assert result.stdout.lstrip().startswith("{"), result.stdout
    return json.loads(result.stdout)


def test_cli_file_pair_as_json_matches_the_library(imgen, tmp_path):
    from imgen_cli.metrics import ms_ssim, psnr, ssim

    ref = read(DATA / "kite.png")
    out = noisy(ref, 10)
    save(tmp_path / "out.png", out)
    result = imgen(["metrics", DATA / "kite.png", "out.png", "--json", "--channel", "y", "--crop-border", "2"])
    assert result.exit_code == 0, result.stderr
    report = scores(result)
    (pair,) = report["pairs"]
    conventions = dict(channel="y", crop_border=2)
    assert pair["psnr"] == pytest.approx(psnr(ref, out, **conventions))
    assert pair["ssim"] == pytest.approx(ssim(ref, out, **conventions))
    assert pair["ms_ssim"] == pytest.approx(ms_ssim(ref, out, **conventions))
    assert pair["bits"] == 8 and pair["error"] is None and report["failed"] == 0
    assert report["mean"]["psnr"] == pytest.approx(pair["psnr"])
    assert (report["channel"], report["crop_border"]) == ("y", 2)


def test_cli_folders_are_matched_by_stem_and_a_missing_match_fails_its_pair(imgen, tmp_path):
    (tmp_path / "ref").mkdir()
    (tmp_path / "out").mkdir()
    for name in ("bridge", "kite", "wood"):
        save(tmp_path / "ref" / f"{name}.png", read(DATA / f"{name}.png"))
    save(tmp_path / "out" / "bridge.png", noisy(read(DATA / "bridge.png"), 5))
    save(tmp_path / "out" / "kite.jpg", read(DATA / "kite.png"))  # JPEG q95: same stem, other format
    result = imgen(["metrics", "ref", "out", "--json"])
    assert result.exit_code == 1
    report = scores(result)
    by_ref = {Path(p["ref"]).stem: p for p in report["pairs"]}
    assert Path(by_ref["kite"]["out"]).name == "kite.jpg" and by_ref["kite"]["psnr"] > 35
    assert by_ref["bridge"]["psnr"] < by_ref["kite"]["psnr"]
    assert by_ref["wood"]["error"] and by_ref["wood"]["psnr"] is None
    assert report["failed"] == 1
    assert report["mean"]["psnr"] == pytest.approx((by_ref["bridge"]["psnr"] + by_ref["kite"]["psnr"]) / 2)
    errors = result.stderr.strip().splitlines()
    assert errors == [f"imgen: error: {Path('ref') / 'wood.png'}: no image named wood.* in out"]


def test_cli_mismatched_sizes_fail_with_both_sizes_unless_aligned(imgen, tmp_path):
    ref = read(DATA / "wood.png")
    save(tmp_path / "ref.png", ref)
    save(tmp_path / "sr.png", ref[:252, :255])  # what a x4 modcrop of 256x255 leaves
    save(tmp_path / "tiny.png", ref[:200, :200])
    result = imgen(["metrics", "ref.png", "sr.png"])
    assert result.exit_code == 1
    assert result.stderr.strip() == ("imgen: error: sr.png: size differs: 255x252, the reference ref.png is "
                                     "256x256 (--align scale crops a modcrop difference)")
    aligned = imgen(["metrics", "ref.png", "sr.png", "--align", "scale", "--json"])
    assert aligned.exit_code == 0, aligned.stderr
    assert scores(aligned)["pairs"][0]["psnr"] is None  # identical once cropped: infinite, null in JSON
    assert scores(aligned)["pairs"][0]["aligned"] == "255x252"
    refused = imgen(["metrics", "ref.png", "tiny.png", "--align", "scale"])
    assert refused.exit_code == 1 and "8 pixels or more" in refused.stderr


def test_cli_grey_against_rgb_and_the_table(imgen, tmp_path):
    grey = read(DATA / "bridge.png")[:, :, :1]
    save(tmp_path / "grey.png", grey)
    save(tmp_path / "rgb.png", np.repeat(grey, 3, axis=2))
    save(tmp_path / "rgb-noisy.png", noisy(np.repeat(grey, 3, axis=2), 8))
    same = imgen(["metrics", "grey.png", "rgb.png"])
    assert same.exit_code == 0, same.stderr
    lines = same.stdout.splitlines()
    assert lines[0].split() == ["ref", "out", "PSNR", "(dB)", "SSIM", "MS-SSIM"]
    assert lines[1].split()[:4] == ["grey.png", "rgb.png", "inf", "1.0000"]
    assert lines[-1] == "channel RGB, crop border 0"
    differ = scores(imgen(["metrics", "grey.png", "rgb-noisy.png", "--json"]))["pairs"][0]
    assert 25 < differ["psnr"] < 35


def test_cli_16_bit_images_are_compared_in_16_bits(imgen, tmp_path):
    from imgen_cli.metrics import psnr

    ref = read(DATA / "kite.png").astype(np.uint16) * 257
    out = ref + np.random.default_rng(2).integers(0, 200, ref.shape).astype(np.uint16)
    save(tmp_path / "ref16.png", ref)
    save(tmp_path / "out16.png", out)
    report = scores(imgen(["metrics", "ref16.png", "out16.png", "--json"]))
    pair = report["pairs"][0]
    assert pair["bits"] == 16 and pair["psnr"] == pytest.approx(psnr(ref, out))
    assert 55 < pair["psnr"] < 80, "an 8-bit comparison would see a difference of at most one level"
    save(tmp_path / "ref8.png", read(DATA / "kite.png"))
    mixed = scores(imgen(["metrics", "ref8.png", "ref16.png", "--json"]))["pairs"][0]
    assert mixed["bits"] == 16 and mixed["psnr"] is None, "x257 is exactly 8 bits widened to 16"


def test_cli_csv_has_a_row_per_pair_and_the_mean(imgen, tmp_path):
    import csv

    save(tmp_path / "out.png", noisy(read(DATA / "kite.png"), 10))
    result = imgen(["metrics", DATA / "kite.png", "out.png", "--csv"])
    assert result.exit_code == 0, result.stderr
    rows = list(csv.reader(result.stdout.splitlines()))
    assert rows[0] == ["ref", "out", "psnr", "ssim", "ms_ssim", "error"]
    assert rows[1][1] == "out.png" and 27 < float(rows[1][2]) < 30
    assert rows[2][0] == "mean" and rows[2][2] == rows[1][2]


def test_cli_no_reference_niqe_names_its_parameters(imgen, tmp_path):
    (tmp_path / "set").mkdir()
    clean = read(ROOT / "examples" / "images" / "raindrops.png")
    save(tmp_path / "set" / "clean.png", clean)
    save(tmp_path / "set" / "noisy.png", noisy(clean, 20))
    save(tmp_path / "set" / "blurred.png", blurred(clean, 3))
    save(tmp_path / "small.png", clean[:64, :64])
    result = imgen(["metrics", "--no-ref", "set", "small.png", "--json"])
    assert result.exit_code == 1
    report = scores(result)
    by_name = {Path(r["image"]).name: r for r in report["images"]}
    assert by_name["clean.png"]["niqe"] < by_name["blurred.png"]["niqe"]
    assert by_name["clean.png"]["niqe"] < by_name["noisy.png"]["niqe"]
    assert report["params"].startswith("built-in (19 images") and report["params_sha256"]
    assert result.stderr.strip() == "imgen: error: small.png: NIQE needs at least 96x96 pixels, not 64x64"
    table = imgen(["metrics", "--no-ref", "set/clean.png"])
    assert table.exit_code == 0 and "parameters: built-in (19 images" in table.stdout


def test_cli_fit_niqe_writes_a_model_the_scores_then_name(imgen, tmp_path):
    from imgen_cli.testing import natural_image

    (tmp_path / "pristine").mkdir()
    for seed in range(3):
        save(tmp_path / "pristine" / f"p{seed}.png", natural_image(480, 480, seed=seed))
    save(tmp_path / "pristine" / "held.png", natural_image(480, 480, seed=9))
    result = imgen(["metrics", "fit-niqe", "pristine", "--exclude", "held", "-o", "mine.npz"])
    assert result.exit_code == 0, result.stderr
    assert "from 3 images (1 left out)" in result.stderr
    report = scores(imgen(["metrics", "--no-ref", "pristine/held.png", "--niqe-params", "mine.npz", "--json"]))
    assert report["params_file"] == "mine.npz" and report["params"].startswith("mine.npz (3 images")
    again = imgen(["metrics", "fit-niqe", "pristine", "-o", "mine.npz"])
    assert again.exit_code == 1 and "exists" in again.stderr
    bad = imgen(["metrics", "--no-ref", "pristine/held.png", "--niqe-params", "pristine/held.png"])
    assert bad.exit_code == 2 and "cannot read NIQE parameters" in bad.stderr
    usage = imgen(["metrics", "fit-niqe", "--help"]).stdout.splitlines()[0]
    assert usage.endswith(" metrics fit-niqe [OPTIONS] DIR"), usage


@pytest.mark.parametrize("args, message", [
    (["a.png"], "give REF OUT"),
    (["a.png", "b.png", "c.png"], "got 3 paths"),
    (["a.png", "b.png", "--json", "--csv"], "exclude each other"),
    (["--no-ref", "a.png", "--crop-border", "4"], "--crop-border applies to REF OUT"),
    (["a.png", "b.png", "--niqe-params", "p.npz"], "goes with --no-ref"),
    (["--json", "fit-niqe", "dir"], "fit-niqe comes first"),
])
def test_cli_usage_errors_exit_2_in_one_line(imgen, args, message):
    result = imgen(["metrics", *args])
    assert result.exit_code == 2
    assert len(result.stderr.strip().splitlines()) == 1 and message in result.stderr


def test_cli_unreadable_pair_fails_with_one_line_and_status_1(imgen, tmp_path):
    (tmp_path / "junk.png").write_bytes(b"not an image")
    result = imgen(["metrics", DATA / "kite.png", "junk.png"])
    assert result.exit_code == 1
    assert result.stderr.strip().splitlines() == [
        "imgen: error: junk.png: not a supported image (PNG, JPEG, WebP, TIFF, BMP or GIF)"]


def test_psnr_over_a_mask_counts_only_its_pixels():
    from imgen_cli.metrics import psnr

    ref = read(DATA / "kite.png")
    out = ref.copy()
    mask = np.zeros(ref.shape[:2], bool)
    mask[100:140, 60:120] = True
    out[mask] = noisy(ref, 20)[mask]
    out[:20] = 0  # outside the mask: ignored
    diff = ref[mask].astype(np.float64) - out[mask]
    assert psnr(ref, out, mask=mask) == pytest.approx(10 * np.log10(255**2 / np.mean(diff**2)))
    assert psnr(ref, out, mask=mask[:, :, None], crop_border=10) == pytest.approx(psnr(ref, out, mask=mask))
    with pytest.raises(ValueError, match="selects no pixel"):
        psnr(ref, out, mask=np.zeros_like(mask))
