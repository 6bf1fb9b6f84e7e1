"""Uploaded files to model inputs: read with a byte limit, decoded in the thread pool."""

from __future__ import annotations

import asyncio
import functools
import time
from collections.abc import Sequence

import anyio.to_thread
import numpy as np
from starlette.datastructures import UploadFile

from service.context import RequestContext
from service.errors import InvalidFieldError
from service.runner import ModelInfo
from service.settings import MAX_ROWS_PER_REQUEST, Settings
from service.uploads import decode_upload, read_upload


async def read_images(
    files: Sequence[UploadFile], field: str, settings: Settings, info: ModelInfo, ctx: RequestContext
) -> np.ndarray:
    """1–64 uploads -> uint8 (N, S, S, C) as the model sees them (cropped, resized).

    A file's errors name it ``field`` when it is the only one, else ``field[i]``.
    """
    if not files:
        raise InvalidFieldError(f"Field '{field}' needs at least one image file.", field=field)
    if len(files) > MAX_ROWS_PER_REQUEST:
        raise InvalidFieldError(
            f"Field '{field}' holds {len(files)} files; at most {MAX_ROWS_PER_REQUEST} are allowed per "
            f"request. Send the rest in another request.",
            field=field,
        )
    names = [field] if len(files) == 1 else [f"{field}[{i}]" for i in range(len(files))]
    blobs = [
        await read_upload(f, settings.max_upload_bytes, name) for f, name in zip(files, names, strict=True)
    ]
    decode = functools.partial(
        decode_upload,
        max_pixels=settings.max_image_pixels,
        image_size=info.image_size,
        channels=info.channels,
        crop=info.input_crop,
    )
    t0 = time.perf_counter()
    arrays = await asyncio.gather(
        *(
            anyio.to_thread.run_sync(functools.partial(decode, blob, field=name))
            for blob, name in zip(blobs, names, strict=True)
        )
    )
    ctx.upload_s += time.perf_counter() - t0  # wall time: the files decode in parallel
    return np.stack(arrays)  # (N, S, S, C)
