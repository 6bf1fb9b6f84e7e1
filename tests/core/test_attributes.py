"""Attribute directions: the file format, edits, and their place in a checksummed artifact."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from facegen_core.artifact import ArtifactFormatError, ChecksumMismatchError, add_file, load_artifact
from facegen_core.attributes import (
    ATTRIBUTES_FILE,
    AttributeDirections,
    AttributeFileError,
    UnknownAttributeError,
    read_attributes,
)
from facegen_core.config import ModelConfig
from tests.service.live import random_artifact

D = 8


def directions(names: tuple[str, ...] = ("Smiling", "Male", "Eyeglasses")) -> AttributeDirections:
    g = torch.Generator().manual_seed(1)
    return AttributeDirections(
        list(names),
        torch.randn(len(names), D, generator=g),
        torch.rand(len(names), generator=g) + 0.5,
        {"method": "test"},
    )


def test_the_file_round_trips(tmp_path: Path) -> None:
    a = directions()
    (tmp_path / ATTRIBUTES_FILE).write_bytes(a.to_bytes())
    b = read_attributes(tmp_path / ATTRIBUTES_FILE, D)
    assert b.names == a.names and b.info == {"method": "test"}
    assert torch.equal(b.directions, a.directions) and torch.equal(b.separation, a.separation)


def test_a_file_for_another_latent_size_or_not_safetensors_is_refused(tmp_path: Path) -> None:
    p = tmp_path / ATTRIBUTES_FILE
    p.write_bytes(directions().to_bytes())
    with pytest.raises(AttributeFileError, match="8-d directions for a 16-d"):
        read_attributes(p, 16)
    p.write_bytes(b"\x80\x04 not safetensors")
    with pytest.raises(AttributeFileError, match="not a valid attribute file"):
        read_attributes(p, D)


def test_an_edit_adds_each_strength_times_its_direction() -> None:
    a = directions()
    z = torch.randn(3, D)
    got = a.apply(z, {"Smiling": 2.0, "Eyeglasses": -0.5})
    want = z + 2.0 * a.directions[0] + -0.5 * a.directions[2]
    torch.testing.assert_close(got, want)
    assert torch.equal(a.apply(z, {}), z)


def test_a_sweep_runs_from_start_to_stop_along_one_direction() -> None:
    a = directions()
    z = torch.randn(D)
    rows = a.sweep(z, "Male", -3.0, 3.0, 7)
    assert rows.shape == (7, D)
    torch.testing.assert_close(rows[3], z)  # strength 0 in the middle
    torch.testing.assert_close(rows[-1] - rows[0], 6.0 * a.directions[1])


def test_unknown_names_are_refused_naming_the_valid_ones() -> None:
    with pytest.raises(UnknownAttributeError) as e:
        directions().apply(torch.zeros(D), {"Smiling": 1.0, "Smilling": 1.0})
    assert e.value.unknown == ["Smilling"]
    assert "Smiling, Male, Eyeglasses" in str(e.value)


def test_duplicate_names_or_mismatched_shapes_are_refused() -> None:
    with pytest.raises(ValueError, match="unique"):
        AttributeDirections(["a", "a"], torch.zeros(2, D), torch.zeros(2))
    with pytest.raises(ValueError, match="separation"):
        AttributeDirections(["a", "b"], torch.zeros(2, D), torch.zeros(3))


def test_an_artifact_gains_attributes_as_a_checksummed_file(tmp_path: Path) -> None:
    path = random_artifact(tmp_path, "tiny", ModelConfig.tiny())
    assert load_artifact(path).attributes is None  # older artifacts simply have none
    weights = (path / "model.safetensors").read_bytes()
    manifest = add_file(path, ATTRIBUTES_FILE, directions().to_bytes(), {"attributes": {"names": ["x"]}})
    assert manifest["files"][ATTRIBUTES_FILE]["bytes"] == (path / ATTRIBUTES_FILE).stat().st_size
    assert json.loads((path / "manifest.json").read_text())["attributes"] == {"names": ["x"]}
    assert (path / "model.safetensors").read_bytes() == weights
    art = load_artifact(path)
    assert art.attributes is not None and art.attributes.names == ["Smiling", "Male", "Eyeglasses"]
    assert not list(path.glob(".*.tmp"))
    data = bytearray((path / ATTRIBUTES_FILE).read_bytes())
    data[-1] ^= 0x01
    (path / ATTRIBUTES_FILE).write_bytes(bytes(data))
    with pytest.raises(ChecksumMismatchError, match=ATTRIBUTES_FILE):
        load_artifact(path)


def test_attributes_of_the_wrong_size_make_the_artifact_unloadable(tmp_path: Path) -> None:
    path = random_artifact(tmp_path, "tiny", ModelConfig.tiny(latent_dim=16))
    add_file(path, ATTRIBUTES_FILE, directions().to_bytes(), {})
    with pytest.raises(ArtifactFormatError, match="8-d directions for a 16-d"):
        load_artifact(path)


@pytest.mark.parametrize("name", ["model.safetensors", "manifest.json", "../x", ".hidden"])
def test_add_file_will_not_replace_the_weights_or_escape_the_folder(tmp_path: Path, name: str) -> None:
    path = random_artifact(tmp_path, "tiny", ModelConfig.tiny())
    with pytest.raises(ValueError, match="not allowed"):
        add_file(path, name, b"x", {})
