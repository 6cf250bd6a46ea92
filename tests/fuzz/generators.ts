/**
 * Fuzz case generators, one per input format: a valid file of a small MambaByte model (or a valid
 * config, record, pickle), then structural mutations (duplicate names, huge counts and sizes,
 * deep nesting, BOMs, views, compression) and byte mutations. A case is rebuilt from its seed.
 *
 * @module
 */

import { completeDims, type ModelDims, type NormKind } from "../../src/config/dims.ts";
import { float32, type HostTensor, tuple } from "../../src/io/mod.ts";
import {
  buildZip,
  type FakeTensor,
  modelTensors,
  PickleWriter,
  type Scheme,
  torchArchiveFiles,
  torchSavePickle,
  type ZipFile,
} from "../checkpoint_helpers.ts";
import { mutateBytes, mutateText } from "./mutate.ts";
import { Rng } from "./rng.ts";

/** The formats fuzzed, each with its own entry point (see targets.ts). */
export const TARGETS = [
  "safetensors",
  "torch-zip",
  "legacy-torch",
  "pickle",
  "yaml",
  "hf-folder",
  "raw",
  "write",
] as const;
/** One of {@link TARGETS}. */
export type Target = (typeof TARGETS)[number];

/** A file (or FIFO, folder, link) to create in the case's folder. */
export interface CaseFile {
  path: string;
  data?: Uint8Array;
  kind?: "file" | "fifo" | "dir" | "symlink";
  /** Symlink target. */
  link?: string;
  /** Extend the file to this size (sparse: never written, reads as zeros). */
  size?: number;
}

/** Everything a worker needs to run one case. */
export interface FuzzCase {
  target: Target;
  /** What was generated and how it was mutated (for reports). */
  desc: string;
  files: CaseFile[];
  /** The checkpoint file or folder, relative to the case folder. */
  entry: string;
  /** pickle: the opcode stream given straight to unpickle() (else through a zip). */
  pickle?: Uint8Array;
  /** yaml: the document. */
  yaml?: string;
  /** write: the record and the output file name. */
  record?: Record<string, unknown>;
  /** Also run the command line on the entry (a child process; see targets.ts). */
  cli?: boolean;
}

/** The model every generated checkpoint holds (small: files of ~40 KB). */
export const FUZZ_DIMS: ModelDims = completeDims({
  vocabSize: 256,
  dModel: 8,
  nLayer: 2,
  dState: 4,
  dConv: 4,
  expand: 2,
});

const enc = new TextEncoder();
const tensorCache = new Map<string, FakeTensor[]>();

/** Builds the base tensors once per worker (random init is deterministic). */
export async function initGenerators(): Promise<void> {
  for (const norm of ["layernorm", "rmsnorm"] as NormKind[]) {
    for (const scheme of ["canonical", "transformers", "mamba_ssm", "mambabyte"] as Scheme[]) {
      tensorCache.set(`${norm}/${scheme}`, await modelTensors(FUZZ_DIMS, norm, scheme));
    }
  }
}

function baseTensors(rng: Rng): FakeTensor[] {
  const key = `${rng.pick(["layernorm", "rmsnorm"])}/${
    rng.pick(["canonical", "transformers", "mamba_ssm", "mambabyte"])
  }`;
  const ts = tensorCache.get(key);
  if (!ts) throw new Error("initGenerators() was not called");
  return ts.map((t) => ({ ...t, shape: t.shape.slice() }));
}

/** Strings that stress names and values: control characters, escapes, long, unicode. */
function nastyString(rng: Rng): string {
  return rng.pick([
    "",
    "\u0000",
    "\x1b[31mred\x1b[0m\n",
    "a\nb",
    "\ud800",
    "__proto__",
    "constructor",
    "../../etc/passwd",
    "x".repeat(rng.size(200_000)),
    "\u202eevil",
    "layers.0.mixer.D",
    "embedding.weight",
    "🦀".repeat(rng.size(100)),
  ]);
}

/** JSON nested `depth` levels deep. */
function deepJson(rng: Rng, depth: number): string {
  const [open, close] = rng.chance(0.5) ? ["[", "]"] : ['{"a":', "}"];
  return open.repeat(depth) + "1" + close.repeat(depth);
}

// ---- safetensors -------------------------------------------------------------------------------

