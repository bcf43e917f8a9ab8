"""Every backend against the float64 oracle (docs/design.md §7): 20+ steps of fresh random
grads on the standard problem (problems.SEVERAL_GROUPS), params and every state key compared by
the tolerance table."""
from __future__ import annotations

import pytest
import torch

from problems import (ONE_GROUP, SEVERAL_GROUPS, Group, Param, assert_matches_oracle,
                      assert_running_sum, random_grads, run_steps, start, step_both)
from tolerance import TOLERANCES

STEPS = 20

# (kind, options) covering every option; ids say what each case is.
CASES = [
    pytest.param("adams", dict(), id="adams"),
    pytest.param("adams", dict(decay_power=0.0), id="adams-power0"),
    pytest.param("adams", dict(decay_power=1.0), id="adams-power1"),
    pytest.param("adams", dict(decay_eps=1e-2), id="adams-decay_eps"),
    pytest.param("adams", dict(maximize=True, betas=(0.8, 0.99), eps=1e-6), id="adams-maximize"),
    pytest.param("adams", dict(amsgrad=True), id="amsgrads"),
    pytest.param("adams", dict(amsgrad=True, decay_power=1.0, maximize=True),
                 id="amsgrads-power1-maximize"),
    pytest.param("sgds", dict(), id="sgds"),
    pytest.param("sgds", dict(momentum=0.9), id="sgds-momentum"),
    pytest.param("sgds", dict(momentum=0.9, dampening=0.5), id="sgds-dampening"),
    pytest.param("sgds", dict(momentum=0.9, nesterov=True, maximize=True),
                 id="sgds-nesterov-maximize"),
    pytest.param("adais", dict(), id="adais"),
    pytest.param("adais", dict(betas=(0.5, 0.9), eps=1e-2, maximize=True), id="adais-maximize"),
]


@pytest.mark.parametrize("kind, options", CASES)
def test_fp32_matches_oracle(backend, kind, options):
    run = run_steps(start(kind, SEVERAL_GROUPS, backend, **options), STEPS)
    assert_matches_oracle(run)


def subset(*ids):
    return [c for c in CASES if c.id in ids]


@pytest.mark.parametrize("kind, options", subset("adams", "adams-power0", "amsgrads", "adais",
                                                 "sgds-nesterov-maximize"))
def test_one_bucket_matches_oracle(backend, kind, options):
    """One group of one dtype: the fused single-op path (``adam_step``)."""
    run = run_steps(start(kind, ONE_GROUP, backend, seed=1, **options), STEPS)
    assert_matches_oracle(run)


# Half precision: the oracle rounds its stored values like the backend (see tolerance.py).
# Every option is covered in fp32 above; here each family with its main options (time).
HALF_CASES = subset("adams", "adams-power1", "amsgrads-power1-maximize", "sgds-dampening",
                    "sgds-nesterov-maximize", "adais-maximize")


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=["bf16", "fp16"])
@pytest.mark.parametrize("kind, options", HALF_CASES)
def test_half_matches_rounded_oracle(backend, kind, options, dtype):
    run = run_steps(start(kind, SEVERAL_GROUPS, backend, dtype=dtype, seed=2, **options), STEPS)
    assert_matches_oracle(run)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=["bf16", "fp16"])
@pytest.mark.parametrize("kind, options", HALF_CASES)
def test_half_params_fp32_state(backend, kind, options, dtype):
    """``state_dtype=torch.float32``: params to the dtype's table entry, state to fp32's."""
    run = run_steps(start(kind, SEVERAL_GROUPS, backend, dtype=dtype,
                          state_dtype=torch.float32, seed=3, **options), STEPS)
    assert_matches_oracle(run)


# A decay large enough to matter in bf16: grads N(0, 1) give v_bar ~ 1, so AdamS decays
# lr * wd / sqrt(v_bar) ~ 1% a step and AdaiS and SGDS lr * wd = 1% a step.
STRONG_DECAY = [Group([Param((4097,), 1.0), Param((33, 65), 1.0)],
                      dict(lr=1e-2, weight_decay=1.0))]


