import assert from "node:assert/strict";
import { join } from "node:path";
import { CheckpointError } from "../src/checkpoint/errors.ts";
import { canonicalName } from "../src/checkpoint/names.ts";
import { openCheckpoint } from "../src/checkpoint/open.ts";
import { parseHfConfig } from "../src/checkpoint/hf_config.ts";
import { writeSafetensors } from "../src/checkpoint/safetensors.ts";
import { loadWeights, weightSourceFromTensors } from "../src/checkpoint/weights.ts";
import type { RawTensor } from "../src/checkpoint/dtypes.ts";
import { completeDims, type ModelDims } from "../src/config/dims.ts";
import {
  type FakeTensor,
  modelTensors,
  type Scheme,
  writeTorchFile,
} from "./checkpoint_helpers.ts";

const dims = completeDims({
  vocabSize: 256,
  dModel: 16,
  nLayer: 2,
  dState: 4,
  dConv: 4,
  expand: 2,
});

function raw(ts: FakeTensor[]): Map<string, RawTensor> {
  return new Map(ts.map((t) => [t.name, {
    name: t.name,
    dtype: t.dtype,
    shape: t.shape,
    byteLength: t.data.length,
    read: () => Promise.resolve(t.data.slice()),
  }]));
}

function errorOf(f: () => unknown): CheckpointError {
  try {
    f();
  } catch (e) {
    assert.ok(e instanceof CheckpointError, String(e));
    assert.ok(!e.message.includes("\n"));
    return e;
  }
  assert.fail("no error thrown");
}

Deno.test("names: the three schemes map to canonical names", () => {
  const cases: [string, string][] = [
    ["backbone.embeddings.weight", "embedding.weight"],
    ["backbone.layers.3.mixer.in_proj.weight", "layers.3.mixer.in_proj.weight"],
    ["backbone.layers.0.norm.weight", "layers.0.norm.weight"],
    ["backbone.norm_f.weight", "norm_f.weight"],
    ["lm_head.weight", "lm_head.weight"],
    ["backbone.embedding.weight", "embedding.weight"],
    ["module.mambabyte.token_embedding.weight", "embedding.weight"],
    ["module.mambabyte.layers.7.mixer.A_log", "layers.7.mixer.A_log"],
    ["module.mambabyte.layers.7.norm.bias", "layers.7.norm.bias"],
    ["module.mambabyte.final_norm.bias", "norm_f.bias"],
    ["module.lm_head.weight", "lm_head.weight"],
    ["module.module.model.embedding.weight", "embedding.weight"],
    ["model.final_norm.weight", "norm_f.weight"],
    ["foo.bar", "foo.bar"],
  ];
  for (const [file, canon] of cases) assert.equal(canonicalName(file), canon, file);
});

for (
  const [scheme, norm] of [
    ["transformers", "rmsnorm"],
    ["mamba_ssm", "rmsnorm"],
    ["mambabyte", "layernorm"],
    ["canonical", "layernorm"],
  ] as [Scheme, "rmsnorm" | "layernorm"][]
) {
  Deno.test(`weights: ${scheme} names, ${norm} detected, lm_head tied when absent`, async () => {
    const ts = await modelTensors(dims, norm, scheme);
    const w = weightSourceFromTensors(raw(ts), dims, { label: "x.pt" });
    assert.equal(w.normKind, norm);
    assert.equal(w.lmHeadTied, true);
    assert.ok(w.has("lm_head.weight"));
    assert.equal(w.has("layers.0.norm.bias"), norm === "layernorm");
    assert.deepEqual(w.shape("lm_head.weight"), [256, 16]);
    assert.deepEqual(await w.readF32("lm_head.weight"), await w.readF32("embedding.weight"));
    const d = ts.find((t) => t.name.endsWith("layers.1.mixer.D"))!;
    assert.deepEqual(await w.readF32("layers.1.mixer.D"), new Float32Array(d.data.buffer));
  });
}

