/**
 * The discretised transition ("discrete-A") of a layer, `exp(delta ⊗ A)` with
 * `delta = softplus(dt_proj output)`, shaped (L, d_inner, d_state), computed chunk by chunk and
 * reduced on the fly so the full tensor never has to exist; and its cosine similarity with the
 * mixer's input x (the first half of in_proj's output, before the convolution).
 *
 * Reductions follow torch: mean/min/max/norm over `dim` (negative dims count from the end; all
 * elements when dim is absent), fro and nuc one matrix norm per position over (d_inner, d_state).
 *
 * @module
 */

import { MambaByteError } from "../errors.ts";
import type { HostTensor } from "../io/tensor.ts";
import { nuclearNormFromGram } from "./reductions.ts";

/** The reductions of the original extract_discrete_A script. */
export const REDUCTIONS = ["mean", "min", "max", "norm", "fro", "nuc"] as const;
/** One of {@link REDUCTIONS}. */
export type Reduction = typeof REDUCTIONS[number];

/** torch.nn.functional.softplus (beta 1, threshold 20). */
export function softplus(x: number): number {
  return x > 20 ? x : Math.log1p(Math.exp(x));
}

/** Shape of the result of a reduction of an (L, D, N) tensor. */
export function reducedShape(
  [L, D, N]: [number, number, number],
  reduction: Reduction | null,
  dim: number | null,
): number[] {
  if (reduction === null) return [L, D, N];
  if (reduction === "fro" || reduction === "nuc") return [L];
  if (dim === null) return [];
  const full = [L, D, N];
  const axis = normalizeDim(dim);
  return full.filter((_, i) => i !== axis);
}

/** Maps a torch dim of a 3-D tensor to 0..2; throws a clear error when out of range. */
export function normalizeDim(dim: number): number {
  if (!Number.isInteger(dim) || dim < -3 || dim > 2) {
    throw new MambaByteError(
      `reduction_dim ${dim} is out of range for discrete_A of shape (L, d_inner, d_state): use -3..2`,
    );
  }
  return dim < 0 ? dim + 3 : dim;
}

/**
 * Streams discrete-A for one layer: push the dt_proj output (pre-softplus) of consecutive chunks,
 * then take the result.
 */
export class DiscreteAReducer {
  readonly #L: number;
  readonly #D: number;
  readonly #N: number;
  readonly #A: Float32Array;
  readonly #reduction: Reduction | null;
  readonly #axis: number | null;
  readonly #out: Float32Array;
  // Running accumulators for reductions over positions (axis 0 or all elements).
  readonly #acc: Float64Array;
  #pos = 0;
  readonly #row: Float64Array;
  readonly #gram: Float64Array;

