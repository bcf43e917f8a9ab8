"""Fused clipping, ``max_grad_norm=``: a step equals ``torch.nn.utils.clip_grad_norm_`` followed
by the unclipped optimizer (the float64 oracle fed the clipped grads, and torch's own AdamW),
the user's grads are never written, and an unclipped step is bitwise the step without it."""
from __future__ import annotations

import math

import pytest
import torch

import swd_kernels
from problems import SEVERAL_GROUPS, assert_matches_oracle, random_grads, start
from tolerance import TOLERANCES

STEPS = 8
NORM_EPS = 1e-6  # torch's clip_grad_norm_ adds it to the total norm

# The standard problem's grads have a total norm ~100: 1.0 clips every step, 1e4 none.
CLIPS, NEVER_CLIPS = 1.0, 1e4

CASES = [
    pytest.param("adams", dict(), id="adams"),  # the norm comes from the reduction
    pytest.param("adams", dict(amsgrad=True), id="amsgrads"),  # a norm pass first
    pytest.param("adais", dict(), id="adais"),
    pytest.param("sgds", dict(momentum=0.9), id="sgds-momentum"),
]


def clipped(grads, max_norm, grad_scale=1.0):
    """torch's clip_grad_norm_ in float64 on the unscaled grads, and the norm before it."""
    unscaled = [None if g is None else g.double() / grad_scale for g in grads]
    norm = math.sqrt(sum(float(g.square().sum()) for g in unscaled if g is not None))
    coefficient = min(1.0, max_norm / (norm + NORM_EPS))
    return [None if g is None else g * coefficient for g in unscaled], norm


def clipped_step(run, max_norm, grad_scale=None):
    """One step of the optimizer (clipping itself) and of the oracle (fed clipped grads)."""
    grads = random_grads(run)
    scale = 1.0 if grad_scale is None else grad_scale
    for p, g in zip(run.params, grads):
        p.grad = None if g is None else g * scale
    originals = [None if p.grad is None else p.grad.clone() for p in run.params]
    run.optimizer.step(
        grad_scale=None if grad_scale is None else torch.tensor(float(grad_scale)))
    for p, original in zip(run.params, originals):  # the user's grads are never written
        assert original is None or torch.equal(p.grad, original)
    clipped_grads, norm = clipped([p.grad for p in run.params], max_norm, scale)
    run.oracle.step(clipped_grads)
    run.steps_done += 1
    return norm


@pytest.mark.parametrize("max_norm", [CLIPS, NEVER_CLIPS], ids=["clipping", "not-clipping"])
@pytest.mark.parametrize("kind, options", CASES)
def test_clipped_step_matches_oracle(backend, kind, options, max_norm):
    run = start(kind, SEVERAL_GROUPS, backend, seed=4, **options)
    run.optimizer.max_grad_norm = max_norm
    for _ in range(STEPS):
        norm = clipped_step(run, max_norm)
        # the norm before clipping, summed in float64 from fp32 squares
        reported = run.optimizer.stats["grad_norm"].item()
        assert reported == pytest.approx(norm, rel=2.0 ** -23)
    assert_matches_oracle(run)


@pytest.mark.parametrize("kind, options", CASES)
def test_clipping_under_a_grad_scale(backend, kind, options):
    """GradScaler's scale is divided out before the norm is taken (torch clips unscaled
    grads): scaled grads clip exactly as the unscaled ones would."""
    run = start(kind, SEVERAL_GROUPS, backend, seed=5, **options)
    run.optimizer.max_grad_norm = CLIPS
    for _ in range(4):
        clipped_step(run, CLIPS, grad_scale=2.0 ** 14)
    assert_matches_oracle(run)


@pytest.mark.parametrize("kind, options", CASES)
def test_a_step_that_needs_no_clipping_is_bitwise_unchanged(backend, kind, options):
    """c = 1 leaves every number the kernels see as it was: not a rounding apart."""
    runs = [start(kind, SEVERAL_GROUPS, backend, seed=6, **options) for _ in range(2)]
    runs[0].optimizer.max_grad_norm = NEVER_CLIPS
    for _ in range(4):
        grads = random_grads(runs[0])
        for run in runs:
            for p, g in zip(run.params, grads):
                p.grad = g
            run.optimizer.step()
            run.steps_done += 1
    for a, b in zip(runs[0].params, runs[1].params):
        assert torch.equal(a, b)
    for a, b in zip(runs[0].params, runs[1].params):
        for key, value in runs[1].optimizer.state[b].items():
            assert torch.equal(runs[0].optimizer.state[a][key], value), key


def test_adams_with_power0_equals_clip_grad_norm_and_adamw(backend):
    """Against torch itself: decay_power=0 is AdamW, so the clipped AdamS step is
    clip_grad_norm_ + torch.optim.AdamW."""
    generator = torch.Generator().manual_seed(7)
    shapes = [(300, 17), (4097,), (5,)]
    ours = [torch.randn(s, generator=generator).requires_grad_() for s in shapes]
    theirs = [p.detach().clone().requires_grad_() for p in ours]
    adams = swd_kernels.AdamS(ours, lr=1e-2, weight_decay=0.1, decay_power=0.0,
                              max_grad_norm=0.5, backend=backend)
    adamw = torch.optim.AdamW(theirs, lr=1e-2, weight_decay=0.1)
    peak = max(p.abs().max().item() for p in theirs)
    for _ in range(STEPS):
        grads = [torch.randn(s, generator=generator) * 3 for s in shapes]
        for p, q, g in zip(ours, theirs, grads):
            p.grad, q.grad = g.clone(), g.clone()
        adams.step()
        norm = torch.nn.utils.clip_grad_norm_(theirs, 0.5)
        adamw.step()
        assert adams.stats["grad_norm"].item() == pytest.approx(norm.item(), rel=1e-6)
        peak = max(peak, *(p.abs().max().item() for p in theirs))
    for p, q in zip(ours, theirs):
        torch.testing.assert_close(p.detach(), q.detach(), rtol=0,
                                   atol=TOLERANCES[torch.float32].relative * peak)


@pytest.mark.parametrize("kind, options", CASES)
def test_a_skipped_step_changes_nothing(backend, kind, options):
    """A GradScaler's found_inf skips the clipped step like any other: params, state (the
    running sums included) and stats stay bitwise as they were."""
    run = start(kind, SEVERAL_GROUPS, backend, seed=8, **options)
    run.optimizer.max_grad_norm = CLIPS
    clipped_step(run, CLIPS)
    params = [p.detach().clone() for p in run.params]
    state = {p: {k: v.clone() for k, v in run.optimizer.state[p].items()}
             for p in run.params if p in run.optimizer.state}
    stats = {k: v.clone() for k, v in run.optimizer.stats.items() if k != "decay"}
    for p, g in zip(run.params, random_grads(run)):
        p.grad = None if g is None else g.fill_(float("inf")) if g.numel() == 1 else g
    run.optimizer.step(found_inf=torch.tensor(1.0))
    for p, before in zip(run.params, params):
        assert torch.equal(p.detach(), before)
    for p, before in state.items():
        for key, value in before.items():
            assert torch.equal(run.optimizer.state[p][key], value), key
    for key, before in stats.items():
        assert torch.equal(run.optimizer.stats[key], before), key
