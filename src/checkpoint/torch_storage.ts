/**
 * What the two torch.save layouts (zip and legacy) share once their pickle is read: the storage
 * persistent id `('storage', torch.<X>Storage, key, location, numel[, view_metadata])`, the search
 * for the state dict inside the pickled object, and the RawTensor handles of its tensors.
 *
 * @module
 */

import { DTYPE_SIZE, numel, type RawTensor, type SafetensorsDType } from "./dtypes.ts";
import { PickledTensor, PyGlobal, type PyValue, TORCH_STORAGE_DTYPES } from "./unpickle.ts";
import { quote } from "./show.ts";

/** Keys under which training scripts nest the state dict. */
const WRAPPER_KEYS = ["model", "state_dict", "model_state_dict", "module"];
/** Storage keys are short identifiers (torch writes a number); anything else is corrupt. */
const KEY_PATTERN = /^[\w.-]{1,200}$/;

/** A storage persistent id, validated. */
export interface StorageId {
  dtype: SafetensorsDType;
  key: string;
  location: string;
  /** Elements of the whole storage. */
  numel: number;
  /** Old torch's storage views (legacy format only): `numel` elements at `offset` of `key`'s. */
  view: { key: string; offset: number; numel: number } | null;
}

function isCount(v: PyValue): v is number {
  return typeof v === "number" && Number.isSafeInteger(v) && v >= 0;
}

/**
 * Validates a persistent id; `where` names the pickle in messages ("data.pkl"). Every failure goes
 * through `fail` (a one-line CheckpointError); nothing from the file is echoed but checked keys.
 */
export function parseStorageId(
  pid: PyValue,
  where: string,
  fail: (msg: string) => never,
): StorageId {
  if (!Array.isArray(pid) || pid.length < 5 || pid[0] !== "storage") {
    return fail(`unsupported persistent id in ${where} (expected a 'storage' tuple)`);
  }
  const [, type, key, location, count, viewMeta] = pid;
  const dtype = type instanceof PyGlobal && type.module === "torch"
    ? TORCH_STORAGE_DTYPES[type.name]
    : undefined;
  if (!dtype) return fail(`storage of an unsupported type in ${where}`);
  if (typeof key !== "string" || !KEY_PATTERN.test(key)) return fail("malformed storage key");
  if (!isCount(count)) return fail(`storage ${quote(key)} has an invalid element count`);
  let view: StorageId["view"] = null;
  if (viewMeta !== undefined && viewMeta !== null) {
    const [vkey, offset, size] = Array.isArray(viewMeta) ? viewMeta : [];
    if (
      !Array.isArray(viewMeta) || viewMeta.length !== 3 || typeof vkey !== "string" ||
      !KEY_PATTERN.test(vkey) || !isCount(offset) || !isCount(size)
    ) {
      return fail(`storage ${quote(key)} has a malformed view description`);
    }
    if (offset + size > count) {
      return fail(
        `storage view ${quote(vkey)} (${size} elements at ${offset}) does not fit in storage ${
          quote(key)
        } ` +
          `of ${count} elements`,
      );
    }
    view = { key: vkey, offset, numel: size };
  }
  return { dtype, key, location: typeof location === "string" ? location : "", numel: count, view };
}

function tensorCount(v: PyValue): number {
  if (!(v instanceof Map)) return 0;
  let n = 0;
  for (const x of v.values()) if (x instanceof PickledTensor) n++;
  return n;
}

/** The state dict itself, or one nested (at most three deep) under a wrapper key. */
export function findStateDict(root: PyValue): Map<PyValue, PyValue> | null {
  let cur: PyValue = root;
  for (let level = 0; level < 4 && cur instanceof Map; level++) {
    if (tensorCount(cur) > 0) return cur;
    const m: Map<PyValue, PyValue> = cur;
    const next = WRAPPER_KEYS.map((k) => m.get(k)).find((v) => v instanceof Map);
    if (next === undefined) return null;
    cur = next;
  }
  return null;
}

/** Where a tensor's bytes are: a reader and the key that identifies shared data. */
export interface TensorLocation {
  read(): Promise<Uint8Array>;
  storageKey: string;
}

/**
 * The string-keyed tensors of a state dict as RawTensors; `locate` maps a tensor's storage and
 * byte range inside that storage to a reader. Non-tensor entries are skipped.
 */
export function stateDictTensors(
  sd: Map<PyValue, PyValue>,
  locate: (t: PickledTensor, byteOffset: number, byteLength: number) => TensorLocation,
): Map<string, RawTensor> {
  const tensors = new Map<string, RawTensor>();
  for (const [k, v] of sd) {
    if (typeof k !== "string" || !(v instanceof PickledTensor)) continue;
    const isz = DTYPE_SIZE[v.storage.dtype];
    const byteLength = numel(v.shape) * isz;
    const { read, storageKey } = locate(v, v.storageOffset * isz, byteLength);
    tensors.set(k, {
      name: k,
      dtype: v.storage.dtype,
      shape: v.shape,
      byteLength,
      read,
      storageKey,
    });
  }
  return tensors;
}
