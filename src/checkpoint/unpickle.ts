/**
 * A restricted unpickler for the pickles torch.save writes (protocols 2-5), run on the restricted
 * pickle machine (./pickle_vm.ts). It never executes anything: GLOBAL resolves only names on an
 * allow-list, and REDUCE / NEWOBJ apply only the few constructors implemented here (OrderedDict,
 * torch's tensor rebuilders, a few inert records); BINPERSID goes to the caller's persistentLoad
 * (torch's storages). The stack (all MARK frames together), the memo, the items put in
 * containers, the bytes of strings, and nesting are bounded in total ({@link DEFAULT_LIMITS}), so
 * a hostile pickle cannot exhaust memory or recursion however it repeats DUP or MEMOIZE; every
 * opcode consumes input, so it terminates.
 *
 * @module
 */

import { DTYPE_SIZE, numel, type SafetensorsDType } from "./dtypes.ts";
import { CheckpointError } from "./errors.ts";
import { printable } from "../errors.ts";
import { type PickleFail, type PickleLimits, type PickleValue, runPickle } from "./pickle_vm.ts";
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

/** What the allow-listed globals and constructors make. */
export type TorchObject = PyGlobal | StorageRef | PickledTensor | PyOpaque;

/** Values the restricted unpickler produces. Tuples and lists are both arrays. */
export type PyValue = PickleValue<TorchObject>;

/** Bounds that keep a hostile pickle cheap. */
export type UnpickleLimits = PickleLimits;

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
  return runPickle<TorchObject>(data, start, {
    label: opts.label,
    error: (msg, truncated) => truncated ? new TruncatedPickleError(msg) : new CheckpointError(msg),
    unsupported: "not something torch.save writes for tensors",
    limits: { ...DEFAULT_LIMITS, ...opts.limits },
    copyBytes: true,
    global: resolveGlobal,
    reduce: call,
    newObject: call,
    build: (obj, state, fail) => {
      if (obj instanceof PyOpaque) obj.state = state;
      else if (!(obj instanceof Map || obj instanceof PickledTensor)) {
        fail("BUILD on an object that takes no state");
      }
      // An OrderedDict's state is its __dict__ (torch's `_metadata`): not needed.
    },
    persistentLoad: opts.persistentLoad,
  });
}

function resolveGlobal(module: string, name: string, fail: PickleFail): PyGlobal {
  if (!isAllowedGlobal(module, name)) {
    fail(
      `refusing to unpickle ${printable(`${module}.${name}`, 120)}: ` +
        `a checkpoint may only contain tensors and plain containers`,
    );
  }
  return new PyGlobal(module, name);
}

/** REDUCE and NEWOBJ: an allow-listed constructor applied to a tuple. */
function call(fn: PyValue, args: PyValue, fail: PickleFail): PyValue {
  if (!(fn instanceof PyGlobal)) return fail("REDUCE on a value that is not a class or function");
  if (!Array.isArray(args)) return fail(`arguments of ${fn.qualified} are not a tuple`);
  return construct(fn, args, fail);
}

function isIntList(v: PyValue): v is number[] {
  return Array.isArray(v) && v.every((d) => typeof d === "number" && Number.isSafeInteger(d));
}

/** Applies an allow-listed constructor; nothing else can be called. */
function construct(fn: PyGlobal, args: PyValue[], fail: PickleFail): PyValue {
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

function rebuildTensor(args: PyValue[], fail: PickleFail): PickledTensor {
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
