"""Crop, resize and normalise: the one place a photo becomes a model input.

Training runs every image of a data set through ``to_model_array`` once (then caches the
uint8 result), and the service runs every upload through the same function, so an upload
is seen exactly as the training images were.

Crop modes: "celeba", "center" and "none" cut a fixed box (``crop_box``); "align" finds the
largest face and warps it to CelebA's framing by its landmarks (``facegen_core.align``).
"""

from __future__ import annotations

import math

import numpy as np
import torch
from PIL import Image, ImageOps

from facegen_core.align import Face, align_face

# Larsen et al. (2015) crop aligned CelebA (178×218) to rows 40:188, cols 15:163, a
# 148×148 box. Expressed as fractions of the image so the half-size subset (89×109:
# rows 20:94, cols 7:81) and any aligned-face photo use the same box.
_CELEBA_W, _CELEBA_H = 178.0, 218.0
_CELEBA_LEFT, _CELEBA_TOP, _CELEBA_SIDE = 15.0, 40.0, 148.0


def crop_box(width: int, height: int, mode: str) -> tuple[int, int, int, int]:
    """(left, top, right, bottom) of the square the model sees, for a width×height image.

    ``celeba``: CelebA's face box, scaled by width (falls back to ``center`` for images
    whose aspect is far from CelebA's 178:218, where that box would not be on a face);
    ``center``: the largest centred square; ``none``: the whole image (squashed);
    ``align``: ``celeba``'s box, the fallback for training images in which no face is found
    (``to_model_array`` itself warps by the face's landmarks in that mode).
    """
    if mode == "none":
        return (0, 0, width, height)
    if mode == "align":
        mode = "celeba"  # align's box is the face's; this is the fallback when none is found
    if mode == "celeba" and abs(height / width - _CELEBA_H / _CELEBA_W) < 0.05:
        scale = width / _CELEBA_W
        # floor, so the half-size subset gets the documented box (cols 7:81, rows 20:94).
        left = math.floor(_CELEBA_LEFT * scale)
        top = math.floor(_CELEBA_TOP * scale)
        side = round(_CELEBA_SIDE * scale)
        return (left, top, min(left + side, width), min(top + side, height))
    if mode not in ("celeba", "center"):
        raise ValueError(f"Unknown crop mode {mode!r}; use 'celeba', 'center', 'none' or 'align'.")
    side = min(width, height)
    left, top = (width - side) // 2, (height - side) // 2
    return (left, top, left + side, top + side)


def to_model_mode(img: Image.Image, channels: int) -> Image.Image:
    """Any PIL image (grey, palette, alpha, CMYK, 16-bit, EXIF-rotated) to 'RGB' or 'L'."""
    img = ImageOps.exif_transpose(img) or img
    if img.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I"):
        # 16/32-bit grey: scale to 8 bits by the type's range, not by clipping at 255.
        arr = np.asarray(img, dtype=np.float64)
        top = 65535.0 if img.mode.startswith("I;16") else max(float(arr.max()), 1.0)
        img = Image.fromarray(np.clip(arr / top * 255.0, 0, 255).round().astype(np.uint8), "L")
    elif img.mode == "F":
        arr = np.asarray(img, dtype=np.float64)
        span = max(float(arr.max() - arr.min()), 1e-12)
        img = Image.fromarray(((arr - arr.min()) / span * 255.0).round().astype(np.uint8), "L")
    if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
        # Composite on white: a transparent background is not black in the photo's intent.
        rgba = img.convert("RGBA")
        bg = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        img = Image.alpha_composite(bg, rgba)
    target = "RGB" if channels == 3 else "L"
    return img.convert(target) if img.mode != target else img


def to_model_array(img: Image.Image, image_size: int, channels: int, crop: str) -> np.ndarray:
    """PIL image -> uint8 array (image_size, image_size, channels), cropped and resized.

    With crop "align", raises ``align.NoFaceError`` (a ValueError) when no face is found.
    """
    return to_model_array_and_face(img, image_size, channels, crop)[0]


def to_model_array_and_face(
    img: Image.Image, image_size: int, channels: int, crop: str
) -> tuple[np.ndarray, Face | None]:
    """``to_model_array``, plus the Face it was aligned by (crop "align"; None for the others).

    The Face's box and landmarks are in pixels of ``img`` after EXIF rotation.
    """
    img = to_model_mode(img, channels)
    face: Face | None = None
    if crop == "align":
        # Detection needs RGB; the warp keeps the model's mode, so grey stays grey.
        img, face = align_face(img, image_size)
    else:
        box = crop_box(img.width, img.height, crop)
        img = img.resize((image_size, image_size), Image.Resampling.LANCZOS, box=box)
    arr = np.asarray(img, dtype=np.uint8)
    if arr.ndim == 2:
        arr = arr[:, :, None]
    return np.ascontiguousarray(arr), face


def uint8_to_model(x: torch.Tensor) -> torch.Tensor:
    """uint8 (B, C, H, W) in [0, 255] -> float (B, C, H, W) in [-1, 1]."""
    return x.float().div(127.5).sub(1.0)


def model_to_uint8(x: torch.Tensor) -> torch.Tensor:
    """float (B, C, H, W) in [-1, 1] -> uint8 (B, C, H, W), rounded, on the same device."""
    return x.float().clamp(-1.0, 1.0).add(1.0).mul(127.5).round().to(torch.uint8)


def hwc_to_chw(arr: np.ndarray) -> torch.Tensor:
    """uint8 array (H, W, C) or (N, H, W, C) -> tensor (C, H, W) or (N, C, H, W)."""
    t = torch.from_numpy(np.ascontiguousarray(arr))
    return t.permute(2, 0, 1) if t.ndim == 3 else t.permute(0, 3, 1, 2)
