#!/usr/bin/env bash
# The Python jobs for the GPU machine, in one command (run from the repository root):
#
#   bash tools/device/python_jobs.sh <path-to-tinyshakespeare.txt> <outdir> [train-minutes]
#
# 1. versions (nvidia-smi, python, torch, transformers, safetensors, numpy);
# 2. the train.py self test on the GPU (scan vs sequential definition, float64);
# 3. tools/fixtures/make_fixtures.py (CPU, float64) -> tests/fixtures and <outdir>/fixtures.tar, in the
#    background, while
# 4. `tiny` then `small` train on the GPU, one after the other (two processes on one GPU only
#    time-slice it: measured, running them at once is no faster than in turn), with --max_minutes
#    25% / 75% of [train-minutes] (default 5.5) and --fit_steps_to_time. Measured on the H200: whole
#    script 218 s (tiny 56 s, small 135 s at 700 steps; the presets stop well before the budget).
# Whole script: about train-minutes + 0.7 minutes. Outputs in <outdir> (6 files): fixtures.tar,
# mambabyte_{tiny,small}_shakespeare.{safetensors,json}, logs.tar. Files the GPU machine can send back
# are limited to 16 MiB each: anything larger is split into <name>.part-aa, -ab, ... (cat to rejoin).
set -u
DATA=${1:?usage: python_jobs.sh <tinyshakespeare.txt> <outdir> [train-minutes]}
OUT=${2:?usage: python_jobs.sh <tinyshakespeare.txt> <outdir> [train-minutes]}
MIN=${3:-5.5}
PY=${PYTHON:-python3}
EXTRA=${TRAIN_ARGS:-}   # extra train.py flags for both runs (tests: "--d_model 32 --steps 20 ...")
MIN_TINY=$(awk "BEGIN{print $MIN*0.25}")
MIN_SMALL=$(awk "BEGIN{print $MIN*0.75}")
mkdir -p "$OUT"
LOGS=$(mktemp -d)
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
T0=$(date +%s)

{
  echo "== $(date -u +%FT%TZ) python_jobs.sh $*"
  nvidia-smi --query-gpu=name,driver_version,memory.total,memory.used --format=csv 2>&1 || echo "nvidia-smi failed"
  "$PY" - <<'PYEOF' 2>&1
import sys, torch
print("python", sys.version.split()[0], "| torch", torch.__version__, "| cuda", torch.version.cuda,
      "| gpu", torch.cuda.get_device_name(0) if torch.cuda.is_available() else None)
for mod in ("transformers", "safetensors", "numpy"):
    try:
        print(mod, __import__(mod).__version__)
    except Exception as e:
        print(mod, "unavailable:", e)
PYEOF
} | tee "$LOGS/env.txt"

echo "== train.py --self_test"
"$PY" tools/train/train.py --self_test 2>&1 | grep -v Warning | tee "$LOGS/self_test.log"

echo "== fixtures in the background; tiny (${MIN_TINY} min) then small (${MIN_SMALL} min)"
( "$PY" tools/fixtures/make_fixtures.py --out tests/fixtures > "$LOGS/fixtures.log" 2>&1
  rc=$?
  tar -cf "$OUT/fixtures.tar" -C tests fixtures
  echo "fixtures exit $rc" >> "$LOGS/fixtures.log"; exit $rc ) &
PF=$!
"$PY" tools/train/train.py --preset tiny --data "$DATA" --out_dir "$OUT" --max_minutes "$MIN_TINY" \
  --fit_steps_to_time $EXTRA > "$LOGS/tiny.log" 2>&1
RT=$?
"$PY" tools/train/train.py --preset small --data "$DATA" --out_dir "$OUT" --max_minutes "$MIN_SMALL" \
  --fit_steps_to_time $EXTRA > "$LOGS/small.log" 2>&1
RS=$?
wait $PF; RF=$?

echo "== fixtures (exit $RF)"; grep -vE "^\s+\S+\s+[0-9]+ bytes|shards" "$LOGS/fixtures.log"
PAT="params=|ms/step:|step [0-9]+00/|held-out|wrote|max_minutes|Error|error|Traceback"
echo "== tiny (exit $RT)"; grep -E "$PAT" "$LOGS/tiny.log" | tail -30
echo "== small (exit $RS)"; grep -E "$PAT" "$LOGS/small.log" | tail -30
tar -cf "$OUT/logs.tar" -C "$LOGS" .
for f in "$OUT"/*; do
  if [ -f "$f" ] && [ "$(stat -c %s "$f")" -gt 16252928 ]; then
    echo "splitting $f (over 15.5 MiB)"; split -b 15M "$f" "$f.part-" && rm "$f"
  fi
done
echo "== outputs ($(( $(date +%s) - T0 ))s total)"; ls -la "$OUT"
echo "exit codes: fixtures=$RF tiny=$RT small=$RS"
[ "$RF" = 0 ] && [ "$RT" = 0 ] && [ "$RS" = 0 ]
