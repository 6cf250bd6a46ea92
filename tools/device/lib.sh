# lib.sh — the prologue the tools/device/*.sh scripts share. Source it from the repository root,
# after OUT is set:  . tools/device/lib.sh
# shellcheck shell=bash

# build_cuda [-j N] [cmake flags...]: configure csrc into build-cuda (Release, CUDA on, plus the
# flags) and build it with N jobs (16); the log is $OUT/build.log. On failure prints its tail,
# "BUILD FAILED", and exits the script with 1.
build_cuda() {
  local jobs=16
  if [ "${1:-}" = -j ]; then
    jobs=$2
    shift 2
  fi
  if [ "$*" = "-DMAMBABYTE_TESTS=ON" ] && use_prebuilt; then return 0; fi
  if ! { cmake -S csrc -B build-cuda -DCMAKE_BUILD_TYPE=Release -DMAMBABYTE_CUDA=ON "$@" &&
    cmake --build build-cuda -j "$jobs"; } >"$OUT/build.log" 2>&1; then
    tail -40 "$OUT/build.log"
    echo "BUILD FAILED"
    exit 1
  fi
}

# csrc_digest: a digest of every file under csrc (the same on both machines for the same tree).
csrc_digest() {
  find csrc -type f -print0 | LC_ALL=C sort -z | xargs -0 sha256sum | sha256sum | cut -c1-16
}

