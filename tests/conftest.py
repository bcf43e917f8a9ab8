"""Every test with a ``backend`` argument runs once per backend available on this machine's
CPU (``swd_kernels.available_backends("cpu")``: torch always, native once built, triton under
``TRITON_INTERPRET=1``), so a new backend joins the whole suite without edits. Test ids name
the backend, e.g. ``test_adams_matches_oracle[torch-...]``."""
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


def pytest_report_header(config):
    return f"swd_kernels backends under test on cpu: {CPU_BACKENDS}"


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
