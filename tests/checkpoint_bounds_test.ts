// The checkpoint readers under hostile input stay bounded (issue "Bounded under hostile input"):
// each test is a small file that used to cost seconds, gigabytes or a hang, or loaded silently
// with the wrong meaning, and now gets a quick one-line CheckpointError (or a bounded success).

import assert from "node:assert/strict";
import { join } from "node:path";
import { type ByteSource, MemoryByteSource } from "../src/checkpoint/byte_source.ts";
import { CheckpointError } from "../src/checkpoint/errors.ts";
import {
  MAX_SAFETENSORS_HEADER_BYTES,
  MAX_TENSORS,
  MAX_ZIP_ENTRIES,
} from "../src/checkpoint/limits.ts";
import { openCheckpoint } from "../src/checkpoint/open.ts";
import { readPytorch } from "../src/checkpoint/pytorch.ts";
import { readSafetensors } from "../src/checkpoint/safetensors.ts";
import { unpickle } from "../src/checkpoint/unpickle.ts";
import { ZipArchive } from "../src/checkpoint/zip.ts";
import {
  buildZip,
  f32Bytes,
  type FakeTensor,
  PickleWriter,
  torchArchiveFiles,
  torchSavePickle,
} from "./checkpoint_helpers.ts";
import { withTempDir } from "./helpers/temp_dir.ts";

/** A ByteSource that counts the bytes read through it. */
class CountingSource implements ByteSource {
  readonly label: string;
  readonly size: number;
  bytesRead = 0;
  #inner: MemoryByteSource;
  constructor(bytes: Uint8Array, label: string) {
    this.#inner = new MemoryByteSource(bytes, label);
    this.label = label;
    this.size = bytes.length;
  }
  read(offset: number, length: number): Promise<Uint8Array> {
    this.bytesRead += length;
    return this.#inner.read(offset, length);
  }
  close(): void {}
}

async function errorOf(p: Promise<unknown>): Promise<CheckpointError> {
  const err = await p.then(() => null, (e) => e);
  assert.ok(err instanceof CheckpointError, `expected a CheckpointError, got ${err?.stack ?? err}`);
  assert.ok(!err.message.includes("\n"), `one line: ${err.message}`);
  return err;
}

/** Opens `path` and reads every tensor; must fail with a one-line CheckpointError. */
async function openError(path: string): Promise<CheckpointError> {
  return await errorOf((async () => {
    const ck = await openCheckpoint(path);
    try {
      for (const t of ck.tensors.values()) await t.read();
    } finally {
      ck.close();
    }
  })());
}

function withDir(fn: (dir: string) => Promise<void>): Promise<void> {
  return withTempDir("mambabyte_bounds_", fn);
}

/** A torch zip whose storage "0" is DEFLATE-compressed, with `views` tensors into it. */
async function compressedViews(storageFloats: number, views: FakeTensor[]): Promise<Uint8Array> {
  const base: FakeTensor = {
    name: "base",
    dtype: "F32",
    shape: [storageFloats],
    data: new Uint8Array(storageFloats * 4),
  };
  const { pkl, storages } = torchSavePickle([base, ...views]);
  const files = torchArchiveFiles(pkl, storages);
  for (const f of files) if (f.name === "archive/data/0") f.deflate = true;
  return await buildZip(files);
}

function view(i: number, offset: number, n: number): FakeTensor {
  return {
    name: `v${i}`,
    dtype: "F32",
    shape: [n],
    data: new Uint8Array(),
    shareWith: "base",
    storageOffset: offset,
  };
}

// ---- 1. compressed storages --------------------------------------------------------------------

