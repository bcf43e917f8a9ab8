"""One builder for op-level tests: a bucket case (shapes, dtypes, layout, step counts, grad
magnitudes, AMP, hyperparameters) becomes fresh random tensors, the argument dict of any op by
its schema name (``swd_kernels.ops.ARG_NAMES``), and the float64 results the op must produce,
from the oracle (tests/oracle.py) started at the very same values.

A run calls a *program* (the ops one optimizer step makes on one bucket, e.g.
``("adam_reduce", "adam_update")``) on a backend, once per call with fresh grads, and steps the
oracle beside it; ``assert_matches_oracle`` then holds every tensor of the bucket to the
tolerance table (tests/tolerance.py), the reduction's outputs (``v_sums`` and all four numbers
of ``accum``) to the float64 sums, the step counts exactly, and the grads and layouts to being
untouched.
"""
from __future__ import annotations

import copy
import math
from dataclasses import dataclass, field, replace

import torch

from oracle import Oracle
from problems import INTERPRETED_TRITON_MAX_NUMEL, interpreted
from swd_kernels import ops
from swd_kernels.backends import unavailable_reason
from tolerance import TIE_BAND, assert_close, assert_sums_close, tolerance_for

F64 = torch.float64
HALF = (torch.bfloat16, torch.float16)

# 1 element, a block boundary (4097), 2^15 + 3 (two native CPU chunks and a tail; with the
# rest, past the 32,768 elements from which native splits a bucket over threads), a 4-D
# weight, an empty tensor and a matrix.
STANDARD_SHAPES = ((1,), (4097,), (2 ** 15 + 3,), (8, 6, 5, 3), (0,), (33, 65))
LAYOUTS = ("contiguous", "channels_last", "transposed", "unaligned")

# Op hyperparameters per family: decay large enough to see (lr * wd = 1e-3 a step).
HYPER = {
    "adam": dict(lr=1e-2, beta1=0.9, beta2=0.999, weight_decay=0.1, eps=1e-8, decay_power=0.5,
                 decay_eps=0.0, amsgrad=False, maximize=False),
    "adai": dict(lr=1e-2, beta0=0.1, beta2=0.99, weight_decay=0.1, eps=1e-3, maximize=False),
    "sgd": dict(lr=1e-2, momentum=0.9, dampening=0.0, weight_decay=0.1, nesterov=False,
                maximize=False),
}
ORACLE_KIND = {"adam": "adams", "adai": "adais", "sgd": "sgds"}
# the schemas' state lists and the oracle's (torch's) state keys
STATE_KEYS = {"exp_avgs": "exp_avg", "exp_avg_sqs": "exp_avg_sq",
              "max_exp_avg_sqs": "max_exp_avg_sq", "beta1_prods": "beta1_prod",
              "momentum_buffers": "momentum_buffer"}
REDUCING = "adam_reduce", "adam_step"  # the ops that add to accum and write v_sums
# ... and with half-precision state (no amsgrad) the updates set v_sums to what they stored
FAMILY_OF = {"adam_update": "adam", "adam_step": "adam", "adai_update": "adai",
             "sgd_update": "sgd"}


