/**
 * The whole model against independent references (tests/fixtures, made by
 * tools/fixtures/make_fixtures.py on the GPU machine): a float64 PyTorch implementation of the
 * original MambaByte block (LayerNorm with bias) and transformers' MambaForCausalLM (RMSNorm), in
 * all three naming schemes and file formats.
 */
import assert from "node:assert/strict";
import { loadModel } from "../mod.ts";
import { Backend, FLAG_ALLOW_TF32 } from "../src/backend/backend.ts";
import { openCheckpoint } from "../src/checkpoint/mod.ts";
import { maxRelError } from "./helpers/compare.ts";

const FIXTURES = new URL("./fixtures/", import.meta.url).pathname;
const CONFIG = new URL("../configs/mambabyte_lm.yml", import.meta.url).pathname;
const MODEL_ID = "test-48x2";

async function exists(path: string): Promise<boolean> {
  try {
    await Deno.stat(path);
    return true;
  } catch {
    return false;
  }
}

const haveFixtures = await exists(`${FIXTURES}expected.safetensors`);
if (!haveFixtures) {
  console.warn("model_reference_test: tests/fixtures/expected.safetensors missing; skipped");
}

async function expected(): Promise<Map<string, Float32Array | Int32Array>> {
  const ck = await openCheckpoint(`${FIXTURES}expected.safetensors`);
  const out = new Map<string, Float32Array | Int32Array>();
  for (const [name, t] of ck.tensors) {
    const raw = await t.read();
    const copy = raw.slice().buffer;
    out.set(name, t.dtype === "I32" ? new Int32Array(copy) : new Float32Array(copy));
  }
  ck.close();
  return out;
}

const CASES: { kind: "ln" | "rms"; label: string; path: string }[] = [
  { kind: "ln", label: "LayerNorm, original names, .pt (DDP prefix)", path: "ln_model.pt" },
  { kind: "ln", label: "LayerNorm, mamba_ssm names, .safetensors", path: "ln_model.safetensors" },
  { kind: "rms", label: "RMSNorm, transformers folder (tied lm_head)", path: "rms_hf" },
  { kind: "rms", label: "RMSNorm, transformers names, .pt", path: "rms_model.pt" },
];

for (const c of CASES) {
  Deno.test({
    name: `reference logits and dt_proj: ${c.label}`,
    ignore: !haveFixtures,
    async fn() {
      const exp = await expected();
      const ids = exp.get(`${c.kind}.input_ids`) as Int32Array;
      const bytes = Uint8Array.from(ids);
      const model = await loadModel({
        configPath: CONFIG,
        modelId: MODEL_ID,
        checkpoint: `${FIXTURES}${c.path}`,
        device: "cpu",
      });
      try {
        assert.equal(model.weights.normKind, c.kind === "ln" ? "layernorm" : "rmsnorm");
        const r = await model.forward(bytes, { taps: ["dt_proj", "in_proj"], layers: [0, 1] });
        const logitErr = maxRelError(r.logits, exp.get(`${c.kind}.logits`) as Float32Array);
        assert.ok(logitErr < 1e-4, `logits relative error ${logitErr}`);
        for (const layer of [0, 1]) {
          const e = maxRelError(
            r.taps.get("dt_proj")!.get(layer)!,
            exp.get(`${c.kind}.dt_proj.${layer}`) as Float32Array,
          );
          assert.ok(e < 1e-4, `dt_proj.${layer} relative error ${e}`);
        }
        const inErr = maxRelError(
          r.taps.get("in_proj")!.get(0)!,
          exp.get(`${c.kind}.in_proj.0`) as Float32Array,
        );
        assert.ok(inErr < 1e-4, `in_proj.0 relative error ${inErr}`);

        const lp = await model.logProbs(bytes);
        const lpErr = maxRelError(lp.logProbs, exp.get(`${c.kind}.logprobs`) as Float32Array);
        assert.ok(lpErr < 1e-4, `log-prob relative error ${lpErr}`);
        assert.deepEqual([...lp.ranks], [...(exp.get(`${c.kind}.ranks`) as Int32Array)]);

        const [greedy] = await model.generate(bytes, { maxNewTokens: 32, topK: 1 });
        assert.deepEqual([...greedy], [...(exp.get(`${c.kind}.greedy`) as Int32Array)]);
      } finally {
        model.close();
      }
    },
  });
}

