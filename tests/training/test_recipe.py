"""The v3 recipe's parts, each on its own: the GAN's running latent prior, the per-channel
Dis_l likelihood, the pooled pixel term, the learning-rate decay, nearest upsampling, and
face packs."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import pytest
import torch

from facegen_core.config import ModelConfig
from facegen_core.networks import Decoder
from training import losses
from training.data import load_faces, synthetic_faces
from training.facepack import ZIP_BYTES_FIXED, FacePackError, write_facepack
from training.prior import RunningGaussian
from training.train import lr_factor


def test_the_running_gaussian_tracks_the_encoder_means() -> None:
    g = torch.Generator().manual_seed(0)
    d = 6
    a = torch.randn(d, d, generator=g)
    true_cov = a @ a.T + 0.1 * torch.eye(d)
    true_mean = torch.randn(d, generator=g) * 5  # off-centre, as v2's posterior was
    chol = torch.linalg.cholesky(true_cov)
    prior = RunningGaussian(d, torch.device("cpu"), momentum=0.02)
    for _ in range(600):
        mu = true_mean + torch.randn(64, d, generator=g) @ chol.T  # a batch of encoder means
        prior.update(mu)
    torch.testing.assert_close(prior.mean, true_mean, atol=0.3, rtol=0)
    L = prior.scale_tril()
    torch.testing.assert_close(L @ L.T, true_cov, atol=0.25 * float(true_cov.abs().max()), rtol=0)
    torch.manual_seed(1)
    z = prior.sample(torch.empty(20_000, d))
    assert z.shape == (20_000, d)
    torch.testing.assert_close(z.mean(0), true_mean, atol=0.3, rtol=0)


def test_the_running_gaussian_starts_from_its_first_batches_and_survives_a_round_trip() -> None:
    prior = RunningGaussian(3, torch.device("cpu"))
    prior.update(torch.full((8, 3), 10.0))  # first batch weighs 1/(0+1): not a drift from N(0, I)
    torch.testing.assert_close(prior.mean, torch.full((3,), 10.0))
    # One point repeated: a rank-0 covariance still factors (ridge), never NaN.
    assert torch.isfinite(prior.scale_tril()).all()
    other = RunningGaussian(3, torch.device("cpu"))
    other.load_state_dict(prior.state_dict())
    assert (
        other.updates == 1 and torch.equal(other.mean, prior.mean) and torch.equal(other.second, prior.second)
    )


def test_per_channel_dis_l_weighs_every_channel_in_its_own_units() -> None:
    g = torch.Generator().manual_seed(0)
    real = torch.randn(8, 4, 5, 5, generator=g)
    recon = real + 0.1 * torch.randn(8, 4, 5, 5, generator=g)
    scale = torch.tensor([1.0, 100.0, 0.1, 3.0]).view(1, 4, 1, 1)  # a loud and a quiet channel
    raw = losses.dis_l_likelihood(recon * scale, real * scale)
    normed = losses.dis_l_likelihood(recon * scale, real * scale, per_channel=True)
    base = losses.dis_l_likelihood(recon, real, per_channel=True)
    # Raw: the loud channel is everything; per channel: the scales cancel (up to the 1e-4 floor).
    assert float(raw) > 100 * float(losses.dis_l_likelihood(recon, real))
    torch.testing.assert_close(normed, base, rtol=0.02, atol=0)


def test_the_pooled_pixel_term_ignores_detail_but_not_colour() -> None:
    x = torch.zeros(2, 3, 16, 16)
    checker = (torch.arange(16)[:, None] + torch.arange(16)[None, :]) % 2 * 2.0 - 1.0  # ±1, 2×2-periodic
    detail = x + 0.5 * checker
    assert float(losses.pixel_likelihood(detail, x)) == pytest.approx(0.25)
    assert float(losses.pixel_likelihood(detail, x, pool=4)) == pytest.approx(0.0, abs=1e-12)
    assert float(losses.pixel_likelihood(x + 0.5, x, pool=4)) == pytest.approx(0.25)


@pytest.mark.parametrize(
    ("progress", "want"), [(0.0, 1.0), (0.5, 1.0), (0.8, 1.0), (0.9, 0.5), (1.0, 0.0), (1.2, 0.0)]
)
def test_learning_rate_decays_linearly_over_the_last_share(progress: float, want: float) -> None:
    assert lr_factor(progress, 0.2) == pytest.approx(want)
    assert lr_factor(progress, 0.0) == 1.0


def test_nearest_upsampling_doubles_each_side_and_old_configs_stay_deconv(tmp_path: Path) -> None:
    cfg = ModelConfig.tiny(upsample="nearest")
    dec = Decoder(cfg)
    assert dec(torch.randn(2, cfg.latent_dim)).shape == (2, 3, 32, 32)
    assert not any(isinstance(m, torch.nn.ConvTranspose2d) for m in dec.modules())
    old = ModelConfig.tiny().to_dict()
    del old["upsample"]  # a config.json written before the field existed
    assert ModelConfig.from_dict(old).upsample == "deconv"
    with pytest.raises(ValueError, match="upsample"):
        ModelConfig.tiny(upsample="bilinear")


def test_a_face_pack_round_trips_through_load_faces(tmp_path: Path) -> None:
    ds = synthetic_faces(12, 32, 3, seed=2)
    pack = tmp_path / "synthetic.facepack.zip"
    size = write_facepack(ds.images, "synthetic", "align", pack, quality=90)
    assert size == pack.stat().st_size
    back = load_faces(pack, 32, 3, "align", cache_dir=None)
    assert back.source == "synthetic" and back.images.shape == ds.images.shape
    err = (back.images.float() - ds.images.float()).abs().mean()
    assert float(err) < 3.0  # lossy WebP, but the same faces in the same order
    with zipfile.ZipFile(pack) as zf:
        assert json.loads(zf.read("facepack.json"))["count"] == 12


def test_a_face_pack_with_a_size_limit_holds_the_longest_prefix_that_fits(tmp_path: Path) -> None:
    ds = synthetic_faces(40, 32, 3, seed=4)
    full = write_facepack(ds.images, "synthetic", "align", tmp_path / "full.facepack.zip")
    limit = full * 6 // 10
    pack = tmp_path / "part.facepack.zip"
    size = write_facepack(ds.images, "synthetic", "align", pack, max_bytes=limit)
    assert size <= limit
    with zipfile.ZipFile(pack) as zf:
        meta = json.loads(zf.read("facepack.json"))
    n = meta["count"]
    assert meta["of"] == 40 and 15 <= n < 40
    back = load_faces(pack, 32, 3, "align", cache_dir=None)
    first = load_faces(tmp_path / "full.facepack.zip", 32, 3, "align", cache_dir=None).images[:n]
    assert torch.equal(back.images, first)  # the first n faces, in order: a --limit n run
    # The prefix is the longest that fits, but for the fixed slack left for the zip's own records.
    one_more = write_facepack(ds.images[: n + 1], "synthetic", "align", tmp_path / "more.facepack.zip")
    assert one_more + ZIP_BYTES_FIXED > limit
    with pytest.raises(FacePackError, match="Not one face"):
        write_facepack(ds.images, "synthetic", "align", tmp_path / "none.facepack.zip", max_bytes=100)


def test_a_face_pack_made_for_another_crop_or_size_is_refused(tmp_path: Path) -> None:
    pack = tmp_path / "p.facepack.zip"
    write_facepack(synthetic_faces(4, 32, 3).images, "synthetic", "align", pack)
    with pytest.raises(FacePackError, match="crop"):
        load_faces(pack, 32, 3, "celeba", cache_dir=None)
    with pytest.raises(FacePackError, match="image_size"):
        load_faces(pack, 64, 3, "align", cache_dir=None)
