"""The benchmark: every SWD optimizer row against torch.optim.AdamW, in one process, one table.

    python bench/run.py                  # CPU, default sizes (about 3 minutes on 2 cores)
    python bench/run.py --device cuda    # every visible GPU (--device all: CPU and GPUs)
    python bench/run.py --quick --out DIR   # CI smoke: tiny sizes, every row kind, < 60 s
    python bench/run.py --full           # every size, dtype and the full GPT-2 list on CPU

Rows: AdamS through each available backend (and, on GPU, a CUDA-graph replay of the fastest),
AMSGradS / SGDS (momentum 0.9) / AdaiS through the fastest, the plain per-tensor AdamS loop
(bench/reference_loop.py) eager and torch.compile'd, and AdamW for-loop, foreach and fused.
Columns: median and IQR of the step time; GB/s over the bytes of bench/byte_counts.py;
% of a device copy measured in this run (read + write bytes); the ratio to fused AdamW on the
same workload and dtype; memory (GPU: peak allocation above what existed before the
optimizer was built, i.e. state + step temporaries; CPU: the optimizer's state bytes).
The table goes to stdout, progress (one line per row) to stderr; JSON and a PNG plot go to
``--out`` (default bench/results/, for --quick bench/results/quick/).

Workloads (bench/shapes.py): GPT-2 124M and ResNet-50 parameter lists, 1,000 small tensors,
and one-tensor sizes 2^16..2^24 (CPU; 2^26 with --full) or 2^16..2^30 (GPU), every other
power by default. The default CPU run uses GPT-2 with every dimension divided by 4
("gpt2_124m/4", 148 tensors, 7,800,384 params); --full the real list. Dtypes: fp32,
bf16 params/grads with fp32 state (torch's AdamW keeps bf16 state there: it always uses the
param dtype) and bf16 state; the sweep runs fp32 only except with --full, and the compiled
loop runs fp32 only except with --full (each dtype compiles new graphs). A row whose warm
step exceeds 1 s (CPU default; 30 s with --full) is timed by that one step. Rows still
waiting when the time budget (--budget-s) runs out are listed as skipped.
GPU timing: CUDA events per step over copies of the data rotated so each pass exceeds twice
the L2 cache; CPU: time.perf_counter, rotation up to 16 copies.
"""
from __future__ import annotations

import argparse
import datetime
import gc
import math
import os
import platform
import subprocess
import sys
import time
import traceback

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:  # run as a script: make `bench` and `swd_kernels` importable
    sys.path.insert(0, ROOT)

import torch  # noqa: E402

import swd_kernels  # noqa: E402
from bench import byte_counts, report, shapes  # noqa: E402
from bench.cases import DTYPES, row_kinds, state_bytes  # noqa: E402
from bench.timing import (Budget, Timing, copy_bandwidth, synchronize, time_calls,  # noqa: E402
                          timed_once)

ALL_DTYPES = list(DTYPES)


def plan(device: torch.device, mode: str) -> list[tuple[shapes.Workload, str]]:
    """(workload, dtype) pairs in the order they run, most important first so a time budget
    cuts the least: the model lists in fp32, the flat sweep (fp32 only except in --full),
    then the model lists in the bf16 dtypes."""
    gpu = device.type == "cuda"
    if mode == "quick":
        return [(shapes.flat(14), "fp32")] + [
            (shapes.from_json("gpt2_124m", 64), d) for d in ALL_DTYPES]
    gpt2 = shapes.from_json("gpt2_124m") if gpu or mode == "full" else \
        shapes.from_json("gpt2_124m", 4)
    models = [gpt2, shapes.from_json("resnet50"), shapes.small_tensors()]
    top = 30 if gpu else (26 if mode == "full" else 24)
    step = 1 if mode == "full" else 2
    sweep = [shapes.flat(k) for k in range(16, top + 1, step)]
    sweep_dtypes = ALL_DTYPES if mode == "full" else ["fp32"]
    return ([(w, "fp32") for w in models] + [(w, d) for d in sweep_dtypes for w in sweep]
            + [(w, d) for d in ALL_DTYPES[1:] for w in models])


def budgets(device: torch.device, mode: str) -> tuple[Budget, float]:
    """(per-row timing budget, whole-run budget in seconds for this device)."""
    if mode == "quick":
        return Budget(warmup=0, min_repeats=2, max_repeats=5, target_s=0.02), 45.0
    if device.type == "cuda":
        return Budget(warmup=3, min_repeats=10, max_repeats=100, target_s=0.15), (
            3600.0 if mode == "full" else 200.0)
    return Budget(warmup=0, min_repeats=3, max_repeats=15, target_s=0.1), (
        7200.0 if mode == "full" else 150.0)


