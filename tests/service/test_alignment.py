"""Face alignment of uploads (issue 10): a model trained on aligned faces (input_crop "align")
aligns every upload by default; ``align=false`` skips it; a photo without a face is a 422
``/problems/no-face`` naming the file; missing detector weights are a 503; JSON outputs give
the face's box and landmarks in the photo's pixels; models with a fixed crop are unchanged
unless ``align=true`` is sent.

The face is one FairFace photo, tests/service/data/fairface_train_24.jpg (fairface/train/24.jpg
of ../shared/data/fairface-40k-96.zip, 96×96): FairFace, Kärkkäinen & Joo, "FairFace: Face
Attribute Dataset for Balanced Race, Gender, and Age", WACV 2021, CC BY 4.0.
"""

from __future__ import annotations

import base64
import io
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import torch
from PIL import Image

from facegen_core import align
from facegen_core.align import Face
from service.errors import AlignmentUnavailableError, NoFaceFoundError
from service.uploads import decode_upload, decode_upload_and_face, upload_crop
from tests.conftest import SERVICE_SETTINGS
from tests.service.inproc import in_process
from tests.service.live import assert_problem, metric_value, png_pixels, tiny_artifact

FACE_JPG = (Path(__file__).parent / "data" / "fairface_train_24.jpg").read_bytes()
SIDE = 32  # the tiny model
FACE_SIDE = 96  # the FairFace photo
LANDMARKS = ("left_eye", "right_eye", "nose", "mouth_left", "mouth_right")
DECODE: dict[str, Any] = {"max_pixels": 10**7, "image_size": SIDE, "channels": 3}


def png(img: Image.Image, **save: Any) -> bytes:
    buf = io.BytesIO()
    img.save(buf, "PNG", **save)
    return buf.getvalue()


def face_photo() -> Image.Image:
    return Image.open(io.BytesIO(FACE_JPG)).convert("RGB")


FLAT = png(Image.new("RGB", (96, 96), (128, 140, 150)))  # no face: a flat colour
NOISE = png(Image.fromarray(np.random.default_rng(0).integers(0, 256, (80, 120, 3), dtype=np.uint8)))


def files(*blobs: bytes, field: str = "image") -> list[tuple[str, tuple[str, bytes, str]]]:
    return [(field, (f"photo{i}.png", b, "image/png")) for i, b in enumerate(blobs)]


def landmark_array(face: dict[str, Any]) -> np.ndarray:
    return np.array([face["landmarks"][k] for k in LANDMARKS])  # (5, 2)


def assert_plausible_face(face: dict[str, Any], width: int, height: int) -> None:
    """A box around landmarks that lie inside the photo, eyes above the mouth, left eye left."""
    assert set(face) == {"box", "landmarks", "score"} and set(face["landmarks"]) == set(LANDMARKS)
    pts = landmark_array(face)
    assert ((pts >= 0) & (pts < [width, height])).all(), pts
    left, top, right, bottom = face["box"]
    assert (left < pts[:, 0]).all() and (pts[:, 0] < right).all(), (face["box"], pts)
    assert (top < pts[:, 1]).all() and (pts[:, 1] < bottom).all(), (face["box"], pts)
    assert pts[0, 0] < pts[1, 0] and max(pts[0, 1], pts[1, 1]) < min(pts[3, 1], pts[4, 1])
    assert 0.9 < face["score"] <= 1.0


@pytest.fixture(autouse=True)
def _one_thread() -> None:
    torch.set_num_threads(1)  # the in-process MTCNN runs


# --------------------------------------------------------------------------- in process


def test_upload_crop_follows_the_model_unless_asked() -> None:
    assert [upload_crop("align", a) for a in (None, True, False)] == ["align", "align", "celeba"]
    assert [upload_crop("celeba", a) for a in (None, True, False)] == ["celeba", "align", "celeba"]
    assert [upload_crop("center", a) for a in (None, True, False)] == ["center", "align", "center"]


