#!/usr/bin/env bash
# split_check.sh — one command on the GPU machine for the split CUDA backend (csrc/cuda/*.cu, one
# file per op family) and the overlapped tap downloads (mb_download_async / mb_download_wait):
#   1. build the library with CUDA and the C test programs (build-cuda/),
#   2. cuda_vs_cpu: every op, GPU vs CPU (download_async included),
#   3. compute-sanitizer memcheck (leak check full) on cuda_vs_cpu --small,
#   4. through Deno (needs .gpu/, see below): tests/cuda_model_test.ts (forward, taps and
#      extractions on CUDA equal the CPU; taps now come through the copy stream), then
#      `bench:extract` on CUDA: 972M shape (random weights), 3 repeats, where the module-output
#      extraction's ratio to the forward shows what the overlap bought.
# Logs go to $OUT (default ./split_check_out); a summary is printed last, and the exit status is
# non-zero when a step failed.
# Deno steps: prepare here with `../shared/tools/gpu-pack.sh mod.ts tests/cuda_model_test.ts
# scripts/bench_extract.ts` and run with carry [".gpu"]; without .gpu/ they are skipped (said so).
# Step limits (seconds): TEST_T (90), SAN_T (120), DENO_T (100), BENCH_T (120).
set -u -o pipefail
cd "$(dirname "$0")/../.."
OUT="${OUT:-$PWD/split_check_out}"
mkdir -p "$OUT"
# shellcheck source=SCRIPTDIR/lib.sh
. tools/device/lib.sh # build_cuda, setup_deno, step, note, fail, print_summary

step "device"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$OUT/gpu.txt"

step "configure + build"
t0=$(date +%s)
build_cuda -DMAMBABYTE_TESTS=ON
note "build: ok ($(($(date +%s) - t0)) s)"

step "cuda_vs_cpu (all ops)"
timeout "${TEST_T:-90}" ./build-cuda/cuda_vs_cpu >"$OUT/test.log" 2>&1
rc=$?
grep -E "FAIL|FATAL" "$OUT/test.log" | head -40
note "cuda_vs_cpu: $(grep -E "cases" "$OUT/test.log" | tail -1) (rc=$rc)"
note "download_async cases: $(grep -cE "^download_(async|wait) .* ok$" "$OUT/test.log") ok, $(grep -cE "^download_(async|wait) .*FAIL" "$OUT/test.log") failed"
[ $rc -ne 0 ] && status=1

step "compute-sanitizer memcheck (cuda_vs_cpu --small)"
timeout "${SAN_T:-120}" compute-sanitizer --tool memcheck --leak-check full --error-exitcode 9 \
  ./build-cuda/cuda_vs_cpu --small >"$OUT/memcheck.log" 2>&1
rc=$?
note "memcheck: $(grep -E "ERROR SUMMARY" "$OUT/memcheck.log" | tail -1) (rc=$rc)"
note "memcheck run: $(grep -E "cases" "$OUT/memcheck.log" | tail -1)"
[ $rc -ne 0 ] && status=1

setup_deno
if [ $? -eq 1 ]; then
  note "deno steps: SKIPPED (no .gpu/deno.xz: run ../shared/tools/gpu-pack.sh first, carry .gpu)"
else
  step "tests/cuda_model_test.ts"
  timeout "${DENO_T:-100}" deno test --cached-only --no-check --allow-all \
    tests/cuda_model_test.ts >"$OUT/deno_test.log" 2>&1
  rc=$?
  grep -E "\.\.\. |error" "$OUT/deno_test.log" | head -20
  note "deno cuda_model_test: $(grep -E "passed|failed" "$OUT/deno_test.log" | tail -1 |
    sed 's/\x1b\[[0-9;]*m//g') (rc=$rc)"
  [ $rc -ne 0 ] && status=1
  step "bench:extract (972M, CUDA, 3 repeats)"
  timeout "${BENCH_T:-120}" deno run --cached-only --no-check --allow-all scripts/bench_extract.ts \
    --model_id 972M --device cuda --repeats 3 >"$OUT/bench.log" 2>&1
  rc=$?
  [ $rc -ne 0 ] && { status=1; tail -20 "$OUT/bench.log"; }
  note "bench:extract rc=$rc"
fi

print_summary split_check
grep -E "^[a-z_0-9]+ " "$OUT/test.log" | awk '$NF == "ok" || $NF == "FAIL" {print $1, $NF}' |
  sort | uniq -c | awk '{printf "  %-28s %5d %s\n", $2, $1, $3}'
[ -f "$OUT/bench.log" ] && { echo; grep -vE "^(Download|Task|\[)" "$OUT/bench.log"; }
exit $status
