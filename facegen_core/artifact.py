"""The model-store artifact: the only contract between training and serving.

Layout of a store::

    STORE/store.json                      {"default": NAME}   (optional)
    STORE/NAME/VERSION/model.safetensors  encoder.* and decoder.* (EMA) tensors, and
                                          optionally latent_prior.{mean,scale_tril}
    STORE/NAME/VERSION/config.json        ModelConfig
    STORE/NAME/VERSION/manifest.json      name, version, sha256 of every other file, metrics...
    STORE/NAME/VERSION/*.png              samples, interpolation, loss curves
    STORE/NAME/VERSION/attributes.safetensors  optional attribute directions
                                          (facegen_core.attributes; added by training.attributes)

VERSION is an increasing integer. A version directory is written under a temporary name
and renamed into place, so a reader never sees a half-written artifact. Weights are
safetensors only: loading never runs code from the file.

Weights dtype. Networks always run from fp32 weights, but the parameters may be *stored* as
fp16 or bf16 (``write_artifact(weights_dtype=...)``, recorded as the manifest's
``weights_dtype``) to halve the file; the loader casts every floating tensor to fp32. Buffers
(BatchNorm running statistics) and the latent prior are always stored in fp32: they are small,
and a running variance or a Cholesky factor loses more from rounding than a conv weight does.
An artifact without ``weights_dtype`` is fp32 (as every artifact before it was).
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import os
import re
import shutil
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from facegen_core.attributes import ATTRIBUTES_FILE, AttributeDirections, AttributeFileError, read_attributes
from facegen_core.config import ModelConfig
from facegen_core.latent import LatentPrior
from facegen_core.networks import Decoder, Encoder, build_autoencoder, count_parameters

FORMAT = "facegen-vaegan"
# 2: model.safetensors may hold a fitted latent prior (PRIOR_PREFIX tensors). A version-1
# reader would ignore those tensors and sample N(0, I) from a model not made for it, so such
# artifacts are written as version 2, which version-1 readers refuse.
FORMAT_VERSION = 2
PRIOR_PREFIX = "latent_prior."
WEIGHTS_FILE = "model.safetensors"
CONFIG_FILE = "config.json"
MANIFEST_FILE = "manifest.json"
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
# How write_artifact may store the networks' parameters (see the module docstring).
WEIGHTS_DTYPES: dict[str, torch.dtype] = {
    "fp32": torch.float32,
    "fp16": torch.float16,
    "bf16": torch.bfloat16,
}


class ArtifactError(Exception):
    """Base class: an artifact could not be found, read or trusted."""


class ArtifactNotFoundError(ArtifactError):
    """The store, model name or version does not exist."""


class ArtifactFormatError(ArtifactError):
    """A file is missing, unparsable, or does not match the expected format."""


class ChecksumMismatchError(ArtifactError):
    """A file's sha256 differs from the one its manifest records."""

    def __init__(self, path: Path, expected: str, actual: str) -> None:
        self.path, self.expected, self.actual = path, expected, actual
        super().__init__(
            f"Checksum mismatch for {path}: the manifest expects sha256 {expected} but the file "
            f"has sha256 {actual}. The file is corrupt or was changed after export; re-export "
            f"or re-download the artifact."
        )


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def validate_name(name: str) -> str:
    if not _NAME_RE.match(name):
        raise ValueError(
            f"Model name {name!r} is not valid: use 1-64 letters, digits, '.', '_' or '-', "
            f"starting with a letter or digit."
        )
    return name


class ModelStore:
    """A directory of versioned artifacts."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)

    def models(self) -> list[str]:
        if not self.root.is_dir():
            return []
        return sorted(p.name for p in self.root.iterdir() if p.is_dir() and self.versions(p.name))

    def versions(self, name: str) -> list[int]:
        d = self.root / name
        if not d.is_dir():
            return []
        return sorted(int(p.name) for p in d.iterdir() if p.is_dir() and p.name.isdigit())

    def default_name(self) -> str:
        """store.json's ``default``, else the only model in the store."""
        meta = self.root / "store.json"
        if meta.is_file():
            name = json.loads(meta.read_text()).get("default")
            if name:
                return str(name)
        models = self.models()
        if len(models) == 1:
            return models[0]
        if not models:
            raise ArtifactNotFoundError(f"The model store {self.root} holds no models.")
        raise ArtifactNotFoundError(
            f"The model store {self.root} holds several models {models} and no store.json "
            f"default; name one (FACEGEN_MODEL_NAME)."
        )

    def set_default(self, name: str) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        (self.root / "store.json").write_text(json.dumps({"default": name}, indent=2) + "\n")

    def resolve(self, name: str | None = None, version: int | None = None) -> Path:
        name = name or self.default_name()
        versions = self.versions(name)
        if not versions:
            raise ArtifactNotFoundError(f"No model named {name!r} in the store {self.root}.")
        v = versions[-1] if version is None else int(version)
        if v not in versions:
            raise ArtifactNotFoundError(
                f"Model {name!r} has no version {v} in {self.root}; it has {versions}."
            )
        return self.root / name / str(v)


