"""The op contract at the op level, on every CPU backend (native's C++ kernels, the torch
reference, triton in its interpreter): each op of every family, dtype pair, option and layout
against the float64 oracle through tests/op_cases.py, the reduction's four accum numbers and
running sums against float64 sums, found_inf, bitwise repeatability, and the precision rules
that only an op-level case can isolate (the decay factor formed in double, the eps regime, a
1% decay error seen in bf16). Then what only the native CPU kernels have: the work split over
threads and the per-ISA builds. (The optimizers against the oracle: test_oracle.py.)"""
from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import replace

import pytest
import torch

import op_cases
import swd_kernels
from op_cases import BucketCase
from swd_kernels import ops
from swd_kernels.backends import unavailable_reason

_NATIVE = unavailable_reason("native", "cpu")
native_only = pytest.mark.skipif(_NATIVE is not None, reason=f"native backend: {_NATIVE}")

F32, BF16, F16 = torch.float32, torch.bfloat16, torch.float16
# (param dtype, state dtype): state in the param dtype, fp32 beside half params, and half
# beside fp32 params (the CPU backends take it; triton does not)
DTYPES = [pytest.param(F32, None, id="fp32"), pytest.param(BF16, F32, id="bf16-fp32state"),
          pytest.param(BF16, None, id="bf16"), pytest.param(F16, None, id="fp16"),
          pytest.param(F32, BF16, id="fp32-bf16state")]


def check(backend: str, case: BucketCase) -> op_cases.Run:
    """Run ``case`` on ``backend`` and hold everything to the oracle; a dtype pair the
    backend refuses is skipped with its reason."""
    reason = unavailable_reason(backend, "cpu", case.param_dtype,
                                case.state_dtype or case.param_dtype)
    if reason is not None:
        pytest.skip(f"{backend}: {reason}")
    result = op_cases.run(backend, case)
    op_cases.assert_matches_oracle(result)
    return result


# ------------------------------------------------------------------ every op, the oracle ----

ADAM_OPTIONS = [
    pytest.param({}, id="plain"),
    pytest.param(dict(hyper=dict(amsgrad=True)), id="amsgrad"),
    pytest.param(dict(hyper=dict(maximize=True)), id="maximize"),
    pytest.param(dict(hyper=dict(decay_power=0.0)), id="adamw"),
    pytest.param(dict(hyper=dict(decay_power=0.25, decay_eps=1e-3)), id="power-decay_eps"),
    pytest.param(dict(lr_tensor=3e-3), id="lr_tensor"),
    pytest.param(dict(grad_scale=1024.0), id="grad_scale"),
    pytest.param(dict(grad_scale=8.0, hyper=dict(amsgrad=True)), id="amsgrad-grad_scale"),
    pytest.param(dict(found_inf=0.0), id="found_inf-0"),
]
ADAM_PROGRAMS = [pytest.param(("adam_step",), id="adam_step"),
                 pytest.param(("adam_reduce", "adam_update"), id="reduce+update")]


@pytest.mark.parametrize("param_dtype, state_dtype", DTYPES)
@pytest.mark.parametrize("options", ADAM_OPTIONS)
@pytest.mark.parametrize("program", ADAM_PROGRAMS)
def test_adam_ops_match_oracle(backend, program, options, param_dtype, state_dtype):
    check(backend, BucketCase(program=program, param_dtype=param_dtype,
                              state_dtype=state_dtype, **options))


@pytest.mark.parametrize("options", ADAM_OPTIONS)
def test_adam_update_alone_matches_oracle(backend, options):
    """The update reading the mean from an accum that another call reduced."""
    check(backend, BucketCase(program=("adam_update",), **options))


ADAI_OPTIONS = [
    pytest.param({}, id="plain"), pytest.param(dict(hyper=dict(maximize=True)), id="maximize"),
    pytest.param(dict(grad_scale=64.0), id="grad_scale"),
    pytest.param(dict(lr_tensor=3e-3), id="lr_tensor"),
    pytest.param(dict(hyper=dict(weight_decay=0.0, beta0=0.5, eps=1e-2)), id="no_decay"),
]


@pytest.mark.parametrize("param_dtype, state_dtype", DTYPES)
@pytest.mark.parametrize("options", ADAI_OPTIONS)
@pytest.mark.parametrize("program", [pytest.param(("adam_reduce", "adai_update"), id="reduce+"),
                                     pytest.param(("adai_update",), id="alone")])
