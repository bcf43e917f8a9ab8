"""AdamS / AMSGradS in Triton: the reduction (pass 1), the update (pass 2), and the whole step
(docs/design.md §1, §3).

Every launch covers a bucket through its pointer table (chunking.py); program ``c`` works on
chunk ``c``. The reduction writes float64 partials per chunk. The program that finishes a
tensor's last chunk (a per-tensor arrival counter) sums that tensor's partials, updates its
``v_sums`` entry and writes its shares of ``accum``; the last program of the launch adds the
per-tensor shares to ``accum``. Every sum runs in an order fixed by the chunk layout, with no
float atomics: bitwise repeatable on one device and build (docs/design.md §6). The update's
last program advances the step counts, after every program has read them.

``adam_step`` is two launches (reduce, update) by default, and wherever the one-launch path
cannot run. With ``SWD_KERNELS_TRITON_ONE_LAUNCH=1`` (read at every call) it runs
``adam_step_one_launch`` on a GPU: a persistent grid, as many programs as the GPU holds at once
(occupancy.py, from the compiled kernel's registers, shared memory and warps), with a grid
barrier between the passes, launched cooperatively (so the driver refuses a grid that cannot
be resident rather than letting the barrier wait forever), built from the same device
functions as the two launches. It needs a Triton that launches cooperatively; the tests hold
it bitwise to the two-launch step in the interpreter (on a GPU the two are separate compiles,
each free to contract multiply-adds its own way). It stays off: on the H200 it was slower than
the two launches (GPT-2 124M: 1.31x, ResNet-50: 27x; bench/results/recorded/device-2026-11-30).
"""
from __future__ import annotations

import os

import torch
import triton
import triton.language as tl

from . import chunking, occupancy, streams, workspace
from ... import ops
from .common import (CLIP_TERM, COUNT, GRAD_SQ_SUM, VHAT_SUM, BucketLaunch, add_chunk_v_sum,
                     advance_steps, check_device, chunk_location, element_pointer,
                     finish_update, global_mean, grad_unscale, is_last_of, is_last_to_arrive,
                     learning_rate, list_dtype, load_f32, load_grad, may_write, optional_args,
                     second_moment, state_dtype, step_count, store_rounded,
                     store_second_moment, sum_range, sweep_chunk)
from .scalars import (adam_scalars, as_double, clip_term, double_args, next_v_sum, one_minus,
                      one_minus_pow)

ONE_LAUNCH_SWITCH = "SWD_KERNELS_TRITON_ONE_LAUNCH"
# Warps per program of the one-launch step: its grid is at most what the GPU holds at once,
# so each program brings more warps (more loads in flight) than the one-chunk programs' 4.
ONE_LAUNCH_WARPS = 8

# Rows of an Adam pointer table (lists an op does not take are rows of zeros).
ROW_P, ROW_G, ROW_M, ROW_V, ROW_VMAX, ROW_STEP, ROW_VSUM = map(tl.constexpr, range(7))


# ------------------------------------------------------------------ pass 1: the reduction ---

@triton.jit
def reduce_rule(offs, mask, args, FLAGS: tl.constexpr):
    """One block's share of its tensor's sums: of (g/grad_scale)^2, and with AMSGRAD also of
    the new vmax = max(vmax, v_new), formed without writing it (docs/design.md §3)."""
    g_ptr, v_ptr, vmax_ptr, unscale, beta2, one_minus_beta2 = args
    AMSGRAD: tl.constexpr = FLAGS[0]
    g = load_grad(g_ptr, offs, mask, unscale, False)
    if AMSGRAD:
        v = second_moment(load_f32(v_ptr, offs, mask), g, beta2, one_minus_beta2)
        value = (g * g, tl.maximum(load_f32(vmax_ptr, offs, mask), v))
    else:
        value = g * g
    return value


