"""phase_sum.py — summarises the phase stamps of tools/device/pending/phase_timing.patch.

With that patch applied and MB_PHASE_TIMING set, k_conv_linear prints one line a launch for blocks
0, G/2 and G-1 ("CXL n=... blk=... pre=... wait=... conv=... mma=... gsync=... red=...") and
k_ssu_dt_rows one for three blocks ("SSUR batch=... bx=... by=... pre=... load=..."): thread 0's
clock64() cycles in each phase. Reads those lines on stdin (other lines are ignored) and prints, per
kernel and block, the number of lines and each phase's median:

  MB_PHASE_TIMING=1 ./build-cuda/cuda_bench --ncu-step 64 2>&1 | python3 tools/device/phase_sum.py
"""
import re
import statistics
import sys

KEYS = ("n", "blk", "batch", "bx", "by")  # what names a block's line, not a phase
rows = {}
for line in sys.stdin:
    m = re.match(r"(CXL|SSUR) (.*)", line.strip())
    if not m:
        continue
    kv = dict(x.split("=") for x in m.group(2).split())
    key = (m.group(1),) + tuple(f"{k}={v}" for k, v in kv.items() if k in KEYS)
    rows.setdefault(key, []).append({k: int(v) for k, v in kv.items()})
for key, lines in sorted(rows.items()):
    phases = [k for k in lines[0] if k not in KEYS]
    medians = " ".join(f"{p}={statistics.median(r[p] for r in lines):.0f}" for p in phases)
    print(" ".join(key), len(lines), medians)
