#!/usr/bin/env bash
# merge_check.sh — the whole CUDA side of main in one GPU call (~6 minutes on an H200 box):
#   1. build with CUDA and the C test programs; cuda_vs_cpu, every case;
#   2. compute-sanitizer: memcheck and racecheck on every --small case;
#   3. cuda_bench --quick (the copy roofline, decoding at batch 1 and 64, the 8192-byte forward);
#   4. through Deno (.gpu/ carried, made by `bash tools/device/pack_gpu.sh`, which also keeps the
#      carry under its limit): tests/cuda_model_test.ts, bench:extract
#      (972M shape, 3 repeats), bench:spec on CUDA (the bundled models, with --profile: where a
#      round goes), bench:gpu when BENCH_GPU_CASES names cases, and the host's page-fault rate
#      (first touch of 5.4 GB).
#   Optional: NCU_KERNELS=<regex> profiles the first two launches of those kernels in cuda_bench
#   (speed of light, occupancy, warp stalls; NCU_BASE=mangled matches mangled names;
#   NCU_BENCH_ARGS: cuda_bench's flags there, default --quick; --ssu64: the batch-64 layer's ops);
#   BENCH_FULL=1: cuda_bench without --quick (batch-64 decoding and its per-op breakdown, fp32);
#   BENCH_BATCH=1: cuda_bench --batch instead (decoding batches and the batch-64 layer's ops);
#   BENCH_GPU_ARGS: more bench:gpu flags (e.g. --chunk_size 8192); SKIP_PF=1 leaves out the page-fault step;
#   SASS_KERNELS=<regex> writes those kernels' SASS to $OUT/sass.txt and prints its opcode counts
#   (static: per instruction in the listing); SKIP_SPEC=1 leaves out bench:spec.
# Each step prints as it ends; logs in $OUT; a summary last; non-zero exit when a step failed.
# Step limits (seconds): TEST_T (150), SAN_T (120), BENCH_T (150), DENO_T (120).
set -u -o pipefail
cd "$(dirname "$0")/../.."
OUT="${OUT:-$PWD/merge_check_out}"
mkdir -p "$OUT"
# shellcheck source=SCRIPTDIR/lib.sh
. tools/device/lib.sh # build_and_check_ops, setup_deno, step, note, fail, print_summary
B=build-cuda

build_and_check_ops

bench_flags=--quick
[ -n "${BENCH_FULL:-}" ] && bench_flags=
[ -n "${BENCH_BATCH:-}" ] && bench_flags=--batch
step "cuda_bench $bench_flags"
timeout "${BENCH_T:-150}" ./$B/cuda_bench $bench_flags >"$OUT/bench_ops.log" 2>&1 || fail
sed -n '/^====/,$p' "$OUT/bench_ops.log"

[ -n "${NCU_KERNELS:-}" ] && ncu_kernels "$NCU_KERNELS" 2 ${NCU_BENCH_ARGS:---quick}

if [ -n "${SASS_KERNELS:-}" ]; then
  step "sass ($SASS_KERNELS)"
  sass_counts "$SASS_KERNELS" || fail
fi

setup_deno
if [ $? -ne 1 ]; then
  cuda_model_tests "${DENO_T:-120}" tests/cuda_model_test.ts
  step "bench:extract (972M, cuda)"
  timeout "${DENO_T:-120}" deno run --cached-only --no-check -A scripts/bench_extract.ts \
    --model_id 972M --device cuda --repeats 3 2>&1 | tee "$OUT/bench_extract.log" | grep -vE "^\[" || fail
  if [ -z "${SKIP_SPEC:-}" ]; then
    step "bench:spec (cuda, bundled models)"
    timeout "${DENO_T:-120}" deno run --cached-only --no-check -A scripts/bench_spec.ts \
      --devices cuda --repeats 2 --profile 2>&1 | tee "$OUT/bench_spec.log" || fail
  fi
  if [ -n "${BENCH_GPU_CASES:-}" ]; then
    step "bench:gpu ($BENCH_GPU_CASES)"
    timeout "${BENCH_T:-150}" deno run --cached-only --no-check -A scripts/bench_gpu.ts \
      --cases "$BENCH_GPU_CASES" ${BENCH_GPU_ARGS:-} 2>&1 | tee "$OUT/bench_gpu.log" || fail
  fi
  if [ -z "${SKIP_PF:-}" ]; then
    step "host page faults: first touch of 5.4 GB in one Float32Array (what module outputs write)"
    timeout 60 deno eval 'const n = 5.4e9 / 4; let t = performance.now();
  const a = new Float32Array(n); a.fill(1); const first = performance.now() - t;
  t = performance.now(); a.fill(2); const again = performance.now() - t;
  console.log(`first touch ${(first / 1000).toFixed(2)} s (${(5.4 / (first / 1000)).toFixed(1)} GB/s), ` +
    `already mapped ${(again / 1000).toFixed(2)} s (${(5.4 / (again / 1000)).toFixed(1)} GB/s)`);' 2>&1 |
      tee "$OUT/page_faults.log"
  fi
else
  note "deno steps: skipped (no .gpu/deno.xz)"
fi

print_summary merge_check
exit $status
