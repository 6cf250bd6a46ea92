#!/usr/bin/env bash
# ncu_verify.sh — Nsight Compute on the first kernels of a verification pass
# (tools/profile_verify_cuda.ts --only verify: its first, direct pass) at the trained target's shape
# (384 x 24, fp32; SHAPE overrides), with warm caches and the GPU's own clocks (--cache-control none
# --clock-control none), one line a kernel (tools/device/ncu_table.py): what each of the pass's ops
# costs alone. GRAPH=step profiles the decoding step instead. NCU_N kernels (default 16: the
# embedding and two layers and a half).   OUT=$OUT bash tools/device/ncu_verify.sh
set -u -o pipefail
cd "$(dirname "$0")/../.."
OUT="${OUT:-$PWD/ncu_verify_out}"
mkdir -p "$OUT"
# shellcheck source=SCRIPTDIR/lib.sh
. tools/device/lib.sh
[ -f build-cuda/libmambabyte.so ] || build_cuda -DMAMBABYTE_TESTS=ON
setup_deno || { echo "no .gpu/deno.xz"; exit 1; }
g=${GRAPH:-verify}
step "ncu: $g (${SHAPE:---d_model 384 --n_layer 24 --dtype fp32})"
# shellcheck disable=SC2086
timeout "${NCU_T:-150}" ncu --launch-count "${NCU_N:-16}" --cache-control none --clock-control none \
  "${NCU_SECTIONS[@]}" deno run --cached-only --no-check -A tools/profile_verify_cuda.ts \
  ${SHAPE:---d_model 384 --n_layer 24 --dtype fp32} --only "$g" --replays 1 \
  >"$OUT/ncu_$g.log" 2>&1
python3 tools/device/ncu_table.py "$OUT/ncu_$g.log" || tail -20 "$OUT/ncu_$g.log"
