"""The restyle plugin through the real CLI: named and file styles, strength, colour preservation,
sizes, grey styles, 16-bit RGBA and tiling."""

import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import DATA, assert_light_front_module, read

STYLES = Path(__file__).resolve().parent.parent / "plugins" / "imgen_restyle" / "styles"


@pytest.fixture
def restyle(imgen_registry, imgen):
    """The CLI with the restyle plugin registered (also when its entry point is not installed)."""
    import imgen_restyle

    if "restyle" not in imgen_registry.command_owner:
        imgen_registry.add(imgen_restyle, "restyle")
    return imgen


def write(path: Path, array: np.ndarray, mode=None) -> Path:
    Image.fromarray(array, mode=mode).save(path)
    return path


def lab(rgb: np.ndarray) -> np.ndarray:
    import torch

    from imgen_restyle._color import rgb_to_lab

    x = torch.from_numpy(np.array(rgb[..., :3])).permute(2, 0, 1)[None].float() / 255
    return rgb_to_lab(x)[0].reshape(3, -1).T.numpy()


def colour_distance(a: np.ndarray, b: np.ndarray) -> float:
    """Distance between the Lab means and standard deviations of two images."""
    la, lb = lab(a), lab(b)
    return float(np.abs(la.mean(0) - lb.mean(0)).sum() + np.abs(la.std(0) - lb.std(0)).sum())


def grad_correlation(a: np.ndarray, b: np.ndarray) -> float:
    def grad(im):
        luma = im[..., :3].astype(np.float64) @ [0.299, 0.587, 0.114]
        return np.hypot(np.diff(luma, axis=0)[:, :-1], np.diff(luma, axis=1)[:-1]).ravel()

    return float(np.corrcoef(grad(a), grad(b))[0, 1])


@pytest.fixture
def photo(tmp_path) -> Path:
    return write(tmp_path / "photo.png", read(DATA / "wood.png")[:128, :160])


def test_registers_command_model_and_styles(restyle, imgen_registry):
    model = imgen_registry.default_model("restyle")
    assert model.name == "restyle-adain"
    assert Path(model.weights).stat().st_size < 5 * 2**20
    styles = sorted(p.stem for p in STYLES.glob("*.jpg"))
    assert len(styles) >= 4 and (STYLES / "CREDITS.md").is_file()
    help_text = restyle(["restyle", "--help"]).stdout
    assert all(name in help_text for name in styles)


def test_front_module_imports_no_torch():
    assert_light_front_module("imgen_restyle")


def test_model_loads_without_training_code():
    import torch

    import imgen_restyle

    net = imgen_restyle._load()
    x = torch.rand(1, 3, 36, 44)
    assert net(x).shape == x.shape
    assert "imgen_restyle.train" not in sys.modules


def test_style_file_any_size(restyle, tmp_path, photo):
    style = write(tmp_path / "style.png", read(DATA / "wood.png")[:97, :211])
    result = restyle(["restyle", "--style", style, photo, "-o", "out.png"])
    assert result.exit_code == 0, result.stderr
    out, src = read(tmp_path / "out.png"), read(photo)
    assert colour_distance(out, read(style)) < 0.5 * colour_distance(src, read(style))


def test_unknown_style_name_is_a_usage_error(restyle, photo):
    result = restyle(["restyle", "--style", "no-such-style", photo, "-o", "out.png"])
    assert result.exit_code != 0
    assert "no-such-style" in result.stderr


def test_named_style_strength_and_preserve_color(restyle, tmp_path, photo):
    for strength in ("0", "0.5", "1"):
        result = restyle(["restyle", "--style", "autumn", "--strength", strength, photo, "-o", f"s{strength}.png"])
        assert result.exit_code == 0, result.stderr
    result = restyle(["restyle", "--style", "autumn", "--preserve-color", photo, "-o", "keep.png"])
    assert result.exit_code == 0, result.stderr
    src, style = read(photo), read(STYLES / "autumn.jpg")
    zero, half, full, keep = (read(tmp_path / f"{name}.png") for name in ("s0", "s0.5", "s1", "keep"))
    assert full.shape == src.shape
    # Full strength: the style's colours, the photo's structure.
    assert colour_distance(full, style) < 0.5 * colour_distance(src, style)
    assert grad_correlation(full, src) > 0.5
    # Strength 0 is the photo; 0.5 lies halfway.
    assert np.abs(zero.astype(int) - src).max() <= 1
    assert np.abs(half - (src.astype(int) + full) / 2).max() <= 1.5
    # --preserve-color keeps the photo's chroma (Lab a, b).
    lk, ls, lf = lab(keep), lab(src), lab(full)
    assert np.abs(lk[:, 1:] - ls[:, 1:]).mean() < 0.3 * np.abs(lf[:, 1:] - ls[:, 1:]).mean()


