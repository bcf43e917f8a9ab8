"""What every optimizer family's kernels and launchers share (adam.py, adai.py and sgd.py
import from here and from scalars.py, never from each other).

Device side: reaching a chunk's elements through the pointer table, the sweep over a chunk
(whole blocks unmasked, then the masked tail), loading the effective gradient, the second
moment, storage rounding, runtime scalars read from device memory, the last-arrival pattern
and the per-tensor step counts. Host side: the checks and launch arguments every kernel
takes, and the launch itself (``BucketLaunch.run``: on the bucket's device).

Hyperparameters are runtime values throughout (never ``tl.constexpr``: a new lr must not
recompile); only structure (dtypes, flags such as amsgrad, tile sizes) is constexpr. Nothing
that changes from bucket to bucket is either: the chunk size is a runtime value.
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from ... import ops
from . import chunking, streams, workspace

TL_DTYPES = {torch.float32: tl.float32, torch.float16: tl.float16,
             torch.bfloat16: tl.bfloat16, torch.float64: tl.float64}

# The op contract's accum slots (ops.py), for the kernels.
VHAT_SUM, COUNT, GRAD_SQ_SUM, CLIP_TERM = (tl.constexpr(slot) for slot in (
    ops.VHAT_SUM, ops.COUNT, ops.GRAD_SQ_SUM, ops.CLIP_TERM))


# ------------------------------------------------------------------ host ---------------------

def list_dtype(tensors, name: str):
    """The Triton dtype of a list's tensors (None for an empty list), read from its first
    tensor: the pointer table holds the lists a kernel walks only after checking that every
    tensor of each shares it (chunking.pointer_table)."""
    if not tensors:
        return None
    if tensors[0].dtype not in TL_DTYPES:
        raise TypeError(f"the triton backend needs {name} in a floating dtype of "
                        f"{list(TL_DTYPES)}, got {tensors[0].dtype}")
    return TL_DTYPES[tensors[0].dtype]


def state_dtype(exp_avg_sqs, **same_dtype_lists):
    """The state dtype (that of ``exp_avg_sqs``), checking that every other non-empty state
    list has it too."""
    dtype = list_dtype(exp_avg_sqs, "exp_avg_sqs")
    for name, tensors in same_dtype_lists.items():
        if tensors and list_dtype(tensors, name) != dtype:
            raise TypeError(f"{name} must have the dtype of exp_avg_sqs ({dtype})")
    return dtype


def check_device(device, **optional) -> None:
    for name, value in optional.items():
        if value is not None and value.device != device:
            raise RuntimeError(f"{name} must be on the bucket's device {device}, got "
                               f"{value.device}: move it there (asynchronously) before the step")


def optional_args(stand_in, **optional) -> dict:
    """Kernel arguments for optional input tensors: each ``name`` becomes the tensor (or
    ``stand_in``, never read, when it is None) and a ``HAS_NAME`` flag."""
    args = {}
    for name, tensor in optional.items():
        args[name] = stand_in if tensor is None else tensor
        args[f"HAS_{name.upper()}"] = tensor is not None
    return args


class BucketLaunch:
    """What every launch over one bucket needs: its chunk layout, its pointer table (one row
    per list of ``rows``, a dict by name; the first ``element_rows`` are walked element by
    element), the grid, and the kernel arguments every kernel takes (``args``), the optional
    tensors among them (stood in for by ``stand_in`` when absent). Checks the inputs first:
    ``accum`` (when the op takes one) and the optional tensors on the grads' device."""

    def __init__(self, rows: dict, element_rows: int, grads, stand_in, accum=None,
                 **optional):
        self.device = grads[0].device
        if accum is not None:
            ops.check_accum(accum, self.device)
        check_device(self.device, **optional)
        self.layout = chunking.chunk_layout(grads)
        pointer_table, aligned = chunking.pointer_table(self.layout, rows, element_rows)
        self.grid = (self.layout.n_chunks,)
        self.args = dict(
            pointer_table=pointer_table, n_tensors=self.layout.n_tensors,
            chunk_tensor=self.layout.chunk_tensor, chunk_start=self.layout.chunk_start,
            numels=self.layout.numels, n_chunks=self.layout.n_chunks,
            chunk_size=self.layout.chunk, G_DTYPE=list_dtype(grads, "grads"), ALIGNED=aligned,
            BLOCK=chunking.BLOCK, TENSOR_TILE=chunking.TENSOR_TILE,
            **optional_args(stand_in, **optional))

    def workspace(self) -> workspace.Workspace:
        """Scratch memory for one launch issued now (workspace.py)."""
        return workspace.workspace(self.device, self.layout.n_tensors, self.layout.n_chunks)

    def chunk_sum_args(self, scratch: workspace.Workspace) -> dict:
        """The arguments of a kernel that sums per chunk and finishes per tensor (the
        reduction; an update with 16-bit state): where each tensor's chunks start, and the
        partials and per-tensor arrival counters of ``scratch``."""
        return dict(first_chunk=self.layout.first_chunk, partials=scratch.partials,
                    tensor_counters=scratch.tensor_counters,
                    PARTIAL_TILE=chunking.PARTIAL_TILE)

    def run(self, kernel, grid=None, **args):
        """Launch ``kernel`` over the bucket on its device (Triton launches on the current
        device, on that device's current stream): ``args`` beside the common ones, ``grid``
        one program per chunk unless given."""
        with streams.on_device(self.device):
            return kernel[grid or self.grid](**self.args, **args)


