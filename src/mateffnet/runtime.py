"""What this process runs on: its device, the CPU cores it may use, and torchrun's environment.

torchrun sets RANK, WORLD_SIZE, LOCAL_RANK and LOCAL_WORLD_SIZE; without them this is a single process
(rank 0 of 1). torch is imported only by `resolve_device`, so the CLI can read these cheaply.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from mateffnet.errors import MateffnetError

DEVICES = ("auto", "cpu", "cuda")  # what every --device accepts, besides cuda:N


@dataclass(frozen=True)
class Torchrun:
    """This process's place: rank among all processes, local rank on its machine, and the two counts."""

    rank: int
    world_size: int
    local_rank: int
    local_world_size: int


def torchrun_env() -> Torchrun:
    """The process's place among torchrun's processes, read from the environment."""
    def number(name: str, default: int) -> int:
        return int(os.environ.get(name, default))

    return Torchrun(number("RANK", 0), number("WORLD_SIZE", 1), number("LOCAL_RANK", 0), number("LOCAL_WORLD_SIZE", 1))


def resolve_device(preference: str = "auto", local_rank: int | None = None):
    """auto (CUDA when PyTorch sees a GPU, else the CPU), cpu, cuda or cuda:N → a torch.device.

    A bare "cuda" (or auto on a GPU) becomes cuda:<local_rank modulo the GPU count> when `local_rank` is given.
    """
    import torch

    name = ("cuda" if torch.cuda.is_available() else "cpu") if preference == "auto" else preference
    try:
        device = torch.device(name)
    except (RuntimeError, TypeError):
        device = None
    if device is None or device.type not in ("cpu", "cuda"):
        raise MateffnetError(f"device {preference!r}; expected auto, cpu, cuda or cuda:N")
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise MateffnetError(f"device {preference!r} asked for, but PyTorch sees no CUDA GPU; use --device cpu")
        if device.index is None and local_rank is not None:
            device = torch.device("cuda", local_rank % torch.cuda.device_count())
    return device


def cpu_cores() -> int:
    """The CPU cores this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def cores_per_process() -> int:
    """This process's share of them: the cores over torchrun's LOCAL_WORLD_SIZE (at least 1)."""
    return max(1, cpu_cores() // max(1, torchrun_env().local_world_size))
