#!/usr/bin/env bash
# sass_local.sh — the SASS of one of our CUDA sources, on a machine without a GPU or cuobjdump.
#
#   bash tools/sass_local.sh csrc/cuda/scan.cu [KERNEL_SUBSTRING]
#
# nvcc 13 compiles the source to an sm_90 cubin (MB_WITH_CUDA defined as in the library's build,
# and cuBLAS's headers from tools/device/cublas_stub, so gemm.cu and blas_lt.cu compile too);
# Debian's nvidia-cuda-toolkit (11.8, non-free, fetched once into ~/.cache/mb-nvdisasm without
# installing it) disassembles it. CUDA 13 writes a
# newer ELF header (OS ABI 0x41, ABI version 8, the SM in e_flags' second byte), which 11.8's
# nvdisasm refuses, so the header is rewritten to the older form first; the code sections are
# unchanged, and instruction counts match cuobjdump's on the GPU machine. Prints, per kernel whose
# mangled name contains KERNEL_SUBSTRING, the static opcode counts with ptxas's registers and
# spills; the full text is left in /tmp/mb-sass/<source>.sass.
set -euo pipefail
src=${1:?usage: sass_local.sh SOURCE.cu [KERNEL_SUBSTRING]}
pick=${2:-}
root=$(cd "$(dirname "$0")/.." && pwd)
cache=${MB_NVDISASM_CACHE:-$HOME/.cache/mb-nvdisasm}
nvdisasm=$cache/usr/bin/nvdisasm
if [ ! -x "$nvdisasm" ]; then
  mkdir -p "$cache/lists/partial"
  echo "deb http://deb.debian.org/debian bookworm non-free" >"$cache/sources.list"
  o=(-oDir::Etc::SourceList="$cache/sources.list" -oDir::Etc::SourceParts=/dev/null
    -oDir::State::Lists="$cache/lists" -oDebug::NoDropPrivs=1)
  apt-get "${o[@]}" update >/dev/null
  (cd "$cache" && apt-get "${o[@]}" download nvidia-cuda-toolkit >/dev/null &&
    dpkg -x nvidia-cuda-toolkit_*.deb . && rm -f nvidia-cuda-toolkit_*.deb)
fi
out=/tmp/mb-sass
mkdir -p "$out"
base=$(basename "$src" .cu)
nvcc -arch=sm_90 -O3 -cubin -DMB_WITH_CUDA -I"$root/tools/device/cublas_stub" -I"$root/csrc/include" -I"$root/csrc" -I"$root/csrc/cuda" \
  -Xptxas -v -o "$out/$base.cubin" "$src" 2>"$out/$base.ptxas.log" || {
  cat "$out/$base.ptxas.log" >&2
  exit 1
}
python3 - "$out/$base.cubin" "$out/$base.old.cubin" <<'EOF'
import struct, sys
d = bytearray(open(sys.argv[1], "rb").read())
if d[7] == 0x41:  # CUDA 13's header: OS ABI 0x41, ABI 8, the SM in bits 8-15 of e_flags
    sm = (struct.unpack_from("<I", d, 48)[0] >> 8) & 0xFF
    d[7], d[8] = 0x33, 7
    struct.pack_into("<I", d, 48, sm | 0x500 | (sm << 16))  # 64-bit addresses, SM and virtual SM
open(sys.argv[2], "wb").write(d)
EOF
"$nvdisasm" -c "$out/$base.old.cubin" >"$out/$base.sass"
python3 - "$out/$base.sass" "$pick" "$out/$base.ptxas.log" <<'EOF'
import collections, re, sys
text, pick = open(sys.argv[1]).read().splitlines(), sys.argv[2]
# ptxas -v: each entry's registers and spills, printed beside its opcode counts
regs, entry = {}, None
for line in open(sys.argv[3]):
    m = re.search(r"Compiling entry function '(\S+)'", line)
    if m:
        entry = m.group(1)
    m = re.search(r"(\d+) bytes spill stores, (\d+) bytes spill loads", line)
    if m and entry:
        regs.setdefault(entry, {})["spill"] = f"{m.group(1)}/{m.group(2)} bytes spilled"
    m = re.search(r"Used (\d+) registers", line)
    if m and entry:
        regs.setdefault(entry, {})["regs"] = f"{m.group(1)} registers"
inst = re.compile(r"/\*[0-9a-f]{4,}\*/\s+(@!?U?P\w+\s+)?([A-Z][A-Z0-9_]*)")
name, counts = None, None
def show():
    if name and pick in name:
        total = sum(counts.values())
        top = " ".join(f"{k} {v}" for k, v in counts.most_common(14))
        r = regs.get(name, {})
        extra = ", ".join(v for v in (r.get("regs"), r.get("spill")) if v)
        print(f"{name}: {total} instructions" + (f" ({extra})" if extra else "") + f"\n  {top}")
for line in text:
    m = re.match(r"//-+ \.text\.(\S+) -+", line)
    if m:
        show()
        name, counts = m.group(1), collections.Counter()
        continue
    m = inst.search(line)
    if m and counts is not None:
        counts[m.group(2)] += 1
show()
EOF
