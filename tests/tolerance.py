"""The one tolerance table: how close a backend must come to the float64 oracle, per storage
dtype, and the assertion that applies it to params and to every state tensor.

fp32 storage: the oracle keeps float64 values; a backend computes in fp32, rounding each
element ~4 times a step (decay, step size, the division, the subtraction), each rounding at
most half an ulp (2^-24 relative) of the values it works on. Those errors add like a random
walk, about 2 ulps a step, so after the suite's 20 steps each tensor must lie within
``20 x 2 x 2^-24 = 2.4e-6 x`` its largest magnitude during the run (fp32 errors scale with the
values a step computes from, even where the result cancels to ~0; per tensor, so a small
tensor beside a large one is still checked). Measured worst over every fp32 case of
test_oracle.py (2026-11-30): params 8.2e-7 (native, torch, triton alike), state 2.3-4.1e-7.

bf16 / fp16 storage: comparing with an unrounded oracle would need a tolerance of about
``steps x eps/2`` (20 x 2^-8 = 8% for bf16), too loose to see a missing weight decay
(lr x wd = 5e-4 per step). So the oracle rounds its stored values to the same dtype after every
step (``Oracle(param_dtype=..., state_dtype=...)``) and starts the next step from them, as the
backend does. The two then agree exactly except where the backend's fp32 arithmetic and the
oracle's float64 land on different sides of a rounding boundary: rarely by accident (a few fp32
ulps against a storage spacing of ~2^-8 relative: ~2^-14 per element and step), and often
through exact ties: ``0.9*m + 0.1*g`` of two bf16 numbers is itself a short binary fraction,
exactly halfway between two bf16 values for ~1.5% of elements per step, where sub-ulp noise
decides and either answer is right. Each such flip costs one storage ulp, ``<= eps x |x|``
(``eps`` = torch.finfo spacing at 1). Hence, asserted:
  * every element, params and state, within 2 ulp of the largest magnitude of its tensor:
    ``2 x eps x max|x|`` (a second flip on the same element within 20 steps is rare);
  * for params, at most 2% of the elements differ at all. Measured over 20 steps: <= 0.25% with
    fp32 arithmetic shaped like the oracle's, <= 0.9% when state ties flip (bf16/fp16 state);
    a weight decay 10% off moves 5.6%. State gets no count (its ties flip ~10% of m over 20
    steps, legitimately); its arithmetic is held to the fp32 row by the ``state_dtype=fp32``
    cases, where state does not depend on the params at all.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class Tolerance:
    relative: float  # max |backend - oracle| <= relative * largest |oracle| of that tensor
    differing_params: float | None  # share of param elements allowed to differ at all


TOLERANCES = {
    torch.float64: Tolerance(1e-12, None),
    torch.float32: Tolerance(20 * 2 * 2.0 ** -24, None),  # 20 steps x 2 ulps: see above
    torch.bfloat16: Tolerance(2 * torch.finfo(torch.bfloat16).eps, 0.02),
    torch.float16: Tolerance(2 * torch.finfo(torch.float16).eps, 0.02),
}

def tolerance_for(kind: str, dtype: torch.dtype, groups: list[dict]) -> Tolerance:
    """The table's row for ``dtype``; AdaiS in fp32 gets more. It divides its step by
    1 - beta1_prod, a difference of two numbers near 1 once the inertia nears its bound
    (beta1 -> 1 - eps): the fp32 product holds 2^-24 absolute, i.e. 2^-24 / eps relative to
    that difference (6e-5 at the default eps = 1e-3), on top of the usual fp32 row. Steps far
    from the bound stay near the fp32 row (worst over test_oracle.py: 8e-7); property tests
    that put one-element tensors at the bound reach 2.2e-5 (native, eps 1e-3, 2026-11-30)."""
    row = TOLERANCES[dtype]
    if kind == "adais" and dtype == torch.float32:
        smallest_eps = min(group["eps"] for group in groups)
        return Tolerance(row.relative + 2.0 ** -24 / smallest_eps, None)
    return row


DIFFERING_SLACK = 2  # elements, for tiny tensors where 2% is less than one element


def subnormal_spacing(dtype: torch.dtype) -> float:
    """Below its smallest normal number a half dtype's spacing is absolute (2^-24 in fp16):
    a value that small is off by a whole spacing however small the tensor's largest value."""
    if dtype not in (torch.float16, torch.bfloat16):
        return 0.0
    info = torch.finfo(dtype)
    return info.smallest_normal * info.eps


def assert_close(name: str, actual: list[torch.Tensor], expected: list[torch.Tensor],
                 dtype: torch.dtype, tolerance: Tolerance | None = None,
                 are_params: bool = False, scales: list[float] | None = None) -> None:
    """Hold the tensors ``actual`` (stored in ``dtype``) to ``expected`` (float64) by the
    table's rule for ``dtype``: each tensor against its own largest magnitude (``scales``: the
    largest it had during the run; default: the largest in ``expected``). ``are_params``:
    they are params, which also get the count of differing elements, over all of them."""
    tolerance = tolerance or TOLERANCES[dtype]
    if scales is None:
        scales = [e.abs().max().item() if e.numel() else 0.0 for e in expected]
    # equal values differ by 0, infinities included (fp16 overflows alike in both)
    diffs = [torch.where(a.detach().double() == e, 0.0, (a.detach().double() - e).abs())
             for a, e in zip(actual, expected)]
    for index, (diff, scale) in enumerate(zip(diffs, scales)):
        worst = diff.max().item() if diff.numel() else 0.0
        bound = tolerance.relative * scale + 2 * subnormal_spacing(dtype)
        assert worst <= bound, (
            f"{name} ({dtype}): max |error| {worst:.3g} > {bound:.3g} = {tolerance.relative:g} "
            f"x largest magnitude {scale:.3g}, in tensor #{index} of shape "
            f"{tuple(actual[index].shape)}")
    if are_params and tolerance.differing_params is not None:
        differing = sum(int((d != 0).sum()) for d in diffs)
        total = sum(d.numel() for d in diffs)
        allowed = tolerance.differing_params * total + DIFFERING_SLACK
        assert differing <= allowed, (
            f"{name} ({dtype}): {differing} of {total} elements differ from the oracle, more "
            f"than {tolerance.differing_params:.0%} (+{DIFFERING_SLACK}): storage rounding "
            f"alone does not explain that")
