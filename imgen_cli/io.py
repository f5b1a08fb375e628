"""Reading and writing images faithfully: bit depth, channels, alpha, orientation, ICC and EXIF.

Decoding goes through Pillow for PNG, JPEG, WebP, BMP and GIF and through tifffile for TIFF;
Pillow silently truncates 16-bit colour PNGs to 8 bits, so those (and 16-bit grey+alpha) are
decoded by pypng instead, which keeps all 16 bits. Encoding goes through imageio's Pillow plugin
and tifffile, except PNG, which `write_png` writes itself, band by band into the output file
(see "PNG writing" for why).

An image is a numpy array (H, W, C) of uint8 or uint16 with C in 1 (grey), 2 (grey+alpha),
3 (RGB) or 4 (RGBA). Depth is decided by dtype, never guessed from values.

Hostile inputs are bounded before they cost anything: the pixel count is read from the header
and checked before any pixel is decoded, input bytes are capped (`byte_limit`), and metadata
(ICC, EXIF, PNG text) is capped at `METADATA_LIMIT` before it is inflated or copied.
"""

from __future__ import annotations

import io
import logging
import os
import stat
import struct
import tempfile
import zlib
from dataclasses import dataclass, field
from pathlib import Path

from .errors import InputError, OutputError, UsageError, reason

FORMATS = {"png": ".png", "jpeg": ".jpg", "webp": ".webp", "tiff": ".tif", "bmp": ".bmp"}
EXTENSIONS = {
    ".png": "png", ".jpg": "jpeg", ".jpeg": "jpeg", ".jpe": "jpeg", ".webp": "webp",
    ".tif": "tiff", ".tiff": "tiff", ".bmp": "bmp",
}
# Formats read but not written (the output then defaults to PNG).
READ_ONLY = {"gif": ".png"}
LOSSY = {"jpeg", "webp"}
EIGHT_BIT = ("jpeg", "webp", "bmp")
DEFAULT_MAX_PIXELS = 200_000_000
EXIF_ORIENTATION = 0x0112
# Real ICC profiles and EXIF blocks are kilobytes to a few hundred kilobytes; anything larger is
# dropped (with a warning) rather than inflated or copied into the output.
METADATA_LIMIT = 4 << 20
# Bytes per allowed pixel in the input byte limit: uncompressed 16-bit RGBA, the largest layout
# an image within --max-pixels can honestly take, plus room for metadata.
BYTES_PER_PIXEL = 8
_PIL_FORMATS = {"png": "PNG", "jpeg": "JPEG", "webp": "WEBP", "bmp": "BMP", "gif": "GIF"}
_ICC_SPACES = {1: b"GRAY", 2: b"GRAY", 3: b"RGB ", 4: b"RGB "}


@dataclass
class Picture:
    """A decoded image and what must survive the round trip."""

    array: "object"  # numpy.ndarray (H, W, C), uint8 or uint16
    format: str  # format it was read in: png, jpeg, webp, tiff, bmp, gif
    icc: bytes | None = None
    exif: bytes | None = None
    extra: dict = field(default_factory=dict)
    # What reading changed or left out (only the first frame, clipped floats): one line each.
    warnings: list = field(default_factory=list)

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


WRITABLE = "PNG, JPEG, WebP, TIFF or BMP"


def output_format(path: str) -> str:
    """The format an output named `path` is written in, or a usage error saying why it cannot be."""
    fmt = format_for_path(path)
    if fmt is not None:
        return fmt
    suffix = Path(path).suffix.lower()
    if suffix.lstrip(".") in READ_ONLY:
        raise UsageError(f"-o {path}: imgen reads {suffix.lstrip('.').upper()} but cannot write it "
                         f"(it writes {WRITABLE})")
    raise UsageError(f"-o {path}: unknown image extension (use --format, or a name ending in "
                     ".png, .jpg, .webp, .tif or .bmp)")


NOT_AN_IMAGE = "not a supported image (PNG, JPEG, WebP, TIFF, BMP or GIF)"


def decode(data: bytes, source: str = "-", max_pixels: int | None = DEFAULT_MAX_PIXELS) -> Picture:
    """Decode image bytes (format sniffed from the bytes), applying EXIF orientation.

    The size is checked against `max_pixels` from the header, before any pixel is decoded.
    """
    fmt = sniff(data)
    if fmt is None:
        raise InputError(NOT_AN_IMAGE, source)
    try:
        if fmt == "png":
            picture = _decode_png(data, source, max_pixels)
        elif fmt == "tiff":
            picture = _decode_tiff(data, source, max_pixels)
        else:
            picture = _decode_pillow(data, fmt, source, max_pixels)
    except InputError:
        raise
    except Exception as exc:
        raise InputError(f"cannot decode {fmt.upper()} image ({reason(exc)})", source) from exc
    picture.icc = _capped(picture.icc, "ICC profile", picture.warnings)
    picture.exif = _capped(picture.exif, "EXIF block", picture.warnings)
    if picture.icc and not _icc_fits(picture.icc, picture.array.shape[2]):
        picture.warnings.append(f"ICC profile for {_icc_space(picture.icc)} data does not fit the decoded "
                                "image: dropped")
        picture.icc = None
    return picture