@triton.jit
def finish_tensor(pointer_table, n_tensors, index, lo, hi, partials, n_chunks, tensor_sums,
                  beta2, write, AMSGRAD: tl.constexpr, PARTIAL_TILE: tl.constexpr):
    """Tensor ``index``'s chunk partials [lo, hi) -> its sum of squared grads G, its running
    sum ``v_sums[index]`` (the linear identity; not written after a found_inf) and its shares
    of accum, stored in ``tensor_sums`` (rows: v_hat sum, G, clip term). float64 throughout
    (``beta2`` too)."""
    squares = sum_range(partials, lo, hi, PARTIAL_TILE)
    t = step_count(pointer_table, ROW_STEP, n_tensors, index).to(tl.float64) + 1.0
    bias_correction2 = one_minus_pow(beta2, t)
    if AMSGRAD:
        v_hat_sum = sum_range(partials + n_chunks, lo, hi, PARTIAL_TILE) / bias_correction2
    else:
        v_sum = element_pointer(pointer_table, ROW_VSUM, n_tensors, index, 0, tl.float64, False)
        new = next_v_sum(tl.load(v_sum), beta2, squares)
        tl.store(v_sum, new, mask=write)
        v_hat_sum = new / bias_correction2
        tl.store(tensor_sums + 2 * n_tensors + index,
                 clip_term(squares, beta2, bias_correction2))
    tl.store(tensor_sums + index, v_hat_sum)
    tl.store(tensor_sums + n_tensors + index, squares)


@triton.jit
def reduce_chunk(pointer_table, n_tensors, chunk_tensor, chunk_start, numels, first_chunk,
                 chunk, n_chunks, chunk_size, partials, tensor_sums, tensor_counters, unscale,
                 beta2, beta2_64, write, AMSGRAD: tl.constexpr, G_DTYPE: tl.constexpr,
                 S_DTYPE: tl.constexpr, ALIGNED: tl.constexpr, BLOCK: tl.constexpr,
                 PARTIAL_TILE: tl.constexpr):
    """One chunk of pass 1: its partials, then, in the program that finishes its tensor's
    last chunk, that tensor's sums (``finish_tensor``)."""
    index, start, count = chunk_location(chunk_tensor, chunk_start, numels, chunk, chunk_size,
                                         BLOCK)
    args = (element_pointer(pointer_table, ROW_G, n_tensors, index, start, G_DTYPE, ALIGNED),
            element_pointer(pointer_table, ROW_V, n_tensors, index, start, S_DTYPE, ALIGNED),
            element_pointer(pointer_table, ROW_VMAX, n_tensors, index, start, S_DTYPE,
                            ALIGNED),
            unscale, beta2, one_minus(beta2_64))
    if AMSGRAD:
        squares, maxima = sweep_chunk(reduce_rule, args, (AMSGRAD,), count, 1, 2, BLOCK)
        tl.store(partials + n_chunks + chunk, maxima)
    else:
        squares, _ = sweep_chunk(reduce_rule, args, (AMSGRAD,), count, 1, 1, BLOCK)
    tl.store(partials + chunk, squares)
    lo = tl.load(first_chunk + index)
    hi = tl.load(first_chunk + index + 1)
    if is_last_of(tensor_counters + index, hi - lo):
        finish_tensor(pointer_table, n_tensors, index, lo, hi, partials, n_chunks, tensor_sums,
                      beta2_64, write, AMSGRAD, PARTIAL_TILE)


@triton.jit
def finish_accum(tensor_sums, n_tensors, accum, total_numel, AMSGRAD: tl.constexpr,
                 TENSOR_TILE: tl.constexpr):
    """Every tensor's shares -> ``accum``, in a fixed order (run by one program, after every
    tensor's sums are written)."""
    v_hat_sum = tl.zeros([TENSOR_TILE], tl.float64)
    squares = tl.zeros([TENSOR_TILE], tl.float64)
    clip = tl.zeros([TENSOR_TILE], tl.float64)
    for first in range(0, n_tensors, TENSOR_TILE):
        index = first + tl.arange(0, TENSOR_TILE)
        inside = index < n_tensors
        v_hat_sum += tl.load(tensor_sums + index, mask=inside, other=0.0, volatile=True)
        squares += tl.load(tensor_sums + n_tensors + index, mask=inside, other=0.0,
                           volatile=True)
        if not AMSGRAD:
            clip += tl.load(tensor_sums + 2 * n_tensors + index, mask=inside, other=0.0,
                            volatile=True)
    tl.store(accum + VHAT_SUM, tl.load(accum + VHAT_SUM) + tl.sum(v_hat_sum, axis=0))
    # tl.cast, not total_numel.to(): on a GPU Triton passes an int argument equal to 1 as
    # a Python constant, which has no .to() (a bucket of one 1-element tensor failed to
    # compile on the H200, 2026-11-30; the interpreter passes every int as a value)
    tl.store(accum + COUNT, tl.load(accum + COUNT) + tl.cast(total_numel, tl.float64))
    tl.store(accum + GRAD_SQ_SUM, tl.load(accum + GRAD_SQ_SUM) + tl.sum(squares, axis=0))
    if not AMSGRAD:
        tl.store(accum + CLIP_TERM, tl.load(accum + CLIP_TERM) + tl.sum(clip, axis=0))


