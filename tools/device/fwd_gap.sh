#!/usr/bin/env bash
# fwd_gap.sh — why bench:gpu's forward over 8192 bytes (through mod.ts) has run ~2-3 ms above
# `cuda_bench --timeline-fwd`'s untraced pass, in one GPU call. Carry .gpu/ and .gpu-build/:
#   OUT=$OUT bash tools/device/fwd_gap.sh
# Prints, each as it is measured: tools/device/fwd_host_gap.ts with bf16 weights (bench:gpu's pass,
# the state reused, no head, and the host's enqueue time); the timeline's untraced forward, whose
# ids are all 0 (every position the same byte, so every row of layer 0 the same); `cuda_bench
# --fwd`'s forward, whose ids are random (the same kernels on varied rows); then the fp32 + TF32
# probe. If the zero-id pass is the fast one, the gap is the input's, not mod.ts's.
set -u -o pipefail
cd "$(dirname "$0")/../.."
OUT="${OUT:-$PWD/fwd_gap_out}"
mkdir -p "$OUT"
# shellcheck source=SCRIPTDIR/lib.sh
. tools/device/lib.sh
nvidia-smi --query-gpu=name,clocks.max.sm --format=csv,noheader | head -1
build_cuda -DMAMBABYTE_TESTS=ON
setup_deno || {
  echo "deno: .gpu/deno.xz missing or not unpacked (make it with tools/device/pack_gpu.sh)"
  exit 1
}
step "fwd_host_gap.ts bf16"
timeout "${PROBE_T:-90}" deno run --cached-only --no-check -A tools/device/fwd_host_gap.ts bf16 \
  2>&1 | tee "$OUT/host_gap_bf16.log" | tail -6 || fail
step "cuda_bench --timeline-fwd 8192 bf16 (ids all 0)"
timeout 45 ./build-cuda/cuda_bench --timeline-fwd 8192 bf16 >"$OUT/timeline_fwd.log" 2>&1 || fail
grep -iE "untraced|forward" "$OUT/timeline_fwd.log" | head -6
step "cuda_bench --fwd (random ids), one round"
CUDA_BENCH_ROUNDS=1 timeout 60 ./build-cuda/cuda_bench --fwd >"$OUT/fwd.log" 2>&1 || fail
grep -iE "forward|scan" "$OUT/fwd.log" | head -8
step "fwd_host_gap.ts fp32"
timeout "${PROBE_T:-90}" deno run --cached-only --no-check -A tools/device/fwd_host_gap.ts fp32 \
  2>&1 | tee "$OUT/host_gap_fp32.log" | tail -6 || fail
exit $status