def megapixels(pixels: float) -> str:
    """A pixel count in the words users read: '268 MP', '0.01 MP'."""
    value = pixels / 1e6
    return f"{value:.0f} MP" if value >= 10 else f"{value:.2g} MP"


def _check_size(width: int, height: int, source: str, max_pixels: int | None) -> None:
    if width <= 0 or height <= 0:
        raise InputError(f"header gives an empty size {width}x{height}", source)
    if max_pixels and width * height > max_pixels:
        raise InputError(
            f"image is {width}x{height}, {megapixels(width * height)}, above the {megapixels(max_pixels)} "
            "limit (raise it with --max-pixels)", source)


def _capped(blob: bytes | None, what: str, warnings: list) -> bytes | None:
    if blob is not None and len(blob) > METADATA_LIMIT:
        warnings.append(f"{what} of {len(blob) >> 20} MB is implausibly large: dropped")
        return None
    return blob or None


def _icc_space(icc: bytes) -> str:
    return icc[16:20].decode("ascii", "replace").strip() or "unknown"


def _icc_fits(icc: bytes, channels: int) -> bool:
    # A profile's data colour space (header bytes 16-19) must match the pixels it describes;
    # a CMYK profile on RGB pixels makes an invalid file. Blobs without an ICC header ('acsp'
    # at 36) are kept as they are: they are not ours to judge.
    return icc[36:40] != b"acsp" or icc[16:20] == _ICC_SPACES[channels]


def _frames_warning(count: int, fmt: str) -> str:
    kind = "pages" if fmt == "tiff" else "frames"
    return f"has {count} {kind}: only the first is used"


# -- orientation --------------------------------------------------------------------------------


def _orientation(exif: bytes | None) -> int:
    if not exif:
        return 1
    from PIL import Image

    try:
        parsed = Image.Exif()
        parsed.load(exif)
        value = int(parsed.get(EXIF_ORIENTATION, 1))
    except Exception:
        return 1
    return value if 1 <= value <= 8 else 1


def _orient(array, orientation: int):
    """Turn (H, W, C) pixels upright as EXIF orientation 1..8 says (numpy views, any dtype)."""
    import numpy as np

    if orientation == 2:
        array = array[:, ::-1]
    elif orientation == 3:
        array = array[::-1, ::-1]
    elif orientation == 4:
        array = array[::-1]
    elif orientation == 5:
        array = array.transpose(1, 0, 2)
    elif orientation == 6:
        array = np.rot90(array, k=-1)
    elif orientation == 7:
        array = array[::-1, ::-1].transpose(1, 0, 2)
    elif orientation == 8:
        array = np.rot90(array, k=1)
    return np.ascontiguousarray(array)


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


# -- PNG ----------------------------------------------------------------------------------------


def _png_chunks(data: bytes):
    """(type, body start, body end, chunk end) for each chunk, stopping at IEND or the data's end."""
    pos = 8
    while pos + 8 <= len(data):
        length, kind = struct.unpack(">I4s", data[pos:pos + 8])
        start, end = pos + 8, pos + 8 + length
        yield kind, start, min(end, len(data)), min(end + 4, len(data))
        if kind == b"IEND" or end + 4 > len(data):
            return
        pos = end + 4


def _inflate(body: bytes, limit: int) -> bytes | None:
    """zlib data inflated to at most `limit` bytes; None when it would be larger."""
    out = zlib.decompressobj().decompress(body, limit + 1)
    return None if len(out) > limit else out


def _decode_png(data: bytes, source: str, max_pixels: int | None) -> Picture:
    """PNG: size from IHDR, metadata capped while scanning chunks, pixels by Pillow or pypng."""
    if len(data) < 33 or data[12:16] != b"IHDR":
        raise InputError("cannot decode PNG image (no IHDR header)", source)
    width, height = struct.unpack(">II", data[16:24])
    _check_size(width, height, source, max_pixels)
    warnings: list[str] = []
    icc = exif = None
    frames = 1
    drop: list[tuple[int, int]] = []
    for kind, start, end, stop in _png_chunks(data):
        if kind == b"IDAT":
            break
        body = data[start:end]
        if kind == b"iCCP":
            nul = body.find(b"\x00")
            icc = _inflate(body[nul + 2:], METADATA_LIMIT) if nul >= 0 else None
            if icc is None:
                warnings.append(f"ICC profile above {METADATA_LIMIT >> 20} MB once inflated: dropped")
                drop.append((start - 8, stop))
        elif kind == b"eXIf":
            exif = body if len(body) <= METADATA_LIMIT else None
        elif kind in (b"tEXt", b"zTXt", b"iTXt"):
            # Text is never written out; skipping it spares Pillow inflating text bombs.
            drop.append((start - 8, stop))
        elif kind == b"acTL" and len(body) >= 4:
            frames = struct.unpack(">I", body[:4])[0]
    if drop:
        data = _without(data, drop)
    if frames > 1:
        warnings.append(_frames_warning(frames, "png"))
    # IHDR: bit depth at byte 24, colour type at 25. Pillow keeps 16-bit only for plain grey.
    if data[24] == 16 and data[25] in (2, 4, 6):
        array = _png16_pixels(data, width, height)
    else:
        return _decode_pillow(data, "png", source, max_pixels, warnings)
    orientation = _orientation(exif)
    if orientation != 1:
        array = _orient(array, orientation)
        exif = _reset_orientation(exif)
    return Picture(array, "png", icc=icc, exif=exif, warnings=warnings)


