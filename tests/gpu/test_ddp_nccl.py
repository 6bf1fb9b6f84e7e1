"""One real training step of the tiny config under DistributedDataParallel on NCCL, world size 1.

``training.distributed`` treats a world of 1 as "not distributed" (no DDP, no all-reduce). To
exercise the NCCL code path itself on one GPU, the test opens a 1-rank NCCL group and passes
the training code a ``DistInfo`` that reports itself enabled: ``build_nets`` then wraps the
encoder and decoder in DDP and ``train_step`` all-reduces the discriminator's gradients, as
on N GPUs.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch
import torch.distributed as dist
from torch import nn

from tests.gpu.conftest import CUDA
from tests.service.live import free_port
from training.cli import parse_train_args
from training.distributed import DistInfo
from training.step import train_step
from training.train import build_nets, model_config, step_config

pytestmark = [
    *CUDA,
    pytest.mark.skipif(
        not dist.is_available() or not dist.is_nccl_available(), reason="torch has no NCCL backend"
    ),
]


class OneRankDistInfo(DistInfo):
    """A 1-rank world that still takes the distributed code paths."""

    @property
    def enabled(self) -> bool:
        return True


@pytest.fixture()
def nccl_group() -> Iterator[torch.device]:
    device = torch.device("cuda", 0)
    torch.cuda.set_device(device)
    dist.init_process_group(
        "nccl", init_method=f"tcp://127.0.0.1:{free_port()}", rank=0, world_size=1, device_id=device
    )
    try:
        yield device
    finally:
        dist.destroy_process_group()


def _snapshot(m: nn.Module) -> list[torch.Tensor]:
    return [p.detach().clone() for p in m.parameters()]


def test_one_ddp_training_step_on_nccl(nccl_group: torch.device) -> None:
    device = nccl_group
    assert dist.get_backend() == "nccl" and dist.get_world_size() == 1 and dist.get_rank() == 0
    t = torch.ones(4, device=device)
    dist.all_reduce(t)  # the collective itself works
    assert torch.equal(t.cpu(), torch.ones(4))

    args = parse_train_args(["--dry-run", "--device", "cuda", "--seed", "0"])
    cfg = model_config(args)
    info = OneRankDistInfo(rank=0, world_size=1, device=device)
    nets = build_nets(cfg, args, info)
    assert isinstance(nets.encoder, nn.parallel.DistributedDataParallel)
    assert isinstance(nets.decoder, nn.parallel.DistributedDataParallel)
    scfg = step_config(args, device)

    g = torch.Generator().manual_seed(0)
    shape = (args.batch_size, cfg.channels, cfg.image_size, cfg.image_size)
    batch = torch.randint(0, 256, shape, generator=g, dtype=torch.uint8).to(device)
    before = {name: _snapshot(getattr(nets, name)) for name in ("encoder", "decoder", "discriminator")}

    terms = train_step(nets, batch, 0, scfg, info)  # step 0: the lazy R1 term runs too
    torch.cuda.synchronize(device)

    assert {"prior", "dis_l", "pixel", "gan_g", "gan_d", "enc", "dec", "dis"} <= set(terms)
    for name, value in terms.items():
        assert torch.isfinite(value).all(), f"loss {name} = {value.item()}"
    for name, old in before.items():
        new = list(getattr(nets, name).parameters())
        changed = sum(not torch.equal(a, b.detach()) for a, b in zip(old, new, strict=True))
        assert changed > 0, f"no parameter of the {name} changed"
        assert all(torch.isfinite(p).all() for p in new), name
