"""Bad input gets a clear ValueError/TypeError/RuntimeError naming the parameter and the fix,
raised before anything changes: after a failed step or op call every tensor is bitwise as it
was. Optimizer level (constructor arguments, param groups, grads, backends) and op level (the
op contract's checks, tests/op_cases.py's buckets)."""
from __future__ import annotations

import copy

import pytest
import torch

import op_cases
import swd_kernels
from op_cases import BucketCase
from swd_kernels import ops
from swd_kernels.backends import unavailable_reason
from swd_kernels.ops import BACKEND_NAMES

ADAMS, SGDS, ADAIS = swd_kernels.AdamS, swd_kernels.SGDS, swd_kernels.AdaiS


def params(seed=0):
    generator = torch.Generator().manual_seed(seed)
    return [torch.randn(s, generator=generator).requires_grad_() for s in [(5,), (4, 3)]]


@pytest.mark.parametrize("make, name", [
    (lambda ps: ADAMS(ps, lr=-1e-3), "lr"),
    (lambda ps: ADAMS(ps, eps=-1e-8), "eps"),
    (lambda ps: ADAMS(ps, weight_decay=-0.1), "weight_decay"),
    (lambda ps: ADAMS(ps, betas=(1.0, 0.999)), "beta1"),
    (lambda ps: ADAMS(ps, betas=(0.9, -0.1)), "beta2"),
    (lambda ps: ADAMS(ps, decay_power=-0.5), "decay_power"),
    (lambda ps: ADAMS(ps, decay_eps=-1.0), "decay_eps"),
    (lambda ps: swd_kernels.AMSGradS(ps, betas=(0.9, 1.5)), "beta2"),
    (lambda ps: SGDS(ps, lr=-0.1), "lr"),
    (lambda ps: SGDS(ps, lr=0.1, momentum=-0.5), "momentum"),
    (lambda ps: SGDS(ps, lr=0.1, weight_decay=-1.0), "weight_decay"),
    (lambda ps: SGDS(ps, lr=0.1, nesterov=True), "nesterov"),
    (lambda ps: SGDS(ps, lr=0.1, momentum=0.9, dampening=0.5, nesterov=True), "nesterov"),
    (lambda ps: SGDS(ps), "lr"),
    (lambda ps: ADAIS(ps), "lr"),
    (lambda ps: ADAIS(ps, lr=0.1, eps=0.0), "eps"),
    (lambda ps: ADAIS(ps, lr=0.1, eps=-1e-3), "eps"),
    (lambda ps: ADAIS(ps, lr=0.1, betas=(0.1, 1.0)), "beta2"),
    (lambda ps: ADAIS(ps, lr=0.1, weight_decay=-1.0), "weight_decay"),
    (lambda ps: ADAMS(ps, lr=torch.tensor(-1e-3)), "lr"),
    (lambda ps: ADAMS(ps, max_grad_norm=-1.0), "max_grad_norm"),
    (lambda ps: SGDS(ps, lr=0.1, max_grad_norm=0.0), "max_grad_norm"),
])
def test_bad_hyperparameter_is_named(make, name):
    with pytest.raises((ValueError, TypeError)) as error:
        make(params())
    assert name in str(error.value)


def test_missing_lr_in_one_group():
    ps = params()
    with pytest.raises(ValueError, match="lr"):
        SGDS([dict(params=ps[:1], lr=0.1), dict(params=ps[1:])])


def test_empty_parameter_list():
    for cls, kwargs in ((ADAMS, {}), (SGDS, dict(lr=0.1)), (ADAIS, dict(lr=0.1))):
        with pytest.raises(ValueError, match="empty parameter list"):
            cls([], **kwargs)


def test_complex_params_rejected():
    with pytest.raises(TypeError, match="complex|real"):
        ADAMS([torch.randn(3, dtype=torch.complex64, requires_grad=True)])


def test_unknown_backend_name():
    with pytest.raises(ValueError, match="backend"):
        ADAMS(params(), backend="cuda_magic")


def test_bad_backend_environment_variable(monkeypatch):
    monkeypatch.setenv("SWD_KERNELS_BACKEND", "nonsense")
    with pytest.raises(ValueError, match="SWD_KERNELS_BACKEND"):
        ADAMS(params())


