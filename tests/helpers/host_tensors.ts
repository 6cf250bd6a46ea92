/** Host-tensor helpers shared by the output-writer tests (tests/io_*_test.ts). */

import type { HostTensor } from "../../src/io/mod.ts";

/** A small LCG of uniforms in [-0.5, 0.5): the values the io tests' records are built from. */
function lcg(seed: number): () => number {
  let s = seed >>> 0;
  return () => {
    s = (s * 1664525 + 1013904223) >>> 0;
    return s / 2 ** 32 - 0.5;
  };
}

/** `n` floats from the LCG seeded with `seed`. */
export function randomF32(n: number, seed: number): Float32Array {
  return Float32Array.from({ length: n }, lcg(seed));
}

/** A tensor's bytes as lowercase hex, as Python's `bytes.hex()` prints them. */
export function hex(t: HostTensor): string {
  const b = new Uint8Array(t.data.buffer, t.data.byteOffset, t.data.byteLength);
  return Array.from(b, (x) => x.toString(16).padStart(2, "0")).join("");
}
