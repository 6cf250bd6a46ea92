#!/usr/bin/env bash
# ncu_step.sh — Nsight Compute on the first kernels of one decoding step (972M shape, bf16, random
# weights) at batches 1, 8 and 64: `cuda_bench --ncu-step B` runs the step between the driver's
# profiler start and stop, and ncu (--profile-from-start off) profiles its first NCU_N kernels
# (default 12: the embedding, layer 0 and most of layer 1), printed one line each by
# tools/device/ncu_table.py (duration, DRAM and memory throughput, occupancy, issue figures).
# One GPU call (~3 minutes with the build): OUT=$OUT bash tools/device/ncu_step.sh
# BATCHES="1 64" picks the batches, NCU_TAG (e.g. a form's name) goes into the logs' names; logs
# in $OUT. Batches up to 8 step through mb_decode_layers, as the model does.
set -u -o pipefail
cd "$(dirname "$0")/../.."
OUT="${OUT:-$PWD/ncu_step_out}"
mkdir -p "$OUT"
# shellcheck source=SCRIPTDIR/lib.sh
. tools/device/lib.sh
step "build"
build_cuda -DMAMBABYTE_TESTS=ON
for b in ${BATCHES:-1 8 64}; do
  step "ncu, decoding step at batch $b"
  timeout "${NCU_T:-150}" ncu --profile-from-start off --launch-count "${NCU_N:-12}" \
    "${NCU_SECTIONS[@]}" ./build-cuda/cuda_bench --ncu-step "$b" >"$OUT/ncu_step_$b${NCU_TAG:-}.log" 2>&1 || fail
  python3 tools/device/ncu_table.py "$OUT/ncu_step_$b${NCU_TAG:-}.log" || tail -20 "$OUT/ncu_step_$b${NCU_TAG:-}.log"
done
exit $status