Deno.test("zip: a compressed storage read by many views is inflated once", async () => {
  const floats = 4 << 20; // 16 MiB
  const n = 256;
  const step = floats / n;
  const views = Array.from({ length: n }, (_, i) => view(i, i * step, step));
  const zip = await compressedViews(floats, views);
  const src = new CountingSource(zip, "views.pt");
  const t0 = performance.now();
  const tensors = await readPytorch(src);
  let total = 0;
  for (const t of tensors.values()) total += (await t.read()).length;
  const ms = performance.now() - t0;
  assert.equal(total, 2 * floats * 4);
  // Each inflation reads the compressed entry again: 257 reads of it before the fix.
  assert.ok(
    src.bytesRead < 2 * zip.length,
    `read ${src.bytesRead} bytes of a ${zip.length}-byte file`,
  );
  assert.ok(ms < 8000, `took ${ms.toFixed(0)} ms`);
});

Deno.test("zip: a compressed storage larger than its tensors use is refused", async () => {
  const { pkl, storages } = torchSavePickle([
    { name: "w", dtype: "F32", shape: [4], data: f32Bytes([1, 2, 3, 4]) },
  ]);
  storages.set("0", new Uint8Array(4 << 20)); // 4 MiB entry, tensors use 16 bytes
  const files = torchArchiveFiles(pkl, storages);
  for (const f of files) if (f.name === "archive/data/0") f.deflate = true;
  const zip = await buildZip(files);
  const err = await errorOf(readPytorch(new MemoryByteSource(zip, "slack.pt")));
  assert.match(err.message, /^slack\.pt: zip entry "archive\/data\/0" is compressed/);
  assert.match(err.message, /inflates to 4194304 bytes, but its tensors use 16;/);
});

Deno.test("zip: inflated bytes are capped per archive", async () => {
  const files = [
    { name: "a", data: new Uint8Array(3000), deflate: true },
    { name: "b", data: new Uint8Array(3000), deflate: true },
  ];
  const zip = await ZipArchive.open(
    new MemoryByteSource(await buildZip(files), "cap.zip"),
    { maxInflatedBytes: 5000 },
  );
  assert.equal((await zip.read("a")).length, 3000);
  assert.equal((await zip.read("a", 10, 5)).length, 5); // cached: no new inflation
  const err = await errorOf(zip.read("b"));
  assert.match(
    err.message,
    /inflating "b" would exceed the limit of 5000 bytes of decompressed data per archive/,
  );
});

Deno.test("zip: a DEFLATE entry declaring more than DEFLATE can expand to is refused", async () => {
  const files = [{ name: "archive/data.pkl", data: new Uint8Array(2000), deflate: true }];
  const zip = await buildZip(files);
  const dv = new DataView(zip.buffer);
  const cd = dv.getUint32(zip.length - 22 + 16, true);
  dv.setUint32(cd + 24, 200 << 20, true); // declared uncompressed size: 200 MiB
  const src = new MemoryByteSource(zip, "ratio.pt");
  const err = await errorOf(ZipArchive.open(src));
  assert.match(err.message, /cannot inflate to its declared 209715200 bytes/);
});

// ---- 2. unpickler totals -----------------------------------------------------------------------

Deno.test("unpickle: the stack is bounded in total, not per MARK frame", () => {
  const w = new PickleWriter().proto(2).op(0x4e);
  for (let f = 0; f < 3; f++) w.mark().op(0x4e).repeat(0x32, 400_000);
  const err = (() => {
    try {
      unpickle(w.op(0x2e).bytes(), { label: "dups.pt", persistentLoad: () => null });
    } catch (e) {
      return e;
    }
  })();
  assert.ok(err instanceof CheckpointError, String(err));
  assert.match(err.message, /^dups\.pt: pickle stack exceeds 1048576 values in all/);
});

