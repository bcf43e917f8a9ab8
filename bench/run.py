"""The benchmark: every SWD optimizer row against torch.optim.AdamW, in one process, one table.

    python bench/run.py                  # CPU, default sizes (under 3 minutes on 2 cores)
    python bench/run.py --device cuda    # every visible GPU (--device all: CPU and GPUs)
    python bench/run.py --quick --out DIR   # CI smoke: tiny sizes, every row kind, < 60 s
    python bench/run.py --full           # every size, dtype and the full GPT-2 list on CPU
    python bench/run.py --record         # a run README.md cites: bench/results/recorded/

Rows: AdamS through each available backend (and, on GPU, a CUDA-graph replay of the fastest),
AdamS with fused clipping (max_grad_norm) against clip_grad_norm_(foreach) + fused AdamW (model
workloads, fp32; its note gives the ratio of the two), AMSGradS / SGDS (momentum 0.9) / AdaiS
through the fastest, the plain per-tensor AdamS loop
(bench/reference_loop.py) eager and torch.compile'd, and AdamW for-loop, foreach and fused.
Columns: median and IQR of the step time, the IQR as a fraction of the median ("noisy" above
report.NOISY_SPREAD); GB/s over the bytes of bench/byte_counts.py; % of a device copy measured
in this run (read + write bytes; left out where the data fits in the reported cache); the
ratio to fused AdamW on the same workload and dtype ("noisy" when the row or fused AdamW is
noisy or was timed by one step); memory (GPU: peak allocation above what
existed before the optimizer was built, i.e. state + step temporaries; CPU: the optimizer's
state bytes). The table and any warnings go to stdout, progress (one line per row) to stderr;
JSON and a PNG plot to bench/results/runs/<device>-<date>-<time>[-quick|-full] (git-ignored),
to ``--out DIR``, or with ``--record`` to bench/results/recorded/<device>-<date>.

Workloads (bench/shapes.py): GPT-2 124M and ResNet-50 parameter lists, 1,000 small tensors,
and one-tensor sizes 2^16..2^24 (CPU; 2^26 with --full) or 2^16..2^30 (GPU), every other
power by default. The default CPU run uses GPT-2 with every dimension divided by 4
("gpt2_124m/4", 148 tensors, 7,800,384 params); --full the real list. Dtypes: fp32,
bf16 params/grads with fp32 state (torch's AdamW keeps bf16 state there: it always uses the
param dtype) and bf16 state; the sweep runs fp32 only except with --full, and the compiled
loop runs fp32 only except with --full (each dtype compiles new graphs). Order (see plan()):
AdamS vs fused AdamW on the model workloads in fp32, the other rows on them, the sweep, then
the bf16 dtypes; rows still waiting when the time budget (--budget-s) runs out are listed as
skipped. A row whose warm step exceeds 1 s (CPU default; 30 s with --full) is timed by that
one step, except fused AdamW. Timing: each row rotates over copies of its data so one pass
moves at least twice the L2 (GPU; CUDA events per step) or 64 MiB (CPU; time.perf_counter).
"""
from __future__ import annotations

import argparse
import datetime
import gc
import math
import os
import platform
import resource
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
from bench.cases import DTYPES, RowKind, row_kinds, state_bytes  # noqa: E402
from bench.timing import (Budget, Timing, copy_bandwidth, synchronize, time_calls,  # noqa: E402
                          timed_once)

ALL_DTYPES = list(DTYPES)

# CPU: rotate each row over enough copies of its data that one pass moves at least 64 MiB
# (twice the 32 MiB L3 of the machine the recorded results come from). Not twice the cache the
# CPU reports: a VM can report its host's whole L3 (480 MiB on a 2-core machine), which it
# shares and two cores cannot fill, and building copies for twice that spent most of the time
# budget. Rows whose pass still fits in the reported cache are marked in_cache (no % copy, no
# bandwidth floor in the plot). GPU: twice the L2, which the GPU reports for itself.
CPU_ROTATE_BYTES = 64 << 20
MAX_COPIES = 64


