"""torchrun integration: rank / world size from the environment, process group, work sharding.

A script run without torchrun is a single process (rank 0 of 1) and never touches
torch.distributed. Under torchrun every rank gets its own GPU (LOCAL_RANK) on CUDA and joins a gloo
process group (the jobs gather only Python objects).
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import timedelta
from typing import Sequence, TypeVar

import torch
import torch.distributed as dist

T = TypeVar("T")

# Bound on every collective of a job whose ranks do independent, unevenly long work (videos, corpus
# shards) and only meet at the start and the end: a rank that finishes hours before the others (e.g.
# all its videos were already done on a resume) waits in the final gather instead of timing out.
UNEVEN_WORK_TIMEOUT = timedelta(days=7)


@dataclass(frozen=True)
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def is_distributed(self) -> bool:
        return self.world_size > 1


def dist_info_from_env() -> DistInfo:
    """Read torchrun's RANK / WORLD_SIZE / LOCAL_RANK (absent: a single process)."""
    return DistInfo(
        rank=int(os.environ.get("RANK", 0)),
        world_size=int(os.environ.get("WORLD_SIZE", 1)),
        local_rank=int(os.environ.get("LOCAL_RANK", 0)),
    )


def rank_device(device: str, info: DistInfo) -> torch.device:
    """`auto` | `cpu` | `cuda` -> this rank's device (one GPU per process under torchrun)."""
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cpu":
        return torch.device("cpu")
    if not torch.cuda.is_available():
        raise RuntimeError("device 'cuda' was requested but CUDA is not available; set device=cpu or device=auto")
    if info.local_rank >= torch.cuda.device_count():
        raise RuntimeError(f"LOCAL_RANK {info.local_rank} has no GPU ({torch.cuda.device_count()} visible); "
                           "launch at most one process per GPU (NPROC / GPU in inference.sh)")
    return torch.device("cuda", info.local_rank)


def init_distributed(info: DistInfo, device: torch.device, timeout: timedelta | None = None) -> None:
    """Join the process group on gloo (on CUDA too); a no-op for a single process.

    The inference and corpus jobs exchange only small Python objects (records) at their start and end,
    so gloo carries them on the CPU: no NCCL communicator, watchdog or GPU memory is held for the run.
    `timeout` bounds every collective (torch's default when None); a rank that finishes its share
    long before the others waits in the final gather, so long uneven runs pass UNEVEN_WORK_TIMEOUT.
    """
    if not info.is_distributed or dist.is_initialized():
        return
    if device.type == "cuda":
        torch.cuda.set_device(device)
    dist.init_process_group("gloo", rank=info.rank, world_size=info.world_size, timeout=timeout)


def barrier(info: DistInfo) -> None:
    if info.is_distributed and dist.is_initialized():
        dist.barrier()


def cleanup_distributed() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


def finish_distributed(info: DistInfo) -> None:
    """Leave the process group together at the end of a successful run.

    Every rank waits until all ranks (rank 0 included, after writing the run summary) are done, and
    only then tears its connections down. Without this, a rank that finished first tore down gloo
    while rank 0 was still working and could abort at exit (SIGABRT), which fails the whole torchrun
    job after all outputs were written.
    """
    barrier(info)
    cleanup_distributed()


def shard(items: Sequence[T], rank: int, world_size: int) -> list[T]:
    """Rank `rank`'s share: every world_size-th item. The shards partition `items` (no duplicates,
    no gaps) and differ in size by at most one."""
    if not 0 <= rank < world_size:
        raise ValueError(f"rank {rank} is outside world size {world_size}")
    return list(items[rank::world_size])


def gather_to_main(obj: T, info: DistInfo) -> list[T] | None:
    """Every rank's `obj` (rank order) on rank 0, None elsewhere; [obj] for a single process."""
    if not info.is_distributed:
        return [obj]
    gathered: list = [None] * info.world_size
    dist.all_gather_object(gathered, obj)
    return gathered if info.is_main else None


def broadcast_from_main(obj: T, info: DistInfo) -> T:
    """Rank 0's `obj` on every rank (`obj` itself for a single process)."""
    if not info.is_distributed:
        return obj
    box = [obj if info.is_main else None]
    dist.broadcast_object_list(box, src=0)
    return box[0]