def test_adai_update_matches_oracle(backend, program, options, param_dtype, state_dtype):
    check(backend, BucketCase(program=program, param_dtype=param_dtype,
                              state_dtype=state_dtype, **options))


SGD_OPTIONS = [
    pytest.param({}, id="momentum"), pytest.param(dict(hyper=dict(momentum=0.0)), id="plain"),
    pytest.param(dict(hyper=dict(nesterov=True)), id="nesterov"),
    pytest.param(dict(hyper=dict(dampening=0.3)), id="dampening"),
    pytest.param(dict(hyper=dict(maximize=True)), id="maximize"),
    pytest.param(dict(grad_scale=32.0), id="grad_scale"),
    pytest.param(dict(lr_tensor=3e-3), id="lr_tensor"),
]


@pytest.mark.parametrize("param_dtype, state_dtype", DTYPES)
@pytest.mark.parametrize("options", SGD_OPTIONS)
def test_sgd_update_matches_oracle(backend, options, param_dtype, state_dtype):
    """Step counts 0, 1, 2, ...: a tensor on its first step takes buf = g."""
    check(backend, BucketCase(program=("sgd_update",), param_dtype=param_dtype,
                              state_dtype=state_dtype, **options))


@pytest.mark.parametrize("layout", ["channels_last", "transposed", "unaligned"])
@pytest.mark.parametrize("program", [("adam_step",), ("adam_reduce", "adai_update"),
                                     ("sgd_update",)], ids=["adam", "adai", "sgd"])
def test_layouts(backend, program, layout):
    """Dense but not contiguous (channels_last 4-D, transposed 2-D), and every tensor one
    element past an aligned address: walked as flat arrays, layouts kept."""
    check(backend, BucketCase(program=program, layout=layout))
    check(backend, BucketCase(program=program, layout=layout, param_dtype=BF16, seed=1))


@pytest.mark.parametrize("shapes", [((0,), (1030,), (0, 3)), ((0,),)],
                         ids=["some-empty", "all-empty"])
def test_empty_tensors_take_part(backend, shapes):
    """0-element tensors count nothing, yet their steps advance like every other's."""
    result = check(backend, BucketCase(shapes=shapes))
    assert [s.item() for s in result.bucket.tensors["state_steps"]] == [
        s.item() + 1 for s in result.before["state_steps"]]


def test_many_small_tensors(backend):
    """300 tiny tensors and one large one: native's work split spreads them over threads,
    triton's per-tensor passes walk them in several tiles of tensors."""
    shapes = tuple((i % 37 + 1,) for i in range(300)) + ((40000,),)
    check(backend, BucketCase(shapes=shapes, hyper=dict(amsgrad=True), seed=5))


def test_three_calls_from_the_oracle_state(backend):
    """Three steps in a row, fresh grads each, each one starting from the last one's
    stored state (bf16: the oracle rounds as the backend stores)."""
    check(backend, BucketCase(param_dtype=BF16, calls=3, seed=2))


@pytest.mark.parametrize("state_dtype", [BF16, F16], ids=["bf16state", "fp16state"])
@pytest.mark.parametrize("program", [("adam_step",), ("adam_reduce", "adai_update")],
                         ids=["adam", "adai"])
def test_fp32_params_with_half_state_over_many_steps(backend, program, state_dtype):
    """fp32 params, half state rounded every step: with the oracle following the state's
    rounding ties, 20 steps keep the params within the fp32 row (tests/tolerance.py)."""
    check(backend, BucketCase(program=program, state_dtype=state_dtype, calls=20, seed=13,
                              shapes=((1,), (4097,), (8, 6, 5, 3), (33, 65))))


# ------------------------------------------------------------------ the reduction -----------

@pytest.mark.parametrize("grad_scale", [None, 1024.0], ids=["unscaled", "grad_scale"])
@pytest.mark.parametrize("amsgrad", [False, True])
@pytest.mark.parametrize("program", [("adam_reduce",), ("adam_step",)],
                         ids=["adam_reduce", "adam_step"])
def test_accum_holds_the_four_sums(backend, program, amsgrad, grad_scale):
    """accum += [sum of v_hat, count, sum of (g / grad_scale)^2, sum of (1-beta2) G_i /
    (1-beta2^t_i)] (the last without amsgrad only), on top of an earlier bucket's share, with
    step counts from 1 to 1000 so every tensor's bias correction differs."""
    case = BucketCase(program=program, grad_scale=grad_scale, hyper=dict(amsgrad=amsgrad),
                      steps=(0, 5, 999, 1, 0, 30), grad_magnitude=(3.0, 1.0, 0.5, 2.0, 1.0, 1.5))
    assert check(backend, case).accum is not None  # the four sums were held to float64


