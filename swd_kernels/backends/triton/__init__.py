"""The ``triton`` backend (not built yet): always unavailable, with the reason."""
from __future__ import annotations

import torch

from ... import ops

NAME = "triton"
ops.define(NAME)


def unavailable_reason(device: torch.device) -> str | None:
    return "the triton backend is not implemented yet"
