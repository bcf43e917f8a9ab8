"""What a user replacing torch.optim.AdamW relies on besides the math: torch's optimizer
keywords, GradScaler's own unscaling on request (``unscale_in_step=False``), compiled steps
under an LR scheduler that compile no more graphs than AdamW, the warning about a decay on
AdamW's scale, the weight-decay conversion, clear errors, and which backend runs."""
from __future__ import annotations

import copy
import pickle
import warnings

import pytest
import torch
from torch.optim.lr_scheduler import CosineAnnealingLR

import swd_kernels

FAMILIES = {
    "adams": lambda ps, **kw: swd_kernels.AdamS(ps, lr=1e-2, weight_decay=5e-4, **kw),
    "amsgrads": lambda ps, **kw: swd_kernels.AMSGradS(ps, lr=1e-2, weight_decay=5e-4, **kw),
    "sgds": lambda ps, **kw: swd_kernels.SGDS(ps, lr=1e-2, momentum=0.9, weight_decay=1e-3,
                                              **kw),
    "adais": lambda ps, **kw: swd_kernels.AdaiS(ps, lr=1e-2, weight_decay=1e-3, **kw),
}


def model_and_batches(seed, steps=6):
    torch.manual_seed(seed)
    model = torch.nn.Sequential(torch.nn.Linear(16, 32), torch.nn.Tanh(),
                                torch.nn.Linear(32, 4))
    generator = torch.Generator().manual_seed(seed)
    batches = [(torch.randn(8, 16, generator=generator), torch.randn(8, 4, generator=generator))
               for _ in range(steps)]
    return model, batches


# ----- torch's keywords ---------------------------------------------------------------------
@pytest.mark.parametrize("family", FAMILIES)
def test_torch_keywords_are_accepted_and_change_nothing(backend, family):
    plain, batches = model_and_batches(1)
    keyworded = copy.deepcopy(plain)
    opt_plain = FAMILIES[family](list(plain.parameters()), backend=backend)
    opt_kw = FAMILIES[family](list(keyworded.parameters()), backend=backend, foreach=True,
                              fused=True, capturable=True, differentiable=False)
    for x, y in batches:
        for model, opt in ((plain, opt_plain), (keyworded, opt_kw)):
            opt.zero_grad()
            torch.nn.functional.mse_loss(model(x), y).backward()
            opt.step()
    for a, b in zip(plain.parameters(), keyworded.parameters()):
        assert torch.equal(a, b)
    assert opt_kw.defaults["foreach"] is True and opt_kw.param_groups[0]["fused"] is True


@pytest.mark.parametrize("family", FAMILIES)
def test_differentiable_true_is_a_clear_error(family):
    with pytest.raises(ValueError, match="differentiable=True is not supported"):
        FAMILIES[family]([torch.nn.Parameter(torch.randn(3))], differentiable=True)


def test_an_unknown_keyword_is_still_an_error():
    with pytest.raises(TypeError, match="fuzed"):
        swd_kernels.AdamS([torch.nn.Parameter(torch.randn(3))], fuzed=True)


# ----- GradScaler: unscaling inside the step, or by the scaler ---------------------------------
@pytest.mark.parametrize("family", FAMILIES)
def test_unscale_in_step_false_equals_the_fused_unscale_bit_for_bit(backend, family):
    """With unscale_in_step=False, GradScaler unscales .grad itself and skips a step with an
    inf on the host, as for an unfused torch optimizer (what Lightning's clipping under AMP
    needs); the result equals the in-kernel unscale and skip bit for bit."""
    fused_model, batches = model_and_batches(2, steps=8)
    scaler_model = copy.deepcopy(fused_model)
    fused = FAMILIES[family](list(fused_model.parameters()), backend=backend)
    by_scaler = FAMILIES[family](list(scaler_model.parameters()), backend=backend,
                                 unscale_in_step=False)
    assert fused._step_supports_amp_scaling and not by_scaler._step_supports_amp_scaling
    scalers = [torch.amp.GradScaler("cpu", init_scale=2.0 ** 14, growth_interval=2)
               for _ in range(2)]
    for index, (x, y) in enumerate(batches):
        for model, opt, scaler in ((fused_model, fused, scalers[0]),
                                   (scaler_model, by_scaler, scalers[1])):
            opt.zero_grad()
            scaler.scale(torch.nn.functional.mse_loss(model(x), y)).backward()
            if index == 3:  # an overflow: both must skip this step
                next(model.parameters()).grad[0, 0] = float("inf")
            scaler.step(opt)
            scaler.update()
    for a, b in zip(fused_model.parameters(), scaler_model.parameters()):
        assert torch.equal(a, b)
    for a, b in zip(fused_model.parameters(), scaler_model.parameters()):
        for key, value in fused.state[a].items():
            assert torch.equal(value, by_scaler.state[b][key]), key
    assert fused.state[next(fused_model.parameters())]["step"].item() == len(batches) - 1