def _without(data: bytes, spans: list[tuple[int, int]]) -> bytes:
    parts, pos = [], 0
    for start, stop in spans:
        parts.append(data[pos:start])
        pos = stop
    parts.append(data[pos:])
    return b"".join(parts)


def _png16_pixels(data: bytes, width: int, height: int):
    import numpy as np
    import png

    _, _, rows, info = png.Reader(bytes=data).read()
    planes = info["planes"]
    # Filled row by row: a list of rows and a vstack would hold the image twice.
    array = np.empty((height, width * planes), dtype=np.uint16)
    count = 0
    for count, row in enumerate(rows, 1):
        array[count - 1] = row
    if count != height:
        raise ValueError("truncated")  # decode() names the file and the format
    return array.reshape(height, width, planes)


# -- Pillow formats -----------------------------------------------------------------------------


def _decode_pillow(data: bytes, fmt: str, source: str, max_pixels: int | None,
                   warnings: list[str] | None = None) -> Picture:
    import numpy as np
    from PIL import Image, PngImagePlugin

    Image.MAX_IMAGE_PIXELS = None  # our own limit replaces Pillow's warning
    # Oversized chunks were dropped already; the rest must not make Pillow refuse the image.
    PngImagePlugin.MAX_TEXT_CHUNK = max(PngImagePlugin.MAX_TEXT_CHUNK, METADATA_LIMIT)
    warnings = [] if warnings is None else warnings
    with Image.open(io.BytesIO(data), formats=[_PIL_FORMATS[fmt]]) as im:  # reads the header only
        _check_size(im.width, im.height, source, max_pixels)
        frames = getattr(im, "n_frames", 1)
        if frames > 1 and fmt != "png":  # APNG was counted from its acTL chunk
            warnings.append(_frames_warning(frames, fmt))
        icc = im.info.get("icc_profile")
        exif = im.info.get("exif")
        if isinstance(exif, str):
            exif = exif.encode("latin-1")
        orientation = _orientation(exif) if exif else 1
        mode = im.mode
        if mode == "CMYK":
            im, icc = _cmyk_to_rgb(im, icc, warnings), None
        elif mode == "1":
            im = im.convert("L")
        elif mode in ("P", "PA"):
            im = im.convert("RGBA" if ("transparency" in im.info or mode == "PA") else "RGB")
        elif mode == "RGBa":
            im = im.convert("RGBA")
        elif mode == "La":
            im = im.convert("LA")
        elif mode not in ("L", "LA", "RGB", "RGBA", "I;16", "I;16L", "I;16B", "I;16N", "I", "F"):
            im = im.convert("RGB")  # YCbCr, LAB, HSV
        im.load()
        array = np.asarray(im)
    if array.dtype.kind in "iuf" and array.dtype.itemsize >= 2 and array.dtype != np.uint16:
        array = np.clip(array, 0, 65535).astype(np.uint16)  # 'I' and 'F' grey modes, big-endian 16
    elif array.dtype == bool:
        array = array.astype(np.uint8) * 255
    if array.ndim == 2:
        array = array[:, :, None]
    if orientation != 1:
        array = _orient(array, orientation)
    if exif is not None:
        exif = _reset_orientation(exif)
    return Picture(np.ascontiguousarray(array), fmt, icc=icc, exif=exif, warnings=warnings)


def _cmyk_to_rgb(im, icc: bytes | None, warnings: list[str]):
    """CMYK to RGB through the image's own profile when it has one, else the naive formula.

    The CMYK profile is never carried over: it does not describe RGB pixels.
    """
    if icc and icc[16:20] == b"CMYK":
        try:
            from PIL import ImageCms

            source = ImageCms.ImageCmsProfile(io.BytesIO(icc))
            return ImageCms.profileToProfile(im, source, ImageCms.createProfile("sRGB"), outputMode="RGB")
        except Exception:
            warnings.append("CMYK profile unusable: converted to RGB without it")
    return im.convert("RGB")


