#!/usr/bin/env bash
# da_ab.sh — a change to the discrete-A kernels (csrc/cuda/discrete_a.cu) against the commit before
# it, in one GPU call. Prepare here (carry .gpu and .gpu-build):
#   bash tools/device/prebuild.sh && PEER=HEAD bash tools/device/prebuild_peer.sh
# then on the GPU machine: OUT=$OUT bash tools/device/da_ab.sh
#   1. this tree's build and the peer's; cuda_vs_cpu --only discrete_a on each (either may land),
#      and --only each of EXTRA_ONLY (e.g. "linear") on this tree's;
#   2. cuda_bench --discrete-a (mb_discrete_a alone, a 972M chunk, each reduction) for this tree
#      and the peer in turn, ROUNDS times (default 2);
#   3. bench:extract (972M, fp32 weights, TF32 allowed) for this tree and the peer in turn
#      (PEER_EXTRACT=0: this tree only), then with bf16 weights for this tree (DTYPES, default
#      "fp32 bf16");
#   4. with GAP=1, tools/device/extract_gap.ts for each of DTYPES (where an extraction's time goes);
#   5. memcheck and racecheck on cuda_vs_cpu --small --only discrete_a, and the CUDA extraction
#      tests through Deno (ALL_MODEL_TESTS=1: every CUDA model test).
# What a cut-short call most needs comes first; a summary is printed last.
set -u -o pipefail
cd "$(dirname "$0")/../.."
OUT="${OUT:-$PWD/da_ab_out}"
mkdir -p "$OUT"
# shellcheck source=SCRIPTDIR/lib.sh
. tools/device/lib.sh
step "device"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$OUT/gpu.txt"
use_prebuilt || build_cuda -DMAMBABYTE_TESTS=ON || exit 1
unpack_peer

for t in build-cuda build-peer; do cuda_vs_cpu_only discrete_a "$t"; done
for only in ${EXTRA_ONLY:-}; do cuda_vs_cpu_only "$only" build-cuda; done

for r in $(seq "${ROUNDS:-2}"); do
  for t in build-cuda build-peer; do
    step "cuda_bench --discrete-a ($t, round $r)"
    timeout 120 ./$t/cuda_bench --discrete-a >"$OUT/da_${t}_$r.log" 2>&1 || fail
    grep -E "^discrete_a" "$OUT/da_${t}_$r.log"
  done
done

if setup_deno; then
  for dtype in ${DTYPES:-fp32 bf16}; do
    builds="build-cuda build-peer"
    [ "$dtype" = fp32 ] && [ "${PEER_EXTRACT:-1}" = 1 ] || builds=build-cuda
    for t in $builds; do
      MAMBABYTE_LIB=$PWD/$t/libmambabyte.so bench_extract_with "MB_LABEL=${dtype}_$t" "$dtype"
    done
  done
fi

if [ "${GAP:-0}" = 1 ] && command -v deno >/dev/null; then
  for dtype in ${DTYPES:-fp32 bf16}; do extract_gap "$dtype"; done
fi

SAN_ONLY=discrete_a SAN_T=${SAN_T:-90} check_sanitizers

if command -v deno >/dev/null; then
  if [ "${ALL_MODEL_TESTS:-0}" = 1 ]; then
    cuda_model_tests "${DENO_T:-150}" tests/cuda_model_test.ts
  else
    cuda_model_tests "${DENO_T:-150}" tests/cuda_model_test.ts --filter extractions
  fi
fi
print_summary da_ab
exit $status
