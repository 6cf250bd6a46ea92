/**
 * readOutputs: what the writers store comes back (every format, every dtype, per-layer maps with
 * integer keys, plain fields), and files it cannot use fail with one clear OutputsFileError.
 */
import assert from "node:assert/strict";
import { OutputsFileError, readOutputs } from "../src/io/read.ts";
import { float32, float64, type HostTensor, int32, int64, uint8 } from "../src/io/tensor.ts";
import { writeOutputs } from "../src/io/write.ts";

function record(): Record<string, unknown> {
  return {
    prompt: "héllo\nworld",
    discrete_A: new Map([
      [0, float32([3], Float32Array.of(1.5, -2.25, 3e-8))],
      [11, float32([3], Float32Array.of(0, 1, 2))],
    ]),
    dt_proj: new Map([[2, float32([2, 3], Float32Array.of(1, 2, 3, 4, 5, 6))]]),
    log_probs: float32([2], Float32Array.of(-0.5, -7.25)),
    ranks: int64([2], BigInt64Array.of(0n, 255n)),
    f64: float64([1, 2], Float64Array.of(Math.PI, -1e300)),
    i32: int32([2], Int32Array.of(-7, 2 ** 30)),
    u8: uint8([4], Uint8Array.of(0, 1, 128, 255)),
    model_id: "tiny",
    layer_idxs: [0, 11],
    reduction: "fro",
    reduction_dim: null,
    pretrained_model_filepath: null,
    nested: { a: [1, 2.5, "x"], b: true },
  };
}

function same(a: HostTensor, b: HostTensor, what: string) {
  assert.equal(a.dtype, b.dtype, what);
  assert.deepEqual(a.shape, b.shape, what);
  assert.deepEqual([...a.data], [...b.data], what);
}

for (const ext of [".msgpack", ".pkl", ".safetensors"]) {
  Deno.test(`readOutputs reads back what writeOutputs wrote (${ext})`, async () => {
    const dir = await Deno.makeTempDir({ prefix: "mb-read-" });
    try {
      const path = `${dir}/rec${ext}`;
      const rec = record();
      await writeOutputs(path, rec);
      const got = await readOutputs(path);
      assert.deepEqual(Object.keys(got).sort(), Object.keys(rec).sort());
      for (const key of ["discrete_A", "dt_proj"]) {
        const want = rec[key] as Map<number, HostTensor>;
        const m = got[key];
        assert.ok(m instanceof Map, `${key} is not a Map`);
        assert.deepEqual([...m.keys()], [...want.keys()]);
        for (const [l, t] of want) same(m.get(l), t, `${key}[${l}]`);
      }
      for (const key of ["log_probs", "ranks", "f64", "i32", "u8"]) {
        same(got[key] as HostTensor, rec[key] as HostTensor, key);
      }
      for (const key of ["prompt", "model_id", "layer_idxs", "reduction", "nested"]) {
        assert.deepEqual(got[key], rec[key], key);
      }
      assert.equal(got.reduction_dim, null);
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  });
}

Deno.test("readOutputs: files it cannot use fail with one clear line", async () => {
  const dir = await Deno.makeTempDir({ prefix: "mb-read-bad-" });
  try {
    const fails = async (path: string, re: RegExp) => {
      const err = await readOutputs(path).then(() => null, (e) => e);
      assert.ok(err instanceof OutputsFileError, `${path}: ${err}`);
      assert.match(err.message, re);
      assert.ok(!err.message.includes("\n"), err.message);
    };
    await fails(`${dir}/none.msgpack`, /^outputs file not found: .*none\.msgpack$/);
    await Deno.writeTextFile(`${dir}/x.json`, "{}");
    await fails(`${dir}/x.json`, /unknown extension '\.json'/);
    await Deno.mkdir(`${dir}/d.pkl`);
    await fails(`${dir}/d.pkl`, /is not a file/);
    // A pickle naming a global outside the three our writer uses (os.system) is refused.
    const enc = new TextEncoder();
    const str = (s: string) => [0x8c, s.length, ...enc.encode(s)];
    await Deno.writeFile(
      `${dir}/evil.pkl`,
      Uint8Array.of(0x80, 4, ...str("os"), ...str("system"), 0x93, ...str("id"), 0x85, 0x52, 0x2e),
    );
    await fails(`${dir}/evil.pkl`, /refusing global os\.system/);
    await writeOutputs(`${dir}/ok.msgpack`, record());
    const bytes = await Deno.readFile(`${dir}/ok.msgpack`);
    await Deno.writeFile(`${dir}/cut.msgpack`, bytes.subarray(0, bytes.length - 9));
    await fails(`${dir}/cut.msgpack`, /cannot read outputs file .*cut\.msgpack: /);
    await writeOutputs(`${dir}/ok.safetensors`, record());
    const st = await Deno.readFile(`${dir}/ok.safetensors`);
    await Deno.writeFile(`${dir}/cut.safetensors`, st.subarray(0, st.length - 4));
    await fails(`${dir}/cut.safetensors`, /cannot read outputs file .*cut\.safetensors: /);
    await Deno.writeFile(`${dir}/list.msgpack`, Uint8Array.of(0x92, 1, 2));
    await fails(`${dir}/list.msgpack`, /holds no record/);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
