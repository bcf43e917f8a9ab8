"""CUDA tests of the fast backends on 'cuda' (native, and triton once it runs there): the float64
oracle on the standard problems in fp32/bf16/fp16 with param-dtype and fp32 state, bitwise
reproducibility, no host synchronisation, a whole training step captured in a CUDA graph, a
tensor of more than 2^31 elements, mixed-dtype buckets, found_inf skipping and GradScaler.

Skipped without a GPU; the device machine runs them through the prepared script. Tests take a
``cuda_backend`` argument (not ``backend``, which conftest.py parametrizes over the CPU
backends)."""
from __future__ import annotations

import types

import pytest
import torch

import swd_kernels
from problems import (ONE_GROUP, OPTIMIZERS, SEVERAL_GROUPS, Group, Param,
                      assert_matches_oracle, random_grads, start)

pytestmark = [
    pytest.mark.cuda,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU"),
]

CUDA_BACKENDS = ([b for b in swd_kernels.available_backends("cuda") if b != "torch"]
                 if torch.cuda.is_available() else [])
STEPS = 10

CASES = [
    pytest.param("adams", dict(), id="adams"),
    pytest.param("adams", dict(decay_power=1.0, maximize=True), id="adams-power1-maximize"),
    pytest.param("adams", dict(amsgrad=True), id="amsgrads"),
    pytest.param("adams", dict(amsgrad=True, maximize=True, betas=(0.8, 0.99)),
                 id="amsgrads-maximize"),
    pytest.param("sgds", dict(), id="sgds"),
    pytest.param("sgds", dict(momentum=0.9, dampening=0.5), id="sgds-momentum"),
    pytest.param("sgds", dict(momentum=0.9, nesterov=True, maximize=True),
                 id="sgds-nesterov-maximize"),
    pytest.param("adais", dict(), id="adais"),
]
# AdaiS's beta1_prod cancels in half-precision state (see test_oracle.py): fp32 state only.
HALF_STATE_CASES = [c for c in CASES if c.values[0] != "adais"]
DTYPES = [pytest.param(torch.bfloat16, id="bf16"), pytest.param(torch.float16, id="fp16")]


# ----- running an optimizer on CUDA next to the float64 oracle ------------------------------

class CudaRun:
    """The oracle problem of problems.start (CPU params, oracle, grad generator), with the
    optimizer under test on CUDA copies of the params."""

    def __init__(self, kind, groups, cuda_backend, dtype=torch.float32, state_dtype=None,
                 seed=0, with_oracle=True, **options):
        self.with_oracle = with_oracle  # False: only the optimizer steps (bitwise tests)
        self.cpu = start(kind, groups, "torch", dtype=dtype, state_dtype=state_dtype, seed=seed,
                         **options)
        # .to keeps the strides of dense params (channels_last, transposed)
        self.params = [p.detach().to("cuda").requires_grad_() for p in self.cpu.params]
        remaining = iter(self.params)
        groups_on_cuda = [dict(group, params=[next(remaining) for _ in group["params"]])
                          for group in self.cpu.optimizer.param_groups]
        self.optimizer = OPTIMIZERS[kind](groups_on_cuda, state_dtype=state_dtype,
                                          backend=cuda_backend)

    def step(self, grads=None):
        grads = random_grads(self.cpu) if grads is None else grads
        for p, g in zip(self.params, grads):
            p.grad = None if g is None else g.to("cuda")
        self.optimizer.step()
        if self.with_oracle:
            self.cpu.oracle.step(grads)
        self.cpu.steps_done += 1
        return self

    def steps(self, count):
        for _ in range(count):
            self.step()
        return self

    def assert_matches_oracle(self):
        host = [p.detach().cpu() for p in self.params]
        state = {h: {k: v.cpu() if torch.is_tensor(v) else v
                     for k, v in self.optimizer.state[p].items()}
                 for h, p in zip(host, self.params) if p in self.optimizer.state}
        optimizer = types.SimpleNamespace(state=state, state_dtype=self.optimizer.state_dtype)
        assert_matches_oracle(types.SimpleNamespace(optimizer=optimizer,
                                                    oracle=self.cpu.oracle, params=host))


