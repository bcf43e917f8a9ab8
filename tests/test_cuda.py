"""CUDA tests of the fast backends on 'cuda' (native and triton): the float64 oracle on the
standard problems in fp32/bf16/fp16 with param-dtype and fp32 state, bitwise reproducibility,
the native cooperative launch (seen in the profiler) against its two-op fallback, unaligned and
empty tensors, lr tensors of every float dtype, no host synchronisation, whole training steps
captured in a CUDA graph, steps on other streams and two optimizers on two streams at once, a
tensor of more than 2^31 elements, found_inf and GradScaler, torch's fused AdamW, fused
clipping and ``optimizer.stats``, and Triton's one-launch step.

Skipped without a GPU; the device machine runs them through bench/device_check.sh, which splits
them by ``-k triton`` / ``-k "not triton"``: a Triton-only test has "triton" in its name. Tests
take a ``cuda_backend`` argument (not ``backend``, which conftest.py parametrizes over the CPU
backends). Helpers of other test files are imported inside the tests that use them, so a change
there fails those tests, never the collection of this file."""
from __future__ import annotations

import math
import os
import subprocess
import sys
import types

import pytest
import torch

import swd_kernels
from problems import (ONE_GROUP, OPTIMIZERS, SEVERAL_GROUPS, Group, Param,
                      assert_matches_oracle, random_grads, start)
from swd_kernels import ops
from tolerance import assert_close

pytestmark = [
    pytest.mark.cuda,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU"),
]

# the fast backends, and every backend (torch's too) where a test holds all of them to torch
CUDA_BACKENDS = ([b for b in swd_kernels.available_backends("cuda") if b != "torch"]
                 if torch.cuda.is_available() else [])
ALL_CUDA_BACKENDS = swd_kernels.available_backends("cuda") if torch.cuda.is_available() else []
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
# one case per kernel family
FAMILY_CASES = [c for c in CASES if c.id in ("adams", "amsgrads", "sgds-momentum", "adais")]
DTYPES = [pytest.param(torch.bfloat16, id="bf16"), pytest.param(torch.float16, id="fp16")]
GROUPINGS = [pytest.param(SEVERAL_GROUPS, id="several_groups"),  # adam_reduce + an update
             pytest.param(ONE_GROUP, id="one_bucket")]           # adam_step

# The native CUDA kernels' names, as the profiler shows them (csrc/cuda): the cooperative step,
# and the kernels of its fallback, adam_reduce + adam_update.
COOPERATIVE_KERNEL = "adam_step_kernel"
FALLBACK_KERNELS = ("reduce_chunks_kernel", "finalize_kernel", "update_kernel")
NATIVE_CHUNK = 16384  # elements per native chunk (csrc/cuda/tensor_table.cuh kChunk)


def require_native():
    if "native" not in CUDA_BACKENDS:
        pytest.skip("native CUDA kernels not built")


def require_fused_clipping():
    """Skip where this build has no ``max_grad_norm=`` / ``optimizer.stats`` yet."""
    try:
        probe = swd_kernels.AdamS([torch.zeros(1, requires_grad=True)], max_grad_norm=1.0,
                                  backend="torch")
    except TypeError as error:
        pytest.skip(f"no fused clipping in this build: {error}")
    if not hasattr(probe, "stats"):
        pytest.skip("no optimizer.stats in this build")


# ----- running an optimizer on CUDA next to the float64 oracle ------------------------------

class CudaRun:
    """The oracle problem of problems.start (CPU params, oracle, grad generator), with the
    optimizer under test on CUDA copies of the params. ``offset``: every param and grad starts
    that many elements into its buffer (0: freshly allocated, 16-byte aligned).
    ``optimizer_options`` go to the CUDA optimizer only (the oracle does not know them)."""

    def __init__(self, kind, groups, cuda_backend, dtype=torch.float32, state_dtype=None,
                 seed=0, with_oracle=True, offset=0, optimizer_options=None, **options):
        self.with_oracle = with_oracle  # False: only the optimizer steps (bitwise tests)
        self.offset = offset
        self.cpu = start(kind, groups, "torch", dtype=dtype, state_dtype=state_dtype, seed=seed,
                         **options)
        self.params = [self.on_cuda(p.detach()).requires_grad_() for p in self.cpu.params]
        remaining = iter(self.params)
        groups_on_cuda = [dict(group.hyper, params=[next(remaining) for _ in group.params])
                          for group in groups]
        self.optimizer = OPTIMIZERS[kind](groups_on_cuda, state_dtype=state_dtype,
                                          backend=cuda_backend, **options,
                                          **(optimizer_options or {}))

    def on_cuda(self, t: torch.Tensor) -> torch.Tensor:
        """``t`` on the GPU with its strides (a dense layout is kept), ``offset`` elements
        into its buffer."""
        if not self.offset:
            return t.to("cuda")
        buffer = torch.empty(t.numel() + self.offset, dtype=t.dtype, device="cuda")
        return buffer[self.offset:].as_strided(t.shape, t.stride()).copy_(t)

    def load_grads(self, grads):
        for p, g in zip(self.params, grads):
            p.grad = None if g is None else self.on_cuda(g)

    def step(self, grads=None, oracle_grads=None):
        """One step on ``grads`` (default: the problem's next random ones); the oracle steps
        on ``oracle_grads`` when given (e.g. the grads clipped in float64)."""
        grads = random_grads(self.cpu) if grads is None else grads
        self.load_grads(grads)
        self.optimizer.step()
        if self.with_oracle:
            self.cpu.oracle.step(grads if oracle_grads is None else oracle_grads)
        self.cpu.steps_done += 1
        return self

    def steps(self, count):
        for _ in range(count):
            self.step()
        return self

    def snapshot(self):
        return snapshot(self.optimizer, self.params)

    def assert_matches_oracle(self):
        host = [p.detach().cpu() for p in self.params]
        state = {h: {k: v.cpu() if torch.is_tensor(v) else v
                     for k, v in self.optimizer.state[p].items()}
                 for h, p in zip(host, self.params) if p in self.optimizer.state}
        optimizer = types.SimpleNamespace(state=state, state_dtype=self.optimizer.state_dtype)
        assert_matches_oracle(types.SimpleNamespace(optimizer=optimizer,
                                                    oracle=self.cpu.oracle, params=host))


