#!/usr/bin/env bash
# scan_trim_staging_check.sh — runs scan_trim_staging_check.cpp on this machine (no GPU): the
# patch applied to a copy of csrc/cuda/scan.cu, its staging functions extracted and compiled for the
# host with g++.   bash tools/device/pending/scan_trim_staging_check.sh
set -euo pipefail
cd "$(dirname "$0")/../../.."
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
git archive HEAD csrc/cuda/scan.cu | tar -x -C "$tmp"
(cd "$tmp" && git apply --include=csrc/cuda/scan.cu "$OLDPWD/tools/device/pending/scan_trim.patch")
python3 - "$tmp/csrc/cuda/scan.cu" "$tmp/staging.inc" <<'PY'
import sys
s = open(sys.argv[1]).read()
def block(start, end):  # from `start` to the end marker after it
    i = s.index(start)
    return s[i:s.index(end, i) + len(end)]
parts = [block("struct ScanArgs {", "};"),
         s[s.index("#define SCAN_TC 256"):s.index("/* Thread i of the block stages channel")],
         block("template <int K>\n__device__ __forceinline__ void scan_stage_pairs", "\n}\n"),
         block("/* B and C of a whole chunk with n == NMAX", "\n}\n")]
open(sys.argv[2], "w").write("\n".join(parts))
PY
g++ -O1 -std=c++17 -I"$tmp" -o "$tmp/check" tools/device/pending/scan_trim_staging_check.cpp
"$tmp/check"