def snapshot(optimizer, params):
    """Clones of every param and state tensor (the running sums of exp_avg_sq included)."""
    out = [p.detach().clone() for p in params]
    for p in params:
        for key, value in sorted(optimizer.state.get(p, {}).items()):
            out.append(value.clone())
    return out


def assert_bitwise_equal(a, b):
    assert len(a) == len(b)
    for i, (x, y) in enumerate(zip(a, b)):
        assert x.dtype == y.dtype and x.shape == y.shape, f"tensor #{i}"
        assert torch.equal(x, y), f"tensor #{i} differs (max {(x.double() - y.double()).abs().max()})"


# ----- availability -------------------------------------------------------------------------

def test_native_backend_runs_on_cuda():
    """A GPU machine must run the native CUDA kernels, not silently fall back."""
    from swd_kernels import backends
    assert "native" in CUDA_BACKENDS, backends.unavailable_reason("native", "cuda")


# ----- against the float64 oracle -----------------------------------------------------------

@pytest.mark.parametrize("cuda_backend", CUDA_BACKENDS)
@pytest.mark.parametrize("kind, options", CASES)
@pytest.mark.parametrize("groups", [pytest.param(SEVERAL_GROUPS, id="several_groups"),
                                    pytest.param(ONE_GROUP, id="one_bucket")])
def test_fp32_matches_oracle(cuda_backend, kind, options, groups):
    CudaRun(kind, groups, cuda_backend, seed=10, **options).steps(STEPS).assert_matches_oracle()


@pytest.mark.parametrize("cuda_backend", CUDA_BACKENDS)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("kind, options", HALF_STATE_CASES)
def test_half_matches_rounded_oracle(cuda_backend, kind, options, dtype):
    run = CudaRun(kind, SEVERAL_GROUPS, cuda_backend, dtype=dtype, seed=11, **options)
    run.steps(STEPS).assert_matches_oracle()


@pytest.mark.parametrize("cuda_backend", CUDA_BACKENDS)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("kind, options", CASES)
def test_half_params_fp32_state(cuda_backend, kind, options, dtype):
    run = CudaRun(kind, ONE_GROUP, cuda_backend, dtype=dtype, state_dtype=torch.float32,
                  seed=12, **options)
    run.steps(STEPS).assert_matches_oracle()


MIXED_DTYPES = [
    Group([Param((4097,), 0.5), Param((300,), 2.0, dtype=torch.bfloat16),
           Param((1,), 1.0, dtype=torch.float16), Param((70001,), 1.0, dtype=torch.bfloat16)],
          dict(lr=1e-2, weight_decay=5e-2)),
    Group([Param((2 ** 16 + 3,), 0.3, dtype=torch.bfloat16), Param((33,), 1.0)],
          dict(lr=5e-3, weight_decay=1e-2)),
]


@pytest.mark.parametrize("cuda_backend", CUDA_BACKENDS)
@pytest.mark.parametrize("kind, options", [c for c in CASES if c.id in
                                           ("adams", "amsgrads", "sgds-momentum", "adais")])
def test_mixed_dtype_buckets_share_one_mean(cuda_backend, kind, options):
    """fp32, bf16 and fp16 params in one optimizer: several buckets (reduce per bucket, then
    update per bucket), one global mean."""
    state_dtype = torch.float32 if kind == "adais" else None
    run = CudaRun(kind, MIXED_DTYPES, cuda_backend, state_dtype=state_dtype, seed=13, **options)
    run.steps(STEPS).assert_matches_oracle()


# More tensors than one kernel launch's metadata table holds (native: 224): several launches
# per op, and adam_step's fallback from the single cooperative launch.
MANY_TENSORS = [Group([Param((1 + (i * 797) % 3001,), 0.5 + (i % 7) / 3,
                             missing_grad_every=5 if i % 11 == 0 else 0) for i in range(300)],
                      dict(lr=1e-2, weight_decay=5e-2))]


@pytest.mark.parametrize("cuda_backend", CUDA_BACKENDS)
@pytest.mark.parametrize("kind, options", [c for c in CASES if c.id in
                                           ("adams", "amsgrads", "sgds-momentum", "adais")])