// The forward on the weights' fp16 twins (in_proj and out_proj on operands rounded as TF32
// rounds them, the norm writing in_proj's input as scaled fp16): the CPU runs the same rounding
// when asked, so the path is held to the independent references here, not only on a GPU.
for (const c of [CASES[1], CASES[2]]) {
  Deno.test({
    name: `reference logits on fp16 twins (TF32's rounding, CPU): ${c.label}`,
    ignore: !haveFixtures,
    async fn() {
      const exp = await expected();
      const bytes = Uint8Array.from(exp.get(`${c.kind}.input_ids`) as Int32Array);
      const load = (f16Products: boolean) =>
        loadModel({
          configPath: CONFIG,
          modelId: MODEL_ID,
          checkpoint: `${FIXTURES}${c.path}`,
          device: "cpu",
          f16Products,
        });
      const [model, strict] = [await load(true), await load(false)];
      try {
        assert.equal(model.f16Products, true);
        assert.equal(strict.f16Products, false);
        const r = await model.forward(bytes);
        const e = maxRelError(r.logits, exp.get(`${c.kind}.logits`) as Float32Array);
        assert.ok(e < 1e-3, `logits relative error ${e}`);
        // the twins' path was taken: its rounding moves the logits off the fp32 forward's
        const s = await strict.forward(bytes);
        assert.ok(maxRelError(r.logits, s.logits) > 0, "the same logits as the fp32 forward");
        // taps that the twins' path writes in fp32 (TAPS_ON_TWINS) leave it on the twins, so an
        // extraction runs the plain forward's products; the others keep the fp32 products
        const t = await model.forward(bytes, { taps: ["in_proj", "x_proj"], layers: [0] });
        assert.deepEqual(t.logits, r.logits);
        const u = await strict.forward(bytes, { taps: ["in_proj"], layers: [0] });
        const ti = maxRelError(t.taps.get("in_proj")!.get(0)!, u.taps.get("in_proj")!.get(0)!);
        assert.ok(ti > 0 && ti < 1e-3, `in_proj tap on the twins against fp32: ${ti}`);
        // a dt_proj tap takes that layer's delta in fp32 (with its bias) where the twin writes
        // scaled fp16 rows (9e-5 and 3e-4 of the logits on these fixtures): within TF32's
        // tolerance of the reference, as the untapped forward
        const d = await model.forward(bytes, { taps: ["dt_proj"], layers: [0] });
        const de = maxRelError(d.logits, exp.get(`${c.kind}.logits`) as Float32Array);
        assert.ok(de < 1e-3, `a dt_proj tap on the twins: logits relative error ${de}`);
        assert.ok(maxRelError(d.logits, s.logits) > 0, "a dt_proj tap left the twins");
        for (const other of ["norm", "conv1d", "out_proj", "mixer"] as const) {
          const o = await model.forward(bytes, { taps: [other, "dt_proj"], layers: [0] });
          assert.deepEqual(o.logits, s.logits, `a ${other} tap keeps the fp32 products`);
        }
        // a model on another backend shares the twins; its close() leaves them to their owner
        // (with the model's thread count, all cores: another count sums the CPU's products in
        // another order, ~2.5e-7 of the fp32 logits here, and a sum that moves across an fp16
        // rounding boundary of in_proj's twin input moves by a whole fp16 step: 3e-5 to 7e-5 of
        // the logits on a 2-vCPU Sapphire Rapids with 1 or 3 threads against 2, where a Zen host
        // stayed below 1e-5)
        const be = Backend.create("cpu", {});
        be.setFlags(be.flags | FLAG_ALLOW_TF32); // the twins' path is taken while TF32 is allowed
        try {
          const other = model.onBackend(be)!;
          assert.equal(other.f16Products, true);
          assert.deepEqual((await other.forward(bytes)).logits, r.logits, "on another backend");
          other.close();
          assert.deepEqual((await model.forward(bytes)).logits, r.logits);
        } finally {
          be.close();
        }
      } finally {
        model.close();
        strict.close();
      }
    },
  });
}