def cache_bytes(device: torch.device) -> int:
    """The last-level cache a working set must exceed to be timed from memory."""
    if device.type == "cuda":
        return getattr(torch.cuda.get_device_properties(device), "L2_cache_size", 64 << 20)
    largest = 0
    base = "/sys/devices/system/cpu/cpu0/cache"
    for index in os.listdir(base) if os.path.isdir(base) else []:
        try:
            text = open(os.path.join(base, index, "size")).read().strip()
            largest = max(largest, int(text[:-1]) * {"K": 1 << 10, "M": 1 << 20}[text[-1]])
        except (OSError, ValueError, KeyError):
            continue
    return largest or (32 << 20)


def make_tensors(workload: shapes.Workload, dtype: torch.dtype, device, seed: int):
    gen = torch.Generator(device=device).manual_seed(seed)
    return [torch.randn(s, generator=gen, device=device, dtype=torch.float32).to(dtype)
            for s in workload.shapes]


def replica(template_params, template_grads):
    params = [p.clone() for p in template_params]
    for p, g in zip(params, template_grads):
        p.grad = g.clone()
    return params


def run_row(kind, workload, dtypes, templates, device, budget: Budget, slow_step_s: float,
            rotate_bytes: int, max_copies: int) -> dict:
    """Build the row's optimizer over fresh copies of the params, time its steps, return the
    row's numbers (without the ratio columns, filled in once fused AdamW is known)."""
    state_dtype = dtypes.adamw_state if kind.adamw else dtypes.state
    per_elem = byte_counts.bytes_per_element(kind.algorithm, dtypes.param, state_dtype)
    step_bytes = per_elem * workload.numel
    row = dict(name=kind.name, backend=kind.backend, workload=workload.name,
               dtype=dtypes.label, params=workload.numel, tensors=workload.tensors,
               bytes_per_elem=per_elem, bytes_formula=byte_counts.formula(kind.algorithm),
               state_dtype=str(state_dtype).replace("torch.", ""), note="")
    if kind.adamw and dtypes.adamw_state != dtypes.state:
        row["note"] = "AdamW keeps bf16 state"

    params = replica(*templates)
    synchronize(device)
    if device.type == "cuda":
        base = torch.cuda.memory_allocated(device)
        torch.cuda.reset_peak_memory_stats(device)
    stepper = kind.build(params, dtypes)
    first_s = timed_once(stepper.step, device)  # creates state (and compiles)
    second_s = timed_once(stepper.step, device)
    if device.type == "cuda":
        row["memory_mb"] = (torch.cuda.max_memory_allocated(device) - base) / 2**20
    else:
        row["memory_mb"] = state_bytes(stepper) / 2**20
    if kind.compiles:
        row["note"] = f"compile+first step {first_s:.1f} s"
    if second_s > slow_step_s:  # too slow to repeat within the budget: one warm step
        row["note"] = (row["note"] + "; " if row["note"] else "") + \
            f"1 timed step (> {slow_step_s:g} s)"
        return _with_timing(row, Timing.of([second_s * 1e3]), 1, step_bytes)

    # rotate over enough copies that one pass over them exceeds the cache twice
    copies = min(max_copies, max(1, math.ceil(rotate_bytes / step_bytes)))
    steppers = [stepper]
    for _ in range(copies - 1):
        extra = kind.build(replica(*templates), dtypes)
        extra.step()
        steppers.append(extra)
    # on CPU the second (warm) step was timed exactly as time_calls would: it counts
    seen = [second_s * 1e3] if device.type == "cpu" and copies == 1 else []
    timing = time_calls([s.step for s in steppers], device, budget, second_s, seen)
    return _with_timing(row, timing, copies, step_bytes)


def _with_timing(row: dict, timing: Timing, copies: int, step_bytes: int) -> dict:
    row.update(median_ms=timing.median_ms,
               iqr_ms=timing.q3_ms - timing.q1_ms if timing.repeats > 1 else None,
               q1_ms=timing.q1_ms, q3_ms=timing.q3_ms, min_ms=timing.min_ms,
               max_ms=timing.max_ms, repeats=timing.repeats, rotated_copies=copies,
               gbps=step_bytes / (timing.median_ms * 1e-3) / 1e9)
    return row