Deno.test("unpickle: memo entries, container items and string bytes are bounded", () => {
  const run = (bytes: Uint8Array, limits = {}) => {
    try {
      unpickle(bytes, { label: "p", persistentLoad: () => null, limits });
    } catch (e) {
      assert.ok(e instanceof CheckpointError, String(e));
      return e.message;
    }
    return "no error";
  };
  const memo = new PickleWriter().proto(4).op(0x4e).repeat(0x94, 1_100_000).op(0x2e);
  assert.match(run(memo.bytes()), /pickle memo exceeds 1048576 entries/);
  // [] then 5000 x (MARK, 1000 x DUP of None, APPENDS): 5M items in one list.
  const items = new PickleWriter().proto(2).op(0x5d).op(0x4e).op(0x94).op(0x30);
  for (let i = 0; i < 5000; i++) items.mark().repeat(0x68, 1).raw(0).repeat(0x32, 999).op(0x65);
  assert.match(run(items.op(0x2e).bytes()), /pickle holds more than 4194304 items in containers/);
  const s = new PickleWriter().proto(2).mark();
  for (let i = 0; i < 3; i++) s.str("x".repeat(60));
  assert.match(
    run(s.op(0x74).op(0x2e).bytes(), { maxBytes: 150 }),
    /pickle makes more than 150 bytes of strings and bytes objects/,
  );
});

// ---- 3. entry counts and header sizes ----------------------------------------------------------

Deno.test("zip: more entries than a checkpoint can need are refused before reading them", async () => {
  const files = [{ name: "archive/data.pkl", data: Uint8Array.of(0x80, 2, 0x4e, 0x2e) }];
  for (let i = 0; i <= MAX_ZIP_ENTRIES; i++) {
    files.push({ name: `archive/data/${i}`, data: new Uint8Array(0) });
  }
  const zip = await buildZip(files, { align: 1, zip64: true });
  const err = await errorOf(readPytorch(new MemoryByteSource(zip, "many.pt")));
  assert.match(
    err.message,
    new RegExp(`${MAX_ZIP_ENTRIES + 2} entries; a checkpoint has at most ${MAX_ZIP_ENTRIES}`),
  );
});

function safetensorsBytes(headerJson: string, dataLen = 0): Uint8Array {
  const json = new TextEncoder().encode(headerJson);
  const out = new Uint8Array(8 + json.length + dataLen);
  new DataView(out.buffer).setBigUint64(0, BigInt(json.length), true);
  out.set(json, 8);
  return out;
}

Deno.test("safetensors: header size and tensor count are capped", async () => {
  const big = `{"__metadata__":{"pad":"${"x".repeat(MAX_SAFETENSORS_HEADER_BYTES)}"}}`;
  let err = await errorOf(
    readSafetensors(new MemoryByteSource(safetensorsBytes(big), "big.safetensors")),
  );
  assert.match(err.message, /header of \d+ bytes exceeds the 8 MiB limit/);
  const entries = Array.from(
    { length: MAX_TENSORS + 1 },
    (_, i) => `"t${i}":{"dtype":"F32","shape":[0],"data_offsets":[0,0]}`,
  );
  err = await errorOf(readSafetensors(
    new MemoryByteSource(safetensorsBytes(`{${entries.join(",")}}`), "many.safetensors"),
  ));
  assert.match(err.message, new RegExp(`${MAX_TENSORS + 1} tensors; .* at most ${MAX_TENSORS}`));
});

// ---- 4. ambiguous files ------------------------------------------------------------------------

Deno.test("zip: a local header whose name differs from the central directory is refused", async () => {
  const { pkl, storages } = torchSavePickle([
    { name: "a", dtype: "F32", shape: [1], data: f32Bytes([1]) },
    { name: "b", dtype: "F32", shape: [1], data: f32Bytes([2]) },
  ]);
  const zip = await buildZip(torchArchiveFiles(pkl, storages));
  // Rename the local header of archive/data/0 to archive/data/1 (the central directory is intact).
  const name = new TextEncoder().encode("archive/data/0");
  let at = -1;
  for (let i = 0; i < zip.length - name.length; i++) {
    if (zip[i] === 0x50 && zip[i + 1] === 0x4b && zip[i + 2] === 3 && zip[i + 3] === 4) {
      if (name.every((b, j) => zip[i + 30 + j] === b)) at = i + 30;
    }
  }
  assert.ok(at > 0);
  zip[at + name.length - 1] = 0x31;
  const err = await errorOf(readPytorch(new MemoryByteSource(zip, "swap.pt")));
  assert.match(
    err.message,
    /local header of entry "archive\/data\/0" names "archive\/data\/1"/,
  );
});

