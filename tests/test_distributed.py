"""Sharded training (DTensor / FSDP2 on CPU with gloo): the global mean spans every rank, so
two ranks holding halves of the parameters step exactly like one process holding them all."""
import os
import tempfile

import pytest
import torch
import torch.multiprocessing as mp

import swd_kernels
from ranks import run_rank, train

WORLD = 2
STEPS = 6


def _full_params_and_grads(seed: int):
    g = torch.Generator().manual_seed(seed)
    # rows divisible by WORLD; the second tensor's grads are much larger, so a per-rank mean
    # (rank 0 and rank 1 see different rows) would give a different decay than the global one
    params = [torch.randn(8, 5, generator=g), torch.randn(6, generator=g)]
    grads = [[torch.randn(8, 5, generator=g) * (1 + 9 * torch.arange(8).view(8, 1)),
              torch.randn(6, generator=g) * 0.01] for _ in range(STEPS)]
    return params, grads


def _single_process(make_optimizer):
    return train(*_full_params_and_grads(0), make_optimizer)


def _make_adams(params):
    return swd_kernels.AdamS(params, lr=0.05, weight_decay=0.5, backend="torch")


def _make_adais(params):
    return swd_kernels.AdaiS(params, lr=0.05, weight_decay=0.5, backend="torch")


MAKERS = {"AdamS": _make_adams, "AdaiS": _make_adais}


def _worker(rank: int, init_file: str, name: str, out_file: str) -> None:
    run_rank(rank, WORLD, init_file, out_file, lambda: _sharded_run(name))


def _sharded_run(name: str) -> list[torch.Tensor]:
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.tensor import Shard, distribute_tensor

    mesh = init_device_mesh("cpu", (WORLD,))
    full, grads = _full_params_and_grads(0)
    params = [torch.nn.Parameter(distribute_tensor(p.clone(), mesh, [Shard(0)]))
              for p in full]
    opt = MAKERS[name](params)
    for step_grads in grads:
        for p, g in zip(params, step_grads):
            p.grad = distribute_tensor(g.clone(), mesh, [Shard(0)])
        opt.step()
    return [p.detach().full_tensor() for p in params]


@pytest.mark.parametrize("name", sorted(MAKERS))
def test_sharded_step_equals_single_process(name):
    with tempfile.TemporaryDirectory() as tmp:
        init_file, out_file = os.path.join(tmp, "init"), os.path.join(tmp, "out.pt")
        mp.spawn(_worker, args=(init_file, name, out_file), nprocs=WORLD, join=True)
        sharded = torch.load(out_file)
    expected = _single_process(MAKERS[name])
    # only the summation order of v_bar differs: fp32 rounding, the suite's fp32 tolerance
    scale = max(w.abs().max().item() for w in expected)
    for got, want in zip(sharded, expected):
        torch.testing.assert_close(got, want, rtol=0, atol=1e-5 * scale)


def test_per_rank_mean_would_be_caught():
    """The data above really distinguishes a global mean from a per-rank one."""
    full, grads = _full_params_and_grads(0)
    halves = []
    for rows in (slice(0, 4), slice(4, 8)):
        params = [torch.nn.Parameter(full[0][rows].clone()),
                  torch.nn.Parameter(full[1][rows.start * 6 // 8:rows.stop * 6 // 8].clone())]
        opt = _make_adams(params)
        for step_grads in grads:
            params[0].grad = step_grads[0][rows].clone()
            params[1].grad = step_grads[1][rows.start * 6 // 8:rows.stop * 6 // 8].clone()
            opt.step()
        halves.append(params[0].detach())
    per_rank = torch.cat(halves)
    expected = _single_process(_make_adams)[0]
    assert (per_rank - expected).abs().max() > 1e-3


def _model():
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(16, 32), torch.nn.ReLU(), torch.nn.Linear(32, 4))


def _train(model, opt, steps=4):
    torch.manual_seed(1)  # the same batches on every rank: FSDP's averaged grad is the local one
    for _ in range(steps):
        model(torch.randn(8, 16)).square().mean().backward()
        opt.step()
        opt.zero_grad()


def _fsdp_worker(rank: int, init_file: str, out_file: str) -> None:
    run_rank(rank, WORLD, init_file, out_file, _fsdp_run)


def _fsdp_run() -> list[torch.Tensor]:
    from torch.distributed.fsdp import fully_shard

    model = _model()
    fully_shard(model)
    _train(model, swd_kernels.AdamS(model.parameters(), lr=1e-2, weight_decay=0.1))
    return [p.detach().full_tensor() for p in model.parameters()]


def test_fsdp2_fully_shard_matches_unsharded():
    with tempfile.TemporaryDirectory() as tmp:
        init_file, out_file = os.path.join(tmp, "init"), os.path.join(tmp, "out.pt")
        mp.spawn(_fsdp_worker, args=(init_file, out_file), nprocs=WORLD, join=True)
        sharded = torch.load(out_file)
    model = _model()
    _train(model, swd_kernels.AdamS(model.parameters(), lr=1e-2, weight_decay=0.1))
    for got, want in zip(sharded, model.parameters()):
        torch.testing.assert_close(got, want.detach(), rtol=0, atol=1e-6)
