#!/usr/bin/env bash
# ncu_kernel.sh — Nsight Compute, full set, on one launch of each kernel named in KERNELS (regular
# expressions, space-separated) while CMD runs (default: one decoding step of 64 sequences,
# `cuda_bench --ncu-step 64`, profiled from the driver's profiler start): each kernel's duration,
# launch shape, occupancy and issue figures, its largest stall reasons, then its TOP (25) SASS
# lines with the most stall samples, and its SASS lines grouped by how often each ran (NGROUPS
# groups, default 6: tools/device/ncu_groups.py). Carry [".gpu-build"]; logs and each kernel's
# source page (CSV) in $OUT; its report and ncu's run log only with KEEP_REP=1 (with them, a call
# that profiled three kernels left too many files for the device's return, the CSVs among those
# left out).
#   OUT=$OUT KERNELS="k_conv_linear k_ssu_dt_rows" bash tools/device/ncu_kernel.sh
set -u -o pipefail
cd "$(dirname "$0")/../.."
OUT="${OUT:-$PWD/ncu_kernel_out}"
mkdir -p "$OUT"
# shellcheck source=SCRIPTDIR/lib.sh
. tools/device/lib.sh
build_cuda -DMAMBABYTE_TESTS=ON
CMD=${CMD:-./build-cuda/cuda_bench --ncu-step 64}
for k in ${KERNELS:?KERNELS=regex...}; do
  tag=$(echo "$k" | tr -c 'A-Za-z0-9_\n' _)
  step "ncu $k"
  # shellcheck disable=SC2086 # CMD is a command line
  timeout "${NCU_T:-240}" ncu --profile-from-start "${FROM_START:-off}" --kernel-name "regex:$k" \
    --launch-skip "${SKIP:-0}" --launch-count 1 --set full -f -o "$OUT/$tag" $CMD \
    >"$OUT/ncu_run_$tag.log" 2>&1 || {
    tail -20 "$OUT/ncu_run_$tag.log"
    fail
    continue
  }
  ncu -i "$OUT/$tag.ncu-rep" --page details >"$OUT/details_$tag.txt" 2>&1
  grep -E "Duration|Elapsed Cycles|SM Frequency|DRAM Throughput|Registers|Warp Cycles Per Issued|Issued Ipc|No Eligible|Achieved Occupancy|Theoretical Occ|Block Limit|Block Size|Grid Size" \
    "$OUT/details_$tag.txt" | head -30
  ncu_stall_reasons "$OUT/$tag.ncu-rep" 10
  ncu -i "$OUT/$tag.ncu-rep" --page source --csv --print-source sass >"$OUT/source_$tag.csv" 2>&1
  python3 tools/device/ncu_stalls.py "$OUT/source_$tag.csv" --top "${TOP:-25}"
  python3 tools/device/ncu_groups.py "$OUT/source_$tag.csv" --top "${NGROUPS:-6}"
  [ -n "${KEEP_REP:-}" ] || rm -f "$OUT/$tag.ncu-rep" "$OUT/ncu_run_$tag.log"
done
exit $status
