/**
 * Fuzz generators of checkpoint files: safetensors, torch.save zips and legacy torch streams.
 *
 * @module
 */

import {
  buildZip,
  contiguous,
  type FakeTensor,
  LEGACY_MAGIC_PICKLE,
  PickleWriter,
  torchArchiveFiles,
  torchSavePickle,
  type ZipFile,
} from "../checkpoint_helpers.ts";
import { baseTensors, deepJson, enc, type FuzzCase, nastyString } from "./case.ts";
import { mutateBytes } from "./mutate.ts";
import type { Rng } from "./rng.ts";

// ---- safetensors -------------------------------------------------------------------------------

/** A safetensors file of `tensors`, with optional structural damage; the header as text. */
export function safetensorsFile(rng: Rng, tensors: FakeTensor[], ops: string[]): Uint8Array {
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

/** A safetensors checkpoint case. */
export function genSafetensors(rng: Rng): FuzzCase {
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

/** A torch.save zip of the fuzz model, with structural damage (names in `ops`). */
export async function torchZip(rng: Rng, ops: string[]): Promise<Uint8Array> {
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

/** A torch.save zip checkpoint case. */
export async function genTorchZip(rng: Rng): Promise<FuzzCase> {
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
  parts.push(LEGACY_MAGIC_PICKLE);
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
    w.intTuple(contiguous(t.shape)).endRebuildTensor();
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

/** A legacy (pre-1.6) torch.save stream case. */
export function genLegacy(rng: Rng): FuzzCase {
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
