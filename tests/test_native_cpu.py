"""The native backend's CPU kernels at the op level (csrc/cpu/): registered ops pass
``opcheck``; every op matches the reference ``torch`` backend's op on the same random inputs,
for every option; a found_inf step changes nothing; results are deterministic, the reduction
for any thread count. (The optimizers against the float64 oracle: test_oracle.py.)"""
from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch

import swd_kernels
from swd_kernels import ops
from swd_kernels.backends import unavailable_reason

assert unavailable_reason("torch", "cpu") is None  # loads the reference backend's ops
_REASON = unavailable_reason("native", "cpu")
pytestmark = pytest.mark.skipif(_REASON is not None, reason=f"native backend: {_REASON}")

# 1 element, block boundaries (4097, 2^16+3), a channels_last 4-D weight, an empty tensor,
# a matrix: over 32768 elements in all, so the kernels split the list over threads.
SHAPES = [(1,), (4097,), (2**16 + 3,), (8, 6, 5, 3), (0,), (33, 65)]

# How close native comes to the torch backend's op, as a share of the largest magnitude of
# each quantity (as tests/tolerance.py measures against the oracle). Both compute in fp32 from
# the same double-formed coefficients but group the arithmetic differently (whole-tensor ops;
# FMA in the AVX2/AVX-512 builds), and the foreach ops sum squares in double where the kernels
# sum fp32 chunk partials. Measured on the cases below: at most 2.4e-7 on fp32 tensors and
# 5.1e-8 on the float64 sums, so the oracle's fp32 bound of 1e-5 leaves a 40x margin.
# bf16/fp16 storage: two storage ulps, where fp32 noise lands on the other side of a rounding
# boundary.
TOLERANCE = {torch.float32: 1e-5, torch.float64: 1e-5,
             torch.bfloat16: 2 * torch.finfo(torch.bfloat16).eps,
             torch.float16: 2 * torch.finfo(torch.float16).eps}


def _random(shape, dtype, gen, scale=1.0, positive=False, fill=None):
    x = torch.full(shape, fill) if fill is not None else torch.randn(shape, generator=gen)
    x = (x.abs() if positive else x) * scale
    x = x.to(dtype)
    if len(shape) == 4:
        x = x.contiguous(memory_format=torch.channels_last)
    return x


def make_bucket(kind, dtype=torch.float32, state_dtype=torch.float32, shapes=SHAPES, seed=0,
                grad_scale=1.0):
    """Random op arguments of one bucket: lists of tensors plus ``accum`` (and per kind the
    state lists); steps differ per tensor."""
    gen = torch.Generator().manual_seed(seed)
    b = dict(params=[_random(s, dtype, gen) for s in shapes],
             grads=[_random(s, dtype, gen, scale=grad_scale) for s in shapes],
             state_steps=[torch.tensor(float(i % 3 + (kind != "sgd"))) for i in
                          range(len(shapes))],
             accum=torch.zeros(2, dtype=torch.float64))
    if kind in ("adam", "adai"):
        b["exp_avgs"] = [_random(s, state_dtype, gen, 0.1) for s in shapes]
        b["exp_avg_sqs"] = [_random(s, state_dtype, gen, 0.01, positive=True) for s in shapes]
        b["v_sums"] = [v.sum(dtype=torch.float64) for v in b["exp_avg_sqs"]]
    if kind == "adam":
        b["max_exp_avg_sqs"] = [v + _random(s, state_dtype, gen, 0.005, positive=True)
                                for s, v in zip(shapes, b["exp_avg_sqs"])]
    if kind == "adai":
        b["beta1_prods"] = [_random(s, state_dtype, gen, 0.9, positive=True).clamp(max=0.99)
                            for s in shapes]
    if kind == "sgd":
        b["momentum_buffers"] = [_random(s, state_dtype, gen, 0.1) for s in shapes]
    return b


