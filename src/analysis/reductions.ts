/**
 * Reductions of discrete-A, a float32 tensor of shape (L, D, N) (positions, channels, state),
 * with torch's semantics: mean / min / max / norm over one dimension (negative dims count from the
 * end) or over everything when no dimension is given; `fro` and `nuc` give one Frobenius or
 * nuclear norm per position of the (D, N) matrix. Everything accumulates in float64.
 *
 * The per-position reductions can run chunk by chunk ({@link reduceChunk}, {@link Reducer}) so
 * the caller never holds all of discrete-A at once.
 *
 * @module
 */

import { MambaByteError } from "../errors.ts";

/** Names accepted by {@link reduce} (and by `--reduction`). */
export const REDUCTIONS = ["mean", "min", "max", "norm", "fro", "nuc"] as const;

/** One of {@link REDUCTIONS}. */
export type Reduction = (typeof REDUCTIONS)[number];

/** A reduction result: row-major float32 data and its shape (`[]` for a scalar). */
export interface Reduced {
  /** Shape, outermost first. */
  shape: number[];
  /** Values in C order. */
  data: Float32Array;
}

/** Maps a possibly negative `dim` into [0, ndim), as torch ("Dimension out of range"). */
export function normalizeDim(dim: number, ndim: number): number {
  if (!Number.isInteger(dim) || dim < -ndim || dim >= ndim) {
    throw new MambaByteError(
      `dimension out of range (expected to be in range of [${-ndim}, ${ndim - 1}], but got ${dim})`,
    );
  }
  return dim < 0 ? dim + ndim : dim;
}

/** How a reduction runs: per position (1 = over D, 2 = over N, "matrix" = fro/nuc), or across positions. */
type Mode = 1 | 2 | "matrix" | "positions" | "all";

function modeOf(kind: Reduction, dim: number | null | undefined): Mode {
  if (!(REDUCTIONS as readonly string[]).includes(kind)) {
    throw new MambaByteError(`unknown reduction: ${kind} (use one of ${REDUCTIONS.join(", ")})`);
  }
  // fro and nuc are matrix norms of each position's (D, N) slice; a dim does not change them.
  if (kind === "fro" || kind === "nuc") return "matrix";
  if (dim === null || dim === undefined) return "all";
  const d = normalizeDim(dim, 3);
  return d === 0 ? "positions" : (d as 1 | 2);
}

/** True when the result has one row per position, so chunks can be reduced independently. */
export function isPerPosition(kind: Reduction, dim?: number | null): boolean {
  const m = modeOf(kind, dim);
  return m !== "positions" && m !== "all";
}

/** The shape of one position's result in a per-position reduction (`[]` for fro / nuc). */
export function perPositionShape(
  kind: Reduction,
  dims: [D: number, N: number],
  dim?: number | null,
): number[] {
  const m = modeOf(kind, dim);
  if (m === "matrix") return [];
  if (m === 1) return [dims[1]];
  if (m === 2) return [dims[0]];
  throw new MambaByteError(`${kind} over dim ${dim} is not a per-position reduction`);
}

function finishValue(kind: Reduction, acc: number, count: number): number {
  if (kind === "mean") return acc / count;
  if (kind === "norm") return Math.sqrt(acc);
  return acc;
}

function initial(kind: Reduction, first: number): number {
  if (kind === "min" || kind === "max") return first;
  return 0;
}

/** Folds one value into an accumulator; min / max propagate NaN, as torch. */
function fold(kind: Reduction, acc: number, x: number): number {
  switch (kind) {
    case "mean":
      return acc + x;
    case "norm":
      return acc + x * x;
    case "min":
      return x < acc || x !== x ? x : acc;
    default:
      return x > acc || x !== x ? x : acc;
  }
}

/** Eigenvalues of a symmetric n×n matrix (cyclic Jacobi; `a` is overwritten). */
export function symmetricEigenvalues(a: Float64Array, n: number): Float64Array {
  for (let sweep = 0; sweep < 100; sweep++) {
    let off = 0;
    let diag = 0;
    for (let p = 0; p < n; p++) {
      diag += a[p * n + p] * a[p * n + p];
      for (let q = p + 1; q < n; q++) off += a[p * n + q] * a[p * n + q];
    }
    if (off === 0 || off <= 1e-32 * diag) break;
    for (let p = 0; p < n; p++) {
      for (let q = p + 1; q < n; q++) {
        const apq = a[p * n + q];
        if (apq === 0) continue;
        const app = a[p * n + p];
        const aqq = a[q * n + q];
        const theta = (aqq - app) / (2 * apq);
        const t = Math.abs(theta) > 1e150
          ? 1 / (2 * theta)
          : (theta >= 0 ? 1 : -1) / (Math.abs(theta) + Math.sqrt(theta * theta + 1));
        const c = 1 / Math.sqrt(t * t + 1);
        const s = t * c;
        for (let k = 0; k < n; k++) {
          if (k === p || k === q) continue;
          const akp = a[k * n + p];
          const akq = a[k * n + q];
          a[k * n + p] = a[p * n + k] = c * akp - s * akq;
          a[k * n + q] = a[q * n + k] = s * akp + c * akq;
        }
        a[p * n + p] = app - t * apq;
        a[q * n + q] = aqq + t * apq;
        a[p * n + q] = a[q * n + p] = 0;
      }
    }
  }
  const ev = new Float64Array(n);
  for (let i = 0; i < n; i++) ev[i] = a[i * n + i];
  return ev;
}

