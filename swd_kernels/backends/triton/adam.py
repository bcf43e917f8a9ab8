"""AdamS / AMSGradS in Triton: the reduction (pass 1), the update (pass 2), and the whole step.

Every launch covers a bucket through its pointer table (tables.py); program ``c`` works on
chunk ``c``. The reduction writes one float64 partial per chunk; the last program to finish
turns them, in a fixed order, into the per-tensor sums, ``v_sums`` and ``accum`` (no float
atomics: bitwise the same every run). The update's last program advances the step counts,
after every program has read them.

``adam_step`` on a GPU is two launches (reduce, update) by default. ``ONE_LAUNCH = True``
selects ``adam_step_one_launch``: a persistent grid of co-resident programs with a grid
barrier between the passes (cooperative launch where the installed Triton has it). It gives
bitwise the same result; it is off until measured on the GPU.
"""
from __future__ import annotations

import os

import torch
import triton
import triton.language as tl

from . import tables
from .common import (TL_DTYPES, advance_steps, as_double, chunk_location, global_mean,
                     grad_unscale, is_last_to_arrive, learning_rate, may_write, one_minus,
                     pow_int, split_double, tensor_pointer, to_storage)

ONE_LAUNCH = os.environ.get("SWD_TRITON_ONE_LAUNCH", "0") == "1"

# Rows of an Adam pointer table (lists an op does not take are rows of zeros).
ROW_P = tl.constexpr(0)
ROW_G = tl.constexpr(1)
ROW_M = tl.constexpr(2)
ROW_V = tl.constexpr(3)
ROW_VMAX = tl.constexpr(4)
ROW_STEP = tl.constexpr(5)
ROW_VSUM = tl.constexpr(6)


# ------------------------------------------------------------------ pass 1: the reduction ---

@triton.jit
def partial_block(g_ptr, v_ptr, vmax_ptr, offs, mask, unscale, beta2, one_minus_beta2,
                  AMSGRAD: tl.constexpr):
    g = tl.div_rn(tl.load(g_ptr + offs, mask=mask, other=0).to(tl.float32), unscale)
    if AMSGRAD:
        v = tl.load(v_ptr + offs, mask=mask, other=0).to(tl.float32)
        vmax = tl.load(vmax_ptr + offs, mask=mask, other=0).to(tl.float32)
        v = beta2 * v + one_minus_beta2 * g * g  # rules.h adam_second_moment
        value = tl.maximum(vmax, v)
    else:
        value = g * g
    return value


@triton.jit
def chunk_partial(table, n_tensors, chunk_tensor, chunk_start, numels, chunk, unscale, beta2,
                  one_minus_beta2, AMSGRAD: tl.constexpr, G_DTYPE: tl.constexpr,
                  S_DTYPE: tl.constexpr, ALIGNED: tl.constexpr, CHUNK: tl.constexpr,
                  BLOCK: tl.constexpr):
    """This chunk's share of its tensor's sum: of (g/grad_scale)^2, or of the new vmax."""
    index, start, count = chunk_location(chunk_tensor, chunk_start, numels, chunk, CHUNK)
    g_ptr = tensor_pointer(table, ROW_G, n_tensors, index, G_DTYPE, ALIGNED) + start
    v_ptr = tensor_pointer(table, ROW_V, n_tensors, index, S_DTYPE, ALIGNED) + start
    vmax_ptr = tensor_pointer(table, ROW_VMAX, n_tensors, index, S_DTYPE, ALIGNED) + start
    acc = tl.zeros([BLOCK], tl.float32)
    # whole blocks unmasked (lets the compiler vectorize), then the masked tail
    full = count // BLOCK * BLOCK
    for offset in range(0, full, BLOCK):
        offs = offset + tl.arange(0, BLOCK)
        acc += partial_block(g_ptr, v_ptr, vmax_ptr, offs, tl.arange(0, BLOCK) < BLOCK,
                             unscale, beta2, one_minus_beta2, AMSGRAD)
    if full < count:
        offs = full + tl.arange(0, BLOCK)
        acc += partial_block(g_ptr, v_ptr, vmax_ptr, offs, offs < count, unscale, beta2,
                             one_minus_beta2, AMSGRAD)
    return tl.sum(acc, axis=0).to(tl.float64)