def test_many_tensors_match_oracle(cuda_backend, kind, options):
    CudaRun(kind, MANY_TENSORS, cuda_backend, seed=14, **options).steps(5).assert_matches_oracle()


# ----- determinism --------------------------------------------------------------------------

BIG_GROUP = [Group([Param((1_000_003,), 1.0), Param((129, 257), 2.0),
                    Param((64, 3, 7, 7), 0.5, channels_last=True), Param((1,), 1.0)],
                   dict(lr=1e-2, weight_decay=5e-2))]


@pytest.mark.parametrize("cuda_backend", CUDA_BACKENDS)
@pytest.mark.parametrize("kind, options", [c for c in CASES if c.id in
                                           ("adams", "amsgrads", "adais")])
@pytest.mark.parametrize("dtype", [pytest.param(torch.float32, id="fp32"), *DTYPES])
def test_two_runs_are_bitwise_identical(cuda_backend, kind, options, dtype):
    """The reduction has a fixed order (no float atomics): identical inputs, identical bits."""
    state_dtype = torch.float32 if kind == "adais" else None
    results = []
    for _ in range(2):
        run = CudaRun(kind, BIG_GROUP, cuda_backend, dtype=dtype, state_dtype=state_dtype,
                      seed=15, with_oracle=False, **options).steps(3)
        results.append(snapshot(run.optimizer, run.params))
    assert_bitwise_equal(*results)


@pytest.mark.parametrize("dtype, state_dtype", [
    pytest.param(torch.float32, None, id="fp32"),
    # 16-bit params with 32-bit state: packs of 8 elements, 16 bytes of param, 32 of state
    pytest.param(torch.bfloat16, torch.float32, id="bf16-fp32_state")])
@pytest.mark.parametrize("amsgrad", [False, True], ids=["adams", "amsgrads"])
def test_native_single_launch_equals_reduce_then_update(amsgrad, dtype, state_dtype,
                                                        monkeypatch):
    """adam_step's cooperative launch and its fallback (adam_reduce + adam_update) share their
    device code and summation order: the same bits."""
    if "native" not in CUDA_BACKENDS:
        pytest.skip("native CUDA kernels not built")
    results = []
    for cooperative in (True, False):
        if not cooperative:
            monkeypatch.setenv("SWD_KERNELS_NO_COOPERATIVE", "1")
        run = CudaRun("adams", BIG_GROUP, "native", dtype=dtype, state_dtype=state_dtype,
                      seed=16, with_oracle=False, amsgrad=amsgrad).steps(3)
        results.append(snapshot(run.optimizer, run.params))
    assert_bitwise_equal(*results)


# ----- layouts the kernels special-case: empty tensors, unaligned data, float64 -------------

EDGE_KINDS = [pytest.param("adams", dict(), id="adams"),
              pytest.param("adams", dict(amsgrad=True), id="amsgrads"),
              pytest.param("sgds", dict(momentum=0.9), id="sgds-momentum"),
              pytest.param("adais", dict(), id="adais")]
EDGE_SIZES = (5000, 0, 4097, 1, 2 ** 16 + 3)


def _edge_run(kind, options, dtype, unaligned, backend="native", steps=3):
    """Params (one of them empty) and grads of fixed random values, in one bucket; with
    `unaligned`, params and grads sit one element into their storage, so no 16-byte pack
    load fits them and the kernels take their element-wise path."""
    generator = torch.Generator(device="cuda").manual_seed(5)

    def place(values):
        if not unaligned:
            return values.clone()
        storage = torch.empty(values.numel() + 1, dtype=dtype, device="cuda")
        return storage[1:].copy_(values)

    values = [torch.randn(n, device="cuda", generator=generator).to(dtype) for n in EDGE_SIZES]
    grads = [[torch.randn(n, device="cuda", generator=generator).to(dtype) for n in EDGE_SIZES]
             for _ in range(steps)]
    params = [place(v).requires_grad_() for v in values]
    optimizer = OPTIMIZERS[kind](params, lr=1e-2, weight_decay=0.1, backend=backend, **options)
    for step_grads in grads:
        for p, g in zip(params, step_grads):
            p.grad = place(g)
        optimizer.step()
    return optimizer, params


