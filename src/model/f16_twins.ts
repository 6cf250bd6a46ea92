/**
 * fp16 twins of a model's fp32 in_proj, x_proj and out_proj weights, for TF32 products on the fp16
 * tensor cores (Backend.linearF16): each matrix scaled by its own power of two and rounded once, at
 * load (Backend.toF16Scaled), so that a forward's products make no pass over their weights. fp16
 * keeps TF32's significand (11 bits) and the scale keeps every value in its range (docs/DESIGN.md,
 * "TF32 products on fp16 operands").
 *
 * The forward's operands need exponents too. The norm's comes from a bound of its weight and bias
 * (mb_add_norm_f16), found once here. x_proj's input u = silu(conv(x)) is written by the conv as
 * scaled fp16 rows (Backend.conv1d's outF16Exp) by an exponent found here from a bound of the
 * layer's weights alone ({@link uBound}), so that no pass over u is needed either.
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

/** Int32 exponents a layer keeps (in_proj, out_proj, x_proj, u, the norm, dt_proj; 2 spare). */
const EXPS = 8;

/** The twins a layer holds, in layout order, and where each one's exponent is kept. */
const TWINS = ["in", "out", "x", "dt"] as const;
const TWIN_EXP = { in: 0, out: 1, x: 2, dt: 5 } as const;

/** One twin, named as Backend.linearF16 takes it: the fp16 rows and the device int32 holding
 * their exponent. */
export interface F16Weight {
  /** fp16 bits of w * 2^e, (out_f, in_f) dense. */
  wF16: Ptr;
  /** e (one int32 in backend memory). */
  wExp: Ptr;
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
  return (layerStride(dims) + decode) * nLayer + 4 * EXPS * nLayer;
}

/** Bytes of a layer's twins before each (in_proj's, out_proj's, x_proj's, dt_proj's), and the
 * stride after them. */
function layerOffsets(dims: ModelDims): [number, number, number, number, number] {
  const { dModel: d, dInner: di, dState: n, dtRank: r } = dims;
  const out = align256(2 * 2 * di * d);
  const x = out + align256(2 * d * di);
  const dt = x + align256(2 * (r + 2 * n) * di);
  return [0, out, x, dt, dt + align256(2 * di * r)];
}

/** A layer's twins, padded to 256 bytes each (aligned operands). */
function layerStride(dims: ModelDims): number {
  return layerOffsets(dims)[4];
}

/**
 * A bound of |u| = |silu(conv(x))| over every position a layer's forward can see, from its
 * weights alone: the norm's rows are at most sqrt(d) max|w| + max|b| in magnitude (mb_add_norm_f16's
 * bound), so in_proj's x is at most d max|W_in| that + max|b_in| (max|W_in| < 2^(15 - e_in), from
 * in_proj's twin), the conv's sum at most max_c(|b_c| + sum_j |w_cj| x), and |silu(v)| <= |v|.
 * Doubled for the fp16 rounding of the norm's rows and of in_proj's operands. Loose by the ratio of
 * max|W_in| to a row's mean magnitude (~5-10x), which costs fp16 no precision: a value keeps 11
 * significant bits down to 2^-28 of the bound.
 */
export function uBound(
  d: number,
  eIn: number,
  norm: { w: Float32Array; b: Float32Array | null },
  inBias: Float32Array | null,
  conv: { w: Float32Array; b: Float32Array | null; k: number },
): number {
  const amax = (a: Float32Array | null) => a ? a.reduce((m, v) => Math.max(m, Math.abs(v)), 0) : 0;
  const normBound = Math.sqrt(d) * amax(norm.w) + amax(norm.b);
  const x = d * Math.pow(2, 15 - eIn) * normBound + amax(inBias);
  let pre = 0; // the largest |conv sum| a channel can reach
  for (let c = 0; c * conv.k < conv.w.length; c++) {
    let taps = 0;
    for (let j = 0; j < conv.k; j++) taps += Math.abs(conv.w[c * conv.k + j]);
    pre = Math.max(pre, (conv.b ? Math.abs(conv.b[c]) : 0) + taps * x);
  }
  return 2 * pre;
}

