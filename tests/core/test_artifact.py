"""The artifact is the contract between training and serving: round trip, versions, tampering."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file

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
from facegen_core.latent import LatentPrior
from facegen_core.networks import Decoder, Encoder
from tests.nets import randomise_batchnorm

REPO = Path(__file__).resolve().parents[2]
SHIPPED = REPO / "model_store" / "celeba64" / "2"


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


def _seeded_nets(cfg: ModelConfig) -> tuple[Encoder, Decoder]:
    """Seeded random encoder/decoder in eval mode, BatchNorm statistics randomised (so they
    matter) and one running variance above fp16's largest finite value, 65504: buffers must
    stay fp32 however the parameters are stored."""
    torch.manual_seed(0)
    enc, dec = build_autoencoder(cfg)
    randomise_batchnorm(enc, dec)
    enc.eval()
    dec.eval()
    bn = next(m for m in dec.modules() if isinstance(m, torch.nn.BatchNorm2d))
    assert bn.running_var is not None
    bn.running_var[0] = 1e5
    return enc, dec


# Largest |output difference| of the tiny model with stored-then-fp32 weights vs its fp32
# weights, over decoder images in [-1, 1] and encoder means. Measured on this CPU: fp16
# 4e-5 / 5e-5, bf16 4e-4 / 3e-4 (half-precision rounding of every weight: 2^-11 and 2^-8
# relative); the bounds leave about 10x.
DTYPE_TOLERANCE = {"fp16": 1e-3, "bf16": 5e-3}


@pytest.mark.parametrize("weights_dtype", ["fp16", "bf16"])
def test_half_precision_weights_round_trip(tmp_path: Path, weights_dtype: str) -> None:
    cfg = ModelConfig.tiny()
    enc, dec = _seeded_nets(cfg)
    prior = LatentPrior(mean=torch.randn(cfg.latent_dim), scale_tril=torch.eye(cfg.latent_dim) * 0.7)
    fp32 = write_artifact(tmp_path, "full", cfg, enc, dec, prior=prior)
    half = write_artifact(tmp_path, "half", cfg, enc, dec, prior=prior, weights_dtype=weights_dtype)

    # The manifest says how the weights are stored; the sha256 still covers every file.
    manifest = json.loads((half / "manifest.json").read_text())
    assert manifest["weights_dtype"] == weights_dtype
    assert json.loads((fp32 / "manifest.json").read_text())["weights_dtype"] == "fp32"
    assert set(manifest["files"]) == {"model.safetensors", "config.json"}

    # In the file: parameters in the half dtype, buffers and the prior in fp32.
    stored_dtype = {"fp16": torch.float16, "bf16": torch.bfloat16}[weights_dtype]
    params = {f"encoder.{k}" for k, _ in enc.named_parameters()}
    params |= {f"decoder.{k}" for k, _ in dec.named_parameters()}
    with safe_open(str(half / "model.safetensors"), framework="pt") as f:
        for key in f.keys():  # noqa: SIM118 (safe_open is not a Mapping)
            t = f.get_tensor(key)
            if key in params:
                assert t.dtype == stored_dtype, key
            elif t.is_floating_point():
                assert t.dtype == torch.float32, key
    assert (half / "model.safetensors").stat().st_size < 0.7 * (fp32 / "model.safetensors").stat().st_size

    # Loaded: fp32 networks holding exactly the rounded weights, the fp32 prior unchanged.
    art = load_artifact(half)
    for net, ref in ((art.encoder, enc), (art.decoder, dec)):
        want, ref_params = ref.state_dict(), dict(ref.named_parameters())
        for k, v in net.state_dict().items():
            if v.is_floating_point():
                expected = want[k].to(stored_dtype).float() if k in ref_params else want[k]
                assert v.dtype == torch.float32 and torch.equal(v, expected), k
    assert art.prior.mean is not None and prior.mean is not None
    assert torch.equal(art.prior.mean, prior.mean)

    # And the outputs are close to the fp32 model's.
    z = torch.randn(16, cfg.latent_dim, generator=torch.Generator().manual_seed(1))
    x = torch.rand(4, 3, 32, 32, generator=torch.Generator().manual_seed(2)) * 2 - 1
    tol = DTYPE_TOLERANCE[weights_dtype]
    with torch.inference_mode():
        out, ref_out = art.decoder(z), dec(z)
        assert torch.isfinite(out).all()
        assert (out - ref_out).abs().max().item() < tol
        assert (art.encoder(x)[0] - enc(x)[0]).abs().max().item() < tol
        assert not torch.equal(out, ref_out)  # the weights really were rounded


def test_weights_dtype_is_checked(tmp_path: Path) -> None:
    cfg = ModelConfig.tiny()
    enc, dec = build_autoencoder(cfg)
    with pytest.raises(ValueError, match="weights_dtype 'int8' is not supported"):
        write_artifact(tmp_path, "m", cfg, enc, dec, weights_dtype="int8")
    with torch.no_grad():
        next(dec.parameters()).view(-1)[0] = 1e5  # beyond fp16's 65504
    with pytest.raises(ValueError, match="outside the finite range of fp16"):
        write_artifact(tmp_path, "m", cfg, enc, dec, weights_dtype="fp16")
    write_artifact(tmp_path, "m", cfg, enc, dec, weights_dtype="bf16")  # bf16 has fp32's range
    assert not list((tmp_path / "m").glob(".incoming-*"))


def test_an_unknown_weights_dtype_in_the_manifest_is_a_format_error(tiny_artifact: Path) -> None:
    manifest = json.loads((tiny_artifact / "manifest.json").read_text())
    manifest["weights_dtype"] = "fp8"
    (tiny_artifact / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ArtifactFormatError, match="weights_dtype 'fp8'"):
        load_artifact(tiny_artifact)


def test_the_shipped_fp32_artifact_loads_bit_for_bit() -> None:
    """An artifact written before weights_dtype existed is fp32 and loads unchanged."""
    manifest = json.loads((SHIPPED / "manifest.json").read_text())
    assert "weights_dtype" not in manifest
    raw = load_file(str(SHIPPED / "model.safetensors"))
    art = load_artifact(SHIPPED)
    for prefix, net in (("encoder.", art.encoder), ("decoder.", art.decoder)):
        for k, v in net.state_dict().items():
            assert v.dtype == raw[prefix + k].dtype and torch.equal(v, raw[prefix + k]), prefix + k