# use_prebuilt: build-cuda from .gpu-build/prebuilt.tar.xz (tools/device/prebuild.sh, made on the
# development machine and carried), when it was built from this csrc and its libraries resolve
# here (the real cuBLAS); returns 1, leaving build-cuda alone, otherwise.
use_prebuilt() {
  local a=.gpu-build/prebuilt.tar.xz t d
  [ -f "$a" ] || return 1
  t=$(mktemp -d)
  d=$(csrc_digest)
  if ! tar -C "$t" -xJf "$a"; then
    echo "prebuilt: unreadable; building here"
  elif [ "$(cat "$t/CSRC_DIGEST")" != "$d" ]; then
    echo "prebuilt: csrc changed since it was built; building here"
  elif ldd "$t/libmambabyte.so" | grep "not found"; then
    echo "prebuilt: a library it needs is missing here; building here"
  else
    rm -rf build-cuda
    mkdir -p build-cuda
    cp "$t"/* build-cuda/
    rm -rf "$t"
    echo "prebuilt: build-cuda from $a (csrc $d)"
    return 0
  fi
  rm -rf "$t"
  return 1
}

# unpack_corpus: .gpu/tinyshakespeare.txt from .gpu/tinyshakespeare.txt.xz (pack_gpu.sh's
# CORPUS=..., compressed so that the tree, .gpu and .gpu-build fit the carry) when only that is here.
unpack_corpus() {
  local f=.gpu/tinyshakespeare.txt
  [ -f "$f" ] || [ ! -f "$f.xz" ] || xz -dc "$f.xz" >"$f"
}

# setup_deno: unpack .gpu/deno.xz (from ../shared/tools/gpu-pack.sh) to DENO_BIN
# (/usr/local/bin/deno), remove deno.lock (the pack holds only what the entry points import; the
# lock names more), export DENO_DIR and MAMBABYTE_LIB. Returns 1, doing nothing, without
# .gpu/deno.xz; returns 2 when unpacking failed (the rest is done even then).
setup_deno() {
  local bin=${DENO_BIN:-/usr/local/bin/deno} rc=0
  [ -f .gpu/deno.xz ] || return 1
  { xz -dc .gpu/deno.xz >"$bin" && chmod +x "$bin"; } || rc=2
  rm -f deno.lock
  export DENO_DIR=$PWD/.gpu/deno_dir
  export MAMBABYTE_LIB=$PWD/build-cuda/libmambabyte.so
  return $rc
}

# The check scripts' report: `step NAME` announces a step, `note LINE` prints a line and keeps it
# for `print_summary TITLE`, which prints the kept lines last; a failing step sets status=1 (`fail`)
# and the script ends with `exit $status`.
status=0
summary=()
step() { echo "== $1 ($(date +%T))"; }
note() {
  summary+=("$1")
  echo "$1"
}
fail() { status=1; }
# with_env VAR=VALUE CMD [ARGS...]: CMD (a function too, in this shell: its fail and note count)
# with VAR set to VALUE, VAR's earlier value (or its absence) restored after
with_env() {
  local var=${1%%=*} had=0 old=
  [ -z "${!var+x}" ] || { had=1; old=${!var}; }
  export "$1"
  shift
  "$@"
  local rc=$?
  if [ "$had" = 1 ]; then export "$var=$old"; else unset "$var"; fi
  return $rc
}
print_summary() {
  echo
  echo "==== $1 summary"
  local s
  for s in "${summary[@]}"; do echo "$s"; done
}

# build_and_check_ops: the C tests built with the library (build_cuda -DMAMBABYTE_TESTS=ON), then
# cuda_vs_cpu, every case (TEST_T seconds, default 150; log $OUT/test.log), then unless SKIP_SAN is
# set check_sanitizers' memcheck and racecheck on every --small case (SAN_ONLY: one group).
# Each result is a `note`; a failure calls `fail`.
build_and_check_ops() {
  local t0 b=build-cuda
  step "build"
  t0=$(date +%s)
  build_cuda -DMAMBABYTE_TESTS=ON
  note "build: ok ($(($(date +%s) - t0)) s)"
  step "cuda_vs_cpu (all)"
  timeout "${TEST_T:-150}" ./$b/cuda_vs_cpu >"$OUT/test.log" 2>&1 || fail
  grep -E "FAIL|FATAL" "$OUT/test.log" | head -30
  note "cuda_vs_cpu: $(grep -E "cases" "$OUT/test.log" | tail -1)"
  [ -n "${SKIP_SAN:-}" ] && return 0
  check_sanitizers
}

# check_sanitizers: compute-sanitizer memcheck and racecheck on build-cuda's cuda_vs_cpu --small
# (SAN_ONLY=group: `--only group` alone; SKIP_RACE=1: memcheck only; SAN_T seconds each, default
# 120; $OUT/memcheck.log, $OUT/racecheck.log). Each result is a `note`; a failure calls `fail`.
check_sanitizers() {
  local b=build-cuda only=()
  [ -n "${SAN_ONLY:-}" ] && only=(--only "$SAN_ONLY")
  step "memcheck --small ${only[*]:-(all)}"
  timeout "${SAN_T:-120}" compute-sanitizer --tool memcheck --leak-check full --error-exitcode 9 \
    ./$b/cuda_vs_cpu --small "${only[@]}" >"$OUT/memcheck.log" 2>&1 || fail
  note "memcheck: $(grep -E "ERROR SUMMARY" "$OUT/memcheck.log" | tail -1) / $(grep -E "cases" "$OUT/memcheck.log" | tail -1)"
  [ -n "${SKIP_RACE:-}" ] && return 0 # kernels without shared memory
  step "racecheck --small ${only[*]:-(all)}"
  timeout "${SAN_T:-120}" compute-sanitizer --tool racecheck --error-exitcode 9 \
    ./$b/cuda_vs_cpu --small "${only[@]}" >"$OUT/racecheck.log" 2>&1 || fail
  note "racecheck: $(grep -E "RACECHECK SUMMARY|ERROR SUMMARY" "$OUT/racecheck.log" | tail -1)"
}

# unpack_peer: the peer commit's build (.gpu-build/peer.tar.xz, tools/device/prebuild_peer.sh) into
# build-peer, its commit kept as a note; exits the script (2) when there is none.
unpack_peer() {
  [ -f .gpu-build/peer.tar.xz ] || {
    echo "no peer build (.gpu-build/peer.tar.xz: run tools/device/prebuild_peer.sh here first)"
    exit 2
  }
  rm -rf build-peer && mkdir -p build-peer && tar -C build-peer -xJf .gpu-build/peer.tar.xz || exit 1
  note "peer: $(cat .gpu-build/PEER 2>/dev/null || echo '?')"
}

# cuda_vs_cpu_with NAME=VALUE LOG: cuda_vs_cpu, every case, with that environment switch set (TEST_T
# seconds, default 150; log $OUT/LOG), its failures printed and its count kept as a note.
cuda_vs_cpu_with() {
  step "cuda_vs_cpu ($1)"
  env "$1" timeout "${TEST_T:-150}" ./build-cuda/cuda_vs_cpu >"$OUT/$2" 2>&1 || fail
  grep -E "FAIL|FATAL" "$OUT/$2" | head -10
  note "cuda_vs_cpu ($1): $(grep -E "cases" "$OUT/$2" | tail -1)"
}

# cuda_vs_cpu_only GROUP BUILD: BUILD's cuda_vs_cpu --only GROUP (within TEST_T seconds, default
# 120), its log in $OUT/test_BUILD_GROUP.log, the failures printed and the summary kept as a note
cuda_vs_cpu_only() {
  step "cuda_vs_cpu --only $1 ($2)"
  timeout "${TEST_T:-120}" "./$2/cuda_vs_cpu" --only "$1" >"$OUT/test_$2_$1.log" 2>&1 || fail
  grep -E "FAIL|FATAL" "$OUT/test_$2_$1.log" | head -20
  note "cuda_vs_cpu --only $1 ($2): $(grep -E "cases" "$OUT/test_$2_$1.log" | tail -1)"
}

# print_thp: the system's transparent huge page modes (what fresh host arrays get)
print_thp() {
  echo "THP: $(cat /sys/kernel/mm/transparent_hugepage/enabled) defrag $(cat /sys/kernel/mm/transparent_hugepage/defrag)"
}

# bench_extract_with NAME=VALUE [DTYPE]: bench:extract (972M, DTYPE weights, default fp32;
# REPEATS repeats, default 3; within EXTRACT_T or else BENCH_T seconds, default 200) with that switch
# set, its rows printed and appended to $OUT/bench_extract_VALUE.log (call setup_deno first)
bench_extract_with() {
  local dtype=${2:-fp32}
  step "bench:extract 972M $dtype ($1)"
  env "$1" timeout "${EXTRACT_T:-${BENCH_T:-200}}" deno run --cached-only --no-check -A \
    scripts/bench_extract.ts \
    --device cuda --model_id 972M --dtype "$dtype" --repeats "${REPEATS:-3}" 2>&1 |
    tee -a "$OUT/bench_extract_${1#*=}.log" | grep -E "forward|discrete|module|the same" || fail
}

# extract_gap DTYPE: tools/device/extract_gap.ts (where an extraction's time goes beyond the
# forward) with DTYPE weights, within GAP_T seconds (default 150), its log in $OUT/gap_DTYPE.log
# (call setup_deno first)
extract_gap() {
  step "extract_gap.ts $1"
  timeout "${GAP_T:-150}" deno run --cached-only --no-check -A tools/device/extract_gap.ts "$1" \
    2>&1 | tee -a "$OUT/gap_$1.log" || fail
}

# The Nsight Compute sections the kernel profiles print (ncu_ssu64.sh, ncu_step.sh): speed of light,
# memory, occupancy, the schedulers' issue figures, warp state and launch shape.
NCU_SECTIONS=(--section SpeedOfLight --section MemoryWorkloadAnalysis --section Occupancy
  --section SchedulerStats --section WarpStateStats --section LaunchStats)

# ncu_stall_reasons REPORT [N]: the N (default 14) largest average warp stall reasons per issued
# instruction of the first kernel in an Nsight Compute report (its raw page).
ncu_stall_reasons() {
  ncu -i "$1" --page raw --csv 2>/dev/null | python3 -c '
import csv, sys
rows = list(csv.reader(sys.stdin))
if len(rows) >= 3:
    h, v = rows[0], rows[2]
    st = [(float(x.replace(",", "")), n) for n, x in zip(h, v)
          if n.startswith("smsp__average_warp") and "issue_stalled" in n and x.replace(",", "").replace(".", "").isdigit()]
    for val, n in sorted(st, reverse=True)[:int(sys.argv[1])]: print(f"{val:10.3f}  {n}")
' "${2:-14}" 2>&1
}

# sass_counts REGEX: the SASS of the kernels whose names match REGEX (cuobjdump on
# build-cuda/libmambabyte.so) into $OUT/sass.txt, then how many kernels matched and the 30 most
# frequent opcodes of their listings (static counts: each instruction once, loops not weighed).
sass_counts() {
  cuobjdump -sass build-cuda/libmambabyte.so >"$OUT/sass_all.txt" 2>&1 || return 1
  awk -v pat="$1" '/Function : /{p = ($0 ~ pat)} p' "$OUT/sass_all.txt" >"$OUT/sass.txt"
  rm -f "$OUT/sass_all.txt"
  grep -c "Function : " "$OUT/sass.txt"
  sed -nE 's@^\s*/\*[0-9a-f]{4,}\*/\s+@@p' "$OUT/sass.txt" |
    awk '{op = $1; if (op ~ /^@/) op = $2; sub(/\..*/, "", op); sub(/;$/, "", op); print op}' |
    sort | uniq -c | sort -rn | head -30
}

