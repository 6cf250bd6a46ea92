#!/usr/bin/env bash
# train_spec.sh — the models of speculative decoding, trained on Tiny Shakespeare in one command
# on a GPU machine (PyTorch, the tokenizers library; no network), from the repository root:
#
#   bash tools/device/train_spec.sh <tinyshakespeare.txt> <outdir> [minutes]
#
# PARALLEL=1 trains them all at once, each capped at 0.9 x [minutes], with three more candidates
# for small in its shape instead of small_deep (batch 64; lr 1e-3 over 900 steps; dropout 0.35),
# and with EXTRA_DATA=<file> a fourth that also trains on that text (half of each batch; e.g. the
# King James Bible, tools/train/kjv_text.py): what tools/device/spec_train_bench.sh runs. train.py uses its CUDA scan (tools/train/scan_cuda.cu) on the GPU.
# Trains one after the other (tools/train/train.py; each with --max_minutes and
# --fit_steps_to_time, shares of [minutes], default 7):
#   1. small       448 x 6  (8.1M) in several recipes (the preset; lr 1e-3 over 900 steps; with
#                  PARALLEL=1 also batch 64 and dropout 0.35), with embedding dropout and
#                  an EMA of the weights scored beside them; the
#                  one with the better selection-split bits/byte becomes `small` (target: <= 2.2 on
#                  the held-out text; the held-out text is never used to choose);
#   2. target      384 x 24 (23M, bf16 47 MB): the byte-level target, clearly larger than small;
#   3. draft_bytes 256 x 2  (1.0M): the byte-level drafter, distilled from the target (train.py
#                  --teacher: it learns the target's next-byte distributions); with PARALLEL=1 also
#                  draft_bytes_ce, trained on the bytes alone, and the one that agrees more often
#                  with the target's most probable byte on the selection split becomes draft_bytes;
#   4. draft_subword 256 x 2 over a byte-level BPE of 2048 tokens trained on the training bytes
#                  (the tokenizers library), saved as a transformers MambaForCausalLM folder
#                  (config.json, model.safetensors, tokenizer.json); checked by loading it with
#                  transformers and comparing its logits with the training model's.
# Writes <outdir>/pretrained_models/ laid out as the repository's: small.{safetensors,json} and
# spec/{draft_bytes.{safetensors,json}, draft_subword/, target.json, target.safetensors}; copy
# it over the repository's pretrained_models/ (`cp -r <outdir>/pretrained_models/. pretrained_models/`).
# Files over 15.5 MiB (the target) are split into <name>.part-aa, -ab, ... for the trip back
# (rejoin: cat target.safetensors.part-* > target.safetensors); the target is not committed (the
# same command rebuilds it). Logs: <outdir>/logs.tar; a summary table is printed last.
set -u
DATA=${1:?usage: train_spec.sh <tinyshakespeare.txt> <outdir> [minutes]}
OUT=${2:?usage: train_spec.sh <tinyshakespeare.txt> <outdir> [minutes]}
MIN=${3:-7}
PY=${PYTHON:-python3}
EXTRA=${TRAIN_ARGS:-} # extra train.py flags for every run (tests: "--d_model 32 --steps 20 ...")
PM="$OUT/pretrained_models"
mkdir -p "$PM/spec" "$OUT/runs"
LOGS=$(mktemp -d)
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
T0=$(date +%s)
share() { awk "BEGIN{print $MIN*$1}"; }

{
  echo "== $(date -u +%FT%TZ) train_spec.sh $*"
  nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>&1 || true
  "$PY" -c "import sys, torch; print('python', sys.version.split()[0], '| torch', torch.__version__, '| gpu', torch.cuda.get_device_name(0) if torch.cuda.is_available() else None)"
  for m in tokenizers transformers safetensors; do
    "$PY" -c "import $m; print('$m', $m.__version__)" 2>&1 | tail -1
  done
} | tee "$LOGS/env.txt"

run() { # name preset minutes [flags...]
  local name=$1 preset=$2 min=$3
  shift 3
  echo "== $name ($preset, $min min)"
  "$PY" tools/train/train.py --preset "$preset" --data "$DATA" --out_dir "$OUT/runs" --name "$name" \
    --max_minutes "$min" --fit_steps_to_time "$@" $EXTRA >"$LOGS/$name.log" 2>&1
  local rc=$?
  grep -E "params=|ms/step:|held-out|best checkpoint|wrote|Error|error|Traceback" "$LOGS/$name.log" | tail -8
  echo "$name exit $rc"
  return $rc
}

