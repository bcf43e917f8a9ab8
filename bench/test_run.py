"""bench/run.py's bookkeeping, without timing anything: what runs first, where results go, what
the table and plot make of rows."""
import datetime
import os

import torch

from bench import report, shapes
from bench.cases import DTYPES, row_kinds
from bench.run import CPU_ROTATE_BYTES, MAX_COPIES, _fill_ratios, plan, rotation_copies

CPU = torch.device("cpu")


def test_headline_rows_run_first_and_fused_adamw_leads_every_group():
    kinds = row_kinds(CPU)
    work = plan(CPU, "default", kinds)
    models = [w.name for w in (shapes.from_json("gpt2_124m", 4), shapes.from_json("resnet50"),
                               shapes.small_tensors())]
    headline = [(w.name, label, [(k.name, k.backend) for k in ks]) for w, label, ks in work[:3]]
    fastest = kinds[0].backend
    assert headline == [(m, "fp32", [("AdamW", "fused"), ("AdamS", fastest)]) for m in models]
    assert [(w.name, label) for w, label, _ in work[3:6]] == [(m, "fp32") for m in models]
    assert all(ks[0].name == "AdamW" and ks[0].backend == "fused"
               for _, _, ks in work if len(ks) == len(kinds))
    # every row kind runs once per (workload, dtype)
    runs: dict = {}
    for w, label, ks in work:
        runs.setdefault((w.name, label), []).extend((k.name, k.backend) for k in ks)
    assert all(sorted(r) == sorted((k.name, k.backend) for k in kinds) for r in runs.values())


def test_rotation_is_bounded_and_the_same_for_every_row():
    fp32 = DTYPES["fp32"]
    assert rotation_copies(shapes.flat(16), fp32, CPU_ROTATE_BYTES) == 37  # 64 MiB / 1.75 MiB
    assert rotation_copies(shapes.flat(10), fp32, CPU_ROTATE_BYTES) == MAX_COPIES
    assert rotation_copies(shapes.from_json("resnet50"), fp32, CPU_ROTATE_BYTES) == 1
    assert rotation_copies(shapes.flat(16), fp32, 0) == 1  # --quick


def test_a_run_never_writes_where_results_are_recorded():
    when = datetime.datetime(2026, 11, 30, 5, 12, 45, tzinfo=datetime.timezone.utc)
    recorded = report.output_stem("cpu", when, True, None, "default")
    assert recorded == os.path.join(report.RECORDED_DIR, "cpu-2026-11-30")
    for mode in ("default", "quick", "full"):
        stem = report.output_stem("cpu", when, False, None, mode)
        assert os.path.dirname(stem) == report.RUNS_DIR and "051245" in stem
        assert report.output_stem("cpu", when, False, "/tmp/x", mode).startswith("/tmp/x/")
    assert os.path.exists(os.path.join(report.RECORDED_DIR, "cpu-2026-11-30.json"))


def _row(name, backend, workload, ms, iqr, params=1 << 20):
    spread = iqr / ms
    return dict(name=name, backend=backend, workload=workload, dtype="fp32", params=params,
                median_ms=ms, iqr_ms=iqr, spread=spread, noisy=spread > report.NOISY_SPREAD,
                gbps=1.0, pct_copy=None, in_cache=False, repeats=15, note="")


def test_table_marks_noisy_rows_and_plot_is_always_written(tmp_path):
    rows = [_row("AdamW", "fused", "resnet50", 10.0, 0.2),
            _row("AdamS", "native", "resnet50", 11.0, 3.0),
            _row("AdamW", "fused", "flat-2^20", 1.0, 0.01),
            _row("AdamS", "native", "flat-2^20", 1.1, 0.01)]
    for r in rows:
        r["ratio_to_fused_adamw"] = r["median_ms"] / (10.0 if r["workload"] == "resnet50" else 1)
        r["ratio_noisy"] = r["noisy"]
    lines = report.table(rows, with_device=False).splitlines()
    assert "27% noisy" in lines[3] and "1.10 noisy" in lines[3] and "noisy" not in lines[2]
    meta = dict(device="cpu", device_name="test", date="2026-11-30T00:00:00+00:00",
                cpu_threads=2, mode="default", torch="x", swd_kernels="y", git_commit=None,
                triton=None, copy_gbps=40.0, last_level_cache_bytes=32 << 20)
    for name, some_rows in (("rows.png", rows), ("none.png", [])):
        report.plot(str(tmp_path / name), some_rows, meta)
        assert (tmp_path / name).stat().st_size > 0


def test_a_ratio_is_noisy_when_its_row_or_fused_adamw_is_unsteady():
    fused = _row("AdamW", "fused", "resnet50", 10.0, 0.2)
    steady = _row("SGDS", "native", "resnet50", 6.0, 0.1)
    one_step = dict(_row("AdamS", "torch", "resnet50", 90.0, 1.0), spread=None, noisy=False,
                    repeats=1)
    _fill_ratios([fused, steady, one_step], copy_gbps=40.0)
    assert steady["ratio_to_fused_adamw"] == 0.6 and not steady["ratio_noisy"]
    assert one_step["ratio_noisy"] and not fused["ratio_noisy"]
    fused.update(spread=None, noisy=False, repeats=1)  # the reference itself: one step
    _fill_ratios([fused, steady], copy_gbps=40.0)
    assert steady["ratio_noisy"]
