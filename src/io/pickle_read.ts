/**
 * Reads back the pickles this toolkit writes (src/io/pickle.ts): protocol 4 with dicts, lists,
 * tuples, strings, numbers, bytes, and tensors pickled as
 * `numpy.reshape(numpy.frombuffer(builtins.bytearray(<bytes>), '<f4'), shape)`. Those three names
 * are the only globals it accepts and nothing is ever executed, so a hostile file can only fail.
 * The memo opcodes CPython's pickler adds are understood too; numpy's own array pickling
 * (`numpy.core.multiarray._reconstruct`) is not, and is refused with a message saying so. The
 * opcodes run on the restricted pickle machine the checkpoint unpickler uses
 * (src/checkpoint/pickle_vm.ts); this module gives it the three globals and their application.
 *
 * @module
 */

import {
  type PickleFail,
  type PickleLimits,
  type PickleValue,
  runPickle,
} from "../checkpoint/pickle_vm.ts";
import { printable } from "../errors.ts";
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

/** What the tensor recipe's steps make. */
type Recipe = Global | ByteArray | FlatArray | HostTensor;
type Value = PickleValue<Recipe>;

const ALLOWED = new Set(["numpy.reshape", "numpy.frombuffer", "builtins.bytearray"]);

/**
 * Only MARK nesting is bounded: an outputs file holds whatever an extraction wrote (hundreds of MB
 * of tensor bytes, long lists), not a few tensors' worth of names as a checkpoint's pickle does.
 */
const LIMITS: PickleLimits = {
  maxMarkDepth: 1000,
  maxStack: Infinity,
  maxMemo: Infinity,
  maxItems: Infinity,
  maxBytes: Infinity,
  maxNesting: Infinity,
};

/**
 * Decodes a pickle written by {@link import("./pickle.ts").writePickle}. Dicts come back as Maps
 * (keys keep their type), lists and tuples as arrays, bytes as Uint8Array, tensors as HostTensor.
 * Throws an Error naming `label` and the byte offset on anything else.
 */
export function readPickleBytes(data: Uint8Array, label: string): unknown {
  return runPickle<Recipe>(data, 0, {
    label,
    error: (msg) => new Error(msg),
    unsupported: "not a file written by this toolkit's extraction scripts",
    limits: LIMITS,
    // Views of the file's buffer: frombuffer copies what a tensor keeps.
    copyBytes: false,
    global: (module, name, fail) => {
      const q = `${module}.${name}`;
      if (!ALLOWED.has(q)) {
        fail(
          `refusing global ${printable(q, 80)}: ` +
            `not a file written by this toolkit's extraction scripts`,
        );
      }
      return new Global(q);
    },
    reduce: apply,
  }).value;
}

/** Applies one of the three allowed functions to its (already decoded) arguments. */
function apply(fn: Value, args: Value, fail: PickleFail): Value {
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
  if (
    !Array.isArray(shape) ||
    !shape.every((d) => typeof d === "number" && Number.isSafeInteger(d) && d >= 0)
  ) {
    return fail("reshape to a shape that is not a tuple of non-negative integers");
  }
  const n = (shape as number[]).reduce((a, b) => a * b, 1);
  if (n !== arr.data.length) fail(`cannot reshape ${arr.data.length} values to [${shape}]`);
  const t: HostTensor = { dtype: arr.dtype, shape: shape as number[], data: arr.data };
  return t;
}
