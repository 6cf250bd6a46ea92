/**
 * Decoding on the fp16 twins (fp32 weights with TF32 allowed): in_proj and out_proj read fp16
 * copies of w 2^e while their inputs carry 2^-e (the norm's and x_proj's C rows' and D's scaled
 * copies), so every product is x_k w16_k exactly and a step gives the bits of the fp32 weights
 * rounded to fp16's significand. Held here on the CPU (which runs the same tables when asked),
 * bit for bit against a model whose in_proj and out_proj were rounded so; on a GPU, its steps
 * against the CPU's within fp32's tolerance, and decodeLayers against the per-op steps, bit for bit.
 */
import assert from "node:assert/strict";
import { loadModel } from "../mod.ts";
import type { Backend } from "../src/backend/backend.ts";
import { Tensor } from "../src/backend/tensor.ts";
import { maxRelError } from "./helpers/compare.ts";
import { gpuPresent, stepLogits } from "./helpers/decode_steps.ts";
import { fromF16 } from "./helpers/f16.ts";

const CONFIG = new URL("../configs/mambabyte_lm.yml", import.meta.url).pathname;
const TEXT = new TextEncoder().encode("KING RICHARD III:\nNow is the winter of our discontent");

function load(device: "cpu" | "cuda", f16Products: boolean, decodeLayers = true) {
  return loadModel({
    configPath: CONFIG,
    modelId: "test-64x3",
    seed: 5,
    device,
    f16Products,
    decodeLayers,
  });
}

/** A weight rounded as its twin rounds it: fp16 of w 2^e (mb_to_f16_scaled), times 2^-e. */
function roundedAsTwin(be: Backend, w: Tensor): Float32Array {
  const [rows, cols] = w.shape;
  const bits = Tensor.empty(be, "bf16", [rows, cols]), exp = Tensor.zeros(be, "i32", [1]);
  try {
    be.toF16Scaled({ x: w.ptr, rows, cols, out: bits.ptr, outExp: exp.ptr });
    const h = bits.toHost() as Uint16Array, e = (exp.toHost() as Int32Array)[0];
    return Float32Array.from(h, (v) => fromF16(v) * 2 ** -e);
  } finally {
    bits.free();
    exp.free();
  }
}

Deno.test("decoding on the fp16 twins is the fp16-rounded weights' decoding, bit for bit (CPU)", async () => {
  const twins = await load("cpu", true), perOp = await load("cpu", true, false);
  const ref = await load("cpu", false);
  try {
    assert.equal(twins.f16Products, true);
    for (const l of ref.weights.layers) { // the reference: in_proj and out_proj rounded so
      ref.backend.upload(l.inProj.ptr, roundedAsTwin(ref.backend, l.inProj));
      ref.backend.upload(l.outProj.ptr, roundedAsTwin(ref.backend, l.outProj));
    }
    for (const batch of [1, 3]) {
      const a = stepLogits(twins, TEXT, batch),
        b = stepLogits(perOp, TEXT, batch),
        c = stepLogits(ref, TEXT, batch);
      a.forEach((row, t) => {
        assert.deepEqual(row, c[t], `batch ${batch}, step ${t}: twins against rounded weights`);
        assert.deepEqual(row, b[t], `batch ${batch}, step ${t}: decodeLayers against the ops`);
      });
    }
    // and not the fp32 weights' (the rounding is real)
    const plain = await load("cpu", false);
    try {
      assert.ok(maxRelError(stepLogits(twins, TEXT)[5], stepLogits(plain, TEXT)[5]) > 0);
    } finally {
      plain.close();
    }
  } finally {
    twins.close();
    perOp.close();
    ref.close();
  }
});

Deno.test({
  name: "cuda decoding on the fp16 twins: the CPU's within fp32's tolerance, the ops' bits",
  ignore: !gpuPresent(),
  async fn() {
    const gpu = await load("cuda", true), ops = await load("cuda", true, false);
    const cpu = await load("cpu", true);
    try {
      assert.equal(gpu.f16Products, true);
      for (const batch of [1, 3]) {
        const a = stepLogits(gpu, TEXT, batch),
          b = stepLogits(ops, TEXT, batch),
          c = stepLogits(cpu, TEXT, batch);
        a.forEach((row, t) => {
          assert.deepEqual(row, b[t], `batch ${batch}, step ${t}: decodeLayers against the ops`);
          const e = maxRelError(row, c[t]);
          assert.ok(e < 1e-4, `batch ${batch}, step ${t}: ${e} against the CPU`);
        });
      }
      const [g] = await gpu.generate(TEXT.subarray(0, 20), { maxNewTokens: 24, topK: 1 });
      const [h] = await cpu.generate(TEXT.subarray(0, 20), { maxNewTokens: 24, topK: 1 });
      assert.deepEqual(g, h, "greedy bytes");
    } finally {
      gpu.close();
      ops.close();
      cpu.close();
    }
  },
});
