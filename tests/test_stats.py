"""``optimizer.stats``: the step's grad norm, v_bar and applied decays as device tensors,
against the float64 oracle's values, updated in place, untouched by a skipped step."""
from __future__ import annotations

import math

import pytest
import torch

from problems import SEVERAL_GROUPS, random_grads, run_steps, start, step_both

CASES = [
    pytest.param("adams", dict(), id="adams"),
    pytest.param("adams", dict(decay_power=1.0, decay_eps=1e-3), id="adams-power1-decay_eps"),
    pytest.param("adams", dict(amsgrad=True), id="amsgrads"),
    pytest.param("adais", dict(), id="adais"),
    pytest.param("sgds", dict(momentum=0.9, dampening=0.3), id="sgds"),
]


def expected_decay(kind: str, group: dict, v_bar: float) -> float:
    """docs/design.md §1: the fraction of the weights one step of ``group`` removes."""
    lr, wd = group["lr"], group["weight_decay"]
    if kind == "adams":
        base = v_bar + group["decay_eps"]
        return lr * wd * (1.0 if group["decay_power"] == 0 else
                          base ** -group["decay_power"] if base > 0 else 0.0)
    if kind == "adais":
        return lr * wd
    return (1 - group["dampening"]) / (1 - group["momentum"]) * lr * wd


@pytest.mark.parametrize("kind, options", CASES)
def test_stats_match_the_oracle(backend, kind, options):
    run = start(kind, SEVERAL_GROUPS, backend, seed=9, **options)
    assert run.optimizer.stats == {}  # nothing measured before the first step
    for _ in range(5):
        grads = random_grads(run)
        norm = math.sqrt(sum(float(g.double().square().sum()) for g in grads if g is not None))
        step_both(run, grads)
        stats = run.optimizer.stats
        v_bar = None
        if kind == "sgds":
            assert set(stats) == {"decay"}  # no reduction, no clipping: nothing else measured
        else:
            assert set(stats) == {"grad_norm", "vhat_mean", "decay"}
            v_bar = float(next(iter(run.oracle.last_v_bars.values())))
            assert stats["grad_norm"].item() == pytest.approx(norm, rel=2.0 ** -23)
            # the fp32 state's rounding, a few ulps, is all that separates v_bar
            assert stats["vhat_mean"].item() == pytest.approx(v_bar, rel=1e-6)
        assert len(stats["decay"]) == len(run.optimizer.param_groups)
        for decay, group in zip(stats["decay"], run.oracle.groups):
            want = expected_decay(kind, group, v_bar)
            assert decay.item() == pytest.approx(want, rel=1e-6, abs=1e-300), group
        for value in [stats.get("grad_norm"), stats.get("vhat_mean"), *stats["decay"]]:
            assert value is None or (value.dim() == 0 and value.dtype == torch.float64)


def test_stats_are_updated_in_place(backend):
    """A logger may keep the tensors: the next step writes the same memory (what a CUDA graph
    replay needs too)."""
    run = run_steps(start("adams", SEVERAL_GROUPS, backend, seed=10), 1)
    kept = run.optimizer.stats
    before = kept["grad_norm"].item()
    run_steps(run, 1)
    assert kept["grad_norm"].item() != before
    assert kept["grad_norm"].item() == run.optimizer.stats["grad_norm"].item()
    assert kept["decay"][0].data_ptr() == run.optimizer.stats["decay"][0].data_ptr()


@pytest.mark.parametrize("kind, options", CASES)
def test_a_skipped_step_leaves_the_stats(backend, kind, options):
    run = run_steps(start(kind, SEVERAL_GROUPS, backend, seed=11, **options), 2)
    before = {k: (v.clone() if torch.is_tensor(v) else [d.clone() for d in v])
              for k, v in run.optimizer.stats.items()}
    for group in run.optimizer.param_groups:
        group["lr"] *= 3  # a scheduler moved: a skipped step applied no decay with it
    for p, g in zip(run.params, random_grads(run)):
        p.grad = g
    run.optimizer.step(found_inf=torch.tensor(1.0))
    after = run.optimizer.stats
    for key, value in before.items():
        if key == "decay":
            assert all(torch.equal(a, b) for a, b in zip(after[key], value))
        else:
            assert torch.equal(after[key], value), key
