#!/usr/bin/env bash
# cuda_check.sh — one command for the GPU machine: build with CUDA ON, run the CUDA-vs-CPU test,
# the micro-benchmarks, then compute-sanitizer memcheck and racecheck on the test's small sizes.
# Logs go to $OUT (or ./cuda_check_out); the summary table is printed last.
#
#   tools/device/cuda_check.sh [--no-sanitize] [--quick]
# Time limits (seconds) per step: TEST_T (240), BENCH_T (300), SAN_T (240 each); the bench also
# writes each table row to bench.err as it is measured, so a step cut short still reports.
set -u -o pipefail
TEST_T="${TEST_T:-240}"
BENCH_T="${BENCH_T:-300}"
SAN_T="${SAN_T:-240}"
cd "$(dirname "$0")/../.."
OUT="${OUT:-$PWD/cuda_check_out}"
mkdir -p "$OUT"
# shellcheck source=SCRIPTDIR/lib.sh
. tools/device/lib.sh # build_cuda, setup_deno, step, status
SAN=1
QUICK=""
for a in "$@"; do
  case "$a" in
    --no-sanitize) SAN=0 ;;
    --quick) QUICK=--quick ;;
  esac
done
BUILD=build-cuda

step "device"
nvidia-smi --query-gpu=name,memory.total,clocks.sm,clocks.mem,driver_version --format=csv | tee "$OUT/gpu.txt"

step "configure + build"
t0=$(date +%s)
build_cuda -DMAMBABYTE_TESTS=ON
echo "build: $(( $(date +%s) - t0 )) s"
grep -E "mambabyte:" "$OUT/build.log"

step "cuda_vs_cpu"
timeout $TEST_T ./$BUILD/cuda_vs_cpu >"$OUT/test.log" 2>&1; rc=$?
grep -E "FAIL|FATAL|cases" "$OUT/test.log" | head -40
echo "cuda_vs_cpu rc=$rc"; [ $rc -ne 0 ] && status=1

step "cuda_bench"
timeout $BENCH_T ./$BUILD/cuda_bench $QUICK >"$OUT/bench.log" 2>"$OUT/bench.err"; rc=$?
echo "cuda_bench rc=$rc"; [ $rc -ne 0 ] && { status=1; grep -E "^(ROW|FATAL)" "$OUT/bench.err" | tail -40; }

if [ $SAN -eq 1 ]; then
  step "compute-sanitizer memcheck (--small)"
  timeout $SAN_T compute-sanitizer --tool memcheck --leak-check full --error-exitcode 9 \
    ./$BUILD/cuda_vs_cpu --small >"$OUT/memcheck.log" 2>&1; rc=$?
  grep -E "ERROR SUMMARY|LEAK SUMMARY|cases|FATAL" "$OUT/memcheck.log" | head; echo "memcheck rc=$rc"
  [ $rc -ne 0 ] && status=1
  step "compute-sanitizer racecheck (--small)"
  timeout $SAN_T compute-sanitizer --tool racecheck --error-exitcode 9 \
    ./$BUILD/cuda_vs_cpu --small >"$OUT/racecheck.log" 2>&1; rc=$?
  grep -E "RACECHECK SUMMARY|ERROR SUMMARY|cases|FATAL" "$OUT/racecheck.log" | head; echo "racecheck rc=$rc"
  [ $rc -ne 0 ] && status=1
fi

echo
cat "$OUT/bench.log"
exit $status
