"""Fused gradient clipping: torch's ``clip_grad_norm_`` folded into the step.

The clip coefficient ``c = min(1, max_grad_norm / (total_norm + 1e-6))`` (torch's formula) needs
the L2 norm of every grad of the step, across groups, devices and ranks. The grads are never
written: the kernels read ``g / (grad_scale / c)`` instead of ``g / grad_scale``.

Where every bucket's reduction keeps running sums (AdamS without amsgrad, AdaiS), the norm comes
from the reduction itself (``accum[GRAD_SQ_SUM]``), so clipping costs no extra pass; the
reduction has then formed each tensor's running sum and ``accum[VHAT_SUM]`` with the unclipped
grads, and :func:`clip_running_sums` finishes them with ``c`` (docs/design.md §3). Otherwise
(AMSGradS's max needs the clipped v; SGDS has no reduction) :func:`add_grad_sq_sums` reads the
grads once more first.
"""
from __future__ import annotations

import torch

from ..ops import CLIP_TERM, GRAD_SQ_SUM, VHAT_SUM

# torch.nn.utils.clip_grad_norm_ adds it to the norm before dividing
NORM_EPS = 1e-6


def check_max_grad_norm(max_grad_norm) -> None:
    if max_grad_norm is None:
        return
    if isinstance(max_grad_norm, bool) or not isinstance(max_grad_norm, (int, float)):
        raise TypeError(f"max_grad_norm must be None (no clipping) or a positive number, got "
                        f"{type(max_grad_norm).__name__}")
    if not 0 < max_grad_norm < float("inf"):
        raise ValueError(f"Invalid max_grad_norm: {max_grad_norm!r}; it must be a positive "
                         f"finite number (the largest L2 norm of all grads together), or None "
                         f"for no clipping")


def add_grad_sq_sums(accum: torch.Tensor, grads: list[torch.Tensor], grad_scale) -> None:
    """``accum[GRAD_SQ_SUM] += sum((g / grad_scale)^2)`` over ``grads`` (one extra read)."""
    if not grads:
        return
    sq = torch.stack(torch._foreach_norm(grads, 2, dtype=torch.float64)).square().sum()
    if grad_scale is not None:
        sq = sq / grad_scale.double().square()
    accum[GRAD_SQ_SUM] += sq


def clip_coefficient(accum: torch.Tensor, max_grad_norm: float) -> torch.Tensor:
    """``min(1, max_grad_norm / (total_norm + 1e-6))`` as a float64 0-dim tensor."""
    total_norm = accum[GRAD_SQ_SUM].sqrt()
    return (max_grad_norm / (total_norm + NORM_EPS)).clamp(max=1.0)


def clipped_grad_scale(grad_scale, coefficient: torch.Tensor) -> torch.Tensor:
    """The divisor the kernels apply to the raw grads: ``grad_scale / c`` (fp32, 0-dim).
    With ``c == 1`` it is ``grad_scale`` itself (or 1), so an unclipped step is unchanged."""
    scale = 1.0 if grad_scale is None else grad_scale.double()
    return (scale / coefficient).float()


def shrink_factor(coefficient: torch.Tensor, found_inf) -> torch.Tensor:
    """``1 - c^2``, the share of the unclipped grads' v that clipping removes; 0 on a step a
    GradScaler skips (whose accumulator may hold inf), so nothing moves."""
    shrink = 1 - coefficient.square()
    if found_inf is not None:
        shrink = torch.where(found_inf.to(shrink.device) != 0, torch.zeros_like(shrink),
                             shrink)
    return shrink


def clip_vhat_sum(accum: torch.Tensor, shrink: torch.Tensor) -> None:
    """``accum[VHAT_SUM]`` as if the reduction had read the clipped grads: it moves by
    ``-(1-c^2)*accum[CLIP_TERM]``, the unclipped grads' share of the sum of v_hat. The float64
    cancellation costs about 1e-16 / c^2 relative: below fp32 rounding for any c above 1e-4."""
    accum[VHAT_SUM] -= shrink * accum[CLIP_TERM]


def clip_running_sums(v_sums: list[torch.Tensor], decayed_sums: list[torch.Tensor],
                      shrink: torch.Tensor) -> None:
    """Per tensor the reduction wrote ``S = beta2*S_prev + (1-beta2)*G``; the clipped sum is
    ``beta2*S_prev + c^2*(1-beta2)*G = S - (1-c^2)*(S - beta2*S_prev)`` (``decayed_sums`` holds
    ``beta2*S_prev``, taken before the reduction). With ``c == 1`` or a skipped step ``S``
    stays bitwise as it was."""
    if not v_sums:
        return
    growth = torch._foreach_sub(v_sums, decayed_sums)
    torch._foreach_mul_(growth, shrink)
    torch._foreach_sub_(v_sums, growth)
