"""Uploaded files to model inputs: read with a byte limit, decoded (and aligned) in threads."""

from __future__ import annotations

import asyncio
import functools
import os
import time
from collections.abc import Mapping, Sequence
from typing import Annotated, Any, TypedDict

import anyio.to_thread
import numpy as np
from anyio import CapacityLimiter
from fastapi import Depends, File, Form, Request
from fastapi import UploadFile as UploadedFile
from fastapi.exceptions import RequestValidationError
from pydantic import Field, TypeAdapter, ValidationError
from starlette.datastructures import FormData, UploadFile

from facegen_core.align import Face
from service.errors import InvalidFieldError
from service.memory import RELEASE_AFTER_BYTES, DecodeBudget, release_memory
from service.middleware import RequestContext
from service.model_handle import Model
from service.model_info import ModelInfo
from service.schemas import FormBool
from service.settings import MAX_ROWS_PER_REQUEST, REFINE_LIMIT, Settings
from service.uploads import decode_upload_and_face, read_upload, upload_cost, upload_crop

# Alignment runs MTCNN (torch, CPU) per upload, ~10-100x the cost of decoding: at most this
# many uploads align at once, whatever the size of anyio's shared pool (40 threads), so a
# burst of 64-file requests queues here instead of oversubscribing the CPU the model needs.
ALIGN_CONCURRENCY = max(1, min(4, os.cpu_count() or 1))
_align_limiter: CapacityLimiter | None = None


# Starlette's multipart limits, for every route: FastAPI's form parsing (main.py) and the
# routes that read their form themselves (/interpolate). Within them, an unknown or repeated
# field is a 422 from check_form_fields.
class FormLimits(TypedDict, total=False):
    """Starlette's form() keywords (FastAPI's form_limits)."""

    max_files: int
    max_fields: int
    max_part_size: int


FORM_LIMITS: FormLimits = {"max_files": MAX_ROWS_PER_REQUEST, "max_fields": 16, "max_part_size": 64 * 1024}


def align_limiter() -> CapacityLimiter:
    """The process's one limiter for aligning uploads (made on first use, in the event loop)."""
    global _align_limiter
    if _align_limiter is None:
        _align_limiter = CapacityLimiter(ALIGN_CONCURRENCY)
    return _align_limiter


def check_form_fields(form: FormData, route: str, fields: Mapping[str, bool]) -> None:
    """422 for a multipart field ``route`` does not take, or a single-valued one sent twice.

    ``fields``: name -> whether it may repeat (e.g. ``image``). Every multipart route checks
    its form here, so an unknown or duplicate field is refused the same way everywhere.
    """
    for name in form.keys():  # noqa: SIM118 (a multidict: keys() yields repeated names once each)
        if name not in fields:
            raise InvalidFieldError(
                f"Field '{name}' is not a field of {route}; it takes {', '.join(fields)}.", field=name
            )
        if not fields[name] and len(form.getlist(name)) > 1:
            raise InvalidFieldError(
                f"Field '{name}' is sent {len(form.getlist(name))} times; send it once.", field=name
            )


def invalid(errors: list[Any], prefix: tuple[str, ...] = ("body",)) -> RequestValidationError:
    """pydantic's errors of a body the route validated itself, located under ``prefix``, for
    the app's 422 handler (service/problems.py)."""
    return RequestValidationError([{**e, "loc": (*prefix, *e["loc"])} for e in errors])


_ALIGN = TypeAdapter(FormBool)  # form text "true" or "false", as on every multipart route


def form_align(form: FormData) -> bool | None:
    """The multipart ``align`` option of a form a route reads itself (None when not sent)."""
    value = form.get("align")
    if value is None or value == "":  # as FastAPI reads /encode's form: empty text is not sent
        return None
    if not isinstance(value, str):
        raise InvalidFieldError("Field 'align' must be text, not a file.", field="align")
    try:
        return _ALIGN.validate_python(value)
    except ValidationError:
        raise InvalidFieldError(
            f"Field 'align' must be true or false, not {value[:40]!r}.", field="align"
        ) from None


def form_fields(route: str, fields: Mapping[str, bool]) -> Any:
    """A dependency running ``check_form_fields`` on the form FastAPI already parsed (cached)."""

    async def check(request: Request) -> None:
        if request.headers.get("content-type", "").lower().startswith("multipart/form-data"):
            check_form_fields(await request.form(), route, fields)

    return Depends(check)


_decode_budget: DecodeBudget | None = None


def decode_budget(settings: Settings) -> DecodeBudget:
    """The process's one budget of decoded upload bytes (FACEGEN_DECODE_BUDGET_BYTES)."""
    global _decode_budget
    if _decode_budget is None:
        _decode_budget = DecodeBudget(settings.decode_budget_bytes)
    return _decode_budget


