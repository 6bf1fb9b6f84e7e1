"""Upload test corpus, built in memory: bad inputs, and a valid image in every accepted format/mode.

Plain functions returning bytes, shared by the upload unit tests and the HTTP end-to-end
tests. Every image is drawn from ``pattern``: smooth gradients (so JPEG keeps them close)
with a bright block in the top-left corner, so a rotation or flip shows.
"""

from __future__ import annotations

import io
import struct
import zlib
from typing import Any

import numpy as np
from PIL import Image

SIZE = 48  # side of the square samples (the EXIF one is SIZE × SIZE too, so it can be exact)


def pattern(width: int = SIZE, height: int = SIZE) -> np.ndarray:
    """uint8 (height, width, 3): R rises to the right, G downwards, B diagonally; a white
    block fills the top-left quarter-by-quarter corner. No rotation or flip maps it to itself.
    """
    y, x = np.mgrid[0:height, 0:width].astype(np.float64)
    rgb = np.stack([x / max(width - 1, 1), y / max(height - 1, 1), (x + y) / (width + height)], -1)
    out = (rgb * 200 + 20).round().astype(np.uint8)
    out[: height // 4, : width // 4] = 255
    return out


def _save(img: Image.Image, fmt: str, **params: Any) -> bytes:
    buf = io.BytesIO()
    img.save(buf, fmt, **params)
    return buf.getvalue()


def _rgb(width: int = SIZE, height: int = SIZE) -> Image.Image:
    return Image.fromarray(pattern(width, height))


# --------------------------------------------------------------------------- bad inputs


def empty_file() -> bytes:
    return b""


def text_file() -> bytes:
    return b"name,smile\nalice,1\nbob,0\n"  # a CSV someone picked by mistake


def truncated_jpeg() -> bytes:
    """A JPEG cut at 60%: the header parses, the scan data ends early."""
    full = _save(_rgb(128, 128), "JPEG", quality=95)
    return full[: len(full) * 6 // 10]


def corrupt_png() -> bytes:
    """A PNG whose IDAT bytes are scrambled (the CRC no longer matches)."""
    data = bytearray(_save(_rgb(), "PNG"))
    idat = data.index(b"IDAT") + 8
    data[idat : idat + 16] = bytes(16)
    return bytes(data)


def _chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def png_claiming_pixels(width: int, height: int) -> bytes:
    """A few hundred bytes of PNG whose IHDR claims width × height RGB (a decompression bomb).

    The IDAT holds one deflated row only, so the file is also truncated: a decoder that did
    not check the header first would allocate width·height·3 bytes, then fail (415, not 413).
    """
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)  # 8-bit RGB, no interlace
    idat = zlib.compress(b"\x00" + bytes(3 * min(width, 64)), 9)
    sig = b"\x89PNG\r\n\x1a\n"
    return sig + _chunk(b"IHDR", ihdr) + _chunk(b"IDAT", idat) + _chunk(b"IEND", b"")


def oversized_upload(n_bytes: int) -> bytes:
    """A valid PNG padded with zeros after IEND to exactly n_bytes (only its size is wrong)."""
    png = _save(_rgb(), "PNG")
    if n_bytes < len(png):
        raise ValueError(f"n_bytes must be at least {len(png)}, the size of the PNG itself.")
    return png + bytes(n_bytes - len(png))


def ppm_image() -> bytes:
    """A valid image in a format Pillow reads but facegen does not accept (PPM)."""
    return _save(_rgb(), "PPM")


def heic_header() -> bytes:
    """The start of an HEIC file (ftyp box), what iPhones send unless told otherwise."""
    return struct.pack(">I", 24) + b"ftypheic" + b"\x00\x00\x00\x00mif1heic" + bytes(64)


def bad_inputs() -> dict[str, tuple[bytes, int]]:
    """name -> (bytes, expected HTTP status) for every bad upload."""
    return {
        "empty": (empty_file(), 415),
        "text": (text_file(), 415),
        "truncated_jpeg": (truncated_jpeg(), 415),
        "corrupt_png": (corrupt_png(), 415),
        "ppm": (ppm_image(), 415),
        "heic": (heic_header(), 415),
        "bomb_png": (png_claiming_pixels(30000, 30000), 413),
    }


# --------------------------------------------------------------------------- valid images


def exif_rotated_jpeg() -> bytes:
    """The pattern stored as-is, tagged EXIF orientation 6 ("rotate 90° clockwise to view")."""
    exif = Image.Exif()
    exif[0x0112] = 6  # Orientation
    return _save(_rgb(), "JPEG", quality=95, exif=exif.tobytes())


def grey16_png() -> bytes:
    """16-bit grey PNG, a horizontal ramp over the full 0..65535 range."""
    ramp = np.linspace(0, 65535, SIZE).round().astype(np.uint16)
    return _save(Image.fromarray(np.tile(ramp, (SIZE, 1))), "PNG")


def _palette(transparent: bool) -> bytes:
    img = _rgb().quantize(63)  # indices 0..62; 63 is left free to mark transparency
    if not transparent:
        return _save(img, "PNG")
    img.putpalette([*(img.getpalette() or [])[: 63 * 3], 0, 0, 0])
    img.paste(63, (SIZE * 3 // 4, SIZE * 3 // 4, SIZE, SIZE))  # bottom-right corner
    return _save(img, "PNG", transparency=63)


def _rgba() -> bytes:
    rgba = np.dstack([pattern(), np.full((SIZE, SIZE), 255, np.uint8)])
    rgba[-SIZE // 4 :, -SIZE // 4 :, 3] = 0  # bottom-right corner fully transparent
    return _save(Image.fromarray(rgba), "PNG")


def _frames(fmt: str, **params: Any) -> bytes:
    """Two frames: the pattern first, then a flat blue one (decoders must take the first)."""
    second = Image.new("RGB", (SIZE, SIZE), (0, 0, 255))
    return _save(_rgb(), fmt, save_all=True, append_images=[second], **params)


def mpo_image() -> bytes:
    """A multi-picture JPEG (MPO), as phone cameras write: the pattern, then a flat frame."""
    return _frames("MPO", quality=95)


def sample_images() -> dict[str, bytes]:
    """name -> bytes of a valid SIZE×SIZE image in every accepted format and mode."""
    rgb = _rgb()
    return {
        "jpeg_rgb": _save(rgb, "JPEG", quality=95),
        "jpeg_grey": _save(rgb.convert("L"), "JPEG", quality=95),
        "jpeg_cmyk": _save(rgb.convert("CMYK"), "JPEG", quality=95),
        "jpeg_exif_rotated": exif_rotated_jpeg(),
        "mpo": mpo_image(),
        "png_rgb": _save(rgb, "PNG"),
        "png_grey": _save(rgb.convert("L"), "PNG"),
        "png_rgba": _rgba(),
        "png_palette": _palette(transparent=False),
        "png_palette_transparency": _palette(transparent=True),
        "png_grey16": grey16_png(),
        "webp": _save(rgb, "WEBP", lossless=True),
        "webp_animated": _frames("WEBP", lossless=True, duration=100),
        "bmp": _save(rgb, "BMP"),
        "gif_animated": _frames("GIF", duration=100, loop=0),
        "tiff": _save(rgb, "TIFF", compression="tiff_lzw"),
        "tiff_multipage": _frames("TIFF"),
    }


# The samples whose pixels are exactly the pattern (lossless, RGB, no EXIF, first frame).
LOSSLESS_RGB = ("png_rgb", "webp", "webp_animated", "bmp", "tiff", "tiff_multipage")