@pytest.mark.parametrize("cooperative", [True, False], ids=["cooperative", "two_ops"])
@pytest.mark.parametrize("kind, options", EDGE_KINDS)
def test_unaligned_tensors_equal_aligned_bitwise(kind, options, cooperative, monkeypatch):
    """The element-wise path (data not 16-byte aligned) sums and updates in the same order as
    the pack loads: the same bits. A 0-element tensor in the bucket owns no chunk but still
    counts its step."""
    if "native" not in CUDA_BACKENDS:
        pytest.skip("native CUDA kernels not built")
    if not cooperative:
        monkeypatch.setenv("SWD_KERNELS_NO_COOPERATIVE", "1")
    results = []
    for unaligned in (False, True):
        optimizer, params = _edge_run(kind, options, torch.float32, unaligned)
        assert params[0].data_ptr() % 16 == (4 if unaligned else 0)
        results.append(snapshot(optimizer, params))
        assert all(optimizer.state[p]["step"].item() == 3 for p in params)
    assert_bitwise_equal(*results)


@pytest.mark.parametrize("dtype", [pytest.param(torch.float32, id="fp32"),
                                   pytest.param(torch.float64, id="fp64")])
@pytest.mark.parametrize("kind, options", EDGE_KINDS)
def test_native_matches_torch_backend_with_empty_tensor(kind, options, dtype):
    """The native kernels next to the reference backend on the same GPU (both fp32 math),
    with a 0-element param in the bucket, and float64 params (native on CUDA only)."""
    if "native" not in CUDA_BACKENDS:
        pytest.skip("native CUDA kernels not built")
    native, native_params = _edge_run(kind, options, dtype, unaligned=False)
    torch_, torch_params = _edge_run(kind, options, dtype, unaligned=False, backend="torch")
    for i, (p, q) in enumerate(zip(native_params, torch_params)):
        torch.testing.assert_close(p, q, rtol=1e-5, atol=1e-6, msg=f"param #{i}")
        for key, value in torch_.state[q].items():
            torch.testing.assert_close(native.state[p][key], value, rtol=1e-5, atol=1e-6,
                                       msg=f"param #{i} state {key!r}")


# ----- no host synchronisation, CUDA graphs -------------------------------------------------

def _optimizer(kind, params, cuda_backend, lr):
    if kind == "amsgrads":
        return swd_kernels.AMSGradS(params, lr=lr, weight_decay=0.1, backend=cuda_backend)
    if kind == "sgds":
        return swd_kernels.SGDS(params, lr=lr, momentum=0.9, weight_decay=0.1,
                                backend=cuda_backend)
    return OPTIMIZERS[kind](params, lr=lr, weight_decay=0.1, backend=cuda_backend)


@pytest.mark.parametrize("cuda_backend", CUDA_BACKENDS)
@pytest.mark.parametrize("kind", ["adams", "amsgrads", "sgds", "adais"])
def test_step_never_synchronizes(cuda_backend, kind):
    params = [torch.randn(5000, device="cuda", requires_grad=True),
              torch.randn(33, 17, device="cuda", requires_grad=True)]
    optimizer = _optimizer(kind, params, cuda_backend, torch.tensor(1e-3, device="cuda"))
    for p in params:
        p.grad = torch.randn_like(p)
    optimizer.step()  # state creation
    grad_scale = torch.full((1,), 4.0, device="cuda")
    found_inf = torch.zeros((1,), device="cuda")
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        optimizer.step()
        optimizer.step(grad_scale=grad_scale, found_inf=found_inf)
    finally:
        torch.cuda.set_sync_debug_mode(0)
    torch.cuda.synchronize()
    assert all(s["step"].item() == 3 for s in optimizer.state.values())


def _model():
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(64, 256), torch.nn.GELU(),
                               torch.nn.Linear(256, 10)).cuda()


