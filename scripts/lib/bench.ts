/**
 * What the benchmark scripts (bench_cpu.ts, bench_gpu.ts, bench_extract.ts) share: the median of
 * timings, the bytes a decoding step reads and writes (its weights and its state: the numerator
 * of their bandwidth rooflines), the matrix-product FLOPs of a position in a forward (the
 * numerator of the GEMM floor) and the rate of the model's own largest product (its denominator).
 *
 * @module
 */

import type { ModelDims } from "../../src/config/dims.ts";
import type { MambaByteLM } from "../../src/model/model.ts";
import { RecurrentState } from "../../src/model/workspace.ts";

/** The median of `xs` (the upper one of the middle two for an even count). */
export function median(xs: readonly number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.floor(s.length / 2)];
}

/**
 * `len` seeded printable bytes (32..126, a linear congruential generator from `seed`):
 * bench:extract's input when no PG19 sample 860 is at hand, and tools/device/extract_gap.ts's.
 */
export function printableBytes(len: number, seed = 860): Uint8Array {
  let s = seed;
  return new Uint8Array(len).map(() => {
    s = (s * 1103515245 + 12345) >>> 0;
    return 32 + (s >>> 16) % 95;
  });
}

/**
 * The benchmarks' forward input: `len` printable bytes (32..121) in a fixed stride pattern, the
 * prompt of bench:gpu's and bench:cpu's forwards and of the tools/device probes that compare with
 * them.
 */
export function strideBytes(len: number): Uint8Array {
  return new Uint8Array(len).map((_, i) => 32 + (i * 7) % 90);
}

/**
 * Bytes of weights one decoding step reads: every matrix once (`bytesPerWeight` each: 4 for fp32,
 * 2 for bf16), one embedding row and the lm_head, and the small fp32 vectors (conv weights and
 * bias, dt_proj bias, A, D, the norms). `f16Twins`: fp32 weights decoded on their fp16 twins
 * (TF32 allowed, batch <= 8), so in_proj and out_proj are read at 2 bytes a weight.
 */
export function weightBytesPerStep(d: ModelDims, bytesPerWeight: number, f16Twins = false): number {
  const vectors = (d.dInner * (d.dConv + 1 + 1 + 1 + d.dState) + 2 * d.dModel) * 4;
  const twinSaving = f16Twins ? inOutWeightsPerLayer(d) * (bytesPerWeight - 2) : 0;
  return d.nLayer * (matrixWeightsPerLayer(d) * bytesPerWeight - twinSaving + vectors) +
    (256 + 1) * d.dModel * bytesPerWeight;
}

/**
 * Bytes of recurrent state one decoding step of `batch` sequences moves: the state the model holds
 * for them (every layer's SSM state and conv window, fp32: `RecurrentState.bytes`), read and
 * written once. At batch 64 on the 972M shape that is 1.67 GB, 0.86 of the bf16 weights' bytes.
 */
export function stateBytesPerStep(d: ModelDims, batch: number): number {
  return 2 * RecurrentState.bytes(d, batch);
}

/**
 * Bytes a decoding step of `batch` sequences must move at the least: its weights once and its
 * state read and written (the numerator of the decoding rooflines, with a copy's bandwidth
 * counting bytes read plus written).
 */
export function stepBytes(
  d: ModelDims,
  bytesPerWeight: number,
  batch: number,
  f16Twins = false,
): number {
  return weightBytesPerStep(d, bytesPerWeight, f16Twins) + stateBytesPerStep(d, batch);
}

/** Entries of a layer's four matrices: in_proj, x_proj, dt_proj, out_proj. */
export function matrixWeightsPerLayer(d: ModelDims): number {
  return 2 * d.dInner * d.dModel + (d.dtRank + 2 * d.dState) * d.dInner + d.dInner * d.dtRank +
    d.dModel * d.dInner;
}

/** Entries of a layer's in_proj and out_proj (the matrices the fp16 twins hold). */
export function inOutWeightsPerLayer(d: ModelDims): number {
  return 3 * d.dInner * d.dModel;
}

/**
 * FLOPs of the matrix products of one position in a forward: a multiply-add per weight of every
 * layer's four matrices and of the lm_head (256 x d_model). At a GEMM rate R (FLOP/s) a forward
 * over L positions cannot take less than L * gemmFlopsPerPosition / R: the GEMM floor.
 */
export function gemmFlopsPerPosition(d: ModelDims): number {
  return 2 * (d.nLayer * matrixWeightsPerLayer(d) + 256 * d.dModel);
}

/**
 * FLOP/s of layer 0's in_proj (the forward's largest product) over `rows` positions, with the
 * model's weights, backend and TF32 setting (bf16 weights on CUDA: a bf16 input, the product
 * alone, as the forward runs it): the median of 5 samples after one call (a sample: 8 calls on a
 * GPU, 1 on the CPU). A forward over L positions takes at least L * gemmFlopsPerPosition /
 * inProjRate: the GEMM floor.
 */
export function inProjRate(model: MambaByteLM, rows: number): number {
  const be = model.backend;
  const { dModel: dm, dInner: di } = model.dims;
  const x = be.alloc(rows * dm * 4);
  const y = be.alloc(rows * 2 * di * 4);
  try {
    be.memset(x, 0x3c, rows * dm * 4); // 0x3c3c3c3c: ~0.0115 in every element (bf16 too)
    const product = {
      x,
      w: model.weights.layers[0].inProj.ptr,
      wdtype: model.weights.wdtype,
      bias: null,
      n: rows,
      inF: dm,
      outF: 2 * di,
      y,
    };
    const call = () => model.bf16Activations ? be.linearBf16(product) : be.linear(product);
    call();
    // on a GPU a sample times PER calls between two syncs, so that the launch and the sync (tens
    // of us, where the product takes a few hundred) weigh little
    const PER = be.kind === "cuda" ? 8 : 1;
    const times: number[] = [];
    for (let i = 0; i < 5; i++) {
      be.sync();
      const t0 = performance.now();
      for (let j = 0; j < PER; j++) call();
      be.sync();
      times.push((performance.now() - t0) / 1000 / PER);
    }
    return 2 * rows * dm * 2 * di / median(times);
  } finally {
    be.free(x);
    be.free(y);
  }
}