def plan(device: torch.device, mode: str, kinds: list[RowKind]
         ) -> list[tuple[shapes.Workload, str, list[RowKind]]]:
    """(workload, dtype, row kinds) in the order they run, most important first so the time
    budget cuts the least: (1) the headline, AdamS through the fastest backend and fused AdamW
    on each model workload in fp32; (2) every other row on them in fp32; (3) the one-tensor
    size sweep (fp32 only except with --full); (4) the model workloads in the bf16 dtypes.
    Fused AdamW runs first on each (workload, dtype), so every timed row gets its ratio."""
    if mode == "quick":
        models, sweep = [shapes.from_json("gpt2_124m", 64)], [shapes.flat(14)]
    else:
        gpt2 = shapes.from_json("gpt2_124m") if device.type == "cuda" or mode == "full" \
            else shapes.from_json("gpt2_124m", 4)
        models = [gpt2, shapes.from_json("resnet50"), shapes.small_tensors()]
        top = 30 if device.type == "cuda" else (26 if mode == "full" else 24)
        sweep = [shapes.flat(k) for k in range(16, top + 1, 1 if mode == "full" else 2)]
    sweep_dtypes = ALL_DTYPES if mode == "full" else ["fp32"]
    fused = next(k for k in kinds if k.name == "AdamW" and k.backend == "fused")
    headline = [fused, kinds[0]]  # kinds[0]: AdamS through the fastest backend
    rest = [k for k in kinds if all(k is not h for h in headline)]
    # the clipping rows compare on the model workloads in fp32 only (time)
    every = [fused] + [k for k in kinds if k is not fused and not k.name.endswith("+clip")]
    return ([(w, "fp32", headline) for w in models] + [(w, "fp32", rest) for w in models]
            + [(w, d, every) for d in sweep_dtypes for w in sweep]
            + [(w, d, every) for d in ALL_DTYPES[1:] for w in models])


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
    """The last-level cache the device reports (a VM may report its host's)."""
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


def rotation_copies(workload: shapes.Workload, dtypes, rotate_bytes: int) -> int:
    """How many copies of the data every row of this (workload, dtype) rotates through: enough
    that one pass moves ``rotate_bytes`` at fused AdamW's byte count. The same for every row,
    so each ratio compares steps over the same tensors."""
    per_elem = byte_counts.bytes_per_element("AdamW", dtypes.param, dtypes.adamw_state)
    return min(MAX_COPIES, max(1, math.ceil(rotate_bytes / (per_elem * workload.numel))))


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
            copies: int, cache: int) -> dict:
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
        _add_note(row, f"compile+first step {first_s:.1f} s")
    is_reference = kind.adamw and kind.backend == "fused"  # every ratio divides by it
    if second_s > slow_step_s and not is_reference:  # too slow to repeat: one warm step
        _add_note(row, f"1 timed step (> {slow_step_s:g} s)")
        return _with_timing(row, Timing.of([second_s * 1e3]), 1, step_bytes, cache)

    steppers = [stepper]
    for _ in range(copies - 1):
        extra = kind.build(replica(*templates), dtypes)
        extra.step()
        steppers.append(extra)
    # on CPU the second (warm) step was timed exactly as time_calls would: it counts
    seen = [second_s * 1e3] if device.type == "cpu" and copies == 1 else []
    timing = time_calls([s.step for s in steppers], device, budget, second_s, seen)
    return _with_timing(row, timing, copies, step_bytes, cache)


def _add_note(row: dict, note: str) -> None:
    row["note"] = f'{row["note"]}; {note}' if row["note"] else note


def _with_timing(row: dict, timing: Timing, copies: int, step_bytes: int, cache: int) -> dict:
    iqr = timing.q3_ms - timing.q1_ms if timing.repeats > 1 else None
    spread = iqr / timing.median_ms if iqr is not None else None
    row.update(median_ms=timing.median_ms, iqr_ms=iqr, q1_ms=timing.q1_ms, q3_ms=timing.q3_ms,
               min_ms=timing.min_ms, max_ms=timing.max_ms, repeats=timing.repeats,
               spread=spread, noisy=spread is not None and spread > report.NOISY_SPREAD,
               rotated_copies=copies, in_cache=copies * step_bytes <= cache,
               gbps=step_bytes / (timing.median_ms * 1e-3) / 1e9)
    if row["in_cache"]:
        _add_note(row, f"fits in the {cache >> 20} MiB cache")
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


