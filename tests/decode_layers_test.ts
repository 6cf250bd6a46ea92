/**
 * Backend.decodeLayers (mb_decode_layers): every layer of a decoding step in one call gives the
 * bits of the five calls a layer that stepLayers makes otherwise, for batch 1 and 3, fp32 and bf16
 * weights, LayerNorm and RMSNorm, on the CPU and (where there is one) on the GPU; generation is
 * byte for byte the same; bad tables are refused. csrc/tests/cuda_vs_cpu.c holds the GPU's call
 * to the CPU's on other shapes (972M's among them), in graphs too.
 */
import assert from "node:assert/strict";
import { loadModel, type MambaByteLM } from "../mod.ts";
import { DecodeLayerPtr, NativeError, Status } from "../src/native/lib.ts";
import type { RecurrentState, Workspace } from "../src/model/workspace.ts";
import { gpuPresent, stepLogits } from "./helpers/decode_steps.ts";

const CONFIG = new URL("../configs/mambabyte_lm.yml", import.meta.url).pathname;
const TEXT = new TextEncoder().encode("Every layer in one call — ÆØÅ ünïcödé 0123.\n".repeat(2));

const DEVICES: ("cpu" | "cuda")[] = gpuPresent() ? ["cpu", "cuda"] : ["cpu"];
if (DEVICES.length === 1) console.warn("decode_layers_test: no GPU: the CUDA cases are skipped");

function load(
  device: "cpu" | "cuda",
  dtype: "fp32" | "bf16",
  decodeLayers: boolean,
  modelId = "test-64x3",
): Promise<MambaByteLM> {
  return loadModel({ configPath: CONFIG, modelId, device, seed: 11, dtype, decodeLayers });
}

for (const device of DEVICES) {
  for (const dtype of ["fp32", "bf16"] as const) {
    Deno.test(`decodeLayers gives the per-op steps' bits: ${device}, ${dtype}, batch 1 and 3`, async () => {
      const one = await load(device, dtype, true), ops = await load(device, dtype, false);
      try {
        for (const batch of [1, 3]) {
          const a = stepLogits(one, TEXT, batch), b = stepLogits(ops, TEXT, batch);
          a.forEach((row, t) => assert.deepEqual(row, b[t], `batch ${batch}, step ${t}`));
        }
      } finally {
        one.close();
        ops.close();
      }
    });
  }

  Deno.test(`decodeLayers gives the per-op steps' bits: RMSNorm (a transformers checkpoint): ${device}`, async () => {
    const opts = {
      configPath: CONFIG,
      modelId: "test-48x2",
      checkpoint: new URL("./fixtures/rms_hf", import.meta.url).pathname,
      device,
    };
    const one = await loadModel(opts), ops = await loadModel({ ...opts, decodeLayers: false });
    try {
      assert.equal(one.weights.normKind, "rmsnorm");
      const a = stepLogits(one, TEXT, 1), b = stepLogits(ops, TEXT, 1);
      a.forEach((row, t) => assert.deepEqual(row, b[t], `step ${t}`));
    } finally {
      one.close();
      ops.close();
    }
  });

  Deno.test(`decodeLayers: generation is byte for byte the per-op steps' (trained small): ${device}`, async () => {
    // generation replays its steps as CUDA graphs
    const one = await loadModel({ configPath: CONFIG, modelId: "small", device });
    const ops = await loadModel({
      configPath: CONFIG,
      modelId: "small",
      device,
      decodeLayers: false,
    });
    try {
      const prompt = TEXT.subarray(0, 20);
      for (const opts of [{ topK: 1 }, { temperature: 0.9, topP: 0.95, seed: 5 }]) {
        const [x] = await one.generate(prompt, { maxNewTokens: 48, ...opts });
        const [y] = await ops.generate(prompt, { maxNewTokens: 48, ...opts });
        assert.deepEqual(x, y, JSON.stringify(opts));
      }
    } finally {
      one.close();
      ops.close();
    }
  });
}

