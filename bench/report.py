"""Output of a run: where it goes, the table on stdout, a JSON file with every row, a plot.

Recorded results (the ones README.md cites) live in bench/results/recorded/ as
``<device>-<date>.{json,png}`` and are only written by ``--record``, which never overwrites
one. Every other run goes to the git-ignored bench/results/runs/ (or ``--out DIR``) as
``<device>-<date>-<time>[-quick|-full].{json,png}``, so it cannot collide with a recorded one.
"""
from __future__ import annotations

import json
import os
import textwrap

RESULTS_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")
RECORDED_DIR = os.path.join(RESULTS_DIR, "recorded")
RUNS_DIR = os.path.join(RESULTS_DIR, "runs")

# A row is noisy when its IQR exceeds this fraction of its median. On the idle 2-core machine
# of the recorded CPU run every model-workload row stayed within 10% (most within 5%), while
# the effects the ratios are read for are 10-15% (AdamS moves 32 B/elem against AdamW's 28:
# 1.14x); a wider spread can fake or hide them.
NOISY_SPREAD = 0.10


def output_stem(tag: str, when, record: bool, out: str | None, mode: str) -> str:
    """Path without extension for one device's JSON and PNG (see the module docstring)."""
    if record:
        return os.path.join(RECORDED_DIR, f"{tag}-{when:%Y-%m-%d}")
    suffix = "" if mode == "default" else f"-{mode}"
    return os.path.join(out or RUNS_DIR, f"{tag}-{when:%Y-%m-%d-%H%M%S}{suffix}")


def _spread(row: dict) -> str | None:
    if row.get("spread") is None:
        return None
    return f'{row["spread"]:.0%}' + (" noisy" if row["noisy"] else "")


def _ratio(row: dict) -> str | None:
    if row.get("ratio_to_fused_adamw") is None:
        return None
    return f'{row["ratio_to_fused_adamw"]:.2f}' + (" noisy" if row.get("ratio_noisy") else "")


COLUMNS = [  # (header, row key or function of the row, format)
    ("optimizer", "name", "{}"), ("backend", "backend", "{}"), ("workload", "workload", "{}"),
    ("dtype", "dtype", "{}"), ("median ms", "median_ms", "{:.3f}"),
    ("IQR ms", "iqr_ms", "{:.3f}"), ("IQR/median", _spread, "{}"), ("GB/s", "gbps", "{:.1f}"),
    ("% copy", "pct_copy", "{:.0f}"), ("x fused", _ratio, "{}"),
    ("mem MB", "memory_mb", "{:.1f}"), ("note", "note", "{}"),
]
NUMERIC = {"median ms", "IQR ms", "IQR/median", "GB/s", "% copy", "x fused", "mem MB"}


def _cell(row: dict, key, fmt: str) -> str:
    value = key(row) if callable(key) else row.get(key)
    return "-" if value is None or value == "" else fmt.format(value)


def table(rows: list[dict], with_device: bool) -> str:
    columns = ([("device", "device", "{}")] if with_device else []) + COLUMNS
    cells = [[h for h, _, _ in columns]]
    cells += [[_cell(r, key, fmt) for _, key, fmt in columns] for r in rows]
    widths = [max(len(c[i]) for c in cells) for i in range(len(columns))]
    lines = []
    for n, line in enumerate(cells):
        parts = [c.rjust(w) if columns[i][0] in NUMERIC else c.ljust(w)
                 for i, (c, w) in enumerate(zip(line, widths))]
        lines.append("  ".join(parts).rstrip())
        if n == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)


def write_json(path: str, meta: dict, rows: list[dict]) -> None:
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    with open(path, "w") as f:
        json.dump({"meta": meta, "rows": rows}, f, indent=1)


def plot_title(meta: dict) -> str:
    commit = (meta.get("git_commit") or "")[:10]
    return (f'{meta["device_name"]} ({meta["device"]}), {meta["date"][:10]}, '
            f'{meta["cpu_threads"]} CPU threads, {meta["mode"]} run\n'
            f'torch {meta["torch"]}, swd_kernels {meta["swd_kernels"]}'
            + (f" ({commit})" if commit else "")
            + (f', triton {meta["triton"]}' if meta.get("triton") else ""))


