"""Model output (uint8 arrays) to PNG, grid, strip, APNG, GIF and zip bytes, each labelled.

Every PNG facegen sends carries these text chunks (``png_text`` builds them):

=========================  ==================================================================
``Software``               ``facegen``
``facegen:model``          the artifact's model name
``facegen:version``        the artifact's integer version
``facegen:seed``           the seed the latent came from (only where there is one)
``facegen:<key>``          any extra metadata the caller passes (e.g. ``temperature``)
``AI-Generated``           ``true``
``Description``            a sentence saying the face is AI-generated, not a real person
``DigitalSourceType``      the IPTC NewsCodes URI ending in ``trainedAlgorithmicMedia``
``XML:com.adobe.xmp``      (iTXt) an XMP packet with ``Iptc4xmpExt:DigitalSourceType`` set to
                           the same URI, where photo tools and platforms look for it
=========================  ==================================================================

``encode_zip`` adds ``facegen:frame`` (0-based) to each member. GIF has no key/value text, so
``encode_gif`` writes the same facts into its comment extension. No time stamp is written, so
the same request gives the same bytes (cacheable, testable).

Speed: PNG encoding is zlib, and its cost is almost all compression effort; ``compress_level``
defaults to 1 (fast, ~2× the size of level 9 on faces) and is a parameter everywhere.
"""

from __future__ import annotations

import io
import zipfile
from collections.abc import Mapping

import numpy as np
from PIL import Image, PngImagePlugin

from facegen_core.images import make_grid, to_pil

# IPTC Digital Source Type for media created by a trained model (IPTC NewsCodes vocabulary).
DIGITAL_SOURCE_TYPE = "http://cv.iptc.org/newscodes/digitalsourcetype/trainedAlgorithmicMedia"
DESCRIPTION = "AI-generated face (facegen VAE-GAN); not a photograph of a real person."
XMP_KEY = "XML:com.adobe.xmp"
_XMP = (
    '<?xpacket begin="\ufeff" id="W5M0MpCehiHzreSzNTczkc9d"?>'
    '<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF'
    ' xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">'
    '<rdf:Description rdf:about=""'
    ' xmlns:Iptc4xmpExt="http://iptc.org/std/Iptc4xmpExt/2008-02-29/"'
    f' Iptc4xmpExt:DigitalSourceType="{DIGITAL_SOURCE_TYPE}"/>'
    '</rdf:RDF></x:xmpmeta><?xpacket end="r"?>'
)
GRID_PADDING = 2  # pixels between (and around) the tiles of a grid or strip


def png_text(model: str, version: int, seed: int | None = None, **extra: str) -> dict[str, str]:
    """The text chunks of every facegen PNG (see the module docstring); extra keys get ``facegen:``."""
    text = {"Software": "facegen", "facegen:model": model, "facegen:version": str(int(version))}
    if seed is not None:
        text["facegen:seed"] = str(int(seed))
    text.update({f"facegen:{key}": str(value) for key, value in extra.items()})
    text["AI-Generated"] = "true"
    text["Description"] = DESCRIPTION
    text["DigitalSourceType"] = DIGITAL_SOURCE_TYPE
    text[XMP_KEY] = _XMP
    return text


def _check_image(image: np.ndarray, ndim: int) -> None:
    if image.dtype != np.uint8 or image.ndim != ndim or image.shape[-1] not in (1, 3):
        shape = "(H, W, C)" if ndim == 3 else "(N, H, W, C)"
        raise ValueError(f"Expected a uint8 array {shape} with C of 1 or 3; got {image.dtype} {image.shape}.")
    if ndim == 4 and image.shape[0] == 0:
        raise ValueError("Expected at least one image; got an empty batch.")


def _pnginfo(text: Mapping[str, str]) -> PngImagePlugin.PngInfo:
    info = PngImagePlugin.PngInfo()
    for key, value in text.items():
        if key == XMP_KEY:
            info.add_itxt(key, value)  # XMP must be iTXt (XMP spec part 3, §1.1.5)
        else:
            info.add_text(key, value)  # tEXt, or iTXt when the value is not Latin-1
    return info


def _save_png(pil: Image.Image, text: Mapping[str, str], compress_level: int) -> bytes:
    buf = io.BytesIO()
    pil.save(buf, "PNG", pnginfo=_pnginfo(text), compress_level=compress_level)
    return buf.getvalue()