@triton.jit
def finish_reduction(table, n_tensors, first_chunk, partials, accum, total_numel, beta2_64,
                     write, AMSGRAD: tl.constexpr, TENSOR_TILE: tl.constexpr,
                     PARTIAL_TILE: tl.constexpr):
    """Chunk partials -> per-tensor sums -> ``v_sums`` (identity) and ``accum``, in a fixed
    order. Run by one program after every partial is written."""
    total = tl.zeros([TENSOR_TILE], tl.float64)
    for tile in range(0, n_tensors, TENSOR_TILE):
        index = tile + tl.arange(0, TENSOR_TILE)
        inside = index < n_tensors
        lo = tl.load(first_chunk + index, mask=inside, other=0)
        hi = tl.load(first_chunk + index + 1, mask=inside, other=0)
        tile_lo = tl.load(first_chunk + tile)
        tile_hi = tl.load(first_chunk + tl.minimum(tile + TENSOR_TILE, n_tensors))
        sums = tl.zeros([TENSOR_TILE], tl.float64)
        for c0 in range(tile_lo, tile_hi, PARTIAL_TILE):
            c = c0 + tl.arange(0, PARTIAL_TILE)
            part = tl.load(partials + c, mask=c < tile_hi, other=0.0, volatile=True)
            mine = (c[None, :] >= lo[:, None]) & (c[None, :] < hi[:, None])
            sums += tl.sum(tl.where(mine, part[None, :], 0.0), axis=1)
        step_ptr = tl.load(table + ROW_STEP * n_tensors + index, mask=inside, other=0)
        step = tl.load(step_ptr.to(tl.pointer_type(tl.float32)), mask=inside, other=0.0)
        bias_correction2 = 1.0 - pow_int(beta2_64, step.to(tl.float64) + 1.0)
        if AMSGRAD:
            v_hat_sum = sums / bias_correction2
        else:
            v_sum_ptr = tl.load(table + ROW_VSUM * n_tensors + index, mask=inside, other=0)
            v_sum_ptr = v_sum_ptr.to(tl.pointer_type(tl.float64))
            old = tl.load(v_sum_ptr, mask=inside, other=0.0)
            new = beta2_64 * old + (1.0 - beta2_64) * sums
            tl.store(v_sum_ptr, new, mask=inside & (write != 0))
            v_hat_sum = new / bias_correction2
        total += tl.where(inside, v_hat_sum, 0.0)
    tl.store(accum, tl.load(accum) + tl.sum(total, axis=0))
    tl.store(accum + 1, tl.load(accum + 1) + total_numel.to(tl.float64))


@triton.jit
def adam_reduce_kernel(
        table, n_tensors, chunk_tensor, chunk_start, numels, first_chunk, n_chunks, partials,
        counter, accum, total_numel, grad_scale, found_inf, beta2, beta2_lo,
        HAS_GRAD_SCALE: tl.constexpr, HAS_FOUND_INF: tl.constexpr, AMSGRAD: tl.constexpr,
        G_DTYPE: tl.constexpr, S_DTYPE: tl.constexpr, ALIGNED: tl.constexpr,
        CHUNK: tl.constexpr, BLOCK: tl.constexpr, TENSOR_TILE: tl.constexpr,
        PARTIAL_TILE: tl.constexpr):
    chunk = tl.program_id(0)
    if chunk < n_chunks:
        unscale = grad_unscale(grad_scale, HAS_GRAD_SCALE)
        part = chunk_partial(table, n_tensors, chunk_tensor, chunk_start, numels, chunk,
                             unscale, beta2, one_minus(beta2, beta2_lo), AMSGRAD, G_DTYPE,
                             S_DTYPE, ALIGNED, CHUNK, BLOCK)
        tl.store(partials + chunk, part)
    if is_last_to_arrive(counter):
        write = may_write(found_inf, HAS_FOUND_INF)
        finish_reduction(table, n_tensors, first_chunk, partials, accum, total_numel,
                         as_double(beta2, beta2_lo), write, AMSGRAD, TENSOR_TILE, PARTIAL_TILE)