Deno.test("safetensors: duplicate keys and a byte-order mark are refused", async () => {
  const t = `{"dtype":"F32","shape":[1],"data_offsets":[0,4]}`;
  let err = await errorOf(
    readSafetensors(new MemoryByteSource(safetensorsBytes(`{"w":${t},"w":${t}}`, 4), "d.st")),
  );
  assert.match(err.message, /^d\.st: safetensors header has a duplicate key "w"/);
  err = await errorOf(readSafetensors(
    new MemoryByteSource(
      safetensorsBytes(`{"w":{"dtype":"F32","dtype":"F16","shape":[1],"data_offsets":[0,4]}}`, 4),
      "d2.st",
    ),
  ));
  assert.match(err.message, /duplicate key "dtype"/);
  err = await errorOf(
    readSafetensors(new MemoryByteSource(safetensorsBytes(`\ufeff{"w":${t}}`, 4), "bom.st")),
  );
  assert.match(err.message, /^bom\.st: safetensors header starts with a UTF-8 byte-order mark/);
});

// ---- 5. files that are not regular files, and small files read whole ---------------------------

async function mkfifo(path: string): Promise<void> {
  const r = await new Deno.Command("mkfifo", { args: [path] }).output();
  assert.ok(r.success, "mkfifo failed");
}

/** Runs `p`, and if it has not settled after `ms`, unblocks a FIFO reader so the test can end. */
async function settlesQuickly<T>(p: Promise<T>, fifo: string, ms = 3000): Promise<T> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  let late = false;
  const unblock = new Promise<void>((resolve) => {
    timer = setTimeout(async () => {
      late = true;
      // Open the writing end so a reader blocked in open() gets EOF.
      const w = await Deno.open(fifo, { write: true });
      w.close();
      resolve();
    }, ms);
  });
  try {
    const r = await p;
    return r;
  } finally {
    clearTimeout(timer);
    if (late) await unblock;
    assert.ok(!late, `blocked on the FIFO ${fifo} for more than ${ms} ms`);
  }
}

Deno.test("a FIFO, a device or a directory given as a checkpoint file is refused at once", async () => {
  await withDir(async (dir) => {
    const fifo = join(dir, "model.safetensors");
    await mkfifo(fifo);
    const err = await settlesQuickly(openError(fifo), fifo);
    assert.match(err.message, /model\.safetensors is a FIFO, not a regular file/);
    assert.match((await openError("/dev/zero")).message, /^\/dev\/zero is a character device/);
    // An HF folder whose weights file is a FIFO.
    const hf = join(dir, "hf");
    await Deno.mkdir(hf);
    await mkfifo(join(hf, "model.safetensors"));
    const e2 = await settlesQuickly(openError(hf), join(hf, "model.safetensors"));
    assert.match(e2.message, /model\.safetensors is a FIFO, not a regular file/);
    // An HF folder whose weights "file" is a directory.
    const hf2 = join(dir, "hf2");
    await Deno.mkdir(join(hf2, "model.safetensors"), { recursive: true });
    assert.match((await openError(hf2)).message, /model\.safetensors is a directory/);
  });
});

