"""Pieces every foreach-backend op shares: fp32 working copies, grad preparation, v_bar."""
from __future__ import annotations

import torch

from ...ops import update_writes_v_sums


def fp32_working(tensors: list[torch.Tensor], must_copy: bool) -> list[torch.Tensor]:
    """fp32 tensors to compute in: the tensors themselves when fp32 and writable in place,
    else fp32 copies (half-precision storage, or a found_inf that may reject the result)."""
    return [
        t.clone() if (t.dtype == torch.float32 and must_copy) else t.float()
        for t in tensors
    ]


def write_back(dst: list[torch.Tensor], work: list[torch.Tensor], found_inf) -> None:
    """Store ``work`` into ``dst``; with ``found_inf`` nonzero keep ``dst`` as it was."""
    for d, w in zip(dst, work):
        if w is d:
            continue
        if found_inf is None:
            d.copy_(w)
        else:
            d.copy_(torch.where(found_inf.to(d.device) != 0, d, w.to(d.dtype)))


def store_v_sums(v_sums, exp_avg_sqs, amsgrad: bool, found_inf) -> None:
    """The update's part of the running sums (ops.py): with half-precision state, each
    ``v_sums[i]`` becomes the float64 sum of the stored ``exp_avg_sqs[i]`` (v >= 0: its L1
    norm), unless found_inf skipped the step."""
    if not update_writes_v_sums(exp_avg_sqs, amsgrad):
        return
    stored = torch._foreach_norm(exp_avg_sqs, 1, dtype=torch.float64)
    if found_inf is not None:
        stored = [torch.where(found_inf != 0, old, new) for old, new in zip(v_sums, stored)]
    torch._foreach_copy_(v_sums, stored)


def prepared_grads(grads, grad_scale, maximize: bool) -> list[torch.Tensor]:
    """fp32 grads divided by ``grad_scale`` and negated under ``maximize``; never the user's
    grad tensors themselves when anything must change."""
    g = [x.float() for x in grads]
    if grad_scale is not None:
        g = torch._foreach_div(g, grad_scale.float())
    if maximize:
        g = torch._foreach_neg(g)
    return g


def next_steps(state_steps) -> list[torch.Tensor]:
    """``t = step + 1`` for every tensor (float32, 0-dim, not written)."""
    return torch._foreach_add(state_steps, 1)


def advance_steps(state_steps, found_inf) -> None:
    if found_inf is None:
        torch._foreach_add_(state_steps, 1)
    else:
        torch._foreach_add_(state_steps, (found_inf == 0).to(torch.float32))


def global_mean(accum: torch.Tensor) -> torch.Tensor:
    """``v_bar = accum[0] / accum[1]`` as float64, 0 when nothing was counted (the sum is then
    0 too). Two small kernels: on a GPU each op of the step's bookkeeping is a launch."""
    return accum[0] / accum[1].clamp(min=1)


def lr_value(lr_tensor, lr: float, device) -> torch.Tensor | float:
    return lr if lr_tensor is None else lr_tensor.to(device=device, dtype=torch.float64)


def one_minus_pow(base: float, t: list[torch.Tensor]) -> list[torch.Tensor]:
    """``1 - base^t`` for every tensor's step ``t``, in float64: in fp32, 1 - 0.999^1 is
    1.3e-5 off, which v_hat and v_bar would inherit."""
    t = [step.double() for step in t]
    return torch._foreach_add(torch._foreach_neg(torch._foreach_pow(base, t)), 1)
