"""Face data sets decoded once into a uint8 tensor and cached on disk.

Every source (a CelebA-style folder or zip, any folder/zip of images, an ``.npz`` array,
the Kaggle "age, gender and ethnicity" CSV) is run image by image through
``facegen_core.preprocess.to_model_array``, the same crop/resize the service applies to
uploads, then stored as one safetensors file in ``cache_dir``. Training indexes that tensor
in memory; nothing is decoded per step.

With crop "align" (faces warped to CelebA's framing by their landmarks) an image in which no
face is found falls back to the plain "celeba" rule (CelebA's box for CelebA-shaped images,
the centre square otherwise) and is counted in ``FaceDataset.unaligned``. Measured on 2 cores
(1,000 images each, 64 px): FairFace 96×96 41 images/s, a face in 94.4%; celeba-10k 36
images/s, a face in 99.7% (the plain crops: 660 and 1,690 images/s).
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
import sys
import zipfile
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from safetensors.torch import load_file, save_file

from facegen_core.align import DetectorUnavailableError, NoFaceError
from facegen_core.artifact import sha256_file
from facegen_core.preprocess import to_model_array
from training.facepack import is_facepack, read_facepack

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".webp", ".bmp")
CELEBA_ATTR_FILE = "list_attr_celeba.txt"
CSV_COLUMNS = ("age", "ethnicity", "gender", "img_name", "pixels")
CACHE_FORMAT = "facegen-faces-v1"
# Bumped when a loader's output for the same file changes, so stale caches are not reused
# (joined to the cache key only where present, which keeps the other formats' keys stable).
LOADER_REVISIONS = {".npz": "2"}  # 2: float range decided over the whole array, not per image
DECODE_CHUNK = 1024  # encoded files held in memory at once while decoding


class DatasetError(Exception):
    """A data source is missing, empty or not in a format this loader reads."""


@dataclass
class FaceDataset:
    images: torch.Tensor  # uint8 (N, C, H, W), cropped+resized by preprocess.to_model_array
    file_names: list[str]
    attribute_names: list[str]  # [] when none
    attributes: torch.Tensor | None  # int8 (N, n_attr): ±1 for CelebA, raw values for the CSV
    source: str  # a data set name, e.g. "celeba-10k"
    skipped: int  # unreadable files skipped
    unaligned: int = 0  # crop "align" only: images with no face found, cropped by the "celeba" rule

    def __len__(self) -> int:
        return int(self.images.shape[0])


# --------------------------------------------------------------------------- decoding


def _to_model(img: Image.Image, image_size: int, channels: int, crop: str) -> tuple[np.ndarray, bool]:
    """to_model_array (H, W, C), and whether crop "align" found no face and fell back to the
    "celeba" crop (which is the centre square for images not shaped like CelebA's)."""
    try:
        return to_model_array(img, image_size, channels, crop), False
    except NoFaceError:
        return to_model_array(img, image_size, channels, "celeba"), True


def _decode_bytes(data: bytes, image_size: int, channels: int, crop: str) -> tuple[np.ndarray, bool] | None:
    try:
        with Image.open(io.BytesIO(data)) as img:
            img.load()
            return _to_model(img, image_size, channels, crop)
    except DetectorUnavailableError:
        raise  # a set-up error, not a bad file: every image would be "skipped"
    except Exception:  # unreadable or truncated file: skipped and counted, never fatal
        return None


def _decode_all(
    names: list[str],
    read: Callable[[str], bytes],
    image_size: int,
    channels: int,
    crop: str,
    read_in_workers: bool,
) -> tuple[list[str], torch.Tensor, int, int]:
    """Decode the files ``names`` (fetched with ``read``) into uint8 (N_ok, C, H, W).

    Chunk by chunk into one preallocated array: peak memory is the decoded set plus one
    chunk of encoded files, never the whole encoded set plus a second copy of the decoded
    one (full CelebA at 64 px: 2.5 GB decoded, 1.4 GB of JPEGs). ``read_in_workers`` is
    False for a zip, whose members are read in this thread (ZipFile shares one file handle).
    Returns the names of the readable files, their images, the unreadable count and the
    count of images without a face (crop "align" only; see ``_to_model``).
    """
    out = np.empty((len(names), channels, image_size, image_size), np.uint8)
    kept: list[str] = []
    unaligned = 0

    def decode(data: bytes) -> tuple[np.ndarray, bool] | None:
        return _decode_bytes(data, image_size, channels, crop)

    # PIL releases the GIL while decoding and resizing, so threads give a real speed-up.
    workers = max(1, min(8, os.cpu_count() or 1))
    with ThreadPoolExecutor(workers) as pool:
        for start in range(0, len(names), DECODE_CHUNK):
            chunk = names[start : start + DECODE_CHUNK]
            if read_in_workers:
                arrays = list(pool.map(lambda n: decode(read(n)), chunk))
            else:
                arrays = list(pool.map(decode, [read(n) for n in chunk]))
            for name, decoded in zip(chunk, arrays, strict=True):
                if decoded is not None:
                    out[len(kept)] = decoded[0].transpose(2, 0, 1)  # (H, W, C) -> (C, H, W)
                    unaligned += decoded[1]
                    kept.append(name)
    images = torch.from_numpy(out[: len(kept)] if len(kept) == len(names) else out[: len(kept)].copy())
    return kept, images, len(names) - len(kept), unaligned


def _parse_celeba_attrs(text: str) -> tuple[list[str], dict[str, list[int]]]:
    """list_attr_celeba.txt: line 1 count, line 2 the 40 names, then 'file v1 .. v40'."""
    lines = text.splitlines()
    if len(lines) < 2:
        raise DatasetError(f"{CELEBA_ATTR_FILE} has fewer than two lines; it is not a CelebA attribute file.")
    names = lines[1].split()
    rows: dict[str, list[int]] = {}
    for line in lines[2:]:
        parts = line.split()
        if len(parts) == len(names) + 1:
            rows[parts[0]] = [int(v) for v in parts[1:]]
    return names, rows


def _attach_attrs(names: list[str], attr_text: str | None) -> tuple[list[str], torch.Tensor | None]:
    if attr_text is None:
        return [], None
    attr_names, rows = _parse_celeba_attrs(attr_text)
    basenames = [Path(n).name for n in names]
    if not all(b in rows for b in basenames):
        # Partial labels would silently misalign; keep images, drop attributes.
        print(f"warning: {CELEBA_ATTR_FILE} does not label every image; attributes ignored.", file=sys.stderr)
        return [], None
    return attr_names, torch.tensor([rows[b] for b in basenames], dtype=torch.int8)


def _is_image(name: str) -> bool:
    return name.lower().endswith(IMAGE_EXTENSIONS) and not Path(name).name.startswith(".")


def _load_zip(path: Path, image_size: int, channels: int, crop: str, limit: int | None) -> FaceDataset:
    try:
        with zipfile.ZipFile(path) as zf:
            members = sorted(
                (n for n in zf.namelist() if _is_image(n) and "__MACOSX" not in n),
                key=lambda n: Path(n).name,
            )
            if limit is not None:
                members = members[:limit]
            _require_images(path, members)
            attr_members = [n for n in zf.namelist() if Path(n).name == CELEBA_ATTR_FILE]
            beside = _attr_beside(path)
            if attr_members:
                attr_text: str | None = zf.read(attr_members[0]).decode()
            else:  # CelebA ships the labels apart from img_align_celeba.zip
                attr_text = beside.read_text() if beside is not None else None
            decoded = _decode_all(members, zf.read, image_size, channels, crop, read_in_workers=False)
    except zipfile.BadZipFile as e:
        raise DatasetError(f"{path} is not a readable zip file ({e}); re-download or re-create it.") from e
    return _dataset(path, *decoded, attr_text)


def _attr_beside(path: Path) -> Path | None:
    """list_attr_celeba.txt beside a folder or zip, or in an Anno/ folder beside it or one
    level up: the layout of the CelebA download (Anno/list_attr_celeba.txt next to
    Img/img_align_celeba.zip)."""
    for candidate in (
        path.parent / CELEBA_ATTR_FILE,
        path.parent / "Anno" / CELEBA_ATTR_FILE,
        path.parent.parent / "Anno" / CELEBA_ATTR_FILE,
    ):
        if candidate.is_file():
            return candidate
    return None


def _attr_file(folder: Path) -> Path | None:
    """list_attr_celeba.txt inside the folder, else beside it (see ``_attr_beside``)."""
    inside = sorted(folder.rglob(CELEBA_ATTR_FILE))
    return inside[0] if inside else _attr_beside(folder)


def _load_folder(path: Path, image_size: int, channels: int, crop: str, limit: int | None) -> FaceDataset:
    files = sorted((p for p in path.rglob("*") if p.is_file() and _is_image(p.name)), key=lambda p: p.name)
    if limit is not None:
        files = files[:limit]
    _require_images(path, files)
    attr_file = _attr_file(path)
    attr_text = attr_file.read_text() if attr_file is not None else None
    names = [str(p.relative_to(path)) for p in files]

    def read(name: str) -> bytes:
        return (path / name).read_bytes()

    decoded = _decode_all(names, read, image_size, channels, crop, read_in_workers=True)
    return _dataset(path, *decoded, attr_text)


def _require_images(path: Path, found: list[Any]) -> None:
    if not found:
        raise DatasetError(
            f"No images ({', '.join(IMAGE_EXTENSIONS)}) were found in {path}; point --data at a "
            f"folder or zip of face images, an .npz with an 'images' array, or the age/gender CSV."
        )


def _dataset(
    path: Path, names: list[str], images: torch.Tensor, skipped: int, unaligned: int, attr_text: str | None
) -> FaceDataset:
    """images: uint8 (N, C, H, W) of the readable files ``names``; ``skipped`` unreadable ones;
    ``unaligned`` of them had no face (crop "align")."""
    if not names:
        raise DatasetError(
            f"None of the {skipped} image files in {path} could be decoded; they are all corrupt."
        )
    attr_names, attrs = _attach_attrs(names, attr_text)
    return FaceDataset(
        images, [Path(n).name for n in names], attr_names, attrs, _source_name(path), skipped, unaligned
    )


def _value_range(arr: np.ndarray) -> str:
    """How a whole array of images is scaled: "uint8", "0-1", "-1-1" or "0-255".

    Decided once for the whole array: per image, a dark [0, 255] face (max <= 1) or a
    bright [-1, 1] face (min >= 0) would be rescaled differently from its neighbours.
    """
    if arr.dtype == np.uint8:
        return "uint8"
    lo, hi = float(arr.min()), float(arr.max())
    if lo >= 0.0 and hi <= 1.0:
        return "0-1"
    if lo >= -1.0 and hi <= 1.0:
        return "-1-1"
    return "0-255"


def _array_to_uint8(arr: np.ndarray, value_range: str) -> np.ndarray:
    """An (H, W) or (H, W, C) array in ``value_range`` (see ``_value_range``) to uint8."""
    if value_range == "uint8":
        return arr
    a = arr.astype(np.float64)
    if value_range == "0-1":
        a = a * 255.0
    elif value_range == "-1-1":
        a = (a + 1.0) * 127.5
    return np.clip(np.round(a), 0, 255).astype(np.uint8)


def _arrays_to_model(
    arrays: Iterable[np.ndarray], value_range: str, image_size: int, channels: int, crop: str
) -> tuple[torch.Tensor, int]:
    """(H, W) / (H, W, C) arrays -> uint8 (N, C, H', W') through preprocess.to_model_array,
    and how many had no face (crop "align"; see ``_to_model``)."""
    out = []
    unaligned = 0
    for a in arrays:
        a8 = _array_to_uint8(a, value_range)
        pil = Image.fromarray(a8 if a8.ndim == 2 else (a8[:, :, 0] if a8.shape[2] == 1 else a8))
        arr, no_face = _to_model(pil, image_size, channels, crop)
        out.append(arr.transpose(2, 0, 1))
        unaligned += no_face
    return torch.from_numpy(np.stack(out)), unaligned


def _load_npz(path: Path, image_size: int, channels: int, crop: str, limit: int | None) -> FaceDataset:
    try:
        with np.load(path, allow_pickle=False) as z:
            if "images" not in z.files:
                raise DatasetError(
                    f"{path} has no 'images' array (it has {z.files}); save faces as np.savez(f, images=...)."
                )
            imgs = z["images"]
    except (ValueError, OSError, zipfile.BadZipFile) as e:
        raise DatasetError(
            f"{path} is not a readable .npz of numbers ({e}); save faces as np.savez(f, images=...)."
        ) from e
    if not (np.issubdtype(imgs.dtype, np.number) or imgs.dtype == np.bool_):
        raise DatasetError(f"{path}'s 'images' array has dtype {imgs.dtype}; it must hold numbers.")
    if imgs.ndim == 4 and imgs.shape[1] in (1, 3) and imgs.shape[3] not in (1, 3):
        imgs = imgs.transpose(0, 2, 3, 1)  # (N, C, H, W) -> (N, H, W, C)
    if imgs.ndim not in (3, 4) or imgs.shape[0] == 0:
        raise DatasetError(
            f"{path}'s 'images' array has shape {imgs.shape}; expected a non-empty (N, H, W), "
            f"(N, H, W, C) or (N, C, H, W) array."
        )
    if limit is not None:
        imgs = imgs[:limit]
    names = [f"{i:06d}" for i in range(len(imgs))]
    images, unaligned = _arrays_to_model(imgs, _value_range(imgs), image_size, channels, crop)
    return FaceDataset(images, names, [], None, _source_name(path), 0, unaligned)


def _load_csv(path: Path, image_size: int, channels: int, crop: str, limit: int | None) -> FaceDataset:
    """Kaggle 'age, gender and ethnicity face data': 48×48 grey pixels as space-separated ints."""
    csv.field_size_limit(1 << 24)
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        missing = [c for c in CSV_COLUMNS if c not in (reader.fieldnames or [])]
        if missing:
            raise DatasetError(
                f"{path} lacks the columns {missing} (it has {reader.fieldnames}); expected the "
                f"age/gender/ethnicity face CSV with columns {list(CSV_COLUMNS)}."
            )
        arrays: list[np.ndarray] = []
        names: list[str] = []
        attrs: list[list[int]] = []
        skipped = 0
        for row in reader:
            if limit is not None and len(arrays) >= limit:
                break
            try:
                px = np.array(row["pixels"].split(), dtype=np.int64)
                side = round(len(px) ** 0.5)
                if side * side != len(px) or side == 0:
                    raise ValueError("pixels are not a square image")
                a = np.clip(px, 0, 255).astype(np.uint8).reshape(side, side)
                vals = [min(127, int(row[c])) for c in ("age", "ethnicity", "gender")]
            except (ValueError, TypeError):
                skipped += 1
                continue
            arrays.append(a)
            names.append(row["img_name"])
            attrs.append(vals)
    if not arrays:
        raise DatasetError(f"{path} holds no readable image rows.")
    images, unaligned = _arrays_to_model(arrays, "uint8", image_size, channels, crop)
    return FaceDataset(
        images,
        names,
        ["age", "ethnicity", "gender"],
        torch.tensor(attrs, dtype=torch.int8),
        _source_name(path),
        skipped,
        unaligned,
    )


# --------------------------------------------------------------------------- cache


def _source_name(path: Path) -> str:
    p = path.resolve()
    if p.is_dir() and p.name == "img_align_celeba":
        p = p.parent  # the data set is the folder holding img_align_celeba/
    return p.stem if p.is_file() else p.name


def _fingerprint(path: Path) -> str:
    """What the decoded cache depends on. A file (.zip, .npz, .csv) by its content: a fresh
    copy of the same data (a new checkout of ../shared, rsync, CI) keeps its cache, which
    for 40,000 faces aligned by MTCNN is most of an hour of 2-core CPU; sha256 of 134 MB
    takes under a second. A folder by its files' sizes and mtimes (hashing every image of a
    folder each run would cost what the cache saves)."""
    st = path.stat()
    if not path.is_dir():
        parts = [f"sha256 {sha256_file(path)}", str(st.st_size)]
    else:
        parts = [str(path.resolve()), str(st.st_size), str(st.st_mtime_ns)]
        # A folder's own mtime misses edits inside sub-folders; add every file's size+mtime.
        for p in sorted(path.rglob("*")):
            if p.is_file():
                s = p.stat()
                parts.append(f"{p.relative_to(path)}:{s.st_size}:{s.st_mtime_ns}")
    if path.is_dir() or path.suffix.lower() == ".zip":
        attr = _attr_file(path) if path.is_dir() else _attr_beside(path)
        if attr is not None and path not in attr.parents:  # the labels beside the folder/zip
            parts.append(f"labels sha256 {sha256_file(attr)}")
    if path.suffix.lower() in LOADER_REVISIONS and not path.is_dir():
        parts.append(f"loader revision {LOADER_REVISIONS[path.suffix.lower()]}")
    return "\n".join(parts)


def _cache_path(
    cache_dir: Path, path: Path, image_size: int, channels: int, crop: str, limit: int | None
) -> Path:
    key = f"{CACHE_FORMAT}\n{_fingerprint(path)}\n{image_size}\n{channels}\n{crop}\n{limit}"
    digest = hashlib.sha256(key.encode()).hexdigest()[:20]
    return cache_dir / f"{_source_name(path)}-{image_size}px-c{channels}-{crop}-{digest}.safetensors"


def _save_cache(ds: FaceDataset, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tensors = {"images": ds.images.contiguous()}
    if ds.attributes is not None:
        tensors["attributes"] = ds.attributes.contiguous()
    meta = {
        "format": CACHE_FORMAT,
        "file_names": json.dumps(ds.file_names),
        "attribute_names": json.dumps(ds.attribute_names),
        "source": ds.source,
        "skipped": str(ds.skipped),
        "unaligned": str(ds.unaligned),
    }
    tmp = path.with_suffix(".tmp")
    save_file(tensors, str(tmp), metadata=meta)
    os.replace(tmp, path)  # atomic: a concurrent reader never sees half a cache file


def _read_cache(path: Path) -> FaceDataset:
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata() or {}
    t = load_file(str(path))
    return FaceDataset(
        t["images"],
        json.loads(meta["file_names"]),
        json.loads(meta["attribute_names"]),
        t.get("attributes"),
        meta["source"],
        int(meta["skipped"]),
        int(meta.get("unaligned", "0")),  # caches written before crop "align" existed
    )


LOADERS: dict[str, Callable[[Path, int, int, str, int | None], FaceDataset]] = {
    ".zip": _load_zip,
    ".npz": _load_npz,
    ".csv": _load_csv,
}


def load_faces(
    source: str | Path,
    image_size: int = 64,
    channels: int = 3,
    crop: str = "celeba",
    cache_dir: str | Path | None = "data_cache",
    limit: int | None = None,
) -> FaceDataset:
    """Decode ``source`` once (or read its cache) into a FaceDataset of uint8 (N, C, H, W)."""
    path = Path(source)
    if not path.exists():
        raise DatasetError(
            f"The data source {path} does not exist; pass an existing folder, .zip, .npz or .csv."
        )
    if is_facepack(path):  # already preprocessed faces (training/facepack.py): no cache needed
        images, name = read_facepack(path, image_size, channels, crop)
        images = images[:limit] if limit is not None else images
        return FaceDataset(images, [f"{i:06d}" for i in range(len(images))], [], None, name, 0)
    loader: Callable[[Path, int, int, str, int | None], FaceDataset]
    if path.is_dir():
        loader = _load_folder
    elif path.suffix.lower() in LOADERS:
        loader = LOADERS[path.suffix.lower()]
    else:
        raise DatasetError(f"{path} is not a folder, .zip, .npz or .csv; this loader cannot read it.")
    cache = _cache_path(Path(cache_dir), path, image_size, channels, crop, limit) if cache_dir else None
    if cache is not None and cache.is_file():
        try:
            return _read_cache(cache)
        except Exception as e:  # a corrupt cache is rebuilt, not fatal
            print(f"warning: ignoring unreadable cache {cache} ({e}); decoding again.", file=sys.stderr)
    ds = loader(path, image_size, channels, crop, limit)
    if cache is not None:
        _save_cache(ds, cache)
    return ds


def split_indices(n: int, val_fraction: float, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Seeded random (train_idx, val_idx); at least one validation image when val_fraction > 0."""
    if not 0.0 <= val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in [0, 1), got {val_fraction}.")
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(int(seed)))
    n_val = min(n - 1, max(1, round(n * val_fraction))) if val_fraction > 0 and n > 1 else 0
    return perm[n_val:].sort().values, perm[:n_val].sort().values


def synthetic_faces(n: int, image_size: int, channels: int, seed: int = 0) -> FaceDataset:
    """Seeded fake 'faces' (a bright ellipse on a gradient) for --dry-run and tests."""
    g = torch.Generator().manual_seed(seed)
    s = image_size
    yy, xx = torch.meshgrid(torch.linspace(-1, 1, s), torch.linspace(-1, 1, s), indexing="ij")
    imgs = []
    for _ in range(n):
        cx, cy, rx, ry = (
            torch.rand(4, generator=g) * torch.tensor([0.4, 0.4, 0.3, 0.3])
            + torch.tensor([-0.2, -0.2, 0.3, 0.4])
        ).tolist()
        colour = torch.rand(channels, 1, 1, generator=g)
        face = (((xx - cx) / rx) ** 2 + ((yy - cy) / ry) ** 2 < 1).float()
        bg = 0.3 * (yy + 1)[None] * torch.rand(channels, 1, 1, generator=g)
        img = bg * (1 - face) + colour * face
        imgs.append((img.clamp(0, 1) * 255).round().to(torch.uint8))
    return FaceDataset(torch.stack(imgs), [f"synthetic-{i:05d}" for i in range(n)], [], None, "synthetic", 0)
