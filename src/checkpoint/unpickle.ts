/**
 * A restricted unpickler for the pickles torch.save writes (protocols 2-5). It never executes
 * anything: GLOBAL resolves only names on an allow-list, and REDUCE / NEWOBJ apply only the few
 * constructors implemented here (OrderedDict, torch's tensor rebuilders, a few inert records).
 * The stack (all MARK frames together), the memo, the items put in containers, the bytes of
 * strings, and nesting are bounded in total, so a hostile pickle cannot exhaust memory or
 * recursion however it repeats DUP or MEMOIZE; every opcode consumes input, so it terminates.
 *
 * @module
 */

import { DTYPE_SIZE, numel, type SafetensorsDType } from "./dtypes.ts";
import { CheckpointError } from "./errors.ts";
import { kindOf, quote, showInts } from "./show.ts";

/**
 * The pickle ended before its STOP. Readers that parse a window of a larger file catch it to
 * retry with a bigger window; everyone else sees an ordinary one-line CheckpointError.
 */
export class TruncatedPickleError extends CheckpointError {
  /** Creates the error with a one-line message. */
  constructor(message: string) {
    super(message);
    this.name = "TruncatedPickleError";
  }
}

/** A resolved, allow-listed global (a class or function name; never imported or called). */
export class PyGlobal {
  /** The dotted module and the attribute, as written in the pickle. */
  constructor(readonly module: string, readonly name: string) {}
  /** "module.name". */
  get qualified(): string {
    return `${this.module}.${this.name}`;
  }
}

/** A torch storage referenced by a persistent id: `numel` elements of `dtype` in entry `key`. */
export class StorageRef {
  /** Describes the storage. */
  constructor(
    readonly key: string,
    readonly dtype: SafetensorsDType,
    readonly numel: number,
    readonly location: string,
  ) {}
}

/** A tensor as `torch._utils._rebuild_tensor_v2` describes it: a contiguous view of a storage. */
export class PickledTensor {
  /** Describes the view (already validated to be contiguous and inside the storage). */
  constructor(
    readonly storage: StorageRef,
    readonly storageOffset: number,
    readonly shape: number[],
  ) {}
}

/** An object of an inert allow-listed class (e.g. argparse.Namespace): kept as data, unused. */
export class PyOpaque {
  /** Records the class, constructor arguments and BUILD state. */
  constructor(readonly cls: PyGlobal, readonly args: PyValue[], public state: PyValue = null) {}
}

/** Values the restricted unpickler produces. Tuples and lists are both arrays. */
export type PyValue =
  | null
  | boolean
  | number
  | bigint
  | string
  | Uint8Array
  | PyValue[]
  | Map<PyValue, PyValue>
  | PyGlobal
  | StorageRef
  | PickledTensor
  | PyOpaque;

/** Bounds that keep a hostile pickle cheap. */
export interface UnpickleLimits {
  /** Nested MARKs. */
  maxMarkDepth: number;
  /** Values on the stack, counting every MARK frame. */
  maxStack: number;
  /** Memo entries. */
  maxMemo: number;
  /** Items put into lists, tuples and dicts (a dict entry counts as two), over the whole pickle. */
  maxItems: number;
  /** Bytes of all strings and bytes objects made, over the whole pickle. */
  maxBytes: number;
  /** Nesting of containers inside containers. */
  maxNesting: number;
}

/**
 * Defaults far above anything torch.save writes: a state dict of N tensors pickles about 30
 * values, 10 memo entries, 20 container items and its names' bytes per tensor, all on a stack
 * a few dozen deep (Python's pickler batches APPENDS/SETITEMS by 1000). At the caps, the
 * unpickled values take at most a few hundred MB.
 */
export const DEFAULT_LIMITS: UnpickleLimits = {
  maxMarkDepth: 1000,
  maxStack: 1 << 20,
  maxMemo: 1 << 20,
  maxItems: 1 << 22,
  maxBytes: 64 << 20,
  maxNesting: 1000,
};

/** Options of {@link unpickle}. */
export interface UnpickleOptions {
  /** Names the file in error messages. */
  label: string;
  /** Resolves a BINPERSID id (torch: a storage tuple) to a value. */
  persistentLoad: (pid: PyValue) => PyValue;
  limits?: Partial<UnpickleLimits>;
}