/** A safetensors file of `tensors`, with optional structural damage; the header as text. */
function safetensorsFile(rng: Rng, tensors: FakeTensor[], ops: string[]): Uint8Array {
  const entries: string[] = [];
  let offset = 0;
  const datas: Uint8Array[] = [];
  if (rng.chance(0.2)) {
    ops.push("metadata");
    const meta = rng.chance(0.3)
      ? deepJson(rng, rng.size(100_000))
      : JSON.stringify({ format: "pt", note: nastyString(rng) });
    entries.push(`"__metadata__":${meta}`);
  }
  // At most a few damaged entries, so that most files get past the header into the reads.
  const damaged = new Map<number, string>();
  for (let k = rng.chance(0.5) ? rng.range(1, 2) : 0; k > 0; k--) {
    damaged.set(rng.int(tensors.length), rng.pick(["shape", "offsets", "dtype", "name", "dup"]));
  }
  tensors.forEach((t, i) => {
    const begin = offset;
    offset += t.data.length;
    datas.push(t.data);
    let shape: unknown = t.shape;
    let offs: unknown = [begin, offset];
    let dtype: unknown = t.dtype;
    let name = t.name;
    const damage = damaged.get(i);
    if (damage) ops.push(damage);
    if (damage === "shape") {
      shape = rng.pick<unknown>([
        [2 ** 53, 2 ** 53],
        [-1],
        [1.5],
        Array(rng.size(100_000)).fill(1),
        "x",
        null,
        [1e308],
        [t.data.length / 4],
      ]);
    } else if (damage === "offsets") {
      offs = rng.pick<unknown>([
        [offset, begin],
        [0, 2 ** 60],
        [begin, offset + 4],
        [begin - 4, offset - 4],
        [begin],
        "0",
        [-1, offset],
      ]);
    } else if (damage === "dtype") {
      dtype = rng.pick<unknown>(["Q4", "f32", "", 5, null, "F64", "BOOL", "F16", nastyString(rng)]);
    } else if (damage === "name") {
      name = nastyString(rng);
    }
    const entry = `${JSON.stringify(name)}:{"dtype":${JSON.stringify(dtype)},"shape":${
      JSON.stringify(shape)
    },"data_offsets":${JSON.stringify(offs)}}`;
    entries.push(entry);
    if (damage === "dup") entries.push(entry);
  });
  if (rng.chance(0.03)) {
    ops.push("many-tensors");
    const n = rng.pick([1000, 17_000, 70_000]);
    for (let i = 0; i < n; i++) {
      entries.push(`"e${i}":{"dtype":"F32","shape":[0],"data_offsets":[0,0]}`);
    }
  }
  if (rng.chance(0.05)) {
    ops.push("shuffle");
    for (let i = entries.length - 1; i > 0; i--) {
      const j = rng.int(i + 1);
      [entries[i], entries[j]] = [entries[j], entries[i]];
    }
  }
  let json = `{${entries.join(",")}}`;
  if (rng.chance(0.03)) {
    ops.push("bom");
    json = "\ufeff" + json;
  }
  if (rng.chance(0.03)) {
    ops.push("padding");
    json += rng.pick([" ".repeat(rng.size(64)), "\u0000\u0000", "\n"]);
  }
  const head = enc.encode(json);
  const dataLen = datas.reduce((s, d) => s + d.length, 0);
  const out = new Uint8Array(8 + head.length + dataLen);
  let len = BigInt(head.length);
  if (rng.chance(0.03)) {
    ops.push("header-length");
    len = rng.pick([0n, 1n, len + 1n, len - 1n, 2n ** 63n, 100_000_001n, BigInt(out.length)]);
  }
  new DataView(out.buffer).setBigUint64(0, len & (2n ** 64n - 1n), true);
  out.set(head, 8);
  let at = 8 + head.length;
  for (const d of datas) {
    out.set(d, at);
    at += d.length;
  }
  return out;
}

function genSafetensors(rng: Rng): FuzzCase {
  const ops: string[] = [];
  let bytes = safetensorsFile(rng, baseTensors(rng), ops);
  if (rng.chance(0.4)) {
    const m = mutateBytes(rng, bytes);
    bytes = m.data;
    ops.push(...m.ops);
  }
  const name = rng.pick(["m.safetensors", "m.safetensors", "m.pt", "m"]);
  return {
    target: "safetensors",
    desc: `safetensors ${ops.join(",") || "valid"}`,
    files: [{ path: name, data: bytes }],
    entry: name,
  };
}