Deno.test("weights: an untied lm_head is read from the file; conversions F16 / F64 / BF16", async () => {
  const ts = await modelTensors(dims, "layernorm", "mambabyte", { lmHead: true });
  const D = ts.find((t) => t.name.endsWith("layers.0.mixer.D"))!;
  D.dtype = "F16";
  D.data = new Uint8Array(new Uint16Array(dims.dInner).fill(0x3e00).buffer); // 1.5
  const dt = ts.find((t) => t.name.endsWith("layers.0.mixer.dt_proj.bias"))!;
  dt.dtype = "F64";
  const ties = Float64Array.from(
    { length: dims.dInner },
    (_, i) => i % 2 ? 1 + 3 * 2 ** -8 : 1 + 2 ** -8,
  );
  dt.data = new Uint8Array(ties.buffer);
  const w = weightSourceFromTensors(raw(ts), dims, { label: "x.pt" });
  assert.equal(w.lmHeadTied, false);
  assert.deepEqual(await w.readF32("layers.0.mixer.D"), new Float32Array(dims.dInner).fill(1.5));
  // Exact ties round to even: 1 + 2^-8 -> 0x3f80, 1 + 3 * 2^-8 -> 0x3f82.
  assert.deepEqual([...await w.readBF16("layers.0.mixer.dt_proj.bias")].slice(0, 2), [
    0x3f80,
    0x3f82,
  ]);
  assert.equal((await w.readF32("layers.0.mixer.dt_proj.bias"))[1], 1 + 3 * 2 ** -8);
  assert.equal((await w.readBF16("layers.0.mixer.D"))[0], 0x3fc0);
});

Deno.test("weights: mixed norms, duplicate canonical names, int dtypes are errors", async () => {
  const ts = await modelTensors(dims, "layernorm", "canonical");
  const noBias = ts.filter((t) => t.name !== "layers.1.norm.bias");
  assert.match(
    errorOf(() => weightSourceFromTensors(raw(noBias), dims, { label: "m.pt" })).message,
    /m\.pt: mixed norms: layers\.0\.norm has a bias \(LayerNorm\) but layers\.1\.norm has none/,
  );
  const dup = [...ts, { ...ts[0], name: "module.backbone.embeddings.weight" }];
  assert.match(
    errorOf(() => weightSourceFromTensors(raw(dup), dims, { label: "d.pt" })).message,
    /d\.pt: tensors "embedding\.weight" and "module\.backbone\.embeddings\.weight" both map to embedding\.weight/,
  );
  const ints = ts.map((t) => t.name === "layers.0.mixer.D" ? { ...t, dtype: "I32" as const } : t);
  assert.match(
    errorOf(() => weightSourceFromTensors(raw(ints), dims, { label: "i.pt" })).message,
    /layers\.0\.mixer\.D has dtype I32, expected a floating-point type/,
  );
});

