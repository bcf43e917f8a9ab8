"""``optimizer.stats``: what a step measured, as device tensors read without a host sync.

After each step one small float64 buffer on the step's first device holds the global grad
norm, v_bar and each param group's applied decay; ``stats`` hands out views of it, so a logger
may keep them and read them whenever it chooses to sync. The buffer is written in place (the
same memory every step: CUDA-graph safe), and a step skipped by a GradScaler's ``found_inf``
leaves it as it was.
"""
from __future__ import annotations

import torch

from ..backends.foreach.common import global_mean
from ..ops import GRAD_SQ_SUM

GRAD_NORM, VHAT_MEAN, FIRST_DECAY = range(3)


class StepStats:
    """The buffer ``[grad_norm, vhat_mean, decay of group 0, decay of group 1, ...]``."""

    def __init__(self):
        self.buffer: torch.Tensor | None = None
        self.keys: tuple[str, ...] = ()  # which of grad_norm / vhat_mean were measured

    def prepare(self, device: torch.device, n_groups: int) -> None:
        """Allocate the buffer (outside a compiled or captured step: it must persist)."""
        size = FIRST_DECAY + n_groups
        if self.buffer is None or self.buffer.device != device or self.buffer.numel() != size:
            self.buffer = torch.zeros(size, dtype=torch.float64, device=device)

    def record(self, accum: torch.Tensor, decays: list[torch.Tensor], keys: tuple[str, ...],
               found_inf) -> None:
        """Write this step's values (``decays``: one 0-dim tensor per group, from ``accum``)."""
        self.prepare(accum.device, len(decays))
        new = torch.stack([accum[GRAD_SQ_SUM].sqrt(), global_mean(accum),
                           *(d.to(torch.float64).reshape(()) for d in decays)])
        if found_inf is not None:
            new = torch.where(found_inf.to(new.device) != 0, self.buffer, new)
        self.buffer.copy_(new)
        self.keys = keys

    def as_dict(self) -> dict:
        if self.buffer is None:
            return {}
        stats = {key: self.buffer[index] for key, index in
                 (("grad_norm", GRAD_NORM), ("vhat_mean", VHAT_MEAN)) if key in self.keys}
        stats["decay"] = list(self.buffer[FIRST_DECAY:].unbind())
        return stats