// ---- torch zip ---------------------------------------------------------------------------------

async function torchZip(rng: Rng, ops: string[]): Promise<Uint8Array> {
  let tensors = baseTensors(rng);
  if (rng.chance(0.1)) {
    ops.push("views");
    const base = tensors[0];
    const n = base.data.length / 4;
    const views: FakeTensor[] = [];
    for (let i = 0; i < rng.size(300); i++) {
      const len = rng.range(0, n);
      views.push({
        name: `view${i}`,
        dtype: "F32",
        shape: [len],
        data: new Uint8Array(),
        shareWith: base.name,
        storageOffset: rng.chance(0.9) ? rng.int(n - len + 1) : rng.pick([n, 2 ** 40, -1]),
      });
    }
    tensors = [...tensors, ...views];
  }
  if (rng.chance(0.05)) {
    ops.push("duplicate-name");
    const t = rng.pick(tensors);
    tensors = [...tensors, { ...t, shape: t.shape.slice() }];
  }
  if (rng.chance(0.05)) {
    ops.push("stride");
    const t = rng.pick(tensors);
    t.stride = t.shape.map(() => rng.pick([0, 1, 2, -1, 2 ** 40]));
  }
  const opts = {
    wrapper: rng.chance(0.2) ? rng.pick(["model", "state_dict", "module", "other"]) : undefined,
    withNamespace: rng.chance(0.5),
    storageNumelOverride: rng.chance(0.05)
      ? rng.pick([0, 1, 2 ** 31, 2 ** 52, -5, 2 ** 60])
      : undefined,
  };
  const { pkl, storages } = torchSavePickle(tensors, opts);
  const prefix = rng.chance(0.9) ? "archive" : nastyString(rng).slice(0, 300) || "p";
  const files: ZipFile[] = torchArchiveFiles(pkl, storages, prefix, rng.chance(0.2));
  if (rng.chance(0.15)) {
    ops.push("deflate");
    for (const f of files) if (rng.chance(0.5)) f.deflate = true;
  }
  if (rng.chance(0.03)) {
    ops.push("bomb");
    files.push({
      name: `${prefix}/data/bomb`,
      data: new Uint8Array(rng.pick([1, 8, 64]) << 20),
      deflate: true,
    });
  }
  if (rng.chance(0.03)) {
    ops.push("duplicate-entry");
    files.push(rng.pick(files));
  }
  if (rng.chance(0.03)) {
    ops.push("drop-entry");
    files.splice(rng.int(files.length), 1);
  }
  if (rng.chance(0.02)) {
    ops.push("many-entries");
    for (let i = 0; i < rng.pick([100, 17_000]); i++) {
      files.push({ name: `x/${i}`, data: new Uint8Array() });
    }
  }
  return await buildZip(files, {
    zip64: rng.chance(0.2),
    align: rng.pick([64, 64, 1, 4096]),
    comment: rng.chance(0.05) ? "c".repeat(rng.size(70_000)) : undefined,
  });
}

async function genTorchZip(rng: Rng): Promise<FuzzCase> {
  const ops: string[] = [];
  let bytes = await torchZip(rng, ops);
  if (rng.chance(0.6)) {
    const m = mutateBytes(rng, bytes);
    bytes = m.data;
    ops.push(...m.ops);
  }
  const name = rng.pick(["m.pt", "m.bin", "m.safetensors", "m"]);
  return {
    target: "torch-zip",
    desc: `torch zip ${ops.join(",") || "valid"}`,
    files: [{ path: name, data: bytes }],
    entry: name,
  };
}

// ---- legacy torch stream -----------------------------------------------------------------------

const STORAGE_CLASS: Record<string, string> = {
  F32: "FloatStorage",
  BF16: "BFloat16Storage",
  F16: "HalfStorage",
  F64: "DoubleStorage",
};

