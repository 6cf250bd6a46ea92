/**
 * Reads back the pickles this toolkit writes (src/io/pickle.ts): protocol 4 with dicts, lists,
 * tuples, strings, numbers, bytes, and tensors pickled as
 * `numpy.reshape(numpy.frombuffer(builtins.bytearray(<bytes>), '<f4'), shape)`. Those three names
 * are the only globals it accepts and nothing is ever executed, so a hostile file can only fail.
 * The memo opcodes CPython's pickler adds are understood too; numpy's own array pickling
 * (`numpy.core.multiarray._reconstruct`) is not, and is refused with a message saying so.
 *
 * @module
 */

import { ARRAY_OF, type HostData, type HostDType, type HostTensor } from "./tensor.ts";

/** numpy dtype strings our writer uses -> result dtypes. */
const DTYPES: Record<string, HostDType> = {
  "<f4": "float32",
  "<f8": "float64",
  "<i8": "int64",
  "<i4": "int32",
  "|u1": "uint8",
  "|b1": "bool",
};

/** A global our pickles name; resolved to a marker, never imported. */
class Global {
  constructor(readonly name: string) {}
}

/** The intermediate values of the tensor recipe. */
class ByteArray {
  constructor(readonly bytes: Uint8Array) {}
}
class FlatArray {
  constructor(readonly dtype: HostDType, readonly data: HostData) {}
}

const ALLOWED = new Set(["numpy.reshape", "numpy.frombuffer", "builtins.bytearray"]);

/** Nesting bound: a hostile file cannot recurse the converter deeply. */
const MAX_MARKS = 1000;

/**
 * Decodes a pickle written by {@link import("./pickle.ts").writePickle}. Dicts come back as Maps
 * (keys keep their type), lists and tuples as arrays, bytes as Uint8Array, tensors as HostTensor.
 * Throws an Error naming `label` and the byte offset on anything else.
 */
export function readPickleBytes(data: Uint8Array, label: string): unknown {
  const fail = (msg: string): never => {
    throw new Error(`${label}: ${msg}`);
  };
  const dv = new DataView(data.buffer, data.byteOffset, data.byteLength);
  const utf8 = new TextDecoder("utf-8", { fatal: true });
  let pos = 0;
  let stack: unknown[] = [];
  const marks: unknown[][] = [];
  const memo = new Map<number, unknown>();

  const need = (n: number) => {
    if (pos + n > data.length) fail(`truncated pickle at byte ${pos}`);
  };
  const u8 = () => (need(1), data[pos++]);
  const u16 = () => (need(2), pos += 2, dv.getUint16(pos - 2, true));
  const u32 = () => (need(4), pos += 4, dv.getUint32(pos - 4, true));
  const i32 = () => (need(4), pos += 4, dv.getInt32(pos - 4, true));
  const u64 = () => {
    need(8);
    const v = dv.getBigUint64(pos, true);
    pos += 8;
    if (v > BigInt(data.length)) fail(`length ${v} at byte ${pos - 8} exceeds the file`);
    return Number(v);
  };
  const bytes = (n: number) => (need(n), pos += n, data.subarray(pos - n, pos));
  const text = (n: number) => {
    try {
      return utf8.decode(bytes(n));
    } catch {
      return fail(`invalid UTF-8 string at byte ${pos}`);
    }
  };
  const pop = (): unknown => stack.length ? stack.pop() : fail(`stack underflow at byte ${pos}`);
  const top = (): unknown =>
    stack.length ? stack[stack.length - 1] : fail(`stack underflow at byte ${pos}`);
  const popMark = (): unknown[] => {
    const items = stack;
    const prev = marks.pop();
    if (prev === undefined) fail(`MARK missing at byte ${pos}`);
    stack = prev!;
    return items;
  };
  const setItems = (kv: unknown[]) => {
    const d = top();
    if (!(d instanceof Map) || kv.length % 2) fail(`bad SETITEMS at byte ${pos}`);
    for (let i = 0; i < kv.length; i += 2) (d as Map<unknown, unknown>).set(kv[i], kv[i + 1]);
  };
  const appendItems = (items: unknown[]) => {
    const l = top();
    if (!Array.isArray(l)) fail(`bad APPENDS at byte ${pos}`);
    (l as unknown[]).push(...items);
  };

  for (;;) {
    const at = pos;
    const op = u8();
    switch (op) {
      case 0x80: // PROTO
        if (u8() > 5) fail("pickle protocol newer than 5");
        break;
      case 0x95: // FRAME: a length hint only
        u64();
        break;
      case 0x2e: { // STOP
        const v = pop();
        if (stack.length || marks.length) fail("values left on the stack at STOP");
        return v;
      }
      case 0x28: // MARK
        if (marks.length >= MAX_MARKS) fail(`MARKs nested deeper than ${MAX_MARKS}`);
        marks.push(stack);
        stack = [];
        break;
      case 0x4e: // NONE
        stack.push(null);
        break;
      case 0x88: // NEWTRUE
        stack.push(true);
        break;
      case 0x89: // NEWFALSE
        stack.push(false);
        break;
      case 0x4b: // BININT1
        stack.push(u8());
        break;
      case 0x4d: // BININT2
        stack.push(u16());
        break;
      case 0x4a: // BININT
        stack.push(i32());
        break;
      case 0x8a: // LONG1
        stack.push(decodeLong(bytes(u8())));
        break;
      case 0x8b: { // LONG4
        const n = i32();
        if (n < 0 || n > 1024) fail(`LONG4 of ${n} bytes`);
        stack.push(decodeLong(bytes(n)));
        break;
      }
      case 0x47: // BINFLOAT (big-endian)
        need(8);
        stack.push(dv.getFloat64(pos, false));
        pos += 8;
        break;
      case 0x8c: // SHORT_BINUNICODE
        stack.push(text(u8()));
        break;
      case 0x58: // BINUNICODE
        stack.push(text(u32()));
        break;
      case 0x8d: // BINUNICODE8
        stack.push(text(u64()));
        break;
      case 0x43: // SHORT_BINBYTES
        stack.push(bytes(u8()));
        break;
      case 0x42: // BINBYTES
        stack.push(bytes(u32()));
        break;
      case 0x8e: // BINBYTES8
        stack.push(bytes(u64()));
        break;
      case 0x7d: // EMPTY_DICT
        stack.push(new Map());
        break;
      case 0x5d: // EMPTY_LIST
      case 0x29: // EMPTY_TUPLE
        stack.push([]);
        break;
      case 0x74: { // TUPLE (popMark swaps `stack`: pop before reading it)
        const items = popMark();
        stack.push(items);
        break;
      }
      case 0x85: // TUPLE1
        stack.push([pop()]);
        break;
      case 0x86: { // TUPLE2
        const b = pop();
        stack.push([pop(), b]);
        break;
      }
      case 0x87: { // TUPLE3
        const c = pop();
        const b = pop();
        stack.push([pop(), b, c]);
        break;
      }
      case 0x75: // SETITEMS
        setItems(popMark());
        break;
      case 0x73: { // SETITEM
        const v = pop();
        setItems([pop(), v]);
        break;
      }
      case 0x65: // APPENDS
        appendItems(popMark());
        break;
      case 0x61: // APPEND
        appendItems([pop()]);
        break;
      case 0x94: // MEMOIZE
        memo.set(memo.size, top());
        break;
      case 0x71: // BINPUT
        memo.set(u8(), top());
        break;
      case 0x72: // LONG_BINPUT
        memo.set(u32(), top());
        break;
      case 0x68: // BINGET
      case 0x6a: { // LONG_BINGET
        const i = op === 0x68 ? u8() : u32();
        if (!memo.has(i)) fail(`memo entry ${i} used before it was stored`);
        stack.push(memo.get(i));
        break;
      }
      case 0x93: { // STACK_GLOBAL
        const name = pop();
        const module = pop();
        const q = `${String(module)}.${String(name)}`;
        if (!ALLOWED.has(q)) {
          fail(
            `refusing global ${q.replace(/[^\x20-\x7e]/g, "?").slice(0, 80)}: ` +
              `not a file written by this toolkit's extraction scripts`,
          );
        }
        stack.push(new Global(q));
        break;
      }
      case 0x52: { // REDUCE
        const args = pop();
        const fn = pop();
        stack.push(apply(fn, args, fail));
        break;
      }
      default:
        fail(
          `unsupported pickle opcode 0x${op.toString(16).padStart(2, "0")} at byte ${at}: ` +
            `not a file written by this toolkit's extraction scripts`,
        );
    }
  }
}

