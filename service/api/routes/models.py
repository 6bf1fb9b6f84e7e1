"""GET /models: the loaded model (or why it is not loaded) and what the store holds."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from facegen_core.artifact import ArtifactError, ModelStore, read_manifest
from service.deps import ServicesDep
from service.schemas import LoadedModel, ModelsResponse

router = APIRouter(tags=["operations"])


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
        manifest=manifest,
        attributes=list(info.attributes.names) if info and info.attributes else [],
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