def clone(bucket):
    return {k: [t.clone() for t in v] if isinstance(v, list) else v.clone()
            for k, v in bucket.items()}


def new_grads(bucket, seed, scale=1.0):
    gen = torch.Generator().manual_seed(1000 + seed)
    bucket["grads"] = [_random(g.shape, g.dtype, gen, scale) for g in bucket["grads"]]


def call(backend, name, bucket, **options):
    """Run op ``name`` of ``backend`` on the bucket's tensors with the given options."""
    args = {k: bucket[k] for k in ops.ARG_NAMES[name] if k in bucket}
    if name in ("adam_reduce", "adam_update", "adam_step"):
        args.setdefault("max_exp_avg_sqs", [])
        if options.get("amsgrad"):
            args["max_exp_avg_sqs"] = bucket["max_exp_avg_sqs"]
    if name == "adai_update":
        args["beta1_prods"] = bucket["beta1_prods"]
    if name == "sgd_update" and options.get("momentum", 0.0) == 0.0:
        args["momentum_buffers"] = []
    args.update(options)
    ops.get(backend, name)(**args)


def assert_buckets_close(native, reference, exact=False):
    for key, value in reference.items():
        pairs = zip(native[key], value) if isinstance(value, list) else [(native[key], value)]
        for i, (a, b) in enumerate(pairs):
            where = f"{key}[{i}]"
            assert a.dtype == b.dtype and a.shape == b.shape, where
            assert a.stride() == b.stride(), f"{where}: the layout changed"
            if exact:
                assert torch.equal(a, b), f"{where} changed"
            elif b.numel():
                assert torch.isfinite(a).all(), f"{where} is not finite"
                error = (a.double() - b.double()).abs().max().item()
                bound = TOLERANCE[b.dtype] * b.double().abs().max().item()
                assert error <= bound, f"{where}: max error {error:.3g} > {bound:.3g}"


ADAM_DEFAULTS = dict(lr_tensor=None, lr=1e-2, beta1=0.9, beta2=0.999, weight_decay=0.1,
                     eps=1e-8, decay_power=0.5, decay_eps=0.0, amsgrad=False, maximize=False,
                     grad_scale=None, found_inf=None)
ADAI_DEFAULTS = dict(lr_tensor=None, lr=1e-2, beta0=0.1, beta2=0.99, weight_decay=0.1,
                     eps=1e-3, maximize=False, grad_scale=None, found_inf=None)
SGD_DEFAULTS = dict(lr_tensor=None, lr=1e-2, momentum=0.9, dampening=0.0, weight_decay=0.1,
                    nesterov=False, maximize=False, grad_scale=None, found_inf=None)
REDUCE_KEYS = ("beta2", "amsgrad", "grad_scale", "found_inf")


def adam_steps(backend, bucket, steps=3, split=False, grad_scale_value=1.0, **options):
    """``steps`` AdamS steps through ``adam_step`` (or ``adam_reduce`` + ``adam_update``)."""
    hp = {**ADAM_DEFAULTS, **options}
    for step in range(steps):
        new_grads(bucket, step, grad_scale_value)
        bucket["accum"].zero_()
        if split:
            call(backend, "adam_reduce", bucket, **{k: hp[k] for k in REDUCE_KEYS})
            call(backend, "adam_update", bucket, **hp)
        else:
            call(backend, "adam_step", bucket, **hp)


DTYPES = [(torch.float32, torch.float32), (torch.bfloat16, torch.float32),
          (torch.bfloat16, torch.bfloat16), (torch.float16, torch.float16)]
DTYPE_IDS = ["fp32", "bf16-fp32state", "bf16", "fp16"]


# ------------------------------------------------------------------ parity with torch ----

