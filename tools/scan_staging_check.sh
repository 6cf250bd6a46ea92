#!/usr/bin/env bash
# scan_staging_check.sh — the tile scan's staging checked without a GPU (tests/scan_staging_test.ts
# runs it): scan_stage_pairs and scan_stage_bc_whole are taken out of csrc/cuda/scan.cu as it is
# and compiled for the host with g++ beside tools/scan_staging_check.cpp, whose cp_async4 records
# each copy. Prints "scan staging: ok (0 mismatches)" and exits 0 when every copy lands where pos()
# puts it; SCAN_CU=FILE checks another copy of scan.cu.   bash tools/scan_staging_check.sh
set -euo pipefail
cd "$(dirname "$0")/.."
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
python3 - "${SCAN_CU:-csrc/cuda/scan.cu}" "$tmp/staging.inc" <<'PY'
import sys
s = open(sys.argv[1]).read()
def block(start, end):  # from `start` to the end marker after it
    i = s.index(start)
    return s[i:s.index(end, i) + len(end)]
parts = [block("struct ScanArgs {", "};"),
         s[s.index("#define SCAN_TC 256"):s.index("/* Thread i of the block stages channel")],
         # scan_stage_pairs and the B and C copies of whole chunks, up to scan_stage
         s[s.index("template <int K>\n__device__ __forceinline__ void scan_stage_pairs"):
           s.index("/* Stages B, C (consecutive threads along a row's states)")]]
open(sys.argv[2], "w").write("\n".join(parts))
PY
g++ -O1 -std=c++17 -I"$tmp" -o "$tmp/check" tools/scan_staging_check.cpp
"$tmp/check"
