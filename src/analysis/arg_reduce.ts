/**
 * torch.min / torch.max over one dimension of an (L, D, N) tensor streamed a few positions at a
 * time: the values and the int64 indices torch returns (the first index on ties; NaN wins and
 * stays, as torch propagates it).
 *
 * @module
 */

/** Streaming (values, indices) of min or max over dim 0, 1 or 2 of an (L, D, N) tensor. */
export class ArgReducer {
  readonly #max: boolean;
  readonly #dim: 0 | 1 | 2;
  readonly #D: number;
  readonly #N: number;
  readonly #L: number;
  readonly #values: Float32Array;
  readonly #indices: BigInt64Array;
  #pos = 0;

  /** For `L` positions of (D, N) slices, reducing over `dim` (already normalised to 0..2). */
  constructor(kind: "min" | "max", L: number, [D, N]: [number, number], dim: 0 | 1 | 2) {
    this.#max = kind === "max";
    this.#dim = dim;
    this.#D = D;
    this.#N = N;
    this.#L = L;
    const size = dim === 0 ? D * N : dim === 1 ? L * N : L * D;
    this.#values = new Float32Array(size);
    this.#indices = new BigInt64Array(size);
  }

  /** The result's shape (torch drops the reduced dimension). */
  get shape(): number[] {
    const full = [this.#L, this.#D, this.#N];
    return full.filter((_, i) => i !== this.#dim);
  }

  #better(x: number, acc: number): boolean {
    if (acc !== acc) return false;
    return x !== x || (this.#max ? x > acc : x < acc);
  }

  /** Adds `rows` positions of row-major (rows, D, N) values. */
  push(block: Float32Array, rows: number): void {
    const D = this.#D, N = this.#N;
    const v = this.#values, ix = this.#indices;
    for (let r = 0; r < rows; r++) {
      const p = this.#pos + r;
      const base = r * D * N;
      if (this.#dim === 0) {
        for (let j = 0; j < D * N; j++) {
          const x = block[base + j];
          if (p === 0 || this.#better(x, v[j])) {
            v[j] = x;
            ix[j] = BigInt(p);
          }
        }
      } else if (this.#dim === 1) {
        for (let n = 0; n < N; n++) {
          let best = block[base + n], at = 0;
          for (let d = 1; d < D; d++) {
            const x = block[base + d * N + n];
            if (this.#better(x, best)) [best, at] = [x, d];
          }
          v[p * N + n] = best;
          ix[p * N + n] = BigInt(at);
        }
      } else {
        for (let d = 0; d < D; d++) {
          let best = block[base + d * N], at = 0;
          for (let n = 1; n < N; n++) {
            const x = block[base + d * N + n];
            if (this.#better(x, best)) [best, at] = [x, n];
          }
          v[p * D + d] = best;
          ix[p * D + d] = BigInt(at);
        }
      }
    }
    this.#pos += rows;
  }

  /** Values and indices once every position was pushed. */
  finish(): { values: Float32Array; indices: BigInt64Array; shape: number[] } {
    if (this.#pos !== this.#L) throw new Error(`pushed ${this.#pos} of ${this.#L} positions`);
    return { values: this.#values, indices: this.#indices, shape: this.shape };
  }
}
