"""SGDS in Triton: one update launch per bucket, no reduction.

Program ``c`` works on chunk ``c``; the last program to finish advances the step counts (a
tensor's first step, ``step == 0``, takes ``buf = g``), after every program has read them.
"""
from __future__ import annotations

import triton
import triton.language as tl

from . import tables
from .adam import check_device, list_dtype
from .common import (advance_steps, as_double, chunk_location, grad_unscale,
                     is_last_to_arrive, learning_rate, may_write, split_double, tensor_pointer,
                     to_storage)

ROW_P = tl.constexpr(0)
ROW_G = tl.constexpr(1)
ROW_BUF = tl.constexpr(2)
ROW_STEP = tl.constexpr(3)


@triton.jit
def sgd_block(p_ptr, g_ptr, buf_ptr, offs, mask, first, unscale, decay, lr32, momentum,
              one_minus_dampening, HAS_MOMENTUM: tl.constexpr, NESTEROV: tl.constexpr,
              MAXIMIZE: tl.constexpr, P_DTYPE: tl.constexpr, S_DTYPE: tl.constexpr):
    p = tl.load(p_ptr + offs, mask=mask, other=0).to(tl.float32)
    g = tl.div_rn(tl.load(g_ptr + offs, mask=mask, other=0).to(tl.float32), unscale)
    if MAXIMIZE:
        g = -g
    # rules.h sgd_element
    direction = g
    if HAS_MOMENTUM:
        buf = tl.load(buf_ptr + offs, mask=mask & (first == 0), other=0)
        buf = tl.where(first, g, momentum * buf.to(tl.float32) + one_minus_dampening * g)
        if NESTEROV:
            direction = g + momentum * buf
        else:
            direction = buf
        tl.store(buf_ptr + offs, to_storage(buf, S_DTYPE), mask=mask)
    p = p * decay - lr32 * direction
    tl.store(p_ptr + offs, to_storage(p, P_DTYPE), mask=mask)


@triton.jit
def sgd_update_kernel(
        table, n_tensors, chunk_tensor, chunk_start, numels, n_chunks, counter,
        lr_tensor, grad_scale, found_inf, lr, momentum, momentum_lo, dampening, dampening_lo,
        weight_decay,
        HAS_LR_TENSOR: tl.constexpr, HAS_GRAD_SCALE: tl.constexpr,
        HAS_FOUND_INF: tl.constexpr, HAS_MOMENTUM: tl.constexpr, NESTEROV: tl.constexpr,
        MAXIMIZE: tl.constexpr, P_DTYPE: tl.constexpr, G_DTYPE: tl.constexpr,
        S_DTYPE: tl.constexpr, ALIGNED: tl.constexpr, CHUNK: tl.constexpr,
        BLOCK: tl.constexpr, TENSOR_TILE: tl.constexpr):
    chunk = tl.program_id(0)
    write = may_write(found_inf, HAS_FOUND_INF)
    if chunk < n_chunks:
        index, start, count = chunk_location(chunk_tensor, chunk_start, numels, chunk, CHUNK)
        step_ptr = tl.load(table + ROW_STEP * n_tensors + index)
        first = tl.load(step_ptr.to(tl.pointer_type(tl.float32))) == 0.0
        # the per-tensor scalars of rules.h sgd_scalars, in float64, then fp32
        lr64 = learning_rate(lr_tensor, lr, HAS_LR_TENSOR)
        mu64 = as_double(momentum, momentum_lo)
        d64 = as_double(dampening, dampening_lo)
        decay = (1.0 - (1.0 - d64) / (1.0 - mu64) * lr64 * tl.cast(weight_decay, tl.float64))
        decay = decay.to(tl.float32)
        lr32 = lr64.to(tl.float32)
        one_minus_dampening = (1.0 - d64).to(tl.float32)
        unscale = grad_unscale(grad_scale, HAS_GRAD_SCALE)

        p_ptr = tensor_pointer(table, ROW_P, n_tensors, index, P_DTYPE, ALIGNED) + start
        g_ptr = tensor_pointer(table, ROW_G, n_tensors, index, G_DTYPE, ALIGNED) + start
        buf_ptr = tensor_pointer(table, ROW_BUF, n_tensors, index, S_DTYPE, ALIGNED) + start
        full = count // BLOCK * BLOCK
        for offset in range(0, full, BLOCK):
            offs = offset + tl.arange(0, BLOCK)
            sgd_block(p_ptr, g_ptr, buf_ptr, offs, (tl.arange(0, BLOCK) < BLOCK) & (write != 0),
                      first, unscale, decay, lr32, momentum, one_minus_dampening,
                      HAS_MOMENTUM, NESTEROV, MAXIMIZE, P_DTYPE, S_DTYPE)
        if full < count:
            offs = full + tl.arange(0, BLOCK)
            sgd_block(p_ptr, g_ptr, buf_ptr, offs, (offs < count) & (write != 0), first, unscale,
                      decay, lr32, momentum, one_minus_dampening, HAS_MOMENTUM, NESTEROV,
                      MAXIMIZE, P_DTYPE, S_DTYPE)
    if is_last_to_arrive(counter):
        if write:
            advance_steps(table, ROW_STEP, n_tensors, TENSOR_TILE)


def sgd_update(params, grads, momentum_buffers, state_steps, lr_tensor, lr, momentum,
               dampening, weight_decay, nesterov, maximize, grad_scale, found_inf):
    if not params:
        return
    device = params[0].device
    check_device(device, lr_tensor=lr_tensor, grad_scale=grad_scale, found_inf=found_inf)
    has_momentum = momentum != 0
    if has_momentum and len(momentum_buffers) != len(params):
        raise ValueError(f"momentum={momentum} needs one momentum buffer per param, got "
                         f"{len(momentum_buffers)} for {len(params)} params")
    layout = tables.layout_for(grads)
    table, aligned = tables.pointer_table(
        layout, [params, grads, momentum_buffers if has_momentum else [], state_steps],
        element_rows=ROW_STEP.value)
    momentum_hi, momentum_lo = split_double(momentum)
    dampening_hi, dampening_lo = split_double(dampening)
    dummy = state_steps[0]  # stands in for absent optional tensors; never read
    p_dtype = list_dtype(params, "params")
    sgd_update_kernel[(max(layout.n_chunks, 1),)](
        table, layout.n_tensors, layout.chunk_tensor, layout.chunk_start, layout.numels,
        layout.n_chunks, layout.counters[tables.UPDATE_COUNTER:],
        dummy if lr_tensor is None else lr_tensor,
        dummy if grad_scale is None else grad_scale,
        dummy if found_inf is None else found_inf,
        float(lr), momentum_hi, momentum_lo, dampening_hi, dampening_lo, float(weight_decay),
        HAS_LR_TENSOR=lr_tensor is not None, HAS_GRAD_SCALE=grad_scale is not None,
        HAS_FOUND_INF=found_inf is not None, HAS_MOMENTUM=bool(has_momentum),
        NESTEROV=bool(nesterov), MAXIMIZE=bool(maximize), P_DTYPE=p_dtype,
        G_DTYPE=list_dtype(grads, "grads"),
        S_DTYPE=list_dtype(momentum_buffers, "momentum_buffers") if has_momentum else p_dtype,
        ALIGNED=aligned, CHUNK=layout.chunk, BLOCK=tables.BLOCK,
        TENSOR_TILE=tables.TENSOR_TILE)
