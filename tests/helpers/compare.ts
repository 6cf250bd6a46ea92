/** Numeric comparison helpers for tests. */

/** max |a - b| / max |b| (0 when both are all zeros); lengths must match. */
export function maxRelError(a: ArrayLike<number>, b: ArrayLike<number>): number {
  if (a.length !== b.length) throw new Error(`length ${a.length} != ${b.length}`);
  let diff = 0;
  let scale = 0;
  for (let i = 0; i < a.length; i++) {
    const d = Math.abs(a[i] - b[i]);
    if (!(d <= diff)) diff = d; // also catches NaN
    scale = Math.max(scale, Math.abs(b[i]));
  }
  if (Number.isNaN(diff)) return Infinity;
  return scale === 0 ? diff : diff / scale;
}

/**
 * The first index where a and b differ (bits, as Object.is: NaN equals NaN), or -1; a length
 * mismatch differs at the shorter length. For large arrays, where a failing assert.deepEqual spends
 * minutes writing its diff.
 */
export function firstDifference(a: ArrayLike<number>, b: ArrayLike<number>): number {
  const n = Math.min(a.length, b.length);
  for (let i = 0; i < n; i++) if (!Object.is(a[i], b[i])) return i;
  return a.length === b.length ? -1 : n;
}

/** mulberry32: a small seeded PRNG of uniforms in [0, 1), the one every test draws from. */
export function mulberry32(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** `n` seeded uniforms in [-scale, scale) ({@link mulberry32}) for test inputs. */
export function randomFloats(n: number, seed: number, scale = 1): Float32Array {
  const next = mulberry32(seed);
  const out = new Float32Array(n);
  for (let i = 0; i < n; i++) out[i] = (next() * 2 - 1) * scale;
  return out;
}

/** The default seed of the random kernel tests; MB_TEST_SEED overrides it. */
export const DEFAULT_TEST_SEED = 4740;

/**
 * The seed of the random kernel tests: MB_TEST_SEED when set (an integer), else
 * {@link DEFAULT_TEST_SEED}; printed, so a failure can be rerun with the same inputs.
 */
export function testSeed(): number {
  const env = Deno.env.get("MB_TEST_SEED");
  const seed = env === undefined || env === "" ? DEFAULT_TEST_SEED : Number(env);
  if (!Number.isSafeInteger(seed)) throw new Error(`MB_TEST_SEED must be an integer (got ${env})`);
  console.log(`random test inputs: seed ${seed} (set MB_TEST_SEED=N for others)`);
  return seed;
}