# cuda_model_tests LIMIT TEST...: the Deno tests named (through .gpu's deno: call setup_deno first)
# within LIMIT seconds, their log in $OUT/deno_test.log, the failures and the summary printed and
# the summary kept as a note.
cuda_model_tests() {
  local limit=$1
  shift
  step "$*"
  timeout "$limit" deno test --cached-only --no-check -A "$@" >"$OUT/deno_test.log" 2>&1 || fail
  grep -E "FAILED|passed|failed|rror" "$OUT/deno_test.log" | sed 's/\x1b\[[0-9;]*m//g' | tail -12
  note "deno tests: $(grep -E "passed" "$OUT/deno_test.log" | tail -1 | sed 's/\x1b\[[0-9;]*m//g')"
}

# ncu_kernels REGEX COUNT ARGS...: Nsight Compute on the first COUNT launches of the kernels whose
# names (NCU_BASE: function, default, or mangled) match REGEX while build-cuda/cuda_bench ARGS runs
# (NCU_SECTIONS, compute workload and instruction statistics); the log in $OUT/ncu.log, the main
# figures printed.
ncu_kernels() {
  local regex=$1 count=$2
  shift 2
  step "ncu ($regex)"
  timeout "${BENCH_T:-240}" ncu --kernel-name-base "${NCU_BASE:-function}" \
    --kernel-name "regex:$regex" --launch-count "$count" "${NCU_SECTIONS[@]}" \
    --section ComputeWorkloadAnalysis --section InstructionStats \
    ./build-cuda/cuda_bench "$@" >"$OUT/ncu.log" 2>&1 || fail
  grep -vE "^==PROF==|^\[|^decode|^bf16|^forward|^\{" "$OUT/ncu.log" |
    grep -E "k_|Throughput|Duration|Occupancy|Registers|Stall|Warp Cycles|Issued|Eligible|Pipe|Executed Ipc|Instructions|Shared" |
    head -80
}
