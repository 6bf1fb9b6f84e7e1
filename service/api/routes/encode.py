"""POST /encode: uploaded photos to latents (mu, logvar of q(z|x))."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, File, UploadFile

from service.api.inputs import read_images
from service.api.responses import UPLOAD_ERROR_RESPONSES
from service.deps import Ctx, ReadyModel, SettingsDep
from service.schemas import EncodeResponse, LatentStats

router = APIRouter(tags=["latents"])

Images = Annotated[
    list[UploadFile],
    File(
        description="1–64 image files (JPEG, PNG, WebP, BMP, GIF, TIFF), each cropped and resized "
        "like the training faces."
    ),
]


@router.post("/encode", summary="Encode photos into latents", responses=UPLOAD_ERROR_RESPONSES)
async def encode(image: Images, model: ReadyModel, ctx: Ctx, settings: SettingsDep) -> EncodeResponse:
    """Multipart, one or more `image` files. Each is cropped to the model's input box (the
    CelebA face box for aligned 178:218 photos, else the centre square), resized, and encoded;
    `mu` is the face's latent (send it to /decode), `logvar` the encoder's uncertainty.
    """
    images = await read_images(image, "image", settings, model.info, ctx)
    mu, logvar = await model.encode(images)
    info = model.info
    items = [LatentStats(mu=m.tolist(), logvar=v.tolist()) for m, v in zip(mu, logvar, strict=True)]
    return EncodeResponse(model=info.name, version=info.version, latent_dim=info.latent_dim, items=items)
