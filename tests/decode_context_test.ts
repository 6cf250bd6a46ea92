/**
 * The decoding context a generate call leaves for the next (decode_context.ts), on the CPU: kept
 * only where the backend has graphs (here a CPU backend that says it has, running its steps
 * directly), taken again by a call with the same key and not by another, freed by
 * releaseDecodeBuffers, close and MAMBABYTE_DECODE_KEEP=0; reused or not, the bytes are the same.
 * tests/cuda_model_test.ts holds the graph replay of kept contexts on the GPU.
 */
import assert from "node:assert/strict";
import { loadModel } from "../mod.ts";
import { decodeContextKey, type DecodeKeyParts } from "../src/generate/decode_context.ts";

const CONFIG = new URL("../configs/mambabyte_lm.yml", import.meta.url).pathname;
const PROMPT = new TextEncoder().encode("The decoding context is kept. ");

async function cpuModel() {
  return await loadModel({ configPath: CONFIG, modelId: "test-64x3", device: "cpu", seed: 3 });
}

Deno.test("decode context: kept and taken by key, released, and the same bytes", async () => {
  const plain = await cpuModel(); // no graphs: nothing is kept
  const model = await cpuModel();
  Object.defineProperty(model.backend, "supportsGraphs", { value: true });
  const opts = { maxNewTokens: 12, numSamples: 3, seed: 9, temperature: 0.7, topK: 40 };
  // graphs off (a CPU backend cannot capture), not overlapped: what generateBytes keys them by
  const run = { ...opts, useGraphs: false, overlap: false };
  const parts: DecodeKeyParts = {
    batch: 3,
    overlap: false,
    useGraphs: false,
    temperature: 0.7,
    topK: 40,
    topP: 0.98,
    seed: 9,
  };
  const key = decodeContextKey(parts);
  try {
    const want = await plain.generate(PROMPT, run);
    assert.equal(plain.takeDecodeContext(key), null, "a backend without graphs keeps nothing");

    assert.deepEqual(await model.generate(PROMPT, run), want);
    const kept = model.takeDecodeContext(key);
    assert.ok(kept, "the call's context is kept under its key");
    assert.equal(model.takeDecodeContext(key), null, "taking hands it over");
    model.keepDecodeContext(kept);
    // the next call takes it (and its counter starts at 0 again), then keeps it again
    assert.deepEqual(await model.generate(PROMPT, run), want);
    const again = model.takeDecodeContext(key);
    assert.equal(again, kept, "the same context, reused");
    model.keepDecodeContext(again);

    // another key frees the kept one and keeps its own
    const other = decodeContextKey({ ...parts, seed: 10 });
    assert.notEqual(other, key);
    await model.generate(PROMPT, { ...run, seed: 10 });
    assert.equal(model.takeDecodeContext(key), null);
    await model.generate(PROMPT, { ...run, seed: 10 });
    const tenth = model.takeDecodeContext(other);
    assert.ok(tenth);
    model.keepDecodeContext(tenth);
    model.releaseDecodeBuffers();
    assert.equal(model.takeDecodeContext(other), null, "released");

    // every part of the key tells keys apart
    const keys = new Set([
      key,
      decodeContextKey({ ...parts, batch: 4 }),
      decodeContextKey({ ...parts, overlap: true }),
      decodeContextKey({ ...parts, useGraphs: true }),
      decodeContextKey({ ...parts, temperature: 0.8 }),
      decodeContextKey({ ...parts, topK: 41 }),
      decodeContextKey({ ...parts, topP: 0.9 }),
      other,
    ]);
    assert.equal(keys.size, 8);

    Deno.env.set("MAMBABYTE_DECODE_KEEP", "0");
    try {
      assert.deepEqual(await model.generate(PROMPT, run), want);
      assert.equal(model.takeDecodeContext(key), null, "MAMBABYTE_DECODE_KEEP=0 keeps none");
    } finally {
      Deno.env.delete("MAMBABYTE_DECODE_KEEP");
    }

    // a call that fails part-way leaves nothing behind
    await assert.rejects(
      model.generate(PROMPT, {
        ...run,
        onBytes: () => {
          throw new Error("stop here");
        },
      }),
      /stop here/,
    );
    assert.equal(model.takeDecodeContext(key), null);

    await model.generate(PROMPT, run);
    model.close(); // frees the kept context with the rest
    assert.equal(model.takeDecodeContext(key), null);
  } finally {
    plain.close();
    model.close();
  }
});
