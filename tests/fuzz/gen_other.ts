/**
 * Fuzz generators of files that are not checkpoints at all, and of output records to write.
 *
 * @module
 */

import { writeSafetensorsTo } from "../../src/checkpoint/safetensors.ts";
import {
  encodeMsgpack,
  encodePickle,
  flattenRecord,
  float32,
  type HostTensor,
  tuple,
} from "../../src/io/mod.ts";
import { MemoryWriter } from "../../src/io/sink.ts";
import { enc, type FuzzCase, nastyString } from "./case.ts";
import { mutateBytes, mutateText } from "./mutate.ts";
import type { Rng } from "./rng.ts";

// ---- not checkpoints at all --------------------------------------------------------------------

/** A file (or FIFO, folder, link) that is not a checkpoint. */
export function genRaw(rng: Rng): FuzzCase {
  const kind = rng.pick([
    "random",
    "text",
    "shadow",
    "empty",
    "fifo",
    "dir",
    "devzero",
    "loop",
    "sparse",
    "prefix",
  ]);
  const name = rng.pick(["x.safetensors", "x.pt", "x.bin", "x", "README.md"]);
  const file = (data: Uint8Array): FuzzCase => ({
    target: "raw",
    desc: `raw ${kind}`,
    files: [{ path: name, data }],
    entry: name,
  });
  switch (kind) {
    case "random":
      return file(rng.bytes(rng.size(4096)));
    case "text":
      return file(
        enc.encode("# mambabyte\n\nA Deno toolkit for MambaByte.\n".repeat(rng.size(50))),
      );
    case "shadow":
      return file(enc.encode("root:$y$j9T$Zx8hunter2secretSECRET:19000:0:99999:7:::\n"));
    case "empty":
      return file(new Uint8Array());
    case "fifo":
      return {
        target: "raw",
        desc: "raw fifo",
        files: [{ path: name, kind: "fifo" }],
        entry: name,
      };
    case "dir":
      return { target: "raw", desc: "raw dir", files: [{ path: name, kind: "dir" }], entry: name };
    case "devzero":
      return {
        target: "raw",
        desc: "raw /dev/zero",
        files: [{ path: name, kind: "symlink", link: "/dev/zero" }],
        entry: name,
      };
    case "loop":
      return {
        target: "raw",
        desc: "raw symlink loop",
        files: [{ path: name, kind: "symlink", link: name }],
        entry: name,
      };
    case "sparse": {
      // A large file (sparse, all zeros): it must not be read whole.
      const size = rng.pick([1 << 30, 2 ** 40]);
      return {
        target: "raw",
        desc: `raw sparse ${size}`,
        files: [{ path: name, data: rng.bytes(16), size }],
        entry: name,
      };
    }
    default: {
      const prefix = rng.pick([
        Uint8Array.of(0x50, 0x4b, 3, 4),
        Uint8Array.of(0x80, 2),
        Uint8Array.of(2, 0, 0, 0, 0, 0, 0, 0, 0x7b, 0x7d),
        Uint8Array.of(0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7b),
      ]);
      return file(Uint8Array.from([...prefix, ...rng.bytes(rng.size(2048))]));
    }
  }
}

// ---- output records ----------------------------------------------------------------------------

function randomValue(rng: Rng, depth: number): unknown {
  const k = rng.int(depth > 6 ? 8 : 12);
  switch (k) {
    case 0:
      return rng.pick<unknown>([0, -1, 1.5, NaN, Infinity, -0, 2 ** 53 + 1, 1e308]);
    case 1:
      return rng.pick([0n, -1n, 2n ** 64n, -(2n ** 70n)]);
    case 2:
      return nastyString(rng).slice(0, 1000);
    case 3:
      return rng.pick([true, false, null, undefined]);
    case 4:
      return rng.bytes(rng.size(64));
    case 5: {
      const n = rng.size(64);
      return float32([n], new Float32Array(n).fill(rng.next()));
    }
    case 6: {
      // A tensor whose shape and data disagree, or with an odd shape.
      const t: HostTensor = {
        dtype: rng.pick(["float32", "int64", "bool", "float16" as "float32"]),
        shape: rng.pick([[2], [-1], [1.5], [2 ** 31, 2 ** 31], []]),
        data: new Float32Array(rng.size(8)),
      };
      return t;
    }
    case 7:
      return rng.pick<unknown>([new Date(0), () => 1, Symbol("s"), new Set([1]), /re/]);
    case 8:
      return Array.from({ length: rng.size(5) }, () => randomValue(rng, depth + 1));
    case 9:
      return tuple(...Array.from({ length: rng.size(4) }, () => randomValue(rng, depth + 1)));
    case 10:
      return new Map(
        Array.from({ length: rng.size(4) }, (_, i) => [
          rng.pick<unknown>([i, `k${i}`, 1.5, -i, null, 2n ** 70n]),
          randomValue(rng, depth + 1),
        ]),
      );
    default:
      return Object.fromEntries(
        Array.from(
          { length: rng.size(4) },
          (_, i) => [rng.pick([`k${i}`, "__proto__", "", "a.b", "0"]), randomValue(rng, depth + 1)],
        ),
      );
  }
}