def test_options_survive_pickling_and_deepcopy():
    opt = swd_kernels.AdamS([torch.nn.Parameter(torch.randn(3))], unscale_in_step=False,
                            backend="torch", state_dtype=torch.float32)
    for copied in (pickle.loads(pickle.dumps(opt)), copy.deepcopy(opt)):
        assert copied._step_supports_amp_scaling is False
        assert copied.backend == "torch" and copied.state_dtype == torch.float32


# ----- torch.compile with an LR scheduler ------------------------------------------------------
def compiled_graphs(make_optimizer, lr, steps=20):
    """Graphs compiled by torch's compiled-optimizer recipe, ``@torch.compile`` over
    ``opt.step(); sched.step()``, over ``steps`` cosine-annealed steps."""
    torch._dynamo.reset()
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(8, 8), torch.nn.Linear(8, 2))
    opt = make_optimizer(model.parameters(), lr)
    sched = CosineAnnealingLR(opt, T_max=steps)
    graphs = []

    def counting_backend(graph_module, example_inputs):
        graphs.append(graph_module)
        return graph_module.forward

    @torch.compile(backend=counting_backend)
    def step():
        opt.step()
        sched.step()

    lrs = []
    for _ in range(steps):
        for p in model.parameters():
            p.grad = torch.randn_like(p)
        step()
        lrs.append(float(opt.param_groups[0]["lr"]))
    torch._dynamo.reset()
    return len(graphs), lrs, [p.detach().clone() for p in model.parameters()]


@pytest.mark.parametrize("lr_kind", ["float", "tensor"])
def test_compiled_step_with_a_scheduler_compiles_no_more_graphs_than_adamw(backend, lr_kind):
    def lr_value():
        return 1e-2 if lr_kind == "float" else torch.tensor(1e-2)

    theirs, their_lrs, _ = compiled_graphs(
        lambda ps, lr: torch.optim.AdamW(ps, lr=lr), lr_value())
    ours, our_lrs, compiled_params = compiled_graphs(
        lambda ps, lr: swd_kernels.AdamS(ps, lr=lr, weight_decay=5e-4, backend=backend),
        lr_value())
    assert our_lrs == their_lrs and len(set(our_lrs)) > 10  # the schedule really moved lr
    assert ours <= theirs, f"AdamS compiled {ours} graphs, AdamW {theirs}"
    # and the compiled steps took the scheduler's lr: the same as eager steps
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(8, 8), torch.nn.Linear(8, 2))
    opt = swd_kernels.AdamS(model.parameters(), lr=lr_value(), weight_decay=5e-4,
                            backend=backend)
    sched = CosineAnnealingLR(opt, T_max=20)
    for _ in range(20):
        for p in model.parameters():
            p.grad = torch.randn_like(p)
        opt.step()
        sched.step()
    for a, b in zip(model.parameters(), compiled_params):
        torch.testing.assert_close(a.detach(), b, rtol=1e-6, atol=1e-7)


def test_a_compiled_step_with_a_tensor_lr_traces_fullgraph(backend):
    torch._dynamo.reset()
    model = torch.nn.Linear(8, 4)
    opt = swd_kernels.AdamS(model.parameters(), lr=torch.tensor(1e-2), backend=backend)
    step = torch.compile(opt.step, fullgraph=True, backend="aot_eager")
    for value in (1e-2, 5e-3, 1e-3):
        opt.param_groups[0]["lr"].fill_(value)
        for p in model.parameters():
            p.grad = torch.randn_like(p)
        step()
    assert all(torch.isfinite(p).all() for p in model.parameters())
    torch._dynamo.reset()


def test_a_bad_lr_set_between_eager_steps_is_caught_before_any_change():
    p = torch.nn.Parameter(torch.randn(5))
    opt = swd_kernels.AdamS([p])
    p.grad = torch.randn(5)
    opt.step()
    before = p.detach().clone(), {k: v.clone() for k, v in opt.state[p].items()}
    opt.param_groups[0]["lr"] = -1.0
    with pytest.raises(ValueError, match="lr"):
        opt.step()
    assert torch.equal(p, before[0])
    assert all(torch.equal(v, before[1][k]) for k, v in opt.state[p].items())


# ----- weight decay on the wrong scale ---------------------------------------------------------
def train_silently(weight_decay, grad_rms, steps=4, **options):
    p = torch.nn.Parameter(torch.randn(4096, generator=torch.Generator().manual_seed(3)))
    opt = swd_kernels.AdamS([p], lr=1e-3, weight_decay=weight_decay, **options)
    generator = torch.Generator().manual_seed(4)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for _ in range(steps):
            p.grad = torch.randn(4096, generator=generator) * grad_rms
            opt.step()
    return [w for w in caught if "stable decay" in str(w.message)], opt


