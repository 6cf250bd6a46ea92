/**
 * Byte-level mutations for the fuzz cases: bit flips, truncation, insertions and deletions,
 * duplicated chunks, and "interesting" integers (0, -1, 2^31, 2^32 - 1, 2^63 ...) written over
 * length and offset fields, preferably next to a zip signature where those fields live.
 *
 * @module
 */

import type { Rng } from "./rng.ts";

/** Integers that break length and offset arithmetic. */
const INTERESTING: readonly bigint[] = [
  0n,
  1n,
  0x7fn,
  0x80n,
  0xffn,
  0x7fffn,
  0xffffn,
  0x10000n,
  0x7fffffffn,
  0x80000000n,
  0xffffffffn,
  0x100000000n,
  0x1fffffffffffffn,
  0x20000000000000n,
  0x7fffffffffffffffn,
  0xffffffffffffffffn,
];

function writeLE(out: Uint8Array, at: number, v: bigint, width: number): void {
  for (let i = 0; i < width && at + i < out.length; i++) {
    out[at + i] = Number((v >> BigInt(8 * i)) & 0xffn);
  }
}

/** Offsets of "PK" signatures (zip headers), where mutations of fields matter most. */
function signatures(data: Uint8Array): number[] {
  const at: number[] = [];
  for (let i = 0; i + 3 < data.length && at.length < 4096; i++) {
    if (data[i] === 0x50 && data[i + 1] === 0x4b && data[i + 2] < 8 && data[i + 3] < 9) at.push(i);
  }
  return at;
}

type Mutator = (rng: Rng, d: Uint8Array) => Uint8Array;

const MUTATORS: Record<string, Mutator> = {
  bitflip(rng, d) {
    const out = d.slice();
    for (let k = rng.range(1, 8); k > 0 && out.length > 0; k--) {
      out[rng.int(out.length)] ^= 1 << rng.int(8);
    }
    return out;
  },
  byte(rng, d) {
    const out = d.slice();
    if (out.length) out[rng.int(out.length)] = rng.pick([0, 0xff, 0x7f, 0x80, rng.int(256)]);
    return out;
  },
  truncate(rng, d) {
    return d.slice(0, rng.int(d.length + 1));
  },
  extend(rng, d) {
    const out = new Uint8Array(d.length + rng.size(4096));
    out.set(d);
    out.set(rng.bytes(out.length - d.length), d.length);
    return out;
  },
  insert(rng, d) {
    const at = rng.int(d.length + 1);
    const ins = rng.bytes(rng.size(256));
    return Uint8Array.from([...d.subarray(0, at), ...ins, ...d.subarray(at)]);
  },
  delete(rng, d) {
    const at = rng.int(d.length + 1);
    const n = rng.size(256);
    return Uint8Array.from([...d.subarray(0, at), ...d.subarray(at + n)]);
  },
  duplicate(rng, d) {
    if (d.length === 0) return d;
    const from = rng.int(d.length);
    const n = Math.min(rng.size(1024), d.length - from);
    const at = rng.int(d.length + 1);
    return Uint8Array.from([
      ...d.subarray(0, at),
      ...d.subarray(from, from + n),
      ...d.subarray(at),
    ]);
  },
  interesting(rng, d) {
    const out = d.slice();
    if (out.length === 0) return out;
    const sigs = signatures(out);
    const at = sigs.length && rng.chance(0.7) ? rng.pick(sigs) + rng.int(46) : rng.int(out.length);
    writeLE(out, at, rng.pick(INTERESTING), rng.pick([1, 2, 4, 8]));
    return out;
  },
  fill(rng, d) {
    const out = d.slice();
    const at = rng.int(out.length + 1);
    out.fill(rng.pick([0, 0xff, 0x20, 0x7b]), at, at + rng.size(512));
    return out;
  },
};

/** Applies 1-4 random mutations; returns the bytes and the mutations' names. */
export function mutateBytes(rng: Rng, data: Uint8Array): { data: Uint8Array; ops: string[] } {
  const ops: string[] = [];
  let d = data;
  for (let k = rng.range(1, 4); k > 0; k--) {
    const name = rng.pick(Object.keys(MUTATORS));
    d = MUTATORS[name](rng, d);
    ops.push(name);
  }
  return { data: d, ops };
}

/** Applies text mutations to a string (line and token level), for YAML and JSON. */
export function mutateText(rng: Rng, text: string, tokens: readonly string[]): string {
  let lines = text.split("\n");
  for (let k = rng.range(1, 4); k > 0; k--) {
    const i = rng.int(lines.length);
    switch (rng.int(6)) {
      case 0:
        lines.splice(i, 1);
        break;
      case 1:
        lines.splice(i, 0, lines[rng.int(lines.length)] ?? "");
        break;
      case 2:
        lines[i] = " ".repeat(rng.int(6)) + (lines[i] ?? "").trimStart();
        break;
      case 3: {
        const line = lines[i] ?? "";
        const colon = line.indexOf(":");
        lines[i] = colon >= 0
          ? `${line.slice(0, colon + 1)} ${rng.pick(tokens)}`
          : `${line}${rng.pick(tokens)}`;
        break;
      }
      case 4:
        lines.splice(i, 0, `${rng.pick(["a", "model", "general", "x_y"])}: ${rng.pick(tokens)}`);
        break;
      default: {
        const s = lines[i] ?? "";
        const at = rng.int(s.length + 1);
        lines[i] = s.slice(0, at) + String.fromCharCode(rng.int(0x3000)) + s.slice(at + 1);
      }
    }
    if (lines.length === 0) lines = [""];
  }
  return lines.join("\n");
}
