"""The triton backend against the reference torch backend, run on CPU in Triton's interpreter.

Run: TRITON_INTERPRET=1 python -m pytest tests/test_triton.py -q
(the variable must be set before anything imports triton; this module sets it itself when it
is the first to import triton, e.g. `pytest tests/test_triton.py` alone or first).
"""
import os

os.environ.setdefault("TRITON_INTERPRET", "1")

import pytest  # noqa: E402
import torch  # noqa: E402

import swd_kernels  # noqa: E402
from oracle import Oracle  # noqa: E402  (tests/ is on sys.path: conftest.py)
from swd_kernels import ops  # noqa: E402

triton = pytest.importorskip("triton")
triton_backend = pytest.importorskip("swd_kernels.backends.triton")
import triton.language as tl  # noqa: E402
from swd_kernels.backends.triton import adam as triton_adam  # noqa: E402
from swd_kernels.backends.triton import chunking  # noqa: E402
from swd_kernels.backends.triton.common import TL_DTYPES, to_storage  # noqa: E402

if not triton_backend.kernels_interpreted():
    pytest.skip("another test module imported triton before TRITON_INTERPRET=1 was set, so "
                "these kernels are compiled, not interpreted: run this file in its own "
                "process (TRITON_INTERPRET=1 python -m pytest tests/test_triton.py)",
                allow_module_level=True)

SIZES = [(1,), (17,), (4097,), (3, 4, 5, 6)]  # the last one is made channels_last
TOL = {torch.float32: dict(rtol=2e-5, atol=1e-6),
       torch.bfloat16: dict(rtol=8e-3, atol=1e-3),  # one bf16 rounding step apart at most
       torch.float16: dict(rtol=1e-3, atol=1e-4)}


# The production sizes, before the fixture below shrinks them.
PRODUCTION_CHUNK, PRODUCTION_BLOCK = chunking.CHUNK, chunking.BLOCK


@pytest.fixture(autouse=True)
def small_chunks(monkeypatch):
    """Chunks of 1024 so that 4097 elements span five programs (tail included); a test that
    needs the production sizes sets them back on the same ``monkeypatch``."""
    monkeypatch.setattr(chunking, "CHUNK", 1024)
    monkeypatch.setattr(chunking, "BLOCK", 512)


def make_tensor(shape, dtype, gen, positive=False):
    t = torch.randn(shape, generator=gen)
    if positive:
        t = t.abs() * 1e-2
    t = t.to(dtype)
    if len(shape) == 4:
        t = t.contiguous(memory_format=torch.channels_last)
    return t


def make_bucket(kind, p_dtype=torch.float32, s_dtype=None, seed=0, sizes=SIZES):
    """Fresh random params, grads, states and step counts (t differs per tensor)."""
    s_dtype = s_dtype or p_dtype
    gen = torch.Generator().manual_seed(seed)
    b = dict(params=[make_tensor(s, p_dtype, gen) for s in sizes],
             grads=[make_tensor(s, p_dtype, gen) for s in sizes],
             state_steps=[torch.tensor(float(i % 3)) for i in range(len(sizes))])
    if kind == "adam":
        b["exp_avgs"] = [make_tensor(s, s_dtype, gen) * 0.1 for s in sizes]
        b["exp_avg_sqs"] = [make_tensor(s, s_dtype, gen, positive=True) for s in sizes]
        b["max_exp_avg_sqs"] = [v * 1.5 if i % 2 else v * 0.5
                                for i, v in enumerate(b["exp_avg_sqs"])]
        b["v_sums"] = [v.sum(dtype=torch.float64) for v in b["exp_avg_sqs"]]
    elif kind == "adai":
        b["exp_avgs"] = [make_tensor(s, s_dtype, gen) * 0.1 for s in sizes]
        b["exp_avg_sqs"] = [make_tensor(s, s_dtype, gen, positive=True) for s in sizes]
        b["beta1_prods"] = [torch.empty_like(v).copy_(torch.rand(s, generator=gen) * 0.9 + 0.05)
                            for s, v in zip(sizes, b["exp_avg_sqs"])]
        b["v_sums"] = [v.sum(dtype=torch.float64) for v in b["exp_avg_sqs"]]
    elif kind == "sgd":
        b["momentum_buffers"] = [make_tensor(s, s_dtype, gen) for s in sizes]
    b["accum"] = torch.tensor([3.0e-2, 100.0], dtype=torch.float64)  # an earlier bucket's share
    return b


