/**
 * Decoding on the fp16 twins (fp32 weights with TF32 allowed): in_proj and out_proj read fp16
 * copies of w 2^e while their inputs carry 2^-e (the norm's and x_proj's C rows' and D's scaled
 * copies), so every product is x_k w16_k exactly and a step gives the bits of the fp32 weights
 * rounded to fp16's significand. Held here on the CPU (which runs the same tables when asked),
 * bit for bit against a model whose in_proj and out_proj were rounded so; on a GPU, its steps
 * against the CPU's within fp32's tolerance, and decodeLayers against the per-op steps, bit for bit.
 */
import assert from "node:assert/strict";
import { loadModel, type MambaByteLM } from "../mod.ts";
import { type Backend, cudaDeviceCount, hasCuda } from "../src/backend/backend.ts";
import { Tensor } from "../src/backend/tensor.ts";
import { maxRelError } from "./helpers/compare.ts";

const CONFIG = new URL("../configs/mambabyte_lm.yml", import.meta.url).pathname;
const TEXT = new TextEncoder().encode("KING RICHARD III:\nNow is the winter of our discontent");

function gpuPresent(): boolean {
  try {
    return hasCuda() && cudaDeviceCount() > 0;
  } catch {
    return false;
  }
}

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

/** Each step's logits over TEXT, one sequence (or `batch`, fed the text shifted by b). */
function stepLogits(model: MambaByteLM, batch = 1): Float32Array[] {
  const ws = model.newWorkspace(batch), state = model.newState(batch);
  const out: Float32Array[] = [];
  try {
    for (let t = 0; t < TEXT.length; t++) {
      const ids = Int32Array.from({ length: batch }, (_, b) => TEXT[(t + b) % TEXT.length]);
      model.backend.upload(ws.ids.ptr, ids);
      model.embed(ws, batch);
      model.stepLayers(ws, state, batch);
      model.runHead(ws, batch);
      const row = new Float32Array(batch * 256);
      model.backend.download(row, ws.logits.ptr);
      out.push(row);
    }
  } finally {
    ws.free();
    state.free();
  }
  return out;
}

/** fp16 bits -> number. */
function f16(h: number): number {
  const e = (h >> 10) & 31, m = h & 1023, s = h & 0x8000 ? -1 : 1;
  if (e === 0) return s * m * 2 ** -24;
  if (e === 31) return m ? NaN : s * Infinity;
  return s * (1024 + m) * 2 ** (e - 25);
}

/** A weight rounded as its twin rounds it: fp16 of w 2^e (mb_to_f16_scaled), times 2^-e. */
function roundedAsTwin(be: Backend, w: Tensor): Float32Array {
  const [rows, cols] = w.shape;
  const bits = Tensor.empty(be, "bf16", [rows, cols]), exp = Tensor.zeros(be, "i32", [1]);
  try {
    be.toF16Scaled({ x: w.ptr, rows, cols, out: bits.ptr, outExp: exp.ptr });
    const h = bits.toHost() as Uint16Array, e = (exp.toHost() as Int32Array)[0];
    return Float32Array.from(h, (v) => f16(v) * 2 ** -e);
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
      const a = stepLogits(twins, batch), b = stepLogits(perOp, batch), c = stepLogits(ref, batch);
      a.forEach((row, t) => {
        assert.deepEqual(row, c[t], `batch ${batch}, step ${t}: twins against rounded weights`);
        assert.deepEqual(row, b[t], `batch ${batch}, step ${t}: decodeLayers against the ops`);
      });
    }
    // and not the fp32 weights' (the rounding is real)
    const plain = await load("cpu", false);
    try {
      assert.ok(maxRelError(stepLogits(twins)[5], stepLogits(plain)[5]) > 0);
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
        const a = stepLogits(gpu, batch), b = stepLogits(ops, batch), c = stepLogits(cpu, batch);
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
