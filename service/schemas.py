"""Request and response bodies of the API, with the examples /docs shows.

Request models are strict and closed: ``"n": "4"`` or ``"n": 4.0`` is a 422 (not silently
coerced), and so is an unknown key such as ``"temp"`` (a typo would otherwise be ignored).
Field names are a contract with clients and dashboards: add, never rename.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Discriminator, Field, Tag

from service.settings import MAX_ROWS_PER_REQUEST, REFINE_LIMIT

# seed + i (i < 64) must fit torch's int64 seed; and the bound is a float64 exactly (floats near
# 2**63 are 1024 apart), so a JSON number written as a float, e.g. 9.2233720368547748e18, is
# within the bound exactly when its value is (issue 12: the OpenAPI bound and the server's agree).
MAX_SEED = 2**63 - 1024
assert MAX_SEED + MAX_ROWS_PER_REQUEST < 2**63 and float(MAX_SEED) == MAX_SEED
# |z| beyond this is no Gaussian latent (at temperature 2, |z_i| > 15 has p < 1e-13) and only
# risks inf/NaN inside the decoder.
LATENT_BOUND = 1000.0

LATENT_MAX_ITEMS = 4096  # the schema's bound before a model is loaded; then exactly latent_dim


def _integral(value: Any) -> Any:
    """4.0 -> 4: JSON Schema's "integer" includes numbers with a zero fraction (and so does the
    OpenAPI document); 4.5, "4" and true stay refused by the strict int that follows."""
    if isinstance(value, float) and value.is_integer() and abs(value) < 2**63:
        return int(value)
    return value


def _form_bool(value: Any) -> Any:
    """Form text "true"/"false" (any case) -> bool, the OpenAPI boolean's only two values; the
    same rule for every multipart route ("yes", "1", "on" are refused, not guessed)."""
    if isinstance(value, str) and value.lower() in ("true", "false"):
        return value.lower() == "true"
    if isinstance(value, bool):
        return value
    raise ValueError("Input should be true or false")


Int = Annotated[int, BeforeValidator(_integral)]
FormBool = Annotated[bool, BeforeValidator(_form_bool)]
# The bounds on int itself, the validator around them: the schema keeps minimum/maximum.
Seed = Annotated[
    int,
    Field(ge=0, le=MAX_SEED, description="Face i of a request comes from seed + i."),
    BeforeValidator(_integral),
]
LatentValue = Annotated[float, Field(allow_inf_nan=False, ge=-LATENT_BOUND, le=LATENT_BOUND)]
Latent = Annotated[list[LatentValue], Field(min_length=1, max_length=LATENT_MAX_ITEMS)]
Temperature = Annotated[
    float,
    Field(
        gt=0.0,
        le=2.0,
        description="Scale of the seed noise ε ~ N(0, T²I): lower is more typical, higher more varied.",
    ),
]
ImageFormat = Literal["png", "json"]
# The tiny test model's 8 dims; service/openapi.py widens every example to the served latent_dim.
EXAMPLE_LATENT: list[Any] = [0.12, -1.3, 0.5, 0.0, 2.1, -0.7, 0.33, 1.0]
EXAMPLE_LOGVAR: list[Any] = [-2.0] * 8
# An edit beyond ±10 standard deviations of the training faces along a direction leaves the
# region the decoder was trained on (the largest class separation measured is ~2.3).
MAX_STRENGTH = 10.0
Strength = Annotated[float, Field(allow_inf_nan=False, ge=-MAX_STRENGTH, le=MAX_STRENGTH)]
Attributes = Annotated[
    dict[str, Strength],
    Field(
        max_length=64,
        description="Attribute edits {name: strength}; strength in standard deviations of the "
        "training faces' encoder means along the attribute's direction (+ adds it, - removes it; "
        "1-3 is a clear edit). GET /models lists the names.",
    ),
]


class StrictModel(BaseModel):
    model_config = ConfigDict(strict=True, extra="forbid")


class GenerateRequest(StrictModel):
    """Sample n faces; face i comes from seed + i, so any face of a grid can be fetched alone."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [{"n": 4, "seed": 42, "temperature": 0.8, "format": "png"}, {"seed": 44}]
        }
    )

    n: Int = Field(default=1, ge=1, le=MAX_ROWS_PER_REQUEST, description="Number of faces (1–64).")
    seed: Seed | None = Field(
        default=None, description="First seed; null: the server picks one (see X-Seed)."
    )
    temperature: Temperature = 1.0
    format: ImageFormat = Field(
        default="png", description="png: one image or a grid; json: base64 PNGs + latents."
    )
    attributes: Attributes | None = Field(
        default=None, description="Edit every face: {name: strength}, as for /edit."
    )


