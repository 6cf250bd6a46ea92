#!/usr/bin/env bash
# `deno task test:sanitized`: the tests again, with the native library built with AddressSanitizer
# and UndefinedBehaviorSanitizer (gcc's -fsanitize=address,undefined; CPU backend, into
# build-asan/), so that an out-of-bounds access, a use after free or undefined behaviour in the C
# code fails the run even where the results come out right.
#
#   tools/sanitized_test.sh [test files...]      (default: every test file under tests/, the
#                                                 fuzz's fixed cases included, but those below)
#
# Deno itself is not instrumented: the sanitizers' runtimes are preloaded (LD_PRELOAD) and the
# library loaded as MAMBABYTE_LIB. Every process the tests start inherits that, and each writes its
# reports to its own file under a fresh folder (ASAN_OPTIONS / UBSAN_OPTIONS log_path), so reports
# from the scripts the tests run are seen too. Leaks are not checked (Deno's own allocations are
# not the library's). The run fails when a test fails or any report was written; the one expected
# report, allocator_may_return_null's warning for the test that asks the library for an absurd
# buffer (its error path is what that test checks), is not counted.
#
# Left out: the browser tests (Chromium under a preloaded ASan runtime does not start) and the
# tests that run compilers or git on the tree (the preloaded runtime is the tools' business, not
# the library's).
set -uo pipefail
cd "$(dirname "$0")/.."
exec 3>&1 1>&2 # build chatter on stderr, as tools/build.sh does; the summary on stdout

LEFT_OUT='viz_browser|viz_pg19|prebuild|native_build|pending_patches'
lib_asan=$(gcc -print-file-name=libasan.so)
lib_ubsan=$(gcc -print-file-name=libubsan.so)
if [ ! -e "$lib_asan" ] || [ ! -e "$lib_ubsan" ]; then
  echo "test:sanitized: gcc's libasan or libubsan is missing (Debian: libasan8, libubsan1)"
  exit 1
fi
bash tools/build.sh --build-dir build-asan -DMAMBABYTE_CUDA=OFF \
  "-DCMAKE_C_FLAGS=-fsanitize=address,undefined -fno-omit-frame-pointer -g" \
  "-DCMAKE_SHARED_LINKER_FLAGS=-fsanitize=address,undefined" || exit 1

if [ $# -gt 0 ]; then
  files=("$@")
else
  mapfile -t files < <(ls tests/*_test.ts tests/fuzz/*_test.ts | grep -Ev "$LEFT_OUT")
fi
reports=$(mktemp -d)
out=$(mktemp)
LD_PRELOAD="$lib_asan:$lib_ubsan" \
  ASAN_OPTIONS="detect_leaks=0:allocator_may_return_null=1:log_path=$reports/asan" \
  UBSAN_OPTIONS="print_stacktrace=1:log_path=$reports/ubsan" \
  MAMBABYTE_LIB="$PWD/build-asan/libmambabyte.so" \
  deno test --allow-all "${files[@]}" 2>&1 | tee "$out"
status=${PIPESTATUS[0]}

# every report but the expected warning
unexpected=0
for f in "$reports"/*; do
  [ -e "$f" ] || continue
  if grep -vqE "WARNING: AddressSanitizer failed to allocate 0x[0-9a-f]+ bytes|^\s*$" "$f"; then
    echo "== sanitizer report $(basename "$f")"
    head -40 "$f"
    unexpected=$((unexpected + 1))
  fi
done
rm -rf "$reports"
summary=$(sed -E 's/\x1b\[[0-9;]*m//g' "$out" | grep -E '^(ok|FAILED) \| [0-9]+ passed' | tail -1)
rm -f "$out"
echo "test:sanitized: ${summary:-no test summary}; sanitizer reports: $unexpected" >&3
[ "$status" -eq 0 ] && [ "$unexpected" -eq 0 ] && [ -n "$summary" ]
