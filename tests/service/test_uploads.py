"""service.uploads against the corpus: limits, every accepted format and mode, every bad input."""

from __future__ import annotations

import asyncio
import contextlib
import io
import resource
import tempfile
import warnings
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any, BinaryIO, cast

import numpy as np
import pytest
from PIL import Image, ImageFile
from starlette.datastructures import UploadFile

from service.errors import FacegenError, PayloadTooLargeError, UnsupportedImageError
from service.uploads import (
    CHUNK_BYTES,
    DECODE_MAX_SIDE,
    decode_upload,
    format_bytes,
    read_upload,
    upload_cost,
)
from tests.service import corpus

S = corpus.SIZE
SAMPLES = corpus.sample_images()
BIG = 40_000_000  # FACEGEN_MAX_IMAGE_PIXELS in these tests, unless a test sets its own


def _decode(data: bytes, size: int = S, channels: int = 3, crop: str = "none", **kw: int) -> np.ndarray:
    return decode_upload(
        data, max_pixels=kw.get("max_pixels", BIG), image_size=size, channels=channels, crop=crop
    )


class CountingUpload:
    """An UploadFile stand-in that counts the bytes handed out."""

    def __init__(self, data: bytes) -> None:
        self._file = io.BytesIO(data)
        self.bytes_read = 0

    async def read(self, size: int = -1) -> bytes:
        chunk = self._file.read(size)
        self.bytes_read += len(chunk)
        return chunk


# --------------------------------------------------------------------------- read_upload


@pytest.mark.parametrize("n", [1, CHUNK_BYTES, 3 * CHUNK_BYTES + 7])
def test_read_upload_returns_every_byte(n: int) -> None:
    data = np.random.default_rng(n).bytes(n)
    assert asyncio.run(read_upload(CountingUpload(data), max_bytes=n, field="image")) == data


def test_read_upload_stops_soon_after_the_limit() -> None:
    upload = CountingUpload(corpus.oversized_upload(20 * 2**20))
    with pytest.raises(PayloadTooLargeError) as info:
        asyncio.run(read_upload(upload, max_bytes=2**20, field="photo"))
    assert upload.bytes_read <= 2**20 + CHUNK_BYTES  # 1 MiB + one chunk of 20 MiB read
    assert info.value.status == 413 and info.value.extra == {"field": "photo"}
    assert info.value.detail == (
        "The file in field 'photo' is over 1 MiB; the limit is 1 MiB "
        "(FACEGEN_MAX_UPLOAD_BYTES). Send a smaller image."
    )


def test_read_upload_rejects_empty() -> None:
    with pytest.raises(UnsupportedImageError, match="field 'image' is empty") as info:
        asyncio.run(read_upload(CountingUpload(corpus.empty_file()), 1000, "image"))
    assert info.value.status == 415


@contextlib.contextmanager
def _starlette_upload(data: bytes, size: int | None) -> Iterator[UploadFile]:
    """Starlette's UploadFile over a SpooledTemporaryFile, as the multipart parser makes it."""
    with tempfile.SpooledTemporaryFile(max_size=1024) as spool:
        spool.write(data)
        spool.seek(0)
        yield UploadFile(cast(BinaryIO, spool), size=size, filename="x.png")


def test_read_upload_uses_starlettes_known_size_before_reading() -> None:
    data = corpus.oversized_upload(300_000)
    with _starlette_upload(data, size=len(data)) as upload:
        with pytest.raises(PayloadTooLargeError, match=r"is 293 KiB; the limit is 97\.7 KiB"):
            asyncio.run(read_upload(upload, 100_000, "image"))
        assert upload.file.tell() == 0  # nothing was read
    with _starlette_upload(data, size=None) as unknown:
        with pytest.raises(PayloadTooLargeError):
            asyncio.run(read_upload(unknown, 100_000, "image"))
        assert unknown.file.tell() <= 100_000 + CHUNK_BYTES
    with _starlette_upload(data, size=len(data)) as fits:
        assert asyncio.run(read_upload(fits, len(data), "image")) == data


def test_format_bytes() -> None:
    assert [format_bytes(n) for n in (0, 1023, 1024, 1536, 10 * 2**20, 12_897_484)] == [
        "0 bytes", "1023 bytes", "1 KiB", "1.5 KiB", "10 MiB", "12.3 MiB"
    ]  # fmt: skip


# --------------------------------------------------------------------------- valid images