Deno.test("weights: one error lists every missing, unexpected and mis-shaped tensor", async () => {
  const ts = (await modelTensors(dims, "layernorm", "mambabyte"))
    .filter((t) => !t.name.endsWith("layers.1.mixer.D"));
  ts.push({ name: "module.foo.bar", dtype: "F32", shape: [1], data: new Uint8Array(4) });
  const inProj = ts.find((t) => t.name.endsWith("layers.0.mixer.in_proj.weight"))!;
  inProj.shape = [32, 32];
  const msg =
    errorOf(() => weightSourceFromTensors(raw(ts), dims, { label: "x.pt", modelName: "tiny" }))
      .message;
  assert.match(msg, /^checkpoint x\.pt does not match model tiny \(/);
  assert.match(msg, /missing layers\.1\.mixer\.D/);
  assert.match(msg, /unexpected foo\.bar/);
  assert.match(msg, /layers\.0\.mixer\.in_proj\.weight has shape \[32,32\], expected \[64,16\]/);
});

Deno.test("weights: a checkpoint of another model size reports its dimensions", async () => {
  const other: ModelDims = completeDims({ ...dims, dModel: 32, nLayer: 3 });
  const ts = await modelTensors(other, "layernorm", "mambabyte");
  const msg =
    errorOf(() => weightSourceFromTensors(raw(ts), dims, { label: "big.pt", modelName: "353M" }))
      .message;
  assert.match(msg, /does not match model 353M \(vocab=256 d_model=16 n_layer=2 /);
  assert.match(msg, /the checkpoint has vocab=256 d_model=32 n_layer=3 d_inner=64 expand=2/);
  assert.match(msg, /choose the --model_id with these dimensions/);
  assert.match(msg, /unexpected layers\.2\./);
  assert.match(msg, /\(\d+ more\)/);
});

Deno.test("weights: a padded vocabulary (>= 256 rows) is accepted, a short one is not", async () => {
  const padded = completeDims({ ...dims, vocabSize: 264 });
  const ts = await modelTensors(padded, "rmsnorm", "mamba_ssm", { lmHead: true });
  const w = weightSourceFromTensors(raw(ts), dims, { label: "p.pt" });
  assert.deepEqual(w.shape("embedding.weight"), [264, 16]);
  assert.deepEqual(w.shape("lm_head.weight"), [264, 16]);
  const short = await modelTensors(
    completeDims({ ...dims, vocabSize: 200 }),
    "rmsnorm",
    "mamba_ssm",
  );
  assert.match(
    errorOf(() => weightSourceFromTensors(raw(short), dims, { label: "s.pt" })).message,
    /embedding\.weight has shape \[200,16\], expected \[256,16\]/,
  );
});

Deno.test("loadWeights: files of every format; wrong shape via a real file", async () => {
  const dir = await Deno.makeTempDir();
  try {
    // safetensors, transformers names, with lm_head sharing nothing
    const st = await modelTensors(dims, "rmsnorm", "transformers");
    await writeSafetensors(join(dir, "m.safetensors"), st);
    const a = await loadWeights(join(dir, "m.safetensors"), dims);
    assert.equal(a.normKind, "rmsnorm");
    a.close();
    // sniffing: no extension
    await Deno.copyFile(join(dir, "m.safetensors"), join(dir, "noext"));
    (await loadWeights(join(dir, "noext"), dims)).close();
    const pt = await modelTensors(dims, "layernorm", "mambabyte");
    await writeTorchFile(join(dir, "m.pt"), pt);
    await Deno.copyFile(join(dir, "m.pt"), join(dir, "torchfile"));
    const b = await loadWeights(join(dir, "torchfile"), dims);
    assert.equal(b.normKind, "layernorm");
    b.close();
    // tied through a shared storage in a .pt
    const tied = [...pt, {
      name: "module.lm_head.weight",
      dtype: "F32" as const,
      shape: [256, 16],
      data: new Uint8Array(),
      shareWith: "module.mambabyte.token_embedding.weight",
    }];
    await writeTorchFile(join(dir, "tied.pt"), tied);
    const c = await loadWeights(join(dir, "tied.pt"), dims);
    assert.equal(c.lmHeadTied, true);
    c.close();
    // wrong shape
    const bad = pt.map((t) =>
      t.name.endsWith("layers.1.mixer.A_log") ? { ...t, shape: [dims.dState, dims.dInner] } : t
    );
    await writeTorchFile(join(dir, "bad.pt"), bad);
    await assert.rejects(
      loadWeights(join(dir, "bad.pt"), dims, { modelName: "tiny" }),
      (e: Error) =>
        e instanceof CheckpointError &&
        /checkpoint .*bad\.pt does not match model tiny.*layers\.1\.mixer\.A_log has shape \[4,32\], expected \[32,4\]/
          .test(e.message),
    );
    await assert.rejects(loadWeights(join(dir, "missing.pt"), dims), /checkpoint not found/);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("hf config: transformers and mamba_ssm vocabularies", () => {
  assert.deepEqual(
    parseHfConfig({
      model_type: "mamba",
      hidden_size: 768,
      num_hidden_layers: 24,
      state_size: 16,
      conv_kernel: 4,
      expand: 2,
      time_step_rank: 48,
      vocab_size: 50280,
      layer_norm_epsilon: 1e-5,
      tie_word_embeddings: true,
      intermediate_size: 1536,
    }, "c"),
    {
      vocabSize: 50280,
      dModel: 768,
      nLayer: 24,
      dState: 16,
      dConv: 4,
      expand: 2,
      dtRank: 48,
      dInner: 1536,
      normEpsilon: 1e-5,
      tieEmbeddings: true,
      normKind: "rmsnorm",
    },
  );
  assert.deepEqual(
    parseHfConfig({
      d_model: 1024,
      n_layer: 53,
      vocab_size: 256,
      ssm_cfg: { d_state: 16, d_conv: 4, expand: 2 },
      rms_norm: false,
      tie_embeddings: false,
    }, "c"),
    {
      vocabSize: 256,
      dModel: 1024,
      nLayer: 53,
      dState: 16,
      dConv: 4,
      expand: 2,
      dtRank: 64,
      dInner: 2048,
      tieEmbeddings: false,
      normKind: "layernorm",
    },
  );
  assert.throws(() => parseHfConfig([1], "c"), CheckpointError);
});

Deno.test("hf folder: safetensors, pytorch_model.bin, sharded index", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const cfg = {
      d_model: 16,
      n_layer: 2,
      vocab_size: 256,
      ssm_cfg: { d_state: 4 },
      rms_norm: true,
    };
    const ts = await modelTensors(dims, "rmsnorm", "mamba_ssm");
    const f1 = join(dir, "st");
    await writeSafetensors(join(f1, "model.safetensors"), ts);
    await Deno.writeTextFile(join(f1, "config.json"), JSON.stringify(cfg));
    const ck = await openCheckpoint(f1);
    assert.equal(ck.format, "hf-folder");
    assert.equal(ck.hfDims?.dModel, 16);
    assert.equal(ck.hfDims?.normKind, "rmsnorm");
    assert.equal(ck.tensors.size, ts.length);
    ck.close();
    const f2 = join(dir, "bin");
    await Deno.mkdir(f2);
    await writeTorchFile(join(f2, "pytorch_model.bin"), ts);
    await Deno.writeTextFile(join(f2, "config.json"), JSON.stringify(cfg));
    const w = await loadWeights(f2, dims);
    assert.equal(w.normKind, "rmsnorm");
    w.close();
    const f3 = join(dir, "sharded");
    const half = Math.floor(ts.length / 2);
    await writeSafetensors(join(f3, "model-00001-of-00002.safetensors"), ts.slice(0, half));
    await writeSafetensors(join(f3, "model-00002-of-00002.safetensors"), ts.slice(half));
    const weightMap = Object.fromEntries(
      ts.map((t, i) => [t.name, `model-0000${i < half ? 1 : 2}-of-00002.safetensors`]),
    );
    await Deno.writeTextFile(
      join(f3, "model.safetensors.index.json"),
      JSON.stringify({ metadata: {}, weight_map: weightMap }),
    );
    await Deno.writeTextFile(join(f3, "config.json"), JSON.stringify(cfg));
    const s = await loadWeights(f3, dims);
    assert.deepEqual(await s.readF32("norm_f.weight"), new Float32Array(16).fill(1));
    s.close();
    await Deno.writeTextFile(
      join(f3, "model.safetensors.index.json"),
      JSON.stringify({ weight_map: { x: "../../etc/passwd" } }),
    );
    await assert.rejects(openCheckpoint(f3), /is not a file in the folder/);
    // a shard name with a control character is refused, shown escaped (the message one line)
    await Deno.writeTextFile(
      join(f3, "model.safetensors.index.json"),
      JSON.stringify({ weight_map: { x: "model-00001-of-0002\n.safetensors" } }),
    );
    await assert.rejects(
      openCheckpoint(f3),
      /^[^\n]*shard name "model-00001-of-0002\\x0a\.safetensors" is not a file in the folder$/,
    );
    const empty = join(dir, "empty");
    await Deno.mkdir(empty);
    await assert.rejects(openCheckpoint(empty), /folder has no model\.safetensors/);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
