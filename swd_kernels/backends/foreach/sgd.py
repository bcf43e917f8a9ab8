"""SGDS with foreach ops: the reference backend, any device."""
from __future__ import annotations

import torch

from .common import advance_steps, fp32_working, lr_value, prepared_grads, write_back


def sgd_update(params, grads, momentum_buffers, state_steps, lr_tensor, lr, momentum,
               dampening, weight_decay, nesterov, maximize, grad_scale, found_inf):
    if not params:
        return
    copy = found_inf is not None
    g = prepared_grads(grads, grad_scale, maximize)
    p = fp32_working(params, copy)
    lr_ = lr_value(lr_tensor, lr, params[0].device)
    factor = 1 - (1 - dampening) / (1 - momentum) * lr_ * weight_decay
    torch._foreach_mul_(p, factor.float() if torch.is_tensor(factor) else factor)
    if momentum != 0:
        buf = fp32_working(momentum_buffers, copy)
        torch._foreach_mul_(buf, momentum)
        torch._foreach_add_(buf, g, alpha=1 - dampening)
        # a tensor's first step takes buf = g
        buf = [torch.where(s == 0, gi, b) for s, gi, b in zip(state_steps, g, buf)]
        direction = torch._foreach_add(g, buf, alpha=momentum) if nesterov else buf
    else:
        direction = g
    if torch.is_tensor(lr_):
        torch._foreach_sub_(p, torch._foreach_mul(direction, lr_.float()))
    else:
        torch._foreach_sub_(p, direction, alpha=lr_)
    write_back(params, p, found_inf)
    if momentum != 0:
        for dst, src in zip(momentum_buffers, buf):
            dst.copy_(src if found_inf is None else torch.where(found_inf != 0, dst, src))
    advance_steps(state_steps, found_inf)