def device_meta(device: torch.device) -> dict:
    meta = dict(device=str(device), torch=torch.__version__, cpu_threads=torch.get_num_threads(),
                python=platform.python_version(), platform=platform.platform(),
                processor=platform.processor() or platform.machine())
    try:
        import triton
        meta["triton"] = triton.__version__
    except ImportError:
        meta["triton"] = None
    meta["cuda"] = torch.version.cuda
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        meta.update(device_name=props.name, l2_cache_bytes=cache_bytes(device),
                    gpu_memory_bytes=props.total_memory)
    else:
        meta.update(device_name=_cpu_name(), last_level_cache_bytes=cache_bytes(device))
    try:
        meta["git_commit"] = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True,
            timeout=10).stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        meta["git_commit"] = None
    meta["swd_kernels"] = swd_kernels.__version__
    meta["backends"] = swd_kernels.available_backends(device)
    return meta


def _cpu_name() -> str:
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "cpu"


def _untimed(kind, workload, label: str, note: str) -> dict:
    return dict(name=kind.name, backend=kind.backend, workload=workload.name, dtype=label,
                params=workload.numel, note=note)


def run_device(device: torch.device, mode: str, log, budget_s: float | None = None
               ) -> tuple[dict, list[dict]]:
    budget, total_budget_s = budgets(device, mode)
    if budget_s is not None:
        total_budget_s = budget_s
    start = time.perf_counter()
    load_before = os.getloadavg()  # other work on the machine skews CPU timings
    if device.type == "cpu" and load_before[0] > 0.5 * (os.cpu_count() or 1):
        log(f"warning: load average {load_before[0]:.1f} on {os.cpu_count()} cores before "
            f"the run: intra-op thread pools stall when cores are busy (seen: 1000x on "
            f"small-tensor rows); compare with --threads 1")
    deadline = start + total_budget_s
    copy_bytes = (1 << 30) if device.type == "cuda" else (64 << 20 if mode == "quick"
                                                          else 256 << 20)
    copy_gbps, copy_timing = copy_bandwidth(
        device, copy_bytes, Budget(warmup=2, min_repeats=10, max_repeats=50, target_s=0.5))
    log(f"{device}: copy_ of {copy_bytes >> 20} MiB: {copy_gbps:.1f} GB/s (read + write)")
    rotate_bytes = 2 * cache_bytes(device)
    # copies of the data rotated through: enough to exceed the GPU's L2 twice; on CPU at most
    # 16 (a 2^16 AdamS working set x 16 = the 32 MiB L3 of the dev machine); none in --quick
    max_copies = 1 if mode == "quick" else 64 if device.type == "cuda" else 16
    # a row whose warm step takes longer is timed by that one step (CPU reference backend)
    slow_step_s = 0.5 if mode == "quick" else 30.0 if mode == "full" else 1.0
    work = plan(device, mode)
    kinds = row_kinds(device)
    rows: list[dict] = []
    for workload, label in work:  # every row kind on the same (workload, dtype) tensors
        dtypes = DTYPES[label]
        templates = None
        for kind in kinds:
            if time.perf_counter() > deadline:
                row = _untimed(kind, workload, label, "skipped: time budget")
            elif kind.compiles and label != "fp32" and mode != "full":
                # each dtype compiles new graphs (~15 s each on CPU with a cold cache)
                row = _untimed(kind, workload, label,
                               "compiled loop: fp32 only (all dtypes with --full)")
            else:
                if templates is None:
                    templates = (make_tensors(workload, dtypes.param, device, 0),
                                 make_tensors(workload, dtypes.param, device, 1))
                try:
                    row = run_row(kind, workload, dtypes, templates, device, budget,
                                  slow_step_s, rotate_bytes, max_copies)
                except Exception as error:  # one broken row must not lose the rest
                    traceback.print_exc(limit=3, file=sys.stderr)
                    row = _untimed(kind, workload, label,
                                   f"error: {type(error).__name__}: {error}"[:160])
            row["device"] = str(device)
            rows.append(row)
            ms = row.get("median_ms")
            timing = f"{ms:10.3f} ms {row['gbps']:8.1f} GB/s" if ms is not None else " " * 27
            log(f"[{len(rows):3d}/{len(kinds) * len(work)} {time.perf_counter() - start:6.1f}s]"
                f" {row['name']:8} {row['backend']:15} {workload.name:13} {label:14} "
                f"{timing} {row['note']}")
        del templates
        gc.collect()
        if device.type == "cuda":
            torch.cuda.empty_cache()
    _fill_ratios(rows, copy_gbps)
    meta = device_meta(device)
    meta.update(mode=mode, time_budget_s=total_budget_s, max_rotated_copies=max_copies,
                slow_step_s=slow_step_s, copy_gbps=copy_gbps, copy_bytes=copy_bytes,
                copy_median_ms=copy_timing.median_ms, rotate_bytes=rotate_bytes,
                seconds=time.perf_counter() - start, load_average_before=load_before,
                load_average_after=os.getloadavg(),
                memory_column=("peak torch.cuda.max_memory_allocated above the allocation "
                               "before the optimizer was built (state + step temporaries)"
                               if device.type == "cuda" else "optimizer state bytes"),
                bytes_note=byte_counts.__doc__.strip(),
                workloads_note=shapes.__doc__.strip())
    return meta, rows


