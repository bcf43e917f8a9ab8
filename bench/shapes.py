"""The workloads: lists of parameter shapes a benchmark row steps over.

- ``flat-2^k``: one tensor of 2^k elements (the size sweep);
- ``gpt2_124m`` and ``resnet50``: the exact parameter lists in bench/workloads/*.json
  (148 tensors / 124,439,808 params and 161 tensors / 25,557,032 params);
- ``gpt2_124m/4``: the GPT-2 list with every dimension divided by 4 (rounded up): the same
  148 tensors and layer structure, ~1/16 of the parameters, for the default CPU run;
- ``small-1000``: 1,000 small tensors of 64 .. 16,384 elements (log-uniform, fixed seed),
  where per-tensor launch and host overhead dominate.
"""
from __future__ import annotations

import json
import math
import os
import random
from dataclasses import dataclass

WORKLOAD_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "workloads")


@dataclass(frozen=True)
class Workload:
    name: str
    shapes: tuple[tuple[int, ...], ...]
    kind: str  # "flat" (the size sweep), "model" or "small"

    @property
    def numel(self) -> int:
        return sum(math.prod(s) for s in self.shapes)

    @property
    def tensors(self) -> int:
        return len(self.shapes)


def flat(log2_size: int) -> Workload:
    return Workload(f"flat-2^{log2_size}", ((1 << log2_size,),), "flat")


def from_json(name: str, scale_down: int = 1) -> Workload:
    with open(os.path.join(WORKLOAD_DIR, f"{name}.json")) as f:
        spec = json.load(f)
    shapes = tuple(tuple(-(-d // scale_down) for d in t["shape"]) for t in spec["tensors"])
    if scale_down == 1 and sum(math.prod(s) for s in shapes) != spec["parameters"]:
        raise ValueError(f"{name}.json: shapes do not add up to its 'parameters' count")
    label = name if scale_down == 1 else f"{name}/{scale_down}"
    return Workload(label, shapes, "model")


def small_tensors(count: int = 1000, low: int = 64, high: int = 16384) -> Workload:
    rng = random.Random(0)
    sizes = tuple((int(math.exp(rng.uniform(math.log(low), math.log(high)))),)
                  for _ in range(count))
    return Workload(f"small-{count}", sizes, "small")