def test_detail_restores_the_photos_edges_not_its_colours(restyle, tmp_path, photo):
    for detail in ("0", "1"):
        result = restyle(["restyle", "--style", "autumn", "--detail", detail, photo, "-o", f"d{detail}.png"])
        assert result.exit_code == 0, result.stderr
    src, style = read(photo), read(STYLES / "autumn.jpg")
    none, full = read(tmp_path / "d0.png"), read(tmp_path / "d1.png")
    assert grad_correlation(full, src) > grad_correlation(none, src) + 0.05
    # The restored detail is luma only: the output keeps the style's colours (Lab a, b).
    assert colour_distance(full, style) < 0.5 * colour_distance(src, style)
    lf, ln, ls = lab(full), lab(none), lab(src)
    assert np.abs(lf[:, 1:] - ln[:, 1:]).mean() < 0.3 * np.abs(ln[:, 1:] - ls[:, 1:]).mean()


def test_output_size_equals_input_size_for_odd_sizes(restyle, tmp_path):
    src = write(tmp_path / "odd.png", read(DATA / "bridge.png")[:77, :101])
    result = restyle(["restyle", "--style", "elephants", src, "-o", "out.png"])
    assert result.exit_code == 0, result.stderr
    assert read(tmp_path / "out.png").shape == (77, 101, 3)


def test_grey_style_gives_grey_output(restyle, tmp_path, photo):
    grey = read(STYLES / "autumn.jpg").mean(2).astype(np.uint8)
    style = write(tmp_path / "grey.png", grey, mode="L")
    result = restyle(["restyle", "--style", style, photo, "-o", "out.png"])
    assert result.exit_code == 0, result.stderr
    chroma = np.abs(lab(read(tmp_path / "out.png"))[:, 1:]).mean()
    assert chroma < 0.25 * np.abs(lab(read(photo))[:, 1:]).mean() + 1


def test_16_bit_rgba(restyle, tmp_path):
    rgb = read(DATA / "wood.png")[:64, :80].astype(np.uint16) * 257
    alpha = np.tile(np.linspace(0, 65535, 80).astype(np.uint16), (64, 1))[..., None]
    from imgen_cli.io import Picture, decode, encode

    data, _ = encode(Picture(np.concatenate([rgb, alpha], 2), "png"), "png")
    (tmp_path / "in.png").write_bytes(data)
    result = restyle(["restyle", "--style", "honeywave", "in.png", "-o", "out.png"])
    assert result.exit_code == 0, result.stderr
    out = decode((tmp_path / "out.png").read_bytes()).array
    assert out.dtype == np.uint16 and out.shape == (64, 80, 4)
    assert np.array_equal(out[..., 3], alpha[..., 0])
    assert np.abs(out[..., :3].astype(int) - rgb).mean() > 1000


def test_tiled_matches_untiled(restyle, tmp_path):
    src = write(tmp_path / "big.png", read(DATA / "bridge.png")[:256, :240])
    for tile in ("0", "160"):
        result = restyle(["restyle", "--style", "autumn", "--tile", tile, src, "-o", f"t{tile}.png"])
        assert result.exit_code == 0, result.stderr
    whole, tiled = read(tmp_path / "t0.png").astype(int), read(tmp_path / "t160.png").astype(int)
    assert np.abs(whole - tiled).max() <= 2


def test_colour_map_is_built_on_the_photos_device():
    # On a GPU the lookup table was built on the CPU from a map on the GPU, and every restyle
    # without --preserve-color failed ("Expected all tensors to be on the same device ...
    # searchsorted"). The meta device stands in for CUDA: it refuses mixing devices as CUDA does.
    import torch

    from imgen_restyle._color import fit_colour_map, transport_lut

    colour_map = fit_colour_map(torch.empty(500, 3, device="meta"), torch.empty(400, 3, device="meta"))
    lut = transport_lut(colour_map, torch.zeros(3, device="meta"), torch.ones(3, device="meta"))
    assert lut.device.type == "meta" and lut.shape == (1, 3, 33, 33, 33)
