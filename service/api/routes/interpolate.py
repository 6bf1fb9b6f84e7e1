"""POST /interpolate: a path of faces between two ends (seeds, latents or photos)."""

from __future__ import annotations

import re
from typing import Any

import numpy as np
from fastapi import APIRouter, Request, Response
from pydantic import ValidationError
from starlette.datastructures import FormData
from starlette.datastructures import UploadFile as FormFile

from service.api import caching, render
from service.api.inputs import (
    FORM_LIMITS,
    check_form_fields,
    check_latent,
    encode_latents,
    form_align,
    form_refine,
    invalid,
    read_images,
)
from service.api.responses import CACHEABLE_IMAGE_RESPONSES, UPLOAD_ERROR_RESPONSES
from service.deps import Ctx, ReadyModel, SettingsDep
from service.errors import InvalidFieldError, UnsupportedMediaTypeError
from service.imaging import png_text
from service.latents import path as latent_path
from service.latents import seed_latents
from service.model_handle import Model
from service.openapi import form_schema
from service.schemas import (
    EXAMPLE_LATENT,
    MAX_SEED,
    ImagesResponse,
    InterpolateForm,
    InterpolateOptions,
    InterpolateRequest,
    LatentEnd,
    SeedEnd,
)

router = APIRouter(tags=["faces"])
# The form's fields, from the one model that also makes its OpenAPI schema.
FORM_FIELDS = tuple(InterpolateOptions.model_fields)  # steps, method, format, temperature, duration_ms
PHOTO_FIELDS = tuple(f for f in InterpolateForm.model_fields if f not in InterpolateOptions.model_fields)
OPENAPI_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {
                "schema": {"$ref": "#/components/schemas/InterpolateRequest"},
                "examples": {
                    "seeds": {
                        "value": {"start": {"seed": 1}, "end": {"seed": 2}, "steps": 8, "format": "apng"}
                    },
                    "latent": {
                        "value": {"start": {"seed": 7}, "end": {"latent": EXAMPLE_LATENT}, "format": "json"}
                    },
                },
            },
            "multipart/form-data": {"schema": form_schema(InterpolateForm)},
        },
    }
}
ANIMATION_RESPONSES: dict[int | str, dict[str, Any]] = {
    **CACHEABLE_IMAGE_RESPONSES,
    200: {
        **CACHEABLE_IMAGE_RESPONSES[200],
        "description": "apng/strip: image/png; gif: image/gif; zip: application/zip of "
        "frame_000.png…; json: the body below.",
        "content": {
            "image/png": {"schema": {"type": "string", "format": "binary"}},
            "image/gif": {"schema": {"type": "string", "format": "binary"}},
            "application/zip": {"schema": {"type": "string", "format": "binary"}},
        },
    },
}


Ends = list[SeedEnd | LatentEnd | FormFile]


async def _parse_json(request: Request) -> tuple[InterpolateOptions, Ends]:
    try:
        body = InterpolateRequest.model_validate_json(await request.body())
    except ValidationError as e:
        raise invalid(e.errors(include_url=False)) from None
    return body, [body.start, body.end]


_SEED_TEXT = re.compile(rf"[0-9]{{1,{len(str(MAX_SEED))}}}")


def _form_end(form: FormData, side: str) -> SeedEnd | FormFile:
    image, seed = form.get(f"{side}_image"), form.get(f"{side}_seed")
    if image is not None and seed is not None:
        raise InvalidFieldError(
            f"Fields '{side}_image' and '{side}_seed' are both sent; send one of them.", field=f"{side}_seed"
        )
    if isinstance(image, FormFile):
        return image
    if image is not None:
        raise InvalidFieldError(f"Field '{side}_image' must be a file, not text.", field=f"{side}_image")
    if isinstance(seed, str):
        # ASCII digits only, and no more than MAX_SEED has: str.isdigit() also accepts "²" or
        # "¹²", which int() refuses, and int() refuses more than 4,300 digits (both were 500s).
        if not _SEED_TEXT.fullmatch(seed) or int(seed) > MAX_SEED:
            raise InvalidFieldError(
                f"Field '{side}_seed' must be an integer from 0 to {MAX_SEED}.", field=f"{side}_seed"
            )
        return SeedEnd(seed=int(seed))
    raise InvalidFieldError(
        f"Field '{side}_image' is required: a photo of the {side} face (or {side}_seed).",
        field=f"{side}_image",
    )


def _parse_form(form: FormData) -> tuple[InterpolateOptions, Ends]:
    check_form_fields(form, "/interpolate", dict.fromkeys((*PHOTO_FIELDS, *FORM_FIELDS), False))
    fields = {k: form[k] for k in FORM_FIELDS if k in form}
    if any(not isinstance(v, str) for v in fields.values()):
        name = next(k for k, v in fields.items() if not isinstance(v, str))
        raise InvalidFieldError(f"Field '{name}' must be text, not a file.", field=name)
    try:
        opts = InterpolateOptions.model_validate(fields)
    except ValidationError as e:
        raise invalid(e.errors(include_url=False)) from None
    return opts, [_form_end(form, "start"), _form_end(form, "end")]