# train.py's --teacher flag for the byte drafters: the target, when its run wrote one
teacher() { [ -f "$OUT/runs/target.safetensors" ] && echo "--teacher $OUT/runs/target.safetensors"; }

rc_all=0
if [ "${PARALLEL:-0}" = 1 ]; then
  # All at once on the one GPU, each capped at 0.9 x [minutes]: with the CUDA training scan
  # (tools/train/scan_cuda.cu) every run is short and mostly launch-bound, so the processes fill
  # each other's gaps. Four candidates for `small`, all of its 448 x 6 shape (the config id's):
  # the preset, batch 64, lr 1e-3 over 900 steps, more dropout; the selection split picks one.
  both() { local rc=0 p=(); for j in "$@"; do eval "$j" & p+=($!); done; for q in "${p[@]}"; do wait "$q" || rc=1; done; return $rc; }
  # The byte drafter is distilled from the target (train.py --teacher), so it trains after it: the
  # target gets 0.6 of the time, then two drafters side by side, one distilled and one on the bytes
  # alone (--distill_weight 0; both report their agreement with the target's most probable byte);
  # DRAFT_STEPS steps at most (default 4000: ~20 ms a step on the H200 beside the other runs; more
  # agreement than the preset's 1000, docs/performance.md), as many as fit their share.
  # Without a target (its run failed) the drafters still train, on the bytes alone.
  target_then_drafters() {
    local rc=0 steps="--steps ${DRAFT_STEPS:-4000}"
    run target target "$(share 0.6)" || rc=1
    local teach; teach=$(teacher)
    both 'run draft_bytes draft_bytes "$(share 0.3)" $teach $steps' \
      'run draft_bytes_ce draft_bytes "$(share 0.3)" $teach --distill_weight 0 $steps' || rc=1
    return $rc
  }
  both 'target_then_drafters' \
    'run draft_subword draft_subword "$(share 0.9)" --hf_out "$PM/spec/draft_subword"' \
    'run small small "$(share 0.9)"' 'run small_b64 small "$(share 0.9)" --batch_size 64' \
    'run small_lr1 small "$(share 0.9)" --lr 1e-3 --steps 900' \
    'run small_d035 small "$(share 0.9)" --dropout 0.35 --emb_dropout 0.2' \
    ${EXTRA_DATA:+'run small_extra small "$(share 0.9)" --extra_data "$EXTRA_DATA"'} || rc_all=1
else
  run small small "$(share 0.2)" || rc_all=1
  run small_lr1 small "$(share 0.2)" --lr 1e-3 --steps 900 || rc_all=1
  run target target "$(share 0.3)" || rc_all=1
  run draft_bytes draft_bytes "$(share 0.12)" $(teacher) || rc_all=1
  run draft_subword draft_subword "$(share 0.14)" --hf_out "$PM/spec/draft_subword" || rc_all=1
fi

echo "== choose small by the selection split; place the files"
"$PY" - "$OUT/runs" "$PM" <<'PYEOF'
import json, os, shutil, sys
runs, pm = sys.argv[1], sys.argv[2]
def log(name):
    p = os.path.join(runs, name + ".json")
    return json.load(open(p)) if os.path.exists(p) else None
# every candidate has small's 448 x 6 shape: configs/ names `small` with it, so a winner of another
# shape (e.g. the small_deep preset, 320 x 10) would not load by its id
SMALL = ("small", "small_b64", "small_lr1", "small_d035", "small_extra")
cands = [(log(n)["best_selection_bits_per_byte"], n) for n in SMALL if log(n)]
if cands:
    best = min(cands)[1]
    for n in SMALL:
        l = log(n)
        if l:
            print(f"  {n}: selection {l['best_selection_bits_per_byte']:.4f}, held-out {l['held_out_bits_per_byte']:.4f}"
                  f"{'  <- small' if n == best else ''}")
    shutil.copyfile(os.path.join(runs, best + ".safetensors"), os.path.join(pm, "small.safetensors"))
    shutil.copyfile(os.path.join(runs, best + ".json"), os.path.join(pm, "small.json"))
