"""torch.library.opcheck on every op of every available CPU backend namespace (swd_torch,
swd_native once built, swd_triton under the interpreter): schema mutation annotations, fake
implementations and AOT dispatch, on the op-level cases' random buckets (tests/op_cases.py)."""
from __future__ import annotations

import pytest
import torch

import op_cases
from op_cases import BucketCase
from swd_kernels import ops

# The family whose bucket each op takes (adam_reduce serves AdamS and AdaiS alike).
PROGRAM_OF = {"adam_reduce": ("adam_reduce",), "adam_update": ("adam_update",),
              "adam_step": ("adam_step",), "adai_update": ("adai_update",),
              "sgd_update": ("sgd_update",)}

VARIANTS = [
    pytest.param(dict(), id="fp32"),
    pytest.param(dict(hyper=dict(amsgrad=True), lr_tensor=1e-2), id="amsgrad-lr_tensor"),
    pytest.param(dict(grad_scale=4.0, found_inf=0.0), id="grad_scale-found_inf"),
    pytest.param(dict(param_dtype=torch.bfloat16), id="bf16"),
    pytest.param(dict(param_dtype=torch.bfloat16, state_dtype=torch.float32),
                 id="bf16-fp32state"),
]
# small: opcheck calls each op several times (eager, fake, AOT)
SHAPES = ((1,), (4097,), (8, 3, 5, 7), (33, 65))


@pytest.mark.parametrize("op", list(ops.SCHEMAS))
@pytest.mark.parametrize("variant", VARIANTS)
def test_opcheck(backend, op, variant):
    if variant.get("hyper", {}).get("amsgrad") and op not in ("adam_reduce", "adam_update",
                                                             "adam_step"):
        variant = {k: v for k, v in variant.items() if k != "hyper"}
    case = BucketCase(program=PROGRAM_OF[op], shapes=SHAPES, layout="channels_last", **variant)
    bucket = op_cases.make(case, backend)
    torch.library.opcheck(ops.get(backend, op).default, (), bucket.args(op))
