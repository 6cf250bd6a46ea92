/**
 * What the two benchmark scripts (bench_cpu.ts, bench_gpu.ts) share: the median of timings and
 * the bytes of weights a decoding step reads (the numerator of their bandwidth rooflines).
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
  const perLayer = 2 * d.dInner * d.dModel + (d.dtRank + 2 * d.dState) * d.dInner +
    d.dInner * d.dtRank + d.dModel * d.dInner;
  const vectors = (d.dInner * (d.dConv + 1 + 1 + 1 + d.dState) + 2 * d.dModel) * 4;
  return d.nLayer * (perLayer * bytesPerWeight + vectors) + (256 + 1) * d.dModel * bytesPerWeight;
}
