import assert from "node:assert/strict";
import { join } from "node:path";
import { CheckpointError } from "../src/checkpoint/errors.ts";
import { openCheckpoint } from "../src/checkpoint/open.ts";
import {
  buildZip,
  f32Bytes,
  PickleWriter,
  torchArchiveFiles,
  writePickleZip,
  writeTorchFile,
} from "./checkpoint_helpers.ts";

let dir = "";

async function fileWith(name: string, bytes: Uint8Array): Promise<string> {
  const p = join(dir, name);
  await Deno.writeFile(p, bytes);
  return p;
}

/** Opens and reads every tensor; must fail with a one-line CheckpointError matching `pattern`. */
async function rejects(path: string, pattern: RegExp): Promise<void> {
  const err = await (async () => {
    const ck = await openCheckpoint(path);
    try {
      for (const t of ck.tensors.values()) await t.read();
    } finally {
      ck.close();
    }
  })().then(() => null, (e) => e);
  assert.ok(err instanceof CheckpointError, `expected CheckpointError, got ${err?.stack ?? err}`);
  assert.match(err.message, pattern);
  assert.ok(!err.message.includes("\n"), `one line: ${err.message}`);
}

function evilPickle(module: string, name: string, stack = false): Uint8Array {
  const w = new PickleWriter().proto(stack ? 4 : 2);
  if (stack) {
    const m = new TextEncoder().encode(module);
    const n = new TextEncoder().encode(name);
    w.raw(0x8c, m.length, ...m, 0x8c, n.length, ...n, 0x93);
  } else {
    w.global(module, name);
  }
  w.str("echo pwned > /tmp/pwned").op(0x85).op(0x52).op(0x2e);
  return w.bytes();
}