def clone(bucket):
    return {k: [t.clone() for t in v] if isinstance(v, list) else v.clone()
            for k, v in bucket.items()}


def strides_of(t):
    return t.stride()


def assert_same(ref, out, names, dtype=torch.float32, exact=False):
    for name in names:
        for i, (r, o) in enumerate(zip(ref[name], out[name])):
            assert strides_of(r) == strides_of(o), name
            if exact:
                assert torch.equal(r, o), f"{name}[{i}] changed"
            else:
                tol = TOL[r.dtype] if r.dtype in TOL else TOL[dtype]
                torch.testing.assert_close(o, r, **tol, msg=lambda m: f"{name}[{i}]: {m}")


def amp(grad_scale, found_inf):
    return dict(grad_scale=None if grad_scale is None else torch.tensor(grad_scale),
                found_inf=None if found_inf is None else torch.tensor(found_inf))


def call(backend, name, bucket, **kwargs):
    args = {**{k: v for k, v in bucket.items() if k in ops.ARG_NAMES[name]}, **kwargs}
    ops.get(backend, name)(**args)


def test_backend_is_available_on_cpu_in_the_interpreter():
    assert "triton" in swd_kernels.available_backends("cpu")
    assert "interpreter" in triton_backend.unavailable_reason(torch.device("cuda"))


@triton.jit
def _store_rounded(source, target, n, DTYPE: tl.constexpr, BLOCK: tl.constexpr):
    offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    tl.store(target + offs, to_storage(tl.load(source + offs, mask=offs < n), DTYPE),
             mask=offs < n)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=["bf16", "fp16"])
def test_half_storage_rounds_to_nearest_even(dtype):
    """Every kernel stores through ``to_storage``: bitwise torch's (and the GPU's) fp32 -> half
    rounding, exact ties to even included. The interpreter's own bf16 cast truncates, which
    drifted bf16 params by one ulp per step against the oracle."""
    gen = torch.Generator().manual_seed(0)
    bits = torch.randint(-2 ** 31, 2 ** 31, (1 << 16,), generator=gen, dtype=torch.int64)
    spacing = torch.finfo(dtype).eps  # one ulp at 1
    ties = [1 + spacing / 2, 1 + 3 * spacing / 2, -(1 + spacing / 2), 2 - spacing / 4]
    special = [float("inf"), -float("inf"), float("nan"), 0.0, -0.0, 3.4e38, -3.4e38, 1e-40,
               70000.0, 65519.0, 65520.0]
    values = torch.cat([bits.to(torch.int32).view(torch.float32), torch.tensor(ties + special),
                        torch.randn(4096, generator=gen)])
    stored = torch.empty(values.shape, dtype=dtype)
    _store_rounded[(triton.cdiv(values.numel(), 4096),)](values, stored, values.numel(),
                                                         TL_DTYPES[dtype], 4096)
    expected = values.to(dtype)
    same = (stored.view(torch.int16) == expected.view(torch.int16)) | (
        stored.isnan() & expected.isnan())
    assert same.all(), (f"{(~same).sum().item()} values stored wrongly, e.g. "
                        f"{values[~same][:4].tolist()} -> {stored[~same][:4].tolist()}, "
                        f"not {expected[~same][:4].tolist()}")


# ------------------------------------------------------------------ AdamS / AMSGradS --------

