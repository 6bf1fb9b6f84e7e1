"""Uploaded image bytes to a model input, safely: size limits first, decoding last.

Order of defences, each a 413 or 415 with a sentence naming the field and what to do:

1. ``read_upload`` copies the upload in 64 KiB chunks and stops at ``max_bytes`` (413).
   Starlette has already spooled a multipart file to memory/disk by then, so the hard limit
   on the request body belongs in front of the parser (Content-Length / ASGI middleware);
   this is the per-field limit.
2. ``decode_upload`` opens the bytes lazily with Pillow, offering only the accepted formats
   (so no other plugin, e.g. EPS with its Ghostscript call, ever sees untrusted bytes), and
   checks width × height from the header against ``max_pixels`` before any pixel is decoded
   (decompression bombs: a few hundred bytes of PNG can claim 30000×30000 = 2.7 GB of RGB).
   Pillow's own bomb check (``DecompressionBombError``, and ``DecompressionBombWarning``
   when warnings are errors) also maps to 413; and because the effective limit is
   min(max_pixels, ``PIL.Image.MAX_IMAGE_PIXELS``), an image over Pillow's limit is refused
   whatever the warning filters say: the warning can neither crash a request nor be ignored.
3. Truncated or corrupt data: 415. Multi-frame GIF/TIFF/WebP/APNG/MPO: the first frame.
4. ``facegen_core.preprocess.to_model_array_and_face``: EXIF orientation, grey/palette/alpha/
   CMYK/16-bit conversion, crop and resize, the same code that prepared the training images.
   With crop "align" (``upload_crop``) it finds the largest face with MTCNN and warps it to the
   training framing; no face is a 422 (``NoFaceFoundError``), and a server without the
   detector's weights a 503 (``AlignmentUnavailableError``). Detection runs on a copy shrunk
   to at most 640 px, so its cost is bounded by that, not by the upload's size.

Memory (issue 12): ``upload_cost`` reads only the header and says how many bytes decoding will
hold (after JPEG draft mode); ``service.api.inputs`` holds that many bytes of the process's
``DecodeBudget`` while the file decodes, so the pixels decoded at once across all requests stay
bounded. A file whose longer side is at least ``2 * DECODE_MAX_SIDE`` is shrunk while decoding
where the format allows it (JPEG's DCT scaling via ``Image.draft``) and right after the decode
otherwise (``Image.reduce``, an integer box filter), so everything after the decode (EXIF
rotation, mode conversion, alignment, crop) works on at most ~2 × DECODE_MAX_SIDE px a side.

``decode_upload`` is synchronous, CPU-bound and thread-safe (no Pillow global is changed per
call; the plugin registry is filled once at import), for the app's thread pool.
"""

from __future__ import annotations

import dataclasses
import io
import re
import struct
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Protocol

import numpy as np
from PIL import Image

from facegen_core import align as face_align
from facegen_core.align import Face
from facegen_core.preprocess import crop_box, to_model_array_and_face
from service.errors import (
    AlignmentUnavailableError,
    NoFaceFoundError,
    PayloadTooLargeError,
    UnsupportedImageError,
)

# MPO is what phones write: a JPEG with extra pictures appended; Pillow names it "MPO".
ALLOWED_FORMATS = {"JPEG", "PNG", "WEBP", "BMP", "GIF", "TIFF", "MPO"}
ACCEPTED = "a JPEG, PNG, WebP, BMP, GIF or TIFF image"
MAX_BYTES_ENV = "FACEGEN_MAX_UPLOAD_BYTES"
MAX_PIXELS_ENV = "FACEGEN_MAX_IMAGE_PIXELS"
CHUNK_BYTES = 64 * 1024
# MTCNN finds faces of >= MIN_FACE_SIZE px in a copy shrunk to <= DETECT_MAX_SIDE px, so in the
# upload a face must be >= 20 px and >= 1/32 of the longer side.
MIN_FACE_PX = face_align.MIN_FACE_SIZE
MIN_FACE_FRACTION = face_align.DETECT_MAX_SIDE // face_align.MIN_FACE_SIZE

