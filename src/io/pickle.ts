/**
 * A streaming pickle (protocol 4) writer for result records, readable by plain Python with numpy
 * 1.x or 2.x through `pickle.load`: no torch, no custom classes. Tensors become numpy arrays
 * rebuilt as `numpy.reshape(numpy.frombuffer(builtins.bytearray(<bytes>), '<f4'), shape)`
 * (bytearray so the array is writable).
 *
 * The torch markers of value.ts are written exactly as torch pickles its own objects, so loading
 * needs torch (pickle imports it): a {@link TorchTensor} as
 * `torch._utils._rebuild_tensor_v2(torch.storage._load_from_bytes(<legacy torch.save bytes>), 0,
 * size, stride, False, collections.OrderedDict())`, a {@link TorchMinMax} as
 * `torch.return_types.min((values, indices), {})` (or `max`): the structure torch 1.x and 2.x both
 * write and read.
 *
 * Small opcodes are grouped into FRAMEs of about 64 KiB; large byte payloads are written outside
 * frames straight from the tensor's memory, as CPython's pickler does, so a multi-gigabyte tensor
 * is never copied into one big buffer.
 *
 * @module
 */

import { atomicWrite } from "./atomic.ts";
import { OutputError } from "./errors.ts";
import { ByteSink, type ByteWriter, MemoryWriter } from "./sink.ts";
import { type HostDType, type HostTensor, tensorBytes } from "./tensor.ts";
import { contiguousStrides, legacyStorageParts } from "./torch_legacy.ts";
import {
  checkedTensor,
  keyPath,
  mappingEntries,
  sequenceItems,
  TorchMinMax,
  TorchTensor,
  typeName,
} from "./value.ts";

export { PyTuple, TorchMinMax, torchMinMax, TorchTensor, torchTensor, tuple } from "./value.ts";

// Opcodes (see CPython Lib/pickle.py).
const PROTO = 0x80, FRAME = 0x95, STOP = 0x2e, MARK = 0x28;
const NONE = 0x4e, NEWTRUE = 0x88, NEWFALSE = 0x89;
const BININT = 0x4a, BININT1 = 0x4b, BININT2 = 0x4d, LONG1 = 0x8a, LONG4 = 0x8b, BINFLOAT = 0x47;
const SHORT_BINUNICODE = 0x8c, BINUNICODE = 0x58, BINUNICODE8 = 0x8d;
const SHORT_BINBYTES = 0x43, BINBYTES = 0x42, BINBYTES8 = 0x8e;
const EMPTY_LIST = 0x5d, APPENDS = 0x65, EMPTY_DICT = 0x7d, SETITEMS = 0x75;
const EMPTY_TUPLE = 0x29, TUPLE = 0x74, TUPLE1 = 0x85, TUPLE2 = 0x86, TUPLE3 = 0x87;
const STACK_GLOBAL = 0x93, REDUCE = 0x52;

/** Frame size CPython aims for; payloads at least this big bypass the frame. */
const FRAME_TARGET = 64 * 1024;
/** Items per APPENDS / SETITEMS batch, as CPython. */
const BATCH = 1000;

/** numpy's dtype strings, explicit about byte order. */
const NUMPY_DTYPE: Record<HostDType, string> = {
  float32: "<f4",
  float64: "<f8",
  int64: "<i8",
  int32: "<i4",
  uint8: "|u1",
  bool: "|b1",
};

const utf8 = new TextEncoder();

/** Two's-complement little-endian bytes of `n`, minimal length (CPython's encode_long). */
function encodeLong(n: bigint): Uint8Array {
  if (n === 0n) return new Uint8Array(0);
  const out: number[] = [];
  let x = n;
  for (;;) {
    const b = Number(x & 0xffn);
    out.push(b);
    x >>= 8n;
    if ((x === 0n && (b & 0x80) === 0) || (x === -1n && (b & 0x80) !== 0)) break;
  }
  return Uint8Array.from(out);
}

/** Serialises one value as a pickle onto a {@link ByteSink}. */
export class PickleWriter {
  #sink: ByteSink;
  #frame = new Uint8Array(FRAME_TARGET * 2);
  #len = 0;
  #scratch = new DataView(new ArrayBuffer(8));

  /** Writes to `sink`; the caller flushes it afterwards. */
  constructor(sink: ByteSink) {
    this.#sink = sink;
  }

  /** Writes PROTO 4, `value`, STOP. */
  async dump(value: unknown): Promise<void> {
    // PROTO precedes the first frame, as CPython writes it.
    await this.#sink.write(Uint8Array.of(PROTO, 4));
    await this.#save(value, []);
    this.#byte(STOP);
    await this.#commit();
  }

