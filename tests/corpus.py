"""Generators for the bad-input corpus (tests/test_corpus.py): small hostile or awkward files.

Everything is built at test time from a few kilobytes of pixels: forged headers that claim huge
sizes, real decompression bombs, metadata bombs, exotic TIFF layouts, animations, broken or
malicious model files. Nothing here is a stored sample.
"""

from __future__ import annotations

import io
import pickle
import struct
import zlib

import numpy as np
from PIL import Image

from imgen_cli.testing import natural_image


def encoded(array, fmt: str = "PNG", **kwargs) -> bytes:
    buffer = io.BytesIO()
    image = Image.fromarray(array[:, :, 0] if array.ndim == 3 and array.shape[2] == 1 else array)
    image.save(buffer, fmt, **kwargs)
    return buffer.getvalue()


def small(height: int = 24, width: int = 32, channels: int = 3, dtype: str = "uint8", seed: int = 0):
    return natural_image(height, width, channels, dtype=dtype, seed=seed)


# -- PNG chunks ---------------------------------------------------------------------------------


def chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def with_chunks(png: bytes, *chunks: bytes) -> bytes:
    """Insert chunks right after IHDR (33 bytes in)."""
    return png[:33] + b"".join(chunks) + png[33:]


def zeros_deflated(size: int, level: int = 9) -> bytes:
    """zlib data that inflates to `size` zero bytes, built without holding them."""
    compressor = zlib.compressobj(level)
    block = bytes(1 << 20)
    parts = [compressor.compress(block) for _ in range(size >> 20)]
    parts.append(compressor.compress(bytes(size & ((1 << 20) - 1))))
    parts.append(compressor.flush())
    return b"".join(parts)


def png16(array, *chunks: bytes) -> bytes:
    """A 16-bit PNG (pypng), with extra chunks after IHDR."""
    import png

    height, width, planes = array.shape
    writer = png.Writer(width, height, greyscale=planes in (1, 2), alpha=planes in (2, 4), bitdepth=16)
    buffer = io.BytesIO()
    writer.write_array(buffer, array.reshape(-1))
    return with_chunks(buffer.getvalue(), *chunks)


def icc_bomb(size: int) -> bytes:
    return chunk(b"iCCP", b"bomb\x00\x00" + zeros_deflated(size))


def text_bomb(size: int) -> bytes:
    return chunk(b"zTXt", b"Comment\x00\x00" + zeros_deflated(size))


def exif_orientation(value: int) -> bytes:
    exif = Image.Exif()
    exif[0x0112] = value
    return exif.tobytes()