# -- TIFF ---------------------------------------------------------------------------------------


def _decode_tiff(data: bytes, source: str, max_pixels: int | None) -> Picture:
    import numpy as np
    import tifffile

    # tifffile logs what it repairs or ignores; a forged file would add lines to our one-line errors.
    logging.getLogger("tifffile").setLevel(logging.ERROR)
    warnings: list[str] = []
    with tifffile.TiffFile(io.BytesIO(data)) as tif:
        page = tif.pages.first
        _check_size(page.imagewidth, page.imagelength, source, max_pixels)
        pages = sum(1 for p in tif.pages if not getattr(p, "is_reduced", False))
        if pages > 1:
            warnings.append(_frames_warning(pages, "tiff"))
        icc_tag = page.tags.get(34675)
        icc = bytes(icc_tag.value) if icc_tag is not None and len(icc_tag.value) <= METADATA_LIMIT else None
        orientation_tag = page.tags.get(274)
        orientation = int(orientation_tag.value) if orientation_tag is not None else 1
        photometric = int(page.photometric)
        array = page.asarray()
        if int(page.planarconfig) == 2 and array.ndim == 3:  # separate planes: (S, H, W)
            array = np.moveaxis(array, 0, -1)
        colormap = page.colormap if photometric == 3 else None
        bits = page.bitspersample
    if array.ndim == 2:
        array = array[:, :, None]
    if array.ndim != 3 or array.shape[2] not in (1, 2, 3, 4, 5):
        raise InputError(f"unsupported TIFF layout {array.shape}", source)
    if colormap is not None:  # palette: indices into 16-bit RGB entries
        rgb = np.asarray(colormap, dtype=np.uint16).T[array[:, :, 0].astype(np.intp)]
        # Writers store 8-bit entries as v * 257 or v << 8; the high byte is v for both.
        array = rgb if bits > 8 else (rgb >> 8).astype(np.uint8)
    elif photometric == 0 and array.dtype.kind == "u":  # min-is-white grey
        array = np.iinfo(array.dtype).max - array
    if array.dtype.kind == "f":
        finite = np.nan_to_num(array, nan=0.0, posinf=1.0, neginf=0.0)
        note = f"{array.dtype.itemsize * 8}-bit float samples read as 16-bit integers"
        if finite.size and (float(finite.min()) < 0 or float(finite.max()) > 1 or not np.isfinite(array).all()):
            note += ", values outside 0..1 clipped"
        warnings.append(note)
        array = (np.clip(finite, 0, 1) * 65535 + 0.5).astype(np.uint16)
    elif array.dtype == bool:
        array = array.astype(np.uint8) * 255
    elif array.dtype not in (np.uint8, np.uint16):
        raise InputError(f"unsupported TIFF sample type {array.dtype}", source)
    if photometric == 5:  # separated: C, M, Y, K (and maybe alpha)
        if array.shape[2] < 4:
            raise InputError(f"unsupported TIFF ink set with {array.shape[2]} channels", source)
        array = _cmyk_array_to_rgb(array)
        if icc and icc[16:20] == b"CMYK":
            icc = None
    if orientation != 1:
        array = _orient(array, orientation)
    return Picture(np.ascontiguousarray(array), "tiff", icc=icc, warnings=warnings)


def _cmyk_array_to_rgb(array):
    """(H, W, 4 or 5) CMYK[A] to RGB[A] of the same dtype: R = (1 - C)(1 - K), and so on."""
    import numpy as np

    top = float(np.iinfo(array.dtype).max)
    ink = array[:, :, :4].astype(np.float32) / top
    rgb = (1 - ink[:, :, :3]) * (1 - ink[:, :, 3:4])
    out = (rgb * top + 0.5).astype(array.dtype)
    if array.shape[2] == 5:
        out = np.concatenate([out, array[:, :, 4:]], axis=2)
    return out


# -- encoding ---------------------------------------------------------------------------------


class Encoded:
    """An encoded image, made as it is written: `write_to(write)` gives its bytes to
    `write(bytes)` piece by piece, so a PNG goes band by band from the pixels into its file and
    is never held whole; `bytes(encoded)` collects them. The other formats' encoders make the
    whole file at once (Pillow, tifffile): for them it holds those bytes."""

    def __init__(self, write_to=None, data: bytes | None = None):
        self._write_to = write_to
        self._data = data

    def write_to(self, write) -> None:
        if self._data is not None:
            write(self._data)
        else:
            self._write_to(write)

    def __bytes__(self) -> bytes:
        if self._data is not None:
            return self._data
        parts: list[bytes] = []
        self._write_to(parts.append)
        return b"".join(parts)


