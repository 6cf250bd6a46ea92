#!/usr/bin/env bash
# gpu_session.sh — one call on the GPU machine that checks the toolkit end to end through Deno:
#   1. build the library with CUDA (and the C test programs),
#   2. the model on CUDA vs the CPU and vs the independent fixtures (tests/cuda_model_test.ts),
#   3. the per-op CUDA-vs-CPU test (cuda_vs_cpu),
#   4. the model test again without the fused CUDA decoding ops (MAMBABYTE_CUDA_FUSED=0),
#   5. `scripts/bench_gpu.ts` (the bench:gpu task) with fewer decoding steps (BENCH=0 skips it).
# Every step writes its log into $OUT as it runs, so a call cut short still reports what it reached.
# Prepare here first: `../shared/tools/gpu-pack.sh mod.ts tests/cuda_model_test.ts scripts/bench_gpu.ts`,
# then run with carry [".gpu"]:  bash tools/device/gpu_session.sh
# Step limits (seconds): MODEL_T (90 per model run), TEST_T (60 per cuda_vs_cpu run), BENCH_T (240).
set -u -o pipefail
cd "$(dirname "$0")/../.."
OUT="${OUT:-$PWD/gpu_session_out}"
mkdir -p "$OUT"
# shellcheck source=SCRIPTDIR/lib.sh
. tools/device/lib.sh # build_cuda, setup_deno
step() { echo "== $1 ($(date +%T))" | tee -a "$OUT/steps.txt"; }

step "deno"
setup_deno || exit 1
nvidia-smi --query-gpu=name,clocks.sm,clocks.mem --format=csv,noheader | tee -a "$OUT/steps.txt"

step "build"
t0=$(date +%s)
build_cuda -DMAMBABYTE_TESTS=ON
echo "build: $(($(date +%s) - t0)) s" | tee -a "$OUT/steps.txt"

step "tests/cuda_model_test.ts"
timeout "${MODEL_T:-90}" deno test --cached-only --no-check --allow-all tests/cuda_model_test.ts \
  >"$OUT/model_test.log" 2>&1
echo "rc=$?" >>"$OUT/model_test.log"
grep -E "\.\.\. |passed|rc=" "$OUT/model_test.log" | tee -a "$OUT/steps.txt"

step "cuda_vs_cpu"
timeout "${TEST_T:-60}" ./build-cuda/cuda_vs_cpu >"$OUT/ops.log" 2>&1
echo "rc=$?" >>"$OUT/ops.log"
grep -E "FAIL|FATAL|cases|rc=" "$OUT/ops.log" | head -40 | tee -a "$OUT/steps.txt"

step "tests/cuda_model_test.ts (MAMBABYTE_CUDA_FUSED=0)"
MAMBABYTE_CUDA_FUSED=0 timeout "${MODEL_T:-90}" deno test --cached-only --no-check --allow-all \
  tests/cuda_model_test.ts >"$OUT/model_test_unfused.log" 2>&1
echo "rc=$?" >>"$OUT/model_test_unfused.log"
grep -E "\.\.\. |passed|rc=" "$OUT/model_test_unfused.log" | tee -a "$OUT/steps.txt"

[ "${BENCH:-1}" = 0 ] && { step "done"; exit 0; }
step "bench_gpu"
timeout "${BENCH_T:-240}" deno run --cached-only --no-check --allow-all scripts/bench_gpu.ts \
  --decode_steps "${DECODE_STEPS:-60}" >"$OUT/bench.log" 2>&1
echo "rc=$?" >>"$OUT/bench.log"
tee -a "$OUT/steps.txt" <"$OUT/bench.log"
step "done"
