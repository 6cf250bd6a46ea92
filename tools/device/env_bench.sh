#!/usr/bin/env bash
# env_bench.sh — bench:gpu on CASES with each environment of ENVS (";"-separated, each a
# space-separated list of NAME=VALUE; "" the defaults) and each argument list of ARGS
# (";"-separated, e.g. "--chunk_size 8192;--chunk_size 16384"; default none), alternated ROUNDS
# times (default 2), in one GPU call after the build (the prebuilt one when it matches csrc; carry
# [".gpu", ".gpu-build"]):
#   OUT=$OUT CASES=fwd-tf32 ENVS="MAMBABYTE_CUDA_F32_ACC=1;MAMBABYTE_CUDA_F32_ACC=0" \
#     bash tools/device/env_bench.sh
# Each run's lines print as they come; logs in $OUT.
set -u -o pipefail
cd "$(dirname "$0")/../.."
OUT="${OUT:-$PWD/env_bench_out}"
mkdir -p "$OUT"
# shellcheck source=SCRIPTDIR/lib.sh
. tools/device/lib.sh
B=build-cuda

step "build"
build_cuda -DMAMBABYTE_TESTS=ON
setup_deno || {
  echo "no .gpu/deno.xz: nothing to run"
  exit 1
}
IFS=';' read -r -a envs <<<"${ENVS:-}"
IFS=';' read -r -a arglists <<<"${ARGS:-}"
[ ${#envs[@]} -gt 0 ] || envs=("")
[ ${#arglists[@]} -gt 0 ] || arglists=("")
for r in $(seq 1 "${ROUNDS:-2}"); do
  for e in "${envs[@]}"; do
    for a in "${arglists[@]}"; do
      step "bench:gpu ${CASES:-fwd-bf16} ${a} (${e:-defaults}, round $r)"
      # shellcheck disable=SC2086 # e: NAME=VALUE words, a: argument words
      env $e timeout "${BENCH_T:-200}" deno run --cached-only --no-check -A scripts/bench_gpu.ts \
        --cases "${CASES:-fwd-bf16}" $a 2>&1 | tee -a "$OUT/env_bench.log" |
        grep -E "^model|rror" || fail
    done
  done
done
print_summary env_bench
exit $status