@pytest.mark.parametrize("dtype,state_dtype", DTYPES, ids=DTYPE_IDS)
@pytest.mark.parametrize("options", [
    {}, {"amsgrad": True}, {"maximize": True}, {"decay_power": 0.0}, {"decay_eps": 1e-3},
    {"lr_tensor": torch.tensor(3e-3, dtype=torch.float64), "lr": 123.0},
    {"grad_scale": torch.tensor(1024.0)}, {"amsgrad": True, "grad_scale": torch.tensor(8.0)},
    {"found_inf": torch.tensor(0.0)},
], ids=["plain", "amsgrad", "maximize", "adamw", "decay_eps", "lr_tensor", "grad_scale",
        "amsgrad-grad_scale", "found_inf-0"])
@pytest.mark.parametrize("split", [False, True], ids=["adam_step", "reduce+update"])
def test_adam_matches_torch_backend(dtype, state_dtype, options, split):
    scale = float(options["grad_scale"]) if "grad_scale" in options else 1.0
    native = make_bucket("adam", dtype, state_dtype)
    reference = clone(native)
    adam_steps("native", native, split=split, grad_scale_value=scale, **options)
    adam_steps("torch", reference, split=split, grad_scale_value=scale, **options)
    assert_buckets_close(native, reference)
    assert [float(s) for s in native["state_steps"]] == [float(i % 3 + 1 + 3) for i in
                                                         range(len(SHAPES))]


@pytest.mark.parametrize("amsgrad", [False, True])
def test_adam_reduce_matches_torch_backend(amsgrad):
    native = make_bucket("adam", seed=3)
    reference = clone(native)
    for backend, b in (("native", native), ("torch", reference)):
        call(backend, "adam_reduce", b, beta2=0.95, amsgrad=amsgrad,
             grad_scale=torch.tensor(2.0), found_inf=None)
    assert native["accum"][1] == sum(t.numel() for t in native["grads"])
    assert native["accum"][0] > 0
    assert_buckets_close(native, reference)


@pytest.mark.parametrize("dtype,state_dtype", DTYPES, ids=DTYPE_IDS)
@pytest.mark.parametrize("options", [
    {}, {"maximize": True}, {"grad_scale": torch.tensor(64.0)},
    {"lr_tensor": torch.tensor(3e-3), "lr": 123.0}, {"weight_decay": 0.0},
], ids=["plain", "maximize", "grad_scale", "lr_tensor", "no_decay"])
def test_adai_matches_torch_backend(dtype, state_dtype, options):
    hp = {**ADAI_DEFAULTS, **options}
    scale = float(options["grad_scale"]) if "grad_scale" in options else 1.0
    native = make_bucket("adai", dtype, state_dtype, seed=1)
    reference = clone(native)
    for backend, b in (("native", native), ("torch", reference)):
        for step in range(3):
            new_grads(b, step, scale)
            b["accum"].zero_()
            call(backend, "adam_reduce", b, beta2=hp["beta2"], amsgrad=False,
                 grad_scale=hp["grad_scale"], found_inf=None)
            call(backend, "adai_update", b, **hp)
    assert_buckets_close(native, reference)


def test_adai_zero_mean_takes_ratio_one():
    """v_bar = 0 (accum counted nothing) must not divide by zero: ratio taken as 1."""
    native = make_bucket("adai", seed=2)
    reference = clone(native)
    for backend, b in (("native", native), ("torch", reference)):
        call(backend, "adai_update", b, **ADAI_DEFAULTS)
    assert all(torch.isfinite(p).all() for p in native["params"])
    assert_buckets_close(native, reference)


@pytest.mark.parametrize("dtype,state_dtype", DTYPES, ids=DTYPE_IDS)
@pytest.mark.parametrize("options", [
    {}, {"momentum": 0.0}, {"nesterov": True}, {"dampening": 0.3}, {"maximize": True},
    {"grad_scale": torch.tensor(32.0)}, {"lr_tensor": torch.tensor(3e-3), "lr": 123.0},
], ids=["momentum", "no_momentum", "nesterov", "dampening", "maximize", "grad_scale",
        "lr_tensor"])
