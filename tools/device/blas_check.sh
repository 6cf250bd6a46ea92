#!/usr/bin/env bash
# blas_check.sh — one GPU call for two questions (carry [".gpu", ".gpu-build"]):
#   1. build (the prebuilt one when it matches csrc) and cuda_vs_cpu, every case (SKIP_VS=1: not);
#   2. tools/device/blas_sweep.cu: cuBLAS's default product against every cuBLASLt heuristic
#      algorithm, for the shapes decoding batches and the forward run (SWEEP_ALGOS, default 24);
#   3. bench:extract (972M fp32) with transparent huge pages for fresh result arrays and with
#      MAMBABYTE_HOST_HUGEPAGES=0, alternated (module outputs into fresh arrays is the case);
#   4. ABLATE=1: cuda_bench --ablate (where a decoding step goes).
# Each step prints as it ends; logs in $OUT.
set -u -o pipefail
cd "$(dirname "$0")/../.."
OUT="${OUT:-$PWD/blas_check_out}"
mkdir -p "$OUT"
# shellcheck source=SCRIPTDIR/lib.sh
. tools/device/lib.sh
B=build-cuda

if [ -z "${SKIP_VS:-}" ]; then
  SKIP_SAN=1 build_and_check_ops
else
  step "build"
  build_cuda -DMAMBABYTE_TESTS=ON
fi

step "blas_sweep"
if nvcc -O2 -arch=sm_90 -o "$B/blas_sweep" tools/device/blas_sweep.cu -lcublasLt -lcublas \
  >"$OUT/blas_sweep_build.log" 2>&1; then
  timeout "${SWEEP_T:-200}" ./$B/blas_sweep "${SWEEP_ALGOS:-24}" 2>&1 | tee "$OUT/blas_sweep.log" |
    grep -E "^blas_sweep|GemmEx|best:" || fail
else
  tail -20 "$OUT/blas_sweep_build.log"
  fail
fi

setup_deno
if [ -f .gpu/deno.xz ]; then
  print_thp
  for v in ${HUGE_VALUES:-1 0 1 0}; do bench_extract_with "MAMBABYTE_HOST_HUGEPAGES=$v"; done
fi

if [ -n "${ABLATE:-}" ]; then
  step "cuda_bench --ablate"
  timeout "${BENCH_T:-150}" ./$B/cuda_bench --ablate >"$OUT/ablate.log" 2>&1 || fail
  sed -n '/^====/,$p' "$OUT/ablate.log"
fi
print_summary blas_check
exit $status