  #reserve(n: number): void {
    if (this.#len + n <= this.#frame.length) return;
    const grown = new Uint8Array(Math.max(this.#frame.length * 2, this.#len + n));
    grown.set(this.#frame.subarray(0, this.#len));
    this.#frame = grown;
  }

  #byte(b: number): void {
    this.#reserve(1);
    this.#frame[this.#len++] = b;
  }

  #bytes(p: Uint8Array): void {
    this.#reserve(p.length);
    this.#frame.set(p, this.#len);
    this.#len += p.length;
  }

  #uint(value: number, width: 1 | 2 | 4 | 8): void {
    const v = this.#scratch;
    if (width === 1) v.setUint8(0, value);
    else if (width === 2) v.setUint16(0, value, true);
    else if (width === 4) v.setUint32(0, value, true);
    else v.setBigUint64(0, BigInt(value), true);
    this.#bytes(new Uint8Array(v.buffer, 0, width));
  }

  /** Ends the current frame; called only at opcode boundaries, as frames may not split one. */
  async #commit(): Promise<void> {
    if (this.#len === 0) return;
    const data = this.#frame.subarray(0, this.#len);
    if (this.#len >= 4) {
      const head = new Uint8Array(9);
      head[0] = FRAME;
      new DataView(head.buffer).setBigUint64(1, BigInt(this.#len), true);
      await this.#sink.write(head);
    }
    await this.#sink.write(data);
    this.#len = 0;
  }

  async #maybeCommit(): Promise<void> {
    if (this.#len >= FRAME_TARGET) await this.#commit();
  }

  /** A length-prefixed payload (str or bytes) choosing the 1-, 4- or 8-byte length opcode. */
  #payload(p: Uint8Array, ops: [number, number, number]): Promise<void> {
    return this.#payloadParts([p], ops);
  }

  /** One payload given as consecutive parts, each written from its own memory when large. */
  async #payloadParts(parts: Uint8Array[], ops: [number, number, number]): Promise<void> {
    let length = 0;
    for (const p of parts) length += p.length;
    const large = length >= FRAME_TARGET;
    // A large payload goes outside any frame, its opcode header too (as CPython's framer).
    if (large) await this.#commit();
    const [short, mid, long] = ops;
    if (length < 256) {
      this.#byte(short);
      this.#uint(length, 1);
    } else if (length <= 0xffffffff) {
      this.#byte(mid);
      this.#uint(length, 4);
    } else {
      this.#byte(long);
      this.#uint(length, 8);
    }
    if (!large) {
      for (const p of parts) this.#bytes(p);
      return;
    }
    await this.#sink.write(this.#frame.slice(0, this.#len));
    this.#len = 0;
    for (const p of parts) await this.#sink.write(p);
  }