# ------------------------------------------------------------------ device: reaching data ----

@triton.jit
def chunk_location(chunk_tensor, chunk_start, numels, chunk, chunk_size, BLOCK: tl.constexpr):
    """(tensor index, first element, element count) of one chunk. Chunks start at multiples
    of the chunk size, itself a multiple of BLOCK."""
    index = tl.load(chunk_tensor + chunk)
    start = tl.multiple_of(tl.load(chunk_start + chunk), BLOCK)
    count = tl.minimum(tl.load(numels + index) - start, chunk_size).to(tl.int32)
    return index, start, count


@triton.jit
def element_pointer(pointer_table, row, n_tensors, index, start, DTYPE: tl.constexpr,
                    ALIGNED: tl.constexpr):
    """Typed pointer to element ``start`` of tensor ``index`` of list ``row``."""
    ptr = tl.load(pointer_table + row * n_tensors + index).to(tl.pointer_type(DTYPE))
    if ALIGNED:
        ptr = tl.multiple_of(ptr, 16)
    return ptr + start


@triton.jit
def step_count(pointer_table, row, n_tensors, index):
    """``state_steps[index]`` (fp32) of one tensor; list ``row`` holds the steps."""
    return tl.load(element_pointer(pointer_table, row, n_tensors, index, 0, tl.float32, False))


@triton.jit
def scalar_pointers(pointer_table, row, n_tensors, index, inside, DTYPE: tl.constexpr):
    """Typed pointers to the 0-dim tensors ``index`` (a block, masked by ``inside``) of list
    ``row``: step counts, ``v_sums``."""
    address = tl.load(pointer_table + row * n_tensors + index, mask=inside, other=0)
    return address.to(tl.pointer_type(DTYPE))


@triton.jit
def sweep_chunk(RULE: tl.constexpr, args, FLAGS: tl.constexpr, count, write,
                SUMS: tl.constexpr, BLOCK: tl.constexpr):
    """Apply the block rule ``RULE(offs, mask, args, FLAGS)`` to a chunk's ``count``
    elements: whole blocks unmasked (lets the compiler vectorize), then the masked tail.
    ``write`` (False after a found_inf) masks every element. A rule returns nothing it needs
    summed (``SUMS = 0``, an update), one [BLOCK] fp32 value (``SUMS = 1``: an update's stored
    exp_avg_sq with 16-bit state, or a reduction) or two (``SUMS = 2``), 0 where masked, each
    summed here in a fixed order (docs/design.md §6). Returns the two sums in float64 (0.0
    for a sum the rule does not give)."""
    first = tl.zeros([BLOCK], tl.float32)
    second = tl.zeros([BLOCK], tl.float32)
    full = count // BLOCK * BLOCK
    for offset in range(0, full, BLOCK):
        offs = offset + tl.arange(0, BLOCK)
        mask = (tl.arange(0, BLOCK) < BLOCK) & (write != 0)
        first, second = apply_rule(RULE, offs, mask, args, FLAGS, first, second, SUMS)
    if full < count:
        offs = full + tl.arange(0, BLOCK)
        mask = (offs < count) & (write != 0)
        first, second = apply_rule(RULE, offs, mask, args, FLAGS, first, second, SUMS)
    return tl.sum(first, axis=0).to(tl.float64), tl.sum(second, axis=0).to(tl.float64)


