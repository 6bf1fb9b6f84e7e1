"""torchrun support: one process per GPU, DistributedDataParallel per network.

Without torchrun's environment (WORLD_SIZE unset or 1) everything here is a no-op and the
run is a plain single-process one.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterable
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn

from facegen_core.device import resolve_device


@dataclass(frozen=True)
class DistInfo:
    rank: int
    world_size: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


def init_distributed(device_pref: str) -> DistInfo:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistInfo(0, 1, resolve_device(device_pref))
    rank, local_rank = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    base = resolve_device(device_pref)
    if base.type == "cuda":
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
        backend = "nccl"
    else:
        device, backend = base, "gloo"
    if not dist.is_initialized():
        dist.init_process_group(backend)
    return DistInfo(rank, world, device)


def wrap(module: nn.Module, info: DistInfo) -> nn.Module:
    if not info.enabled:
        return module
    ids = [info.device.index] if info.device.type == "cuda" else None
    return nn.parallel.DistributedDataParallel(module, device_ids=ids)


def average_gradients(module: nn.Module, info: DistInfo | None) -> None:
    """Mean of every parameter's gradient over the ranks, in one flat all-reduce."""
    if info is None or not info.enabled:
        return
    grads = [p.grad for p in module.parameters() if p.grad is not None]
    if not grads:
        return
    flat = torch.cat([g.reshape(-1) for g in grads]).div_(info.world_size)
    dist.all_reduce(flat)
    offset = 0
    for g in grads:
        g.copy_(flat[offset : offset + g.numel()].view_as(g))
        offset += g.numel()


def any_rank(flag: bool, info: DistInfo) -> bool:
    """True on every rank if it is true on any: ranks must agree to stop together."""
    if not info.enabled:
        return flag
    t = torch.tensor([1.0 if flag else 0.0], device=info.device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item() > 0)


def max_over_ranks(value: float, info: DistInfo) -> float:
    """The largest ``value`` of any rank, on every rank: what every rank decides from a
    clock (stop now? which learning rate?) must be the same on all of them, or their
    weights drift apart."""
    if not info.enabled:
        return value
    t = torch.tensor([value], dtype=torch.float64, device=info.device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return float(t.item())


def parameter_sha256(modules: Iterable[nn.Module]) -> str:
    """sha256 of every parameter's bytes, in order: equal on two ranks iff their weights are
    bit-identical."""
    h = hashlib.sha256()
    for m in modules:
        for p in m.parameters():
            h.update(p.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


def all_gather_hex(digest: str, info: DistInfo) -> list[str]:
    """Every rank's hex digest, in rank order (a uint8 tensor all-gather: no pickling)."""
    if not info.enabled:
        return [digest]
    t = torch.tensor(list(bytes.fromhex(digest)), dtype=torch.uint8, device=info.device)
    out = [torch.empty_like(t) for _ in range(info.world_size)]
    dist.all_gather(out, t)
    return [bytes(o.cpu().tolist()).hex() for o in out]


def barrier(info: DistInfo) -> None:
    if info.enabled:
        dist.barrier()


def shutdown(info: DistInfo) -> None:
    if info.enabled and dist.is_initialized():
        dist.destroy_process_group()