@dataclass(frozen=True)
class BucketCase:
    """One bucket as the ops see it, and what a run does with it."""
    program: tuple[str, ...] = ("adam_step",)  # the ops of one step, in order
    shapes: tuple = STANDARD_SHAPES
    param_dtype: torch.dtype = torch.float32
    state_dtype: torch.dtype | None = None    # None: the param dtype
    # channels_last applies to the 4-D tensors, transposed to the 2-D ones (dense, not
    # contiguous), unaligned to every tensor (its data one element past its buffer's start)
    layout: str = "contiguous"
    steps: tuple[int, ...] | None = None       # state_steps before the run; None: i % 3
    grad_magnitude: float | tuple[float, ...] = 1.0  # grads ~ N(0, m^2), one m or one per tensor
    grad_scale: float | None = None            # AMP: grads are stored multiplied by it
    found_inf: float | None = None
    lr_tensor: float | None = None             # given: the op's lr tensor, and lr is 123.0
    hyper: dict = field(default_factory=dict)  # over HYPER[family]
    # accum before the step (an earlier bucket's share): v_hat sum (as a multiple of this
    # bucket's mean v_hat times the count), count, sum of g^2, clip term
    prior: tuple[float, float, float, float] = (2.0, 100.0, 3.0, 0.5)
    calls: int = 1                             # steps run, fresh grads each
    seed: int = 0

    @property
    def family(self) -> str:
        """Whose state the bucket holds: its update's family (adam_reduce alone: AdamS's)."""
        return next((FAMILY_OF[name] for name in self.program if name in FAMILY_OF), "adam")

    @property
    def hyperparameters(self) -> dict:
        return {**HYPER[self.family], **self.hyper}

    @property
    def amsgrad(self) -> bool:
        return self.hyperparameters.get("amsgrad", False)


def for_backend(case: BucketCase, backend: str) -> BucketCase:
    """Triton's CPU interpreter runs one program at a time: there, tensors past
    problems.INTERPRETED_TRITON_MAX_NUMEL elements shrink to it (still no multiple of a
    block)."""
    if not interpreted(backend):
        return case
    shapes = tuple(s if math.prod(s) <= INTERPRETED_TRITON_MAX_NUMEL
                   else (INTERPRETED_TRITON_MAX_NUMEL,) for s in case.shapes)
    return replace(case, shapes=shapes)


def laid_out(values: torch.Tensor, dtype: torch.dtype, layout: str) -> torch.Tensor:
    """``values`` stored in ``dtype`` with ``layout`` (see BucketCase.layout)."""
    if layout not in LAYOUTS:
        raise ValueError(f"layout must be one of {LAYOUTS}, got {layout!r}")
    values = values.to(dtype)
    if layout == "channels_last" and values.dim() == 4:
        return values.contiguous(memory_format=torch.channels_last)
    if layout == "transposed" and values.dim() == 2:
        return values.t().contiguous().t()
    if layout == "unaligned":
        buffer = torch.empty(values.numel() + 1, dtype=dtype)
        return buffer[1:].view(values.shape).copy_(values)
    return values.contiguous()