# Uploads are shrunk to at least this (and under twice this) many px on their longer side
# before any processing: the model sees 64 px and the face detector 640 px, so nothing needs more.
DECODE_MAX_SIDE = 1024
# Bytes per pixel Pillow holds in memory per mode (RGB is stored as 32-bit RGBX).
_MODE_BYTES = {"1": 1, "L": 1, "P": 1, "I;16": 2, "I;16B": 2, "I;16L": 2, "I;16N": 2}

# Import every plugin now: Image.open would otherwise do it lazily on the first TIFF/WebP
# upload, mutating Pillow's registry from whichever worker thread got there first.
Image.init()
# Pillow has no MPO opener: an MPO file opens through the JPEG plugin, which names it "MPO".
_OPEN_FORMATS = sorted(ALLOWED_FORMATS - {"MPO"})
# Errors Pillow raises for data it cannot decode (truncated, bad CRC, bad zlib, bad header).
_DECODE_ERRORS = (OSError, SyntaxError, ValueError, EOFError, IndexError, struct.error, zlib.error)


def upload_crop(model_crop: str, align: bool | None) -> str:
    """The crop mode an upload gets, from the model's ``input_crop`` and the request's ``align``.

    ``None`` (not sent): the model's own crop, so a model trained on aligned faces aligns and an
    older model's uploads are cropped bit-identically to before. ``True``: "align" for any model
    (asked for explicitly). ``False``: no alignment; a model trained on aligned faces gets
    "celeba", the fixed box alignment falls back to in training, others keep their own crop.
    """
    if align is None:
        return model_crop
    if align:
        return "align"
    return "celeba" if model_crop == "align" else model_crop


def no_face_message(field: str) -> str:
    """The 422 detail for an upload in which MTCNN found no face."""
    return (
        f"No face was found in the image in field '{field}'. Send a photo with one clearly "
        f"visible, roughly frontal face at least {MIN_FACE_PX} px across and at least "
        f"1/{MIN_FACE_FRACTION} of the photo's longer side, or send align=false to skip "
        "alignment and use the fixed CelebA crop."
    )


class AsyncReadable(Protocol):
    """What ``read_upload`` needs of ``starlette.datastructures.UploadFile``."""

    async def read(self, size: int = -1) -> bytes: ...


def format_bytes(n: int) -> str:
    """12897484 -> '12.3 MiB', 10485760 -> '10 MiB'; binary units, as the limits are bytes."""
    if n < 1024:
        return f"{n} bytes"
    value, unit = (n / 1024, "KiB") if n < 1024**2 else (n / 1024**2, "MiB")
    return f"{value:.1f}".removesuffix(".0") + f" {unit}"


def _too_large(field: str, size: str, max_bytes: int) -> PayloadTooLargeError:
    return PayloadTooLargeError(
        f"The file in field '{field}' is {size}; the limit is {format_bytes(max_bytes)} "
        f"({MAX_BYTES_ENV}). Send a smaller image.",
        field=field,
    )


async def read_upload(upload: AsyncReadable, max_bytes: int, field: str) -> bytes:
    """All bytes of ``upload``, read 64 KiB at a time, stopping (413) once past ``max_bytes``."""
    known = getattr(upload, "size", None)  # Starlette knows the spooled size: fail before reading
    if isinstance(known, int) and known > max_bytes:
        raise _too_large(field, format_bytes(known), max_bytes)
    data = bytearray()
    while chunk := await upload.read(CHUNK_BYTES):
        data += chunk
        if len(data) > max_bytes:
            raise _too_large(field, f"over {format_bytes(max_bytes)}", max_bytes)
    if not data:
        raise UnsupportedImageError(
            f"The file in field '{field}' is empty (0 bytes). Send {ACCEPTED}.", field=field
        )
    return bytes(data)


