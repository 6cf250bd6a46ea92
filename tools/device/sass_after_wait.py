#!/usr/bin/env python3
"""sass_after_wait.py — what a kernel runs right after its PDL wait (ACQBULK), from
`cuobjdump -sass` text on stdin: for each kernel whose mangled name matches the pattern, the
opcodes from the wait to its first barrier (or MAX of them), global loads marked `LDG*` and the
branches `BRA*`, and how many global loads are issued before the first instruction that uses one
of their results ("loads in flight"). Written to tell whether a row's loads go out together or one
element's at a time behind branches (docs/cuda_notes.md, the decoding norms' hoisted loads).

    cuobjdump -sass build-cuda/libmambabyte.so | python3 tools/device/sass_after_wait.py 'k_sum_add_norm'
    python3 tools/device/sass_after_wait.py sass.txt 'k_sum_add_norm' --max 200
"""
import argparse
import re
import sys

from sass_text import functions

OPCODE = re.compile(r"/\*[0-9a-f]{4,}\*/\s+(@!?U?P\w+\s+)?([A-Z][A-Z0-9_.]*)\s*([^;]*);")


def loads_before_first_use(body):
    """Global loads issued before an instruction reads a register one of them writes."""
    pending, count = set(), 0
    for op, args in body:
        regs = re.findall(r"\bR\d+\b", args)
        sources = regs if op.startswith("ST") else regs[1:]  # a store reads all its registers
        if any(r in pending for r in sources):
            return count
        if op.startswith("LDG"):
            pending.update(regs[:1])
            count += 1
    return count


def report(fn, lines, limit):
    ops = []
    for line in lines:
        m = OPCODE.search(line)
        if m:
            ops.append((m.group(2), m.group(3)))
    wait = next((i for i, (op, _) in enumerate(ops) if op.startswith("ACQBULK")), None)
    if wait is None:
        print(f"{fn}: no PDL wait")
        return
    body = []
    for op, args in ops[wait + 1:]:
        if op.startswith("BAR") or len(body) >= limit:
            break
        body.append((op, args))
    marked = [("*" + op) if op.startswith(("LDG", "BRA")) else op for op, _ in body]
    nld = sum(1 for op, _ in body if op.startswith("LDG"))
    nbra = sum(1 for op, _ in body if op.startswith("BRA"))
    print(f"{fn}: {len(body)} instructions to the first barrier, {nld} global loads, "
          f"{nbra} branches, {loads_before_first_use(body)} loads in flight before a first use")
    print("   ", " ".join(marked))


def main():
    ap = argparse.ArgumentParser(description="what kernels run after their PDL wait")
    ap.add_argument("args", nargs="+", metavar="[FILE] PATTERN",
                    help="cuobjdump -sass text (default: stdin), a regex of mangled names")
    ap.add_argument("--max", type=int, default=300, help="instructions shown at most")
    opt = ap.parse_args()
    if len(opt.args) > 2:
        ap.error("at most a file and a pattern")
    pattern = re.compile(opt.args[-1])
    src = open(opt.args[0], errors="replace") if len(opt.args) == 2 else sys.stdin
    for fn, lines in functions(src):
        if pattern.search(fn):
            report(fn, lines, opt.max)


if __name__ == "__main__":
    main()