@triton.jit
def apply_rule(RULE: tl.constexpr, offs, mask, args, FLAGS: tl.constexpr, first, second,
               SUMS: tl.constexpr):
    """One block of ``sweep_chunk``: the rule, its values added to the running sums."""
    if SUMS == 2:
        a, b = RULE(offs, mask, args, FLAGS)
        first += a
        second += b
    elif SUMS == 1:
        first += RULE(offs, mask, args, FLAGS)
    else:
        RULE(offs, mask, args, FLAGS)
    return first, second


# ------------------------------------------------------------------ device: element pieces ---

@triton.jit
def load_f32(ptr, offs, mask, other=0):
    return tl.load(ptr + offs, mask=mask, other=other).to(tl.float32)


@triton.jit
def load_grad(g_ptr, offs, mask, unscale, MAXIMIZE: tl.constexpr):
    """The gradient the rules see (rules.h ``effective_grad``): unscaled (GradScaler) and
    negated under maximize. The user's grad is never written."""
    g = tl.div_rn(load_f32(g_ptr, offs, mask), unscale)
    if MAXIMIZE:
        g = -g
    return g


@triton.jit
def second_moment(v, g, beta2, one_minus_beta2):
    """The new second moment (rules.h ``adam_second_moment``), for AdamS, AMSGradS's pass 1
    and AdaiS."""
    return beta2 * v + one_minus_beta2 * g * g


@triton.jit
def to_storage(x, DTYPE: tl.constexpr):
    """fp32 ``x`` rounded to nearest even in the storage dtype ``DTYPE``. bf16 is rounded by
    hand because Triton's CPU interpreter truncates fp32 -> bf16 (and its "rtne" mode drops
    the carry into the exponent), which biases every bf16 step. The hand rounding maps each
    fp32 value to the bf16 that the GPU's cvt.rn.bf16.f32 gives. The fp32 values being
    rounded are another matter: a GPU build contracts multiply-adds to FMA, the interpreter
    does not, so across devices results agree within the oracle tolerance, bitwise only
    within one device and build (docs/design.md §6)."""
    if DTYPE == tl.bfloat16:
        bits = x.to(tl.uint32, bitcast=True)
        rounded = (bits + 0x7FFF + ((bits >> 16) & 1)) >> 16  # ties go to the even bf16
        rounded = tl.where(x != x, 0x7FC0, rounded)  # NaN stays NaN (the add could carry it)
        y = rounded.to(tl.uint16).to(tl.bfloat16, bitcast=True)
    else:
        y = x.to(DTYPE)
    return y


@triton.jit
def store_rounded(ptr, offs, x, mask):
    """Store fp32 ``x`` at ``ptr + offs``, rounded to ``ptr``'s storage dtype."""
    tl.store(ptr + offs, to_storage(x, ptr.dtype.element_ty), mask=mask)


@triton.jit
def store_second_moment(v_ptr, offs, v, mask, SUM_V: tl.constexpr):
    """Store the new exp_avg_sq like ``store_rounded``; with SUM_V (16-bit state) return what
    was stored, as fp32 and 0 where masked, for the running sums (``add_chunk_v_sum``)."""
    v_stored = to_storage(v, v_ptr.dtype.element_ty)
    tl.store(v_ptr + offs, v_stored, mask=mask)
    if SUM_V:
        stored = tl.where(mask, v_stored.to(tl.float32), 0.0)
    else:
        stored = 0.0
    return stored


# ------------------------------------------------------------------ device: runtime inputs ---

@triton.jit
def learning_rate(lr_tensor, lr, lr_lo, HAS_LR_TENSOR: tl.constexpr):
    """lr as float64: the device tensor when given, else the double scalar argument."""
    if HAS_LR_TENSOR:
        value = tl.load(lr_tensor).to(tl.float64)
    else:
        value = tl.cast(lr, tl.float64) + tl.cast(lr_lo, tl.float64)
    return value