@triton.jit
def adam_reduce_kernel(
        pointer_table, n_tensors, chunk_tensor, chunk_start, numels, first_chunk, n_chunks,
        chunk_size, partials, tensor_sums, tensor_counters, counter, accum, total_numel,
        grad_scale, found_inf, beta2, beta2_lo,
        HAS_GRAD_SCALE: tl.constexpr, HAS_FOUND_INF: tl.constexpr, AMSGRAD: tl.constexpr,
        G_DTYPE: tl.constexpr, S_DTYPE: tl.constexpr, ALIGNED: tl.constexpr,
        BLOCK: tl.constexpr, TENSOR_TILE: tl.constexpr, PARTIAL_TILE: tl.constexpr):
    write = may_write(found_inf, HAS_FOUND_INF)
    reduce_chunk(pointer_table, n_tensors, chunk_tensor, chunk_start, numels, first_chunk,
                 tl.program_id(0), n_chunks, chunk_size, partials, tensor_sums,
                 tensor_counters, grad_unscale(grad_scale, HAS_GRAD_SCALE), beta2,
                 as_double(beta2, beta2_lo), write, AMSGRAD, G_DTYPE, S_DTYPE, ALIGNED, BLOCK,
                 PARTIAL_TILE)
    if is_last_to_arrive(counter):
        finish_accum(tensor_sums, n_tensors, accum, total_numel, AMSGRAD, TENSOR_TILE)


# ------------------------------------------------------------------ pass 2: the update ------

@triton.jit
def adam_rule(offs, mask, args, FLAGS: tl.constexpr):
    """rules.h ``adam_element`` on one block, in the same operation order; with SUM_V (16-bit
    state) returns the exp_avg_sq it stored (0 where masked)."""
    (p_ptr, g_ptr, m_ptr, v_ptr, vmax_ptr, unscale, decay, step_size, sqrt_bc2,
     one_minus_beta1, beta2, one_minus_beta2, eps) = args
    AMSGRAD: tl.constexpr = FLAGS[0]
    MAXIMIZE: tl.constexpr = FLAGS[1]
    SUM_V: tl.constexpr = FLAGS[2]
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
    return store_second_moment(v_ptr, offs, v, mask, SUM_V)


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
        pointer_table, n_tensors, chunk_tensor, chunk_start, numels, first_chunk, chunk,
        chunk_size, partials, tensor_counters, v_bar, lr, unscale, write, hyperparameters,
        AMSGRAD: tl.constexpr, MAXIMIZE: tl.constexpr, SUM_V: tl.constexpr,
        P_DTYPE: tl.constexpr, G_DTYPE: tl.constexpr, S_DTYPE: tl.constexpr,
        ALIGNED: tl.constexpr, BLOCK: tl.constexpr, PARTIAL_TILE: tl.constexpr):
    """One chunk of pass 2; with SUM_V (16-bit state) also the tensor's running sum, from what
    it stored (``add_chunk_v_sum``)."""
    index, start, count = chunk_location(chunk_tensor, chunk_start, numels, chunk, chunk_size,
                                         BLOCK)
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
    stored, _ = sweep_chunk(adam_rule, args, (AMSGRAD, MAXIMIZE, SUM_V), count, write, SUM_V,
                            BLOCK)
    if SUM_V:
        add_chunk_v_sum(stored, chunk, index, first_chunk, partials, tensor_counters,
                        pointer_table, ROW_VSUM, n_tensors, write, PARTIAL_TILE)


