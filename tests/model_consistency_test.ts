/**
 * The model against itself on random weights: byte-by-byte stepping equals the forward, a chunked
 * forward equals an unchunked one (one-position chunks, decoding steps, too), greedy generation
 * equals repeated forwards, sampling is reproducible from the seed, with and without the fused
 * decoding ops.
 */
import assert from "node:assert/strict";
import { loadModel, MambaByteLM } from "../mod.ts";
import { FLAG_UNFUSED_STEPS } from "../src/backend/backend.ts";
import { MambaByteError } from "../src/errors.ts";
import { maxRelError } from "./helpers/compare.ts";

const CONFIG = new URL("../configs/mambabyte_lm.yml", import.meta.url).pathname;
const TEXT = new TextEncoder().encode("MambaByte reads bytes: ÆØÅ — ünïcödé, 12345.\n".repeat(3));

function load(chunkSize?: number, modelId = "test-64x3"): Promise<MambaByteLM> {
  return loadModel({ configPath: CONFIG, modelId, device: "cpu", seed: 7, chunkSize });
}

function argmax(row: Float32Array): number {
  let best = 0;
  for (let i = 1; i < row.length; i++) if (row[i] > row[best]) best = i;
  return best;
}

Deno.test("chunked forward equals one chunk, taps included", async () => {
  const whole = await load(4096);
  const chunked = await load(17);
  try {
    const a = await whole.forward(TEXT, { taps: ["dt_proj", "conv1d", "mixer"], layers: [0, 2] });
    const b = await chunked.forward(TEXT, { taps: ["dt_proj", "conv1d", "mixer"], layers: [0, 2] });
    assert.ok(maxRelError(b.logits, a.logits) < 1e-5);
    for (const tap of ["dt_proj", "conv1d", "mixer"] as const) {
      for (const layer of [0, 2]) {
        const e = maxRelError(b.taps.get(tap)!.get(layer)!, a.taps.get(tap)!.get(layer)!);
        assert.ok(e < 1e-5, `${tap}.${layer}: ${e}`);
      }
    }
  } finally {
    whole.close();
    chunked.close();
  }
});

Deno.test("dt_proj's bias in the scan (no dt_proj tap) gives the bits of the bias in the product", async () => {
  for (const dtype of ["fp32", "bf16"] as const) {
    const m = await loadModel({
      configPath: CONFIG,
      modelId: "test-64x3",
      device: "cpu",
      seed: 7,
      dtype,
    });
    try {
      // a dt_proj tap keeps the bias in dt_proj's product (the tap reads its output) in the
      // tapped layers; the others, and a forward without taps, leave it to the scan
      const plain = await m.forward(TEXT);
      const tapped = await m.forward(TEXT, { taps: ["dt_proj"] });
      const some = await m.forward(TEXT, { taps: ["dt_proj"], layers: [1] });
      assert.deepEqual(tapped.logits, plain.logits, dtype);
      assert.deepEqual(some.logits, plain.logits, dtype);
      assert.deepEqual(some.taps.get("dt_proj")!.get(1), tapped.taps.get("dt_proj")!.get(1));
    } finally {
      m.close();
    }
  }
});

Deno.test("stepping byte by byte equals the forward", async () => {
  const model = await load();
  try {
    const { logits } = await model.forward(TEXT);
    const ws = model.newWorkspace(1);
    const state = model.newState(1);
    const row = new Float32Array(256);
    let worst = 0;
    for (let t = 0; t < TEXT.length; t++) {
      model.backend.upload(ws.ids.ptr, Int32Array.of(TEXT[t]));
      model.embed(ws, 1);
      model.stepLayers(ws, state, 1);
      model.runHead(ws, 1);
      model.backend.download(row, ws.logits.ptr);
      worst = Math.max(worst, maxRelError(row, logits.subarray(t * 256, (t + 1) * 256)));
    }
    ws.free();
    state.free();
    assert.ok(worst < 1e-5, `step vs forward: ${worst}`);
  } finally {
    model.close();
  }
});

Deno.test("a batch step without taps skips dt_proj's output, with the same logits", async () => {
  // 12 sequences: the per-layer calls (no decodeLayers table), where only a tap reads ws.delta
  const model = await load();
  const B = 12;
  try {
    const be = model.backend;
    const run = (afterLayer?: (layer: number) => void) => {
      const ws = model.newWorkspace(B);
      const state = model.newState(B);
      try {
        be.memset(ws.delta.ptr, 0xff, ws.delta.bytes);
        be.upload(ws.ids.ptr, Int32Array.from({ length: B }, (_, i) => TEXT[i]));
        model.embed(ws, B);
        model.stepLayers(ws, state, B, afterLayer);
        model.runHead(ws, B);
        const logits = new Float32Array(B * 256);
        be.download(logits, ws.logits.ptr);
        const delta = new Uint8Array(ws.delta.bytes);
        be.download(delta, ws.delta.ptr);
        return { logits, delta };
      } finally {
        ws.free();
        state.free();
      }
    };
    const plain = run();
    let layers = 0;
    const tapped = run(() => void layers++);
    assert.equal(layers, model.dims.nLayer);
    assert.deepEqual(plain.logits, tapped.logits);
    assert.ok(plain.delta.every((b) => b === 0xff), "the step without taps wrote ws.delta");
    const written = new Float32Array(tapped.delta.buffer, 0, B * model.dims.dInner);
    assert.ok(written.every(Number.isFinite), "the tapped step left ws.delta unwritten");
  } finally {
    model.close();
  }
});

