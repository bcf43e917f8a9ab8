"""Against torch itself: where SWD reduces to a torch optimizer, every backend gives torch's
answer (AdamS(decay_power=0) is AdamW; SGDS without decay is SGD), including tensor lr and
an lr scheduler."""
from __future__ import annotations

import pytest
import torch

import swd_kernels
from problems import INTERPRETED_TRITON_MAX_NUMEL, interpreted
from tolerance import assert_close

STEPS = 20
SHAPES = [(1,), (4097,), (8, 3, 5, 7), (2 ** 16 + 3,), (129,)]


def twin_params(seed: int, backend: str):
    """Two identical sets of params (the third a channels_last 4-D weight) split in two
    groups, for an SWD optimizer and a torch optimizer."""
    generator = torch.Generator().manual_seed(seed)
    shapes = [(INTERPRETED_TRITON_MAX_NUMEL,) if interpreted(backend) and s == SHAPES[3] else s
              for s in SHAPES]
    values = [torch.randn(s, generator=generator) for s in shapes]
    values[2] = values[2].contiguous(memory_format=torch.channels_last)
    ours = [v.clone().requires_grad_() for v in values]
    theirs = [v.clone().requires_grad_() for v in values]
    return ours, theirs, generator


def groups(params, lr=1e-2):
    return [dict(params=params[:3], lr=lr, weight_decay=5e-2),
            dict(params=params[3:], lr=lr / 2, weight_decay=0.0)]


def train_together(ours, theirs, opt_ours, opt_theirs, generator, steps=STEPS,
                   schedulers=()):
    for step in range(steps):
        for i, (a, b) in enumerate(zip(ours, theirs)):
            if i == 4 and step % 3 == 0:  # a param without a grad on some steps
                a.grad = b.grad = None
                continue
            g = torch.randn(a.shape, generator=generator)
            a.grad = g.clone().contiguous(memory_format=torch.preserve_format)
            b.grad = g.clone()
        opt_ours.step()
        opt_theirs.step()
        for scheduler in schedulers:
            scheduler.step()


def assert_same_params_and_state(ours, theirs, opt_ours, opt_theirs, keys):
    assert_close("params", ours, [p.detach().double() for p in theirs], torch.float32,
                 are_params=True)
    for key in keys:
        assert_close(key, [opt_ours.state[p][key] for p in ours],
                     [opt_theirs.state[p][key].double() for p in theirs], torch.float32)
    for a, b in zip(ours, theirs):
        assert opt_ours.state[a]["step"].item() == opt_theirs.state[b]["step"].item()


@pytest.mark.parametrize("options", [
    dict(), dict(amsgrad=True), dict(maximize=True), dict(amsgrad=True, maximize=True),
    dict(betas=(0.8, 0.99), eps=1e-6),
], ids=["plain", "amsgrad", "maximize", "amsgrad-maximize", "betas-eps"])
def test_adams_power0_is_adamw(backend, options):
    ours, theirs, generator = twin_params(0, backend)
    opt_ours = swd_kernels.AdamS(groups(ours), decay_power=0.0, backend=backend, **options)
    opt_theirs = torch.optim.AdamW(groups(theirs), **options)
    train_together(ours, theirs, opt_ours, opt_theirs, generator)
    keys = ["exp_avg", "exp_avg_sq"] + (["max_exp_avg_sq"] if options.get("amsgrad") else [])
    assert_same_params_and_state(ours, theirs, opt_ours, opt_theirs, keys)


def test_amsgrads_class_is_adams_amsgrad(backend):
    ours, theirs, generator = twin_params(1, backend)
    opt_ours = swd_kernels.AMSGradS(groups(ours), decay_power=0.0, backend=backend)
    opt_theirs = torch.optim.AdamW(groups(theirs), amsgrad=True)
    train_together(ours, theirs, opt_ours, opt_theirs, generator)
    assert_same_params_and_state(ours, theirs, opt_ours, opt_theirs,
                                 ["exp_avg", "exp_avg_sq", "max_exp_avg_sq"])