class DecodeRequest(StrictModel):
    """Decode latents you hold (from /generate or /encode json, or edited) into faces."""

    model_config = ConfigDict(
        json_schema_extra={"examples": [{"latents": [EXAMPLE_LATENT], "format": "png"}]}
    )

    latents: list[Latent] = Field(
        default=...,
        min_length=1,
        max_length=MAX_ROWS_PER_REQUEST,
        description="1–64 rows of latent_dim finite numbers.",
    )
    format: ImageFormat = "png"


class SeedEnd(StrictModel):
    seed: Seed


class LatentEnd(StrictModel):
    latent: Latent


def _end_kind(value: Any) -> str | None:
    """Which end a JSON object is, by its key, so errors come from that branch only."""
    if isinstance(value, dict):
        return "SeedEnd" if "seed" in value else "LatentEnd" if "latent" in value else None
    return "SeedEnd" if isinstance(value, SeedEnd) else "LatentEnd" if isinstance(value, LatentEnd) else None


End = Annotated[
    Annotated[SeedEnd, Tag("SeedEnd")] | Annotated[LatentEnd, Tag("LatentEnd")],
    Discriminator(
        _end_kind,
        custom_error_type="invalid_end",
        custom_error_message='Each end must be an object {"seed": int} or {"latent": [numbers]}',
    ),
    Field(description="{seed: int} or {latent: [latent_dim numbers]}."),
]
InterpolateFormat = Literal["apng", "gif", "strip", "zip", "json"]


class InterpolateOptions(BaseModel):
    """The fields shared by the JSON and the multipart form of /interpolate (lax: form text)."""

    steps: Int = Field(default=8, ge=2, le=MAX_ROWS_PER_REQUEST, description="Frames, both ends included.")
    method: Literal["slerp", "lerp"] = Field(
        default="slerp", description="slerp keeps the Gaussian norm; lerp is a line."
    )
    format: InterpolateFormat = Field(
        default="apng",
        description="apng (image/png), gif, strip (one PNG, left to right), zip (frame_000.png…), json.",
    )
    temperature: Temperature = Field(default=1.0, description="Temperature of seed ends.")
    duration_ms: Int = Field(default=100, ge=10, le=10_000, description="Frame duration of apng and gif.")


class InterpolateRequest(InterpolateOptions):
    """A path of faces between two ends, each a seed or a latent."""

    model_config = ConfigDict(
        strict=True,
        extra="forbid",
        json_schema_extra={
            "examples": [
                {"start": {"seed": 1}, "end": {"seed": 2}, "steps": 8, "method": "slerp", "format": "apng"},
                {"start": {"seed": 7}, "end": {"latent": EXAMPLE_LATENT}, "steps": 4, "format": "json"},
            ]
        },
    )

    start: End
    end: End


# The route reads this form itself (routes/interpolate.py); the model is the one source of
# the form's field names and of its OpenAPI schema (openapi.form_schema), so they cannot drift.
class InterpolateForm(InterpolateOptions):
    """The multipart form of /interpolate: each end exactly one of a photo or a seed, and the
    options of the JSON body as form fields."""

    model_config = ConfigDict(
        extra="forbid",  # unknown fields are 422; every field at most once
        json_schema_extra={
            # Each end is exactly one of a photo or a seed.
            "allOf": [
                {"oneOf": [{"required": ["start_image"]}, {"required": ["start_seed"]}]},
                {"oneOf": [{"required": ["end_image"]}, {"required": ["end_seed"]}]},
            ]
        },
    )

    start_image: bytes | None = Field(default=None, min_length=1, description="Photo of the first face.")
    end_image: bytes | None = Field(default=None, min_length=1, description="Photo of the last face.")
    start_seed: Seed | None = Field(
        default=None, description="Instead of start_image (never both): a seed, ASCII digits."
    )
    end_seed: Seed | None = Field(
        default=None, description="Instead of end_image (never both): a seed, ASCII digits."
    )
    refine: int = Field(
        default=0,
        ge=0,
        le=REFINE_LIMIT,
        description="Refine each photo's latent for this many steps (as for /encode).",
    )
    align: FormBool | None = Field(
        default=None,
        description="Align each photo by its face (as for /encode). Not sent: true for models "
        "trained on aligned faces, else the model's own crop; false: no alignment.",
    )


