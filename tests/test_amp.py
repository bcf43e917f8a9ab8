"""AMP: GradScaler hands grad_scale/found_inf to the step (no unscale pass of its own), the
result equals unscaled training, and found_inf skips the step leaving everything bitwise
unchanged. Grads are never written by a step."""
from __future__ import annotations

import copy

import pytest
import torch

import swd_kernels

MAKERS = {
    "adams": lambda ps, b: swd_kernels.AdamS(ps, lr=1e-2, weight_decay=5e-2, backend=b),
    "amsgrads": lambda ps, b: swd_kernels.AMSGradS(ps, lr=1e-2, weight_decay=5e-2, backend=b),
    "sgds": lambda ps, b: swd_kernels.SGDS(ps, lr=1e-2, momentum=0.9, weight_decay=1e-2,
                                           nesterov=True, backend=b),
    "adais": lambda ps, b: swd_kernels.AdaiS(ps, lr=1e-2, weight_decay=1e-2, backend=b),
}


def model_and_data(seed):
    torch.manual_seed(seed)
    model = torch.nn.Sequential(torch.nn.Linear(16, 32), torch.nn.Tanh(),
                                torch.nn.Linear(32, 4))
    generator = torch.Generator().manual_seed(seed)
    batches = [(torch.randn(8, 16, generator=generator), torch.randn(8, 4, generator=generator))
               for _ in range(6)]
    return model, batches


def loss_of(model, x, y):
    return torch.nn.functional.mse_loss(model(x), y)


@pytest.mark.parametrize("family", MAKERS)
def test_grad_scaler_training_equals_unscaled(backend, family):
    plain, batches = model_and_data(0)
    scaled = copy.deepcopy(plain)
    opt_plain = MAKERS[family](list(plain.parameters()), backend)
    opt_scaled = MAKERS[family](list(scaled.parameters()), backend)
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0 ** 12, growth_interval=1000)
    seen = {}
    original_step = opt_scaled.step

    def spying_step(*args, **kwargs):
        seen["grad_scale"] = getattr(opt_scaled, "grad_scale", None)
        seen["found_inf"] = getattr(opt_scaled, "found_inf", None)
        seen["grad"] = [p.grad.clone() for p in scaled.parameters()]
        result = original_step(*args, **kwargs)
        seen["grad_after"] = [p.grad.clone() for p in scaled.parameters()]
        return result

    opt_scaled.step = spying_step
    for x, y in batches:
        opt_plain.zero_grad()
        loss_of(plain, x, y).backward()
        opt_plain.step()
        opt_scaled.zero_grad()
        scaler.scale(loss_of(scaled, x, y)).backward()
        scaler.step(opt_scaled)
        scaler.update()
        # the scaler handed over its scale and left the grads scaled (no unscale pass)
        assert seen["grad_scale"] is not None and seen["grad_scale"].item() == 2.0 ** 12
        assert seen["found_inf"].item() == 0
        for before, after in zip(seen["grad"], seen["grad_after"]):
            assert torch.equal(before, after)
    # powers of two scale exactly: the same params as unscaled training
    for a, b in zip(plain.parameters(), scaled.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=0)


def test_grad_scaler_with_unscale_for_clipping(backend):
    """scaler.unscale_ (e.g. before clip_grad_norm_) then step: no double unscaling."""
    plain, batches = model_and_data(1)
    scaled = copy.deepcopy(plain)
    opt_plain = MAKERS["adams"](list(plain.parameters()), backend)
    opt_scaled = MAKERS["adams"](list(scaled.parameters()), backend)
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0 ** 10)
    for x, y in batches:
        opt_plain.zero_grad()
        loss_of(plain, x, y).backward()
        torch.nn.utils.clip_grad_norm_(plain.parameters(), 0.5)
        opt_plain.step()
        opt_scaled.zero_grad()
        scaler.scale(loss_of(scaled, x, y)).backward()
        scaler.unscale_(opt_scaled)
        torch.nn.utils.clip_grad_norm_(scaled.parameters(), 0.5)
        scaler.step(opt_scaled)
        scaler.update()
    for a, b in zip(plain.parameters(), scaled.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-7)


def test_grad_scaler_skips_a_step_with_inf(backend):
    model, batches = model_and_data(2)
    opt = MAKERS["adams"](list(model.parameters()), backend)
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0 ** 8)
    x, y = batches[0]
    scaler.scale(loss_of(model, x, y)).backward()
    scaler.step(opt)
    scaler.update()
    before = [p.detach().clone() for p in model.parameters()]
    state = copy.deepcopy(opt.state_dict()["state"])
    opt.zero_grad()
    scaler.scale(loss_of(model, x, y)).backward()
    next(model.parameters()).grad[0, 0] = float("inf")
    scaler.step(opt)
    scaler.update()
    assert scaler.get_scale() == 2.0 ** 7
    for p, b in zip(model.parameters(), before):
        assert torch.equal(p, b)
    for index, entries in state.items():
        for key, value in entries.items():
            assert torch.equal(opt.state_dict()["state"][index][key], value)


@pytest.mark.parametrize("family", MAKERS)
def test_found_inf_leaves_everything_bitwise_unchanged(backend, family):
    generator = torch.Generator().manual_seed(3)
    ps = [torch.randn(s, generator=generator).requires_grad_() for s in [(4097,), (7, 3), (1,)]]
    opt = MAKERS[family](ps, backend)
    for _ in range(3):
        for p in ps:
            p.grad = torch.randn(p.shape, generator=generator)
        opt.step()
    for p in ps:
        p.grad = torch.randn(p.shape, generator=generator) * 1e3
    ps[1].grad[0, 0] = float("nan")
    grads = [p.grad.clone() for p in ps]
    before = [p.detach().clone() for p in ps]
    state = copy.deepcopy(opt.state_dict()["state"])
    opt.step(grad_scale=torch.tensor(1e3), found_inf=torch.tensor(1.0))
    for p, b, g in zip(ps, before, grads):
        assert torch.equal(p, b)
        assert torch.allclose(p.grad, g, rtol=0, atol=0, equal_nan=True)
    for index, entries in state.items():
        for key, value in entries.items():
            assert torch.equal(opt.state_dict()["state"][index][key], value), (index, key)
    # and with found_inf = 0 the same call is a step on grad / grad_scale
    ps[1].grad[0, 0] = 0.0
    twin = [p.detach().clone().requires_grad_() for p in ps]
    opt_twin = MAKERS[family](twin, backend)
    opt_twin.load_state_dict(opt.state_dict())
    for p, t in zip(ps, twin):
        t.grad = p.grad / 1e3
    opt.step(grad_scale=torch.tensor(1e3), found_inf=torch.tensor(0.0))
    opt_twin.step()
    for p, t in zip(ps, twin):
        torch.testing.assert_close(p, t, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("family", MAKERS)
def test_step_never_writes_grads(backend, family):
    generator = torch.Generator().manual_seed(4)
    ps = [torch.randn(s, generator=generator).requires_grad_() for s in [(4097,), (7, 3)]]
    opt = MAKERS[family]([dict(params=ps, maximize=True)], backend)
    for _ in range(3):
        for p in ps:
            p.grad = torch.randn(p.shape, generator=generator)
        grads = [p.grad.clone() for p in ps]
        opt.step(grad_scale=torch.tensor(4.0), found_inf=torch.tensor(0.0))
        for p, g in zip(ps, grads):
            assert torch.equal(p.grad, g)
