// Every output format, written by src/io and read back by real readers: Python's pickle (both the
// C and the pure-Python unpickler), the msgpack package, and a small numpy safetensors reader.

import assert from "node:assert/strict";
import {
  bool,
  float32,
  float64,
  type HostTensor,
  int32,
  int64,
  isHostTensor,
  PyTuple,
  tuple,
  uint8,
  writeOutputs,
} from "../src/io/mod.ts";
import { hex, randomF32 } from "./helpers/host_tensors.ts";
import { runPythonJson, skipWithoutPython } from "./helpers/python.ts";

const ignore = await skipWithoutPython(["numpy", "msgpack"]);

/** Turns a loaded Python value into tagged JSON; shared by all readers below. */
const DESCRIBE = `
import json, math, sys
import numpy as np
def d(o):
    if o is None: return None
    if isinstance(o, bool): return {"bool": o}
    if isinstance(o, int): return {"int": str(o)}
    if isinstance(o, float): return {"float": o if math.isfinite(o) else repr(o)}
    if isinstance(o, str): return {"str": o}
    if isinstance(o, (bytes, bytearray)): return {"bytes": bytes(o).hex()}
    if isinstance(o, list): return {"list": [d(x) for x in o]}
    if isinstance(o, tuple): return {"tuple": [d(x) for x in o]}
    if isinstance(o, dict): return {"dict": [[d(k), d(v)] for k, v in o.items()]}
    if isinstance(o, np.ndarray):
        return {"nd": o.dtype.str, "shape": list(o.shape), "hex": o.tobytes().hex(),
                "writeable": bool(o.flags.writeable)}
    raise TypeError(type(o).__name__)
`;

type Tagged = unknown;

const NP_DTYPE: Record<HostTensor["dtype"], string> = {
  float32: "<f4",
  float64: "<f8",
  int64: "<i8",
  int32: "<i4",
  uint8: "|u1",
  bool: "|b1",
};

/** What the Python side should print for a JS value; `tuples` false where msgpack lists them. */
function expected(v: unknown, tuples = true): Tagged {
  if (v === null || v === undefined) return null;
  if (typeof v === "boolean") return { bool: v };
  if (typeof v === "bigint") return { int: v.toString() };
  if (typeof v === "number") {
    if (Number.isSafeInteger(v)) return { int: String(v) };
    return { float: Number.isFinite(v) ? v : v > 0 ? "inf" : v < 0 ? "-inf" : "nan" };
  }
  if (typeof v === "string") return { str: v };
  if (isHostTensor(v)) {
    return { nd: NP_DTYPE[v.dtype], shape: v.shape, hex: hex(v), writeable: true };
  }
  if (v instanceof Uint8Array) return { bytes: hex(uint8([v.length], v)) };
  if (v instanceof PyTuple) {
    const items = v.items.map((x) => expected(x, tuples));
    return tuples ? { tuple: items } : { list: items };
  }
  if (Array.isArray(v)) return { list: v.map((x) => expected(x, tuples)) };
  const entries = v instanceof Map ? [...v] : Object.entries(v as object);
  return { dict: entries.map(([k, x]) => [expected(k, tuples), expected(x, tuples)]) };
}

/** A record with every kind of value the writers must handle. */
function sampleRecord(): Record<string, unknown> {
  return {
    prompt: "High up on the hillside\nünïcødé ✓ 𝄞",
    model_id: "972M",
    long_str: "x".repeat(300),
    ints: [0, 1, 255, 256, 65535, 65536, -1, -2147483648, 2147483647, 2 ** 31, -(2 ** 40)],
    max_safe: Number.MAX_SAFE_INTEGER,
    floats: [1.5, Math.PI, -1e-7, 1e300, NaN, Infinity, -Infinity],
    flag: true,
    off: false,
    nothing: null,
    layer_idxs: [0, 1, 2],
    pair: tuple(1, "a", 2.5),
    raw: Uint8Array.of(0, 1, 255),
    long_list: Array.from({ length: 2500 }, (_, i) => i * 0.5),
    nested: { a: { b: [1, { c: "d" }] } },
    log_probs: float32([5], randomF32(5, 1)),
    ranks: int64([5], BigInt64Array.of(0n, 1n, -1n, 2n ** 62n, -(2n ** 62n))),
    discrete_A: new Map([
      [0, float32([3, 4, 5], randomF32(60, 2))],
      [1, float32([3, 4, 5], randomF32(60, 3))],
      [11, float32([3, 4, 5], randomF32(60, 4))],
    ]),
    kinds: {
      f64: float64([], Float64Array.of(3.25)),
      i32: int32([2, 3], Int32Array.of(1, -2, 3, -4, 2147483647, -2147483648)),
      u8: uint8([4], Uint8Array.of(0, 7, 128, 255)),
      mask: bool([3], [true, false, true]),
      empty: float32([0, 3], new Float32Array(0)),
    },
    // 300 * 257 * 4 bytes > 64 KiB: exercises the unframed large-payload path.
    big: float32([300, 257], randomF32(300 * 257, 5)),
  };
}

async function tmpDir(): Promise<string> {
  return await Deno.makeTempDir({ prefix: "mambabyte_io_" });
}