async def _end_latents(
    ends: Ends,
    opts: InterpolateOptions,
    model: Model,
    ctx: Ctx,
    settings: SettingsDep,
    align: bool | None = None,
    refine: int = 0,
) -> tuple[np.ndarray, np.ndarray]:
    """The two ends' latents, float32 (D,) each; a photo's refined ``refine`` steps."""
    info, out = model.info, []
    photos = [i for i, e in enumerate(ends) if isinstance(e, FormFile)]
    mus: dict[int, np.ndarray] = {}
    for i in photos:  # read and check both files before any model work
        end = ends[i]
        assert isinstance(end, FormFile)
        crops, _ = await read_images([end], ("start_image", "end_image")[i], settings, info, ctx, align)
        mus[i] = crops[0]
    if photos:
        latents, _, _ = await encode_latents(model, np.stack([mus[i] for i in photos]), refine)  # 1–2 rows
        mus = {i: latents[k] for k, i in enumerate(photos)}
    for i, end in enumerate(ends):
        side = ("start", "end")[i]
        if isinstance(end, SeedEnd):
            out.append(seed_latents(info, end.seed, 1, opts.temperature)[0])
        elif isinstance(end, LatentEnd):
            check_latent(end.latent, info.latent_dim, f"{side}.latent")
            out.append(np.asarray(end.latent, np.float32))
        else:
            out.append(np.asarray(mus[i], np.float32))
    return out[0], out[1]


def _describe(end: SeedEnd | LatentEnd | FormFile) -> str:
    if isinstance(end, SeedEnd):
        return f"seed {end.seed}"
    return "latent" if isinstance(end, LatentEnd) else "image"


@router.post(
    "/interpolate",
    summary="Interpolate between two faces",
    response_model=ImagesResponse,
    responses={**ANIMATION_RESPONSES, **UPLOAD_ERROR_RESPONSES},
    openapi_extra=OPENAPI_BODY,
)
async def interpolate(request: Request, model: ReadyModel, ctx: Ctx, settings: SettingsDep) -> Response:
    """`steps` frames from start to end, both included (slerp by default). JSON body: `start`
    and `end` are each `{seed}` or `{latent}` (cacheable: `ETag`, 304 on `If-None-Match`).
    Multipart: files `start_image` and `end_image` (or form fields `start_seed`/`end_seed`) and
    the other fields as form fields, plus `align` for the photos (as for /encode).

    apng: animated PNG (image/png, loops); strip: one PNG, frames left to right; gif: image/gif;
    zip: frame_000.png…; json: base64 PNG frames and their latents.
    """
    ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if ctype == "multipart/form-data":
        return await interpolate_form(request, model, ctx, settings)
    if ctype == "application/json" or ctype.endswith("+json"):
        return await interpolate_json(request, model, ctx, settings)
    raise UnsupportedMediaTypeError(
        "/interpolate takes application/json or multipart/form-data, not "
        f"{ctype or 'a body without Content-Type'}."
    )


async def interpolate_json(request: Request, model: Model, ctx: Ctx, settings: SettingsDep) -> Response:
    """The JSON body (InterpolateRequest): seeds and latents only, so the request fixes the
    frames and the answer is cacheable (service.api.caching)."""
    opts, ends = await _parse_json(request)
    for i, end in enumerate(ends):  # a bad latent is a 422 before any 304
        if isinstance(end, LatentEnd):
            check_latent(end.latent, model.info.latent_dim, f"{('start', 'end')[i]}.latent")
    tag = caching.etag(request, opts, model)
    if (cached := caching.not_modified(request, tag, settings.cache_max_age_s, model)) is not None:
        return cached
    a, b = await _end_latents(ends, opts, model, ctx, settings)
    return await _frames(
        model, ctx, settings, opts, ends, a, b, caching.headers(tag, settings.cache_max_age_s)
    )


async def interpolate_form(request: Request, model: Model, ctx: Ctx, settings: SettingsDep) -> Response:
    """The multipart form (InterpolateForm): photos or seeds at the ends, options as fields."""
    async with request.form(**FORM_LIMITS) as form:
        opts, ends = _parse_form(form)
        refine = form_refine(form, settings)
        a, b = await _end_latents(ends, opts, model, ctx, settings, form_align(form), refine)
    return await _frames(model, ctx, settings, opts, ends, a, b, {})


async def _frames(
    model: Model,
    ctx: Ctx,
    settings: SettingsDep,
    opts: InterpolateOptions,
    ends: Ends,
    a: np.ndarray,
    b: np.ndarray,
    cache: dict[str, str],
) -> Response:
    """The path from a to b decoded, in ``opts.format``."""
    path = latent_path(model.info, a, b, opts.steps, opts.method)  # (steps, D), via the prior's ε-space
    frames = await model.decode(path)  # (steps, S, S, C)
    info, level = model.info, settings.png_compress_level
    extra = {
        "start": _describe(ends[0]),
        "end": _describe(ends[1]),
        "method": opts.method,
        "steps": str(opts.steps),
    }
    seed = ends[0].seed if isinstance(ends[0], SeedEnd) else None
    text = png_text(info.name, info.version, seed, **extra)
    if opts.format == "json":
        texts = [{**text, "facegen:frame": str(i)} for i in range(len(frames))]
        images = await render.b64_pngs(ctx, frames, texts, level)
        return render.json(
            ImagesResponse(
                model=info.name, version=info.version, seed=seed, images=images, latents=path.tolist()
            ),
            cache,
        )
    content, media_type, filename = await render.animation(
        ctx, frames, opts.format, text, level, opts.duration_ms
    )
    return render.binary(content, media_type, cache, filename=filename)