@pytest.mark.parametrize("name", sorted(SAMPLES))
@pytest.mark.parametrize(("channels", "crop"), [(3, "center"), (1, "celeba")])
def test_every_sample_decodes_to_model_shape(name: str, channels: int, crop: str) -> None:
    arr = _decode(SAMPLES[name], size=32, channels=channels, crop=crop)
    assert arr.shape == (32, 32, channels) and arr.dtype == np.uint8
    assert arr.flags.c_contiguous and arr.std() > 0


@pytest.mark.parametrize("name", corpus.LOSSLESS_RGB)
def test_lossless_round_trip_is_exact(name: str) -> None:
    np.testing.assert_array_equal(_decode(SAMPLES[name]), corpus.pattern())


@pytest.mark.parametrize("name", ["jpeg_rgb", "jpeg_cmyk", "mpo", "gif_animated", "png_palette"])
def test_lossy_and_multi_frame_samples_are_close_to_the_first_frame(name: str) -> None:
    # The second frame of the animated ones is flat blue: ~100 away from the pattern.
    err = np.abs(_decode(SAMPLES[name]).astype(int) - corpus.pattern()).mean()
    assert err < 6, f"{name}: mean error {err:.1f}"


def test_grey_sources_and_grey_models() -> None:
    expected = np.asarray(Image.fromarray(corpus.pattern()).convert("L"))[:, :, None]
    np.testing.assert_array_equal(_decode(SAMPLES["png_grey"], channels=1), expected)
    np.testing.assert_array_equal(_decode(SAMPLES["png_rgb"], channels=1), expected)
    rgb = _decode(SAMPLES["png_grey"], channels=3)  # grey upload to a colour model: R = G = B
    np.testing.assert_array_equal(rgb, np.repeat(expected, 3, axis=2))


def test_exif_orientation_is_applied() -> None:
    data = SAMPLES["jpeg_exif_rotated"]
    stored = np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))  # as stored, unrotated
    expected = np.rot90(stored, k=-1)  # orientation 6: rotate 90° clockwise to view
    got = _decode(data)
    np.testing.assert_array_equal(got, expected)
    assert not np.array_equal(got, stored)
    q = S // 4
    assert got[:q, -q:].min() > 240 and got[:q, :q].max() < 240  # white block now top-right