/** Runs `fn` on a CPU fp32 model with a one-sequence workspace and state, then frees them. */
async function withOneSequence(
  fn: (model: MambaByteLM, ws: Workspace, state: RecurrentState) => void,
): Promise<void> {
  const model = await load("cpu", "fp32", true);
  const ws = model.newWorkspace(1), state = model.newState(1);
  try {
    fn(model, ws, state);
  } finally {
    ws.free();
    state.free();
    model.close();
  }
}

Deno.test("mb_decode_layers refuses a table with a missing weight, naming the layer", async () => {
  await withOneSequence((model, ws, state) => {
    const table = state.decodeTable(model.weights);
    assert.ok(table, "a one-sequence state carries its table");
    const host = table.slice();
    host[1 * DecodeLayerPtr.PTRS + DecodeLayerPtr.IN_W] = 0n; // layer 1's in_proj
    assert.throws(
      () => model.backend.decodeLayers(model.decodeLayersArgs(ws, host, 1)),
      (e: unknown) =>
        e instanceof NativeError && e.status === Status.INVALID &&
        /layer 1: pointer 2/.test(e.message),
    );
  });
});

Deno.test("decodeLayers refuses a table of the wrong length before the native call", async () => {
  await withOneSequence((model, ws, state) => {
    const table = state.decodeTable(model.weights)!;
    for (
      const layers of [table.subarray(0, table.length - 1), new BigUint64Array(table.length + 15)]
    ) {
      assert.throws(
        () => model.backend.decodeLayers(model.decodeLayersArgs(ws, layers, 1)),
        /decodeLayers: a table of \d+ pointers for 3 layers \(needs 45\)/,
      );
    }
  });
});

Deno.test("steps of more than 8 sequences keep the ops; of up to 8, one decodeLayers call", async () => {
  const model = await load("cpu", "fp32", true);
  const be = model.backend;
  const calls: number[] = [];
  const original = be.decodeLayers.bind(be);
  be.decodeLayers = (a) => {
    calls.push(a.batch);
    original(a);
  };
  try {
    for (const batch of [9, 8, 1]) {
      const state = model.newState(batch), ws = model.newWorkspace(batch);
      try {
        assert.ok(state.decodeTable(model.weights), `batch ${batch}: a table`);
        be.upload(ws.ids.ptr, new Int32Array(batch).fill(65));
        model.embed(ws, batch);
        model.stepLayers(ws, state, batch);
      } finally {
        state.free();
        ws.free();
      }
    }
    assert.deepEqual(calls, [8, 1]);
  } finally {
    model.close();
  }
});

Deno.test("mb_verify_layers and mb_resume_layers refuse a bad length or a missing state, in one line", async () => {
  const model = await load("cpu", "fp32", true);
  const { VerifyBuffers } = await import("../src/model/workspace.ts");
  const ws = model.newWorkspace(2), state = model.newState(1);
  const saved = new VerifyBuffers(model.backend, model.dims, 2);
  const be = model.backend;
  const table = state.decodeTable(model.weights)!;
  const verify = (layers: BigUint64Array, len: number) =>
    be.verifyLayers({ ...model.verifyLayersArgs(ws, layers, saved), len });
  const resume = (layers: BigUint64Array, len: number) =>
    be.resumeLayers({ ...model.resumeLayersArgs(layers, saved), len });
  const invalid = (re: RegExp) => (e: unknown) =>
    e instanceof NativeError && e.status === Status.INVALID && re.test(e.message) &&
    !e.message.includes("\n");
  try {
    for (const len of [0, 66]) {
      assert.throws(
        () => verify(table, len),
        invalid(/mb_verify_layers: len \d+ is outside 1\.\.65/),
      );
      assert.throws(
        () => resume(table, len),
        invalid(/mb_resume_layers: len \d+ is outside 1\.\.65/),
      );
    }
    const host = table.slice();
    host[2 * DecodeLayerPtr.PTRS + DecodeLayerPtr.SSM_STATE] = 0n;
    assert.throws(() => verify(host, 2), invalid(/mb_verify_layers: layer 2: pointer 12/));
    assert.throws(() => resume(host, 2), invalid(/mb_resume_layers: layer 2: pointer 12/));
    assert.throws(() => verify(table.subarray(1), 2), /verifyLayers: a table of 44 pointers/);
  } finally {
    saved.free();
    ws.free();
    state.free();
    model.close();
  }
});
