"""Property test: random tensor lists (sizes past the CPU kernels' threaded split, fp32, bf16
and fp16, state in the param dtype or in another the backend takes), hyperparameters and grad
patterns; every backend held to the oracle by the tolerance table, the oracle following the
backend where a rounding is a tie (tests/tolerance.py, "Rounding ties"). CI derandomizes the
draws (.ci/run picks the profile)."""
from __future__ import annotations

import os

import pytest
import torch
from conftest import CPU_BACKENDS
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from problems import OPTIMIZERS, assert_matches_oracle, follow_rounding_ties
from oracle import Oracle
from swd_kernels.backends import unavailable_reason

# 32,768 elements: past it the native CPU kernels split a bucket across threads
SIZES = st.one_of(st.sampled_from([1, 2, 3, 1023, 1024, 1025, 2047, 4097, 32768, 32769,
                                   2 ** 16 + 3]),
                  st.integers(1, 3000))
SHAPES = st.one_of(SIZES.map(lambda n: (n,)),
                   st.tuples(st.integers(1, 40), st.integers(1, 40)))


@st.composite
def hyperparameters(draw, kind):
    hp = dict(lr=draw(st.sampled_from([1e-4, 1e-3, 1e-2, 5e-2])),
              weight_decay=draw(st.sampled_from([0.0, 1e-3, 5e-2, 0.1])),
              maximize=draw(st.booleans()))
    if kind == "adams":
        hp.update(betas=(draw(st.sampled_from([0.0, 0.5, 0.9])),
                         draw(st.sampled_from([0.9, 0.99, 0.999]))),
                  eps=draw(st.sampled_from([1e-8, 1e-6])), amsgrad=draw(st.booleans()),
                  decay_power=draw(st.sampled_from([0.0, 0.25, 0.5, 1.0])),
                  decay_eps=draw(st.sampled_from([0.0, 1e-8, 1e-3])))
    elif kind == "sgds":
        momentum = draw(st.sampled_from([0.0, 0.5, 0.9]))
        nesterov = momentum > 0 and draw(st.booleans())
        hp.update(momentum=momentum, nesterov=nesterov,
                  dampening=0.0 if nesterov else draw(st.sampled_from([0.0, 0.3])))
    else:
        hp.update(betas=(draw(st.sampled_from([0.1, 0.5])),
                         draw(st.sampled_from([0.9, 0.99]))),
                  eps=draw(st.sampled_from([1e-3, 1e-2])))
    return hp


@st.composite
def problems(draw):
    kind = draw(st.sampled_from(sorted(OPTIMIZERS)))
    shapes = draw(st.lists(SHAPES, min_size=1, max_size=4))
    dtypes = [draw(st.sampled_from([torch.float32, torch.bfloat16, torch.float16]))
              for _ in shapes]
    state_dtype = draw(st.sampled_from([None, torch.float32, torch.bfloat16, torch.float16]))
    split = draw(st.integers(0, len(shapes) - 1))  # params[:split] in group 0, rest group 1
    groups = [hp for hp in (draw(hyperparameters(kind)), draw(hyperparameters(kind)))]
    steps = draw(st.integers(1, 6))
    magnitude = draw(st.sampled_from([1e-3, 1e-1, 1.0, 1e2]))  # grads' overall scale
    # per step and tensor: 0 no grad, 1 zero grad, 2 random grad (mostly random)
    patterns = draw(st.lists(st.lists(st.sampled_from([0, 1, 2, 2, 2, 2]),
                                      min_size=len(shapes), max_size=len(shapes)),
                             min_size=steps, max_size=steps))
    per_tensor = [draw(st.sampled_from([0.1, 1.0, 10.0])) for _ in shapes]
    seed = draw(st.integers(0, 2 ** 16))
    return (kind, shapes, dtypes, state_dtype, split, groups, magnitude, patterns, per_tensor,
            seed)


class _Run:  # what assert_matches_oracle reads
    def __init__(self, optimizer, oracle, params):
        self.optimizer, self.oracle, self.params = optimizer, oracle, params


# Triton on a CPU runs in its interpreter, one program at a time: fewer examples there
INTERPRETED = {"triton"} if os.environ.get("TRITON_INTERPRET") == "1" else set()
FULL = [b for b in CPU_BACKENDS if b not in INTERPRETED]


@pytest.mark.parametrize("backend_name", FULL)
@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(problem=problems())
def test_random_problems_match_oracle(backend_name, problem):
    check_against_oracle(backend_name, problem)


@pytest.mark.parametrize("backend_name", sorted(INTERPRETED & set(CPU_BACKENDS)))
@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(problem=problems())
def test_random_problems_match_oracle_interpreted(backend_name, problem):
    check_against_oracle(backend_name, problem)


# fp16 ends at 65504: past grads of ~256 their v = g^2 overflows, a range limit (GradScaler's
# business), not a rounding one; fp16 grads are drawn at most this large (4 sigma: 40).
FP16_GRAD_SCALE = 10.0


def supported_state_dtype(backend, dtypes, state_dtype):
    """The drawn state dtype where the backend takes it beside every param dtype (the triton
    backend keeps state in the param dtype or fp32), else the param dtype (None)."""
    if all(unavailable_reason(backend, "cpu", d, state_dtype or d) is None for d in dtypes):
        return state_dtype
    return None


def check_against_oracle(backend, problem):
    (kind, shapes, dtypes, state_dtype, split, hps, magnitude, patterns, per_tensor,
     seed) = problem
    generator = torch.Generator().manual_seed(seed)
    params = [torch.randn(s, generator=generator).to(d).requires_grad_()
              for s, d in zip(shapes, dtypes)]
    groups = [dict(params=params[:split], **hps[0]), dict(params=params[split:], **hps[1])]
    groups = [g for g in groups if g["params"]]
    state_dtype = supported_state_dtype(backend, dtypes, state_dtype)
    optimizer = OPTIMIZERS[kind](groups, backend=backend, state_dtype=state_dtype)

    def rounded(dtype):  # the storage rounding the oracle emulates: none for fp32
        return dtype if dtype != torch.float32 else None
    oracle = Oracle(kind, groups, param_dtype=[rounded(d) for d in dtypes],
                    state_dtype=[rounded(state_dtype or d) for d in dtypes],
                    track_rounding=True)
    for pattern in patterns:
        grads = []
        for p, what, scale in zip(params, pattern, per_tensor):
            if what == 0:
                grads.append(None)
            elif what == 1:
                grads.append(torch.zeros_like(p))
            else:
                scale = magnitude * scale
                if torch.float16 in (p.dtype, state_dtype):
                    scale = min(scale, FP16_GRAD_SCALE)
                g = torch.randn(p.shape, generator=generator) * scale
                grads.append(g.to(p.dtype))
        for p, g in zip(params, grads):
            p.grad = g
        optimizer.step()
        oracle.step(grads)
        follow_rounding_ties(optimizer, oracle, params)
    assert_matches_oracle(_Run(optimizer, oracle, params))
