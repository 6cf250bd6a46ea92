#!/usr/bin/env bash
# extract_gap.sh — where the discrete-A extractions spend their time beyond the forward, in one GPU
# call (carry .gpu and .gpu-build from tools/device/prebuild.sh, and with PEER=1 the peer from
# tools/device/prebuild_peer.sh):
#   OUT=$OUT [PEER=1] [SWITCHES="VAR=a VAR=b"] [ONLY=linear] bash tools/device/extract_gap.sh
#   1. with ONLY, cuda_vs_cpu --only ONLY on this tree's build (and the peer's), once for each of
#      SWITCHES (environment settings, default none);
#   2. tools/device/extract_gap.ts for each of DTYPES (default "fp32 bf16"): the forward alone,
#      with taps, with log-probabilities, with the discrete-A ops enqueued, the whole extractions;
#      with PEER=1 this tree's build and the peer's in turn, and each of SWITCHES in turn, ROUNDS
#      times (default 1);
#   3. bench:extract with bf16 weights (BF16_BENCH=0 skips it);
#   4. with MODEL_TESTS=1, tests/cuda_model_test.ts (DENO_T seconds, default 240).
set -u -o pipefail
cd "$(dirname "$0")/../.."
OUT="${OUT:-$PWD/extract_gap_out}"
mkdir -p "$OUT"
# shellcheck source=SCRIPTDIR/lib.sh
. tools/device/lib.sh
step "device"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$OUT/gpu.txt"
build_cuda -DMAMBABYTE_TESTS=ON
builds=build-cuda
if [ "${PEER:-0}" = 1 ]; then
  unpack_peer
  builds="build-cuda build-peer"
fi
switches=${SWITCHES:-MB_LABEL=as-is}
if [ -n "${ONLY:-}" ]; then
  for t in $builds; do
    for sw in $switches; do
      echo "-- $sw"
      with_env "$sw" cuda_vs_cpu_only "$ONLY" "$t"
    done
  done
fi
setup_deno || { echo "no Deno"; exit 1; }
for r in $(seq "${ROUNDS:-1}"); do
  for dtype in ${DTYPES:-fp32 bf16}; do
    for t in $builds; do
      for sw in $switches; do
        echo "-- $t, $sw, round $r"
        MAMBABYTE_LIB=$PWD/$t/libmambabyte.so with_env "$sw" extract_gap "$dtype"
      done
    done
  done
done
[ "${BF16_BENCH:-1}" = 0 ] || bench_extract_with MB_LABEL=bf16 bf16
[ "${MODEL_TESTS:-0}" = 0 ] || cuda_model_tests "${DENO_T:-240}" tests/cuda_model_test.ts
print_summary extract_gap
exit $status
