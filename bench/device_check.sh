#!/usr/bin/env bash
# The one prepared script for the GPU machine (bare and offline: Python 3.12, torch 2.11 with
# CUDA, Triton 3.6, nvcc 13.0, ninja). From the repository root:
#
#     bash bench/device_check.sh                 # every stage, within DEVICE_CHECK_SECONDS (540)
#     bash bench/device_check.sh --record        # and keep the record in bench/results/recorded/
#     bash bench/device_check.sh --fingerprint   # print the source tree's fingerprint; run nothing
#
# Stages, each under `timeout` and all under one deadline, so a hang costs its own stage only.
# They run as separate processes on the one GPU (nothing in them is timed), in three waves:
#   from the start (they need no native build, and get the build's minutes to compile kernels):
#     test_triton      the Triton cases of tests/test_cuda.py (each new kernel specialization
#                      compiles, ~0.5 s; they launch about 160 distinct ones)
#     build            pip install -e . (CUDA ops for sm_90 only; offline, no dependencies;
#                      ~60 s beside test_triton, 180 s when two sanitized runs shared the CPUs)
#     import           then: the backends that run on cuda (native and triton must)
#   once the build is done:
#     test_native      the other cases of tests/test_cuda.py (native, and torch where it is
#                      the reference)
#     memcheck_triton  compute-sanitizer memcheck on bench/sanitize_step.py --backend triton
#     memcheck_native  memcheck on bench/sanitize_step.py --backend native
#     racecheck        racecheck on both backends' steps (fp32: shared memory holds float64
#                      sums whatever the storage dtype)
#     synccheck        synccheck on the same steps
#   then alone, so its timings are clean, with the time left:
#     bench            bench/run.py --device cuda
# The table (stage, status, seconds, limit, the stage's last outcome line) is printed last.
# A failing test's traceback is printed the moment it fails (bench/pytest_failures_now.py), so
# a stage cut off by its limit still shows why its failures failed.
#
# The first run on a GPU (bench/results/recorded/device-2026-11-30/) got through about 40% of
# each test stage in 360 s: the whole file takes longer than one session's device time. So
# DEVICE_CHECK_TESTS names a file of test ids (one per line, as pytest prints them), and the
# test stages then run those alone: a session reruns what failed or was never reached, and
# what its change touches. DEVICE_CHECK_SKIP names a file of test ids to leave out (those an
# earlier run passed and no change since touches).
#
# Files. $OUT, when set (the device tool returns at most 8 files, flat), gets device_check.log
# (every stage's log in stage order, each cut to its first 200 KB and last 1.3 MB), summary.txt
# (versions and the table), the record device_check-<date>.json (device, versions, commit, tree
# fingerprint, date, stages) and the benchmark's cuda0-<date>-<time>.{json,png}. The whole logs
# stay in the git-ignored bench/results/runs/device_check-<date>-<time>/, which gets everything
# when $OUT is unset; --record also keeps the record in bench/results/recorded/.
#
# Environment: PYTHON (default python3), DEVICE_CHECK_SECONDS (default 540: a 15-minute device
# budget then still holds a second, shorter run), DEVICE_CHECK_STAGES (space-separated stage
# names to run; default all), DEVICE_CHECK_TESTS and DEVICE_CHECK_SKIP (see above),
# DEVICE_CHECK_COMMIT (the commit of a copy of the tree that has no .git).
set -u
cd "$(dirname "$0")/.." || exit 2

STAGES=(test_triton build import test_native memcheck_triton memcheck_native racecheck synccheck
        bench)  # in the order they start, which the table and the combined log keep
TOTAL=${DEVICE_CHECK_SECONDS:-540}
RESERVE=20      # seconds kept for the summary and the record
BENCH_MIN=60    # seconds the tests and sanitizers leave to the benchmark at least
PY=${PYTHON:-python3}
RECORD=0

fingerprint() {  # sha256 over the source files' names and contents, the same on any copy
  find csrc swd_kernels tests bench examples setup.py pyproject.toml -type f \
      \( -name '*.py' -o -name '*.cu' -o -name '*.cuh' -o -name '*.h' -o -name '*.cpp' \
         -o -name '*.inc' -o -name '*.sh' -o -name '*.toml' -o -name '*.json' \) \
      -not -path 'bench/results/*' -not -path '*/__pycache__/*' -print0 2>/dev/null \
    | LC_ALL=C sort -z | xargs -0 sha256sum | sha256sum | cut -c1-16
}

