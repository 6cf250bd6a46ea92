#!/usr/bin/env python3
"""ncu_groups.py — where a kernel's instructions go, from its SASS source page
(`ncu -i REPORT --page source --csv --print-source sass`): SASS lines grouped by how many times
each ran (the lines of one loop body or one once-a-warp prologue run equally often), each group's
instruction count, its share of all warp instructions and of all stall samples, and its most
frequent opcodes. A prologue every warp runs once shows up as a group whose count is the number of
warps launched; a row loop's body as a group whose count is the number of rows. Where the kernel has
a PDL wait (ACQBULK, griddepcontrol.wait), the instructions and samples before and after its first
one: what runs after it is the part of the kernel on the step's critical path.

    python3 tools/device/ncu_groups.py source.csv [--top N]
"""
import csv
import os
import sys
from collections import Counter, defaultdict

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from ncu_stalls import num  # noqa: E402  (the same page's number cells)


def main(argv):
    top = int(argv[argv.index("--top") + 1]) if "--top" in argv else 8
    rows = list(csv.reader(open(argv[1], errors="replace")))
    hi = next((i for i, r in enumerate(rows) if "Instructions Executed" in r), None)
    if hi is None:
        print("no source page:", rows[:3])
        return
    h = rows[hi]
    isrc, iex = h.index("Source"), h.index("Instructions Executed")
    ism = next(i for i, c in enumerate(h) if "Warp Stall Sampling (All" in c)
    groups = defaultdict(lambda: [0, 0, Counter()])  # count -> [lines, samples, opcodes]
    total_i = total_s = 0
    wait_seen, after = False, [0, 0]  # [instructions, samples] from the first wait on
    for r in rows[hi + 1:]:
        if len(r) <= max(isrc, iex, ism):
            continue
        n, s = int(num(r[iex])), int(num(r[ism]))
        t = r[isrc].split()
        if not t or n == 0:
            continue
        op = t[1] if t[0].startswith("@") and len(t) > 1 else t[0]
        wait_seen = wait_seen or op == "ACQBULK"
        if wait_seen:
            after[0] += n
            after[1] += s
        g = groups[n]
        g[0] += 1
        g[1] += s
        g[2][op] += 1
        total_i += n
        total_s += s
    print(f"{total_i:,} warp instructions, {total_s:,} stall samples")
    ranked = sorted(groups.items(), key=lambda kv: -(kv[0] * kv[1][0]))
    for n, (lines, s, ops) in ranked[:top]:
        common = " ".join(f"{o} {c}" for o, c in ops.most_common(6))
        print(f"  ran {n:>7,} x {lines:>4} lines = {n * lines:>10,} ({100 * n * lines / total_i:4.1f}%),"
              f" samples {100 * s / max(total_s, 1):4.1f}%: {common}")
    if wait_seen:
        print(f"  after the PDL wait: {after[0]:,} warp instructions ({100 * after[0] / max(total_i, 1):.1f}%),"
              f" {100 * after[1] / max(total_s, 1):.1f}% of the samples")


if __name__ == "__main__":
    main(sys.argv)