# ------------------------------------------------------------------ pass 2: the update ------

@triton.jit
def decay_scale(v_bar, decay_power, decay_eps):
    """1 / (v_bar + decay_eps)^p (float64): 1 when p = 0, 0 when the base is 0. p = 0.5 (the
    default) is exact in float64; other powers go through fp32 exp2/log2."""
    base = v_bar + tl.cast(decay_eps, tl.float64)
    safe = tl.where(base > 0, base, 1.0)
    general = tl.exp2(-decay_power * tl.log2(safe.to(tl.float32))).to(tl.float64)
    scale = tl.where(decay_power == 0.5, 1.0 / tl.sqrt(safe), general)
    scale = tl.where(base > 0, scale, 0.0)
    return tl.where(decay_power == 0.0, 1.0, scale)


@triton.jit
def adam_block(p_ptr, g_ptr, m_ptr, v_ptr, vmax_ptr, offs, mask, unscale, decay, step_size,
               sqrt_bc2, one_minus_beta1, beta2, one_minus_beta2, eps, AMSGRAD: tl.constexpr,
               MAXIMIZE: tl.constexpr, P_DTYPE: tl.constexpr, S_DTYPE: tl.constexpr):
    p = tl.load(p_ptr + offs, mask=mask, other=0).to(tl.float32)
    g = tl.div_rn(tl.load(g_ptr + offs, mask=mask, other=0).to(tl.float32), unscale)
    if MAXIMIZE:
        g = -g
    m = tl.load(m_ptr + offs, mask=mask, other=0).to(tl.float32)
    v = tl.load(v_ptr + offs, mask=mask, other=0).to(tl.float32)
    # rules.h adam_element
    m = m + one_minus_beta1 * (g - m)
    v = beta2 * v + one_minus_beta2 * g * g
    if AMSGRAD:
        vmax = tl.load(vmax_ptr + offs, mask=mask, other=0).to(tl.float32)
        vmax = tl.maximum(vmax, v)
        v_used = vmax
        tl.store(vmax_ptr + offs, to_storage(vmax, S_DTYPE), mask=mask)
    else:
        v_used = v
    denom = tl.div_rn(tl.sqrt_rn(v_used), sqrt_bc2) + eps
    p = p * decay - tl.div_rn(step_size * m, denom)
    tl.store(p_ptr + offs, to_storage(p, P_DTYPE), mask=mask)
    tl.store(m_ptr + offs, to_storage(m, S_DTYPE), mask=mask)
    tl.store(v_ptr + offs, to_storage(v, S_DTYPE), mask=mask)


