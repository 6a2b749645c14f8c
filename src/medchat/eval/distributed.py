"""Evaluation across processes (torchrun, accelerate launch): each rank answers a shard of the
questions and rank 0 gathers them back in order. One process needs none of it."""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Ranks:
    """This process's place among the evaluation processes (1 without torchrun)."""

    rank: int = 0
    world: int = 1
    owns_group: bool = False


def init_ranks() -> Ranks:
    """Join the process group when launched with WORLD_SIZE > 1 (torchrun, accelerate launch)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Ranks()
    import torch
    import torch.distributed as dist

    owns = not dist.is_initialized()
    if owns:
        if torch.cuda.is_available():
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
        dist.init_process_group(backend="nccl" if torch.cuda.is_available() else "gloo")
    return Ranks(dist.get_rank(), dist.get_world_size(), owns)


def shard(items: Sequence[Any], rank: int, world: int) -> list[Any]:
    """The items rank `rank` answers: indices rank, rank + world, ..."""
    return list(items[rank::world])


def merge_shards(shards: Sequence[Sequence[Any]]) -> list[Any]:
    """Inverse of `shard`: shard r's j-th item goes back to index r + j * world."""
    world = len(shards)
    total = sum(len(s) for s in shards)
    merged = [None] * total
    for r, part in enumerate(shards):
        merged[r::world] = list(part)
    return merged


def broadcast(obj: Any, ranks: Ranks) -> Any:
    if ranks.world == 1:
        return obj
    import torch.distributed as dist

    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def gather(part: list[str], ranks: Ranks) -> list[str]:
    if ranks.world == 1:
        return part
    import torch.distributed as dist

    parts: list[Any] = [None] * ranks.world
    dist.all_gather_object(parts, part)
    return merge_shards(parts)
