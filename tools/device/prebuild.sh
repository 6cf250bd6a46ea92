#!/usr/bin/env bash
# prebuild.sh — builds the CUDA library and its C test programs (cuda_vs_cpu, cuda_bench) on THIS
# machine, which has nvcc but neither cuBLAS nor a GPU, into .gpu-build/prebuilt.tar.xz (git-ignored),
# so that a GPU call carries the build instead of spending 90-180 s of device time on it:
#   bash tools/device/prebuild.sh     # then carry [".gpu", ".gpu-build"]
# The device scripts' build step (lib.sh's build_cuda) unpacks it when it was built from the same
# csrc (a digest of every file) and its libraries resolve there; else it builds as before.
# cuBLAS is linked through a stand-in with its soname (tools/device/cublas_stub): the GPU machine's
# real libcublas.so.13, found first through the run path, is what runs. SASS for sm_90 only (the
# H200; no PTX, to keep the carry small), and the CPU backend for any AVX-512 processor
# (-march=x86-64-v4, not the device's -march=native: CPU-side timings can differ from a device build).
set -euo pipefail
cd "$(dirname "$0")/../.."
OUT=${OUT:-/tmp}
# shellcheck source=SCRIPTDIR/lib.sh
. tools/device/lib.sh
S=$PWD/build-stub
B=build-cuda-pre # incremental here; build-cuda is the device's
mkdir -p "$S/include" "$S/lib"
cp tools/device/cublas_stub/cublas_v2.h tools/device/cublas_stub/cublasLt.h "$S/include/"
for l in cublas cublasLt; do
  cc -shared -fPIC -o "$S/lib/lib$l.so" -Wl,-soname,"lib$l.so.13" tools/device/cublas_stub/stub.c
  ln -sf "lib$l.so" "$S/lib/lib$l.so.13"
done
cmake -S csrc -B "$B" -DCMAKE_BUILD_TYPE=Release -DMAMBABYTE_CUDA=ON -DMAMBABYTE_TESTS=ON \
  -DMAMBABYTE_NATIVE=OFF -DCMAKE_C_FLAGS=-march=x86-64-v4 -DCMAKE_CUDA_ARCHITECTURES=90-real \
  -DCMAKE_CUDA_FLAGS="-I$S/include" -DCMAKE_LIBRARY_PATH="$S/lib" \
  -DCMAKE_BUILD_RPATH="/usr/local/cuda/lib64;/usr/local/cuda/targets/x86_64-linux/lib" >/dev/null
cmake --build "$B" -j "$(nproc)" >"$B/prebuild.log" 2>&1 || {
  tail -30 "$B/prebuild.log"
  exit 1
}
P=.gpu-build/p
rm -rf "$P" .gpu-build/prebuilt.tar.xz # a peer's build (prebuild_peer.sh) stays
mkdir -p "$P"
strip --strip-unneeded -o "$P/libmambabyte.so" "$B/libmambabyte.so"
cp "$B/cuda_vs_cpu" "$B/cuda_bench" "$P/"
d=$(csrc_digest)
echo "$d" >"$P/CSRC_DIGEST"
tar -C "$P" -cJf .gpu-build/prebuilt.tar.xz .
rm -rf "$P"
echo "prebuilt: .gpu-build/prebuilt.tar.xz ($(du -k .gpu-build/prebuilt.tar.xz | cut -f1) KiB, csrc $d)"