@triton.jit
def adam_update_chunk(
        table, n_tensors, chunk_tensor, chunk_start, numels, chunk, v_bar, lr64, unscale,
        write, beta1, beta1_lo, beta2, beta2_lo, weight_decay, eps, decay_power, decay_eps,
        AMSGRAD: tl.constexpr, MAXIMIZE: tl.constexpr, P_DTYPE: tl.constexpr,
        G_DTYPE: tl.constexpr, S_DTYPE: tl.constexpr, ALIGNED: tl.constexpr,
        CHUNK: tl.constexpr, BLOCK: tl.constexpr):
    index, start, count = chunk_location(chunk_tensor, chunk_start, numels, chunk, CHUNK)
    step_ptr = tl.load(table + ROW_STEP * n_tensors + index).to(tl.pointer_type(tl.float32))
    t = tl.load(step_ptr).to(tl.float64) + 1.0
    # the per-tensor scalars of rules.h adam_scalars, in float64, then fp32
    bias_correction1 = 1.0 - pow_int(as_double(beta1, beta1_lo), t)
    bias_correction2 = 1.0 - pow_int(as_double(beta2, beta2_lo), t)
    scale = decay_scale(v_bar, decay_power, decay_eps)
    decay = (1.0 - lr64 * tl.cast(weight_decay, tl.float64) * scale).to(tl.float32)
    step_size = (lr64 / bias_correction1).to(tl.float32)
    sqrt_bc2 = tl.sqrt(bias_correction2).to(tl.float32)
    one_minus_beta1 = one_minus(beta1, beta1_lo)
    one_minus_beta2 = one_minus(beta2, beta2_lo)

    p_ptr = tensor_pointer(table, ROW_P, n_tensors, index, P_DTYPE, ALIGNED) + start
    g_ptr = tensor_pointer(table, ROW_G, n_tensors, index, G_DTYPE, ALIGNED) + start
    m_ptr = tensor_pointer(table, ROW_M, n_tensors, index, S_DTYPE, ALIGNED) + start
    v_ptr = tensor_pointer(table, ROW_V, n_tensors, index, S_DTYPE, ALIGNED) + start
    vmax_ptr = tensor_pointer(table, ROW_VMAX, n_tensors, index, S_DTYPE, ALIGNED) + start
    full = count // BLOCK * BLOCK
    for offset in range(0, full, BLOCK):
        offs = offset + tl.arange(0, BLOCK)
        adam_block(p_ptr, g_ptr, m_ptr, v_ptr, vmax_ptr, offs,
                   (tl.arange(0, BLOCK) < BLOCK) & (write != 0), unscale, decay, step_size,
                   sqrt_bc2, one_minus_beta1, beta2, one_minus_beta2, eps, AMSGRAD, MAXIMIZE,
                   P_DTYPE, S_DTYPE)
    if full < count:
        offs = full + tl.arange(0, BLOCK)
        adam_block(p_ptr, g_ptr, m_ptr, v_ptr, vmax_ptr, offs, (offs < count) & (write != 0),
                   unscale, decay, step_size, sqrt_bc2, one_minus_beta1, beta2,
                   one_minus_beta2, eps, AMSGRAD, MAXIMIZE, P_DTYPE, S_DTYPE)


@triton.jit
def adam_update_kernel(
        table, n_tensors, chunk_tensor, chunk_start, numels, n_chunks, counter, accum,
        lr_tensor, grad_scale, found_inf, lr, beta1, beta1_lo, beta2, beta2_lo, weight_decay,
        eps, decay_power, decay_eps,
        HAS_LR_TENSOR: tl.constexpr, HAS_GRAD_SCALE: tl.constexpr,
        HAS_FOUND_INF: tl.constexpr, AMSGRAD: tl.constexpr, MAXIMIZE: tl.constexpr,
        P_DTYPE: tl.constexpr, G_DTYPE: tl.constexpr, S_DTYPE: tl.constexpr,
        ALIGNED: tl.constexpr, CHUNK: tl.constexpr, BLOCK: tl.constexpr,
        TENSOR_TILE: tl.constexpr):
    chunk = tl.program_id(0)
    write = may_write(found_inf, HAS_FOUND_INF)
    if chunk < n_chunks:
        adam_update_chunk(
            table, n_tensors, chunk_tensor, chunk_start, numels, chunk,
            global_mean(accum, False), learning_rate(lr_tensor, lr, HAS_LR_TENSOR),
            grad_unscale(grad_scale, HAS_GRAD_SCALE), write, beta1, beta1_lo, beta2,
            beta2_lo, weight_decay, eps, decay_power, decay_eps, AMSGRAD, MAXIMIZE, P_DTYPE,
            G_DTYPE, S_DTYPE, ALIGNED, CHUNK, BLOCK)
    if is_last_to_arrive(counter):
        if write:
            advance_steps(table, ROW_STEP, n_tensors, TENSOR_TILE)