@pytest.mark.parametrize("amsgrad", [False, True])
@pytest.mark.parametrize("grad_scale,found_inf", [(None, None), (1024.0, 0.0)])
def test_adam_reduce_matches_reference(amsgrad, grad_scale, found_inf):
    bucket = make_bucket("adam", seed=1)
    if grad_scale:
        bucket["grads"] = [g * grad_scale for g in bucket["grads"]]
    ref, out = clone(bucket), clone(bucket)
    kw = dict(beta2=0.999, amsgrad=amsgrad, **amp(grad_scale, found_inf))
    call("torch", "adam_reduce", ref, **kw)
    call("triton", "adam_reduce", out, **kw)
    torch.testing.assert_close(out["accum"], ref["accum"], rtol=5e-5, atol=0)
    assert out["accum"][1] == 100 + sum(g.numel() for g in bucket["grads"])
    for r, o in zip(ref["v_sums"], out["v_sums"]):
        torch.testing.assert_close(o, r, rtol=1e-5, atol=0)
    # the reduction only reads the grads and moments
    assert_same(bucket, out, ["grads", "exp_avg_sqs", "max_exp_avg_sqs", "state_steps"],
                exact=True)


ADAM_CASES = [
    dict(),
    dict(amsgrad=True),
    dict(maximize=True, decay_power=0.0),
    dict(lr_tensor=0.02, decay_power=0.3, decay_eps=1e-3),
    dict(grad_scale=512.0, found_inf=0.0, amsgrad=True),
]


def adam_kwargs(case):
    kw = dict(lr_tensor=None, lr=1e-2, beta1=0.9, beta2=0.999, weight_decay=0.1, eps=1e-8,
              decay_power=0.5, decay_eps=0.0, amsgrad=False, maximize=False,
              **amp(case.get("grad_scale"), case.get("found_inf")))
    kw.update({k: v for k, v in case.items() if k in kw and k not in ("grad_scale", "found_inf")})
    if case.get("lr_tensor") is not None:
        kw["lr_tensor"] = torch.tensor(case["lr_tensor"], dtype=torch.float64)
        kw["lr"] = 0.0
    return kw


ADAM_OUT = ["params", "exp_avgs", "exp_avg_sqs", "max_exp_avg_sqs", "state_steps"]


@pytest.mark.parametrize("op", ["adam_update", "adam_step"])
@pytest.mark.parametrize("case", ADAM_CASES, ids=lambda c: "-".join(c) or "plain")
def test_adam_matches_reference(op, case):
    bucket = make_bucket("adam", seed=2)
    if case.get("grad_scale"):
        bucket["grads"] = [g * case["grad_scale"] for g in bucket["grads"]]
    ref, out = clone(bucket), clone(bucket)
    kw = adam_kwargs(case)
    if op == "adam_update":  # both start from the same reduced accumulator
        call("torch", "adam_reduce", ref, beta2=kw["beta2"], amsgrad=kw["amsgrad"],
             grad_scale=kw["grad_scale"], found_inf=kw["found_inf"])
        out["accum"] = ref["accum"].clone()
    call("torch", op, ref, **kw)
    call("triton", op, out, **kw)
    assert_same(ref, out, ADAM_OUT + (["v_sums"] if op == "adam_step" else []))
    torch.testing.assert_close(out["accum"], ref["accum"], rtol=5e-5, atol=0)
    assert_same(bucket, out, ["grads"], exact=True)  # grads are never written


@pytest.mark.parametrize("p_dtype,s_dtype", [(torch.bfloat16, torch.float32),
                                             (torch.float16, torch.float16)])
def test_adam_half_precision_params(p_dtype, s_dtype):
    bucket = make_bucket("adam", p_dtype, s_dtype, seed=3)
    ref, out = clone(bucket), clone(bucket)
    kw = adam_kwargs(dict(amsgrad=True))
    call("torch", "adam_step", ref, **kw)
    call("triton", "adam_step", out, **kw)
    assert_same(ref, out, ADAM_OUT, dtype=p_dtype)
    assert all(o.dtype == s_dtype for o in out["exp_avgs"])
    # the update really moved the half-precision params
    assert not torch.equal(out["params"][2], bucket["params"][2])


