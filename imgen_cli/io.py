"""Reading and writing images faithfully: bit depth, channels, alpha, orientation, ICC and EXIF.

Decoding and encoding go through imageio: its Pillow plugin for PNG, JPEG, WebP, BMP and GIF,
its tifffile plugin for TIFF. Pillow silently truncates 16-bit colour PNGs to 8 bits, so those
(and 16-bit grey+alpha) go through pypng instead, which keeps all 16 bits.

An image is a numpy array (H, W, C) of uint8 or uint16 with C in 1 (grey), 2 (grey+alpha),
3 (RGB) or 4 (RGBA). Depth is decided by dtype, never guessed from values.
"""

from __future__ import annotations

import io
import os
import tempfile
import zlib
from dataclasses import dataclass, field
from pathlib import Path

from .errors import InputError, OutputError, UsageError

FORMATS = {"png": ".png", "jpeg": ".jpg", "webp": ".webp", "tiff": ".tif", "bmp": ".bmp"}
EXTENSIONS = {
    ".png": "png", ".jpg": "jpeg", ".jpeg": "jpeg", ".jpe": "jpeg", ".webp": "webp",
    ".tif": "tiff", ".tiff": "tiff", ".bmp": "bmp",
}
# Formats read but not written (the output then defaults to PNG).
READ_ONLY = {"gif": ".png"}
LOSSY = {"jpeg", "webp"}
DEFAULT_MAX_PIXELS = 200_000_000
EXIF_ORIENTATION = 0x0112


@dataclass
class Picture:
    """A decoded image and what must survive the round trip."""

    array: "object"  # numpy.ndarray (H, W, C), uint8 or uint16
    format: str  # format it was read in: png, jpeg, webp, tiff, bmp, gif
    icc: bytes | None = None
    exif: bytes | None = None
    extra: dict = field(default_factory=dict)

    @property
    def has_alpha(self) -> bool:
        return self.array.shape[2] in (2, 4)


