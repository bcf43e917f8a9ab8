"""A miniature of the paper's Table 1: test error of L2 (Adam, SGD), decoupled (AdamW) and
stable (AdamS, SGDS) weight decay, here on scikit-learn's 8x8 digits with a small CNN.

    python examples/table1.py                          # CPU: 1-2 minutes on 2 cores
    python examples/table1.py --device cuda            # the same run on a GPU
    python examples/table1.py --tiny --out /tmp/t1     # a seconds-long smoke run (tests)

Setup, a standard CIFAR recipe scaled down (the weight decays are the paper's): batch 128; a
step schedule dividing the learning rate by 10 at half and at three quarters of training; lr
1e-3 for the Adam family and 0.1 with momentum 0.9 for the SGD family; weight decay 5e-4 for
Adam (L2), AdamS, SGD (L2) and SGDS, and 0.5 for AdamW, as the paper pairs them
(docs/design.md §1, "The scale of weight_decay": AdamW shrinks the weights by
lr * weight_decay a step, 5e-4 at lr 1e-3). For a given seed every optimizer starts from the
same weights and sees the same batches.

Writes into --out: table1-<device>.md (the table, date, command, versions, setup),
table1-<device>.json (every number) and table1-<device>.png (test error, training loss and
gradient norm per epoch: the mean over seeds, shaded from the lowest seed to the highest). The
gradient norm is the global L2 norm of the loss gradient each step (weight decay not included),
averaged over the epoch: ``optimizer.stats["grad_norm"]`` where our optimizer measures it during
its step, ``torch.nn.utils.get_total_norm`` otherwise.
"""
from __future__ import annotations

import argparse
import datetime
import json
import math
import os
import platform
import shlex
import subprocess
import sys
import time

import torch
from torch import nn

import swd_kernels

BATCH_SIZE = 128
ADAM_LR, SGD_LR, SGD_MOMENTUM = 1e-3, 0.1, 0.9
L2_WEIGHT_DECAY = 5e-4  # Adam (L2), AdamS, SGD (L2), SGDS
ADAMW_WEIGHT_DECAY = 0.5  # x lr 1e-3: 5e-4 a step, the L2 value

# name -> (learning rate, weight decay, constructor taking (params, lr, weight_decay))
OPTIMIZERS = {
    "Adam": (ADAM_LR, L2_WEIGHT_DECAY, torch.optim.Adam),
    "AdamW": (ADAM_LR, ADAMW_WEIGHT_DECAY, torch.optim.AdamW),
    "AdamS": (ADAM_LR, L2_WEIGHT_DECAY, swd_kernels.AdamS),
    "SGD": (SGD_LR, L2_WEIGHT_DECAY,
            lambda params, lr, weight_decay: torch.optim.SGD(
                params, lr=lr, momentum=SGD_MOMENTUM, weight_decay=weight_decay)),
    "SGDS": (SGD_LR, L2_WEIGHT_DECAY,
             lambda params, lr, weight_decay: swd_kernels.SGDS(
                 params, lr=lr, momentum=SGD_MOMENTUM, weight_decay=weight_decay)),
}


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, default=5, help="runs per optimizer (default 5)")
    parser.add_argument("--epochs", type=int, default=60, help="epochs per run (default 60)")
    parser.add_argument("--tiny", action="store_true",
                        help="2 seeds x 2 epochs: checks that everything runs (CI)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu",
                        help="default: cuda when available, else cpu")
    parser.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "results"),
                        help="folder for the .md, .json and .png (default examples/results)")
    args = parser.parse_args(argv)
    if args.tiny:
        args.seeds, args.epochs = 2, 2
    if args.seeds < 1:
        parser.error(f"--seeds must be at least 1, got {args.seeds}")
    if args.epochs < 1:
        parser.error(f"--epochs must be at least 1, got {args.epochs}")
    return args


