#!/usr/bin/env bash
# extract_gap.sh — where the discrete-A extractions spend their time beyond the forward, in one GPU
# call (carry .gpu and .gpu-build from tools/device/prebuild.sh):
#   OUT=$OUT bash tools/device/extract_gap.sh
#   1. tools/device/extract_gap.ts for each of DTYPES (default "fp32 bf16"): the forward alone,
#      with taps, with log-probabilities, with the discrete-A ops enqueued, the whole extractions;
#   2. bench:extract with bf16 weights (BF16_BENCH=0 skips it).
set -u -o pipefail
cd "$(dirname "$0")/../.."
OUT="${OUT:-$PWD/extract_gap_out}"
mkdir -p "$OUT"
# shellcheck source=SCRIPTDIR/lib.sh
. tools/device/lib.sh
step "device"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$OUT/gpu.txt"
build_cuda -DMAMBABYTE_TESTS=ON
setup_deno || { echo "no Deno"; exit 1; }
for dtype in ${DTYPES:-fp32 bf16}; do extract_gap "$dtype"; done
[ "${BF16_BENCH:-1}" = 0 ] || bench_extract_with MB_LABEL=bf16 bf16
print_summary extract_gap
exit $status
