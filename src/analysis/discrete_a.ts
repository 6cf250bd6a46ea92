/**
 * The discretised transition ("discrete-A") of a layer, `exp(delta ⊗ A)` with
 * `delta = softplus(dt_proj output)`, shaped (L, d_inner, d_state), and its cosine similarity with
 * the mixer input x, computed where the model runs by the native ops (mb_discrete_a,
 * mb_discrete_a_input_sim) from the forward's dt_proj output as each layer produces it: the
 * (L, d_inner, d_state) tensor is never formed unless it is the result asked for, and only the
 * reduced results cross to the host. Reductions across positions (dim 0, or all elements) carry
 * their partial results on the device from one forward chunk to the next.
 *
 * @module
 */

import type { Backend, DiscreteAReduction, Ptr } from "../backend/backend.ts";
import { MambaByteError } from "../errors.ts";
import type { HostTensor } from "../io/tensor.ts";
import type { MambaByteLM, OverlappedDownloads } from "../model/model.ts";
import { normalizeDim, type Reduction } from "./reductions.ts";

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

/**
 * Staging for per-position results kept on a GPU until the end of a forward chunk (so no layer
 * waits for a download); above this, each layer's chunk is downloaded as soon as it is computed.
 */
const DEFERRED_BYTES = 512 * 2 ** 20;

/**
 * Where per-position float results kept on a GPU go while the layers after them run: the model's
 * overlapped downloads (a 972M layer's `norm` over d_inner of 7,850 positions is 0.5 MB; 48 of
 * them downloaded after the pass took ~6 ms of an ~88 ms extraction on an H100). Null on the CPU,
 * where a download is a copy done at once.
 */
function overlapped(lm: MambaByteLM): OverlappedDownloads | null {
  return lm.backend.kind === "cuda" ? lm.downloadPipeline() : null;
}

interface LayerBuffers {
  out: Ptr;
  idx: Ptr;
  acc: Ptr;
}

/**
 * One pass's discrete-A results for a set of layers, computed on the model's backend.
 * {@link push} each layer's dt_proj output as the forward produces it (a device pointer), call
 * {@link flush} after every chunk, then read {@link results}; {@link free} releases the device
 * buffers (always, also after an error).
 */
export class DiscreteAExtraction {
  readonly #be: Backend;
  readonly #lm: MambaByteLM;
  readonly #L: number;
  readonly #D: number;
  readonly #N: number;
  readonly #reduction: DiscreteAReduction;
  /** mb_discrete_a's dim: 0, 1, 2, or -1 for all elements (0 for none / fro / nuc). */
  readonly #dim: number;
  readonly #withIdx: boolean;
  /** Per-position output width (floats per position), or 0 for reductions across positions. */
  readonly #width: number;
  /** Floats of an across-positions result (d*n, or 1). */
  readonly #acrossSize: number;
  readonly #shape: number[];
  /** Per-position results: download after each layer (true) or after each chunk (false). */
  readonly #immediate: boolean;
  readonly #dev = new Map<number, LayerBuffers>();
  readonly #shared: LayerBuffers | null = null;
  readonly #values = new Map<number, Float32Array>();
  readonly #indices = new Map<number, BigInt64Array>();
  #pending: { layer: number; start: number; rows: number }[] = [];
  /** Per-position values in flight to the host (deferred results on a GPU), else null. */
  #pipe: OverlappedDownloads | null = null;
  #freed = false;

