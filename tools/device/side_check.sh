#!/usr/bin/env bash
# side_check.sh — in_proj's z half on the side branch (MAMBABYTE_IN_SIDE=1) against in_proj whole
# and against the split run inline (MAMBABYTE_CUDA_SIDE=0), in one GPU call, most telling first so
# that a call cut short still reports the comparison (carry .gpu and .gpu-build):
#   1. cuda_bench --batch-peers (decoding batches 16 to 256, graph replay, two rounds);
#   2. cuda_vs_cpu, every case (the side product's bits, the side-branch steps replayed as graphs);
#   3. tests/cuda_model_test.ts with the split on (greedy generation at batches 12, 64 and 80
#      against the CPU's and the forward's);
#   4. bench:gpu b64-bf16 with the split on and off;
#   5. cuda_bench --timeline 64 with the split on and off.
#   OUT=$OUT bash tools/device/side_check.sh
set -u -o pipefail
cd "$(dirname "$0")/../.."
OUT="${OUT:-$PWD/side_check_out}"
mkdir -p "$OUT"
# shellcheck source=SCRIPTDIR/lib.sh
. tools/device/lib.sh
status=0
step "build"
build_cuda -DMAMBABYTE_TESTS=ON || exit 1
step "cuda_bench --batch-peers (base: the split on the side branch)"
MAMBABYTE_IN_SIDE=1 CUDA_BENCH_ROUNDS=2 \
  CUDA_BENCH_PEERS="MAMBABYTE_IN_SIDE=0 MAMBABYTE_CUDA_SIDE=0" \
  timeout "${BENCH_T:-150}" ./build-cuda/cuda_bench --batch-peers >"$OUT/peers.log" 2>&1 || fail
sed -n '/^====/,$p' "$OUT/peers.log"
step "cuda_vs_cpu (all)"
timeout "${TEST_T:-150}" ./build-cuda/cuda_vs_cpu >"$OUT/test.log" 2>&1 || fail
grep -E "FAIL|FATAL" "$OUT/test.log" | head -20
grep -E "cases" "$OUT/test.log" | tail -1
if setup_deno; then
  export MAMBABYTE_IN_SIDE=1
  cuda_model_tests "${DENO_T:-150}" tests/cuda_model_test.ts
  unset MAMBABYTE_IN_SIDE
  for v in 1 0; do
    step "bench:gpu b64-bf16 (MAMBABYTE_IN_SIDE=$v)"
    MAMBABYTE_IN_SIDE=$v timeout "${BENCH_T:-150}" deno run --cached-only --no-check -A \
      scripts/bench_gpu.ts --cases b64-bf16 2>&1 | tee "$OUT/bench_gpu_$v.log" | grep -E "decode|ratio" || fail
  done
fi
for v in 1 0; do
  step "cuda_bench --timeline 64 (MAMBABYTE_IN_SIDE=$v)"
  MAMBABYTE_IN_SIDE=$v timeout "${BENCH_T:-150}" ./build-cuda/cuda_bench --timeline 64 \
    >"$OUT/timeline_$v.log" 2>&1 || fail
  sed -n '/^====/,$p' "$OUT/timeline_$v.log" | head -30
done
exit "$status"