# ------------------------------------------------------------------ both passes, one launch -

@triton.jit
def adam_step_one_launch_kernel(
        table, n_tensors, chunk_tensor, chunk_start, numels, first_chunk, n_chunks, partials,
        counters, accum, total_numel, lr_tensor, grad_scale, found_inf, lr, beta1, beta1_lo,
        beta2, beta2_lo, weight_decay, eps, decay_power, decay_eps,
        HAS_LR_TENSOR: tl.constexpr, HAS_GRAD_SCALE: tl.constexpr,
        HAS_FOUND_INF: tl.constexpr, AMSGRAD: tl.constexpr, MAXIMIZE: tl.constexpr,
        P_DTYPE: tl.constexpr, G_DTYPE: tl.constexpr, S_DTYPE: tl.constexpr,
        ALIGNED: tl.constexpr, CHUNK: tl.constexpr, BLOCK: tl.constexpr,
        TENSOR_TILE: tl.constexpr, PARTIAL_TILE: tl.constexpr,
        ARRIVE: tl.constexpr, RELEASE: tl.constexpr, DONE: tl.constexpr):
    """Persistent grid: every program must be resident at once (the barrier spins)."""
    program = tl.program_id(0)
    programs = tl.num_programs(0)
    unscale = grad_unscale(grad_scale, HAS_GRAD_SCALE)
    write = may_write(found_inf, HAS_FOUND_INF)
    one_minus_beta2 = one_minus(beta2, beta2_lo)
    for chunk in range(program, n_chunks, programs):
        part = chunk_partial(table, n_tensors, chunk_tensor, chunk_start, numels, chunk,
                             unscale, beta2, one_minus_beta2, AMSGRAD, G_DTYPE, S_DTYPE,
                             ALIGNED, CHUNK, BLOCK)
        tl.store(partials + chunk, part)
    # grid barrier: the last program to arrive finishes the reduction, then releases the rest
    if is_last_to_arrive(counters + ARRIVE):
        finish_reduction(table, n_tensors, first_chunk, partials, accum, total_numel,
                         as_double(beta2, beta2_lo), write, AMSGRAD, TENSOR_TILE, PARTIAL_TILE)
        tl.debug_barrier()
        tl.atomic_xchg(counters + RELEASE, 1, sem="release")
    while tl.atomic_add(counters + RELEASE, 0, sem="acquire") == 0:
        pass
    tl.debug_barrier()
    v_bar = global_mean(accum, True)
    lr64 = learning_rate(lr_tensor, lr, HAS_LR_TENSOR)
    for chunk in range(program, n_chunks, programs):
        adam_update_chunk(
            table, n_tensors, chunk_tensor, chunk_start, numels, chunk, v_bar, lr64, unscale,
            write, beta1, beta1_lo, beta2, beta2_lo, weight_decay, eps, decay_power,
            decay_eps, AMSGRAD, MAXIMIZE, P_DTYPE, G_DTYPE, S_DTYPE, ALIGNED, CHUNK, BLOCK)
    if is_last_to_arrive(counters + DONE):
        tl.atomic_xchg(counters + RELEASE, 0)  # every program is past the spin by now
        if write:
            advance_steps(table, ROW_STEP, n_tensors, TENSOR_TILE)


# ------------------------------------------------------------------ launchers ---------------

def list_dtype(tensors, name: str):
    """The Triton dtype shared by every tensor of one list (None for an empty list)."""
    if not tensors:
        return None
    dtypes = {t.dtype for t in tensors}
    if len(dtypes) != 1 or tensors[0].dtype not in TL_DTYPES:
        raise TypeError(f"the triton backend needs every tensor of {name} in one floating "
                        f"dtype of {list(TL_DTYPES)}, got {sorted(map(str, dtypes))}")
    return TL_DTYPES[tensors[0].dtype]


