#!/usr/bin/env bash
# spec_train_bench.sh — the speculative-decoding models trained and measured in one GPU call:
# tools/device/train_spec.sh with PARALLEL=1 over Tiny Shakespeare (the five models at once, MIN
# minutes, default 6), the results placed in pretrained_models/, then tools/device/spec_session.sh
# (build, the CUDA checks, bench:spec on CUDA with the trained target and both drafters).
# The corpus must be in the tree: copy tinyshakespeare.txt to .gpu/ (carried) first.
#   bash tools/device/spec_train_bench.sh     # with carry [".gpu"]
# The trained files come back under $OUT/train/pretrained_models (the target split in parts).
set -u -o pipefail
cd "$(dirname "$0")/../.."
OUT="${OUT:-$PWD/spec_train_out}"
DATA="${DATA:-.gpu/tinyshakespeare.txt}"
[ -f "$DATA" ] || { echo "no $DATA: copy tinyshakespeare.txt there and carry .gpu"; exit 1; }
PARALLEL=1 bash tools/device/train_spec.sh "$DATA" "$OUT/train" "${MIN:-6}"
cp -r "$OUT/train/pretrained_models/." pretrained_models/
OUT="$OUT/session" BENCH_ARGS="--devices cuda --repeats 1 ${BENCH_ARGS:-}" \
  bash tools/device/spec_session.sh