/** torch.save's legacy (pre-1.6) stream: magic, protocol, sys_info, the state dict, keys, data. */
function legacyStream(rng: Rng, tensors: FakeTensor[], ops: string[]): Uint8Array {
  const parts: Uint8Array[] = [];
  // 1. the magic number 0x1950a86a20f9469cfc6c as LONG1
  parts.push(
    Uint8Array.of(
      0x80,
      2,
      0x8a,
      0x0a,
      0x6c,
      0xfc,
      0x9c,
      0x46,
      0xf9,
      0x20,
      0x6a,
      0xa8,
      0x50,
      0x19,
      0x2e,
    ),
  );
  // 2. protocol version 1001
  parts.push(new PickleWriter().proto(2).int(1001).op(0x2e).bytes());
  // 3. sys_info
  const si = new PickleWriter().proto(2).op(0x7d);
  si.put();
  const little = rng.chance(0.95);
  if (!little) ops.push("big-endian");
  si.mark().str("protocol_version").int(1001).str("little_endian").op(little ? 0x88 : 0x89);
  si.str("type_sizes").op(0x7d);
  si.put();
  si.mark().str("short").int(2).str("int").int(4).str("long").int(4).op(0x75).op(0x75).op(0x2e);
  parts.push(si.bytes());
  // 4. the state dict, storages as persistent ids with a view_metadata slot
  const w = new PickleWriter().proto(2);
  w.global("collections", "OrderedDict").op(0x29).op(0x52);
  w.put();
  w.mark();
  const keys: string[] = [];
  const keyOf = new Map<string, string>();
  for (const t of tensors) {
    let key = keyOf.get(t.shareWith ?? "");
    if (!key) {
      const clash = rng.chance(0.03);
      if (clash) ops.push("key-clash");
      key = String(clash ? rng.int(5) : 1000 + keys.length);
      keys.push(key);
      keyOf.set(t.name, key);
    }
    w.str(t.name).global("torch._utils", "_rebuild_tensor_v2").mark();
    w.mark().str("storage").global("torch", STORAGE_CLASS[t.dtype] ?? "FloatStorage").str(key)
      .str("cpu").int(t.data.length / 4).op(0x4e).op(0x74);
    w.put();
    w.op(0x51).int(0).intTuple(t.shape);
    const stride: number[] = [];
    let acc = 1;
    for (let i = t.shape.length - 1; i >= 0; i--) {
      stride[i] = acc;
      acc *= t.shape[i];
    }
    w.intTuple(stride).op(0x89);
    w.global("collections", "OrderedDict").op(0x29).op(0x52);
    w.put();
    w.op(0x74);
    w.put();
    w.op(0x52);
    w.put();
  }
  w.op(0x75).op(0x2e);
  parts.push(w.bytes());
  // 5. the storage keys, then each storage: numel as int64, then its bytes
  const kw = new PickleWriter().proto(2).op(0x5d);
  kw.put();
  kw.mark();
  for (const k of keys) kw.str(k);
  kw.op(0x65).op(0x2e);
  parts.push(kw.bytes());
  for (const t of tensors.filter((t) => !t.shareWith)) {
    const n = new Uint8Array(8);
    const wrong = rng.chance(0.03);
    if (wrong) ops.push("numel");
    const numel = wrong ? rng.pick([-1, 2 ** 40, 0]) : t.data.length / 4;
    new DataView(n.buffer).setBigInt64(0, BigInt(numel), true);
    parts.push(n, t.data);
  }
  const out = new Uint8Array(parts.reduce((s, p) => s + p.length, 0));
  let at = 0;
  for (const p of parts) {
    out.set(p, at);
    at += p.length;
  }
  return out;
}

function genLegacy(rng: Rng): FuzzCase {
  const ops: string[] = [];
  let bytes = legacyStream(rng, baseTensors(rng), ops);
  if (rng.chance(0.6)) {
    const m = mutateBytes(rng, bytes);
    bytes = m.data;
    ops.push(...m.ops);
  }
  const name = rng.pick(["old.pt", "old.bin", "old"]);
  return {
    target: "legacy-torch",
    desc: `legacy torch ${ops.join(",") || "valid"}`,
    files: [{ path: name, data: bytes }],
    entry: name,
  };
}

// ---- raw pickle opcodes ------------------------------------------------------------------------

const GLOBALS: readonly [string, string][] = [
  ["collections", "OrderedDict"],
  ["torch._utils", "_rebuild_tensor_v2"],
  ["torch._utils", "_rebuild_parameter"],
  ["torch", "FloatStorage"],
  ["torch", "BFloat16Storage"],
  ["_codecs", "encode"],
  ["argparse", "Namespace"],
  ["numpy.core.multiarray", "scalar"],
  ["os", "system"],
  ["builtins", "eval"],
  ["torch", "load"],
  ["__builtin__", "getattr"],
];

