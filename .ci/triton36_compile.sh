#!/usr/bin/env bash
# The sm_90 compile check (tests/test_triton_compile.py: every Triton kernel variant through
# ptxas, no GPU) under Triton 3.6, the version on the GPU machine, beside the 3.8 the
# environment has. Triton 3.6 goes into a side folder placed first on PYTHONPATH; the test
# then fails unless that is the Triton that compiled, and fails instead of skipping when
# ptxas is missing. Run from anywhere, inside the project's environment (torch installed).
set -euo pipefail
cd "$(dirname "$0")/.."

version="3.6.0"
# SWD_KERNELS_TRITON36_DIR keeps the side folder between runs; by default it is temporary.
side="${SWD_KERNELS_TRITON36_DIR:-}"
if [ -z "$side" ]; then
  side="$(mktemp -d)"
  trap 'rm -rf "$side"' EXIT
fi
if [ ! -f "$side/triton/__init__.py" ]; then
  python -m pip install -q --no-deps --target "$side" "triton==$version"
fi

# The interpreter must stay off for the compiling child; the test's own process imports
# Triton too, so it gets the same PYTHONPATH.
env -u TRITON_INTERPRET PYTHONPATH="$side${PYTHONPATH:+:$PYTHONPATH}" \
  SWD_KERNELS_REQUIRED_TRITON="$version" \
  python -m pytest tests/test_triton_compile.py -q -p no:cacheprovider
