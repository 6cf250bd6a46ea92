import assert from "node:assert/strict";
import { join } from "node:path";
import { CheckpointError } from "../src/checkpoint/errors.ts";
import { openCheckpoint } from "../src/checkpoint/open.ts";
import { toFloat32 } from "../src/checkpoint/dtypes.ts";
import {
  f32Bytes,
  type FakeTensor,
  LEGACY_MAGIC_PICKLE,
  legacyTorchFile,
  PickleWriter,
} from "./checkpoint_helpers.ts";
import { runPythonJson, skipWithoutPython } from "./helpers/python.ts";

const FIXTURES = new URL("./fixtures/", import.meta.url).pathname;

interface Loaded {
  dtype: string;
  shape: number[];
  hex: string;
  storageKey?: string;
}

const hex = (b: Uint8Array) => Array.from(b, (x) => x.toString(16).padStart(2, "0")).join("");

/** Every tensor of a checkpoint: dtype, shape, bytes (hex) and storage key, in file order. */
async function load(path: string): Promise<Map<string, Loaded>> {
  const ck = await openCheckpoint(path);
  try {
    assert.equal(ck.format, "pytorch");
    const out = new Map<string, Loaded>();
    for (const [name, t] of ck.tensors) {
      const bytes = await t.read();
      assert.equal(bytes.length, t.byteLength, name);
      out.set(name, { dtype: t.dtype, shape: t.shape, hex: hex(bytes), storageKey: t.storageKey });
    }
    return out;
  } finally {
    ck.close();
  }
}

/** Opens and reads every tensor; must fail with a one-line CheckpointError matching `pattern`. */
async function rejects(path: string, pattern: RegExp): Promise<void> {
  const err = await load(path).then(() => null, (e) => e);
  assert.ok(err instanceof CheckpointError, `expected CheckpointError, got ${err?.stack ?? err}`);
  assert.match(err.message, pattern);
  assert.ok(!err.message.includes("\n"), `one line: ${err.message}`);
}

Deno.test("legacy: the committed fixture loads to exactly the zip file's tensors", async () => {
  const zip = await load(join(FIXTURES, "rms_model.pt"));
  const legacy = await load(join(FIXTURES, "rms_model_legacy.pt"));
  const head = await Deno.open(join(FIXTURES, "rms_model_legacy.pt"));
  const magic = new Uint8Array(LEGACY_MAGIC_PICKLE.length);
  await head.read(magic);
  head.close();
  assert.deepEqual(magic, LEGACY_MAGIC_PICKLE, "the fixture is in the legacy layout");
  assert.equal(legacy.size, 22);
  assert.deepEqual([...legacy.keys()], [...zip.keys()]);
  for (const [name, z] of zip) {
    const l = legacy.get(name)!;
    assert.deepEqual([l.dtype, l.shape, l.hex], [z.dtype, z.shape, z.hex], name);
  }
  // 22 separate storages: no two tensors may claim the same data.
  assert.equal(new Set([...legacy.values()].map((t) => t.storageKey)).size, 22);
});

const small: FakeTensor[] = [
  { name: "a.weight", dtype: "F32", shape: [2, 3], data: f32Bytes([1, 2, 3, 4, 5, 6]) },
  { name: "a.bias", dtype: "F32", shape: [3], data: f32Bytes([-1, 0.5, 7]) },
  { name: "b", dtype: "BF16", shape: [2], data: new Uint8Array([0x80, 0x3f, 0x00, 0xc0]) },
  { name: "scalar", dtype: "F64", shape: [], data: new Uint8Array(new Float64Array([2.5]).buffer) },
  { name: "tied", dtype: "F32", shape: [2, 3], data: new Uint8Array(), shareWith: "a.weight" },
  {
    name: "row1",
    dtype: "F32",
    shape: [3],
    data: new Uint8Array(),
    shareWith: "a.weight",
    storageOffset: 3,
  },
];

async function floats(path: string): Promise<Map<string, number[]>> {
  const ck = await openCheckpoint(path);
  try {
    const out = new Map<string, number[]>();
    for (const [n, t] of ck.tensors) out.set(n, [...toFloat32(await t.read(), t.dtype, n)]);
    return out;
  } finally {
    ck.close();
  }
}

