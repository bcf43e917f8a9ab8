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


def unavailable_reason(name: str, device) -> str | None:
    """Why backend ``name`` cannot run on ``device``, or None when it can."""
    try:
        module = _module(name)
    except ImportError as error:  # e.g. triton not installed
        return f"importing it failed: {error}"
    return module.unavailable_reason(torch.device(device))


def available_backends(device="cpu") -> list[str]:
    """The backends usable for ``device``, fastest first (the order ``"auto"`` tries)."""
    return [name for name in BACKEND_NAMES if unavailable_reason(name, device) is None]


def validate_request(backend: str) -> str:
    """Check a ``backend=`` value (or the environment override) names a backend at all."""
    requested = os.environ.get(ENV_VAR) or backend
    if not isinstance(requested, str) or requested not in ("auto",) + BACKEND_NAMES:
        source = f"the {ENV_VAR} environment variable" if os.environ.get(ENV_VAR) else "backend"
        raise ValueError(
            f"{source}={requested!r} is not a backend: choose one of "
            f"{['auto', *BACKEND_NAMES]}")
    return requested


def resolve(backend: str, device) -> str:
    """The backend that runs ``device``'s tensors for a request (the environment wins)."""
    requested = validate_request(backend)
    device = torch.device(device)
    if requested == "auto":
        return available_backends(device)[0]
    reason = unavailable_reason(requested, device)
    if reason is not None:
        raise RuntimeError(
            f"backend={requested!r} is not available on {device}: {reason}. Available there: "
            f"{available_backends(device)}; use backend='auto' to pick the fastest.")
    return requested
