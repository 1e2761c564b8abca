"""torchrun process group: who this process is, and the collective decisions every rank must take together."""
from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
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

    def from_main(self, make: Callable[[], T]) -> T:
        """Rank 0 computes make() and every rank gets its result (or raises its exception): work done once."""
        if self.world_size == 1:
            return make()
        holder: list[Any] = [None, None]
        if self.is_main:
            try:
                holder[0] = make()
            except Exception as err:  # noqa: BLE001 - re-raised on every rank below
                holder[1] = err
        dist.broadcast_object_list(holder, src=0)
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