@triton.jit
def adam_update_kernel(
        pointer_table, n_tensors, chunk_tensor, chunk_start, numels, first_chunk, n_chunks,
        chunk_size, partials, tensor_counters, counter, accum, lr_tensor, grad_scale,
        found_inf, lr, lr_lo, beta1, beta1_lo, beta2, beta2_lo, weight_decay, weight_decay_lo,
        eps, decay_power, decay_power_lo, decay_eps, decay_eps_lo,
        HAS_LR_TENSOR: tl.constexpr, HAS_GRAD_SCALE: tl.constexpr,
        HAS_FOUND_INF: tl.constexpr, AMSGRAD: tl.constexpr, MAXIMIZE: tl.constexpr,
        SUM_V: tl.constexpr, P_DTYPE: tl.constexpr, G_DTYPE: tl.constexpr,
        S_DTYPE: tl.constexpr, ALIGNED: tl.constexpr, BLOCK: tl.constexpr,
        TENSOR_TILE: tl.constexpr, PARTIAL_TILE: tl.constexpr):
    write = may_write(found_inf, HAS_FOUND_INF)
    adam_update_chunk(
        pointer_table, n_tensors, chunk_tensor, chunk_start, numels, first_chunk,
        tl.program_id(0), chunk_size, partials, tensor_counters, global_mean(accum, False),
        learning_rate(lr_tensor, lr, lr_lo, HAS_LR_TENSOR),
        grad_unscale(grad_scale, HAS_GRAD_SCALE), write,
        adam_hyperparameters(beta1, beta1_lo, beta2, beta2_lo, weight_decay, weight_decay_lo,
                             eps, decay_power, decay_power_lo, decay_eps, decay_eps_lo),
        AMSGRAD, MAXIMIZE, SUM_V, P_DTYPE, G_DTYPE, S_DTYPE, ALIGNED, BLOCK, PARTIAL_TILE)
    finish_update(counter, write, pointer_table, ROW_STEP, n_tensors, TENSOR_TILE)


# ------------------------------------------------------------------ both passes, one launch -

@triton.jit
def adam_step_one_launch_kernel(
        pointer_table, n_tensors, chunk_tensor, chunk_start, numels, first_chunk, n_chunks,
        chunk_size, partials, tensor_sums, tensor_counters, counters, accum, total_numel,
        lr_tensor, grad_scale, found_inf, lr, lr_lo, beta1, beta1_lo, beta2, beta2_lo,
        weight_decay, weight_decay_lo, eps, decay_power, decay_power_lo, decay_eps,
        decay_eps_lo,
        HAS_LR_TENSOR: tl.constexpr, HAS_GRAD_SCALE: tl.constexpr,
        HAS_FOUND_INF: tl.constexpr, AMSGRAD: tl.constexpr, MAXIMIZE: tl.constexpr,
        SUM_V: tl.constexpr, P_DTYPE: tl.constexpr, G_DTYPE: tl.constexpr,
        S_DTYPE: tl.constexpr, ALIGNED: tl.constexpr, BLOCK: tl.constexpr,
        TENSOR_TILE: tl.constexpr, PARTIAL_TILE: tl.constexpr, ARRIVE: tl.constexpr,
        RELEASE: tl.constexpr, DONE: tl.constexpr):
    """Persistent grid: every program must be resident at once (the barrier spins)."""
    program = tl.program_id(0)
    programs = tl.num_programs(0)
    unscale = grad_unscale(grad_scale, HAS_GRAD_SCALE)
    write = may_write(found_inf, HAS_FOUND_INF)
    hyperparameters = adam_hyperparameters(beta1, beta1_lo, beta2, beta2_lo, weight_decay,
                                           weight_decay_lo, eps, decay_power, decay_power_lo,
                                           decay_eps, decay_eps_lo)
    for chunk in range(program, n_chunks, programs):
        reduce_chunk(pointer_table, n_tensors, chunk_tensor, chunk_start, numels, first_chunk,
                     chunk, n_chunks, chunk_size, partials, tensor_sums, tensor_counters,
                     unscale, beta2, hyperparameters[1], write, AMSGRAD, G_DTYPE, S_DTYPE,
                     ALIGNED, BLOCK, PARTIAL_TILE)
    # grid barrier: the last program to arrive finishes the reduction, then releases the rest
    if is_last_to_arrive(counters + ARRIVE):
        finish_accum(tensor_sums, n_tensors, accum, total_numel, AMSGRAD, TENSOR_TILE)
        tl.debug_barrier()
        tl.atomic_xchg(counters + RELEASE, 1, sem="release")
    while tl.atomic_add(counters + RELEASE, 0, sem="acquire") == 0:
        pass
    tl.debug_barrier()
    v_bar = global_mean(accum, True)
    lr64 = learning_rate(lr_tensor, lr, lr_lo, HAS_LR_TENSOR)
    # the reduction's partials and tensor counters are done with (every tensor was finished
    # before the barrier): with SUM_V the update's sums of stored v use them
    for chunk in range(program, n_chunks, programs):
        adam_update_chunk(
            pointer_table, n_tensors, chunk_tensor, chunk_start, numels, first_chunk, chunk,
            chunk_size, partials, tensor_counters, v_bar, lr64, unscale, write,
            hyperparameters, AMSGRAD, MAXIMIZE, SUM_V, P_DTYPE, G_DTYPE, S_DTYPE, ALIGNED,
            BLOCK, PARTIAL_TILE)
    if is_last_to_arrive(counters + DONE):
        tl.atomic_xchg(counters + RELEASE, 0)  # every program is past the spin by now
        if write:
            advance_steps(pointer_table, ROW_STEP, n_tensors, TENSOR_TILE)


