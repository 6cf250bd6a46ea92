#!/usr/bin/env bash
# spec_train_bench.sh — the speculative-decoding models trained and measured in one GPU call:
# tools/device/train_spec.sh with PARALLEL=1 over Tiny Shakespeare (all models at once; with
# .gpu/kjv.txt.xz one more candidate for small that also trains on the King James Bible;
# MIN minutes in all, default 4.5), the results placed in pretrained_models/, then
# tools/device/spec_session.sh (build, the CUDA checks, bench:spec on CUDA with the trained target
# and both drafters).
# The corpus must be in the tree: .gpu/tinyshakespeare.txt or its .xz (pack_gpu.sh CORPUS=...).
#   bash tools/device/spec_train_bench.sh     # with carry [".gpu"]
# Back in $OUT (the device returns at most 8 files): small.{safetensors,json},
# draft_bytes.{safetensors,json}, draft_subword.tar, target.json, bench_spec.json and logs.tar (the
# training and session logs). The target's weights (47 MB) stay there: the same command rebuilds them.
set -u -o pipefail
cd "$(dirname "$0")/../.."
OUT="${OUT:-$PWD/spec_train_out}"
# shellcheck source=SCRIPTDIR/lib.sh
. tools/device/lib.sh # unpack_corpus
unpack_corpus
DATA="${DATA:-.gpu/tinyshakespeare.txt}"
[ -f "$DATA" ] || { echo "no $DATA: pack it (pack_gpu.sh CORPUS=...) and carry .gpu"; exit 1; }
WORK=$(mktemp -d)
mkdir -p "$OUT"
# .gpu/kjv.txt.xz (tools/train/kjv_text.py's output, xz-compressed to fit the carry): a candidate
# for small that also trains on it
if [ -f .gpu/kjv.txt.xz ]; then
  xz -dc .gpu/kjv.txt.xz >"$WORK/kjv.txt" && export EXTRA_DATA="$WORK/kjv.txt"
fi
PARALLEL=1 bash tools/device/train_spec.sh "$DATA" "$WORK/train" "${MIN:-4.5}"
cp -r "$WORK/train/pretrained_models/." pretrained_models/
# the byte drafter that was not chosen (distilled or not), for tools/device/spec_round.sh's A/B
RUNNER_UP=$(cat "$WORK/train/runs/draft_bytes_runner_up.txt" 2>/dev/null)
[ -n "$RUNNER_UP" ] && cp "$WORK/train/runs/$RUNNER_UP.safetensors" pretrained_models/spec/draft_bytes_runner_up.safetensors
OUT="$WORK/session" SPEC_TESTS="${SPEC_TESTS:-tests/cuda_model_test.ts}" BENCH_ARGS="--devices cuda --repeats 1 ${BENCH_ARGS:-}" \
  bash tools/device/spec_session.sh
PM=pretrained_models
for f in small.safetensors small.json spec/draft_bytes.safetensors spec/draft_bytes.json \
  spec/target.json; do
  [ -f "$PM/$f" ] && cp "$PM/$f" "$OUT/"
done
[ -d "$PM/spec/draft_subword" ] && tar -cf "$OUT/draft_subword.tar" -C "$PM/spec" draft_subword
cp "$WORK/session/bench_spec.json" "$OUT/" 2>/dev/null
tar -cf "$OUT/logs.tar" -C "$WORK" --exclude='*.safetensors*' --exclude='*.tokenizer.json' .
ls -la "$OUT"