def _busy_cpu_seconds() -> float | None:
    """CPU-seconds all cores spent busy since boot, from /proc/stat (Linux; else None),
    counting time the hypervisor gave to other guests ("steal")."""
    try:
        with open("/proc/stat") as f:
            ticks = [int(x) for x in f.readline().split()[1:9]]
    except (OSError, ValueError):
        return None
    idle = ticks[3] + ticks[4]  # idle, iowait
    return (sum(ticks) - idle) / os.sysconf("SC_CLK_TCK")


def _own_cpu_seconds() -> float:
    own = resource.getrusage(resource.RUSAGE_SELF)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)  # e.g. torch.compile workers
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def run_device(device: torch.device, mode: str, log, budget_s: float | None = None
               ) -> tuple[dict, list[dict]]:
    budget, total_budget_s = budgets(device, mode)
    if budget_s is not None:
        total_budget_s = budget_s
    start = time.perf_counter()
    busy_before, own_before = _busy_cpu_seconds(), _own_cpu_seconds()
    load_before = os.getloadavg()  # other work on the machine skews CPU timings
    if device.type == "cpu" and load_before[0] > 0.5 * (os.cpu_count() or 1):
        log(f"warning: load average {load_before[0]:.1f} on {os.cpu_count()} cores before "
            f"the run: intra-op thread pools stall when cores are busy (seen: 1000x on "
            f"small-tensor rows); compare with --threads 1")
    deadline = start + total_budget_s
    cache = cache_bytes(device)
    # the copy that % copy compares with must come from memory, not from the cache
    copy_bytes = (1 << 30) if device.type == "cuda" else (64 << 20) if mode == "quick" else \
        min(max(256 << 20, 2 * cache), 2 << 30)
    copy_gbps, copy_timing = copy_bandwidth(
        device, copy_bytes, Budget(warmup=2, min_repeats=10, max_repeats=50, target_s=0.5))
    log(f"{device}: copy_ of {copy_bytes >> 20} MiB: {copy_gbps:.1f} GB/s (read + write)")
    rotate_bytes = 0 if mode == "quick" else 2 * cache if device.type == "cuda" else \
        CPU_ROTATE_BYTES
    # a row whose warm step takes longer is timed by that one step (CPU reference backend)
    slow_step_s = 0.5 if mode == "quick" else 30.0 if mode == "full" else 1.0
    kinds = row_kinds(device)
    work = plan(device, mode, kinds)
    total_rows = sum(len(group_kinds) for _, _, group_kinds in work)
    rows: list[dict] = []
    for workload, label, group_kinds in work:  # the rows of one (workload, dtype) share tensors
        dtypes = DTYPES[label]
        copies = rotation_copies(workload, dtypes, rotate_bytes)
        templates = None
        for kind in group_kinds:
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
                                  slow_step_s, copies, cache)
                except Exception as error:  # one broken row must not lose the rest
                    traceback.print_exc(limit=3, file=sys.stderr)
                    row = _untimed(kind, workload, label,
                                   f"error: {type(error).__name__}: {error}"[:160])
            row["device"] = str(device)
            rows.append(row)
            ms = row.get("median_ms")
            timing = f"{ms:10.3f} ms {row['gbps']:8.1f} GB/s" if ms is not None else " " * 27
            log(f"[{len(rows):3d}/{total_rows} {time.perf_counter() - start:6.1f}s]"
                f" {row['name']:8} {row['backend']:15} {workload.name:13} {label:14} "
                f"{timing} {row['note']}")
        del templates
        gc.collect()
        if device.type == "cuda":
            torch.cuda.empty_cache()
    _fill_ratios(rows, copy_gbps)
    rows = _display_order(rows, work, kinds)
    seconds = time.perf_counter() - start
    busy_after, own_after = _busy_cpu_seconds(), _own_cpu_seconds()
    other_load = None if busy_before is None else max(
        0.0, (busy_after - busy_before) - (own_after - own_before)) / seconds
    meta = device_meta(device)
    meta.update(mode=mode, time_budget_s=total_budget_s, rotate_bytes=rotate_bytes,
                max_rotated_copies=MAX_COPIES, slow_step_s=slow_step_s, copy_gbps=copy_gbps,
                copy_bytes=copy_bytes, copy_median_ms=copy_timing.median_ms,
                noisy_spread=report.NOISY_SPREAD, seconds=seconds,
                load_average_before=load_before, load_average_after=os.getloadavg(),
                other_load_cores=other_load, cpu_count=os.cpu_count(),
                rows_timed=sum(1 for r in rows if r.get("median_ms") is not None),
                rows_skipped=sum(1 for r in rows if r["note"] == "skipped: time budget"),
                memory_column=("peak torch.cuda.max_memory_allocated above the allocation "
                               "before the optimizer was built (state + step temporaries)"
                               if device.type == "cuda" else "optimizer state bytes"),
                bytes_note=byte_counts.__doc__.strip(),
                workloads_note=shapes.__doc__.strip())
    return meta, rows


