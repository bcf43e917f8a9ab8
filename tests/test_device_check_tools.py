"""The tools bench/device_check.sh relies on, checked here so a GPU session never debugs them:
its shell syntax, and the pytest plugin that prints a failure's traceback the moment the test
fails (a stage its time limit kills never reaches pytest's summary)."""
from __future__ import annotations

import os
import subprocess
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_device_check_script_parses():
    done = subprocess.run(["bash", "-n", os.path.join(REPO, "bench", "device_check.sh")],
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


def test_failure_is_printed_before_the_run_ends(tmp_path):
    (tmp_path / "test_sample.py").write_text(
        "def test_fails():\n    assert 2 + 2 == 5, 'planted'\n\n"
        "def test_passes():\n    pass\n")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [REPO,
                                                                    os.environ.get("PYTHONPATH")])))
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p",
         "bench.pytest_failures_now", "--rootdir", str(tmp_path), str(tmp_path)],
        capture_output=True, text=True, env=env, cwd=tmp_path, timeout=120)
    assert done.returncode == 1, done.stdout + done.stderr
    assert "--- FAILED test_sample.py::test_fails (call)" in done.stderr
    assert "planted" in done.stderr.split("--- FAILED", 1)[1]
    assert "test_passes" not in done.stderr
