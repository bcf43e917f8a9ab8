"""The benchmark's baseline must compute AdamS, or its comparison means nothing: the eager and
compiled per-tensor loops against swd_kernels.AdamS (torch backend) after several steps."""
import pytest
import torch

import swd_kernels
from bench.reference_loop import CompiledReferenceAdamS, ReferenceAdamS


def _params(dtype, seed=0):
    gen = torch.Generator().manual_seed(seed)
    shapes = [(37, 5), (4097,), (3, 4, 5, 6)]
    params = [torch.randn(s, generator=gen).to(dtype) for s in shapes]
    grads = [[torch.randn(s, generator=gen).to(dtype) for s in shapes] for _ in range(4)]
    return params, grads


@pytest.mark.parametrize("loop_class", [ReferenceAdamS, CompiledReferenceAdamS])
@pytest.mark.parametrize("dtype,state_dtype,tol", [
    (torch.float32, None, 1e-5), (torch.bfloat16, torch.float32, 1e-2)])
def test_loop_matches_adams(loop_class, dtype, state_dtype, tol):
    ours, grads = _params(dtype)
    theirs = [p.clone() for p in ours]
    initial = [p.clone() for p in ours]
    hp = dict(lr=1e-2, weight_decay=0.1, state_dtype=state_dtype)
    loop = loop_class(ours, **hp)
    adams = swd_kernels.AdamS(theirs, backend="torch", **hp)
    for step_grads in grads * 3:  # 12 steps, the grads differ between consecutive steps
        for a, b, g in zip(ours, theirs, step_grads):
            a.grad, b.grad = g.clone(), g.clone()
        loop.step()
        adams.step()
    for a, b, a0 in zip(ours, theirs, initial):
        assert (a.float() - a0.float()).abs().max() > 0.05  # 12 steps of lr 1e-2 moved it
        torch.testing.assert_close(a.float(), b.float(), rtol=tol, atol=tol)
        torch.testing.assert_close(loop.state[a]["exp_avg_sq"].float(),
                                   adams.state[b]["exp_avg_sq"].float(), rtol=tol, atol=1e-6)
