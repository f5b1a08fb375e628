"""Images survive the round trip: depth, channels, alpha, orientation, ICC and EXIF, all formats."""

import io

import numpy as np
import pytest
from PIL import Image

from imgen_cli import io as imgio
from imgen_cli.errors import InputError
from imgen_cli.testing import natural_image

FORMATS = ["png", "jpeg", "webp", "tiff", "bmp"]


def picture(array, fmt="png", **kwargs):
    return imgio.Picture(array, fmt, **kwargs)


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("channels", [1, 3, 4])
def test_every_format_round_trips_8_bit(fmt, channels):
    array = natural_image(40, 56, channels)
    data, warnings = imgio.encode(picture(array), fmt, quality=100)
    assert imgio.sniff(data) == fmt
    back = imgio.decode(data)
    if fmt in ("jpeg", "bmp") and channels == 4:
        assert back.array.shape == (40, 56, 3) and warnings
        return
    if fmt == "webp" and channels == 1:  # WebP has no grey mode: stored as equal RGB channels
        assert (back.array == back.array[:, :, :1]).all()
        back.array = back.array[:, :, :1]
    assert back.array.dtype == np.uint8 and back.array.shape == array.shape
    tolerance = {"jpeg": 40, "webp": 0}.get(fmt, 0)
    assert np.abs(back.array.astype(int) - array.astype(int)).mean() <= max(tolerance / 10, 0)


@pytest.mark.parametrize("fmt", ["png", "tiff"])
@pytest.mark.parametrize("channels", [1, 2, 3, 4])
def test_16_bit_stays_16_bit(fmt, channels):
    array = natural_image(30, 20, channels, dtype="uint16")
    data, _ = imgio.encode(picture(array), fmt)
    back = imgio.decode(data)
    assert back.array.dtype == np.uint16
    assert np.array_equal(back.array, array)


def test_16_bit_to_8_bit_format_warns_and_rounds():
    array = natural_image(8, 8, 3, dtype="uint16")
    data, warnings = imgio.encode(picture(array), "jpeg")
    assert "16-bit image reduced to 8 bits" in warnings[0]
    assert imgio.decode(data).array.dtype == np.uint8


def test_depth_is_decided_by_dtype_not_values():
    dark16 = np.full((4, 4, 3), 200, np.uint16)  # values that would fit in 8 bits
    back = imgio.decode(imgio.encode(picture(dark16), "png")[0])
    assert back.array.dtype == np.uint16 and (back.array == 200).all()


def test_exif_orientation_is_applied_and_reset():
    array = natural_image(20, 30, 3)
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to display
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, "JPEG", exif=exif.tobytes(), quality=95)
    back = imgio.decode(buffer.getvalue())
    assert back.array.shape == (30, 20, 3)
    reread = Image.Exif()
    reread.load(back.exif)
    assert reread.get(0x0112, 1) == 1


@pytest.mark.parametrize("fmt,depth", [("png", "uint8"), ("png", "uint16"), ("jpeg", "uint8"), ("webp", "uint8")])
def test_icc_and_exif_are_kept_unless_stripped(fmt, depth):
    icc = bytes(range(256)) * 3
    exif = Image.Exif()
    exif[0x010F] = "imgen-camera"
    source = picture(natural_image(16, 16, 3, dtype=depth), icc=icc, exif=exif.tobytes())
    kept = imgio.decode(imgio.encode(source, fmt)[0])
    assert kept.icc == icc
    make = Image.Exif()
    make.load(kept.exif)
    assert make[0x010F] == "imgen-camera"
    stripped = imgio.decode(imgio.encode(source, fmt, strip=True)[0])
    assert stripped.icc is None and not stripped.exif


def test_tiff_keeps_icc():
    icc = b"profile" * 20
    back = imgio.decode(imgio.encode(picture(natural_image(8, 8, 3), icc=icc), "tiff")[0])
    assert back.icc == icc


def test_quality_changes_lossy_size():
    array = natural_image(64, 64, 3)
    small = imgio.encode(picture(array), "jpeg", quality=30)[0]
    large = imgio.encode(picture(array), "jpeg", quality=95)[0]
    assert len(small) < len(large)


def test_palette_and_grey_alpha_inputs():
    buffer = io.BytesIO()
    Image.fromarray(natural_image(10, 10, 3)).convert("P").save(buffer, "PNG")
    assert imgio.decode(buffer.getvalue()).array.shape == (10, 10, 3)
    buffer = io.BytesIO()
    Image.fromarray(natural_image(10, 10, 2), "LA").save(buffer, "PNG")
    assert imgio.decode(buffer.getvalue()).array.shape == (10, 10, 2)


def test_truncated_and_unknown_bytes_are_clear_errors():
    data = imgio.encode(picture(natural_image(32, 32, 3)), "png")[0]
    with pytest.raises(InputError, match="cannot decode PNG image"):
        imgio.decode(data[: len(data) // 2], "half.png")
    with pytest.raises(InputError, match="not a supported image"):
        imgio.decode(b"hello world", "x.png")


def test_pixel_limit_is_checked_before_decoding():
    data = imgio.encode(picture(natural_image(100, 100, 3)), "png")[0]
    with pytest.raises(InputError, match="above the 0.01 MP limit"):
        imgio.decode(data, "big.png", max_pixels=9_999)
    assert imgio.decode(data, "big.png", max_pixels=10_000).array.shape == (100, 100, 3)


def test_atomic_write_never_replaces_without_overwrite(tmp_path):
    target = tmp_path / "out.png"
    imgio.write_atomic(target, b"first")
    with pytest.raises(imgio.OutputError, match="exists"):
        imgio.write_atomic(target, b"second")
    assert target.read_bytes() == b"first"
    imgio.write_atomic(target, b"third", overwrite=True)
    assert target.read_bytes() == b"third"
    assert [p.name for p in tmp_path.iterdir()] == ["out.png"]