class Bucket:
    """The tensors of one case (``tensors``: the op arguments by schema name), the oracle
    started at the same values, and what the run expects after its calls."""

    def __init__(self, case: BucketCase):
        self.case = case
        self.generator = torch.Generator().manual_seed(case.seed)
        self.state_dtype = case.state_dtype or case.param_dtype
        shapes, count = case.shapes, len(case.shapes)
        magnitudes = case.grad_magnitude
        if not isinstance(magnitudes, tuple):
            magnitudes = (magnitudes,) * count
        self.magnitudes = magnitudes
        steps = case.steps if case.steps is not None else tuple(i % 3 for i in range(count))
        if len(steps) != count:
            raise ValueError(f"steps has {len(steps)} values for {count} shapes")
        hp = case.hyperparameters

        def drawn(scale_of, kind="normal", fresh=None):
            """float64 values of one state list: N(0, 1), |N(0, 1)| or U(0, 1) times
            ``scale_of(grad magnitude)``; a tensor on its first step holds ``fresh`` (the
            optimizer's new state) when given."""
            out = []
            for shape, m, step in zip(shapes, magnitudes, steps):
                if kind == "uniform":
                    x = torch.rand(shape, generator=self.generator, dtype=F64)
                else:
                    x = torch.randn(shape, generator=self.generator, dtype=F64)
                x = (x.abs() if kind == "positive" else x) * scale_of(m)
                out.append(x if fresh is None or step != 0 else torch.full_like(x, fresh))
            return out

        def stored(values):
            return [laid_out(x, self.state_dtype, case.layout) for x in values]

        t = {"params": [laid_out(torch.randn(s, generator=self.generator, dtype=F64),
                                 case.param_dtype, case.layout) for s in shapes]}
        t["grads"] = self.fresh_grads(t["params"])
        t["state_steps"] = [torch.tensor(float(s)) for s in steps]
        if case.family in ("adam", "adai"):
            t["exp_avgs"] = stored(drawn(lambda m: 0.1 * m, fresh=0.0))
            v = drawn(lambda m: m * m, "positive", fresh=0.0)
            t["exp_avg_sqs"] = stored(v)
            t["v_sums"] = [x.to(F64).sum() for x in t["exp_avg_sqs"]]
        if case.family == "adam":
            # vmax above v by about what one step adds to v, so max() takes either side
            t["max_exp_avg_sqs"] = stored(
                [x + d for x, d in zip(v, drawn(lambda m: 2e-3 * m * m, "positive", 0.0))])
        if case.family == "adai":
            prods = [0.05 + 0.9 * u for u in drawn(lambda m: 1.0, "uniform")]
            t["beta1_prods"] = stored([torch.ones_like(p) if step == 0 else p
                                       for p, step in zip(prods, steps)])
        if case.family == "sgd":  # on a first step the buffer is not read: any value
            t["momentum_buffers"] = stored(drawn(lambda m: m))
        self.tensors = t
        self.prior = self._prior_accum(hp, steps)
        t["accum"] = self.prior.clone()
        self.oracle = self._started_oracle(hp, steps)

    # ----- building ---------------------------------------------------------------------
    def fresh_grads(self, params) -> list[torch.Tensor]:
        """New random grads like ``params`` (times grad_scale, as a GradScaler leaves them)."""
        scale = self.case.grad_scale or 1.0
        return [laid_out(torch.randn(p.shape, generator=self.generator, dtype=F64) * m * scale,
                         p.dtype, self.case.layout) for p, m in zip(params, self.magnitudes)]

    def _prior_accum(self, hp, steps) -> torch.Tensor:
        """accum as an earlier bucket left it: ``prior[0]`` times this bucket's mean v_hat
        per element over ``prior[1]`` elements, so v_bar differs from this bucket's own."""
        prior = torch.tensor(self.case.prior, dtype=F64)
        if self.case.family == "sgd":
            return prior
        beta2 = hp["beta2"]
        total = sum((v.to(F64) / (1 - beta2 ** (s + 1))).sum().item()
                    for v, s in zip(self.tensors["exp_avg_sqs"], steps))
        count = sum(v.numel() for v in self.tensors["exp_avg_sqs"])
        prior[ops.VHAT_SUM] = self.case.prior[0] * total / max(count, 1) * prior[ops.COUNT]
        return prior

    def _started_oracle(self, hp, steps) -> Oracle:
        case = self.case
        if case.family == "adam":
            oracle_hp = dict(lr=hp["lr"], betas=(hp["beta1"], hp["beta2"]), eps=hp["eps"],
                             weight_decay=hp["weight_decay"], amsgrad=hp["amsgrad"],
                             decay_power=hp["decay_power"], decay_eps=hp["decay_eps"],
                             maximize=hp["maximize"])
        elif case.family == "adai":
            oracle_hp = dict(lr=hp["lr"], betas=(hp["beta0"], hp["beta2"]), eps=hp["eps"],
                             weight_decay=hp["weight_decay"], maximize=hp["maximize"])
        else:
            oracle_hp = {k: hp[k] for k in ("lr", "momentum", "dampening", "weight_decay",
                                            "nesterov", "maximize")}
        if case.lr_tensor is not None:
            oracle_hp["lr"] = case.lr_tensor
        oracle = Oracle(ORACLE_KIND[case.family], [dict(params=self.tensors["params"],
                                                        **oracle_hp)],
                        param_dtype=_storage(case.param_dtype),
                        state_dtype=_storage(self.state_dtype), track_rounding=True)
        for i, step in enumerate(steps):
            oracle.set_state(i, step, **{key: self.tensors[name][i]
                                         for name, key in STATE_KEYS.items()
                                         if name in self.tensors and self.uses(name)})
        return oracle

    def uses(self, name: str) -> bool:
        """Whether the family's op reads list ``name`` (vmax only with amsgrad, buffers only
        with momentum)."""
        hp = self.case.hyperparameters
        if name == "max_exp_avg_sqs":
            return self.case.amsgrad
        if name == "momentum_buffers":
            return hp["momentum"] != 0
        return True

    # ----- calling ----------------------------------------------------------------------
    def args(self, op: str) -> dict:
        """The keyword arguments of ``op`` on this bucket (lists a family does not use are
        empty, as the optimizers pass them)."""
        case, t = self.case, self.tensors
        values = {name: (t[name] if self.uses(name) else []) for name in t}
        for name in STATE_KEYS:
            values.setdefault(name, [])
        if case.amsgrad:
            values["v_sums"] = []  # AMSGradS keeps no running sums
        values.update(case.hyperparameters)
        values.setdefault("amsgrad", False)
        values["lr_tensor"] = None
        if case.lr_tensor is not None:
            values.update(lr_tensor=torch.tensor(case.lr_tensor, dtype=F64), lr=123.0)
        values["grad_scale"] = None if case.grad_scale is None else torch.tensor(
            case.grad_scale)
        values["found_inf"] = None if case.found_inf is None else torch.tensor(case.found_inf)
        return {name: values[name] for name in ops.ARG_NAMES[op]}

    def v_bar_share(self) -> tuple[float, int]:
        """The earlier bucket's (sum of v_hat, count), as the oracle takes it."""
        return self.prior[ops.VHAT_SUM].item(), int(self.prior[ops.COUNT].item())

    def follow_ties(self) -> None:
        """Where the oracle's last stored value was a rounding tie, check the backend's is a
        rounding of it and let the oracle continue from it (tests/tolerance.py)."""
        for i, param in enumerate(self.tensors["params"]):
            self.oracle.follow(i, "params", param, TIE_BAND)
            for name, key in STATE_KEYS.items():
                if name in self.tensors and self.uses(name):
                    self.oracle.follow(i, key, self.tensors[name][i], TIE_BAND)

    def snapshot(self) -> dict:
        """Copies of every tensor (the lists and accum), bitwise."""
        return {k: [x.clone() for x in v] if isinstance(v, list) else v.clone()
                for k, v in self.tensors.items()}