def grads_on_cuda(run: CudaRun, steps: int) -> list[list]:
    """The problem's grads of its first ``steps`` steps, made once on the GPU, so that
    several runs (and streams) can be fed the very same grads."""
    out = []
    for step in range(steps):
        run.cpu.steps_done = step  # which params miss their grad depends on the step
        out.append([None if g is None else g.to("cuda") for g in random_grads(run.cpu)])
    run.cpu.steps_done = 0
    return out


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


def kernel_names(step) -> list[str]:
    """The names of the events torch.profiler saw while ``step()`` ran: among them, every
    CUDA kernel launched (demangled, e.g. "void swd::cuda::...::adam_step_kernel<...>(...)")."""
    from torch.profiler import ProfilerActivity, profile
    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as profiler:
        step()
        torch.cuda.synchronize()
    return [event.name for event in profiler.events()]


def launched(names, kernel) -> int:
    return sum(kernel in name for name in names)


def reduce_then_update(optimizer) -> None:
    """Make ``optimizer`` run adam_step as adam_reduce then adam_update: what the native
    adam_step falls back to (csrc/cuda/adam_step.cu), on the same bucket."""
    call = optimizer._call

    def two_ops(bucket, name, arguments):
        if name != "adam_step":
            return call(bucket, name, arguments)
        call(bucket, "adam_reduce", arguments)
        call(bucket, "adam_update", arguments)

    optimizer._call = two_ops


def run_in_child(function, timeout_s: float, **environment) -> None:
    """Run this module's ``function`` in a fresh Python process with ``environment`` added:
    for settings read once per process, and for code that can hang (a hang then fails one
    test instead of stopping the whole run)."""
    tests = os.path.dirname(os.path.abspath(__file__))
    env = dict(os.environ, **environment)
    env["PYTHONPATH"] = os.pathsep.join(
        p for p in (os.path.dirname(tests), tests, os.environ.get("PYTHONPATH")) if p)
    command = [sys.executable, "-c", f"import test_cuda; test_cuda.{function.__name__}()"]
    try:
        done = subprocess.run(command, cwd=tests, env=env, capture_output=True, text=True,
                              timeout=timeout_s)
    except subprocess.TimeoutExpired as expired:
        pytest.fail(f"{function.__name__} did not finish within {timeout_s} s\n"
                    f"{expired.stdout or ''}{expired.stderr or ''}")
    assert done.returncode == 0, (f"{function.__name__} failed in its child process:\n"
                                  f"{done.stdout[-3000:]}{done.stderr[-6000:]}")


# ----- availability -------------------------------------------------------------------------

def test_native_backend_runs_on_cuda():
    """A GPU machine must run the native CUDA kernels, not silently fall back."""
    from swd_kernels import backends
    assert "native" in CUDA_BACKENDS, backends.unavailable_reason("native", "cuda")


def test_triton_backend_runs_on_cuda():
    from swd_kernels import backends
    assert "triton" in CUDA_BACKENDS, backends.unavailable_reason("triton", "cuda")


# ----- against the float64 oracle -----------------------------------------------------------

@pytest.mark.parametrize("cuda_backend", CUDA_BACKENDS)
@pytest.mark.parametrize("kind, options", CASES)
@pytest.mark.parametrize("groups", GROUPINGS)
def test_fp32_matches_oracle(cuda_backend, kind, options, groups):
    CudaRun(kind, groups, cuda_backend, seed=10, **options).steps(STEPS).assert_matches_oracle()


@pytest.mark.parametrize("cuda_backend", CUDA_BACKENDS)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("kind, options", HALF_STATE_CASES)
@pytest.mark.parametrize("groups", GROUPINGS)
def test_half_matches_rounded_oracle(cuda_backend, kind, options, dtype, groups):
    """Half-precision state (params' dtype), both paths: the oracle check also holds each
    running sum to the sum of the stored exp_avg_sq, which the update ops set."""
    run = CudaRun(kind, groups, cuda_backend, dtype=dtype, seed=11, **options)
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
@pytest.mark.parametrize("kind, options", FAMILY_CASES)
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
@pytest.mark.parametrize("kind, options", FAMILY_CASES)
def test_many_tensors_match_oracle(cuda_backend, kind, options):
    CudaRun(kind, MANY_TENSORS, cuda_backend, seed=14, **options).steps(5).assert_matches_oracle()


# ----- determinism, and the native cooperative launch ---------------------------------------

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
        results.append(run.snapshot())
    assert_bitwise_equal(*results)


def big_bucket_sizes() -> list[int]:
    """One bucket whose cooperative grid gets several chunks per block: the grid has at most
    4 blocks of 512 threads per SM (2048 threads), so 4 chunks per block need
    4 x 4 x SMs chunks (34.6M elements on an H200's 132 SMs), then tensors that end
    mid-chunk, one of a single element."""
    sms = torch.cuda.get_device_properties(0).multi_processor_count
    return [4 * 4 * sms * NATIVE_CHUNK + 4097, 2 ** 16 + 3, 4097, 1]


