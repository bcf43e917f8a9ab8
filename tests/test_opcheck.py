"""torch.library.opcheck on every op of every available CPU backend namespace (swd_torch,
swd_native once built, swd_triton under the interpreter): schema mutation annotations, fake
implementations and AOT dispatch, with realistic random inputs."""
from __future__ import annotations

import pytest
import torch

from swd_kernels import ops

SHAPES = [(1,), (4097,), (8, 3, 5, 7), (33, 65)]


def _tensors(generator, dtype, scale=1.0, positive=False, fill=None):
    out = []
    for shape in SHAPES:
        x = torch.full(shape, fill) if fill is not None else torch.randn(shape,
                                                                         generator=generator)
        x = (x.abs() if positive else x) * scale
        x = x.to(dtype)
        if len(shape) == 4:
            x = x.contiguous(memory_format=torch.channels_last)
        out.append(x)
    return out


def arguments(op: str, dtype=torch.float32, amsgrad=False, tensor_lr=False, amp=False,
              seed=0) -> dict:
    """Keyword arguments for ``op``: one bucket of random tensors mid-training (steps 1..3)."""
    g = torch.Generator().manual_seed(seed)
    exp_avg_sqs = _tensors(g, dtype, 0.01, positive=True)
    a = dict(
        params=_tensors(g, dtype), grads=_tensors(g, dtype),
        exp_avgs=_tensors(g, dtype, 0.1), exp_avg_sqs=exp_avg_sqs,
        max_exp_avg_sqs=[v * 1.5 for v in exp_avg_sqs] if amsgrad else [],
        beta1_prods=_tensors(g, dtype, fill=0.5), momentum_buffers=_tensors(g, dtype, 0.1),
        state_steps=[torch.tensor(float(i % 3 + 1)) for i in range(len(SHAPES))],
        v_sums=[] if amsgrad else [v.sum(dtype=torch.float64) for v in exp_avg_sqs],
        accum=torch.tensor([0.3 * 4000.0, 4000.0], dtype=torch.float64),
        lr_tensor=torch.tensor(1e-2) if tensor_lr else None, lr=1e-2,
        beta1=0.9, beta2=0.999, beta0=0.1, weight_decay=5e-2, eps=1e-8, decay_power=0.5,
        decay_eps=0.0, amsgrad=amsgrad, maximize=False, momentum=0.9, dampening=0.0,
        nesterov=True,
        grad_scale=torch.tensor(4.0) if amp else None,
        found_inf=torch.tensor(0.0) if amp else None)
    if op == "adai_update":
        a.update(beta2=0.99, eps=1e-3)
    if op == "adam_reduce":
        a["accum"] = torch.zeros(2, dtype=torch.float64)
    return {name: a[name] for name in ops.ARG_NAMES[op]}


VARIANTS = [
    pytest.param(dict(), id="fp32"),
    pytest.param(dict(amsgrad=True, tensor_lr=True), id="amsgrad-tensor_lr"),
    pytest.param(dict(amp=True), id="grad_scale-found_inf"),
    pytest.param(dict(dtype=torch.bfloat16), id="bf16"),
]


@pytest.mark.parametrize("op", list(ops.SCHEMAS))
@pytest.mark.parametrize("variant", VARIANTS)
def test_opcheck(backend, op, variant):
    kwargs = arguments(op, **variant)
    torch.library.opcheck(ops.get(backend, op).default, (), kwargs)