Deno.test("a one-position chunk (a decoding step) and taps of it equal the scan path's", async () => {
  // chunk size 1: every chunk goes through stepLayers, except with a conv1d tap (forwardLayers)
  const steps = await load(1);
  const scan = await load(4096);
  try {
    const text = TEXT.subarray(0, 40);
    const taps = ["in_proj", "x_proj", "dt_proj", "mixer"] as const;
    const a = await scan.forward(text, { taps, layers: [1] });
    const b = await steps.forward(text, { taps, layers: [1] });
    assert.ok(maxRelError(b.logits, a.logits) < 1e-5);
    for (const tap of taps) {
      const e = maxRelError(b.taps.get(tap)!.get(1)!, a.taps.get(tap)!.get(1)!);
      assert.ok(e < 1e-5, `${tap}: ${e}`);
    }
    const c = await steps.forward(text, { taps: ["conv1d"], layers: [0] });
    const d = await scan.forward(text, { taps: ["conv1d"], layers: [0] });
    assert.ok(maxRelError(c.taps.get("conv1d")!.get(0)!, d.taps.get("conv1d")!.get(0)!) < 1e-5);
  } finally {
    steps.close();
    scan.close();
  }
});

Deno.test("FLAG_UNFUSED_STEPS decodes with the same bits on the CPU", async () => {
  const model = await load();
  try {
    const prompt = TEXT.subarray(0, 20);
    const opts = { maxNewTokens: 16, numSamples: 2, seed: 3, topK: 0, topP: 1 };
    const fused = await model.generate(prompt, opts);
    model.backend.setFlags(model.backend.flags | FLAG_UNFUSED_STEPS);
    const plain = await model.generate(prompt, opts);
    assert.deepEqual(plain, fused);
  } finally {
    model.close();
  }
});

Deno.test("greedy generation equals argmax of repeated forwards", async () => {
  const model = await load();
  try {
    const prompt = TEXT.subarray(0, 20);
    const [gen] = await model.generate(prompt, { maxNewTokens: 12, topK: 1 });
    const seq = [...prompt];
    for (let i = 0; i < 12; i++) {
      const { logits } = await model.forward(Uint8Array.from(seq));
      const next = argmax(logits.subarray((seq.length - 1) * 256, seq.length * 256));
      assert.equal(gen[i], next, `byte ${i}`);
      seq.push(next);
    }
  } finally {
    model.close();
  }
});

Deno.test("greedy generation of 12 sequences (out_proj with the next norm) equals one's", async () => {
  const model = await load();
  try {
    const prompt = TEXT.subarray(0, 20);
    const opts = { maxNewTokens: 12, topK: 1 };
    const [one] = await model.generate(prompt, opts);
    const many = await model.generate(prompt, { ...opts, numSamples: 12 });
    assert.equal(many.length, 12);
    for (const [i, gen] of many.entries()) assert.deepEqual(gen, one, `sequence ${i}`);
  } finally {
    model.close();
  }
});

Deno.test("sampling is reproducible from the seed; samples of a batch differ", async () => {
  const model = await load();
  try {
    const prompt = TEXT.subarray(0, 10);
    const opts = { maxNewTokens: 24, numSamples: 3, seed: 11, topK: 0, topP: 1, temperature: 1.5 };
    const a = await model.generate(prompt, opts);
    const b = await model.generate(prompt, opts);
    assert.deepEqual(a, b);
    assert.notDeepEqual(a[0], a[1]);
    const c = await model.generate(prompt, { ...opts, seed: 12 });
    assert.notDeepEqual(a, c);
    const streamed: number[][] = [[], [], []];
    await model.generate(prompt, {
      ...opts,
      onBytes: (bytes) => bytes.forEach((v, i) => streamed[i].push(v)),
    });
    assert.deepEqual(streamed.map((s) => Uint8Array.from(s)), a);
  } finally {
    model.close();
  }
});

Deno.test("log-probabilities agree with the forward's log-softmax", async () => {
  const model = await load(13);
  try {
    const { logits } = await model.forward(TEXT);
    const { logProbs, ranks } = await model.logProbs(TEXT);
    assert.equal(logProbs.length, TEXT.length - 1);
    for (let t = 0; t < TEXT.length - 1; t++) {
      const row = logits.subarray(t * 256, (t + 1) * 256);
      const m = Math.max(...row);
      const lse = m + Math.log(row.reduce((s, v) => s + Math.exp(v - m), 0));
      const target = TEXT[t + 1];
      assert.ok(Math.abs(logProbs[t] - (row[target] - lse)) < 1e-4);
      assert.equal(ranks[t], row.filter((v) => v > row[target]).length);
    }
  } finally {
    model.close();
  }
});

