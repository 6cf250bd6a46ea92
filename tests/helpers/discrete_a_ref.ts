/**
 * A float64 reference of discrete-A and its reductions, written from mambabyte.h's formulas
 * (mb_discrete_a, mb_discrete_a_input_sim), with the float32 error bound of each result: what a
 * kernel that computes E = exp(softplus(delta) * A) in float32 and sums in float64 may differ by.
 *
 * Per element, E's float32 rounding: softplus (a few ulp), the product softplus * A (1 ulp) and
 * exp (1-2 ulp) give E (1 + r) with |r| <= (4 |x| + 4) u, x = softplus(delta) * A, u = 2^-24
 * (an error of the exponent x is multiplied by |x|). Sums accumulate in float64: their rounding is
 * below 1e-12 relative here, so a sum's bound is the sum of its terms' bounds, plus the final
 * rounding to float32 (u). Every bound is doubled for safety. NUC (sum of singular values):
 * Weyl's inequality moves each singular value by at most ||dE||_2 <= ||dE||_F, and the Gram
 * matrix's float64 rounding (at most d 2^-53 sum |E E|) moves a singular value by at most
 * sqrt(n d 2^-53) ||E||_F; the reference itself takes the singular values from E directly
 * (one-sided Jacobi), a different algorithm from the kernel's eigenvalues of the Gram matrix.
 *
 * @module
 */

/** mb_discrete_a's reductions. */
export type Red = "none" | "mean" | "min" | "max" | "norm" | "fro" | "nuc";

/** One call's inputs: delta (len, ld) row-major, A (d, n). */
export interface DACase {
  len: number;
  d: number;
  n: number;
  ld: number;
  delta: Float32Array;
  A: Float32Array;
}

/** float32's unit roundoff. */
export const U = 2 ** -24;

/**
 * The absolute error float32 adds to any element: two steps of its subnormal spacing (E below
 * 2^-126 keeps fewer bits; exp underflows to 0 below e^-103.9).
 */
export const TINY = 2 ** -148;

/** torch.nn.functional.softplus (beta 1, threshold 20) in float64. */
export function softplus64(x: number): number {
  return x > 20 ? x : Math.log1p(Math.exp(x));
}

/** E (len, d, n) in float64 and each element's relative error bound (already doubled). */
export function refE(c: DACase): { E: Float64Array; rel: Float64Array } {
  const { len, d, n, ld } = c;
  const E = new Float64Array(len * d * n);
  const rel = new Float64Array(len * d * n);
  for (let t = 0; t < len; t++) {
    for (let ch = 0; ch < d; ch++) {
      const sp = softplus64(c.delta[t * ld + ch]);
      for (let s = 0; s < n; s++) {
        const x = sp * c.A[ch * n + s];
        const i = (t * d + ch) * n + s;
        E[i] = Math.exp(x);
        rel[i] = 2 * (4 * Math.abs(x) + 4) * U;
      }
    }
  }
  return { E, rel };
}

/** The output shape of a reduction of an (len, d, n) tensor. */
export function outShape(red: Red, dim: number, [len, d, n]: number[]): number[] {
  if (red === "none") return [len, d, n];
  if (red === "fro" || red === "nuc") return [len];
  if (dim === -1) return [1];
  return [len, d, n].filter((_, i) => i !== dim);
}

/**
 * The reduction groups: for each output element, the flat indices (into E) of the elements it
 * reduces, in order along the reduced dimension.
 */
export function groups(red: Red, dim: number, [len, d, n]: number[]): number[][] {
  const at = (t: number, c: number, s: number) => (t * d + c) * n + s;
  const out: number[][] = [];
  if (red === "none") {
    for (let i = 0; i < len * d * n; i++) out.push([i]);
  } else if (red === "fro" || red === "nuc") {
    for (let t = 0; t < len; t++) {
      out.push(Array.from({ length: d * n }, (_, k) => t * d * n + k));
    }
  } else if (dim === -1) {
    out.push(Array.from({ length: len * d * n }, (_, k) => k));
  } else if (dim === 0) {
    for (let c = 0; c < d; c++) {
      for (let s = 0; s < n; s++) out.push(Array.from({ length: len }, (_, t) => at(t, c, s)));
    }
  } else if (dim === 1) {
    for (let t = 0; t < len; t++) {
      for (let s = 0; s < n; s++) out.push(Array.from({ length: d }, (_, c) => at(t, c, s)));
    }
  } else {
    for (let t = 0; t < len; t++) {
      for (let c = 0; c < d; c++) out.push(Array.from({ length: n }, (_, s) => at(t, c, s)));
    }
  }
  return out;
}

