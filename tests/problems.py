"""Random training problems and the side-by-side run of an optimizer and the oracle.

A problem is a set of param groups (hyperparameters per group) and, per step, fresh random
grads, some of them missing. ``run_against_oracle`` steps a ``swd_kernels`` optimizer and the
float64 oracle on the very same grads; ``assert_matches_oracle`` then compares params, every
state key and the step counts by the tolerance table.
"""
from __future__ import annotations

import math
import os
from dataclasses import dataclass, field, replace

import torch

import swd_kernels
from oracle import Oracle, state_keys
from tolerance import SUM_RELATIVE, TIE_BAND, assert_close, tolerance_for

OPTIMIZERS = {"adams": swd_kernels.AdamS, "sgds": swd_kernels.SGDS, "adais": swd_kernels.AdaiS}
HALF = (torch.bfloat16, torch.float16)


@dataclass
class Param:
    """How one parameter is made and fed."""
    shape: tuple
    grad_scale: float = 1.0          # grads of this param are N(0, grad_scale^2)
    channels_last: bool = False
    transposed: bool = False         # a dense, non-contiguous (2-D transposed) param
    grad_contiguous: bool = False    # grad in a different layout than the param
    missing_grad_every: int = 0      # no grad on steps where step % n == 0 (0: never missing)
    never_grad: bool = False
    dtype: torch.dtype | None = None  # None: the problem's dtype


@dataclass
class Group:
    params: list[Param]
    hyper: dict = field(default_factory=dict)  # lr, weight_decay, ... for this group


# The standard problem: several groups (different lr and wd, one with wd=0), sizes that defeat
# block boundaries (1, 4097, 2^16+3), a channels_last 4-D weight, a transposed weight, a
# param that misses its grad on some steps (the first included), one that never has a grad.
# Grad magnitudes differ per tensor, so per-tensor or per-group means differ from the global.
SEVERAL_GROUPS = [
    Group([Param((1,), 1.0), Param((4097,), 0.5),
           Param((8, 3, 5, 7), 2.0, channels_last=True),
           Param((129,), 1.5, missing_grad_every=3)],
          dict(lr=1e-2, weight_decay=5e-2)),
    Group([Param((2 ** 16 + 3,), 0.3), Param((65, 33), 1.0, transposed=True)],
          dict(lr=5e-3, weight_decay=1e-2)),
    Group([Param((17,), 3.0), Param((5,), never_grad=True)],
          dict(lr=2e-2, weight_decay=0.0)),
]

# One group of one dtype: a single bucket, the step runs as one fused op (adam_step).
ONE_GROUP = [
    Group([Param((1,), 1.0), Param((4097,), 0.5), Param((8, 3, 5, 7), 2.0, channels_last=True),
           Param((2 ** 16 + 3,), 0.3), Param((129,), 1.5, missing_grad_every=3)],
          dict(lr=1e-2, weight_decay=5e-2)),
]


# Triton's CPU interpreter runs programs one after another (~12 s for 20 steps of the standard
# problem): under it the 2^16+3 tensor shrinks to 2^12+3, still no multiple of a block size.
INTERPRETED_TRITON_MAX_NUMEL = 2 ** 12 + 3


def interpreted(backend: str) -> bool:
    return backend == "triton" and os.environ.get("TRITON_INTERPRET") == "1"


def sized_for(backend: str, groups: list[Group]) -> list[Group]:
    if not interpreted(backend):
        return groups

    def shrink(spec):
        numel = 1
        for n in spec.shape:
            numel *= n
        if numel <= INTERPRETED_TRITON_MAX_NUMEL:
            return spec
        return replace(spec, shape=(INTERPRETED_TRITON_MAX_NUMEL,))
    return [Group([shrink(s) for s in g.params], g.hyper) for g in groups]


def make_tensor(spec: Param, dtype, generator) -> torch.Tensor:
    shape = tuple(reversed(spec.shape)) if spec.transposed else spec.shape
    t = torch.randn(shape, generator=generator).to(spec.dtype or dtype)
    if spec.transposed:
        t = t.t()
    if spec.channels_last:
        t = t.contiguous(memory_format=torch.channels_last)
    return t


@dataclass
class Run:
    """An optimizer, the oracle and the params they share a history on."""
    optimizer: torch.optim.Optimizer
    oracle: Oracle
    params: list[torch.Tensor]
    specs: list[Param]
    generator: torch.Generator
    steps_done: int = 0


def start(kind: str, groups: list[Group], backend: str, dtype=torch.float32, state_dtype=None,
          seed: int = 0, emulate_storage: bool = True, mean_scope: str = "global",
          oracle_weight_decay_scale: float = 1.0, **options) -> Run:
    """Build params and the optimizer ``kind`` (``options`` apply to every group) and the
    oracle on float64 copies of the same params. ``oracle_weight_decay_scale`` gives the
    oracle a wrong weight decay, for tests that show a check would catch one."""
    generator = torch.Generator().manual_seed(seed)
    torch_groups, oracle_groups, specs = [], [], []
    for group in sized_for(backend, groups):
        params = [make_tensor(s, dtype, generator).requires_grad_() for s in group.params]
        specs += group.params
        torch_groups.append(dict(params=params, **group.hyper))
        hyper = dict(options, **group.hyper)
        if "weight_decay" in hyper:
            hyper["weight_decay"] *= oracle_weight_decay_scale
        oracle_groups.append(dict(params=params, **hyper))
    optimizer = OPTIMIZERS[kind](torch_groups, **options, state_dtype=state_dtype,
                                 backend=backend)
    params = [p for g in torch_groups for p in g["params"]]

    def storage(d):  # the rounding the oracle must emulate: none for fp32
        return d if (emulate_storage and d in HALF) else None
    oracle = Oracle(kind, oracle_groups,
                    param_dtype=[storage(p.dtype) for p in params],
                    state_dtype=[storage(state_dtype or p.dtype) for p in params],
                    mean_scope=mean_scope)
    return Run(optimizer, oracle, params, specs, generator)


