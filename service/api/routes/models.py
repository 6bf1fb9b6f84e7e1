"""GET /models: the loaded model (or why it is not loaded) and what the store holds."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Query, Response

from facegen_core.artifact import ArtifactError, ModelStore, read_manifest, sha256_file, validate_name
from service.api.responses import ERROR_RESPONSES
from service.deps import ServicesDep
from service.errors import PROBLEM_CONTENT_TYPE, NotFoundError
from service.schemas import LoadedModel, ModelsResponse, Problem

router = APIRouter(tags=["operations"])
# Written at export by training/model_card.py (the service never imports training: the file and
# its manifest entry are the contract).
CARD_FILE = "MODEL_CARD.md"
MARKDOWN = "text/markdown; charset=utf-8"


@router.get("/models", summary="Loaded model and store contents")
async def models(services: ServicesDep) -> ModelsResponse:
    """The loaded model's manifest (name, version, sha256 of every file, training metrics),
    its state (`ready`, or `failed` with the reason, e.g. a checksum mismatch), and every model
    and version in the store.
    """
    s, runner = services.settings, services.runner
    info = runner.info
    manifest: dict[str, Any] | None = info.manifest if info else None
    if manifest is None and runner.path:
        try:  # a failed load still shows what it tried to load
            manifest = read_manifest(runner.path)
        except ArtifactError:
            manifest = None
    loaded = LoadedModel(
        state=runner.state,  # type: ignore[arg-type]
        reason=runner.reason,
        name=info.name if info else (manifest or {}).get("name", s.model_name),
        version=info.version if info else (manifest or {}).get("version", s.model_version),
        path=runner.path,
        device=str(runner.device) if runner.state != "loading" else None,
        precision=s.precision,
        latent_dim=info.latent_dim if info else None,
        image_size=info.image_size if info else None,
        channels=info.channels if info else None,
        input_crop=info.input_crop if info else None,
        cuda_graphs=runner.cuda_graphs if runner.state != "loading" else None,
        decoder_memory_format=runner.decoder_memory_format if runner.state != "loading" else None,
        manifest=manifest,
        attributes=list(info.attributes.names) if info and info.attributes else [],
        max_refine_steps=s.max_refine_steps,
    )
    store = ModelStore(s.model_store)
    try:
        default: str | None = store.default_name()
    except ArtifactError:
        default = None
    names = store.models()
    return ModelsResponse(
        loaded=loaded,
        store=str(store.root),
        default=default,
        models={m: store.versions(m) for m in names},
        attributes={m: _attribute_names(store, m) for m in names},
    )


def _attribute_names(store: ModelStore, name: str) -> list[str]:
    """The attribute names of a stored model's newest version, from its manifest's summary
    (``training.attributes`` writes it); [] when it has none or cannot be read."""
    try:
        summary = read_manifest(store.resolve(name)).get("attributes") or {}
    except (ArtifactError, OSError):
        return []
    found = summary.get("names") if isinstance(summary, dict) else None
    return [str(n) for n in found] if isinstance(found, list) else []


def _card_path(store: ModelStore, name: str, version: int | None) -> Path:
    """The verified card file of NAME (VERSION, or the newest); NotFoundError saying why not."""
    try:
        validate_name(name)
        path = store.resolve(name, version)
        manifest = read_manifest(path)
    except (ValueError, ArtifactError) as e:
        raise NotFoundError(f"No model card: {e} GET /models lists the models and versions.") from None
    card, entry = path / CARD_FILE, (manifest.get("files") or {}).get(CARD_FILE)
    if entry is None or not card.is_file():
        raise NotFoundError(
            f"Model {name!r} version {path.name} has no model card (exported before cards existed); "
            f"`python -m training.model_card {path}` writes one."
        )
    if sha256_file(card) != entry.get("sha256"):
        raise NotFoundError(
            f"The model card of {name!r} version {path.name} does not match the sha256 its manifest "
            f"records (changed after export); `python -m training.model_card {path}` rewrites it."
        )
    return card


@router.get(
    "/models/{name}/card",
    summary="A model's card (Markdown)",
    response_class=Response,
    responses={
        200: {"content": {MARKDOWN: {}}, "description": "The model card, Markdown."},
        404: {
            "model": Problem,
            "content": {PROBLEM_CONTENT_TYPE: {}},
            "description": "No such model or version, or it has no card (detail says which).",
        },
        422: ERROR_RESPONSES[422],  # e.g. version=0
    },
)
async def card(
    name: str,
    services: ServicesDep,
    version: Annotated[int | None, Query(ge=1, description="A version other than the newest.")] = None,
) -> Response:
    """The model card written at export (MODEL_CARD.md beside the weights, checked against the
    manifest's sha256): data, licence, intended and out-of-scope uses, known failure modes,
    figures. Any model of the store, not only the loaded one; 404 when it has none.
    """
    path = _card_path(ModelStore(services.settings.model_store), name, version)
    return Response(path.read_bytes(), media_type=MARKDOWN)
