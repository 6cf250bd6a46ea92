#!/usr/bin/env bash
# decode_stream_check.sh — the one-kernel batch-1 decoding step (csrc/cuda/decode_stream.cu)
# checked and measured in one GPU call (carry .gpu-build/ from tools/device/prebuild.sh):
#   1. cuda_vs_cpu --only decode (with the kernel: its bits against the ops', graph replay);
#   2. compute-sanitizer memcheck on `cuda_vs_cpu --small --only decode` with the kernel on
#      (SKIP_SAN=1 leaves it out);
#   3. its phase stamps (MAMBABYTE_CUDA_DECODE_STREAM=2) for each set of switches in SETS;
#   4. cuda_bench --timeline 1 for the ops and for each set in SETS (the untraced graph replay of
#      the step is the figure to compare).
#   OUT=$OUT SETS="- MAMBABYTE_CUDA_DECODE_STREAM_PIECES=8" bash tools/device/decode_stream_check.sh
# SETS: space-separated, each a comma-separated list of NAME=VALUE ("-": the kernel's defaults).
set -u -o pipefail
cd "$(dirname "$0")/../.."
OUT="${OUT:-$PWD/decode_stream_out}"
mkdir -p "$OUT"
# shellcheck source=SCRIPTDIR/lib.sh
. tools/device/lib.sh
export PATH="$PATH:/usr/local/cuda/bin"
step "build"
build_cuda -DMAMBABYTE_TESTS=ON
step "cuda_vs_cpu --only decode"
timeout "${TEST_T:-240}" ./build-cuda/cuda_vs_cpu --only decode >"$OUT/test_decode.log" 2>&1 || fail
grep -E "FAIL|FATAL" "$OUT/test_decode.log" | head -10
note "cuda_vs_cpu --only decode: $(grep -E "cases" "$OUT/test_decode.log" | tail -1)"
if [ -z "${SKIP_SAN:-}" ]; then
  step "memcheck, the kernel on"
  MAMBABYTE_CUDA_DECODE_STREAM=1 timeout "${SAN_T:-150}" compute-sanitizer --tool memcheck \
    ./build-cuda/cuda_vs_cpu --small --only decode >"$OUT/memcheck.log" 2>&1 || fail
  note "memcheck: $(grep -E "ERROR SUMMARY" "$OUT/memcheck.log" | tail -1)"
fi
for p in ${SETS:--}; do
  envs=()
  [ "$p" != - ] && IFS=, read -r -a envs <<<"$p"
  step "stamps ($p)"
  env "${envs[@]}" MAMBABYTE_CUDA_DECODE_STREAM=2 timeout "${BENCH_T:-100}" \
    ./build-cuda/cuda_bench --timeline 1 2>&1 | grep "decode_stream:" | head -2
done
for p in ops ${SETS:--}; do
  envs=()
  [ "$p" = ops ] || envs=(MAMBABYTE_CUDA_DECODE_STREAM=1)
  [ "$p" != - ] && [ "$p" != ops ] && IFS=, read -r -a more <<<"$p" && envs+=("${more[@]}")
  step "cuda_bench --timeline 1 ($p)"
  env "${envs[@]}" timeout "${BENCH_T:-100}" ./build-cuda/cuda_bench --timeline 1 2>&1 |
    grep -E "^timeline bf16|k_decode_stream|k_gemv_norm_ring" | head -3
done
print_summary decode_stream_check
exit $status
