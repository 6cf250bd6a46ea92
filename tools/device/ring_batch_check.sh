#!/usr/bin/env bash
# ring_batch_check.sh — gemm_ring.cu's rings (in_proj at decoding batches, out_proj's parts:
# MAMBABYTE_CUDA_RING_BATCH=64, MAMBABYTE_CUDA_RING_PARTS=64) against cuBLAS (the default) in one
# GPU call, the most telling first. Carry .gpu/ and .gpu-build/ (tools/device/pack_gpu.sh, tools/device/prebuild.sh):
#   OUT=$OUT bash tools/device/ring_batch_check.sh
# Steps, each printed as it ends:
#   1. cuda_vs_cpu --only linear (the ring's cases, its graph replay, cuBLAS's peer);
#   2. cuda_bench --batch-peers, ROUNDS rounds (default 2): graph replay at 16 to 256 sequences and
#      the batch-64 layer's ops, cuBLAS (the default) against each ring;
#   3. cuda_bench --timeline TIMELINE_B (default "8 64") for each of PEERS (comma-separated
#      NAME=VALUE lists, "-" the defaults; default: both rings, then cuBLAS);
#   4. bench:gpu BENCH_GPU_CASES (default b8-bf16,b64-bf16) for each of PEERS;
#   5. memcheck and racecheck on cuda_vs_cpu --small --only linear (SAN_T each, default 90);
#   6. cuda_vs_cpu, every case (TEST_T, default 150).
set -u -o pipefail
cd "$(dirname "$0")/../.."
OUT="${OUT:-$PWD/ring_batch_out}"
mkdir -p "$OUT"
# shellcheck source=SCRIPTDIR/lib.sh
. tools/device/lib.sh
PEERS=${PEERS:-MAMBABYTE_CUDA_RING_BATCH=64,MAMBABYTE_CUDA_RING_PARTS=64 -}
nvidia-smi --query-gpu=name,clocks.max.sm --format=csv,noheader | head -1
step "build"
build_cuda -DMAMBABYTE_TESTS=ON

step "cuda_vs_cpu --only linear"
timeout 120 ./build-cuda/cuda_vs_cpu --only linear >"$OUT/test_linear.log" 2>&1 || fail
grep -E "FAIL|FATAL" "$OUT/test_linear.log" | head -20
grep -E "ring_batch" "$OUT/test_linear.log" | head -12
note "cuda_vs_cpu --only linear: $(grep -E "cases" "$OUT/test_linear.log" | tail -1)"

step "cuda_bench --batch-peers (cuBLAS against each ring)"
CUDA_BENCH_ROUNDS=${ROUNDS:-2} \
  CUDA_BENCH_PEERS="MAMBABYTE_CUDA_RING_BATCH=64 MAMBABYTE_CUDA_RING_PARTS=64" timeout 150 \
  ./build-cuda/cuda_bench --batch-peers >"$OUT/peers.log" 2>&1 || fail
sed -n '/^====/,$p' "$OUT/peers.log"

# peer_env P: the peer's NAME=VALUE list as words ("-": none)
peer_env() { [ "$1" != - ] && tr , ' ' <<<"$1"; }

for p in $PEERS; do
  step "cuda_bench --timeline ${TIMELINE_B:-8 64} ($p)"
  # shellcheck disable=SC2046,SC2086
  env $(peer_env "$p") timeout 120 ./build-cuda/cuda_bench --timeline ${TIMELINE_B:-8 64} \
    >"$OUT/timeline_${p//[^A-Za-z0-9_]/_}.log" 2>&1 || fail
  sed -n '/^timeline/,$p' "$OUT/timeline_${p//[^A-Za-z0-9_]/_}.log" | head -70
done

if setup_deno; then
  for p in $PEERS; do
    step "bench:gpu ${BENCH_GPU_CASES:=b8-bf16,b64-bf16} ($p)"
    # shellcheck disable=SC2046
    env $(peer_env "$p") timeout "${BENCH_T:-200}" deno run --cached-only --no-check -A \
      scripts/bench_gpu.ts --cases "$BENCH_GPU_CASES" >"$OUT/bench_gpu_${p//[^A-Za-z0-9_]/_}.log" 2>&1 ||
      fail
    tail -n 20 "$OUT/bench_gpu_${p//[^A-Za-z0-9_]/_}.log"
  done
fi

for tool in memcheck racecheck; do
  step "$tool --small --only linear"
  extra=()
  [ $tool = memcheck ] && extra=(--leak-check full)
  timeout "${SAN_T:-90}" compute-sanitizer --tool $tool "${extra[@]}" --error-exitcode 9 \
    ./build-cuda/cuda_vs_cpu --small --only linear >"$OUT/$tool.log" 2>&1 || fail
  note "$tool: $(grep -E "ERROR SUMMARY|RACECHECK SUMMARY" "$OUT/$tool.log" | tail -1) / $(grep -E "cases" "$OUT/$tool.log" | tail -1)"
done

step "cuda_vs_cpu (all)"
timeout "${TEST_T:-150}" ./build-cuda/cuda_vs_cpu >"$OUT/test.log" 2>&1 || fail
grep -E "FAIL|FATAL" "$OUT/test.log" | head -20
note "cuda_vs_cpu: $(grep -E "cases" "$OUT/test.log" | tail -1)"
print_summary ring_batch
exit $status