@pytest.mark.parametrize("dtype, state_dtype", [
    pytest.param(torch.float32, None, id="fp32"),
    # 16-bit params with 32-bit state: packs of 8 elements, 16 bytes of param, 32 of state
    pytest.param(torch.bfloat16, torch.float32, id="bf16-fp32_state"),
    # 16-bit state: the step also sums the stored v into the running sums (phase 5)
    pytest.param(torch.bfloat16, None, id="bf16")])
@pytest.mark.parametrize("amsgrad", [False, True], ids=["adams", "amsgrads"])
def test_native_cooperative_step_runs_and_equals_its_fallback(amsgrad, dtype, state_dtype):
    """adam_step on CUDA is one cooperative launch: the profiler sees adam_step_kernel and none
    of adam_reduce's or adam_update's kernels (no silent fallback). Its fallback, adam_reduce
    then adam_update on the same bucket, runs those kernels and gives the same bits, on a
    bucket where every block of the persistent grid walks several chunks."""
    require_native()
    sizes = big_bucket_sizes()
    generator = torch.Generator(device="cuda").manual_seed(16)
    values = [torch.randn(n, device="cuda", generator=generator).to(dtype) for n in sizes]
    grads = [[torch.randn(n, device="cuda", generator=generator).to(dtype) for n in sizes]
             for _ in range(3)]
    results = {}
    for path in ("cooperative", "fallback"):
        params = [v.clone().requires_grad_() for v in values]
        optimizer = swd_kernels.AdamS(params, lr=1e-2, weight_decay=5e-2, amsgrad=amsgrad,
                                      state_dtype=state_dtype, backend="native")
        if path == "fallback":
            reduce_then_update(optimizer)
        for step, step_grads in enumerate(grads):
            for p, g in zip(params, step_grads):
                p.grad = g
            if step < len(grads) - 1:
                optimizer.step()
                continue
            names = kernel_names(optimizer.step)  # the last step, with the state in place
            seen = {k: launched(names, k) for k in (COOPERATIVE_KERNEL, *FALLBACK_KERNELS)}
            if path == "cooperative":
                assert seen[COOPERATIVE_KERNEL] >= 1 and seen["reduce_chunks_kernel"] == 0, (
                    f"adam_step did not run as one cooperative launch: kernels seen {seen}; "
                    f"events {names[:40]}")
            else:
                assert seen[COOPERATIVE_KERNEL] == 0 and seen["reduce_chunks_kernel"] >= 1 \
                    and seen["update_kernel"] >= 1, f"kernels seen {seen}"
        results[path] = snapshot(optimizer, params)
        del params, optimizer
    assert_bitwise_equal(results["cooperative"], results["fallback"])


def _child_no_cooperative_switch():
    """In a process started with SWD_KERNELS_NO_COOPERATIVE=1 (read once per process),
    adam_step runs its two ops, and they still match the oracle."""
    run = CudaRun("adams", ONE_GROUP, "native", seed=17).steps(2)
    names = kernel_names(run.step)
    assert launched(names, COOPERATIVE_KERNEL) == 0 and launched(names, "reduce_chunks_kernel"), (
        f"SWD_KERNELS_NO_COOPERATIVE=1 did not switch the cooperative launch off: "
        f"{[n for n in names if 'kernel' in n][:20]}")
    run.assert_matches_oracle()


def test_native_no_cooperative_switch():
    require_native()
    run_in_child(_child_no_cooperative_switch, timeout_s=90, SWD_KERNELS_NO_COOPERATIVE="1")


# ----- layouts the kernels special-case: empty tensors, unaligned data, float64 -------------

EDGE_KINDS = [pytest.param("adams", dict(), id="adams"),
              pytest.param("adams", dict(amsgrad=True), id="amsgrads"),
              pytest.param("sgds", dict(momentum=0.9), id="sgds-momentum"),
              pytest.param("adais", dict(), id="adais")]
EDGE_SIZES = (5000, 0, 4097, 1, 2 ** 16 + 3)


def _edge_run(kind, options, dtype, unaligned, backend="native", steps=3, two_ops=False):
    """Params (one of them empty) and grads of fixed random values, in one bucket; with
    `unaligned`, params and grads sit one element into their storage, so no 16-byte pack
    load fits them and the kernels take their element-wise path. `two_ops`: adam_step runs
    as adam_reduce + adam_update (the native fallback)."""
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
    if two_ops:
        reduce_then_update(optimizer)
    for step_grads in grads:
        for p, g in zip(params, step_grads):
            p.grad = place(g)
        optimizer.step()
    return optimizer, params


@pytest.mark.parametrize("two_ops", [False, True], ids=["adam_step", "reduce_then_update"])
@pytest.mark.parametrize("kind, options", EDGE_KINDS)
def test_unaligned_tensors_equal_aligned_bitwise(kind, options, two_ops):
    """The native element-wise path (data not 16-byte aligned) sums and updates in the same
    order as the pack loads: the same bits. A 0-element tensor in the bucket owns no chunk but
    still counts its step."""
    require_native()
    results = []
    for unaligned in (False, True):
        optimizer, params = _edge_run(kind, options, torch.float32, unaligned, two_ops=two_ops)
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
    require_native()
    native, native_params = _edge_run(kind, options, dtype, unaligned=False)
    torch_, torch_params = _edge_run(kind, options, dtype, unaligned=False, backend="torch")
    for i, (p, q) in enumerate(zip(native_params, torch_params)):
        torch.testing.assert_close(p, q, rtol=1e-5, atol=1e-6, msg=f"param #{i}")
        for key, value in torch_.state[q].items():
            torch.testing.assert_close(native.state[p][key], value, rtol=1e-5, atol=1e-6,
                                       msg=f"param #{i} state {key!r}")