/**
 * Nuclear norm of the row-major (D, N) matrix at `x[off..]`: the sum of singular values, the
 * square roots of the eigenvalues of the N×N Gram matrix XᵀX (cheap for N = 16).
 */
function nuclearNorm(x: Float32Array, off: number, D: number, N: number, g: Float64Array): number {
  g.fill(0);
  for (let d = 0; d < D; d++) {
    const row = off + d * N;
    for (let i = 0; i < N; i++) {
      const xi = x[row + i];
      if (xi === 0) continue;
      for (let j = i; j < N; j++) g[i * N + j] += xi * x[row + j];
    }
  }
  for (let i = 0; i < N; i++) for (let j = 0; j < i; j++) g[i * N + j] = g[j * N + i];
  const ev = symmetricEigenvalues(g, N);
  let s = 0;
  for (let i = 0; i < N; i++) s += Math.sqrt(Math.max(ev[i], 0)); // rounding can go below 0
  return s;
}

function checkChunk(x: Float32Array, positions: number, D: number, N: number): void {
  if (x.length !== positions * D * N) {
    throw new RangeError(`chunk of ${x.length} values is not (${positions}, ${D}, ${N})`);
  }
}

/**
 * Reduces a chunk of `positions` consecutive positions (shape (positions, D, N)) of a
 * per-position reduction ({@link isPerPosition}): fro / nuc, or mean / min / max / norm over
 * dim 1 or 2 (or -2 / -1). Returns positions × {@link perPositionShape} values; concatenating the
 * chunks in order gives the result for the whole sequence.
 */
export function reduceChunk(
  kind: Reduction,
  x: Float32Array,
  dims: [positions: number, D: number, N: number],
  dim?: number | null,
): Float32Array {
  const [P, D, N] = dims;
  checkChunk(x, P, D, N);
  const mode = modeOf(kind, dim);
  if (mode === "matrix") {
    const out = new Float32Array(P);
    const g = new Float64Array(N * N);
    for (let p = 0; p < P; p++) {
      const off = p * D * N;
      if (kind === "nuc") {
        out[p] = nuclearNorm(x, off, D, N, g);
      } else {
        let s = 0;
        for (let i = off; i < off + D * N; i++) s += x[i] * x[i];
        out[p] = Math.sqrt(s);
      }
    }
    return out;
  }
  if (mode === 2) {
    // Over N: contiguous runs of N values.
    const out = new Float32Array(P * D);
    for (let r = 0; r < P * D; r++) {
      const off = r * N;
      let acc = initial(kind, x[off]);
      for (let n = 0; n < N; n++) acc = fold(kind, acc, x[off + n]);
      out[r] = finishValue(kind, acc, N);
    }
    return out;
  }
  if (mode === 1) {
    // Over D: walk rows in memory order, N running accumulators.
    const out = new Float32Array(P * N);
    const acc = new Float64Array(N);
    for (let p = 0; p < P; p++) {
      const base = p * D * N;
      for (let n = 0; n < N; n++) acc[n] = initial(kind, x[base + n]);
      for (let d = 0; d < D; d++) {
        const row = base + d * N;
        for (let n = 0; n < N; n++) acc[n] = fold(kind, acc[n], x[row + n]);
      }
      for (let n = 0; n < N; n++) out[p * N + n] = finishValue(kind, acc[n], D);
    }
    return out;
  }
  throw new MambaByteError(`${kind} over dim ${dim} spans positions; use a Reducer`);
}

/**
 * Streaming reduction of discrete-A fed chunk by chunk along the position axis; handles every
 * kind and dim, including those across positions (dim 0, or none) with bounded memory.
 *
 * @example
 * ```ts
 * import { Reducer } from "./reductions.ts";
 * const r = new Reducer("norm", [2, 3], -2);
 * r.push(new Float32Array(1 * 2 * 3).fill(1), 1);
 * r.push(new Float32Array(2 * 2 * 3).fill(2), 2);
 * const { shape } = r.finish(); // shape [3, 3]
 * ```
 */
export class Reducer {
  readonly #kind: Reduction;
  readonly #D: number;
  readonly #N: number;
  readonly #dim: number | null | undefined;
  readonly #mode: Mode;
  #positions = 0;
  #chunks: Float32Array[] = [];
  #acc: Float64Array | null = null;