UNAVAILABLE_ON_CPU = [b for b in BACKEND_NAMES if b not in swd_kernels.available_backends("cpu")]


@pytest.mark.parametrize("name", UNAVAILABLE_ON_CPU or ["none-unavailable"])
def test_unavailable_backend_is_explained(name, monkeypatch):
    if name == "none-unavailable":  # every backend runs on this CPU: use one that cannot
        name, device = "native", "meta"
    else:
        device = "cpu"
    p = torch.randn(4, device=device, requires_grad=True)
    with pytest.raises(RuntimeError, match=f"backend='{name}' is not available") as error:
        ADAMS([p], backend=name)
    assert "available" in str(error.value)
    monkeypatch.setenv("SWD_KERNELS_BACKEND", name)
    with pytest.raises(RuntimeError, match=name):
        ADAMS([p])


# ----- a failed step changes nothing ---------------------------------------------------------

def trained(make, backend, steps=3):
    ps = params(1)
    opt = make(ps, backend)
    generator = torch.Generator().manual_seed(2)
    for _ in range(steps):
        for p in ps:
            p.grad = torch.randn(p.shape, generator=generator)
        opt.step()
    for p in ps:
        p.grad = torch.randn(p.shape, generator=generator)
    return ps, opt


def snapshot(ps, opt):
    return [p.detach().clone() for p in ps], copy.deepcopy(opt.state_dict()["state"])


def assert_unchanged(ps, opt, before):
    values, state = before
    for p, v in zip(ps, values):
        assert torch.equal(p, v)
    now = opt.state_dict()["state"]
    assert now.keys() == state.keys()
    for index in state:
        assert now[index].keys() == state[index].keys()
        for key, value in state[index].items():
            assert torch.equal(now[index][key], value), (index, key)


FAMILIES = {
    "adams": lambda ps, b: ADAMS(ps, lr=1e-2, weight_decay=5e-2, backend=b),
    "amsgrads": lambda ps, b: ADAMS(ps, lr=1e-2, amsgrad=True, backend=b),
    "sgds": lambda ps, b: SGDS(ps, lr=1e-2, momentum=0.9, weight_decay=1e-2, backend=b),
    "adais": lambda ps, b: ADAIS(ps, lr=1e-2, weight_decay=1e-2, backend=b),
}


BAD_GROUP_VALUES = [("lr", -1.0, "lr"), ("weight_decay", -0.5, "weight_decay"),
                    ("betas", (0.9, 2.0), "beta"), ("momentum", 1.5, "momentum"),
                    ("eps", -1.0, "eps")]


@pytest.mark.parametrize("family, key, value, name", [
    pytest.param(family, key, value, name, id=f"{family}-{key}")
    for family in FAMILIES for key, value, name in BAD_GROUP_VALUES
    if (key == "momentum") == (family == "sgds") or key in ("lr", "weight_decay")])
def test_bad_group_value_after_steps_changes_nothing(backend, family, key, value, name):
    ps, opt = trained(FAMILIES[family], backend)
    before = snapshot(ps, opt)
    opt.param_groups[0][key] = value
    with pytest.raises(ValueError, match=name):
        opt.step()
    assert_unchanged(ps, opt, before)


def _sparse(p, generator):
    return torch.randn(p.shape, generator=generator).to_sparse()


def _wrong_dtype(p, generator):
    return torch.randn(p.shape, generator=generator).to(torch.float64)


def _wrong_shape(p, generator):
    return torch.randn(p.numel() + 1, generator=generator)


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("make_grad, message", [
    (_sparse, "sparse"), (_wrong_dtype, "dtype"), (_wrong_shape, "shape"),
], ids=["sparse", "dtype", "shape"])
def test_bad_grad_changes_nothing(backend, family, make_grad, message):
    """A bad grad on the second param fails the whole step before the first param moves."""
    ps, opt = trained(FAMILIES[family], backend)
    before = snapshot(ps, opt)
    generator = torch.Generator().manual_seed(3)
    bad = make_grad(ps[1], generator)
    if bad.is_sparse:
        ps[1].grad = bad
    else:  # torch's grad setter refuses a mismatch; .data does not check
        ps[1].grad.data = bad
    with pytest.raises(RuntimeError, match=message):
        opt.step()
    assert_unchanged(ps, opt, before)


