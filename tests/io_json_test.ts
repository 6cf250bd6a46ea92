// The JSON result writer (src/io/json.ts), read back by Python's json module: the msgpack layout's
// shapes (tensors as {dtype, shape, data}, integer layer keys as strings, min/max pairs as
// {values, indices}), null for non-finite numbers, whole or nothing on disk.

import assert from "node:assert/strict";
import { encodeJson, writeJson } from "../src/io/json.ts";
import { float32, int64, torchMinMax, torchTensor, tuple } from "../src/io/mod.ts";
import { OutputError } from "../src/io/errors.ts";
import { runPythonJson, skipWithoutPython } from "./helpers/python.ts";

const ignore = await skipWithoutPython(["json"]);

const big = new Float32Array(40_000).map((_, i) => Math.fround(Math.sin(i) * 1e-3));
const record = {
  prompt: 'héllo "q"\n',
  discrete_A: new Map([[0, float32([2, 2], Float32Array.of(1.5, -2, 0.1, 3))], [
    3,
    float32([1], big.subarray(0, 1)),
  ]]),
  log_probs: float32([3], Float32Array.of(-1, Number.NEGATIVE_INFINITY, Number.NaN)),
  ranks: int64([2], BigInt64Array.of(0n, 255n)),
  big: float32([big.length], big),
  pair: torchMinMax("min", float32([1], Float32Array.of(2)), int64([1], BigInt64Array.of(4n))),
  wrapped: torchTensor(float32([1], Float32Array.of(7))),
  layers: [0, 3],
  shape: tuple(1, 2),
  empty: {},
  none: null,
  flag: true,
  count: 12n,
};

Deno.test({
  name: "json: Python's json reads the record as the msgpack layout",
  ignore,
  async fn() {
    const dir = await Deno.makeTempDir();
    try {
      const path = `${dir}/out.json`;
      await writeJson(path, record);
      assert.deepEqual([...Deno.readDirSync(dir)].map((e) => e.name), ["out.json"]);
      const got = await runPythonJson(
        `import json, sys\nprint(json.dumps(json.load(open(sys.argv[1]))))`,
        [path],
      ) as Record<string, unknown>;
      assert.equal(got.prompt, record.prompt);
      assert.deepEqual(got.discrete_A, {
        "0": { dtype: "float32", shape: [2, 2], data: [1.5, -2, Math.fround(0.1), 3] },
        "3": { dtype: "float32", shape: [1], data: [big[0]] },
      });
      assert.deepEqual(got.log_probs, { dtype: "float32", shape: [3], data: [-1, null, null] });
      assert.deepEqual(got.ranks, { dtype: "int64", shape: [2], data: [0, 255] });
      const b = got.big as { data: number[] };
      assert.equal(b.data.length, big.length);
      assert.ok(b.data.every((x, i) => x === big[i]), "float32 values round-trip exactly");
      assert.deepEqual(got.pair, {
        values: { dtype: "float32", shape: [1], data: [2] },
        indices: { dtype: "int64", shape: [1], data: [4] },
      });
      assert.deepEqual(got.wrapped, { dtype: "float32", shape: [1], data: [7] });
      assert.deepEqual(got.layers, [0, 3]);
      assert.deepEqual(got.shape, [1, 2]);
      assert.deepEqual(got.empty, {});
      assert.equal(got.none, null);
      assert.equal(got.flag, true);
      assert.equal(got.count, 12);
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  },
});

Deno.test("json: the same record gives the same bytes, and JSON.parse reads it", async () => {
  const a = await encodeJson(record);
  assert.deepEqual(await encodeJson(record), a);
  const parsed = JSON.parse(new TextDecoder().decode(a));
  assert.equal(parsed.big.data.length, big.length);
});

Deno.test("json: what JSON cannot hold is an OutputError, and no file is left", async () => {
  const dir = await Deno.makeTempDir();
  try {
    await assert.rejects(writeJson(`${dir}/x.json`, { f: () => 1 }), OutputError);
    await assert.rejects(
      writeJson(`${dir}/x.json`, { m: new Map([[{}, 1]]) }),
      (e: Error) => e instanceof OutputError && /key/.test(e.message),
    );
    assert.deepEqual([...Deno.readDirSync(dir)], []);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
