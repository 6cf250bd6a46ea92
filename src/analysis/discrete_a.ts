/**
 * The discretised transition ("discrete-A") of a layer, `exp(delta ⊗ A)` with
 * `delta = softplus(dt_proj output)`, shaped (L, d_inner, d_state). It is computed a few positions
 * at a time and handed to the streaming reductions (reductions.ts), so the full tensor exists only
 * when no reduction is asked for; likewise its cosine similarity with the mixer input x.
 *
 * @module
 */

import type { HostTensor } from "../io/tensor.ts";
import { ArgReducer } from "./arg_reduce.ts";
import { cosineSimOverD, normalizeDim, Reducer, type Reduction } from "./reductions.ts";

/** Positions materialised at once: keeps the scratch small (16 x 3584 x 16 floats = 3.7 MB). */
const BLOCK = 16;

/** torch.nn.functional.softplus (beta 1, threshold 20). */
export function softplus(x: number): number {
  return x > 20 ? x : Math.log1p(Math.exp(x));
}

/** Shape of the result of a reduction of an (L, D, N) tensor, as torch. */
export function reducedShape(
  [L, D, N]: [number, number, number],
  reduction: Reduction | null,
  dim: number | null,
): number[] {
  if (reduction === null) return [L, D, N];
  if (reduction === "fro" || reduction === "nuc") return [L];
  if (dim === null) return [];
  const axis = normalizeDim(dim, 3);
  return [L, D, N].filter((_, i) => i !== axis);
}

/** Writes exp(softplus(delta[r]) * A) for `rows` rows of delta (row stride ld) into out. */
export function discreteA(
  delta: Float32Array,
  rows: number,
  ld: number,
  A: Float32Array,
  D: number,
  N: number,
  out: Float32Array,
): void {
  for (let r = 0; r < rows; r++) {
    const base = r * D * N;
    for (let d = 0; d < D; d++) {
      const dt = softplus(delta[r * ld + d]);
      const row = base + d * N;
      for (let n = 0; n < N; n++) out[row + n] = Math.exp(dt * A[d * N + n]);
    }
  }
}

/** Streams one layer's discrete-A through a reduction (or keeps it whole when none). */
export class DiscreteAReducer {
  readonly #L: number;
  readonly #D: number;
  readonly #N: number;
  readonly #A: Float32Array;
  readonly #reducer: Reducer | null;
  readonly #arg: ArgReducer | null;
  readonly #whole: Float32Array | null;
  readonly #scratch: Float32Array;
  #pos = 0;

  /**
   * For a layer with A (D, N) = -exp(A_log) and L positions in all. With `withIndices`, min and
   * max over a dimension also keep torch's indices ({@link indices}).
   */
  constructor(
    L: number,
    A: Float32Array,
    D: number,
    N: number,
    reduction: Reduction | null,
    dim: number | null,
    withIndices = false,
  ) {
    if (A.length !== D * N) throw new Error(`A has ${A.length} values, expected ${D * N}`);
    this.#L = L;
    this.#D = D;
    this.#N = N;
    this.#A = A;
    const arg = withIndices && (reduction === "min" || reduction === "max") && dim !== null;
    this.#arg = arg
      ? new ArgReducer(reduction as "min" | "max", L, [D, N], normalizeDim(dim!, 3) as 0 | 1 | 2)
      : null;
    this.#reducer = reduction === null || arg ? null : new Reducer(reduction, [D, N], dim);
    this.#whole = reduction === null ? new Float32Array(L * D * N) : null;
    this.#scratch = new Float32Array(reduction === null ? 0 : BLOCK * D * N);
  }

  /** Adds `rows` positions; `delta` is the dt_proj output (rows, D) with row stride `ld`. */
  push(delta: Float32Array, rows: number, ld = this.#D): void {
    if (this.#pos + rows > this.#L) throw new Error("more positions than announced");
    const D = this.#D, N = this.#N;
    if (this.#whole) {
      const out = this.#whole.subarray(this.#pos * D * N, (this.#pos + rows) * D * N);
      discreteA(delta, rows, ld, this.#A, D, N, out);
    } else {
      for (let r = 0; r < rows; r += BLOCK) {
        const p = Math.min(BLOCK, rows - r);
        const block = this.#scratch.subarray(0, p * D * N);
        discreteA(delta.subarray(r * ld), p, ld, this.#A, D, N, block);
        if (this.#arg) this.#arg.push(block, p);
        else this.#reducer!.push(block, p);
      }
    }
    this.#pos += rows;
  }

  /** The result once all L positions were pushed. */
  result(): HostTensor {
    if (this.#pos !== this.#L) throw new Error(`pushed ${this.#pos} of ${this.#L} positions`);
    if (this.#whole) {
      return { dtype: "float32", shape: [this.#L, this.#D, this.#N], data: this.#whole };
    }
    const r = this.#arg ? this.#arg.finish() : null;
    if (r) {
      this.#indices = { dtype: "int64", shape: r.shape, data: r.indices };
      return { dtype: "float32", shape: r.shape, data: r.values };
    }
    const red = this.#reducer!.finish();
    return { dtype: "float32", shape: red.shape, data: red.data };
  }

  #indices: HostTensor | null = null;

  /** torch's indices of a min / max over a dimension (after {@link result}; else null). */
  get indices(): HostTensor | null {
    return this.#indices;
  }
}

/**
 * Streams the cosine similarity over d_inner between discrete-A and the mixer input x,
 * torch.nn.functional.cosine_similarity(dA, x[..., None], dim=-2): (L, N).
 */
export class InputSimilarity {
  readonly #D: number;
  readonly #N: number;
  readonly #A: Float32Array;
  readonly #out: Float32Array;
  readonly #L: number;
  readonly #scratch: Float32Array;
  #pos = 0;

  /** For a layer with A (D, N) and L positions in all. */
  constructor(L: number, A: Float32Array, D: number, N: number) {
    this.#L = L;
    this.#D = D;
    this.#N = N;
    this.#A = A;
    this.#out = new Float32Array(L * N);
    this.#scratch = new Float32Array(BLOCK * D * N);
  }

  /**
   * Adds `rows` positions: `delta` is dt_proj's output (rows, D), `x` the in_proj output whose
   * first D columns are x (row stride `ldx`, 2*D for in_proj).
   */
  push(delta: Float32Array, x: Float32Array, rows: number, ldx: number): void {
    const D = this.#D, N = this.#N;
    for (let r = 0; r < rows; r += BLOCK) {
      const p = Math.min(BLOCK, rows - r);
      const block = this.#scratch.subarray(0, p * D * N);
      discreteA(delta.subarray(r * D), p, D, this.#A, D, N, block);
      const sim = cosineSimOverD(block, x, [p, D, N], { xStride: ldx, xOffset: r * ldx });
      this.#out.set(sim, (this.#pos + r) * N);
    }
    this.#pos += rows;
  }

  /** The (L, N) result once all positions were pushed. */
  result(): HostTensor {
    if (this.#pos !== this.#L) throw new Error(`pushed ${this.#pos} of ${this.#L} positions`);
    return { dtype: "float32", shape: [this.#L, this.#N], data: this.#out };
  }
}
