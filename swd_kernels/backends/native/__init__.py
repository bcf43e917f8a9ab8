"""The ``native`` backend: the compiled ``swd_kernels._C`` library (csrc/), fused C++ kernels on
CPU and multi-tensor CUDA kernels, registered as the ``swd_native`` ops' implementations when it
loads. Importing this never fails: a missing or broken build only makes the backend
unavailable, with the reason."""
from __future__ import annotations

import torch

from ... import ops

NAME = "native"
ops.define(NAME)  # the schemas must exist before the library registers kernels for them

_load_error: str | None = None
try:
    from ... import _C  # loading it registers the kernels
except (ImportError, OSError) as error:
    _C = None
    _load_error = (f"the compiled extension swd_kernels._C could not be loaded ({error}); "
                   f"rebuild it with `pip install -e . --no-build-isolation` and a C++ compiler")


def _has_kernel(device_type: str) -> bool:
    key = {"cpu": "CPU", "cuda": "CUDA"}.get(device_type)
    return key is not None and torch._C._dispatch_has_kernel_for_dispatch_key(
        f"{ops.namespace(NAME)}::adam_update", key)


def _dtype_table() -> dict:
    """device type -> (param dtypes, state dtypes beside params of another dtype), as the
    kernels are built (csrc/swd/dtype_dispatch.h, read from the library: one table)."""
    return {device: tuple({getattr(torch, name) for name in names} for names in pair)
            for device, pair in _C.storage_dtypes().items()}


DTYPES = _dtype_table() if _C is not None else {}


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
