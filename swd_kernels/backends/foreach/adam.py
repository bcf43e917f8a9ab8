"""AdamS / AMSGradS with foreach ops: the reference backend, any device."""
from __future__ import annotations

import math

import torch

from ...ops import CLIP_TERM, COUNT, GRAD_SQ_SUM, VHAT_SUM, check_accum, check_update_v_sums
from .common import (advance_steps, fp32_working, global_mean, lr_value, next_steps,
                     one_minus_pow, prepared_grads, store_v_sums, write_back)


def _moments(grads, exp_avg_sqs, max_exp_avg_sqs, beta2, amsgrad, grad_scale):
    """New ``v`` (and ``vmax``) as fp32 copies, for the AMSGradS reduction."""
    g = prepared_grads(grads, grad_scale, maximize=False)
    v = fp32_working(exp_avg_sqs, must_copy=True)
    torch._foreach_mul_(v, beta2)
    torch._foreach_addcmul_(v, g, g, value=1 - beta2)
    vmax = fp32_working(max_exp_avg_sqs, must_copy=True)
    torch._foreach_maximum_(vmax, v)
    return vmax


def adam_reduce(grads, exp_avg_sqs, max_exp_avg_sqs, state_steps, v_sums, accum, beta2,
                amsgrad, grad_scale, found_inf):
    if not grads:
        return
    check_accum(accum, grads[0].device)
    bias_correction2 = torch.stack(one_minus_pow(beta2, next_steps(state_steps))).double()
    sq = torch.stack(torch._foreach_norm(grads, 2, dtype=torch.float64)) ** 2
    if grad_scale is not None:
        sq = sq / grad_scale.double() ** 2
    if amsgrad:
        vmax = _moments(grads, exp_avg_sqs, max_exp_avg_sqs, beta2, amsgrad, grad_scale)
        # the L1 norm of a nonnegative tensor is its sum; summed in float64 like the kernels'
        # partials (an fp32 sum of n values is off by ~log2(n) ulps, enough to show in AdaiS's
        # inertia against the oracle)
        sums = torch.stack(torch._foreach_norm(vmax, 1, dtype=torch.float64))
    else:
        old = torch.stack(v_sums)
        sums = beta2 * old + (1 - beta2) * sq
        new = sums if found_inf is None else torch.where(found_inf != 0, old, sums)
        torch._foreach_copy_(v_sums, list(new.unbind()))
        accum[CLIP_TERM] += ((1 - beta2) * sq / bias_correction2).sum()
    accum[VHAT_SUM] += (sums / bias_correction2).sum()
    accum[COUNT] += sum(g.numel() for g in grads)
    accum[GRAD_SQ_SUM] += sq.sum()


def decay_scale(accum, decay_power: float, decay_eps: float) -> torch.Tensor:
    """``1 / (v_bar + decay_eps)^p`` as float64; 1 when p = 0 (AdamW), 0 when the base is 0
    (inf^-p is 0 for the p > 0 left)."""
    if decay_power == 0:
        return torch.ones_like(accum[0])
    base = global_mean(accum) + decay_eps
    return torch.where(base > 0, base, math.inf) ** -decay_power


def adam_update(params, grads, exp_avgs, exp_avg_sqs, max_exp_avg_sqs, state_steps, v_sums,
                accum, lr_tensor, lr, beta1, beta2, weight_decay, eps, decay_power, decay_eps,
                amsgrad, maximize, grad_scale, found_inf):
    if not params:
        return
    check_accum(accum, params[0].device)
    check_update_v_sums(v_sums, exp_avg_sqs, amsgrad)
    copy = found_inf is not None
    g = prepared_grads(grads, grad_scale, maximize)
    p, m, v = (fp32_working(x, copy) for x in (params, exp_avgs, exp_avg_sqs))
    vmax = fp32_working(max_exp_avg_sqs, copy) if amsgrad else None
    t = next_steps(state_steps)
    bias_correction1 = one_minus_pow(beta1, t)
    bias_correction2 = one_minus_pow(beta2, t)

    torch._foreach_lerp_(m, g, 1 - beta1)
    torch._foreach_mul_(v, beta2)
    torch._foreach_addcmul_(v, g, g, value=1 - beta2)
    if amsgrad:
        torch._foreach_maximum_(vmax, v)
    denom = torch._foreach_sqrt(vmax if amsgrad else v)
    torch._foreach_div_(denom, torch._foreach_sqrt(bias_correction2))
    torch._foreach_add_(denom, eps)

    lr_ = lr_value(lr_tensor, lr, accum.device)
    factor = 1 - lr_ * weight_decay * decay_scale(accum, decay_power, decay_eps)
    torch._foreach_mul_(p, factor.float())
    # bc1 / lr: dividing the update by it multiplies by the step size lr / bc1
    step_size = torch._foreach_div(bias_correction1, lr_)
    update = torch._foreach_div(m, denom)
    torch._foreach_div_(update, step_size)
    torch._foreach_sub_(p, update)

    write_back(params, p, found_inf)
    write_back(exp_avgs, m, found_inf)
    write_back(exp_avg_sqs, v, found_inf)
    if amsgrad:
        write_back(max_exp_avg_sqs, vmax, found_inf)
    store_v_sums(v_sums, exp_avg_sqs, amsgrad, found_inf)
    advance_steps(state_steps, found_inf)