case "${1:-}" in
  --fingerprint) fingerprint; exit 0 ;;
  --record) RECORD=1 ;;
  "") ;;
  *) echo "usage: bash bench/device_check.sh [--record | --fingerprint]" >&2; exit 2 ;;
esac

T0=$SECONDS
DEADLINE=$((T0 + TOTAL))
DATE=$(date -u +%Y-%m-%d)
STAMP=$(date -u +%Y-%m-%d-%H%M%S)
WORK=bench/results/runs/device_check-$STAMP
DEST=${OUT:-$WORK}
mkdir -p "$WORK/status" "$DEST"
RECORD_NAME=device_check-$DATE.json
export PYTHONUNBUFFERED=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_INPUT=1
# Each of the dozen processes would otherwise start a CPU thread per core for torch's CPU ops
# (the tests' float64 oracle): 16 x 12 threads on 16 cores.
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-2}
if ! command -v nvcc >/dev/null && [ -x /usr/local/cuda/bin/nvcc ]; then
  export PATH="$PATH:/usr/local/cuda/bin"
fi
SANITIZER=$(command -v compute-sanitizer || echo /usr/local/cuda/bin/compute-sanitizer)

clock() { echo "$((SECONDS - T0))s"; }

wanted() {  # wanted STAGE: whether DEVICE_CHECK_STAGES (default: all) names it
  [ -z "${DEVICE_CHECK_STAGES:-}" ] || [[ " $DEVICE_CHECK_STAGES " == *" $1 "* ]]
}

index_of() {  # the stage's position in STAGES, two digits (orders the table and the log)
  local i
  for i in "${!STAGES[@]}"; do
    [ "${STAGES[$i]}" = "$1" ] && { printf '%02d' "$i"; return; }
  done
  echo 99
}

note() {  # note STAGE STATUS SECONDS LIMIT [DETAIL]: the stage's row of the table
  printf '%s\t%s\t%s\t%s\t%s\n' "$1" "$2" "$3" "$4" "${5:-}" \
    >"$WORK/status/$(index_of "$1")-$1.tsv"
}

capped() {  # capped LIMIT KEEP: LIMIT, or less so that KEEP seconds remain before the deadline
  local left=$((DEADLINE - SECONDS - $2))
  if [ "$1" -lt "$left" ]; then echo "$1"; else echo "$left"; fi
}

# lines that say how a stage ended: pytest's count, the sanitizer's and sanitize_step's
# summaries, the backends found, the benchmark's total, pip's result
OUTCOME='[0-9]+ (passed|failed|errors?|skipped)|no tests ran|ERROR SUMMARY|failing run'
OUTCOME+='|backends on cuda|Total [0-9.]+ s|Successfully installed|error:'

outcome() {  # the last such line of a log, squeezed
  grep -aE "$OUTCOME" "$1" 2>/dev/null | tail -n 1 | tr -s ' =' ' ' | sed 's/^ //; s/ $//' \
    | cut -c1-110
}

run_stage() {  # run_stage STAGE LIMIT COMMAND...: log to $WORK/STAGE.log, row to the table
  local name=$1 limit=$2 start=$SECONDS rc status
  shift 2
  if [ "$limit" -lt 5 ]; then
    note "$name" "SKIP(no time)" 0 "$limit"
    return 0
  fi
  echo "[$(clock)] $name: started (limit ${limit}s)"
  printf '=== %s (limit %ss): %s\n' "$name" "$limit" "$*" >"$WORK/$name.log"
  timeout -k 10 "$limit" "$@" >>"$WORK/$name.log" 2>&1
  rc=$?
  case $rc in
    0) status=ok ;;
    5) status="no tests" ;;  # pytest collected nothing
    124|137) status=TIMEOUT ;;
    *) status="FAIL(rc=$rc)" ;;
  esac
  note "$name" "$status" $((SECONDS - start)) "$limit" "$(outcome "$WORK/$name.log")"
  echo "[$(clock)] $name: $status"
  if [ $rc -ne 0 ]; then
    tail -n 15 "$WORK/$name.log" | sed "s/^/  $name| /"
  fi
  return $rc
}