def png_bomb(width: int, height: int) -> bytes:
    """A real, valid 8-bit grey PNG of zeros: a few hundred kilobytes that decode to width*height bytes."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    compressor = zlib.compressobj(9)
    row = bytes(width + 1)  # filter byte + pixels
    body = b"".join(compressor.compress(row) for _ in range(height)) + compressor.flush()
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", body) + chunk(b"IEND", b"")


# -- forged headers: a small valid file whose header claims another size ------------------------


def forged(fmt: str, width: int, height: int) -> bytes:
    array = small(16, 16)
    if fmt == "png":
        data = bytearray(encoded(array, "PNG"))
        data[16:24] = struct.pack(">II", width, height)
        data[29:33] = struct.pack(">I", zlib.crc32(bytes(data[12:29])))
    elif fmt == "jpeg":
        data = bytearray(encoded(array, "JPEG"))
        sof = data.index(b"\xff\xc0")
        data[sof + 5:sof + 9] = struct.pack(">HH", height, width)
    elif fmt == "webp":  # lossless: 14-bit sizes in the VP8L header
        data = bytearray(encoded(array, "WEBP", lossless=True))
        at = data.index(b"VP8L") + 8
        assert data[at] == 0x2F
        bits = struct.unpack("<I", data[at + 1:at + 5])[0]
        bits = (bits & ~((1 << 28) - 1)) | (width - 1) | ((height - 1) << 14)
        data[at + 1:at + 5] = struct.pack("<I", bits)
    elif fmt == "bmp":
        data = bytearray(encoded(array, "BMP"))
        data[18:26] = struct.pack("<ii", width, height)
    elif fmt == "gif":
        data = bytearray(encoded(array, "GIF"))
        data[6:10] = struct.pack("<HH", width, height)
        at = data.index(b"\x2c")  # image descriptor
        data[at + 5:at + 9] = struct.pack("<HH", width, height)
    elif fmt == "tiff":
        data = bytearray(tiff(array))
        ifd = struct.unpack("<I", data[4:8])[0]
        for k in range(struct.unpack("<H", data[ifd:ifd + 2])[0]):
            entry = ifd + 2 + 12 * k
            tag, kind = struct.unpack("<HH", data[entry:entry + 4])
            if tag in (256, 257):
                value = width if tag == 256 else height
                data[entry + 2:entry + 12] = struct.pack("<HII", 4, 1, value)  # LONG
    else:
        raise ValueError(fmt)
    return bytes(data)


# -- TIFF ---------------------------------------------------------------------------------------


def tiff(array, **kwargs) -> bytes:
    import tifffile

    buffer = io.BytesIO()
    tifffile.imwrite(buffer, array, **kwargs)
    return buffer.getvalue()


def cmyk_tiff() -> tuple[bytes, np.ndarray]:
    """Four ink patches (pure C, M, Y, K) and the RGB they mean."""
    cmyk = np.zeros((8, 8, 4), np.uint8)
    cmyk[:4, :4, 0] = 255  # cyan
    cmyk[:4, 4:, 1] = 255  # magenta
    cmyk[4:, :4, 2] = 255  # yellow
    cmyk[4:, 4:, 3] = 255  # black
    rgb = np.zeros((8, 8, 3), np.uint8)
    rgb[:4, :4] = (0, 255, 255)
    rgb[:4, 4:] = (255, 0, 255)
    rgb[4:, :4] = (255, 255, 0)
    rgb[4:, 4:] = (0, 0, 0)
    return tiff(cmyk, photometric="separated"), rgb


def palette_tiff() -> tuple[bytes, np.ndarray]:
    image = Image.fromarray(small(12, 10)).convert("P")
    buffer = io.BytesIO()
    image.save(buffer, "TIFF")
    return buffer.getvalue(), np.asarray(image.convert("RGB"))


def animated(fmt: str, frames: int = 3) -> tuple[bytes, np.ndarray]:
    images = [Image.fromarray(small(16, 20, seed=k)) for k in range(frames)]
    if fmt == "gif":
        images = [im.quantize(64) for im in images]
    buffer = io.BytesIO()
    kwargs = {"lossless": True} if fmt == "webp" else {}
    images[0].save(buffer, fmt.upper(), save_all=True, append_images=images[1:], duration=100, **kwargs)
    return buffer.getvalue(), np.asarray(images[0].convert("RGB"))


# -- CMYK JPEG with a CMYK-tagged profile -------------------------------------------------------


def cmyk_profile() -> bytes:
    """An ICC profile whose header says CMYK (an sRGB profile relabelled: lcms refuses to use it,
    which exercises the fallback too; what matters is that it never reaches an RGB output)."""
    from PIL import ImageCms

    profile = bytearray(ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes())
    profile[16:20] = b"CMYK"
    return bytes(profile)


def cmyk_jpeg() -> bytes:
    image = Image.fromarray(small(16, 16)).convert("CMYK")
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", icc_profile=cmyk_profile(), quality=95)
    return buffer.getvalue()


# -- model files --------------------------------------------------------------------------------


class Exploit:
    """Unpickling this would run a shell command; torch.load(weights_only=True) must refuse it."""

    def __reduce__(self):
        import os

        return (os.system, ("echo pwned > pwned.txt",))


def evil_pickle() -> bytes:
    return pickle.dumps({"weight": Exploit()}, protocol=2)


def safetensors_bytes(state: dict) -> bytes:
    from safetensors.torch import save

    return save(state)


def huge_header_safetensors() -> bytes:
    return struct.pack("<Q", 1 << 62) + b"{}"


def garbage(size: int = 4096) -> bytes:
    return np.random.default_rng(1).integers(0, 256, size, dtype=np.uint8).tobytes()