def fp32_ulps(actual: torch.Tensor, expected: torch.Tensor, scale: torch.Tensor):
    """|actual - expected| in fp32 ulps of ``scale`` (the magnitude an element's arithmetic
    worked at, so that a result cancelling towards 0 is not judged by its own tiny ulp)."""
    _, exponent = torch.frexp(scale.double().abs())
    ulp = torch.ldexp(torch.ones_like(expected), exponent - 24)  # 2^-23 relative spacing
    return (actual.double() - expected).abs() / ulp


@pytest.mark.parametrize("decay_power,decay_eps", [(0.25, 0.0), (0.75, 0.0), (1.0, 0.0),
                                                   (0.25, 1e-3), (1.0, 1e-6), (0.5, 1e-3)])
def test_decay_power_is_formed_in_double(decay_power, decay_eps):
    """The decay factor 1 - lr*wd/(v_bar + decay_eps)^p is formed in float64 from double
    hyperparameters (rules.h's policy, docs/design.md §6) for every p and decay_eps, not just
    the default p = 0.5. One step from zero state against the float64 oracle, with v_bar
    handed over exactly, lr*wd/(...)^p = 0.5 and an eps so large that the step is ~1e-7 of
    the param: the decay alone sets every element, and an error in it shows in each one.
    Measured (2026-11-30): 0.5 ulp now (the final rounding); the earlier fp32 exp2/log2
    factor with fp32 lr and weight_decay was 1.5-15.5 ulps off on these cases."""
    gen = torch.Generator().manual_seed(11)
    sizes = [(4097,), (300,)]
    params = [torch.randn(s, generator=gen) for s in sizes]
    grads = [torch.randn(s, generator=gen) * 1e-4 for s in sizes]  # v_bar ~ 1e-8
    n = sum(g.numel() for g in grads)
    v_bar = sum((g.double() ** 2).sum().item() for g in grads) / n  # step 1: v_hat = g^2
    hyper = dict(lr=1e-3, eps=1.0, decay_power=decay_power, decay_eps=decay_eps)
    hyper["weight_decay"] = 0.5 / hyper["lr"] * (v_bar + decay_eps) ** decay_power
    oracle = Oracle("adams", [dict(params=params, **hyper)])
    oracle.step(grads)
    out = [p.clone() for p in params]
    call("triton", "adam_update", dict(
        params=out, grads=grads, exp_avgs=[torch.zeros(s) for s in sizes],
        exp_avg_sqs=[torch.zeros(s) for s in sizes], max_exp_avg_sqs=[],
        state_steps=[torch.tensor(0.0) for _ in sizes],
        accum=torch.tensor([v_bar * n, n], dtype=torch.float64)),
        lr_tensor=None, beta1=0.9, beta2=0.999, amsgrad=False, maximize=False,
        grad_scale=None, found_inf=None, **hyper)
    # in ulps of the decayed param p * decay = 0.5 p (at least lr, for params near 0)
    worst = max(fp32_ulps(o, e, torch.clamp(p.abs() * 0.5, min=hyper["lr"])).max().item()
                for o, e, p in zip(out, oracle.params, params))
    assert worst <= 1.0, f"params {worst:.2f} fp32 ulps from the float64 oracle"


def one_launch_step(bucket, kw):
    """``adam_step`` as the one-launch kernel with a single program (the interpreter runs
    programs one after another, so more would wait at the grid barrier forever)."""
    a = {k: v for k, v in {**bucket, **kw}.items() if k in ops.ARG_NAMES["adam_step"]}
    launch = triton_adam.adam_launch(
        a["params"], a["grads"], a["exp_avgs"], a["exp_avg_sqs"], a["max_exp_avg_sqs"],
        a["state_steps"], a["v_sums"], a["accum"], a["grad_scale"], a["found_inf"],
        a["amsgrad"])
    update_args = triton_adam.adam_update_args(
        a["params"], a["accum"], a["lr_tensor"], a["lr"], a["beta1"], a["beta2"],
        a["weight_decay"], a["eps"], a["decay_power"], a["decay_eps"], a["maximize"])
    triton_adam.adam_step_one_launch(launch, update_args, programs=1)