Deno.test("an HF folder's config.json and index are read under a cap, never from a FIFO", async () => {
  await withDir(async (dir) => {
    const fifo = join(dir, "config.json");
    await mkfifo(fifo);
    const err = await settlesQuickly(openError(dir), fifo);
    assert.match(err.message, /config\.json is a FIFO, not a regular file/);
    await Deno.remove(fifo);
    await Deno.writeTextFile(fifo, "{}");
    await Deno.truncate(fifo, 2 << 20); // sparse, 2 MiB
    assert.match((await openError(dir)).message, /config\.json is 2097152 bytes, over the 1 MiB/);
    await Deno.writeTextFile(fifo, "{}");
    const index = join(dir, "model.safetensors.index.json");
    await Deno.writeTextFile(index, "{}");
    await Deno.truncate(index, 9 << 20);
    assert.match((await openError(dir)).message, /index\.json is 9437184 bytes, over the 8 MiB/);
  });
});

// ---- 6. no file contents in messages -----------------------------------------------------------

function hasControl(s: string): boolean {
  return [...s].some((c) => c.charCodeAt(0) < 0x20 || c.charCodeAt(0) === 0x7f);
}

const SECRET = "root:$y$j9T$Zx8hunter2secretSECRET:19000:0:99999:7:::";

Deno.test("a file that is not a checkpoint is named as such, whatever its extension", async () => {
  await withDir(async (dir) => {
    const expected =
      /is not a checkpoint \(expected \.safetensors, a PyTorch \.pt\/\.bin, or a Hugging Face folder\)$/;
    for (const name of ["shadow", "shadow.safetensors", "shadow.pt", "README.md", "x.bin"]) {
      const p = join(dir, name);
      await Deno.writeTextFile(p, `${SECRET}\n# mambabyte\n`);
      const err = await openError(p);
      assert.match(err.message, expected);
      assert.equal(
        err.message,
        `${p} is not a checkpoint (expected .safetensors, a PyTorch .pt/.bin, or a Hugging Face folder)`,
      );
    }
    const empty = join(dir, "empty.safetensors");
    await Deno.writeFile(empty, new Uint8Array());
    assert.match((await openError(empty)).message, expected);
    // Content decides, not the extension: a torch zip named .safetensors still loads.
    const { pkl, storages } = torchSavePickle([
      { name: "w", dtype: "F32", shape: [1], data: f32Bytes([3]) },
    ]);
    const renamed = join(dir, "torch.safetensors");
    await Deno.writeFile(renamed, await buildZip(torchArchiveFiles(pkl, storages)));
    const ck = await openCheckpoint(renamed);
    assert.equal(ck.format, "pytorch");
    ck.close();
  });
});

