#!/usr/bin/env python3
"""san_sum.py — a compute-sanitizer log of cuda_vs_cpu summarised: each distinct error (its kind,
kernel and offset) once, with how often it was reported and the test case printed last before
its first report (the sanitizer's lines and the test's rows share the log, so that is the case
running then, or the one just before it). Used by tools/device/sanitize_all.sh; run with
`--print-limit` large enough that the log holds every report.

    python3 san_sum.py LOG [TOP]
"""

import re
import sys

ERROR = re.compile(r"^=========\s+(Uninitialized .*|Invalid .*|Barrier error.*|Race .*|"
                   r"Error: .*|Warning: .*|Program hit .*)$")
AT = re.compile(r"^=========\s+at (?:void )?(.+)(\+0x[0-9a-f]+)\s*$")
ROW = re.compile(r"^(\S+)\s{2,}(.+?)\s{2,}\S+\s+[-0-9.e+]+\s+[-0-9.e+]+\s+(ok|FAIL)")


def kernel_name(sig):
    """a kernel's signature without its parameter list (the last balanced parentheses; template
    arguments such as (int)8 stay)"""
    sig = sig.strip()
    if not sig.endswith(")"):
        return sig
    depth = 0
    for i in range(len(sig) - 1, -1, -1):
        depth += {")": 1, "(": -1}.get(sig[i], 0)
        if depth == 0:
            return sig[:i]
    return sig


def summarise(lines):
    """(kind, kernel, offset) -> [count, first case] in the order first seen"""
    seen = {}
    case = "(before the first case)"
    kind = None
    for line in lines:
        line = line.rstrip("\n")
        row = ROW.match(line)
        if row:
            case = f"{row.group(1)} {row.group(2)}"
            continue
        err = ERROR.match(line)
        if err:
            kind = re.sub(r"\s+of size \d+ bytes", "", err.group(1)).strip()
            continue
        at = AT.match(line)
        if at and kind is not None:
            key = (kind, kernel_name(at.group(1)), at.group(2))
            if key not in seen:
                seen[key] = [0, case]
            seen[key][0] += 1
            kind = None
    return seen


def main():
    if len(sys.argv) < 2:
        print("usage: san_sum.py LOG [TOP]", file=sys.stderr)
        sys.exit(2)
    top = int(sys.argv[2]) if len(sys.argv) > 2 else 40
    with open(sys.argv[1], errors="replace") as f:
        seen = summarise(f)
    print(f"{len(seen)} distinct reports")
    for (kind, kernel, off), (count, case) in list(seen.items())[:top]:
        print(f"{count:7d}  {kind} | {kernel}{off} | first during: {case}")


if __name__ == "__main__":
    main()
