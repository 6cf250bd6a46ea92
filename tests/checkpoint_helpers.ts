/**
 * Test helpers that build torch.save files without torch: a pickle writer that emits the same
 * opcodes torch.save (protocol 2) does for a state dict, and a zip writer (STORED entries aligned
 * to 64 bytes through a padding extra field, as PyTorch's writer does; optional ZIP64 records and
 * DEFLATE entries).
 *
 * @module
 */

import type { ModelDims, NormKind } from "../src/config/dims.ts";
import type { SafetensorsDType } from "../src/checkpoint/dtypes.ts";
import { randomWeights } from "../src/checkpoint/random_init.ts";

const enc = new TextEncoder();

/** Emits pickle opcodes; memoises globals like Python's pickler (BINPUT / BINGET). */
export class PickleWriter {
  #out: number[] = [];
  #memo = new Map<string, number>();
  #next = 0;

  /** Raw bytes. */
  raw(...b: number[]): this {
    for (const x of b) this.#out.push(x);
    return this;
  }
  /** `byte` repeated `n` times (bombs). */
  repeat(byte: number, n: number): this {
    for (let i = 0; i < n; i++) this.#out.push(byte);
    return this;
  }
  /** PROTO n. */
  proto(n = 2): this {
    return this.raw(0x80, n);
  }
  /** MARK. */
  mark(): this {
    return this.raw(0x28);
  }
  /** BINPUT of the next memo slot. */
  put(): number {
    const i = this.#next++;
    if (i < 256) this.raw(0x71, i);
    else this.raw(0x72, ...u32(i));
    return i;
  }
  /** BINGET / LONG_BINGET. */
  get(i: number): this {
    return i < 256 ? this.raw(0x68, i) : this.raw(0x6a, ...u32(i));
  }
  /** GLOBAL "module\nname\n", memoised. */
  global(module: string, name: string): this {
    const key = `${module}\n${name}\n`;
    const m = this.#memo.get(key);
    if (m !== undefined) return this.get(m);
    this.raw(0x63, ...enc.encode(key));
    this.#memo.set(key, this.put());
    return this;
  }
  /** BINUNICODE (protocol 2 strings), memoised like torch's output. */
  str(s: string): this {
    const b = enc.encode(s);
    this.raw(0x58, ...u32(b.length), ...b);
    this.put();
    return this;
  }
  /** The smallest int opcode for a non-negative int (BININT1 / BININT2 / BININT / LONG1). */
  int(n: number): this {
    if (n >= 0 && n < 256) return this.raw(0x4b, n);
    if (n >= 0 && n < 65536) return this.raw(0x4d, n & 0xff, n >> 8);
    if (n >= -(2 ** 31) && n < 2 ** 31) return this.raw(0x4a, ...u32(n >>> 0));
    const bytes: number[] = [];
    let v = BigInt(n);
    while (v > 0n || bytes.length === 0 || (bytes[bytes.length - 1] & 0x80)) {
      bytes.push(Number(v & 0xffn));
      v >>= 8n;
    }
    return this.raw(0x8a, bytes.length, ...bytes);
  }
  /** A tuple of ints: TUPLE1/2/3 or MARK ... TUPLE, then BINPUT. */
  intTuple(xs: number[]): this {
    if (xs.length === 0) return this.raw(0x29);
    if (xs.length > 3) this.mark();
    for (const x of xs) this.int(x);
    this.raw(xs.length > 3 ? 0x74 : [0, 0x85, 0x86, 0x87][xs.length]);
    this.put();
    return this;
  }
  /** Any opcode byte. */
  op(code: number): this {
    return this.raw(code);
  }
  /**
   * The end of a `_rebuild_tensor_v2` call once the stride is written: requires_grad False, empty
   * backward hooks (an OrderedDict), then TUPLE and REDUCE, memoised as torch.save does.
   */
  endRebuildTensor(): this {
    this.op(0x89); // requires_grad False
    this.global("collections", "OrderedDict").op(0x29).op(0x52);
    this.put();
    this.op(0x74);
    this.put();
    this.op(0x52);
    this.put();
    return this;
  }
  /** The pickle so far. */
  bytes(): Uint8Array {
    return Uint8Array.from(this.#out);
  }
}

function u32(n: number): number[] {
  return [n & 0xff, (n >>> 8) & 0xff, (n >>> 16) & 0xff, (n >>> 24) & 0xff];
}

/** A tensor to put in a fake torch.save file. */
export interface FakeTensor {
  name: string;
  dtype: SafetensorsDType;
  shape: number[];
  data: Uint8Array;
  /** Share the storage of this earlier tensor (tied weights); `data` is then unused. */
  shareWith?: string;
  /** Element offset into the storage (with shareWith). */
  storageOffset?: number;
  /** Override the stride (default contiguous). */
  stride?: number[];
}

const STORAGE_CLASS: Record<SafetensorsDType, string> = {
  F64: "DoubleStorage",
  F32: "FloatStorage",
  F16: "HalfStorage",
  BF16: "BFloat16Storage",
  I64: "LongStorage",
  I32: "IntStorage",
  I16: "ShortStorage",
  I8: "CharStorage",
  U8: "ByteStorage",
  BOOL: "BoolStorage",
};
const ITEMSIZE: Record<SafetensorsDType, number> = {
  F64: 8,
  F32: 4,
  F16: 2,
  BF16: 2,
  I64: 8,
  I32: 4,
  I16: 2,
  I8: 1,
  U8: 1,
  BOOL: 1,
};

/** Options of {@link torchSavePickle}. */
export interface TorchPickleOptions {
  /** Nest the state dict as {wrapper: sd, "epoch": 3} like a training checkpoint. */
  wrapper?: string;
  /** Claim this many elements for storage "0" (hostile files). */
  storageNumelOverride?: number;
  /** Put an argparse.Namespace under "args" in the wrapper. */
  withNamespace?: boolean;
  /** Legacy-format persistent ids: a sixth element, view_metadata (None unless `views`). */
  legacy?: boolean;
  /** Old torch's storage views: tensor name -> (view key, element offset, elements). */
  views?: Record<string, [string, number, number]>;
}

/** The strides of a contiguous (row-major) tensor of `shape`, in elements. */
export function contiguous(shape: number[]): number[] {
  const s = new Array<number>(shape.length);
  let acc = 1;
  for (let i = shape.length - 1; i >= 0; i--) {
    s[i] = acc;
    acc *= shape[i];
  }
  return s;
}

/** The data.pkl and storages torch.save writes for an OrderedDict of these tensors. */
export function torchSavePickle(
  tensors: FakeTensor[],
  opts: TorchPickleOptions = {},
): { pkl: Uint8Array; storages: Map<string, Uint8Array> } {
  const w = new PickleWriter().proto(2);
  if (opts.wrapper) {
    w.op(0x7d);
    w.put();
    w.mark();
    w.str(opts.wrapper);
  }
  w.global("collections", "OrderedDict").op(0x29).op(0x52);
  w.put();
  const storages = new Map<string, Uint8Array>();
  const keys = new Map<string, { key: string; numel: number; dtype: SafetensorsDType }>();
  w.mark();
  for (const t of tensors) {
    w.str(t.name);
    w.global("torch._utils", "_rebuild_tensor_v2");
    w.mark();
    let st = t.shareWith ? keys.get(t.shareWith) : undefined;
    if (!st) {
      const key = String(storages.size);
      let numel = t.data.length / ITEMSIZE[t.dtype];
      if (key === "0" && opts.storageNumelOverride !== undefined) numel = opts.storageNumelOverride;
      st = { key, numel, dtype: t.dtype };
      storages.set(key, t.data);
    }
    keys.set(t.name, st);
    // Persistent id: ('storage', torch.<X>Storage, key, 'cpu', numel)
    w.mark().str("storage").global("torch", STORAGE_CLASS[st.dtype]).str(st.key).str("cpu")
      .int(st.numel);
    const view = opts.views?.[t.name];
    if (view) w.mark().str(view[0]).int(view[1]).int(view[2]).op(0x74);
    else if (opts.legacy) w.op(0x4e);
    w.op(0x74);
    w.put();
    w.op(0x51); // BINPERSID
    w.int(t.storageOffset ?? 0);
    w.intTuple(t.shape);
    w.intTuple(t.stride ?? contiguous(t.shape));
    w.endRebuildTensor();
  }
  w.op(0x75); // SETITEMS
  // state: {'_metadata': OrderedDict({'': {'version': 1}})}, applied with BUILD as torch does
  w.op(0x7d);
  w.put();
  w.str("_metadata");
  w.global("collections", "OrderedDict").op(0x29).op(0x52);
  w.put();
  w.str("").op(0x7d);
  w.put();
  w.str("version").int(1).op(0x73).op(0x73).op(0x73);
  w.op(0x62); // BUILD
  if (opts.wrapper) {
    w.str("epoch").int(3);
    if (opts.withNamespace) {
      w.str("args").global("argparse", "Namespace").op(0x29).op(0x81);
      w.put();
      w.op(0x7d).str("lr").raw(0x47, 0x3f, 0x50, 0x62, 0x4d, 0xd2, 0xf1, 0xa9, 0xfc).op(0x73).op(
        0x62,
      );
    }
    w.op(0x75);
  }
  w.op(0x2e);
  return { pkl: w.bytes(), storages };
}

/** One file in a zip. */
export interface ZipFile {
  name: string;
  data: Uint8Array;
  /** Compress with DEFLATE. */
  deflate?: boolean;
}

let crcTable: Uint32Array | undefined;
/** CRC-32 (zip's). */
export function crc32(b: Uint8Array): number {
  if (!crcTable) {
    crcTable = new Uint32Array(256);
    for (let n = 0; n < 256; n++) {
      let c = n;
      for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
      crcTable[n] = c >>> 0;
    }
  }
  let c = 0xffffffff;
  for (let i = 0; i < b.length; i++) c = crcTable[(c ^ b[i]) & 0xff] ^ (c >>> 8);
  return (c ^ 0xffffffff) >>> 0;
}

async function deflateRaw(data: Uint8Array): Promise<Uint8Array> {
  const s = new Blob([data as Uint8Array<ArrayBuffer>]).stream().pipeThrough(
    new CompressionStream("deflate-raw"),
  );
  return new Uint8Array(await new Response(s).arrayBuffer());
}

class Buf {
  parts: number[] = [];
  u16(v: number) {
    this.parts.push(v & 0xff, (v >>> 8) & 0xff);
  }
  u32(v: number) {
    this.parts.push(...u32(v >>> 0));
  }
  u64(v: number) {
    this.u32(v % 2 ** 32);
    this.u32(Math.floor(v / 2 ** 32));
  }
  bytes(b: Uint8Array | number[]) {
    for (const x of b) this.parts.push(x);
  }
  get length() {
    return this.parts.length;
  }
}

/** Writes a zip archive like PyTorch's writer: data aligned to `align` bytes, optional ZIP64. */
export async function buildZip(
  files: ZipFile[],
  opts: { align?: number; zip64?: boolean; comment?: string } = {},
): Promise<Uint8Array> {
  const align = opts.align ?? 64;
  const z64 = opts.zip64 ?? false;
  const out = new Buf();
  const central = new Buf();
  for (const f of files) {
    const name = enc.encode(f.name);
    const payload = f.deflate ? await deflateRaw(f.data) : f.data;
    const method = f.deflate ? 8 : 0;
    const crc = crc32(f.data);
    const offset = out.length;
    const zipExtra = z64 ? 20 : 0; // id, size, usize, csize
    const base = offset + 30 + name.length + zipExtra;
    let pad = (align - ((base + 4) % align)) % align;
    const extraLen = zipExtra + 4 + pad;
    // local header
    out.u32(0x04034b50);
    out.u16(z64 ? 45 : 20);
    out.u16(0);
    out.u16(method);
    out.u16(0);
    out.u16(0x21);
    out.u32(crc);
    out.u32(z64 ? 0xffffffff : payload.length);
    out.u32(z64 ? 0xffffffff : f.data.length);
    out.u16(name.length);
    out.u16(extraLen);
    out.bytes(name);
    if (z64) {
      out.u16(1);
      out.u16(16);
      out.u64(f.data.length);
      out.u64(payload.length);
    }
    out.u16(0x4246); // "FB" padding field, as PyTorch writes
    out.u16(pad);
    while (pad-- > 0) out.parts.push(0x5a);
    out.bytes(payload);
    // central directory entry
    central.u32(0x02014b50);
    central.u16(z64 ? 45 : 20);
    central.u16(z64 ? 45 : 20);
    central.u16(0);
    central.u16(method);
    central.u16(0);
    central.u16(0x21);
    central.u32(crc);
    central.u32(z64 ? 0xffffffff : payload.length);
    central.u32(z64 ? 0xffffffff : f.data.length);
    central.u16(name.length);
    central.u16(z64 ? 28 : 0);
    central.u16(0);
    central.u16(0);
    central.u16(0);
    central.u32(0);
    central.u32(z64 ? 0xffffffff : offset);
    central.bytes(name);
    if (z64) {
      central.u16(1);
      central.u16(24);
      central.u64(f.data.length);
      central.u64(payload.length);
      central.u64(offset);
    }
  }
  const cdOffset = out.length;
  out.bytes(central.parts);
  const cdSize = central.length;
  if (z64) {
    const rec = out.length;
    out.u32(0x06064b50);
    out.u64(44);
    out.u16(45);
    out.u16(45);
    out.u32(0);
    out.u32(0);
    out.u64(files.length);
    out.u64(files.length);
    out.u64(cdSize);
    out.u64(cdOffset);
    out.u32(0x07064b50);
    out.u32(0);
    out.u64(rec);
    out.u32(1);
  }
  const comment = enc.encode(opts.comment ?? "");
  out.u32(0x06054b50);
  out.u16(0);
  out.u16(0);
  out.u16(z64 ? 0xffff : files.length);
  out.u16(z64 ? 0xffff : files.length);
  out.u32(z64 ? 0xffffffff : cdSize);
  out.u32(z64 ? 0xffffffff : cdOffset);
  out.u16(comment.length);
  out.bytes(comment);
  return Uint8Array.from(out.parts);
}

/** The zip entries torch.save writes for a pickle and its storages, under `prefix/`. */
export function torchArchiveFiles(
  pkl: Uint8Array,
  storages: Map<string, Uint8Array>,
  prefix = "archive",
  deflatePickle = false,
): ZipFile[] {
  const files: ZipFile[] = [{ name: `${prefix}/data.pkl`, data: pkl, deflate: deflatePickle }];
  files.push({ name: `${prefix}/byteorder`, data: enc.encode("little") });
  for (const [k, v] of storages) files.push({ name: `${prefix}/data/${k}`, data: v });
  files.push({ name: `${prefix}/version`, data: enc.encode("3\n") });
  files.push({ name: `${prefix}/.data/serialization_id`, data: enc.encode("1234567890") });
  return files;
}

/** Writes a fake torch.save file of `tensors` to `path`. */
export async function writeTorchFile(
  path: string,
  tensors: FakeTensor[],
  opts: TorchPickleOptions & { zip64?: boolean; prefix?: string; deflatePickle?: boolean } = {},
): Promise<void> {
  const { pkl, storages } = torchSavePickle(tensors, opts);
  const files = torchArchiveFiles(pkl, storages, opts.prefix, opts.deflatePickle);
  await Deno.writeFile(path, await buildZip(files, { zip64: opts.zip64 }));
}

/** Writes a zip with the given pickle as archive/data.pkl and the given storages. */
export async function writePickleZip(
  path: string,
  pkl: Uint8Array,
  storages = new Map<string, Uint8Array>(),
): Promise<void> {
  await Deno.writeFile(path, await buildZip(torchArchiveFiles(pkl, storages)));
}

/** Float32 values as little-endian bytes. */
export function f32Bytes(values: ArrayLike<number>): Uint8Array {
  const a = Float32Array.from(values as ArrayLike<number>);
  return new Uint8Array(a.buffer);
}

/** Naming schemes of real checkpoints. */
export type Scheme = "canonical" | "transformers" | "mamba_ssm" | "mambabyte";

/** The name a canonical tensor has in a checkpoint of `scheme`. */
export function schemeName(canonical: string, scheme: Scheme): string {
  switch (scheme) {
    case "canonical":
      return canonical;
    case "transformers":
      if (canonical === "lm_head.weight") return canonical;
      return "backbone." + canonical.replace(/^embedding\./, "embeddings.");
    case "mamba_ssm":
      return canonical === "lm_head.weight" ? canonical : "backbone." + canonical;
    case "mambabyte":
      if (canonical === "lm_head.weight") return "module.lm_head.weight";
      return "module.mambabyte." +
        canonical.replace(/^embedding\./, "token_embedding.").replace(/^norm_f\./, "final_norm.");
  }
}

/** A full model's tensors (random values) named by `scheme`; conv1d as (d_inner, 1, d_conv). */
export async function modelTensors(
  dims: ModelDims,
  normKind: NormKind,
  scheme: Scheme,
  opts: { lmHead?: boolean; dtype?: "F32" | "BF16" } = {},
): Promise<FakeTensor[]> {
  const src = randomWeights(dims, 7, normKind);
  const names: string[] = ["embedding.weight"];
  for (let i = 0; i < dims.nLayer; i++) {
    for (
      const leaf of [
        "norm.weight",
        ...(normKind === "layernorm" ? ["norm.bias"] : []),
        "mixer.in_proj.weight",
        "mixer.conv1d.weight",
        "mixer.conv1d.bias",
        "mixer.x_proj.weight",
        "mixer.dt_proj.weight",
        "mixer.dt_proj.bias",
        "mixer.A_log",
        "mixer.D",
        "mixer.out_proj.weight",
      ]
    ) names.push(`layers.${i}.${leaf}`);
  }
  names.push("norm_f.weight");
  if (normKind === "layernorm") names.push("norm_f.bias");
  if (opts.lmHead) names.push("lm_head.weight");
  const out: FakeTensor[] = [];
  for (const n of names) {
    let shape = src.shape(n);
    if (n.endsWith("conv1d.weight")) shape = [shape[0], 1, shape[1]];
    const data = opts.dtype === "BF16"
      ? new Uint8Array((await src.readBF16(n)).buffer)
      : new Uint8Array((await src.readF32(n)).buffer);
    out.push({ name: schemeName(n, scheme), dtype: opts.dtype ?? "F32", shape, data });
  }
  return out;
}

/** mamba_ssm's config.json of a MambaLMHeadModel (the released checkpoints' format). */
export function mambaSsmConfig(dModel: number, nLayer: number) {
  return {
    d_model: dModel,
    n_layer: nLayer,
    vocab_size: 256,
    ssm_cfg: {},
    rms_norm: true,
    residual_in_fp32: true,
    fused_add_norm: true,
    pad_vocab_size_multiple: 8,
  };
}

/** Options of {@link legacyTorchFile}. */
export interface LegacyFileOptions extends TorchPickleOptions {
  /** The storage key list to write (default: every storage, in order). */
  keys?: string[];
  /** Element counts to write in the data headers instead of the true ones. */
  counts?: Record<string, bigint>;
  /** The object pickle to write instead of the state dict's (hostile files). */
  objectPickle?: Uint8Array;
  /** The protocol version pickled after the magic number (default 1001). */
  version?: number;
}

/** torch's legacy magic number 0x1950a86a20f9469cfc6c, pickled as torch.save writes it. */
export const LEGACY_MAGIC_PICKLE = Uint8Array.of(
  0x80,
  0x02,
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
);

/**
 * A torch.save file in the legacy (non-zip) layout: the magic number, protocol version and
 * sys_info pickles, the object pickle, the storage key list, then per key an int64 element count
 * and the data.
 */
export function legacyTorchFile(tensors: FakeTensor[], opts: LegacyFileOptions = {}): Uint8Array {
  const { pkl, storages } = torchSavePickle(tensors, { ...opts, legacy: true });
  const version = new PickleWriter().proto(2).int(opts.version ?? 1001).op(0x2e).bytes();
  const sys = new PickleWriter().proto(2).op(0x7d);
  sys.put();
  sys.mark().str("protocol_version").int(1001).str("little_endian").op(0x88).str("type_sizes");
  sys.op(0x7d);
  sys.put();
  sys.mark().str("short").int(2).str("int").int(4).str("long").int(4).op(0x75).op(0x75).op(0x2e);
  const keys = opts.keys ?? [...storages.keys()];
  const list = new PickleWriter().proto(2).op(0x5d);
  list.put();
  list.mark();
  for (const k of keys) list.str(k);
  list.op(0x65).op(0x2e);
  const parts: Uint8Array[] = [
    LEGACY_MAGIC_PICKLE,
    version,
    sys.bytes(),
    opts.objectPickle ?? pkl,
    list.bytes(),
  ];
  // Storage j belongs to the j-th tensor that shares nothing (torchSavePickle's numbering).
  const dtypeOfKey = new Map<string, SafetensorsDType>();
  tensors.filter((t) => !t.shareWith).forEach((t, j) => dtypeOfKey.set(String(j), t.dtype));
  for (const key of keys) {
    const data = storages.get(key);
    if (!data) continue;
    const head = new Uint8Array(8);
    const count = opts.counts?.[key] ?? BigInt(data.length / ITEMSIZE[dtypeOfKey.get(key)!]);
    new DataView(head.buffer).setBigInt64(0, count, true);
    parts.push(head, data);
  }
  let n = 0;
  for (const p of parts) n += p.length;
  const out = new Uint8Array(n);
  n = 0;
  for (const p of parts) {
    out.set(p, n);
    n += p.length;
  }
  return out;
}