Deno.test({
  name: "hostile checkpoints: each a clean one-line CheckpointError",
  async fn(t) {
    dir = await Deno.makeTempDir();
    try {
      await t.step("os.system / posix.system / builtins.eval / subprocess", async () => {
        for (
          const [m, n, stack] of [
            ["os", "system", false],
            ["posix", "system", false],
            ["builtins", "eval", true],
            ["subprocess", "Popen", true],
            ["torch", "load", false],
          ] as const
        ) {
          const p = join(dir, `${m}.pt`);
          await writePickleZip(p, evilPickle(m, n, stack));
          await rejects(
            p,
            new RegExp(`refusing to unpickle ${m}\\.${n}: a checkpoint may only contain tensors`),
          );
        }
      });

      await t.step("a storage claiming more bytes than the zip entry holds", async () => {
        const p = join(dir, "big.pt");
        await writeTorchFile(p, [
          { name: "w", dtype: "F32", shape: [2], data: f32Bytes([1, 2]) },
        ], { storageNumelOverride: 1_000_000 });
        await rejects(p, /storage "0" claims 1000000 F32 elements .* archive holds 8 bytes/);
      });

      await t.step("a tensor view larger than its storage / non-contiguous", async () => {
        const p = join(dir, "view.pt");
        await writeTorchFile(p, [
          { name: "w", dtype: "F32", shape: [2], data: f32Bytes([1, 2]) },
          {
            name: "v",
            dtype: "F32",
            shape: [2],
            data: new Uint8Array(),
            shareWith: "w",
            storageOffset: 1,
          },
        ]);
        await rejects(p, /does not fit in storage "0"/);
        const q = join(dir, "strided.pt");
        await writeTorchFile(q, [
          { name: "w", dtype: "F32", shape: [2, 2], data: f32Bytes([1, 2, 3, 4]), stride: [1, 2] },
        ]);
        await rejects(q, /non-contiguous stride \[1,2\]/);
      });

      await t.step("a zip with a bogus central directory", async () => {
        const good = await buildZip(torchArchiveFiles(evilPickle("os", "system"), new Map()));
        const eocd = good.length - 22;
        const bad1 = good.slice();
        new DataView(bad1.buffer).setUint32(eocd + 16, 0x7fffff00, true); // cd offset far away
        await rejects(await fileWith("cd1.pt", bad1), /central directory .* runs past the end/);
        const bad2 = good.slice();
        const cdOff = new DataView(bad2.buffer).getUint32(eocd + 16, true);
        bad2.fill(0x41, cdOff, cdOff + 8); // destroy the first entry's signature
        await rejects(await fileWith("cd2.pt", bad2), /central directory entry 0 is malformed/);
        const bad3 = good.slice();
        new DataView(bad3.buffer).setUint16(eocd + 10, 5000, true); // entry count
        await rejects(await fileWith("cd3.pt", bad3), /5000 entries cannot fit/);
        const bad4 = good.slice();
        new DataView(bad4.buffer).setUint32(cdOff + 42, 0x7fff0000, true); // local header offset
        await rejects(await fileWith("cd4.pt", bad4), /local header past the end/);
        await rejects(
          await fileWith("cut.pt", good.subarray(0, 100)),
          /no end-of-central-directory/,
        );
        await rejects(await fileWith("tiny.pt", new Uint8Array([0x50, 0x4b, 3, 4])), /too small/);
      });

      await t.step("a deeply nested pickle (MARK bomb, list bomb, tuple bomb)", async () => {
        const marks = new PickleWriter().proto(2).repeat(0x28, 200_000).op(0x2e);
        await writePickleZip(join(dir, "marks.pt"), marks.bytes());
        await rejects(join(dir, "marks.pt"), /nests MARKs deeper than 1000/);
        const n = 100_000;
        const lists = new PickleWriter().proto(2)
          .repeat(0x5d, n).repeat(0x61, n - 1).op(0x2e);
        await writePickleZip(join(dir, "lists.pt"), lists.bytes());
        await rejects(join(dir, "lists.pt"), /nests containers deeper than 1000 levels/);
        const tuples = new PickleWriter().proto(2).op(0x4e)
          .repeat(0x85, n).op(0x2e);
        await writePickleZip(join(dir, "tuples.pt"), tuples.bytes());
        await rejects(join(dir, "tuples.pt"), /nests containers deeper than 1000 levels/);
      });

      await t.step("truncated and malformed pickles", async () => {
        const w = new PickleWriter().proto(2).raw(0x58, 0xff, 0xff, 0xff, 0x7f, 0x41);
        await writePickleZip(join(dir, "str.pt"), w.bytes());
        await rejects(join(dir, "str.pt"), /truncated pickle/);
        await writePickleZip(
          join(dir, "get.pt"),
          new PickleWriter().proto(2).get(77).op(0x2e).bytes(),
        );
        await rejects(join(dir, "get.pt"), /memo entry 77 that was never stored/);
        await writePickleZip(join(dir, "op.pt"), new PickleWriter().proto(2).op(0x69).bytes());
        await rejects(join(dir, "op.pt"), /unsupported pickle opcode 0x69/);
        await writePickleZip(join(dir, "under.pt"), new PickleWriter().proto(2).op(0x52).bytes());
        await rejects(join(dir, "under.pt"), /stack underflow/);
        await writePickleZip(
          join(dir, "none.pt"),
          new PickleWriter().proto(2).op(0x4e).op(0x2e).bytes(),
        );
        await rejects(join(dir, "none.pt"), /no tensors found/);
        const badPid = new PickleWriter().proto(2).str("x").op(0x51).op(0x2e);
        await writePickleZip(join(dir, "pid.pt"), badPid.bytes());
        await rejects(join(dir, "pid.pt"), /unsupported persistent id/);
      });

      await t.step("legacy and non-checkpoint files", async () => {
        const legacy = new Uint8Array([0x80, 0x02, 0x8a, 0x0a, 0x6c, 0xfc, 0x9c, 0x46, 0xf9, 0x20]);
        // A cut-off legacy magic number: neither layout (tests/checkpoint_legacy_test.ts has more).
        await rejects(
          await fileWith("old.pt", legacy),
          /old\.pt is not a PyTorch checkpoint \(neither a torch\.save zip nor the legacy format\)$/,
        );
        await rejects(
          await fileWith("text.bin", new TextEncoder().encode("hello")),
          /text\.bin is not a checkpoint \(expected \.safetensors, a PyTorch \.pt\/\.bin/,
        );
        await rejects(join(dir, "nope.pt"), /^checkpoint not found: .*nope\.pt$/);
        const zipNoPkl = await buildZip([{ name: "a/b.txt", data: new Uint8Array(3) }]);
        await rejects(await fileWith("nopkl.pt", zipNoPkl), /no data\.pkl/);
      });

      await t.step("a DEFLATE entry that inflates past its declared size", async () => {
        const files = torchArchiveFiles(evilPickle("os", "system"), new Map(), "archive", true);
        const zip = await buildZip(files);
        // Shrink the declared uncompressed size of data.pkl in the central directory.
        const dv = new DataView(zip.buffer);
        const cdOff = dv.getUint32(zip.length - 22 + 16, true);
        dv.setUint32(cdOff + 24, 5, true);
        await rejects(await fileWith("bomb.pt", zip), /inflates to more than its declared 5 bytes/);
      });
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  },
});
