#!/usr/bin/env bash
# pack_gpu.sh — .gpu/ (git-ignored) for the GPU machine, small enough that the tracked tree plus
# .gpu/ stay under the device's 64 MiB carry: the deno binary and the npm cache of the entry points
# the device scripts run, without the npm packages only the corpus queue loads (BullMQ, ioredis and
# their dependencies), and, with CORPUS=<tinyshakespeare.txt>, the corpus the training scripts read.
# Needs the development machine's packing tool ($GPU_PACK; default ../shared/tools/gpu-pack.sh).
#   bash tools/device/pack_gpu.sh            # then run the device scripts with carry [".gpu"]
set -euo pipefail
cd "$(dirname "$0")/../.."
"${GPU_PACK:-../shared/tools/gpu-pack.sh}" mod.ts tests/cuda_model_test.ts scripts/bench_extract.ts \
  scripts/bench_gpu.ts scripts/bench_spec.ts tools/profile_verify_cuda.ts
R=.gpu/deno_dir/npm/registry.npmjs.org
for p in bullmq ioredis @ioredis luxon msgpackr msgpackr-extract @msgpackr-extract cron-parser \
  node-abort-controller semver uuid denque redis-errors redis-parser standard-as-callback \
  cluster-key-slot lodash.defaults lodash.isarguments debug ms tslib detect-libc \
  node-gyp-build-optional-packages; do
  rm -rf "${R:?}/$p"
done
# Deno's emit cache of our own files (~1.8 MB): the device transpiles them again in a second or two,
# and with it the tree, .gpu and a peer's .gpu-build went past the carry limit (2026-12-07)
rm -rf .gpu/deno_dir/gen
# xz-compressed (0.36 of 1.1 MB): with the tracked tree, .gpu and .gpu-build it fits the carry;
# the device scripts unpack it (lib.sh's unpack_corpus)
if [ -n "${CORPUS:-}" ]; then
  xz -9 -c "$CORPUS" >.gpu/tinyshakespeare.txt.xz
  rm -f .gpu/tinyshakespeare.txt
fi
tree=$(git ls-files -z | xargs -0 du -cb 2>/dev/null | tail -1 | cut -f1)
pack=$(du -sb .gpu | cut -f1)
pre=0
if [ -d .gpu-build ]; then pre=$(du -sb .gpu-build | cut -f1); fi
echo "tracked tree $((tree / 1000000)) MB + .gpu $((pack / 1000000)) MB + .gpu-build (prebuild.sh)" \
  "$((pre / 1000000)) MB = $(((tree + pack + pre) / 1000000)) MB (carry limit 67 MB)"
