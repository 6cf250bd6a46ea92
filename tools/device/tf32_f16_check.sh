#!/usr/bin/env bash
# tf32_f16_check.sh — TF32 products on fp16 operands (gemm.cu's gemm_f32_via_f16) in one GPU call,
# most telling first. Carry .gpu-build/ (tools/device/prebuild.sh) and .gpu/
# (tools/device/pack_gpu.sh):
#   OUT=$OUT bash tools/device/tf32_f16_check.sh
#   1. cuda_vs_cpu --only linear (every product case, then all again with the path forced on), and
#      memcheck on its --small cases with the path forced (MAMBABYTE_CUDA_TF32_F16=2);
#   2. cuda_bench --timeline-fwd 8192 tf32 with the path (the default) and without (=0), ROUNDS
#      rounds in turn: the untraced forward and in_proj's rows;
#   3. the CUDA model tests, and bench:gpu on BENCH_GPU_CASES (default fwd-tf32,fwd-bf16).
set -u -o pipefail
cd "$(dirname "$0")/../.."
OUT="${OUT:-$PWD/tf32_f16_out}"
mkdir -p "$OUT"
# shellcheck source=SCRIPTDIR/lib.sh
. tools/device/lib.sh
B=build-cuda
step "build"
build_cuda -DMAMBABYTE_TESTS=ON
nvidia-smi --query-gpu=name,clocks.max.sm --format=csv,noheader
step "cuda_vs_cpu --only linear"
timeout "${TEST_T:-150}" ./$B/cuda_vs_cpu --only linear >"$OUT/linear.log" 2>&1 || fail
grep -E "FAIL|FATAL" "$OUT/linear.log" | head -10
note "cuda_vs_cpu --only linear: $(tail -1 "$OUT/linear.log")"
said=$(MAMBABYTE_CUDA_TF32_F16=2 timeout "${SAN_T:-120}" compute-sanitizer --tool memcheck \
  ./$B/cuda_vs_cpu --small --only linear 2>&1 | grep -E "SUMMARY|cases" | tr '\n' ' ')
note "memcheck --small --only linear (MAMBABYTE_CUDA_TF32_F16=2): $said"
for r in $(seq 1 "${ROUNDS:-2}"); do
  for v in 1 0; do
    log="$OUT/fwd_${r}_${v}.log"
    MAMBABYTE_CUDA_TF32_F16=$v timeout "${BENCH_T:-120}" ./$B/cuda_bench --timeline-fwd 8192 tf32 \
      >"$log" 2>&1 || fail
    grep -E "^ROW (timeline|  k_f16|  [a-z0-9_]+ < k_(f16_conve|add_norm))" "$log" |
      sed "s/^/[TF32_F16=$v round $r] /"
  done
done
setup_deno
if [ $? -ne 1 ]; then
  cuda_model_tests "${DENO_T:-150}" tests/cuda_model_test.ts
  step "bench:gpu ${BENCH_GPU_CASES:-fwd-tf32,fwd-bf16}"
  timeout "${BENCH_T:-150}" deno run --cached-only --no-check -A scripts/bench_gpu.ts \
    --cases "${BENCH_GPU_CASES:-fwd-tf32,fwd-bf16}" 2>&1 | tee "$OUT/bench_gpu.log" |
    grep -E "forward|decode" || fail
fi
print_summary tf32_f16_check
exit $status