/**
 * The exponent e that puts `bound` in [2^14, 2^15) (mb_to_f16_scaled's rule, f16.h's
 * mbcpu_f16_scale_exp); 0 for a bound that is 0 or not finite (the values then pass unscaled).
 */
export function f16ScaleExp(bound: number): number {
  if (!(bound > 0) || !Number.isFinite(bound)) return 0;
  let E = Math.floor(Math.log2(bound)) + 1; // bound = m 2^E, m in [0.5, 1)
  while (bound >= Math.pow(2, E)) E++;
  while (bound < Math.pow(2, E - 1)) E--;
  return 15 - E;
}

/** A layer norm's weight and bias on the host (bias null for RMSNorm). */
interface HostNorm {
  w: Float32Array;
  b: Float32Array | null;
}

/** A tensor's fp32 values on the host, or null for none. */
function hostF32(t: Tensor | null): Float32Array | null {
  return t ? t.toHost() as Float32Array : null;
}

function align256(bytes: number): number {
  return Math.ceil(bytes / 256) * 256;
}

/**
 * Every layer's in_proj, out_proj, x_proj and dt_proj twin and their exponents, in one allocation,
 * and the scaled copies decoding takes (freed by {@link F16Twins.free}).
 */
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
   * Converts every layer's fp32 in_proj, out_proj, x_proj and dt_proj (weights.wdtype must be
   * "f32"), finds the forward's exponents, and makes the scaled copies decoding takes with them.
   */
  static make(backend: Backend, weights: ModelWeights, dims: ModelDims): F16Twins {
    if (weights.wdtype !== "f32") throw new Error("fp16 twins are made of fp32 weights");
    const twins = new F16Twins(
      backend,
      backend.alloc(layerStride(dims) * dims.nLayer + 4 * EXPS * dims.nLayer),
      dims,
    );
    try {
      const { dModel: d, dInner: di, dState: n, dtRank: r } = dims;
      const twin = (w: Ptr, rows: number, cols: number, t: F16Weight) =>
        backend.toF16Scaled({ x: w, rows, cols, out: t.wF16, outExp: t.wExp });
      for (let i = 0; i < dims.nLayer; i++) {
        const l = weights.layers[i];
        twin(l.inProj.ptr, 2 * di, d, twins.inProj(i));
        twin(l.outProj.ptr, d, di, twins.outProj(i));
        twin(l.xProj.ptr, r + 2 * n, di, twins.xProj(i));
        twin(l.dtProj.ptr, di, r, twins.dtProj(i));
      }
      const exps = new Int32Array(EXPS * dims.nLayer);
      backend.download(exps, twins.#exp(0, 0));
      // each norm's weight and bias downloaded once, for u's bound and for decoding's copies
      const norms = weights.layers.map((l) => ({
        w: hostF32(l.normWeight)!,
        b: hostF32(l.normBias),
      }));
      twins.#makeForwardExps(weights, exps, norms);
      twins.#makeDecodeCopies(weights, exps, norms);
    } catch (e) {
      twins.free();
      throw e;
    }
    return twins;
  }

  /** Each layer's exponent of u (from {@link uBound}) and of its norm's rows (a one-row call). */
  #makeForwardExps(weights: ModelWeights, exps: Int32Array, norms: HostNorm[]): void {
    const be = this.#backend, { dModel: d, dConv: k, nLayer } = this.#dims;
    const rows = be.alloc(3 * d * 4); // x, residual, the fp16 row
    try {
      for (let i = 0; i < nLayer; i++) {
        const l = weights.layers[i];
        const e = f16ScaleExp(uBound(
          d,
          exps[EXPS * i],
          norms[i],
          hostF32(l.inProjBias),
          { w: hostF32(l.convWeight)!, b: hostF32(l.convBias), k },
        ));
        be.upload(this.uExp(i), new Int32Array([e]));
        be.upload(rows, new Float32Array(2 * d));
        be.addNormF16({
          x: rows,
          residual: offsetPtr(rows, d * 4),
          accumulate: false,
          weight: l.normWeight.ptr,
          bias: l.normBias?.ptr ?? null,
          normKind: "layernorm", // the exponent depends on the weight and bias alone
          eps: 1e-5,
          n: 1,
          d,
          outF16: offsetPtr(rows, 2 * d * 4),
          outExp: this.normExp(i),
        });
      }
    } finally {
      be.free(rows);
    }
  }

  /** The copies scaled by the exponents (exact: powers of two). */
  #makeDecodeCopies(weights: ModelWeights, exps: Int32Array, norms: HostNorm[]): void {
    const { dInner: di, dState: n, dtRank: r, nLayer } = this.#dims;
    // values of t (h: on the host, changed here) times scale in [from, to), as a new tensor
    const scaled = (t: Tensor, h: Float32Array, scale: number, from = 0, to = h.length) => {
      for (let k = from; k < to; k++) h[k] *= scale; // a float times 2^-e: exact (no subnormals here)
      return Tensor.fromHost(this.#backend, h, t.shape, "f32");
    };
    for (let i = 0; i < nLayer; i++) {
      const l = weights.layers[i], norm = norms[i];
      const sIn = Math.pow(2, -exps[EXPS * i]), sOut = Math.pow(2, -exps[EXPS * i + 1]);
      this.#decode.push({
        normW: scaled(l.normWeight, norm.w.slice(), sIn),
        normB: l.normBias && norm.b ? scaled(l.normBias, norm.b.slice(), sIn) : null,
        xW: scaled(l.xProj, hostF32(l.xProj)!, sOut, (r + n) * di, (r + 2 * n) * di), // the C rows
        D: scaled(l.D, hostF32(l.D)!, sOut),
      });
    }
  }

  /** Layer i's in_proj twin, (2 d_inner, d_model). */
  inProj(i: number): F16Weight {
    return this.#at(i, "in");
  }

  /** Layer i's out_proj twin, (d_model, d_inner). */
  outProj(i: number): F16Weight {
    return this.#at(i, "out");
  }

  /** Layer i's x_proj twin, (dt_rank + 2 d_state, d_inner). */
  xProj(i: number): F16Weight {
    return this.#at(i, "x");
  }

  /** Layer i's dt_proj twin, (d_inner, dt_rank). */
  dtProj(i: number): F16Weight {
    return this.#at(i, "dt");
  }

  /** The exponent of layer i's u as the conv writes it for x_proj's twin (one device int32). */
  uExp(i: number): Ptr {
    return this.#exp(i, 3);
  }

  /** The exponent of layer i's norm's scaled fp16 rows (addNormF16 with expGiven). */
  normExp(i: number): Ptr {
    return this.#exp(i, 4);
  }

  /** Layer i's weights for a decoding step on the twins. */
  decodeLayer(i: number): F16DecodeLayer {
    const c = this.#decode[i];
    return {
      normW: c.normW.ptr,
      normB: c.normB?.ptr ?? null,
      inW: this.inProj(i).wF16,
      xW: c.xW.ptr,
      D: c.D.ptr,
      outW: this.outProj(i).wF16,
    };
  }

  // Layout: layerStride bytes a layer, then EXPS exponents a layer.
  #at(i: number, which: typeof TWINS[number]): F16Weight {
    const offsets = layerOffsets(this.#dims);
    return {
      wF16: offsetPtr(this.#base, i * offsets[4] + offsets[TWINS.indexOf(which)]),
      wExp: this.#exp(i, TWIN_EXP[which]),
    };
  }

  #exp(i: number, which: number): Ptr {
    const { nLayer } = this.#dims;
    return offsetPtr(this.#base, nLayer * layerStride(this.#dims) + (EXPS * i + which) * 4);
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
