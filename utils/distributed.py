"""Distributed data parallel through torchrun: ranks from the environment, process-group set-up and helpers.

    torchrun --nproc_per_node 2 train.py --device 0,1 ...          # one machine, 2 GPUs
    torchrun --nnodes 2 --nproc_per_node 8 --rdzv-backend c10d --rdzv-endpoint HOST:29500 train.py ...
    torchrun --standalone --nproc_per_node 2 train.py --device cpu  # 2 CPU processes over gloo

torchrun sets LOCAL_RANK, RANK and WORLD_SIZE; without it they are -1, -1 and 1 (a single process).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import timedelta

import torch
import torch.distributed as dist
from utils.errors import UserError

__all__ = ["DistInfo", "dist_info", "init_distributed", "cleanup", "barrier", "broadcast_object"]


@dataclass(frozen=True)
class DistInfo:
    local_rank: int = -1  # this process's index on its machine; -1 without torchrun
    rank: int = -1  # global index; -1 without torchrun
    world_size: int = 1

    @property
    def distributed(self) -> bool:
        return self.rank != -1

    @property
    def main(self) -> bool:
        """The process that logs, plots, validates and saves."""
        return self.rank in (-1, 0)


def dist_info() -> DistInfo:
    return DistInfo(int(os.getenv("LOCAL_RANK", -1)), int(os.getenv("RANK", -1)), int(os.getenv("WORLD_SIZE", 1)))


def init_distributed(info: DistInfo, device: torch.device, timeout_s: int = 10800) -> torch.device:
    """Join the process group (nccl on CUDA, gloo on the CPU) and return the device of this rank."""
    if not info.distributed:
        return device
    if device.type == "cuda":
        if torch.cuda.device_count() <= info.local_rank:
            raise RuntimeError(f"torchrun started local rank {info.local_rank} but this machine has "
                               f"{torch.cuda.device_count()} CUDA devices; lower --nproc_per_node")
        torch.cuda.set_device(info.local_rank)
        device = torch.device("cuda", info.local_rank)
        backend = "nccl" if dist.is_nccl_available() else "gloo"
    elif device.type == "cpu":
        backend = "gloo"
    else:
        raise UserError(f"distributed training runs on CUDA or the CPU, not on {device.type!r}")
    if not dist.is_initialized():
        dist.init_process_group(backend=backend, timeout=timedelta(seconds=timeout_s))
    return device


def cleanup() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def barrier() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.barrier()


def broadcast_object(obj, src: int = 0):
    """`obj` of rank `src` on every rank (the object itself when not distributed)."""
    if not (dist.is_available() and dist.is_initialized()):
        return obj
    box = [obj if dist.get_rank() == src else None]
    dist.broadcast_object_list(box, src)
    return box[0]
