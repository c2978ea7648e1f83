"""Data parallelism for the training loop: joining ``torchrun``'s process group and keeping ranks in step.

Without ``torchrun`` (one process) every helper here is a no-op, so the loop calls them unconditionally.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn

__all__ = ["ProcessGroup", "all_reduce_sum", "average_buffers", "join_process_group"]


@dataclass(frozen=True)
class ProcessGroup:
    """This process's ``rank`` among ``world`` processes; ``owns_group`` if it created the group (and must
    destroy it)."""

    rank: int = 0
    world: int = 1
    owns_group: bool = False

    @property
    def active(self) -> bool:
        return self.world > 1


def join_process_group(device: torch.device) -> ProcessGroup:
    """Join the process group that ``torchrun`` describes (or one the caller already initialised)."""
    if dist.is_available() and dist.is_initialized():
        return ProcessGroup(dist.get_rank(), dist.get_world_size())
    # torchrun's contract: RANK / WORLD_SIZE / MASTER_ADDR in the environment (init_method "env://").
    if dist.is_available() and int(os.environ.get("WORLD_SIZE", "1")) > 1:
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
        return ProcessGroup(dist.get_rank(), dist.get_world_size(), owns_group=True)
    return ProcessGroup()


def all_reduce_sum(totals: torch.Tensor, group: ProcessGroup) -> list[float]:
    """``totals`` summed over every rank, as plain floats."""
    if group.active:
        dist.all_reduce(totals)
    return totals.tolist()


def average_buffers(model: nn.Module, group: ProcessGroup) -> None:
    """Make every rank's buffers (BatchNorm statistics) equal: float ones averaged, others from rank 0."""
    if not group.active:
        return
    for buffer in model.buffers():
        if buffer.is_floating_point():
            dist.all_reduce(buffer)
            buffer.div_(group.world)
        else:
            dist.broadcast(buffer, 0)
