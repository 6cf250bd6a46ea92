#!/usr/bin/env bash
# probes.sh — the standalone device probes in one GPU call (no build of the library, no carry):
#   1. tools/device/mufu_rate.cu: the MUFU unit's ex2 rate an SM a clock, beside fp32 FMAs;
#   2. tools/device/batch_gemm_probe.cu: a 64-sequence batch's in_proj and out_proj from weights
#      tiled at load, against cuBLAS and the copy rate;
#   3. tools/device/dtproj_probe.cu: the forward's dt_proj as a kernel of our own, against cuBLAS;
#   4. tools/device/fused_inproj_probe.cu: a decoding batch's in_proj by tensor copies from the
#      row-major weights, alone and with the conv step and x_proj in its epilogue, against cuBLAS.
# Each is compiled, then run under PROBE_T seconds (default 120: a probe whose barriers never
# complete must not hold the call); each prints as it ends, logs in $OUT. PROBES names a subset.
#   OUT=$OUT bash tools/device/probes.sh
#   OUT=$OUT PROBES=fused_inproj_probe bash tools/device/probes.sh
set -u -o pipefail
cd "$(dirname "$0")/../.."
OUT="${OUT:-$PWD/probes_out}"
mkdir -p "$OUT"
# shellcheck source=SCRIPTDIR/lib.sh
. tools/device/lib.sh
nvidia-smi --query-gpu=name,clocks.max.sm --format=csv,noheader | head -1
for p in ${PROBES:-mufu_rate batch_gemm_probe dtproj_probe fused_inproj_probe}; do
  step "$p"
  # the binaries outside $OUT, whose files come back from the device
  if nvcc -O3 -arch=sm_90 -Itools/device -o "/tmp/$p" "tools/device/$p.cu" -lcublas \
    >"$OUT/${p}_build.log" 2>&1; then
    timeout "${PROBE_T:-120}" "/tmp/$p" 2>&1 | tee "$OUT/$p.log" || fail
  else
    tail -20 "$OUT/${p}_build.log"
    fail
  fi
done
exit $status