@triton.jit
def optional_input(tensor, default, HAS_TENSOR: tl.constexpr):
    """The fp32 value of an optional 0-dim input tensor, ``default`` when it is absent."""
    if HAS_TENSOR:
        value = tl.load(tensor).to(tl.float32)
    else:
        value = tl.full((), default, tl.float32)
    return value


@triton.jit
def grad_unscale(grad_scale, HAS_GRAD_SCALE: tl.constexpr):
    """The GradScaler's scale, which every grad is divided by (1 without one)."""
    return optional_input(grad_scale, 1.0, HAS_GRAD_SCALE)


@triton.jit
def may_write(found_inf, HAS_FOUND_INF: tl.constexpr):
    """False when a GradScaler found inf/NaN grads: the step then writes nothing."""
    return optional_input(found_inf, 0.0, HAS_FOUND_INF) == 0


@triton.jit
def global_mean(accum, VOLATILE: tl.constexpr):
    """v_bar = accum[VHAT_SUM] / accum[COUNT] (float64), 0 when nothing was counted."""
    total = tl.load(accum + VHAT_SUM, volatile=VOLATILE)
    count = tl.load(accum + COUNT, volatile=VOLATILE)
    return tl.where(count > 0, total / tl.maximum(count, 1.0), 0.0)


# ------------------------------------------------------------------ device: last arrival -----

@triton.jit
def is_last_of(counter, arrivals):
    """True in exactly one of the ``arrivals`` programs that count themselves at ``counter``:
    the last to get here. It sees every other one's earlier writes, and resets the counter
    for the next launch."""
    tl.debug_barrier()  # every thread of this program has written before it announces so
    arrived = tl.atomic_add(counter, 1, sem="acq_rel")
    last = arrived == arrivals - 1
    if last:
        tl.atomic_xchg(counter, 0)
    return last


@triton.jit
def is_last_to_arrive(counter):
    """``is_last_of`` over every program of the launch."""
    return is_last_of(counter, tl.num_programs(0))


@triton.jit
def sum_range(values, lo, hi, TILE: tl.constexpr):
    """``values[lo:hi]`` (float64, written by other programs) summed in a fixed order."""
    total = tl.zeros([TILE], tl.float64)
    for first in range(lo, hi, TILE):
        index = first + tl.arange(0, TILE)
        total += tl.load(values + index, mask=index < hi, other=0.0, volatile=True)
    return tl.sum(total, axis=0)


@triton.jit
def add_chunk_v_sum(stored, chunk, index, first_chunk, partials, tensor_counters,
                    pointer_table, row, n_tensors, write, PARTIAL_TILE: tl.constexpr):
    """An update with 16-bit state (ops.py): this chunk's sum of the exp_avg_sq it stored into
    ``partials[chunk]``; the program that finishes the tensor's last chunk sets its running sum
    (``v_sums[index]``, list ``row`` of the pointer table) to the sum of those, in a fixed
    order, unless the step is skipped (``write`` False)."""
    tl.store(partials + chunk, stored)
    lo = tl.load(first_chunk + index)
    hi = tl.load(first_chunk + index + 1)
    if is_last_of(tensor_counters + index, hi - lo):
        v_sum = element_pointer(pointer_table, row, n_tensors, index, 0, tl.float64, False)
        tl.store(v_sum, sum_range(partials, lo, hi, PARTIAL_TILE), mask=write)


@triton.jit
def advance_steps(pointer_table, row, n_tensors, TILE: tl.constexpr):
    """``state_steps[i] += 1`` for every tensor (run by one program after every read)."""
    for first in range(0, n_tensors, TILE):
        index = first + tl.arange(0, TILE)
        inside = index < n_tensors
        step = scalar_pointers(pointer_table, row, n_tensors, index, inside, tl.float32)
        tl.store(step, tl.load(step, mask=inside) + 1.0, mask=inside)


@triton.jit
def finish_update(counter, write, pointer_table, row, n_tensors, TILE: tl.constexpr):
    """The end of every update launch: its last program advances the step counts, after
    every program has read them (unless found_inf skipped the step)."""
    if is_last_to_arrive(counter):
        if write:
            advance_steps(pointer_table, row, n_tensors, TILE)
