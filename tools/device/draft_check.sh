#!/usr/bin/env bash
# draft_check.sh — mb_draft_greedy's CUDA forms checked and timed in one GPU call, with carry
# [".gpu", ".gpu-build"] (tools/device/pack_gpu.sh, tools/device/prebuild.sh):
#   1. build (the prebuilt one when csrc matches), cuda_vs_cpu (all), then memcheck and racecheck
#      on `cuda_vs_cpu --only draft_greedy` (three rounds of its cases; racecheck one);
#   2. tools/profile_verify_cuda.ts --only draft at the drafter's shape (D_MODEL x N_LAYER, default
#      256 x 2) for k 1 and 7 (the slope is a drafted byte, the rest the launch and the weights'
#      load), fp32 and bf16, with the cluster (MAMBABYTE_CUDA_DRAFT_CLUSTER=1) and the ops (=0);
#   3. with TIMING=1, the cluster kernel's phases (MAMBABYTE_CUDA_DRAFT_TIMING=1) at k 1 and 7;
#   4. with SPEC=1, bench:spec on CUDA with the bundled models, the cluster and the ops;
#   5. with ROUND=1, a whole device round (tools/profile_verify_cuda.ts --spec: target
#      T_MODEL x T_LAYER, default 384 x 24, drafter D_MODEL x N_LAYER) and its parts by ablation,
#      fp32 with the cluster and the ops, bf16 with the cluster;
#   6. with PASS_SWEEP=1, the target's pass graph (--only verify) under each of PASS_ENVS (default:
#      none, the fused in_proj's norm or conv off, the n <= 8 GEMV's inputs a thread fixed at 2)
#      for each of PASS_DTYPES (default fp32 bf16), then the pass at each k of PASS_KS and the step.
# SKIP_DRAFT_TIMES=1: step 2 left out. MODEL_TESTS=1: tests/cuda_model_test.ts through Deno.
# RACE_CASES=N: racecheck on the first N draft cases only (default all 5); SKIP_RACE=1: no
# racecheck; ONLY_SAN=1: stop after the sanitizers. ROUND_FORMS: the ROUND step's dtype:cluster
# forms, or dtype:cluster:drafter_dtype (default "fp32:1 fp32:0 bf16:1"); SPEC_N: bench:spec's byte counts (default
# 512; several: the fixed costs a generation are the difference). Each step prints as it ends; logs in $OUT.
set -u -o pipefail
cd "$(dirname "$0")/../.."
OUT="${OUT:-$PWD/draft_check_out}"
mkdir -p "$OUT"
# shellcheck source=SCRIPTDIR/lib.sh
. tools/device/lib.sh

SKIP_SAN=1 build_and_check_ops
for tool in memcheck $([ -z "${SKIP_RACE:-}" ] && echo racecheck); do
  step "$tool --only draft_greedy"
  timeout "${SAN_T:-120}" compute-sanitizer --tool "$tool" --error-exitcode 9 \
    ./build-cuda/cuda_vs_cpu --only draft_greedy $([ "$tool" = racecheck ] && echo --small \
    --draft_cases "${RACE_CASES:-5}") >"$OUT/$tool.log" 2>&1 || fail
  grep -E "FAIL" "$OUT/$tool.log" | head -10
  grep -E "^=========  *(Potential|Error|Race|Invalid)" "$OUT/$tool.log" | sort | uniq -c | head -5
  note "$tool: $(grep -E "SUMMARY" "$OUT/$tool.log" | tail -1) / $(grep -E "cases" "$OUT/$tool.log" | tail -1)"
done

if [ -n "${ONLY_SAN:-}" ]; then
  print_summary draft_check
  exit $status
fi
setup_deno || { echo "no .gpu/deno.xz"; exit 1; }
for dtype in $([ -z "${SKIP_DRAFT_TIMES:-}" ] && echo fp32 bf16); do
  for cluster in 1 0; do
    for k in 1 7; do
      r=$(MAMBABYTE_CUDA_DRAFT_CLUSTER=$cluster timeout 60 deno run --cached-only --no-check -A \
        tools/profile_verify_cuda.ts --only draft --d_model "${D_MODEL:-256}" \
        --n_layer "${N_LAYER:-2}" --k "$k" --dtype "$dtype" 2>&1 | tail -1)
      note "draft ${D_MODEL:-256} x ${N_LAYER:-2} $dtype k=$k cluster=$cluster: $r"
    done
  done