def load_data(device: torch.device):
    """Digits (1,797 8x8 images, 10 classes), a fixed stratified 70/30 split, standardized
    with the training set's mean and std; all on ``device``."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    x_train, x_test, y_train, y_test = train_test_split(
        digits.images, digits.target, test_size=0.3, random_state=0, stratify=digits.target)
    x_train, x_test = (torch.tensor(x, dtype=torch.float32).unsqueeze(1)
                       for x in (x_train, x_test))
    mean, std = x_train.mean(), x_train.std()
    return [t.to(device) for t in ((x_train - mean) / std, torch.tensor(y_train),
                                   (x_test - mean) / std, torch.tensor(y_test))]


def small_cnn() -> nn.Module:
    """Two conv layers, each followed by 2x2 pooling (8x8 -> 4x4 -> 2x2), and two linear
    layers: 13.7k parameters."""
    return nn.Sequential(
        nn.Conv2d(1, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(32 * 2 * 2, 64), nn.ReLU(), nn.Linear(64, 10))


def grad_norm(optimizer, params) -> torch.Tensor:
    """The global L2 norm of this step's grads, a 0-dim device tensor (no host sync)."""
    measured = getattr(optimizer, "stats", {}).get("grad_norm")
    if measured is not None:  # our optimizers measure it inside the step they just took
        return measured.clone()  # the stats buffer is rewritten by the next step
    return torch.nn.utils.get_total_norm([p.grad for p in params if p.grad is not None])