Deno.test("bad inputs give clear errors", async () => {
  await assert.rejects(
    () => loadModel({ configPath: CONFIG, modelId: "nope", device: "cpu" }),
    /unknown model id 'nope'/,
  );
  for (const threads of [-1, 1.5, 2 ** 32 + 1]) {
    await assert.rejects(
      () => loadModel({ configPath: CONFIG, modelId: "test-48x2", device: "cpu", threads }),
      /threads \(0 = all cores\) must be an integer from 0 to 1024/,
    );
  }
  const model = await load();
  try {
    // one check for every path (model, extractions), a usage error: exit code 2
    await assert.rejects(
      () => model.forward(TEXT, { layers: [3] }),
      (e: unknown) =>
        e instanceof MambaByteError && /out of range/.test(e.message) && e.exitCode === 2,
    );
    await assert.rejects(() => model.generate(TEXT, { topP: 1.5 }), /top_p/);
    await assert.rejects(() => model.generate(TEXT, { topK: 2 ** 31 }), /top_k/);
    await assert.rejects(() => model.generate(TEXT, { temperature: 0 }), /needs topK 1/);
    // An empty prompt is unconditional generation (after one newline), as generate.ts.
    const [a] = await model.generate(new Uint8Array(0), { maxNewTokens: 8, topK: 1 });
    const [b] = await model.generate(Uint8Array.of(10), { maxNewTokens: 8, topK: 1 });
    assert.deepEqual(a, b);
  } finally {
    model.close();
  }
});

Deno.test("bf16 weights give logits close to fp32 (same random weights)", async () => {
  const common = { configPath: CONFIG, modelId: "test-64x3", device: "cpu" as const, seed: 7 };
  const f32 = await loadModel({ ...common, dtype: "fp32" });
  const b16 = await loadModel({ ...common, dtype: "bf16" });
  try {
    const a = await f32.forward(TEXT);
    const b = await b16.forward(TEXT);
    const e = maxRelError(b.logits, a.logits);
    assert.ok(e > 0 && e < 2e-2, `bf16 vs fp32 logits: ${e}`);
  } finally {
    f32.close();
    b16.close();
  }
});

Deno.test("a forward awaits its progress callback between chunks, and stops when it throws", async () => {
  const model = await load(17);
  try {
    // Timers run while the callback waits: what lets a queue worker renew its lock mid-document.
    let ticks = 0;
    const timer = setInterval(() => ticks++, 0);
    const seen: number[] = [];
    const r = await model.logProbs(TEXT, async (done) => {
      seen.push(ticks);
      await new Promise((res) => setTimeout(res, 2));
      assert.ok(done <= TEXT.length);
    });
    clearInterval(timer);
    assert.equal(seen.length, Math.ceil(TEXT.length / 17));
    assert.ok(seen.at(-1)! > seen[0], `timers ran ${seen.at(-1)! - seen[0]} times during the pass`);
    assert.equal(r.logProbs.length, TEXT.length - 1);
    // Stopped after the second chunk: the error comes through and the next pass is unaffected.
    let calls = 0;
    await assert.rejects(
      model.logProbs(TEXT, () => {
        if (++calls === 2) throw new Error("stop here");
      }),
      /stop here/,
    );
    assert.equal(calls, 2);
    const again = await model.logProbs(TEXT);
    assert.deepEqual(again.logProbs, r.logProbs);
  } finally {
    model.close();
  }
});

Deno.test("close() closes the backend a model owns (loadModel's), not a caller's", async () => {
  const model = await load();
  assert.equal(model.ownsBackend, true);
  assert.equal(model.device, "cpu");
  assert.equal(model.deviceIndex, 0);
  // A second model on the same backend and weights (as evaluate's --context builds): the caller's
  // backend, left open by its close().
  const view = new MambaByteLM(model.backend, model.config, model.weights, {
    source: model.source,
    chunkSize: 5,
  });
  assert.equal(view.ownsBackend, false);
  assert.equal(view.chunkSize, 5);
  assert.equal(view.eps, model.eps);
  const a = await model.logProbs(TEXT);
  const b = await view.logProbs(TEXT);
  assert.ok(maxRelError(b.logProbs, a.logProbs) < 1e-4);
  view.close();
  model.backend.free(model.backend.alloc(64)); // still open
  model.close();
  assert.throws(() => model.backend.alloc(64), /backend is closed/);
  model.close(); // idempotent
});

Deno.test("bf16 activations are CUDA's: a CPU model keeps fp32 activations (its results)", async () => {
  const opts = { configPath: CONFIG, modelId: "test-64x3", device: "cpu", seed: 7 } as const;
  const asked = await loadModel({ ...opts, dtype: "bf16", bf16Activations: true });
  const plain = await loadModel({ ...opts, dtype: "bf16" });
  try {
    assert.equal(asked.bf16Activations, false);
    const ws = asked.newWorkspace(64);
    assert.equal(ws.bf16, null);
    ws.free();
    const text = new TextEncoder().encode("the CPU's products take fp32 rows ".repeat(4));
    assert.deepEqual((await asked.forward(text)).logits, (await plain.forward(text)).logits);
  } finally {
    asked.close();
    plain.close();
  }
});
