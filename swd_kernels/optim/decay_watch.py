"""The warning, given once, that a step's stable decay reached 1.

AdamS multiplies the weights by ``1 - lr * weight_decay / (v_bar + decay_eps) ** decay_power``.
With AdamW's usual weight decay (0.01-0.1) and gradients of RMS 1e-4-1e-2 that factor falls to
or below 0 and the weights flip sign and grow, silently. The check must not cost a host sync:
after a step the accumulator ``[sum of v_hat, count]`` (two float64 values) is copied without
blocking into pinned host memory beside the step's host-side hyperparameters; a later step
reads it, once the copy has finished, and does the arithmetic on the host.
"""
from __future__ import annotations

import warnings

import torch

from ..weight_decay import decay_per_step, weight_decay_from_adamw


class DecayWatch:
    """Records each step's accumulator asynchronously; warns once if a decay reached 1. On
    CUDA one pinned buffer and one event are reused: while a copy is still in flight, later
    steps are not recorded (no allocation per step, no overwriting a buffer being written)."""

    def __init__(self, optimizer_name: str):
        self.optimizer_name = optimizer_name
        self.warned = False
        self._steps = 0
        self._host = None  # pinned [sum of v_hat, count], copied from the device
        self._copied = None  # the event after that copy
        self._pending = None  # (groups' hyperparameters, step) of the copy in flight

    def record(self, accum: torch.Tensor, groups: list[dict]) -> None:
        """After a step: check the copy in flight, then record this step's ``accum`` with the
        groups' decay hyperparameters. Skipped while torch.compile traces or a CUDA graph
        captures (a host read there would either break the graph or never be replayed)."""
        if self.warned or torch.compiler.is_compiling():
            return
        if accum.is_cuda and torch.cuda.is_current_stream_capturing():
            return
        self._steps += 1
        self._check_copy()
        if self._pending is not None:
            return
        hyper = []
        for group in groups:
            lr = group["lr"]
            if torch.is_tensor(lr):
                if lr.device.type != "cpu":  # reading it would sync: skip this group
                    continue
                lr = lr.item()
            if group["weight_decay"] > 0:
                hyper.append((float(lr), float(group["weight_decay"]),
                              float(group["decay_power"]), float(group["decay_eps"])))
        if not hyper:
            return
        if not accum.is_cuda:  # on the CPU the value is there now
            self._warn_if_large(accum.tolist(), hyper, self._steps)
            return
        if self._host is None:
            self._host = torch.empty(accum.shape, dtype=accum.dtype, pin_memory=True)
            self._copied = torch.cuda.Event()
        self._host.copy_(accum, non_blocking=True)
        self._copied.record()
        self._pending = (hyper, self._steps)

    def _check_copy(self) -> None:
        if self._pending is None or not self._copied.query():
            return  # nothing in flight, or not copied yet: look again after the next step
        hyper, step = self._pending
        self._pending = None
        self._warn_if_large(self._host.tolist(), hyper, step)

    def _warn_if_large(self, accum: list[float], hyper: list[tuple], step: int) -> None:
        total, count = accum[:2]
        if not count > 0:
            return
        v_bar = total / count
        for lr, weight_decay, decay_power, decay_eps in hyper:
            decay = decay_per_step(lr, weight_decay, decay_power, decay_eps, v_bar)
            if decay >= 1:  # a NaN or inf v_bar (a skipped AMP step) compares False
                self.warned = True
                suggested = weight_decay_from_adamw(weight_decay, v_bar, decay_power, decay_eps)
                warnings.warn(
                    f"{self.optimizer_name}: at step {step} the stable decay "
                    f"lr*weight_decay/(v_bar+decay_eps)^decay_power = {decay:.3g} >= 1 "
                    f"(lr={lr:g}, weight_decay={weight_decay:g}, v_bar={v_bar:.3g}): the "
                    f"weights were multiplied by {1 - decay:.3g}. This weight_decay is on "
                    f"AdamW's scale; AdamS's lives on the L2/SGD scale (the paper uses 5e-4 "
                    f"where AdamW uses 0.5). At this v_bar, AdamW's decay with "
                    f"weight_decay={weight_decay:g} is AdamS's with weight_decay="
                    f"{suggested:.2g} (swd_kernels.weight_decay_from_adamw). This warning is "
                    f"given once.", RuntimeWarning, stacklevel=7)  # the caller of step()
                return