@pytest.mark.parametrize("blob", [FLAT, NOISE], ids=["flat", "noise"])
def test_no_face_is_a_422_naming_the_field(blob: bytes) -> None:
    with pytest.raises(NoFaceFoundError) as info:
        decode_upload_and_face(blob, crop="align", field="image[3]", **DECODE)
    problem = info.value.to_problem()
    assert (problem["status"], problem["type"], problem["field"]) == (422, "/problems/no-face", "image[3]")
    assert "'image[3]'" in problem["detail"] and "align=false" in problem["detail"]
    assert "20 px" in problem["detail"]
    arr, face = decode_upload_and_face(blob, crop=upload_crop("align", False), **DECODE)
    assert face is None and arr.shape == (SIDE, SIDE, 3)


def test_missing_detector_weights_are_a_503(monkeypatch: pytest.MonkeyPatch) -> None:
    def missing() -> Path:
        raise align.DetectorUnavailableError("The face detector's weights are not installed.")

    monkeypatch.setattr(align, "_NETS", None)  # not loaded yet
    monkeypatch.setattr(align, "weights_dir", missing)
    with pytest.raises(AlignmentUnavailableError) as info:
        decode_upload_and_face(FACE_JPG, crop="align", **DECODE)
    problem = info.value.to_problem()
    assert (problem["status"], problem["type"]) == (503, "/problems/alignment-unavailable")
    assert "not installed" in problem["detail"] and "align=false" in problem["detail"]


def test_a_face_is_aligned_and_located_in_the_photo() -> None:
    arr, face = decode_upload_and_face(FACE_JPG, crop="align", **DECODE)
    assert isinstance(face, Face) and arr.shape == (SIDE, SIDE, 3)
    assert_plausible_face(face.to_dict(), FACE_SIDE, FACE_SIDE)
    # The aligned crop is what preprocess makes of the photo: the same code as training.
    expected = align.warp_to_template(face_photo(), face.landmarks, SIDE)
    np.testing.assert_array_equal(arr, np.asarray(expected))


def test_face_coordinates_are_in_the_uploaded_photos_pixels_after_exif_rotation() -> None:
    _, small = decode_upload_and_face(FACE_JPG, crop="align", **DECODE)
    assert small is not None
    # The face at 3× on a larger canvas, 70 px from the left and 25 from the top.
    canvas = Image.new("RGB", (400, 330), (90, 120, 60))
    canvas.paste(face_photo().resize((288, 288), Image.Resampling.LANCZOS), (70, 25))
    _, big = decode_upload_and_face(png(canvas), crop="align", **DECODE)
    assert big is not None
    np.testing.assert_allclose(big.landmarks, small.landmarks * 3 + [70, 25], atol=6.0)
    # Stored sideways with EXIF orientation 6 ("rotate 90° clockwise to view"): the face is
    # reported where it is in the photo as viewed, exactly as for the upright file.
    exif = Image.Exif()
    exif[0x0112] = 6
    sideways = png(canvas.transpose(Image.Transpose.ROTATE_90), exif=exif)
    _, viewed = decode_upload_and_face(sideways, crop="align", **DECODE)
    assert viewed is not None
    np.testing.assert_allclose(viewed.landmarks, big.landmarks, atol=1e-6)
    np.testing.assert_allclose(viewed.box, big.box, atol=1e-6)


def test_fixed_crops_are_unchanged_and_have_no_face() -> None:
    for crop in ("celeba", "center", "none"):
        arr, face = decode_upload_and_face(FACE_JPG, crop=crop, **DECODE)
        assert face is None
        np.testing.assert_array_equal(arr, decode_upload(FACE_JPG, crop=crop, **DECODE))


# --------------------------------------------------------------------------- HTTP


@pytest.fixture(scope="module")
def aligned(tmp_path_factory: pytest.TempPathFactory) -> Iterator[httpx.Client]:
    """The app, in this process, on a tiny model trained (so to speak) on aligned faces."""
    store = tmp_path_factory.mktemp("align_store")
    tiny_artifact(store, name="tinyalign", input_crop="align")
    with in_process(store, **SERVICE_SETTINGS) as c:
        yield c