ODD_OFFSET_DTYPES = [pytest.param(torch.float32, None, id="fp32"),
                     pytest.param(torch.bfloat16, None, id="bf16"),
                     pytest.param(torch.bfloat16, torch.float32, id="bf16-fp32_state")]


@pytest.mark.parametrize("cuda_backend", CUDA_BACKENDS)
@pytest.mark.parametrize("dtype, state_dtype", ODD_OFFSET_DTYPES)
@pytest.mark.parametrize("kind, options", FAMILY_CASES)
@pytest.mark.parametrize("groups", GROUPINGS)
def test_views_at_odd_offsets_match_oracle(cuda_backend, kind, options, dtype, state_dtype,
                                           groups):
    """Params and grads that start one element into their buffers (4 bytes in fp32, 2 in
    bf16: no vector load fits, Triton's pointer table is not 16-byte aligned) step as the
    oracle says."""
    if kind == "adais" and dtype != torch.float32 and state_dtype is None:
        pytest.skip("AdaiS keeps fp32 state for half params (see HALF_STATE_CASES)")
    run = CudaRun(kind, groups, cuda_backend, dtype=dtype, state_dtype=state_dtype, seed=18,
                  offset=1, **options)
    assert all(p.data_ptr() % 16 != 0 for p in run.params)
    run.steps(STEPS).assert_matches_oracle()


# ----- lr: a tensor of any float dtype, a CPU tensor ----------------------------------------

# lrs exactly representable in bf16, fp16, fp32 and fp64: a tensor lr of any of them is the
# float lr itself, so the runs must agree bit for bit
EXACT_LRS = (2.0 ** -7, 3 * 2.0 ** -9, 2.0 ** -6)


def with_exact_lrs(groups):
    return [Group(g.params, dict(g.hyper, lr=lr)) for g, lr in zip(groups, EXACT_LRS)]


LR_CASES = [pytest.param("adams", dict(), ONE_GROUP, id="adams-one_bucket"),
            pytest.param("adams", dict(), SEVERAL_GROUPS, id="adams-several_groups"),
            pytest.param("adams", dict(amsgrad=True), ONE_GROUP, id="amsgrads-one_bucket"),
            pytest.param("sgds", dict(momentum=0.9), SEVERAL_GROUPS, id="sgds-momentum"),
            pytest.param("adais", dict(), SEVERAL_GROUPS, id="adais")]


@pytest.mark.parametrize("cuda_backend", CUDA_BACKENDS)
@pytest.mark.parametrize("lr_dtype", [pytest.param(torch.bfloat16, id="bf16"),
                                      pytest.param(torch.float16, id="fp16"),
                                      pytest.param(torch.float64, id="fp64")])
@pytest.mark.parametrize("kind, options, groups", LR_CASES)
def test_lr_tensor_of_any_float_dtype(cuda_backend, kind, options, groups, lr_dtype):
    """A 0-dim device lr in bf16, fp16 or fp64 steps bitwise like the same float lr, and as
    the oracle says."""
    groups = with_exact_lrs(groups)
    with_tensor = CudaRun(kind, groups, cuda_backend, seed=19, **options)
    for group in with_tensor.optimizer.param_groups:
        group["lr"] = torch.tensor(group["lr"], dtype=lr_dtype, device="cuda")
    with_float = CudaRun(kind, groups, cuda_backend, seed=19, with_oracle=False, **options)
    with_tensor.steps(STEPS)
    with_float.steps(STEPS)
    assert_bitwise_equal(with_tensor.snapshot(), with_float.snapshot())
    with_tensor.assert_matches_oracle()


@pytest.mark.parametrize("cuda_backend", CUDA_BACKENDS)
@pytest.mark.parametrize("kind, options, groups", LR_CASES)
def test_cpu_lr_tensor_with_cuda_params(cuda_backend, kind, options, groups):
    """What the optimizer does today with a CPU lr tensor for CUDA params: it accepts it and
    copies it to the params' device every step (swd_kernels/optim/base.py ``_lr_args``); the
    ops themselves take an lr on the bucket's device only (next test). The steps must be
    bitwise those of the same float lr."""
    groups = with_exact_lrs(groups)
    with_cpu_lr = CudaRun(kind, groups, cuda_backend, seed=20, **options)
    for group in with_cpu_lr.optimizer.param_groups:
        group["lr"] = torch.tensor(group["lr"])
    with_float = CudaRun(kind, groups, cuda_backend, seed=20, with_oracle=False, **options)
    with_cpu_lr.steps(STEPS)
    with_float.steps(STEPS)
    assert_bitwise_equal(with_cpu_lr.snapshot(), with_float.snapshot())
    with_cpu_lr.assert_matches_oracle()


def _on_cuda_but_lr(arguments: dict) -> dict:
    """An op's arguments on the GPU, except lr_tensor, which stays on the CPU."""
    def move(value):
        if torch.is_tensor(value):
            return value.to("cuda")
        if isinstance(value, list):
            return [move(v) for v in value]
        return value
    out = {name: value if name == "lr_tensor" else move(value)
           for name, value in arguments.items()}
    if "accum" in out:  # the contract's four numbers, an earlier bucket's share in them
        out["accum"] = torch.tensor([1200.0, 4000.0, 50.0, 0.5], dtype=torch.float64,
                                    device="cuda")
    return out


