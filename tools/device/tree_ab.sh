#!/usr/bin/env bash
# tree_ab.sh — this tree's CUDA build against a peer commit's (.gpu-build/peer.tar.xz from
# tools/device/prebuild_peer.sh) in one GPU call, for changes that are not environment switches.
# Carry .gpu-build (and .gpu for the Deno steps):
#   OUT=$OUT TIMELINE="1 64" ROUNDS=2 BENCH_GPU_CASES=b1-bf16,b64-bf16 bash tools/device/tree_ab.sh
#   1. this tree's build (prebuilt) and cuda_vs_cpu on it, every case (lib.sh's
#      build_and_check_ops; SKIP_SAN= with SAN_ONLY=group adds its sanitizers), the peer's build
#      into build-peer;
#   2. TIMELINE="B ...": cuda_bench --timeline B ... for this tree and the peer in turn, ROUNDS
#      times (default 2), the untraced replay and the kernels' table printed; TIMELINE_FWD="LEN
#      [bf16|tf32|both]" the same for cuda_bench --timeline-fwd (a forward's kernels);
#   3. BENCH_GPU_CASES: bench:gpu on those cases for each build in turn (MAMBABYTE_LIB),
#      BENCH_ROUNDS times (default 1); BENCH_PEER=0: this tree's alone (a peer of another ABI
#      version cannot load under this tree's TypeScript);
#   4. the CUDA model tests on this tree (SKIP_MODEL=1: not).
# Logs in $OUT.
set -u -o pipefail
cd "$(dirname "$0")/../.."
OUT="${OUT:-$PWD/tree_ab_out}"
mkdir -p "$OUT"
# shellcheck source=SCRIPTDIR/lib.sh
. tools/device/lib.sh
ROUNDS=${ROUNDS:-2}
unpack_peer
SKIP_SAN=${SKIP_SAN-1} build_and_check_ops
# cuda_bench MODE ARGS for this tree's build and the peer's in turn, ROUNDS times; each run's log
# in $OUT/LOG_<build>_<round>.log, its results table printed
peer_rounds() {
  local log=$1 mode=$2 args=$3
  for r in $(seq "$ROUNDS"); do
    for t in build-cuda build-peer; do
      step "cuda_bench $mode $args ($t, round $r)"
      local f="$OUT/${log}_${t}_$r.log"
      # shellcheck disable=SC2086 # the arguments are words
      timeout "${BENCH_T:-150}" ./$t/cuda_bench "$mode" $args >"$f" 2>&1 || fail
      sed -n '/^====/,$p' "$f"
    done
  done
}
[ -n "${TIMELINE:-}" ] && peer_rounds timeline --timeline "$TIMELINE"
[ -n "${TIMELINE_FWD:-}" ] && peer_rounds timeline_fwd --timeline-fwd "$TIMELINE_FWD"
if setup_deno; then
  if [ -n "${BENCH_GPU_CASES:-}" ]; then
    builds="build-cuda build-peer"
    [ "${BENCH_PEER:-1}" = 0 ] && builds=build-cuda
    for r in $(seq "${BENCH_ROUNDS:-1}"); do
      for t in $builds; do
        step "bench:gpu $BENCH_GPU_CASES ($t, round $r)"
        MAMBABYTE_LIB=$PWD/$t/libmambabyte.so timeout "${BENCH_T:-150}" deno run --cached-only \
          --no-check -A scripts/bench_gpu.ts --cases "$BENCH_GPU_CASES" 2>&1 |
          tee "$OUT/bench_gpu_${t}_$r.log" || fail
      done
    done
  fi
  [ -z "${SKIP_MODEL:-}" ] &&
    cuda_model_tests "${DENO_T:-150}" tests/decode_layers_test.ts tests/cuda_model_test.ts \
      tests/decode_twins_test.ts
fi
print_summary tree_ab
exit $status