/** torch storage classes (torch.<X>Storage) and dtype objects (torch.<dtype>) -> element type. */
export const TORCH_STORAGE_DTYPES: Readonly<Record<string, SafetensorsDType>> = {
  DoubleStorage: "F64",
  FloatStorage: "F32",
  HalfStorage: "F16",
  BFloat16Storage: "BF16",
  LongStorage: "I64",
  IntStorage: "I32",
  ShortStorage: "I16",
  CharStorage: "I8",
  ByteStorage: "U8",
  BoolStorage: "BOOL",
  float64: "F64",
  double: "F64",
  float32: "F32",
  float: "F32",
  float16: "F16",
  half: "F16",
  bfloat16: "BF16",
  int64: "I64",
  long: "I64",
  int32: "I32",
  int: "I32",
  int16: "I16",
  short: "I16",
  int8: "I8",
  uint8: "U8",
  bool: "BOOL",
};

const ORDERED_DICT = "collections.OrderedDict";
const REBUILD_TENSOR = "torch._utils._rebuild_tensor_v2";
const REBUILD_PARAMS = new Set([
  "torch._utils._rebuild_parameter",
  "torch._utils._rebuild_parameter_with_state",
]);
const CODECS_ENCODE = "_codecs.encode";
// Classes that appear in training checkpoints beside the weights; kept as inert records.
const INERT = new Set([
  "argparse.Namespace",
  "numpy.core.multiarray.scalar",
  "numpy._core.multiarray.scalar",
  "numpy.dtype",
  "torch.torch_version.TorchVersion",
]);

/** True when GLOBAL may name `module.name`. */
export function isAllowedGlobal(module: string, name: string): boolean {
  const q = `${module}.${name}`;
  if (q === ORDERED_DICT || q === REBUILD_TENSOR || q === CODECS_ENCODE) return true;
  if (REBUILD_PARAMS.has(q) || INERT.has(q)) return true;
  return module === "torch" && Object.hasOwn(TORCH_STORAGE_DTYPES, name);
}

/** Unpickles `data` under the restrictions above; returns the pickled object. */
export function unpickle(data: Uint8Array, opts: UnpickleOptions): PyValue {
  return unpickleAt(data, 0, opts).value;
}

/**
 * Unpickles the pickle starting at byte `start` of `data` (several pickles may follow one another,
 * as in torch's legacy format); returns the object and the offset just past its STOP.
 */
