#!/usr/bin/env bash
# ncu_draft.sh — Nsight Compute on one launch of the drafter's cluster kernel (k_draft_cluster, the
# trained drafter's 256 x 2 bf16 case of `cuda_vs_cpu --only draft_greedy`), full set: the
# kernel's duration and warp states, then its 40 SASS lines with the most stall samples (where the
# time goes inside the kernel). Carry [".gpu", ".gpu-build"]; logs and the report in $OUT.
# LINEINFO=1: built with -lineinfo, and the stall samples summed by CUDA source line as well (with
# each top line's three largest stall reasons), so that they map onto the kernel's phases.
set -u -o pipefail
cd "$(dirname "$0")/../.."
OUT="${OUT:-$PWD/ncu_draft_out}"
mkdir -p "$OUT"
# shellcheck source=SCRIPTDIR/lib.sh
. tools/device/lib.sh
if [ -n "${LINEINFO:-}" ]; then
  build_cuda -DMAMBABYTE_TESTS=ON -DCMAKE_CUDA_FLAGS=-lineinfo
else
  build_cuda -DMAMBABYTE_TESTS=ON
fi
step "ncu k_draft_cluster"
timeout 240 ncu --kernel-name regex:k_draft_cluster --launch-skip "${SKIP:-1}" --launch-count 1 \
  --set full --import-source "$([ -n "${LINEINFO:-}" ] && echo yes || echo no)" -f \
  -o "$OUT/draft" ./build-cuda/cuda_vs_cpu --only draft_greedy \
  --small >"$OUT/ncu_run.log" 2>&1 || { tail -20 "$OUT/ncu_run.log"; exit 1; }
ncu -i "$OUT/draft.ncu-rep" --page details >"$OUT/details.txt" 2>&1
grep -E "Duration|Elapsed Cycles|SM Frequency|Registers|Shared Memory Config|Cluster|Warp Cycles Per Issued|Issued Ipc|No Eligible|Stall|Theoretical Occ|Block Size|Grid Size" \
  "$OUT/details.txt" | head -40
ncu_stall_reasons "$OUT/draft.ncu-rep" 14
ncu -i "$OUT/draft.ncu-rep" --page source --csv --print-source sass >"$OUT/source.csv" 2>&1
python3 tools/device/ncu_stalls.py "$OUT/source.csv" --top 40
if [ -n "${LINEINFO:-}" ]; then
  ncu -i "$OUT/draft.ncu-rep" --page source --csv --print-source cuda >"$OUT/source_cuda.csv" 2>&1
  python3 tools/device/ncu_stalls.py "$OUT/source_cuda.csv" --top 45 --reasons
fi