def test_adai_reduction_holds_the_four_sums(backend):
    """AdaiS's pass 1 is adam_reduce at its own beta2 (0.99 here)."""
    check(backend, BucketCase(program=("adam_reduce", "adai_update"), grad_scale=4.0,
                              steps=(0, 3, 50, 1, 0, 7)))


# ------------------------------------------------------------------ precision rules ---------

SMALL_GRADS = (1e-5, 1e-5, 1e-5, 2e-5, 1e-4, 1e-4)


@pytest.mark.parametrize("eps", [1e-8, 1e-6])
@pytest.mark.parametrize("amsgrad", [False, True])
def test_small_gradients_reach_the_eps_regime(backend, amsgrad, eps):
    """Grads of 1e-5..1e-4 on a first step (fresh state, v_hat = g^2): sqrt(v_hat) is below
    10 eps for dozens of elements at least (at eps = 1e-8 those with |g| < 1e-7: 81 in the
    interpreter's smaller bucket, 300 at full size), where eps is a tenth of the denominator
    or more and a misplaced eps (inside the square root, or added to v_hat) changes their
    step by 10x or more."""
    case = BucketCase(grad_magnitude=SMALL_GRADS, steps=(0,) * 6,
                      hyper=dict(eps=eps, amsgrad=amsgrad))
    result = check(backend, case)
    oracle = result.bucket.oracle
    key = "max_exp_avg_sq" if amsgrad else "exp_avg_sq"
    beta2 = case.hyperparameters["beta2"]
    in_regime = sum(int(((oracle.state[i][key] / (1 - beta2 ** oracle.state[i]["step"])).sqrt()
                         < 10 * eps).sum()) for i in range(len(case.shapes)))
    assert in_regime >= 50, f"only {in_regime} elements have sqrt(v_hat) < 10 eps"


def test_half_precision_count_sees_a_decay_one_percent_off(backend):
    """One bf16 step whose decay is 10% of the params: the op matches its oracle, and an
    oracle with a weight decay 1% larger (0.1% of each param, a quarter of a bf16 ulp) sees a
    quarter of the elements round the other way, past the 2% the count allows."""
    adam = BucketCase(param_dtype=BF16, seed=9)
    adam_decay = 0.1 / adam.hyperparameters["lr"] * op_cases.v_bar_of(adam, backend) ** 0.5
    for case in (replace(adam, hyper=dict(weight_decay=adam_decay)),  # lr wd / sqrt(v_bar)
                 BucketCase(program=("adam_reduce", "adai_update"), param_dtype=BF16, seed=9,
                            hyper=dict(weight_decay=10.0)),  # lr wd = 0.1
                 BucketCase(program=("sgd_update",), param_dtype=BF16, seed=9,
                            hyper=dict(weight_decay=10.0, momentum=0.0))):
        result = check(backend, case)
        decay = case.hyper["weight_decay"]
        wrong = op_cases.oracle_only(replace(case, hyper=dict(case.hyper,
                                                              weight_decay=decay * 1.01)),
                                     backend)
        with pytest.raises(AssertionError, match="differ from the oracle"):
            op_cases.assert_matches_oracle(result, oracle=wrong)


@pytest.mark.parametrize("decay_power, decay_eps", [(0.25, 0.0), (0.75, 0.0), (1.0, 0.0),
                                                    (0.25, 1e-3), (1.0, 1e-6), (0.5, 1e-3)])
def test_decay_factor_is_formed_in_double(backend, decay_power, decay_eps):
    """1 - lr*wd / (v_bar + decay_eps)^p is formed in float64 from double hyperparameters
    (docs/design.md §6) for every p and decay_eps. The decay is half of each param and eps so
    large that the rest of the step is ~1e-4 of it, so the decay sets every element: each
    must be within one fp32 ulp of the decayed param (the final rounding). Measured on the
    triton backend (2026-11-30): 0.5 ulp; a decay formed in fp32 was 1.5-15.5 ulps off."""
    case = BucketCase(program=("adam_update",), seed=11, shapes=((4097,), (300,)),
                      grad_magnitude=1e-4,
                      hyper=dict(lr=1e-3, eps=1.0, decay_power=decay_power, decay_eps=decay_eps))
    v_bar = op_cases.v_bar_of(case, backend)
    hyper = dict(case.hyper, weight_decay=0.5 / 1e-3 * (v_bar + decay_eps) ** decay_power)
    result = op_cases.run(backend, replace(case, hyper=hyper))
    expected, before = result.bucket.oracle.params, result.before["params"]
    for out, exp, start in zip(result.bucket.tensors["params"], expected, before):
        # one fp32 ulp of the decayed param (at least of lr, for params near 0)
        scale = torch.clamp(start.double().abs() * 0.5, min=1e-3)
        _, exponent = torch.frexp(scale)
        ulps = (out.double() - exp).abs() / torch.ldexp(torch.ones_like(exp), exponent - 24)
        assert ulps.max().item() <= 1.0, f"{ulps.max().item():.2f} fp32 ulps off"