for (const ext of [".pkl", ".pickle"]) {
  Deno.test({
    name: `pickle (${ext}): C and pure-Python unpicklers load every value`,
    ignore,
    fn: async () => {
      const dir = await tmpDir();
      try {
        const path = `${dir}/sub/dir/out${ext}`;
        const record = {
          ...sampleRecord(),
          huge: 2n ** 70n,
          neg_huge: -(2n ** 70n),
          edge: [0n, -1n, 127n, 128n, -128n, -129n, 255n, 256n],
          neg_zero: -0,
        };
        await writeOutputs(path, record);
        const got = await runPythonJson(
          DESCRIBE + `
import pickle
with open(sys.argv[1], "rb") as f: c = pickle.load(f)
with open(sys.argv[1], "rb") as f: p = pickle._Unpickler(f).load()
assert d(c) == d(p)
json.dump(d(c), sys.stdout)
`,
          [path],
        ) as { dict: [Tagged, Tagged][] };
        const want = expected(record) as { dict: [Tagged, Tagged][] };
        // -0 is pickled as a float (an integer would lose its sign).
        want.dict.find(([k]) => (k as { str: string }).str === "neg_zero")![1] = { float: -0 };
        assert.deepEqual(got, want);
        assert.deepEqual([...Deno.readDirSync(`${dir}/sub/dir`)].map((e) => e.name), [`out${ext}`]);
      } finally {
        await Deno.remove(dir, { recursive: true });
      }
    },
  });
}

Deno.test({
  name: "pickle: pickletools validates framing and opcodes",
  ignore,
  fn: async () => {
    const dir = await tmpDir();
    try {
      const path = `${dir}/out.pkl`;
      await writeOutputs(path, sampleRecord());
      const got = await runPythonJson(
        `
import json, pickletools, sys, io
data = open(sys.argv[1], "rb").read()
out = io.StringIO()
pickletools.dis(data, out)
ops = [op.name for op, arg, pos in pickletools.genops(data)]
json.dump({"proto": data[1], "frames": ops.count("FRAME"), "last": ops[-1]}, sys.stdout)
`,
        [path],
      ) as { proto: number; frames: number; last: string };
      assert.equal(got.proto, 4);
      assert.ok(got.frames >= 1);
      assert.equal(got.last, "STOP");
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  },
});

Deno.test({
  name: "msgpack: tensors as {dtype, shape, data}, integer layer keys kept",
  ignore,
  fn: async () => {
    const dir = await tmpDir();
    try {
      const path = `${dir}/a/out.msgpack`;
      const record = { ...sampleRecord(), u64: 2n ** 63n, i64: -(2n ** 63n) };
      await writeOutputs(path, record);
      const got = await runPythonJson(
        DESCRIBE + `
import msgpack
def t(o):
    if isinstance(o, dict):
        if set(o) == {"dtype", "shape", "data"} and isinstance(o["data"], bytes):
            return np.frombuffer(bytearray(o["data"]), dtype=np.dtype(o["dtype"]).newbyteorder("<")).reshape(o["shape"])
        return {k: t(v) for k, v in o.items()}
    if isinstance(o, list): return [t(x) for x in o]
    return o
with open(sys.argv[1], "rb") as f:
    o = msgpack.unpackb(f.read(), raw=False, strict_map_key=False)
json.dump(d(t(o)), sys.stdout)
`,
        [path],
      );
      assert.deepEqual(got, expected(record, false));
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  },
});

Deno.test({
  name: "safetensors: tensors named <key>.<layer>, other fields as JSON metadata",
  ignore,
  fn: async () => {
    const dir = await tmpDir();
    try {
      const path = `${dir}/out.safetensors`;
      const record = sampleRecord();
      await writeOutputs(path, record);
      const got = await runPythonJson(
        DESCRIBE + `
import struct
DT = {"F32": "<f4", "F64": "<f8", "I64": "<i8", "I32": "<i4", "U8": "|u1", "BOOL": "|b1"}
def load(path):
    raw = open(path, "rb").read()
    (n,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8:8 + n])
    meta = header.pop("__metadata__", {})
    body = raw[8 + n:]
    out = {}
    for name, e in header.items():
        b, end = e["data_offsets"]
        out[name] = np.frombuffer(bytearray(body[b:end]), dtype=DT[e["dtype"]]).reshape(e["shape"])
    return out, meta
tensors, meta = load(sys.argv[1])
json.dump({"tensors": {k: d(v) for k, v in tensors.items()},
           "meta": {k: json.loads(v) for k, v in meta.items()}}, sys.stdout)
`,
        [path],
      ) as { tensors: Record<string, Tagged>; meta: Record<string, unknown> };
      const tensors: Record<string, HostTensor> = {
        "log_probs": record.log_probs as HostTensor,
        "ranks": record.ranks as HostTensor,
        "big": record.big as HostTensor,
      };
      for (const [layer, t] of record.discrete_A as Map<number, HostTensor>) {
        tensors[`discrete_A.${layer}`] = t;
      }
      for (const [k, t] of Object.entries(record.kinds as Record<string, HostTensor>)) {
        tensors[`kinds.${k}`] = t;
      }
      assert.deepEqual(
        Object.keys(got.tensors).sort(),
        Object.keys(tensors).sort(),
      );
      for (const [name, t] of Object.entries(tensors)) {
        assert.deepEqual(got.tensors[name], expected(t), name);
      }
      assert.equal(got.meta.prompt, record.prompt);
      assert.equal(got.meta.model_id, "972M");
      assert.deepEqual(got.meta.layer_idxs, [0, 1, 2]);
      assert.deepEqual(got.meta.pair, [1, "a", 2.5]);
      assert.deepEqual(got.meta.nested, record.nested);
      assert.equal(got.meta.flag, true);
      assert.equal(got.meta.nothing, null);
      assert.deepEqual(got.meta.ints, record.ints);
      assert.ok(!("discrete_A" in got.meta) && !("big" in got.meta));
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  },
});