done

# TIMING=1: where the cluster kernel's time goes (MAMBABYTE_CUDA_DRAFT_TIMING=1: CTA 0's clock at
# each phase of the direct launch before the graph's capture)
if [ -n "${TIMING:-}" ]; then
  for dtype in fp32 bf16; do
    for k in 1 7; do
      MAMBABYTE_CUDA_DRAFT_TIMING=1 timeout 60 deno run --cached-only --no-check -A \
        tools/profile_verify_cuda.ts --only draft --d_model "${D_MODEL:-256}" \
        --n_layer "${N_LAYER:-2}" --k "$k" --dtype "$dtype" 2>&1 | grep -E "timing" | head -2 |
        sed "s/^/$dtype: /" | tee -a "$OUT/timing.log"
    done
  done
fi

# MODEL_TESTS=1: the CUDA model tests through Deno (speculative generation on the device among them)
if [ -n "${MODEL_TESTS:-}" ]; then
  cuda_model_tests "${DENO_T:-200}" tests/cuda_model_test.ts
fi

if [ -n "${ROUND:-}" ]; then
  for form in ${ROUND_FORMS:-fp32:1 fp32:0 bf16:1}; do
    set -- ${form//:/ }
    step "round parts ($1, MAMBABYTE_CUDA_DRAFT_CLUSTER=$2)"
    MAMBABYTE_CUDA_DRAFT_CLUSTER=$2 timeout 150 deno run --cached-only --no-check -A \
      tools/profile_verify_cuda.ts --spec --d_model "${T_MODEL:-384}" --n_layer "${T_LAYER:-24}" \
      --draft_d_model "${D_MODEL:-256}" --draft_n_layer "${N_LAYER:-2}" --dtype "$1" \
      --draft_dtype "${3:-$1}" \
      --replays 100 2>&1 | tee -a "$OUT/round.log" || fail
  done
fi

if [ -n "${PASS_SWEEP:-}" ]; then
  for dtype in ${PASS_DTYPES:-fp32 bf16}; do
    for env in ${PASS_ENVS:-MAMBABYTE_CUDA_GEMV_ROWS=0 MAMBABYTE_CUDA_VERIFY_NORM=0 \
      MAMBABYTE_CUDA_VERIFY_CONV=0 MAMBABYTE_CUDA_GEMV_ROWS=2}; do
      r=$(env "$env" timeout 60 deno run --cached-only --no-check -A tools/profile_verify_cuda.ts \
        --only verify --d_model "${T_MODEL:-384}" --n_layer "${T_LAYER:-24}" --dtype "$dtype" \
        2>&1 | tail -1)
      note "pass ${T_MODEL:-384} x ${T_LAYER:-24} $dtype $env: $r"
    done
    for k in ${PASS_KS:-}; do # the pass's cost by its length (k + 1 positions)
      r=$(timeout 60 deno run --cached-only --no-check -A tools/profile_verify_cuda.ts \
        --only verify --d_model "${T_MODEL:-384}" --n_layer "${T_LAYER:-24}" --dtype "$dtype" \
        --k "$k" 2>&1 | tail -1)
      note "pass ${T_MODEL:-384} x ${T_LAYER:-24} $dtype k=$k: $r"
    done
    r=$(timeout 60 deno run --cached-only --no-check -A tools/profile_verify_cuda.ts --only step \
      --d_model "${T_MODEL:-384}" --n_layer "${T_LAYER:-24}" --dtype "$dtype" 2>&1 | tail -1)
    note "step ${T_MODEL:-384} x ${T_LAYER:-24} $dtype: $r"
  done
fi

if [ -n "${SPEC:-}" ]; then
  for n in ${SPEC_N:-512}; do
    for cluster in 1 0; do
      step "bench:spec $n bytes (MAMBABYTE_CUDA_DRAFT_CLUSTER=$cluster)"
      MAMBABYTE_CUDA_DRAFT_CLUSTER=$cluster timeout 120 deno run --cached-only --no-check -A \
        scripts/bench_spec.ts --devices cuda --repeats 2 --rounds device --subword_drafter none \
        --max_new_tokens "$n" 2>&1 | grep -E "^cuda \||identical" | tee -a "$OUT/bench_spec.log" ||
        fail
    done
  done
fi
print_summary draft_check
exit $status
