"""Sharded statistics: the global mean of v_hat over every rank's shard.

Under FSDP2 (``fully_shard``) parameters, grads and optimizer state are DTensors, each rank
holding one shard. The kernels work on the local shards; only the two numbers of the
accumulator ``[sum of v_hat, count]`` cross ranks, in one all-reduce between pass 1 and pass 2.
A dimension over which every parameter is replicated (HSDP) multiplies sum and count alike and
leaves the mean unchanged.
"""
from __future__ import annotations

import torch
import torch.distributed as dist

try:
    from torch.distributed.tensor import DTensor
except ImportError:  # torch without DTensor
    DTensor = None


def is_sharded(t) -> bool:
    return DTensor is not None and isinstance(t, DTensor)


def local(t: torch.Tensor) -> torch.Tensor:
    """The tensor a kernel may write: the local shard of a DTensor, else ``t`` itself."""
    return t.to_local() if is_sharded(t) else t


def group_of(params) -> object | None:
    """The process group the statistics of ``params`` must be summed over (None: local)."""
    for p in params:
        if is_sharded(p):
            mesh = p.device_mesh
            return mesh.get_group() if mesh.ndim == 1 else dist.group.WORLD
    return None


def statistics_group(params, partition_group=None):
    """The group a step's statistics are summed over: the ``partition_group`` a framework's
    ZeRO-style partitioning gives (each rank holds a disjoint subset of plain params), or the
    sharded params' own group, or None (one process)."""
    sharded = group_of(params)
    if partition_group is not None and sharded is not None:
        raise ValueError("partition_group is for plain (unsharded) params that a framework "
                         "splits across ranks; these params are DTensors, whose statistics are "
                         "already summed over their device mesh. Drop partition_group.")
    return partition_group if partition_group is not None else sharded


def all_reduce_statistics(accum: torch.Tensor, group) -> None:
    """Sum ``accum`` over the ranks of ``group`` in place (stays on the device, no host sync)."""
    dist.all_reduce(accum, op=dist.ReduceOp.SUM, group=group)