async def read_images(
    files: Sequence[UploadFile],
    field: str,
    settings: Settings,
    info: ModelInfo,
    ctx: RequestContext,
    align: bool | None = None,
) -> tuple[np.ndarray, list[Face | None]]:
    """1–64 uploads -> uint8 (N, S, S, C) as the model sees them (cropped or aligned, resized),
    and per file the Face it was aligned by (None when not aligned).

    ``align``: the request's option (None: not sent), see ``service.uploads.upload_crop``.
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
    crop = upload_crop(info.input_crop, align)
    decode = functools.partial(
        decode_upload_and_face,
        max_pixels=settings.max_image_pixels,
        image_size=info.image_size,
        channels=info.channels,
        crop=crop,
    )
    limiter = align_limiter() if crop == "align" else None  # None: anyio's shared pool
    budget = decode_budget(settings)
    cost = functools.partial(upload_cost, max_pixels=settings.max_image_pixels)
    t0 = time.perf_counter()
    # Every header first (413/415 before any pixel is decoded), then each decode holds its bytes.
    costs = [
        await anyio.to_thread.run_sync(functools.partial(cost, b, field=n))
        for b, n in zip(blobs, names, strict=True)
    ]

    async def decode_one(blob: bytes, name: str, n: int) -> tuple[np.ndarray, Face | None]:
        async with budget.hold(n):
            return await anyio.to_thread.run_sync(
                functools.partial(decode, blob, field=name), limiter=limiter
            )

    try:
        results = await asyncio.gather(
            *(decode_one(b, n, c) for b, n, c in zip(blobs, names, costs, strict=True))
        )
    finally:
        if sum(costs) >= RELEASE_AFTER_BYTES:
            await anyio.to_thread.run_sync(release_memory)
    ctx.upload_s += time.perf_counter() - t0  # wall time: the files decode in parallel
    return np.stack([arr for arr, _ in results]), [face for _, face in results]  # (N, S, S, C)


# Form parameters shared by the upload routes (/encode, /reconstruct, /edit).
Images = Annotated[
    list[UploadedFile],
    File(
        description="1–64 image files (JPEG, PNG, WebP, BMP, GIF, TIFF), each aligned or cropped "
        "and resized like the training faces."
    ),
]
AlignOption = Annotated[
    FormBool | None,
    Form(
        description="Align each photo by its face (the largest one found): detect it and its "
        "landmarks, then warp it to the training faces' framing. Not sent: true for models trained "
        "on aligned faces (input_crop 'align'), the model's own fixed crop for older models. "
        "true: align, with any model. false: no alignment, the fixed CelebA crop (or the model's own). "
        "A photo without a face is a 422 /problems/no-face unless align=false.",
    ),
]


RefineOption = Annotated[
    int,
    Form(
        ge=0,
        le=REFINE_LIMIT,
        description="Refine each face's latent for this many steps after encoding it: gradient "
        "steps on the latent that make the decoded face match the photo (docs/refine.md). 0: the "
        "encoder's mean alone (fast). On faces64 v3, 50 steps: +1.9 dB PSNR on CelebA faces, at "
        "the cost of 50 decoder forward and backward passes per face (about 2 s on a 2-core CPU). At "
        "most FACEGEN_MAX_REFINE_STEPS (GET /models: loaded.max_refine_steps).",
    ),
]


_REFINE = TypeAdapter(Annotated[int, Field(ge=0, le=REFINE_LIMIT)])


def form_refine(form: FormData, settings: Settings) -> int:
    """The multipart ``refine`` option of a form a route reads itself (0 when not sent), checked
    against the schema's bound and the server's (``check_refine``)."""
    value = form.get("refine")
    if value is None or value == "":
        return 0
    if not isinstance(value, str):
        raise InvalidFieldError("Field 'refine' must be text, not a file.", field="refine")
    try:
        steps = _REFINE.validate_python(value.strip(), strict=False)
    except ValidationError:
        raise InvalidFieldError(
            f"Field 'refine' must be a whole number of steps from 0 to {REFINE_LIMIT}, not {value[:40]!r}.",
            field="refine",
        ) from None
    check_refine(steps, settings)
    return steps


def check_refine(steps: int, settings: Settings, field: str = "refine") -> None:
    """422 naming the server's limit when ``steps`` is over FACEGEN_MAX_REFINE_STEPS."""
    if steps > settings.max_refine_steps:
        limit = settings.max_refine_steps
        hint = (
            "this server has refinement turned off (FACEGEN_MAX_REFINE_STEPS=0); send 0"
            if limit == 0
            else f"this server allows at most {limit} (FACEGEN_MAX_REFINE_STEPS)"
        )
        raise InvalidFieldError(f"Field '{field}' asks for {steps} refinement steps; {hint}.", field=field)


async def encode_latents(
    model: Model, images: np.ndarray, refine: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """uint8 faces (N, S, S, C) -> (latent to decode, mu, logvar), each float32 (N, D): the
    latent is mu, refined for ``refine`` steps when that is > 0."""
    mu, logvar = await model.encode(images)
    latent = await model.refine(images, mu, refine) if refine > 0 else mu
    return latent, mu, logvar


def check_latent(row: list[float], latent_dim: int, field: str) -> None:
    """422 naming ``field`` unless ``row`` has the model's latent_dim (values are checked by the schema)."""
    if len(row) != latent_dim:
        raise InvalidFieldError(
            f"Field '{field}' has {len(row)} numbers; this model's latents have {latent_dim} "
            f"(GET /models shows latent_dim).",
            field=field,
        )