def test_zero_mean_drops_the_decay_and_takes_ratio_one(backend):
    """All grads and v zero: v_bar = 0. AdamS then drops the decay term (nothing moves)
    instead of dividing by zero; AdaiS takes v_hat / v_bar as 1."""
    adam = check(backend, BucketCase(grad_magnitude=0.0))
    for out, start in zip(adam.bucket.tensors["params"], adam.before["params"]):
        assert torch.equal(out, start)
    adai = check(backend, BucketCase(program=("adam_reduce", "adai_update"),
                                     grad_magnitude=0.0))
    assert all(torch.isfinite(p).all() for p in adai.bucket.tensors["params"])


# ------------------------------------------------------------------ found_inf, repeatability -

PROGRAMS = [("adam_reduce",), ("adam_update",), ("adam_step",), ("adam_reduce", "adam_update"),
            ("adai_update",), ("sgd_update",)]


@pytest.mark.parametrize("amsgrad", [False, True])
@pytest.mark.parametrize("program", PROGRAMS, ids="+".join)
def test_found_inf_changes_nothing_but_accum(backend, program, amsgrad):
    """A nonzero found_inf leaves every argument bitwise as it was (steps and v_sums
    included), except accum."""
    hyper = dict(amsgrad=amsgrad) if program[-1].startswith("adam") else {}
    check(backend, BucketCase(program=program, found_inf=1.0, grad_scale=4.0, hyper=hyper,
                              param_dtype=BF16, state_dtype=F32))


@pytest.mark.parametrize("program", PROGRAMS, ids="+".join)
def test_same_call_twice_is_bitwise_identical(backend, program):
    """Fixed summation orders, no atomics on floats: the same call on the same inputs gives
    the same bits (docs/design.md §2, principle 5)."""
    hyper = dict(amsgrad=True) if program == ("adam_step",) else {}
    first, second = (op_cases.run(backend, BucketCase(program=program, hyper=hyper, seed=6))
                     for _ in range(2))
    for name, tensors in first.bucket.tensors.items():
        op_cases.assert_bitwise_equal(name, tensors, second.bucket.tensors[name])


# ------------------------------------------------------------------ half-precision state ---

HALF_STATE = [pytest.param(BF16, None, id="bf16"), pytest.param(F16, None, id="fp16"),
              pytest.param(F32, BF16, id="fp32-bf16state")]
UPDATES_ALONE = [("adam_update",), ("adai_update",)]


@pytest.mark.parametrize("param_dtype, state_dtype", HALF_STATE)
@pytest.mark.parametrize("program", UPDATES_ALONE, ids="+".join)
def test_half_state_update_sets_v_sums_to_what_it_stored(backend, program, param_dtype,
                                                         state_dtype):
    """With bf16/fp16 state the update sets each running sum to the float64 sum of the
    exp_avg_sq it stored, rounding included, whatever the sum held before (here a value no
    sum can have): rounded state drifts from the linear identity, so the next reduction must
    start from what was stored. (With a reduction first, every adam/adai case of this file
    checks the same through op_cases.)"""
    case = BucketCase(program=program, param_dtype=param_dtype, state_dtype=state_dtype,
                      seed=12)
    reason = unavailable_reason(backend, "cpu", param_dtype, state_dtype or param_dtype)
    if reason is not None:
        pytest.skip(f"{backend}: {reason}")
    bucket = op_cases.make(case, backend)
    bucket.tensors["v_sums"] = [torch.tensor(-1.0, dtype=torch.float64)
                                for _ in bucket.tensors["v_sums"]]
    result = op_cases.run(backend, bucket)
    assert result.v_sums is not None, "the harness expects the stored sums here"
    op_cases.assert_matches_oracle(result)


