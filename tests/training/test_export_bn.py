"""Export recomputes the EMA decoder's BatchNorm statistics on the training mixture."""

from __future__ import annotations

import torch

from facegen_core import ModelConfig, build_autoencoder
from training.export import calibration_faces, recalibrate_bn


def test_statistics_are_those_of_one_training_style_batch() -> None:
    torch.manual_seed(0)
    cfg = ModelConfig.tiny()
    encoder, decoder = build_autoencoder(cfg)
    bns = [m for m in decoder.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    seen: dict[int, torch.Tensor] = {}
    hooks = [m.register_forward_hook(lambda m, i, o: seen.__setitem__(id(m), i[0].detach())) for m in bns]
    faces = torch.randint(0, 256, (6, cfg.channels, cfg.image_size, cfg.image_size), dtype=torch.uint8)
    used = recalibrate_bn(encoder, decoder, faces, batch=6)
    for h in hooks:
        h.remove()
    assert used == 6 and not decoder.training
    for m in bns:
        x = seen[id(m)]  # (12, C) or (12, C, H, W): 6 posterior samples + 6 prior draws
        assert x.shape[0] == 12
        dims = [0] if x.dim() == 2 else [0, 2, 3]
        assert m.running_mean is not None and m.running_var is not None
        torch.testing.assert_close(m.running_mean, x.mean(dim=dims))
        torch.testing.assert_close(m.running_var, x.var(dim=dims, unbiased=True))
        assert m.momentum == 0.1  # restored for anyone who trains this decoder further


def test_calibration_faces_are_drawn_from_every_source() -> None:
    """A two-source training set is the sources one after the other; the BatchNorm passes must
    see both, in proportion, and the same faces on every export."""
    first = torch.zeros(6000, 1, 2, 2, dtype=torch.uint8)  # source A
    second = torch.full((24000, 1, 2, 2), 255, dtype=torch.uint8)  # source B, 4× as many
    train = torch.cat([first, second])
    calib = calibration_faces(train, n=4096)
    assert calib.shape == (4096, 1, 2, 2)
    share_b = float((calib == 255).float().mean())
    assert 0.75 < share_b < 0.85  # ~80%, not the 0% of the first 4,096
    assert torch.equal(calib, calibration_faces(train, n=4096))  # seeded
    small = train[:100]
    assert calibration_faces(small, n=4096) is small
