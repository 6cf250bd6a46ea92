#!/usr/bin/env bash
# chunk_check.sh — the config's `chunk_size: auto` on a GPU in one call (carry [".gpu/deno.xz",
# ".gpu/deno_dir", ".gpu-build"]): build (or the prebuilt library), the CUDA model tests and
# tests/chunk_size_test.ts, then bench:gpu's forward cases (FWD_CASES, default fwd-bf16,fwd-tf32,
# fwd1m-bf16) with the config's chunk (auto) and with --chunk_size 2048 (the former default),
# alternated ROUNDS times (default 1), then bench:extract on the 972M shape (fp32, REPEATS,
# default 3) with auto. Logs in $OUT.
set -u -o pipefail
cd "$(dirname "$0")/../.."
OUT="${OUT:-$PWD/chunk_check_out}"
mkdir -p "$OUT"
# shellcheck source=SCRIPTDIR/lib.sh
. tools/device/lib.sh
step "build"
build_cuda -DMAMBABYTE_TESTS=ON
setup_deno || exit 1
cuda_model_tests "${DENO_T:-180}" tests/cuda_model_test.ts tests/chunk_size_test.ts
for r in $(seq "${ROUNDS:-1}"); do
  for c in auto 2048; do
    step "bench:gpu ${FWD_CASES:-fwd-bf16,fwd-tf32,fwd1m-bf16}, chunk $c (round $r)"
    args=()
    [ "$c" = auto ] || args=(--chunk_size "$c")
    timeout "${BENCH_T:-200}" deno run --cached-only --no-check -A scripts/bench_gpu.ts \
      --cases "${FWD_CASES:-fwd-bf16,fwd-tf32,fwd1m-bf16}" "${args[@]}" 2>&1 |
      tee "$OUT/bench_gpu_${c}_$r.log" | grep -E "^model|bandwidth" || fail
  done
done
step "bench:extract 972M fp32, chunk auto"
timeout "${BENCH_T:-200}" deno run --cached-only --no-check -A scripts/bench_extract.ts \
  --device cuda --model_id 972M --repeats "${REPEATS:-3}" 2>&1 | tee "$OUT/bench_extract.log" |
  tail -14 || fail
print_summary chunk_check
exit $status