@pytest.mark.parametrize("family", FAMILIES)
def test_all_zero_grads_on_the_first_step_stay_finite(backend, family):
    """v_bar = 0 on the first step: AdamS/AMSGradS apply no decay (never inf/NaN), AdaiS
    takes v_hat / v_bar as 1; params equal the oracle's."""
    from oracle import Oracle
    ps = params(4)
    opt = FAMILIES[family](ps, backend)
    group = {k: v for k, v in opt.param_groups[0].items() if k != "params"}
    kind = {"amsgrads": "adams"}.get(family, family)
    oracle = Oracle(kind, [dict(params=ps, **{k: group[k] for k in group
                                              if k in _ORACLE_KEYS[kind]})])
    for p in ps:
        p.grad = torch.zeros_like(p)
    opt.step()
    oracle.step([p.grad for p in ps])
    for p, e in zip(ps, oracle.params):
        assert torch.isfinite(p).all()
        assert torch.allclose(p.double(), e, rtol=1e-6, atol=0)
    if family == "adams":  # default decay_power 0.5 and v_bar = 0: nothing moves at all
        assert all(torch.equal(p.double(), e) for p, e in zip(ps, oracle.params))


_ORACLE_KEYS = {
    "adams": {"lr", "betas", "eps", "weight_decay", "amsgrad", "decay_power", "decay_eps",
              "maximize"},
    "sgds": {"lr", "momentum", "dampening", "weight_decay", "nesterov", "maximize"},
    "adais": {"lr", "betas", "eps", "weight_decay", "maximize"},
}


# ----- op level: the op contract's checks ---------------------------------------------------

def assert_refused(backend: str, op: str, args: dict, match: str) -> None:
    """The op raises an error matching ``match`` and leaves every tensor argument bitwise as
    it was."""
    before = {name: [t.clone() for t in value] if isinstance(value, list) else value.clone()
              for name, value in args.items()
              if isinstance(value, list) or isinstance(value, torch.Tensor)}
    with pytest.raises((RuntimeError, ValueError, TypeError), match=match):
        ops.get(backend, op)(**args)
    for name, value in before.items():
        op_cases.assert_bitwise_equal(name, args[name], value)


BAD_ACCUMS = [
    pytest.param(lambda: torch.zeros(2, dtype=torch.float64), id="two-numbers"),
    pytest.param(lambda: torch.zeros(5, dtype=torch.float64), id="five-numbers"),
    pytest.param(lambda: torch.zeros(4), id="float32"),
    pytest.param(lambda: torch.zeros(8, dtype=torch.float64)[::2], id="strided"),
    pytest.param(lambda: torch.zeros(2, 2, dtype=torch.float64).t(), id="transposed-2x2"),
]
ACCUM_OPS = [("adam_reduce", ("adam_reduce",)), ("adam_update", ("adam_update",)),
             ("adam_step", ("adam_step",)), ("adai_update", ("adai_update",))]


@pytest.mark.parametrize("op, program", ACCUM_OPS, ids=[op for op, _ in ACCUM_OPS])
@pytest.mark.parametrize("make_accum", BAD_ACCUMS)
def test_accum_must_hold_four_float64_numbers(backend, op, program, make_accum):
    """The op contract's accum: a contiguous float64 tensor of exactly 4 numbers on the
    bucket's device, or an error that says so (and nothing written, accum included)."""
    bucket = op_cases.make(BucketCase(program=program, shapes=((5,), (4097,), (3, 4))), backend)
    args = dict(bucket.args(op), accum=make_accum().normal_())
    assert_refused(backend, op, args, r"accum must be a contiguous float64 tensor of 4 "
                                      r"elements \[sum of v_hat, count, sum of g\^2, clip "
                                      r"term\] on cpu")


