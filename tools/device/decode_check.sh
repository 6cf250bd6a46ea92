#!/usr/bin/env bash
# decode_check.sh — issue 13 (batch > 1 decoding) on the GPU machine, one command, < 6 minutes on
# a 16-core H200 box: build with CUDA, cuda_vs_cpu (every case, the new t_decode_batch ones
# included), compute-sanitizer memcheck + racecheck on `cuda_vs_cpu --small --only decode_batch`,
# then `cuda_bench --decode` (decode b8/b64/b256 bf16, new kernels and MAMBABYTE_CUDA_DECODE_BATCH=old
# in the same run, roofline ratios, per-op breakdowns, the tensor-core linear against cuBLAS).
# Logs go to $OUT (or ./decode_check_out); the summary is printed last.
#
#   tools/device/decode_check.sh
# Time limits (seconds) per step: TEST_T (150), SAN_T (60 each), BENCH_T (120).
set -u -o pipefail
TEST_T="${TEST_T:-150}"
SAN_T="${SAN_T:-60}"
BENCH_T="${BENCH_T:-120}"
cd "$(dirname "$0")/../.."
OUT="${OUT:-$PWD/decode_check_out}"
mkdir -p "$OUT"
BUILD=build-cuda
status=0
summary=()
step() { echo "== $1 ($(date +%T))"; }

step "device"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$OUT/gpu.txt"

step "configure + build"
t0=$(date +%s)
if ! { cmake -S csrc -B $BUILD -DCMAKE_BUILD_TYPE=Release -DMAMBABYTE_CUDA=ON -DMAMBABYTE_TESTS=ON &&
       cmake --build $BUILD -j 16; } >"$OUT/build.log" 2>&1; then
  tail -40 "$OUT/build.log"; echo "BUILD FAILED"; exit 1
fi
echo "build: $(( $(date +%s) - t0 )) s"

step "cuda_vs_cpu (all cases)"
timeout $TEST_T ./$BUILD/cuda_vs_cpu >"$OUT/test.log" 2>&1; rc=$?
grep -E "FAIL|FATAL" "$OUT/test.log" | head -40
grep -E "^(ssu_batch|linear_tc) " "$OUT/test.log" >"$OUT/test_decode_batch.log"
summary+=("cuda_vs_cpu rc=$rc: $(grep -E "cases" "$OUT/test.log" | tail -1)")
summary+=("  decode-batch cases: $(wc -l <"$OUT/test_decode_batch.log") checks, $(grep -c FAIL "$OUT/test_decode_batch.log") failed")
[ $rc -ne 0 ] && status=1

step "compute-sanitizer memcheck (--small --only decode_batch)"
timeout $SAN_T compute-sanitizer --tool memcheck --leak-check full --error-exitcode 9 \
  ./$BUILD/cuda_vs_cpu --small --only decode_batch >"$OUT/memcheck.log" 2>&1; rc=$?
summary+=("memcheck rc=$rc: $(grep -E "ERROR SUMMARY" "$OUT/memcheck.log" | tail -1) $(grep -E "cases" "$OUT/memcheck.log" | tail -1)")
[ $rc -ne 0 ] && status=1

step "compute-sanitizer racecheck (--small --only decode_batch)"
timeout $SAN_T compute-sanitizer --tool racecheck --error-exitcode 9 \
  ./$BUILD/cuda_vs_cpu --small --only decode_batch >"$OUT/racecheck.log" 2>&1; rc=$?
summary+=("racecheck rc=$rc: $(grep -E "RACECHECK SUMMARY|ERROR SUMMARY" "$OUT/racecheck.log" | tail -1)")
[ $rc -ne 0 ] && status=1

step "cuda_bench --decode"
timeout $BENCH_T ./$BUILD/cuda_bench --decode >"$OUT/bench.log" 2>"$OUT/bench.err"; rc=$?
summary+=("cuda_bench --decode rc=$rc")
[ $rc -ne 0 ] && { status=1; grep -E "^(ROW|FATAL)" "$OUT/bench.err" | tail -40; }

echo
echo "==== decode_check summary ===="
printf '%s\n' "${summary[@]}"
grep -E "FAIL" "$OUT/test_decode_batch.log" | head -20
echo
cat "$OUT/bench.log"
exit $status
