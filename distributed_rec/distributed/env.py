"""Rank and world-size helpers: one process group whatever started us (plain python, torchrun,
the deepspeed launcher, Ray Train). Collectives are no-ops at world size 1."""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass

import torch
import torch.distributed as dist

from distributed_rec.distributed.loopback import LOOPBACK, LOOPBACK_HOSTS, init_single_node_group


@dataclass(frozen=True)
class DistEnv:
    rank: int
    world_size: int
    local_rank: int

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def resolve_device(device: str) -> str:
    """'cuda' or 'cpu' ('auto': cuda when available)."""
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return device


def process_group_backend(device: str) -> str:
    """The collective backend of a device type: NCCL on GPU, gloo on CPU."""
    return "nccl" if device == "cuda" else "gloo"


def has_native_bf16(device_type: str) -> bool:
    """Whether bf16 matrix products run natively: a GPU that supports bf16, or a CPU with the
    AVX512_BF16 or AMX_BF16 instructions (Linux /proc/cpuinfo; False where it cannot be read)."""
    if device_type == "cuda":
        return torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    try:
        with open("/proc/cpuinfo") as handle:
            for line in handle:
                if line.startswith("flags"):
                    flags = set(line.split(":", 1)[1].split())
                    return bool(flags & {"avx512_bf16", "amx_bf16"})
    except OSError:
        return False
    return False


def set_threads(world_size: int) -> None:
    """Share the cores among this node's processes (OMP_NUM_THREADS, when set, wins)."""
    if os.environ.get("OMP_NUM_THREADS", "").isdigit():
        torch.set_num_threads(max(1, int(os.environ["OMP_NUM_THREADS"])))
        return
    local = int(os.environ.get("LOCAL_WORLD_SIZE", os.environ.get("LOCAL_SIZE", world_size)))
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    torch.set_num_threads(max(1, (cores or 1) // max(1, local)))


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def init_distributed(backend: str = "gloo") -> DistEnv:
    """Join (or create) the default process group.

    Ray Train on a cluster initialises the group itself; torchrun and the deepspeed launcher set
    RANK, WORLD_SIZE, MASTER_ADDR and MASTER_PORT; a plain process without them gets a private
    world of size 1 (its environment is left untouched). On one machine (MASTER_ADDR a loopback
    address, or a world of one) the group listens on loopback only (`loopback.py`); with another
    MASTER_ADDR it is torch's env:// rendezvous.
    """
    if not dist.is_initialized():
        master = os.environ.get("MASTER_ADDR", "")
        agent_store = os.environ.get("TORCHELASTIC_USE_AGENT_STORE") == "True"  # torchrun's
        if "WORLD_SIZE" not in os.environ:
            init_single_node_group(backend, LOOPBACK, 0, 0, 1)
        elif master in LOOPBACK_HOSTS and not agent_store:
            rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
            init_single_node_group(backend, master, int(os.environ["MASTER_PORT"]), rank, world)
        else:
            dist.init_process_group(backend=backend)
    rank, world = dist.get_rank(), dist.get_world_size()
    local_rank = int(os.environ.get("LOCAL_RANK", rank if world == 1 else 0))
    os.environ.setdefault("LOCAL_RANK", str(local_rank))  # DeepSpeed asserts it is set
    return DistEnv(rank=rank, world_size=world, local_rank=local_rank)


def shutdown_distributed() -> None:
    """Leave the process group cleanly: wait for every rank, then destroy the group.

    A process that exits with a live gloo group can abort in the C++ runtime ("terminate called
    without an active exception") while its background threads are torn down.
    """
    if dist.is_initialized():
        if dist.get_world_size() > 1:
            dist.barrier()
        dist.destroy_process_group()


def rank() -> int:
    """This process's rank (0 without a process group)."""
    return dist.get_rank() if dist.is_initialized() else 0


def world_size() -> int:
    """The number of processes (1 without a process group)."""
    return dist.get_world_size() if dist.is_initialized() else 1


def all_reduce_sum(values: torch.Tensor) -> torch.Tensor:
    """Elementwise sum over processes (a copy; identity at world size 1)."""
    values = values.detach().clone()
    if dist.is_initialized() and dist.get_world_size() > 1:
        dist.all_reduce(values, op=dist.ReduceOp.SUM)
    return values


def all_reduce_max(values: torch.Tensor) -> torch.Tensor:
    values = values.detach().clone()
    if dist.is_initialized() and dist.get_world_size() > 1:
        dist.all_reduce(values, op=dist.ReduceOp.MAX)
    return values


def broadcast_from_main(values: torch.Tensor) -> torch.Tensor:
    """Rank 0's values on every process."""
    values = values.detach().clone()
    if dist.is_initialized() and dist.get_world_size() > 1:
        dist.broadcast(values, src=0)
    return values


def barrier() -> None:
    if dist.is_initialized() and dist.get_world_size() > 1:
        dist.barrier()


def destroy() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()