skip() {  # skip STAGE WHY
  note "$1" "SKIP($2)" 0 0
}

table() {
  printf '%-16s %-20s %5s %6s  %s\n' stage status secs limit outcome
  local f
  for f in "$WORK"/status/*.tsv; do
    [ -f "$f" ] || continue
    awk -F'\t' '{printf "%-16s %-20s %5s %6s  %s\n", $1, $2, $3, $4, $5}' "$f"
  done
}

cut_log() {  # a log whole, or its first 200 KB and last 1.3 MB (each file back is <= 16 MiB)
  local size
  size=$(wc -c <"$1")
  if [ "$size" -le 1500000 ]; then
    cat "$1"
  else
    head -c 200000 "$1"
    printf '\n[... %s bytes cut ...]\n' $((size - 1500000))
    tail -c 1300000 "$1"
  fi
}

collect() {  # the combined log and the summary under $DEST, after every phase
  local stage
  {
    cut_log "$WORK/env.log"
    for stage in "${STAGES[@]}"; do
      [ -f "$WORK/$stage.log" ] && { echo; cut_log "$WORK/$stage.log"; }
    done
  } >"$DEST/device_check.log"
  { cat "$WORK/env.log"; echo; table; } >"$DEST/summary.txt"
}

# ----- what this machine is ----------------------------------------------------------------
COMMIT=$(git rev-parse HEAD 2>/dev/null || echo "${DEVICE_CHECK_COMMIT:-unknown}")
DIRTY=$(git status --porcelain 2>/dev/null | grep -c . || true)
FINGERPRINT=$(fingerprint)
{
  echo "device_check $STAMP (UTC), deadline ${TOTAL}s"
  if [ -d .git ]; then
    echo "commit $COMMIT (git, $DIRTY changed paths), source fingerprint $FINGERPRINT"
  else
    echo "commit $COMMIT (no .git: DEVICE_CHECK_COMMIT), source fingerprint $FINGERPRINT"
  fi
  timeout 30 nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
  timeout 60 "$PY" -c "import sys, torch; print('python', sys.version.split()[0], '| torch',
      torch.__version__, '| cuda', torch.version.cuda, '| gpus', torch.cuda.device_count())"
  timeout 60 "$PY" -c "import triton; print('triton', triton.__version__)"
  timeout 30 nvcc --version | tail -n 1
  timeout 30 "$SANITIZER" --version | tail -n 1
} >"$WORK/env.log" 2>&1
cat "$WORK/env.log"

# ----- how the stages run ------------------------------------------------------------------
# -v: each test's outcome as it ends, so a stage cut off by its limit still shows how far it
# got; pytest-timeout: a hung test is killed after its stack is printed (under xdist only its
# worker dies, and the others go on)
PYTEST=("$PY" -m pytest -v -ra -p no:cacheprovider -p bench.pytest_failures_now --durations=15)
TEST_IDS=(tests/test_cuda.py)
if [ -n "${DEVICE_CHECK_TESTS:-}" ]; then
  mapfile -t TEST_IDS < <(grep -v '^[[:space:]]*\(#\|$\)' "$DEVICE_CHECK_TESTS")
fi
split_ids() {  # split_ids triton|native: the ids of TEST_IDS for that stage (all, unfiltered)
  local id
  for id in "${TEST_IDS[@]}"; do
    if [ "${#TEST_IDS[@]}" -eq 1 ] && [ "$id" = tests/test_cuda.py ]; then echo "$id"; continue; fi
    if [[ "$id" == *triton* ]]; then [ "$1" = triton ] && echo "$id"
    else [ "$1" = native ] && echo "$id"; fi
  done
}
if [ -n "${DEVICE_CHECK_SKIP:-}" ]; then
  while read -r id; do
    [ -n "$id" ] && [ "${id:0:1}" != "#" ] && PYTEST+=(--deselect "$id")
  done <"$DEVICE_CHECK_SKIP"
fi
mapfile -t TRITON_IDS < <(split_ids triton)
mapfile -t NATIVE_IDS < <(split_ids native)
if "$PY" -c "import pytest_timeout" 2>/dev/null; then
  PYTEST+=(--timeout 100 --timeout-method thread)
fi
# xdist workers: the Triton cases are bound by compiling kernels (one CPU core each), the native
# ones by the float64 oracle; 16 cores serve both stages, the build and four sanitized runs
NATIVE_WORKERS=() TRITON_WORKERS=()
if "$PY" -c "import xdist" 2>/dev/null; then
  NATIVE_WORKERS=(-n 6) TRITON_WORKERS=(-n 6)
fi
SANITIZE=("$SANITIZER" --launch-timeout 60 --target-processes application-only
          --print-limit 20 --error-exitcode 1)
# without the caching allocator every tensor is its own allocation, so an access past a
# tensor's end leaves its allocation instead of landing in a cached neighbour
MEMCHECK=(env PYTORCH_NO_CUDA_MEMORY_CACHING=1 "${SANITIZE[@]}" --tool memcheck)
echo "pytest: ${PYTEST[*]:1} ${NATIVE_WORKERS[*]} | ${TRITON_WORKERS[*]}" >>"$WORK/env.log"
phase_limit() { capped "$1" $((RESERVE + BENCH_MIN)); }
have_sanitizer() {  # have_sanitizer STAGE: true, or the stage is marked skipped
  [ -x "$SANITIZER" ] && return 0
  skip "$1" "no compute-sanitizer"
  return 1
}
PIDS=()

# ----- the Triton tests, started beside the build (they need no native build) ----------------
if wanted test_triton; then
  if [ ${#TRITON_IDS[@]} -gt 0 ]; then
    # conftest.py stops a run without the native backend unless this says it is meant
    run_stage test_triton "$(phase_limit 600)" env SWD_KERNELS_TEST_WITHOUT_NATIVE=1 \
      "${PYTEST[@]}" "${TRITON_WORKERS[@]}" -k triton "${TRITON_IDS[@]}" &
    PIDS+=($!)
  else
    skip test_triton "none in DEVICE_CHECK_TESTS"
  fi
fi

# ----- build ---------------------------------------------------------------------------------
BUILT=1
if wanted build; then
  run_stage build "$(capped 240 $((RESERVE + BENCH_MIN + 60)))" \
    env FORCE_CUDA=1 SWD_KERNELS_CUDA_ARCHS=9.0 MAX_JOBS=10 \
    "$PY" -m pip install -v --no-index --no-build-isolation --no-deps -e . || BUILT=0
fi
if wanted import; then
  run_stage import "$(capped 60 $((RESERVE + BENCH_MIN + 60)))" "$PY" -c "
import swd_kernels
from swd_kernels.backends import unavailable_reason
found = swd_kernels.available_backends('cuda')
print('backends on cuda:', found)
missing = {b: unavailable_reason(b, 'cuda') for b in ('native', 'triton') if b not in found}
assert not missing, f'unavailable on cuda: {missing}'"
fi
collect

# ----- the native stages, once it is built ---------------------------------------------------
if wanted test_native; then
  if [ $BUILT -ne 1 ]; then
    skip test_native "build failed"
  elif [ ${#NATIVE_IDS[@]} -eq 0 ]; then
    skip test_native "none in DEVICE_CHECK_TESTS"
  else
    run_stage test_native "$(phase_limit 600)" "${PYTEST[@]}" "${NATIVE_WORKERS[@]}" \
      -k "not triton" "${NATIVE_IDS[@]}" &
    PIDS+=($!)
  fi
fi
if wanted memcheck_triton && have_sanitizer memcheck_triton; then
  run_stage memcheck_triton "$(phase_limit 600)" \
    "${MEMCHECK[@]}" "$PY" bench/sanitize_step.py --backend triton &
  PIDS+=($!)
fi
if wanted memcheck_native && have_sanitizer memcheck_native; then
  if [ $BUILT -eq 1 ]; then
    run_stage memcheck_native "$(phase_limit 600)" \
      "${MEMCHECK[@]}" "$PY" bench/sanitize_step.py --backend native &
    PIDS+=($!)
  else
    skip memcheck_native "build failed"
  fi
fi
SANITIZED_BACKENDS=all
[ $BUILT -eq 1 ] || SANITIZED_BACKENDS=triton
for tool in racecheck synccheck; do
  if wanted $tool && have_sanitizer $tool; then
    run_stage $tool "$(phase_limit 600)" "${SANITIZE[@]}" --tool $tool \
      "$PY" bench/sanitize_step.py --backend $SANITIZED_BACKENDS --dtypes fp32 &
    PIDS+=($!)
  fi
done
[ ${#PIDS[@]} -gt 0 ] && wait "${PIDS[@]}"
collect

# ----- the benchmark, alone ----------------------------------------------------------------
if wanted bench; then
  LIMIT=$(capped 600 "$RESERVE")
  if [ "$LIMIT" -ge 60 ]; then
    run_stage bench "$LIMIT" "$PY" bench/run.py --device cuda --out "$DEST" \
      --budget-s $((LIMIT - 30))
  else
    skip bench "no time"
  fi
fi
collect

# ----- the record ----------------------------------------------------------------------------
DEVICE_CHECK_WORK=$WORK DEVICE_CHECK_STAMP=$STAMP DEVICE_CHECK_COMMIT=$COMMIT \
DEVICE_CHECK_DIRTY=$DIRTY DEVICE_CHECK_FINGERPRINT=$FINGERPRINT \
DEVICE_CHECK_ELAPSED=$((SECONDS - T0)) DEVICE_CHECK_RECORD="$WORK/$RECORD_NAME" \
  timeout 90 "$PY" - >"$WORK/record.log" 2>&1 <<'PY'
import datetime
import glob
import json
import os

env = os.environ
record = {
    "date": datetime.datetime.strptime(env["DEVICE_CHECK_STAMP"], "%Y-%m-%d-%H%M%S")
    .replace(tzinfo=datetime.timezone.utc).isoformat(timespec="seconds"),
    "git_commit": env["DEVICE_CHECK_COMMIT"],
    "changed_paths": int(env["DEVICE_CHECK_DIRTY"] or 0),
    "source_fingerprint": env["DEVICE_CHECK_FINGERPRINT"],
    "seconds": int(env["DEVICE_CHECK_ELAPSED"]),
    "stages": [],
}
for path in sorted(glob.glob(os.path.join(env["DEVICE_CHECK_WORK"], "status", "*.tsv"))):
    name, status, seconds, limit, outcome = open(path).read().rstrip("\n").split("\t")
    record["stages"].append(dict(stage=name, status=status, seconds=int(seconds),
                                 limit=int(limit), outcome=outcome))
with open(os.path.join(env["DEVICE_CHECK_WORK"], "env.log")) as f:
    record["environment"] = f.read().splitlines()
try:  # the benchmark's own description of the machine and the versions
    import torch
    from bench.run import device_meta
    record["meta"] = device_meta(torch.device("cuda" if torch.cuda.is_available() else "cpu"))
    record["meta"]["git_commit"] = record["meta"]["git_commit"] or env["DEVICE_CHECK_COMMIT"]
except Exception as error:  # the record is still written, and says why it lacks them
    record["meta"] = {"error": f"{type(error).__name__}: {error}"}
with open(env["DEVICE_CHECK_RECORD"], "w") as f:
    json.dump(record, f, indent=1)
print("wrote", env["DEVICE_CHECK_RECORD"])
PY
if [ -f "$WORK/$RECORD_NAME" ]; then
  [ "$DEST" != "$WORK" ] && cp "$WORK/$RECORD_NAME" "$DEST/"
  if [ $RECORD -eq 1 ]; then
    if [ -e "bench/results/recorded/$RECORD_NAME" ]; then
      echo "bench/results/recorded/$RECORD_NAME already recorded: git rm it first to replace it"
    else
      cp "$WORK/$RECORD_NAME" bench/results/recorded/
    fi
  fi
else
  echo "the record could not be written:"
  tail -n 20 "$WORK/record.log"
fi

# ----- the summary, last -------------------------------------------------------------------
collect
echo
for json in "$DEST"/cuda*.json; do
  [ -f "$json" ] && timeout 60 "$PY" bench/summarize.py "$json" --dtype fp32 2>&1 | head -n 40
done
echo
echo "=== device_check: $((SECONDS - T0)) s; files in $DEST, whole logs in $WORK"
table