def check_device(device, **optional) -> None:
    for name, value in optional.items():
        if value is not None and value.device != device:
            raise RuntimeError(f"{name} must be on the bucket's device {device}, got "
                               f"{value.device}: move it there (asynchronously) before the step")


class AdamCall:
    """Everything a launch needs about one bucket: layout, table, dtypes, flags."""

    def __init__(self, params, grads, exp_avgs, exp_avg_sqs, max_exp_avg_sqs, state_steps,
                 v_sums, accum, lr_tensor, grad_scale, found_inf, amsgrad):
        self.layout = tables.layout_for(grads)
        rows = [params, grads, exp_avgs, exp_avg_sqs,
                max_exp_avg_sqs if amsgrad else [], state_steps,
                [] if amsgrad else v_sums]
        self.table, aligned = tables.pointer_table(self.layout, rows, element_rows=ROW_STEP.value)
        check_device(accum.device, lr_tensor=lr_tensor, grad_scale=grad_scale,
                     found_inf=found_inf)
        state_dtype = list_dtype(exp_avg_sqs, "exp_avg_sqs")
        same_dtype_lists = {"exp_avgs": exp_avgs}
        if amsgrad:
            same_dtype_lists["max_exp_avg_sqs"] = max_exp_avg_sqs
        for name, tensors in same_dtype_lists.items():
            if tensors and list_dtype(tensors, name) != state_dtype:
                raise TypeError(f"{name} must have the dtype of exp_avg_sqs ({state_dtype})")
        dummy = accum  # stands in for absent optional tensors; never read
        self.common = dict(
            table=self.table, n_tensors=self.layout.n_tensors,
            chunk_tensor=self.layout.chunk_tensor, chunk_start=self.layout.chunk_start,
            numels=self.layout.numels, n_chunks=self.layout.n_chunks,
            grad_scale=dummy if grad_scale is None else grad_scale,
            found_inf=dummy if found_inf is None else found_inf,
            HAS_GRAD_SCALE=grad_scale is not None, HAS_FOUND_INF=found_inf is not None,
            AMSGRAD=bool(amsgrad), G_DTYPE=list_dtype(grads, "grads"), S_DTYPE=state_dtype,
            ALIGNED=aligned, CHUNK=self.layout.chunk, BLOCK=tables.BLOCK)
        self.lr_tensor = lr_tensor
        self.params = params
        self.dummy = dummy

    def update_args(self, lr, beta1, beta2, weight_decay, eps, decay_power, decay_eps,
                    maximize):
        beta1_hi, beta1_lo = split_double(beta1)
        beta2_hi, beta2_lo = split_double(beta2)
        return dict(
            lr_tensor=self.dummy if self.lr_tensor is None else self.lr_tensor,
            lr=float(lr), beta1=beta1_hi, beta1_lo=beta1_lo, beta2=beta2_hi, beta2_lo=beta2_lo,
            weight_decay=float(weight_decay), eps=float(eps), decay_power=float(decay_power),
            decay_eps=float(decay_eps), HAS_LR_TENSOR=self.lr_tensor is not None,
            MAXIMIZE=bool(maximize), P_DTYPE=list_dtype(self.params, "params"))


def _reduce_launch(call: AdamCall, accum, beta2) -> None:
    layout = call.layout
    beta2_hi, beta2_lo = split_double(beta2)
    adam_reduce_kernel[(max(layout.n_chunks, 1),)](
        **call.common, first_chunk=layout.first_chunk, partials=layout.partials,
        counter=layout.counters[tables.REDUCE_COUNTER:], accum=accum,
        total_numel=layout.total_numel, beta2=beta2_hi, beta2_lo=beta2_lo,
        TENSOR_TILE=tables.TENSOR_TILE, PARTIAL_TILE=tables.PARTIAL_TILE)