  /** For a layer with A (D, N) = -exp(A_log) and L positions in all. */
  constructor(
    L: number,
    A: Float32Array,
    D: number,
    N: number,
    reduction: Reduction | null,
    dim: number | null,
  ) {
    if (A.length !== D * N) throw new Error(`A has ${A.length} values, expected ${D * N}`);
    this.#L = L;
    this.#D = D;
    this.#N = N;
    this.#A = A;
    this.#reduction = reduction;
    this.#axis = reduction === null || reduction === "fro" || reduction === "nuc" || dim === null
      ? null
      : normalizeDim(dim);
    const shape = reducedShape([L, D, N], reduction, dim);
    this.#out = new Float32Array(shape.reduce((a, b) => a * b, 1));
    const overPositions = reduction !== null && reduction !== "fro" && reduction !== "nuc" &&
      (this.#axis === null || this.#axis === 0);
    this.#acc = new Float64Array(overPositions ? (this.#axis === 0 ? D * N : 1) : 0);
    if (reduction === "min") this.#acc.fill(Infinity);
    if (reduction === "max") this.#acc.fill(-Infinity);
    this.#row = new Float64Array(D * N);
    this.#gram = new Float64Array(reduction === "nuc" ? N * N : 0);
  }

  /** Adds `rows` positions; `delta` is the dt_proj output (rows, D) with row stride `ld`. */
  push(delta: Float32Array, rows: number, ld = this.#D): void {
    const D = this.#D, N = this.#N, A = this.#A, v = this.#row;
    if (this.#pos + rows > this.#L) throw new Error("more positions than announced");
    for (let r = 0; r < rows; r++) {
      const t = this.#pos + r;
      for (let d = 0; d < D; d++) {
        const dt = softplus(delta[r * ld + d]);
        for (let n = 0; n < N; n++) v[d * N + n] = Math.exp(dt * A[d * N + n]);
      }
      this.#reducePosition(t, v);
    }
    this.#pos += rows;
  }

  #reducePosition(t: number, v: Float64Array): void {
    const D = this.#D, N = this.#N, out = this.#out;
    const red = this.#reduction;
    if (red === null) {
      const base = t * D * N;
      for (let i = 0; i < D * N; i++) out[base + i] = v[i];
      return;
    }
    if (red === "fro") {
      let s = 0;
      for (let i = 0; i < D * N; i++) s += v[i] * v[i];
      out[t] = Math.sqrt(s);
      return;
    }
    if (red === "nuc") {
      const g = this.#gram.fill(0);
      for (let d = 0; d < D; d++) {
        const row = d * N;
        for (let i = 0; i < N; i++) {
          const vi = v[row + i];
          for (let j = i; j < N; j++) g[i * N + j] += vi * v[row + j];
        }
      }
      for (let i = 0; i < N; i++) for (let j = 0; j < i; j++) g[i * N + j] = g[j * N + i];
      out[t] = nuclearNormFromGram(g, N);
      return;
    }
    const axis = this.#axis;
    if (axis === null || axis === 0) {
      const acc = this.#acc;
      for (let i = 0; i < D * N; i++) {
        const k = axis === 0 ? i : 0;
        const x = v[i];
        if (red === "mean") acc[k] += x;
        else if (red === "norm") acc[k] += x * x;
        else if (red === "min") acc[k] = Math.min(acc[k], x);
        else acc[k] = Math.max(acc[k], x);
      }
      return;
    }
    // Per position: axis 1 (over D) -> (L, N); axis 2 (over N) -> (L, D).
    const outer = axis === 1 ? N : D;
    const inner = axis === 1 ? D : N;
    const base = t * outer;
    for (let o = 0; o < outer; o++) {
      let a = red === "min" ? Infinity : red === "max" ? -Infinity : 0;
      for (let i = 0; i < inner; i++) {
        const x = axis === 1 ? v[i * N + o] : v[o * N + i];
        if (red === "mean") a += x;
        else if (red === "norm") a += x * x;
        else if (red === "min") a = Math.min(a, x);
        else a = Math.max(a, x);
      }
      out[base + o] = red === "mean" ? a / inner : red === "norm" ? Math.sqrt(a) : a;
    }
  }

  /** The result once all L positions were pushed. */
  result(): HostTensor {
    if (this.#pos !== this.#L) throw new Error(`pushed ${this.#pos} of ${this.#L} positions`);
    const red = this.#reduction;
    if (this.#acc.length > 0) {
      const count = this.#axis === 0 ? this.#L : this.#L * this.#D * this.#N;
      for (let k = 0; k < this.#acc.length; k++) {
        const a = this.#acc[k];
        this.#out[k] = red === "mean" ? a / count : red === "norm" ? Math.sqrt(a) : a;
      }
    }
    const shape = reducedShape(
      [this.#L, this.#D, this.#N],
      red,
      this.#axis === null ? null : this.#axis,
    );
    return { dtype: "float32", shape, data: this.#out };
  }
}

/**
 * Streams the cosine similarity over d_inner between discrete-A's columns and the mixer input x:
 * sim[t, n] = Σ_d dA[t,d,n] x[t,d] / (max(‖dA[t,:,n]‖, eps) · max(‖x[t]‖, eps)), as
 * torch.nn.functional.cosine_similarity(dA, x[..., None], dim=-2) with eps = 1e-8.
 */
export class InputSimilarity {
  readonly #D: number;
  readonly #N: number;
  readonly #A: Float32Array;
  readonly #out: Float32Array;
  readonly #L: number;
  #pos = 0;

  /** For a layer with A (D, N) and L positions in all. */
  constructor(L: number, A: Float32Array, D: number, N: number) {
    this.#L = L;
    this.#D = D;
    this.#N = N;
    this.#A = A;
    this.#out = new Float32Array(L * N);
  }

  /**
   * Adds `rows` positions: `delta` is dt_proj's output (rows, D), `x` the in_proj output whose
   * first D columns are x (row stride `ldx`, 2*D for in_proj).
   */
  push(delta: Float32Array, x: Float32Array, rows: number, ldx: number): void {
    const D = this.#D, N = this.#N, A = this.#A;
    const dot = new Float64Array(N), sq = new Float64Array(N);
    const eps = 1e-8;
    for (let r = 0; r < rows; r++) {
      dot.fill(0);
      sq.fill(0);
      let xx = 0;
      for (let d = 0; d < D; d++) {
        const dt = softplus(delta[r * D + d]);
        const xd = x[r * ldx + d];
        xx += xd * xd;
        for (let n = 0; n < N; n++) {
          const v = Math.exp(dt * A[d * N + n]);
          dot[n] += v * xd;
          sq[n] += v * v;
        }
      }
      const xn = Math.max(Math.sqrt(xx), eps);
      const base = (this.#pos + r) * N;
      for (let n = 0; n < N; n++) this.#out[base + n] = dot[n] / (Math.max(Math.sqrt(sq[n]), eps) * xn);
    }
    this.#pos += rows;
  }

  /** The (L, N) result once all positions were pushed. */
  result(): HostTensor {
    if (this.#pos !== this.#L) throw new Error(`pushed ${this.#pos} of ${this.#L} positions`);
    return { dtype: "float32", shape: [this.#L, this.#N], data: this.#out };
  }
}
