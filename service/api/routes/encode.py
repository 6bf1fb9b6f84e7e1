"""POST /encode: uploaded photos to latents (mu, logvar of q(z|x))."""

from __future__ import annotations

from fastapi import APIRouter

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
from service.api.responses import UPLOAD_ERROR_RESPONSES
from service.deps import Ctx, ReadyModel, SettingsDep
from service.schemas import EncodeResponse, LatentStats

router = APIRouter(tags=["latents"])


@router.post(
    "/encode",
    summary="Encode photos into latents",
    responses=UPLOAD_ERROR_RESPONSES,
    dependencies=[form_fields("/encode", {"image": True, "align": False, "refine": False})],
)
async def encode(
    image: Images,
    model: ReadyModel,
    ctx: Ctx,
    settings: SettingsDep,
    align: AlignOption = None,
    refine: RefineOption = 0,
) -> EncodeResponse:
    """Multipart, one or more `image` files, optional `align`. Each is aligned by its face
    (models trained on aligned faces, or `align=true`), or cropped to the model's fixed box (the
    CelebA face box for aligned 178:218 photos, else the centre square), resized, and encoded;
    `mu` is the face's latent (send it to /decode), `logvar` the encoder's uncertainty, `face`
    the face box and landmarks in the photo's pixels when it was aligned (else null). `latent`
    is the latent to decode: `mu`, or with `refine=N` the latent refined from `mu` for N steps
    to match the photo (docs/refine.md).
    """
    check_refine(refine, settings)
    images, faces = await read_images(image, "image", settings, model.info, ctx, align)
    latent, mu, logvar = await encode_latents(model, images, refine)
    info = model.info
    items = [
        LatentStats(mu=m.tolist(), logvar=v.tolist(), latent=z.tolist(), face=face_json(f))
        for z, m, v, f in zip(latent, mu, logvar, faces, strict=True)
    ]
    return EncodeResponse(
        model=info.name, version=info.version, latent_dim=info.latent_dim, refine=refine, items=items
    )