def _fill_ratios(rows: list[dict], copy_gbps: float) -> None:
    """% copy, the ratio to fused AdamW, and whether that ratio is noisy: its row or the
    reference is noisy, or either was timed by one step (its spread is unknown)."""
    fused = {(r["workload"], r["dtype"]): r for r in rows
             if r["name"] == "AdamW" and r["backend"] == "fused" and r.get("median_ms")}

    def steady(row: dict) -> bool:
        return row.get("spread") is not None and not row["noisy"]

    for r in rows:
        if r.get("median_ms") is None:
            continue
        # from the cache a step can beat a copy from memory: the comparison means nothing there
        r["pct_copy"] = None if r["in_cache"] else 100 * r["gbps"] / copy_gbps
        ref = fused.get((r["workload"], r["dtype"]))
        r["ratio_to_fused_adamw"] = r["median_ms"] / ref["median_ms"] if ref else None
        r["ratio_noisy"] = ref is not None and r is not ref and not (steady(r) and steady(ref))
    clipped = {(r["workload"], r["dtype"]): r for r in rows
               if r["name"] == "AdamW+clip" and r.get("median_ms")}
    for r in rows:
        ref = clipped.get((r.get("workload"), r.get("dtype")))
        if r["name"] == "AdamS+clip" and r.get("median_ms") and ref:
            _add_note(r, f"{r['median_ms'] / ref['median_ms']:.2f}x clip_grad_norm_+AdamW "
                         f"fused" + (" (noisy)" if not (steady(r) and steady(ref)) else ""))


def _display_order(rows: list[dict], work, kinds: list[RowKind]) -> list[dict]:
    """The rows grouped by (workload, dtype) in plan order, each group in row_kinds order,
    whatever order they ran in."""
    groups = list(dict.fromkeys((w.name, label) for w, label, _ in work))
    kind_order = [(k.name, k.backend) for k in kinds]
    return sorted(rows, key=lambda r: (groups.index((r["workload"], r["dtype"])),
                                       kind_order.index((r["name"], r["backend"]))))


