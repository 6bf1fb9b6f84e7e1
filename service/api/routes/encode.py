"""POST /encode: uploaded photos to latents (mu, logvar of q(z|x))."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, File, Form, UploadFile

from facegen_core.align import Face
from service.api.inputs import form_fields, read_images
from service.api.responses import UPLOAD_ERROR_RESPONSES
from service.deps import Ctx, ReadyModel, SettingsDep
from service.schemas import DetectedFace, EncodeResponse, FormBool, LatentStats

router = APIRouter(tags=["latents"])

Images = Annotated[
    list[UploadFile],
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


def face_json(face: Face | None) -> DetectedFace | None:
    return None if face is None else DetectedFace.model_validate(face.to_dict())


@router.post(
    "/encode",
    summary="Encode photos into latents",
    responses=UPLOAD_ERROR_RESPONSES,
    dependencies=[form_fields("/encode", {"image": True, "align": False})],
)
async def encode(
    image: Images, model: ReadyModel, ctx: Ctx, settings: SettingsDep, align: AlignOption = None
) -> EncodeResponse:
    """Multipart, one or more `image` files, optional `align`. Each is aligned by its face
    (models trained on aligned faces, or `align=true`), or cropped to the model's fixed box (the
    CelebA face box for aligned 178:218 photos, else the centre square), resized, and encoded;
    `mu` is the face's latent (send it to /decode), `logvar` the encoder's uncertainty, `face`
    the face box and landmarks in the photo's pixels when it was aligned (else null).
    """
    images, faces = await read_images(image, "image", settings, model.info, ctx, align)
    mu, logvar = await model.encode(images)
    info = model.info
    items = [
        LatentStats(mu=m.tolist(), logvar=v.tolist(), face=face_json(f))
        for m, v, f in zip(mu, logvar, faces, strict=True)
    ]
    return EncodeResponse(model=info.name, version=info.version, latent_dim=info.latent_dim, items=items)