/** Singular values of the row-major (rows, cols) float64 matrix m (one-sided Jacobi). */
export function singularValues(m: Float64Array, rows: number, cols: number): Float64Array {
  const a = Float64Array.from(m);
  for (let sweep = 0; sweep < 60; sweep++) {
    let rotated = false;
    for (let p = 0; p < cols - 1; p++) {
      for (let q = p + 1; q < cols; q++) {
        let alpha = 0, beta = 0, gamma = 0;
        for (let r = 0; r < rows; r++) {
          const x = a[r * cols + p], y = a[r * cols + q];
          alpha += x * x;
          beta += y * y;
          gamma += x * y;
        }
        if (Math.abs(gamma) <= 1e-15 * Math.sqrt(alpha * beta) || gamma === 0) continue;
        rotated = true;
        const zeta = (beta - alpha) / (2 * gamma);
        const t = Math.sign(zeta || 1) / (Math.abs(zeta) + Math.sqrt(1 + zeta * zeta));
        const c = 1 / Math.sqrt(1 + t * t), s = c * t;
        for (let r = 0; r < rows; r++) {
          const x = a[r * cols + p], y = a[r * cols + q];
          a[r * cols + p] = c * x - s * y;
          a[r * cols + q] = s * x + c * y;
        }
      }
    }
    if (!rotated) break;
  }
  const sv = new Float64Array(cols);
  for (let q = 0; q < cols; q++) {
    let ss = 0;
    for (let r = 0; r < rows; r++) ss += a[r * cols + q] ** 2;
    sv[q] = Math.sqrt(ss);
  }
  return sv;
}

/** A reduced value in float64 and the absolute bound a float32 kernel may be off by. */
export interface RefValue {
  value: number;
  bound: number;
}

/**
 * The float64 value of a sum-type reduction (mean, norm, fro, nuc) of one group of E's elements,
 * with its bound. `d`, `n` shape a NUC group's (d, n) matrix.
 */
export function reduceGroup(
  red: "mean" | "norm" | "fro" | "nuc",
  E: Float64Array,
  rel: Float64Array,
  group: number[],
  d: number,
  n: number,
): RefValue {
  if (red === "mean") {
    let s = 0, b = 0;
    for (const i of group) {
      s += E[i];
      b += E[i] * rel[i];
    }
    const v = s / group.length;
    return { value: v, bound: b / group.length + TINY + 2 * U * Math.abs(v) };
  }
  let ss = 0, bs = 0;
  for (const i of group) {
    ss += E[i] * E[i];
    bs += 2 * E[i] * E[i] * rel[i] + 2 * E[i] * TINY;
  }
  const fro = Math.sqrt(ss);
  if (red !== "nuc") {
    return { value: fro, bound: (fro > 0 ? bs / (2 * fro) : 0) + 2 * U * fro };
  }
  const m = Float64Array.from(group, (i) => E[i]);
  const nuc = singularValues(m, d, n).reduce((a, b) => a + b, 0);
  let dE = 0;
  for (const i of group) dE += (E[i] * rel[i] + TINY) ** 2;
  const bound = n * Math.sqrt(dE) + n * Math.sqrt(n * d * 2 ** -53) * fro * 2 + 2 * U * nuc;
  return { value: nuc, bound };
}

/**
 * The float64 cosine similarity over d between E[t, :, s] and x[t, :] (x row t at t * ldx), with
 * torch's eps clamps, and its bound: the dot product's error (sum |E x| r) and the norm's relative
 * error (max r) over the product of the clamped norms.
 */
export function refInputSim(
  c: DACase,
  E: Float64Array,
  rel: Float64Array,
  x: Float32Array,
  ldx: number,
  eps: number,
): RefValue[] {
  const { len, d, n } = c;
  const out: RefValue[] = [];
  for (let t = 0; t < len; t++) {
    let xx = 0;
    for (let ch = 0; ch < d; ch++) xx += x[t * ldx + ch] ** 2;
    const nx = Math.max(Math.sqrt(xx), eps);
    for (let s = 0; s < n; s++) {
      let dot = 0, ee = 0, bdot = 0, rmax = 0;
      for (let ch = 0; ch < d; ch++) {
        const i = (t * d + ch) * n + s;
        const xv = x[t * ldx + ch];
        dot += E[i] * xv;
        ee += E[i] * E[i];
        bdot += Math.abs(xv) * (E[i] * rel[i] + TINY);
        rmax = Math.max(rmax, rel[i]);
      }
      const ne = Math.max(Math.sqrt(ee), eps);
      const v = dot / (ne * nx);
      out.push({ value: v, bound: bdot / (ne * nx) + Math.abs(v) * rmax + 2 * U * Math.abs(v) });
    }
  }
  return out;
}