# the byte drafter: the candidate whose most probable byte agrees with the target's more often on
# the selection split (greedy drafts accepted); the other stays in runs/ for an A/B bench
drafts = [(-log(n).get("teacher_agreement_selection", 0.0), n) for n in ("draft_bytes", "draft_bytes_ce") if log(n)]
for a, n in sorted(drafts):
    l = log(n)
    print(f"  {n}: distill_weight {l.get('distill_weight')}, agreement with the target: selection {-a:.4f}, "
          f"held-out {l.get('teacher_agreement_held_out')}; held-out {l['held_out_bits_per_byte']:.4f} bits/byte"
          f"{'  <- draft_bytes' if (a, n) == min(drafts) else ''}")
place = {"target": "target"}
if drafts:
    place[min(drafts)[1]] = "draft_bytes"
    if len(drafts) > 1:
        with open(os.path.join(runs, "draft_bytes_runner_up.txt"), "w") as f:
            f.write(max(drafts)[1] + "\n")
for n, dest in place.items():
    for ext in (".safetensors", ".json"):
        p = os.path.join(runs, n + ext)
        if os.path.exists(p):
            shutil.copyfile(p, os.path.join(pm, "spec", dest + ext))
PYEOF

echo "== the subword drafter loads in transformers and gives the training model's logits"
"$PY" - "$PM/spec/draft_subword" <<'PYEOF' 2>&1 | grep -v Warning
import json, sys, os
sys.path.insert(0, "tools/train")
import torch
from safetensors.torch import load_file
from train import MambaLM, ModelArgs
d = sys.argv[1]
cfg = json.load(open(os.path.join(d, "config.json")))
try:
    from transformers import MambaForCausalLM
    hf = MambaForCausalLM.from_pretrained(d).float().eval()
except Exception as e:
    print("transformers could not load it:", e); sys.exit(0)
a = ModelArgs(d_model=cfg["hidden_size"], n_layer=cfg["num_hidden_layers"], vocab_size=cfg["vocab_size"],
              d_state=cfg["state_size"], d_conv=cfg["conv_kernel"], expand=cfg["expand"],
              dt_rank=cfg["time_step_rank"], norm="rmsnorm", tie=cfg["tie_word_embeddings"])
m = MambaLM(a).eval()
sd = {k.replace("backbone.embeddings.", "backbone.embedding."): v for k, v in load_file(os.path.join(d, "model.safetensors")).items()}
m.load_state_dict(sd, strict=False)
ids = torch.randint(0, cfg["vocab_size"], (1, 200))
with torch.no_grad():
    e = (hf(ids).logits - m(ids)).abs().max().item()
print(f"  max |logits(transformers) - logits(train.py)| = {e:.2e} ({'ok' if e < 1e-3 else 'MISMATCH'})")
PYEOF

tar -cf "$OUT/logs.tar" -C "$LOGS" .
find "$PM" -type f -size +15872k | while read -r f; do
  echo "splitting $f (over 15.5 MiB)"
  split -b 15M "$f" "$f.part-" && rm "$f"
done
echo "== summary ($(($(date +%s) - T0)) s)"
"$PY" - "$OUT/runs" <<'PYEOF'
import json, os, sys
print(f"{'model':14} {'params':>8} {'steps':>6} {'train s':>8} {'held-out bits/byte':>19}")
for n in ("small", "small_b64", "small_lr1", "small_d035", "small_extra", "target", "draft_bytes", "draft_bytes_ce",
          "draft_subword"):
    p = os.path.join(sys.argv[1], n + ".json")
    if os.path.exists(p):
        l = json.load(open(p))
        print(f"{n:14} {l['params']/1e6:7.2f}M {l['steps_done']:6} {l['train_seconds']:8.0f} {l['held_out_bits_per_byte']:19.4f}")
    elif n == "small_extra" and not os.environ.get("EXTRA_DATA"):
        print(f"{n:14} (not run: no EXTRA_DATA)")
    else:
        print(f"{n:14} (failed: see logs.tar)")
PYEOF
find "$PM" -type f -exec ls -la {} +
exit $rc_all