@pytest.mark.parametrize("options", [
    dict(momentum=0.0), dict(momentum=0.9), dict(momentum=0.9, nesterov=True),
    dict(momentum=0.9, dampening=0.3), dict(momentum=0.9, nesterov=True, maximize=True),
], ids=["plain", "momentum", "nesterov", "dampening", "nesterov-maximize"])
def test_sgds_without_decay_is_sgd(backend, options):
    ours, theirs, generator = twin_params(2, backend)
    no_decay = [dict(g, weight_decay=0.0) for g in groups(ours)]
    opt_ours = swd_kernels.SGDS(no_decay, backend=backend, **options)
    opt_theirs = torch.optim.SGD([dict(g, weight_decay=0.0) for g in groups(theirs)],
                                 **options)
    train_together(ours, theirs, opt_ours, opt_theirs, generator)
    assert_close("params", ours, [p.detach().double() for p in theirs], torch.float32,
                 are_params=True)
    if options["momentum"]:
        assert_close("momentum_buffer", [opt_ours.state[p]["momentum_buffer"] for p in ours],
                     [opt_theirs.state[p]["momentum_buffer"].double() for p in theirs],
                     torch.float32)


def test_tensor_lr_matches_float_lr(backend):
    """lr as a 0-dim tensor (what a capturable schedule holds) gives the float-lr result, for
    every optimizer; AdamS(decay_power=0) with a tensor lr is still AdamW with one."""
    for make in (lambda ps, lr: swd_kernels.AdamS(groups(ps, lr), backend=backend),
                 lambda ps, lr: swd_kernels.AdamS(groups(ps, lr), amsgrad=True, backend=backend),
                 lambda ps, lr: swd_kernels.SGDS(groups(ps, lr), momentum=0.9, backend=backend),
                 lambda ps, lr: swd_kernels.AdaiS(groups(ps, lr), backend=backend)):
        ours, theirs, generator = twin_params(3, backend)
        train_together(ours, theirs, make(ours, torch.tensor(1e-2)), make(theirs, 1e-2),
                       generator)
        assert_close("params", ours, [p.detach().double() for p in theirs], torch.float32,
                 are_params=True)
    ours, theirs, generator = twin_params(4, backend)
    train_together(ours, theirs,
                   swd_kernels.AdamS(groups(ours, torch.tensor(1e-2)), decay_power=0.0,
                                     backend=backend),
                   torch.optim.AdamW(groups(theirs, torch.tensor(1e-2))), generator)
    assert_close("params", ours, [p.detach().double() for p in theirs], torch.float32,
                 are_params=True)


def test_lr_scheduler_drives_lr(backend):
    """torch's schedulers write group['lr']; the step must read it every time."""
    ours, theirs, generator = twin_params(5, backend)
    opt_ours = swd_kernels.AdamS(groups(ours), decay_power=0.0, backend=backend)
    opt_theirs = torch.optim.AdamW(groups(theirs))
    schedulers = [torch.optim.lr_scheduler.StepLR(o, step_size=4, gamma=0.5)
                  for o in (opt_ours, opt_theirs)]
    train_together(ours, theirs, opt_ours, opt_theirs, generator, schedulers=schedulers)
    assert opt_ours.param_groups[0]["lr"] == pytest.approx(1e-2 * 0.5 ** (STEPS // 4))
    assert_close("params", ours, [p.detach().double() for p in theirs], torch.float32,
                 are_params=True)


def test_closure_is_called_and_its_loss_returned(backend):
    weight = torch.randn(10, requires_grad=True)
    opt = swd_kernels.AdamS([weight], lr=1e-2, backend=backend)
    before = weight.detach().clone()

    def closure():
        opt.zero_grad()
        loss = (weight ** 2).sum()
        loss.backward()
        return loss

    loss = opt.step(closure)
    assert torch.allclose(loss, (before ** 2).sum())
    assert not torch.equal(weight.detach(), before)