@pytest.mark.parametrize("program", [("adam_update",), ("adam_step",), ("adai_update",)],
                         ids="+".join)
def test_half_state_found_inf_leaves_v_sums(backend, program):
    """A skipped step writes no running sum either (the update's sums of stored v included)."""
    check(backend, BucketCase(program=program, found_inf=1.0, param_dtype=BF16, seed=13))


# ------------------------------------------------------------------ native only -------------

@native_only
@pytest.mark.parametrize("program, amsgrad, state_dtype", [
    pytest.param(("adam_reduce",), False, F32, id="reduce"),
    pytest.param(("adam_reduce",), True, F32, id="reduce-amsgrad"),
    pytest.param(("adam_update",), False, BF16, id="update-bf16state")])
def test_sums_independent_of_thread_count(program, amsgrad, state_dtype):
    """The reduction's sums, and the update's sums of stored bf16 v, are taken in chunks
    whose order does not depend on the threads."""
    case = BucketCase(program=program, shapes=((3 * 2 ** 17 + 5,), (4097,), (200, 300)),
                      hyper=dict(amsgrad=amsgrad), state_dtype=state_dtype, seed=7)
    results = []
    threads = torch.get_num_threads()
    try:
        for n in (1, 2, 3):
            torch.set_num_threads(n)
            results.append(op_cases.run("native", case).bucket.tensors)
    finally:
        torch.set_num_threads(threads)
    for tensors in results[1:]:
        for name in ("accum", "v_sums"):
            op_cases.assert_bitwise_equal(name, tensors[name], results[0][name])


CAPABILITY_CHECK = """
import sys, torch
sys.path.insert(0, {tests!r})
import op_cases
from op_cases import BucketCase
for case in (BucketCase(program=("adam_update",), hyper=dict(amsgrad=True), seed=8),
             BucketCase(param_dtype=torch.bfloat16, seed=8),
             BucketCase(param_dtype=torch.float16, seed=8),
             BucketCase(program=("adam_reduce", "adai_update"), seed=8),
             BucketCase(program=("sgd_update",), param_dtype=torch.bfloat16, seed=8)):
    op_cases.assert_matches_oracle(op_cases.run("native", case))
"""


@native_only
@pytest.mark.parametrize("capability", ["default", "avx2", "avx512"])
def test_every_cpu_capability_matches_the_oracle(capability):
    """The portable build and the AVX2 / AVX-512 builds (where this CPU has them) run the
    same rules (swd/rules.h) but not bitwise alike: g++ contracts multiply-adds into FMA in
    the AVX2 / AVX-512 builds, and the portable build has no FMA. Each is held to the oracle,
    in its own process (the build is chosen once per process)."""
    script = CAPABILITY_CHECK.format(tests=os.path.dirname(os.path.abspath(__file__)))
    env = {**os.environ, "SWD_KERNELS_CPU_CAPABILITY": capability}
    run = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True)
    if run.returncode != 0 and "lacks" in run.stderr:
        pytest.skip(f"this CPU lacks {capability}")
    assert run.returncode == 0, run.stderr[-3000:]


@native_only
def test_backend_is_registered_for_cpu():
    assert "native" in swd_kernels.available_backends("cpu")
    assert torch._C._dispatch_has_kernel_for_dispatch_key("swd_native::adam_step", "CPU")


STORAGE_DTYPES = [torch.float32, torch.bfloat16, torch.float16, torch.float64]


@native_only
@pytest.mark.parametrize("state_dtype", STORAGE_DTYPES, ids=str)
@pytest.mark.parametrize("param_dtype", STORAGE_DTYPES, ids=str)
def test_dtype_table_is_what_the_kernels_take(param_dtype, state_dtype):
    """The backend choice reads the native dtype table from the library itself
    (csrc/swd/dtype_dispatch.h): a pair it calls available runs, and a pair it refuses is
    refused by the kernels with the message that names the dtypes and the fix."""
    available = unavailable_reason("native", "cpu", param_dtype, state_dtype) is None
    bucket = op_cases.make(BucketCase(program=("adam_update",), shapes=((5,), (3, 4)),
                                      param_dtype=param_dtype, state_dtype=state_dtype))
    op = ops.get("native", "adam_update")
    if available:
        op(**bucket.args("adam_update"))
    else:
        with pytest.raises(RuntimeError, match=r"these kernels (take|keep).*backend='torch'"):
            op(**bucket.args("adam_update"))
