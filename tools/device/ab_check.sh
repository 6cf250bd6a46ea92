#!/usr/bin/env bash
# ab_check.sh — a CUDA change checked and measured against its peer (an environment switch the
# backend reads, AB_VAR, with values AB_VALUES: default first) in one GPU call (.gpu/ carried,
# made by `bash tools/device/pack_gpu.sh`; with .gpu-build/ from tools/device/prebuild.sh carried
# too, step 1 unpacks that build instead of building):
#   1. build with the C tests; cuda_vs_cpu, every case;
#   2. compute-sanitizer memcheck and racecheck on every --small case;
#   2b. VS_CPU_EACH=1: cuda_vs_cpu again with each value of AB_VAR set;
#   3. tests/decode_layers_test.ts and tests/cuda_model_test.ts through Deno;
#   4. cuda_bench --batch (decoding batches 1 to 256 and the batch-64 layer's ops) for each value;
#   4b. GEMV8=1: cuda_bench --gemv8 (the n <= 8 GEMV's inputs and output rows per thread swept);
#       HOST=1: cuda_bench --host (module outputs' host copies: a tap chunk's, and 5.4 GB of fresh
#       result arrays with and without mb_host_prefault), for each value;
#   4c. ABLATE=1: cuda_bench --ablate (where a decoding step goes: each kind of op left out of the
#       replayed step in turn), for each value;
#   4d. TIMELINE="B ...": cuda_bench --timeline B ... (CUPTI's kernel records of the replayed
#       step: each kernel's time and the part of the step it holds), for each value;
#   5. BENCH_GPU_CASES=<cases>: bench:gpu (through Deno) on those cases, for each value;
#   5a. DECODE_GAP=1: tools/decode_gap.ts (the model's step replayed, with the ids' staged and
#       direct downloads, and generate, at batches 1, 64 and 256) for each value;
#   5b. EXTRACT=1: bench:extract (972M fp32, REPEATS, default 3) for each value, the values
#       alternated twice;
#   6. PROFILE_VERIFY=1: tools/profile_verify_cuda.ts at the 972M shape (bf16), the decoding
#      step's and the 8-position verification's graphs, for each value.
# Used as `AB_VAR=MAMBABYTE_CUDA_GEMV_OUT AB_VALUES="0 1" PROFILE_VERIFY=1` (several output rows a
# thread in the n <= 8 GEMV); with one value it checks and measures the build as it is, the value
# only labelling the logs (`AB_VAR=MAMBABYTE_CUDA_SSU_ROWS AB_VALUES=16 ABLATE=1`). SKIP_SAN=1 leaves out step 2, SKIP_BATCH=1 step 4. Each step prints as it ends; logs
# in $OUT.
set -u -o pipefail
cd "$(dirname "$0")/../.."
OUT="${OUT:-$PWD/ab_check_out}"
AB_VAR=${AB_VAR:-MAMBABYTE_CUDA_GEMV_OUT}
AB_VALUES=${AB_VALUES:-0 1}
mkdir -p "$OUT"
# shellcheck source=SCRIPTDIR/lib.sh
. tools/device/lib.sh
B=build-cuda

build_and_check_ops

if [ -n "${VS_CPU_EACH:-}" ]; then
  for v in $AB_VALUES; do cuda_vs_cpu_with "$AB_VAR=$v" "test_$v.log"; done
fi

setup_deno
if [ $? -ne 1 ]; then
  cuda_model_tests "${DENO_T:-150}" tests/decode_layers_test.ts tests/cuda_model_test.ts
fi

# cuda_bench_each MODE [ARGS]: cuda_bench MODE ARGS for each value of AB_VAR, its table printed
# (logs $OUT/bench_<mode>_<value>.log)
cuda_bench_each() {
  local v log
  for v in $AB_VALUES; do
    log="$OUT/bench_${1#--}_$v.log"
    step "cuda_bench $* ($AB_VAR=$v)"
    env "$AB_VAR=$v" timeout "${BENCH_T:-150}" ./$B/cuda_bench "$@" >"$log" 2>&1 || fail
    sed -n '/^====/,$p' "$log"
  done
}

[ -z "${SKIP_BATCH:-}" ] && cuda_bench_each --batch

if [ -n "${GEMV8:-}" ]; then
  step "cuda_bench --gemv8"
  timeout "${BENCH_T:-150}" ./$B/cuda_bench --gemv8 >"$OUT/bench_gemv8.log" 2>&1 || fail
  sed -n '/^====/,$p' "$OUT/bench_gemv8.log"
fi

if [ -n "${HOST:-}" ]; then
  print_thp
  cuda_bench_each --host
fi

[ -n "${ABLATE:-}" ] && cuda_bench_each --ablate

# shellcheck disable=SC2086 # the batches are words
[ -n "${TIMELINE:-}" ] && cuda_bench_each --timeline $TIMELINE

if [ -f .gpu/deno.xz ] && [ -n "${BENCH_GPU_CASES:-}" ]; then
  for v in $AB_VALUES; do
    step "bench:gpu $BENCH_GPU_CASES ($AB_VAR=$v)"
    env "$AB_VAR=$v" timeout "${BENCH_T:-150}" deno run --cached-only --no-check -A \
      scripts/bench_gpu.ts --cases "$BENCH_GPU_CASES" 2>&1 | tee "$OUT/bench_gpu_$v.log" || fail
  done
fi

if [ -f .gpu/deno.xz ] && [ -n "${DECODE_GAP:-}" ]; then
  for v in $AB_VALUES; do
    step "decode_gap.ts ($AB_VAR=$v)"
    env "$AB_VAR=$v" timeout "${BENCH_T:-150}" deno run --cached-only --no-check -A \
      tools/decode_gap.ts 2>&1 | tee "$OUT/decode_gap_$v.log" || fail
  done
fi

if [ -f .gpu/deno.xz ] && [ -n "${EXTRACT:-}" ]; then
  print_thp
  for v in $AB_VALUES $AB_VALUES; do bench_extract_with "$AB_VAR=$v"; done
fi

if [ -f .gpu/deno.xz ] && [ -n "${PROFILE_VERIFY:-}" ]; then
  for v in $AB_VALUES; do
    step "profile_verify_cuda.ts 972M bf16 ($AB_VAR=$v)"
    env "$AB_VAR=$v" timeout "${DENO_T:-150}" deno run --cached-only --no-check -A \
      tools/profile_verify_cuda.ts --d_model 1792 --n_layer 48 --dtype bf16 --replays 50 \
      2>&1 | tee "$OUT/profile_$v.log" || fail
  done
fi

print_summary ab_check
exit $status
