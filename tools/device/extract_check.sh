#!/usr/bin/env bash
# extract_check.sh — one command on the GPU machine for the discrete-A ops (mb_discrete_a,
# mb_discrete_a_input_sim) and the extractions built on them:
#   1. build the library with CUDA and the C test programs (build-cuda/),
#   2. cuda_vs_cpu --only discrete_a: every reduction and dim, chunked, GPU vs CPU (incl. a 972M
#      chunk: 2048 positions x 3584 x 16),
#   3. compute-sanitizer memcheck and racecheck on the same cases at small sizes,
#   4. through Deno (needs .gpu/, see below): tests/cuda_model_test.ts's extraction test (every
#      reduction on CUDA equals the CPU), then `bench:extract` on CUDA: the 972M shape (random
#      weights) over 7,850 bytes: the plain forward, discrete-A (fro, all layers, log-probs and
#      ranks) and module outputs (dt_proj, all layers), with each extraction's ratio to the forward.
# Logs go to $OUT (default ./extract_check_out); a summary is printed last, and the exit status is
# non-zero when a step failed.
# Deno steps: prepare here with `../shared/tools/gpu-pack.sh mod.ts tests/cuda_model_test.ts
# scripts/bench_extract.ts` and run with carry [".gpu"]; without .gpu/ they are skipped (said so).
# Step limits (seconds): TEST_T (120), SAN_T (180 each), DENO_T (150), BENCH_T (240).
set -u -o pipefail
cd "$(dirname "$0")/../.."
OUT="${OUT:-$PWD/extract_check_out}"
mkdir -p "$OUT"
# shellcheck source=SCRIPTDIR/lib.sh
. tools/device/lib.sh # build_cuda, setup_deno, step, note, fail, print_summary

step "device"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$OUT/gpu.txt"

step "configure + build"
t0=$(date +%s)
build_cuda -DMAMBABYTE_TESTS=ON
note "build: ok ($(($(date +%s) - t0)) s)"

step "cuda_vs_cpu --only discrete_a"
timeout "${TEST_T:-120}" ./build-cuda/cuda_vs_cpu --only discrete_a >"$OUT/test.log" 2>&1
rc=$?
grep -E "FAIL|FATAL" "$OUT/test.log" | head -40
note "cuda_vs_cpu: $(grep -E "cases" "$OUT/test.log" | tail -1) (rc=$rc)"
[ $rc -ne 0 ] && status=1

step "compute-sanitizer memcheck (--small --only discrete_a)"
timeout "${SAN_T:-180}" compute-sanitizer --tool memcheck --leak-check full --error-exitcode 9 \
  ./build-cuda/cuda_vs_cpu --small --only discrete_a >"$OUT/memcheck.log" 2>&1
rc=$?
note "memcheck: $(grep -E "ERROR SUMMARY" "$OUT/memcheck.log" | tail -1) (rc=$rc)"
[ $rc -ne 0 ] && status=1
step "compute-sanitizer racecheck (--small --only discrete_a)"
timeout "${SAN_T:-180}" compute-sanitizer --tool racecheck --error-exitcode 9 \
  ./build-cuda/cuda_vs_cpu --small --only discrete_a >"$OUT/racecheck.log" 2>&1
rc=$?
note "racecheck: $(grep -E "RACECHECK SUMMARY|ERROR SUMMARY" "$OUT/racecheck.log" | tail -1) (rc=$rc)"
[ $rc -ne 0 ] && status=1

setup_deno
if [ $? -eq 1 ]; then
  note "deno steps: SKIPPED (no .gpu/deno.xz: run ../shared/tools/gpu-pack.sh first, carry .gpu)"
else
  step "tests/cuda_model_test.ts (extractions)"
  timeout "${DENO_T:-150}" deno test --cached-only --no-check --allow-all \
    tests/cuda_model_test.ts --filter extractions >"$OUT/deno_test.log" 2>&1
  rc=$?
  grep -E "\.\.\. |error" "$OUT/deno_test.log" | head -20
  note "deno extraction test (CUDA vs CPU): $([ $rc -eq 0 ] && echo ok || echo FAILED) (rc=$rc)"
  [ $rc -ne 0 ] && status=1
  step "bench:extract (972M, CUDA)"
  timeout "${BENCH_T:-240}" deno run --cached-only --no-check --allow-all scripts/bench_extract.ts \
    --model_id 972M --device cuda --repeats 5 >"$OUT/bench.log" 2>&1
  rc=$?
  [ $rc -ne 0 ] && { status=1; tail -20 "$OUT/bench.log"; }
  note "bench:extract rc=$rc"
fi

print_summary extract_check
grep -E "^discrete_a " "$OUT/test.log" | awk '{print $NF}' | sort | uniq -c |
  awk '{printf "cuda_vs_cpu discrete_a results: %s %s\n", $1, $2}'
[ -f "$OUT/bench.log" ] && { echo; grep -vE "^(Download|Task|\[)" "$OUT/bench.log"; }
exit $status