function decodeLong(b: Uint8Array): number | bigint {
  if (b.length === 0) return 0;
  let v = 0n;
  for (let i = b.length - 1; i >= 0; i--) v = (v << 8n) | BigInt(b[i]);
  if (b[b.length - 1] & 0x80) v -= 1n << BigInt(8 * b.length);
  return v >= BigInt(Number.MIN_SAFE_INTEGER) && v <= BigInt(Number.MAX_SAFE_INTEGER)
    ? Number(v)
    : v;
}

/** Applies one of the three allowed functions to its (already decoded) arguments. */
function apply(fn: unknown, args: unknown, fail: (m: string) => never): unknown {
  if (!(fn instanceof Global) || !Array.isArray(args)) return fail("REDUCE of a non-function");
  if (fn.name === "builtins.bytearray") {
    if (!(args[0] instanceof Uint8Array)) return fail("bytearray of something that is not bytes");
    return new ByteArray(args[0]);
  }
  if (fn.name === "numpy.frombuffer") {
    const [buf, dt] = args;
    const dtype = typeof dt === "string" ? DTYPES[dt] : undefined;
    if (!(buf instanceof ByteArray) || dtype === undefined) {
      return fail(`frombuffer with unsupported arguments (dtype ${String(dt)})`);
    }
    const A = ARRAY_OF[dtype];
    if (buf.bytes.length % A.BYTES_PER_ELEMENT) fail(`buffer is not a whole number of ${dt}`);
    // A copy: aligned for the typed array, and independent of the file's buffer.
    const copy = buf.bytes.slice();
    return new FlatArray(dtype, new A(copy.buffer));
  }
  const [arr, shape] = args;
  if (!(arr instanceof FlatArray)) return fail("reshape of something that is not an array");
  if (!Array.isArray(shape) || !shape.every((d) => Number.isSafeInteger(d) && d >= 0)) {
    return fail("reshape to a shape that is not a tuple of non-negative integers");
  }
  const n = (shape as number[]).reduce((a, b) => a * b, 1);
  if (n !== arr.data.length) fail(`cannot reshape ${arr.data.length} values to [${shape}]`);
  const t: HostTensor = { dtype: arr.dtype, shape: shape as number[], data: arr.data };
  return t;
}
