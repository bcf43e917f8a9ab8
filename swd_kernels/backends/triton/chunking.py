"""How a bucket's tensors are cut into chunks (one program's work each), and the tables through
which a kernel reaches them (docs/design.md §3).

A *chunk layout* (``ChunkLayout``) depends only on the tensors' element counts and the chunk
size: the tensor and first element of every chunk. Every tensor owns at least one chunk (a
0-element tensor an empty one), so that the program finishing a tensor's last chunk can finish
that tensor's sums, empty tensors included (adam.py). The chunk size is chosen per layout
(``choose_chunk``). A *pointer table* holds the tensors' addresses (``data_ptr``s), one row per
list.

Both are ``DeviceTable``s (device_tables.py: filled without a host sync, ready on whichever
stream uses them, kept by the CUDA graphs that read them) and both are cached: layouts by
element counts, pointer tables per layout by addresses (and dtypes). A steady training loop
therefore builds and copies nothing; a pointer table is built when an address changes, e.g.
grads reallocated after ``zero_grad(set_to_none=True)``, also while a CUDA graph is being
captured.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from itertools import count

import torch

from .device_tables import DeviceTable

# The largest chunk (elements), and the chunk size where no SM count applies (Triton's CPU
# interpreter; tests shrink it).
CHUNK = 65536
# The smallest chunk choose_chunk picks: below it a program's fixed costs (its tensor's
# scalars, its partial, its arrival) would no longer be small next to its loads.
MIN_CHUNK = 4096
# Chunks wanted per SM: with only one or two, the SMs that draw a partly filled chunk or a
# small tensor idle while the others finish (a 1M-element bucket at 64 Ki-element chunks is
# 16 programs on a 132-SM GPU).
CHUNKS_PER_SM = 4
# Elements one loop iteration of a program loads per tensor (every chunk size is a multiple).
BLOCK = 1024
# Tensors per tile where one program walks every tensor (the reduction's final sum, the step
# counts) and chunk partials per tile where it walks one tensor's partials: 1-D float64 tiles,
# one or two values a thread at 4 warps.
TENSOR_TILE = 128
PARTIAL_TILE = 128
# Pointer tables kept per chunk layout (one per distinct set of addresses seen recently). Each
# step uses two per bucket (reduce, update), and buckets of equal element counts share a
# layout: too few would rebuild (and copy to the device) every table every step.
POINTER_TABLES_PER_LAYOUT = 32

# How many of each were built (tests check that the caches work).
stats = {"pointer_tables_built": 0, "chunk_layouts_built": 0}


# ------------------------------------------------------------------ the chunk size -----------

def count_chunks(numels, chunk: int) -> int:
    """Chunks of ``chunk`` elements that tensors of ``numels`` elements take (at least one
    each)."""
    return sum(max(1, -(-n // chunk)) for n in numels)


def choose_chunk(numels, sm_count: int | None) -> int:
    """The chunk size of a layout: the largest power of two in [MIN_CHUNK, CHUNK] that cuts
    tensors of ``numels`` elements into at least CHUNKS_PER_SM chunks per SM (MIN_CHUNK when
    none does); CHUNK when there is no SM count to serve (the interpreter)."""
    if sm_count is None:
        return CHUNK
    chunk = CHUNK
    while chunk > MIN_CHUNK and count_chunks(numels, chunk) < CHUNKS_PER_SM * sm_count:
        chunk //= 2
    return chunk


def _sm_count(device: torch.device) -> int | None:
    if device.type != "cuda":
        return None
    return torch.cuda.get_device_properties(device).multi_processor_count


# ------------------------------------------------------------------ layouts ------------------

@dataclass
class ChunkLayout:
    table: DeviceTable  # int64: numels | chunk_tensor | chunk_start | first_chunk
    numels: torch.Tensor        # [n_tensors] (views into table.tensor)
    chunk_tensor: torch.Tensor  # [n_chunks]: the tensor each chunk belongs to
    chunk_start: torch.Tensor   # [n_chunks]: its first element in that tensor
    first_chunk: torch.Tensor   # [n_tensors + 1]: tensor i owns chunks [f[i], f[i+1])
    n_tensors: int
    n_chunks: int
    total_numel: int
    chunk: int
    pointer_tables: dict = field(default_factory=dict)  # key -> PointerTable


@dataclass
class PointerTable:
    table: DeviceTable
    aligned: bool
    last_use: int  # for evicting the least recently used


_layouts: dict[tuple, ChunkLayout] = {}
_uses = count()


def _sections(device, *sections: list[int]) -> tuple[DeviceTable, list[torch.Tensor]]:
    """One device table holding every section, each starting 16 bytes aligned, and a view of
    each."""
    values, bounds = [], []
    for section in sections:
        start = len(values)
        values += section + [0] * (len(section) % 2)
        bounds.append((start, start + len(section)))
    table = DeviceTable(values, device)
    return table, [table.tensor[a:b] for a, b in bounds]


def chunk_layout(tensors: list[torch.Tensor]) -> ChunkLayout:
    """The cached chunk layout of a list of tensors (by element counts and device), ready for
    work issued now."""
    device = tensors[0].device
    numels = tuple(map(torch.Tensor.numel, tensors))
    key = (device, numels, CHUNK, MIN_CHUNK, BLOCK)
    layout = _layouts.get(key)
    if layout is None:
        layout = _layouts[key] = _build_layout(device, numels)
    layout.table.ready()
    return layout


def _build_layout(device: torch.device, numels: tuple[int, ...]) -> ChunkLayout:
    chunk = choose_chunk(numels, _sm_count(device))
    if chunk % BLOCK:
        raise ValueError(f"chunks of {chunk} elements are no multiple of BLOCK={BLOCK}")
    chunk_tensor, chunk_start, first_chunk = [], [], [0]
    for index, n in enumerate(numels):
        starts = range(0, max(n, 1), chunk)  # an empty tensor owns one empty chunk
        chunk_tensor += [index] * len(starts)
        chunk_start += starts
        first_chunk.append(len(chunk_tensor))
    table, views = _sections(device, list(numels), chunk_tensor, chunk_start, first_chunk)
    stats["chunk_layouts_built"] += 1
    return ChunkLayout(table, *views, n_tensors=len(numels), n_chunks=len(chunk_tensor),
                       total_numel=sum(numels), chunk=chunk)


# ------------------------------------------------------------------ pointer tables -----------

def pointer_table(layout: ChunkLayout, lists, element_rows: int) -> tuple[torch.Tensor, bool]:
    """The device table of addresses, one row per list (an empty list gives a row of zeros,
    never dereferenced), ready for work issued now; and whether every address of the first
    ``element_rows`` lists (those walked element by element; the rest are 0-dim step counts
    and sums) is 16-byte aligned (lets the compiler vectorize loads).

    ``lists``: the lists, or a dict of them by name. Each of the first ``element_rows`` lists
    must hold one dtype: checked when a table is built, and the key holds each list's first
    dtype beside the addresses, so a cached table is only found for lists that passed."""
    if isinstance(lists, dict):
        names, lists = list(lists), list(lists.values())
    else:
        names = [f"list {i}" for i in range(len(lists))]
    data_ptr = torch.Tensor.data_ptr
    key = (tuple(rows[0].dtype if rows else None for rows in lists),
           *(tuple(map(data_ptr, rows)) for rows in lists))
    entry = layout.pointer_tables.get(key)
    if entry is None:
        for name, rows in zip(names[:element_rows], lists):
            if len({t.dtype for t in rows}) > 1:
                raise TypeError(f"the triton backend needs every tensor of {name} in one "
                                f"dtype, got {sorted({str(t.dtype) for t in rows})}")
        entry = _build_pointer_table(layout, key[1:], element_rows)
        layout.pointer_tables[key] = entry
        _evict(layout.pointer_tables)
    entry.last_use = next(_uses)
    return entry.table.ready(), entry.aligned


def _build_pointer_table(layout: ChunkLayout, addresses, element_rows: int) -> PointerTable:
    n = layout.n_tensors
    rows = [list(row) if row else [0] * n for row in addresses]
    aligned = all(a % 16 == 0 for row in rows[:element_rows] for a in row)
    stats["pointer_tables_built"] += 1
    return PointerTable(DeviceTable([a for row in rows for a in row], layout.table.device),
                        aligned, last_use=0)


def _evict(tables: dict) -> None:
    """Drop the least recently used tables beyond POINTER_TABLES_PER_LAYOUT, never one that a
    CUDA graph reads."""
    evictable = sorted((key for key, entry in tables.items() if not entry.table.used_in_graph),
                       key=lambda key: tables[key].last_use)
    for key in evictable[:max(0, len(tables) - POINTER_TABLES_PER_LAYOUT)]:
        del tables[key]


def clear_cache() -> None:
    """Forget every chunk layout and pointer table (frees their memory; tables a CUDA graph
    reads too, so only call it once no such graph will replay)."""
    _layouts.clear()