def _storage(dtype):
    """The rounding the oracle must emulate for a storage dtype: none for fp32 and float64."""
    return dtype if dtype in HALF else None


@dataclass
class Run:
    """A bucket after ``case.calls`` steps of its program on ``backend``, and what was
    expected: ``before`` (the inputs of the last call), ``accum`` (float64, or None where
    found_inf lets it be anything) and ``v_sums``."""
    backend: str
    bucket: Bucket
    before: dict
    accum: torch.Tensor | None
    v_sums: list[torch.Tensor] | None


def make(case: BucketCase, backend: str | None = None) -> Bucket:
    """Fresh tensors for ``case`` (sized for ``backend``: see ``for_backend``)."""
    return Bucket(for_backend(case, backend) if backend else case)


def run(backend: str, case: BucketCase | Bucket) -> Run:
    """Run the case's program ``case.calls`` times on ``backend`` and step the oracle
    beside it."""
    reason = unavailable_reason(backend, "cpu")  # also loads the backend's ops
    assert reason is None, f"backend {backend!r}: {reason}"
    bucket = case if isinstance(case, Bucket) else make(case, backend)
    return _calls(backend, bucket)


def v_bar_of(case: BucketCase, sized_for: str) -> float:
    """The mean the first call of ``case`` reads (tensors sized as for backend
    ``sized_for``): the oracle's, with the earlier bucket's share."""
    bucket = make(case, sized_for)
    probe = copy.deepcopy(bucket.oracle)
    probe.step(bucket.tensors["grads"], grad_scale=case.grad_scale,
               v_bar_share=bucket.v_bar_share())
    return next(iter(probe.last_v_bars.values()))


