/**
 * fp16 twins of a model's fp32 in_proj and out_proj weights, for TF32 products on the fp16 tensor
 * cores (Backend.linearF16): each matrix scaled by its own power of two and rounded once, at load
 * (Backend.toF16Scaled), so that a forward's products make no pass over their weights. fp16 keeps
 * TF32's significand (11 bits) and the scale keeps every value in its range (docs/DESIGN.md,
 * "TF32 products on fp16 operands").
 *
 * Decoding reads them too (half the bytes of a step's fp32 weights), by GEMVs that do not know the
 * scales: the twin holds w 2^e, so its input must carry 2^-e, exactly. in_proj's input is the
 * norm's output, so the norm runs on copies of its weight and bias times 2^-e_in; out_proj's input
 * is y = (C h + D u) silu(z), so x_proj's C rows and D are copied times 2^-e_out (the state h,
 * from B, is untouched). Every product x'_k (2^e w)_k is then x_k w16_k exactly: a step gives the
 * bits of the fp32 weights rounded to fp16's significand ({@link F16Twins.decodeLayer}).
 *
 * @module
 */

import {
  type Backend,
  type DeviceKind,
  envValue,
  offsetPtr,
  type Ptr,
} from "../backend/backend.ts";
import { Tensor } from "../backend/tensor.ts";
import type { ModelDims } from "../config/dims.ts";
import type { ModelWeights } from "./weights.ts";

/** One twin: the fp16 rows and the device int32 holding their exponent. */
export interface F16Weight {
  /** fp16 bits of w * 2^e, (out_f, in_f) dense. */
  w: Ptr;
  /** e (one int32 in backend memory). */
  exp: Ptr;
}

/**
 * Whether a model with fp32 weights and TF32 allowed takes the twins unless told
 * (MambaByteLMOptions.f16Products): on CUDA, unless MAMBABYTE_CUDA_TF32_F16=0.
 */
export function f16ProductsByDefault(kind: DeviceKind): boolean {
  return kind === "cuda" && envValue("MAMBABYTE_CUDA_TF32_F16") !== "0";
}

/** A decoding step's weights of one layer on the twins (the table of "f32-f16io"). */
export interface F16DecodeLayer {
  /** The norm's weight and bias times 2^-e_in (bias null for RMSNorm). */
  normW: Ptr;
  normB: Ptr;
  /** in_proj's twin (fp16 bits of w 2^e_in). */
  inW: Ptr;
  /** x_proj with its C rows times 2^-e_out (fp32). */
  xW: Ptr;
  /** D times 2^-e_out. */
  D: Ptr;
  /** out_proj's twin (fp16 bits of w 2^e_out). */
  outW: Ptr;
}

/** Bytes {@link F16Twins.make} allocates for a model of `dims`. */
export function f16TwinBytes(dims: ModelDims): number {
  const { dModel: d, dInner: di, dState: n, dtRank: r, nLayer } = dims;
  const decode = 4 * (2 * d + (r + 2 * n) * di + di); // the scaled norm, x_proj and D copies
  return (layerStride(dims) + decode) * nLayer + 8 * nLayer;
}

/** A layer's twins, in_proj's rows then out_proj's, padded to 256 bytes (aligned operands). */
function layerStride(dims: ModelDims): number {
  const out = align256(2 * 2 * dims.dInner * dims.dModel);
  return out + align256(2 * dims.dModel * dims.dInner);
}

function align256(bytes: number): number {
  return Math.ceil(bytes / 256) * 256;
}

/** Every layer's in_proj and out_proj twin, in one allocation (freed by {@link F16Twins.free}). */
export class F16Twins {
  readonly #backend: Backend;
  readonly #base: Ptr;
  readonly #dims: ModelDims;
  readonly #decode: { normW: Tensor; normB: Tensor | null; xW: Tensor; D: Tensor }[] = [];
  #freed = false;

  private constructor(backend: Backend, base: Ptr, dims: ModelDims) {
    this.#backend = backend;
    this.#base = base;
    this.#dims = dims;
  }

