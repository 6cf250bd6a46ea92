#!/usr/bin/env bash
# train_scan_check.sh — the training scan's CUDA kernels (tools/train/scan_cuda.cu) on a GPU
# machine in one call, from the repository root, with .gpu/tinyshakespeare.txt or its .xz (carried):
#   1. python3 tools/train/train.py --self_test: the kernels against the float64 sequential
#      definition, values and every gradient (and the rest of train.py's self test);
#   2. tools/train/bench_scan.py at the target's shape: the chunked PyTorch scan and the kernels,
#      forward + backward, in the same run;
#   3. 40 steps of the `target` preset with each scan: ms a step (the training script's own log).
# Then, when MERGE=1, tools/device/merge_check.sh with the same $OUT.
set -u -o pipefail
cd "$(dirname "$0")/../.."
OUT="${OUT:-$PWD/train_scan_out}"
# shellcheck source=SCRIPTDIR/lib.sh
. tools/device/lib.sh # unpack_corpus
unpack_corpus
DATA="${DATA:-.gpu/tinyshakespeare.txt}"
mkdir -p "$OUT"
export MB_TRAIN_CACHE="${MB_TRAIN_CACHE:-$(mktemp -d)}" PYTHONUNBUFFERED=1
rc=0
echo "== train.py --self_test ($(date -u +%T))"
python3 tools/train/train.py --self_test 2>&1 | tee "$OUT/train_self_test.log" | grep -vE "^  ok " || true
grep -q "PASSED" "$OUT/train_self_test.log" || rc=1
echo "== bench_scan.py ($(date -u +%T))"
timeout 120 python3 tools/train/bench_scan.py --b 32 --l 512 --di 768 --chunk 32 2>&1 | tail -4 || rc=1
if [ -f "$DATA" ]; then
  W=$(mktemp -d)
  for scan in cuda chunked; do
    echo "== target preset, 40 steps, --scan $scan ($(date -u +%T))"
    timeout 150 python3 tools/train/train.py --preset target --data "$DATA" --out_dir "$W" --name "t_$scan" \
      --steps 40 --warmup 5 --eval_every 20 --eval_limit 8192 --log_every 20 --scan "$scan" 2>&1 |
      grep -E "ms/step|held-out|Error|error" | tail -4 || rc=1
  done
else
  echo "no $DATA: the training runs are skipped"
fi
echo "train_scan_check: exit $rc"
if [ "${MERGE:-0}" = 1 ]; then
  OUT="$OUT" bash tools/device/merge_check.sh || rc=1
fi
exit $rc