def encode(picture: Picture, fmt: str, quality: int | None = None, strip: bool = False) -> tuple[bytes, list[str]]:
    """Encode to `fmt`; returns the bytes and warnings (things the format could not keep)."""
    encoded, warnings = encoder(picture, fmt, quality, strip)
    return bytes(encoded), warnings


def encoder(picture: Picture, fmt: str, quality: int | None = None, strip: bool = False) -> tuple[Encoded, list[str]]:
    """Encode to `fmt` as it is written (see `Encoded`; `write_atomic` and `write_stdout` take
    it); returns it and warnings (things the format could not keep). `picture.array` must not
    change until it is written."""
    import numpy as np

    array = picture.array
    warnings: list[str] = []
    icc = None if strip else picture.icc
    exif = None if strip else picture.exif
    if fmt in EIGHT_BIT and array.dtype == np.uint16:
        warnings.append(f"{fmt.upper()} holds 8 bits per channel: 16-bit image reduced to 8 bits")
        array = _to_uint8(array)
    if fmt in ("jpeg", "bmp") and array.shape[2] in (2, 4):
        # BMP's alpha variants are read back as opaque by most software, Pillow included.
        warnings.append(f"{fmt.upper()} keeps no alpha channel: image flattened onto white")
        array = _flatten(array)
    if fmt == "webp" and array.shape[2] == 2:
        array = np.concatenate([np.repeat(array[:, :, :1], 3, axis=2), array[:, :, 1:]], axis=2)
    if icc and not _icc_fits(icc, array.shape[2]):
        warnings.append(f"ICC profile for {_icc_space(icc)} data does not fit the output: dropped")
        icc = None
    if fmt == "png":
        return Encoded(lambda write: write_png(write, array, icc, exif)), warnings
    if fmt == "tiff":
        return Encoded(data=_encode_tiff(array, icc)), warnings
    return Encoded(data=_encode_pillow(array, fmt, quality, icc, exif)), warnings


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
    if fmt in ("jpeg", "webp"):
        if icc:
            kwargs["icc_profile"] = icc
        if exif:
            kwargs["exif"] = exif
    return iio.imwrite("<bytes>", image, plugin="pillow", extension=FORMATS[fmt], **kwargs)


# -- PNG writing --------------------------------------------------------------------------------
#
# Every PNG is written here, band by band, straight into the output stream. Neither library can
# do that well: Pillow encodes only a whole Image, which holds RGB at 4 bytes a pixel (a 384 MP
# sr x4 output of 1.07 GiB became a 1.43 GiB copy, and the encoded file was then held whole),
# and keeps only 8 bits of 16-bit colour; pypng streams rows but never filters them (type 0
# only: 27% larger files than Pillow's on an upscaled photo). So rows are filtered here in
# numpy, a band at a time, choosing per row as Pillow and libpng do (the filter whose bytes,
# read as signed, have the smallest sum of absolute values), and deflated at Pillow's level 6:
# the same file size as Pillow's within 0.2% (benchmarks/bench_png.py).

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
# Raw bytes filtered at once. The filters' temporaries (about 12 times the band) then stay in
# the CPU's caches: on a 2000x1500 photo 256 KiB bands filtered in 0.067 s of CPU, 2 MiB ones
# in 0.234 s.
PNG_BAND_BYTES = 256 << 10
# Compressed bytes per IDAT chunk.
PNG_CHUNK_BYTES = 1 << 20
_PNG_COLOUR_TYPES = {1: 0, 2: 4, 3: 2, 4: 6}  # channels -> grey, grey+alpha, RGB, RGBA


def write_png(write, array, icc: bytes | None = None, exif: bytes | None = None, level: int = 6) -> None:
    """PNG of `array` ((H, W, C) uint8 or uint16, C in 1..4) given to `write(bytes)` piece by
    piece; at no time are the whole pixels copied or the whole file held."""
    height, width, channels = array.shape
    writer = PngWriter(write, height, width, channels, array.dtype, icc, exif, level)
    try:
        writer.rows(array)
        writer.close()
    finally:
        writer.stop()


