"""The picture of per-face latent refinement (docs/refine.md): validation faces of each data
source, one per row: the input, the encoder's reconstruction Dec(μ(x)), then Dec(z*) after
each number of refinement steps (facegen_core.refine).

    python -m training.refine_figure --artifact model_store/faces64/3 \\
        --data ../shared/data/celeba-10k.zip ../shared/data/fairface-40k-96.zip \\
        --out docs/images/refine.png [--faces 4] [--steps 25 50 100] [--scale 2]
"""

from __future__ import annotations

import argparse
import sys

import numpy as np
import torch
from PIL import Image

from facegen_core.artifact import Artifact, ArtifactError, load_artifact
from facegen_core.images import make_grid
from facegen_core.preprocess import model_to_uint8, uint8_to_model
from facegen_core.refine import refine_latents
from training.data import DatasetError, load_faces
from training.evaluate import record_for, validation_images


def figure_rows(art: Artifact, faces_u8: torch.Tensor, steps: list[int]) -> torch.Tensor:
    """uint8 (N, 2 + len(steps), C, H, W): per face, input, Dec(μ), Dec(z*) per step count."""
    with torch.no_grad():
        mu, _ = art.encoder(uint8_to_model(faces_u8))  # (N, D)
        cols = [faces_u8, model_to_uint8(art.decoder(mu))]
    for k in steps:
        z = refine_latents(art.decoder, faces_u8, mu, k)
        with torch.no_grad():
            cols.append(model_to_uint8(art.decoder(z)))
    return torch.stack(cols, dim=1)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m training.refine_figure", description=__doc__.split("\n")[0])
    p.add_argument("--artifact", required=True, help="artifact directory STORE/NAME/VERSION")
    p.add_argument(
        "--data", nargs="+", required=True, help="data sets whose recorded validation faces to show"
    )
    p.add_argument("--out", required=True, help="PNG to write")
    p.add_argument("--faces", type=int, default=4, help="validation faces per data set (their first N)")
    p.add_argument(
        "--steps", type=int, nargs="+", default=[25, 50, 100], help="refinement steps, one column each"
    )
    p.add_argument("--scale", type=int, default=2, help="nearest-neighbour upscaling of the grid")
    p.add_argument("--cache-dir", default="data_cache", help="decoded data sets")
    args = p.parse_args(argv)
    try:
        art = load_artifact(args.artifact)
        art.encoder.eval()
        art.decoder.eval()
        cfg = art.config
        per_source = []
        for data in args.data:
            ds = load_faces(data, cfg.image_size, cfg.channels, cfg.input_crop, cache_dir=args.cache_dir)
            val, _ = validation_images(record_for(art.manifest, ds), ds)
            per_source.append(figure_rows(art, val[: args.faces], args.steps))
    except (ArtifactError, DatasetError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    rows = torch.stack(per_source, dim=1).flatten(0, 1)  # sources alternate: (N * S, cols, C, H, W)
    ncols = rows.shape[1]
    tiles = rows.flatten(0, 1).permute(0, 2, 3, 1).numpy()  # (N * S * cols, H, W, C)
    grid = make_grid(tiles, ncols=ncols)
    img = Image.fromarray(np.ascontiguousarray(grid))
    img = img.resize((img.width * args.scale, img.height * args.scale), Image.Resampling.NEAREST)
    img.save(args.out, optimize=True)
    cols = ["input", "encoder μ", *[f"{k} steps" for k in args.steps]]
    print(f"wrote {args.out}: {rows.shape[0]} faces × columns {', '.join(cols)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