function u32(n: number): number[] {
  return [n & 0xff, (n >>> 8) & 0xff, (n >>> 16) & 0xff, (n >>> 24) & 0xff];
}

function u64(n: bigint): number[] {
  const out: number[] = [];
  for (let i = 0; i < 8; i++) out.push(Number((n >> BigInt(8 * i)) & 0xffn));
  return out;
}

/** One random opcode with plausible (or hostile) arguments. */
function randomOp(rng: Rng, w: PickleWriter): void {
  const len = () => rng.chance(0.9) ? rng.size(40) : rng.pick([0xffffffff, 0x7fffffff, 1 << 20]);
  const s = () => rng.bytes(Math.min(len(), 64));
  switch (rng.int(34)) {
    case 0:
      w.raw(0x80, rng.int(7));
      break;
    case 1:
      w.raw(0x95, ...u64(BigInt(rng.size(1 << 20))));
      break;
    case 2:
      w.op(rng.pick([0x7d, 0x5d, 0x29]));
      break;
    case 3:
    case 4:
      w.mark();
      break;
    case 5:
      w.op(rng.pick([0x74, 0x85, 0x86, 0x87]));
      break;
    case 6: {
      const b = s();
      w.raw(0x58, ...u32(rng.chance(0.9) ? b.length : len()), ...b);
      break;
    }
    case 7: {
      const b = enc.encode(rng.pick(["storage", "cpu", "0", "w", "__metadata__", "model"]));
      w.raw(0x8c, b.length, ...b);
      break;
    }
    case 8:
      w.raw(0x8d, ...u64(rng.chance(0.8) ? 3n : 2n ** 62n), 0x61, 0x62, 0x63);
      break;
    case 9: {
      const b = s();
      w.raw(rng.pick([0x54, 0x42]), ...u32(rng.chance(0.9) ? b.length : len()), ...b);
      break;
    }
    case 10: {
      const b = s().subarray(0, 255);
      w.raw(rng.pick([0x55, 0x43]), b.length, ...b);
      break;
    }
    case 11:
      w.raw(0x8e, ...u64(rng.chance(0.8) ? 2n : 2n ** 63n), 1, 2);
      break;
    case 12:
      w.int(rng.pick([0, 1, 255, 65535, 2 ** 31 - 1, 2 ** 40, 2 ** 53 + 1]));
      break;
    case 13:
      w.raw(0x8a, rng.int(12), ...rng.bytes(rng.int(12)));
      break;
    case 14:
      w.raw(0x8b, ...u32(rng.pick([4, 2000, 0xffffffff])), 1, 2, 3, 4);
      break;
    case 15:
      w.raw(0x47, ...rng.bytes(8));
      break;
    case 16:
      w.op(rng.pick([0x4e, 0x88, 0x89]));
      break;
    case 17:
      w.raw(0x71, rng.int(8));
      break;
    case 18:
      w.raw(0x72, ...u32(rng.chance(0.8) ? rng.int(8) : 0xffffffff));
      break;
    case 19:
      w.op(0x94);
      break;
    case 20:
      w.raw(0x68, rng.int(8));
      break;
    case 21:
      w.raw(0x6a, ...u32(rng.int(10)));
      break;
    case 22:
      w.op(rng.pick([0x73, 0x75]));
      break;
    case 23:
      w.op(rng.pick([0x61, 0x65]));
      break;
    case 24: {
      const [m, n] = rng.pick(GLOBALS);
      w.raw(0x63, ...enc.encode(`${m}\n${n}\n`));
      break;
    }
    case 25: {
      const [m, n] = rng.pick(GLOBALS);
      const mb = enc.encode(m);
      const nb = enc.encode(n);
      w.raw(0x8c, mb.length, ...mb, 0x8c, nb.length, ...nb, 0x93);
      break;
    }
    case 26:
      w.op(rng.pick([0x52, 0x81]));
      break;
    case 27:
      w.op(0x62);
      break;
    case 28:
      w.op(0x51);
      break;
    case 29:
      w.op(rng.pick([0x30, 0x31]));
      break;
    case 30:
      w.op(0x32);
      break;
    case 31:
      w.op(0x2e);
      break;
    case 32:
      w.raw(rng.int(256));
      break;
    default: {
      // A storage persistent id and a tensor rebuild, the shapes torch writes.
      w.global("torch._utils", "_rebuild_tensor_v2").mark();
      w.mark().str("storage").global("torch", "FloatStorage").str(String(rng.int(3))).str("cpu")
        .int(rng.pick([4, 16, 2 ** 31])).op(0x74).op(0x51);
      w.int(rng.pick([0, 1, 8])).intTuple([rng.pick([1, 4, 8])]).intTuple([1]).op(0x89);
      w.global("collections", "OrderedDict").op(0x29).op(0x52).op(0x74).op(0x52);
    }
  }
}