Deno.test("legacy: files built without torch (dtypes, wrappers, tied weights, views)", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const want = new Map([
      ["a.weight", [1, 2, 3, 4, 5, 6]],
      ["a.bias", [-1, 0.5, 7]],
      ["b", [1, -2]],
      ["scalar", [2.5]],
      ["tied", [1, 2, 3, 4, 5, 6]],
      ["row1", [4, 5, 6]],
    ]);
    for (const wrapper of [undefined, "model", "state_dict"]) {
      const p = join(dir, `${wrapper ?? "sd"}.pth`);
      await Deno.writeFile(p, legacyTorchFile(small, { wrapper, withNamespace: !!wrapper }));
      assert.deepEqual(await floats(p), want, String(wrapper));
      const t = await load(p);
      assert.equal(t.get("tied")!.storageKey, t.get("a.weight")!.storageKey);
      assert.notEqual(t.get("row1")!.storageKey, t.get("a.weight")!.storageKey);
    }
    // Old torch's storage views: "v" views elements 2..5 of storage "0", then offset 1 inside it.
    const p = join(dir, "views.bin");
    await Deno.writeFile(
      p,
      legacyTorchFile([
        { name: "w", dtype: "F32", shape: [6], data: f32Bytes([10, 11, 12, 13, 14, 15]) },
        {
          name: "v",
          dtype: "F32",
          shape: [2],
          data: new Uint8Array(),
          shareWith: "w",
          storageOffset: 1,
        },
      ], { views: { v: ["view0", 2, 3] } }),
    );
    assert.deepEqual((await floats(p)).get("v"), [13, 14]);
    // Any extension but .safetensors: a file starting with a pickle is tried as PyTorch.
    const q = join(dir, "weights.data");
    await Deno.writeFile(q, legacyTorchFile(small));
    assert.deepEqual(await floats(q), want);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("legacy: pickles larger than the first 1 MiB window", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const many: FakeTensor[] = [];
    for (let i = 0; i < 5000; i++) {
      many.push({
        name: `layer.${i}.${"x".repeat(200)}`,
        dtype: "F32",
        shape: [1],
        data: f32Bytes([i]),
      });
    }
    const p = join(dir, "many.pt");
    const file = legacyTorchFile(many);
    assert.ok(file.length > 1.2e6, `${file.length} bytes`);
    await Deno.writeFile(p, file);
    const v = await floats(p);
    assert.equal(v.size, 5000);
    assert.deepEqual(v.get(`layer.4999.${"x".repeat(200)}`), [4999]);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

// Every storage dtype torch has a class for, tied weights and offset views, as torch 1.x/2.x write
// them; the expected bytes come from torch itself.
const MAKE_LEGACY = `
import json, sys, torch
g = torch.Generator().manual_seed(7)
emb = torch.randn(4, 3, generator=g)
sd = {
    "f32": emb,
    "tied": emb,
    "row": emb[2],
    "rows": emb[1:3],
    "bf16": torch.randn(5, generator=g).to(torch.bfloat16),
    "f16": torch.randn(2, 2, generator=g).to(torch.float16),
    "f64": torch.randn(3, generator=g, dtype=torch.float64),
    "i64": torch.arange(-3, 3, dtype=torch.int64).reshape(2, 3),
    "i32": torch.tensor([7, -8], dtype=torch.int32),
    "i16": torch.tensor([300, -2], dtype=torch.int16),
    "i8": torch.tensor([-5], dtype=torch.int8),
    "u8": torch.tensor([0, 255], dtype=torch.uint8),
    "bool": torch.tensor([True, False, True]),
    "scalar": torch.tensor(1.25),
    "empty": torch.zeros(0, 3),
}
names = {torch.float32: "F32", torch.bfloat16: "BF16", torch.float16: "F16",
         torch.float64: "F64", torch.int64: "I64", torch.int32: "I32", torch.int16: "I16",
         torch.int8: "I8", torch.uint8: "U8", torch.bool: "BOOL"}
torch.save(sd, sys.argv[1], _use_new_zipfile_serialization=False)
torch.save({"model": sd, "epoch": 3}, sys.argv[2], _use_new_zipfile_serialization=False,
           pickle_protocol=4)
out = {}
for k, v in sd.items():
    raw = bytes(v.contiguous().reshape(-1).view(torch.uint8).tolist())
    out[k] = {"dtype": names[v.dtype], "shape": list(v.shape), "hex": raw.hex()}
json.dump({"torch": torch.__version__, "tensors": out}, sys.stdout)
`;

Deno.test({
  name: "legacy: files written by torch.save(_use_new_zipfile_serialization=False)",
  ignore: await skipWithoutPython(["torch"]),
  async fn() {
    const dir = await Deno.makeTempDir();
    try {
      const p2 = join(dir, "sd.pt");
      const p4 = join(dir, "wrapped_protocol4.ckpt");
      const { tensors } = await runPythonJson(MAKE_LEGACY, [p2, p4]) as {
        tensors: Record<string, { dtype: string; shape: number[]; hex: string }>;
      };
      for (const p of [p2, p4]) {
        const got = await load(p);
        assert.deepEqual([...got.keys()], Object.keys(tensors), p);
        for (const [name, want] of Object.entries(tensors)) {
          const g = got.get(name)!;
          assert.deepEqual({ dtype: g.dtype, shape: g.shape, hex: g.hex }, want, `${p}: ${name}`);
        }
        assert.equal(got.get("tied")!.storageKey, got.get("f32")!.storageKey);
        assert.notEqual(got.get("row")!.storageKey, got.get("f32")!.storageKey);
      }
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  },
});

function osSystemPickle(): Uint8Array {
  return new PickleWriter().proto(2).global("os", "system").str("echo pwned").op(0x85).op(0x52)
    .op(0x2e).bytes();
}

Deno.test("legacy: hostile and broken files, each one clear CheckpointError", async (t) => {
  const dir = await Deno.makeTempDir();
  const file = async (name: string, bytes: Uint8Array) => {
    const p = join(dir, name);
    await Deno.writeFile(p, bytes);
    return p;
  };
  const two: FakeTensor[] = [
    { name: "w", dtype: "F32", shape: [2], data: f32Bytes([1, 2]) },
    { name: "b", dtype: "F32", shape: [3], data: f32Bytes([3, 4, 5]) },
  ];
  const good = legacyTorchFile(two);
  try {
    await t.step("truncated data and headers", async () => {
      await rejects(
        await file("cut_data.pt", good.subarray(0, good.length - 4)),
        /storage "1" needs 12 bytes at byte \d+ but the file has \d+ bytes; the file is truncated/,
      );
      await rejects(
        await file("cut_head.pt", good.subarray(0, good.length - 12 - 4)),
        /storage "1": its header at byte \d+ is past the end of the file/,
      );
      await rejects(await file("cut_pickle.pt", good.subarray(0, 200)), /: truncated /);
    });

    await t.step("element counts that disagree or exceed the file", async () => {
      await rejects(
        await file("count.pt", legacyTorchFile(two, { counts: { "0": 99n } })),
        /storage "0" holds 99 elements but the pickle declares 2/,
      );
      await rejects(
        await file("neg.pt", legacyTorchFile(two, { counts: { "1": -(2n ** 62n) } })),
        /storage "1" holds -4611686018427387904 elements but the pickle declares 3/,
      );
      const huge = legacyTorchFile(two, {
        storageNumelOverride: 1_000_000,
        counts: { "0": 1_000_000n },
      });
      await rejects(
        await file("huge.pt", huge),
        /storage "0" needs 4000000 bytes at byte \d+ but the file has \d+ bytes/,
      );
    });

    await t.step("storage keys missing from, repeated in or foreign to the list", async () => {
      await rejects(
        await file("missing.pt", legacyTorchFile(two, { keys: ["1"] })),
        /storage "0" is not in the file's storage list/,
      );
      await rejects(
        await file("foreign.pt", legacyTorchFile(two, { keys: ["0", "1", "7"] })),
        /storage "7" is listed but no tensor refers to it/,
      );
      await rejects(
        await file("twice.pt", legacyTorchFile(two, { keys: ["0", "0", "1"] })),
        /storage "0" is listed twice/,
      );
      // a key from the file is shown escaped: the message stays one line (found by the fuzzer)
      await rejects(
        await file("newline.pt", legacyTorchFile(two, { keys: ["0", "1", "100\n\u001b[2J"] })),
        /^[^\n]*storage "100\\x0a\\x1b\[2J" is listed but no tensor refers to it$/,
      );
    });

    await t.step("a disallowed global and a bad protocol version", async () => {
      await rejects(
        await file("evil.pt", legacyTorchFile([], { objectPickle: osSystemPickle() })),
        /refusing to unpickle os\.system: a checkpoint may only contain tensors/,
      );
      await rejects(
        await file("version.pt", legacyTorchFile(two, { version: 1000 })),
        /legacy PyTorch file of protocol version 1000; only 1001 exists/,
      );
      const views = legacyTorchFile(two, { views: { b: ["v", 2, 3] } });
      await rejects(await file("view.pt", views), /view "v" \(3 elements at 2\) does not fit/);
    });

    await t.step("files that are neither layout: the one line, no file bytes", async () => {
      const cases: [string, Uint8Array][] = [
        ["text.pt", new TextEncoder().encode("hello, I am \u001b[31mnot\u001b[0m a model")],
        ["empty.bin", new Uint8Array()],
        ["magic_cut.pt", LEGACY_MAGIC_PICKLE.subarray(0, 10)],
        ["other_pickle.pt", new PickleWriter().proto(2).int(1234).op(0x2e).bytes()],
        [
          "noise.ckpt",
          Uint8Array.from({ length: 4096 }, (_, i) => i === 0 ? 0x80 : (i * 37) & 255),
        ],
      ];
      for (const [name, bytes] of cases) {
        const p = await file(name, bytes);
        const err = await load(p).then(() => null, (e) => e);
        assert.ok(err instanceof CheckpointError, `${name}: ${err}`);
        // openCheckpoint sniffs the content first; readPytorch says the same of a pickle stream.
        assert.match(
          err.message,
          new RegExp(
            `^${p.replace(/[.*+?^${}()|[\]\\]/g, "\\$&")} is not a (PyTorch )?checkpoint \\(`,
          ),
        );
        assert.ok(!err.message.includes("hello") && !err.message.includes("\u001b"));
      }
    });
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
