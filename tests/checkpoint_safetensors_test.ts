import assert from "node:assert/strict";
import { join } from "node:path";
import { MemoryByteSource } from "../src/checkpoint/byte_source.ts";
import { CheckpointError } from "../src/checkpoint/errors.ts";
import type { SafetensorsDType } from "../src/checkpoint/dtypes.ts";
import {
  openSafetensors,
  readSafetensors,
  writeSafetensors,
} from "../src/checkpoint/safetensors.ts";
import { PYTHON, skipWithoutPython } from "./helpers/python.ts";

const ALL: { dtype: SafetensorsDType; isz: number }[] = [
  { dtype: "F64", isz: 8 },
  { dtype: "F32", isz: 4 },
  { dtype: "F16", isz: 2 },
  { dtype: "BF16", isz: 2 },
  { dtype: "I64", isz: 8 },
  { dtype: "I32", isz: 4 },
  { dtype: "I16", isz: 2 },
  { dtype: "I8", isz: 1 },
  { dtype: "U8", isz: 1 },
  { dtype: "BOOL", isz: 1 },
];

function bytesOf(n: number, seed: number): Uint8Array {
  return Uint8Array.from({ length: n }, (_, i) => (i * 31 + seed * 7) & 0xff);
}

Deno.test("safetensors: round trip of every dtype, shapes and metadata; no temp file left", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const path = join(dir, "nested", "deeper", "t.safetensors");
    const tensors = ALL.map((d, i) => ({
      name: `t.${d.dtype}`,
      dtype: d.dtype,
      shape: [2, i + 1],
      data: bytesOf(2 * (i + 1) * d.isz, i),
    }));
    tensors.push({ name: "empty", dtype: "F32", shape: [0, 4], data: new Uint8Array() });
    tensors.push({ name: "scalar", dtype: "F32", shape: [], data: bytesOf(4, 99) });
    await writeSafetensors(path, tensors, { format: "pt", note: "héllo" });
    const raw = await Deno.readFile(path);
    const hlen = Number(new DataView(raw.buffer).getBigUint64(0, true));
    assert.equal(hlen % 8, 0);
    const f = await openSafetensors(path);
    try {
      assert.deepEqual(f.metadata, { format: "pt", note: "héllo" });
      assert.deepEqual([...f.tensors.keys()], tensors.map((t) => t.name));
      for (const t of tensors) {
        const r = f.tensors.get(t.name)!;
        assert.equal(r.dtype, t.dtype);
        assert.deepEqual(r.shape, t.shape);
        assert.equal(r.byteLength, t.data.length);
        assert.deepEqual(await r.read(), t.data);
      }
    } finally {
      f.close();
    }
    const left = [...Deno.readDirSync(join(dir, "nested", "deeper"))].map((e) => e.name);
    assert.deepEqual(left, ["t.safetensors"]);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("safetensors: a failed write leaves neither the file nor a temp file", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const path = join(dir, "bad.safetensors");
    await assert.rejects(
      writeSafetensors(path, [{ name: "x", dtype: "F32", shape: [3], data: new Uint8Array(8) }]),
      CheckpointError,
    );
    await assert.rejects(
      writeSafetensors(path, [
        { name: "x", dtype: "F32", shape: [1], data: new Uint8Array(4) },
        { name: "x", dtype: "F32", shape: [1], data: new Uint8Array(4) },
      ]),
      /duplicate tensor name "x"/,
    );
    assert.deepEqual([...Deno.readDirSync(dir)], []);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

const noNumpy = await skipWithoutPython(["numpy"]);

Deno.test({
  name: "safetensors: Debian python + numpy parses what we write",
  ignore: noNumpy,
}, async (t) => {
  await t.step("numpy reader", async () => {
    const dir = await Deno.makeTempDir();
    try {
      const path = join(dir, "np.safetensors");
      const a = new Float32Array([1.5, -2, 3.25, 4, 5, 6]);
      const b = new BigInt64Array([-1n, 2n ** 40n]);
      await writeSafetensors(path, [
        { name: "a", dtype: "F32", shape: [2, 3], data: new Uint8Array(a.buffer) },
        { name: "b", dtype: "I64", shape: [2], data: new Uint8Array(b.buffer) },
      ], { k: "v" });
      const script = `
import json, struct, sys, numpy as np
raw = open(sys.argv[1], "rb").read()
n = struct.unpack("<Q", raw[:8])[0]
h = json.loads(raw[8:8 + n]); base = 8 + n
types = {"F32": "<f4", "I64": "<i8"}
out = {"meta": h.pop("__metadata__")}
for k, v in h.items():
    b, e = v["data_offsets"]
    out[k] = np.frombuffer(raw[base + b:base + e], dtype=types[v["dtype"]]).reshape(v["shape"]).tolist()
print(json.dumps(out))
`;
      const res = await new Deno.Command(PYTHON, { args: ["-c", script, path] }).output();
      assert.ok(res.success, new TextDecoder().decode(res.stderr));
      const got = JSON.parse(new TextDecoder().decode(res.stdout));
      assert.deepEqual(got, {
        meta: { k: "v" },
        a: [[1.5, -2, 3.25], [4, 5, 6]],
        b: [-1, 2 ** 40],
      });
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  });
});

/** A safetensors file with a hand-written header. */
function craft(header: unknown, dataLen: number, lenOverride?: bigint): Uint8Array {
  const json = new TextEncoder().encode(JSON.stringify(header));
  const out = new Uint8Array(8 + json.length + dataLen);
  new DataView(out.buffer).setBigUint64(0, lenOverride ?? BigInt(json.length), true);
  out.set(json, 8);
  return out;
}

async function rejectsWith(bytes: Uint8Array, pattern: RegExp): Promise<void> {
  const err = await readSafetensors(new MemoryByteSource(bytes, "evil.safetensors")).then(
    () => null,
    (e) => e,
  );
  assert.ok(err instanceof CheckpointError, `expected CheckpointError, got ${err}`);
  assert.match(err.message, /^evil\.safetensors: /);
  assert.match(err.message, pattern);
  assert.ok(!err.message.includes("\n"), "one line");
}

const ok = { dtype: "F32", shape: [2], data_offsets: [0, 8] };

Deno.test("safetensors hostile: truncated header, oversized length, garbage", async () => {
  await rejectsWith(new Uint8Array(5), /truncated/);
  const full = craft({ x: ok }, 8);
  await rejectsWith(full.subarray(0, 20), /runs past the end of the file/);
  // The declared length is not shown (for a file that is not safetensors it is text).
  await rejectsWith(
    craft({ x: ok }, 8, 2n ** 62n),
    /^evil\.safetensors: safetensors header runs past the end of the file \(\d+ bytes\)$/,
  );
  await rejectsWith(craft({ x: ok }, 8, 200_000_000n), /runs past the end/);
  const junk = new Uint8Array(24);
  new DataView(junk.buffer).setBigUint64(0, 16n, true);
  junk.fill(0xff, 8);
  await rejectsWith(junk, /header does not start with '\{'/);
  junk[8] = 0x7b;
  await rejectsWith(junk, /not valid UTF-8 JSON/);
  await rejectsWith(craft([1, 2], 0), /does not start with '\{'/);
});

Deno.test("safetensors hostile: bad offsets, overlaps, shapes and dtypes name the tensor", async () => {
  await rejectsWith(
    craft({ x: ok, y: { dtype: "F32", shape: [2], data_offsets: [4, 12] } }, 16),
    /"x" and "y" overlap/,
  );
  await rejectsWith(
    craft({ x: { dtype: "F32", shape: [4], data_offsets: [0, 16] } }, 8),
    /tensor "x".*run past the data area/,
  );
  await rejectsWith(
    craft({ x: { dtype: "F32", shape: [2], data_offsets: [8, 0] } }, 8),
    /tensor "x".*begin 8 > end 0/,
  );
  await rejectsWith(
    craft({ x: { dtype: "F32", shape: [3], data_offsets: [0, 8] } }, 8),
    /tensor "x": 8 bytes stored but shape \[3\] of F32 needs 12/,
  );
  await rejectsWith(
    craft({ x: { dtype: "F32", shape: [-2], data_offsets: [0, 8] } }, 8),
    /tensor "x": shape/,
  );
  await rejectsWith(
    craft({ x: { dtype: "F32", shape: [2.5], data_offsets: [0, 8] } }, 8),
    /tensor "x": shape/,
  );
  await rejectsWith(
    craft({ x: { dtype: "Q4", shape: [2], data_offsets: [0, 8] } }, 8),
    /tensor "x": unsupported dtype "Q4"/,
  );
  await rejectsWith(
    craft({ x: { dtype: "F32", shape: [2], data_offsets: [0] } }, 8),
    /tensor "x": data_offsets/,
  );
  await rejectsWith(
    craft({ x: { dtype: "F32", shape: [2 ** 40, 2 ** 40], data_offsets: [0, 8] } }, 8),
    /tensor "x"/,
  );
  await rejectsWith(craft({ __metadata__: { a: 1 }, x: ok }, 8), /__metadata__ value of "a"/);
});