@pytest.mark.parametrize("cuda_backend", CUDA_BACKENDS)
@pytest.mark.parametrize("op", ["adam_step", "adam_update", "adai_update", "sgd_update"])
def test_op_with_cpu_lr_tensor_fails_before_writing(cuda_backend, op):
    """An op handed a CPU lr_tensor for CUDA tensors raises an error naming lr_tensor, before
    it writes anything (adam_step: not even its reduction's v_sums and accum)."""
    import op_cases
    case = op_cases.BucketCase(program=(op,), shapes=((1,), (4097,), (33, 65)), lr_tensor=1e-2)
    args = _on_cuda_but_lr(op_cases.make(case).args(op))
    assert args["lr_tensor"].device.type == "cpu"
    tensors = [t for value in args.values() if value is not None
               for t in (value if isinstance(value, list) else [value]) if torch.is_tensor(t)]
    before = [t.clone() for t in tensors]
    with pytest.raises((RuntimeError, ValueError), match="lr_tensor"):
        ops.get(cuda_backend, op)(**args)
    torch.cuda.synchronize()
    assert_bitwise_equal([t.clone() for t in tensors], before)


# ----- no host synchronisation, CUDA graphs -------------------------------------------------

def _optimizer(kind, params, cuda_backend, lr, **options):
    if kind == "amsgrads":
        return swd_kernels.AMSGradS(params, lr=lr, weight_decay=0.1, backend=cuda_backend,
                                    **options)
    if kind == "sgds":
        return swd_kernels.SGDS(params, lr=lr, momentum=0.9, weight_decay=0.1,
                                backend=cuda_backend, **options)
    return OPTIMIZERS[kind](params, lr=lr, weight_decay=0.1, backend=cuda_backend, **options)


@pytest.mark.parametrize("cuda_backend", CUDA_BACKENDS)
@pytest.mark.parametrize("kind", ["adams", "amsgrads", "sgds", "adais"])
@pytest.mark.parametrize("max_grad_norm", [None, 1.0], ids=["unclipped", "clipped"])
def test_step_never_synchronizes(cuda_backend, kind, max_grad_norm):
    if max_grad_norm is not None:
        require_fused_clipping()
    options = {} if max_grad_norm is None else dict(max_grad_norm=max_grad_norm)
    params = [torch.randn(5000, device="cuda", requires_grad=True),
              torch.randn(33, 17, device="cuda", requires_grad=True)]
    optimizer = _optimizer(kind, params, cuda_backend, torch.tensor(1e-3, device="cuda"),
                           **options)
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


GRAPH_WARMUP, GRAPH_REPLAYS = 3, 8
GRAPH_SKIPPED = GRAPH_WARMUP + 5  # the step that runs with found_inf set
GRAPH_SCALE = 2.0 ** 10  # the loss scale (a power of two: the grads unscale exactly)

GRAPH_CASES = [
    pytest.param("adams", "one_group", None, id="adams-one_group"),    # adam_step
    pytest.param("adams", "two_groups", None, id="adams-two_groups"),  # reduce + update
    pytest.param("amsgrads", "one_group", None, id="amsgrads-one_group"),
    pytest.param("amsgrads", "two_groups", None, id="amsgrads-two_groups"),
    pytest.param("sgds", "two_groups", None, id="sgds-two_groups"),
    pytest.param("adais", "two_groups", None, id="adais-two_groups"),
    pytest.param("adams", "two_groups", 0.5, id="adams-two_groups-clipped"),
    pytest.param("amsgrads", "one_group", 0.5, id="amsgrads-one_group-clipped"),
]


class GraphTrainer:
    """A small model and its optimizer whose every changing input lives in a device tensor
    (each group's lr, the loss scale, found_inf), so one captured step serves every step."""

    def __init__(self, kind, grouping, cuda_backend, max_grad_norm):
        self.model = _model()
        self.lrs = [torch.zeros((), device="cuda") for _ in range(2)]
        first, last = list(self.model[0].parameters()), list(self.model[2].parameters())
        if grouping == "one_group":
            groups = [dict(params=first + last, lr=self.lrs[0])]
        else:
            groups = [dict(params=first, lr=self.lrs[0]),
                      dict(params=last, lr=self.lrs[1], weight_decay=0.01)]
        options = {} if max_grad_norm is None else dict(max_grad_norm=max_grad_norm)
        self.optimizer = _optimizer(kind, groups, cuda_backend, self.lrs[0], **options)
        self.scale = torch.full((), GRAPH_SCALE, device="cuda")
        self.found_inf = torch.zeros((), device="cuda")
        self.loss_fn = torch.nn.MSELoss()

    def set_step_inputs(self, step: dict) -> None:
        for lr, value in zip(self.lrs, step["lrs"]):
            lr.fill_(value)
        self.found_inf.fill_(step["found_inf"])

    def train_step(self, x, y) -> None:
        """Forward, backward on the scaled loss, and the step that unscales."""
        (self.loss_fn(self.model(x), y) * self.scale).backward()
        self.optimizer.step(grad_scale=self.scale, found_inf=self.found_inf)

    def snapshot(self):
        return snapshot(self.optimizer, list(self.model.parameters()))