/** A pickle: random opcodes, a bomb, or a valid torch pickle, then byte mutations. */
function genPickle(rng: Rng): FuzzCase {
  const ops: string[] = [];
  let bytes: Uint8Array;
  const mode = rng.pick(["random", "random", "bomb", "torch"]);
  ops.push(mode);
  if (mode === "random") {
    const w = new PickleWriter().proto(rng.range(2, 5));
    for (let i = rng.size(400); i >= 0; i--) randomOp(rng, w);
    if (rng.chance(0.8)) w.op(0x2e);
    bytes = w.bytes();
  } else if (mode === "bomb") {
    const w = new PickleWriter().proto(4).op(0x4e);
    const kind = rng.pick(["dup", "memo", "mark", "list", "tuple", "appends", "dict", "bytes"]);
    ops.push(kind);
    const n = rng.pick([1000, 100_000, 1_500_000]);
    if (kind === "dup") { for (let f = 0; f < rng.range(1, 4); f++) w.mark().repeat(0x32, n); }
    if (kind === "memo") w.repeat(0x94, n);
    if (kind === "mark") w.repeat(0x28, Math.min(n, 5000));
    if (kind === "list") w.repeat(0x5d, n).repeat(0x61, n - 1);
    if (kind === "tuple") w.repeat(0x85, n);
    if (kind === "appends") {
      w.op(0x5d).op(0x4e).op(0x94).op(0x30);
      for (let i = 0; i < n / 1000; i++) w.mark().raw(0x68, 0).repeat(0x32, 999).op(0x65);
    }
    if (kind === "dict") {
      w.op(0x7d);
      for (let i = 0; i < Math.min(n, 200_000); i++) w.int(i).op(0x4e).op(0x73);
    }
    w.op(0x2e);
    bytes = w.bytes();
    if (kind === "bytes") {
      // 7 x BINBYTES8 of 10 MiB (over the 64 MiB cap), built in place: a PickleWriter holds a
      // number per byte.
      const n = 10 << 20;
      const out = new Uint8Array(2 + 7 * (9 + n) + 1);
      out.set([0x80, 4]);
      for (let i = 0; i < 7; i++) out.set([0x8e, ...u64(BigInt(n))], 2 + i * (9 + n));
      out[out.length - 1] = 0x2e;
      bytes = out;
    }
  } else {
    bytes = torchSavePickle(baseTensors(rng)).pkl;
  }
  if (mode !== "bomb" && rng.chance(0.6)) {
    const m = mutateBytes(rng, bytes);
    bytes = m.data;
    ops.push(...m.ops);
  }
  const direct = rng.chance(0.5);
  return {
    target: "pickle",
    desc: `pickle ${ops.join(",")}${direct ? "" : " (in a zip)"}`,
    files: direct ? [] : [{ path: "p.pt", data: bytes }],
    entry: "p.pt",
    pickle: direct ? bytes : undefined,
  };
}

/** Writes pickle cases that go through a zip (done by the worker: buildZip is async). */
export async function zipPickle(pkl: Uint8Array, rng: Rng): Promise<Uint8Array> {
  const storages = new Map<string, Uint8Array>([["0", new Uint8Array(16)], [
    "1",
    new Uint8Array(64),
  ]]);
  // A large pickle is always compressed: buildZip holds a STORED payload as one number a byte.
  const deflate = pkl.length > (1 << 20) || rng.chance(0.5);
  return await buildZip(torchArchiveFiles(pkl, storages, "archive", deflate));
}

