import assert from "node:assert/strict";
import { join } from "node:path";
import { openCheckpoint } from "../src/checkpoint/open.ts";
import { toFloat32 } from "../src/checkpoint/dtypes.ts";
import { loadWeights } from "../src/checkpoint/weights.ts";
import { completeDims } from "../src/config/dims.ts";
import { f32Bytes, type FakeTensor, modelTensors, writeTorchFile } from "./checkpoint_helpers.ts";

const small: FakeTensor[] = [
  { name: "a.weight", dtype: "F32", shape: [2, 3], data: f32Bytes([1, 2, 3, 4, 5, 6]) },
  { name: "a.bias", dtype: "F32", shape: [3], data: f32Bytes([-1, 0.5, 7]) },
  // bf16 of 1.0, -2.0
  { name: "b", dtype: "BF16", shape: [2], data: new Uint8Array([0x80, 0x3f, 0x00, 0xc0]) },
  { name: "scalar", dtype: "F64", shape: [], data: new Uint8Array(new Float64Array([2.5]).buffer) },
];

async function values(path: string): Promise<Map<string, number[]>> {
  const ck = await openCheckpoint(path);
  try {
    assert.equal(ck.format, "pytorch");
    const out = new Map<string, number[]>();
    for (const [name, t] of ck.tensors) {
      out.set(name, [...toFloat32(await t.read(), t.dtype, name)]);
    }
    return out;
  } finally {
    ck.close();
  }
}

const expected = new Map<string, number[]>([
  ["a.weight", [1, 2, 3, 4, 5, 6]],
  ["a.bias", [-1, 0.5, 7]],
  ["b", [1, -2]],
  ["scalar", [2.5]],
]);

Deno.test("pytorch: reads a torch.save-style state dict (f32, bf16, f64 scalar)", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const p = join(dir, "sd.pt");
    await writeTorchFile(p, small);
    assert.deepEqual(await values(p), expected);
    const ck = await openCheckpoint(p);
    assert.deepEqual(ck.tensors.get("a.weight")!.shape, [2, 3]);
    assert.equal(ck.tensors.get("b")!.dtype, "BF16");
    assert.deepEqual(ck.tensors.get("scalar")!.shape, []);
    ck.close();
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("pytorch: wrapper dicts, other prefixes, ZIP64, deflated pickle, Namespace", async () => {
  const dir = await Deno.makeTempDir();
  try {
    for (const wrapper of ["model", "state_dict", "model_state_dict", "module"]) {
      const p = join(dir, `${wrapper}.bin`);
      await writeTorchFile(p, small, { wrapper, withNamespace: true });
      assert.deepEqual(await values(p), expected, wrapper);
    }
    const p2 = join(dir, "z.pth");
    await writeTorchFile(p2, small, { zip64: true, prefix: "my_model", deflatePickle: true });
    assert.deepEqual(await values(p2), expected);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("pytorch: shared storages and offset views (tied weights)", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const p = join(dir, "tied.ckpt");
    await writeTorchFile(p, [
      { name: "emb", dtype: "F32", shape: [2, 2], data: f32Bytes([1, 2, 3, 4]) },
      { name: "head", dtype: "F32", shape: [2, 2], data: new Uint8Array(), shareWith: "emb" },
      {
        name: "row1",
        dtype: "F32",
        shape: [2],
        data: new Uint8Array(),
        shareWith: "emb",
        storageOffset: 2,
      },
    ]);
    const v = await values(p);
    assert.deepEqual(v.get("head"), [1, 2, 3, 4]);
    assert.deepEqual(v.get("row1"), [3, 4]);
    const ck = await openCheckpoint(p);
    assert.equal(ck.tensors.get("emb")!.storageKey, ck.tensors.get("head")!.storageKey);
    assert.notEqual(ck.tensors.get("emb")!.storageKey, ck.tensors.get("row1")!.storageKey);
    ck.close();
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("pytorch: loadWeights on a MambaByte DDP checkpoint in bf16 under {model: sd}", async () => {
  const dims = completeDims({
    vocabSize: 256,
    dModel: 16,
    nLayer: 2,
    dState: 4,
    dConv: 4,
    expand: 2,
  });
  const dir = await Deno.makeTempDir();
  try {
    const p = join(dir, "mb.pt");
    const tensors = await modelTensors(dims, "layernorm", "mambabyte", {
      lmHead: true,
      dtype: "BF16",
    });
    await writeTorchFile(p, tensors, { wrapper: "model" });
    const w = await loadWeights(p, dims);
    assert.equal(w.normKind, "layernorm");
    assert.equal(w.lmHeadTied, false);
    const raw = tensors.find((t) => t.name === "module.mambabyte.layers.1.mixer.A_log")!;
    const bf = await w.readBF16("layers.1.mixer.A_log");
    assert.deepEqual(new Uint8Array(bf.buffer, bf.byteOffset, bf.byteLength), raw.data);
    assert.deepEqual(w.shape("layers.0.mixer.conv1d.weight"), [dims.dInner, dims.dConv]);
    w.close();
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
