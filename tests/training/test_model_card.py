"""training/model_card.py: the card says what the manifest records, is checked like every other
file of the artifact, and follows the figures when evaluate --write changes them."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from facegen_core.artifact import ChecksumMismatchError, read_manifest, verify_artifact
from tests.service.live import tiny_artifact
from training.evaluate import write_metrics
from training.model_card import CARD_FILE, main, render_card, write_card

ROOT = Path(__file__).resolve().parents[2]


def _artifact(tmp_path: Path) -> Path:
    path = tiny_artifact(tmp_path / "store", name="carded")
    manifest = read_manifest(path)
    manifest["dataset"] = {"name": "celeba-10k", "images": 10000, "licence": "research only (test)"}
    (path / "manifest.json").write_text(json.dumps(manifest, indent=2))
    return path


def test_card_states_data_licence_uses_and_figures(tmp_path: Path) -> None:
    path = _artifact(tmp_path)
    write_card(path)
    card = (path / CARD_FILE).read_text()
    assert card.startswith("# Model card: carded v1")
    for needle in (
        "celeba-10k",
        "research only (test)",
        "## Intended uses",
        "## Out-of-scope uses",
        "## Known failure modes",
        "32×32",
        "light-skinned",
        "Not evaluated yet",
    ):
        assert needle in card, needle
    assert "| FID (lower is better) | not measured |" in card


def test_card_is_in_the_manifest_and_verified(tmp_path: Path) -> None:
    path = _artifact(tmp_path)
    before = read_manifest(path)
    write_card(path)
    after = verify_artifact(path)
    assert CARD_FILE in after["files"]
    # Only the card's entry is added: the other files and their sha256s are unchanged.
    assert {k: v for k, v in after["files"].items() if k != CARD_FILE} == before["files"]
    (path / CARD_FILE).write_text("edited by hand")
    with pytest.raises(ChecksumMismatchError, match=CARD_FILE):
        verify_artifact(path)


def test_evaluate_write_renews_the_card(tmp_path: Path) -> None:
    path = _artifact(tmp_path)
    write_card(path)
    write_metrics(
        path,
        {
            "fid": {"value": 41.25, "samples": 100, "real": 100},
            "psnr_db": 19.5,
            "evaluated": {"date": "2026-11-30"},
        },
    )
    card = (path / CARD_FILE).read_text()
    assert (
        "| FID (lower is better) | 41.2 |" in card and "19.50 dB" in card and "Evaluated 2026-11-30" in card
    )
    verify_artifact(path)


def test_render_without_metrics_or_dataset() -> None:
    card = render_card({"name": "x", "version": 3}, {"image_size": 64, "latent_dim": 128})
    assert "# Model card: x v3" in card and "not recorded in the manifest" in card
    assert "light-skinned" not in card  # no CelebA claim about data it does not know


def test_bundled_faces64_card_matches_its_manifest() -> None:
    path = ROOT / "model_store" / "faces64" / "1"
    manifest = verify_artifact(path)
    config = json.loads((path / "config.json").read_text())
    assert (path / CARD_FILE).read_text() == render_card(manifest, config)


def test_command_writes_cards(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = _artifact(tmp_path)
    assert main([str(path)]) == 0 and str(path / CARD_FILE) in capsys.readouterr().out


def test_an_encoder_only_version_names_its_decoders_origin_and_each_source() -> None:
    manifest = {
        "name": "faces64",
        "version": 2,
        "dataset": {
            "name": "celeba-10k+fairface-40k-96",
            "images": 50000,
            "sources": [{"name": "celeba-10k"}, {"name": "fairface-40k-96"}],
        },
        "training": {
            "decoder": "the --init-from artifact's, frozen (--train-part encoder)",
            "init_from": {"name": "faces64", "version": 1, "weights_sha256": "ab" * 32},
        },
        "metrics": {
            "psnr_db": 20.1,
            "per_source": {
                "celeba-10k": {"psnr_db": 20.1},
                "fairface-40k-96": {"psnr_in_photo_db": 19.87, "faces": {"recon_found": 0.95}},
            },
            "evaluated": {"data": "fairface-40k-96", "date": "2026-12-01"},  # the last, one-source run
        },
    }
    card = render_card(manifest, {"image_size": 64})
    assert "Decoder and latent prior: faces64 v1's, unchanged" in card
    assert "ab" * 32 in card
    assert "| Reconstruction PSNR, fairface-40k-96, pixels from the photo | 19.87 dB |" in card
    assert "| Face found in reconstructions, fairface-40k-96 | 95.0% |" in card
    assert "celeba-10k, pixels" not in card  # the first source's figures are the top rows
    plain = render_card({"name": "x", "version": 1, "training": {"decoder": "EMA"}}, {})
    assert "Decoder and latent prior" not in plain


def test_a_decoder_only_version_names_its_encoders_origin_and_the_anchor() -> None:
    training = {
        "encoder": "the --init-from artifact's, frozen (--train-part decoder)",
        "decoder": "EMA of the weights (--ema-decay)",
        "init_from": {"name": "faces64", "version": 2, "weights_sha256": "cd" * 32},
        "args": {"sample_anchor_weight": 10.0},
    }
    card = render_card({"name": "faces64", "version": 3, "training": training}, {"image_size": 64})
    assert "Encoder and latent prior: faces64 v2's, unchanged" in card and "cd" * 32 in card
    assert "(weight 10.0)" in card and "Decoder and latent prior" not in card