def warnings_for(meta: dict, rows: list[dict]) -> list[str]:
    """What a reader of this device's table must know before trusting its ratios."""
    device, lines = meta["device"], []
    if meta["rows_skipped"]:
        lines.append(f"{device}: {meta['rows_skipped']} of {len(rows)} rows were not timed "
                     f"within the {meta['time_budget_s']:g} s budget (--budget-s).")
    noisy = [r for r in rows if r.get("ratio_noisy")]
    if noisy:
        lines.append(f"{device}: {len(noisy)} of {meta['rows_timed']} ratios are marked noisy: "
                     f"the row or its workload's fused AdamW row has an IQR above "
                     f"{report.NOISY_SPREAD:.0%} of its median, or was timed by one step. "
                     f"Read them as rough.")
    cores = meta["cpu_count"] or 1
    if device == "cpu" and meta["other_load_cores"] is not None \
            and meta["other_load_cores"] > 0.1 * cores:
        lines.append(f"{device}: other processes kept {meta['other_load_cores']:.1f} of "
                     f"{cores} cores busy on average during the run: thread pools stall on "
                     f"busy cores (fused AdamW opens one parallel region per tensor), so CPU "
                     f"ratios can be far off. Rerun on an idle machine, or with --threads 1.")
    in_cache = [r for r in rows if r.get("in_cache")]
    if in_cache:
        cache = meta.get("last_level_cache_bytes") or meta.get("l2_cache_bytes")
        lines.append(f"{device}: {len(in_cache)} timed rows move less data per pass than the "
                     f"{cache >> 20} MiB cache the device reports: their GB/s may be cache "
                     f"bandwidth, so their % copy is left out.")
    return lines


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
    where = parser.add_mutually_exclusive_group()
    where.add_argument("--out", help="directory for the JSON and PNG (default "
                       "bench/results/runs/, named <device>-<date>-<time>)")
    where.add_argument("--record", action="store_true",
                       help="write bench/results/recorded/<device>-<date>.{json,png}, the "
                       "results README.md cites (refuses to overwrite one)")
    parser.add_argument("--threads", type=int,
                        help="torch.set_num_threads for the CPU rows (default: torch's)")
    args = parser.parse_args(argv)
    if args.record and args.quick:
        parser.error("--record: a --quick run is a smoke test, not a result to cite")
    if args.threads:
        torch.set_num_threads(args.threads)
    mode = "quick" if args.quick else "full" if args.full else "default"

    def log(line: str) -> None:
        print(line, file=sys.stderr, flush=True)

    started = time.perf_counter()
    date = datetime.datetime.now(datetime.timezone.utc)
    devices = devices_for(args.device)
    stems = {device: report.output_stem("cpu" if device.type == "cpu" else f"cuda{device.index}",
                                        date, args.record, args.out, mode)
             for device in devices}
    taken = [stem + ".json" for stem in stems.values() if os.path.exists(stem + ".json")]
    if taken:  # only --record names a file by date alone
        raise SystemExit(f"{', '.join(taken)} already recorded: git rm it first to replace it")
    all_rows, notes, warnings = [], [], []
    for device in devices:
        meta, rows = run_device(device, mode, log, args.budget_s)
        meta["date"] = date.isoformat(timespec="seconds")
        all_rows += rows
        stem = stems[device]
        meta["warnings"] = warnings_for(meta, rows)
        warnings += meta["warnings"]
        report.write_json(stem + ".json", meta, rows)
        report.plot(stem + ".png", rows, meta)
        log(f"wrote {stem}.json and {stem}.png")
        notes.append(f"{device} ({meta['device_name']}, {meta['cpu_threads']} CPU threads, "
                     f"{meta['rows_timed']} of {len(rows)} rows timed in "
                     f"{meta['seconds']:.0f} s): copy_ {meta['copy_gbps']:.1f} GB/s "
                     f"(read + write); mem MB = {meta['memory_column']}; "
                     f"results in {os.path.relpath(stem, ROOT) if stem.startswith(ROOT) else stem}"
                     f".json/.png")
    if warnings:  # above the table: its first rows are the ones people quote
        print("WARNING\n" + "\n".join(f"- {w}" for w in warnings) + "\n")
    print(report.table(all_rows, with_device=len(devices) > 1))
    print("\n" + "\n".join(notes))
    print(f"GB/s over bench/byte_counts.py bytes (fp32: AdamW 28, AdamS 32, AMSGradS 48, "
          f"SGDS 20, AdaiS 40 B/elem; P+G+S formula per row in the JSON). "
          f"x fused = time / AdamW(fused=True) on the same workload and dtype. "
          f"Total {time.perf_counter() - started:.1f} s."
          + (f" {len(warnings)} warning(s) above the table." if warnings else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