// ---- YAML configs ------------------------------------------------------------------------------

const YAML_BASE = `general:
  device: cpu
  dtype: fp32
  seed: 4740
  threads: 1
model:
  default_model_id: fuzz
  common:
    vocab_size: 256
    d_state: 4
    d_conv: 4
    expand: 2
    dt_rank: auto
    norm: layernorm
    norm_epsilon: 1.0e-5
    chunk_size: 64
  fuzz:
    d_model: 8
    n_layer: 2
    checkpoint: m.safetensors
generation:
  max_new_tokens: 1
  top_k: 1
`;

const YAML_TOKENS = [
  "1e400",
  "-1",
  "0",
  "0x10",
  "1.5",
  "abc",
  "[]",
  "{}",
  "~",
  "null",
  "true",
  '"\\x00"',
  "!!binary aGVsbG8=",
  "!!js/function 'x'",
  "&a [1]",
  "*a",
  "*undefined_alias",
  "[[[[[[[[[[[[[[[[]]]]]]]]]]]]]]]]",
  "|\n  block",
  ">-",
  "'unterminated",
  "{a: {b: {c: {d: 1}}}}",
  "9".repeat(400),
  "- - - -",
  "\t1",
  "? complex",
  "%YAML 1.2",
  "---",
  "...",
];

function genYaml(rng: Rng): FuzzCase {
  const ops: string[] = [];
  let text = YAML_BASE;
  const mode = rng.int(10);
  if (mode < 2) {
    ops.push("valid");
  } else if (mode < 5) {
    ops.push("text");
    text = mutateText(rng, text, YAML_TOKENS);
  } else if (mode === 5) {
    ops.push("deep");
    const n = rng.pick([100, 5000, 50_000]);
    text += `deep: ${"[".repeat(n)}${"]".repeat(n)}\n`;
  } else if (mode === 6) {
    ops.push("aliases");
    // A billion-laughs document: each level refers to the previous one ten times.
    let doc = "a0: &a0 [x, x, x, x, x, x, x, x, x, x]\n";
    for (let i = 1; i < rng.pick([5, 10, 20]); i++) {
      doc += `a${i}: &a${i} [${Array(10).fill(`*a${i - 1}`).join(", ")}]\n`;
    }
    text += doc;
  } else if (mode === 7) {
    ops.push("many-keys");
    const n = rng.pick([1000, 100_000]);
    text += Array.from({ length: n }, (_, i) => `  m${i}:\n    d_model: 8\n    n_layer: 2`).join(
      "\n",
    )
      .replace(/^/, "model2:\n");
  } else {
    ops.push("bytes");
    const m = mutateBytes(rng, enc.encode(text));
    text = new TextDecoder().decode(m.data);
    ops.push(...m.ops);
  }
  return { target: "yaml", desc: `yaml ${ops.join(",")}`, files: [], entry: "", yaml: text };
}

// ---- Hugging Face folders ----------------------------------------------------------------------

function hfConfig(rng: Rng, ops: string[]): string {
  const c: Record<string, unknown> = rng.chance(0.5)
    ? {
      model_type: "mamba",
      vocab_size: 256,
      hidden_size: 8,
      num_hidden_layers: 2,
      state_size: 4,
      conv_kernel: 4,
      expand: 2,
    }
    : { d_model: 8, n_layer: 2, vocab_size: 256, ssm_cfg: { d_state: 4, d_conv: 4, expand: 2 } };
  if (rng.chance(0.2)) {
    ops.push("config-values");
    c[rng.pick(Object.keys(c))] = rng.pick<unknown>([1e308, -1, "8", null, [], {}, 2 ** 53 + 2]);
  }
  let text = JSON.stringify(c);
  if (rng.chance(0.1)) {
    ops.push("config-dup");
    text = text.replace("{", '{"d_model": 9999,');
  }
  if (rng.chance(0.05)) {
    ops.push("config-deep");
    text = text.replace("{", `{"deep": ${deepJson(rng, rng.pick([100, 100_000]))},`);
  }
  if (rng.chance(0.05)) {
    ops.push("config-bom");
    text = "\ufeff" + text;
  }
  if (rng.chance(0.05)) {
    ops.push("config-big");
    text = text.replace("{", `{"pad": "${"x".repeat(rng.pick([1000, 2 << 20]))}",`);
  }
  return text;
}

