"""Face packs: a data set's preprocessed faces, compressed small enough to travel.

A GPU session gets a 64 MiB working tree (code, wheels and data together, see
scripts/gpu_run.sh), while the decoded 64×64 faces of celeba-10k and fairface-40k take
614 MB as uint8. A pack is a stored zip of one WebP per face, already cropped (or aligned)
and resized by ``facegen_core.preprocess`` exactly as the decode cache holds them, plus a
``facepack.json`` naming the source, the crop, the size and the quality. Measured on 300
FairFace faces at 64×64: WebP quality 80 is 0.83 KB a face at 35.6 dB PSNR against the
uint8 original (quality 90: 1.29 KB, 38.9 dB; JPEG 90: 2.0 KB, 37.8 dB); the bundled
model reconstructs at ~21 dB, so the codec's error is far below the model's.

Every face of the source is packed, in the cache's order, so the seeded per-source
validation split (``training.run_data.split_datasets``) is the same on both machines. With
``--max-mib`` a pack holds the longest *prefix* of the source that fits: a run on it is a run
with ``--limit N`` (its split is that of the first N faces, and ``training.evaluate`` cuts the
full data set to N before recomputing it), and ``facepack.json`` records N and the source's
full count.

    python -m training.facepack --data A.zip,B.zip --crop celeba --out .device_data [--max-mib 12]
"""

from __future__ import annotations

import argparse
import io
import json
import math
import os
import sys
import zipfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch
from PIL import Image

FORMAT = "facegen-facepack-1"
META = "facepack.json"


class FacePackError(ValueError):
    """A face pack is unreadable or was made for another crop or size."""


def is_facepack(path: Path) -> bool:
    if path.suffix.lower() != ".zip" or not path.is_file():
        return False
    try:
        with zipfile.ZipFile(path) as zf:
            return META in zf.namelist()
    except zipfile.BadZipFile:
        return False


def _webp(face_chw: np.ndarray, quality: int) -> bytes:
    buf = io.BytesIO()
    arr = face_chw.transpose(1, 2, 0)  # (C, H, W) -> (H, W, C)
    img = Image.fromarray(arr[:, :, 0] if arr.shape[2] == 1 else arr)
    img.save(buf, "WEBP", quality=quality, method=6)
    return buf.getvalue()


# A stored zip's bytes beyond the blobs: a local header and a central-directory entry per member
# (30 + 46 bytes and the name twice; "faces/000000.webp" is 17), and the end record.
ZIP_BYTES_PER_FACE = 30 + 46 + 2 * 17
ZIP_BYTES_FIXED = 22 + 2048  # the end record, and facepack.json with its two headers (bounded)


def write_facepack(
    images: torch.Tensor,
    source: str,
    crop: str,
    path: Path,
    quality: int = 80,
    workers: int = 0,
    max_bytes: int | None = None,
) -> int:
    """Write uint8 faces (N, C, H, W) to ``path``; returns its size in bytes. With
    ``max_bytes``, only the longest prefix of the faces whose pack fits in it."""
    if images.dtype != torch.uint8 or images.dim() != 4:
        raise FacePackError(
            f"A face pack holds uint8 (N, C, H, W) faces, got {images.dtype} {tuple(images.shape)}."
        )
    arr = images.numpy()
    total, c, h, _ = arr.shape
    room = math.inf if max_bytes is None else max_bytes - ZIP_BYTES_FIXED
    blobs: list[bytes] = []
    used = 0
    with ThreadPoolExecutor(workers or max(1, os.cpu_count() or 1)) as pool:
        # In chunks, so that a pack limited to a prefix does not encode the whole source.
        for start in range(0, total, 1024):
            for blob in pool.map(lambda i: _webp(arr[i], quality), range(start, min(total, start + 1024))):
                used += len(blob) + ZIP_BYTES_PER_FACE
                if used > room:
                    break
                blobs.append(blob)
            if used > room:
                break
    if total and not blobs:
        raise FacePackError(f"Not one face of {source} fits in {max_bytes} bytes.")
    n = len(blobs)
    meta = {"format": FORMAT, "source": source, "crop": crop, "image_size": h, "channels": c, "count": n}
    meta |= {"of": total, "quality": quality}
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    with zipfile.ZipFile(tmp, "w", zipfile.ZIP_STORED) as zf:
        zf.writestr(META, json.dumps(meta, indent=2) + "\n")
        for i, blob in enumerate(blobs):
            zf.writestr(f"faces/{i:06d}.webp", blob)
    os.replace(tmp, path)
    return path.stat().st_size