@pytest.mark.parametrize("kind, options", subset("adams", "sgds-momentum", "adais"))
def test_bf16_check_sees_a_decay_one_percent_off(backend, kind, options):
    """The half-precision tolerance has teeth: the run that matches its oracle is rejected
    by an oracle whose weight decay is 1% larger (20 steps x 1% x 1e-2 = 2e-3 relative, half
    a bf16 ulp: many elements round the other way)."""
    run = run_steps(start(kind, STRONG_DECAY, backend, dtype=torch.bfloat16, seed=9,
                          **options), STEPS)
    assert_matches_oracle(run)
    off = run_steps(start(kind, STRONG_DECAY, backend, dtype=torch.bfloat16, seed=9,
                          oracle_weight_decay_scale=1.01, **options), STEPS)
    with pytest.raises(AssertionError, match="differ from the oracle|max .error."):
        assert_matches_oracle(off)


# Gradients of 1e-5..1e-4: sqrt(v_hat) is then comparable to eps, where a misplaced eps (inside
# the square root, or added to v_hat) changes the step by 10x or more.
SMALL_GRADS = [Group([Param((4097,), 1e-5), Param((2 ** 16 + 3,), 1e-4), Param((33,), 3e-5)],
                     dict(lr=1e-3, weight_decay=5e-4))]


@pytest.mark.parametrize("eps", [1e-8, 1e-6])
@pytest.mark.parametrize("kind, options", subset("adams", "amsgrads"))
def test_small_gradients_reach_the_eps_regime(backend, kind, options, eps):
    run = run_steps(start(kind, SMALL_GRADS, backend, seed=10, **dict(options, eps=eps)), STEPS)
    assert_matches_oracle(run)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
@pytest.mark.parametrize("kind", ["adams", "adais"])
def test_running_sums_and_vbar_hold_over_many_steps(backend, kind, dtype):
    """The running sums the reduction keeps stay the sums of the stored exp_avg_sq, and v_bar
    the oracle's, over 40 steps with params that miss grads and a skipped (found_inf) step."""
    run = start(kind, SEVERAL_GROUPS, backend, dtype=dtype, seed=11)
    rel = 1e-5 if dtype == torch.float32 else 3 * torch.finfo(dtype).eps
    for index in range(40):
        grads = random_grads(run)
        if index == 20:  # an overflow step: skipped by the optimizer, nothing may change
            for p, g in zip(run.params, grads):
                p.grad = g
            run.optimizer.step(found_inf=torch.ones(()))
            continue
        step_both(run, grads)
        ours = run.optimizer.vhat_mean().item()
        theirs = next(iter(run.oracle.last_v_bars.values()))
        assert ours == pytest.approx(theirs, rel=rel), f"v_bar after step {index}"
        for p in run.params:
            state = run.optimizer.state.get(p)
            if state:
                assert_running_sum(f"after step {index}", state["exp_avg_sq_sum"],
                                   state["exp_avg_sq"], state["step"].item())


MIXED_DTYPES = [
    Group([Param((4097,), 0.5), Param((300,), 2.0, dtype=torch.bfloat16),
           Param((1,), 1.0, dtype=torch.float16)], dict(lr=1e-2, weight_decay=5e-2)),
    Group([Param((2 ** 16 + 3,), 0.3, dtype=torch.bfloat16), Param((33,), 1.0)],
          dict(lr=5e-3, weight_decay=1e-2)),
]


@pytest.mark.parametrize("kind, options", subset("adams", "amsgrads", "sgds-momentum", "adais"))
def test_mixed_dtypes_share_one_mean(backend, kind, options):
    """fp32, bf16 and fp16 params in the same groups: several buckets, one global mean."""
    run = run_steps(start(kind, MIXED_DTYPES, backend, seed=4, **options), STEPS)
    assert_matches_oracle(run)


def test_grad_in_another_layout(backend):
    """A contiguous grad for a channels_last param (not autograd's layout) is read by value,
    and the param and its state keep the param's layout."""
    groups = [Group([Param((8, 3, 5, 7), 1.0, channels_last=True, grad_contiguous=True),
                     Param((65, 33), 1.0, transposed=True, grad_contiguous=True)],
                    dict(lr=1e-2, weight_decay=5e-2))]
    run = run_steps(start("adams", groups, backend, seed=5), STEPS)
    assert_matches_oracle(run)
    weight, transposed = run.params
    assert weight.is_contiguous(memory_format=torch.channels_last)
    assert transposed.stride() == (1, 65)
    for key in ("exp_avg", "exp_avg_sq"):
        assert run.optimizer.state[weight][key].is_contiguous(memory_format=torch.channels_last)


