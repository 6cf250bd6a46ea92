#!/usr/bin/env python3
"""ncu_stalls.py — the lines of a kernel's source page with the most warp stall samples, from
`ncu -i REPORT --page source --csv --print-source sass|cuda` (SASS lines or, with -lineinfo, CUDA
source lines): each line's share of all samples, its address or line number and its text, and with
--reasons its three largest stall reasons.

    python3 tools/device/ncu_stalls.py source.csv [--top N] [--reasons]
"""
import csv
import sys


def num(x):
    try:
        return float(x.replace(",", ""))
    except ValueError:
        return 0.0


def main(argv):
    path = argv[1]
    top = int(argv[argv.index("--top") + 1]) if "--top" in argv else 40
    reasons = "--reasons" in argv
    rows = list(csv.reader(open(path, errors="replace")))
    hi = next((i for i, r in enumerate(rows) if any("Warp Stall Sampling (All" in c for c in r)), None)
    if hi is None:
        print("no source page:", rows[:3])
        return
    h = rows[hi]
    ci = next(i for i, c in enumerate(h) if "Warp Stall Sampling (All" in c)
    si = next((i for i, c in enumerate(h) if c == "Source"), 1)
    why = [i for i, c in enumerate(h)
           if i != ci and "Sampling" not in c and (c.startswith("stall_") or "Stall" in c)]
    data = [r for r in rows[hi + 1:] if len(r) > ci]
    tot = sum(num(r[ci]) for r in data) or 1
    print(f"stall samples: {tot:.0f} in {len(data)} lines")
    for r in sorted(data, key=lambda r: -num(r[ci]))[:top]:
        line = f"{num(r[ci]) / tot * 100:5.1f}%  {r[0]:>8}  {r[si][:80]:80}"
        if reasons:
            big = sorted(((num(r[i]), h[i]) for i in why), reverse=True)[:3]
            line += "  " + ", ".join(f"{n} {v:.0f}" for v, n in big if v > 0)
        print(line.rstrip())


if __name__ == "__main__":
    main(sys.argv)
