"""AdaiS in Triton: the update pass (docs/design.md §1); its reduction is adam.py's, with
amsgrad=False (the backend registers adam.adam_reduce for it).

One launch per bucket, program ``c`` on chunk ``c``; the last program to finish advances the
step counts, after every program has read them. With 16-bit state the update also sets each
tensor's running sum to the sum of the exp_avg_sq it stored (ops.py, ``add_chunk_v_sum``).
"""
from __future__ import annotations

import triton
import triton.language as tl

from ... import ops
from . import workspace
from .common import (BucketLaunch, add_chunk_v_sum, chunk_location, element_pointer,
                     finish_update, global_mean, grad_unscale, learning_rate, list_dtype,
                     load_f32, load_grad, may_write, second_moment, state_dtype, step_count,
                     store_rounded, store_second_moment, sweep_chunk)
from .scalars import adai_scalars, as_double, double_args

# Rows of an AdaiS pointer table.
ROW_P, ROW_G, ROW_M, ROW_V, ROW_PROD, ROW_STEP, ROW_VSUM = map(tl.constexpr, range(7))


@triton.jit
def adai_rule(offs, mask, args, FLAGS: tl.constexpr):
    """rules.h ``adai_element`` on one block, in the same operation order; with SUM_V (16-bit
    state) returns the exp_avg_sq it stored (0 where masked)."""
    (p_ptr, g_ptr, m_ptr, v_ptr, prod_ptr, unscale, decay, lr, bias_correction2, v_bar,
     beta0, beta2, one_minus_beta2, eps) = args
    MAXIMIZE: tl.constexpr = FLAGS[0]
    SUM_V: tl.constexpr = FLAGS[1]
    p = load_f32(p_ptr, offs, mask)
    g = load_grad(g_ptr, offs, mask, unscale, MAXIMIZE)
    m = load_f32(m_ptr, offs, mask)
    v = load_f32(v_ptr, offs, mask)
    prod = load_f32(prod_ptr, offs, mask, 1)
    v = second_moment(v, g, beta2, one_minus_beta2)
    ratio = tl.where(v_bar > 0.0, tl.div_rn(tl.div_rn(v, bias_correction2), v_bar), 1.0)
    # beta1 = clamp(1 - beta0 * ratio, 0, 1 - eps), formed through 1 - beta1 itself: at the
    # bound 1 - beta1 = eps exactly, where fp32 1 - (1 - eps) would be off
    one_minus_beta1 = beta0 * ratio
    one_minus_beta1 = tl.where(one_minus_beta1 < eps, eps, one_minus_beta1)
    one_minus_beta1 = tl.where(one_minus_beta1 > 1.0, 1.0, one_minus_beta1)
    beta1 = 1.0 - one_minus_beta1
    prod = prod * beta1
    m = beta1 * m + one_minus_beta1 * g
    p = p * decay - tl.div_rn(lr * m, 1.0 - prod)
    store_rounded(p_ptr, offs, p, mask)
    store_rounded(m_ptr, offs, m, mask)
    stored = store_second_moment(v_ptr, offs, v, mask, SUM_V)
    store_rounded(prod_ptr, offs, prod, mask)
    return stored


@triton.jit
def adai_update_kernel(
        pointer_table, n_tensors, chunk_tensor, chunk_start, numels, first_chunk, n_chunks,
        chunk_size, partials, tensor_counters, counter, accum, lr_tensor, grad_scale, found_inf,
        lr, lr_lo, beta0, beta2, beta2_lo, weight_decay, weight_decay_lo, eps,
        HAS_LR_TENSOR: tl.constexpr, HAS_GRAD_SCALE: tl.constexpr,
        HAS_FOUND_INF: tl.constexpr, MAXIMIZE: tl.constexpr, SUM_V: tl.constexpr,
        P_DTYPE: tl.constexpr, G_DTYPE: tl.constexpr, S_DTYPE: tl.constexpr,
        ALIGNED: tl.constexpr, BLOCK: tl.constexpr, TENSOR_TILE: tl.constexpr,
        PARTIAL_TILE: tl.constexpr):
    write = may_write(found_inf, HAS_FOUND_INF)
    chunk = tl.program_id(0)
    index, start, count = chunk_location(chunk_tensor, chunk_start, numels, chunk, chunk_size,
                                         BLOCK)
    t = step_count(pointer_table, ROW_STEP, n_tensors, index).to(tl.float64) + 1.0
    decay, lr32, bias_correction2, v_bar, one_minus_beta2 = adai_scalars(
        learning_rate(lr_tensor, lr, lr_lo, HAS_LR_TENSOR), t, global_mean(accum, False),
        as_double(beta2, beta2_lo), as_double(weight_decay, weight_decay_lo))
    args = (
        element_pointer(pointer_table, ROW_P, n_tensors, index, start, P_DTYPE, ALIGNED),
        element_pointer(pointer_table, ROW_G, n_tensors, index, start, G_DTYPE, ALIGNED),
        element_pointer(pointer_table, ROW_M, n_tensors, index, start, S_DTYPE, ALIGNED),
        element_pointer(pointer_table, ROW_V, n_tensors, index, start, S_DTYPE, ALIGNED),
        element_pointer(pointer_table, ROW_PROD, n_tensors, index, start, S_DTYPE, ALIGNED),
        grad_unscale(grad_scale, HAS_GRAD_SCALE), decay, lr32, bias_correction2, v_bar,
        beta0, beta2, one_minus_beta2, eps)
    stored, _ = sweep_chunk(adai_rule, args, (MAXIMIZE, SUM_V), count, write, SUM_V, BLOCK)
    if SUM_V:
        add_chunk_v_sum(stored, chunk, index, first_chunk, partials, tensor_counters,
                        pointer_table, ROW_VSUM, n_tensors, write, PARTIAL_TILE)
    finish_update(counter, write, pointer_table, ROW_STEP, n_tensors, TENSOR_TILE)


def adai_update(params, grads, exp_avgs, exp_avg_sqs, beta1_prods, state_steps, v_sums,
                accum, lr_tensor, lr, beta0, beta2, weight_decay, eps, maximize, grad_scale,
                found_inf):
    if not params:
        return
    ops.check_update_v_sums(v_sums, exp_avg_sqs, False)
    sum_v = ops.update_writes_v_sums(exp_avg_sqs, False)
    launch = BucketLaunch(dict(params=params, grads=grads, exp_avgs=exp_avgs,
                               exp_avg_sqs=exp_avg_sqs, beta1_prods=beta1_prods,
                               state_steps=state_steps, v_sums=v_sums if sum_v else []),
                          ROW_STEP.value, grads, accum, accum=accum, lr_tensor=lr_tensor,
                          grad_scale=grad_scale, found_inf=found_inf)
    scratch = launch.workspace()
    launch.run(adai_update_kernel, **launch.chunk_sum_args(scratch),
               counter=scratch.counter(workspace.UPDATE_COUNTER), accum=accum, SUM_V=sum_v,
               **double_args(lr=lr, beta2=beta2, weight_decay=weight_decay),
               beta0=float(beta0), eps=float(eps), MAXIMIZE=bool(maximize),
               P_DTYPE=list_dtype(params, "params"),
               S_DTYPE=state_dtype(exp_avg_sqs, exp_avgs=exp_avgs, beta1_prods=beta1_prods))
