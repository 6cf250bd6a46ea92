/**
 * Fuzz generators of raw pickle opcode streams: random opcodes, bombs, mutated torch pickles.
 *
 * @module
 */

import {
  buildZip,
  PickleWriter,
  torchArchiveFiles,
  torchSavePickle,
} from "../checkpoint_helpers.ts";
import { baseTensors, enc, type FuzzCase } from "./case.ts";
import { mutateBytes } from "./mutate.ts";
import type { Rng } from "./rng.ts";

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
export function genPickle(rng: Rng): FuzzCase {
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
