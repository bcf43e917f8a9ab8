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


def unavailable_reason(name: str, device, dtype: torch.dtype | None = None,
                       state_dtype: torch.dtype | None = None) -> str | None:
    """Why backend ``name`` cannot run on ``device`` (for params of ``dtype`` with states of
    ``state_dtype``, if given), or None when it can. A backend module that does not take every
    dtype says which it takes in its table ``DTYPES``: device type -> (param dtypes, state
    dtypes it keeps beside params of another dtype); states in the param dtype always go."""
    try:
        module = _module(name)
    except ImportError as error:  # e.g. triton not installed
        return f"importing it failed: {error}"
    device = torch.device(device)
    reason = module.unavailable_reason(device)
    table = getattr(module, "DTYPES", None)
    if reason is None and dtype is not None and table is not None:
        params, states_beside = table.get(device.type, (set(), set()))
        reason = dtype_reason(dtype, state_dtype or dtype, params, states_beside)
    return reason


def available_backends(device="cpu", dtype: torch.dtype | None = None,
                       state_dtype: torch.dtype | None = None) -> list[str]:
    """The backends usable for ``device`` (and params of ``dtype`` with states of
    ``state_dtype``), fastest first: the order ``"auto"`` tries."""
    return [name for name in BACKEND_NAMES
            if unavailable_reason(name, device, dtype, state_dtype) is None]


def validate_request(backend: str) -> str:
    """Check a ``backend=`` value (or the environment override) names a backend at all."""
    requested = os.environ.get(ENV_VAR) or backend
    if not isinstance(requested, str) or requested not in ("auto",) + BACKEND_NAMES:
        source = f"the {ENV_VAR} environment variable" if os.environ.get(ENV_VAR) else "backend"
        raise ValueError(
            f"{source}={requested!r} is not a backend: choose one of "
            f"{['auto', *BACKEND_NAMES]}")
    return requested


def resolve(backend: str, device, dtype: torch.dtype | None = None,
            state_dtype: torch.dtype | None = None) -> str:
    """The backend that runs ``device``'s tensors (params of ``dtype``, states of
    ``state_dtype``) for a request; the environment override wins over the argument."""
    requested = validate_request(backend)
    device = torch.device(device)
    if requested == "auto":  # "torch" handles every dtype
        return available_backends(device, dtype, state_dtype)[0]
    reason = unavailable_reason(requested, device, dtype, state_dtype)
    if reason is not None:
        raise RuntimeError(
            f"backend={requested!r} is not available on {device}: {reason}. Available there: "
            f"{available_backends(device, dtype, state_dtype)}; use backend='auto' to pick "
            f"the fastest.")
    return requested


def dtype_reason(dtype: torch.dtype, state_dtype: torch.dtype, params: set,
                 states_beside: set) -> str | None:
    """The usual kernel rule: params of a dtype in ``params``; states in the param dtype, or
    in one of ``states_beside``."""
    def name(d):
        return str(d).replace("torch.", "")
    if dtype not in params:
        return (f"it handles {', '.join(sorted(map(name, params)))} params, "
                f"not {name(dtype)}")
    if state_dtype != dtype and state_dtype not in states_beside:
        return (f"it keeps states in the param dtype or "
                f"{', '.join(sorted(map(name, states_beside)))}, not {name(state_dtype)} "
                f"beside {name(dtype)} params")
    return None
