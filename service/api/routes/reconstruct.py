"""POST /reconstruct: photos through the encoder and back through the decoder."""

from __future__ import annotations

from typing import Annotated, Literal

import numpy as np
from fastapi import APIRouter, Form, Response

from service.api import render
from service.api.inputs import (
    AlignOption,
    Images,
    RefineOption,
    check_refine,
    encode_latents,
    form_fields,
    read_images,
)
from service.api.render import face_json
from service.api.responses import IMAGE_RESPONSES, UPLOAD_ERROR_RESPONSES
from service.deps import Ctx, ReadyModel, SettingsDep
from service.imaging import png_text
from service.schemas import FormBool, ReconstructResponse

router = APIRouter(tags=["latents"])
# name -> may repeat
FIELDS = {"image": True, "pair": False, "format": False, "align": False, "refine": False}


@router.post(
    "/reconstruct",
    dependencies=[form_fields("/reconstruct", FIELDS)],
    summary="Reconstruct photos (encode, then decode)",
    response_model=ReconstructResponse,
    responses={**IMAGE_RESPONSES, **UPLOAD_ERROR_RESPONSES},
)
async def reconstruct(
    image: Images,
    model: ReadyModel,
    ctx: Ctx,
    settings: SettingsDep,
    pair: Annotated[
        FormBool, Form(description="Put the model's input crop beside each reconstruction.")
    ] = False,
    format: Annotated[
        Literal["png", "json"], Form(description="png: one image or a grid; json: base64 PNGs.")
    ] = "png",
    align: AlignOption = None,
    refine: RefineOption = 0,
) -> Response | ReconstructResponse:
    """Each file is encoded and its mean `mu` decoded (no sampling, so the result is repeatable);
    with `refine=N`, `mu` is first refined for N steps to match the photo (docs/refine.md):
    closer to the photo, at N decoder forward and backward passes per file.

    `png`: one reconstruction, or a grid of ceil(√N) columns; with `pair=true`, one row per
    file: the model's input crop, then its reconstruction. `json`: base64 PNGs (`inputs` too
    with `pair=true`), each file's `mu`, and `faces`: each file's face box and landmarks when
    it was aligned (`align`, as for /encode), else null.
    """
    info = model.info
    check_refine(refine, settings)
    crops, faces = await read_images(image, "image", settings, info, ctx, align)  # (N, S, S, C)
    latent, _, _ = await encode_latents(model, crops, refine)
    recon = await model.decode(latent)  # (N, S, S, C)
    level = settings.png_compress_level
    text = png_text(info.name, info.version, kind="reconstruction")
    if format == "json":
        images = await render.b64_pngs(ctx, recon, [text] * len(recon), level)
        inputs = None
        if pair:
            # The crops are the client's own photos, resized: named, but not marked AI-generated.
            crop_text = {
                "Software": "facegen",
                "facegen:model": info.name,
                "facegen:version": str(info.version),
                "facegen:kind": "input-crop",
            }
            inputs = await render.b64_pngs(ctx, crops, [crop_text] * len(crops), level)
            ctx.images -= len(crops)  # count reconstructions, not the echoed inputs
        body = ReconstructResponse(
            model=info.name,
            version=info.version,
            images=images,
            inputs=inputs,
            latents=latent.tolist(),
            refine=refine,
            faces=[face_json(f) for f in faces],
        )
        return render.json(body)
    if pair:
        tiles = np.stack([crops, recon], axis=1).reshape(-1, *recon.shape[1:])  # input, recon, input, ...
        png = await render.grid_png(
            ctx, tiles, {**text, "facegen:layout": "input|reconstruction"}, level, ncols=2
        )
        ctx.images -= len(crops)  # count reconstructions, not the echoed inputs
        return render.binary(png, render.PNG, filename="facegen-reconstruction.png")
    png = await render.grid_png(ctx, recon, text, level)
    return render.binary(png, render.PNG, filename="facegen-reconstruction.png")