def plot(path: str, rows: list[dict], meta: dict) -> None:
    """Write the plot of whatever rows were timed: on top, for each dtype with model-workload
    rows, every row's time as a multiple of fused AdamW's (bars, log scale); below, for each
    dtype of the flat sweep, time per step against size (log-log) with the copy-bandwidth floor
    of 28 B/elem (AdamW) and 32 B/elem (AdamS) drawn only at sizes whose data does not fit in
    the device's reported last-level cache. One colour per optimizer/backend in every panel."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Patch

    timed = [r for r in rows if r.get("median_ms") is not None]
    sweep = [r for r in timed if r["workload"].startswith("flat-")]
    models = [r for r in timed if not r["workload"].startswith("flat-")
              and r.get("ratio_to_fused_adamw") is not None]
    panels = [[("models", d) for d in dict.fromkeys(r["dtype"] for r in models)],
              [("sweep", d) for d in dict.fromkeys(r["dtype"] for r in sweep)]]
    panels = [p for p in panels if p]
    nrows, ncols = max(len(panels), 1), max([len(p) for p in panels] + [1])
    legend_in = 3.0  # inches on the right for the shared legend
    fig, axes = plt.subplots(nrows, ncols, figsize=(7 * ncols + legend_in, 5 * nrows + 0.6),
                             squeeze=False)
    for ax in axes.flat:
        ax.set_visible(False)
    labels = list(dict.fromkeys(_label(r) for r in timed))
    colors = {label: plt.cm.tab20(i % 20) for i, label in enumerate(labels)}
    for panel_row, panel_list in enumerate(panels):
        for col, (kind, dtype) in enumerate(panel_list):
            ax = axes[panel_row][col]
            ax.set_visible(True)
            if kind == "models":
                _model_bars(ax, [r for r in models if r["dtype"] == dtype], colors)
                ax.set_title(f"model workloads, {dtype}: time / fused AdamW's", fontsize=10)
            else:
                _sweep_lines(ax, [r for r in sweep if r["dtype"] == dtype], colors, meta)
                ax.set_title(f"one-tensor sweep, {dtype}", fontsize=10)
    if not panels:
        axes[0][0].set_visible(True)
        axes[0][0].axis("off")
        axes[0][0].text(0.5, 0.5, "no row was timed: see the JSON for why", ha="center")
    handles = [Patch(color=colors[label], label=label) for label in labels]
    if any(r.get("ratio_noisy") for r in models):
        handles.append(Patch(facecolor="lightgrey", hatch="///", edgecolor="white",
                             label=f"noisy: the row's or fused AdamW's IQR\n"
                                   f"> {NOISY_SPREAD:.0%} of its median, or 1 step"))
    fig.suptitle(plot_title(meta), fontsize=10)
    # the run's warnings travel with the picture, below the panels
    footer = [line for w in meta.get("warnings") or []
              for line in textwrap.wrap(w, int(fig.get_figwidth() * 17))]
    if footer:
        fig.text(0.005, 0.005, "\n".join(footer), color="firebrick", fontsize=8, va="bottom")
    if handles:
        fig.legend(handles=handles, loc="center right", fontsize=8)
    fig.tight_layout(rect=(0, 0.17 * len(footer) / fig.get_figheight(),
                           1 - legend_in / fig.get_figwidth() if handles else 1, 1))
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _label(row: dict) -> str:
    return f'{row["name"]} {row["backend"]}'


def _model_bars(ax, rows: list[dict], colors: dict) -> None:
    """One group of bars per workload, one bar per row but fused AdamW's (the 1.0 line); a
    bar is hatched when its ratio is noisy (see run._fill_ratios)."""
    fused = {r["workload"]: r for r in rows if _label(r) == "AdamW fused"}
    rows = [r for r in rows if _label(r) != "AdamW fused"]
    workloads = list(fused)
    labels = list(dict.fromkeys(_label(r) for r in rows))
    width = 0.85 / max(len(labels), 1)
    for r in rows:
        i, j = labels.index(_label(r)), workloads.index(r["workload"])
        x = j + (i - (len(labels) - 1) / 2) * width
        ratio = r["ratio_to_fused_adamw"]
        ax.bar(x, ratio, width, color=colors[_label(r)],
               hatch="///" if r.get("ratio_noisy") else None,
               edgecolor="white")
        ax.text(x, ratio * 1.05, f"{ratio:.2f}" if ratio >= 0.1 else f"{ratio:.2g}",
                ha="center", va="bottom", rotation=90, fontsize=7)
    ratios = [r["ratio_to_fused_adamw"] for r in rows]
    ax.set_yscale("log")
    ax.set_ylim(min(ratios + [1]) / 1.5, max(ratios + [1]) * 2)  # room for the labels
    ax.axhline(1.0, color="k", lw=1)
    ax.set_xlim(-0.5, len(workloads) - 0.5)
    ax.set_xticks(range(len(workloads)), [
        f'{w}\nfused AdamW {fused[w]["median_ms"]:.4g} ms'
        + (" (noisy)" if fused[w].get("noisy") else "")
        + (" (1 step)" if fused[w].get("repeats") == 1 else "") for w in workloads], fontsize=8)
    ax.set_ylabel("time per step / AdamW(fused=True)'s (log)")
    ax.grid(True, axis="y", which="both", alpha=0.3)


def _sweep_lines(ax, rows: list[dict], colors: dict, meta: dict) -> None:
    series: dict[str, list] = {}
    for r in rows:
        series.setdefault(_label(r), []).append((r["params"], r["median_ms"]))
    for label, points in series.items():
        points.sort()
        ax.plot([n for n, _ in points], [t for _, t in points], marker="o", ms=3,
                color=colors[label])
    cache = meta.get("last_level_cache_bytes") or meta.get("l2_cache_bytes") or 0
    sizes = sorted({r["params"] for r in rows})
    if rows[0]["dtype"] == "fp32":  # the fp32 byte counts only; other dtypes move less
        for bytes_per_elem, label, style in ((28, "AdamW", "k:"), (32, "AdamS", "k--")):
            beyond = [n for n in sizes if n * bytes_per_elem > cache]
            if beyond:
                ax.plot(beyond, [n * bytes_per_elem / (meta["copy_gbps"] * 1e9) * 1e3
                                 for n in beyond], style, lw=1,
                        label=f"copy floor, {bytes_per_elem} B/elem ({label}), beyond "
                              f"the {cache >> 20} MiB cache")
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xlabel("parameters (one tensor)")
    ax.set_ylabel("ms per step (median)")
    ax.grid(True, which="both", alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=7, loc="upper left")