def _unidentified_message(data: bytes, field: str) -> str:
    head = data[:32]
    if head[4:8] == b"ftyp" and head[8:12] in (b"heic", b"heix", b"mif1", b"msf1", b"avif"):
        return (
            f"The file in field '{field}' is an HEIC/AVIF image, which facegen cannot read. "
            "Send it as a JPEG or PNG instead (phones can export either)."
        )
    return f"The file in field '{field}' is not {ACCEPTED} (or its header is corrupt). Send {ACCEPTED}."


def _pixel_limit(max_pixels: int) -> tuple[int, str]:
    """The effective limit and where it comes from: ours, or Pillow's if that is lower."""
    pil = Image.MAX_IMAGE_PIXELS
    if pil is not None and max_pixels > pil:
        return pil, "Pillow's decompression-bomb limit, PIL.Image.MAX_IMAGE_PIXELS"
    return max_pixels, MAX_PIXELS_ENV


def _check_pixels(size: tuple[int, int], max_pixels: int, field: str) -> None:
    limit, source = _pixel_limit(max_pixels)
    width, height = size
    if width * height > limit:
        raise PayloadTooLargeError(
            f"The image in field '{field}' is {width}×{height} = {width * height:,} pixels; "
            f"the limit is {limit:,} pixels ({source}). Send a smaller image.",
            field=field,
        )


def _bomb(exc: Exception, max_pixels: int, field: str) -> PayloadTooLargeError:
    """Pillow's own bomb check fired (its message holds the pixel count, not the size)."""
    found = re.search(r"\((\d+) pixels\)", str(exc))
    claimed = f"{int(found.group(1)):,} pixels" if found else "more pixels than Pillow allows"
    limit, source = _pixel_limit(max_pixels)
    return PayloadTooLargeError(
        f"The image in field '{field}' is {claimed} by its header; the limit is {limit:,} "
        f"pixels ({source}). Send a smaller image.",
        field=field,
    )


def decode_upload(
    data: bytes, *, max_pixels: int, image_size: int, channels: int, crop: str, field: str = "image"
) -> np.ndarray:
    """Image file bytes -> uint8 (image_size, image_size, channels), as training saw its images.

    ``decode_upload_and_face`` without the face.
    """
    return decode_upload_and_face(
        data, max_pixels=max_pixels, image_size=image_size, channels=channels, crop=crop, field=field
    )[0]


def _prepare(
    img: Image.Image, image_size: int, channels: int, crop: str, field: str
) -> tuple[np.ndarray, Face | None]:
    try:
        return to_model_array_and_face(img, image_size, channels, crop)
    except face_align.NoFaceError as exc:  # a ValueError: must not become a 415 below
        raise NoFaceFoundError(no_face_message(field), field=field) from exc
    except face_align.DetectorUnavailableError as exc:
        raise AlignmentUnavailableError(
            f"This server cannot align faces (an operator error): {str(exc).rstrip('.')}. "
            "Meanwhile, send align=false to skip alignment.",
            field=field,
        ) from exc