def test_sixteen_bit_grey_is_scaled_not_clipped() -> None:
    row = _decode(SAMPLES["png_grey16"], channels=1)[S // 2, :, 0].astype(int)
    ramp = np.linspace(0, 65535, S) / 65535 * 255
    assert np.abs(row - ramp).max() <= 1  # clipping at 255 would make nearly all of it 255
    assert row[0] == 0 and row[-1] == 255


@pytest.mark.parametrize("name", ["png_rgba", "png_palette_transparency"])
def test_transparency_composites_on_white(name: str) -> None:
    arr = _decode(SAMPLES[name])
    q = S // 4
    assert (arr[-q:, -q:] == 255).all()  # the transparent corner
    assert np.abs(arr[: S // 2].astype(int) - corpus.pattern()[: S // 2]).mean() < 6


def test_decoding_is_thread_safe() -> None:
    names = sorted(SAMPLES) * 3
    expected = {name: _decode(SAMPLES[name], size=24) for name in SAMPLES}
    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(lambda n: _decode(SAMPLES[n], size=24), names))
    for name, arr in zip(names, results, strict=True):
        np.testing.assert_array_equal(arr, expected[name])


# --------------------------------------------------------------------------- bad inputs


@pytest.mark.parametrize("name", sorted(corpus.bad_inputs()))
def test_bad_inputs_get_their_status_and_name_the_field(name: str) -> None:
    data, status = corpus.bad_inputs()[name]
    kind = PayloadTooLargeError if status == 413 else UnsupportedImageError
    with pytest.raises(kind) as info:
        decode_upload(data, max_pixels=BIG, image_size=32, channels=3, crop="center", field="face")
    assert info.value.status == status and info.value.extra == {"field": "face"}
    assert "field 'face'" in info.value.detail and "Send" in info.value.detail


def test_pixel_bomb_is_refused_from_its_header_quickly(monkeypatch: pytest.MonkeyPatch) -> None:
    bomb = corpus.png_claiming_pixels(30000, 30000)
    assert len(bomb) < 300
    loads: list[Image.Image] = []
    real_load = ImageFile.ImageFile.load

    def counting_load(self: ImageFile.ImageFile) -> Any:
        loads.append(self)
        return real_load(self)

    monkeypatch.setattr(ImageFile.ImageFile, "load", counting_load)
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    with pytest.raises(PayloadTooLargeError) as info:
        _decode(bomb, max_pixels=BIG)
    assert loads == []  # refused from the header: no pixel was decoded (quick by construction)
    # Decoding it would need 30000·30000·3 = 2.7 GB; the peak RSS must not have moved much.
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss_before < 200_000
    assert "900,000,000 pixels" in info.value.detail
    assert "the limit is 40,000,000 pixels (FACEGEN_MAX_IMAGE_PIXELS)" in info.value.detail


def test_our_limit_is_checked_before_decoding() -> None:
    # 200×200 claimed, one row of data: decoding it would fail as truncated (415), not 413.
    with pytest.raises(PayloadTooLargeError) as info:
        _decode(corpus.png_claiming_pixels(200, 200), max_pixels=10_000)
    assert info.value.detail == (
        "The image in field 'image' is 200×200 = 40,000 pixels; the limit is 10,000 pixels "
        "(FACEGEN_MAX_IMAGE_PIXELS). Send a smaller image."
    )
    with pytest.raises(UnsupportedImageError, match="truncated or corrupt"):
        _decode(corpus.png_claiming_pixels(200, 200), max_pixels=40_000)


@pytest.mark.parametrize("action", ["error", "ignore", "always"])
def test_pillows_bomb_warning_is_a_413_under_any_warning_filter(action: str) -> None:
    # 10⁸ pixels: over Pillow's warning limit (~8.9e7), under its error limit and ours here.
    bomb = corpus.png_claiming_pixels(10_000, 10_000)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter(action, Image.DecompressionBombWarning)  # type: ignore[arg-type]
        with pytest.raises(PayloadTooLargeError, match=r"100,000,000 pixels.*limit is 89,478,485"):
            _decode(bomb, max_pixels=10**9)
    assert len(caught) == (action == "always")  # shown where the filter says so, never lost


def test_a_bad_crop_mode_is_a_server_error_not_the_uploads() -> None:
    with pytest.raises(ValueError, match="Unknown crop mode") as info:
        _decode(SAMPLES["png_rgb"], crop="middle")
    assert not isinstance(info.value, FacegenError)


# ------------------------------------------------------------------ large uploads (issue 12)


def _big(fmt: str, width: int, height: int, **params: object) -> bytes:
    img = Image.fromarray(corpus.pattern(width, height))
    buf = io.BytesIO()
    img.save(buf, fmt, **params)
    return buf.getvalue()


@pytest.mark.parametrize(("fmt", "factor"), [("JPEG", 4), ("PNG", 1)])
def test_upload_cost_comes_from_the_header_after_jpeg_draft(fmt: str, factor: int) -> None:
    """A 4,200×3,000 upload: JPEG decodes DCT-scaled to 1/4 (1,050 px, the cost says so), PNG in full;
    Pillow holds RGB as 4 bytes a pixel."""
    data = _big(fmt, 4200, 3000, quality=90) if fmt == "JPEG" else _big(fmt, 4200, 3000)
    assert upload_cost(data, max_pixels=BIG) == (4200 // factor) * (3000 // factor) * 4
    with pytest.raises(PayloadTooLargeError):
        upload_cost(data, max_pixels=4200 * 3000 - 1)
    with pytest.raises(UnsupportedImageError):
        upload_cost(corpus.text_file(), max_pixels=BIG)


@pytest.mark.parametrize("fmt", ["JPEG", "PNG"])
def test_a_large_upload_is_shrunk_first_and_crops_as_the_full_size_one(fmt: str) -> None:
    """Shrinking before the crop/resize changes a 64-px result by little: the large image
    (3× the 1,024 px threshold) against the same picture already small (what the model sees is
    the same face)."""
    side = 3 * DECODE_MAX_SIDE
    big = _decode(_big(fmt, side, side, quality=95) if fmt == "JPEG" else _big(fmt, side, side), 64)
    small = _decode(_big("PNG", 512, 512), 64)
    assert big.shape == small.shape == (64, 64, 3)
    assert np.abs(big.astype(int) - small.astype(int)).mean() < 3.0


def test_exif_rotation_survives_the_shrink() -> None:
    """EXIF orientation 6 on a 4,096×2,048 JPEG: the result is portrait, as the viewer sees it."""
    exif = Image.Exif()
    exif[0x0112] = 6
    data = _big("JPEG", 4096, 2048, quality=90, exif=exif.tobytes())
    upright = Image.fromarray(corpus.pattern(4096, 2048)).transpose(Image.Transpose.ROTATE_270)
    buf = io.BytesIO()
    upright.save(buf, "PNG")
    np.testing.assert_allclose(
        _decode(data, 64, crop="center").astype(float), _decode(buf.getvalue(), 64, crop="center"), atol=12
    )