def _update_launch(call: AdamCall, accum, update_args) -> None:
    layout = call.layout
    adam_update_kernel[(max(layout.n_chunks, 1),)](
        **call.common, **update_args, counter=layout.counters[tables.UPDATE_COUNTER:],
        accum=accum, TENSOR_TILE=tables.TENSOR_TILE)


def adam_reduce(grads, exp_avg_sqs, max_exp_avg_sqs, state_steps, v_sums, accum, beta2,
                amsgrad, grad_scale, found_inf):
    if not grads:
        return
    call = AdamCall([], grads, [], exp_avg_sqs, max_exp_avg_sqs, state_steps, v_sums, accum,
                    None, grad_scale, found_inf, amsgrad)
    _reduce_launch(call, accum, beta2)


def adam_update(params, grads, exp_avgs, exp_avg_sqs, max_exp_avg_sqs, state_steps, accum,
                lr_tensor, lr, beta1, beta2, weight_decay, eps, decay_power, decay_eps,
                amsgrad, maximize, grad_scale, found_inf):
    if not params:
        return
    call = AdamCall(params, grads, exp_avgs, exp_avg_sqs, max_exp_avg_sqs, state_steps, [],
                    accum, lr_tensor, grad_scale, found_inf, amsgrad)
    _update_launch(call, accum, call.update_args(lr, beta1, beta2, weight_decay, eps,
                                                 decay_power, decay_eps, maximize))


def adam_step(params, grads, exp_avgs, exp_avg_sqs, max_exp_avg_sqs, state_steps, v_sums,
              accum, lr_tensor, lr, beta1, beta2, weight_decay, eps, decay_power, decay_eps,
              amsgrad, maximize, grad_scale, found_inf):
    if not params:
        return
    call = AdamCall(params, grads, exp_avgs, exp_avg_sqs, max_exp_avg_sqs, state_steps,
                    v_sums, accum, lr_tensor, grad_scale, found_inf, amsgrad)
    update_args = call.update_args(lr, beta1, beta2, weight_decay, eps, decay_power,
                                   decay_eps, maximize)
    if ONE_LAUNCH and accum.device.type == "cuda":
        adam_step_one_launch(call, accum, update_args, programs=_resident_programs(accum.device))
    else:
        _reduce_launch(call, accum, beta2)
        _update_launch(call, accum, update_args)


# ------------------------------------------------------------------ the one-launch path ------

def _cooperative_launch_supported() -> bool:
    """Triton >= 3.3 can launch a grid cooperatively (the driver then refuses a grid that
    cannot be resident at once instead of letting the barrier deadlock)."""
    try:
        from triton.backends.nvidia.compiler import CUDAOptions
    except ImportError:
        return False
    return "launch_cooperative_grid" in getattr(CUDAOptions, "__dataclass_fields__", {})


def _resident_programs(device) -> int:
    # one program (4 warps, no shared-memory tiles) per SM is resident on any NVIDIA GPU
    return torch.cuda.get_device_properties(device).multi_processor_count


def adam_step_one_launch(call: AdamCall, accum, update_args, programs: int) -> None:
    """Both passes in one launch of ``programs`` persistent programs. Every program must be
    resident at once; under the CPU interpreter (programs run one after another) only
    ``programs=1`` can work, which is how the tests exercise it."""
    layout = call.layout
    programs = max(1, min(programs, layout.n_chunks))
    extra = {}
    if accum.device.type == "cuda" and _cooperative_launch_supported():
        extra["launch_cooperative_grid"] = True
    adam_step_one_launch_kernel[(programs,)](
        **call.common, **update_args, first_chunk=layout.first_chunk,
        partials=layout.partials, counters=layout.counters, accum=accum,
        total_numel=layout.total_numel, TENSOR_TILE=tables.TENSOR_TILE,
        PARTIAL_TILE=tables.PARTIAL_TILE, ARRIVE=tables.BARRIER_ARRIVE,
        RELEASE=tables.BARRIER_RELEASE, DONE=tables.STEP_DONE, **extra)
