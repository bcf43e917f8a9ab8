"""AdamS / AMSGradS in Triton: the reduction (pass 1), the update (pass 2), and the whole step
(docs/design.md §1, §3).

Every launch covers a bucket through its pointer table (chunking.py); program ``c`` works on
chunk ``c``. The reduction writes one float64 partial per chunk; the last program to finish
turns them, in a fixed order, into the per-tensor sums, ``v_sums`` and ``accum`` (no float
atomics: bitwise repeatable on one device and build, docs/design.md §6). The update's last
program advances the step counts, after every program has read them.

``adam_step`` is two launches (reduce, update) by default. With
``SWD_KERNELS_TRITON_ONE_LAUNCH=1`` (read at every call) it runs ``adam_step_one_launch`` on a
GPU: a persistent grid of co-resident programs with a grid barrier between the passes
(cooperative launch where the installed Triton has it), built from the same device functions
as the two launches. The tests hold it bitwise to the two-launch step in the interpreter; it
stays off until it is measured on a GPU.
"""
from __future__ import annotations

import os

import torch
import triton
import triton.language as tl

from . import chunking
from .common import (BucketLaunch, advance_steps, chunk_location, element_pointer,
                     finish_update, global_mean, grad_unscale, is_last_to_arrive,
                     learning_rate, list_dtype, load_f32, load_grad, may_write, optional_args,
                     scalar_pointers, second_moment, state_dtype, step_count, store_rounded,
                     sweep_chunk)
from .scalars import (adam_scalars, as_double, double_args, next_v_sum, one_minus,
                      one_minus_pow)

ONE_LAUNCH_SWITCH = "SWD_KERNELS_TRITON_ONE_LAUNCH"

# Rows of an Adam pointer table (lists an op does not take are rows of zeros).
ROW_P, ROW_G, ROW_M, ROW_V, ROW_VMAX, ROW_STEP, ROW_VSUM = map(tl.constexpr, range(7))


# ------------------------------------------------------------------ pass 1: the reduction ---

@triton.jit
def reduce_rule(offs, mask, args, FLAGS: tl.constexpr):
    """One block's share of its tensor's sum: of (g/grad_scale)^2, or with AMSGRAD of the new
    vmax = max(vmax, v_new), formed without writing it (docs/design.md §3)."""
    g_ptr, v_ptr, vmax_ptr, unscale, beta2, one_minus_beta2 = args
    AMSGRAD: tl.constexpr = FLAGS[0]
    g = load_grad(g_ptr, offs, mask, unscale, False)
    if AMSGRAD:
        v = second_moment(load_f32(v_ptr, offs, mask), g, beta2, one_minus_beta2)
        value = tl.maximum(load_f32(vmax_ptr, offs, mask), v)
    else:
        value = g * g
    return value


@triton.jit
def chunk_partial(pointer_table, n_tensors, chunk_tensor, chunk_start, numels, chunk, unscale,
                  beta2, one_minus_beta2, AMSGRAD: tl.constexpr, G_DTYPE: tl.constexpr,
                  S_DTYPE: tl.constexpr, ALIGNED: tl.constexpr, CHUNK: tl.constexpr,
                  BLOCK: tl.constexpr):
    """This chunk's share of its tensor's sum (float64)."""
    index, start, count = chunk_location(chunk_tensor, chunk_start, numels, chunk, CHUNK)
    args = (element_pointer(pointer_table, ROW_G, n_tensors, index, start, G_DTYPE, ALIGNED),
            element_pointer(pointer_table, ROW_V, n_tensors, index, start, S_DTYPE, ALIGNED),
            element_pointer(pointer_table, ROW_VMAX, n_tensors, index, start, S_DTYPE,
                            ALIGNED),
            unscale, beta2, one_minus_beta2)
    return sweep_chunk(reduce_rule, args, (AMSGRAD,), count, 1, True, BLOCK)