def encode(client: httpx.Client, *blobs: bytes, **form: str) -> httpx.Response:
    return client.post("/encode", files=files(*blobs), data=form)


def test_models_reports_the_align_crop_and_uploads_are_aligned_by_default(aligned: httpx.Client) -> None:
    assert aligned.get("/readyz").json()["model"] == "tinyalign"
    assert aligned.get("/models").json()["loaded"]["input_crop"] == "align"
    r = encode(aligned, FACE_JPG)
    assert r.status_code == 200, r.text
    (item,) = r.json()["items"]
    assert_plausible_face(item["face"], FACE_SIDE, FACE_SIDE)
    # The latent is the aligned crop's: that crop sent as a 32×32 PNG without alignment (its
    # fixed crop is then the whole image, unresized) encodes to the same mu, bit for bit.
    arr, _ = decode_upload_and_face(FACE_JPG, crop="align", **DECODE)
    r2 = encode(aligned, png(Image.fromarray(arr)), align="false")
    assert r2.status_code == 200, r2.text
    assert r2.json()["items"][0]["face"] is None
    assert r2.json()["items"][0]["mu"] == item["mu"]


@pytest.mark.parametrize("blob", [FLAT, NOISE], ids=["flat", "noise"])
def test_no_face_is_422_and_align_false_skips_alignment(aligned: httpx.Client, blob: bytes) -> None:
    before = metric_value(aligned.get("/metrics").text, "facegen_rejected_total", 'reason="no_face"')
    body = assert_problem(encode(aligned, blob), 422, "image")
    assert body["type"] == "/problems/no-face" and body["title"] == "No face found"
    assert "align=false" in body["detail"] and "face" in body["detail"]
    after = metric_value(aligned.get("/metrics").text, "facegen_rejected_total", 'reason="no_face"')
    assert after == before + 1
    r = encode(aligned, blob, align="false")
    assert r.status_code == 200, r.text
    assert r.json()["items"][0]["face"] is None


def test_the_file_without_a_face_is_named(aligned: httpx.Client) -> None:
    body = assert_problem(encode(aligned, FACE_JPG, FACE_JPG, FLAT), 422, "image[2]")
    assert body["type"] == "/problems/no-face" and "'image[2]'" in body["detail"]


def test_reconstruct_json_has_faces_and_png_is_unchanged(aligned: httpx.Client) -> None:
    r = aligned.post("/reconstruct", files=files(FACE_JPG, FLAT), data={"format": "json", "align": "false"})
    assert r.status_code == 200, r.text
    assert r.json()["faces"] == [None, None]
    r = aligned.post("/reconstruct", files=files(FACE_JPG), data={"format": "json", "pair": "true"})
    assert r.status_code == 200, r.text
    body = r.json()
    (face,) = body["faces"]
    assert_plausible_face(face, FACE_SIDE, FACE_SIDE)
    # The echoed input crop is the aligned face.
    arr, _ = decode_upload_and_face(FACE_JPG, crop="align", **DECODE)
    np.testing.assert_array_equal(png_pixels(base64.b64decode(body["inputs"][0])), arr)
    # PNG output: one reconstruction, as before.
    r = aligned.post("/reconstruct", files=files(FACE_JPG))
    assert r.status_code == 200 and r.headers["content-type"] == "image/png"
    assert png_pixels(r.content).shape == (SIDE, SIDE, 3)
    assert_problem(aligned.post("/reconstruct", files=files(FLAT)), 422, "image")


