"""A pytest plugin for runs that a time limit may cut off (bench/device_check.sh): each failure's
traceback is printed the moment the test fails, not in the summary at the end, which a killed
run never reaches. Load it with ``-p bench.pytest_failures_now``; under pytest-xdist the
controller prints what its workers report."""
from __future__ import annotations

import sys

_config = None


def pytest_configure(config):
    global _config
    _config = config


def pytest_runtest_logreport(report):
    if not report.failed or hasattr(_config, "workerinput"):  # a worker: the controller prints
        return
    sys.stderr.write(f"\n--- FAILED {report.nodeid} ({report.when})\n{report.longreprtext}\n"
                     f"--- end of {report.nodeid}\n")
    sys.stderr.flush()