def oracle_only(case: BucketCase, sized_for: str) -> Oracle:
    """The oracle of ``case`` (tensors sized as for backend ``sized_for``) after the case's
    calls, no backend run: e.g. for a case with a planted error in a hyperparameter."""
    return _calls(None, make(case, sized_for)).bucket.oracle


def _calls(backend: str | None, bucket: Bucket) -> Run:
    case = bucket.case
    result = None
    for call in range(case.calls):
        if call:
            bucket.tensors["grads"] = bucket.fresh_grads(bucket.tensors["params"])
        result = _one_call(backend, bucket)
    return result


def _one_call(backend: str | None, bucket: Bucket) -> Run:
    """One step: the oracle's first (its reduction also gives the accum that an update alone
    reads), then the backend's ops, then the rounding ties followed."""
    case, t = bucket.case, bucket.tensors
    t["accum"] = bucket.prior.clone()
    skipped = case.found_inf not in (None, 0.0)
    reduces = any(name in REDUCING for name in case.program)
    updates = case.program != ("adam_reduce",)
    # a program that only reduces moves nothing: the oracle's pass 1 runs on a copy
    stepped = bucket.oracle if updates else copy.deepcopy(bucket.oracle)
    stepped.step(t["grads"], grad_scale=case.grad_scale, found_inf=skipped,
                 v_bar_share=bucket.v_bar_share())
    accum = v_sums = None
    if case.family != "sgd" and not skipped:
        accum, v_sums = _reduction(bucket, stepped.last_v_hat_sums)
        if not reduces:  # an update alone reads the mean the reduction would have left
            t["accum"] = accum
    if case.amsgrad or not reduces:
        v_sums = None  # not written
    before = bucket.snapshot()
    if backend is not None:
        for name in case.program:
            ops.get(backend, name)(**bucket.args(name))
        if updates and stores_v_sums(bucket) and not skipped:
            # what the backend stored, summed in float64 (its exp_avg_sqs are held to the
            # oracle's on their own)
            v_sums = [v.to(F64).sum().item() for v in t["exp_avg_sqs"]]
        if updates:
            bucket.follow_ties()
    return Run(backend, bucket, before, accum, v_sums)


def stores_v_sums(bucket: Bucket) -> bool:
    """Whether the bucket's update sets v_sums to the sums of the exp_avg_sq it stores
    (swd_kernels/ops.py: half-precision state, no amsgrad)."""
    return (bucket.case.family in ("adam", "adai") and bucket.state_dtype in HALF
            and not bucket.case.amsgrad)


def _reduction(bucket: Bucket, v_hat_sums: dict):
    """accum after this bucket's reduction, and the new v_sums, in float64 from the oracle's
    v_hat and the contract's sums: accum += [sum of v_hat, count, sum of g^2,
    sum of (1-beta2) G_i / (1-beta2^t_i)] where G_i is the sum of (grad / grad_scale)^2 of
    tensor i (the clip term only without amsgrad); v_sums[i] = beta2 v_sums[i] + (1-beta2) G_i."""
    t, case = bucket.tensors, bucket.case
    beta2, scale = case.hyperparameters["beta2"], case.grad_scale or 1.0
    accum = bucket.prior.clone()
    v_sums = []
    for i, (g, old) in enumerate(zip(t["grads"], t["v_sums"])):
        step = t["state_steps"][i].item() + 1
        grad_sq = ((g.to(F64) / scale) ** 2).sum().item()
        accum[ops.VHAT_SUM] += v_hat_sums[i]
        accum[ops.COUNT] += g.numel()
        accum[ops.GRAD_SQ_SUM] += grad_sq
        if not case.amsgrad:
            accum[ops.CLIP_TERM] += (1 - beta2) * grad_sq / (1 - beta2 ** step)
        v_sums.append(beta2 * old.item() + (1 - beta2) * grad_sq)
    return accum, v_sums


# ----- checks ---------------------------------------------------------------------------

