"""Encode (or reconstruct) every photo of a folder; latents to .npy or .safetensors + index.csv.

Output in ``out``::

    latents.npy, logvar.npy        float32 (N, latent_dim): row k is index.csv's row k's photo
      or latents.safetensors       the same two arrays as tensors "mu" and "logvar"; with refine=N
                                   the latents ("mu") are the photos' latents refined N steps
    index.csv                      row, file, sha256 (of the photo), status ("ok" or the error)
    reconstructions/NAME.png       with reconstruct: each photo's reconstruction

Photos go ``batch`` to a request; a request refused for one photo (no face found, not an
image) is retried one photo at a time, so one bad file costs only its own row (row -1).
"""

from __future__ import annotations

import csv
import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from facegen_client.client import Client
from facegen_client.errors import APIError

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff"}


@dataclass
class FolderResult:
    ok: int
    failed: int
    latent_dim: int
    files: list[Path]


def photos(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


def _one_batch(
    client: Client, batch: list[Path], reconstruct: bool, align: bool | None, refine: int = 0
) -> tuple[np.ndarray, np.ndarray, list[bytes]]:
    data = [p.read_bytes() for p in batch]
    enc = client.encode(data, align=align, refine=refine)
    recon = client.decode(enc.latent).png if reconstruct else []
    return enc.latent, enc.logvar, recon


def encode_folder(
    client: Client,
    folder: str | Path,
    out: str | Path,
    fmt: str = "npy",
    reconstruct: bool = False,
    batch: int = 16,
    align: bool | None = None,
    progress: bool = True,
    refine: int = 0,
) -> FolderResult:
    if fmt not in ("npy", "safetensors"):
        raise ValueError(f"format must be npy or safetensors, not {fmt!r}.")
    folder, out = Path(folder), Path(out)
    files = photos(folder)
    if not files:
        raise FileNotFoundError(f"{folder} holds no images ({', '.join(sorted(IMAGE_SUFFIXES))}).")
    out.mkdir(parents=True, exist_ok=True)
    if reconstruct:
        (out / "reconstructions").mkdir(exist_ok=True)
    mus: list[np.ndarray] = []
    logvars: list[np.ndarray] = []
    index: list[dict[str, str]] = []
    bar = tqdm(total=len(files), unit="photo", disable=not progress)
    for i in range(0, len(files), batch):
        group = files[i : i + batch]
        try:
            results = [_one_batch(client, group, reconstruct, align, refine)]
            groups = [group]
        except APIError as e:
            results, groups = [], []
            if len(group) == 1:
                index.append(_row(folder, group[0], -1, f"{e.type}: {e.detail}"))
            else:  # find the bad photo(s): one request each
                for p in group:
                    try:
                        results.append(_one_batch(client, [p], reconstruct, align, refine))
                        groups.append([p])
                    except APIError as e1:
                        index.append(_row(folder, p, -1, f"{e1.type}: {e1.detail}"))
        for (mu, logvar, recon), g in zip(results, groups, strict=True):
            for k, p in enumerate(g):
                index.append(_row(folder, p, len(mus), "ok"))
                mus.append(mu[k])
                logvars.append(logvar[k])
                if reconstruct:
                    name = p.relative_to(folder).with_suffix(".png").as_posix().replace("/", "__")
                    (out / "reconstructions" / name).write_bytes(recon[k])
        bar.update(len(group))
    bar.close()
    dim = int(mus[0].shape[0]) if mus else 0
    mu_arr = np.stack(mus).astype(np.float32) if mus else np.zeros((0, dim), np.float32)
    lv_arr = np.stack(logvars).astype(np.float32) if logvars else np.zeros((0, dim), np.float32)
    if fmt == "npy":
        np.save(out / "latents.npy", mu_arr)
        np.save(out / "logvar.npy", lv_arr)
    else:
        from safetensors.numpy import save_file

        save_file({"mu": mu_arr, "logvar": lv_arr}, str(out / "latents.safetensors"))
    index.sort(key=lambda r: r["file"])
    with open(out / "index.csv", "w", newline="") as f:
        w = csv.DictWriter(f, ["row", "file", "sha256", "status"])
        w.writeheader()
        w.writerows(index)
    ok = sum(r["status"] == "ok" for r in index)
    return FolderResult(ok, len(index) - ok, dim, files)


def _row(folder: Path, p: Path, row: int, status: str) -> dict[str, str]:
    digest = hashlib.sha256(p.read_bytes()).hexdigest()
    return {"row": str(row), "file": p.relative_to(folder).as_posix(), "sha256": digest, "status": status}