class Sweep(StrictModel):
    """One attribute at ``steps`` strengths from ``start`` to ``stop`` (on top of ``attributes``)."""

    attribute: str = Field(..., description="The attribute to sweep (GET /models lists them).")
    start: Strength = -3.0
    stop: Strength = 3.0
    steps: int = Field(default=7, ge=2, le=MAX_ROWS_PER_REQUEST, description="Frames, both ends included.")
    format: Literal["strip", "apng"] = Field(
        default="strip", description="strip: one PNG, frames left to right; apng: animated PNG."
    )
    duration_ms: int = Field(default=150, ge=10, le=10_000, description="Frame duration of apng.")


class EditRequest(StrictModel):
    """A face (a seed or a latent) edited along attribute directions; exactly one of seed/latent."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {"seed": 42, "attributes": {"Smiling": 2.0, "Eyeglasses": 1.5}},
                {"seed": 7, "sweep": {"attribute": "Male", "start": -3, "stop": 3, "steps": 7}},
            ]
        }
    )

    seed: Seed | None = None
    latent: Latent | None = None
    attributes: Attributes = Field(default_factory=dict)
    temperature: Temperature = 1.0
    sweep: Sweep | None = Field(default=None, description="Also sweep one attribute: a strip or APNG.")


# As InterpolateForm: the route reads the form itself; this model names its fields and makes
# its OpenAPI schema.
class EditForm(BaseModel):
    """The multipart form of /edit: a photo, and the JSON body's edits as JSON text fields."""

    image: bytes = Field(description="A photo of the face to edit.")
    attributes: str | None = Field(
        default=None, description='JSON object {name: strength}, e.g. {"Smiling": 2.0}.'
    )
    sweep: str | None = Field(
        default=None, description='JSON object as in the JSON body, e.g. {"attribute": "Male"}.'
    )
    align: FormBool | None = Field(default=None, description="Align the photo by its face (as for /encode).")
    refine: int = Field(
        default=0,
        ge=0,
        le=REFINE_LIMIT,
        description="Refine the photo's latent for this many steps (as for /encode).",
    )


class EditResponse(BaseModel):
    """The edited face(s) as base64 PNGs and their latents (one row, or one per sweep frame)."""

    model: str
    version: int
    seed: int | None = Field(default=None, description="The seed edited; null for a latent or photo.")
    attributes: dict[str, float] = Field(..., description="The edit applied to every row.")
    sweep: list[float] | None = Field(default=None, description="Per row: the swept attribute's strength.")
    source_latent: list[float] = Field(
        ..., description="The face's latent before the edit (a photo's: refined when `refine` > 0)."
    )
    latents: list[list[float]] = Field(..., description="The edited latents, one per image.")
    images: list[str] = Field(..., description="base64 PNGs, one per row.")


class ImagesResponse(BaseModel):
    """Faces as base64 PNGs (each with the text chunks), with the latents that made them."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "model": "celeba64",
                    "version": 3,
                    "seed": 42,
                    "images": ["iVBORw0KGgo..."],
                    "latents": [EXAMPLE_LATENT],
                }
            ]
        }
    )

    model: str
    version: int
    seed: int | None = Field(
        default=None, description="First seed (face i: seed + i); null for latents/images."
    )
    images: list[str] = Field(..., description="base64 PNGs, one per face or frame, in order.")
    latents: list[list[float]]


Point = Annotated[list[float], Field(min_length=2, max_length=2, description="(x, y) in pixels.")]


class FaceLandmarks(BaseModel):
    """Five landmarks; left/right as seen in the picture (left_eye has the smaller x)."""

    left_eye: Point
    right_eye: Point
    nose: Point
    mouth_left: Point
    mouth_right: Point


class DetectedFace(BaseModel):
    """The face an upload was aligned by, in pixels of the uploaded photo after its EXIF
    rotation (x right, y down, origin at the top-left corner). The box may reach past the
    photo's edges when the face does."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "box": [4.1, -8.7, 80.6, 93.2],
                    "landmarks": {
                        "left_eye": [29.9, 28.5],
                        "right_eye": [63.6, 28.8],
                        "nose": [46.9, 47.7],
                        "mouth_left": [32.5, 68.0],
                        "mouth_right": [61.2, 68.2],
                    },
                    "score": 0.9999,
                }
            ]
        }
    )

    box: list[float] = Field(..., min_length=4, max_length=4, description="[left, top, right, bottom].")
    landmarks: FaceLandmarks
    score: float = Field(..., description="The detector's face probability, 0–1.")


