"""Face-found rate: the fraction of images in which the project's face detector finds a face.

A generator of faces should make images a face detector recognises, and a reconstruction
of a face should stay one; FID and SSIM say neither directly. The detector is MTCNN (Zhang
et al. 2016, *Joint Face Detection and Alignment using Multi-task Cascaded Convolutional
Networks*) as ``facegen_core.align.detect_faces`` runs it for uploads and the "align" crop,
with its usual thresholds (0.6, 0.7, 0.7) and smallest face of 20 px.

Detection runs on the 64×64 images themselves: on 40 CelebA faces at 64 px MTCNN found a
face in every one, as at 128 and 160 px after a Lanczos upscale (and ~35 ms per image on
one CPU thread either way), so no upscale is needed. Smaller images (the tests' 32 px
models) are Lanczos-upscaled to ``DETECT_MIN_SIDE`` first, so the 20 px smallest face is
the same fraction of every image.
"""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image
from tqdm import tqdm

from facegen_core.align import DetectorUnavailableError, detect_faces

DETECT_MIN_SIDE = 64  # images with a smaller side are Lanczos-upscaled to this before detection
DETECTOR = "MTCNN (facegen_core.align.detect_faces), thresholds 0.6/0.7/0.7, min face 20 px, at 64 px"

__all__ = ["DETECTOR", "DetectorUnavailableError", "face_found", "face_found_rate"]


def _to_pil(x: torch.Tensor) -> Image.Image:
    """uint8 (C, H, W), C = 1 or 3 -> an RGB PIL image at least DETECT_MIN_SIDE px high and wide."""
    arr = x.expand(3, -1, -1) if x.shape[0] == 1 else x  # grey -> RGB, as the detector wants
    img = Image.fromarray(np.ascontiguousarray(arr.permute(1, 2, 0).cpu().numpy()), "RGB")
    side = min(img.width, img.height)
    if side < DETECT_MIN_SIDE:
        scale = DETECT_MIN_SIDE / side
        img = img.resize((round(img.width * scale), round(img.height * scale)), Image.Resampling.LANCZOS)
    return img


@torch.inference_mode()
def face_found(images: torch.Tensor, progress: bool = False, desc: str = "faces") -> torch.Tensor:
    """bool (N,): whether MTCNN finds at least one face in each uint8 (N, C, H, W) image.

    Raises DetectorUnavailableError when the detector's weights are not installed.
    """
    if images.dtype != torch.uint8 or images.ndim != 4:
        raise ValueError(
            f"Face detection takes uint8 (N, C, H, W) images; got {images.dtype} {tuple(images.shape)}."
        )
    found = torch.zeros(images.shape[0], dtype=torch.bool)
    for i in tqdm(range(images.shape[0]), desc=desc, unit="img", disable=not progress, leave=False):
        found[i] = bool(detect_faces(_to_pil(images[i])))
    return found


def face_found_rate(images: torch.Tensor, progress: bool = False, desc: str = "faces") -> float:
    """Fraction of the images in which a face is found, in [0, 1]."""
    if images.shape[0] == 0:
        raise ValueError("The face-found rate needs at least one image.")
    return float(face_found(images, progress, desc).double().mean())