  /**
   * For `layers` of `lm`, over L positions; `reduction` null keeps the whole tensor; `dim` null
   * reduces all elements (mean / min / max / norm). With `withIndices`, min and max over a
   * dimension also return torch's int64 indices.
   */
  constructor(
    lm: MambaByteLM,
    layers: readonly number[],
    L: number,
    reduction: Reduction | null,
    dim: number | null,
    withIndices = false,
  ) {
    this.#lm = lm;
    this.#be = lm.backend;
    this.#L = L;
    const D = this.#D = lm.dims.dInner;
    const N = this.#N = lm.dims.dState;
    this.#reduction = reduction ?? "none";
    const perDim = reduction === "mean" || reduction === "min" || reduction === "max" ||
      reduction === "norm";
    this.#dim = perDim ? (dim === null ? -1 : normalizeDim(dim, 3)) : 0;
    this.#shape = reducedShape([L, D, N], reduction, dim);
    this.#withIdx = withIndices && (reduction === "min" || reduction === "max") && this.#dim >= 0;
    const across = perDim && (this.#dim === 0 || this.#dim === -1);
    this.#acrossSize = !across ? 0 : this.#dim === 0 ? D * N : 1;
    this.#width = across
      ? 0
      : reduction === null
      ? D * N
      : reduction === "fro" || reduction === "nuc"
      ? 1
      : this.#dim === 1
      ? N
      : D;
    const total = this.#shape.reduce((a, b) => a * b, 1);
    for (const l of layers) {
      this.#values.set(l, new Float32Array(total));
      if (this.#withIdx) this.#indices.set(l, new BigInt64Array(total));
    }
    const rows = Math.min(Math.max(L, 1), lm.chunkSize);
    const idxBytes = this.#withIdx ? 8 : 0;
    try {
      if (across) {
        for (const l of layers) {
          this.#dev.set(l, {
            out: this.#be.alloc(this.#acrossSize * 4),
            idx: idxBytes ? this.#be.alloc(this.#acrossSize * 8) : null,
            acc: this.#be.alloc(D * N * 8),
          });
        }
        this.#immediate = false;
      } else {
        const perLayer = rows * this.#width * (4 + idxBytes);
        this.#immediate = this.#be.kind === "cpu" || perLayer * layers.length > DEFERRED_BYTES;
        const alloc = (): LayerBuffers => ({
          out: this.#be.alloc(rows * this.#width * 4),
          idx: idxBytes ? this.#be.alloc(rows * this.#width * 8) : null,
          acc: null,
        });
        if (this.#immediate) this.#shared = alloc();
        else {
          for (const l of layers) this.#dev.set(l, alloc());
          this.#pipe = overlapped(lm);
        }
      }
    } catch (e) {
      this.free();
      throw e;
    }
  }

  /** Enqueues layer `layer`'s discrete-A for positions [start, start + rows) of dt_proj's output. */
  push(layer: number, delta: Ptr, ld: number, start: number, rows: number): void {
    const buf = this.#shared ?? this.#dev.get(layer);
    if (!buf) throw new Error(`layer ${layer} was not announced`);
    this.#be.discreteA({
      delta,
      ldDelta: ld,
      A: this.#lm.weights.layers[layer].A.ptr,
      len: rows,
      d: this.#D,
      n: this.#N,
      reduction: this.#reduction,
      dim: this.#dim,
      pos0: start,
      acc: buf.acc,
      out: buf.out,
      outIdx: buf.idx,
    });
    if (this.#width === 0) return;
    if (this.#immediate) this.#download(layer, buf, start, rows);
    else {
      const w = this.#width;
      this.#pipe?.push(
        buf.out,
        this.#values.get(layer)!.subarray(start * w, (start + rows) * w),
        () => {},
      );
      this.#pending.push({ layer, start, rows });
    }
  }

  /** Downloads the chunk's per-position results (after a forward chunk). */
  flush(): void {
    this.#pipe?.drain();
    for (const p of this.#pending) {
      this.#download(p.layer, this.#dev.get(p.layer)!, p.start, p.rows, this.#pipe === null);
    }
    this.#pending = [];
  }