def test_interpolate_multipart_aligns_its_photos(aligned: httpx.Client) -> None:
    def post(start: bytes, **form: str) -> httpx.Response:
        return aligned.post(
            "/interpolate",
            files={"start_image": ("a.png", start, "image/png")},
            data={"end_seed": "3", "steps": "3", "format": "json", **form},
        )

    body = assert_problem(post(FLAT), 422, "start_image")
    assert body["type"] == "/problems/no-face" and "'start_image'" in body["detail"]
    assert post(FLAT, align="false").status_code == 200
    r = post(FACE_JPG)
    assert r.status_code == 200, r.text
    # The start frame's latent is the aligned photo's mu.
    mu = encode(aligned, FACE_JPG).json()["items"][0]["mu"]
    np.testing.assert_allclose(r.json()["latents"][0], mu, rtol=1e-5, atol=1e-5)
    bad = assert_problem(post(FACE_JPG, align="maybe"), 422, "align")
    assert bad["type"] == "/problems/invalid-field"


def test_align_must_be_a_boolean(aligned: httpx.Client) -> None:
    body = assert_problem(encode(aligned, FACE_JPG, align="maybe"), 422, "align")
    assert body["type"] == "/problems/invalid-field"


def test_openapi_documents_align_and_the_no_face_problem(aligned: httpx.Client) -> None:
    spec = aligned.get("/openapi.json").json()
    schemas = spec["components"]["schemas"]
    for path in ("/encode", "/reconstruct"):
        op = spec["paths"][path]["post"]
        ref = op["requestBody"]["content"]["multipart/form-data"]["schema"]["$ref"].split("/")[-1]
        assert "align" in schemas[ref]["properties"], path
        problems = op["responses"]["422"]["content"]["application/problem+json"]["examples"]
        assert problems["no-face"]["value"]["type"] == "/problems/no-face"
        assert "align=false" in problems["no-face"]["value"]["detail"]
        assert problems["invalid-field"]["value"]["type"] == "/problems/invalid-field"
        unavailable = op["responses"]["503"]["content"]["application/problem+json"]["examples"]
        assert unavailable["alignment-unavailable"]["value"]["status"] == 503
    interpolate = spec["paths"]["/interpolate"]["post"]
    form = interpolate["requestBody"]["content"]["multipart/form-data"]["schema"]
    assert form["properties"]["align"]["type"] == "boolean"
    assert "DetectedFace" in schemas and "face" in schemas["LatentStats"]["properties"]
    assert "faces" in schemas["ReconstructResponse"]["properties"]


# ------------------------------------------------ a model with a fixed crop (the session's tiny)


def test_fixed_crop_models_are_unchanged_unless_align_is_sent(client: httpx.Client) -> None:
    default = encode(client, FACE_JPG)
    assert default.status_code == 200, default.text
    item = default.json()["items"][0]
    assert item["face"] is None
    # Bit-identical to the fixed crop, whether align is left out or false.
    assert encode(client, FACE_JPG, align="false").json()["items"][0] == item
    crop = decode_upload(FACE_JPG, crop="celeba", **DECODE)
    assert encode(client, png(Image.fromarray(crop))).json()["items"][0]["mu"] == item["mu"]
    # Asked explicitly, it aligns: a face, and a different input.
    asked = encode(client, FACE_JPG, align="true")
    assert asked.status_code == 200, asked.text
    assert_plausible_face(asked.json()["items"][0]["face"], FACE_SIDE, FACE_SIDE)
    assert asked.json()["items"][0]["mu"] != item["mu"]
    assert_problem(encode(client, FLAT, align="true"), 422, "image")
    assert encode(client, FLAT).status_code == 200


def test_face_coordinates_of_a_shrunk_upload_are_in_its_full_size_pixels() -> None:
    """A 2,400×2,100 photo is aligned on its shrunk copy (issue 12); the face is still reported
    in the upload's own pixels: the face at 8× on the canvas, 300 px from the left, 250 down."""
    _, small = decode_upload_and_face(FACE_JPG, crop="align", **DECODE)
    assert small is not None
    canvas = Image.new("RGB", (2400, 2100), (90, 120, 60))
    canvas.paste(face_photo().resize((768, 768), Image.Resampling.LANCZOS), (300, 250))
    _, big = decode_upload_and_face(png(canvas), crop="align", **DECODE)
    assert big is not None
    np.testing.assert_allclose(big.landmarks, small.landmarks * 8 + [300, 250], atol=16.0)
