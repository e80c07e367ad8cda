"""Processes of one training run: a plain run is process 0 of 1; torchrun starts N, which train one model with
DistributedDataParallel. Process 0 writes every file; these helpers keep the others in step."""
import os

import torch

from . import util


def world():
    """(rank, world size, local rank): set by torchrun; a plain run is (0, 1, 0)."""
    return tuple(int(os.environ.get(k, d)) for k, d in (("RANK", 0), ("WORLD_SIZE", 1), ("LOCAL_RANK", 0)))


def is_main():
    """True in the process that writes files (the only one in a plain run)."""
    return world()[0] == 0


def device(wanted):
    """The device of this process: `wanted` (a config's device) or cuda when available; one GPU per process."""
    chosen = util.check_device(wanted, "device")
    rank, size, local = world()
    if size > 1 and chosen == "cuda":
        torch.cuda.set_device(local)
        chosen = f"cuda:{local}"
    return chosen


def join(device):
    """Under torchrun, join its process group (nccl on GPUs, gloo on CPUs); a plain run does nothing."""
    if world()[1] > 1 and not torch.distributed.is_initialized():
        torch.distributed.init_process_group("nccl" if device.startswith("cuda") else "gloo")


def barrier():
    if torch.distributed.is_initialized():
        torch.distributed.barrier()


def gather(obj):
    """obj of every process, in rank order ([obj] in a plain run)."""
    if not torch.distributed.is_initialized():
        return [obj]
    out = [None] * torch.distributed.get_world_size()
    torch.distributed.all_gather_object(out, obj)
    return out


def mean(x):
    """A 0-dim tensor averaged over processes, as a float (the same on each, so every process decides alike)."""
    if torch.distributed.is_initialized():
        torch.distributed.all_reduce(x)
        x = x / torch.distributed.get_world_size()
    return x.item()


def leave():
    if torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()
