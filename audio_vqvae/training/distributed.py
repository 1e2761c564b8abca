"""torchrun process group: who this process is, and the collective decisions every rank must take together."""
from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any, TypeVar

import torch
import torch.distributed as dist

T = TypeVar("T")


@dataclass
class Distributed:
    """torchrun environment (world size 1 when launched directly)."""

    rank: int = 0
    local_rank: int = 0
    world_size: int = 1
    wait_timeout_s: float = 4 * 3600.0
    """How long `from_main` lets the other ranks wait for rank 0's work (trainer.wait_timeout_s)."""
    _wait_groups: dict[float, Any] = field(default_factory=dict, repr=False, compare=False)

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @classmethod
    def from_env(cls) -> Distributed:
        env = os.environ
        return cls(int(env.get("RANK", 0)), int(env.get("LOCAL_RANK", 0)), int(env.get("WORLD_SIZE", 1)))

    def init(self, device: torch.device) -> None:
        """Join the process group (NCCL on GPU, gloo on CPU) unless single-process or already joined."""
        if self.world_size > 1 and not dist.is_initialized():
            dist.init_process_group("nccl" if device.type == "cuda" else "gloo")

    def agree(self, flag: bool | torch.Tensor, every: bool) -> bool:
        """True when `flag` holds on every rank (every=True) or on any rank (every=False); the same on all ranks, so
        all take the same branch (a rank that branched alone would leave the others waiting in a collective)."""
        value = torch.as_tensor(flag).to(torch.int32).reshape(())
        if self.world_size > 1:
            if value.device.type == "cpu" and dist.get_backend() == "nccl":
                value = value.cuda()
            dist.all_reduce(value, op=dist.ReduceOp.MIN if every else dist.ReduceOp.MAX)
        return bool(value)

    def wait_group(self, timeout_s: float) -> Any:
        """A gloo group of every rank whose collectives wait up to timeout_s (the default group's timeout, 10 or 30
        minutes, is too short for work rank 0 does alone); created once per timeout, collectively."""
        if timeout_s not in self._wait_groups:
            self._wait_groups[timeout_s] = dist.new_group(backend="gloo", timeout=timedelta(seconds=timeout_s))
        return self._wait_groups[timeout_s]

    def from_main(self, make: Callable[[], T], timeout_s: float | None = None) -> T:
        """Rank 0 computes make() and every rank gets its result (or raises its exception): work done once. The other
        ranks wait up to timeout_s (default: wait_timeout_s) for it, not the process group's default timeout."""
        if self.world_size == 1:
            return make()
        group = self.wait_group(self.wait_timeout_s if timeout_s is None else timeout_s)
        holder: list[Any] = [None, None]
        if self.is_main:
            try:
                holder[0] = make()
            except Exception as err:  # noqa: BLE001 - re-raised on every rank below
                holder[1] = err
        dist.broadcast_object_list(holder, src=0, group=group)
        if holder[1] is not None:
            raise holder[1]
        return holder[0]

    def gather(self, mine: T) -> list[T]:
        """Every rank's object (index = rank)."""
        if self.world_size == 1:
            return [mine]
        objects: list[Any] = [None] * self.world_size
        dist.all_gather_object(objects, mine)
        return objects
