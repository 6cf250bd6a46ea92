#!/usr/bin/env bash
# Builds libmambabyte.so (what `deno task build` runs).
#
#   tools/build.sh [--without-cmake] [--build-dir DIR] [--march ARCH] [cmake arguments...]
#
# With CMake: the full build into DIR (default build/; incremental; OpenBLAS and CUDA when found),
# extra arguments going to cmake's configure step (e.g. -DMAMBABYTE_TESTS=ON). Without CMake (or
# with --without-cmake), a machine with only a C compiler still gets the CPU library, compiled here
# directly with CMakeLists.txt's C flags (and OpenBLAS when the compiler finds it), so the README's
# set-up works wherever gcc does. tests/native_build_test.ts builds with this path and checks its
# flags against CMakeLists.txt. --march (without CMake only; default native) builds for another
# processor level, e.g. x86-64-v3 (AVX2 + FMA, no AVX-512): tests/cpu_avx2_test.ts runs the 8-lane
# kernels that way on a machine whose own build takes the AVX-512 ones.
set -euo pipefail
cd "$(dirname "$0")/.."
# Build chatter goes to stderr: `deno task generate ... > out.txt` keeps stdout for results.
exec 1>&2

dir=build
use_cmake=1
march=native
while [ $# -gt 0 ]; do
  case "$1" in
    --without-cmake) use_cmake=0; shift ;;
    --build-dir) dir=$2; shift 2 ;;
    --march) march=$2; use_cmake=0; shift 2 ;;
    *) break ;;
  esac
done

if [ "$use_cmake" -eq 1 ] && command -v cmake >/dev/null 2>&1; then
  cmake -S csrc -B "$dir" -DCMAKE_BUILD_TYPE=Release "$@"
  exec cmake --build "$dir" --config Release -j
fi

CC=${CC:-cc}
out=$dir/libmambabyte.so
srcs=(csrc/api.c csrc/common/error.c csrc/common/host_copy.c csrc/cpu/*.c)
mkdir -p "$dir"
if [ -f "$out" ] && [ -z "$(find csrc -newer "$out" \( -name '*.[ch]' -o -name '*.def' \) | head -1)" ]; then
  echo "mambabyte: $out is up to date (built without CMake)"
  exit 0
fi
# The C flags of csrc/CMakeLists.txt (C11, -fPIC, hidden visibility, its compile options and
# definitions, -march=native), and its link options.
flags=(-std=c11 -fPIC -shared -fvisibility=hidden -O3 -Wall -Wextra -Wno-unused-parameter
  -fno-math-errno -D_POSIX_C_SOURCE=200809L "-march=$march" -Icsrc -Icsrc/include)
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
echo "mambabyte: building the CPU library without CMake: $CC ${flags[*]} ${libs[*]}"
"$CC" "${flags[@]}" "${srcs[@]}" -o "$out.tmp" "${libs[@]}"
mv "$out.tmp" "$out"
