#!/usr/bin/env bash
# spec_check.sh — speculative decoding's one-call verification (mb_verify_layers, and
# mb_resume_layers inside the pass's graph) checked and measured in one GPU call, with carry
# [".gpu", ".gpu-build"] (tools/device/pack_gpu.sh, tools/device/prebuild.sh):
#   1. build (the prebuilt one when csrc matches), cuda_vs_cpu (all; the verify_layers and
#      resume_layers rows printed), memcheck and racecheck on --small (SKIP_SAN=1 skips them);
#   2. the CUDA model tests through Deno (tests/decode_layers_test.ts, tests/cuda_model_test.ts:
#      verification == stepping bit for bit, speculative == plain generation);
#   3. tools/profile_verify_cuda.ts: the step's, the pass's and the pass + resume graphs at the
#      trained target's shape (384 x 24, fp32; again with the environment PEER, default
#      MAMBABYTE_CUDA_SSU_POS=0) and at 972M (bf16; SKIP_BIG=1 skips it); NCU=1:
#      tools/device/ncu_verify.sh's table after them;
#   4. bench:spec on CUDA with the bundled models (small drafted by the byte drafter of
#      pretrained_models/spec/; SKIP_SPEC=1 skips), again for each peer in SPEC_PEER (peers
#      separated by spaces, a peer's variables by commas: "A=0 A=0,B=0");
#   5. GPU_B1=1: bench:gpu b1-bf16,b1-fp32; OVERLAP=1: bench:gpu b1-bf16 with
#      MAMBABYTE_DECODE_OVERLAP=1, then 0.
#   0. (first, after the tests) OPS=1: cuda_bench --quick (the ops, the forward, the scan's forms);
#      FWD_CASES=<bench:gpu cases>: bench:gpu on them, then again with the environment FWD_PEER
#      (e.g. MAMBABYTE_CUDA_BF16_ACTS=0); NCU_KERNELS=<regex>: Nsight Compute on the first launch
#      of those kernels in cuda_bench --quick. SKIP_PROF=1 leaves out step 3.
# Each step prints as it ends; logs in $OUT.
set -u -o pipefail
cd "$(dirname "$0")/../.."
OUT="${OUT:-$PWD/spec_check_out}"
mkdir -p "$OUT"
# shellcheck source=SCRIPTDIR/lib.sh
. tools/device/lib.sh

build_and_check_ops
grep -E "verify_layers|resume_layers" "$OUT/test.log" | head -40

setup_deno || { echo "no .gpu/deno.xz"; exit 1; }
cuda_model_tests "${DENO_T:-200}" tests/decode_layers_test.ts tests/cuda_model_test.ts

if [ -n "${OPS:-}" ]; then
  step "cuda_bench --quick"
  timeout "${BENCH_T:-240}" ./build-cuda/cuda_bench --quick >"$OUT/bench_ops.log" 2>&1 || fail
  sed -n '/^====/,$p' "$OUT/bench_ops.log"
fi
[ -n "${NCU_KERNELS:-}" ] && ncu_kernels "$NCU_KERNELS" 1 --quick
if [ -n "${FWD_CASES:-}" ]; then
  step "bench:gpu $FWD_CASES"
  timeout "${BENCH_T:-240}" deno run --cached-only --no-check -A scripts/bench_gpu.ts \
    --cases "$FWD_CASES" 2>&1 | tee "$OUT/bench_gpu_fwd.log" || fail
  if [ -n "${FWD_PEER:-}" ]; then
    step "bench:gpu $FWD_CASES ($FWD_PEER)"
    (export "${FWD_PEER?}"; timeout "${BENCH_T:-240}" deno run --cached-only --no-check -A \
      scripts/bench_gpu.ts --cases "$FWD_CASES" 2>&1 | tee "$OUT/bench_gpu_fwd_peer.log") || fail
  fi
fi

prof() {
  step "profile_verify_cuda.ts $*"
  timeout 150 deno run --cached-only --no-check -A tools/profile_verify_cuda.ts "$@" 2>&1 |
    tee -a "$OUT/profile.log" || fail
}
if [ -z "${SKIP_PROF:-}" ]; then
  prof --d_model 384 --n_layer 24 --dtype fp32
  PEER=${PEER:-MAMBABYTE_CUDA_SSU_POS=0}
  echo "(peer: $PEER)"
  (export "${PEER?}"; prof --d_model 384 --n_layer 24 --dtype fp32)
  [ -z "${SKIP_BIG:-}" ] && prof --d_model 1792 --n_layer 48 --dtype bf16 --replays 50
fi
[ -n "${NCU:-}" ] && OUT=$OUT bash tools/device/ncu_verify.sh 2>&1 | tail -18

if [ -z "${SKIP_SPEC:-}" ]; then
  step "bench:spec (CUDA, small drafted by the bundled byte drafter)"
  timeout "${BENCH_T:-240}" deno run --cached-only --no-check -A scripts/bench_spec.ts \
    --devices cuda --repeats 2 ${BENCH_ARGS:-} 2>&1 | tee "$OUT/bench_spec.log" || fail
  n=0
  for peer in ${SPEC_PEER:-}; do
    n=$((n + 1))
    step "bench:spec again ($peer)"
    (IFS=, read -ra vars <<<"$peer"; export "${vars[@]}"; timeout "${BENCH_T:-240}" deno run \
      --cached-only --no-check -A scripts/bench_spec.ts --devices cuda --repeats 2 \
      ${BENCH_ARGS:-} 2>&1 | tee "$OUT/bench_spec_peer$n.log") || fail
  done
fi

if [ -n "${GPU_B1:-}" ]; then
  step "bench:gpu b1-bf16,b1-fp32"
  timeout "${BENCH_T:-240}" deno run --cached-only --no-check -A scripts/bench_gpu.ts \
    --cases b1-bf16,b1-fp32 2>&1 | tee "$OUT/bench_gpu_b1.log" || fail
fi

if [ -n "${OVERLAP:-}" ]; then
  for v in 1 0; do
    step "bench:gpu b1-bf16 (MAMBABYTE_DECODE_OVERLAP=$v)"
    MAMBABYTE_DECODE_OVERLAP=$v timeout "${BENCH_T:-240}" deno run --cached-only --no-check -A \
      scripts/bench_gpu.ts --cases b1-bf16 2>&1 | tee "$OUT/bench_gpu_$v.log" || fail
  done
fi

print_summary spec_check
exit $status
