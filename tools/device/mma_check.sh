#!/usr/bin/env bash
# mma_check.sh — skinny.cu's tensor-core products (bf16 weights, decoding batches) checked and
# measured in one GPU call: build; cuda_vs_cpu (every case); cuda_bench --mma (its forms, each
# against cuBLAS in the same run: a layer's large products at 16 and 64 rows); cuda_bench --batch
# (decoding batches, and again with cuBLAS); ncu on one launch each of in_proj, out_proj and
# x_proj at 64 rows (NCU=0 skips it). Logs in $OUT.
set -u -o pipefail
cd "$(dirname "$0")/../.."
OUT="${OUT:-$PWD/mma_check_out}"
mkdir -p "$OUT"
# shellcheck source=SCRIPTDIR/lib.sh
. tools/device/lib.sh
B=build-cuda
step "build"
build_cuda -DMAMBABYTE_TESTS=ON
step "cuda_vs_cpu (all)"
timeout "${TEST_T:-150}" ./$B/cuda_vs_cpu >"$OUT/test.log" 2>&1 || fail
grep -E "FAIL|FATAL" "$OUT/test.log" | head -30
grep -E "cases" "$OUT/test.log" | tail -1
step "cuda_bench --mma"
timeout "${BENCH_T:-200}" ./$B/cuda_bench --mma >"$OUT/bench_mma.log" 2>&1 || fail
sed -n '/^====/,$p' "$OUT/bench_mma.log"
step "cuda_bench --batch"
timeout "${BENCH_T:-200}" ./$B/cuda_bench --batch >"$OUT/bench_batch.log" 2>&1 || fail
sed -n '/^====/,$p' "$OUT/bench_batch.log"
if [ "${NCU:-1}" != 0 ]; then
  for skip in 20 50 80; do
    step "ncu k_skinny_mma launch $skip (in_proj, out_proj, x_proj at 64 rows)"
    timeout 120 ncu -k regex:k_skinny_mma --launch-skip $skip --launch-count 1 \
      --section SpeedOfLight --section MemoryWorkloadAnalysis --section Occupancy \
      --section WarpStateStats --section SchedulerStats --section LaunchStats \
      ./$B/cuda_bench --mma-one >"$OUT/ncu_$skip.log" 2>&1 || fail
    grep -E "k_skinny|Duration|DRAM Through|Memory Through|L2 Hit|Achieved Occupancy|Registers Per|Dynamic Shared|Block Limit|Warp Cycles Per Issued|Issued Warp|No Eligible|Grid Size|Cluster|stall|Stall" \
      "$OUT/ncu_$skip.log" | head -40
  done
fi
exit $status