export function unpickleAt(
  data: Uint8Array,
  start: number,
  opts: UnpickleOptions,
): { value: PyValue; end: number } {
  const lim = { ...DEFAULT_LIMITS, ...opts.limits };
  const label = opts.label;
  const fail = (msg: string): never => {
    throw new CheckpointError(`${label}: ${msg}`);
  };
  const dv = new DataView(data.buffer, data.byteOffset, data.byteLength);
  const utf8 = new TextDecoder("utf-8", { fatal: true });
  const latin1 = new TextDecoder("latin1");
  let pos = start;
  let stack: PyValue[] = [];
  const metastack: PyValue[][] = [];
  /** Values on the stack including every MARK frame below the current one. */
  let held = 0;
  let items = 0;
  let madeBytes = 0;
  const memo = new Map<number, PyValue>();
  const depth = new WeakMap<object, number>();

  const truncated = (msg: string): never => {
    throw new TruncatedPickleError(`${label}: ${msg}`);
  };
  const need = (n: number) => {
    if (n < 0) fail(`negative length in pickle at byte ${pos}`);
    if (pos + n > data.length) truncated(`truncated pickle at byte ${pos}`);
  };
  const u8 = () => (need(1), data[pos++]);
  const u16 = () => (need(2), pos += 2, dv.getUint16(pos - 2, true));
  const u32 = () => (need(4), pos += 4, dv.getUint32(pos - 4, true));
  const i32 = () => (need(4), pos += 4, dv.getInt32(pos - 4, true));
  const u64 = () => {
    need(8);
    const v = dv.getBigUint64(pos, true);
    pos += 8;
    if (v > BigInt(data.length)) truncated(`pickle length ${v} exceeds the data`);
    return Number(v);
  };
  const bytes = (n: number) => {
    need(n);
    // A string or bytes object is made from these: count them against the total.
    madeBytes += n;
    if (madeBytes > lim.maxBytes) {
      fail(`pickle makes more than ${lim.maxBytes} bytes of strings and bytes objects`);
    }
    pos += n;
    return data.subarray(pos - n, pos);
  };
  const text = (n: number) => {
    try {
      return utf8.decode(bytes(n));
    } catch (e) {
      if (e instanceof CheckpointError) throw e;
      return fail(`invalid UTF-8 string in pickle at byte ${pos}`);
    }
  };
  const line = () => {
    const end = data.indexOf(0x0a, pos);
    if (end < 0) truncated("truncated GLOBAL in pickle");
    const s = latin1.decode(data.subarray(pos, end));
    pos = end + 1;
    return s;
  };
  const push = (v: PyValue) => {
    if (held >= lim.maxStack) fail(`pickle stack exceeds ${lim.maxStack} values in all`);
    stack.push(v);
    held++;
  };
  const pop = (): PyValue => {
    if (stack.length === 0) fail(`pickle stack underflow at byte ${pos - 1}`);
    held--;
    return stack.pop()!;
  };
  const addItems = (n: number) => {
    items += n;
    if (items > lim.maxItems) fail(`pickle holds more than ${lim.maxItems} items in containers`);
  };
  const top = (): PyValue => {
    if (stack.length === 0) fail(`pickle stack underflow at byte ${pos - 1}`);
    return stack[stack.length - 1];
  };
  const popMark = (): PyValue[] => {
    const frame = stack;
    const prev = metastack.pop();
    if (!prev) fail(`pickle pops a MARK that was never set (byte ${pos - 1})`);
    stack = prev!;
    held -= frame.length;
    return frame;
  };
  const nestIn = (container: object, child: PyValue) => {
    if (typeof child !== "object" || child === null) return;
    const d = (depth.get(child) ?? 0) + 1;
    if (d > lim.maxNesting) fail(`pickle nests containers deeper than ${lim.maxNesting} levels`);
    if (d > (depth.get(container) ?? 0)) depth.set(container, d);
  };
  const tuple = (elems: PyValue[]): PyValue[] => {
    addItems(elems.length);
    for (const it of elems) nestIn(elems, it);
    return elems;
  };
  const memoPut = (i: number) => {
    if (!memo.has(i) && memo.size >= lim.maxMemo) {
      fail(`pickle memo exceeds ${lim.maxMemo} entries`);
    }
    memo.set(i, top());
  };
  const memoGet = (i: number) => {
    if (!memo.has(i)) fail(`pickle refers to memo entry ${i} that was never stored`);
    push(memo.get(i)!);
  };
  const setItems = (dict: PyValue, kv: PyValue[]) => {
    if (!(dict instanceof Map)) return fail("SETITEM(S) on something that is not a dict");
    if (kv.length % 2) fail("SETITEMS with an odd number of values");
    addItems(kv.length);
    for (let i = 0; i < kv.length; i += 2) {
      nestIn(dict, kv[i + 1]);
      dict.set(kv[i], kv[i + 1]);
    }
  };
  const appendItems = (list: PyValue, elems: PyValue[]) => {
    if (!Array.isArray(list)) return fail("APPEND(S) on something that is not a list");
    addItems(elems.length);
    for (const it of elems) {
      nestIn(list, it);
      list.push(it);
    }
  };
  const call = (fn: PyValue, args: PyValue): PyValue => {
    if (!(fn instanceof PyGlobal)) return fail("REDUCE on a value that is not a class or function");
    if (!Array.isArray(args)) return fail(`arguments of ${fn.qualified} are not a tuple`);
    return construct(fn, args, fail);
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
      case 0x7d: // EMPTY_DICT
        push(new Map());
        break;
      case 0x5d: // EMPTY_LIST
        push([]);
        break;
      case 0x29: // EMPTY_TUPLE
        push([]);
        break;
      case 0x28: // MARK
        if (metastack.length >= lim.maxMarkDepth) {
          fail(`pickle nests MARKs deeper than ${lim.maxMarkDepth}`);
        }
        metastack.push(stack);
        stack = [];
        break;
      case 0x74: // TUPLE
        push(tuple(popMark()));
        break;
      case 0x85: // TUPLE1
        push(tuple([pop()]));
        break;
      case 0x86: { // TUPLE2
        const b = pop();
        push(tuple([pop(), b]));
        break;
      }
      case 0x87: { // TUPLE3
        const c = pop();
        const b = pop();
        push(tuple([pop(), b, c]));
        break;
      }
      case 0x58: // BINUNICODE
        push(text(u32()));
        break;
      case 0x8c: // SHORT_BINUNICODE
        push(text(u8()));
        break;
      case 0x8d: // BINUNICODE8
        push(text(u64()));
        break;
      case 0x54: { // BINSTRING
        const n = i32();
        if (n < 0) fail("negative BINSTRING length");
        push(latin1.decode(bytes(n)));
        break;
      }
      case 0x55: // SHORT_BINSTRING
        push(latin1.decode(bytes(u8())));
        break;
      case 0x42: // BINBYTES
        push(bytes(u32()).slice());
        break;
      case 0x43: // SHORT_BINBYTES
        push(bytes(u8()).slice());
        break;
      case 0x8e: // BINBYTES8
        push(bytes(u64()).slice());
        break;
      case 0x4a: // BININT
        push(i32());
        break;
      case 0x4b: // BININT1
        push(u8());
        break;
      case 0x4d: // BININT2
        push(u16());
        break;
      case 0x8a: // LONG1
        push(decodeLong(bytes(u8())));
        break;
      case 0x8b: { // LONG4
        const n = i32();
        if (n < 0 || n > 1024) fail(`LONG4 of ${n} bytes is out of range`);
        push(decodeLong(bytes(n)));
        break;
      }
      case 0x47: // BINFLOAT (big-endian)
        need(8);
        push(dv.getFloat64(pos, false));
        pos += 8;
        break;
      case 0x4e: // NONE
        push(null);
        break;
      case 0x88: // NEWTRUE
        push(true);
        break;
      case 0x89: // NEWFALSE
        push(false);
        break;
      case 0x71: // BINPUT
        memoPut(u8());
        break;
      case 0x72: // LONG_BINPUT
        memoPut(u32());
        break;
      case 0x94: // MEMOIZE
        memoPut(memo.size);
        break;
      case 0x68: // BINGET
        memoGet(u8());
        break;
      case 0x6a: // LONG_BINGET
        memoGet(u32());
        break;
      case 0x73: { // SETITEM
        const v = pop();
        const k = pop();
        setItems(top(), [k, v]);
        break;
      }
      case 0x75: { // SETITEMS
        const kv = popMark();
        setItems(top(), kv);
        break;
      }
      case 0x61: { // APPEND
        const v = pop();
        appendItems(top(), [v]);
        break;
      }
      case 0x65: { // APPENDS
        const items = popMark();
        appendItems(top(), items);
        break;
      }
      case 0x63: { // GLOBAL
        const module = line();
        const name = line();
        push(resolveGlobal(module, name, fail));
        break;
      }
      case 0x93: { // STACK_GLOBAL
        const name = pop();
        const module = pop();
        if (typeof module !== "string" || typeof name !== "string") {
          fail("STACK_GLOBAL with non-string names");
        }
        push(resolveGlobal(module as string, name as string, fail));
        break;
      }
      case 0x52: { // REDUCE
        const args = pop();
        push(call(pop(), args));
        break;
      }
      case 0x81: { // NEWOBJ
        const args = pop();
        push(call(pop(), args));
        break;
      }
      case 0x62: { // BUILD
        const state = pop();
        const obj = top();
        if (obj instanceof PyOpaque) obj.state = state;
        else if (!(obj instanceof Map || obj instanceof PickledTensor)) {
          fail("BUILD on an object that takes no state");
        }
        // An OrderedDict's state is its __dict__ (torch's `_metadata`): not needed.
        break;
      }
      case 0x51: // BINPERSID
        push(opts.persistentLoad(pop()));
        break;
      case 0x30: // POP
        pop();
        break;
      case 0x31: // POP_MARK
        popMark();
        break;
      case 0x32: // DUP
        push(top());
        break;
      case 0x2e: { // STOP
        const result = pop();
        if (stack.length !== 0 || metastack.length !== 0) {
          // Python tolerates leftovers; a torch pickle never has them, so say so clearly.
          fail("pickle stops with values left on its stack");
        }
        return { value: result, end: pos };
      }
      default:
        fail(
          `unsupported pickle opcode 0x${op.toString(16).padStart(2, "0")} at byte ${at}: ` +
            `not something torch.save writes for tensors`,
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

function resolveGlobal(module: string, name: string, fail: (m: string) => never): PyGlobal {
  if (!isAllowedGlobal(module, name)) {
    const shown = `${module}.${name}`.replace(/[^\x20-\x7e]/g, "?").slice(0, 120);
    fail(
      `refusing to unpickle ${shown}: a checkpoint may only contain tensors and plain containers`,
    );
  }
  return new PyGlobal(module, name);
}

function isIntList(v: PyValue): v is number[] {
  return Array.isArray(v) && v.every((d) => typeof d === "number" && Number.isSafeInteger(d));
}

/** Applies an allow-listed constructor; nothing else can be called. */
function construct(fn: PyGlobal, args: PyValue[], fail: (m: string) => never): PyValue {
  const q = fn.qualified;
  if (q === ORDERED_DICT) {
    if (args.length !== 0) fail("OrderedDict with constructor arguments");
    return new Map();
  }
  if (q === REBUILD_TENSOR) return rebuildTensor(args, fail);
  if (REBUILD_PARAMS.has(q)) {
    if (!(args[0] instanceof PickledTensor)) fail(`${q} of something that is not a tensor`);
    return args[0];
  }
  if (q === CODECS_ENCODE) {
    // Protocol 2 pickles bytes as _codecs.encode(str, "latin1").
    const [s, enc] = args;
    if (typeof s !== "string") return fail("_codecs.encode of a non-string");
    if (enc === "latin1" || enc === "latin-1") {
      return Uint8Array.from(s, (c) => c.charCodeAt(0) & 0xff);
    }
    return new TextEncoder().encode(s);
  }
  if (INERT.has(q)) return new PyOpaque(fn, args);
  return fail(`${q} cannot be called while unpickling`);
}

function rebuildTensor(args: PyValue[], fail: (m: string) => never): PickledTensor {
  const [storage, offset, size, stride] = args;
  if (!(storage instanceof StorageRef)) return fail("_rebuild_tensor_v2 without a storage");
  if (typeof offset !== "number" || !Number.isSafeInteger(offset) || offset < 0) {
    const shown = typeof offset === "number" ? String(offset) : kindOf(offset);
    return fail(`tensor storage_offset (${shown}) is not a non-negative integer`);
  }
  if (!isIntList(size) || size.some((d) => d < 0)) {
    return fail("tensor size is not a tuple of non-negative integers");
  }
  if (!isIntList(stride) || stride.length !== size.length) {
    return fail(`tensor stride does not match its size ${showInts(size)}`);
  }
  // Only contiguous row-major views: what state_dict() holds and what we read in one piece.
  let expect = 1;
  for (let i = size.length - 1; i >= 0; i--) {
    if (size[i] !== 1 && stride[i] !== expect) {
      return fail(
        `tensor of size ${showInts(size)} has non-contiguous stride ${showInts(stride)}; ` +
          `save it contiguous`,
      );
    }
    expect *= size[i];
  }
  const n = numel(size);
  if (!Number.isSafeInteger(n) || !Number.isSafeInteger(n * DTYPE_SIZE[storage.dtype])) {
    return fail(`tensor size ${showInts(size)} is too large`);
  }
  if (n > 0 && offset + n > storage.numel) {
    return fail(
      `tensor of size ${showInts(size)} at offset ${offset} does not fit in storage ` +
        `${quote(storage.key)} ` +
        `of ${storage.numel} elements`,
    );
  }
  return new PickledTensor(storage, offset, size.slice());
}
