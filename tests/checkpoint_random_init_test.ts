import assert from "node:assert/strict";
import { dtBias, randomWeights } from "../src/checkpoint/random_init.ts";
import { Xoshiro128 } from "../src/checkpoint/prng.ts";
import { expectedTensors } from "../src/checkpoint/expected.ts";
import { weightSourceFromTensors } from "../src/checkpoint/weights.ts";
import { completeDims } from "../src/config/dims.ts";
import { modelTensors } from "./checkpoint_helpers.ts";

const dims = completeDims({
  vocabSize: 256,
  dModel: 32,
  nLayer: 4,
  dState: 8,
  dConv: 4,
  expand: 2,
});

Deno.test("prng: deterministic, uniform in [0,1), normal moments", () => {
  const a = new Xoshiro128(4740);
  const b = new Xoshiro128(4740);
  const c = new Xoshiro128(4741);
  const xs = Array.from({ length: 5 }, () => a.nextU32());
  assert.deepEqual(xs, Array.from({ length: 5 }, () => b.nextU32()));
  assert.notDeepEqual(xs, Array.from({ length: 5 }, () => c.nextU32()));
  let sum = 0;
  let sq = 0;
  const n = 100_000;
  for (let i = 0; i < n; i++) {
    const u = a.uniform();
    assert.ok(u >= 0 && u < 1);
    const z = a.normal();
    sum += z;
    sq += z * z;
  }
  assert.ok(Math.abs(sum / n) < 0.02);
  assert.ok(Math.abs(sq / n - 1) < 0.03);
});

Deno.test("random init: deterministic by seed and independent of read order", async () => {
  const a = randomWeights(dims, 1);
  const b = randomWeights(dims, 1);
  const c = randomWeights(dims, 2);
  const x1 = await a.readF32("layers.2.mixer.x_proj.weight");
  await b.readF32("embedding.weight");
  assert.deepEqual(await b.readF32("layers.2.mixer.x_proj.weight"), x1);
  assert.notDeepEqual(await c.readF32("layers.2.mixer.x_proj.weight"), x1);
  assert.notDeepEqual(await a.readF32("layers.1.mixer.x_proj.weight"), x1);
});

Deno.test("random init: shapes match the expected set; lm_head untied; layernorm and rmsnorm", async () => {
  for (const norm of ["layernorm", "rmsnorm"] as const) {
    const w = randomWeights(dims, 3, norm);
    assert.equal(w.normKind, norm);
    assert.equal(w.lmHeadTied, false);
    for (const [name, e] of expectedTensors(dims, norm)) {
      if (!e.required && !name.endsWith("lm_head.weight")) continue;
      assert.ok(w.has(name), name);
      const shape = w.shape(name);
      assert.ok(
        e.shapes.some((s) => s.length === shape.length && s.every((d, i) => d === shape[i])),
        `${name} ${shape}`,
      );
      assert.equal((await w.readF32(name)).length, shape.reduce((p, d) => p * d, 1));
    }
    assert.equal(w.has("layers.0.mixer.in_proj.bias"), false);
    assert.equal(w.has("layers.0.mixer.conv1d.bias"), true);
    // The original's lm_head is its own Linear, not the embedding.
    assert.notDeepEqual(await w.readF32("lm_head.weight"), await w.readF32("embedding.weight"));
  }
  // The helper's checkpoints are made from randomWeights: they validate as a full model.
  const ts = await modelTensors(dims, "layernorm", "canonical");
  assert.equal(ts.length, 3 + 11 * dims.nLayer);
});

Deno.test("random init: distributions follow the original MambaByte code", async () => {
  const w = randomWeights(dims, 5);
  const bias = await w.readF32("layers.0.mixer.dt_proj.bias");
  const softplus = (x: number) => Math.log1p(Math.exp(x));
  for (const b of bias) {
    const dt = softplus(b);
    assert.ok(dt >= 0.001 * 0.999 && dt <= 0.1 * 1.001, `dt ${dt}`);
  }
  assert.ok(Math.abs(softplus(dtBias(0)) - 0.001) < 1e-9);
  assert.ok(Math.abs(softplus(dtBias(0.999999)) - 0.1) < 1e-6);
  const aLog = await w.readF32("layers.3.mixer.A_log");
  for (let d = 0; d < dims.dInner; d++) {
    for (let n = 0; n < dims.dState; n++) {
      assert.ok(Math.abs(aLog[d * dims.dState + n] - Math.log(n + 1)) < 1e-6);
    }
  }
  assert.ok((await w.readF32("layers.0.mixer.D")).every((v) => v === 1));
  assert.ok((await w.readF32("layers.0.norm.weight")).every((v) => v === 1));
  assert.ok((await w.readF32("norm_f.bias")).every((v) => v === 0));
  const bound = (name: string, b: number) =>
    w.readF32(name).then((x) => {
      const max = x.reduce((m, v) => Math.max(m, Math.abs(v)), 0);
      assert.ok(max <= b && max > 0.8 * b, `${name}: max ${max}, bound ${b}`);
    });
  await bound("layers.0.mixer.in_proj.weight", 1 / Math.sqrt(dims.dModel));
  await bound("layers.0.mixer.x_proj.weight", 1 / Math.sqrt(dims.dInner));
  // nn.Linear's default, with no rescaling by sqrt(n_layer) (the original skips mamba_ssm's).
  await bound("layers.0.mixer.out_proj.weight", 1 / Math.sqrt(dims.dInner));
  await bound("lm_head.weight", 1 / Math.sqrt(dims.dModel));
  await bound("layers.0.mixer.dt_proj.weight", dims.dtRank ** -0.5);
  await bound("layers.0.mixer.conv1d.weight", 0.5);
  const emb = await w.readF32("embedding.weight");
  const std = Math.sqrt(emb.reduce((s, v) => s + v * v, 0) / emb.length);
  assert.ok(Math.abs(std - 1) < 0.05, `embedding std ${std} (nn.Embedding: N(0, 1))`);
  const bf = await w.readBF16("embedding.weight");
  assert.equal(bf.length, emb.length);
});

Deno.test("random init: its tensors pass loadWeights' validation", async () => {
  const ts = await modelTensors(dims, "rmsnorm", "transformers");
  const src = new Map(ts.map((t) => [t.name, {
    name: t.name,
    dtype: t.dtype,
    shape: t.shape,
    byteLength: t.data.length,
    read: () => Promise.resolve(t.data),
  }]));
  const w = weightSourceFromTensors(src, dims, { label: "r" });
  assert.equal(w.normKind, "rmsnorm");
});
