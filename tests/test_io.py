"""Images survive the round trip: depth, channels, alpha, orientation, ICC and EXIF, all formats."""

import errno
import io
import os

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


# -- the PNG writer -------------------------------------------------------------------------


def _png_filter_rows(width, channels, sample):
    """Rows of bytes each made so that one PNG filter type predicts it exactly (None: zeros;
    Sub, Up, Average, Paeth: bytes equal to that filter's prediction from an irregular start),
    so the writer's per-row choice must use all five, after a row of noise."""
    rng = np.random.default_rng(5)
    bpp, length = channels * sample, width * channels * sample
    noise = rng.integers(0, 256, length)
    rows = [noise, np.zeros(length, int)]
    for kind in (1, 2, 3, 4):
        up, row = rows[-1], rng.integers(0, 256, length)
        for i in range(bpp, length):
            a, b, c = row[i - bpp], up[i], up[i - bpp]
            p = a + b - c
            paeth = a if abs(p - a) <= min(abs(p - b), abs(p - c)) else b if abs(p - b) <= abs(p - c) else c
            row[i] = {1: a, 2: b, 3: (a + b) // 2, 4: paeth}[kind]
        rows += [row, noise]
    data = np.array(rows, np.uint8).tobytes()
    height = len(rows)
    dtype = ">u2" if sample == 2 else np.uint8
    return np.frombuffer(data, dtype).reshape(height, width, channels).astype(np.uint16 if sample == 2 else np.uint8)


def _png_parts(data):
    """(chunk types in order, filter type of each row) of a PNG."""
    import zlib

    kinds = [kind for kind, *_ in imgio._png_chunks(data)]
    idat = b"".join(data[start:end] for kind, start, end, _ in imgio._png_chunks(data) if kind == b"IDAT")
    width, height, depth, colour = *np.frombuffer(data[16:24], ">u4"), data[24], data[25]
    row = 1 + width * {0: 1, 4: 2, 2: 3, 6: 4}[colour] * depth // 8
    raw = zlib.decompress(idat)
    return kinds, [raw[i * row] for i in range(height)]


@pytest.mark.parametrize("depth", ["uint8", "uint16"])
@pytest.mark.parametrize("channels", [1, 2, 3, 4])
def test_png_writer_round_trips_every_mode_with_every_filter(channels, depth):
    array = _png_filter_rows(23, channels, 2 if depth == "uint16" else 1)
    exif = Image.Exif()
    exif[0x010F] = "imgen-camera"
    icc = b"not a real profile, kept as it is" * 4
    data = imgio.encode(picture(array, icc=icc, exif=exif.tobytes()), "png")[0]
    kinds, filters = _png_parts(data)
    assert kinds == [b"IHDR", b"iCCP", b"eXIf", b"IDAT", b"IEND"]
    assert set(filters) == {0, 1, 2, 3, 4}  # every filter chosen where it predicts its row
    back = imgio.decode(data)
    assert back.array.dtype == array.dtype and np.array_equal(back.array, array)
    assert back.icc == icc
    make = Image.Exif()
    make.load(back.exif)
    assert make[0x010F] == "imgen-camera"
    Image.open(io.BytesIO(data)).verify()  # chunk CRCs, as pngcheck would
    with Image.open(io.BytesIO(data)) as im:  # another decoder reads the same pixels
        im.load()
        assert im.info["icc_profile"] == icc
        if depth == "uint8" or channels == 1:  # Pillow keeps 16 bits of grey only
            assert np.array_equal(np.asarray(im).reshape(array.shape), array)
        else:
            assert im.size == (23, array.shape[0])


def test_png_bands_and_chunks_do_not_change_the_file(monkeypatch):
    array = np.random.default_rng(1).integers(0, 256, (200, 150, 4), np.uint8)  # deflate emits as it goes
    whole = imgio.encode(picture(array), "png")[0]
    assert _png_parts(whole)[0].count(b"IDAT") == 1
    # Bands of 3 rows, a chunk per deflated piece: the filters see the row above across bands,
    # and deflate does not depend on how its input is cut, so the pixel stream is the same.
    monkeypatch.setattr(imgio, "PNG_BAND_BYTES", 150 * 4 * 3)
    monkeypatch.setattr(imgio, "PNG_CHUNK_BYTES", 1)
    bands = []
    filter_rows = imgio._filter_rows
    monkeypatch.setattr(imgio, "_filter_rows", lambda band, *args: bands.append(len(band)) or filter_rows(band, *args))
    banded = imgio.encode(picture(array), "png")[0]
    assert bands == [3] * 66 + [2]
    assert _png_parts(banded)[0].count(b"IDAT") > 3
    idat = lambda data: b"".join(data[s:e] for k, s, e, _ in imgio._png_chunks(data) if k == b"IDAT")
    assert idat(banded) == idat(whole)
    assert np.array_equal(imgio.decode(banded).array, array)


def test_png_writer_never_holds_the_image_or_the_file(monkeypatch):
    import tracemalloc

    array = natural_image(1000, 1500, 3)  # 4.5 MB
    monkeypatch.setattr(imgio, "PNG_BAND_BYTES", 16 << 10)
    monkeypatch.setattr(imgio, "PNG_CHUNK_BYTES", 64 << 10)
    written = []
    tracemalloc.start()
    try:
        imgio.encoder(picture(array), "png")[0].write_to(lambda piece: written.append(len(piece)))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    # The whole file held (3 MB here) or a numpy copy of the pixels would fail this. (Pillow's
    # copy is C memory, which tracemalloc does not see: benchmarks/bench_memory.py shows that.)
    assert peak < array.nbytes / 3, peak
    assert sum(written) > array.nbytes / 20 and len(written) > 3


def test_encoded_png_is_written_atomically_and_a_failed_write_leaves_nothing(tmp_path, monkeypatch):
    array = natural_image(200, 300, 3)
    encoded, _ = imgio.encoder(picture(array), "png")
    imgio.write_atomic(tmp_path / "ok.png", encoded)
    assert np.array_equal(imgio.decode((tmp_path / "ok.png").read_bytes()).array, array)
    monkeypatch.setattr(imgio, "PNG_BAND_BYTES", 3000)
    monkeypatch.setattr(imgio, "PNG_CHUNK_BYTES", 1)
    real, calls = os.write, []

    def disk_fills(fd, data):
        calls.append(fd)
        if len(calls) > 5:  # the disk fills in the middle of the pixels
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real(fd, data)

    monkeypatch.setattr(os, "write", disk_fills)
    with pytest.raises(imgio.OutputError, match="No space left on device"):
        imgio.write_atomic(tmp_path / "full.png", imgio.encoder(picture(array), "png")[0])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ok.png"]
