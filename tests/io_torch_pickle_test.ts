// The torch markers (TorchTensor, TorchMinMax): pickled exactly as torch pickles its own tensors
// and min/max results, so `pickle.load` gives real torch objects; msgpack and safetensors write
// them as plain tensors / {values, indices}.

import assert from "node:assert/strict";
// deno-lint-ignore no-import-prefix
import { decode } from "npm:@msgpack/msgpack@3.1.3";
import { readSafetensors } from "../src/checkpoint/safetensors.ts";
import { MemoryByteSource } from "../src/checkpoint/byte_source.ts";
import {
  bool,
  dumpPickle,
  encodeMsgpack,
  encodePickle,
  float32,
  float64,
  type HostTensor,
  int32,
  int64,
  TorchMinMax,
  torchMinMax,
  TorchTensor,
  torchTensor,
  uint8,
  writeOutputs,
} from "../src/io/mod.ts";
import { flattenRecord } from "../src/io/safetensors.ts";
import { hex, randomF32 } from "./helpers/host_tensors.ts";
import { runPythonJson, skipWithoutPython } from "./helpers/python.ts";

const ignore = await skipWithoutPython(["torch"]);

const TORCH_DTYPE: Record<HostTensor["dtype"], string> = {
  float32: "torch.float32",
  float64: "torch.float64",
  int64: "torch.int64",
  int32: "torch.int32",
  uint8: "torch.uint8",
  bool: "torch.bool",
};

function minmax(kind: "min" | "max", shape: number[], seed: number): TorchMinMax {
  const n = shape.reduce((a, b) => a * b, 1);
  const idx = BigInt64Array.from({ length: n }, (_, i) => BigInt((i * 7 + seed) % 5));
  return torchMinMax(kind, float32(shape, randomF32(n, seed)), int64(shape, idx));
}

/** A record shaped like the original scripts' output dicts. */
function originalRecord(): Record<string, unknown> {
  return {
    prompt: "High up on the hillside ✓",
    model_id: "972M",
    module_id: null,
    layer_idxs: [0, 1],
    reduction: "min",
    discrete_A: new Map<number, unknown>([[0, minmax("min", [3, 4], 1)], [
      1,
      minmax("min", [3, 4], 2),
    ]]),
    maxes: new Map([[7, minmax("max", [5], 3)]]),
    log_probs: torchTensor(float32([6], randomF32(6, 4))),
    ranks: torchTensor(int64([6], BigInt64Array.of(0n, 3n, 255n, -1n, 2n ** 62n, 1n))),
    kinds: {
      f64: torchTensor(float64([], Float64Array.of(3.25))),
      f32_scalar: torchTensor(float32([], Float32Array.of(-0.5))),
      i32: torchTensor(int32([2, 3], Int32Array.of(1, -2, 3, -4, 2147483647, -2147483648))),
      u8: torchTensor(uint8([4], Uint8Array.of(0, 7, 128, 255))),
      mask: torchTensor(bool([3], [true, false, true])),
      empty: torchTensor(float32([0, 3], new Float32Array(0))),
      empty_mid: torchTensor(float32([2, 0, 3], new Float32Array(0))),
    },
    // Nested dicts keyed by int layer index, as the original stores per-layer, per-module results.
    nested: new Map([[3, {
      inner: new Map([[5, torchTensor(float32([2, 2], randomF32(4, 5)))]]),
    }]]),
    // 300 * 257 * 4 bytes > 64 KiB: the legacy storage bytes go out unframed, from the tensor.
    big: torchTensor(float32([300, 257], randomF32(300 * 257, 6))),
  };
}

/** What the Python side prints for a JS value. */
function expected(v: unknown): unknown {
  if (v === null) return null;
  if (typeof v === "string") return { str: v };
  if (typeof v === "number") return { int: v };
  if (v instanceof TorchTensor) {
    const t = v.tensor;
    return { torch: TORCH_DTYPE[t.dtype], shape: t.shape, hex: hex(t) };
  }
  if (v instanceof TorchMinMax) {
    return { [v.kind]: [expected(torchTensor(v.values)), expected(torchTensor(v.indices))] };
  }
  if (Array.isArray(v)) return { list: v.map(expected) };
  const entries = v instanceof Map ? [...v] : Object.entries(v as object);
  return { dict: entries.map(([k, x]) => [expected(k), expected(x)]) };
}

const DESCRIBE = `
import json, sys, pickle
assert "torch" not in sys.modules, "torch imported before pickle.load"
def d(o):
    import torch
    if o is None: return None
    if isinstance(o, str): return {"str": o}
    if isinstance(o, bool): raise TypeError("bool")
    if isinstance(o, int): return {"int": o}
    if isinstance(o, list): return {"list": [d(x) for x in o]}
    if isinstance(o, dict): return {"dict": [[d(k), d(v)] for k, v in o.items()]}
    if type(o) in (torch.return_types.min, torch.return_types.max):
        assert type(o).__module__ == "torch.return_types" and len(o) == 2
        assert o.values is o[0] and o.indices is o[1]
        return {type(o).__name__: [d(o.values), d(o.indices)]}
    if type(o) is torch.Tensor:
        assert o.is_contiguous() and not o.requires_grad and o.storage_offset() == 0
        assert o.device.type == "cpu"
        raw = bytes(o.reshape(-1).view(torch.uint8).tolist())
        return {"torch": str(o.dtype), "shape": list(o.shape), "hex": raw.hex()}
    raise TypeError(type(o).__name__)
`;

