#!/usr/bin/env bash
# The one prepared script for the GPU machine (bare, offline; Python 3.12, torch CUDA, Triton,
# nvcc, ninja). Run from the repository root:   bash bench/device_check.sh
# Stages, each under its own `timeout` so one hang cannot eat the rest (about 6 min in all):
#   build (pip install -e .), CUDA + Triton-on-GPU tests, compute-sanitizer memcheck and
#   racecheck on bench/sanitize_step.py, the GPU benchmark, and a summary table printed LAST.
# Logs, JSON and PNG go to $OUT/device_check when $OUT is set (the device tool returns $OUT),
# else to bench/results/device_check-<time>; a copy always lands in bench/results/.
set -u
cd "$(dirname "$0")/.."
STAMP=$(date -u +%Y%m%dT%H%M%SZ)
DEST=${OUT:+$OUT/device_check}
DEST=${DEST:-bench/results/device_check-$STAMP}
mkdir -p "$DEST"
SUMMARY=()
T0=$SECONDS

stage() {  # stage NAME SECONDS COMMAND...: run under timeout, log to $DEST/NAME.log
  local name=$1 limit=$2; shift 2
  local start=$SECONDS status
  echo "=== $name (limit ${limit}s): $*" | tee "$DEST/$name.log"
  timeout -k 5 "$limit" "$@" >>"$DEST/$name.log" 2>&1
  local rc=$?
  case $rc in
    0) status=ok ;;
    5) status="no tests" ;;  # pytest: nothing collected (e.g. no test marked cuda yet)
    124|137) status=TIMEOUT ;;
    *) status="FAIL(rc=$rc)" ;;
  esac
  SUMMARY+=("$(printf '%-12s %-12s %4ss' "$name" "$status" $((SECONDS - start)))")
  [ $rc -ne 0 ] && tail -n 25 "$DEST/$name.log"
  return $rc
}

{ nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
  python -c "import torch, sys; print('python', sys.version.split()[0], 'torch', torch.__version__, 'cuda', torch.version.cuda)"
  python -c "import triton; print('triton', triton.__version__)"
  nvcc --version | tail -n 2; } >"$DEST/env.log" 2>&1
cat "$DEST/env.log"

export MAX_JOBS=16 SWD_KERNELS_CUDA_ARCHS=9.0
stage build 110 pip install -e . --no-build-isolation --no-deps
python -c "import swd_kernels, torch; print('backends on cuda:', swd_kernels.available_backends('cuda'))" \
  2>&1 | tee -a "$DEST/build.log"

# CUDA tests (tests/test_cuda.py where it exists) and every test marked cuda (Triton on GPU)
if [ -f tests/test_cuda.py ]; then
  stage test_cuda 90 python -m pytest tests/test_cuda.py -q -p no:cacheprovider --durations=10
fi
stage test_marked 50 python -m pytest tests -q -m cuda -p no:cacheprovider \
  --ignore=tests/test_cuda.py

SANITIZER=$(command -v compute-sanitizer || echo /usr/local/cuda/bin/compute-sanitizer)
if [ -x "$SANITIZER" ]; then
  # without the caching allocator every tensor is its own allocation, so memcheck sees an
  # out-of-bounds access even where a cached block would have hidden it
  PYTORCH_NO_CUDA_MEMORY_CACHING=1 \
  stage memcheck 45 "$SANITIZER" --tool memcheck --error-exitcode 1 python bench/sanitize_step.py
  stage racecheck 35 "$SANITIZER" --tool racecheck --error-exitcode 1 python bench/sanitize_step.py
else
  SUMMARY+=("$(printf '%-12s %-12s' sanitizer 'SKIP(none)')")
fi

# what is left of the 6 minutes, minus a margin for the summary and copies
LEFT=$((345 - (SECONDS - T0)))
[ $LEFT -lt 40 ] && LEFT=40
stage bench $LEFT python bench/run.py --device cuda --out "$DEST" --budget-s $((LEFT - 25))

if [ -n "${OUT:-}" ]; then  # keep a copy in the tree too
  mkdir -p bench/results && cp -r "$DEST" "bench/results/device_check-$STAMP"
fi
echo
echo "=== summary ($((SECONDS - T0)) s; logs in $DEST)"
for json in "$DEST"/cuda*.json; do
  [ -f "$json" ] && python bench/summarize.py "$json" --dtype fp32 2>&1 | head -n 60
done
printf '%s\n' "${SUMMARY[@]}"
