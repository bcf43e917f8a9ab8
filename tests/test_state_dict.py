"""Checkpoints: a round trip mid-training gives the uninterrupted result bit for bit (also when
an optimizer that has stepped on rolls back to an earlier checkpoint), and state dicts move
both ways between AdamS and torch.optim.AdamW (and SGD into SGDS), in torch's layout."""
from __future__ import annotations

import io

import pytest
import torch

import swd_kernels
from problems import OPTIMIZERS, SEVERAL_GROUPS, random_grads, start, step_both
from tolerance import assert_close

KINDS = [
    pytest.param("adams", dict(), id="adams"),
    pytest.param("adams", dict(amsgrad=True), id="amsgrads"),
    pytest.param("sgds", dict(momentum=0.9), id="sgds"),
    pytest.param("adais", dict(), id="adais"),
]


def saved_and_loaded(obj):
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    buffer.seek(0)
    return torch.load(buffer, weights_only=True)


def assert_same_run(ours_opt, ours_params, theirs_opt, theirs_params):
    """Params and every state entry bitwise equal (the float64 running sums included)."""
    for a, b in zip(ours_params, theirs_params):
        assert torch.equal(a, b), "params differ"
        ours, theirs = ours_opt.state.get(a, {}), theirs_opt.state.get(b, {})
        assert set(ours) == set(theirs)
        for key in theirs:
            assert ours[key].dtype == theirs[key].dtype, key
            assert torch.equal(ours[key], theirs[key]), f"state {key!r} differs"


def run_and_replay(kind, options, backend, seed, steps, checkpoint_at):
    """An uninterrupted run of ``steps`` steps, and a replay of the same grads stopped at
    ``checkpoint_at``: (run, its grads, the replay, the replay's saved-and-loaded state dict)."""
    run = start(kind, SEVERAL_GROUPS, backend, seed=seed, **options)
    grads = []
    for _ in range(steps):
        grads.append(random_grads(run))
        step_both(run, grads[-1])
    replay = start(kind, SEVERAL_GROUPS, backend, seed=seed, **options)
    for g in grads[:checkpoint_at]:
        step_both(replay, g)
    return run, grads, replay, saved_and_loaded(replay.optimizer.state_dict())


@pytest.mark.parametrize("kind, options", KINDS)
def test_round_trip_at_step_10_gives_the_uninterrupted_run(backend, kind, options):
    # checkpoint at 10, a fresh optimizer on fresh copies of the params, 10 more steps
    run, grads, replay, checkpoint = run_and_replay(kind, options, backend, 10, 20, 10)
    fresh = [p.detach().clone().requires_grad_() for p in replay.params]
    groups = [dict(params=fresh[a:a + len(g["params"])])
              for a, g in zip(_starts(replay.optimizer), replay.optimizer.param_groups)]
    resumed = OPTIMIZERS[kind](groups, lr=1.0, backend=backend, **options)  # lr from checkpoint
    resumed.load_state_dict(checkpoint)
    for g in grads[10:]:
        for p, gi in zip(fresh, g):
            p.grad = gi
        resumed.step()
    assert_same_run(resumed, fresh, run.optimizer, run.params)
    assert resumed.param_groups[0]["lr"] == run.optimizer.param_groups[0]["lr"]


@pytest.mark.parametrize("kind, options", KINDS)
def test_rolling_back_to_an_earlier_checkpoint_replaces_every_state(backend, kind, options):
    """An optimizer that went on past a checkpoint, on other grads, loads it (with the params
    of that moment) and continues exactly as the run that never left it."""
    run, grads, replay, checkpoint = run_and_replay(kind, options, backend, 13, 16, 8)
    saved_params = [p.detach().clone() for p in replay.params]
    for _ in range(5):  # wander off: different grads, larger moments
        step_both(replay, [None if g is None else 3 * torch.randn_like(g)
                           for g in random_grads(replay)])
    replay.optimizer.load_state_dict(checkpoint)
    with torch.no_grad():
        for p, saved in zip(replay.params, saved_params):
            p.copy_(saved)
    for g in grads[8:]:
        step_both(replay, g)
    assert_same_run(replay.optimizer, replay.params, run.optimizer, run.params)


def _starts(optimizer):
    starts, total = [], 0
    for group in optimizer.param_groups:
        starts.append(total)
        total += len(group["params"])
    return starts


def _twins(seed=0):
    generator = torch.Generator().manual_seed(seed)
    values = [torch.randn(s, generator=generator) for s in [(1,), (4097,), (33, 7)]]
    return ([v.clone().requires_grad_() for v in values],
            [v.clone().requires_grad_() for v in values], generator)


def _feed(params_a, params_b, generator):
    for a, b in zip(params_a, params_b):
        g = torch.randn(a.shape, generator=generator)
        a.grad, b.grad = g.clone(), g.clone()


@pytest.mark.parametrize("amsgrad", [False, True])
def test_adamw_state_dict_loads_into_adams(backend, amsgrad):
    """An AdamW checkpoint continues under AdamS(decay_power=0) exactly as under AdamW; the
    groups get AdamS's own options (decay_power, backend choice ...) from the defaults."""
    ours, theirs, generator = _twins(1)
    adamw = torch.optim.AdamW(theirs, lr=1e-2, weight_decay=5e-2, amsgrad=amsgrad)
    for _ in range(5):
        _feed(theirs, theirs, generator)
        adamw.step()
    with torch.no_grad():
        for a, b in zip(ours, theirs):
            a.copy_(b)
    adams = swd_kernels.AdamS(ours, decay_power=0.0, amsgrad=amsgrad, backend=backend)
    adams.load_state_dict(saved_and_loaded(adamw.state_dict()))
    group = adams.param_groups[0]
    assert group["decay_power"] == 0.0 and group["decay_eps"] == 0.0
    assert group["lr"] == 1e-2 and group["weight_decay"] == 5e-2
    for _ in range(10):
        _feed(ours, theirs, generator)
        adams.step()
        adamw.step()
    assert_close("params", ours, [p.detach().double() for p in theirs], torch.float32,
                 are_params=True)
    for a, b in zip(ours, theirs):
        assert adams.state[a]["step"].item() == adamw.state[b]["step"].item() == 15


