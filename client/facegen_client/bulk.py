"""Bulk generation: N seeded faces on disk with labels.csv and datasheet.md, resumable.

Layout of ``--out DIR``::

    DIR/00000000.png ...   one face per seed (file name: the seed, zero-padded to 8 digits)
    DIR/labels.csv         file, seed, temperature, attributes, model, version, model_sha256, sha256
    DIR/datasheet.md       what made the faces, from what data, under which licence, the figures

Same seeds, same files: face i is the service's face for seed i (deterministic per model
version), so a rerun with the same arguments skips every file labels.csv lists whose sha256
still matches and makes only the rest. A row is appended (and flushed) only after its file was
written and renamed into place, so a kill loses at most the requests in flight. Requests of
``batch`` seeds (JSON, one PNG per face) are kept ``concurrency`` deep so the service's batcher
always has work queued.
"""

from __future__ import annotations

import asyncio
import csv
import hashlib
import io
import json
import os
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from PIL import Image
from tqdm import tqdm

from facegen_client.aio import AsyncClient
from facegen_client.datasheet import datasheet
from facegen_client.errors import APIError, FacegenError

LABELS = "labels.csv"
COLUMNS = ["file", "seed", "temperature", "attributes", "model", "version", "model_sha256", "sha256"]
JPEG_QUALITY = 95


class OutputMismatchError(FacegenError):
    """The output folder holds faces of a different run (other model, temperature, attributes or format)."""


@dataclass
class BulkResult:
    written: int  # faces made by this run
    skipped: int  # faces already there and verified
    seconds: float  # wall time of the generation (requests), excluding the final bookkeeping
    model: str
    version: int
    out: Path
    failed: list[tuple[int, str]] = field(default_factory=list)  # (first seed, error) per failed request

    @property
    def faces_per_s(self) -> float:
        return self.written / self.seconds if self.seconds > 0 else 0.0


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def file_name(seed: int, fmt: str) -> str:
    return f"{seed:08d}.{'jpg' if fmt == 'jpeg' else 'png'}"


def to_jpeg(png: bytes, model: str, version: int, seed: int) -> bytes:
    """PNG -> JPEG (quality 95), keeping the AI-generated label in EXIF (ImageDescription,
    Software) since JPEG has no PNG text chunks. Deterministic: same PNG, same bytes."""
    with Image.open(io.BytesIO(png)) as img:
        rgb = img.convert("RGB")
    exif = Image.Exif()
    exif[0x010E] = f"AI-generated face (facegen {model}/{version}, seed {seed}); not a photograph."
    exif[0x0131] = f"facegen {model}/{version}"
    buf = io.BytesIO()
    rgb.save(buf, format="JPEG", quality=JPEG_QUALITY, exif=exif.tobytes())
    return buf.getvalue()


def attributes_text(attributes: Mapping[str, float] | None) -> str:
    return json.dumps(dict(sorted((attributes or {}).items())), separators=(",", ":"))


def read_labels(out: Path) -> dict[int, dict[str, str]]:
    """The rows of labels.csv by seed; a row cut short by a kill is dropped (its face is made again)."""
    path = out / LABELS
    rows: dict[int, dict[str, str]] = {}
    if not path.is_file():
        return rows
    with open(path, newline="") as f:
        for row in csv.DictReader(f):
            if any(row.get(c) in (None, "") for c in COLUMNS) or len(row.get("sha256", "")) != 64:
                continue
            try:
                rows[int(row["seed"])] = row
            except ValueError:
                continue
    return rows


def write_labels(out: Path, rows: Mapping[int, Mapping[str, str]]) -> None:
    """labels.csv sorted by seed, atomically (a kill leaves the old or the new file)."""
    tmp = out / (LABELS + ".tmp")
    with open(tmp, "w", newline="") as f:
        w = csv.DictWriter(f, COLUMNS)
        w.writeheader()
        for seed in sorted(rows):
            w.writerow({c: rows[seed][c] for c in COLUMNS})
    os.replace(tmp, out / LABELS)


def verified(out: Path, row: Mapping[str, str]) -> bool:
    p = out / row["file"]
    return p.is_file() and sha256_bytes(p.read_bytes()) == row["sha256"]