/** A record to write with writeOutputs. */
export function genWrite(rng: Rng): FuzzCase {
  const record: Record<string, unknown> = {};
  for (let i = rng.range(1, 4); i > 0; i--) {
    record[rng.pick(["prompt", "discrete_A", "log_probs", "x", "__metadata__", "a.b"])] =
      randomValue(rng, 0);
  }
  if (rng.chance(0.05)) {
    // Deep nesting.
    let v: unknown = 1;
    for (let i = rng.pick([100, 3000]); i > 0; i--) v = [v];
    record.deep = v;
  }
  const out = rng.pick(["o.pkl", "o.msgpack", "o.safetensors", "o.pickle", "o.json", "sub/o.pkl"]);
  return { target: "write", desc: `write ${out}`, files: [], entry: out, record };
}

// ---- output records read back ------------------------------------------------------------------

/** The bytes writeOutputs' encoder for `ext` makes of `record`. */
async function encodeRecord(ext: string, record: Record<string, unknown>): Promise<Uint8Array> {
  if (ext === ".msgpack") return await encodeMsgpack(record);
  if (ext === ".pkl") return await encodePickle(record);
  const { tensors, metadata } = flattenRecord(record); // writeSafetensorsRecord's body, in memory
  const w = new MemoryWriter();
  await writeSafetensorsTo(w, tensors, metadata, "fuzz record");
  return w.bytes();
}

/**
 * An outputs file (the extraction scripts' records, as `scripts/visualize.ts` and users' tools
 * read them back with readOutputs): written by our encoders, then mostly byte-mutated.
 */
export async function genRead(rng: Rng): Promise<FuzzCase> {
  const ext = rng.pick([".msgpack", ".pkl", ".safetensors"]);
  // an extraction's record as the page reads it: the prompt, log-probs and ranks of its bytes,
  // discrete-A's fro norm and dt_proj per layer (or, half the time, a nasty prompt)
  const prompt = rng.chance(0.5) ? "To be, or not" : nastyString(rng).slice(0, 200);
  const L = enc.encode(prompt).length, D = 4;
  const perLayer = (shape: number[], v: number) =>
    new Map(
      [0, 1].map((l) => [l, float32(shape, new Float32Array(shape[0] * (shape[1] ?? 1)).fill(v))]),
    );
  const record: Record<string, unknown> = {
    prompt,
    model_id: "fuzz",
    log_probs: float32([Math.max(L - 1, 0)], new Float32Array(Math.max(L - 1, 0)).fill(-1.5)),
    reduction: "fro",
    discrete_A: perLayer([L], 0.5),
    nonlinearity: "softplus",
    dt_proj: perLayer([L, D], 0.25),
  };
  if (ext !== ".safetensors" && rng.chance(0.5)) record.extra = randomValue(rng, 3);
  let data: Uint8Array;
  try {
    data = await encodeRecord(ext, record);
  } catch {
    delete record.extra; // a value that format cannot hold
    data = await encodeRecord(ext, record);
  }
  let desc = `read ${ext}`;
  if (rng.chance(0.85)) {
    const m = mutateBytes(rng, data);
    data = m.data;
    desc += ` ${m.ops.join(",")}`;
  }
  return { target: "read", desc, files: [{ path: `o${ext}`, data }], entry: `o${ext}` };
}

// ---- tokenizer.json (the subword drafter's) ----------------------------------------------------

const TOKENIZER_FIXTURE = new URL("../fixtures/subword_drafter/tokenizer.json", import.meta.url);
let tokenizerText: string | undefined;

/** The fixture drafter's tokenizer.json, with a structural, text or byte mutation (or none). */
export async function genTokenizer(rng: Rng): Promise<FuzzCase> {
  tokenizerText ??= await Deno.readTextFile(TOKENIZER_FIXTURE);
  const doc = JSON.parse(tokenizerText) as Record<string, unknown>;
  const model = doc.model as { vocab: Record<string, unknown>; merges?: unknown[] };
  const kind = rng.pick(["none", "id", "added", "model", "merges", "shape", "text", "bytes"]);
  const keys = Object.keys(model.vocab);
  const nasty = () =>
    rng.pick<unknown>([2 ** 31, 2e9, 1e12, -1, 1.5, NaN, "7", null, 2 ** 53, keys.length + 5]);
  switch (kind) {
    case "id":
      model.vocab[rng.pick(keys)] = nasty();
      break;
    case "added":
      doc.added_tokens = rng.pick<unknown>([
        [{ id: nasty(), content: "<x>", special: true }],
        { id: 1 },
        "x",
        [null, 5],
        Array.from({ length: rng.size(2000) }, (_, i) => ({ id: i, content: `<${i}>` })),
      ]);
      break;
    case "model":
      (doc.model as Record<string, unknown>).type = rng.pick(["WordPiece", "Unigram", "X", 5]);
      break;
    case "merges":
      model.merges = rng.pick<unknown[]>([
        ["a b c"],
        [5],
        Array.from({ length: rng.size(5000) }, () => "\u0120 \u0120"),
      ]);
      break;
    case "shape":
      doc[rng.pick(["model", "pre_tokenizer", "decoder", "normalizer"])] = rng.pick<unknown>([
        null,
        [],
        "ByteLevel",
        { type: "ByteLevel", add_prefix_space: "yes" },
      ]);
      break;
  }
  let text = JSON.stringify(doc);
  if (kind === "text") text = mutateText(rng, text.replace(/,/g, ",\n"), ["1e12", "-1", '"x"']);
  let data: Uint8Array = enc.encode(text);
  if (kind === "bytes") data = mutateBytes(rng, data).data;
  return {
    target: "tokenizer",
    desc: `tokenizer ${kind}`,
    files: [{ path: "tokenizer.json", data }],
    entry: "tokenizer.json",
  };
}