def test_adams_state_dict_loads_into_adamw(backend):
    ours, theirs, generator = _twins(2)
    adams = swd_kernels.AdamS(ours, lr=1e-2, weight_decay=5e-2, decay_power=0.0,
                              backend=backend)
    for _ in range(5):
        _feed(ours, ours, generator)
        adams.step()
    with torch.no_grad():
        for a, b in zip(ours, theirs):
            b.copy_(a)
    adamw = torch.optim.AdamW(theirs)
    adamw.load_state_dict(saved_and_loaded(adams.state_dict()))
    for _ in range(10):
        _feed(ours, theirs, generator)
        adams.step()
        adamw.step()
    assert_close("params", ours, [p.detach().double() for p in theirs], torch.float32,
                 are_params=True)


def test_sgd_state_dict_loads_into_sgds(backend):
    """torch.optim.SGD keeps a momentum buffer but no step: SGDS continues it (no restart at
    buf = g) exactly as SGD would."""
    ours, theirs, generator = _twins(3)
    sgd = torch.optim.SGD(theirs, lr=1e-2, momentum=0.9)
    for _ in range(5):
        _feed(theirs, theirs, generator)
        sgd.step()
    with torch.no_grad():
        for a, b in zip(ours, theirs):
            a.copy_(b)
    sgds = swd_kernels.SGDS(ours, lr=1.0, momentum=0.9, backend=backend)
    sgds.load_state_dict(saved_and_loaded(sgd.state_dict()))
    for _ in range(10):
        _feed(ours, theirs, generator)
        sgds.step()
        sgd.step()
    assert_close("params", ours, [p.detach().double() for p in theirs], torch.float32,
                 are_params=True)


@pytest.mark.parametrize("kind, options", KINDS)
def test_state_layout_is_torchs(backend, kind, options):
    """step: 0-dim float32 on the param's device; exp_avg_sq_sum (AdamS, AdaiS) 0-dim float64
    there; every other key shaped and strided like the param; nothing else in the state; a
    param without a grad has no state."""
    run = start(kind, SEVERAL_GROUPS, backend, seed=11, **options)
    for _ in range(2):
        step_both(run, random_grads(run))
    expected = {"adams": {"exp_avg", "exp_avg_sq"} | ({"max_exp_avg_sq"}
                                                      if options.get("amsgrad") else set()),
                "sgds": {"momentum_buffer"}, "adais": {"exp_avg", "exp_avg_sq",
                                                       "beta1_prod"}}[kind]
    # the float64 running sum of exp_avg_sq, where the reduction keeps one
    keeps_sum = kind == "adais" or (kind == "adams" and not options.get("amsgrad"))
    for p, spec in zip(run.params, run.specs):
        state = run.optimizer.state.get(p, {})
        if spec.never_grad:
            assert not state
            continue
        assert set(state) == {"step"} | expected | ({"exp_avg_sq_sum"} if keeps_sum else set())
        assert state["step"].dtype == torch.float32 and state["step"].shape == ()
        assert state["step"].device == p.device
        if keeps_sum:
            total = state["exp_avg_sq_sum"]
            assert total.dtype == torch.float64 and total.shape == () and total.device == p.device
        for key in expected:
            assert state[key].shape == p.shape and state[key].dtype == p.dtype
            assert state[key].stride() == p.stride(), key
    saved = run.optimizer.state_dict()
    assert set(saved) == {"state", "param_groups"}


def test_fp32_state_of_bf16_params_survives_a_round_trip(backend):
    generator = torch.Generator().manual_seed(12)
    params = [make_tensor_bf16(s, generator) for s in [(4097,), (9, 5)]]
    opt = swd_kernels.AdamS(params, lr=1e-2, state_dtype=torch.float32, backend=backend)
    for _ in range(3):
        for p in params:
            p.grad = torch.randn(p.shape, generator=generator).bfloat16()
        opt.step()
    saved = saved_and_loaded(opt.state_dict())
    fresh = [p.detach().clone().requires_grad_() for p in params]
    loaded = swd_kernels.AdamS(fresh, lr=1e-2, state_dtype=torch.float32, backend=backend)
    loaded.load_state_dict(saved)
    for a, b in zip(params, fresh):
        for key in ("exp_avg", "exp_avg_sq"):
            assert loaded.state[b][key].dtype == torch.float32
            assert torch.equal(loaded.state[b][key], opt.state[a][key])
            # the fp32 state really holds more than bf16 could
            assert not torch.equal(opt.state[a][key], opt.state[a][key].bfloat16().float())
    for p, q in zip(params, fresh):
        p.grad = q.grad = torch.randn(p.shape, generator=generator).bfloat16()
    opt.step()
    loaded.step()
    for a, b in zip(params, fresh):
        assert torch.equal(a, b)


def make_tensor_bf16(shape, generator):
    return torch.randn(shape, generator=generator).bfloat16().requires_grad_()
