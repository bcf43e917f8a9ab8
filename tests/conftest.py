"""Every test with a ``backend`` argument runs once per backend available on this machine's
CPU (``swd_kernels.available_backends("cpu")``: torch always, native once built, triton under
``TRITON_INTERPRET=1``), so a new backend joins the whole suite without edits. Test ids name
the backend, e.g. ``test_adams_matches_oracle[torch-...]``.

``slow`` marks what makes the suite take 10-16 minutes on a 2-core CPU machine (measured with
``--durations``): the triton backend under Triton's CPU interpreter, the Triton-only files, the
multi-process distributed tests, the hypothesis sweep and the half-precision oracle grid.
``python -m pytest tests -q -m "not slow"`` is the quick run (every optimizer and option on the
native and torch backends against the oracle, in fp32); CI runs everything."""
from __future__ import annotations

import os
import sys

import pytest
import torch

# Without a GPU, Triton kernels run only in Triton's interpreter, which must be switched on
# before anything imports triton: then the triton backend joins the whole suite on CPU (CI).
if "TRITON_INTERPRET" not in os.environ and not torch.cuda.is_available():
    os.environ["TRITON_INTERPRET"] = "1"

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # oracle, problems, tolerance

import swd_kernels  # noqa: E402
from hypothesis import settings  # noqa: E402

# CI draws the same examples every run (a landing is never decided by a lucky draw); local runs
# keep exploring new ones.
settings.register_profile("ci", derandomize=True)
if os.environ.get("CI"):
    settings.load_profile("ci")

CPU_BACKENDS = swd_kernels.available_backends("cpu")


def pytest_configure(config):
    """A missing or broken native build must not leave the suite green on the other backends:
    stop, unless SWD_KERNELS_TEST_WITHOUT_NATIVE=1 says that is meant."""
    if "native" in CPU_BACKENDS or os.environ.get("SWD_KERNELS_TEST_WITHOUT_NATIVE") == "1":
        return
    from swd_kernels.backends import unavailable_reason
    raise pytest.UsageError(
        f"the native backend is not available on cpu: {unavailable_reason('native', 'cpu')}. "
        f"Build it (pip install --no-build-isolation -e .), or set "
        f"SWD_KERNELS_TEST_WITHOUT_NATIVE=1 to test the other backends only.")


def pytest_report_header(config):
    return f"swd_kernels backends under test on cpu: {CPU_BACKENDS}"


# Whole files that are slow: Triton's interpreter and compiler (test_triton*.py), ranks spawned
# as processes (test_distributed.py) and the property sweep (test_hypothesis.py: 150 random
# problems per backend).
SLOW_FILES = {"test_triton.py", "test_triton_compile.py", "test_distributed.py", "test_zero.py",
              "test_hypothesis.py"}
# The half-precision oracle grid (48 runs on native and torch, the oracle rounding every stored
# value). The quick run keeps fp32 against the oracle for every option of every optimizer, and
# test_native_cpu.py's op-level cases hold every backend to the oracle in every dtype.
SLOW_TESTS = {"test_oracle.py": {"test_half_matches_rounded_oracle",
                                 "test_half_params_fp32_state"}}


def pytest_collection_modifyitems(config, items):
    for item in items:
        name = item.path.name
        # the triton backend by any parameter name (backend, backend_name, ...)
        params = getattr(item, "callspec", None)
        params = params.params.values() if params is not None else ()
        on_triton = any(isinstance(v, str) and v == "triton" for v in params)
        function = getattr(item, "originalname", item.name)
        if on_triton or name in SLOW_FILES or function in SLOW_TESTS.get(name, ()):
            item.add_marker(pytest.mark.slow)


def pytest_generate_tests(metafunc):
    # parametrize rather than a fixture, so hypothesis tests (@given) get it too
    if "backend" in metafunc.fixturenames:
        metafunc.parametrize("backend", CPU_BACKENDS)


@pytest.fixture(autouse=True, scope="session")
def _no_backend_override():
    """``SWD_KERNELS_BACKEND`` overrides ``backend=``: unset it, so each test runs the backend
    its id names (tests of the variable set it themselves)."""
    with pytest.MonkeyPatch.context() as patch:
        patch.delenv("SWD_KERNELS_BACKEND", raising=False)
        yield