def _graph_steps():
    generator = torch.Generator(device="cuda").manual_seed(1)
    return [dict(x=torch.randn(32, 64, device="cuda", generator=generator),
                 y=torch.randn(32, 10, device="cuda", generator=generator),
                 lrs=(1e-2 * 0.9 ** i, 4e-3 * 0.95 ** i),
                 found_inf=1.0 if i == GRAPH_SKIPPED else 0.0)
            for i in range(GRAPH_WARMUP + GRAPH_REPLAYS)]


@pytest.mark.parametrize("cuda_backend", CUDA_BACKENDS)
@pytest.mark.parametrize("kind, grouping, max_grad_norm", GRAPH_CASES)
def test_cuda_graph_of_whole_step_equals_eager(cuda_backend, kind, grouping, max_grad_norm):
    """torch's whole-network capture recipe (docs of torch.cuda.graphs): warm-up steps on a
    side stream, grads set to None, then forward, backward and the step captured once and
    replayed with new data, lrs and found_inf. The replay with found_inf set changes no param
    and no state; the run ends where the same steps taken eagerly end (params, state, stats)."""
    if max_grad_norm is not None:
        require_fused_clipping()
    steps = _graph_steps()

    eager = GraphTrainer(kind, grouping, cuda_backend, max_grad_norm)
    for step in steps:
        eager.set_step_inputs(step)
        eager.optimizer.zero_grad(set_to_none=True)
        eager.train_step(step["x"], step["y"])

    graphed = GraphTrainer(kind, grouping, cuda_backend, max_grad_norm)
    static_x, static_y = steps[0]["x"].clone(), steps[0]["y"].clone()
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        for step in steps[:GRAPH_WARMUP]:
            graphed.set_step_inputs(step)
            graphed.optimizer.zero_grad(set_to_none=True)
            graphed.train_step(step["x"], step["y"])
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    graphed.optimizer.zero_grad(set_to_none=True)
    with torch.cuda.graph(graph):
        graphed.train_step(static_x, static_y)
    for index, step in enumerate(steps[GRAPH_WARMUP:], GRAPH_WARMUP):
        static_x.copy_(step["x"])
        static_y.copy_(step["y"])
        graphed.set_step_inputs(step)
        before = graphed.snapshot() if index == GRAPH_SKIPPED else None
        graph.replay()
        if before is not None:
            assert_bitwise_equal(graphed.snapshot(), before)
    torch.cuda.synchronize()

    for p, q in zip(graphed.model.parameters(), eager.model.parameters()):
        torch.testing.assert_close(p, q)
        for key, value in graphed.optimizer.state[p].items():
            torch.testing.assert_close(value, eager.optimizer.state[q][key], msg=f"state {key!r}")
    if hasattr(eager.optimizer, "stats"):
        for key in ("grad_norm", "vhat_mean"):
            if key in eager.optimizer.stats:
                torch.testing.assert_close(graphed.optimizer.stats[key],
                                           eager.optimizer.stats[key], msg=f"stats {key!r}")


# ----- streams ------------------------------------------------------------------------------

# GPU sleeps, in cycles of an H200's ~2 GHz clock: ~10 ms before each step on a side stream
# (a kernel on another stream would run long before it ends); ~0.2 s holding two streams while
# the host queues 2 x 10 steps behind them
SIDE_STREAM_SLEEP = 20_000_000
HOLD_CYCLES = 400_000_000

def stream_groups(one_bucket: bool, salt: int) -> list[Group]:
    """Two param groups (or their params in one), sizes moved by ``salt``: each test case gets
    sizes of its own, because the Triton backend keeps one chunk layout, with its workspace,
    per set of sizes, and a case that corrupts one must not fail the cases after it."""
    groups = [Group([Param((3 * 2 ** 16 + 5 + salt,), 1.0), Param((77_777,), 0.5),
                     Param((1,), 2.0, missing_grad_every=3)], dict(lr=1e-2, weight_decay=5e-2)),
              Group([Param((33, 65), 1.0, transposed=True), Param((4099 + salt,), 0.7)],
                    dict(lr=5e-3, weight_decay=1e-2))]
    if one_bucket:
        return [Group(groups[0].params + groups[1].params, groups[0].hyper)]
    return groups


# (kind, options, one bucket?, salt)
STREAM_CASES = [pytest.param("adams", dict(), True, 1, id="adams-one_bucket"),
                pytest.param("adams", dict(), False, 2, id="adams-two_groups"),
                pytest.param("adams", dict(amsgrad=True), False, 3, id="amsgrads"),
                pytest.param("sgds", dict(momentum=0.9), False, 4, id="sgds-momentum"),
                pytest.param("adais", dict(), False, 5, id="adais")]


@pytest.mark.parametrize("cuda_backend", CUDA_BACKENDS)
@pytest.mark.parametrize("kind, options, one_bucket, salt", STREAM_CASES)
def test_steps_on_a_side_stream(cuda_backend, kind, options, one_bucket, salt):
    """Steps issued on a non-default stream equal the same steps on the default stream, bit
    for bit. Each step's grads are written on the side stream behind a GPU sleep, so a kernel
    launched on any other stream would read them before they exist."""
    groups = stream_groups(one_bucket, salt)
    expected = CudaRun(kind, groups, cuda_backend, seed=21, **options)
    grads = grads_on_cuda(expected, STEPS)
    for step_grads in grads:
        expected.step(step_grads, oracle_grads=[None if g is None else g.cpu()
                                                for g in step_grads])
    run = CudaRun(kind, groups, cuda_backend, seed=21, with_oracle=False, **options)
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        for step_grads in grads:
            torch.cuda._sleep(SIDE_STREAM_SLEEP)
            run.step([None if g is None else g.clone() for g in step_grads])
    torch.cuda.current_stream().wait_stream(side)
    assert_bitwise_equal(run.snapshot(), expected.snapshot())
    expected.assert_matches_oracle()