def _fill_ratios(rows: list[dict], copy_gbps: float) -> None:
    fused = {(r["workload"], r["dtype"]): r["median_ms"] for r in rows
             if r["name"] == "AdamW" and r["backend"] == "fused" and r.get("median_ms")}
    for r in rows:
        if r.get("median_ms") is None:
            continue
        r["pct_copy"] = 100 * r["gbps"] / copy_gbps
        ref = fused.get((r["workload"], r["dtype"]))
        r["ratio_to_fused_adamw"] = r["median_ms"] / ref if ref else None


def devices_for(choice: str) -> list[torch.device]:
    gpus = [torch.device("cuda", i) for i in range(torch.cuda.device_count())]
    if choice in ("cuda", "all") and not gpus:
        raise SystemExit(f"--device {choice}: no CUDA GPU is visible "
                         f"(torch {torch.__version__}, CUDA {torch.version.cuda})")
    return {"cpu": [torch.device("cpu")], "cuda": gpus,
            "all": [torch.device("cpu")] + gpus}[choice]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", choices=["cpu", "cuda", "all"], default="cpu")
    size = parser.add_mutually_exclusive_group()
    size.add_argument("--quick", action="store_true", help="CI smoke: tiny sizes, < 60 s")
    size.add_argument("--full", action="store_true",
                      help="every size and dtype, the full GPT-2 list on CPU (long)")
    parser.add_argument("--budget-s", type=float,
                        help="seconds per device; rows past it are listed as skipped "
                        "(default: 45 --quick, 150 CPU, 200 GPU, long with --full)")
    parser.add_argument("--out", help="directory for the JSON and PNG "
                        "(default bench/results, bench/results/quick with --quick)")
    parser.add_argument("--threads", type=int,
                        help="torch.set_num_threads for the CPU rows (default: torch's)")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    mode = "quick" if args.quick else "full" if args.full else "default"
    out = args.out or os.path.join(ROOT, "bench", "results", "quick" if args.quick else "")
    os.makedirs(out, exist_ok=True)

    def log(line: str) -> None:
        print(line, file=sys.stderr, flush=True)

    started = time.perf_counter()
    date = datetime.datetime.now(datetime.timezone.utc)
    all_rows, notes = [], []
    devices = devices_for(args.device)
    for device in devices:
        meta, rows = run_device(device, mode, log, args.budget_s)
        meta["date"] = date.isoformat(timespec="seconds")
        all_rows += rows
        tag = "cpu" if device.type == "cpu" else f"cuda{device.index}"
        stem = os.path.join(out, f"{tag}-{date:%Y-%m-%d}")
        report.write_json(stem + ".json", meta, rows)
        plotted = report.plot(stem + ".png", rows, meta["copy_gbps"],
                              f'{meta["device_name"]}')
        log(f"wrote {stem}.json" + (f" and {stem}.png" if plotted else ""))
        notes.append(f"{device} ({meta['device_name']}, {meta['cpu_threads']} CPU threads): "
                     f"copy_ {meta['copy_gbps']:.1f} GB/s (read + write); "
                     f"mem MB = {meta['memory_column']}.")
    print(report.table(all_rows, with_device=len(devices) > 1))
    print("\n" + "\n".join(notes))
    print(f"GB/s over bench/byte_counts.py bytes (fp32: AdamW 28, AdamS 32, AMSGradS 48, "
          f"SGDS 20, AdaiS 40 B/elem; P+G+S formula per row in the JSON). "
          f"x fused = time / AdamW(fused=True) on the same workload and dtype. "
          f"Total {time.perf_counter() - started:.1f} s.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
