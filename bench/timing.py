"""Timing a step honestly: warm-up, many repeats, medians and quartiles.

CPU: ``time.perf_counter`` around each call (the CPU work is synchronous).
CUDA: a pair of CUDA events around each call, read after one final synchronize, so queued
asynchronous work is counted on the GPU's clock and never cut short by the host returning early.
"""
from __future__ import annotations

import statistics
import time
from dataclasses import dataclass
from typing import Callable, Sequence

import torch


@dataclass
class Timing:
    median_ms: float
    q1_ms: float
    q3_ms: float
    min_ms: float
    max_ms: float
    repeats: int

    @classmethod
    def of(cls, samples_ms: Sequence[float]) -> "Timing":
        s = sorted(samples_ms)
        if len(s) >= 4:
            q1, _, q3 = statistics.quantiles(s, n=4, method="inclusive")
        else:
            q1, q3 = s[0], s[-1]
        return cls(statistics.median(s), q1, q3, s[0], s[-1], len(s))


@dataclass
class Budget:
    """How long to time one row: at least ``min_repeats`` calls, then more until about
    ``target_s`` of calls were measured, at most ``max_repeats``."""
    warmup: int
    min_repeats: int
    max_repeats: int
    target_s: float


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_calls(fns: Sequence[Callable[[], None]], device: torch.device, budget: Budget,
               first_call_s: float, seen_ms: Sequence[float] = ()) -> Timing:
    """Time ``fns[i % len(fns)]()`` for i = 0, 1, ...: rotating over several copies of the
    data keeps small working sets from living in cache. ``first_call_s`` (one call's time
    already seen) sizes the number of repeats; ``seen_ms`` are warm calls already timed the
    same way, counted as samples (CPU: saves a step of a slow row)."""
    for i in range(budget.warmup):
        fns[i % len(fns)]()
    repeats = int(budget.target_s / max(first_call_s, 1e-6))
    repeats = max(budget.min_repeats, min(budget.max_repeats, repeats)) - len(seen_ms)
    if device.type == "cuda":
        with torch.cuda.device(device):
            synchronize(device)
            events = [(torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True))
                      for _ in range(repeats)]
            for i, (start, end) in enumerate(events):
                start.record()
                fns[i % len(fns)]()
                end.record()
            synchronize(device)
            samples = [start.elapsed_time(end) for start, end in events]
    else:
        samples = list(seen_ms)
        for i in range(max(repeats, 0)):
            t0 = time.perf_counter()
            fns[i % len(fns)]()
            samples.append((time.perf_counter() - t0) * 1e3)
    return Timing.of(samples)


def timed_once(fn: Callable[[], None], device: torch.device) -> float:
    """Wall seconds of one call, waiting for the device."""
    synchronize(device)
    t0 = time.perf_counter()
    fn()
    synchronize(device)
    return time.perf_counter() - t0


def copy_bandwidth(device: torch.device, nbytes: int, budget: Budget) -> tuple[float, Timing]:
    """GB/s of ``dst.copy_(src)`` on ``nbytes``-byte fp32 tensors, counting read + write."""
    src = torch.rand(nbytes // 4, device=device)
    dst = torch.empty_like(src)
    dst.copy_(src)  # first touch of dst's pages
    first = timed_once(lambda: dst.copy_(src), device)
    timing = time_calls([lambda: dst.copy_(src)], device, budget, first)
    gbps = 2 * src.numel() * 4 / (timing.median_ms * 1e-3) / 1e9
    del src, dst
    return gbps, timing