  /** A reducer of `kind` over `dim` for positions of shape (D, N). */
  constructor(kind: Reduction, dims: [D: number, N: number], dim?: number | null) {
    this.#kind = kind;
    [this.#D, this.#N] = dims;
    this.#dim = dim;
    this.#mode = modeOf(kind, dim);
  }

  /** Positions pushed so far. */
  get positions(): number {
    return this.#positions;
  }

  /** Adds `positions` more positions, a (positions, D, N) array. */
  push(x: Float32Array, positions: number): void {
    const D = this.#D, N = this.#N, kind = this.#kind;
    checkChunk(x, positions, D, N);
    if (this.#mode !== "positions" && this.#mode !== "all") {
      this.#chunks.push(reduceChunk(kind, x, [positions, D, N], this.#dim));
    } else {
      const width = this.#mode === "all" ? 1 : D * N;
      if (this.#acc === null) {
        if (positions === 0) return;
        this.#acc = new Float64Array(width);
        for (let i = 0; i < width; i++) this.#acc[i] = initial(kind, x[i]);
      }
      const acc = this.#acc;
      if (width === 1) {
        let a = acc[0];
        for (let i = 0; i < x.length; i++) a = fold(kind, a, x[i]);
        acc[0] = a;
      } else {
        for (let p = 0; p < positions; p++) {
          const off = p * width;
          for (let i = 0; i < width; i++) acc[i] = fold(kind, acc[i], x[off + i]);
        }
      }
    }
    this.#positions += positions;
  }

  /** The reduction of everything pushed. */
  finish(): Reduced {
    const L = this.#positions, D = this.#D, N = this.#N, kind = this.#kind;
    if (this.#mode === "positions" || this.#mode === "all") {
      const count = this.#mode === "all" ? L * D * N : L;
      const width = this.#mode === "all" ? 1 : D * N;
      const data = new Float32Array(width);
      if (this.#acc === null) {
        if (kind === "min" || kind === "max") {
          throw new MambaByteError(`${kind} of an empty tensor has no identity`);
        }
        data.fill(kind === "mean" ? NaN : 0);
      } else {
        for (let i = 0; i < width; i++) data[i] = finishValue(kind, this.#acc[i], count);
      }
      return { shape: this.#mode === "all" ? [] : [D, N], data };
    }
    const per = perPositionShape(kind, [D, N], this.#dim);
    const rowLen = per.length === 0 ? 1 : per[0];
    const data = new Float32Array(L * rowLen);
    let off = 0;
    for (const c of this.#chunks) {
      data.set(c, off);
      off += c.length;
    }
    return { shape: [L, ...per], data };
  }
}

/**
 * Reduces a whole (L, D, N) tensor, as torch would:
 * mean / min / max / norm over `dim` (values only for min / max; everything when `dim` is
 * absent), fro → (L,) Frobenius norms, nuc → (L,) nuclear norms of each (D, N) slice.
 *
 * @example
 * ```ts
 * import { reduce } from "./reductions.ts";
 * const x = new Float32Array([3, 4, 0, 0]); // L=1, D=2, N=2
 * reduce("fro", x, [1, 2, 2]).data; // Float32Array [5]
 * ```
 */
export function reduce(
  kind: Reduction,
  x: Float32Array,
  dims: [L: number, D: number, N: number],
  dim?: number | null,
): Reduced {
  const [L, D, N] = dims;
  const r = new Reducer(kind, [D, N], dim);
  r.push(x, L);
  return r.finish();
}

/**
 * Cosine similarity along D between each state column of discrete-A and the input, as
 * `torch.nn.functional.cosine_similarity(dA, x[..., None], dim=-2, eps)`: each norm is clamped to
 * at least `eps` separately (torch ≥ 1.13), so the result is dot / (max(‖a‖, eps) · max(‖x‖, eps)).
 *
 * `dA` is (L, D, N) row-major; row l of `x` starts at `xOffset + l * xStride` (a view into a
 * wider buffer such as xz needs no copy). Returns (L, N).
 */
export function cosineSimOverD(
  dA: Float32Array,
  x: Float32Array,
  dims: [L: number, D: number, N: number],
  opts: { xStride?: number; xOffset?: number; eps?: number } = {},
): Float32Array {
  const [L, D, N] = dims;
  const stride = opts.xStride ?? D;
  const xOff = opts.xOffset ?? 0;
  const eps = opts.eps ?? 1e-8;
  checkChunk(dA, L, D, N);
  if (L > 0 && xOff + (L - 1) * stride + D > x.length) {
    throw new RangeError(
      `x of ${x.length} values is too short for (${L}, ${D}) at stride ${stride}`,
    );
  }
  const out = new Float32Array(L * N);
  const dot = new Float64Array(N);
  const sq = new Float64Array(N);
  for (let l = 0; l < L; l++) {
    dot.fill(0);
    sq.fill(0);
    let xx = 0;
    const xr = xOff + l * stride;
    const base = l * D * N;
    for (let d = 0; d < D; d++) {
      const xv = x[xr + d];
      xx += xv * xv;
      const row = base + d * N;
      for (let n = 0; n < N; n++) {
        const a = dA[row + n];
        dot[n] += a * xv;
        sq[n] += a * a;
      }
    }
    const xn = Math.max(Math.sqrt(xx), eps);
    for (let n = 0; n < N; n++) out[l * N + n] = dot[n] / (Math.max(Math.sqrt(sq[n]), eps) * xn);
  }
  return out;
}