async function genHfFolder(rng: Rng): Promise<FuzzCase> {
  const ops: string[] = [];
  const files: CaseFile[] = [];
  if (rng.chance(0.9)) {
    let cfg: Uint8Array = enc.encode(hfConfig(rng, ops));
    if (rng.chance(0.2)) {
      const m = mutateBytes(rng, cfg);
      cfg = m.data;
      ops.push("config-bytes");
    }
    const kind = rng.next();
    if (kind < 0.03) {
      ops.push("config-fifo");
      files.push({ path: "hf/config.json", kind: "fifo" });
    } else if (kind < 0.06) {
      ops.push("config-dir");
      files.push({ path: "hf/config.json", kind: "dir" });
    } else files.push({ path: "hf/config.json", data: cfg });
  }
  const tensors = baseTensors(rng);
  const layout = rng.pick(["safetensors", "bin", "sharded", "sharded-bin"]);
  ops.push(layout);
  const wOps: string[] = [];
  if (layout === "safetensors") {
    files.push({ path: "hf/model.safetensors", data: safetensorsFile(rng, tensors, wOps) });
  } else if (layout === "bin") {
    files.push({ path: "hf/pytorch_model.bin", data: await torchZip(rng, wOps) });
  } else {
    const half = rng.int(tensors.length + 1);
    const shards = [tensors.slice(0, half), tensors.slice(half)];
    const names = ["model-00001-of-00002", "model-00002-of-00002"].map((n) =>
      layout === "sharded" ? `${n}.safetensors` : `${n}.bin`
    );
    const map: Record<string, unknown> = {};
    for (let s = 0; s < 2; s++) {
      for (const t of shards[s]) map[t.name] = names[s];
      const data = layout === "sharded" ? safetensorsFile(rng, shards[s], wOps) : await buildZip(
        torchArchiveFiles(
          ...Object.values(torchSavePickle(shards[s])) as [Uint8Array, Map<string, Uint8Array>],
        ),
      );
      files.push({ path: `hf/${names[s]}`, data });
    }
    if (rng.chance(0.2)) {
      ops.push("index-names");
      map[rng.pick(Object.keys(map))] = rng.pick<unknown>([
        "../config.json",
        "",
        ".",
        5,
        null,
        "/etc/passwd",
        names[0],
      ]);
    }
    let index = JSON.stringify({ metadata: {}, weight_map: rng.chance(0.97) ? map : [map] });
    if (rng.chance(0.1)) {
      ops.push("index-dup");
      index = index.replace('{"metadata"', '{"weight_map":{},"metadata"');
    }
    if (rng.chance(0.05)) {
      ops.push("index-deep");
      index = index.replace("{", `{"x":${deepJson(rng, 100_000)},`);
    }
    const idx = layout === "sharded"
      ? "model.safetensors.index.json"
      : "pytorch_model.bin.index.json";
    files.push({ path: `hf/${idx}`, data: enc.encode(index) });
  }
  if (wOps.length) ops.push(...wOps);
  if (rng.chance(0.3)) {
    const f = rng.pick(files.filter((f) => f.data));
    const m = mutateBytes(rng, f.data!);
    f.data = m.data;
    ops.push(`${f.path.slice(3)}:${m.ops.join("+")}`);
  }
  return { target: "hf-folder", desc: `hf folder ${ops.join(",")}`, files, entry: "hf" };
}

// ---- not checkpoints at all --------------------------------------------------------------------

function genRaw(rng: Rng): FuzzCase {
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

function genWrite(rng: Rng): FuzzCase {
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

/** Builds case `seed` for `target` (chosen by the caller). */
export async function generate(target: Target, seed: number): Promise<FuzzCase> {
  const rng = new Rng(seed);
  switch (target) {
    case "safetensors":
      return genSafetensors(rng);
    case "torch-zip":
      return await genTorchZip(rng);
    case "legacy-torch":
      return genLegacy(rng);
    case "pickle": {
      const c = genPickle(rng);
      if (!c.pickle) c.files[0].data = await zipPickle(c.files[0].data!, rng);
      return c;
    }
    case "yaml":
      return genYaml(rng);
    case "hf-folder":
      return await genHfFolder(rng);
    case "raw":
      return genRaw(rng);
    case "write":
      return genWrite(rng);
  }
}