  #int(n: number | bigint): void {
    if (typeof n === "number" && n >= 0 && n < 256) {
      this.#byte(BININT1);
      this.#uint(n, 1);
    } else if (typeof n === "number" && n >= 0 && n < 65536) {
      this.#byte(BININT2);
      this.#uint(n, 2);
    } else if (typeof n === "number" && n >= -0x80000000 && n <= 0x7fffffff) {
      this.#byte(BININT);
      this.#scratch.setInt32(0, n, true);
      this.#bytes(new Uint8Array(this.#scratch.buffer, 0, 4));
    } else {
      const enc = encodeLong(BigInt(n));
      if (enc.length < 256) {
        this.#byte(LONG1);
        this.#uint(enc.length, 1);
      } else {
        this.#byte(LONG4);
        this.#uint(enc.length, 4);
      }
      this.#bytes(enc);
    }
  }

  #float(x: number): void {
    this.#byte(BINFLOAT);
    this.#scratch.setFloat64(0, x, false); // BINFLOAT is big-endian
    this.#bytes(new Uint8Array(this.#scratch.buffer, 0, 8));
  }

  #str(s: string): Promise<void> {
    return this.#payload(utf8.encode(s), [SHORT_BINUNICODE, BINUNICODE, BINUNICODE8]);
  }

  async #global(module: string, name: string): Promise<void> {
    await this.#str(module);
    await this.#str(name);
    this.#byte(STACK_GLOBAL);
  }

  async #tensor(t: HostTensor): Promise<void> {
    await this.#global("numpy", "reshape");
    await this.#global("numpy", "frombuffer");
    await this.#global("builtins", "bytearray");
    await this.#payload(tensorBytes(t), [SHORT_BINBYTES, BINBYTES, BINBYTES8]);
    this.#byte(TUPLE1);
    this.#byte(REDUCE);
    await this.#str(NUMPY_DTYPE[t.dtype]);
    this.#byte(TUPLE2);
    this.#byte(REDUCE);
    this.#intTuple(t.shape);
    this.#byte(TUPLE2);
    this.#byte(REDUCE);
  }

  /** A tuple of ints as CPython writes it: EMPTY_TUPLE, TUPLE1-3, or MARK ... TUPLE. */
  #intTuple(xs: readonly number[]): void {
    if (xs.length === 0) return this.#byte(EMPTY_TUPLE);
    if (xs.length > 3) this.#byte(MARK);
    for (const x of xs) this.#int(x);
    this.#byte(xs.length > 3 ? TUPLE : [TUPLE1, TUPLE2, TUPLE3][xs.length - 1]);
  }

  /** A torch.Tensor, pickled as `Tensor.__reduce_ex__` does (see the module comment). */
  async #torchTensor(t: HostTensor): Promise<void> {
    await this.#global("torch._utils", "_rebuild_tensor_v2");
    this.#byte(MARK);
    await this.#global("torch.storage", "_load_from_bytes");
    await this.#payloadParts(legacyStorageParts(t), [SHORT_BINBYTES, BINBYTES, BINBYTES8]);
    this.#byte(TUPLE1);
    this.#byte(REDUCE);
    this.#int(0); // storage_offset
    this.#intTuple(t.shape);
    this.#intTuple(contiguousStrides(t.shape));
    this.#byte(NEWFALSE); // requires_grad
    await this.#global("collections", "OrderedDict"); // backward hooks: none
    this.#byte(EMPTY_TUPLE);
    this.#byte(REDUCE);
    this.#byte(TUPLE);
    this.#byte(REDUCE);
  }

  /** torch.return_types.min/max: a structseq, pickled as `cls((values, indices), {})`. */
  async #torchMinMax(m: TorchMinMax, path: unknown[]): Promise<void> {
    await this.#global("torch.return_types", m.kind);
    await this.#torchTensor(checkedTensor(m.values, [...path, "values"])!);
    await this.#torchTensor(checkedTensor(m.indices, [...path, "indices"])!);
    this.#byte(TUPLE2);
    this.#byte(EMPTY_DICT);
    this.#byte(TUPLE2);
    this.#byte(REDUCE);
  }

  async #save(v: unknown, path: unknown[]): Promise<void> {
    await this.#maybeCommit();
    if (v === null || v === undefined) return this.#byte(NONE);
    switch (typeof v) {
      case "boolean":
        return this.#byte(v ? NEWTRUE : NEWFALSE);
      case "bigint":
        return this.#int(v);
      case "number":
        return Number.isSafeInteger(v) && !Object.is(v, -0) ? this.#int(v) : this.#float(v);
      case "string":
        return await this.#str(v);
    }
    // Markers first: to the other writers they look like a plain tensor / a mapping.
    if (v instanceof TorchTensor) return await this.#torchTensor(checkedTensor(v, path)!);
    if (v instanceof TorchMinMax) return await this.#torchMinMax(v, path);
    const t = checkedTensor(v, path);
    if (t !== null) return await this.#tensor(t);
    if (v instanceof Uint8Array) {
      return await this.#payload(v, [SHORT_BINBYTES, BINBYTES, BINBYTES8]);
    }
    const entries = mappingEntries(v);
    if (entries !== null) {
      this.#byte(EMPTY_DICT);
      for (let i = 0; i < entries.length; i += BATCH) {
        this.#byte(MARK);
        for (const [k, val] of entries.slice(i, i + BATCH)) {
          if (typeof k !== "string" && typeof k !== "number" && typeof k !== "bigint") {
            throw new OutputError(`${keyPath(path)}: cannot pickle a ${typeName(k)} dict key`);
          }
          await this.#save(k, path);
          await this.#save(val, [...path, k]);
        }
        this.#byte(SETITEMS);
      }
      return;
    }
    const items = sequenceItems(v);
    if (items !== null && Array.isArray(v)) {
      this.#byte(EMPTY_LIST);
      for (let i = 0; i < items.length; i += BATCH) {
        this.#byte(MARK);
        for (let j = i; j < Math.min(items.length, i + BATCH); j++) {
          await this.#save(items[j], [...path, j]);
        }
        this.#byte(APPENDS);
      }
      return;
    }
    if (items !== null) {
      this.#byte(MARK);
      for (let j = 0; j < items.length; j++) await this.#save(items[j], [...path, j]);
      this.#byte(TUPLE);
      return;
    }
    throw new OutputError(`${keyPath(path)}: cannot pickle a value of type ${typeName(v)}`);
  }
}

/** Pickles `value` onto any writer (buffered; flushed before returning). */
export async function dumpPickle(w: ByteWriter, value: unknown): Promise<void> {
  const sink = new ByteSink(w);
  await new PickleWriter(sink).dump(value);
  await sink.flush();
}

/** Pickles `value` into memory; for small values and tests. */
export async function encodePickle(value: unknown): Promise<Uint8Array> {
  const w = new MemoryWriter();
  await dumpPickle(w, value);
  return w.bytes();
}

/** Pickles `value` to `path` atomically (temporary file, then rename). */
export async function writePickle(path: string, value: unknown): Promise<void> {
  await atomicWrite(path, (file) => dumpPickle(file, value));
}
