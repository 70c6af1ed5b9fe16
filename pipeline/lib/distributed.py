"""Data parallelism: one process per device under torchrun (NCCL on GPUs, gloo on CPU).

The `finetune` stage relaunches itself through torchrun when `runtime.processes > 1`, so DVC,
Snakemake and a person still call the same `python -m pipeline finetune <method>`.
"""
from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

from pipeline.lib.models import resolve_device


@dataclass(frozen=True)
class Context:
    rank: int
    world: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world > 1


def launched_by_torchrun() -> bool:
    return "LOCAL_RANK" in os.environ and int(os.environ.get("WORLD_SIZE", "1")) > 1


def setup(requested_device: str) -> Context:
    """Join the process group when launched by torchrun; otherwise a single-process context."""
    device = resolve_device(requested_device)
    if not launched_by_torchrun():
        return Context(0, 1, device)
    local_rank = int(os.environ["LOCAL_RANK"])
    if device.type == "cuda":
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
    dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return Context(dist.get_rank(), dist.get_world_size(), device)


def broadcast_from_main(tensors: list[torch.Tensor], ctx: Context) -> list[torch.Tensor]:
    """Rank 0's values of `tensors` on every rank (the others pass tensors of the same shapes)."""
    if ctx.distributed:
        for t in tensors:
            dist.broadcast(t, 0)
    return tensors


def gather(tensor: torch.Tensor, world: int) -> torch.Tensor:
    """Every rank's `tensor`, concatenated (the global batch of a batch-structure loss). Differentiable:
    with DDP's gradient averaging, a loss computed on the gathered batch on every rank gets exactly the
    single-process gradient."""
    if world <= 1:
        return tensor
    if tensor.requires_grad:
        import torch.distributed.nn.functional as dist_nn
        return torch.cat(dist_nn.all_gather(tensor))
    parts = [torch.empty_like(tensor) for _ in range(world)]
    dist.all_gather(parts, tensor.contiguous())
    return torch.cat(parts)


def mean_over_ranks(tensors: list[torch.Tensor], world: int) -> list[torch.Tensor]:
    """The mean of each tensor over ranks, in place (a per-rank gradient summed into the global one)."""
    if world > 1:
        for t in tensors:
            dist.all_reduce(t)
            t /= world
    return tensors


def teardown(ctx: Context) -> None:
    if ctx.distributed and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


def relaunch_with_torchrun(processes: int, argv: list[str]) -> None:
    """Run `python -m pipeline <argv>` as `processes` workers on this node (torchrun)."""
    from torch.distributed.run import main as torchrun

    torchrun(["--standalone", f"--nproc_per_node={processes}", "-m", "pipeline", *argv])