def assert_matches_oracle(result: Run, oracle: Oracle | None = None) -> None:
    """Every tensor of the bucket against the oracle (params with the count of differing
    elements where the table has one), the step counts exactly, ``v_sums`` and ``accum`` to
    their float64 sums; grads never written; layouts unchanged. ``oracle``: another one to
    hold the tensors to (see ``oracle_only``), e.g. one with a planted error."""
    bucket, before = result.bucket, result.before
    case, t = bucket.case, bucket.tensors
    oracle = oracle or bucket.oracle
    _assert_layouts_kept(t, before)
    assert all(torch.equal(g, b) for g, b in zip(t["grads"], before["grads"])), (
        "the grads were written")
    skipped = case.found_inf not in (None, 0.0)
    if skipped:
        for name, tensors in t.items():
            if name != "accum":
                assert_bitwise_equal(name, tensors, before[name])
        return
    groups = oracle.groups
    n = len(t["params"])
    expected_steps = [oracle.state[i]["step"] for i in range(n)]
    if case.program == ("adam_reduce",):
        for name, tensors in t.items():
            if name not in ("accum", "v_sums"):
                assert_bitwise_equal(name, tensors, before[name])
    else:
        assert [s.item() for s in t["state_steps"]] == expected_steps, "state_steps"
        scales = [oracle.peaks[i]["params"] for i in range(n)]
        assert_close("params", t["params"], oracle.params, case.param_dtype,
                     tolerance_for(oracle.kind, case.param_dtype, groups, steps=case.calls),
                     are_params=True, scales=scales)
        for name, key in STATE_KEYS.items():
            if name in t and bucket.uses(name):
                assert_close(name, t[name], [oracle.state[i][key] for i in range(n)],
                             bucket.state_dtype,
                             tolerance_for(oracle.kind, bucket.state_dtype, groups,
                                           steps=case.calls),
                             scales=[oracle.peaks[i][key] for i in range(n)])
    if result.v_sums is not None:
        assert_sums_close("v_sums", t["v_sums"], result.v_sums)
    if result.accum is not None:
        assert_accum_close(t["accum"], result.accum, bucket.prior)


def assert_accum_close(actual: torch.Tensor, expected: torch.Tensor,
                       prior: torch.Tensor) -> None:
    """All four numbers: the count exactly, the sums by the table's rule for float64 sums of
    fp32 terms; each must also have moved by this bucket's share when it has one."""
    assert actual.dtype == F64 and actual.numel() == ops.ACCUM_SIZE, (
        f"accum is {actual.dtype} of {actual.numel()} numbers")
    assert actual[ops.COUNT] == expected[ops.COUNT], (
        f"accum[count] {actual[ops.COUNT].item()} != {expected[ops.COUNT].item()}")
    names = {ops.VHAT_SUM: "accum[sum of v_hat]", ops.GRAD_SQ_SUM: "accum[sum of g^2]",
             ops.CLIP_TERM: "accum[clip term]"}
    for index, name in names.items():
        if expected[index] == prior[index]:  # nothing to add: untouched (amsgrad's clip term)
            assert actual[index] == prior[index], (
                f"{name} changed: {actual[index].item()!r}, expected {prior[index].item()!r}")
            continue
        # the bucket's share, against its own size (the prior is exact on both sides)
        assert_sums_close(name, [actual[index] - prior[index]],
                          [(expected[index] - prior[index]).item()])


def assert_bitwise_equal(name: str, actual, expected) -> None:
    pairs = zip(actual, expected) if isinstance(actual, list) else [(actual, expected)]
    for i, (a, b) in enumerate(pairs):
        assert a.dtype == b.dtype and a.shape == b.shape, f"{name}[{i}] changed dtype/shape"
        assert torch.equal(a, b), f"{name}[{i}] changed"


def _assert_layouts_kept(tensors: dict, before: dict) -> None:
    for name, value in tensors.items():
        if not isinstance(value, list):
            continue
        for i, (a, b) in enumerate(zip(value, before[name])):
            assert a.stride() == b.stride(), f"{name}[{i}]: the layout changed"