# ------------------------------------------------------------------ launchers ---------------

def adam_launch(params, grads, exp_avgs, exp_avg_sqs, max_exp_avg_sqs, state_steps, v_sums,
                accum, grad_scale, found_inf, amsgrad) -> BucketLaunch:
    """The bucket's launch arguments shared by the reduce, update and one-launch kernels (the
    reduction alone, ``params`` empty, reads the moments only with amsgrad)."""
    rows = dict(params=params, grads=grads, exp_avgs=exp_avgs,
                exp_avg_sqs=exp_avg_sqs if (amsgrad or params) else [],
                max_exp_avg_sqs=max_exp_avg_sqs if amsgrad else [], state_steps=state_steps,
                v_sums=[] if amsgrad else v_sums)
    dtype = state_dtype(exp_avg_sqs, exp_avgs=exp_avgs,
                        max_exp_avg_sqs=max_exp_avg_sqs if amsgrad else [])
    launch = BucketLaunch(rows, ROW_STEP.value, grads, accum, accum=accum,
                          grad_scale=grad_scale, found_inf=found_inf)
    launch.args.update(accum=accum, AMSGRAD=bool(amsgrad), S_DTYPE=dtype)
    return launch


def adam_update_args(params, exp_avg_sqs, accum, lr_tensor, lr, beta1, beta2, weight_decay,
                     eps, decay_power, decay_eps, amsgrad, maximize) -> dict:
    """The update's own kernel arguments (the reduction takes none of them)."""
    return dict(**optional_args(accum, lr_tensor=lr_tensor),
                **double_args(lr=lr, beta1=beta1, beta2=beta2, weight_decay=weight_decay,
                              decay_power=decay_power, decay_eps=decay_eps),
                eps=float(eps), MAXIMIZE=bool(maximize),
                SUM_V=ops.update_writes_v_sums(exp_avg_sqs, amsgrad),
                P_DTYPE=list_dtype(params, "params"))


def _reduce_args(launch: BucketLaunch, scratch: workspace.Workspace) -> dict:
    """The arguments of the reduction's part, beside ``launch.args``."""
    return dict(**launch.chunk_sum_args(scratch), tensor_sums=scratch.tensor_sums,
                total_numel=launch.layout.total_numel)


def _reduce_launch(launch: BucketLaunch, beta2, scratch: workspace.Workspace) -> None:
    launch.run(adam_reduce_kernel, **_reduce_args(launch, scratch), **double_args(beta2=beta2),
               counter=scratch.counter(workspace.REDUCE_COUNTER))


def _update_launch(launch: BucketLaunch, update_args: dict,
                   scratch: workspace.Workspace) -> None:
    launch.run(adam_update_kernel, **update_args, **launch.chunk_sum_args(scratch),
               counter=scratch.counter(workspace.UPDATE_COUNTER))


def adam_reduce(grads, exp_avg_sqs, max_exp_avg_sqs, state_steps, v_sums, accum, beta2,
                amsgrad, grad_scale, found_inf):
    if not grads:
        return
    launch = adam_launch([], grads, [], exp_avg_sqs, max_exp_avg_sqs, state_steps, v_sums,
                         accum, grad_scale, found_inf, amsgrad)
    _reduce_launch(launch, beta2, launch.workspace())


def adam_update(*arguments):
    """swd_triton::adam_update: pass 2 alone (the arguments of adam_step, ops.py)."""
    _adam(*arguments, reduce=False)


def adam_step(*arguments):
    """swd_triton::adam_step: both passes on one bucket."""
    _adam(*arguments, reduce=True)


