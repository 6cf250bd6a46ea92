#!/usr/bin/env bash
# sanitize_all.sh — every compute-sanitizer tool over cuda_vs_cpu's small sizes, one GPU call
# (.gpu-build/ from tools/device/prebuild.sh carried, or a build here):
#   memcheck (with leak check), racecheck, synccheck (barriers reached by part of a block, or
#   with the wrong mask) and initcheck (device memory read before anything wrote it), each over
#   every --only group in turn, so that a slow tool still reports the groups it finished.
# TOOLS (default "memcheck racecheck synccheck initcheck"), SAN_GROUPS (default: every group of
# cuda_vs_cpu, then "all": every case, those outside the groups among them), SAN_T seconds a run
# (default 90). A failed run's distinct reports are printed (tools/device/san_sum.py: kernel,
# offset, count, the case running at the first); logs in $OUT/san_<tool>_<group>.log. Exits 1
# when any run reported an error or failed a case, 0 when every run was clean (a run cut short by
# SAN_T counts as neither, and says so).
# Known: initcheck over "all" reports reads of what cuBLAS's Hopper kernels wrote (the graph
# cases from 9 rows on, cuBLAS's own split-K reduction among the readers): the tool does not see
# those kernels' stores. Every --only group is clean (docs/cuda_notes.md, "Every sanitizer").
set -u -o pipefail
cd "$(dirname "$0")/../.."
OUT="${OUT:-$PWD/sanitize_out}"
mkdir -p "$OUT"
# shellcheck source=SCRIPTDIR/lib.sh
. tools/device/lib.sh
TOOLS=${TOOLS:-memcheck racecheck synccheck initcheck}
SAN_GROUPS=${SAN_GROUPS:-linear bf16 scan ssu decode download sample discrete_a draft_greedy all}
B=build-cuda

step "build"
build_cuda -DMAMBABYTE_TESTS=ON
nvidia-smi --query-gpu=name --format=csv,noheader

for tool in $TOOLS; do
  extra=()
  [ "$tool" = memcheck ] && extra=(--leak-check full)
  for g in $SAN_GROUPS; do
    only=()
    [ "$g" = all ] || only=(--only "$g")
    log="$OUT/san_${tool}_$g.log"
    step "$tool $g"
    t0=$(date +%s)
    timeout "${SAN_T:-90}" compute-sanitizer --tool "$tool" "${extra[@]}" --print-limit 1000000 \
      --error-exitcode 9 ./$B/cuda_vs_cpu --small "${only[@]}" >"$log" 2>&1
    rc=$?
    secs=$(($(date +%s) - t0))
    summary_line=$(grep -E "(ERROR|RACECHECK|SYNCCHECK|INITCHECK) SUMMARY" "$log" | tail -1)
    cases=$(grep -E "cases" "$log" | tail -1)
    if [ $rc -eq 124 ]; then
      note "$tool $g: cut short at ${secs} s (${summary_line:-no summary})"
      python3 tools/device/san_sum.py "$log" 40
    elif [ $rc -ne 0 ]; then
      note "$tool $g: FAILED rc=$rc (${summary_line:-no summary}; ${cases:-no case count})"
      python3 tools/device/san_sum.py "$log" 40
      grep -E "FAIL|FATAL" "$log" | head -5
      fail
    else
      note "$tool $g: ${summary_line:-no summary} / ${cases:-no case count} (${secs} s)"
    fi
  done
done
print_summary sanitize_all
exit $status
