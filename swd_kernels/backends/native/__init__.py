"""The ``native`` backend: the compiled ``swd_kernels._C`` library (csrc/), fused C++ kernels on
CPU and multi-tensor CUDA kernels. Importing this never fails: a missing or CPU-only build
only makes the backend unavailable, with the reason."""
from __future__ import annotations

import glob
import os

import torch

from ... import ops

NAME = "native"
ops.define(NAME)

_load_error: str | None = None


def _load() -> None:
    global _load_error
    here = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    candidates = glob.glob(os.path.join(here, "_C*.so")) + glob.glob(os.path.join(here, "_C*.pyd"))
    if not candidates:
        _load_error = ("the compiled extension swd_kernels._C was not built (reinstall with "
                       "`pip install -e . --no-build-isolation` and a C++ compiler)")
        return
    try:
        torch.ops.load_library(candidates[0])
    except OSError as error:
        _load_error = f"loading {candidates[0]} failed: {error}"


_load()


def _has_kernel(device_type: str) -> bool:
    key = {"cpu": "CPU", "cuda": "CUDA"}.get(device_type)
    return key is not None and torch._C._dispatch_has_kernel_for_dispatch_key(
        f"{ops.namespace(NAME)}::adam_update", key)


def unavailable_reason(device: torch.device) -> str | None:
    if _load_error is not None:
        return _load_error
    if not _has_kernel(device.type):
        if device.type == "cuda":
            return ("the extension was built without CUDA ops (build with nvcc and a CUDA "
                    "build of torch, without SWD_KERNELS_SKIP_CUDA_BUILD=1)")
        return f"no native kernels for device type {device.type!r}"
    if device.type == "cuda" and not torch.cuda.is_available():
        return "no CUDA GPU is visible"
    return None