Deno.test("checkpoint errors do not echo the file's bytes", async () => {
  const secretBytes = new TextEncoder().encode(SECRET);
  const notIn = (msg: string) => {
    for (const word of ["hunter2", "SECRET", "j9T", "root:"]) {
      assert.ok(!msg.includes(word), `message echoes the file: ${msg}`);
    }
    assert.ok(msg.length < 400, `message of ${msg.length} characters`);
    assert.ok(!hasControl(msg), `control characters in: ${JSON.stringify(msg)}`);
  };
  // A safetensors header that is not JSON: JSON.parse's own message quotes the input.
  let err = await errorOf(readSafetensors(
    new MemoryByteSource(safetensorsBytes(`{${SECRET}}`), "j.safetensors"),
  ));
  notIn(err.message);
  // Strings where numbers or dtypes belong.
  const long = SECRET.repeat(200) + "\x1b[2J\n";
  for (
    const header of [
      { w: { dtype: long, shape: [1], data_offsets: [0, 4] } },
      { w: { dtype: "F32", shape: [long], data_offsets: [0, 4] } },
      { w: { dtype: "F32", shape: long, data_offsets: [0, 4] } },
      { w: { dtype: "F32", shape: [1], data_offsets: [long, 4] } },
      { __metadata__: { k: long }, w: 5 },
      [long],
    ]
  ) {
    err = await errorOf(readSafetensors(
      new MemoryByteSource(safetensorsBytes(JSON.stringify(header), 4), "s.safetensors"),
    ));
    notIn(err.message);
  }
  // Names are shown, but escaped and cut short.
  err = await errorOf(readSafetensors(
    new MemoryByteSource(
      safetensorsBytes(
        JSON.stringify({ [long]: { dtype: "Q", shape: [1], data_offsets: [0, 4] } }),
        4,
      ),
      "s.safetensors",
    ),
  ));
  assert.match(err.message, /^s\.safetensors: tensor "root:.{70,}"\.\.\. \(10605 characters\): /);
  assert.ok(err.message.length < 200 && !hasControl(err.message), err.message);
  // A pickled storage offset that is a string, and a byteorder record with odd contents.
  const { pkl, storages } = torchSavePickle([
    { name: "w", dtype: "F32", shape: [1], data: f32Bytes([1]) },
  ]);
  const bad = new Uint8Array([...pkl]);
  // Replace BININT1 0 (the storage offset, after BINPERSID) with SHORT_BINUNICODE "SECRET".
  const i = bad.findIndex((b, j) => b === 0x51 && bad[j + 1] === 0x4b && bad[j + 2] === 0);
  assert.ok(i > 0);
  const patched = Uint8Array.from([
    ...bad.subarray(0, i + 1),
    0x8c,
    6,
    ...secretBytes.subarray(20, 26),
    ...bad.subarray(i + 3),
  ]);
  err = await errorOf(readPytorch(
    new MemoryByteSource(await buildZip(torchArchiveFiles(patched, storages)), "o.pt"),
  ));
  assert.match(err.message, /storage_offset/);
  notIn(err.message);
  const files = torchArchiveFiles(pkl, storages);
  files.find((f) => f.name === "archive/byteorder")!.data = secretBytes.subarray(0, 16);
  err = await errorOf(readPytorch(new MemoryByteSource(await buildZip(files), "b.pt")));
  notIn(err.message);
  // A zip entry name full of control characters and secrets.
  const z = await buildZip([{ name: `${SECRET}\x1b[31m\n`, data: new Uint8Array(1) }]);
  err = await errorOf(readPytorch(new MemoryByteSource(z, "n.pt")));
  assert.match(err.message, /no data\.pkl/);
  const dupName = `archive/${"\x1b".repeat(300)}`;
  err = await errorOf(readPytorch(
    new MemoryByteSource(
      await buildZip([{ name: dupName, data: new Uint8Array(1) }, {
        name: dupName,
        data: new Uint8Array(1),
      }]),
      "dup.pt",
    ),
  ));
  assert.match(err.message, /duplicate entry/);
  notIn(err.message);
});

Deno.test("hf config.json and index errors do not echo the file", async () => {
  await withDir(async (dir) => {
    await Deno.writeTextFile(join(dir, "config.json"), `{"d_model": ${SECRET}}`);
    let err = await openError(dir);
    assert.match(err.message, /config\.json: invalid JSON/);
    assert.ok(!err.message.includes("hunter2"), err.message);
    await Deno.writeTextFile(join(dir, "config.json"), `{"d_model": 16, "d_model": 32}`);
    err = await openError(dir);
    assert.match(err.message, /config\.json: invalid JSON \(duplicate key "d_model"/);
    await Deno.writeTextFile(join(dir, "config.json"), `{}`);
    await Deno.writeTextFile(join(dir, "model.safetensors.index.json"), `{${SECRET}`);
    err = await openError(dir);
    assert.match(err.message, /index\.json: invalid index/);
    assert.ok(!err.message.includes("hunter2"), err.message);
  });
});

Deno.test("a pickle opcode stream from a legacy torch file goes to the PyTorch reader", async () => {
  await withDir(async (dir) => {
    const p = join(dir, "legacy.safetensors");
    await Deno.writeFile(p, Uint8Array.of(0x80, 0x02, 0x8a, 0x0a, 0x6c, 0xfc, 0x9c, 0x46, 0xf9));
    const err = await openError(p);
    assert.doesNotMatch(err.message, /safetensors header|not a checkpoint/);
  });
});
