#!/usr/bin/env bash
# spec_round.sh — speculative decoding checked, profiled and benchmarked with freshly trained
# models in one GPU call (carry [".gpu", ".gpu-build"], .gpu/tinyshakespeare.txt or its .xz present):
#   1. tools/device/spec_check.sh without its bench (build, cuda_vs_cpu, sanitizers, the CUDA
#      model tests, tools/profile_verify_cuda.ts, and with NCU=1 the pass's kernels); if
#      cuda_vs_cpu failed, the rest runs with MAMBABYTE_CUDA_SSU_POS=0 (the kernel before);
#   2. tools/device/spec_train_bench.sh with MIN minutes of training (default 4): the target, both
#      drafters and small trained at once, then bench:spec on CUDA (k = 7);
#   3. bench:spec again with the trained models at each K_SWEEP draft length (default "4 10"), with
#      the byte drafter that was not chosen (distilled from the target or not: train_spec.sh),
#      (at RUNNER_UP_K, default 7; 0 leaves it out), and with --profile (the round's phases) at
#      k = 7 unless SKIP_PROFILE=1; these take --rounds ${ROUNDS:-both}, and with PROMPTS=N the sweeps and
#      the runner-up's run go over N prompts of the held-out text (bench:spec --prompts)
#      (the byte drafter's rounds on the device and through the host, a row each).
# SWEEP_PEER="A=0[,B=0]" runs the K_SWEEP again with those variables set.
# SKIP_CHECK=1 leaves out step 1 (when this csrc was checked in an earlier call); SASS_KERNELS=<regex>
# first prints those kernels' SASS opcode counts (lib.sh's sass_counts).
# Logs in $OUT; the tables are printed as they come.
set -u -o pipefail
cd "$(dirname "$0")/../.."
OUT="${OUT:-$PWD/spec_round_out}"
mkdir -p "$OUT"
# shellcheck source=SCRIPTDIR/lib.sh
. tools/device/lib.sh
unpack_corpus
if [ -n "${SASS_KERNELS:-}" ]; then
  step "sass ($SASS_KERNELS)"
  build_cuda -DMAMBABYTE_TESTS=ON
  sass_counts "$SASS_KERNELS"
fi
if [ -z "${SKIP_CHECK:-}" ]; then
  OUT="$OUT/check" NCU=${NCU:-1} SKIP_SPEC=1 bash tools/device/spec_check.sh >"$OUT/check.log" 2>&1
  grep -vE "^(verify_layers|resume_layers|scan_dt).* ok$|calls  without|without one kind|^device:" \
    "$OUT/check.log" | tail -50
fi
if [ -z "${SKIP_CHECK:-}" ] && ! grep -qE "cuda_vs_cpu: .* 0 failed" "$OUT/check.log"; then
  grep -E "FAIL" "$OUT/check.log" | head -20
  echo "cuda_vs_cpu failed: the rest with MAMBABYTE_CUDA_SSU_POS=0"
  export MAMBABYTE_CUDA_SSU_POS=0
fi
echo "== training and bench:spec ($(date +%T))"
MIN=${MIN:-4} OUT="$OUT/train" bash tools/device/spec_train_bench.sh >"$OUT/train.log" 2>&1
grep -E -A8 "held-out bits/byte" "$OUT/train.log" | head -10
grep -E "^  draft_bytes" "$OUT/train.log"
grep -E "^cuda \||identical|^target " "$OUT/train.log" | tail -8
setup_deno
# PROMPTS=N: the sweeps and the runner-up's bench over N prompts of the held-out text (sums)
MANY=()
[ -n "${PROMPTS:-}" ] && MANY=(--prompt_file .gpu/tinyshakespeare.txt --prompts "$PROMPTS")
sweep() {
  for args in ${K_SWEEP:-4 10}; do
    echo "== bench:spec --draft_length $args $* ($(date +%T))"
    ([ $# -eq 0 ] || export "$@"
    timeout 120 deno run --cached-only --no-check -A scripts/bench_spec.ts --devices cuda \
      --repeats 1 --draft_length "$args" --rounds "${ROUNDS:-both}" "${MANY[@]}" 2>&1 |
      grep -E "^cuda \||identical|target")
  done
}
sweep
# SWEEP_PEER="A=0[,B=0]": the sweep again with those variables set (an A/B in the same call)
if [ -n "${SWEEP_PEER:-}" ]; then
  IFS=, read -ra peer_vars <<<"$SWEEP_PEER"
  sweep "${peer_vars[@]}"
fi
if [ -f pretrained_models/spec/draft_bytes_runner_up.safetensors ] &&
  [ "${RUNNER_UP_K:-7}" != 0 ]; then
  echo "== bench:spec with the byte drafter that was not chosen ($(date +%T))"
  timeout 120 deno run --cached-only --no-check -A scripts/bench_spec.ts --devices cuda --repeats 1 \
    --byte_drafter pretrained_models/spec/draft_bytes_runner_up.safetensors --subword_drafter none \
    --draft_length "${RUNNER_UP_K:-7}" "${MANY[@]}" \
    --rounds "${ROUNDS:-both}" 2>&1 | grep -E "^cuda \||identical|target"
fi
[ -n "${SKIP_PROFILE:-}" ] && exit 0
echo "== bench:spec --profile ($(date +%T))"
timeout 120 deno run --cached-only --no-check -A scripts/bench_spec.ts --devices cuda --repeats 1 \
  --profile --rounds "${ROUNDS:-both}" 2>&1 | tail -16