@pytest.mark.parametrize("cuda_backend", CUDA_BACKENDS)
@pytest.mark.parametrize("kind, options, one_bucket, salt", STREAM_CASES)
def test_two_optimizers_on_two_streams_at_once(cuda_backend, kind, options, one_bucket, salt):
    """Two optimizers over buckets of identical sizes (different data) stepping on two
    streams at once each end exactly where they end stepping alone. Both streams are held by
    a GPU sleep while the host queues every step, so their kernels then run side by side: any
    workspace, counter or table the two share would mix their steps."""
    groups = stream_groups(one_bucket, salt + 100)
    seeds = (22, 23)
    alone = [CudaRun(kind, groups, cuda_backend, seed=s, with_oracle=False, **options)
             for s in seeds]
    grads = [grads_on_cuda(run, STEPS) for run in alone]
    for run, run_grads in zip(alone, grads):
        for step_grads in run_grads:
            run.step(step_grads)

    together = [CudaRun(kind, groups, cuda_backend, seed=s, with_oracle=False, **options)
                for s in seeds]
    streams = [torch.cuda.Stream() for _ in together]
    for stream in streams:
        stream.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(stream):
            torch.cuda._sleep(HOLD_CYCLES)
    for step in range(STEPS):
        for run, stream, run_grads in zip(together, streams, grads):
            with torch.cuda.stream(stream):
                run.step([None if g is None else g.clone() for g in run_grads[step]])
    for stream in streams:
        torch.cuda.current_stream().wait_stream(stream)
    for a, b in zip(together, alone):
        assert_bitwise_equal(a.snapshot(), b.snapshot())


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


# ----- against torch: fused AdamW, clip_grad_norm_; optimizer.stats -------------------------

MAX_GRAD_NORM = 1.0  # the standard problem's grads have a total norm ~100: every step clips
QUIET_STEP = 3  # its grads are scaled by 1e-4 (norm ~0.01): no clipping
NORM_EPS = 1e-6  # torch's clip_grad_norm_ adds it to the total norm

# (kind, options, reference): "swd" is the same optimizer without max_grad_norm after
# clip_grad_norm_; "fused_adamw" is torch.optim.AdamW(fused=True), which AdamS is at
# decay_power=0
TORCH_CASES = [
    pytest.param("adams", dict(), "swd", id="adams"),
    pytest.param("adams", dict(decay_power=0.0), "fused_adamw", id="adams-power0-fused_adamw"),
    pytest.param("adams", dict(amsgrad=True), "swd", id="amsgrads"),
    pytest.param("adams", dict(amsgrad=True, decay_power=0.0), "fused_adamw",
                 id="amsgrads-power0-fused_adamw"),
    pytest.param("sgds", dict(momentum=0.9), "swd", id="sgds-momentum"),
    pytest.param("adais", dict(), "swd", id="adais"),
]


def _torch_twin(run: CudaRun, reference: str, options: dict):
    """The optimizer to hold ``run`` to: its own (unclipped) one, or fused AdamW."""
    if reference == "swd":
        return run.optimizer
    groups = [dict(params=g["params"], lr=g["lr"], weight_decay=g["weight_decay"])
              for g in run.optimizer.param_groups]
    return torch.optim.AdamW(groups, amsgrad=options.get("amsgrad", False), fused=True)


def _fp32_one_minus_error(beta: float) -> float:
    """How far ``1 - beta`` formed in fp32 from an fp32 ``beta`` is from the exact value,
    relative to it (0.999: 1.3e-5)."""
    one_minus = (torch.tensor(1.0) - torch.tensor(beta, dtype=torch.float32)).item()
    return abs(one_minus - (1 - beta)) / (1 - beta)


def _twin_tolerance(optimizer, key: str):
    """The fp32 row, and for torch's fused AdamW on CUDA the error of its moment weights:
    it forms ``1 - beta`` in fp32 (measured on the H200 with torch 2.11, 2026-11-30: its
    exp_avg_sq 1.29e-5 off the float64 oracle, which ours matched), where we form it in
    float64 (rules.h one_minus_beta2). Its exp_avg inherits 1 - 0.9f's 3.6e-7."""
    from tolerance import TOLERANCES, Tolerance
    row = TOLERANCES[torch.float32]
    if not isinstance(optimizer, torch.optim.AdamW):
        return row
    beta1, beta2 = optimizer.param_groups[0]["betas"]
    extra = {"exp_avg": _fp32_one_minus_error(beta1),
             "exp_avg_sq": _fp32_one_minus_error(beta2),
             "max_exp_avg_sq": _fp32_one_minus_error(beta2)}.get(key, 0.0)
    return Tolerance(row.relative + extra, None)


def _assert_same_training(ours: CudaRun, theirs: CudaRun, optimizer):
    """Params and every state tensor of ``ours`` within the fp32 tolerance of ``theirs``
    (whose optimizer is ``optimizer``), each tensor against the largest magnitude it reached
    (the oracle of ``ours`` kept them), and the same step counts."""
    peaks = ours.cpu.oracle.peaks
    assert_close("params", ours.params, [p.detach().double() for p in theirs.params],
                 torch.float32, are_params=True, scales=[peak["params"] for peak in peaks])
    stepped = [(i, p, q) for i, (p, q) in enumerate(zip(ours.params, theirs.params))
               if q in optimizer.state]
    keys = [k for k in optimizer.state[stepped[0][2]] if k != "step"]
    for key in keys:
        expected = [optimizer.state[q][key].double() for _, _, q in stepped]
        assert_close(key, [ours.optimizer.state[p][key] for _, p, _ in stepped], expected,
                     torch.float32, _twin_tolerance(optimizer, key),
                     scales=[peaks[i].get(key, e.abs().max().item())
                             for (i, _, _), e in zip(stepped, expected)])
    for _, p, q in stepped:
        assert ours.optimizer.state[p]["step"].item() == optimizer.state[q]["step"].item()


