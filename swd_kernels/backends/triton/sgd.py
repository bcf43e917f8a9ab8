"""SGDS in Triton: one update launch per bucket, no reduction (docs/design.md §1).

Program ``c`` works on chunk ``c``; the last program to finish advances the step counts (a
tensor's first step, ``step == 0``, takes ``buf = g``), after every program has read them.
"""
from __future__ import annotations

import triton
import triton.language as tl

from . import workspace
from .common import (BucketLaunch, chunk_location, element_pointer, finish_update,
                     grad_unscale, learning_rate, list_dtype, load_f32, load_grad, may_write,
                     step_count, store_rounded, sweep_chunk)
from .scalars import as_double, double_args, sgd_scalars

# Rows of an SGDS pointer table (no momentum: the buffer row is zeros, never read).
ROW_P, ROW_G, ROW_BUF, ROW_STEP = map(tl.constexpr, range(4))


@triton.jit
def sgd_rule(offs, mask, args, FLAGS: tl.constexpr):
    """rules.h ``sgd_element`` on one block, in the same operation order."""
    p_ptr, g_ptr, buf_ptr, first, unscale, decay, lr, momentum, one_minus_dampening = args
    HAS_MOMENTUM: tl.constexpr = FLAGS[0]
    NESTEROV: tl.constexpr = FLAGS[1]
    MAXIMIZE: tl.constexpr = FLAGS[2]
    p = load_f32(p_ptr, offs, mask)
    g = load_grad(g_ptr, offs, mask, unscale, MAXIMIZE)
    direction = g
    if HAS_MOMENTUM:
        buf = load_f32(buf_ptr, offs, mask & (first == 0))
        buf = tl.where(first, g, momentum * buf + one_minus_dampening * g)
        if NESTEROV:
            direction = g + momentum * buf
        else:
            direction = buf
        store_rounded(buf_ptr, offs, buf, mask)
    p = p * decay - lr * direction
    store_rounded(p_ptr, offs, p, mask)


@triton.jit
def sgd_update_kernel(
        pointer_table, n_tensors, chunk_tensor, chunk_start, numels, n_chunks, chunk_size,
        counter, lr_tensor, grad_scale, found_inf, lr, lr_lo, momentum, momentum_lo, dampening,
        dampening_lo, weight_decay, weight_decay_lo,
        HAS_LR_TENSOR: tl.constexpr, HAS_GRAD_SCALE: tl.constexpr,
        HAS_FOUND_INF: tl.constexpr, HAS_MOMENTUM: tl.constexpr, NESTEROV: tl.constexpr,
        MAXIMIZE: tl.constexpr, P_DTYPE: tl.constexpr, G_DTYPE: tl.constexpr,
        S_DTYPE: tl.constexpr, ALIGNED: tl.constexpr, BLOCK: tl.constexpr,
        TENSOR_TILE: tl.constexpr):
    write = may_write(found_inf, HAS_FOUND_INF)
    index, start, count = chunk_location(chunk_tensor, chunk_start, numels, tl.program_id(0),
                                         chunk_size, BLOCK)
    first = step_count(pointer_table, ROW_STEP, n_tensors, index) == 0.0
    decay, lr32, one_minus_dampening = sgd_scalars(
        learning_rate(lr_tensor, lr, lr_lo, HAS_LR_TENSOR),
        as_double(momentum, momentum_lo), as_double(dampening, dampening_lo),
        as_double(weight_decay, weight_decay_lo))
    args = (
        element_pointer(pointer_table, ROW_P, n_tensors, index, start, P_DTYPE, ALIGNED),
        element_pointer(pointer_table, ROW_G, n_tensors, index, start, G_DTYPE, ALIGNED),
        element_pointer(pointer_table, ROW_BUF, n_tensors, index, start, S_DTYPE, ALIGNED),
        first, grad_unscale(grad_scale, HAS_GRAD_SCALE), decay, lr32, momentum,
        one_minus_dampening)
    sweep_chunk(sgd_rule, args, (HAS_MOMENTUM, NESTEROV, MAXIMIZE), count, write, 0, BLOCK)
    finish_update(counter, write, pointer_table, ROW_STEP, n_tensors, TENSOR_TILE)


def sgd_update(params, grads, momentum_buffers, state_steps, lr_tensor, lr, momentum,
               dampening, weight_decay, nesterov, maximize, grad_scale, found_inf):
    if not params:
        return
    has_momentum = momentum != 0
    if has_momentum and len(momentum_buffers) != len(params):
        raise ValueError(f"momentum={momentum} needs one momentum buffer per param, got "
                         f"{len(momentum_buffers)} for {len(params)} params")
    # state_steps[0] stands in for absent optional tensors (never read)
    launch = BucketLaunch(dict(params=params, grads=grads,
                               momentum_buffers=momentum_buffers if has_momentum else [],
                               state_steps=state_steps),
                          ROW_STEP.value, grads, state_steps[0], lr_tensor=lr_tensor,
                          grad_scale=grad_scale, found_inf=found_inf)
    p_dtype = list_dtype(params, "params")
    launch.run(sgd_update_kernel,
               counter=launch.workspace().counter(workspace.UPDATE_COUNTER),
               **double_args(lr=lr, momentum=momentum, dampening=dampening,
                             weight_decay=weight_decay),
               HAS_MOMENTUM=bool(has_momentum), NESTEROV=bool(nesterov),
               MAXIMIZE=bool(maximize), P_DTYPE=p_dtype,
               S_DTYPE=list_dtype(momentum_buffers, "momentum_buffers") if has_momentum
               else p_dtype)
