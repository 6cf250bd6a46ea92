#!/usr/bin/env bash
# `deno task ok`: every check a change must pass, in one command (as Deno std's `deno task ok`):
#   deno fmt --check, deno lint, deno check of every entry point, deno doc --lint of mod.ts (every
#   public symbol documented, no public type referring to an unexported one), then
#   `deno task test` (which builds the native library first).
# Every step runs even when an earlier one failed, so one run reports everything. The last line
# says how many of the static checks (fmt, lint, check, doc) failed; the exit status is non-zero when
# any step failed. .ci/run reads both.
set -uo pipefail
cd "$(dirname "$0")/.."

# The entry points: the public module, the scripts, the tests (and src/, so that a module no
# entry point imports yet is checked too).
ENTRY=(mod.ts scripts/ src/ tests/ tools/*.ts tools/train/*.ts)

failed_static=()
step() {
  local name=$1
  shift
  echo "[ok] $name: $*"
  if "$@"; then
    echo "[ok] $name: passed"
  else
    echo "[ok] $name: FAILED"
    failed_static+=("$name")
  fi
}

step fmt deno fmt --check
step lint deno lint
step check deno check "${ENTRY[@]}"
step doc deno doc --lint mod.ts

echo "[ok] test: deno task test"
deno task test
test_status=$?
echo "[ok] test: $([ $test_status -eq 0 ] && echo passed || echo FAILED)"

echo "[ok] static checks failed: ${#failed_static[@]}${failed_static[*]:+ (${failed_static[*]})}"
[ ${#failed_static[@]} -eq 0 ] && [ $test_status -eq 0 ]