def encode_png(image: np.ndarray, text: dict[str, str], compress_level: int = 1) -> bytes:
    """uint8 (H, W, 1|3) -> PNG bytes ('L' or 'RGB') with ``text`` as its text chunks."""
    _check_image(image, 3)
    return _save_png(to_pil(np.ascontiguousarray(image)), text, compress_level)


def _tile(images: np.ndarray, ncols: int | None) -> np.ndarray:
    """One image as itself; several as a padded grid of ``ncols`` (default ceil √n) columns."""
    _check_image(images, 4)
    if images.shape[0] == 1:
        return images[0]
    return make_grid(images, ncols=ncols, padding=GRID_PADDING)


def encode_grid(
    images: np.ndarray, text: dict[str, str], compress_level: int = 1, ncols: int | None = None
) -> bytes:
    """uint8 (N, H, W, C) -> one PNG: N == 1 is the image itself, else a ceil(√N)-column grid.

    The grid is ``facegen_core.images.make_grid`` with 2 px of black padding, row-major, so
    tile i sits at row i // cols, column i % cols, at (2 + row·(H+2), 2 + col·(W+2)).
    """
    return encode_png(_tile(images, ncols), text, compress_level)


def encode_strip(frames: np.ndarray, text: dict[str, str], compress_level: int = 1) -> bytes:
    """uint8 (N, H, W, C) -> one PNG with the frames left to right in one row (padded as a grid)."""
    _check_image(frames, 4)
    return encode_png(_tile(frames, frames.shape[0]), text, compress_level)


def _frames_to_pil(frames: np.ndarray) -> list[Image.Image]:
    _check_image(frames, 4)
    return [to_pil(np.ascontiguousarray(f)) for f in frames]


def encode_apng(
    frames: np.ndarray, text: dict[str, str], duration_ms: int = 100, compress_level: int = 1
) -> bytes:
    """uint8 (N, H, W, C) -> animated PNG (looping forever) with ``text`` as its text chunks.

    Viewers without APNG support show the first frame. Pillow merges identical consecutive
    frames into one (summing their durations), so n_frames is fewer when frames repeat.
    """
    pils = _frames_to_pil(frames)
    buf = io.BytesIO()
    pils[0].save(
        buf,
        "PNG",
        save_all=True,
        append_images=pils[1:],
        duration=int(duration_ms),
        loop=0,
        pnginfo=_pnginfo(text),
        compress_level=compress_level,
    )
    return buf.getvalue()


def gif_comment(text: Mapping[str, str] | None = None) -> str:
    """The GIF comment: the AI-generated note plus the facegen keys of ``text``, if any."""
    facts = [DESCRIPTION, f"IPTC digital source type: {DIGITAL_SOURCE_TYPE}"]
    if text:
        facts += [f"{k}={v}" for k, v in text.items() if k.startswith("facegen:")]
    return " ".join(facts)


def encode_gif(frames: np.ndarray, duration_ms: int = 100, *, text: Mapping[str, str] | None = None) -> bytes:
    """uint8 (N, H, W, C) -> animated GIF, looping forever, with the AI-generated comment.

    GIF holds 256 colours per frame, so RGB frames are quantised (lossy); use APNG for exact
    pixels. Pass ``text`` (e.g. from ``png_text``) to name the model and seed in the comment.
    Identical consecutive frames are merged, as in ``encode_apng``.
    """
    pils = _frames_to_pil(frames)
    buf = io.BytesIO()
    pils[0].save(
        buf,
        "GIF",
        save_all=True,
        append_images=pils[1:],
        duration=int(duration_ms),
        loop=0,
        comment=gif_comment(text).encode("utf-8"),
    )
    return buf.getvalue()


def zip_member_names(n: int) -> list[str]:
    """frame_000.png, frame_001.png, ... (more digits past 1000 frames, so names sort)."""
    width = max(3, len(str(n - 1)))
    return [f"frame_{i:0{width}d}.png" for i in range(n)]


def encode_zip(frames: np.ndarray, text: dict[str, str], compress_level: int = 1) -> bytes:
    """uint8 (N, H, W, C) -> zip of frame_000.png, ...; each PNG has ``text`` + facegen:frame.

    Members are stored, not deflated (PNG is already compressed), with a fixed 1980-01-01
    time stamp so the archive's bytes depend only on the frames.
    """
    _check_image(frames, 4)
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_STORED) as archive:
        for i, name in enumerate(zip_member_names(frames.shape[0])):
            png = encode_png(frames[i], {**text, "facegen:frame": str(i)}, compress_level)
            archive.writestr(zipfile.ZipInfo(name, date_time=(1980, 1, 1, 0, 0, 0)), png)
    return buf.getvalue()
