"""Data-parallel training on several processes (GPUs, or CPU cores) launched by ``torchrun``.

Every rank holds the whole network (torch DistributedDataParallel averages the gradients) and
draws its share of each global batch. Samples come from per-sample random streams keyed by
``(seed, iteration, index in the global batch)``, so rank ``r`` of ``n`` draws exactly the
samples one process would have put at those positions: the global batch, the learning-rate
schedule and hence the loss trajectory are those of a single process with the same preset.
Only rank 0 writes checkpoints, logs, plots and the exported model.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

from ..runtime.errors import InputError

_TORCHRUN_VARS = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")


@dataclass(frozen=True)
class World:
    """This process's place among the training processes."""

    rank: int = 0
    size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def shard(self, batch: int) -> range:
        """Indices (in the global batch) of the samples this rank draws."""
        if batch % self.size:
            raise InputError(
                f"the batch of {batch} cannot be split evenly over {self.size} processes; use "
                f"--batch-size {max(self.size, batch // self.size * self.size)} or another "
                "--nproc-per-node"
            )
        local = batch // self.size
        return range(self.rank * local, (self.rank + 1) * local)

    def device(self, name: str) -> str:
        """``cuda`` becomes this rank's own GPU (``cuda:LOCAL_RANK``)."""
        return f"cuda:{self.local_rank}" if name == "cuda" else name


SINGLE = World()


def start(device: str) -> World:
    """Join the process group torchrun set up (NCCL on GPUs, gloo on CPU)."""
    missing = [v for v in _TORCHRUN_VARS if v not in os.environ]
    if missing:
        raise InputError(
            "--distributed runs under torchrun (missing " + ", ".join(missing) + "); launch "
            "with: torchrun --standalone --nproc-per-node N -m zsdeconvnet train ... --distributed"
        )
    world = World(
        int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"]), int(os.environ["LOCAL_RANK"])
    )
    cuda = device.startswith("cuda")
    if cuda:
        if torch.cuda.device_count() <= world.local_rank:
            raise InputError(
                f"rank {world.rank} wants GPU {world.local_rank} but torch sees "
                f"{torch.cuda.device_count()}; use fewer processes per node"
            )
        torch.cuda.set_device(world.local_rank)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if cuda else "gloo")
    return world


def average(values: dict[str, float], world: World, device: torch.device) -> dict[str, float]:
    """The mean of each logged value over the ranks (the global batch's value)."""
    if world.size == 1:
        return values
    keys = sorted(values)
    tensor = torch.tensor([values[k] for k in keys], dtype=torch.float64, device=device)
    dist.all_reduce(tensor)
    return {k: float(v) / world.size for k, v in zip(keys, tensor.tolist())}


def barrier(world: World) -> None:
    if world.size > 1:
        dist.barrier()


def stop(world: World) -> None:
    if world.size > 1 and dist.is_initialized():
        dist.destroy_process_group()
