"""A short summary of a bench/run.py JSON: for each workload at one dtype, AdamS through each
backend, the other SWD optimizers, and fused AdamW, with ms, GB/s, % copy and x fused.

    python bench/summarize.py bench/results/recorded/cpu-2026-11-30.json [--dtype fp32]
"""
from __future__ import annotations

import argparse
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from bench import report  # noqa: E402

SHOWN_WORKLOADS = ("flat-2^20", "flat-2^24", "flat-2^26", "flat-2^28", "flat-2^30",
                   "gpt2_124m", "gpt2_124m/4", "resnet50", "small-1000")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("json_files", nargs="+")
    parser.add_argument("--dtype", default="fp32")
    args = parser.parse_args(argv)
    for path in args.json_files:
        with open(path) as f:
            data = json.load(f)
        meta = data["meta"]
        rows = [r for r in data["rows"] if r["dtype"] == args.dtype
                and r["workload"] in SHOWN_WORKLOADS and r.get("median_ms") is not None
                and not r["backend"].startswith(("for-loop", "foreach", "py-loop"))]
        print(f"{meta['device_name']} ({meta['device']}), torch {meta['torch']}, "
              f"copy {meta['copy_gbps']:.0f} GB/s, run {meta['seconds']:.0f} s, "
              f"{sum(1 for r in data['rows'] if r.get('median_ms') is None)} rows not timed")
        print(report.table(rows, with_device=False))
    return 0


if __name__ == "__main__":
    sys.exit(main())
