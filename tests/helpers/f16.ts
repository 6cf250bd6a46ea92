/**
 * fp16 bits read independently of the library (the tests' reference of its scaled fp16 rows).
 *
 * @module
 */

/** fp16 bits -> the value they stand for (exact). */
export function fromF16(h: number): number {
  const s = h & 0x8000 ? -1 : 1, e = (h >> 10) & 0x1f, m = h & 0x3ff;
  if (e === 0x1f) return m ? NaN : s * Infinity;
  return s * (e === 0 ? m * 2 ** -24 : (1024 + m) * 2 ** (e - 25));
}
