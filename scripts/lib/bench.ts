/**
 * What the two benchmark scripts (bench_cpu.ts, bench_gpu.ts) share: the median of timings, the
 * bytes of weights a decoding step reads (the numerator of their bandwidth rooflines) and the
 * matrix-product FLOPs of a position in a forward (the numerator of the GEMM floor).
 *
 * @module
 */

import type { ModelDims } from "../../src/config/dims.ts";

/** The median of `xs` (the upper one of the middle two for an even count). */
export function median(xs: readonly number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.floor(s.length / 2)];
}

/**
 * Bytes of weights one decoding step reads: every matrix once (`bytesPerWeight` each: 4 for fp32,
 * 2 for bf16), one embedding row and the lm_head, and the small fp32 vectors (conv weights and
 * bias, dt_proj bias, A, D, the norms).
 */
export function weightBytesPerStep(d: ModelDims, bytesPerWeight: number): number {
  const vectors = (d.dInner * (d.dConv + 1 + 1 + 1 + d.dState) + 2 * d.dModel) * 4;
  return d.nLayer * (matrixWeightsPerLayer(d) * bytesPerWeight + vectors) +
    (256 + 1) * d.dModel * bytesPerWeight;
}

/** Entries of a layer's four matrices: in_proj, x_proj, dt_proj, out_proj. */
export function matrixWeightsPerLayer(d: ModelDims): number {
  return 2 * d.dInner * d.dModel + (d.dtRank + 2 * d.dState) * d.dInner + d.dInner * d.dtRank +
    d.dModel * d.dInner;
}

/**
 * FLOPs of the matrix products of one position in a forward: a multiply-add per weight of every
 * layer's four matrices and of the lm_head (256 x d_model). At a GEMM rate R (FLOP/s) a forward
 * over L positions cannot take less than L * gemmFlopsPerPosition / R: the GEMM floor.
 */
export function gemmFlopsPerPosition(d: ModelDims): number {
  return 2 * (d.nLayer * matrixWeightsPerLayer(d) + 256 * d.dModel);
}
