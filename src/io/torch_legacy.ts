/**
 * The writing side of torch's legacy serialization, for pickling real `torch.Tensor`s: a tensor
 * pickles as `torch._utils._rebuild_tensor_v2(storage, 0, size, stride, False, OrderedDict())`,
 * and its storage as `torch.storage._load_from_bytes(<bytes>)`, where the bytes are what
 * `torch.save(storage, f, _use_new_zipfile_serialization=False)` writes: five protocol-2 pickles
 * (magic number, protocol version, sys_info, the storage's persistent id, the key list), the
 * int64 element count, and the raw little-endian data (the layout src/checkpoint/pytorch_legacy.ts
 * reads). torch 1.x and 2.x both write and read exactly this.
 *
 * @module
 */

import { LEGACY_MAGIC, LEGACY_PROTOCOL_VERSION } from "../checkpoint/pytorch_legacy.ts";
import { type HostDType, type HostTensor, numel, tensorBytes } from "./tensor.ts";

/** The legacy storage class (a `torch` attribute) of each result dtype. */
export const TORCH_STORAGE_CLASS: Readonly<Record<HostDType, string>> = {
  float32: "FloatStorage",
  float64: "DoubleStorage",
  int64: "LongStorage",
  int32: "IntStorage",
  uint8: "ByteStorage",
  bool: "BoolStorage",
};

/** torch's strides of a contiguous tensor (a dimension of size 0 counts as 1, as torch does). */
export function contiguousStrides(shape: readonly number[]): number[] {
  const strides = new Array<number>(shape.length);
  let acc = 1;
  for (let i = shape.length - 1; i >= 0; i--) {
    strides[i] = acc;
    acc *= Math.max(shape[i], 1);
  }
  return strides;
}

/**
 * A tiny protocol-2 pickle encoder for the opcodes the five pickles need. Like CPython's pickler
 * it memoises (BINPUT) every string, global, dict, list and tuple, so the bytes match torch's.
 */
class P2 {
  readonly out: number[] = [0x80, 0x02]; // PROTO 2
  #memo = 0;

  op(...b: number[]): this {
    for (const x of b) this.out.push(x);
    return this;
  }

  /** BINPUT into the next memo slot (the pickles here use far fewer than 256). */
  put(): this {
    return this.op(0x71, this.#memo++);
  }

  /** BINUNICODE, as CPython writes strings at protocol 2. */
  str(s: string): this {
    const b = new TextEncoder().encode(s);
    const n = b.length;
    return this.op(0x58, n & 0xff, (n >>> 8) & 0xff, (n >>> 16) & 0xff, n >>> 24, ...b).put();
  }

  /** A non-negative integer: BININT1 / BININT2 / BININT / LONG1. */
  int(n: number | bigint): this {
    const v = BigInt(n);
    if (v < 256n) return this.op(0x4b, Number(v));
    if (v < 65536n) return this.op(0x4d, Number(v & 0xffn), Number(v >> 8n));
    if (v < 2n ** 31n) {
      const x = Number(v);
      return this.op(0x4a, x & 0xff, (x >>> 8) & 0xff, (x >>> 16) & 0xff, x >>> 24);
    }
    const bytes: number[] = [];
    let x = v;
    while (x > 0n) {
      bytes.push(Number(x & 0xffn));
      x >>= 8n;
    }
    if (bytes[bytes.length - 1] & 0x80) bytes.push(0); // keep it positive
    return this.op(0x8a, bytes.length, ...bytes);
  }

  /** GLOBAL "module\nname\n" (protocol 2 has no STACK_GLOBAL). */
  global(module: string, name: string): this {
    return this.op(0x63, ...new TextEncoder().encode(`${module}\n${name}\n`)).put();
  }

  /** STOP, and the pickle's bytes. */
  end(): number[] {
    return this.op(0x2e).out;
  }
}

// The storage's key in the blob: any string works; torch writes a number.
const KEY = "0";

/** The fixed first three pickles: magic number, protocol version, sys_info. */
function preamble(): number[] {
  const magic = new P2().int(LEGACY_MAGIC).end();
  const version = new P2().int(LEGACY_PROTOCOL_VERSION).end();
  const sys = new P2().op(0x7d).put().op(0x28) // EMPTY_DICT, MARK
    .str("protocol_version").int(LEGACY_PROTOCOL_VERSION)
    .str("little_endian").op(0x88) // the data below is always little-endian
    .str("type_sizes").op(0x7d).put().op(0x28)
    .str("short").int(2).str("int").int(4).str("long").int(4)
    .op(0x75, 0x75) // SETITEMS, SETITEMS
    .end();
  return [...magic, ...version, ...sys];
}

const PREAMBLE = Uint8Array.from(preamble());

/**
 * The bytes `torch.save(<t's storage>, f, _use_new_zipfile_serialization=False)` writes, as two
 * parts so the data (a view of the tensor's memory, never copied) can be written as it is: the
 * pickles plus the int64 element count, then the data.
 */
export function legacyStorageParts(t: HostTensor): [Uint8Array, Uint8Array] {
  const n = numel(t.shape);
  const object = new P2().op(0x28) // MARK: ('storage', torch.<X>Storage, key, 'cpu', n, None)
    .str("storage").global("torch", TORCH_STORAGE_CLASS[t.dtype]).str(KEY).str("cpu").int(n)
    .op(0x4e, 0x74).put().op(0x51) // NONE, TUPLE, BINPERSID
    .end();
  const keys = new P2().op(0x5d).put().str(KEY).op(0x61).end(); // EMPTY_LIST, ..., APPEND
  const head = new Uint8Array(PREAMBLE.length + object.length + keys.length + 8);
  head.set(PREAMBLE, 0);
  head.set(object, PREAMBLE.length);
  head.set(keys, PREAMBLE.length + object.length);
  new DataView(head.buffer).setBigInt64(head.length - 8, BigInt(n), true);
  let data = tensorBytes(t);
  // torch reads bool bytes as they are; anything but 0/1 would be an invalid bool.
  if (t.dtype === "bool" && data.some((b) => b > 1)) data = data.map((b) => (b ? 1 : 0));
  return [head, data];
}
