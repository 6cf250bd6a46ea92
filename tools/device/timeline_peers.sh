#!/usr/bin/env bash
# timeline_peers.sh — decoding steps' kernel timelines (cuda_bench --timeline: CUPTI's records of
# the replayed step) for several sets of environment switches, one after another in one GPU call,
# after `cuda_vs_cpu --only decode` (the decoding kernels' bits). Carry .gpu-build/ (from
# tools/device/prebuild.sh) so the build is unpacked, not redone:
#   OUT=$OUT PEERS="- MAMBABYTE_CUDA_IN_RING=0 MAMBABYTE_CUDA_IN_RING=1,MAMBABYTE_CUDA_PDL=0" \
#     TIMELINE_B="1" bash tools/device/timeline_peers.sh
# PEERS: space-separated peers, each a comma-separated list of NAME=VALUE ("-": the defaults).
# ROUNDS (default 1): the peers run in turn that many times. Logs in $OUT.
# TIMELINE_FWD="LEN [bf16|tf32|both]": a forward's timeline instead (cuda_bench --timeline-fwd), e.g.
#   OUT=$OUT PEERS="- MAMBABYTE_CUDA_PDL=0" TIMELINE_FWD="8192 tf32" SKIP_TEST=1 \
#     bash tools/device/timeline_peers.sh
# SKIP_TEST=1: no cuda_vs_cpu run first.
set -u -o pipefail
cd "$(dirname "$0")/../.."
OUT="${OUT:-$PWD/timeline_out}"
mkdir -p "$OUT"
# shellcheck source=SCRIPTDIR/lib.sh
. tools/device/lib.sh
step "build"
build_cuda -DMAMBABYTE_TESTS=ON
if [ "${SKIP_TEST:-0}" != 1 ]; then
  step "cuda_vs_cpu --only decode"
  timeout "${TEST_T:-150}" ./build-cuda/cuda_vs_cpu --only decode >"$OUT/test_decode.log" 2>&1 || fail
  grep -E "FAIL|FATAL" "$OUT/test_decode.log" | head -10
  note "cuda_vs_cpu --only decode: $(grep -E "cases" "$OUT/test_decode.log" | tail -1)"
fi
# the bench's arguments: a decoding step's batches, or a forward's length and weights
if [ -n "${TIMELINE_FWD:-}" ]; then
  read -r -a targs <<<"--timeline-fwd $TIMELINE_FWD"
else
  read -r -a targs <<<"--timeline ${TIMELINE_B:-1}"
fi
for r in $(seq 1 "${ROUNDS:-1}"); do
  for p in ${PEERS:--}; do
    envs=()
    [ "$p" != - ] && IFS=, read -r -a envs <<<"$p"
    step "cuda_bench ${targs[*]} ($p, round $r)"
    log="$OUT/timeline_${r}_${p//[^A-Za-z0-9_]/_}.log"
    env "${envs[@]}" timeout "${BENCH_T:-150}" ./build-cuda/cuda_bench "${targs[@]}" >"$log" 2>&1 ||
      fail
    sed -n '/^====/,$p' "$log" | grep -v "^===="
  done
done
print_summary timeline_peers
exit $status
