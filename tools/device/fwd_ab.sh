#!/usr/bin/env bash
# fwd_ab.sh — forward kernels checked and measured against their peers in one GPU call, with carry
# [".gpu", ".gpu-build"] (tools/device/pack_gpu.sh, tools/device/prebuild.sh):
#   1. build (the prebuilt one when csrc matches), cuda_vs_cpu (all), and unless SKIP_SAN=1
#      compute-sanitizer memcheck and racecheck on every --small case;
#   2. with each peer in PEERS set (NAME=VALUE, separated by spaces): cuda_vs_cpu again;
#   3. the CUDA model tests through Deno (when .gpu/deno.xz is here; SKIP_DENO=1 skips them);
#   4. cuda_bench --fwd with CUDA_BENCH_PEERS=$PEERS: the layer's ops at 8192 positions, the scan
#      alone and the 8192-position forward (bf16) for the default and each peer, alternated
#      ROUNDS times (default 2);
#   5. NCU_KERNELS=<regex>: Nsight Compute on the first launch of those kernels (default context);
#   6. FWD_CASES=<bench:gpu cases>: bench:gpu on them, then with each peer set.
# Used as `PEERS="MAMBABYTE_CUDA_SCAN_DTSUM=0 MAMBABYTE_CUDA_CONV_GROUPED=0" bash tools/device/fwd_ab.sh`.
# Each step prints as it ends; logs in $OUT.
set -u -o pipefail
cd "$(dirname "$0")/../.."
OUT="${OUT:-$PWD/fwd_ab_out}"
PEERS=${PEERS:-}
mkdir -p "$OUT"
# shellcheck source=SCRIPTDIR/lib.sh
. tools/device/lib.sh
B=build-cuda

build_and_check_ops

for p in $PEERS; do cuda_vs_cpu_with "$p" "test_${p//[^A-Za-z0-9_-]/_}.log"; done

setup_deno
deno_rc=$?
if [ $deno_rc -ne 1 ] && [ -z "${SKIP_DENO:-}" ]; then
  cuda_model_tests "${DENO_T:-200}" tests/cuda_model_test.ts tests/decode_layers_test.ts
fi

step "cuda_bench --fwd (peers: ${PEERS:-none})"
CUDA_BENCH_PEERS="$PEERS" CUDA_BENCH_ROUNDS="${ROUNDS:-2}" timeout "${BENCH_T:-300}" \
  ./$B/cuda_bench --fwd >"$OUT/bench_fwd.log" 2>&1 || fail
sed -n '/^====/,$p' "$OUT/bench_fwd.log"

if [ -n "${NCU_KERNELS:-}" ]; then
  CUDA_BENCH_ROUNDS=1 ncu_kernels "$NCU_KERNELS" 1 --fwd
fi

if [ $deno_rc -ne 1 ] && [ -n "${FWD_CASES:-}" ]; then
  for p in "" $PEERS; do
    step "bench:gpu $FWD_CASES (${p:-default})"
    env ${p:+"$p"} timeout "${BENCH_T:-300}" deno run --cached-only --no-check -A \
      scripts/bench_gpu.ts --cases "$FWD_CASES" 2>&1 | tee "$OUT/bench_gpu_${p//[^A-Za-z0-9_-]/_}.log" || fail
  done
fi

print_summary fwd_ab
exit $status