  /**
   * Converts every layer's fp32 in_proj and out_proj (weights.wdtype must be "f32"), and makes
   * the scaled copies decoding takes with them.
   */
  static make(backend: Backend, weights: ModelWeights, dims: ModelDims): F16Twins {
    if (weights.wdtype !== "f32") throw new Error("fp16 twins are made of fp32 weights");
    const twins = new F16Twins(
      backend,
      backend.alloc(layerStride(dims) * dims.nLayer + 8 * dims.nLayer),
      dims,
    );
    try {
      const { dModel: d, dInner: di } = dims;
      for (let i = 0; i < dims.nLayer; i++) {
        const l = weights.layers[i], a = twins.inProj(i), b = twins.outProj(i);
        backend.toF16Scaled({ x: l.inProj.ptr, rows: 2 * di, cols: d, out: a.w, outExp: a.exp });
        backend.toF16Scaled({ x: l.outProj.ptr, rows: d, cols: di, out: b.w, outExp: b.exp });
      }
      twins.#makeDecodeCopies(weights);
    } catch (e) {
      twins.free();
      throw e;
    }
    return twins;
  }

  /** The exponents (read back once) and the copies scaled by them (exact: powers of two). */
  #makeDecodeCopies(weights: ModelWeights): void {
    const { dInner: di, dState: n, dtRank: r, nLayer } = this.#dims;
    const exps = new Int32Array(2 * nLayer);
    this.#backend.download(exps, this.inProj(0).exp);
    const scaled = (
      t: Tensor,
      scale: number,
      from = 0,
      to = t.shape.reduce((x, y) => x * y, 1),
    ) => {
      const h = t.toHost() as Float32Array;
      for (let k = from; k < to; k++) h[k] *= scale; // a float times 2^-e: exact (no subnormals here)
      return Tensor.fromHost(this.#backend, h, t.shape, "f32");
    };
    for (let i = 0; i < nLayer; i++) {
      const l = weights.layers[i];
      const sIn = Math.pow(2, -exps[2 * i]), sOut = Math.pow(2, -exps[2 * i + 1]);
      this.#decode.push({
        normW: scaled(l.normWeight, sIn),
        normB: l.normBias ? scaled(l.normBias, sIn) : null,
        xW: scaled(l.xProj, sOut, (r + n) * di, (r + 2 * n) * di), // the C rows
        D: scaled(l.D, sOut),
      });
    }
  }

  /** Layer i's in_proj twin, (2 d_inner, d_model). */
  inProj(i: number): F16Weight {
    return this.#at(i, 0);
  }

  /** Layer i's out_proj twin, (d_model, d_inner). */
  outProj(i: number): F16Weight {
    return this.#at(i, 1);
  }

  /** Layer i's weights for a decoding step on the twins. */
  decodeLayer(i: number): F16DecodeLayer {
    const c = this.#decode[i];
    return {
      normW: c.normW.ptr,
      normB: c.normB?.ptr ?? null,
      inW: this.inProj(i).w,
      xW: c.xW.ptr,
      D: c.D.ptr,
      outW: this.outProj(i).w,
    };
  }

  // Layout: layerStride bytes a layer, then the 2 n_layer exponents.
  #at(i: number, which: 0 | 1): F16Weight {
    const { dModel: d, dInner: di, nLayer } = this.#dims;
    const layer = layerStride(this.#dims);
    return {
      w: offsetPtr(this.#base, i * layer + which * align256(2 * 2 * di * d)),
      exp: offsetPtr(this.#base, nLayer * layer + (2 * i + which) * 4),
    };
  }

  /** Frees the twins and the copies (idempotent). */
  free(): void {
    if (this.#freed) return;
    this.#freed = true;
    for (const c of this.#decode) {
      c.normW.free();
      c.normB?.free();
      c.xW.free();
      c.D.free();
    }
    this.#backend.free(this.#base);
  }
}
