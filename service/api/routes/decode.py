"""POST /decode: faces from latents the client holds."""

from __future__ import annotations

import numpy as np
from fastapi import APIRouter, Request, Response

from service.api import caching, render
from service.api.inputs import check_latent
from service.api.responses import CACHEABLE_IMAGE_RESPONSES, ERROR_RESPONSES
from service.deps import Ctx, ReadyModel, SettingsDep
from service.imaging import png_text
from service.schemas import DecodeRequest, ImagesResponse

router = APIRouter(tags=["faces"])


@router.post(
    "/decode",
    summary="Decode latents into faces",
    response_model=ImagesResponse,
    responses={**CACHEABLE_IMAGE_RESPONSES, **ERROR_RESPONSES},
)
async def decode(
    body: DecodeRequest, model: ReadyModel, ctx: Ctx, settings: SettingsDep, request: Request
) -> Response | ImagesResponse:
    """Each row of `latents` (latent_dim finite numbers) becomes one face; outputs as for
    /generate (`png`: one image or a grid; `json`: base64 PNGs and the latents), without X-Seed.
    Cacheable as /generate with a seed: `ETag`, `Cache-Control: immutable`, 304 on `If-None-Match`.
    """
    info = model.info
    for i, row in enumerate(body.latents):
        check_latent(row, info.latent_dim, f"latents[{i}]")
    tag = caching.etag(request, body, model)
    if (cached := caching.not_modified(request, tag, settings.cache_max_age_s, model)) is not None:
        return cached
    cache = caching.headers(tag, settings.cache_max_age_s)
    latents = np.asarray(body.latents, np.float32)  # (n, D)
    faces = await model.decode(latents)
    level = settings.png_compress_level
    if body.format == "json":
        texts = [png_text(info.name, info.version)] * len(faces)
        images = await render.b64_pngs(ctx, faces, texts, level)
        return render.json(
            ImagesResponse(
                model=info.name, version=info.version, seed=None, images=images, latents=latents.tolist()
            ),
            cache,
        )
    png = await render.grid_png(ctx, faces, png_text(info.name, info.version, n=str(len(faces))), level)
    return render.binary(png, render.PNG, cache, filename="facegen-decoded.png")
