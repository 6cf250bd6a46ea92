#!/usr/bin/env bash
# gpu_session.sh — one call on the GPU machine that checks the toolkit end to end through Deno:
#   1. build the library with CUDA (and the C test programs),
#   2. the model on CUDA vs the CPU and vs the independent fixtures (tests/cuda_model_test.ts),
#   3. the per-op CUDA-vs-CPU test with the v3 kernels (MAMBABYTE_CUDA_V3=1),
#   4. `scripts/bench_gpu.ts` (the bench:gpu task) with fewer decoding steps.
# Every step writes its log into $OUT as it runs, so a call cut short still reports what it reached.
# Prepare here first: `../shared/tools/gpu-pack.sh mod.ts tests/cuda_model_test.ts scripts/bench_gpu.ts`,
# then run with carry [".gpu"]:  bash tools/device/gpu_session.sh
# Step limits (seconds): MODEL_T (90), TEST_T (60), BENCH_T (240).
set -u -o pipefail
cd "$(dirname "$0")/../.."
OUT="${OUT:-$PWD/gpu_session_out}"
mkdir -p "$OUT"
step() { echo "== $1 ($(date +%T))" | tee -a "$OUT/steps.txt"; }

step "deno"
xz -dc .gpu/deno.xz >/usr/local/bin/deno && chmod +x /usr/local/bin/deno || exit 1
export DENO_DIR=$PWD/.gpu/deno_dir
nvidia-smi --query-gpu=name,clocks.sm,clocks.mem --format=csv,noheader | tee -a "$OUT/steps.txt"

step "build"
t0=$(date +%s)
if ! { cmake -S csrc -B build-cuda -DCMAKE_BUILD_TYPE=Release -DMAMBABYTE_CUDA=ON \
  -DMAMBABYTE_TESTS=ON && cmake --build build-cuda -j 16; } >"$OUT/build.log" 2>&1; then
  tail -40 "$OUT/build.log"
  echo "BUILD FAILED"
  exit 1
fi
echo "build: $(($(date +%s) - t0)) s" | tee -a "$OUT/steps.txt"
export MAMBABYTE_LIB=$PWD/build-cuda/libmambabyte.so

step "tests/cuda_model_test.ts"
timeout "${MODEL_T:-90}" deno test --cached-only --no-check --allow-all tests/cuda_model_test.ts \
  >"$OUT/model_test.log" 2>&1
echo "rc=$?" >>"$OUT/model_test.log"
grep -E "\.\.\. |passed|rc=" "$OUT/model_test.log" | tee -a "$OUT/steps.txt"

step "cuda_vs_cpu (v3 kernels)"
MAMBABYTE_CUDA_V3=1 timeout "${TEST_T:-60}" ./build-cuda/cuda_vs_cpu >"$OUT/v3_test.log" 2>&1
echo "rc=$?" >>"$OUT/v3_test.log"
grep -E "FAIL|FATAL|cases|rc=" "$OUT/v3_test.log" | head -40 | tee -a "$OUT/steps.txt"

step "bench_gpu"
timeout "${BENCH_T:-240}" deno run --cached-only --no-check --allow-all scripts/bench_gpu.ts \
  --decode_steps "${DECODE_STEPS:-60}" >"$OUT/bench.log" 2>&1
echo "rc=$?" >>"$OUT/bench.log"
tee -a "$OUT/steps.txt" <"$OUT/bench.log"
step "done"
