"""POST /generate: faces from seeds."""

from __future__ import annotations

import json
import secrets

from fastapi import APIRouter, Request, Response

from service.api import caching, render
from service.api.responses import CACHEABLE_IMAGE_RESPONSES, ERROR_RESPONSES
from service.deps import Ctx, ReadyModel, SettingsDep
from service.imaging import png_text
from service.latents import apply_edit, seed_latents
from service.schemas import GenerateRequest, ImagesResponse

router = APIRouter(tags=["faces"])
SERVER_SEEDS = 2**31  # seeds the server picks are short enough to read out and type back


@router.post(
    "/generate",
    summary="Sample faces from seeds",
    response_model=ImagesResponse,
    responses={**CACHEABLE_IMAGE_RESPONSES, **ERROR_RESPONSES},
)
async def generate(
    body: GenerateRequest, model: ReadyModel, ctx: Ctx, settings: SettingsDep, request: Request
) -> Response | ImagesResponse:
    """Face i comes from seed + i: noise ε = N(0, T²I) drawn from its own generator, mapped to the
    latent z = mean + L·ε of the model's fitted prior (z = ε for a model without one), so face i of a
    grid is also `{"n": 1, "seed": seed + i}`. The same seed, n, temperature and model version
    give the same pixels, whatever else the server is doing. The seed used is in `X-Seed`.
    With a `seed`, the response is cacheable: `ETag`, `Cache-Control: immutable`, and
    `If-None-Match` answers 304 (`X-Model-Version` names the version that made it).
    `attributes` ({name: strength}, as for /edit) moves every face along those directions.

    `png`: one image for n = 1, else a grid of ceil(√n) columns (2 px black padding).
    `json`: `{model, version, seed, images: [base64 PNG], latents}`.
    """
    info = model.info
    headers: dict[str, str] = {}
    if body.seed is not None:  # the request alone fixes the output: cacheable
        tag = caching.etag(request, body, model)
        if (cached := caching.not_modified(request, tag, settings.cache_max_age_s, model)) is not None:
            cached.headers["X-Seed"] = str(body.seed)
            return cached
        headers.update(caching.headers(tag, settings.cache_max_age_s))
    seed = body.seed if body.seed is not None else secrets.randbelow(SERVER_SEEDS)
    z = seed_latents(info, seed, body.n, body.temperature)  # (n, D)
    latents = apply_edit(info, z, body.attributes)
    faces = await model.decode(latents)  # (n, S, S, C)
    headers["X-Seed"] = str(seed)
    level = settings.png_compress_level
    extra = {"temperature": f"{body.temperature:g}"}
    if body.attributes:
        extra["attributes"] = json.dumps(body.attributes, sort_keys=True)
    if body.format == "json":
        texts = [png_text(info.name, info.version, seed + i, **extra) for i in range(body.n)]
        images = await render.b64_pngs(ctx, faces, texts, level)
        out = ImagesResponse(
            model=info.name, version=info.version, seed=seed, images=images, latents=latents.tolist()
        )
        return render.json(out, headers)
    text = png_text(info.name, info.version, seed, n=str(body.n), **extra)
    png = await render.grid_png(ctx, faces, text, level)
    return render.binary(png, render.PNG, headers, f"facegen-{seed}.png")