Deno.test({
  name: "torch pickle: pickle.load (C and pure Python, torch not imported) gives torch objects",
  ignore,
  fn: async () => {
    const dir = await Deno.makeTempDir({ prefix: "mambabyte_torch_pkl_" });
    try {
      const path = `${dir}/out.pkl`;
      const record = originalRecord();
      await writeOutputs(path, record);
      const got = await runPythonJson(
        DESCRIBE + `
with open(sys.argv[1], "rb") as f: c = pickle.load(f)
with open(sys.argv[1], "rb") as f: p = pickle._Unpickler(f).load()
import torch
assert d(c) == d(p)
assert isinstance(c["log_probs"], torch.Tensor)
assert isinstance(c["discrete_A"][0], torch.return_types.min)
assert isinstance(c["maxes"][7], torch.return_types.max)
out = d(c)
c["kinds"]["i32"][0, 0] = 5  # writable
assert c["kinds"]["i32"][0, 0] == 5 and p["kinds"]["i32"][0, 0] == 1
json.dump(out, sys.stdout)
`,
        [path],
      );
      assert.deepEqual(got, expected(record));
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  },
});

Deno.test({
  name: "torch pickle: the same opcodes as torch's own pickle of each tensor",
  ignore,
  fn: async () => {
    const dir = await Deno.makeTempDir({ prefix: "mambabyte_torch_pkl_" });
    try {
      const kinds = originalRecord().kinds as Record<string, TorchTensor>;
      const paths: string[] = [];
      for (const [name, t] of Object.entries(kinds)) {
        const p = `${dir}/${name}.pkl`;
        await Deno.writeFile(p, await encodePickle(t));
        paths.push(p);
      }
      const got = await runPythonJson(
        `
import io, json, pickle, pickletools, sys
def norm(arg):
    # torch's storage key is a memory address; ours is "0"
    return "KEY" if isinstance(arg, str) and arg.isdigit() else arg
def ops(f, skip=("MEMOIZE", "BINGET", "FRAME")):
    # The bytes opcode depends on the payload length, which depends on the key's length.
    return [("BYTES" if op.name.endswith("BINBYTES") else op.name, norm(arg))
            for op, arg, pos in pickletools.genops(f) if op.name not in skip]
def legacy(b):
    f = io.BytesIO(b)
    pickles = [ops(f, ()) for _ in range(5)]  # memo writes (BINPUT) included
    return {"pickles": pickles, "tail": f.read().hex()}
def outer(data):
    out = []
    for name, arg in ops(io.BytesIO(data)):
        out.append((name, legacy(arg) if isinstance(arg, bytes) else arg))
    return out
result = {}
for path in sys.argv[1:]:
    ours = open(path, "rb").read()
    t = pickle.loads(ours)
    theirs = pickle.dumps(t, protocol=4)
    result[path] = outer(ours) == outer(theirs) or [outer(ours), outer(theirs)]
json.dump(result, sys.stdout, default=str)
`,
        paths,
      ) as Record<string, unknown>;
      for (const p of paths) assert.equal(got[p], true, `${p}: ${JSON.stringify(got[p])}`);
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  },
});

Deno.test("torch pickle: a large tensor's data goes to the file from its own memory", async () => {
  const big = float32([1024, 1024], randomF32(1024 * 1024, 7)); // 4 MiB
  const seen: Uint8Array[] = [];
  await dumpPickle({
    write(p: Uint8Array) {
      seen.push(p);
      return Promise.resolve(p.length);
    },
  }, { t: torchTensor(big) });
  assert.ok(
    seen.some((p) => p.buffer === big.data.buffer && p.length === big.data.byteLength),
    "the tensor's bytes were copied",
  );
});

Deno.test("torch markers: msgpack and safetensors write plain tensors and {values, indices}", async () => {
  const values = float32([2], Float32Array.of(1.5, -2));
  const indices = int64([2], BigInt64Array.of(0n, 3n));
  const t = int32([3], Int32Array.of(7, 8, 9));
  const record = { t: torchTensor(t), m: torchMinMax("max", values, indices), n: 1 };
  const plain = {
    t: { dtype: "int32", shape: [3], data: new Uint8Array(t.data.buffer) },
    m: {
      values: { dtype: "float32", shape: [2], data: new Uint8Array(values.data.buffer) },
      indices: { dtype: "int64", shape: [2], data: new Uint8Array(indices.data.buffer) },
    },
    n: 1,
  };
  assert.deepEqual(decode(await encodeMsgpack(record)), plain);
  const { tensors, metadata } = flattenRecord(record);
  assert.deepEqual(tensors.map((e) => [e.name, e.dtype, e.shape]), [
    ["t", "I32", [3]],
    ["m.values", "F32", [2]],
    ["m.indices", "I64", [2]],
  ]);
  assert.deepEqual(metadata, { n: "1" });
  const dir = await Deno.makeTempDir({ prefix: "mambabyte_torch_st_" });
  try {
    await writeOutputs(`${dir}/o.safetensors`, record);
    const st = await readSafetensors(
      new MemoryByteSource(await Deno.readFile(`${dir}/o.safetensors`)),
    );
    assert.deepEqual(
      await st.tensors.get("m.indices")!.read(),
      new Uint8Array(indices.data.buffer),
    );
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("torchMinMax: indices must be int64 and match the values' shape", () => {
  const v = float32([2], Float32Array.of(1, 2));
  assert.throws(() => torchMinMax("min", v, int32([2], Int32Array.of(0, 1))), /must be int64/);
  assert.throws(
    () => torchMinMax("max", v, int64([3], BigInt64Array.of(0n, 1n, 2n))),
    /values \[2\] and indices \[3\] differ/,
  );
});