@pytest.mark.parametrize("cuda_backend", CUDA_BACKENDS)
@pytest.mark.parametrize("kind, options, reference",
                         [c for c in TORCH_CASES if c.values[2] == "fused_adamw"])
@pytest.mark.parametrize("groups", GROUPINGS)
def test_adams_power0_equals_fused_adamw(cuda_backend, kind, options, reference, groups):
    """AdamS(decay_power=0) is AdamW: on CUDA, torch.optim.AdamW(fused=True) gives the same
    params and state, and both match the oracle."""
    ours = CudaRun(kind, groups, cuda_backend, seed=30, **options)
    theirs = CudaRun(kind, groups, cuda_backend, seed=30, with_oracle=False, **options)
    adamw = _torch_twin(theirs, reference, options)
    for _ in range(STEPS):
        grads = random_grads(ours.cpu)
        ours.step(grads)
        theirs.load_grads(grads)
        adamw.step()
    ours.assert_matches_oracle()
    _assert_same_training(ours, theirs, adamw)


@pytest.mark.parametrize("cuda_backend", ALL_CUDA_BACKENDS)
@pytest.mark.parametrize("kind, options, reference", TORCH_CASES)
@pytest.mark.parametrize("groups", GROUPINGS)
def test_fused_clipping_equals_clip_grad_norm(cuda_backend, kind, options, reference, groups):
    """``max_grad_norm=1.0`` equals torch.nn.utils.clip_grad_norm_(params, 1.0) followed by
    the optimizer without it (or by fused AdamW, at decay_power=0), within the oracle's
    tolerance; the oracle, fed the grads clipped in float64, agrees. Each step's
    ``stats["grad_norm"]`` is torch.nn.utils.get_total_norm of the grads (before clipping)
    and ``stats["vhat_mean"]`` the oracle's v_bar. One step's grads are too small to clip."""
    require_fused_clipping()
    clipped = CudaRun(kind, groups, cuda_backend, seed=31,
                      optimizer_options=dict(max_grad_norm=MAX_GRAD_NORM), **options)
    plain = CudaRun(kind, groups, cuda_backend, seed=31, with_oracle=False, **options)
    twin = _torch_twin(plain, reference, options)
    for step in range(STEPS):
        grads = random_grads(clipped.cpu)
        if step == QUIET_STEP:
            grads = [None if g is None else g * 1e-4 for g in grads]
        norm = math.sqrt(sum(float(g.double().square().sum()) for g in grads if g is not None))
        coefficient = min(1.0, MAX_GRAD_NORM / (norm + NORM_EPS))
        clipped.step(grads, oracle_grads=[None if g is None else g.double() * coefficient
                                          for g in grads])
        stats = clipped.optimizer.stats
        total = torch.nn.utils.get_total_norm([p.grad for p in clipped.params
                                               if p.grad is not None])
        assert stats["grad_norm"].item() == pytest.approx(total.item(), rel=1e-5)
        assert stats["grad_norm"].item() == pytest.approx(norm, rel=1e-5)
        if "vhat_mean" in stats:
            v_bar = next(iter(clipped.cpu.oracle.last_v_bars.values()))
            assert stats["vhat_mean"].item() == pytest.approx(v_bar, rel=1e-5)
        plain.load_grads(grads)
        torch.nn.utils.clip_grad_norm_(plain.params, MAX_GRAD_NORM)
        twin.step()
    clipped.assert_matches_oracle()
    _assert_same_training(clipped, plain, twin)


# ----- Triton's one-launch step -------------------------------------------------------------

def _child_triton_one_launch():
    """SWD_KERNELS_TRITON_ONE_LAUNCH=1 on a GPU: adam_step runs as adam_step_one_launch_kernel
    (seen in the profiler), bitwise equal to the two launches (adam_reduce_kernel and
    adam_update_kernel); AdamS and AMSGradS."""
    from swd_kernels.backends.triton import adam as triton_adam
    for amsgrad in (False, True):
        results = []
        for one_launch in ("0", "1"):
            os.environ[triton_adam.ONE_LAUNCH_SWITCH] = one_launch
            run = CudaRun("adams", BIG_GROUP, "triton", seed=24, with_oracle=False,
                          amsgrad=amsgrad).steps(2)
            names = kernel_names(run.step)
            ran = launched(names, "adam_step_one_launch_kernel")
            assert (ran > 0) == (one_launch == "1"), (
                f"{triton_adam.ONE_LAUNCH_SWITCH}={one_launch}: adam_step_one_launch_kernel "
                f"seen {ran} times; events {[n for n in names if 'kernel' in n][:20]}")
            results.append(run.snapshot())
        assert_bitwise_equal(*results)


def test_triton_one_launch_step_equals_two_launches():
    """The one-launch step's programs wait for each other at a grid barrier: where they are not
    all resident at once it would hang, so it runs in a child process with a time limit."""
    if "triton" not in CUDA_BACKENDS:
        pytest.skip("the triton backend does not run on cuda here")
    run_in_child(_child_triton_one_launch, timeout_s=90)