def _shrink_factor(size: tuple[int, int]) -> int:
    """The integer factor that brings the longer side to [DECODE_MAX_SIDE, 2·DECODE_MAX_SIDE)."""
    return max(1, max(size) // DECODE_MAX_SIDE)


def decoded_bytes(size: tuple[int, int], mode: str) -> int:
    """Bytes Pillow allocates to hold an image of ``size`` in ``mode``."""
    return size[0] * size[1] * _MODE_BYTES.get(mode, 4)


@contextmanager
def _open(data: bytes, max_pixels: int, field: str) -> Iterator[tuple[Image.Image, tuple[int, int]]]:
    """(The image, its size as the header claims), header read and checked (format, width ×
    height), nothing decoded. A JPEG is in draft mode: decoding produces the DCT-scaled size
    (1/2, 1/4 or 1/8), at least 1/``_shrink_factor`` of the claimed size."""
    if not data:
        raise UnsupportedImageError(
            f"The file in field '{field}' is empty (0 bytes). Send {ACCEPTED}.", field=field
        )
    try:
        with Image.open(io.BytesIO(data), formats=_OPEN_FORMATS) as img:
            if img.format not in ALLOWED_FORMATS:  # defence in depth; formats= already limits
                raise UnsupportedImageError(
                    f"The file in field '{field}' is a {img.format} image. Send {ACCEPTED}.",
                    field=field,
                )
            _check_pixels(img.size, max_pixels, field)  # header only: nothing decoded yet
            claimed = img.size
            factor = _shrink_factor(claimed)
            if factor > 1 and img.format in ("JPEG", "MPO"):
                img.draft(img.mode, (img.width // factor, img.height // factor))
            yield img, claimed
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise _bomb(exc, max_pixels, field) from exc
    except Image.UnidentifiedImageError as exc:
        raise UnsupportedImageError(_unidentified_message(data, field), field=field) from exc
    except (*_DECODE_ERRORS, Warning) as exc:
        # Warning: Pillow warns on e.g. truncated TIFF reads; where warnings are errors
        # (pytest, -W error) the decode stopped there, so the file could not be read.
        reason = str(exc).rstrip(".") or type(exc).__name__
        raise UnsupportedImageError(
            f"The image in field '{field}' could not be decoded: it is truncated or corrupt "
            f"({reason}). Send the complete file as {ACCEPTED}.",
            field=field,
        ) from exc


def upload_cost(data: bytes, *, max_pixels: int, field: str = "image") -> int:
    """Bytes decoding ``data`` will hold at once, from its header alone (after JPEG draft mode).

    Raises as ``decode_upload_and_face`` does for what the header shows (413 too many pixels,
    415 not an accepted image), so a refused file never waits for the decode budget.
    """
    with _open(data, max_pixels, field) as (img, _):
        return decoded_bytes(img.size, img.mode)


def _scaled(face: Face | None, scale: float) -> Face | None:
    """A Face found in a shrunk copy, in pixels of the full-size upload."""
    if face is None or scale == 1.0:
        return face
    left, top, right, bottom = (float(v) * scale for v in face.box)
    return dataclasses.replace(face, box=(left, top, right, bottom), landmarks=face.landmarks * scale)


def decode_upload_and_face(
    data: bytes, *, max_pixels: int, image_size: int, channels: int, crop: str, field: str = "image"
) -> tuple[np.ndarray, Face | None]:
    """Image file bytes -> (uint8 (image_size, image_size, channels), the Face aligned by).

    The Face is None unless ``crop`` is "align"; its box and landmarks are in pixels of the
    upload after EXIF rotation. Raises PayloadTooLargeError (413) for too many pixels,
    UnsupportedImageError (415) for empty, unaccepted, truncated or corrupt data,
    NoFaceFoundError (422) when alignment finds no face and AlignmentUnavailableError (503)
    when the detector's weights are missing. Only the first frame is used. An upload of
    2·DECODE_MAX_SIDE px or more on its longer side is shrunk first (see the module docstring).
    """
    crop_box(1, 1, crop)  # a bad crop mode is a server bug (ValueError -> 500), not the upload's
    with _open(data, max_pixels, field) as (img, claimed):
        img.load()  # first frame; a GIF frame may grow the canvas, so check again
        _check_pixels(img.size, max_pixels, field)
        factor = _shrink_factor(img.size)
        small = img.reduce(factor) if factor > 1 else img  # (w/f, h/f): the full decode is freed next
        if small is not img:
            img.close()
        arr, face = _prepare(small, image_size, channels, crop, field)
        return arr, _scaled(face, max(claimed) / max(small.size))