class LatentStats(BaseModel):
    mu: list[float] = Field(..., description="Mean of q(z|x): the face's latent.")
    logvar: list[float] = Field(..., description="log σ² of q(z|x): the encoder's uncertainty.")
    latent: list[float] = Field(
        ..., description="The latent to decode: mu, or mu refined for `refine` steps (docs/refine.md)."
    )
    face: DetectedFace | None = Field(
        default=None,
        description="The face the upload was aligned by (the largest one found); null when it "
        "was not aligned (align=false, or a model that does not align by default).",
    )


class EncodeResponse(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "model": "celeba64",
                    "version": 3,
                    "latent_dim": 8,
                    "refine": 0,
                    "items": [{"mu": EXAMPLE_LATENT, "logvar": EXAMPLE_LOGVAR, "latent": EXAMPLE_LATENT}],
                }
            ]
        }
    )

    model: str
    version: int
    latent_dim: int
    refine: int = Field(default=0, description="Refinement steps each latent took (0: none).")
    items: list[LatentStats]


class ReconstructResponse(BaseModel):
    model: str
    version: int
    images: list[str] = Field(..., description="base64 PNG reconstructions, decode(mu), one per file.")
    inputs: list[str] | None = Field(
        default=None, description="With pair=true: the model's input crops (base64 PNG)."
    )
    latents: list[list[float]] = Field(
        ..., description="Each file's latent, what was decoded: mu, or mu refined for `refine` steps."
    )
    refine: int = Field(default=0, description="Refinement steps each latent took (0: none).")
    faces: list[DetectedFace | None] = Field(
        ...,
        description="Per file, the face it was aligned by (the largest one found), or null when "
        "it was not aligned.",
    )


class HealthResponse(BaseModel):
    status: Literal["alive"] = "alive"


class ReadyResponse(BaseModel):
    status: Literal["ready"] = "ready"
    model: str
    version: int


class LoadedModel(BaseModel):
    state: Literal["loading", "warming_up", "ready", "failed"]
    reason: str = Field(..., description="Why the model is (not) ready, e.g. a checksum mismatch.")
    name: str | None = None
    version: int | None = None
    path: str | None = None
    device: str | None = None
    precision: str
    latent_dim: int | None = None
    image_size: int | None = None
    channels: int | None = None
    input_crop: str | None = Field(
        default=None,
        description="How uploads are cropped by default: 'align' (aligned by their face; the "
        "request option align=false skips it), 'celeba', 'center' or 'none'.",
    )
    cuda_graphs: bool | None = Field(
        default=None,
        description="Whether decode and encode replay CUDA graphs captured at warm-up "
        "(FACEGEN_CUDA_GRAPHS; always false on CPU). Null while loading.",
    )
    decoder_memory_format: str | None = Field(
        default=None,
        description="The decoder's memory layout, 'contiguous' (NCHW) or 'channels_last' (NHWC) "
        "(FACEGEN_DECODER_MEMORY_FORMAT). A face's pixels are reproducible within one layout. Null "
        "while loading.",
    )
    manifest: dict[str, Any] | None = Field(default=None, description="The artifact's manifest.json.")
    attributes: list[str] = Field(
        default_factory=list,
        description="Attribute names /edit and /generate accept (empty: the model has no directions).",
    )
    max_refine_steps: int = Field(
        default=0,
        description="Most `refine` steps a request may ask for (FACEGEN_MAX_REFINE_STEPS; 0: off).",
    )


class ModelsResponse(BaseModel):
    loaded: LoadedModel
    store: str = Field(..., description="The model store directory.")
    default: str | None = Field(default=None, description="The store's default model name.")
    models: dict[str, list[int]] = Field(..., description="Every model in the store and its versions.")
    attributes: dict[str, list[str]] = Field(
        default_factory=dict,
        description="Per model in the store, the attribute names of its newest version (empty: none).",
    )


class Problem(BaseModel):
    """RFC 9457 problem details (application/problem+json)."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "type": "/problems/invalid-field",
                    "title": "Invalid request field",
                    "status": 422,
                    "detail": "Field 'n' is invalid: Input should be less than or equal to 64. "
                    "See /docs for the request schema.",
                    "field": "n",
                }
            ]
        }
    )

    type: str
    title: str
    status: int
    detail: str
    field: str | None = None
