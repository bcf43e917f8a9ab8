"""AdaiS in Triton: the update pass (its reduction is adam.py's, with amsgrad=False).

One launch per bucket, program ``c`` on chunk ``c``; the last program to finish advances the
step counts, after every program has read them.
"""
from __future__ import annotations

import triton
import triton.language as tl

from . import tables
from .adam import check_device, list_dtype
from .common import (advance_steps, as_double, chunk_location, global_mean, grad_unscale,
                     is_last_to_arrive, learning_rate, may_write, one_minus, pow_int,
                     split_double, tensor_pointer, to_storage)

ROW_P = tl.constexpr(0)
ROW_G = tl.constexpr(1)
ROW_M = tl.constexpr(2)
ROW_V = tl.constexpr(3)
ROW_PROD = tl.constexpr(4)
ROW_STEP = tl.constexpr(5)


@triton.jit
def adai_block(p_ptr, g_ptr, m_ptr, v_ptr, prod_ptr, offs, mask, unscale, decay, lr32,
               bias_correction2, v_bar, beta0, beta2, one_minus_beta2, eps,
               MAXIMIZE: tl.constexpr,
               P_DTYPE: tl.constexpr, S_DTYPE: tl.constexpr):
    p = tl.load(p_ptr + offs, mask=mask, other=0).to(tl.float32)
    g = tl.div_rn(tl.load(g_ptr + offs, mask=mask, other=0).to(tl.float32), unscale)
    if MAXIMIZE:
        g = -g
    m = tl.load(m_ptr + offs, mask=mask, other=0).to(tl.float32)
    v = tl.load(v_ptr + offs, mask=mask, other=0).to(tl.float32)
    prod = tl.load(prod_ptr + offs, mask=mask, other=1).to(tl.float32)
    # rules.h adai_element
    v = beta2 * v + one_minus_beta2 * g * g
    ratio = tl.where(v_bar > 0.0, tl.div_rn(tl.div_rn(v, bias_correction2), v_bar), 1.0)
    # beta1 = clamp(1 - beta0 * ratio, 0, 1 - eps), formed through 1 - beta1 itself: at the
    # bound 1 - beta1 = eps exactly, where fp32 1 - (1 - eps) would be off
    one_minus_beta1 = beta0 * ratio
    one_minus_beta1 = tl.where(one_minus_beta1 < eps, eps, one_minus_beta1)
    one_minus_beta1 = tl.where(one_minus_beta1 > 1.0, 1.0, one_minus_beta1)
    beta1 = 1.0 - one_minus_beta1
    prod = prod * beta1
    m = beta1 * m + one_minus_beta1 * g
    p = p * decay - tl.div_rn(lr32 * m, 1.0 - prod)
    tl.store(p_ptr + offs, to_storage(p, P_DTYPE), mask=mask)
    tl.store(m_ptr + offs, to_storage(m, S_DTYPE), mask=mask)
    tl.store(v_ptr + offs, to_storage(v, S_DTYPE), mask=mask)
    tl.store(prod_ptr + offs, to_storage(prod, S_DTYPE), mask=mask)


@triton.jit
def adai_update_chunk(
        table, n_tensors, chunk_tensor, chunk_start, numels, chunk, v_bar64, lr64, unscale,
        write, beta0, beta2, beta2_lo, weight_decay, eps, MAXIMIZE: tl.constexpr,
        P_DTYPE: tl.constexpr, G_DTYPE: tl.constexpr, S_DTYPE: tl.constexpr,
        ALIGNED: tl.constexpr, CHUNK: tl.constexpr, BLOCK: tl.constexpr):
    index, start, count = chunk_location(chunk_tensor, chunk_start, numels, chunk, CHUNK)
    step_ptr = tl.load(table + ROW_STEP * n_tensors + index).to(tl.pointer_type(tl.float32))
    t = tl.load(step_ptr).to(tl.float64) + 1.0
    # the per-tensor scalars of rules.h adai_scalars, in float64, then fp32
    decay = (1.0 - lr64 * tl.cast(weight_decay, tl.float64)).to(tl.float32)
    lr32 = lr64.to(tl.float32)
    bias_correction2 = (1.0 - pow_int(as_double(beta2, beta2_lo), t)).to(tl.float32)
    v_bar = v_bar64.to(tl.float32)
    one_minus_beta2 = one_minus(beta2, beta2_lo)

    p_ptr = tensor_pointer(table, ROW_P, n_tensors, index, P_DTYPE, ALIGNED) + start
    g_ptr = tensor_pointer(table, ROW_G, n_tensors, index, G_DTYPE, ALIGNED) + start
    m_ptr = tensor_pointer(table, ROW_M, n_tensors, index, S_DTYPE, ALIGNED) + start
    v_ptr = tensor_pointer(table, ROW_V, n_tensors, index, S_DTYPE, ALIGNED) + start
    prod_ptr = tensor_pointer(table, ROW_PROD, n_tensors, index, S_DTYPE, ALIGNED) + start
    full = count // BLOCK * BLOCK
    for offset in range(0, full, BLOCK):
        offs = offset + tl.arange(0, BLOCK)
        adai_block(p_ptr, g_ptr, m_ptr, v_ptr, prod_ptr, offs,
                   (tl.arange(0, BLOCK) < BLOCK) & (write != 0), unscale, decay, lr32,
                   bias_correction2, v_bar, beta0, beta2, one_minus_beta2, eps, MAXIMIZE,
                   P_DTYPE, S_DTYPE)
    if full < count:
        offs = full + tl.arange(0, BLOCK)
        adai_block(p_ptr, g_ptr, m_ptr, v_ptr, prod_ptr, offs, (offs < count) & (write != 0),
                   unscale, decay, lr32, bias_correction2, v_bar, beta0, beta2,
                   one_minus_beta2, eps, MAXIMIZE, P_DTYPE, S_DTYPE)