def test_one_launch_step_is_bitwise_the_two_launch_step():
    """The persistent-grid path (one program here: the interpreter runs programs in turn)."""
    bucket = make_bucket("adam", seed=4)
    two, one = clone(bucket), clone(bucket)
    kw = adam_kwargs(dict(amsgrad=False, lr_tensor=0.01))
    call("triton", "adam_step", two, **kw)
    one_launch_step(one, kw)
    assert_same(two, one, ADAM_OUT + ["v_sums"], exact=True)
    assert torch.equal(two["accum"], one["accum"])


def test_adam_step_is_deterministic():
    bucket = make_bucket("adam", seed=5)
    first, second = clone(bucket), clone(bucket)
    kw = adam_kwargs(dict())
    call("triton", "adam_step", first, **kw)
    call("triton", "adam_step", second, **kw)
    assert_same(first, second, ADAM_OUT + ["v_sums"], exact=True)
    assert torch.equal(first["accum"], second["accum"])


# ------------------------------------------------------------------ AdaiS and SGDS ----------

@pytest.mark.parametrize("case", [dict(), dict(maximize=True, lr_tensor=0.05),
                                  dict(grad_scale=256.0, found_inf=0.0)],
                         ids=["plain", "maximize-lr_tensor", "grad_scale"])
def test_adai_update_matches_reference(case):
    bucket = make_bucket("adai", seed=6)
    if case.get("grad_scale"):
        bucket["grads"] = [g * case["grad_scale"] for g in bucket["grads"]]
    ref, out = clone(bucket), clone(bucket)
    a = amp(case.get("grad_scale"), case.get("found_inf"))
    call("torch", "adam_reduce", ref, max_exp_avg_sqs=[], beta2=0.99, amsgrad=False, **a)
    call("triton", "adam_reduce", out, max_exp_avg_sqs=[], beta2=0.99, amsgrad=False, **a)
    torch.testing.assert_close(out["accum"], ref["accum"], rtol=5e-5, atol=0)
    out["accum"] = ref["accum"].clone()
    lr_tensor = case.get("lr_tensor")
    kw = dict(lr_tensor=None if lr_tensor is None else torch.tensor(lr_tensor),
              lr=0.0 if lr_tensor else 0.05, beta0=0.1, beta2=0.99, weight_decay=0.01,
              eps=1e-3, maximize=case.get("maximize", False), **a)
    call("torch", "adai_update", ref, **kw)
    call("triton", "adai_update", out, **kw)
    assert_same(ref, out, ["params", "exp_avgs", "exp_avg_sqs", "beta1_prods", "state_steps"])


@pytest.mark.parametrize("case", [
    dict(momentum=0.0, dampening=0.0),
    dict(momentum=0.9, dampening=0.0),
    dict(momentum=0.9, dampening=0.3, maximize=True),
    dict(momentum=0.8, nesterov=True, lr_tensor=0.02),
    dict(momentum=0.9, grad_scale=128.0, found_inf=0.0)],
    ids=lambda c: "-".join(f"{k}{v}" for k, v in c.items()))
def test_sgd_update_matches_reference(case):
    bucket = make_bucket("sgd", seed=7)  # steps 0, 1, 2, 0: first steps take buf = g
    if case.get("grad_scale"):
        bucket["grads"] = [g * case["grad_scale"] for g in bucket["grads"]]
    if not case["momentum"]:
        bucket["momentum_buffers"] = []
    ref, out = clone(bucket), clone(bucket)
    lr_tensor = case.get("lr_tensor")
    kw = dict(lr_tensor=None if lr_tensor is None else torch.tensor(lr_tensor),
              lr=0.0 if lr_tensor else 0.05, momentum=case["momentum"],
              dampening=case.get("dampening", 0.0), weight_decay=0.1,
              nesterov=case.get("nesterov", False), maximize=case.get("maximize", False),
              **amp(case.get("grad_scale"), case.get("found_inf")))
    call("torch", "sgd_update", ref, **kw)
    call("triton", "sgd_update", out, **kw)
    assert_same(ref, out, ["params", "momentum_buffers", "state_steps"])


