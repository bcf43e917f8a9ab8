"""Backend choice: which implementations of the op contract a device can use, and which one a
request (``backend=``, ``SWD_KERNELS_BACKEND``) resolves to."""
from __future__ import annotations

import importlib
import os

import torch

from ..ops import BACKEND_NAMES

ENV_VAR = "SWD_KERNELS_BACKEND"
_MODULES = {"native": "native", "triton": "triton", "torch": "foreach"}


def _module(name: str):
    return importlib.import_module(f"{__name__}.{_MODULES[name]}")


def unavailable_reason(name: str, device, dtype: torch.dtype | None = None) -> str | None:
    """Why backend ``name`` cannot run on ``device`` (for params of ``dtype``, if given), or
    None when it can. A backend module may list its dtypes in ``supported_dtypes(device)``."""
    try:
        module = _module(name)
    except ImportError as error:  # e.g. triton not installed
        return f"importing it failed: {error}"
    device = torch.device(device)
    reason = module.unavailable_reason(device)
    supported = getattr(module, "supported_dtypes", None)
    if reason is None and dtype is not None and supported is not None:
        dtypes = supported(device)
        if dtype not in dtypes:
            names = ", ".join(sorted(str(d).replace("torch.", "") for d in dtypes))
            reason = f"it handles {names} params, not {str(dtype).replace('torch.', '')}"
    return reason


def available_backends(device="cpu", dtype: torch.dtype | None = None) -> list[str]:
    """The backends usable for ``device`` (and params of ``dtype``), fastest first: the order
    ``"auto"`` tries."""
    return [name for name in BACKEND_NAMES if unavailable_reason(name, device, dtype) is None]


def validate_request(backend: str) -> str:
    """Check a ``backend=`` value (or the environment override) names a backend at all."""
    requested = os.environ.get(ENV_VAR) or backend
    if not isinstance(requested, str) or requested not in ("auto",) + BACKEND_NAMES:
        source = f"the {ENV_VAR} environment variable" if os.environ.get(ENV_VAR) else "backend"
        raise ValueError(
            f"{source}={requested!r} is not a backend: choose one of "
            f"{['auto', *BACKEND_NAMES]}")
    return requested


def resolve(backend: str, device, dtype: torch.dtype | None = None) -> str:
    """The backend that runs ``device``'s tensors (of ``dtype``) for a request; the
    environment override wins over the argument."""
    requested = validate_request(backend)
    device = torch.device(device)
    if requested == "auto":
        return available_backends(device, dtype)[0]  # "torch" handles every dtype
    reason = unavailable_reason(requested, device, dtype)
    if reason is not None:
        raise RuntimeError(
            f"backend={requested!r} is not available on {device}: {reason}. Available there: "
            f"{available_backends(device, dtype)}; use backend='auto' to pick the fastest.")
    return requested
