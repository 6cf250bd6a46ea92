#!/usr/bin/env python3
"""ncu_table.py — one line per kernel from Nsight Compute's text report (`ncu --section ...`,
default page): the kernel, its launch shape and registers, duration, DRAM and memory throughput,
occupancy and the scheduler's issue figures, in launch order.

    python3 tools/device/ncu_table.py ncu.log [more.log ...]

Sections it reads when present: SpeedOfLight, MemoryWorkloadAnalysis, Occupancy, SchedulerStats,
WarpStateStats, LaunchStats. A metric a section did not report prints as "-".
"""
import re
import sys

# (column, metric name as ncu prints it, unit that must follow, or None for any)
COLUMNS = [
    ("us", "Duration", None),
    ("DRAM%", "DRAM Throughput", "%"),
    ("GB/s", "Memory Throughput", "Gbyte/s"),
    ("occ%", "Achieved Occupancy", "%"),
    ("warps/sch", "Active Warps Per Scheduler", None),
    ("elig/sch", "Eligible Warps Per Scheduler", None),
    ("issue/sch", "Issued Warp Per Scheduler", None),
    ("cyc/instr", "Warp Cycles Per Issued Instruction", None),
    ("regs", "Registers Per Thread", None),
    ("smem KB", "Dynamic Shared Memory Per Block", None),
]
# a kernel's header: "  name(args) (gx, gy, gz)x(bx, by, bz), Context 1, Stream 13, ..."
HEADER = re.compile(r"^\s{2}(\S.*?) \((\d+), (\d+), (\d+)\)x\((\d+), (\d+), (\d+)\), Context")
METRIC = re.compile(r"^\s{4}(\S.*?)\s{2,}(\S+)?\s+([-\d.,]+)\s*$")


def short_name(sig: str) -> str:
    """The kernel's name without its parameter list (templates kept), at most 48 characters."""
    depth, cut = 0, len(sig)
    for i, ch in enumerate(sig):
        if ch == "<":
            depth += 1
        elif ch == ">":
            depth -= 1
        elif ch == "(" and depth == 0:
            cut = i
            break
    name = sig[:cut]
    if name.startswith("void "):
        name = name[5:]
    return name if len(name) <= 48 else name[:45] + "..."


def parse(text: str):
    kernels = []
    cur = None
    for line in text.splitlines():
        h = HEADER.match(line)
        if h:
            cur = {
                "name": short_name(h.group(1)),
                "grid": "x".join(g for g in h.group(2, 3, 4)),
                "block": "x".join(b for b in h.group(5, 6, 7)),
            }
            kernels.append(cur)
            continue
        if cur is None:
            continue
        m = METRIC.match(line)
        if not m:
            continue
        name, unit, value = m.group(1).strip(), (m.group(2) or "").strip(), m.group(3)
        for col, metric, want_unit in COLUMNS:
            if name == metric and (want_unit is None or unit == want_unit) and col not in cur:
                cur[col] = value.replace(",", "")
                if col == "us" and unit == "ms":
                    cur[col] = f"{float(cur[col]) * 1000:.2f}"
                elif col == "us" and unit == "ns":
                    cur[col] = f"{float(cur[col]) / 1000:.2f}"
    return kernels


def main(paths) -> int:
    rows = []
    for p in paths:
        with open(p, encoding="utf-8", errors="replace") as f:
            rows.extend(parse(f.read()))
    if not rows:
        print("ncu_table: no kernels found")
        return 1
    head = ["#", "kernel", "grid", "block"] + [c for c, _, _ in COLUMNS]
    table = [head] + [
        [str(i), k["name"], k["grid"], k["block"]] + [k.get(c, "-") for c, _, _ in COLUMNS]
        for i, k in enumerate(rows)
    ]
    widths = [max(len(r[j]) for r in table) for j in range(len(head))]
    for r in table:
        print("  ".join(v.ljust(widths[j]) if j < 2 else v.rjust(widths[j]) for j, v in enumerate(r)))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