def test_sgd_matches_torch_backend(dtype, state_dtype, options):
    hp = {**SGD_DEFAULTS, **options}
    scale = float(options["grad_scale"]) if "grad_scale" in options else 1.0
    native = make_bucket("sgd", dtype, state_dtype, seed=4)
    reference = clone(native)
    for backend, b in (("native", native), ("torch", reference)):
        for step in range(3):  # steps start at 0 for some tensors: their buffer takes g
            new_grads(b, step, scale)
            call(backend, "sgd_update", b, **hp)
    assert_buckets_close(native, reference)


def test_many_small_tensors_match_torch_backend():
    """1000 tiny tensors: the work split spreads them over the threads."""
    shapes = [(i % 37 + 1,) for i in range(1000)] + [(40000,)]
    native = make_bucket("adam", shapes=shapes, seed=5)
    reference = clone(native)
    adam_steps("native", native, amsgrad=True)
    adam_steps("torch", reference, amsgrad=True)
    assert_buckets_close(native, reference)


# ------------------------------------------------------------------ found_inf ------------

@pytest.mark.parametrize("dtype,state_dtype", DTYPES[:2], ids=DTYPE_IDS[:2])
@pytest.mark.parametrize("amsgrad", [False, True])
def test_found_inf_changes_nothing(dtype, state_dtype, amsgrad):
    bucket = make_bucket("adam", dtype, state_dtype)
    before = clone(bucket)
    hp = {**ADAM_DEFAULTS, "amsgrad": amsgrad, "found_inf": torch.tensor(1.0),
          "grad_scale": torch.tensor(4.0)}
    call("native", "adam_step", bucket, **hp)
    before["accum"] = bucket["accum"]  # the only thing the reduction may change
    assert_buckets_close(bucket, before, exact=True)
    call("native", "adam_update", bucket, **hp)
    assert_buckets_close(bucket, before, exact=True)


def test_found_inf_changes_nothing_adai_sgd():
    adai = make_bucket("adai")
    before = clone(adai)
    call("native", "adai_update", adai, **{**ADAI_DEFAULTS, "found_inf": torch.tensor(1.0)})
    assert_buckets_close(adai, before, exact=True)
    sgd = make_bucket("sgd")
    before = clone(sgd)
    call("native", "sgd_update", sgd, **{**SGD_DEFAULTS, "found_inf": torch.tensor(2.0)})
    assert_buckets_close(sgd, before, exact=True)


# ------------------------------------------------------------------ determinism ----------

def test_same_step_twice_is_bitwise_identical():
    first = make_bucket("adam", seed=6)
    second = clone(first)
    adam_steps("native", first, amsgrad=True)
    adam_steps("native", second, amsgrad=True)
    assert_buckets_close(first, second, exact=True)


@pytest.mark.parametrize("amsgrad", [False, True])
def test_reduction_independent_of_thread_count(amsgrad):
    shapes = [(3 * 2**17 + 5,), (4097,), (200, 300)]
    inputs = make_bucket("adam", shapes=shapes, seed=7)
    results = []
    threads = torch.get_num_threads()
    try:
        for n in (1, 2, 3):
            torch.set_num_threads(n)
            bucket = clone(inputs)
            call("native", "adam_reduce", bucket, beta2=0.999, amsgrad=amsgrad,
                 grad_scale=None, found_inf=None)
            results.append((bucket["accum"], bucket["v_sums"]))
    finally:
        torch.set_num_threads(threads)
    for accum, v_sums in results[1:]:
        assert torch.equal(accum, results[0][0])
        assert all(torch.equal(a, b) for a, b in zip(v_sums, results[0][1]))


