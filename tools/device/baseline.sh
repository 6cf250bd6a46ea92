#!/usr/bin/env bash
# baseline.sh — the tree as it is, measured first and checked after, in one GPU call (for a device
# that may be taken back: the numbers a session reports come before the checks that take longest).
# Carry .gpu/ (tools/device/pack_gpu.sh) and .gpu-build/ (tools/device/prebuild.sh):
#   OUT=$OUT bash tools/device/baseline.sh
# Steps, each printed as it ends:
#   1. bench:gpu on CASES (default: every decoding and forward case of the issues' tables, with
#      their rooflines, ratios and peak device memory; BENCH_T seconds, default 330);
#   2. cuda_vs_cpu, every case (lib.sh's cuda_vs_cpu_with; TEST_T, default 150);
#   3. tests/decode_layers_test.ts and tests/cuda_model_test.ts (DENO_T, default 120);
#   4. cuda_bench --batch-peers with PEERS (default MAMBABYTE_CUDA_OUT_SPLIT=0): graph replay at
#      batches 16 to 256 against a peer, and the batch ops alone (PEERS_T, default 60).
# EXTRACT=1 adds bench:extract (972M, lib.sh's bench_extract_with) right after step 1, once for
# each of EXTRACT_DTYPES (default fp32; "fp32 bf16" for both); CHECKS=0 stops there (a call that
# only measures).
# REQUIRE=H200: exit 3 at once, before the build, on any other GPU (a call asked for an H200 that
# an H100 answered costs only the machine's start). The sanitizers are tools/device/sanitize_all.sh's
# (a call of their own: racecheck is slow).
set -u -o pipefail
cd "$(dirname "$0")/../.."
OUT="${OUT:-$PWD/baseline_out}"
mkdir -p "$OUT"
# shellcheck source=SCRIPTDIR/lib.sh
. tools/device/lib.sh
CASES=${CASES:-fwd-tf32,b1-fp32-tf32,fwd-bf16,b1-bf16,b1-fp32,b8-bf16,b64-bf16,b256-bf16,fwd1m-bf16}

gpu=$(nvidia-smi --query-gpu=name,clocks.max.sm --format=csv,noheader | head -1)
echo "$gpu"
if [ -n "${REQUIRE:-}" ] && [[ "$gpu" != *"$REQUIRE"* ]]; then
  echo "baseline: $gpu is not an ${REQUIRE}; nothing run"
  exit 3
fi
build_cuda -DMAMBABYTE_TESTS=ON
setup_deno || {
  echo "deno: .gpu/deno.xz missing or not unpacked (make it with tools/device/pack_gpu.sh)"
  exit 1
}

step "bench:gpu $CASES"
timeout "${BENCH_T:-330}" deno run --cached-only --no-check -A scripts/bench_gpu.ts \
  --cases "$CASES" 2>&1 | tee "$OUT/bench_gpu.log" || fail

if [ -n "${EXTRACT:-}" ]; then
  for dtype in ${EXTRACT_DTYPES:-fp32}; do bench_extract_with MB_LABEL=baseline "$dtype"; done
fi
if [ "${CHECKS:-1}" = 0 ]; then
  print_summary baseline
  exit $status
fi

cuda_vs_cpu_with MB_LABEL=baseline test.log

cuda_model_tests "${DENO_T:-120}" tests/decode_layers_test.ts tests/cuda_model_test.ts

step "cuda_bench --batch-peers (${PEERS:=MAMBABYTE_CUDA_OUT_SPLIT=0})"
CUDA_BENCH_ROUNDS=1 CUDA_BENCH_PEERS="$PEERS" timeout "${PEERS_T:-60}" \
  ./build-cuda/cuda_bench --batch-peers >"$OUT/peers.log" 2>&1 || fail
sed -n '/^====/,$p' "$OUT/peers.log"

print_summary baseline
exit $status
