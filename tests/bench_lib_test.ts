/**
 * The benchmarks' shared counts (scripts/lib/bench.ts) against sums written out by hand for the
 * paper's 972M shape (d_model 1792, 48 layers, d_state 16, expand 2, dt_rank 112), and the GEMM
 * floor's rate measured on a model.
 */
import assert from "node:assert/strict";
import {
  gemmFlopsPerPosition,
  inProjRate,
  matrixWeightsPerLayer,
  median,
  stateBytesPerStep,
  stepBytes,
  weightBytesPerStep,
} from "../scripts/lib/bench.ts";
import { loadModel } from "../mod.ts";
import { DIMS_972M } from "./helpers/shapes.ts";

Deno.test("matrix weights and GEMM FLOPs per position, 972M shape", () => {
  assert.equal(DIMS_972M.dInner, 3584);
  assert.equal(DIMS_972M.dtRank, 112);
  // in_proj 7168 x 1792, x_proj 144 x 3584, dt_proj 3584 x 112, out_proj 1792 x 3584
  const perLayer = 12_845_056 + 516_096 + 401_408 + 6_422_528;
  assert.equal(matrixWeightsPerLayer(DIMS_972M), perLayer);
  // a multiply-add per weight of 48 layers and of the 256 x 1792 lm_head
  assert.equal(gemmFlopsPerPosition(DIMS_972M), 2 * (48 * perLayer + 458_752));
  // 8192 positions: the 15.9 TFLOP of docs/cuda_notes.md
  assert.equal(Math.round(8192 * gemmFlopsPerPosition(DIMS_972M) / 1e11) / 10, 15.9);
});

Deno.test("weight bytes per decoding step count the matrices once, bf16 and fp32", () => {
  const perLayer = matrixWeightsPerLayer(DIMS_972M);
  const vectors = (3584 * (4 + 3 + 16) + 2 * 1792) * 4;
  assert.equal(weightBytesPerStep(DIMS_972M, 2), 48 * (perLayer * 2 + vectors) + 257 * 1792 * 2);
  assert.equal(weightBytesPerStep(DIMS_972M, 4), 48 * (perLayer * 4 + vectors) + 257 * 1792 * 4);
  // fp32 on the fp16 twins: in_proj (7168 x 1792) and out_proj (1792 x 3584) at 2 bytes a weight
  const inOut = 12_845_056 + 6_422_528;
  assert.equal(
    weightBytesPerStep(DIMS_972M, 4, true),
    48 * (perLayer * 4 - inOut * 2 + vectors) + 257 * 1792 * 4,
  );
});

Deno.test("a decoding step's bytes add each sequence's state, read and written", () => {
  // 48 layers x 3584 channels x (16 SSM states + 3 conv taps) x 4 bytes, read and written
  const perSequence = 2 * 48 * 3584 * (16 + 3) * 4;
  assert.equal(perSequence, 26_148_864);
  assert.equal(stateBytesPerStep(DIMS_972M, 1), perSequence);
  assert.equal(stateBytesPerStep(DIMS_972M, 64), 64 * perSequence);
  assert.equal(stepBytes(DIMS_972M, 2, 64), weightBytesPerStep(DIMS_972M, 2) + 64 * perSequence);
  // at the 4.2 TB/s copy rate (bytes read + written): the ~74,000 bytes/s of issue 13's batch-64
  // roofline, where the weights alone would give ~138,000
  const rate = (b: number) => 4.2e12 / stepBytes(DIMS_972M, 2, b) * b;
  assert.ok(Math.abs(rate(64) - 74_000) < 1_000, `${rate(64)}`);
  assert.ok(Math.abs(4.2e12 / weightBytesPerStep(DIMS_972M, 2) * 64 - 138_000) < 1_000);
});

Deno.test("median: the middle value, the upper middle for an even count", () => {
  assert.equal(median([3, 1, 2]), 2);
  assert.equal(median([4, 1, 3, 2]), 3);
});

Deno.test("inProjRate: the model's in_proj rate, a positive finite FLOP/s (CPU, tiny)", async () => {
  const model = await loadModel({
    configPath: new URL("../configs/mambabyte_lm.yml", import.meta.url).pathname,
    modelId: "tiny",
    device: "cpu",
    seed: 1,
  });
  try {
    const rate = inProjRate(model, 64);
    assert.ok(Number.isFinite(rate) && rate > 0, `rate ${rate}`);
  } finally {
    model.close();
  }
});