@triton.jit
def finish_reduction(pointer_table, n_tensors, first_chunk, partials, accum, total_numel,
                     beta2, write, AMSGRAD: tl.constexpr, TENSOR_TILE: tl.constexpr,
                     PARTIAL_TILE: tl.constexpr):
    """Chunk partials -> per-tensor sums -> ``v_sums`` (the linear identity) and ``accum``,
    in a fixed order, float64 throughout (``beta2`` too). Run by one program after every
    partial is written."""
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
        step = tl.load(scalar_pointers(pointer_table, ROW_STEP, n_tensors, index, inside,
                                       tl.float32), mask=inside, other=0.0)
        bias_correction2 = one_minus_pow(beta2, step.to(tl.float64) + 1.0)
        if AMSGRAD:
            v_hat_sum = sums / bias_correction2
        else:
            v_sum_ptr = scalar_pointers(pointer_table, ROW_VSUM, n_tensors, index, inside,
                                        tl.float64)
            new = next_v_sum(tl.load(v_sum_ptr, mask=inside, other=0.0), beta2, sums)
            tl.store(v_sum_ptr, new, mask=inside & (write != 0))
            v_hat_sum = new / bias_correction2
        total += tl.where(inside, v_hat_sum, 0.0)
    tl.store(accum, tl.load(accum) + tl.sum(total, axis=0))
    tl.store(accum + 1, tl.load(accum + 1) + total_numel.to(tl.float64))


@triton.jit
def adam_reduce_kernel(
        pointer_table, n_tensors, chunk_tensor, chunk_start, numels, first_chunk, n_chunks,
        partials, counter, accum, total_numel, grad_scale, found_inf, beta2, beta2_lo,
        HAS_GRAD_SCALE: tl.constexpr, HAS_FOUND_INF: tl.constexpr, AMSGRAD: tl.constexpr,
        G_DTYPE: tl.constexpr, S_DTYPE: tl.constexpr, ALIGNED: tl.constexpr,
        CHUNK: tl.constexpr, BLOCK: tl.constexpr, TENSOR_TILE: tl.constexpr,
        PARTIAL_TILE: tl.constexpr):
    chunk = tl.program_id(0)
    beta2_64 = as_double(beta2, beta2_lo)
    if chunk < n_chunks:
        part = chunk_partial(pointer_table, n_tensors, chunk_tensor, chunk_start, numels, chunk,
                             grad_unscale(grad_scale, HAS_GRAD_SCALE), beta2,
                             one_minus(beta2_64), AMSGRAD, G_DTYPE, S_DTYPE, ALIGNED, CHUNK,
                             BLOCK)
        tl.store(partials + chunk, part)
    if is_last_to_arrive(counter):
        finish_reduction(pointer_table, n_tensors, first_chunk, partials, accum, total_numel,
                         beta2_64, may_write(found_inf, HAS_FOUND_INF), AMSGRAD, TENSOR_TILE,
                         PARTIAL_TILE)


# ------------------------------------------------------------------ pass 2: the update ------

@triton.jit
def adam_rule(offs, mask, args, FLAGS: tl.constexpr):
    """rules.h ``adam_element`` on one block, in the same operation order."""
    (p_ptr, g_ptr, m_ptr, v_ptr, vmax_ptr, unscale, decay, step_size, sqrt_bc2,
     one_minus_beta1, beta2, one_minus_beta2, eps) = args
    AMSGRAD: tl.constexpr = FLAGS[0]
    MAXIMIZE: tl.constexpr = FLAGS[1]
    p = load_f32(p_ptr, offs, mask)
    g = load_grad(g_ptr, offs, mask, unscale, MAXIMIZE)
    m = load_f32(m_ptr, offs, mask)
    v = load_f32(v_ptr, offs, mask)
    m = m + one_minus_beta1 * (g - m)  # lerp, as torch.optim.AdamW forms it
    v = second_moment(v, g, beta2, one_minus_beta2)
    if AMSGRAD:
        vmax = tl.maximum(load_f32(vmax_ptr, offs, mask), v)
        v_used = vmax
        store_rounded(vmax_ptr, offs, vmax, mask)
    else:
        v_used = v
    denom = tl.div_rn(tl.sqrt_rn(v_used), sqrt_bc2) + eps
    p = p * decay - tl.div_rn(step_size * m, denom)
    store_rounded(p_ptr, offs, p, mask)
    store_rounded(m_ptr, offs, m, mask)
    store_rounded(v_ptr, offs, v, mask)