def train(name: str, seed: int, data, epochs: int, device: torch.device) -> dict:
    """One run: per-epoch training loss, test error (%) and mean gradient norm."""
    x_train, y_train, x_test, y_test = data
    lr, weight_decay, make = OPTIMIZERS[name]
    torch.manual_seed(seed)  # the same initial weights for every optimizer
    model = small_cnn().to(device)
    params = list(model.parameters())
    optimizer = make(params, lr=lr, weight_decay=weight_decay)
    schedule = torch.optim.lr_scheduler.MultiStepLR(
        optimizer, milestones=[epochs // 2, epochs * 3 // 4], gamma=0.1)
    order = torch.Generator().manual_seed(seed)  # the same batches for every optimizer
    curves = {"train_loss": [], "test_error": [], "grad_norm": []}
    for _ in range(epochs):
        model.train()
        losses, norms = [], []
        for batch in torch.randperm(len(x_train), generator=order).split(BATCH_SIZE):
            batch = batch.to(device)
            loss = nn.functional.cross_entropy(model(x_train[batch]), y_train[batch])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            losses.append(loss.detach())
            norms.append(grad_norm(optimizer, params))
        schedule.step()
        model.eval()
        with torch.no_grad():
            wrong = (model(x_test).argmax(1) != y_test).sum()
        curves["train_loss"].append(torch.stack(losses).mean().item())
        curves["grad_norm"].append(torch.stack(norms).double().mean().item())
        curves["test_error"].append(100.0 * wrong.item() / len(y_test))
    backends = getattr(optimizer, "backends", None)
    curves["backend"] = sorted(set(backends.values())) if backends else ["torch.optim"]
    return curves


def mean_std(values: list[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (NaN for a single value)."""
    mean = sum(values) / len(values)
    if len(values) < 2:
        return mean, math.nan
    return mean, math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1))


def cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def git_commit() -> str:
    """The checkout's commit, "-dirty" when the working tree has changes ("" outside git)."""
    try:
        return subprocess.run(["git", "describe", "--always", "--dirty", "--abbrev=12"],
                              cwd=os.path.dirname(os.path.abspath(__file__)), text=True,
                              capture_output=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return ""


def versions(device: torch.device) -> dict:
    import sklearn
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else cpu_name()
    return {"python": platform.python_version(), "torch": torch.__version__,
            "swd_kernels": swd_kernels.__version__, "git_commit": git_commit(),
            "scikit-learn": sklearn.__version__,
            "device": f"{device.type}: {name}",
            "torch_threads": torch.get_num_threads(), "platform": platform.platform()}


def table(results: dict, seeds: int) -> str:
    """The markdown table: final test error, mean +- std over seeds, per optimizer."""
    lines = [f"| optimizer | lr | weight decay | test error % (mean ± std, {seeds} seeds) "
             f"| final train loss | final grad norm | backend |",
             "|---|---|---|---|---|---|---|"]
    for name, runs in results.items():
        lr, weight_decay, _ = OPTIMIZERS[name]
        error = mean_std([run["test_error"][-1] for run in runs])
        loss = mean_std([run["train_loss"][-1] for run in runs])
        norm = mean_std([run["grad_norm"][-1] for run in runs])
        lines.append(f"| {name} | {lr:g} | {weight_decay:g} | {error[0]:.2f} ± {error[1]:.2f} "
                     f"| {loss[0]:.2e} | {norm[0]:.2e} | {', '.join(runs[0]['backend'])} |")
    return "\n".join(lines)


def plot(results: dict, path: str, title: str) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [("test_error", "test error (%)"), ("train_loss", "training loss"),
              ("grad_norm", "gradient norm (epoch mean)")]
    figure, axes = plt.subplots(1, len(panels), figsize=(15, 4.2))
    for name, runs in results.items():
        style = "--" if name.startswith("SGD") else "-"
        for axis, (key, label) in zip(axes, panels):
            curves = torch.tensor([run[key] for run in runs], dtype=torch.float64)
            epochs = range(1, curves.shape[1] + 1)
            line, = axis.plot(epochs, curves.mean(0), style, label=name)
            axis.fill_between(epochs, curves.min(0).values, curves.max(0).values,
                              color=line.get_color(), alpha=0.15)
            axis.set_xlabel("epoch")
            axis.set_ylabel(label)
            axis.set_yscale("log")  # the late epochs, where the optimizers differ, stay visible
    axes[0].legend()
    figure.suptitle(title)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def main(argv=None) -> int:
    args = parse_args(argv)
    device = torch.device(args.device)
    if device.type == "cpu":
        # The model is too small to split across threads: on the 2-core machine (shared with
        # other jobs) a step took 4.4 ms of CPU with one thread and 47 ms with two.
        torch.set_num_threads(1)
    data = load_data(device)
    started = time.perf_counter()
    results = {}
    for name in OPTIMIZERS:
        results[name] = [train(name, seed, data, args.epochs, device)
                         for seed in range(args.seeds)]
        print(f"{name:6s} done ({time.perf_counter() - started:.0f} s)", flush=True)
    elapsed = time.perf_counter() - started

    command = "python " + " ".join(shlex.quote(a) for a in [sys.argv[0], *(argv or sys.argv[1:])])
    date = datetime.date.today().isoformat()
    meta = {"date": date, "command": command, "seeds": args.seeds, "epochs": args.epochs,
            "batch_size": BATCH_SIZE, "train_images": len(data[1]), "test_images": len(data[3]),
            "wall_seconds": round(elapsed, 1), **versions(device)}
    summary = table(results, args.seeds)
    print()
    print(summary)

    os.makedirs(args.out, exist_ok=True)
    stem = os.path.join(args.out, f"table1-{device.type}")
    plot(results, stem + ".png", f"digits, small CNN, {args.seeds} seeds x {args.epochs} "
                                 f"epochs ({device.type})")
    with open(stem + ".json", "w") as f:  # curves to 5 significant digits: a readable diff
        rounded = {name: [{key: [float(f"{v:.5g}") for v in values] if key != "backend"
                           else values for key, values in run.items()} for run in runs]
                   for name, runs in results.items()}
        json.dump({"meta": meta, "results": rounded}, f, indent=1)
    with open(stem + ".md", "w") as f:
        f.write(f"# Miniature Table 1: digits, small CNN ({device.type})\n\n"
                f"Test error after {args.epochs} epochs on scikit-learn's digits "
                f"({meta['train_images']} training / {meta['test_images']} test images), "
                f"{args.seeds} seeds per optimizer. Setup: see examples/table1.py.\n\n"
                f"{summary}\n\n"
                + "".join(f"- {key}: {value}\n" for key, value in meta.items())
                + f"\nCurves: {os.path.basename(stem)}.png; every number: "
                  f"{os.path.basename(stem)}.json\n")
    print(f"\nwrote {stem}.md, .json, .png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