@pytest.mark.parametrize("op", ["adam_update", "adai_update"])
def test_half_state_update_needs_its_v_sums(backend, op):
    """With bf16 state an update writes the running sums (swd_kernels/ops.py): without one
    per parameter it refuses before writing anything."""
    if unavailable_reason(backend, "cpu", torch.bfloat16, torch.bfloat16) is not None:
        pytest.skip(f"{backend} takes no bf16 state")
    bucket = op_cases.make(BucketCase(program=(op,), shapes=((5,), (4097,), (3, 4)),
                                      param_dtype=torch.bfloat16), backend)
    args = dict(bucket.args(op), v_sums=bucket.args(op)["v_sums"][:1])
    assert_refused(backend, op, args,
                   r"v_sums has 1 tensors but there are 3 parameters; pass one per parameter")


_NATIVE = unavailable_reason("native", "cpu")


def _short(args):
    args["exp_avgs"] = args["exp_avgs"][:-1]


def _double_params(args):
    for name in ("params", "grads", "exp_avgs", "exp_avg_sqs"):
        args[name] = [t.double() for t in args[name]]


def _flat_state(args):
    args["exp_avg_sqs"] = [v.reshape(-1) for v in args["exp_avg_sqs"]]


def _other_layout(args):
    args["exp_avgs"] = [m.contiguous() for m in args["exp_avgs"]]


def _double_steps(args):
    args["state_steps"] = [s.double() for s in args["state_steps"]]


def _two_grad_scales(args):
    args["grad_scale"] = torch.ones(2)


def _half_grads(args):
    args["grads"] = [g.half() for g in args["grads"]]


def _strided_param(args):
    args["params"][0] = torch.randn(args["params"][0].numel() * 2)[::2]


@pytest.mark.skipif(_NATIVE is not None, reason=f"native backend: {_NATIVE}")
@pytest.mark.parametrize("op", ["adam_update", "adam_step"])
@pytest.mark.parametrize("spoil, match", [
    (_short, r"exp_avgs has 3 tensors but params has 4; pass one per parameter"),
    (_double_params, r"params have dtype Double; these kernels take float32, bfloat16 or "
                     r"float16 params \(use backend='torch' for other dtypes\)"),
    (_flat_state, r"exp_avg_sqs\[2\] has shape \[120\] but params\[2\] has shape "
                  r"\[2, 3, 4, 5\]; they must match"),
    (_other_layout, r"exp_avgs\[2\] has strides .* give them one memory layout"),
    (_double_steps, r"state_steps\[0\] must be a one-element Float tensor"),
    (_two_grad_scales, r"grad_scale must hold exactly one value"),
    (_half_grads, r"grads\[0\] has dtype Half, expected Float; one call takes one dtype "
                  r"per list"),
    (_strided_param, r"params\[0\] is not dense .* pass a contiguous copy"),
], ids=["list-length", "dtype", "shape", "layout", "step-dtype", "grad_scale-size",
        "mixed-dtypes", "not-dense"])
def test_native_refuses_a_bad_bucket(op, spoil, match):
    """The native ops check the whole bucket before writing (csrc/swd/op_checks.h): each
    message names the argument, its index and what to pass instead."""
    bucket = op_cases.make(BucketCase(program=(op,), shapes=((5,), (4097,), (2, 3, 4, 5),
                                                             (33, 65)),
                                      layout="channels_last"), "native")
    args = bucket.args(op)
    spoil(args)
    assert_refused("native", op, args, match)


@pytest.mark.parametrize("value, error", [(0.0, ValueError), (-1.0, ValueError),
                                          (float("inf"), ValueError), (float("nan"), ValueError),
                                          ("1.0", TypeError), (True, TypeError)])
def test_a_bad_max_grad_norm_is_refused_before_anything_changes(value, error):
    p = torch.randn(10, requires_grad=True)
    with pytest.raises(error, match="max_grad_norm"):
        ADAMS([p], max_grad_norm=value)
    opt = ADAMS([p])
    p.grad = torch.randn(10)
    before = p.detach().clone()
    opt.max_grad_norm = value
    with pytest.raises(error, match="max_grad_norm"):
        opt.step()
    assert torch.equal(p.detach(), before) and not opt.state
