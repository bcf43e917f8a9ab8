"""CPU check of the native backend: AdamS(backend='native').step() against
torch.optim.AdamW(fused=True).step() on the same parameters, in one process, 2 threads,
time.perf_counter medians; AdamS(max_grad_norm=1.0) against what it replaces,
clip_grad_norm_(foreach=True) then AdamW(fused=True) (32 against 40 B/elem: 0.8 is the floor);
and with bf16 params, AdamS with bf16 state against AdamW(fused=True), which keeps bf16 state
(16 against 14 B/elem: 1.14 is the floor).

Tensor list: GPT-2 124M's 148 tensors (bench/workloads/gpt2_124m.json) with the hidden size
768 -> 384 (2304 -> 1152, 3072 -> 1536) and the vocabulary 50257 -> 8192: 24.7M fp32 params.
The two optimizers' steps are interleaved so background load hits both alike. The figures go
to stdout and to a JSON file (with device, versions, commit): the git-ignored
bench/results/runs/cpu_native_check-<date>-<time>.json, or with --record
bench/results/recorded/cpu_native_check-<date>[-<time>].json, which README.md cites (never
overwritten).

    python bench/cpu_native_check.py [--steps 30] [--threads 2] [--record]
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import time

import torch

import datetime
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:  # run as a script: make `bench` importable
    sys.path.insert(0, ROOT)

import swd_kernels  # noqa: E402
from bench.cases import ClippedAdamW  # noqa: E402
from bench.report import RECORDED_DIR, RUNS_DIR  # noqa: E402
from bench.run import device_meta  # noqa: E402
from bench.shapes import from_json  # noqa: E402

SCALE = {768: 384, 2304: 1152, 3072: 1536, 50257: 8192}


def gpt2_small_shapes() -> list[tuple[int, ...]]:
    return [tuple(SCALE.get(d, d) for d in shape) for shape in from_json("gpt2_124m").shapes]


def make_params(shapes, seed: int, dtype=torch.float32) -> list[torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    params = []
    for shape in shapes:
        p = torch.randn(shape, generator=gen).to(dtype).requires_grad_()
        p.grad = (torch.randn(shape, generator=gen) * 1e-2).to(dtype)
        params.append(p)
    return params


def timed(step) -> float:
    start = time.perf_counter()
    step()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--record", action="store_true",
                        help="write bench/results/recorded/cpu_native_check-<date>.json")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    now = datetime.datetime.now(datetime.timezone.utc)
    if args.record:
        out = os.path.join(RECORDED_DIR, f"cpu_native_check-{now:%Y-%m-%d}.json")
        if os.path.exists(out):  # a second record that day keeps the first
            out = os.path.join(RECORDED_DIR, f"cpu_native_check-{now:%Y-%m-%d-%H%M}.json")
    else:
        out = os.path.join(RUNS_DIR, f"cpu_native_check-{now:%Y-%m-%d-%H%M%S}.json")

    shapes = gpt2_small_shapes()
    numel = sum(torch.Size(s).numel() for s in shapes)
    adams = swd_kernels.AdamS(make_params(shapes, 0), lr=1e-3, weight_decay=1e-2,
                              backend="native")
    adamw = torch.optim.AdamW(make_params(shapes, 0), lr=1e-3, weight_decay=1e-2, fused=True)
    # grads of RMS 1e-2 over 24.7M params: a norm ~50, so max_grad_norm=1.0 clips every step
    adams_clip = swd_kernels.AdamS(make_params(shapes, 0), lr=1e-3, weight_decay=1e-2,
                                   backend="native", max_grad_norm=1.0)
    adamw_clip = ClippedAdamW(make_params(shapes, 0), max_norm=1.0)
    bf16 = torch.bfloat16
    adamw_bf16 = torch.optim.AdamW(make_params(shapes, 0, bf16), lr=1e-3, weight_decay=1e-2,
                                   fused=True)
    adams_bf16 = swd_kernels.AdamS(make_params(shapes, 0, bf16), lr=1e-3, weight_decay=1e-2,
                                   backend="native", state_dtype=bf16)
    steppers = [adamw, adams, adamw_clip, adams_clip, adamw_bf16, adams_bf16]
    for _ in range(args.warmup):
        for stepper in steppers:
            stepper.step()
    times = [[] for _ in steppers]
    for _ in range(args.steps):
        for stepper, t in zip(steppers, times):
            t.append(timed(stepper.step))
    (ms_adamw, ms_adams, ms_adamw_clip, ms_adams_clip, ms_adamw_bf16,
     ms_adams_bf16) = (statistics.median(t) * 1e3 for t in times)
    t_adamw, t_adams = times[:2]
    print(f"{len(shapes)} tensors, {numel / 1e6:.1f}M fp32 params, {args.threads} threads, "
          f"median of {args.steps} steps")
    print(f"AdamW(fused=True)     {ms_adamw:8.2f} ms  {28 * numel / ms_adamw / 1e6:6.1f} GB/s "
          f"(28 B/elem)")
    print(f"AdamS(native)         {ms_adams:8.2f} ms  {32 * numel / ms_adams / 1e6:6.1f} GB/s "
          f"(32 B/elem)")
    print(f"ratio AdamS / AdamW   {ms_adams / ms_adamw:8.3f}  (target <= 1.15)")
    # AdamW(fused) opens one parallel region per tensor, AdamS(native) one per pass: on a
    # loaded machine the medians diverge; the fastest steps show the unloaded ratio.
    print(f"ratio of fastest steps {min(t_adams) / min(t_adamw):7.3f}  "
          f"({min(t_adams) * 1e3:.2f} / {min(t_adamw) * 1e3:.2f} ms)")
    print(f"clip_grad_norm_+AdamW  {ms_adamw_clip:8.2f} ms  "
          f"{40 * numel / ms_adamw_clip / 1e6:6.1f} GB/s (40 B/elem)")
    print(f"AdamS(max_grad_norm)  {ms_adams_clip:8.2f} ms  "
          f"{32 * numel / ms_adams_clip / 1e6:6.1f} GB/s (32 B/elem)")
    print(f"ratio clipped         {ms_adams_clip / ms_adamw_clip:8.3f}  (target <= 0.85)")
    print(f"AdamW(fused) bf16     {ms_adamw_bf16:8.2f} ms  "
          f"{14 * numel / ms_adamw_bf16 / 1e6:6.1f} GB/s (14 B/elem)")
    print(f"AdamS bf16 state      {ms_adams_bf16:8.2f} ms  "
          f"{16 * numel / ms_adams_bf16 / 1e6:6.1f} GB/s (16 B/elem)")
    print(f"ratio bf16 state      {ms_adams_bf16 / ms_adamw_bf16:8.3f}  (floor 1.14)")

    result = dict(meta=device_meta(torch.device("cpu")), tensors=len(shapes), params=numel,
                  threads=args.threads, steps=args.steps, adamw_fused_ms=ms_adamw,
                  adams_native_ms=ms_adams, ratio=ms_adams / ms_adamw,
                  ratio_fastest=min(t_adams) / min(t_adamw),
                  clip_grad_norm_adamw_fused_ms=ms_adamw_clip,
                  adams_native_max_grad_norm_ms=ms_adams_clip,
                  ratio_clipped=ms_adams_clip / ms_adamw_clip,
                  adamw_fused_bf16_ms=ms_adamw_bf16, adams_native_bf16_state_ms=ms_adams_bf16,
                  ratio_bf16_state=ms_adams_bf16 / ms_adamw_bf16,
                  date=now.isoformat(timespec="seconds"))
    os.makedirs(os.path.dirname(out), exist_ok=True)
    with open(out, "w") as f:
        json.dump(result, f, indent=1)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
