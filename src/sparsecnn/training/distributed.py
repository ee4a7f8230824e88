"""Data-parallel process group of a run: which rank this process is, of how many.

Under ``torchrun`` (``WORLD_SIZE > 1``) a gloo process group is initialised here unless the
caller already has one; a single process is rank 0 of 1 and never touches
``torch.distributed``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch

__all__ = ["ProcessGroup", "join_process_group"]


@dataclass
class ProcessGroup:
    """This process's ``rank`` of ``world_size``; ``initialized_here`` when
    :func:`join_process_group` created the group (and :meth:`leave` must destroy it)."""

    rank: int = 0
    world_size: int = 1
    initialized_here: bool = False

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    def all_ready(self, ready: bool) -> bool:
        """Whether every rank is ``ready`` (the minimum over ranks)."""
        if not self.enabled:
            return ready
        import torch.distributed as dist

        flag = torch.tensor([1 if ready else 0])
        dist.all_reduce(flag, op=dist.ReduceOp.MIN)
        return int(flag) == 1

    def sum(self, value: float) -> float:
        """``value`` summed over ranks (in float64)."""
        if not self.enabled:
            return value
        import torch.distributed as dist

        total = torch.tensor([value], dtype=torch.float64)
        dist.all_reduce(total)
        return float(total)

    def leave(self) -> None:
        """Destroy the process group if :func:`join_process_group` created it."""
        if self.initialized_here:
            import torch.distributed as dist

            dist.destroy_process_group()


def join_process_group() -> ProcessGroup:
    """The caller's process group, a new gloo one under ``torchrun``, or rank 0 of 1."""
    import torch.distributed as dist

    if not dist.is_available():
        return ProcessGroup()
    initialized_here = False
    if not dist.is_initialized() and int(os.environ.get("WORLD_SIZE", "1")) > 1:
        dist.init_process_group("gloo")
        initialized_here = True
    if not dist.is_initialized():
        return ProcessGroup()
    return ProcessGroup(dist.get_rank(), dist.get_world_size(), initialized_here)
