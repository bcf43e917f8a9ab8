"""torch.compile traces through a whole training step (forward, backward, opt.step()) thanks
to the registered ops' fake implementations, and gives eager's params."""
from __future__ import annotations

import copy

import pytest
import torch

import swd_kernels

MAKERS = {
    "adams": lambda ps, b: swd_kernels.AdamS(ps, lr=1e-2, weight_decay=5e-2, backend=b),
    "sgds": lambda ps, b: swd_kernels.SGDS(ps, lr=1e-2, momentum=0.9, weight_decay=1e-2,
                                           backend=b),
    "adais": lambda ps, b: swd_kernels.AdaiS(ps, lr=1e-2, weight_decay=1e-2, backend=b),
    # clipping with the reduction's norm, and with a norm pass of its own
    "adams-clipped": lambda ps, b: swd_kernels.AdamS(ps, lr=1e-2, weight_decay=5e-2,
                                                     max_grad_norm=0.05, backend=b),
    "sgds-clipped": lambda ps, b: swd_kernels.SGDS(ps, lr=1e-2, momentum=0.9,
                                                   weight_decay=1e-2, max_grad_norm=0.05,
                                                   backend=b),
}


@pytest.mark.parametrize("family", MAKERS)
def test_compiled_training_step_matches_eager(backend, family):
    torch._dynamo.reset()
    torch.manual_seed(0)
    eager_model = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.Tanh(),
                                      torch.nn.Linear(16, 2))
    compiled_model = copy.deepcopy(eager_model)
    eager_opt = MAKERS[family](list(eager_model.parameters()), backend)
    compiled_opt = MAKERS[family](list(compiled_model.parameters()), backend)
    generator = torch.Generator().manual_seed(1)
    batches = [(torch.randn(4, 8, generator=generator), torch.randn(4, 2, generator=generator))
               for _ in range(3)]

    def train_step(model, opt, x, y):
        opt.zero_grad()
        loss = torch.nn.functional.mse_loss(model(x), y)
        loss.backward()
        opt.step()
        return loss

    initial = [p.detach().clone() for p in eager_model.parameters()]
    compiled_step = torch.compile(train_step, backend="aot_eager")
    for x, y in batches:
        train_step(eager_model, eager_opt, x, y)
        compiled_step(compiled_model, compiled_opt, x, y)
    for a, b in zip(eager_model.parameters(), compiled_model.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-7)
    assert all(not torch.equal(a, b) for a, b in zip(compiled_model.parameters(), initial))
    # the stats the compiled step wrote are eager's
    for key, value in eager_opt.stats.items():
        torch.testing.assert_close(compiled_opt.stats[key], value, rtol=1e-6, atol=0)


def test_compiled_step_alone_matches_eager(backend):
    """``torch.compile(opt.step)`` with fullgraph: the step is one graph of custom ops, no
    graph break."""
    torch._dynamo.reset()
    generator = torch.Generator().manual_seed(2)
    eager = [torch.randn(s, generator=generator).requires_grad_() for s in [(4097,), (7, 3)]]
    compiled = [p.detach().clone().requires_grad_() for p in eager]
    eager_opt = swd_kernels.AdamS(eager, lr=1e-2, weight_decay=5e-2, backend=backend)
    compiled_opt = swd_kernels.AdamS(compiled, lr=1e-2, weight_decay=5e-2, backend=backend)
    step = torch.compile(compiled_opt.step, backend="aot_eager", fullgraph=True)
    for _ in range(3):
        for a, b in zip(eager, compiled):
            a.grad = torch.randn(a.shape, generator=generator)
            b.grad = a.grad.clone()
        eager_opt.step()
        step()
    for a, b in zip(eager, compiled):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-7)
