/**
 * Element-wise nonlinearities applied to extracted module outputs, with torch's definitions
 * (leaky_relu slope 0.01, elu alpha 1, exact-erf gelu, softplus beta 1 threshold 20, softmax over
 * the last axis). Values are computed in float64 and rounded once to float32.
 *
 * @module
 */

/** Names accepted by {@link applyNonlinearity} (and by `--nonlinearity`). */
export const NONLINEARITIES = [
  "linear",
  "relu",
  "leaky_relu",
  "lrelu",
  "elu",
  "gelu",
  "swish",
  "silu",
  "tanh",
  "softplus",
  "softmax",
] as const;

/** One of {@link NONLINEARITIES}. */
export type Nonlinearity = (typeof NONLINEARITIES)[number];

/** True when `name` is one of {@link NONLINEARITIES}. */
export function isNonlinearity(name: string): name is Nonlinearity {
  return (NONLINEARITIES as readonly string[]).includes(name);
}

const TWO_OVER_SQRT_PI = 1.1283791670955126;

/**
 * Complementary error function, relative error below 1.2e-7 everywhere (tails included), from the
 * Chebyshev fit in Numerical Recipes (erfcc).
 */
export function erfc(x: number): number {
  const z = Math.abs(x);
  const t = 1 / (1 + 0.5 * z);
  const r = t * Math.exp(
    -z * z - 1.26551223 +
      t * (1.00002368 +
          t * (0.37409196 +
              t * (0.09678418 +
                  t * (-0.18628806 +
                      t * (0.27886807 +
                          t *
                            (-1.13520398 +
                              t * (1.48851587 + t * (-0.82215223 + t * 0.17087277)))))))),
  );
  return x >= 0 ? r : 2 - r;
}

/** Error function, accurate to float precision in relative terms (series near 0, erfc beyond). */
export function erf(x: number): number {
  if (Math.abs(x) < 0.5) {
    // Maclaurin series: 1 - erfc(x) would lose the relative accuracy of small results.
    const x2 = x * x;
    let term = x;
    let sum = x;
    for (let n = 1; n < 30; n++) {
      term *= -x2 / n;
      const add = term / (2 * n + 1);
      sum += add;
      if (Math.abs(add) < 1e-17 * Math.abs(sum)) break;
    }
    return TWO_OVER_SQRT_PI * sum;
  }
  return 1 - erfc(x);
}

type Scalar = (x: number) => number;

const SQRT1_2 = Math.SQRT1_2;

const SCALAR: Record<Exclude<Nonlinearity, "softmax">, Scalar> = {
  linear: (x) => x,
  relu: (x) => (x < 0 ? 0 : x), // NaN passes through, as torch
  leaky_relu: (x) => (x < 0 ? 0.01 * x : x),
  lrelu: (x) => (x < 0 ? 0.01 * x : x),
  elu: (x) => (x > 0 ? x : Math.expm1(x)),
  // x * Phi(x) = 0.5 x erfc(-x / sqrt 2): keeps relative accuracy for negative x.
  gelu: (x) => 0.5 * x * erfc(-x * SQRT1_2),
  swish: (x) => x / (1 + Math.exp(-x)),
  silu: (x) => x / (1 + Math.exp(-x)),
  tanh: Math.tanh,
  softplus: (x) => (x > 20 ? x : Math.log1p(Math.exp(x))),
};

/** Softmax of each row, max-subtracted for stability. */
function softmaxRows(data: Float32Array, rows: number, cols: number, out: Float32Array): void {
  const tmp = new Float64Array(cols);
  for (let r = 0; r < rows; r++) {
    const o = r * cols;
    let m = -Infinity;
    for (let c = 0; c < cols; c++) {
      if (data[o + c] > m || data[o + c] !== data[o + c]) m = data[o + c];
    }
    let s = 0;
    for (let c = 0; c < cols; c++) {
      const e = Math.exp(data[o + c] - m);
      tmp[c] = e;
      s += e;
    }
    for (let c = 0; c < cols; c++) out[o + c] = tmp[c] / s;
  }
}

/**
 * Applies `name` element-wise to a row-major (rows, cols) array (softmax: along each row).
 * Writes into `out` (a new array by default; pass `data` itself to work in place).
 *
 * @example
 * ```ts
 * import { applyNonlinearity } from "./nonlinearity.ts";
 * const y = applyNonlinearity("softplus", new Float32Array([0, 30]), 1, 2);
 * // y ≈ [0.6931472, 30]
 * ```
 */
export function applyNonlinearity(
  name: Nonlinearity,
  data: Float32Array,
  rows: number,
  cols: number,
  out: Float32Array = new Float32Array(data.length),
): Float32Array {
  if (rows * cols !== data.length || out.length !== data.length) {
    throw new RangeError(`(${rows}, ${cols}) does not match ${data.length} elements`);
  }
  if (name === "softmax") {
    softmaxRows(data, rows, cols, out);
    return out;
  }
  const f = SCALAR[name];
  if (f === undefined) throw new RangeError(`unknown nonlinearity: ${name}`);
  for (let i = 0; i < data.length; i++) out[i] = f(data[i]);
  return out;
}
