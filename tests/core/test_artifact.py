"""The artifact is the contract between training and serving: round trip, versions, tampering."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest
import torch

from facegen_core import (
    ArtifactFormatError,
    ArtifactNotFoundError,
    ChecksumMismatchError,
    ModelConfig,
    ModelStore,
    build_autoencoder,
    load_artifact,
    write_artifact,
)


@pytest.fixture()
def tiny_artifact(tmp_path: Path) -> Path:
    torch.manual_seed(0)
    cfg = ModelConfig.tiny()
    enc, dec = build_autoencoder(cfg)
    return write_artifact(
        tmp_path, "tiny", cfg, enc, dec, {"dataset": {"name": "synthetic"}}, {"note.txt": b"hi"}
    )


def test_round_trip_reproduces_outputs(tiny_artifact: Path) -> None:
    torch.manual_seed(0)
    cfg = ModelConfig.tiny()
    enc, dec = build_autoencoder(cfg)
    enc.eval(), dec.eval()
    art = load_artifact(tiny_artifact)
    z = torch.randn(3, cfg.latent_dim)
    x = torch.rand(2, 3, 32, 32) * 2 - 1
    with torch.inference_mode():
        assert torch.equal(art.decoder(z), dec(z))
        assert torch.equal(art.encoder(x)[0], enc(x)[0])
    assert art.config == cfg
    assert art.name == "tiny" and art.version == 1
    assert art.manifest["dataset"] == {"name": "synthetic"}
    assert set(art.manifest["files"]) == {"model.safetensors", "config.json", "note.txt"}
    assert not art.decoder.training and not any(p.requires_grad for p in art.decoder.parameters())


def test_versions_increase_and_resolve(tiny_artifact: Path) -> None:
    store_root = tiny_artifact.parents[1]
    cfg = ModelConfig.tiny()
    second = write_artifact(store_root, "tiny", cfg, *build_autoencoder(cfg))
    store = ModelStore(store_root)
    assert second.name == "2"
    assert store.versions("tiny") == [1, 2]
    assert store.resolve() == second
    assert store.resolve("tiny", 1) == tiny_artifact
    with pytest.raises(ArtifactNotFoundError, match="no version 7"):
        store.resolve("tiny", 7)
    with pytest.raises(ArtifactNotFoundError, match="No model named 'nope'"):
        store.resolve("nope")


def test_default_model_needs_store_json_when_several(tmp_path: Path) -> None:
    cfg = ModelConfig.tiny()
    write_artifact(tmp_path, "a", cfg, *build_autoencoder(cfg))
    assert ModelStore(tmp_path).default_name() == "a"
    write_artifact(tmp_path, "b", cfg, *build_autoencoder(cfg))
    with pytest.raises(ArtifactNotFoundError, match="several models"):
        ModelStore(tmp_path).default_name()
    ModelStore(tmp_path).set_default("b")
    assert ModelStore(tmp_path).default_name() == "b"


def test_one_flipped_byte_fails_with_both_hashes(tiny_artifact: Path) -> None:
    weights = tiny_artifact / "model.safetensors"
    expected = json.loads((tiny_artifact / "manifest.json").read_text())["files"]["model.safetensors"][
        "sha256"
    ]
    data = bytearray(weights.read_bytes())
    data[len(data) // 2] ^= 0x01
    weights.write_bytes(bytes(data))
    with pytest.raises(ChecksumMismatchError) as info:
        load_artifact(tiny_artifact)
    msg = str(info.value)
    assert str(weights) in msg and expected in msg and info.value.actual in msg
    assert info.value.actual != expected


def test_missing_or_foreign_files_are_format_errors(tiny_artifact: Path, tmp_path: Path) -> None:
    (tiny_artifact / "note.txt").unlink()
    with pytest.raises(ArtifactFormatError, match="missing"):
        load_artifact(tiny_artifact)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ArtifactFormatError, match="not a facegen artifact"):
        load_artifact(empty)


def test_bad_names_are_refused(tmp_path: Path) -> None:
    cfg = ModelConfig.tiny()
    for bad in ("../x", "", "a/b", ".hidden"):
        with pytest.raises(ValueError, match="not valid"):
            write_artifact(tmp_path, bad, cfg, *build_autoencoder(cfg))


def test_an_exported_artifact_is_readable_by_other_users(tmp_path: Path) -> None:
    """The service's container runs as a non-root user: an artifact is not private to its writer."""
    old = os.umask(0o022)
    try:
        torch.manual_seed(0)
        cfg = ModelConfig.tiny()
        enc, dec = build_autoencoder(cfg)
        path = write_artifact(tmp_path, "m", cfg, enc, dec)
    finally:
        os.umask(old)
    assert stat.S_IMODE(path.stat().st_mode) == 0o755
    assert {stat.S_IMODE(p.stat().st_mode) for p in path.iterdir()} == {0o644}
