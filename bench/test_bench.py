"""pytest-benchmark suite over the benchmark's workloads, for regression tracking:

    python -m pytest bench/test_bench.py --benchmark-only            # small workloads, CPU
    SWD_KERNELS_BENCH_FULL=1 python -m pytest bench/test_bench.py --benchmark-only   # + real lists
    SWD_KERNELS_BENCH_DEVICE=cuda python -m pytest bench/test_bench.py --benchmark-only

Same rows as bench/run.py (bench/cases.py), one benchmark per (row, workload, dtype), grouped
by workload and dtype so `--benchmark-compare` lines them up. Lives in bench/, so
`python -m pytest tests` never collects it."""
import os

import pytest
import torch

from bench import shapes
from bench.cases import DTYPES, row_kinds
from bench.run import make_tensors, replica

DEVICE = torch.device(os.environ.get("SWD_KERNELS_BENCH_DEVICE", "cpu"))
FULL = os.environ.get("SWD_KERNELS_BENCH_FULL") == "1"

WORKLOADS = [shapes.flat(16), shapes.flat(20), shapes.from_json("gpt2_124m", 8),
             shapes.small_tensors()]
if FULL:
    WORKLOADS += [shapes.flat(24), shapes.from_json("gpt2_124m"), shapes.from_json("resnet50")]
DTYPE_LABELS = list(DTYPES) if FULL else ["fp32"]

if DEVICE.type == "cuda" and not torch.cuda.is_available():
    pytest.skip("SWD_KERNELS_BENCH_DEVICE=cuda but no CUDA GPU is visible", allow_module_level=True)

KINDS = row_kinds(DEVICE)
_templates: dict = {}


def _template(workload, dtype):
    key = (workload.name, dtype)
    if key not in _templates:
        _templates.clear()  # keep one workload's tensors alive at a time
        _templates[key] = (make_tensors(workload, dtype, DEVICE, 0),
                           make_tensors(workload, dtype, DEVICE, 1))
    return _templates[key]


@pytest.mark.parametrize("dtype_label", DTYPE_LABELS)
@pytest.mark.parametrize("workload", WORKLOADS, ids=lambda w: w.name.replace("^", "pow"))
@pytest.mark.parametrize("kind", KINDS, ids=lambda k: f"{k.name}-{k.backend}")
def test_step(benchmark, kind, workload, dtype_label):
    dtypes = DTYPES[dtype_label]
    stepper = kind.build(replica(*_template(workload, dtypes.param)), dtypes)
    stepper.step()  # state creation (and compilation) stays out of the timing

    def step():
        stepper.step()
        if DEVICE.type == "cuda":
            torch.cuda.synchronize(DEVICE)

    benchmark.group = f"{workload.name} {dtype_label}"
    benchmark.extra_info.update(params=workload.numel, tensors=workload.tensors)
    benchmark.pedantic(step, rounds=5, iterations=1, warmup_rounds=1)