@pytest.mark.parametrize("cuda_backend", CUDA_BACKENDS)
@pytest.mark.parametrize("kind", ["adams", "amsgrads", "sgds", "adais"])
def test_cuda_graph_replays_equal_eager_steps(cuda_backend, kind):
    """Forward, backward and the step with a tensor lr (changed between steps) captured once
    and replayed 10 times end where 10 eager steps end."""
    warmup, replays = 3, 10
    generator = torch.Generator(device="cuda").manual_seed(1)
    data = [(torch.randn(32, 64, device="cuda", generator=generator),
             torch.randn(32, 10, device="cuda", generator=generator))
            for _ in range(warmup + replays)]
    schedule = [1e-2 * 0.9 ** i for i in range(warmup + replays)]
    loss_fn = torch.nn.MSELoss()

    eager_model = _model()
    eager_lr = torch.tensor(schedule[0], device="cuda")
    eager = _optimizer(kind, eager_model.parameters(), cuda_backend, eager_lr)
    for (x, y), lr in zip(data, schedule):
        eager_lr.fill_(lr)
        eager.zero_grad(set_to_none=True)
        loss_fn(eager_model(x), y).backward()
        eager.step()

    model = _model()
    lr_tensor = torch.tensor(schedule[0], device="cuda")
    optimizer = _optimizer(kind, model.parameters(), cuda_backend, lr_tensor)
    static_x, static_y = data[0][0].clone(), data[0][1].clone()
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):  # warm-up before capture, as torch.cuda.graphs asks
        for (x, y), lr in zip(data[:warmup], schedule):
            lr_tensor.fill_(lr)
            optimizer.zero_grad(set_to_none=True)
            loss_fn(model(x), y).backward()
            optimizer.step()
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    optimizer.zero_grad(set_to_none=True)
    with torch.cuda.graph(graph):
        loss_fn(model(static_x), static_y).backward()
        optimizer.step()
    for (x, y), lr in zip(data[warmup:], schedule[warmup:]):
        static_x.copy_(x)
        static_y.copy_(y)
        lr_tensor.fill_(lr)
        graph.replay()
    torch.cuda.synchronize()
    for p, q in zip(model.parameters(), eager_model.parameters()):
        torch.testing.assert_close(p, q)
    for p, q in zip(model.parameters(), eager_model.parameters()):
        for key, value in optimizer.state[p].items():
            torch.testing.assert_close(value, eager.state[q][key], msg=f"state {key!r}")


# ----- beyond 32-bit indexing ---------------------------------------------------------------

@pytest.mark.parametrize("cuda_backend", CUDA_BACKENDS)
@pytest.mark.parametrize("amsgrad", [False, True], ids=["adams", "amsgrads"])
def test_tensor_beyond_2_pow_31_elements(cuda_backend, amsgrad):
    """A bf16 param of 2^31 + 8 elements, one step in closed form: grads are +-0.5, so
    v_bar = 0.25 exactly, decay = 1 - lr*wd/sqrt(v_bar) = 0.6 and every element moves to
    0.6*p - 0.1*sign(g). Checked at both ends and across the 2^31 boundary."""
    n = 2 ** 31 + 8
    needed = (6 if amsgrad else 5) * 2 * n + 2 ** 30
    free, _ = torch.cuda.mem_get_info()
    if free < needed:
        pytest.skip(f"needs {needed / 2 ** 30:.0f} GiB of free GPU memory, "
                    f"{free / 2 ** 30:.0f} GiB free")
    generator = torch.Generator(device="cuda").manual_seed(2)
    p = torch.randn(n, dtype=torch.bfloat16, device="cuda", generator=generator)
    p.requires_grad_()
    g = torch.empty(n, dtype=torch.bfloat16, device="cuda").bernoulli_(0.5, generator=generator)
    g.mul_(2).sub_(1).mul_(0.5)  # +-0.5
    slices = [slice(0, 2 ** 20), slice(2 ** 31 - 2 ** 20, n), slice(n - 8, n)]
    before = [p.detach()[s].float().clone() for s in slices]
    p.grad = g
    optimizer = swd_kernels.AdamS([p], lr=0.1, weight_decay=2.0, amsgrad=amsgrad,
                                  backend=cuda_backend)
    optimizer.step()
    for s, p0 in zip(slices, before):
        expected = (0.6 * p0 - 0.1 * torch.sign(g[s].float())).to(torch.bfloat16)
        torch.testing.assert_close(p.detach()[s].float(), expected.float(), rtol=2 ** -7,
                                   atol=1e-3)
        state = optimizer.state[p]
        torch.testing.assert_close(state["exp_avg"][s].float(), 0.1 * g[s].float(),
                                   rtol=2 ** -7, atol=0)
    assert optimizer.state[p]["step"].item() == 1
    del p, g, optimizer
    torch.cuda.empty_cache()


