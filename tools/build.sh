#!/usr/bin/env bash
# Builds build/libmambabyte.so (what `deno task build` runs).
# With CMake: the full build (incremental; OpenBLAS and CUDA when found). Without CMake, a machine
# with only a C compiler still gets the CPU library, compiled here directly (with OpenBLAS when
# the compiler finds it), so the README's two set-up commands work wherever gcc does.
set -euo pipefail
cd "$(dirname "$0")/.."
# Build chatter goes to stderr: `deno task generate ... > out.txt` keeps stdout for results.
exec 1>&2

if command -v cmake >/dev/null 2>&1; then
  cmake -S csrc -B build -DCMAKE_BUILD_TYPE=Release "$@"
  exec cmake --build build --config Release -j
fi

CC=${CC:-cc}
out=build/libmambabyte.so
srcs=(csrc/api.c csrc/common/error.c csrc/cpu/*.c)
mkdir -p build
if [ -f "$out" ] && [ -z "$(find csrc -newer "$out" -name '*.[ch]' | head -1)" ]; then
  echo "mambabyte: $out is up to date (built without CMake)"
  exit 0
fi
flags=(-std=c11 -O3 -fPIC -shared -fvisibility=hidden -fno-math-errno -D_POSIX_C_SOURCE=200809L
  -march=native -Icsrc -Icsrc/include)
libs=(-lm -pthread -Wl,-z,nodelete) # pinned: see csrc/CMakeLists.txt (no unmapping under live worker threads)
probe() { printf '%s\n' "$1" | "$CC" -x c - -o /dev/null "${@:2}" >/dev/null 2>&1; }
for inc in /usr/include/x86_64-linux-gnu/openblas-pthread /usr/include/openblas /usr/include; do
  if [ -f "$inc/cblas.h" ] && probe '#include <cblas.h>
int main(void){cblas_sgemm(CblasRowMajor,CblasNoTrans,CblasTrans,1,1,1,1,0,1,0,1,0,0,1);return 0;}' \
    -I"$inc" -lopenblas; then
    flags+=(-I"$inc" -DMB_WITH_BLAS -DMB_WITH_OPENBLAS)
    libs+=(-lopenblas)
    break
  fi
done
echo "mambabyte: cmake not found; building the CPU library with $CC: ${flags[*]} ${libs[*]}"
"$CC" "${flags[@]}" "${srcs[@]}" -o "$out.tmp" "${libs[@]}"
mv "$out.tmp" "$out"
