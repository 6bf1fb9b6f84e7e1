"""POST /edit: a face (seed, latent or photo) moved along attribute directions."""

from __future__ import annotations

import json
from typing import Any

import numpy as np
from fastapi import APIRouter, Request, Response
from pydantic import ValidationError
from starlette.datastructures import FormData
from starlette.datastructures import UploadFile as FormFile

from service.api import render
from service.api.inputs import check_latent, encode_latents, form_align, form_refine, invalid, read_images
from service.api.responses import IMAGE_RESPONSES, UPLOAD_ERROR_RESPONSES
from service.deps import ReadyModel, SettingsDep
from service.errors import InvalidFieldError, UnsupportedMediaTypeError
from service.imaging import png_text
from service.latents import apply_edit, check_attributes, seed_latents, sweep
from service.model_handle import Model
from service.openapi import form_schema
from service.schemas import EditForm, EditRequest, EditResponse, Sweep

router = APIRouter(tags=["faces"])
FORM_FIELDS = tuple(EditForm.model_fields)  # image, attributes, sweep, align, refine
MAX_JSON_FIELD = 16 * 1024  # bytes of a multipart field holding JSON

OPENAPI_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {"schema": {"$ref": "#/components/schemas/EditRequest"}},
            "multipart/form-data": {"schema": form_schema(EditForm)},
        },
    }
}


def _json_field(form: FormData, name: str) -> Any:
    value = form.get(name)
    if value is None or value == "":  # empty text is "not sent", as for every form field
        return None
    if not isinstance(value, str):
        raise InvalidFieldError(f"Field '{name}' must be JSON text, not a file.", field=name)
    try:
        return json.loads(value)
    except json.JSONDecodeError as e:
        raise InvalidFieldError(f"Field '{name}' is not valid JSON ({e.msg}).", field=name) from None


def _parse_form(form: FormData) -> tuple[EditRequest, FormFile]:
    unknown = sorted(set(form.keys()) - set(FORM_FIELDS))
    if unknown:
        raise InvalidFieldError(f"Field '{unknown[0]}' is not a field of multipart /edit.", field=unknown[0])
    image = form.get("image")
    if not isinstance(image, FormFile):
        raise InvalidFieldError("Field 'image' is required: a photo file of the face to edit.", field="image")
    body: dict[str, Any] = {"latent": [0.0]}  # a placeholder end: the photo's latent replaces it
    for name in ("attributes", "sweep"):
        value = _json_field(form, name)
        if value is not None:
            body[name] = value
    try:
        # Lax here (form text): JSON numbers already have their types; the schema still checks them.
        return EditRequest.model_validate(body), image
    except ValidationError as e:
        raise invalid(e.errors(include_url=False)) from None


def _parse_json(raw: bytes) -> EditRequest:
    try:
        body = EditRequest.model_validate_json(raw)
    except ValidationError as e:
        raise invalid(e.errors(include_url=False)) from None
    if (body.seed is None) == (body.latent is None):
        raise InvalidFieldError(
            "Send exactly one of 'seed' (an integer) or 'latent' (latent_dim numbers) to edit.", field="seed"
        )
    return body


def _check(model: Model, body: EditRequest) -> None:
    """Every name checked before any model work (422 naming the valid ones)."""
    check_attributes(model.info, list(body.attributes))
    if body.sweep is not None:
        check_attributes(model.info, [body.sweep.attribute], "sweep.attribute")


def _rows(model: Model, z: np.ndarray, body: EditRequest) -> tuple[np.ndarray, list[float] | None]:
    """The edited latents (1 or sweep.steps rows, D) and the swept strengths."""
    edited = apply_edit(model.info, z[None], body.attributes)[0]  # (D,)
    s: Sweep | None = body.sweep
    if s is None:
        return edited[None], None
    return sweep(model.info, edited, s.attribute, s.start, s.stop, s.steps)  # (steps, D)


@router.post(
    "/edit",
    summary="Edit a face's attributes",
    response_model=EditResponse,
    responses={**IMAGE_RESPONSES, **UPLOAD_ERROR_RESPONSES},
    openapi_extra=OPENAPI_BODY,
)
async def edit(request: Request, model: ReadyModel, settings: SettingsDep) -> Response:
    """Move a face along attribute directions: `{"seed": 42, "attributes": {"Smiling": 2.0}}`
    (or `latent` instead of `seed`). Strength is in standard deviations of the training faces'
    encoder means along the direction: 0 leaves the face, +2 clearly adds the attribute, -2
    removes it. GET /models lists the model's attributes; an unknown name is a 422 naming them.

    Multipart: the file `image` (aligned like other uploads; `align` and `refine` as for /encode)
    and a form field `attributes` holding the same JSON object (and `sweep`, as below).

    `sweep: {"attribute", "start", "stop", "steps", "format"}` adds one attribute at `steps`
    strengths from start to stop (on top of `attributes`): a strip (one PNG, left to right) or
    an APNG. Answers `image/png`, or `application/json` (EditResponse: the edited latents and
    base64 PNGs) when the request's `Accept` asks for JSON.
    """
    ctx, info = model.ctx, model.info
    ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if ctype == "multipart/form-data":
        async with request.form(
            max_files=1, max_fields=len(FORM_FIELDS), max_part_size=MAX_JSON_FIELD
        ) as form:
            body, image = _parse_form(form)
            _check(model, body)
            refine = form_refine(form, settings)
            crops, _ = await read_images([image], "image", settings, info, ctx, form_align(form))
        latent, _, _ = await encode_latents(model, crops, refine)  # (1, D)
        z, seed = np.asarray(latent[0], np.float32), None
    elif ctype == "application/json" or ctype.endswith("+json"):
        body = _parse_json(await request.body())
        _check(model, body)
        if body.latent is not None:
            check_latent(body.latent, info.latent_dim, "latent")
            z, seed = np.asarray(body.latent, np.float32), None
        else:
            assert body.seed is not None
            z = seed_latents(info, body.seed, 1, body.temperature)[0]
            seed = body.seed
    else:
        got = ctype or "a body without Content-Type"
        raise UnsupportedMediaTypeError(f"/edit takes application/json or multipart/form-data, not {got}.")
    rows, strengths = _rows(model, z, body)
    latents = rows.astype(np.float32)  # (R, D)
    faces = await model.decode(latents)  # (R, S, S, C)
    level = settings.png_compress_level
    headers = {"X-Seed": str(seed)} if seed is not None else {}
    text = png_text(
        info.name, info.version, seed, kind="edit", attributes=json.dumps(body.attributes, sort_keys=True)
    )
    if body.sweep is not None:
        text["facegen:sweep"] = json.dumps(
            body.sweep.model_dump(include={"attribute", "start", "stop", "steps"})
        )
    if "application/json" in request.headers.get("accept", ""):
        texts = [{**text, "facegen:frame": str(i)} for i in range(len(faces))] if strengths else [text]
        out = EditResponse(
            model=info.name,
            version=info.version,
            seed=seed,
            attributes=dict(body.attributes),
            sweep=strengths,
            source_latent=z.tolist(),
            latents=latents.tolist(),
            images=await render.b64_pngs(ctx, faces, texts, level),
        )
        return render.json(out, headers)
    if body.sweep is None:
        png = await render.grid_png(ctx, faces, text, level)
        return render.binary(png, render.PNG, headers, "facegen-edit.png")
    content, media_type, _ = await render.animation(
        ctx, faces, body.sweep.format, text, level, body.sweep.duration_ms
    )
    return render.binary(content, media_type, headers, f"facegen-edit-{body.sweep.format}.png")
