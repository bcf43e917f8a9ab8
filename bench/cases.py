"""The rows of the benchmark: which optimizer, through which implementation, in which dtypes.
Each row kind knows how to build a stepper (an object with ``step()``) over a list of params
whose ``.grad`` is set."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch

import swd_kernels
from bench.reference_loop import CompiledReferenceAdamS, ReferenceAdamS


@dataclass(frozen=True)
class DtypeConfig:
    label: str
    param: torch.dtype
    state: torch.dtype        # state dtype of our optimizers and of the reference loop
    adamw_state: torch.dtype  # torch.optim.AdamW always keeps its state in the param dtype


DTYPES = {
    "fp32": DtypeConfig("fp32", torch.float32, torch.float32, torch.float32),
    "bf16+fp32state": DtypeConfig("bf16+fp32state", torch.bfloat16, torch.float32,
                                  torch.bfloat16),
    "bf16": DtypeConfig("bf16", torch.bfloat16, torch.bfloat16, torch.bfloat16),
}


@dataclass(frozen=True)
class RowKind:
    name: str        # the optimizer as the table shows it
    backend: str     # the implementation
    algorithm: str   # whose byte count applies (bench/byte_counts.py)
    build: Callable[[list, DtypeConfig], object]
    adamw: bool = False      # torch's AdamW: state in the param dtype
    compiles: bool = False   # the first step compiles (reported, not timed)
    graph: bool = False      # replays a captured CUDA graph of the step


def _ours(cls, backend: str, **hparams):
    def build(params, dtypes: DtypeConfig):
        state_dtype = dtypes.state if dtypes.state != dtypes.param else None
        return cls(params, backend=backend, state_dtype=state_dtype, **hparams)
    return build


def _adamw(**flags):
    def build(params, dtypes: DtypeConfig):
        return torch.optim.AdamW(params, lr=1e-3, weight_decay=1e-4, **flags)
    return build


class ClippedAdamW:
    """What fused clipping replaces: ``clip_grad_norm_`` (foreach) then fused AdamW."""

    def __init__(self, params, max_norm: float):
        self.params = params
        self.max_norm = max_norm
        self.adamw = torch.optim.AdamW(params, lr=1e-3, weight_decay=1e-4, fused=True)
        self.state = self.adamw.state

    def step(self) -> None:
        torch.nn.utils.clip_grad_norm_(self.params, self.max_norm, foreach=True)
        self.adamw.step()


def _loop(cls):
    def build(params, dtypes: DtypeConfig):
        return cls(params, state_dtype=dtypes.state)
    return build


class GraphedStep:
    """An optimizer whose step is captured once in a CUDA graph and replayed."""

    def __init__(self, optimizer, device: torch.device):
        self.optimizer = optimizer
        self.state = optimizer.state
        side = torch.cuda.Stream(device)
        side.wait_stream(torch.cuda.current_stream(device))
        with torch.cuda.stream(side):  # warm up (state creation) off the capturing stream
            for _ in range(3):
                optimizer.step()
        torch.cuda.current_stream(device).wait_stream(side)
        self.graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(self.graph):
            optimizer.step()

    def step(self) -> None:
        self.graph.replay()


def _graphed(inner_build):
    def build(params, dtypes: DtypeConfig):
        return GraphedStep(inner_build(params, dtypes), params[0].device)
    return build


ADAMS_HP = dict(lr=1e-3, weight_decay=1e-4)
SGDS_HP = dict(lr=0.1, momentum=0.9, weight_decay=1e-4)
ADAIS_HP = dict(lr=0.1, weight_decay=1e-4)
# Small enough that every step clips: the multiply always runs in clip_grad_norm_ anyway.
MAX_GRAD_NORM = 1.0


def row_kinds(device: torch.device, with_compile: bool = True) -> list[RowKind]:
    """Every row for ``device``: AdamS through each available backend (plus a CUDA-graph
    replay of the fastest on GPU), the other SWD optimizers through the fastest backend, the
    per-tensor loop eager and compiled, and torch's AdamW for-loop, foreach and fused."""
    backends = swd_kernels.available_backends(device)
    fastest = backends[0]
    kinds = [RowKind("AdamS", b, "AdamS", _ours(swd_kernels.AdamS, b, **ADAMS_HP))
             for b in backends]
    if device.type == "cuda":
        kinds.append(RowKind("AdamS", f"{fastest}+graph", "AdamS",
                             _graphed(_ours(swd_kernels.AdamS, fastest, **ADAMS_HP)),
                             graph=True))
    kinds += [
        RowKind("AdamS+clip", fastest, "AdamS+clip",
                _ours(swd_kernels.AdamS, fastest, max_grad_norm=MAX_GRAD_NORM, **ADAMS_HP)),
        RowKind("AdamW+clip", "fused", "AdamW+clip",
                lambda params, dtypes: ClippedAdamW(params, MAX_GRAD_NORM), adamw=True),
        RowKind("AMSGradS", fastest, "AMSGradS", _ours(swd_kernels.AMSGradS, fastest, **ADAMS_HP)),
        RowKind("SGDS", fastest, "SGDS", _ours(swd_kernels.SGDS, fastest, **SGDS_HP)),
        RowKind("AdaiS", fastest, "AdaiS", _ours(swd_kernels.AdaiS, fastest, **ADAIS_HP)),
        RowKind("AdamS", "py-loop", "AdamS", _loop(ReferenceAdamS)),
    ]
    if with_compile:
        kinds.append(RowKind("AdamS", "py-loop+compile", "AdamS",
                             _loop(CompiledReferenceAdamS), compiles=True))
    kinds += [
        RowKind("AdamW", "for-loop", "AdamW", _adamw(foreach=False), adamw=True),
        RowKind("AdamW", "foreach", "AdamW", _adamw(foreach=True), adamw=True),
        RowKind("AdamW", "fused", "AdamW", _adamw(fused=True), adamw=True),
    ]
    return kinds


def state_bytes(stepper) -> int:
    """Bytes of the optimizer state tensors (what the optimizer keeps between steps)."""
    total = 0
    for entry in stepper.state.values():
        for value in entry.values():
            if torch.is_tensor(value):
                total += value.numel() * value.element_size()
    return total
