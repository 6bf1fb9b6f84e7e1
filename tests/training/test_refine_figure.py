"""training.refine_figure: input, encoder reconstruction and refined reconstructions per row."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image

from facegen_core.artifact import load_artifact
from facegen_core.preprocess import model_to_uint8, uint8_to_model
from training import refine_figure


def test_the_figure_has_a_row_per_face_and_a_column_per_step_count(tiny_artifact, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    path, data = tiny_artifact
    art = load_artifact(path)
    art.encoder.eval()
    art.decoder.eval()
    faces = torch.from_numpy(np.load(data)["images"][:3]).permute(0, 3, 1, 2).contiguous()  # (3, C, H, W)
    rows = refine_figure.figure_rows(art, faces, [2, 5])
    assert rows.shape == (3, 4, 3, 32, 32) and rows.dtype == torch.uint8
    assert torch.equal(rows[:, 0], faces)
    with torch.no_grad():
        assert torch.equal(rows[:, 1], model_to_uint8(art.decoder(art.encoder(uint8_to_model(faces))[0])))
    assert not torch.equal(rows[:, 3], rows[:, 1])  # refinement moved the faces
    out = tmp_path / "refine.png"
    assert (
        refine_figure.main(
            [
                "--artifact",
                str(path),
                "--data",
                str(data),
                "--out",
                str(out),
                "--faces",
                "2",
                "--steps",
                "3",
                "--scale",
                "1",
                "--cache-dir",
                "",
            ]
        )
        == 0
    )
    # 2 faces × (input, μ, 3 steps): 2 rows, 3 columns of 32 px with 2 px padding.
    with Image.open(out) as img:
        assert img.size == (3 * 34 + 2, 2 * 34 + 2)
