/**
 * Extraction drivers: a result that cannot fit is refused before any computation, with the size it
 * would need; module ids accept the "mixer." prefix; results do not depend on the chunk length.
 */
import assert from "node:assert/strict";
import { loadModel } from "../mod.ts";
import {
  extractDiscreteA,
  extractInputSimilarity,
  extractModuleOutputs,
  parseModuleId,
} from "../src/analysis/extract.ts";
import { maxRelError } from "./helpers/compare.ts";

const CONFIG = new URL("../configs/mambabyte_lm.yml", import.meta.url).pathname;
const TEXT = new TextEncoder().encode(
  "Results must not depend on how the input is chunked. ".repeat(4),
);

Deno.test("a result that cannot fit is refused up front, naming the size", async () => {
  const model = await loadModel({ configPath: CONFIG, modelId: "test-48x2", device: "cpu" });
  try {
    let progressed = false;
    await assert.rejects(
      () =>
        extractDiscreteA(model, TEXT, {
          maxResultBytes: 1000,
          onProgress: () => (progressed = true),
        }),
      /discrete_A for these layers needs about [\d.]+ MiB of memory .*--reduction/,
    );
    assert.equal(progressed, false, "nothing may be computed before the check");
    await assert.rejects(
      () => extractModuleOutputs(model, TEXT, { modules: ["in_proj"], maxResultBytes: 10 }),
      /needs about/,
    );
    // The same request reduced per position fits.
    const r = await extractDiscreteA(model, TEXT, { reduction: "fro", maxResultBytes: 10_000 });
    assert.deepEqual(r.perLayer.get(0)!.shape, [TEXT.length]);
  } finally {
    model.close();
  }
});

Deno.test("module ids: plain and mixer.-prefixed names; unknown ones are usage errors", () => {
  assert.equal(parseModuleId("dt_proj"), "dt_proj");
  assert.equal(parseModuleId("mixer.x_proj"), "x_proj");
  assert.throws(() => parseModuleId("attention"), (e: Error & { exitCode?: number }) => {
    assert.match(e.message, /unknown module 'attention'/);
    assert.equal(e.exitCode, 2);
    return true;
  });
});

Deno.test("extractions do not depend on the chunk length", async () => {
  const opts = { configPath: CONFIG, modelId: "test-48x2", device: "cpu" as const };
  const a = await loadModel({ ...opts, chunkSize: 4096 });
  const b = await loadModel({ ...opts, chunkSize: 7 });
  try {
    for (const reduction of [null, "mean", "nuc"] as const) {
      const ra = await extractDiscreteA(a, TEXT, {
        reduction,
        reductionDim: -2,
        logProbs: true,
      });
      const rb = await extractDiscreteA(b, TEXT, {
        reduction,
        reductionDim: -2,
        logProbs: true,
      });
      for (const l of [0, 1]) {
        const e = maxRelError(
          rb.perLayer.get(l)!.data as Float32Array,
          ra.perLayer.get(l)!.data as Float32Array,
        );
        assert.ok(e < 1e-5, `${reduction} layer ${l}: ${e}`);
      }
      assert.ok(
        maxRelError(rb.logProbs!.data as Float32Array, ra.logProbs!.data as Float32Array) < 1e-5,
      );
    }
    const sa = await extractInputSimilarity(a, TEXT, { layers: [1] });
    const sb = await extractInputSimilarity(b, TEXT, { layers: [1] });
    assert.ok(
      maxRelError(
        sb.perLayer.get(1)!.data as Float32Array,
        sa.perLayer.get(1)!.data as Float32Array,
      ) < 1e-5,
    );
  } finally {
    a.close();
    b.close();
  }
});

Deno.test("module outputs into an earlier result's arrays: the same values, the same arrays where the shapes match", async () => {
  const model = await loadModel({ configPath: CONFIG, modelId: "test-48x2", device: "cpu" });
  try {
    const modules = ["dt_proj", "x_proj"] as const;
    const first = await extractModuleOutputs(model, TEXT, { modules: [...modules] });
    const other = new TextEncoder().encode("Another text of the same length, byte for byte. ");
    const text2 = new Uint8Array(TEXT.length).map((_, i) => other[i % other.length]);
    const fresh = await extractModuleOutputs(model, text2, { modules: [...modules] });
    const into = first.modules;
    const kept = new Map<string, Map<number, unknown>>();
    for (const [m, per] of into) kept.set(m, new Map([...per].map(([l, t]) => [l, t.data])));
    const reused = await extractModuleOutputs(model, text2, { modules: [...modules], into });
    for (const m of modules) {
      for (const [l, t] of reused.modules.get(m)!) {
        assert.equal(t.data, kept.get(m)!.get(l), `${m} layer ${l}: the earlier array is reused`);
        assert.deepEqual(t.data, fresh.modules.get(m)!.get(l)!.data, `${m} layer ${l}`);
      }
    }
    // another length: new arrays; the earlier result is left as it was
    const before = Float32Array.from(reused.modules.get("dt_proj")!.get(0)!.data as Float32Array);
    const short = await extractModuleOutputs(model, TEXT.subarray(0, 17), {
      modules: ["dt_proj"],
      into: reused.modules,
    });
    const t = short.modules.get("dt_proj")!.get(0)!;
    assert.deepEqual(t.shape, [17, model.dims.dInner]);
    assert.notEqual(t.data, reused.modules.get("dt_proj")!.get(0)!.data);
    assert.deepEqual(reused.modules.get("dt_proj")!.get(0)!.data, before);
  } finally {
    model.close();
  }
});

Deno.test("mod.ts exports the extraction functions a script needs", async () => {
  const mod = await import("../mod.ts");
  assert.equal(mod.extractModuleOutputs, extractModuleOutputs);
  assert.equal(mod.extractDiscreteA, extractDiscreteA);
  assert.equal(mod.extractInputSimilarity, extractInputSimilarity);
  assert.equal(mod.parseModuleId, parseModuleId);
});