def read_facepack(path: Path, image_size: int, channels: int, crop: str) -> tuple[torch.Tensor, str]:
    """(uint8 faces (N, C, H, W), source name); refuses a pack made for another crop or size,
    whose faces would be framed differently from what the model config says uploads get."""
    with zipfile.ZipFile(path) as zf:
        meta = json.loads(zf.read(META))
        if meta.get("format") != FORMAT:
            raise FacePackError(f"{path} is not a {FORMAT} pack (format {meta.get('format')!r}).")
        want = {"image_size": image_size, "channels": channels, "crop": crop}
        got = {k: meta.get(k) for k in want}
        if got != want:
            raise FacePackError(
                f"{path} holds faces made with {got}, but this run's model takes {want}; pack the "
                f"data again with those settings (python -m training.facepack)."
            )
        count = int(meta["count"])
        blobs = [zf.read(f"faces/{i:06d}.webp") for i in range(count)]
    out = np.empty((count, channels, image_size, image_size), np.uint8)

    def decode(i: int) -> None:
        with Image.open(io.BytesIO(blobs[i])) as img:
            a = np.asarray(img.convert("RGB" if channels == 3 else "L"), dtype=np.uint8)
        out[i] = a.reshape(image_size, image_size, channels).transpose(2, 0, 1)

    # PIL releases the GIL while decoding: threads scale with the cores.
    with ThreadPoolExecutor(max(1, min(16, os.cpu_count() or 1))) as pool:
        list(pool.map(decode, range(count)))
    return torch.from_numpy(out), str(meta["source"])


def main(argv: list[str] | None = None) -> int:
    from facegen_core.config import CROP_MODES
    from training.data import load_faces

    p = argparse.ArgumentParser(prog="python -m training.facepack", description=__doc__.split("\n\n")[0])
    p.add_argument("--data", required=True, help="Comma-separated sources, as for python -m training.")
    p.add_argument("--out", default=".device_data", help="Folder the packs are written to.")
    p.add_argument(
        "--crop", choices=CROP_MODES, default="celeba", help="The crop the model will be trained with."
    )
    p.add_argument("--image-size", type=int, default=64, help="Face side in pixels.")
    p.add_argument("--quality", type=int, default=80, help="WebP quality (0-100).")
    p.add_argument("--cache-dir", default="data_cache", help="Decode cache ('' = off).")
    p.add_argument(
        "--max-mib",
        type=float,
        default=None,
        help="Each pack at most this size: the longest prefix of the source that fits (a --limit run).",
    )
    a = p.parse_args(argv)
    max_bytes = None if a.max_mib is None else int(a.max_mib * 2**20)
    for source in [s.strip() for s in a.data.split(",") if s.strip()]:
        ds = load_faces(source, a.image_size, 3, a.crop, cache_dir=a.cache_dir or None)
        out = Path(a.out) / f"{ds.source}.facepack.zip"
        try:
            size = write_facepack(ds.images, ds.source, a.crop, out, a.quality, max_bytes=max_bytes)
        except FacePackError as e:
            print(f"error: {e}", file=sys.stderr)
            return 1
        with zipfile.ZipFile(out) as zf:
            n = json.loads(zf.read(META))["count"]
        print(f"{out}: {n} of {len(ds)} faces, {size / 2**20:.1f} MiB ({size / max(1, n):.0f} B a face)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
