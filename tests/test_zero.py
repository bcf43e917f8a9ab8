"""ZeRO-style partitions (``torch.distributed.optim.ZeroRedundancyOptimizer``, CPU, gloo): each
rank's optimizer holds a disjoint subset of the params as plain tensors, so v_bar and the grad
norm must be summed over ``partition_group``; with it, 2 and 3 ranks step like one process, with
and without clipping; without it, the per-rank statistics are caught."""
from __future__ import annotations

import os
import tempfile

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

import swd_kernels
from ranks import run_rank, train

STEPS = 5
# Sizes and grad magnitudes differ per tensor, so each rank's share has its own v_bar and norm.
SHAPES = [(40, 7), (300,), (9, 11), (64,), (5, 5, 3), (1000,)]
GRAD_SCALES = [1.0, 0.01, 3.0, 0.3, 10.0, 0.05]
OPTIMIZERS = {"AdamS": (swd_kernels.AdamS, dict(lr=0.05, weight_decay=0.05)),
              "AdaiS": (swd_kernels.AdaiS, dict(lr=0.05, weight_decay=0.5))}
BACKENDS = swd_kernels.available_backends("cpu")  # triton under the interpreter (conftest)
CONFIGS = [(backend, name, max_norm, partitioned) for backend in BACKENDS
           for name in OPTIMIZERS for max_norm in (None, 1.0) for partitioned in (True, False)]


def _params_and_grads():
    g = torch.Generator().manual_seed(0)
    params = [torch.randn(s, generator=g) for s in SHAPES]
    grads = [[torch.randn(s, generator=g) * k for s, k in zip(SHAPES, GRAD_SCALES)]
             for _ in range(STEPS)]
    return params, grads


def _train(make_optimizer):
    return train(*_params_and_grads(), make_optimizer)


def _worker(rank: int, world: int, init_file: str, out_file: str) -> None:
    run_rank(rank, world, init_file, out_file, _partitioned_runs)


def _partitioned_runs() -> dict:
    from torch.distributed.optim import ZeroRedundancyOptimizer

    results = {}
    for backend, name, max_norm, partitioned in CONFIGS:
        cls, hyper = OPTIMIZERS[name]
        extra = dict(partition_group=dist.group.WORLD) if partitioned else {}
        results[backend, name, max_norm, partitioned] = _train(
            lambda params: ZeroRedundancyOptimizer(
                params, optimizer_class=cls, backend=backend, max_grad_norm=max_norm,
                **hyper, **extra))
    return results


@pytest.fixture(scope="module", params=[2, 3], ids=["2-ranks", "3-ranks"])
def partitioned_runs(request):
    with tempfile.TemporaryDirectory() as tmp:
        init_file, out_file = os.path.join(tmp, "init"), os.path.join(tmp, "out.pt")
        mp.spawn(_worker, args=(request.param, init_file, out_file), nprocs=request.param,
                 join=True)
        return torch.load(out_file)


@pytest.mark.parametrize("max_norm", [None, 1.0], ids=["no-clipping", "clipping"])
@pytest.mark.parametrize("name", sorted(OPTIMIZERS))
def test_partitioned_ranks_step_like_one_process(partitioned_runs, backend, name, max_norm):
    cls, hyper = OPTIMIZERS[name]
    expected = _train(lambda params: cls(params, backend=backend, max_grad_norm=max_norm,
                                         **hyper))
    got = partitioned_runs[backend, name, max_norm, True]
    # only the order in which v_bar's and the norm's sums are added differs: fp32 rounding
    scale = max(w.abs().max().item() for w in expected)
    for g, w in zip(got, expected):
        torch.testing.assert_close(g, w, rtol=0, atol=1e-5 * scale)
    # and without the keyword each rank's own statistics show
    per_rank = partitioned_runs[backend, name, max_norm, False]
    assert max((g - w).abs().max().item() for g, w in zip(per_rank, expected)) > 1e-3 * scale


def test_partition_group_is_refused_for_sharded_params():
    """DTensor params already sum over their mesh; both at once is a mistake to name."""
    pytest.importorskip("torch.distributed.tensor")
    with tempfile.TemporaryDirectory() as tmp:
        dist.init_process_group("gloo", init_method=f"file://{tmp}/init", rank=0,
                                world_size=1)
        try:
            from torch.distributed.device_mesh import init_device_mesh
            from torch.distributed.tensor import Shard, distribute_tensor
            mesh = init_device_mesh("cpu", (1,))
            p = torch.nn.Parameter(distribute_tensor(torch.randn(4), mesh, [Shard(0)]))
            with pytest.raises(ValueError, match="partition_group"):
                swd_kernels.AdamS([p], partition_group=dist.group.WORLD)
        finally:
            dist.destroy_process_group()