def _check_same_run(rows: Mapping[int, Mapping[str, str]], want: Mapping[str, str], out: Path) -> None:
    for row in rows.values():
        for key, value in want.items():
            if key == "file":
                continue
            if row[key] != value:
                raise OutputMismatchError(
                    f"{out} holds faces made with {key}={row[key]!r} (seed {row['seed']}); this run has "
                    f"{key}={value!r}. Use another --out folder, or the same settings to resume."
                )


async def generate_bulk(
    client: AsyncClient,
    n: int,
    out: str | Path,
    seed_start: int = 0,
    temperature: float = 1.0,
    attributes: Mapping[str, float] | None = None,
    concurrency: int = 4,
    batch: int = 16,
    fmt: str = "png",
    progress: bool = True,
) -> BulkResult:
    """Make faces for seeds seed_start .. seed_start + n - 1 in ``out`` (see the module doc)."""
    if fmt not in ("png", "jpeg"):
        raise ValueError(f"format must be png or jpeg, not {fmt!r}.")
    if not 1 <= batch <= 64 or concurrency < 1 or n < 0:
        raise ValueError("batch must be 1-64, concurrency >= 1 and n >= 0.")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    info = await client.models()
    loaded = info["loaded"]
    manifest = loaded.get("manifest") or {}
    model, version = str(loaded["name"]), int(loaded["version"])
    weights = str(((manifest.get("files") or {}).get("model.safetensors") or {}).get("sha256", ""))
    attrs = attributes_text(attributes)
    want = {
        "temperature": f"{temperature:g}",
        "attributes": attrs,
        "model": model,
        "version": str(version),
        "model_sha256": weights,
    }
    rows = read_labels(out)
    _check_same_run(rows, want, out)
    if any(not r["file"].endswith(".jpg" if fmt == "jpeg" else ".png") for r in rows.values()):
        raise OutputMismatchError(f"{out} holds faces in another format than {fmt}; use another --out.")
    seeds = range(seed_start, seed_start + n)
    done = {s for s in seeds if s in rows and verified(out, rows[s])}
    for s in seeds:  # a listed file that is gone or changed is made again
        if s in rows and s not in done:
            del rows[s]
    todo = [s for s in seeds if s not in done]
    # Runs of consecutive seeds, cut into requests of at most `batch` faces.
    chunks: list[tuple[int, int]] = []
    i = 0
    while i < len(todo):
        j = i + 1
        while j < len(todo) and j - i < batch and todo[j] == todo[j - 1] + 1:
            j += 1
        chunks.append((todo[i], j - i))
        i = j
    (out / "datasheet.md").write_text(
        datasheet(manifest, model, version, n, seed_start, temperature, attrs, fmt, concurrency)
    )
    write_labels(out, rows)
    bar = tqdm(
        total=n, initial=len(done), unit="face", disable=not progress, smoothing=0.1, dynamic_ncols=True
    )
    queue: asyncio.Queue[tuple[int, int]] = asyncio.Queue()
    for c in chunks:
        queue.put_nowait(c)
    failed: list[tuple[int, str]] = []
    labels = open(out / LABELS, "a", newline="")  # noqa: SIM115 (closed in finally)
    writer = csv.DictWriter(labels, COLUMNS)
    written = 0
    stop = asyncio.Event()

    async def worker() -> None:
        nonlocal written
        while True:
            try:
                first, count = queue.get_nowait()
            except asyncio.QueueEmpty:
                return
            if stop.is_set():
                return
            try:
                faces = await client.generate(count, first, temperature, attributes)
            except FacegenError as e:
                failed.append((first, str(e)))
                if isinstance(e, APIError) and 400 <= e.status < 500:
                    stop.set()  # bad arguments (e.g. an unknown attribute) fail every request alike
                continue
            for k, png in enumerate(faces.png):
                seed = first + k
                data = png if fmt == "png" else to_jpeg(png, model, version, seed)
                name = file_name(seed, fmt)
                tmp = out / (name + ".part")
                tmp.write_bytes(data)
                os.replace(tmp, out / name)
                row = {"file": name, "seed": str(seed), **want, "sha256": sha256_bytes(data)}
                writer.writerow(row)
                rows[seed] = row
            labels.flush()
            written += len(faces.png)
            bar.update(len(faces.png))

    start = time.perf_counter()
    try:
        await asyncio.gather(*(worker() for _ in range(concurrency)))
    finally:
        seconds = time.perf_counter() - start
        labels.close()
        bar.close()
        write_labels(out, rows)
    return BulkResult(written, len(done), seconds, model, version, out, failed)
