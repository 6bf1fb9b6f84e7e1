"""Everything service.imaging encodes, decoded again with Pillow: sizes, pixels, frames, text."""

from __future__ import annotations

import io
import math
import zipfile

import numpy as np
import pytest
from PIL import Image

from service.imaging import (
    DIGITAL_SOURCE_TYPE,
    GRID_PADDING,
    XMP_KEY,
    encode_apng,
    encode_gif,
    encode_grid,
    encode_png,
    encode_strip,
    encode_zip,
    png_text,
)

TEXT = png_text("faces", 3, seed=42, temperature="0.8")


def _images(n: int, size: int = 8, channels: int = 3, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (n, size, size, channels), dtype=np.uint8)


def _open(data: bytes) -> Image.Image:
    img = Image.open(io.BytesIO(data))
    assert img.format in ("PNG", "GIF")
    return img


def _array(img: Image.Image) -> np.ndarray:
    arr = np.asarray(img)
    return arr[:, :, None] if arr.ndim == 2 else arr


def _assert_labelled(img: Image.Image, seed: str | None = "42") -> None:
    text = img.text  # type: ignore[attr-defined]
    assert text["Software"] == "facegen"
    assert text["facegen:model"] == "faces" and text["facegen:version"] == "3"
    assert text.get("facegen:seed") == seed
    assert text["AI-Generated"] == "true"
    assert text["Description"].startswith("AI-generated face")
    assert text["DigitalSourceType"].endswith("/trainedAlgorithmicMedia")
    assert f'DigitalSourceType="{DIGITAL_SOURCE_TYPE}"' in text[XMP_KEY]


def test_png_text_keys() -> None:
    assert TEXT["facegen:seed"] == "42" and TEXT["facegen:temperature"] == "0.8"
    unseeded = png_text("faces", 3)
    assert "facegen:seed" not in unseeded
    assert set(TEXT) - set(unseeded) == {"facegen:seed", "facegen:temperature"}


def test_xmp_is_an_itxt_chunk() -> None:
    data = encode_png(_images(1)[0], TEXT)
    assert b"iTXt" + XMP_KEY.encode() in data  # chunk type directly followed by its keyword
    assert b"tEXtAI-Generated\x00true" in data


@pytest.mark.parametrize("channels", [1, 3])
def test_png_round_trip_is_exact_and_labelled(channels: int) -> None:
    image = _images(1, size=16, channels=channels)[0]
    img = _open(encode_png(image, TEXT))
    assert img.mode == ("L" if channels == 1 else "RGB")
    np.testing.assert_array_equal(_array(img), image)
    _assert_labelled(img)


def test_unseeded_png_has_no_seed_chunk() -> None:
    _assert_labelled(_open(encode_png(_images(1)[0], png_text("faces", 3))), seed=None)


def test_compress_level_changes_size_not_pixels() -> None:
    # A smooth image compresses, so effort shows in the size.
    image = np.repeat(np.arange(64, dtype=np.uint8)[None, :, None], 64, axis=0).repeat(3, 2)
    fast, small, raw = (encode_png(image, TEXT, compress_level=k) for k in (1, 9, 0))
    assert len(small) < len(raw) and len(fast) < len(raw)
    for data in (fast, small, raw):
        np.testing.assert_array_equal(_array(_open(data)), image)


@pytest.mark.parametrize(
    "bad", [np.zeros((8, 8, 3), np.float32), np.zeros((8, 8, 2), np.uint8), np.zeros((8, 8), np.uint8)]
)
def test_encode_png_rejects_bad_arrays(bad: np.ndarray) -> None:
    with pytest.raises(ValueError, match="uint8"):
        encode_png(bad, TEXT)


