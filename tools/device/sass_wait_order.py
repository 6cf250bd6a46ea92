#!/usr/bin/env python3
"""sass_wait_order.py — which kernels issue read-only loads (LDG ... .CONSTANT, from __ldg or
ld.global.nc) before their PDL wait (ACQBULK, griddepcontrol.wait), from `cuobjdump -sass` text on
stdin. ptxas moves such loads across the wait (docs/cuda_notes.md): after it for weights asked for
early, and, in principle, before it for activations that earlier kernels write, which would read
stale values. Prints each kernel that has any before its first wait, with those lines, so that a
person can tell weights (fine) from activations (a bug).

    cuobjdump -sass build-cuda/libmambabyte.so | python3 tools/device/sass_wait_order.py
    python3 tools/device/sass_wait_order.py sass.txt
"""
import re
import sys

from sass_text import functions

READ_ONLY = re.compile(r"LDG\.E\S*CONSTANT")  # a read-only global load's opcode


def report(fn, lines):
    """Prints the kernel when it has read-only loads before its first wait; whether it did."""
    wait = next((i for i, l in enumerate(lines) if "ACQBULK" in l), None)
    if wait is None:
        return False
    early = [l.strip() for l in lines[:wait] if READ_ONLY.search(l)]
    late = sum(1 for l in lines[wait:] if READ_ONLY.search(l))
    if early:
        print(f"{fn}: {len(early)} read-only loads before the wait, {late} after")
        for l in early[:6]:
            print("   ", re.sub(r"\s*/\*[^*]*\*/\s*$", "", l)[:110])
    return bool(early)


def main():
    src = open(sys.argv[1], errors="replace") if len(sys.argv) > 1 else sys.stdin
    found = sum(report(fn, lines) for fn, lines in functions(src))
    print(f"{found} kernels with read-only loads before their wait")


if __name__ == "__main__":
    main()
