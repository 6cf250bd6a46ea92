#!/usr/bin/env bash
# decode_check.sh — the one-kernel decoding step (mb_decode_layers, csrc/cuda/decode.cu) in one GPU
# call: build; cuda_vs_cpu (every case: the kernel's bits against the ops', its values against the
# CPU's); optionally (SAN=1) compute-sanitizer memcheck and racecheck on the --small cases; through
# Deno (.gpu/ carried: `bash tools/device/pack_gpu.sh`) tests/decode_layers_test.ts and
# tests/cuda_model_test.ts, then bench:gpu's batch-1 decoding in the configurations CONFIGS names
# ("blocks:prefetch" pairs: MAMBABYTE_CUDA_DECODE_BLOCKS, 0 = without the kernel, i.e. the same
# ops, one launch each; MAMBABYTE_CUDA_DECODE_PREFETCH; default "0:1 1:1 2:1 2:0"), one after the
# other in the same call; CASES (default b1-bf16,b1-fp32) chooses the cases. Each step prints as it ends; a summary last.
set -u -o pipefail
cd "$(dirname "$0")/../.."
OUT="${OUT:-$PWD/decode_check_out}"
mkdir -p "$OUT"
# shellcheck source=SCRIPTDIR/lib.sh
. tools/device/lib.sh
B=build-cuda

step "build"
t0=$(date +%s)
build_cuda -DMAMBABYTE_TESTS=ON
note "build: ok ($(($(date +%s) - t0)) s)"

step "cuda_vs_cpu (all)"
timeout "${TEST_T:-150}" ./$B/cuda_vs_cpu >"$OUT/test.log" 2>&1 || fail
grep -E "^decode_layers|FAIL|FATAL" "$OUT/test.log" | head -120
note "cuda_vs_cpu: $(grep -E "cases" "$OUT/test.log" | tail -1)"

if [ -n "${SAN:-}" ]; then
  step "memcheck --small (all)"
  timeout "${SAN_T:-120}" compute-sanitizer --tool memcheck --error-exitcode 9 \
    ./$B/cuda_vs_cpu --small >"$OUT/memcheck.log" 2>&1 || fail
  note "memcheck: $(grep -E "ERROR SUMMARY" "$OUT/memcheck.log" | tail -1) / $(grep -E "cases" "$OUT/memcheck.log" | tail -1)"
  step "racecheck --small (all)"
  timeout "${SAN_T:-120}" compute-sanitizer --tool racecheck --error-exitcode 9 \
    ./$B/cuda_vs_cpu --small >"$OUT/racecheck.log" 2>&1 || fail
  note "racecheck: $(grep -E "RACECHECK SUMMARY|ERROR SUMMARY" "$OUT/racecheck.log" | tail -1)"
fi

setup_deno
if [ $? -ne 1 ]; then
  for t in decode_layers_test cuda_model_test; do
    step "tests/$t.ts"
    timeout "${DENO_T:-150}" deno test --cached-only --no-check -A "tests/$t.ts" \
      >"$OUT/$t.log" 2>&1 || fail
    grep -E "\.\.\. |passed|failed|rror" "$OUT/$t.log" | sed 's/\x1b\[[0-9;]*m//g' | head -40
    note "$t: $(grep -E "passed" "$OUT/$t.log" | tail -1 | sed 's/\x1b\[[0-9;]*m//g')"
  done
  for cfg in ${CONFIGS:-0:1 1:1 2:1 2:0}; do
    b=${cfg%%:*} p=${cfg##*:}
    step "bench:gpu ${CASES:-b1-bf16,b1-fp32}, MAMBABYTE_CUDA_DECODE_BLOCKS=$b MAMBABYTE_CUDA_DECODE_PREFETCH=$p"
    MAMBABYTE_CUDA_DECODE_BLOCKS=$b MAMBABYTE_CUDA_DECODE_PREFETCH=$p timeout "${BENCH_T:-150}" \
      deno run --cached-only --no-check -A scripts/bench_gpu.ts --cases "${CASES:-b1-bf16,b1-fp32}" \
      2>&1 | tee "$OUT/bench_gpu_${b}_$p.log" || fail
    note "blocks/SM $b, prefetch $p: $(grep -E "decode b1" "$OUT/bench_gpu_${b}_$p.log" | cut -d'|' -f2,3 | tr '\n' ';')"
  done
else
  note "deno steps: skipped (no .gpu/deno.xz)"
fi

print_summary decode_check
exit $status
