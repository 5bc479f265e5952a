"""One process per GPU with `torchrun` (or one process on the CPU / one GPU): the same code path.

torchrun sets RANK, WORLD_SIZE and LOCAL_RANK (read by `mateffnet.runtime`); without them this is a
single process. CPUs use the gloo backend, GPUs NCCL. Only rank 0 writes files and prints progress.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.distributed as dist

from mateffnet.engine.step import capture_stream
from mateffnet.runtime import resolve_device, torchrun_env


@dataclass
class Distributed:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


def setup(preference: str = "auto") -> Distributed:
    env = torchrun_env()
    world_size, rank, local_rank = env.world_size, env.rank, env.local_rank
    device = resolve_device(preference, local_rank)
    if world_size > 1 and not dist.is_initialized():
        if device.type == "cuda":
            torch.cuda.set_device(device)
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return Distributed(rank, world_size, local_rank, device)


def wrap_model(ctx: Distributed, model: torch.nn.Module) -> torch.nn.Module:
    """The model each process trains: DDP around it under torchrun, the model itself otherwise."""
    return data_parallel(model, ctx.device) if ctx.enabled else model


def data_parallel(model: torch.nn.Module, device: torch.device) -> torch.nn.Module:
    """DistributedDataParallel around `model` (on `device`); on a GPU built on the training step's capture stream,
    so that the training step can be captured as a CUDA graph."""
    if device.type != "cuda":
        return torch.nn.parallel.DistributedDataParallel(model)
    stream, current = capture_stream(device), torch.cuda.current_stream(device)
    stream.wait_stream(current)
    with torch.cuda.stream(stream):
        wrapped = torch.nn.parallel.DistributedDataParallel(model, device_ids=[device.index])
    current.wait_stream(stream)
    return wrapped


def teardown(ctx: Distributed) -> None:
    if ctx.enabled and dist.is_initialized():
        dist.destroy_process_group()


def gather_objects(ctx: Distributed, obj) -> list:
    """Every rank's `obj`, in rank order (on every rank)."""
    if not ctx.enabled:
        return [obj]
    gathered = [None] * ctx.world_size
    dist.all_gather_object(gathered, obj)
    return gathered


def all_reduce_mean(ctx: Distributed, value: torch.Tensor) -> torch.Tensor:
    if ctx.enabled:
        value = value.clone()
        dist.all_reduce(value)
        value /= ctx.world_size
    return value
