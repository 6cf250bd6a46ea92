/**
 * The fp16 twins' exponents found at load (src/model/f16_twins.ts): the scale rule, and the bound
 * of x_proj's input u = silu(conv(x)) from a layer's weights alone, which the conv's scaled fp16
 * rows rely on (a value above it would overflow fp16). The bound is held against the conv sums a
 * real forward produces on the committed fixture models.
 */
import assert from "node:assert/strict";
import { loadModel } from "../mod.ts";
import { f16ScaleExp, uBound } from "../src/model/f16_twins.ts";

const FIXTURES = new URL("./fixtures/", import.meta.url).pathname;
const CONFIG = new URL("../configs/mambabyte_lm.yml", import.meta.url).pathname;
const haveFixtures = await Deno.stat(`${FIXTURES}expected.safetensors`).then(
  () => true,
  () => false,
);

Deno.test("f16ScaleExp: the power of two that puts a bound in [2^14, 2^15)", () => {
  for (const v of [1, 0.75, 2 ** 14, 2 ** 15 - 1, 2 ** 15, 3e-30, 1.7e30, 65504, 0.1, 2 ** -140]) {
    const e = f16ScaleExp(v), scaled = v * 2 ** e;
    assert.ok(scaled >= 2 ** 14 && scaled < 2 ** 15, `${v}: e ${e} gives ${scaled}`);
  }
  assert.equal(f16ScaleExp(1), 14); // 1 = 0.5 * 2^1, e = 15 - 1
  assert.equal(f16ScaleExp(2 ** 14), 0);
  for (const v of [0, -1, NaN, Infinity]) assert.equal(f16ScaleExp(v), 0, `${v}`);
});

Deno.test("uBound: the norm's bound through in_proj and the conv, doubled", () => {
  // d 4, max|W_in| < 2^(15 - 15) = 1: |x| <= 4 * 1 * (sqrt(4) * 0.5 + 0.25) = 5; the conv's
  // channels reach 0.1 + 0.75 * 5 and 3 + 2 * 5 = 13
  const bound = uBound(
    4,
    15,
    { w: new Float32Array([0.5, -0.25, 0, 0]), b: new Float32Array([0.25, 0, 0, -0.125]) },
    null,
    { w: new Float32Array([0.5, -0.25, 1, 1]), b: new Float32Array([0.1, -3]), k: 2 },
  );
  assert.equal(bound, 26);
  // in_proj's bias adds to x; RMSNorm has no bias
  const withBias = uBound(
    4,
    15,
    { w: new Float32Array([0.5, 0, 0, 0]), b: null },
    new Float32Array([0, -1]),
    { w: new Float32Array([1, 1]), b: null, k: 2 },
  );
  assert.equal(withBias, 2 * 2 * (4 * 1 * 1 + 1));
});

for (const [label, path] of [["LayerNorm", "ln_model.safetensors"], ["RMSNorm", "rms_hf"]]) {
  Deno.test({
    name: `uBound holds the conv sums of a forward over a PG19-like text (${label} fixture)`,
    ignore: !haveFixtures,
    async fn() {
      const model = await loadModel({
        configPath: CONFIG,
        modelId: "test-48x2",
        checkpoint: `${FIXTURES}${path}`,
        device: "cpu",
      });
      try {
        const { dModel: d, dConv: k, nLayer } = model.dims;
        const text = "It was the best of times, it was the worst of times; \u00e9t\u00e9 \u2603 "
          .repeat(8);
        const r = await model.forward(new TextEncoder().encode(text), { taps: ["conv1d"] });
        const host = (t: { toHost(): unknown } | null) => t ? t.toHost() as Float32Array : null;
        for (let i = 0; i < nLayer; i++) {
          const l = model.weights.layers[i];
          const wIn = host(l.inProj)!;
          const eIn = f16ScaleExp(wIn.reduce((m, v) => Math.max(m, Math.abs(v)), 0));
          const bound = uBound(
            d,
            eIn,
            { w: host(l.normWeight)!, b: host(l.normBias) },
            host(l.inProjBias),
            { w: host(l.convWeight)!, b: host(l.convBias), k },
          );
          const pre = r.taps.get("conv1d")!.get(i)!;
          const seen = pre.reduce((m, v) => Math.max(m, Math.abs(v)), 0);
          // the doubled bound's half holds what the layer produced (|silu(v)| <= |v|)
          assert.ok(seen > 0 && seen <= bound / 2, `layer ${i}: ${seen} against ${bound}`);
          // and the scale it gives keeps those values fp16 normals with room to spare
          const top = seen * 2 ** f16ScaleExp(bound);
          assert.ok(top > 2 ** -14 * 2 ** 10 && top < 2 ** 14, `layer ${i}: scaled top ${top}`);
        }
      } finally {
        model.close();
      }
    },
  });
}