def test_a_decay_of_one_or_more_is_warned_about_once(backend):
    # lr 1e-3, wd 0.1 (AdamW's scale), grads of RMS 1e-5: decay = 1e-4 / 1e-5 = 10 per step
    caught, opt = train_silently(0.1, 1e-5, backend=backend)
    assert len(caught) == 1
    message = str(caught[0].message)
    assert "weight_decay=0.1" in message and "weight_decay_from_adamw" in message
    assert caught[0].filename == __file__  # it points at the caller of step()


def test_the_paper_scale_is_not_warned_about(backend):
    caught, _ = train_silently(5e-4, 1e-5, backend=backend)  # decay 5e-2 per step
    assert caught == []


def test_weight_decay_from_adamw_matches_adamws_decay_at_the_measured_vbar(backend):
    """AdamS with the converted weight_decay decays as AdamW does at that v_bar: with
    betas whose v_hat hardly moves, one AdamS step of weight decay alone equals AdamW's."""
    p = torch.nn.Parameter(torch.randn(1000))
    probe = swd_kernels.AdamS([p], lr=1e-3, weight_decay=0.0, backend=backend)
    p.grad = torch.randn(1000) * 1e-3
    probe.step()
    v_bar = probe.vhat_mean()
    assert v_bar.dtype == torch.float64 and v_bar.item() > 0
    converted = swd_kernels.weight_decay_from_adamw(0.05, v_bar.item())
    assert converted == pytest.approx(0.05 * v_bar.item() ** 0.5, rel=1e-12)
    assert swd_kernels.weight_decay_from_adamw(0.05, v_bar).item() == pytest.approx(converted)
    # the same grad on the same params: the only difference between the two is the decay
    ours_p = torch.nn.Parameter(torch.randn(1000, generator=torch.Generator().manual_seed(5)))
    theirs_p = torch.nn.Parameter(ours_p.detach().clone())
    ours = swd_kernels.AdamS([ours_p], lr=1e-3, weight_decay=converted, backend=backend)
    theirs = torch.optim.AdamW([theirs_p], lr=1e-3, weight_decay=0.05)
    ours_p.grad, theirs_p.grad = p.grad.clone(), p.grad.clone()
    ours.step()
    theirs.step()
    torch.testing.assert_close(ours_p, theirs_p, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("bad", [dict(adamw_weight_decay=-1.0, vhat_mean=1e-4),
                                 dict(adamw_weight_decay=0.1, vhat_mean=-1.0),
                                 dict(adamw_weight_decay=0.1, vhat_mean="big"),
                                 dict(adamw_weight_decay=0.1, vhat_mean=1e-4,
                                      decay_power=-0.5)])
def test_weight_decay_from_adamw_rejects_bad_input(bad):
    name = next(k for k in ("decay_power", "vhat_mean", "adamw_weight_decay")
                if k in bad and (not isinstance(bad[k], float) or bad[k] < 0))
    with pytest.raises(ValueError, match=name):
        swd_kernels.weight_decay_from_adamw(**bad)


def test_vhat_mean_before_a_step_says_when_it_is_known():
    with pytest.raises(RuntimeError, match="after the first step"):
        swd_kernels.AdamS([torch.nn.Parameter(torch.randn(3))]).vhat_mean()


# ----- clear errors, and which backend runs -----------------------------------------------------
@pytest.mark.parametrize("family", FAMILIES)
def test_the_same_tensor_twice_in_a_group_is_a_clear_error(family):
    p = torch.nn.Parameter(torch.randn(3))
    with pytest.raises(ValueError, match="given twice in one param group"):
        FAMILIES[family]([p, torch.nn.Parameter(torch.randn(2)), p])


def test_integer_params_are_refused_without_talking_of_complex_numbers():
    with pytest.raises(TypeError, match="floating-point") as error:
        swd_kernels.AdamS([torch.zeros(3, dtype=torch.int64)])
    assert "complex" not in str(error.value)
    with pytest.raises(TypeError, match="view_as_real"):
        swd_kernels.AdamS([torch.zeros(3, dtype=torch.complex64)])


def test_backends_names_the_backend_that_runs_each_device_and_dtype():
    params = [torch.nn.Parameter(torch.randn(3)),
              torch.nn.Parameter(torch.randn(3, dtype=torch.float64))]
    opt = swd_kernels.AdamS(params)
    assert opt.backend == "auto"
    chosen = opt.backends
    cpu = torch.device("cpu")
    assert chosen[(cpu, torch.float32)] == swd_kernels.available_backends(
        "cpu", torch.float32)[0]
    assert chosen[(cpu, torch.float64)] == swd_kernels.available_backends(
        "cpu", torch.float64)[0]
    assert swd_kernels.AdamS(params, backend="torch").backends == {
        (cpu, torch.float32): "torch", (cpu, torch.float64): "torch"}