@triton.jit
def adai_update_kernel(
        table, n_tensors, chunk_tensor, chunk_start, numels, n_chunks, counter, accum,
        lr_tensor, grad_scale, found_inf, lr, beta0, beta2, beta2_lo, weight_decay, eps,
        HAS_LR_TENSOR: tl.constexpr, HAS_GRAD_SCALE: tl.constexpr,
        HAS_FOUND_INF: tl.constexpr, MAXIMIZE: tl.constexpr, P_DTYPE: tl.constexpr,
        G_DTYPE: tl.constexpr, S_DTYPE: tl.constexpr, ALIGNED: tl.constexpr,
        CHUNK: tl.constexpr, BLOCK: tl.constexpr, TENSOR_TILE: tl.constexpr):
    chunk = tl.program_id(0)
    write = may_write(found_inf, HAS_FOUND_INF)
    if chunk < n_chunks:
        adai_update_chunk(
            table, n_tensors, chunk_tensor, chunk_start, numels, chunk,
            global_mean(accum, False), learning_rate(lr_tensor, lr, HAS_LR_TENSOR),
            grad_unscale(grad_scale, HAS_GRAD_SCALE), write, beta0, beta2, beta2_lo,
            weight_decay, eps, MAXIMIZE, P_DTYPE, G_DTYPE, S_DTYPE, ALIGNED, CHUNK, BLOCK)
    if is_last_to_arrive(counter):
        if write:
            advance_steps(table, ROW_STEP, n_tensors, TENSOR_TILE)


def adai_update(params, grads, exp_avgs, exp_avg_sqs, beta1_prods, state_steps, accum,
                lr_tensor, lr, beta0, beta2, weight_decay, eps, maximize, grad_scale,
                found_inf):
    if not params:
        return
    check_device(accum.device, lr_tensor=lr_tensor, grad_scale=grad_scale, found_inf=found_inf)
    layout = tables.layout_for(grads)
    table, aligned = tables.pointer_table(
        layout, [params, grads, exp_avgs, exp_avg_sqs, beta1_prods, state_steps],
        element_rows=ROW_STEP.value)
    state_dtype = list_dtype(exp_avg_sqs, "exp_avg_sqs")
    for name, tensors in (("exp_avgs", exp_avgs), ("beta1_prods", beta1_prods)):
        if list_dtype(tensors, name) != state_dtype:
            raise TypeError(f"{name} must have the dtype of exp_avg_sqs ({state_dtype})")
    beta2_hi, beta2_lo = split_double(beta2)
    adai_update_kernel[(max(layout.n_chunks, 1),)](
        table, layout.n_tensors, layout.chunk_tensor, layout.chunk_start, layout.numels,
        layout.n_chunks, layout.counters[tables.UPDATE_COUNTER:], accum,
        accum if lr_tensor is None else lr_tensor,
        accum if grad_scale is None else grad_scale,
        accum if found_inf is None else found_inf,
        float(lr), float(beta0), beta2_hi, beta2_lo, float(weight_decay), float(eps),
        HAS_LR_TENSOR=lr_tensor is not None, HAS_GRAD_SCALE=grad_scale is not None,
        HAS_FOUND_INF=found_inf is not None, MAXIMIZE=bool(maximize),
        P_DTYPE=list_dtype(params, "params"), G_DTYPE=list_dtype(grads, "grads"),
        S_DTYPE=state_dtype, ALIGNED=aligned, CHUNK=layout.chunk, BLOCK=tables.BLOCK,
        TENSOR_TILE=tables.TENSOR_TILE)