@triton.jit
def adam_hyperparameters(beta1, beta1_lo, beta2, beta2_lo, weight_decay, weight_decay_lo,
                         eps, decay_power, decay_power_lo, decay_eps, decay_eps_lo):
    """The update's hyperparameters as the scalars take them: the doubles rebuilt from their
    hi/lo pairs, then beta2 and eps as the fp32 the element rule uses."""
    return (as_double(beta1, beta1_lo), as_double(beta2, beta2_lo),
            as_double(weight_decay, weight_decay_lo), as_double(decay_power, decay_power_lo),
            as_double(decay_eps, decay_eps_lo), beta2, eps)


@triton.jit
def adam_update_chunk(
        pointer_table, n_tensors, chunk_tensor, chunk_start, numels, chunk, v_bar, lr, unscale,
        write, hyperparameters, AMSGRAD: tl.constexpr, MAXIMIZE: tl.constexpr,
        P_DTYPE: tl.constexpr, G_DTYPE: tl.constexpr, S_DTYPE: tl.constexpr,
        ALIGNED: tl.constexpr, CHUNK: tl.constexpr, BLOCK: tl.constexpr):
    index, start, count = chunk_location(chunk_tensor, chunk_start, numels, chunk, CHUNK)
    t = step_count(pointer_table, ROW_STEP, n_tensors, index).to(tl.float64) + 1.0
    beta1, beta2, weight_decay, decay_power, decay_eps, beta2_32, eps = hyperparameters
    decay, step_size, sqrt_bc2, one_minus_beta1, one_minus_beta2 = adam_scalars(
        lr, t, v_bar, beta1, beta2, weight_decay, decay_power, decay_eps)
    args = (element_pointer(pointer_table, ROW_P, n_tensors, index, start, P_DTYPE, ALIGNED),
            element_pointer(pointer_table, ROW_G, n_tensors, index, start, G_DTYPE, ALIGNED),
            element_pointer(pointer_table, ROW_M, n_tensors, index, start, S_DTYPE, ALIGNED),
            element_pointer(pointer_table, ROW_V, n_tensors, index, start, S_DTYPE, ALIGNED),
            element_pointer(pointer_table, ROW_VMAX, n_tensors, index, start, S_DTYPE,
                            ALIGNED),
            unscale, decay, step_size, sqrt_bc2, one_minus_beta1, beta2_32, one_minus_beta2,
            eps)
    sweep_chunk(adam_rule, args, (AMSGRAD, MAXIMIZE), count, write, False, BLOCK)


@triton.jit
def adam_update_kernel(
        pointer_table, n_tensors, chunk_tensor, chunk_start, numels, n_chunks, counter, accum,
        lr_tensor, grad_scale, found_inf, lr, lr_lo, beta1, beta1_lo, beta2, beta2_lo,
        weight_decay, weight_decay_lo, eps, decay_power, decay_power_lo, decay_eps,
        decay_eps_lo,
        HAS_LR_TENSOR: tl.constexpr, HAS_GRAD_SCALE: tl.constexpr,
        HAS_FOUND_INF: tl.constexpr, AMSGRAD: tl.constexpr, MAXIMIZE: tl.constexpr,
        P_DTYPE: tl.constexpr, G_DTYPE: tl.constexpr, S_DTYPE: tl.constexpr,
        ALIGNED: tl.constexpr, CHUNK: tl.constexpr, BLOCK: tl.constexpr,
        TENSOR_TILE: tl.constexpr):
    chunk = tl.program_id(0)
    write = may_write(found_inf, HAS_FOUND_INF)
    if chunk < n_chunks:
        adam_update_chunk(
            pointer_table, n_tensors, chunk_tensor, chunk_start, numels, chunk,
            global_mean(accum, False), learning_rate(lr_tensor, lr, lr_lo, HAS_LR_TENSOR),
            grad_unscale(grad_scale, HAS_GRAD_SCALE), write,
            adam_hyperparameters(beta1, beta1_lo, beta2, beta2_lo, weight_decay,
                                 weight_decay_lo, eps, decay_power, decay_power_lo, decay_eps,
                                 decay_eps_lo),
            AMSGRAD, MAXIMIZE, P_DTYPE, G_DTYPE, S_DTYPE, ALIGNED, CHUNK, BLOCK)
    finish_update(counter, write, pointer_table, ROW_STEP, n_tensors, TENSOR_TILE)


