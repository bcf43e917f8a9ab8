"""AdaiS with foreach ops: the reference backend, any device."""
from __future__ import annotations

import torch

from ...ops import check_accum, check_update_v_sums
from .common import (advance_steps, fp32_working, global_mean, lr_value, next_steps,
                     one_minus_pow, prepared_grads, store_v_sums, write_back)


def adai_update(params, grads, exp_avgs, exp_avg_sqs, beta1_prods, state_steps, v_sums,
                accum, lr_tensor, lr, beta0, beta2, weight_decay, eps, maximize, grad_scale,
                found_inf):
    if not params:
        return
    check_accum(accum, params[0].device)
    check_update_v_sums(v_sums, exp_avg_sqs, False)
    copy = found_inf is not None
    g = prepared_grads(grads, grad_scale, maximize)
    p, m, v, prod = (fp32_working(x, copy) for x in (params, exp_avgs, exp_avg_sqs, beta1_prods))
    bias_correction2 = one_minus_pow(beta2, next_steps(state_steps))

    torch._foreach_mul_(v, beta2)
    torch._foreach_addcmul_(v, g, g, value=1 - beta2)
    v_bar = global_mean(accum)
    # v_hat / v_bar = v / (bc2 * v_bar), taken as 1 when v_bar = 0
    ratio_denominator = torch._foreach_mul(bias_correction2, v_bar.float())
    ratio = torch._foreach_div(v, ratio_denominator)
    ratio = [torch.where(v_bar > 0, r, torch.ones_like(r)) for r in ratio]
    # 1 - beta1 = clamp(beta0 * v_hat / v_bar, eps, 1), formed directly: beta1 often sits near
    # 1 - eps, where fp32 1 - beta1 cancels (1 - 0.999f is 1.3e-5 off) and m drifts with it
    one_minus_beta1 = torch._foreach_mul(ratio, beta0)
    torch._foreach_clamp_min_(one_minus_beta1, eps)
    torch._foreach_clamp_max_(one_minus_beta1, 1.0)
    beta1 = torch._foreach_neg(one_minus_beta1)
    torch._foreach_add_(beta1, 1)

    lr_ = lr_value(lr_tensor, lr, accum.device)
    factor = 1 - lr_ * weight_decay
    torch._foreach_mul_(p, factor.float() if torch.is_tensor(factor) else factor)
    torch._foreach_mul_(prod, beta1)
    # m = b1*m + (1-b1)*g = m + (1-b1)*(g - m)
    step = torch._foreach_sub(g, m)
    torch._foreach_mul_(step, one_minus_beta1)
    torch._foreach_add_(m, step)
    bias_correction1 = torch._foreach_neg(prod)
    torch._foreach_add_(bias_correction1, 1)
    update = torch._foreach_div(m, bias_correction1)
    if torch.is_tensor(lr_):
        torch._foreach_mul_(update, lr_.float())
    else:
        torch._foreach_mul_(update, lr_)
    torch._foreach_sub_(p, update)

    write_back(params, p, found_inf)
    write_back(exp_avgs, m, found_inf)
    write_back(exp_avg_sqs, v, found_inf)
    write_back(beta1_prods, prod, found_inf)
    store_v_sums(v_sums, exp_avg_sqs, False, found_inf)
    advance_steps(state_steps, found_inf)
