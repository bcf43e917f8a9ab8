"""The ``triton`` backend: the op contract (docs/design.md §4) in Triton multi-tensor kernels.

On CUDA it needs Triton and a GPU. On CPU it runs only in Triton's interpreter
(``TRITON_INTERPRET=1`` set before Triton is first imported): slow, meant for tests.
Importing this module without Triton raises ImportError, which the backend registry reports.

Modules: adam.py (adam_reduce, adam_update, adam_step), adai.py (adai_update) and sgd.py
(sgd_update), each importing only common.py (what the families share), scalars.py (the
per-tensor scalars and their float64 policy), chunking.py (chunk layouts and pointer tables),
device_tables.py (how those reach the device, CUDA-graph capture included), workspace.py
(scratch memory per stream), streams.py (device, stream, capture) and occupancy.py (what
sizes the one-launch grid).

Every launch runs on its bucket's device (the current device and stream are switched to it
for the launch), so buckets on several GPUs work in principle; two-GPU runs are untested.

Environment: ``SWD_KERNELS_TRITON_ONE_LAUNCH=1`` (read at every ``adam_step``) runs AdamS's and
AMSGradS's single-bucket step as one cooperative launch on a GPU (adam.py); the default, and
the fallback wherever that cannot run (the interpreter, a Triton without cooperative launch),
is two launches. ``TRITON_INTERPRET`` is Triton's own, read here only to explain
unavailability.
"""
from __future__ import annotations

import os

import torch
import triton  # noqa: F401  (an ImportError here marks the backend unavailable)

from ... import ops
from . import adai, adam, sgd

NAME = "triton"

_lib = ops.define(NAME)
for _name, _fn in (("adam_reduce", adam.adam_reduce), ("adam_update", adam.adam_update),
                   ("adam_step", adam.adam_step), ("adai_update", adai.adai_update),
                   ("sgd_update", sgd.sgd_update)):
    for _key in ("CUDA", "CPU"):
        _lib.impl(_name, _fn, _key)


_HALF_AND_SINGLE = {torch.float32, torch.bfloat16, torch.float16}
# device type -> (param dtypes, state dtypes beside params of another dtype): fp32/bf16/fp16
# params, states in the param dtype or fp32 (the interpreter runs the same kernels on CPU)
DTYPES = {device_type: (_HALF_AND_SINGLE, {torch.float32}) for device_type in ("cuda", "cpu")}


def kernels_interpreted() -> bool:
    """Whether Triton's interpreter runs our kernels (decided when they were defined)."""
    return type(adam.adam_update_kernel).__name__ == "InterpretedFunction"


def unavailable_reason(device: torch.device) -> str | None:
    device = torch.device(device)
    interpreted = kernels_interpreted()
    if device.type == "cuda":
        if interpreted:
            return ("Triton's interpreter is on (TRITON_INTERPRET=1), which runs kernels on "
                    "CPU tensors only: unset it to use the GPU")
        if not torch.cuda.is_available():
            return "no CUDA GPU is available"
        return None
    if device.type == "cpu":
        if interpreted:
            return None
        if os.environ.get("TRITON_INTERPRET") == "1":
            return ("TRITON_INTERPRET=1 was set after Triton compiled these kernels: set it "
                    "before the first `import triton` (or `import swd_kernels`)")
        return ("Triton kernels run on CPU only in Triton's interpreter: set "
                "TRITON_INTERPRET=1 before importing triton (slow; for tests), or use "
                "backend='native' or 'torch'")
    return f"the triton backend runs on cuda (and cpu in the interpreter), not {device.type}"