# ------------------------------------------------------------------ both passes, one launch -

@triton.jit
def adam_step_one_launch_kernel(
        pointer_table, n_tensors, chunk_tensor, chunk_start, numels, first_chunk, n_chunks,
        partials, counters, accum, total_numel, lr_tensor, grad_scale, found_inf, lr, lr_lo,
        beta1, beta1_lo, beta2, beta2_lo, weight_decay, weight_decay_lo, eps, decay_power,
        decay_power_lo, decay_eps, decay_eps_lo,
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
    hyperparameters = adam_hyperparameters(beta1, beta1_lo, beta2, beta2_lo, weight_decay,
                                           weight_decay_lo, eps, decay_power, decay_power_lo,
                                           decay_eps, decay_eps_lo)
    beta2_64 = hyperparameters[1]
    one_minus_beta2 = one_minus(beta2_64)
    for chunk in range(program, n_chunks, programs):
        part = chunk_partial(pointer_table, n_tensors, chunk_tensor, chunk_start, numels, chunk,
                             unscale, beta2, one_minus_beta2, AMSGRAD, G_DTYPE, S_DTYPE,
                             ALIGNED, CHUNK, BLOCK)
        tl.store(partials + chunk, part)
    # grid barrier: the last program to arrive finishes the reduction, then releases the rest
    if is_last_to_arrive(counters + ARRIVE):
        finish_reduction(pointer_table, n_tensors, first_chunk, partials, accum, total_numel,
                         beta2_64, write, AMSGRAD, TENSOR_TILE, PARTIAL_TILE)
        tl.debug_barrier()
        tl.atomic_xchg(counters + RELEASE, 1, sem="release")
    while tl.atomic_add(counters + RELEASE, 0, sem="acquire") == 0:
        pass
    tl.debug_barrier()
    v_bar = global_mean(accum, True)
    lr64 = learning_rate(lr_tensor, lr, lr_lo, HAS_LR_TENSOR)
    for chunk in range(program, n_chunks, programs):
        adam_update_chunk(
            pointer_table, n_tensors, chunk_tensor, chunk_start, numels, chunk, v_bar, lr64,
            unscale, write, hyperparameters, AMSGRAD, MAXIMIZE, P_DTYPE, G_DTYPE, S_DTYPE,
            ALIGNED, CHUNK, BLOCK)
    if is_last_to_arrive(counters + DONE):
        tl.atomic_xchg(counters + RELEASE, 0)  # every program is past the spin by now
        if write:
            advance_steps(pointer_table, ROW_STEP, n_tensors, TENSOR_TILE)


# ------------------------------------------------------------------ launchers ---------------

def adam_launch(params, grads, exp_avgs, exp_avg_sqs, max_exp_avg_sqs, state_steps, v_sums,
                accum, grad_scale, found_inf, amsgrad) -> BucketLaunch:
    """The bucket's launch arguments shared by the reduce, update and one-launch kernels."""
    rows = [params, grads, exp_avgs, exp_avg_sqs, max_exp_avg_sqs if amsgrad else [],
            state_steps, [] if amsgrad else v_sums]
    dtype = state_dtype(exp_avg_sqs, exp_avgs=exp_avgs,
                        max_exp_avg_sqs=max_exp_avg_sqs if amsgrad else [])
    launch = BucketLaunch(rows, ROW_STEP.value, grads, accum, grad_scale=grad_scale,
                          found_inf=found_inf)
    launch.args.update(accum=accum, AMSGRAD=bool(amsgrad), S_DTYPE=dtype)
    return launch


def adam_update_args(params, accum, lr_tensor, lr, beta1, beta2, weight_decay, eps,
                     decay_power, decay_eps, maximize) -> dict:
    """The update's own kernel arguments (the reduction takes none of them)."""
    return dict(**optional_args(accum, lr_tensor=lr_tensor),
                **double_args(lr=lr, beta1=beta1, beta2=beta2, weight_decay=weight_decay,
                              decay_power=decay_power, decay_eps=decay_eps),
                eps=float(eps), MAXIMIZE=bool(maximize), P_DTYPE=list_dtype(params, "params"))


def _reduce_launch(launch: BucketLaunch, beta2) -> None:
    layout = launch.layout
    adam_reduce_kernel[launch.grid](
        **launch.args, **double_args(beta2=beta2), first_chunk=layout.first_chunk,
        partials=layout.partials, counter=launch.counter(chunking.REDUCE_COUNTER),
        total_numel=layout.total_numel, PARTIAL_TILE=chunking.PARTIAL_TILE)


def _update_launch(launch: BucketLaunch, update_args: dict) -> None:
    adam_update_kernel[launch.grid](**launch.args, **update_args,
                                    counter=launch.counter(chunking.UPDATE_COUNTER))


def adam_reduce(grads, exp_avg_sqs, max_exp_avg_sqs, state_steps, v_sums, accum, beta2,
                amsgrad, grad_scale, found_inf):
    if not grads:
        return
    launch = adam_launch([], grads, [], exp_avg_sqs, max_exp_avg_sqs, state_steps, v_sums,
                         accum, grad_scale, found_inf, amsgrad)
    _reduce_launch(launch, beta2)


def adam_update(params, grads, exp_avgs, exp_avg_sqs, max_exp_avg_sqs, state_steps, accum,
                lr_tensor, lr, beta1, beta2, weight_decay, eps, decay_power, decay_eps,
                amsgrad, maximize, grad_scale, found_inf):
    if not params:
        return
    launch = adam_launch(params, grads, exp_avgs, exp_avg_sqs, max_exp_avg_sqs, state_steps,
                         [], accum, grad_scale, found_inf, amsgrad)
    _update_launch(launch, adam_update_args(params, accum, lr_tensor, lr, beta1, beta2,
                                            weight_decay, eps, decay_power, decay_eps,
                                            maximize))


def adam_step(params, grads, exp_avgs, exp_avg_sqs, max_exp_avg_sqs, state_steps, v_sums,
              accum, lr_tensor, lr, beta1, beta2, weight_decay, eps, decay_power, decay_eps,
              amsgrad, maximize, grad_scale, found_inf):
    if not params:
        return
    launch = adam_launch(params, grads, exp_avgs, exp_avg_sqs, max_exp_avg_sqs, state_steps,
                         v_sums, accum, grad_scale, found_inf, amsgrad)
    update_args = adam_update_args(params, accum, lr_tensor, lr, beta1, beta2, weight_decay,
                                   eps, decay_power, decay_eps, maximize)
    if accum.device.type == "cuda" and one_launch_requested():
        adam_step_one_launch(launch, update_args, programs=_resident_programs(accum.device))
    else:
        _reduce_launch(launch, beta2)
        _update_launch(launch, update_args)


# ------------------------------------------------------------------ the one-launch path ------

def one_launch_requested() -> bool:
    """``SWD_KERNELS_TRITON_ONE_LAUNCH=1``: run ``adam_step`` on a GPU as one launch."""
    return os.environ.get(ONE_LAUNCH_SWITCH, "0") == "1"


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


def adam_step_one_launch(launch: BucketLaunch, update_args: dict, programs: int) -> None:
    """Both passes in one launch of ``programs`` persistent programs. Every program must be
    resident at once; under the CPU interpreter (programs run one after another) only
    ``programs=1`` can work, which is how the tests exercise it."""
    layout = launch.layout
    programs = max(1, min(programs, layout.n_chunks))
    extra = {}
    if layout.partials.device.type == "cuda" and _cooperative_launch_supported():
        extra["launch_cooperative_grid"] = True
    adam_step_one_launch_kernel[(programs,)](
        **launch.args, **update_args, first_chunk=layout.first_chunk,
        partials=layout.partials, counters=layout.counters, total_numel=layout.total_numel,
        PARTIAL_TILE=chunking.PARTIAL_TILE, ARRIVE=chunking.BARRIER_ARRIVE,
        RELEASE=chunking.BARRIER_RELEASE, DONE=chunking.STEP_DONE, **extra)