# ------------------------------------------------------------------ found_inf ---------------

@pytest.mark.parametrize("op,kind", [("adam_reduce", "adam"), ("adam_update", "adam"),
                                     ("adam_step", "adam"), ("adai_update", "adai"),
                                     ("sgd_update", "sgd")])
def test_found_inf_leaves_everything_bitwise_unchanged(op, kind):
    bucket = make_bucket(kind, seed=8)
    out = clone(bucket)
    a = amp(2.0, 1.0)
    # amsgrad where v_sums do not matter (the update), else the v_sums are checked too
    kw = {"adam": adam_kwargs(dict(amsgrad=op == "adam_update")),
          "adai": dict(lr_tensor=None, lr=0.1, beta0=0.1, beta2=0.99, weight_decay=0.1,
                       eps=1e-3, maximize=False),
          "sgd": dict(lr_tensor=None, lr=0.1, momentum=0.9, dampening=0.0, weight_decay=0.1,
                      nesterov=False, maximize=False)}[kind]
    kw = {k: v for k, v in {**kw, **a}.items() if k in ops.ARG_NAMES[op]}
    call("triton", op, out, **kw)
    names = [k for k, v in bucket.items() if isinstance(v, list) and k != "v_sums"]
    assert_same(bucket, out, names, exact=True)
    if op != "adam_update" and kind == "adam":
        assert_same(bucket, out, ["v_sums"], exact=True)


# ------------------------------------------------------------------ optimizers --------------

def run_optimizer(make, backend, steps=5, seed=0):
    gen = torch.Generator().manual_seed(seed)
    params = [torch.nn.Parameter(torch.randn(s, generator=gen)) for s in [(17,), (33, 40)]]
    params.append(torch.nn.Parameter(
        torch.randn(2, 3, 4, 5, generator=gen).contiguous(memory_format=torch.channels_last)))
    opt = make(params, backend)
    grad_gen = torch.Generator().manual_seed(seed + 1)
    for _ in range(steps):
        opt.zero_grad(set_to_none=True)
        for p in params:
            p.grad = torch.randn(p.shape, generator=grad_gen).to(memory_format=(
                torch.channels_last if p.dim() == 4 else torch.contiguous_format))
        opt.step()
    return params, opt


OPTIMIZERS = {
    "AdamS": lambda ps, b: swd_kernels.AdamS(ps, lr=1e-2, weight_decay=0.1, backend=b),
    "AMSGradS-2groups": lambda ps, b: swd_kernels.AMSGradS(
        [{"params": ps[:1], "weight_decay": 0.0}, {"params": ps[1:]}], lr=1e-2,
        weight_decay=0.1, backend=b),
    "AdaiS": lambda ps, b: swd_kernels.AdaiS(ps, lr=0.1, weight_decay=1e-2, backend=b),
    "SGDS": lambda ps, b: swd_kernels.SGDS(ps, lr=0.1, momentum=0.9, weight_decay=1e-2,
                                           backend=b),
}


@pytest.mark.parametrize("name", list(OPTIMIZERS))
def test_optimizer_matches_torch_backend(name):
    built = chunking.stats["pointer_tables_built"]
    ref_params, ref_opt = run_optimizer(OPTIMIZERS[name], "torch")
    params, opt = run_optimizer(OPTIMIZERS[name], "triton")
    assert chunking.stats["pointer_tables_built"] > built
    for r, p in zip(ref_params, params):
        torch.testing.assert_close(p, r, rtol=1e-5, atol=1e-6)
        for key, value in ref_opt.state[r].items():
            torch.testing.assert_close(opt.state[p][key], value, rtol=1e-5, atol=1e-6)


