#!/usr/bin/env bash
# fwd_forms.sh — forms of a forward kernel behind an environment switch, measured and checked in one
# GPU call, most telling first so that a call cut short still answers. Carry .gpu-build/ (from
# tools/device/prebuild.sh) and, for step 5, .gpu/ (tools/device/pack_gpu.sh):
#   1. cuda_bench --timeline-fwd LEN both for each value of VAR (the default first: "-"), ROUNDS
#      rounds in turn: each peer's untraced forward and its scan rows printed (ROWS_RE: an
#      extended regex for other rows, matched after "ROW ");
#   2. cuda_vs_cpu --only ONLY with each value;
#   3. cuda_vs_cpu, every case, on the defaults;
#   4. compute-sanitizer memcheck and racecheck on cuda_vs_cpu --small --only ONLY with SAN_VALUE;
#   5. the CUDA model tests through Deno, on the defaults;
#   6. BENCH_GPU_CASES=<cases>: bench:gpu on those cases, on the defaults (mod.ts's forward beside
#      step 1's direct one from C).
#   OUT=$OUT VAR=MAMBABYTE_CUDA_SCAN_FORM VALUES="- 0 4 6" ONLY=scan SAN_VALUE=6 \
#     bash tools/device/fwd_forms.sh
set -u -o pipefail
cd "$(dirname "$0")/../.."
OUT="${OUT:-$PWD/fwd_forms_out}"
mkdir -p "$OUT"
# shellcheck source=SCRIPTDIR/lib.sh
. tools/device/lib.sh
VAR=${VAR:?VAR: the switch to vary}
VALUES=${VALUES:--}
ONLY=${ONLY:-scan}
B=build-cuda
ROWS_RE=${ROWS_RE:-"  k_scan_tile  |  layer 0.s scan alone"}
with() { if [ "$1" = - ]; then shift; env "$@"; else local v=$1; shift; env "$VAR=$v" "$@"; fi; }

step "build"
build_cuda -DMAMBABYTE_TESTS=ON
nvidia-smi --query-gpu=name,clocks.sm,clocks.max.sm --format=csv,noheader
for r in $(seq 1 "${ROUNDS:-2}"); do
  for v in $VALUES; do
    log="$OUT/fwd_${r}_${v}.log"
    with "$v" timeout "${BENCH_T:-120}" ./$B/cuda_bench --timeline-fwd "${LEN:-8192}" both >"$log" 2>&1 || fail
    grep -E "^ROW (timeline|$ROWS_RE)" "$log" |
      sed "s/^/[$VAR=$v round $r] /"
  done
done
for v in $VALUES; do
  note "cuda_vs_cpu --only $ONLY ($VAR=$v): $(with "$v" timeout "${TEST_T:-120}" ./$B/cuda_vs_cpu --only "$ONLY" 2>&1 | tail -1)"
done
cuda_vs_cpu_with MB_LABEL=defaults test.log # every case; MB_LABEL only names the run
if [ -n "${SAN_VALUE:-}" ]; then
  for t in memcheck racecheck; do
    said=$(with "$SAN_VALUE" timeout "${SAN_T:-90}" compute-sanitizer --tool $t \
      ./$B/cuda_vs_cpu --small --only "$ONLY" 2>&1 | grep -E "SUMMARY|cases" | tr '\n' ' ')
    note "$t --small --only $ONLY ($VAR=$SAN_VALUE): $said"
  done
fi
setup_deno
if [ $? -ne 1 ]; then
  cuda_model_tests "${DENO_T:-150}" tests/cuda_model_test.ts
  if [ -n "${BENCH_GPU_CASES:-}" ]; then
    step "bench:gpu $BENCH_GPU_CASES"
    timeout "${BENCH_T:-150}" deno run --cached-only --no-check -A scripts/bench_gpu.ts \
      --cases "$BENCH_GPU_CASES" 2>&1 | tee "$OUT/bench_gpu.log" | grep -E "forward|decode" || fail
  fi
fi
print_summary fwd_forms
exit $status
