"""Output of a run: the table on stdout, a JSON file with every row, and a log-log plot."""
from __future__ import annotations

import json
import os

COLUMNS = [  # (header, row key, format)
    ("optimizer", "name", "{}"), ("backend", "backend", "{}"), ("workload", "workload", "{}"),
    ("dtype", "dtype", "{}"), ("median ms", "median_ms", "{:.3f}"),
    ("IQR ms", "iqr_ms", "{:.3f}"), ("GB/s", "gbps", "{:.1f}"), ("% copy", "pct_copy", "{:.0f}"),
    ("x fused", "ratio_to_fused_adamw", "{:.2f}"), ("mem MB", "memory_mb", "{:.1f}"),
    ("note", "note", "{}"),
]


def _cell(row: dict, key: str, fmt: str) -> str:
    value = row.get(key)
    return "-" if value is None or value == "" else fmt.format(value)


def table(rows: list[dict], with_device: bool) -> str:
    columns = ([("device", "device", "{}")] if with_device else []) + COLUMNS
    cells = [[h for h, _, _ in columns]]
    cells += [[_cell(r, key, fmt) for _, key, fmt in columns] for r in rows]
    widths = [max(len(c[i]) for c in cells) for i in range(len(columns))]
    numeric = {"median ms", "IQR ms", "GB/s", "% copy", "x fused", "mem MB"}
    lines = []
    for n, line in enumerate(cells):
        parts = [c.rjust(w) if columns[i][0] in numeric else c.ljust(w)
                 for i, (c, w) in enumerate(zip(line, widths))]
        lines.append("  ".join(parts).rstrip())
        if n == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)


def write_json(path: str, meta: dict, rows: list[dict]) -> None:
    with open(path, "w") as f:
        json.dump({"meta": meta, "rows": rows}, f, indent=1)


def plot(path: str, rows: list[dict], copy_gbps: float, title: str) -> bool:
    """Time per step against parameter count on the flat sweep, one line per
    optimizer/backend, with the copy-bandwidth floor of 28 B/elem (AdamW) and 32 B/elem
    (AdamS) dashed. Returns False when there is nothing to plot."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    flat = [r for r in rows if r["workload"].startswith("flat-") and r.get("median_ms")]
    dtypes = list(dict.fromkeys(r["dtype"] for r in flat))
    if not flat:
        return False
    fig, axes = plt.subplots(1, len(dtypes), figsize=(7 * len(dtypes), 5.5), squeeze=False)
    for ax, dtype in zip(axes[0], dtypes):
        series: dict[str, list] = {}
        for r in flat:
            if r["dtype"] == dtype:
                series.setdefault(f'{r["name"]} {r["backend"]}', []).append(
                    (r["params"], r["median_ms"]))
        sizes = sorted({n for points in series.values() for n, _ in points})
        for label, points in series.items():
            points.sort()
            ax.plot([n for n, _ in points], [t for _, t in points], marker="o", ms=3,
                    label=label)
        for bytes_per_elem, label in ((28, "AdamW"), (32, "AdamS")):
            if dtype != "fp32":
                break  # the fp32 counts only; other dtypes move fewer bytes
            ax.plot(sizes, [n * bytes_per_elem / (copy_gbps * 1e9) * 1e3 for n in sizes],
                    "k--" if label == "AdamS" else "k:", lw=1,
                    label=f"copy floor, {bytes_per_elem} B/elem ({label})")
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xlabel("parameters (one tensor)")
        ax.set_ylabel("ms per step (median)")
        ax.set_title(f"{title} — {dtype}")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True