def random_grads(run: Run) -> list[torch.Tensor | None]:
    """Fresh grads for the next step (``None`` where the spec says the grad is missing)."""
    grads = []
    for p, spec in zip(run.params, run.specs):
        missing = spec.never_grad or (
            spec.missing_grad_every and run.steps_done % spec.missing_grad_every == 0)
        if missing:
            grads.append(None)
            continue
        g = (torch.randn(p.shape, generator=run.generator) * spec.grad_scale).to(p.dtype)
        if spec.grad_contiguous or not (spec.channels_last or spec.transposed):
            grads.append(g.contiguous())
        else:  # autograd's layout: like the param
            grads.append(torch.empty_like(p).copy_(g))
    return grads


def step_both(run: Run, grads: list[torch.Tensor | None]) -> None:
    for p, g in zip(run.params, grads):
        p.grad = g
    run.optimizer.step()
    run.oracle.step(grads)
    run.steps_done += 1


def run_steps(run: Run, steps: int) -> Run:
    for _ in range(steps):
        step_both(run, random_grads(run))
    return run


def assert_running_sum(where: str, running: torch.Tensor, exp_avg_sq: torch.Tensor,
                       steps: float) -> None:
    """The float64 running sum equals the sum of the stored exp_avg_sq, up to rounding that
    b2 ~ 1 carries on from step to step: each step rounds each stored v up to 3 times (b2*v,
    (1-b2)*g^2, their sum) and a backend may sum g^2 in fp32 (the torch backend's norm: about
    log2(numel) roundings), so fp32 state may drift (3 + log2(numel)) ulps a step.
    Half-precision state rounds far more, so each update sets the sums to those of the v it
    stored (swd_kernels/ops.py): they then differ only by how a backend adds those values up
    (tolerance.SUM_RELATIVE, fp32 blocks added in float64)."""
    assert running.dtype == torch.float64 and running.dim() == 0, where
    stored = exp_avg_sq.double().sum()
    per_step = 3 + math.log2(max(exp_avg_sq.numel(), 1))
    rel = {torch.float16: SUM_RELATIVE, torch.bfloat16: SUM_RELATIVE,
           torch.float32: per_step * steps * 2.0 ** -24,
           torch.float64: per_step * steps * 2.0 ** -53}[exp_avg_sq.dtype]
    assert abs(running.item() - stored.item()) <= rel * stored.abs().item(), (
        f"{where}: running sum {running.item()!r} != sum of exp_avg_sq {stored.item()!r}")


def assert_matches_oracle(run: Run) -> None:
    """Params, every state key and the step counts of the optimizer against the oracle."""
    optimizer, oracle = run.optimizer, run.oracle
    by_dtype: dict[tuple, tuple[list, list, list]] = {}

    def collect(name, dtype, actual, expected, peak):
        triple = by_dtype.setdefault((name, dtype), ([], [], []))
        triple[0].append(actual)
        triple[1].append(expected)
        triple[2].append(peak)

    flat_groups = [g for g in oracle.groups for _ in g["params"]]
    for i, (p, expected_p) in enumerate(zip(run.params, oracle.params)):
        collect("params", p.dtype, p, expected_p, oracle.peaks[i]["params"])
        expected_state = oracle.state[i]
        state = optimizer.state.get(p, {})
        if not expected_state:
            assert not state, f"param #{i} never had a grad but has state {sorted(state)}"
            continue
        keys = state_keys(oracle.kind, flat_groups[i])
        keeps_sum = oracle.kind == "adais" or (oracle.kind == "adams"
                                               and not flat_groups[i].get("amsgrad"))
        assert set(state) == {"step", *keys} | ({"exp_avg_sq_sum"} if keeps_sum else set()), (
            f"param #{i}: state keys {sorted(state)}")
        if keeps_sum:  # the running sum the reduction keeps is the sum of the stored v
            assert_running_sum(f"param #{i}", state["exp_avg_sq_sum"], state["exp_avg_sq"],
                               state["step"].item())
        step = state["step"]
        assert step.dtype == torch.float32 and step.dim() == 0 and step.device == p.device
        assert step.item() == expected_state["step"], (
            f"param #{i}: step {step.item()} != oracle's {expected_state['step']}")
        for key in keys:
            tensor = state[key]
            expected_dtype = optimizer.state_dtype or p.dtype
            assert tensor.dtype == expected_dtype and tensor.shape == p.shape, (
                f"param #{i} state {key!r}: {tensor.dtype}/{tuple(tensor.shape)}")
            collect(key, tensor.dtype, tensor, expected_state[key], oracle.peaks[i][key])
    for (name, dtype), (actual, expected, peaks) in by_dtype.items():
        assert_close(name, actual, expected, dtype,
                     tolerance_for(oracle.kind, dtype, oracle.groups),
                     are_params=(name == "params"), scales=peaks)


def follow_rounding_ties(optimizer, oracle: Oracle, params: list[torch.Tensor]) -> int:
    """After a step of both: wherever the oracle (``track_rounding=True``) stored a value at a
    rounding tie, the optimizer's must be one of its two roundings, and the oracle continues
    from it (tests/tolerance.py, "Rounding ties"). Returns how many elements that was."""
    followed = 0
    for i, p in enumerate(params):
        followed += oracle.follow(i, "params", p, TIE_BAND)
        for key, tensor in optimizer.state.get(p, {}).items():
            if key in oracle.state[i] and key != "step":
                followed += oracle.follow(i, key, tensor, TIE_BAND)
    return followed
