"""Multi-process training with PyTorch DDP under ``torchrun`` (an existing distributed engine).

``torchrun --standalone --nproc_per_node=N -m workbench distill ...`` (or the Python API run
under torchrun) sets RANK / WORLD_SIZE / LOCAL_RANK; the engine then starts a process group
(gloo on CPU, NCCL on GPU), wraps the student in DistributedDataParallel, gives each rank its
share of every global batch, averages reported metrics over ranks and agrees on stopping.
Only rank 0 writes runs and calls user callbacks. Multi-node: use torchrun's rendezvous flags
(``--nnodes``, ``--rdzv-backend=c10d``, ``--rdzv-endpoint=HOST:PORT``) on every node.
"""

from __future__ import annotations

import os
from datetime import timedelta

import torch
import torch.distributed as dist

TIMEOUT_SECONDS = float(os.environ.get("WORKBENCH_DDP_TIMEOUT", "120"))


def env_world_size() -> int:
    return int(os.environ.get("WORLD_SIZE", "1"))


def active() -> bool:
    """True inside an initialised process group of more than one process."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def rank() -> int:
    return dist.get_rank() if active() else int(os.environ.get("RANK", "0"))


def world_size() -> int:
    return dist.get_world_size() if active() else 1


def is_main() -> bool:
    """Rank 0 (or the only process): the one that writes runs and draws."""
    return rank() == 0


def init(device: torch.device) -> bool:
    """Start the process group when launched by torchrun with WORLD_SIZE > 1; True if active."""
    if env_world_size() <= 1 or not dist.is_available():
        return False
    if not dist.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        dist.init_process_group(backend=backend, timeout=timedelta(seconds=TIMEOUT_SECONDS))
    return active()


def local_device(device: torch.device) -> torch.device:
    """The CUDA device of this rank (LOCAL_RANK), else ``device``."""
    if device.type == "cuda" and env_world_size() > 1:
        index = int(os.environ.get("LOCAL_RANK", "0"))
        torch.cuda.set_device(index)
        return torch.device("cuda", index)
    return device


def shard(t: torch.Tensor | None) -> torch.Tensor | None:
    """This rank's contiguous share of a global batch (views, no copy)."""
    if t is None or not active():
        return t
    return torch.tensor_split(t, world_size())[rank()]


def mean(t: torch.Tensor) -> torch.Tensor:
    """The average of ``t`` over ranks (``t`` itself when not distributed)."""
    if not active():
        return t
    t = t.clone()
    dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t / world_size()


def any_rank(flag: bool, device: torch.device) -> bool:
    """True on every rank when ``flag`` is true on any rank (stop decisions must agree)."""
    if not active():
        return flag
    t = torch.tensor([1.0 if flag else 0.0], device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item())


def all_ranks(flag: bool, device: torch.device) -> bool:
    """True on every rank only when ``flag`` is true on every rank."""
    return not any_rank(not flag, device)
