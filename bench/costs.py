"""``python -m bench.costs``: CPU milliseconds of each piece of a request, measured alone.

The load test says how fast the service is; this says where its CPU goes, in CPU time
(``time.process_time``), which a busy shared machine inflates far less than wall time or a
sampling profiler (which counts threads waiting for a core as busy). Per piece:
the decoder and encoder per row at several batch sizes, latent sampling, PNG at several
zlib levels, the n=16 JSON body (base64 + json), the APNG of 16 frames, and an upload's
decode + crop + resize. The HTTP stack's share is what is left of the server's CPU per
request (``srv ms/req`` in ``python -m bench``) after these.
"""

from __future__ import annotations

import argparse
import base64
import functools
import io
import json
import time
from collections.abc import Callable
from pathlib import Path

import torch
from PIL import Image

from bench.model import RANDOM_CONFIGS, choose_model
from bench.workloads import upload_image
from facegen_core.artifact import load_artifact
from facegen_core.latent import noise_for_seeds
from facegen_core.preprocess import model_to_uint8, to_model_array


def cpu_ms(fn: Callable[[], object], min_s: float = 0.5, min_reps: int = 3) -> float:
    """Mean CPU ms per call of ``fn`` over at least ``min_s`` CPU seconds, after one warm-up call."""
    fn()
    reps, begin = 0, time.process_time()
    while reps < min_reps or time.process_time() - begin < min_s:
        fn()
        reps += 1
    return (time.process_time() - begin) / reps * 1e3


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.costs", description=__doc__)
    p.add_argument("--model-store", type=Path, default=Path("model_store"), help="as python -m bench")
    p.add_argument("--random-model", choices=sorted(RANDOM_CONFIGS), default=None, help="as python -m bench")
    p.add_argument(
        "--torch-threads",
        type=int,
        default=1,
        help="torch threads (default 1: CPU time per row, free of thread-sync spin)",
    )
    p.add_argument("--min-s", type=float, default=0.5, help="CPU seconds per measurement")
    args = p.parse_args(argv)
    torch.set_num_threads(args.torch_threads)
    from service.imaging import encode_apng, encode_grid, encode_png, png_text

    model = choose_model(args.model_store, None, None, args.random_model)
    try:
        art = load_artifact(model.path)
        cfg, dec, enc = art.config, art.decoder, art.encoder
        rows: list[tuple[str, float, str]] = []
        with torch.inference_mode():
            for b in (1, 8, 64):
                z = torch.randn(b, cfg.latent_dim)
                ms = cpu_ms(functools.partial(lambda t: model_to_uint8(dec(t)), z), args.min_s)
                rows.append((f"decoder forward + uint8, batch {b}", ms / b, "per row"))
            z64 = torch.randn(64, cfg.latent_dim)
            ms = cpu_ms(lambda: [model_to_uint8(dec(c.contiguous())) for c in z64.split(8)], args.min_s)
            rows.append(("decoder, batch 64 in passes of 8 (service chunk_rows)", ms / 64, "per row"))
            for b in (1, 8):
                x = torch.rand(b, cfg.channels, cfg.image_size, cfg.image_size) * 2 - 1
                ms = cpu_ms(functools.partial(enc, x), args.min_s)
                rows.append((f"encoder forward, batch {b}", ms / b, "per row"))
            faces = model_to_uint8(dec(torch.randn(16, cfg.latent_dim))).permute(0, 2, 3, 1).numpy()
        rows.append(
            (
                "noise_for_seeds (own generator per seed)",
                cpu_ms(lambda: noise_for_seeds(0, 16, cfg.latent_dim), args.min_s) / 16,
                "per row",
            )
        )
        text = png_text(model.name, model.version, 0, temperature="1")
        for level in (0, 1, 6, 9):
            size = len(encode_png(faces[0], text, level))
            ms = (
                cpu_ms(
                    functools.partial(lambda lv: [encode_png(f, text, lv) for f in faces], level), args.min_s
                )
                / 16
            )
            rows.append((f"encode_png level {level} ({size} bytes)", ms, "per image"))
        rows.append(
            (
                "encode_png level 1 without text chunks",
                cpu_ms(lambda: [encode_png(f, {}, 1) for f in faces], args.min_s) / 16,
                "per image",
            )
        )
        pngs = [encode_png(f, text, 1) for f in faces]
        latents = noise_for_seeds(0, 16, cfg.latent_dim).tolist()

        def json_body() -> bytes:
            images = [base64.b64encode(b).decode("ascii") for b in pngs]
            return json.dumps(
                {"model": "m", "version": 1, "seed": 0, "images": images, "latents": latents}
            ).encode()

        rows.append(
            (
                f"n=16 JSON body: base64 + json.dumps ({len(json_body())} bytes)",
                cpu_ms(json_body, args.min_s),
                "per request",
            )
        )
        rows.append(
            (
                "encode_grid n=16 level 1",
                cpu_ms(lambda: encode_grid(faces, text, 1), args.min_s),
                "per request",
            )
        )
        rows.append(
            (
                "encode_apng 16 frames level 1",
                cpu_ms(lambda: encode_apng(faces, text, 100, 1), args.min_s),
                "per request",
            )
        )
        blob = upload_image(faces[0])
        rows.append(
            (
                f"upload decode + crop + resize ({len(blob)}-byte 178x218 JPEG)",
                cpu_ms(
                    lambda: to_model_array(
                        Image.open(io.BytesIO(blob)), cfg.image_size, cfg.channels, cfg.input_crop
                    ),
                    args.min_s,
                ),
                "per image",
            )
        )
    finally:
        model.cleanup()
    print(f"CPU ms per piece — model {model.describe()}, torch threads {args.torch_threads}")
    width = max(len(r[0]) for r in rows)
    for name, ms, unit in rows:
        print(f"  {name:<{width}}  {ms:8.3f} ms  {unit}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
