"""torch.distributed helpers: process-group set-up from torchrun/accelerate env vars, a gather with gradient, FSDP."""

from __future__ import annotations

import gc
import os

import torch
import torch.distributed as dist
from torch import nn


def init_from_env(device: torch.device) -> bool:
    """Join the process group torchrun (or `accelerate launch`) describes; False when not launched so."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return False
    if device.type == "cuda":
        torch.cuda.set_device(device)  # NCCL collectives and FSDP's device mesh use the current device
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    return True


def rank() -> int:
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def world_size() -> int:
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def is_main_process() -> bool:
    return rank() == 0


def local_rank() -> int:
    """This process's index on its machine (torchrun's LOCAL_RANK; 0 when not launched by it)."""
    return int(os.environ.get("LOCAL_RANK", "0"))


def local_device() -> torch.device:
    """This process's device: its own GPU under torchrun (LOCAL_RANK), else the CPU."""
    if torch.cuda.is_available():
        return torch.device("cuda", local_rank())
    return torch.device("cpu")


def gather_with_grad(tensor: torch.Tensor) -> torch.Tensor:
    """Concatenate a (n, d) tensor over ranks in rank order; this rank's slice keeps its autograd graph.

    Ranks may hold different n (e.g. a varying number of hard negatives), so sizes are exchanged first
    and rows padded for all_gather, then the padding is cut away.
    """
    if world_size() == 1:
        return tensor
    sizes = [torch.zeros(1, dtype=torch.long, device=tensor.device) for _ in range(world_size())]
    dist.all_gather(sizes, torch.tensor([tensor.shape[0]], device=tensor.device))
    largest = int(max(s.item() for s in sizes))
    padded = torch.zeros(largest, *tensor.shape[1:], dtype=tensor.dtype, device=tensor.device)
    padded[: tensor.shape[0]] = tensor.detach()
    parts = [torch.empty_like(padded) for _ in sizes]
    dist.all_gather(parts, padded)
    parts = [part[: int(size.item())] for part, size in zip(parts, sizes, strict=True)]
    parts[rank()] = tensor
    return torch.cat(parts)


def shutdown() -> None:
    """Leave the process group, once the models wrapped in DDP are gone.

    DDP's reducer holds a reference to the group. If the reducer drops the last one, the group is destroyed
    with the GIL held. Gloo's worker thread may at that moment still be freeing a finished collective's
    tensors, which needs the GIL: a deadlock, or an abort. So unreachable trainers are collected first,
    while the group is still registered, and the group is destroyed by torch, which releases the GIL.
    """
    if dist.is_available() and dist.is_initialized():
        gc.collect()
        dist.barrier()
        dist.destroy_process_group()


def broadcast_object(obj):
    """Rank 0's value on every rank (e.g. whether to stop early)."""
    if world_size() == 1:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def fully_shard_modules(modules: list[nn.Module], device: torch.device, reshard_after_forward: bool = True) -> None:
    """Shard each module over all ranks with FSDP2 (`fully_shard`), in place: parameter names stay the same and
    become DTensors. Every transformer block inside (a class the HF model lists in `_no_split_modules`) is its
    own unit; each module is then a root for the rest. With `reshard_after_forward` (ZeRO-3, FSDP's
    FULL_SHARD) a unit's weights are whole only while it runs, and gathered again for every call and for
    backward; without it (SHARD_GRAD_OP) they stay whole from their first call until backward is done. A module's
    `fsdp_forward_methods` (e.g. the generator's batched `generate`) gather its weights as `forward` does."""
    try:
        from torch.distributed.device_mesh import init_device_mesh
        from torch.distributed.fsdp import fully_shard, register_fsdp_forward_method
    except ImportError as err:
        raise RuntimeError(f"fsdp needs torch>=2.6 (torch.distributed.fsdp.fully_shard): {err}") from err
    mesh = init_device_mesh(device.type, (world_size(),))
    for module in modules:
        blocks: set[str] = set()
        for sub in module.modules():
            blocks.update(getattr(sub, "_no_split_modules", None) or ())
        for sub in list(module.modules()):
            if sub is not module and type(sub).__name__ in blocks:
                fully_shard(sub, mesh=mesh, reshard_after_forward=reshard_after_forward)
        fully_shard(module, mesh=mesh, reshard_after_forward=reshard_after_forward)
        for method in getattr(module, "fsdp_forward_methods", ()):  # gathers its weights as `forward` does
            register_fsdp_forward_method(module, method)
