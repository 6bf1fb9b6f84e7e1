"""The face data loader on every input format it reads, built small in tmp_path: a
CelebA-layout folder and zip, any folder/zip of images, .npz arrays, the Kaggle
age/gender/ethnicity CSV; the on-disk cache; the seeded split; and the real celeba-10k zip
when it is present (marker ``data``)."""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from facegen_core.preprocess import to_model_array
from training import data
from training.data import DatasetError, load_faces, split_indices

REAL_ZIP = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "celeba-10k.zip"
ATTRS = ["Smiling", "Male", "Young"]
# CelebA's attribute file: count, names, then 'file v1 .. vN' with runs of spaces.
ATTR_TEXT = "3\n" + " ".join(ATTRS) + "\n000001.jpg  1 -1  1\n000002.jpg -1 -1  1\n000003.jpg  1  1 -1\n"
EXPECTED_ATTRS = {"000001.jpg": [1, -1, 1], "000002.jpg": [-1, -1, 1], "000003.jpg": [1, 1, -1]}


@pytest.fixture(autouse=True)
def _one_thread() -> None:
    torch.set_num_threads(1)


def face(seed: int, w: int = 89, h: int = 109) -> Image.Image:
    """A seeded RGB picture with structure (a gradient plus noise), CelebA's aspect."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w]
    base = np.stack([xx * 255 // w, yy * 255 // h, (xx + yy) * 255 // (w + h)], axis=-1)
    noise = rng.integers(0, 40, (h, w, 3))
    return Image.fromarray(np.clip(base + noise, 0, 255).astype(np.uint8), "RGB")


def encoded(img: Image.Image, fmt: str) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=fmt)
    return buf.getvalue()


def expected(raw: bytes, size: int = 32, channels: int = 3, crop: str = "celeba") -> torch.Tensor:
    """What the loader must produce for one file: preprocess.to_model_array, as (C, H, W)."""
    with Image.open(io.BytesIO(raw)) as img:
        return torch.from_numpy(np.array(to_model_array(img, size, channels, crop))).permute(2, 0, 1)


def celeba_files() -> dict[str, bytes]:
    return {f"img_align_celeba/00000{i}.jpg": encoded(face(i), "JPEG") for i in (1, 2, 3)} | {
        "list_attr_celeba.txt": ATTR_TEXT.encode()
    }


def write_tree(root: Path, files: dict[str, bytes]) -> Path:
    for name, raw in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(raw)
    return root


def write_zip(path: Path, files: dict[str, bytes]) -> Path:
    with zipfile.ZipFile(path, "w") as zf:
        for name, raw in files.items():
            zf.writestr(name, raw)
    return path


def check_celeba(ds: data.FaceDataset, files: dict[str, bytes]) -> None:
    assert ds.file_names == ["000001.jpg", "000002.jpg", "000003.jpg"]
    assert ds.images.dtype == torch.uint8 and ds.images.shape == (3, 3, 32, 32)
    for i, name in enumerate(ds.file_names):
        assert torch.equal(ds.images[i], expected(files[f"img_align_celeba/{name}"]))
    assert ds.attribute_names == ATTRS
    assert ds.attributes is not None and ds.attributes.dtype == torch.int8
    assert ds.attributes.tolist() == [EXPECTED_ATTRS[n] for n in ds.file_names]
    assert ds.skipped == 0


# --------------------------------------------------------------------------- CelebA layout


def test_celeba_folder_with_attributes(tmp_path: Path) -> None:
    files = celeba_files()
    root = write_tree(tmp_path / "celeba", files)
    ds = load_faces(root, 32, 3, "celeba", cache_dir=None)
    check_celeba(ds, files)
    assert ds.source == "celeba"


def test_img_align_celeba_folder_finds_the_attributes_beside_it(tmp_path: Path) -> None:
    files = celeba_files()
    root = write_tree(tmp_path / "celeba", files)
    ds = load_faces(root / "img_align_celeba", 32, 3, "celeba", cache_dir=None)
    check_celeba(ds, files)
    assert ds.source == "celeba"  # named for the folder holding img_align_celeba/


def test_celeba_zip_with_attributes(tmp_path: Path) -> None:
    files = celeba_files()
    ds = load_faces(write_zip(tmp_path / "celeba-mini.zip", files), 32, 3, "celeba", cache_dir=None)
    check_celeba(ds, files)
    assert ds.source == "celeba-mini"


def test_celeba_download_layout_zip_with_the_labels_in_anno(tmp_path: Path) -> None:
    """CelebA ships Img/img_align_celeba.zip and Anno/list_attr_celeba.txt separately."""
    files = celeba_files()
    labels = files.pop("list_attr_celeba.txt")
    write_tree(tmp_path / "CelebA" / "Anno", {"list_attr_celeba.txt": labels})
    (tmp_path / "CelebA" / "Img").mkdir()
    src = write_zip(tmp_path / "CelebA" / "Img" / "img_align_celeba.zip", files)
    check_celeba(load_faces(src, 32, 3, "celeba", cache_dir=None), files)


def test_attribute_file_missing_an_image_drops_the_attributes_not_the_images(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    files = celeba_files() | {"img_align_celeba/000004.jpg": encoded(face(4), "JPEG")}
    ds = load_faces(write_zip(tmp_path / "c.zip", files), 32, 3, "celeba", cache_dir=None)
    assert len(ds) == 4 and ds.attribute_names == [] and ds.attributes is None
    assert "does not label every image" in capsys.readouterr().err


# --------------------------------------------------------------------------- any images


def mixed_files() -> dict[str, bytes]:
    return {
        "a.jpg": encoded(face(1), "JPEG"),
        "sub/b.png": encoded(face(2, 60, 50), "PNG"),
        "c.webp": encoded(face(3, 40, 40), "WEBP"),
        "d.bmp": encoded(face(4).convert("L"), "BMP"),
        "e.jpg": b"\xff\xd8\xff\xe0 not really a jpeg",
        "notes.txt": b"not an image: ignored, not counted",
        ".hidden.png": encoded(face(5), "PNG"),
    }


@pytest.mark.parametrize("kind", ["folder", "zip"])
def test_any_images_mixed_formats_and_a_corrupt_file(tmp_path: Path, kind: str) -> None:
    files = mixed_files()
    src = write_tree(tmp_path / "faces", files) if kind == "folder" else write_zip(tmp_path / "f.zip", files)
    ds = load_faces(src, 32, 3, "center", cache_dir=None)
    assert ds.file_names == ["a.jpg", "b.png", "c.webp", "d.bmp"]  # sorted by file name
    assert ds.skipped == 1  # e.jpg
    for i, name in enumerate(["a.jpg", "sub/b.png", "c.webp", "d.bmp"]):
        assert torch.equal(ds.images[i], expected(files[name], crop="center")), name
    assert ds.attribute_names == [] and ds.attributes is None


def test_grey_output_from_colour_files(tmp_path: Path) -> None:
    files = mixed_files()
    ds = load_faces(write_tree(tmp_path / "faces", files), 32, 1, "none", cache_dir=None)
    assert ds.images.shape == (4, 1, 32, 32)
    assert torch.equal(ds.images[0], expected(files["a.jpg"], channels=1, crop="none"))


def test_limit_takes_the_first_files(tmp_path: Path) -> None:
    ds = load_faces(write_tree(tmp_path / "f", mixed_files()), 32, 3, "center", cache_dir=None, limit=2)
    assert ds.file_names == ["a.jpg", "b.png"]


# --------------------------------------------------------------------------- .npz


def base_images() -> np.ndarray:
    return np.stack([np.asarray(face(i, 40, 40)) for i in range(3)])  # uint8 (3, 40, 40, 3)


def expected_from_arrays(arrs: np.ndarray, channels: int = 3) -> torch.Tensor:
    out = [to_model_array(Image.fromarray(a), 32, channels, "center") for a in arrs]
    return torch.from_numpy(np.stack(out)).permute(0, 3, 1, 2)


@pytest.mark.parametrize(
    "layout",
    ["NHWC-uint8", "NCHW-uint8", "NHWC-float01", "NCHW-float-11", "NHWC-float255", "NHWC1-float01"],
)
def test_npz_layouts_and_value_ranges(tmp_path: Path, layout: str) -> None:
    imgs = base_images()
    arr: np.ndarray = imgs
    channels = 3
    if layout.startswith("NHWC1"):
        imgs = imgs[..., :1]
        channels = 1
    if "float01" in layout:
        arr = imgs.astype(np.float32) / 255.0
    elif "float-11" in layout:
        arr = imgs.astype(np.float64) / 127.5 - 1.0
    elif "float255" in layout:
        arr = imgs.astype(np.float32)
    else:
        arr = imgs
    if layout.startswith("NCHW"):
        arr = arr.transpose(0, 3, 1, 2)
    np.savez(tmp_path / "faces.npz", images=arr)
    ds = load_faces(tmp_path / "faces.npz", 32, channels, "center", cache_dir=None)
    want = expected_from_arrays(imgs[..., 0] if channels == 1 else imgs, channels)
    assert ds.images.shape == (3, channels, 32, 32)
    assert torch.equal(ds.images, want)
    assert ds.file_names == ["000000", "000001", "000002"] and ds.source == "faces"


def test_npz_grey_nhw(tmp_path: Path) -> None:
    grey = base_images()[..., 1]  # (3, 40, 40)
    np.savez(tmp_path / "g.npz", images=grey)
    ds = load_faces(tmp_path / "g.npz", 32, 1, "center", cache_dir=None)
    assert torch.equal(ds.images, expected_from_arrays(grey, 1))
    rgb = load_faces(tmp_path / "g.npz", 32, 3, "center", cache_dir=None).images  # grey -> RGB
    assert rgb.shape == (3, 3, 32, 32) and torch.equal(rgb[:, 0], rgb[:, 1])


def test_npz_value_range_is_decided_for_the_whole_array(tmp_path: Path) -> None:
    """A [-1, 1] array whose first face is bright (all values >= 0): judged alone, that face
    would look like a [0, 1] image and come out darker than it is."""
    imgs = base_images()
    imgs[0] = np.maximum(imgs[0], 130)  # (130/127.5 - 1) > 0 everywhere
    arr = imgs.astype(np.float32) / 127.5 - 1.0
    assert arr[0].min() >= 0 and arr.min() < 0
    np.savez(tmp_path / "f.npz", images=arr)
    ds = load_faces(tmp_path / "f.npz", 32, 3, "center", cache_dir=None)
    assert torch.equal(ds.images, expected_from_arrays(imgs))


@pytest.mark.parametrize(
    ("arrays", "message"),
    [
        ({"faces": np.zeros((2, 8, 8), np.uint8)}, "has no 'images' array"),
        ({"images": np.zeros((0, 8, 8), np.uint8)}, "expected a non-empty"),
        ({"images": np.zeros((2, 3, 8, 8, 1), np.uint8)}, "has shape"),
        ({"images": np.array(["a", "b"])}, "must hold numbers"),
    ],
)
def test_npz_errors(tmp_path: Path, arrays: dict[str, np.ndarray], message: str) -> None:
    np.savez(tmp_path / "bad.npz", **arrays)  # type: ignore[arg-type]
    with pytest.raises(DatasetError, match=message):
        load_faces(tmp_path / "bad.npz", 32, 3, "center", cache_dir=None)


# --------------------------------------------------------------------------- Kaggle CSV


def csv_row(age: int, eth: int, gender: int, name: str, px: np.ndarray) -> str:
    return f'{age},{eth},{gender},{name},"{" ".join(str(int(v)) for v in px.ravel())}"\n'


def test_age_gender_ethnicity_csv(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    faces = [rng.integers(0, 256, (48, 48)).astype(np.uint8) for _ in range(3)]
    text = "age,ethnicity,gender,img_name,pixels\n"
    text += csv_row(1, 2, 0, "20161219203650636.jpg.chip.jpg", faces[0])
    text += csv_row(35, 0, 1, "b.jpg.chip.jpg", faces[1])
    text += csv_row(9, 4, 0, "broken.jpg", faces[2][:47])  # 47×48 values: not square, skipped
    text += csv_row(116, 3, 1, "c.jpg.chip.jpg", faces[2])
    (tmp_path / "age_gender.csv").write_text(text)
    ds = load_faces(tmp_path / "age_gender.csv", 32, 1, "center", cache_dir=None)
    assert ds.file_names == ["20161219203650636.jpg.chip.jpg", "b.jpg.chip.jpg", "c.jpg.chip.jpg"]
    assert ds.skipped == 1
    assert ds.attribute_names == ["age", "ethnicity", "gender"]
    assert ds.attributes is not None and ds.attributes.tolist() == [[1, 2, 0], [35, 0, 1], [116, 3, 1]]
    assert torch.equal(ds.images, expected_from_arrays(np.stack([faces[0], faces[1], faces[2]]), 1))


def test_csv_with_wrong_columns_names_the_missing_ones(tmp_path: Path) -> None:
    (tmp_path / "x.csv").write_text('age,gender,pixels\n3,1,"0 0 0 0"\n')
    with pytest.raises(DatasetError, match="ethnicity") as err:
        load_faces(tmp_path / "x.csv", 32, 1, "center", cache_dir=None)
    assert "img_name" in str(err.value) and "age" not in str(err.value).split("lacks the columns")[1][:30]


# --------------------------------------------------------------------------- empty / bad sources


@pytest.mark.parametrize(
    "kind", ["folder", "folder-no-images", "zip", "zip-all-corrupt", "csv", "missing", "txt"]
)
def test_empty_or_unreadable_sources_give_a_clear_error(tmp_path: Path, kind: str) -> None:
    if kind == "folder":
        src = tmp_path / "empty"
        src.mkdir()
        msg = "No images"
    elif kind == "folder-no-images":
        src = write_tree(tmp_path / "docs", {"readme.txt": b"hi", "list_attr_celeba.txt": ATTR_TEXT.encode()})
        msg = "No images"
    elif kind == "zip":
        src = write_zip(tmp_path / "empty.zip", {})
        msg = "No images"
    elif kind == "zip-all-corrupt":
        src = write_zip(tmp_path / "bad.zip", {"a.jpg": b"junk", "b.png": b"junk"})
        msg = "None of the 2 image files"
    elif kind == "csv":
        src = tmp_path / "h.csv"
        src.write_text("age,ethnicity,gender,img_name,pixels\n")
        msg = "no readable image rows"
    elif kind == "missing":
        src = tmp_path / "nowhere.zip"
        msg = "does not exist"
    else:
        src = tmp_path / "faces.txt"
        src.write_text("x")
        msg = "cannot read it"
    with pytest.raises(DatasetError, match=msg):
        load_faces(src, 32, 3, "center", cache_dir=None)


def test_a_corrupt_zip_gives_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / "broken.zip").write_bytes(b"PK\x03\x04 truncated")
    with pytest.raises(DatasetError, match="not a readable zip"):
        load_faces(tmp_path / "broken.zip", 32, 3, "center", cache_dir=None)


# --------------------------------------------------------------------------- cache


class DecodeCounter:
    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.calls = 0
        real = data._decode_bytes

        def counting(*args: object, **kwargs: object) -> np.ndarray | None:
            self.calls += 1
            return real(*args, **kwargs)  # type: ignore[arg-type]

        monkeypatch.setattr(data, "_decode_bytes", counting)


@pytest.mark.parametrize("kind", ["folder", "zip"])
def test_cache_is_reused_and_invalidated_when_the_source_changes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, kind: str
) -> None:
    files = celeba_files()
    if kind == "folder":
        src = write_tree(tmp_path / "celeba", files)
    else:
        src = write_zip(tmp_path / "celeba.zip", files)
    cache = tmp_path / "cache"
    counter = DecodeCounter(monkeypatch)

    first = load_faces(src, 32, 3, "celeba", cache_dir=cache)
    assert counter.calls == 3
    (cached,) = cache.glob("*.safetensors")
    mtime = cached.stat().st_mtime_ns

    second = load_faces(src, 32, 3, "celeba", cache_dir=cache)
    assert counter.calls == 3  # nothing decoded: read from the cache
    assert cached.stat().st_mtime_ns == mtime  # and not rewritten
    assert torch.equal(second.images, first.images)
    assert second.file_names == first.file_names and second.attribute_names == ATTRS
    assert second.attributes is not None and torch.equal(second.attributes, first.attributes)  # type: ignore[arg-type]

    # Another size is another cache entry.
    load_faces(src, 64, 3, "celeba", cache_dir=cache)
    assert counter.calls == 6 and len(list(cache.glob("*.safetensors"))) == 2

    # A changed source is decoded again.
    if kind == "folder":
        (src / "img_align_celeba" / "000002.jpg").write_bytes(encoded(face(99), "JPEG"))
    else:
        write_zip(src, files | {"img_align_celeba/000002.jpg": encoded(face(99), "JPEG")})
    third = load_faces(src, 32, 3, "celeba", cache_dir=cache)
    assert counter.calls == 9
    assert torch.equal(third.images[0], first.images[0]) and not torch.equal(third.images[1], first.images[1])


@pytest.mark.parametrize("kind", ["folder", "zip"])
def test_changed_attribute_file_beside_the_source_invalidates_the_cache(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, kind: str
) -> None:
    files = celeba_files()
    root = write_tree(tmp_path / "celeba", files)
    src = root / "img_align_celeba"
    if kind == "zip":
        files.pop("list_attr_celeba.txt")
        src = write_zip(root / "img_align_celeba.zip", files)
    cache = tmp_path / "cache"
    counter = DecodeCounter(monkeypatch)
    load_faces(src, 32, 3, "celeba", cache_dir=cache)
    load_faces(src, 32, 3, "celeba", cache_dir=cache)
    assert counter.calls == 3  # the second load came from the cache
    (root / "list_attr_celeba.txt").write_text(
        ATTR_TEXT.replace("000003.jpg  1  1 -1", "000003.jpg -1 -1 -1")
    )
    ds = load_faces(src, 32, 3, "celeba", cache_dir=cache)
    assert counter.calls == 6
    assert ds.attributes is not None and ds.attributes[2].tolist() == [-1, -1, -1]


def test_a_corrupt_cache_file_is_rebuilt(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    src = write_zip(tmp_path / "c.zip", celeba_files())
    cache = tmp_path / "cache"
    first = load_faces(src, 32, 3, "celeba", cache_dir=cache)
    (cached,) = cache.glob("*.safetensors")
    cached.write_bytes(b"garbage")
    counter = DecodeCounter(monkeypatch)
    again = load_faces(src, 32, 3, "celeba", cache_dir=cache)
    assert counter.calls == 3 and torch.equal(again.images, first.images)
    assert "ignoring unreadable cache" in capsys.readouterr().err
    assert load_faces(src, 32, 3, "celeba", cache_dir=cache).file_names == first.file_names
    assert counter.calls == 3  # the rebuilt cache is read


# --------------------------------------------------------------------------- split


def test_split_indices_is_seeded_disjoint_and_complete() -> None:
    tr, va = split_indices(1000, 0.05, seed=7)
    assert len(va) == 50 and len(tr) == 950
    assert set(tr.tolist()).isdisjoint(va.tolist())
    assert sorted(tr.tolist() + va.tolist()) == list(range(1000))
    assert tr.tolist() == sorted(tr.tolist())
    tr2, va2 = split_indices(1000, 0.05, seed=7)
    assert torch.equal(tr, tr2) and torch.equal(va, va2)
    _, va3 = split_indices(1000, 0.05, seed=8)
    assert not torch.equal(va, va3)


def test_split_indices_edge_cases() -> None:
    assert len(split_indices(10, 0.0, 0)[1]) == 0
    assert len(split_indices(10, 0.01, 0)[1]) == 1  # at least one validation image
    tr, va = split_indices(1, 0.5, 0)
    assert (len(tr), len(va)) == (1, 0)  # never an empty training set
    with pytest.raises(ValueError, match="val_fraction"):
        split_indices(10, 1.0, 0)


# --------------------------------------------------------------------------- the real subset


@pytest.mark.slow
@pytest.mark.data
@pytest.mark.skipif(not REAL_ZIP.is_file(), reason=f"{REAL_ZIP} is absent")
def test_real_celeba_10k_zip() -> None:
    with zipfile.ZipFile(REAL_ZIP) as zf:
        attr_lines = zf.read("list_attr_celeba.txt").decode().splitlines()
        first_jpg = zf.read("img_align_celeba/000001.jpg")
    names_in_file = attr_lines[1].split()
    row_000001 = attr_lines[2].split()
    assert row_000001[0] == "000001.jpg"

    ds = load_faces(REAL_ZIP, 32, 3, "celeba", cache_dir=None)
    assert len(ds) == 10_000 and ds.skipped == 0 and ds.source == "celeba-10k"
    assert ds.file_names[0] == "000001.jpg" and ds.file_names[-1] == "010000.jpg"
    assert len(ds.attribute_names) == 40 and ds.attribute_names[0] == "5_o_Clock_Shadow"
    assert ds.attribute_names == names_in_file and ds.attribute_names[-1] == "Young"
    assert ds.attributes is not None and ds.attributes.shape == (10_000, 40)
    assert ds.attributes.dtype == torch.int8 and set(ds.attributes.unique().tolist()) == {-1, 1}
    assert ds.attributes[0].tolist() == [int(v) for v in row_000001[1:]]
    assert torch.equal(ds.images[0], expected(first_jpg))
