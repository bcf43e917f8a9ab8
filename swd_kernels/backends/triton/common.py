"""Triton pieces every optimizer kernel shares: reaching a tensor through the pointer table,
locating a chunk, runtime scalars read from device memory, the last-arrival pattern, and the
per-tensor step counts.

Hyperparameters are runtime values throughout (never ``tl.constexpr``: a new lr must not
recompile); only structure (dtypes, flags such as amsgrad, tile sizes) is constexpr.
"""
from __future__ import annotations

import struct

import torch
import triton
import triton.language as tl

TL_DTYPES = {torch.float32: tl.float32, torch.float16: tl.float16,
             torch.bfloat16: tl.bfloat16, torch.float64: tl.float64}


_FLOAT32 = struct.Struct("f")


def split_double(x: float) -> tuple[float, float]:
    """``x`` as two fp32 kernel arguments whose sum keeps ~48 bits (Triton passes Python
    floats as fp32); the kernel rebuilds the double with ``as_double(hi, lo)``."""
    hi = _FLOAT32.unpack(_FLOAT32.pack(x))[0]  # x rounded to the nearest fp32
    return hi, float(x - hi)


@triton.jit
def as_double(hi, lo):
    return tl.cast(hi, tl.float64) + tl.cast(lo, tl.float64)


@triton.jit
def one_minus(hi, lo):
    """``1 - x`` formed in float64 from ``x``'s hi/lo pair, then fp32, as rules.h forms
    ``one_minus_beta1`` etc.: in fp32, 1 - 0.999 is off by 1.3e-5 relative, enough to fail the
    fp32 oracle."""
    return (1.0 - as_double(hi, lo)).to(tl.float32)


@triton.jit
def to_storage(x, DTYPE: tl.constexpr):
    """fp32 ``x`` rounded to nearest even in the storage dtype ``DTYPE``. bf16 is rounded by
    hand because Triton's CPU interpreter truncates fp32 -> bf16 (and its "rtne" mode drops
    the carry into the exponent), which biases every bf16 step; the hand rounding is bitwise
    what the GPU's cvt.rn.bf16.f32 gives, so the CPU tests check the GPU's arithmetic."""
    if DTYPE == tl.bfloat16:
        bits = x.to(tl.uint32, bitcast=True)
        rounded = (bits + 0x7FFF + ((bits >> 16) & 1)) >> 16  # ties go to the even bf16
        rounded = tl.where(x != x, 0x7FC0, rounded)  # NaN stays NaN (the add could carry it)
        y = rounded.to(tl.uint16).to(tl.bfloat16, bitcast=True)
    else:
        y = x.to(DTYPE)
    return y


@triton.jit
def tensor_pointer(table, row, n_tensors, index, DTYPE: tl.constexpr, ALIGNED: tl.constexpr):
    """Typed pointer to tensor ``index`` of list ``row`` (index may be a scalar or a block)."""
    ptr = tl.load(table + row * n_tensors + index).to(tl.pointer_type(DTYPE))
    if ALIGNED:
        ptr = tl.multiple_of(ptr, 16)
    return ptr


@triton.jit
def chunk_location(chunk_tensor, chunk_start, numels, chunk, CHUNK: tl.constexpr):
    """(tensor index, first element, element count) of one chunk."""
    index = tl.load(chunk_tensor + chunk)
    start = tl.multiple_of(tl.load(chunk_start + chunk), CHUNK)
    count = tl.minimum(tl.load(numels + index) - start, CHUNK).to(tl.int32)
    return index, start, count


@triton.jit
def pow_int(base, exponent):
    """``base ** exponent`` in float64 for whole exponents in [0, 2^32) by squaring (step counts
    are whole numbers; no libdevice, so the interpreter runs it too)."""
    e = exponent.to(tl.int64)
    result = tl.zeros_like(exponent).to(tl.float64) + 1.0  # shaped like the exponent
    power = result * base
    for _ in range(32):
        result = tl.where((e & 1) != 0, result * power, result)
        power = power * power
        e = e >> 1
    return result


@triton.jit
def learning_rate(lr_tensor, lr, HAS_LR_TENSOR: tl.constexpr):
    """lr as float64: the device tensor when given, else the scalar argument."""
    if HAS_LR_TENSOR:
        value = tl.load(lr_tensor).to(tl.float64)
    else:
        value = tl.cast(lr, tl.float64)
    return value


@triton.jit
def grad_unscale(grad_scale, HAS_GRAD_SCALE: tl.constexpr):
    if HAS_GRAD_SCALE:
        value = tl.load(grad_scale).to(tl.float32)
    else:
        value = tl.full((), 1.0, tl.float32)
    return value


@triton.jit
def may_write(found_inf, HAS_FOUND_INF: tl.constexpr):
    """False when a GradScaler found inf/NaN grads: the step then writes nothing."""
    if HAS_FOUND_INF:
        value = tl.load(found_inf).to(tl.float32) == 0
    else:
        value = tl.full((), 1, tl.int1)
    return value


@triton.jit
def global_mean(accum, VOLATILE: tl.constexpr):
    """v_bar = accum[0] / accum[1] (float64), 0 when nothing was counted."""
    total = tl.load(accum, volatile=VOLATILE)
    count = tl.load(accum + 1, volatile=VOLATILE)
    return tl.where(count > 0, total / tl.maximum(count, 1.0), 0.0)


@triton.jit
def is_last_to_arrive(counter):
    """True in exactly one program: the last of the launch to get here. It sees every other
    program's earlier writes, and resets the counter for the next launch."""
    tl.debug_barrier()  # every thread of this program has written before it announces so
    arrived = tl.atomic_add(counter, 1, sem="acq_rel")
    last = arrived == tl.num_programs(0) - 1
    if last:
        tl.atomic_xchg(counter, 0)
    return last


@triton.jit
def advance_steps(table, row, n_tensors, TILE: tl.constexpr):
    """``state_steps[i] += 1`` for every tensor (run by one program after every read)."""
    for first in range(0, n_tensors, TILE):
        index = first + tl.arange(0, TILE)
        inside = index < n_tensors
        address = tl.load(table + row * n_tensors + index, mask=inside, other=0)
        step = address.to(tl.pointer_type(tl.float32))
        tl.store(step, tl.load(step, mask=inside) + 1.0, mask=inside)
