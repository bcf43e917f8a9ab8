"""Host side of the multi-tensor kernels: how a bucket's tensors are cut into chunks, and the
pointer table through which a kernel reaches them (docs/design.md §3).

A *chunk layout* (``ChunkLayout``) depends only on the tensors' element counts: which tensor
and offset each chunk (one program's work) covers, plus the per-layout workspaces (chunk
partials, arrival counters). A *pointer table* is a device int64 tensor of the tensors'
addresses (``data_ptr``s, one row per list); it is rebuilt only when an address changes, e.g.
grads reallocated after ``zero_grad(set_to_none=True)``. Both are cached, so a steady training
loop allocates nothing and copies nothing to the device; inside CUDA-graph capture only cached
ones are used.
"""
from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, field

import torch

# Elements one program covers. 64 Ki elements keeps a GPT-2 124M step at ~1,900 chunk partials
# (a few tiles for the final reduction) while giving an H200 ~15 programs per SM. Not tuned yet.
CHUNK = 65536
# Elements one loop iteration of a program loads per tensor.
BLOCK = 1024
# Tensors and chunk partials per tile in the reduction's final pass. Its float64 tile
# [TENSOR_TILE, PARTIAL_TILE] lives in registers, and the whole reduce kernel is compiled for
# the register count of its largest part: 32 x 256 took 236 registers a thread on sm_90 (2
# programs per SM, too few loads in flight to stream grads at full bandwidth); 16 x 64 takes
# ~92 (5 per SM). Check with `cuobjdump --dump-resource-usage` on the cached cubin.
TENSOR_TILE = 16
PARTIAL_TILE = 64
# Pointer tables kept per chunk layout (one per distinct set of addresses seen recently). Each
# step uses two per bucket (reduce, update), and buckets of equal element counts share a
# layout: too few would rebuild (and copy to the device) every table every step.
POINTER_TABLES_PER_LAYOUT = 32
# Counter slots in a layout's workspace (int32, zero between launches).
REDUCE_COUNTER, UPDATE_COUNTER, BARRIER_ARRIVE, BARRIER_RELEASE, STEP_DONE = range(5)

# How many of each were built (tests check that the caches work).
stats = {"pointer_tables_built": 0, "chunk_layouts_built": 0}


@dataclass
class ChunkLayout:
    numels: torch.Tensor        # int64 [n_tensors]
    chunk_tensor: torch.Tensor  # int32 [n_chunks]: the tensor each chunk belongs to
    chunk_start: torch.Tensor   # int64 [n_chunks]: its first element in that tensor
    first_chunk: torch.Tensor   # int32 [n_tensors + 1]: tensor i owns chunks [f[i], f[i+1])
    partials: torch.Tensor      # float64 [n_chunks]: one reduction partial per chunk
    counters: torch.Tensor      # int32 [5]: arrival counters, reset by the last arrival
    n_tensors: int
    n_chunks: int
    total_numel: int
    chunk: int
    # pointer tables of this layout, by their addresses: (device table, aligned)
    pointer_tables: OrderedDict = field(default_factory=OrderedDict)
    pinned: set = field(default_factory=set)  # tables a captured CUDA graph uses


_layouts: dict[tuple, ChunkLayout] = {}


def _capturing(device: torch.device) -> bool:
    return device.type == "cuda" and torch.cuda.is_current_stream_capturing()


def _to_device(values: list[int], dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """A small host list copied to ``device`` without a host sync (pinned, non-blocking)."""
    host = torch.tensor(values, dtype=dtype)
    if device.type == "cuda":
        host = host.pin_memory()
    return host.to(device, non_blocking=True)


def _not_cached_error(what: str) -> RuntimeError:
    return RuntimeError(
        f"the triton backend has no cached {what} for these tensors and cannot build one "
        f"during CUDA-graph capture: run the step once eagerly (a warm-up step, with grads at "
        f"the addresses the graph will use) before capturing it")


def chunk_layout(tensors: list[torch.Tensor]) -> ChunkLayout:
    """The cached chunk layout of a list of tensors (by element counts and device)."""
    device = tensors[0].device
    numels = tuple(map(torch.Tensor.numel, tensors))
    key = (device, numels, CHUNK)
    layout = _layouts.get(key)
    if layout is not None:
        return layout
    if _capturing(device):
        raise _not_cached_error("chunk layout")
    chunk_tensor, chunk_start, first_chunk = [], [], [0]
    for index, n in enumerate(numels):
        for start in range(0, n, CHUNK):
            chunk_tensor.append(index)
            chunk_start.append(start)
        first_chunk.append(len(chunk_tensor))
    n_chunks = len(chunk_tensor)
    layout = ChunkLayout(
        numels=_to_device(list(numels), torch.int64, device),
        chunk_tensor=_to_device(chunk_tensor or [0], torch.int32, device),
        chunk_start=_to_device(chunk_start or [0], torch.int64, device),
        first_chunk=_to_device(first_chunk, torch.int32, device),
        partials=torch.zeros(max(n_chunks, 1), dtype=torch.float64, device=device),
        counters=torch.zeros(8, dtype=torch.int32, device=device),
        n_tensors=len(numels), n_chunks=n_chunks, total_numel=sum(numels), chunk=CHUNK)
    _layouts[key] = layout
    stats["chunk_layouts_built"] += 1
    return layout


def pointer_table(layout: ChunkLayout, lists: list[list[torch.Tensor]],
                  element_rows: int) -> tuple[torch.Tensor, bool]:
    """The device table of addresses, one row per list (an empty list gives a row of zeros,
    never dereferenced), and whether every address of the first ``element_rows`` lists (those
    walked element by element; the rest are 0-dim step counts and sums) is 16-byte aligned
    (lets the compiler vectorize loads)."""
    n = layout.n_tensors
    data_ptr = torch.Tensor.data_ptr
    key = tuple(tuple(map(data_ptr, tensors)) for tensors in lists)
    entry = layout.pointer_tables.get(key)
    device = layout.partials.device
    if entry is None:
        if _capturing(device):
            raise _not_cached_error("pointer table")
        rows = [list(addresses) if addresses else [0] * n for addresses in key]
        flat = [a for row in rows for a in row]
        aligned = all(a % 16 == 0 for row in rows[:element_rows] for a in row)
        entry = (_to_device(flat, torch.int64, device), aligned)
        layout.pointer_tables[key] = entry
        stats["pointer_tables_built"] += 1
        evictable = [k for k in layout.pointer_tables if k not in layout.pinned]
        for oldest in evictable[:max(0, len(layout.pointer_tables) - POINTER_TABLES_PER_LAYOUT)]:
            del layout.pointer_tables[oldest]
    else:
        layout.pointer_tables.move_to_end(key)
    if _capturing(device):
        layout.pinned.add(key)  # a graph replays these addresses: never evict the table
    return entry


def clear_cache() -> None:
    """Forget every chunk layout and pointer table (frees their device memory)."""
    _layouts.clear()
