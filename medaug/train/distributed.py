"""Devices and data parallelism.

Under ``torchrun`` (``WORLD_SIZE`` > 1) every process joins a process group (NCCL on
CUDA, gloo on CPU) and averages its gradients with the others after each phase's
backward pass. A variant's phases update different sub-networks, so gradients are
averaged by hand per phase (as StyleGAN does) instead of through
``DistributedDataParallel``, whose one-backward-per-forward bookkeeping does not fit
alternating generator and discriminator steps. All processes start from the same
weights and see the same averaged gradients, so they stay identical.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from dataclasses import dataclass, field

import torch
import torch.distributed as dist
from torch import nn

from medaug.errors import ConfigError


def pick_device(name: str = "auto", local_rank: int = 0) -> torch.device:
    """``auto`` | ``cpu`` | ``cuda`` | ``cuda:N`` -> a device that exists here."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cpu":
        return torch.device("cpu")
    if name == "cuda" or name.startswith("cuda:"):
        if not torch.cuda.is_available():
            raise ConfigError(f"{{device}} {name}: this machine has no CUDA GPU (use cpu or auto)")
        index = local_rank if name == "cuda" else int(name.split(":", 1)[1] or 0)
        if index >= torch.cuda.device_count():
            raise ConfigError(
                f"{{device}} {name}: only {torch.cuda.device_count()} CUDA device(s) here"
            )
        return torch.device("cuda", index)
    raise ConfigError(f"unknown device {name!r}; use auto, cpu, cuda or cuda:N")


@dataclass
class Distributed:
    """This process's place in a (possibly one-process) data-parallel job."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    owns_group: bool = False  # this object started the process group (and ends it)

    @classmethod
    def from_env(cls, device: str = "auto") -> Distributed:
        """Join the torchrun job described by the environment, if there is one."""
        world = int(os.environ.get("WORLD_SIZE", "1"))
        rank = int(os.environ.get("RANK", "0"))
        local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        dev = pick_device(device, local_rank)
        owns = world > 1 and not dist.is_initialized()
        if owns:
            if dev.type == "cuda":
                torch.cuda.set_device(dev)
            dist.init_process_group(backend="nccl" if dev.type == "cuda" else "gloo")
        return cls(rank, world, local_rank, dev, owns)

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def active(self) -> bool:
        return self.world > 1

    def broadcast_module(self, module: nn.Module) -> None:
        """Copy rank 0's parameters and buffers to every process."""
        if self.active:
            for t in [*module.parameters(), *module.buffers()]:
                dist.broadcast(t.data, src=0)

    def average_gradients(self, params: list[nn.Parameter]) -> None:
        """Average ``params``' gradients over processes in one flat all-reduce."""
        if not self.active or not params:
            return
        grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
        flat = torch.cat([g.reshape(-1) for g in grads])
        dist.all_reduce(flat)
        flat /= self.world
        offset = 0
        for p in params:
            n = p.numel()
            p.grad = flat[offset : offset + n].view_as(p)
            offset += n

    def mean(self, values: torch.Tensor) -> torch.Tensor:
        """Average a tensor over processes (for logged losses)."""
        if self.active:
            values = values.clone()
            dist.all_reduce(values)
            values /= self.world
        return values

    def any(self, flag: bool) -> bool:
        """True on every process if ``flag`` is true on any (e.g. a caught SIGTERM)."""
        if not self.active:
            return flag
        t = torch.tensor([float(flag)], device=self.device)
        dist.all_reduce(t, op=dist.ReduceOp.MAX)
        return bool(t.item())

    def barrier(self) -> None:
        if self.active:
            dist.barrier()

    def close(self) -> None:
        if self.owns_group and dist.is_initialized():
            dist.destroy_process_group()


@contextlib.contextmanager
def job(device: str = "auto") -> Iterator[Distributed]:
    """This process's place in the torchrun job, its process group held for the block
    (so that work before ``train``, such as preprocessing on the main process while
    the others wait, and ``train`` itself share one group)."""
    place = Distributed.from_env(device)
    try:
        yield place
    finally:
        place.close()