# ----- AMP: found_inf and GradScaler --------------------------------------------------------

@pytest.mark.parametrize("cuda_backend", CUDA_BACKENDS)
@pytest.mark.parametrize("kind", ["adams", "amsgrads", "sgds", "adais"])
def test_found_inf_skips_the_step_bitwise(cuda_backend, kind):
    """A step with found_inf != 0 changes nothing (params, state, steps, v_sums), so step,
    skipped step, step equals step, step."""
    def run(with_skipped_step):
        generator = torch.Generator(device="cuda").manual_seed(3)
        params = [torch.randn(n, device="cuda", generator=generator).requires_grad_()
                  for n in (40_000, 1, 4097)]
        grads = [[torch.randn(p.shape, device="cuda", generator=generator) for p in params]
                 for _ in range(3)]
        optimizer = _optimizer(kind, params, cuda_backend, 1e-2)
        scale = torch.full((1,), 8.0, device="cuda")
        for i, step_grads in enumerate(grads):
            for p, g in zip(params, step_grads):
                p.grad = g * 8
            if i == 1:
                if not with_skipped_step:
                    continue
                before = snapshot(optimizer, params)
                optimizer.step(grad_scale=scale, found_inf=torch.ones((1,), device="cuda"))
                assert_bitwise_equal(snapshot(optimizer, params), before)
                continue
            optimizer.step(grad_scale=scale, found_inf=torch.zeros((1,), device="cuda"))
        return snapshot(optimizer, params)

    assert_bitwise_equal(run(True), run(False))


@pytest.mark.parametrize("cuda_backend", CUDA_BACKENDS)
@pytest.mark.parametrize("kind", ["adams", "amsgrads", "adais"])
def test_grad_scaler_end_to_end(cuda_backend, kind):
    """Training with torch.amp.GradScaler: an overflowing first step is skipped (nothing
    moves, the scale backs off), then the steps equal unscaled training (the scales are powers
    of two, so scaled grads unscale exactly)."""
    generator = torch.Generator(device="cuda").manual_seed(4)
    data = [(torch.randn(32, 64, device="cuda", generator=generator),
             torch.randn(32, 10, device="cuda", generator=generator)) for _ in range(5)]
    loss_fn = torch.nn.MSELoss()

    plain_model = _model()
    plain = _optimizer(kind, plain_model.parameters(), cuda_backend, 1e-2)
    for x, y in data[1:]:
        plain.zero_grad()
        loss_fn(plain_model(x), y).backward()
        plain.step()

    model = _model()
    optimizer = _optimizer(kind, model.parameters(), cuda_backend, 1e-2)
    scaler = torch.amp.GradScaler("cuda", init_scale=2.0 ** 120, growth_interval=1000)
    initial = [p.detach().clone() for p in model.parameters()]
    for i, (x, y) in enumerate(data):
        optimizer.zero_grad()
        loss = loss_fn(model(x), y)
        if i == 0:
            loss = loss * 2.0 ** 30  # overflows the scaled backward: inf grads, step skipped
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
        if i == 0:
            assert scaler.get_scale() < 2.0 ** 120
            for p, p0 in zip(model.parameters(), initial):
                assert torch.equal(p, p0)
            assert all(s["step"].item() == 0 for s in optimizer.state.values())
            scaler.update(2.0 ** 10)  # a moderate power of two from here on
    for p, q in zip(model.parameters(), plain_model.parameters()):
        torch.testing.assert_close(p, q, rtol=1e-5, atol=1e-6)
