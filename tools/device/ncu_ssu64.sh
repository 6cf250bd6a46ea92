#!/usr/bin/env bash
# ncu_ssu64.sh — Nsight Compute on the decoding state update at batch 64 (972M shape, bf16), both
# kernels: the lanes' k_ssu_dt and the thread-per-(sequence, channel) k_ssu_dt_rows (forced with
# MAMBABYTE_CUDA_SSU_ROWS=1), each its first launch in `cuda_bench --ssu64`; also the unfused
# mb_selective_scan at len 1 (k_scan*) for comparison. Prints speed of light, memory, occupancy
# and warp stalls. One GPU call (~2 minutes): bash tools/device/ncu_ssu64.sh
set -u -o pipefail
cd "$(dirname "$0")/../.."
OUT="${OUT:-$PWD/ncu_ssu64_out}"
mkdir -p "$OUT"
# shellcheck source=SCRIPTDIR/lib.sh
. tools/device/lib.sh
build_cuda -DMAMBABYTE_TESTS=ON
prof() { # label env-value kernel-regex
  echo "== $1"
  MAMBABYTE_CUDA_SSU_ROWS=$2 timeout 150 ncu --kernel-name-base function --kernel-name "regex:$3" \
    --launch-count 1 "${NCU_SECTIONS[@]}" \
    ./build-cuda/cuda_bench --ssu64 >"$OUT/$1.log" 2>&1
  grep -E "k_|Duration|Throughput|DRAM|L1/TEX Hit|L2 Hit|Mem Busy|Max Bandwidth|Achieved Occupancy|Registers|Block Limit|Stall|Warp Cycles|Eligible|Issued Warp|No Eligible|Grid Size|Waves" \
    "$OUT/$1.log" | grep -vE "^==PROF==" | head -45
}
prof lanes 0 "k_ssu_dt$"
prof rows 1 "k_ssu_dt_rows"
prof scan_len1 0 "k_scan"