def sniff(data: bytes) -> str | None:
    """The format of encoded image bytes, from their magic numbers."""
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return "png"
    if data.startswith(b"\xff\xd8\xff"):
        return "jpeg"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "webp"
    if data[:4] in (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+"):
        return "tiff"
    if data.startswith(b"BM"):
        return "bmp"
    if data[:6] in (b"GIF87a", b"GIF89a"):
        return "gif"
    return None


def format_for_path(path: str | os.PathLike) -> str | None:
    return EXTENSIONS.get(Path(path).suffix.lower())


def decode(data: bytes, source: str = "-", max_pixels: int | None = DEFAULT_MAX_PIXELS) -> Picture:
    """Decode image bytes (format sniffed from the bytes), applying EXIF orientation."""
    fmt = sniff(data)
    if fmt is None:
        raise InputError("not a supported image (PNG, JPEG, WebP, TIFF, BMP or GIF)", source)
    try:
        if fmt == "png" and _png_needs_pypng(data):
            picture = _decode_png16(data, source, max_pixels)
        elif fmt == "tiff":
            picture = _decode_tiff(data, source, max_pixels)
        else:
            picture = _decode_pillow(data, fmt, source, max_pixels)
    except InputError:
        raise
    except Exception as exc:
        raise InputError(f"cannot decode {fmt.upper()} image ({_reason(exc)})", source) from exc
    return picture


def _reason(exc: Exception) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


def _check_size(width: int, height: int, source: str, max_pixels: int | None) -> None:
    if max_pixels and width * height > max_pixels:
        raise InputError(
            f"image is {width}x{height} = {width * height / 1e6:.0f} megapixels, above the limit of "
            f"{max_pixels / 1e6:.0f} (raise it with --max-pixels)", source)


def _png_needs_pypng(data: bytes) -> bool:
    # IHDR: bit depth at byte 24, colour type at 25. Pillow keeps 16-bit only for plain grey.
    return len(data) > 26 and data[24] == 16 and data[25] in (2, 4, 6)


def _decode_pillow(data: bytes, fmt: str, source: str, max_pixels: int | None) -> Picture:
    import imageio.v3 as iio
    import numpy as np
    from PIL import Image

    Image.MAX_IMAGE_PIXELS = None  # our own limit below replaces Pillow's warning
    with iio.imopen(data, "r", plugin="pillow", extension=FORMATS.get(fmt, ".png")) as f:
        meta = f.metadata(index=0, exclude_applied=False)
        width, height = meta["shape"]
        _check_size(width, height, source, max_pixels)
        mode = meta.get("mode", "RGB")
        target = _pillow_target_mode(mode, meta)
        array = f.read(index=0, rotate=True, mode=target)
    if array.dtype == np.int32 or array.dtype == np.float32:  # 'I' and 'F' grey modes
        array = np.clip(array, 0, 65535).astype(np.uint16)
    elif array.dtype == bool:
        array = array.astype(np.uint8) * 255
    if array.ndim == 2:
        array = array[:, :, None]
    exif = meta.get("exif")
    if exif is not None:
        exif = _reset_orientation(exif)
    return Picture(np.ascontiguousarray(array), fmt, icc=meta.get("icc_profile"), exif=exif)


def _pillow_target_mode(mode: str, meta: dict) -> str | None:
    if mode in ("L", "LA", "RGB", "RGBA", "I;16", "I;16L", "I;16B", "I;16N", "I", "F"):
        return None
    if mode == "1":
        return "L"
    if mode in ("P", "PA"):
        return "RGBA" if ("transparency" in meta or mode == "PA") else "RGB"
    if mode in ("RGBa", "La"):
        return "RGBA" if mode == "RGBa" else "LA"
    return "RGB"  # CMYK, YCbCr, LAB, HSV


def _reset_orientation(exif: bytes) -> bytes | None:
    """EXIF with orientation 1, since the pixels are now upright."""
    from PIL import Image

    try:
        parsed = Image.Exif()
        parsed.load(exif)
        if parsed.get(EXIF_ORIENTATION, 1) != 1:
            parsed[EXIF_ORIENTATION] = 1
        return parsed.tobytes()
    except Exception:  # unparsable EXIF is dropped rather than copied blindly
        return None


def _decode_png16(data: bytes, source: str, max_pixels: int | None) -> Picture:
    import numpy as np
    import png

    reader = png.Reader(bytes=data)
    icc = exif = None
    for kind, body in png.Reader(bytes=data).chunks():
        if kind == b"iCCP":
            icc = zlib.decompress(body[body.index(b"\x00") + 2:])
        elif kind == b"eXIf":
            exif = body
    width, height, rows, info = reader.read()
    _check_size(width, height, source, max_pixels)
    planes = info["planes"]
    array = np.vstack([np.asarray(row, dtype=np.uint16) for row in rows]).reshape(height, width, planes)
    return Picture(array, "png", icc=icc, exif=exif)


def _decode_tiff(data: bytes, source: str, max_pixels: int | None) -> Picture:
    import numpy as np
    import tifffile

    with tifffile.TiffFile(io.BytesIO(data)) as tif:
        page = tif.pages[0]
        _check_size(page.imagewidth, page.imagelength, source, max_pixels)
        array = page.asarray()
        icc_tag = page.tags.get(34675)
        icc = bytes(icc_tag.value) if icc_tag is not None else None
    if array.ndim == 2:
        array = array[:, :, None]
    if array.ndim != 3 or array.shape[2] not in (1, 2, 3, 4):
        raise InputError(f"unsupported TIFF layout {array.shape}", source)
    if array.dtype == np.uint8 or array.dtype == np.uint16:
        pass
    elif array.dtype.kind == "f":
        array = (np.clip(array, 0, 1) * 65535 + 0.5).astype(np.uint16)
    elif array.dtype == bool:
        array = array.astype(np.uint8) * 255
    else:
        raise InputError(f"unsupported TIFF sample type {array.dtype}", source)
    return Picture(np.ascontiguousarray(array), "tiff", icc=icc)


# -- encoding ---------------------------------------------------------------------------------


def encode(picture: Picture, fmt: str, quality: int | None = None, strip: bool = False) -> tuple[bytes, list[str]]:
    """Encode to `fmt`; returns the bytes and warnings (things the format could not keep)."""
    import numpy as np

    array = picture.array
    warnings: list[str] = []
    icc = None if strip else picture.icc
    exif = None if strip else picture.exif
    if fmt in ("jpeg", "bmp") and array.dtype == np.uint16:
        warnings.append(f"{fmt.upper()} holds 8 bits per channel: 16-bit image reduced to 8 bits")
    if fmt in ("jpeg", "webp", "bmp") and array.dtype == np.uint16:
        array = _to_uint8(array)
    if fmt in ("jpeg", "bmp") and array.shape[2] in (2, 4):
        # BMP's alpha variants are read back as opaque by most software, Pillow included.
        warnings.append(f"{fmt.upper()} keeps no alpha channel: image flattened onto white")
        array = _flatten(array)
    if fmt == "webp" and array.shape[2] == 2:
        array = np.concatenate([np.repeat(array[:, :, :1], 3, axis=2), array[:, :, 1:]], axis=2)
    if fmt == "png" and array.dtype == np.uint16 and array.shape[2] != 1:
        return _encode_png16(array, icc, exif), warnings
    if fmt == "tiff":
        return _encode_tiff(array, icc), warnings
    return _encode_pillow(array, fmt, quality, icc, exif), warnings


def _to_uint8(array):
    import numpy as np

    return ((array.astype(np.uint32) + 128) // 257).astype(np.uint8)


def _flatten(array):
    import numpy as np

    top = 255 if array.dtype == np.uint8 else 65535
    colour = array[:, :, :-1].astype(np.float32)
    alpha = array[:, :, -1:].astype(np.float32) / top
    flat = colour * alpha + top * (1 - alpha)
    return (flat + 0.5).astype(array.dtype)


def _encode_pillow(array, fmt: str, quality: int | None, icc: bytes | None, exif: bytes | None) -> bytes:
    import imageio.v3 as iio

    image = array[:, :, 0] if array.shape[2] == 1 else array
    kwargs: dict = {}
    if fmt == "jpeg":
        kwargs["quality"] = quality or 95
        # Chroma subsampling would blur the colour detail an enhancer just produced.
        kwargs["subsampling"] = 0 if kwargs["quality"] >= 90 else 2
    elif fmt == "webp":
        if quality == 100:
            kwargs["lossless"] = True
        else:
            kwargs["quality"] = quality or 95
    elif fmt == "png":
        kwargs["compress_level"] = 6
    if fmt in ("jpeg", "webp", "png"):
        if icc:
            kwargs["icc_profile"] = icc
        if exif:
            kwargs["exif"] = exif
    return iio.imwrite("<bytes>", image, plugin="pillow", extension=FORMATS[fmt], **kwargs)


def _encode_png16(array, icc: bytes | None, exif: bytes | None) -> bytes:
    import png

    height, width, planes = array.shape
    writer = png.Writer(width, height, greyscale=planes in (1, 2), alpha=planes in (2, 4), bitdepth=16,
                        compression=6)
    buffer = io.BytesIO()
    writer.write_array(buffer, array.reshape(-1))
    data = buffer.getvalue()
    if not (icc or exif):
        return data
    chunks = list(png.Reader(bytes=data).chunks())
    extra = []
    if icc:
        extra.append((b"iCCP", b"icc\x00\x00" + zlib.compress(icc)))
    if exif:
        extra.append((b"eXIf", exif[6:] if exif.startswith(b"Exif\x00\x00") else exif))
    out = io.BytesIO()
    png.write_chunks(out, chunks[:1] + extra + chunks[1:])
    return out.getvalue()


def _encode_tiff(array, icc: bytes | None) -> bytes:
    import tifffile

    channels = array.shape[2]
    kwargs: dict = {"photometric": "rgb" if channels >= 3 else "minisblack", "compression": "zlib"}
    if channels in (2, 4):
        kwargs["extrasamples"] = ["unassalpha"]
    if icc:
        kwargs["iccprofile"] = icc
    buffer = io.BytesIO()
    tifffile.imwrite(buffer, array[:, :, 0] if channels == 1 else array, **kwargs)
    return buffer.getvalue()


# -- files ------------------------------------------------------------------------------------


def read_bytes(path: str) -> bytes:
    try:
        with open(path, "rb") as f:
            return f.read()
    except FileNotFoundError:
        raise InputError("no such file", path) from None
    except IsADirectoryError:
        raise InputError("is a folder", path) from None
    except OSError as exc:
        raise InputError(exc.strerror or str(exc), path) from None


def write_atomic(path: str | os.PathLike, data: bytes, overwrite: bool = False) -> None:
    """Write `data` to `path` so that readers never see a partial file.

    The bytes go to a temporary file in the same folder, are flushed to disk, and are then linked
    into place (which fails if the name exists, closing the race between check and write) or,
    with `overwrite`, renamed over it. An interrupted write leaves only the temporary file's
    removal to do, which the `finally` does.
    """
    path = Path(path)
    folder = path.parent if str(path.parent) else Path(".")
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".imgen-tmp", dir=folder)
    except OSError as exc:
        raise OutputError(exc.strerror or str(exc), str(path)) from None
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_umask())
        if overwrite:
            os.replace(tmp, path)
        else:
            try:
                os.link(tmp, path)
            except FileExistsError:
                raise OutputError("exists (use --overwrite to replace it)", str(path)) from None
            except OSError:  # file systems without hard links
                if path.exists():
                    raise OutputError("exists (use --overwrite to replace it)", str(path)) from None
                os.replace(tmp, path)
    except OSError as exc:
        raise OutputError(exc.strerror or str(exc), str(path)) from None
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def check_format(fmt: str) -> str:
    fmt = fmt.lower()
    fmt = {"jpg": "jpeg", "tif": "tiff"}.get(fmt, fmt)
    if fmt not in FORMATS:
        raise UsageError(f"unknown format {fmt!r} (choose from {', '.join(FORMATS)})")
    return fmt
