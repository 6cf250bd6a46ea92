#!/usr/bin/env bash
# extract_twins_check.sh — extractions whose taps the twins' path writes in fp32 (TAPS_ON_TWINS in
# src/model/model.ts) run on the weights' fp16 twins, as the plain forward does; one GPU call:
#   1. bench:extract (lib.sh's bench_extract_with: the 972M shape, REPEATS repeats, default 3,
#      BENCH_T seconds), fp32 weights with TF32 allowed (the twins): the plain forward, the
#      discrete-A extraction, module outputs, and each one's ratio to the forward (target <= 2);
#   2. the CUDA model tests: the extraction on the twins against the CPU first, then all of
#      tests/cuda_model_test.ts (DENO_T, default 240);
#   3. cuda_vs_cpu --only linear and --only decode (TEST_T, default 150 each);
#   4. bench:extract with bf16 weights, as step 1.
# The order puts what a call cut short most needs first.
# Carry .gpu/ (tools/device/pack_gpu.sh) and .gpu-build/ (tools/device/prebuild.sh):
#   OUT=$OUT bash tools/device/extract_twins_check.sh
set -u -o pipefail
cd "$(dirname "$0")/../.."
OUT="${OUT:-$PWD/extract_twins_out}"
mkdir -p "$OUT"
# shellcheck source=SCRIPTDIR/lib.sh
. tools/device/lib.sh

nvidia-smi --query-gpu=name,clocks.max.sm --format=csv,noheader | head -1
build_cuda -DMAMBABYTE_TESTS=ON
setup_deno || {
  echo "deno: .gpu/deno.xz missing or not unpacked (make it with tools/device/pack_gpu.sh)"
  exit 1
}

bench_extract_with MB_LABEL=fp32
step "the twins' extraction test"
timeout 120 deno test --cached-only --no-check -A --filter "run on the fp16 twins" \
  tests/cuda_model_test.ts 2>&1 | sed 's/\x1b\[[0-9;]*m//g' | grep -E "ok|FAIL|rror|passed" || fail
if [ -n "${MINIMAL:-}" ]; then # MINIMAL=1: steps 1 and the first test only (a short budget)
  print_summary extract_twins
  exit $status
fi
cuda_model_tests "${DENO_T:-240}" tests/cuda_model_test.ts
for group in linear decode; do
  step "cuda_vs_cpu --only $group"
  timeout "${TEST_T:-150}" ./build-cuda/cuda_vs_cpu --only "$group" >"$OUT/test_$group.log" 2>&1 ||
    fail
  grep -E "FAIL|FATAL" "$OUT/test_$group.log" | head -10
  note "cuda_vs_cpu --only $group: $(grep -E "cases" "$OUT/test_$group.log" | tail -1)"
done
bench_extract_with MB_LABEL=bf16 bf16

print_summary extract_twins
exit $status
