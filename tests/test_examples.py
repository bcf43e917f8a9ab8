"""The examples run as a user runs them: a fresh process, the command line of their docstring."""
from __future__ import annotations

import json
import math
import os
import re
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TABLE1_OPTIMIZERS = ("Adam", "AdamW", "AdamS", "SGD", "SGDS")


def test_table1_tiny_writes_a_finite_table_and_a_png_for_every_optimizer(tmp_path):
    script = os.path.join(ROOT, "examples", "table1.py")
    done = subprocess.run([sys.executable, script, "--tiny", "--device", "cpu",
                           "--out", str(tmp_path)], capture_output=True, text=True,
                          timeout=120, cwd=ROOT)
    assert done.returncode == 0, done.stderr[-3000:]

    # the printed table and the .md hold the same row per optimizer: finite mean and std
    markdown = (tmp_path / "table1-cpu.md").read_text()
    for name in TABLE1_OPTIMIZERS:
        row = re.search(rf"^\| {name} \|.*\| (\S+) ± (\S+) \|", markdown, re.MULTILINE)
        assert row is not None, f"no row for {name} in\n{markdown}"
        assert row.group(0) in done.stdout
        mean, std = float(row.group(1)), float(row.group(2))
        assert 0 <= mean <= 100 and math.isfinite(std) and std >= 0

    # every curve of every run is finite, one value per epoch; grad norms are positive
    record = json.loads((tmp_path / "table1-cpu.json").read_text())
    assert record["meta"]["seeds"] == 2 and record["meta"]["epochs"] == 2
    assert sorted(record["results"]) == sorted(TABLE1_OPTIMIZERS)
    for name, runs in record["results"].items():
        assert len(runs) == 2, name
        for run in runs:
            for key in ("train_loss", "test_error", "grad_norm"):
                assert len(run[key]) == 2 and all(map(math.isfinite, run[key])), (name, key)
            assert min(run["grad_norm"]) > 0, name
    # our optimizers ran on one of our backends, torch's on torch.optim
    for name in ("AdamS", "SGDS"):
        assert record["results"][name][0]["backend"] != ["torch.optim"], name

    png = (tmp_path / "table1-cpu.png").read_bytes()
    assert png.startswith(b"\x89PNG\r\n\x1a\n") and len(png) > 10_000