class PngWriter:
    """A PNG made from its rows as they come: `rows(band)` for each (h, W, C) band, top to
    bottom, then `close()`; `stop()` ends its deflate thread (after close, or to give up).
    `threaded=False` deflates in the caller's thread (when other work runs beside the writer)."""

    def __init__(self, write, height: int, width: int, channels: int, dtype, icc: bytes | None = None,
                 exif: bytes | None = None, level: int = 6, threaded: bool = True):
        from concurrent.futures import ThreadPoolExecutor

        import numpy as np

        self.write, self.height, self.width, self.channels = write, height, width, channels
        self.sample = np.dtype(dtype).itemsize  # bytes per sample: 1 or 2 (16 bits, big-endian in PNG)
        write(PNG_SIGNATURE)
        write(_png_chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8 * self.sample,
                                              _PNG_COLOUR_TYPES[channels], 0, 0, 0)))
        if icc:
            write(_png_chunk(b"iCCP", b"ICC Profile\x00\x00" + zlib.compress(icc)))
        if exif:
            write(_png_chunk(b"eXIf", exif[6:] if exif.startswith(b"Exif\x00\x00") else exif))
        self.compressor = zlib.compressobj(level, zlib.DEFLATED, 15, 9)  # memLevel 9: 256 KiB for smaller files
        self.pending: list[bytes] = []
        self.row_bytes = width * channels * self.sample
        self.band_rows = max(1, PNG_BAND_BYTES // self.row_bytes)
        self.previous = np.zeros(self.row_bytes, np.uint8)
        self.done = 0  # rows given so far
        # Two stages: while zlib deflates one band in a thread, numpy filters the next (both release
        # the GIL), so with a second core free the filters cost no wall time beside zlib's.
        self.deflater = ThreadPoolExecutor(1, thread_name_prefix="imgen-png") if threaded else None
        self.deflating = None

    def rows(self, array) -> None:
        """The next rows, (h, W, C) of the writer's dtype; they may change once this returns."""
        import numpy as np

        if array.shape[1:] != (self.width, self.channels) or self.done + len(array) > self.height:
            raise ValueError(f"PNG rows {array.shape} after {self.done} of {self.height}x{self.width}x{self.channels}")
        for top in range(0, len(array), self.band_rows):
            band = array[top:top + self.band_rows].reshape(-1, self.width * self.channels)
            band = band.astype(">u2") if self.sample == 2 else np.ascontiguousarray(band)
            band = band.view(np.uint8)
            filtered = _filter_rows(band, self.previous, self.channels * self.sample)
            self.previous = band[-1].copy()
            if self.deflater is None:
                self._deflated(self.compressor.compress(filtered))
                continue
            if self.deflating is not None:
                self._deflated(self.deflating.result())
            self.deflating = self.deflater.submit(self.compressor.compress, filtered)
        self.done += len(array)

    def close(self) -> None:
        if self.done != self.height:
            raise ValueError(f"PNG closed after {self.done} of its {self.height} rows")
        if self.deflating is not None:
            self._deflated(self.deflating.result())
            self.deflating = None
        self._deflated(self.compressor.flush())
        _write_idat(self.write, self.pending)
        self.pending.clear()
        self.write(_png_chunk(b"IEND", b""))

    def stop(self) -> None:
        if self.deflater is not None:
            self.deflater.shutdown(wait=True, cancel_futures=True)

    def _deflated(self, piece: bytes) -> None:
        # IDAT chunks of exactly PNG_CHUNK_BYTES (the last one shorter): the file's bytes then
        # depend only on the pixels, not on the pieces zlib happened to return for each band.
        self.pending.append(piece)
        while sum(map(len, self.pending)) >= PNG_CHUNK_BYTES:
            joined = b"".join(self.pending)
            _write_idat(self.write, [joined[:PNG_CHUNK_BYTES]])
            self.pending = [joined[PNG_CHUNK_BYTES:]]


def _filter_rows(band, previous, bpp: int):
    """(n, L) bytes -> (n, 1 + L) filtered rows, each led by its filter type (PNG spec, 9):
    None, Sub, Up, Average or Paeth, whichever gives the smallest sum of |signed bytes|.
    `previous` is the row above the band (zeros above the image); bytes wrap modulo 256."""
    import numpy as np

    n, length = band.shape
    up = np.empty_like(band)
    up[0] = previous
    up[1:] = band[:-1]
    left = np.zeros_like(band)
    left[:, bpp:] = band[:, :-bpp]
    corner = np.zeros_like(band)
    corner[:, bpp:] = up[:, :-bpp]
    candidates = np.empty((5, n, length), np.uint8)
    candidates[0] = band
    np.subtract(band, left, out=candidates[1])
    np.subtract(band, up, out=candidates[2])
    # floor((left + up) / 2) without leaving 8 bits
    np.subtract(band, (left >> 1) + (up >> 1) + (left & up & 1), out=candidates[3])
    a, b, c = left.astype(np.int16), up.astype(np.int16), corner.astype(np.int16)
    pa, pb = np.abs(b - c), np.abs(a - c)
    pc = np.abs(a + b - 2 * c)
    predictor = np.where((pa <= pb) & (pa <= pc), left, np.where(pb <= pc, up, corner))
    np.subtract(band, predictor, out=candidates[4])
    del a, b, c, pa, pb, pc, predictor, up, left, corner
    # |v| of v read as a signed byte (int8 abs keeps -128 as 0x80, which is 128 unsigned); on a
    # tie the lower type wins, as in libpng
    cost = np.abs(candidates.view(np.int8)).view(np.uint8).sum(axis=2, dtype=np.uint32)
    choice = cost.argmin(axis=0)
    out = np.empty((n, length + 1), np.uint8)
    out[:, 0] = choice
    out[:, 1:] = candidates[choice, np.arange(n)]
    return out


def _png_chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(body, zlib.crc32(kind)))