def _adam(params, grads, exp_avgs, exp_avg_sqs, max_exp_avg_sqs, state_steps, v_sums, accum,
          lr_tensor, lr, beta1, beta2, weight_decay, eps, decay_power, decay_eps, amsgrad,
          maximize, grad_scale, found_inf, reduce: bool):
    if not params:
        return
    check_device(grads[0].device, lr_tensor=lr_tensor)  # before anything is written
    ops.check_update_v_sums(v_sums, exp_avg_sqs, amsgrad)
    launch = adam_launch(params, grads, exp_avgs, exp_avg_sqs, max_exp_avg_sqs, state_steps,
                         v_sums, accum, grad_scale, found_inf, amsgrad)
    update_args = adam_update_args(params, exp_avg_sqs, accum, lr_tensor, lr, beta1, beta2,
                                   weight_decay, eps, decay_power, decay_eps, amsgrad, maximize)
    scratch = launch.workspace()
    programs = 0
    if reduce and one_launch_requested():
        programs = one_launch_programs(launch, update_args, scratch)
    if programs:
        adam_step_one_launch(launch, update_args, programs, scratch)
        return
    if reduce:
        _reduce_launch(launch, beta2, scratch)
    _update_launch(launch, update_args, scratch)


# ------------------------------------------------------------------ the one-launch path ------

def one_launch_requested() -> bool:
    """``SWD_KERNELS_TRITON_ONE_LAUNCH=1``: run ``adam_step`` on a GPU as one launch."""
    return os.environ.get(ONE_LAUNCH_SWITCH, "0") == "1"


def cooperative_launch_supported() -> bool:
    """Whether the installed Triton launches a grid cooperatively (3.3 and later, 3.6 and 3.8
    included): the driver then refuses a grid that cannot be resident at once instead of
    letting the grid barrier wait forever."""
    try:
        from triton.backends.nvidia.compiler import CUDAOptions
    except ImportError:
        return False
    return "launch_cooperative_grid" in getattr(CUDAOptions, "__dataclass_fields__", {})


def one_launch_options() -> dict:
    """Triton launch options of the one-launch kernel (the compile test compiles it so)."""
    return dict(num_warps=ONE_LAUNCH_WARPS, launch_cooperative_grid=True)


# resident programs of the one-launch kernel, by device and specialization (_specialization)
_resident: dict[tuple, int] = {}


def one_launch_programs(launch: BucketLaunch, update_args: dict,
                        scratch: workspace.Workspace) -> int:
    """The one-launch step's grid for ``launch``: every chunk's program, or as many as the GPU
    holds at once if fewer; 0 where the step must run as two launches instead (not on a GPU,
    e.g. in the interpreter, whose programs run one after another, so that a barrier would
    wait forever; a Triton without cooperative launches; a kernel too large for even one
    program per SM)."""
    if launch.device.type != "cuda" or not cooperative_launch_supported():
        return 0
    args = dict(launch.args, **update_args, **_reduce_args(launch, scratch),
                counters=scratch.counters, **_barrier_slots(), **one_launch_options())
    key = (launch.device, _specialization(args))
    if key not in _resident:
        with streams.on_device(launch.device):  # compiles and loads for that device
            compiled = adam_step_one_launch_kernel.warmup(**args, grid=(1,))
            _resident[key] = occupancy.resident_programs(compiled, launch.device)
    return min(launch.layout.n_chunks, _resident[key])


def _specialization(args: dict) -> tuple:
    """What Triton compiles a separate kernel for, so what the register count may depend on:
    constexpr values, and (as Triton specializes them) whether each pointer is 16-byte
    aligned, and whether each integer is 1, a multiple of 16, an int32."""
    def trait(value):
        if isinstance(value, torch.Tensor):
            return value.dtype, value.data_ptr() % 16 == 0
        if isinstance(value, int) and not isinstance(value, bool):
            return value == 1, value % 16 == 0, -2 ** 31 <= value < 2 ** 31
        if isinstance(value, float):
            return float
        return value
    return tuple((name, trait(value)) for name, value in sorted(args.items()))


def _barrier_slots() -> dict:
    return dict(ARRIVE=workspace.BARRIER_ARRIVE, RELEASE=workspace.BARRIER_RELEASE,
                DONE=workspace.STEP_DONE)


def adam_step_one_launch(launch: BucketLaunch, update_args: dict, programs: int,
                         scratch: workspace.Workspace | None = None) -> None:
    """Both passes in one launch of ``programs`` persistent programs, every one of which must
    be resident at once (``one_launch_programs``). Under the CPU interpreter (programs run
    one after another) only ``programs=1`` can work, which is how the tests exercise it."""
    scratch = scratch or launch.workspace()
    options = one_launch_options() if launch.device.type == "cuda" else {}
    grid = (max(1, min(programs, launch.layout.n_chunks)),)
    launch.run(adam_step_one_launch_kernel, grid, **update_args, **_reduce_args(launch, scratch),
               counters=scratch.counters, **_barrier_slots(), **options)
