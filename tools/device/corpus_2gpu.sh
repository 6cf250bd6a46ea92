#!/usr/bin/env bash
# corpus_2gpu.sh — one call on a 2-GPU machine without network: bytes/s of a corpus run
# (scripts/run_corpus.ts, --task evaluate, the embedded mode) on one GPU, then on two (one worker
# per GPU), over the three PG19 samples repeated into documents of ~100 KiB, ~10 MB in all; prints
# both rates and their ratio (the target is >= 1.8). Redis is not needed: with no --queue the run
# puts one worker thread on each visible GPU.
# Prepare here first:
#   ../shared/tools/gpu-pack.sh mod.ts scripts/run_corpus.ts src/corpus/embedded_worker.ts
# then run with carry [".gpu"] (and the samples: pg19_samples/*.txt, or SAMPLES=<folder>):
#   bash tools/device/corpus_2gpu.sh
# Settings: MODEL (353M: random weights of the paper's shape; any --model_id, or CKPT=<checkpoint>),
# DTYPE (bf16), CONTEXT (8192 bytes per forward chunk), MB (10), DOC_KB (100), RUN_T (seconds per
# run, 270), ONE_GPU (1: run on a one-GPU machine too). Logs and both summaries go to $OUT.
set -u -o pipefail
cd "$(dirname "$0")/../.."
OUT="${OUT:-$PWD/corpus_2gpu_out}"
WORK="${WORK:-$(mktemp -d)}"
mkdir -p "$OUT"
# shellcheck source=SCRIPTDIR/lib.sh
. tools/device/lib.sh # build_cuda, setup_deno
step() { echo "== $1 ($(date +%T))" | tee -a "$OUT/steps.txt"; }

step "deno"
setup_deno
[ $? -eq 2 ] && exit 1
command -v deno >/dev/null || { echo "no deno: pack it into .gpu/ first (see above)"; exit 1; }
nvidia-smi --query-gpu=index,name --format=csv,noheader | tee -a "$OUT/steps.txt"
gpus=$(nvidia-smi --query-gpu=index --format=csv,noheader | wc -l)
# ONE_GPU=1 lets a one-GPU machine run it all (a dry run of this script: the ratio is then ~1).
[ "$gpus" -ge 2 ] || [ "${ONE_GPU:-0}" = 1 ] || { echo "this needs 2 GPUs; found $gpus"; exit 1; }

step "build"
build_cuda -j "$(nproc)"
export MAMBABYTE_LIB=$PWD/build-cuda/libmambabyte.so

step "corpus"
SAMPLES="${SAMPLES:-pg19_samples}"
[ -d "$SAMPLES" ] || SAMPLES=../shared/pg19_samples
samples=("$SAMPLES"/*.txt)
[ -f "${samples[0]}" ] || { echo "no PG19 samples in $SAMPLES (set SAMPLES=<folder>)"; exit 1; }
doc_bytes=$((${DOC_KB:-100} * 1024))
docs=$(((${MB:-10} * 1000 * 1000 + doc_bytes - 1) / doc_bytes))
mkdir -p "$WORK/corpus"
for ((i = 0; i < docs; i++)); do
  s=${samples[$((i % ${#samples[@]}))]}
  f=$(printf "%s/corpus/doc%04d.txt" "$WORK" "$i")
  : >"$f"
  while [ "$(stat -c %s "$f")" -lt "$doc_bytes" ]; do cat "$s" >>"$f"; done
done
echo "$docs documents, $(du -sb "$WORK/corpus" | cut -f1) bytes, from ${samples[*]}" |
  tee -a "$OUT/steps.txt"

model=(--model_id "${MODEL:-353M}")
[ -n "${CKPT:-}" ] && model=(--pretrained_model_filepath "$CKPT")
run() { # run <name> <device>
  step "$1: --device $2"
  timeout "${RUN_T:-270}" deno run --cached-only --no-check --allow-all scripts/run_corpus.ts \
    --inputs "$WORK/corpus" --output_dir "$WORK/$1" "${model[@]}" --dtype "${DTYPE:-bf16}" \
    --context "${CONTEXT:-8192}" --device "$2" >"$OUT/$1.log" 2>&1
  echo "rc=$?" >>"$OUT/$1.log"
  cp "$WORK/$1/summary.json" "$OUT/$1_summary.json" 2>/dev/null
  grep -E "worker|documents:|error|rc=" "$OUT/$1.log" | grep -v "^\[" | tee -a "$OUT/steps.txt"
}
run one_gpu cuda:0
run two_gpus cuda

step "result"
deno eval --cached-only "
const read = (f) => { try { return JSON.parse(Deno.readTextFileSync(f)); } catch { return null; } };
const one = read('$OUT/one_gpu_summary.json'), two = read('$OUT/two_gpus_summary.json');
if (!one?.bytes_per_second || !two?.bytes_per_second) {
  console.log('a run did not finish: see $OUT/one_gpu.log and $OUT/two_gpus.log');
  Deno.exit(1);
}
const f = (x) => Math.round(x).toLocaleString('en-US');
console.log('1 GPU : ' + f(one.bytes_per_second) + ' bytes/s (' + one.workers.join(', ') + ')');
console.log('2 GPUs: ' + f(two.bytes_per_second) + ' bytes/s (' + two.workers.join(', ') + ')');
console.log('ratio : ' + (two.bytes_per_second / one.bytes_per_second).toFixed(3) + ' (target >= 1.8)');
console.log('bits/byte: ' + one.bits_per_byte.toFixed(6) + ' (1 GPU), ' + two.bits_per_byte.toFixed(6) +
  ' (2 GPUs), over ' + one.bytes + ' bytes in ' + one.documents + ' documents');
" | tee -a "$OUT/steps.txt"
step "done"