@pytest.mark.parametrize("n", [1, 2, 5, 64])
def test_grid_geometry_and_tiles(n: int) -> None:
    images, size, p = _images(n), 8, GRID_PADDING
    img = _open(encode_grid(images, TEXT))
    _assert_labelled(img)
    grid = _array(img)
    if n == 1:
        np.testing.assert_array_equal(grid, images[0])  # the image itself, no padding
        return
    cols = math.ceil(math.sqrt(n))
    rows = math.ceil(n / cols)
    assert (cols, rows) == {2: (2, 1), 5: (3, 2), 64: (8, 8)}[n]
    assert grid.shape == (rows * (size + p) + p, cols * (size + p) + p, 3)
    for i in range(n):
        y, x = p + (i // cols) * (size + p), p + (i % cols) * (size + p)
        np.testing.assert_array_equal(grid[y : y + size, x : x + size], images[i])
    assert not grid[:p].any() and not grid[:, :p].any()  # black padding


def test_grid_ncols_override() -> None:
    grid = _array(_open(encode_grid(_images(6), TEXT, ncols=6)))
    assert grid.shape == (8 + 2 * GRID_PADDING, 6 * (8 + GRID_PADDING) + GRID_PADDING, 3)


@pytest.mark.parametrize("n", [1, 3, 9])
def test_strip_is_one_row(n: int) -> None:
    frames, p = _images(n, channels=1), GRID_PADDING
    img = _open(encode_strip(frames, TEXT))
    _assert_labelled(img)
    strip = _array(img)
    if n == 1:
        np.testing.assert_array_equal(strip, frames[0])
        return
    assert strip.shape == (8 + 2 * p, n * (8 + p) + p, 1)
    for i in range(n):
        x = p + i * (8 + p)
        np.testing.assert_array_equal(strip[p : p + 8, x : x + 8], frames[i])


@pytest.mark.parametrize("channels", [1, 3])
def test_apng_frames_pixels_loop_and_text(channels: int) -> None:
    frames = _images(5, channels=channels)
    img = _open(encode_apng(frames, TEXT, duration_ms=40))
    assert img.n_frames == 5  # type: ignore[attr-defined]
    assert img.info["loop"] == 0  # 0 = forever
    _assert_labelled(img)
    for i in range(5):
        img.seek(i)
        assert img.info["duration"] == 40
        arr = _array(img.convert("L" if channels == 1 else "RGB"))
        np.testing.assert_array_equal(arr, frames[i])


def test_apng_merges_repeated_frames_keeping_total_duration() -> None:
    frames = _images(3)
    img = _open(encode_apng(frames[[0, 1, 1, 2]], TEXT, duration_ms=50))
    assert img.n_frames == 3  # type: ignore[attr-defined]
    durations = []
    for i in range(3):
        img.seek(i)
        durations.append(img.info["duration"])
    assert durations == [50, 100, 50]


def test_gif_frames_loop_and_comment() -> None:
    # Few distinct colours, so the 256-colour palette holds them exactly.
    rng = np.random.default_rng(1)
    palette = rng.integers(0, 256, (6, 3), dtype=np.uint8)
    frames = palette[rng.integers(0, 6, (4, 8, 8))]  # (4, 8, 8, 3)
    img = _open(encode_gif(frames, duration_ms=80, text=TEXT))
    assert img.n_frames == 4  # type: ignore[attr-defined]
    assert img.info["loop"] == 0
    comment = img.info["comment"].decode()
    assert "AI-generated" in comment and "trainedAlgorithmicMedia" in comment
    assert "facegen:seed=42" in comment
    for i in range(4):
        img.seek(i)
        assert img.info["duration"] == 80
        np.testing.assert_array_equal(np.asarray(img.convert("RGB")), frames[i])


def test_gif_without_text_still_says_ai_generated() -> None:
    img = _open(encode_gif(_images(2, channels=1)))
    assert b"AI-generated" in img.info["comment"] and img.n_frames == 2  # type: ignore[attr-defined]


def test_zip_members_are_labelled_pngs() -> None:
    frames = _images(4)
    data = encode_zip(frames, TEXT)
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        names = archive.namelist()
        assert names == ["frame_000.png", "frame_001.png", "frame_002.png", "frame_003.png"]
        for i, name in enumerate(names):
            img = _open(archive.read(name))
            _assert_labelled(img)
            assert img.text["facegen:frame"] == str(i)  # type: ignore[attr-defined]
            np.testing.assert_array_equal(_array(img), frames[i])
    assert encode_zip(frames, TEXT) == data  # no time stamps: same frames, same bytes


def test_zip_names_widen_past_a_thousand_frames() -> None:
    data = encode_zip(np.zeros((1001, 1, 1, 1), np.uint8), TEXT)
    names = zipfile.ZipFile(io.BytesIO(data)).namelist()
    assert names[0] == "frame_0000.png" and names[-1] == "frame_1000.png"
    assert names == sorted(names)