  #download(layer: number, buf: LayerBuffers, start: number, rows: number, values = true): void {
    const w = this.#width;
    if (values) {
      this.#be.download(this.#values.get(layer)!.subarray(start * w, (start + rows) * w), buf.out);
    }
    if (buf.idx) {
      this.#be.download(this.#indices.get(layer)!.subarray(start * w, (start + rows) * w), buf.idx);
    }
  }

  /** Each layer's result (and torch's indices of min / max over a dimension, when asked). */
  results(): { values: Map<number, HostTensor>; indices: Map<number, HostTensor> } {
    this.flush();
    const values = new Map<number, HostTensor>();
    const indices = new Map<number, HostTensor>();
    for (const [l, v] of this.#values) {
      if (this.#acrossSize) {
        if (this.#L === 0) {
          // torch: the mean of nothing is NaN, its norm 0, and min / max have no identity
          if (this.#reduction === "min" || this.#reduction === "max") {
            throw new MambaByteError(`${this.#reduction} of an empty tensor has no identity`);
          }
          v.fill(this.#reduction === "mean" ? NaN : 0);
        } else {
          const buf = this.#dev.get(l)!;
          this.#be.download(v, buf.out);
          if (buf.idx) this.#be.download(this.#indices.get(l)!, buf.idx);
        }
      }
      values.set(l, { dtype: "float32", shape: this.#shape, data: v });
      const ix = this.#indices.get(l);
      if (ix) indices.set(l, { dtype: "int64", shape: this.#shape, data: ix });
    }
    return { values, indices };
  }

  /** Releases the device buffers (after the downloads in flight). Idempotent. */
  free(): void {
    if (this.#freed) return;
    this.#freed = true;
    this.#pipe?.abandon();
    for (const b of [...this.#dev.values(), ...(this.#shared ? [this.#shared] : [])]) {
      this.#be.free(b.out);
      this.#be.free(b.idx);
      this.#be.free(b.acc);
    }
    this.#dev.clear();
  }
}

/**
 * The cosine similarity over d_inner between discrete-A and the mixer input x for a set of layers,
 * torch.nn.functional.cosine_similarity(dA, x[..., None], dim=-2): (L, d_state) per layer, on the
 * model's backend. {@link push} a layer's in_proj and dt_proj outputs (device pointers) as the
 * forward produces them, {@link flush} after every chunk.
 */
export class InputSimilarityExtraction {
  readonly #be: Backend;
  readonly #lm: MambaByteLM;
  readonly #N: number;
  readonly #out = new Map<number, Float32Array>();
  readonly #dev = new Map<number, Ptr>();
  #pending: { layer: number; start: number; rows: number }[] = [];
  /** Results in flight to the host (on a GPU), else null. */
  readonly #pipe: OverlappedDownloads | null;
  #freed = false;

  /** For `layers` of `lm` over L positions. */
  constructor(lm: MambaByteLM, layers: readonly number[], L: number) {
    this.#lm = lm;
    this.#be = lm.backend;
    this.#N = lm.dims.dState;
    this.#pipe = overlapped(lm);
    const rows = Math.min(Math.max(L, 1), lm.chunkSize);
    try {
      for (const l of layers) {
        this.#out.set(l, new Float32Array(L * this.#N));
        this.#dev.set(l, this.#be.alloc(rows * this.#N * 4));
      }
    } catch (e) {
      this.free();
      throw e;
    }
  }

  /**
   * Enqueues positions [start, start + rows) of a layer: `delta` is dt_proj's output (row stride
   * `ldDelta`), `x` the mixer input x, the first d_inner columns of in_proj's output (row stride
   * `ldx`).
   */
  push(
    layer: number,
    delta: Ptr,
    ldDelta: number,
    x: Ptr,
    ldx: number,
    start: number,
    rows: number,
  ): void {
    const out = this.#dev.get(layer);
    if (!out) throw new Error(`layer ${layer} was not announced`);
    this.#be.discreteAInputSim({
      delta,
      ldDelta,
      A: this.#lm.weights.layers[layer].A.ptr,
      x,
      ldx,
      len: rows,
      d: this.#lm.dims.dInner,
      n: this.#N,
      eps: 1e-8,
      out,
    });
    const N = this.#N;
    const dst = this.#out.get(layer)!.subarray(start * N, (start + rows) * N);
    if (this.#pipe) this.#pipe.push(out, dst, () => {});
    else this.#pending.push({ layer, start, rows });
  }

  /** Downloads the chunk's results. */
  flush(): void {
    this.#pipe?.drain();
    const N = this.#N;
    for (const { layer, start, rows } of this.#pending) {
      this.#be.download(
        this.#out.get(layer)!.subarray(start * N, (start + rows) * N),
        this.#dev.get(layer)!,
      );
    }
    this.#pending = [];
  }

  /** The (L, d_state) result of each layer. */
  results(): Map<number, HostTensor> {
    this.flush();
    const out = new Map<number, HostTensor>();
    for (const [l, v] of this.#out) {
      out.set(l, { dtype: "float32", shape: [v.length / this.#N, this.#N], data: v });
    }
    return out;
  }

  /** Releases the device buffers (after the downloads in flight). Idempotent. */
  free(): void {
    if (this.#freed) return;
    this.#freed = true;
    this.#pipe?.abandon();
    for (const p of this.#dev.values()) this.#be.free(p);
    this.#dev.clear();
  }
}
