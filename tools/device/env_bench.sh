#!/usr/bin/env bash
# env_bench.sh — bench:gpu on CASES with each environment of ENVS (";"-separated, each a
# space-separated list of NAME=VALUE; "" the defaults), alternated ROUNDS times (default 2), in one
# GPU call after the build (the prebuilt one when it matches csrc; carry [".gpu", ".gpu-build"]):
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
for r in $(seq 1 "${ROUNDS:-2}"); do
  for e in "${envs[@]}"; do
    step "bench:gpu ${CASES:-fwd-bf16} (${e:-defaults}, round $r)"
    # shellcheck disable=SC2086 # e is a list of NAME=VALUE words
    env $e timeout "${BENCH_T:-200}" deno run --cached-only --no-check -A scripts/bench_gpu.ts \
      --cases "${CASES:-fwd-bf16}" 2>&1 | tee -a "$OUT/env_bench.log" | grep -E "^model|error" || fail
  done
done
print_summary env_bench
exit $status
