#!/usr/bin/env bash
# profile_verify.sh — where speculative verification's time goes on CUDA, in one GPU call
# (.gpu/ carried, packed as for merge_check.sh): builds the library, then
# tools/profile_verify_cuda.ts (step and verification graphs, and the verification with one kind
# of call left out at a time) at the trained target's shape (384 x 24) in fp32 and bf16, and at
# the 972M shape in bf16; then (PEERS=1, default) two of them again with MAMBABYTE_CUDA_GEMV_ROWS=8,
# the GEMV without its split of the inputs. Log: $OUT/profile.log.
set -u -o pipefail
cd "$(dirname "$0")/../.."
OUT="${OUT:-$PWD/profile_verify_out}"
mkdir -p "$OUT"
# shellcheck source=SCRIPTDIR/lib.sh
. tools/device/lib.sh
build_cuda
setup_deno || { echo "no .gpu/deno.xz"; exit 1; }
prof() {
  echo "== profile_verify_cuda.ts $*"
  timeout 150 deno run --cached-only --no-check -A tools/profile_verify_cuda.ts "$@" 2>&1 | tee -a "$OUT/profile.log"
}
prof_env() { echo "(MAMBABYTE_CUDA_GEMV_ROWS=$MAMBABYTE_CUDA_GEMV_ROWS)"; prof "$@"; }
prof --d_model 384 --n_layer 24 --dtype fp32
prof --d_model 384 --n_layer 24 --dtype bf16
prof --d_model 1792 --n_layer 48 --dtype bf16 --replays 50
# Peers: every input row in one thread (the n <= 8 GEMV before its split), same run.
if [ "${PEERS:-1}" = 1 ]; then
  MAMBABYTE_CUDA_GEMV_ROWS=8 prof_env --d_model 384 --n_layer 24 --dtype fp32
  MAMBABYTE_CUDA_GEMV_ROWS=8 prof_env --d_model 1792 --n_layer 48 --dtype bf16 --replays 50
fi
