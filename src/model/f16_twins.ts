/**
 * fp16 twins of a model's fp32 in_proj and out_proj weights, for TF32 products on the fp16 tensor
 * cores (Backend.linearF16): each matrix scaled by its own power of two and rounded once, at load
 * (Backend.toF16Scaled), so that a forward's products make no pass over their weights. fp16 keeps
 * TF32's significand (11 bits) and the scale keeps every value in its range (docs/DESIGN.md,
 * "TF32 products on fp16 operands").
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

/** Bytes {@link F16Twins.make} allocates for a model of `dims`. */
export function f16TwinBytes(dims: ModelDims): number {
  return layerStride(dims) * dims.nLayer + 8 * dims.nLayer;
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
  #freed = false;

  private constructor(backend: Backend, base: Ptr, dims: ModelDims) {
    this.#backend = backend;
    this.#base = base;
    this.#dims = dims;
  }

  /** Converts every layer's fp32 in_proj and out_proj (weights.wdtype must be "f32"). */
  static make(backend: Backend, weights: ModelWeights, dims: ModelDims): F16Twins {
    if (weights.wdtype !== "f32") throw new Error("fp16 twins are made of fp32 weights");
    const twins = new F16Twins(backend, backend.alloc(f16TwinBytes(dims)), dims);
    try {
      const { dModel: d, dInner: di } = dims;
      for (let i = 0; i < dims.nLayer; i++) {
        const l = weights.layers[i], a = twins.inProj(i), b = twins.outProj(i);
        backend.toF16Scaled({ x: l.inProj.ptr, rows: 2 * di, cols: d, out: a.w, outExp: a.exp });
        backend.toF16Scaled({ x: l.outProj.ptr, rows: d, cols: di, out: b.w, outExp: b.exp });
      }
    } catch (e) {
      twins.free();
      throw e;
    }
    return twins;
  }

  /** Layer i's in_proj twin, (2 d_inner, d_model). */
  inProj(i: number): F16Weight {
    return this.#at(i, 0);
  }

  /** Layer i's out_proj twin, (d_model, d_inner). */
  outProj(i: number): F16Weight {
    return this.#at(i, 1);
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

  /** Frees the twins (idempotent). */
  free(): void {
    if (this.#freed) return;
    this.#freed = true;
    this.#backend.free(this.#base);
  }
}
