#!/usr/bin/env bash
# profile_verify.sh — where speculative verification's time goes on CUDA, in one GPU call
# (.gpu/ carried, packed as for merge_check.sh): builds the library, then
# tools/profile_verify_cuda.ts (step and verification graphs, and the verification with one kind
# of call left out at a time) at the trained target's shape (384 x 24) in fp32 and bf16, and at
# the 972M shape in bf16; then (PEERS=1, default) two of them again with MAMBABYTE_CUDA_GEMV_ROWS=8,
# the GEMV without its split of the inputs (ABLATION=0 leaves all of these out). BENCH_B8=1 and
# NCU_SSU=1 add the steps described at the end; CHECK=1 first builds the C tests and runs
# cuda_vs_cpu and tests/cuda_model_test.ts; SHAPES=target profiles the 384 x 24 fp32 shape only.
# Log: $OUT/profile.log.
set -u -o pipefail
cd "$(dirname "$0")/../.."
OUT="${OUT:-$PWD/profile_verify_out}"
mkdir -p "$OUT"
# shellcheck source=SCRIPTDIR/lib.sh
. tools/device/lib.sh
if [ "${CHECK:-0}" = 1 ]; then # the ops' and the model's CUDA tests first (no sanitizers)
  build_cuda -DMAMBABYTE_TESTS=ON
  setup_deno || { echo "no .gpu/deno.xz"; exit 1; }
  echo "== cuda_vs_cpu: $(timeout 120 ./build-cuda/cuda_vs_cpu 2>&1 | grep -E 'FAIL|cases' | tail -5)"
  echo "== tests/cuda_model_test.ts: $(timeout 120 deno test --cached-only --no-check -A tests/cuda_model_test.ts 2>&1 | grep -E 'FAILED|passed' | tail -5)"
else
  build_cuda
  setup_deno || { echo "no .gpu/deno.xz"; exit 1; }
fi
prof() {
  echo "== profile_verify_cuda.ts $*"
  timeout 150 deno run --cached-only --no-check -A tools/profile_verify_cuda.ts "$@" 2>&1 | tee -a "$OUT/profile.log"
}
prof_env() { echo "(MAMBABYTE_CUDA_GEMV_ROWS=$MAMBABYTE_CUDA_GEMV_ROWS)"; prof "$@"; }
if [ "${ABLATION:-1}" = 1 ]; then
  prof --d_model 384 --n_layer 24 --dtype fp32
  if [ "${SHAPES:-all}" = all ]; then
    prof --d_model 384 --n_layer 24 --dtype bf16
    prof --d_model 1792 --n_layer 48 --dtype bf16 --replays 50
  fi
fi
# Peers: every input row in one thread (the n <= 8 GEMV before its split), same run.
if [ "${ABLATION:-1}" = 1 ] && [ "${PEERS:-1}" = 1 ] && [ "${SHAPES:-all}" = all ]; then
  MAMBABYTE_CUDA_GEMV_ROWS=8 prof_env --d_model 384 --n_layer 24 --dtype fp32
  MAMBABYTE_CUDA_GEMV_ROWS=8 prof_env --d_model 1792 --n_layer 48 --dtype bf16 --replays 50
fi
# BENCH_B8=1: batch-8 decoding (the GEMV at n = 8 in every step) with the split and with
# MAMBABYTE_CUDA_GEMV_ROWS=8, same call.
if [ "${BENCH_B8:-0}" = 1 ]; then
  for rows in 0 8; do # 0: chosen by shape (the default)
    echo "== bench:gpu b8-bf16, MAMBABYTE_CUDA_GEMV_ROWS=$rows"
    MAMBABYTE_CUDA_GEMV_ROWS=$rows timeout 120 deno run --cached-only --no-check -A scripts/bench_gpu.ts --cases b8-bf16 2>&1 |
      grep -E "decode|roofline" | tee -a "$OUT/profile.log"
  done
fi
# NCU_SSU=1: Nsight Compute on the verification's state update (mb_selective_scan_dt over 8
# positions, k_ssu_dt<.., 8>) at the target's shape: speed of light, occupancy, warp stalls.
if [ "${NCU_SSU:-0}" = 1 ]; then
  echo "== ncu k_ssu_dt (8 positions), 384 x 24 fp32"
  timeout 150 ncu --kernel-name-base mangled --kernel-name "regex:k_ssu_dt.*Li8EEv" --launch-count 2 \
    --section SpeedOfLight --section Occupancy --section WarpStateStats --section LaunchStats \
    deno run --cached-only --no-check -A tools/profile_verify_cuda.ts --d_model 384 --n_layer 24 \
    --replays 1 >"$OUT/ncu_ssu.log" 2>&1
  grep -E "k_ssu|Duration|Throughput|Occupancy|Registers|Stall|Warp Cycles|Issued|Eligible|Block Limit|Grid Size|Block Size" \
    "$OUT/ncu_ssu.log" | head -60
fi