def _json_default(o: Any) -> Any:
    if isinstance(o, Path):
        return str(o)
    if isinstance(o, tuple):
        return list(o)
    raise TypeError(f"Not JSON serialisable: {type(o).__name__}")


def write_artifact(
    store: str | Path,
    name: str,
    config: ModelConfig,
    encoder: Encoder,
    decoder: Decoder,
    manifest: Mapping[str, Any] | None = None,
    files: Mapping[str, bytes] | None = None,
    prior: LatentPrior | None = None,
    weights_dtype: str = "fp32",
) -> Path:
    """Export encoder + decoder into STORE/NAME/<next version>/ and return that path.

    ``manifest`` holds the caller's fields (dataset, training, metrics...); this function
    adds name, version, created, format, weights_dtype, parameter counts and the sha256 of
    every file. ``files`` are extra files (the pictures) written beside the weights; ``prior``
    is the latent distribution samples come from (None: N(0, I)), saved with the weights.
    ``weights_dtype`` ("fp32", "fp16" or "bf16") is how the networks' parameters are stored;
    buffers and the prior stay fp32. A parameter outside the dtype's finite range is refused.
    """
    validate_name(name)
    if weights_dtype not in WEIGHTS_DTYPES:
        raise ValueError(
            f"weights_dtype {weights_dtype!r} is not supported; use one of {sorted(WEIGHTS_DTYPES)}."
        )
    store_dtype = WEIGHTS_DTYPES[weights_dtype]
    st = ModelStore(store)
    model_dir = st.root / name
    model_dir.mkdir(parents=True, exist_ok=True)
    tensors = {f"encoder.{k}": v for k, v in encoder.state_dict().items()}
    tensors |= {f"decoder.{k}": v for k, v in decoder.state_dict().items()}
    parameters = {f"encoder.{k}" for k, _ in encoder.named_parameters()}
    parameters |= {f"decoder.{k}" for k, _ in decoder.named_parameters()}
    if prior is not None and prior.mean is not None and prior.scale_tril is not None:
        if prior.mean.shape[0] != config.latent_dim:
            raise ValueError(
                f"The latent prior is {prior.mean.shape[0]}-d; "
                f"the config's latent_dim is {config.latent_dim}."
            )
        tensors |= {f"{PRIOR_PREFIX}mean": prior.mean, f"{PRIOR_PREFIX}scale_tril": prior.scale_tril}
    tensors = {
        k: v.detach().to("cpu", torch.float32 if v.is_floating_point() else v.dtype).contiguous()
        for k, v in tensors.items()
    }
    if store_dtype != torch.float32:
        for k in sorted(parameters):
            stored = tensors[k].to(store_dtype)
            if not torch.isfinite(stored).all() and torch.isfinite(tensors[k]).all():
                raise ValueError(
                    f"Parameter {k} has values (max |w| = {tensors[k].abs().max().item():.4g}) "
                    f"outside the finite range of {weights_dtype}; export it with weights_dtype='fp32'."
                )
            tensors[k] = stored
    tmp = Path(tempfile.mkdtemp(prefix=".incoming-", dir=model_dir))
    try:
        save_file(
            tensors,
            str(tmp / WEIGHTS_FILE),
            metadata={"format": FORMAT, "format_version": str(FORMAT_VERSION)},
        )
        config.save(tmp / CONFIG_FILE)
        for fname, data in (files or {}).items():
            if "/" in fname or fname in (WEIGHTS_FILE, CONFIG_FILE, MANIFEST_FILE):
                raise ValueError(f"Extra artifact file name {fname!r} is not allowed.")
            (tmp / fname).write_bytes(data)
        _chmod_for_readers(tmp)
        while True:
            version = (st.versions(name) or [0])[-1] + 1
            body: dict[str, Any] = {
                "format": FORMAT,
                "format_version": FORMAT_VERSION,
                "name": name,
                "version": version,
                "created": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
                "parameters": {"encoder": count_parameters(encoder), "decoder": count_parameters(decoder)},
                **dict(manifest or {}),
                "weights_dtype": weights_dtype,  # after the caller's fields: it describes the file
                "files": {
                    p.name: {"sha256": sha256_file(p), "bytes": p.stat().st_size}
                    for p in sorted(tmp.iterdir())
                },
            }
            (tmp / MANIFEST_FILE).write_text(json.dumps(body, indent=2, default=_json_default) + "\n")
            try:
                os.rename(tmp, model_dir / str(version))  # atomic; fails if another writer won
                return model_dir / str(version)
            except OSError:
                if not (model_dir / str(version)).exists():
                    raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def _chmod_for_readers(folder: Path) -> None:
    """mkdtemp makes the folder 0700 and safetensors writes 0600; an artifact is published for
    other users (the service's container runs as a non-root user), so give it the modes the
    umask allows, as ``mkdir``/``open`` would have."""
    umask = os.umask(0)
    os.umask(umask)
    folder.chmod(0o777 & ~umask)
    for p in folder.iterdir():
        p.chmod(0o666 & ~umask)