def test_buckets_follow_grads_that_change_between_steps(backend):
    """A step's buckets are kept and reused while the next step's grads have the same
    layout; a grad in another layout, a missing grad or one back in autograd's layout makes
    the step build them anew, and every step still matches the oracle."""
    groups = [Group([Param((8, 3, 5, 7), 1.0, channels_last=True),
                     Param((65, 33), 1.0, transposed=True), Param((4097,), 0.5)],
                    dict(lr=1e-2, weight_decay=5e-2)),
              Group([Param((129,), 2.0)], dict(lr=5e-3, weight_decay=1e-2))]
    run = start("adams", groups, backend, seed=7)
    changes = {2: (0, "contiguous"), 3: (1, "contiguous"), 4: (2, "missing"),
               6: (3, "missing")}
    for step in range(9):
        grads = random_grads(run)
        index, change = changes.get(step, (None, None))
        if change == "contiguous":
            grads[index] = grads[index].contiguous()
        elif change == "missing":
            grads[index] = None
        step_both(run, grads)
        assert_matches_oracle(run)
        if step in (1, 8):  # the same layouts as the step before: its buckets were reused
            assert run.optimizer._plan is not None


def test_non_dense_view_param(backend):
    """A param that is a strided view (every other column of a larger tensor): updated in
    place through the view, the rest of the storage untouched."""
    base = torch.randn(64, 66, generator=torch.Generator().manual_seed(6))
    untouched = base[:, 1::2].clone()
    view = base[:, ::2].requires_grad_()
    run = start("adams", [Group([Param((64, 33))], dict(lr=1e-2, weight_decay=5e-2))],
                backend, seed=6)
    # swap in the view as the param, for both the optimizer and the oracle
    with torch.no_grad():
        view.copy_(run.params[0])
    run.optimizer.param_groups[0]["params"][0] = view
    run.params[0] = view
    run_steps(run, STEPS)
    assert_matches_oracle(run)
    assert torch.equal(base[:, 1::2], untouched)


# ----- the mean is global -----------------------------------------------------------------

def _largest_param_error(run) -> float:
    return max((p.detach().double() - e).abs().max().item()
               for p, e in zip(run.params, run.oracle.params))


@pytest.mark.parametrize("kind, options", [
    pytest.param("adams", dict(decay_power=1.0), id="adams"),
    pytest.param("adams", dict(amsgrad=True, decay_power=1.0), id="amsgrads"),
    pytest.param("adais", dict(), id="adais"),
])
def test_mean_is_global_not_per_group_or_tensor(backend, kind, options):
    """The oracle variants with per-tensor or per-group means are clearly away from the
    optimizer (100x the fp32 tolerance), while the global one matches it."""
    results = {}
    for scope in ("global", "group", "tensor"):
        run = run_steps(start(kind, SEVERAL_GROUPS, backend, seed=7, mean_scope=scope,
                              **options), STEPS)
        results[scope] = (_largest_param_error(run),
                          max(e.abs().max().item() for e in run.oracle.params))
        if scope == "global":
            assert_matches_oracle(run)
    bound = TOLERANCES[torch.float32].relative * results["global"][1]
    for scope in ("group", "tensor"):
        assert results[scope][0] > 100 * bound, (
            f"a per-{scope} mean gives nearly the same params ({results[scope][0]:.3g}): the "
            f"problem cannot tell the scopes apart")


def test_adais_inertia_at_its_bound(backend):
    """Most elements far below v_bar: beta1 = 1 - eps for them, where (1 - beta1) must not be
    formed in fp32 from beta1 (1 - 0.999f is 1.3e-5 off, which m would inherit)."""
    groups = [Group([Param((4097,), 0.01), Param((300,), 0.05)], dict(lr=1e-2)),
              Group([Param((64,), 30.0)], dict(lr=1e-2, weight_decay=1e-2))]
    run = run_steps(start("adais", groups, backend, seed=8), STEPS)
    assert_matches_oracle(run)