def test_every_cpu_capability_gives_the_same_update():
    """The portable build and the AVX2 / AVX-512 builds (where this CPU has them) run the
    same rules (swd/rules.h), equal to fp32 rounding, not bitwise: g++ contracts multiply-adds
    into FMA in the AVX2 / AVX-512 builds, and the portable build has no FMA."""
    script = (
        "import sys, torch; sys.path.insert(0, %r); import test_native_cpu as t\n"
        "b = t.make_bucket('adam', seed=8); b['accum'] = torch.tensor([5.0, 100.0], "
        "dtype=torch.float64)\n"
        "t.call('native', 'adam_update', b, **{**t.ADAM_DEFAULTS, 'amsgrad': True})\n"
        "torch.save(b, sys.argv[1])\n") % os.path.dirname(os.path.abspath(__file__))
    results = {}
    for capability in ("default", "avx2", "avx512"):
        out = os.path.join(os.environ.get("TMPDIR", "/tmp"), f"swd_native_{os.getpid()}.pt")
        env = {**os.environ, "SWD_KERNELS_CPU_CAPABILITY": capability}
        run = subprocess.run([sys.executable, "-c", script, out], env=env,
                             capture_output=True, text=True)
        if run.returncode != 0 and "lacks" in run.stderr:
            continue  # this CPU does not have it
        assert run.returncode == 0, run.stderr[-2000:]
        results[capability] = torch.load(out)
        os.remove(out)
    assert "default" in results
    for capability, bucket in results.items():
        assert_buckets_close(bucket, results["default"])


# ------------------------------------------------------------------ opcheck --------------

@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
@pytest.mark.parametrize("name", ["adam_reduce", "adam_update", "adam_step", "adai_update",
                                  "sgd_update"])
def test_opcheck(name, dtype):
    kind = {"adai_update": "adai", "sgd_update": "sgd"}.get(name, "adam")
    bucket = make_bucket(kind, dtype, torch.float32, shapes=[(5,), (4097,), (3, 4, 2, 2)])
    bucket["accum"] = torch.tensor([1.0, 4105.0], dtype=torch.float64)
    hp = {"adai": ADAI_DEFAULTS, "sgd": SGD_DEFAULTS}.get(kind, ADAM_DEFAULTS)
    hp = {**hp, "grad_scale": torch.tensor(2.0), "found_inf": torch.tensor(0.0)}
    if name == "adam_reduce":
        hp = {k: hp[k] for k in REDUCE_KEYS}
    args = {k: bucket[k] for k in ops.ARG_NAMES[name] if k in bucket}
    if kind == "adam":
        args["max_exp_avg_sqs"] = []
    if kind == "adai":
        args["beta1_prods"] = bucket["beta1_prods"]
    args.update(hp)
    torch.library.opcheck(ops.get("native", name).default, (), args)


# ------------------------------------------------------------------ bad input ------------

def test_bad_inputs_raise_clear_errors():
    bucket = make_bucket("adam")
    short = dict(bucket, exp_avgs=bucket["exp_avgs"][:-1])
    with pytest.raises(RuntimeError, match=r"exp_avgs has 5 tensors but params has 6"):
        call("native", "adam_update", short, **ADAM_DEFAULTS)
    doubles = make_bucket("adam", torch.float64, torch.float64)
    with pytest.raises(RuntimeError, match=r"params have dtype Double.*float32, bfloat16"):
        call("native", "adam_update", doubles, **ADAM_DEFAULTS)
    wrong_shape = dict(bucket, exp_avg_sqs=[v.reshape(-1) for v in bucket["exp_avg_sqs"]])
    with pytest.raises(RuntimeError, match=r"exp_avg_sqs\[3\] has shape"):
        call("native", "adam_update", wrong_shape, **ADAM_DEFAULTS)
    wrong_layout = dict(bucket, exp_avgs=[m.contiguous() for m in bucket["exp_avgs"]])
    with pytest.raises(RuntimeError, match=r"exp_avgs\[3\] has strides"):
        call("native", "adam_update", wrong_layout, **ADAM_DEFAULTS)


def test_backend_is_registered_for_cpu():
    assert "native" in swd_kernels.available_backends("cpu")
    assert torch._C._dispatch_has_kernel_for_dispatch_key("swd_native::adam_step", "CPU")