def _write_idat(write, pieces: list[bytes]) -> None:
    """One IDAT chunk of `pieces`, written one by one (no joined copy)."""
    size = sum(map(len, pieces))
    if size:
        write(struct.pack(">I", size) + b"IDAT")
        crc = zlib.crc32(b"IDAT")
        for piece in pieces:
            write(piece)
            crc = zlib.crc32(piece, crc)
        write(struct.pack(">I", crc))


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


# -- reading bytes ------------------------------------------------------------------------------


def byte_limit(max_pixels: int | None) -> int | None:
    """Most input bytes worth reading for an image within `max_pixels` (None: no pixel limit)."""
    return max_pixels * BYTES_PER_PIXEL + METADATA_LIMIT * 4 if max_pixels else None


def read_bytes(path: str, limit: int | None = None) -> bytes:
    """A file's bytes, refused early when they cannot be an image or exceed `limit`."""
    try:
        with open(path, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            if limit and size > limit:
                raise InputError(_too_many_bytes(size, limit), path)
            return read_stream(f, path, limit)
    except FileNotFoundError:
        raise InputError("no such file", path) from None
    except IsADirectoryError:
        raise InputError("is a folder", path) from None
    except OSError as exc:
        raise InputError(exc.strerror or str(exc), path) from None


def read_stream(stream, source: str, limit: int | None = None) -> bytes:
    """Everything a stream (stdin, a device, a file) holds, up to `limit` bytes.

    The first bytes are sniffed before more is read, so `/dev/zero` or an endless text stream is
    refused at once; an endless stream of image-looking bytes stops at the limit.
    """
    head = stream.read(16)
    while head and len(head) < 16:  # pipes may deliver the first bytes in pieces
        more = stream.read(16 - len(head))
        if not more:
            break
        head += more
    if head and sniff(head) is None:
        raise InputError(NOT_AN_IMAGE, source)
    chunks, total = [head], len(head)
    while True:
        chunk = stream.read(1 << 22)
        if not chunk:
            break
        total += len(chunk)
        if limit and total > limit:
            raise InputError(_too_many_bytes(total, limit, more=True), source)
        chunks.append(chunk)
    return b"".join(chunks)


def _too_many_bytes(size: int, limit: int, more: bool = False) -> str:
    return (f"{'more than ' if more else ''}{size / 1e9:.2g} GB of input, above the {limit / 1e9:.2g} GB that "
            "--max-pixels allows (raise it, or 0 for no limit)")


# -- writing ------------------------------------------------------------------------------------


def write_all(fd: int, data: bytes) -> None:
    """Write every byte to `fd`, looping over short writes; errors (EPIPE, ENOSPC) propagate."""
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        if written <= 0:  # never expected from a blocking descriptor, but a loop must end
            raise OSError(5, "short write")
        view = view[written:]


def _write_fd(fd: int, data: bytes | Encoded) -> None:
    """Bytes, or an Encoded image as it is made, to `fd`, every write checked."""
    if isinstance(data, Encoded):
        data.write_to(lambda piece: write_all(fd, piece))
    else:
        write_all(fd, data)


def write_stdout(data: bytes | Encoded, stream=None) -> None:
    """Image bytes (or an Encoded image, as it is made) to stdout, every write checked.

    A closed stdout (`>&-`), a full device (`> /dev/full`) or a short write is an OutputError;
    a reader that went away raises BrokenPipeError, which the CLI turns into exit 141.
    """
    import sys

    stream = stream if stream is not None else sys.stdout
    if stream is None:
        raise OutputError("stdout is closed", "-")
    try:
        fd = stream.fileno()
    except (AttributeError, OSError, ValueError):  # an in-memory stream (tests, embedding)
        target = getattr(stream, "buffer", stream)
        if isinstance(data, Encoded):
            data.write_to(target.write)
        else:
            target.write(data)
        target.flush()
        return
    try:
        stream.flush()
        _write_fd(fd, data)
    except BrokenPipeError:
        raise
    except OSError as exc:
        if exc.errno == 9:  # EBADF
            raise OutputError("stdout is closed", "-") from None
        raise OutputError(exc.strerror or str(exc), "-") from None


def write_atomic(path: str | os.PathLike, data: bytes | Encoded, overwrite: bool = False) -> None:
    """Write `data` (bytes, or an Encoded image) to `path` so that readers never see a partial file.

    The bytes go to a temporary file in the same folder (an Encoded image as it is made, so
    an interrupted encode is an interrupted write) and are then put in place (see AtomicFile).

    An existing output that is not a regular file (a character device such as /dev/null, a
    FIFO) is a stream, not a file to replace: with `overwrite` the bytes are written into it.
    """
    path = Path(path)
    if is_stream(path):
        if not overwrite:
            raise OutputError("exists (use --overwrite to write into it)", str(path))
        return _write_into(path, data)
    file = AtomicFile(path)
    try:
        if isinstance(data, Encoded):
            data.write_to(file.write)
        else:
            file.write(data)
        file.commit(overwrite)
    finally:
        file.discard()


def is_stream(path: str | os.PathLike) -> bool:
    """Whether `path` exists as something written into rather than replaced (a device, a FIFO)."""
    existing = _stat(Path(path))
    return existing is not None and not stat.S_ISREG(existing.st_mode) and not stat.S_ISDIR(existing.st_mode)


class AtomicFile:
    """A file made under a temporary name beside `path`: `write` to it (every write checked),
    `restart` to empty it, `commit` to put it in place, `discard` to remove it (a no-op once
    committed; call it in a `finally`, so an error or a signal leaves nothing behind).

    `commit` flushes the bytes to disk, then links the file into place, which fails if the name
    exists (closing the race between check and write), or, with `overwrite`, renames it over it.
    """

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        folder = self.path.parent if str(self.path.parent) else Path(".")
        self.fd = None
        try:
            self.fd, self.tmp = tempfile.mkstemp(prefix=_temp_prefix(self.path.name), suffix=".imgen-tmp",
                                                 dir=folder)
        except OSError as exc:
            raise OutputError(exc.strerror or str(exc), str(self.path)) from None

    def write(self, data: bytes) -> None:
        try:
            write_all(self.fd, data)
        except OSError as exc:
            raise OutputError(exc.strerror or str(exc), str(self.path)) from None

    def restart(self) -> None:
        os.ftruncate(self.fd, 0)
        os.lseek(self.fd, 0, os.SEEK_SET)

    def commit(self, overwrite: bool = False) -> None:
        path, tmp = self.path, self.tmp
        try:
            try:
                os.fsync(self.fd)
            finally:
                os.close(self.fd)
                self.fd = None
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
            self.discard()

    def discard(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None
        if os.path.lexists(self.tmp):
            os.unlink(self.tmp)


class PngFile:
    """A PNG file written from its rows as a pipeline finishes them (Engine.run's `stream`), so
    the whole output is never held: `start(height, width, channels, dtype)`, `rows(band)` for
    each (h, W, C) band top to bottom, `finish()`; `restart()` begins again (the engine retries a
    step with smaller tiles or in fp32). Then `commit(overwrite)` puts the file in place, or
    `discard()` removes it. `warnings` says what the file could not keep (see `encoder`)."""

    def __init__(self, path: str | os.PathLike, icc: bytes | None = None, exif: bytes | None = None):
        self.file = AtomicFile(path)
        self.icc, self.exif = icc, exif
        self.warnings: list[str] = []
        self.size = None  # (height, width) once started
        self.writer = None

    def start(self, height: int, width: int, channels: int, dtype) -> None:
        icc = self.icc
        if icc and not _icc_fits(icc, channels):
            self.warnings = [f"ICC profile for {_icc_space(icc)} data does not fit the output: dropped"]
            icc = None
        self.size = (height, width)
        # Deflated in the caller's thread, between tiles: a thread of its own would compete with
        # torch's for the cores (measured on 2 cores: no faster, 2 to 5% more CPU).
        self.writer = PngWriter(self.file.write, height, width, channels, dtype, icc, self.exif, threaded=False)

    def rows(self, band) -> None:
        self.writer.rows(band)

    def finish(self) -> None:
        try:
            self.writer.close()
        finally:
            self._stop()

    def restart(self) -> None:
        self._stop()
        self.file.restart()
        self.warnings, self.size = [], None

    def commit(self, overwrite: bool = False) -> None:
        self.file.commit(overwrite)

    def discard(self) -> None:
        self._stop()
        self.file.discard()

    def _stop(self) -> None:
        if self.writer is not None:
            self.writer.stop()
            self.writer = None


NAME_MAX = 255
_TEMP_EXTRA = len(".") + len(".") + 8 + len(".imgen-tmp")  # dots, mkstemp's random part, suffix


def _temp_prefix(name: str) -> str:
    """'.NAME.' shortened so the whole temporary name fits in NAME_MAX bytes (a cut UTF-8
    sequence is harmless: file names are bytes, and fsdecode/fsencode round-trip them)."""
    return "." + os.fsdecode(os.fsencode(name)[: NAME_MAX - _TEMP_EXTRA]) + "."


def _stat(path: Path):
    try:
        return os.stat(path)
    except OSError:
        return None


def _write_into(path: Path, data: bytes | Encoded) -> None:
    try:
        fd = os.open(path, os.O_WRONLY | getattr(os, "O_CLOEXEC", 0))
        try:
            _write_fd(fd, data)
        finally:
            os.close(fd)
    except OSError as exc:
        raise OutputError(exc.strerror or str(exc), str(path)) from None


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