def test_pointer_table_is_cached_and_rebuilt_when_grads_move():
    params = [torch.nn.Parameter(torch.randn(10)), torch.nn.Parameter(torch.randn(3, 7))]
    opt = swd_kernels.AdamS(params, backend="triton")
    grads = [torch.randn(p.shape) for p in params]
    for p, g in zip(params, grads):
        p.grad = g
    opt.step()
    built = chunking.stats["pointer_tables_built"]
    opt.step()  # same grad tensors: the cached tables serve
    assert chunking.stats["pointer_tables_built"] == built
    params[1].grad = torch.randn(3, 7)  # a new address: that step builds a new table
    before = params[1].detach().clone()
    opt.step()
    assert chunking.stats["pointer_tables_built"] > built
    assert not torch.equal(params[1].detach(), before)


def test_vectorizing_alignment_is_judged_on_the_element_lists_only():
    """0-dim step counts are read one value at a time: packed ones (4-byte offsets into one
    buffer) must not turn off the 16-byte vector loads of the params, grads and states."""
    tensors = [torch.randn(64), torch.randn(100)]
    packed_steps = list(torch.zeros(2).unbind())  # the second sits 4 bytes into the buffer
    layout = chunking.chunk_layout(tensors)
    _, aligned = chunking.pointer_table(layout, [tensors, packed_steps], element_rows=1)
    assert aligned
    shifted = torch.randn(101)[1:]  # 4 bytes past an aligned start
    _, aligned = chunking.pointer_table(chunking.chunk_layout([tensors[0], shifted]),
                                      [[tensors[0], shifted], packed_steps], element_rows=1)
    assert not aligned


@pytest.mark.parametrize("sizes", [[(0,), (1030,), (0, 3)], [(0,)]],
                         ids=["some-empty", "all-empty"])
def test_empty_tensors_take_part_in_the_step(sizes):
    """0-element tensors own no chunk (an all-empty bucket launches one idle program), yet
    their steps advance and they count in the global mean like the reference's."""
    bucket = make_bucket("adam", seed=9, sizes=sizes)
    ref, out = clone(bucket), clone(bucket)
    kw = adam_kwargs(dict())
    call("torch", "adam_step", ref, **kw)
    call("triton", "adam_step", out, **kw)
    assert_same(ref, out, ADAM_OUT + ["v_sums"])
    torch.testing.assert_close(out["accum"], ref["accum"], rtol=5e-5, atol=0)
    assert [s.item() for s in out["state_steps"]] == [s.item() + 1 for s in bucket["state_steps"]]


@pytest.mark.slow
def test_production_chunks(monkeypatch):
    """At the production chunk and block sizes (the other tests shrink them): a bucket whose
    first tensor spans three chunks (the last a partial one, with a masked tail block), so
    programs of one tensor write several partials that the reduction must add up; then the
    one-launch kernel walks all five chunks with one program. Kept as small as that allows:
    the interpreter runs each chunk's 64 blocks one numpy op at a time."""
    monkeypatch.setattr(chunking, "CHUNK", PRODUCTION_CHUNK)
    monkeypatch.setattr(chunking, "BLOCK", PRODUCTION_BLOCK)
    sizes = [(2 * PRODUCTION_CHUNK + 5,), (PRODUCTION_CHUNK,), (3,)]
    bucket = make_bucket("adam", seed=12, sizes=sizes)
    ref, two, one = clone(bucket), clone(bucket), clone(bucket)
    kw = adam_kwargs(dict(decay_power=0.25, decay_eps=1e-6))
    call("torch", "adam_step", ref, **kw)
    call("triton", "adam_step", two, **kw)
    assert chunking.chunk_layout(two["grads"]).n_chunks == 5
    assert_same(ref, two, ADAM_OUT + ["v_sums"])
    torch.testing.assert_close(two["accum"], ref["accum"], rtol=5e-5, atol=0)
    one_launch_step(one, kw)
    assert_same(two, one, ADAM_OUT + ["v_sums"], exact=True)
    assert torch.equal(two["accum"], one["accum"])