@dataclass
class Artifact:
    path: Path
    config: ModelConfig
    manifest: dict[str, Any]
    encoder: Encoder
    decoder: Decoder
    prior: LatentPrior = field(default_factory=LatentPrior)  # N(0, I) unless fitted at export
    attributes: AttributeDirections | None = None  # None: the artifact has no attributes file

    @property
    def name(self) -> str:
        return str(self.manifest["name"])

    @property
    def version(self) -> int:
        return int(self.manifest["version"])

    @property
    def weights_sha256(self) -> str:
        return str(self.manifest["files"][WEIGHTS_FILE]["sha256"])


def read_manifest(path: str | Path) -> dict[str, Any]:
    p = Path(path) / MANIFEST_FILE
    if not p.is_file():
        raise ArtifactFormatError(f"{p} is missing: {path} is not a facegen artifact.")
    try:
        manifest = json.loads(p.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ArtifactFormatError(f"{p} is not valid JSON ({e}).") from e
    if manifest.get("format") != FORMAT or not isinstance(manifest.get("files"), dict):
        raise ArtifactFormatError(f"{p} is not a {FORMAT} manifest (format={manifest.get('format')!r}).")
    if int(manifest.get("format_version", 0)) > FORMAT_VERSION:
        raise ArtifactFormatError(
            f"{p} has format_version {manifest['format_version']}; this facegen reads up to "
            f"{FORMAT_VERSION}. Upgrade facegen."
        )
    return dict(manifest)


def verify_artifact(path: str | Path) -> dict[str, Any]:
    """Check every file the manifest lists against its sha256; return the manifest."""
    path = Path(path)
    manifest = read_manifest(path)
    for required in (WEIGHTS_FILE, CONFIG_FILE):
        if required not in manifest["files"]:
            raise ArtifactFormatError(f"{path / MANIFEST_FILE} lists no {required}.")
    for fname, meta in manifest["files"].items():
        if "/" in fname or fname.startswith(".."):
            raise ArtifactFormatError(f"{path / MANIFEST_FILE} names an unsafe file {fname!r}.")
        fp = path / fname
        if not fp.is_file():
            raise ArtifactFormatError(f"{fp} is listed in the manifest but missing.")
        actual = sha256_file(fp)
        if actual != meta["sha256"]:
            raise ChecksumMismatchError(fp, meta["sha256"], actual)
    return manifest


def load_artifact(path: str | Path, device: torch.device | str = "cpu") -> Artifact:
    """Verify, then rebuild encoder and decoder from config.json and load the weights.

    Returns both networks in eval mode on ``device``. Raises an ArtifactError subclass
    (never a bare KeyError or pickle error) for anything wrong with the files.
    """
    path = Path(path)
    manifest = verify_artifact(path)
    try:
        config = ModelConfig.load(path / CONFIG_FILE)
    except (ValueError, TypeError, json.JSONDecodeError) as e:
        raise ArtifactFormatError(f"{path / CONFIG_FILE} is not a valid model config: {e}") from e
    try:
        tensors = load_file(str(path / WEIGHTS_FILE))
    except Exception as e:  # safetensors raises its own error types
        raise ArtifactFormatError(f"{path / WEIGHTS_FILE} is not a readable safetensors file: {e}") from e
    weights_dtype = manifest.get("weights_dtype", "fp32")
    if weights_dtype not in WEIGHTS_DTYPES:
        raise ArtifactFormatError(
            f"{path / MANIFEST_FILE} has weights_dtype {weights_dtype!r}; this facegen reads "
            f"{sorted(WEIGHTS_DTYPES)}. Upgrade facegen."
        )
    encoder, decoder = build_autoencoder(config)
    for prefix, net in (("encoder.", encoder), ("decoder.", decoder)):
        # fp16/bf16-stored weights become fp32 here; fp32 ones are returned as they are
        # (``.float()`` is the identity on them), so they load bit for bit.
        sd = {
            k[len(prefix) :]: v.float() if v.is_floating_point() else v
            for k, v in tensors.items()
            if k.startswith(prefix)
        }
        try:
            net.load_state_dict(sd, strict=True)
        except RuntimeError as e:
            raise ArtifactFormatError(
                f"{path / WEIGHTS_FILE} does not match {path / CONFIG_FILE} for the {prefix[:-1]}: {e}"
            ) from e
        net.to(device).eval().requires_grad_(False)
    prior = _load_prior(path, tensors, config)
    attributes = None
    if ATTRIBUTES_FILE in manifest["files"]:  # verified above like every listed file
        try:
            attributes = read_attributes(path / ATTRIBUTES_FILE, config.latent_dim)
        except AttributeFileError as e:
            raise ArtifactFormatError(str(e)) from e
    return Artifact(
        path=path,
        config=config,
        manifest=manifest,
        encoder=encoder,
        decoder=decoder,
        prior=prior,
        attributes=attributes,
    )


def add_file(path: str | Path, fname: str, data: bytes, manifest_fields: Mapping[str, Any]) -> dict[str, Any]:
    """Add (or replace) the extra file ``fname`` in the existing artifact ``path`` and list it,
    with its sha256, in the manifest, merging ``manifest_fields`` into the manifest's top level.

    The artifact is verified first, so a corrupt one is not re-signed. The file is written
    beside its final name and renamed, then the manifest likewise: a reader sees the old
    manifest or the new one, and a file it lists is always complete. The weights and config
    cannot be replaced this way (a new version is exported for those). Returns the new manifest.
    """
    path = Path(path)
    if "/" in fname or fname.startswith(".") or fname in (WEIGHTS_FILE, CONFIG_FILE, MANIFEST_FILE):
        raise ValueError(f"Extra artifact file name {fname!r} is not allowed.")
    manifest = verify_artifact(path)
    tmp = path / f".{fname}.tmp"
    tmp.write_bytes(data)
    os.replace(tmp, path / fname)
    manifest.update(manifest_fields)
    files = dict(manifest["files"])
    files[fname] = {"sha256": sha256_file(path / fname), "bytes": (path / fname).stat().st_size}
    manifest["files"] = dict(sorted(files.items()))
    tmp = path / f".{MANIFEST_FILE}.tmp"
    tmp.write_text(json.dumps(manifest, indent=2, default=_json_default) + "\n")
    os.replace(tmp, path / MANIFEST_FILE)
    return manifest


def _load_prior(path: Path, tensors: Mapping[str, torch.Tensor], config: ModelConfig) -> LatentPrior:
    """The artifact's fitted latent prior (CPU tensors), or N(0, I) when it has none."""
    found = {k[len(PRIOR_PREFIX) :]: v for k, v in tensors.items() if k.startswith(PRIOR_PREFIX)}
    if not found:
        return LatentPrior()
    try:
        prior = LatentPrior(mean=found["mean"].float(), scale_tril=found["scale_tril"].float())
    except (KeyError, ValueError) as e:
        raise ArtifactFormatError(f"{path / WEIGHTS_FILE} holds an invalid latent prior: {e}") from e
    if prior.mean is not None and prior.mean.shape[0] != config.latent_dim:
        raise ArtifactFormatError(
            f"{path / WEIGHTS_FILE} holds a {prior.mean.shape[0]}-d latent prior for a "
            f"{config.latent_dim}-d latent space."
        )
    return prior
