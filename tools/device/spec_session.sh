#!/usr/bin/env bash
# spec_session.sh — speculative decoding on a GPU machine, in one call: build with CUDA, the per-op
# checks verification relies on (cuda_vs_cpu: scan_dt, linear rows, conv=steps), the model tests on
# CUDA (tests/cuda_model_test.ts: verification == stepping bit for bit, speculative == plain
# generation) and on the CPU (tests/speculative_test.ts), then `bench:spec` on CUDA and the CPU.
# Every step writes its log into $OUT as it runs; the benchmark table is printed last.
#
# Prepare as for gpu_session.sh (the deno binary and its npm cache packed into .gpu/, now for
# mod.ts tests/cuda_model_test.ts tests/speculative_test.ts scripts/bench_spec.ts), put the models
# of tools/device/train_spec.sh in pretrained_models/ (the target rejoined from its parts), then
# run with carry [".gpu"]:  bash tools/device/spec_session.sh
# Limits (seconds): TEST_T (120 per test file), BENCH_T (360). BENCH_ARGS adds bench:spec flags;
# SPEC_TESTS names the test files (default: both above).
set -u -o pipefail
cd "$(dirname "$0")/../.."
OUT="${OUT:-$PWD/spec_session_out}"
mkdir -p "$OUT"
# shellcheck source=SCRIPTDIR/lib.sh
. tools/device/lib.sh # build_cuda, setup_deno
step() { echo "== $1 ($(date +%T))" | tee -a "$OUT/steps.txt"; }

step "deno"
setup_deno || exit 1
nvidia-smi --query-gpu=name,clocks.sm,clocks.mem --format=csv,noheader | tee -a "$OUT/steps.txt"
for f in pretrained_models/spec/target.safetensors.part-aa; do
  [ -f "$f" ] && cat pretrained_models/spec/target.safetensors.part-* >pretrained_models/spec/target.safetensors
done

step "build"
build_cuda -DMAMBABYTE_TESTS=ON

step "cuda_vs_cpu (speculative cases and the rest)"
timeout 120 ./build-cuda/cuda_vs_cpu >"$OUT/ops.log" 2>&1
echo "rc=$?" >>"$OUT/ops.log"
grep -E "^(scan_dt|linear rows|conv=steps)" "$OUT/ops.log" | tee -a "$OUT/steps.txt"
grep -E "FAIL|FATAL|cases|rc=" "$OUT/ops.log" | tee -a "$OUT/steps.txt"

for t in ${SPEC_TESTS:-tests/cuda_model_test.ts tests/speculative_test.ts}; do
  step "$t"
  timeout "${TEST_T:-120}" deno test --cached-only --no-check --allow-all "$t" >"$OUT/$(basename "$t").log" 2>&1
  echo "rc=$?" >>"$OUT/$(basename "$t").log"
  grep -E "\.\.\. |passed|rc=" "$OUT/$(basename "$t").log" | tee -a "$OUT/steps.txt"
done

step "bench:spec (cuda, cpu)"
timeout "${BENCH_T:-360}" deno run --cached-only --no-check --allow-all scripts/bench_spec.ts \
  --devices cuda,cpu --json "$OUT/bench_spec.json" ${BENCH_ARGS:-} >"$OUT/bench.log" 2>&1
echo "rc=$?" >>"$OUT/bench.log"
tee -a "$OUT/steps.txt" <"$OUT/bench.log"
step "done"
