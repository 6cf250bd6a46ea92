/**
 * PyTorch's legacy (pre-1.6, non-zip) torch.save format, still written with
 * `_use_new_zipfile_serialization=False` and inside every pickled tensor: five pickles in a row
 * (the magic number 0x1950a86a20f9469cfc6c, the protocol version 1001, sys_info, the object with
 * storages as persistent ids `('storage', torch.<X>Storage, key, location, numel, view_metadata)`,
 * the list of storage keys), then for each listed key an int64 element count and the storage's
 * raw little-endian bytes.
 *
 * The pickles are read from a window at the start of the file (grown while a pickle runs past
 * it) by the same restricted unpickler as the zip layout; the storages are found by walking their
 * 8-byte headers and read on demand. Every count and offset is checked against the file size.
 *
 * @module
 */

import type { ByteSource } from "./byte_source.ts";
import { DTYPE_SIZE, type RawTensor } from "./dtypes.ts";
import { CheckpointError } from "./errors.ts";
import { quote } from "./show.ts";
import { findStateDict, parseStorageId, stateDictTensors } from "./torch_storage.ts";
import {
  type PyValue,
  StorageRef,
  TruncatedPickleError,
  unpickleAt,
  type UnpickleOptions,
} from "./unpickle.ts";

/** torch's MAGIC_NUMBER, the first pickle of a legacy file. */
export const LEGACY_MAGIC = 0x1950a86a20f9469cfc6cn;
/** torch's PROTOCOL_VERSION, the second pickle. */
export const LEGACY_PROTOCOL_VERSION = 1001;

/** First read of the pickles; a state dict's pickles are kilobytes to a few megabytes. */
const INITIAL_WINDOW = 1 << 20;
/** Largest run of pickles accepted (the zip layout's data.pkl limit). */
const MAX_WINDOW = 256 << 20;

/** The one line for a file that is no PyTorch checkpoint at all. */
export function notPytorchMessage(label: string): string {
  return `${label} is not a PyTorch checkpoint (neither a torch.save zip nor the legacy format)`;
}

function rejectPersistent(): never {
  throw new CheckpointError("persistent id outside the object pickle");
}

/** A storage the object pickle refers to; views point into a root storage. */
interface StorageEntry {
  ref: StorageRef;
  /** The root storage's key (its own key for a root). */
  root: string;
  /** Element offset inside the root. */
  offset: number;
}

/** What the pickles say: the object, its storages, the listed keys and where the data begins. */
interface LegacyLayout {
  root: PyValue;
  storages: Map<string, StorageEntry>;
  keys: string[];
  dataStart: number;
}

/** Parses the five pickles in `head`; throws TruncatedPickleError when they run past it. */
function parsePickles(head: Uint8Array, label: string): LegacyLayout {
  const fail = (msg: string): never => {
    throw new CheckpointError(`${label}: ${msg}`);
  };
  const opts: UnpickleOptions = { label, persistentLoad: rejectPersistent };
  let pos = 0;
  const next = (o: UnpickleOptions = opts): PyValue => {
    const r = unpickleAt(head, pos, o);
    pos = r.end;
    return r.value;
  };
  try {
    if (next() !== LEGACY_MAGIC) throw new Error("no magic");
  } catch {
    throw new CheckpointError(notPytorchMessage(label));
  }
  const version = next();
  if (version !== LEGACY_PROTOCOL_VERSION) {
    fail(
      typeof version === "number"
        ? `legacy PyTorch file of protocol version ${version}; only ${LEGACY_PROTOCOL_VERSION} exists`
        : "corrupt legacy PyTorch file: invalid protocol version",
    );
  }
  const sysInfo = next();
  if (sysInfo instanceof Map && sysInfo.get("little_endian") === false) {
    fail("tensors are stored big-endian; only little-endian is supported");
  }
  const storages = new Map<string, StorageEntry>();
  const remember = (key: string, e: StorageEntry): StorageRef => {
    const known = storages.get(key);
    if (!known) {
      storages.set(key, e);
      return e.ref;
    }
    const a = known.ref, b = e.ref;
    if (
      a.dtype !== b.dtype || a.numel !== b.numel || known.root !== e.root ||
      known.offset !== e.offset
    ) {
      fail(`storage ${quote(key)} is described inconsistently`);
    }
    return a;
  };
  const persistentLoad = (pid: PyValue): PyValue => {
    const id = parseStorageId(pid, "the pickle", fail);
    const rootRef = new StorageRef(id.key, id.dtype, id.numel, id.location);
    const root = remember(id.key, { ref: rootRef, root: id.key, offset: 0 });
    if (!id.view) return root;
    if (id.view.key === id.key) fail(`storage ${quote(id.key)} is a view of itself`);
    const v = new StorageRef(id.view.key, id.dtype, id.view.numel, id.location);
    return remember(id.view.key, { ref: v, root: id.key, offset: id.view.offset });
  };
  const root = next({ label, persistentLoad });
  const keys = next();
  if (!Array.isArray(keys) || !keys.every((k) => typeof k === "string")) {
    fail("corrupt legacy PyTorch file: the storage key list is not a list of strings");
  }
  return { root, storages, keys: keys as string[], dataStart: pos };
}

/** Reads the pickles from a window at the start of `src`, growing it while they run past it. */
async function readLayout(src: ByteSource): Promise<LegacyLayout> {
  const limit = Math.min(src.size, MAX_WINDOW);
  let window = Math.min(limit, INITIAL_WINDOW);
  for (;;) {
    const head = await src.read(0, window);
    try {
      return parsePickles(head, src.label);
    } catch (e) {
      if (!(e instanceof TruncatedPickleError) || window === src.size) throw e;
      if (window === limit) {
        throw new CheckpointError(
          `${src.label}: the pickles of this legacy PyTorch file exceed ${MAX_WINDOW} bytes`,
        );
      }
      window = Math.min(limit, window * 4);
    }
  }
}

/**
 * Reads the tensors of a legacy torch.save file; throws the "not a PyTorch checkpoint" line when
 * `src` does not start with the legacy magic number.
 */
export async function readLegacyPytorch(src: ByteSource): Promise<Map<string, RawTensor>> {
  const label = src.label;
  const fail = (msg: string): never => {
    throw new CheckpointError(`${label}: ${msg}`);
  };
  const { root, storages, keys, dataStart } = await readLayout(src);
  // Walk the storage headers: int64 element count, then the data.
  const dataAt = new Map<string, number>();
  let offset = dataStart;
  for (const key of keys) {
    if (dataAt.has(key)) fail(`storage ${quote(key)} is listed twice`);
    const e = storages.get(key);
    if (!e || e.root !== key) fail(`storage ${quote(key)} is listed but no tensor refers to it`);
    const ref = e!.ref;
    if (offset + 8 > src.size) {
      fail(
        `storage ${quote(key)}: its header at byte ${offset} is past the end of the file ` +
          `(${src.size} bytes); the file is truncated`,
      );
    }
    const head = await src.read(offset, 8);
    const count = new DataView(head.buffer, head.byteOffset, 8).getBigInt64(0, true);
    if (count !== BigInt(ref.numel)) {
      fail(`storage ${quote(key)} holds ${count} elements but the pickle declares ${ref.numel}`);
    }
    const bytes = ref.numel * DTYPE_SIZE[ref.dtype];
    if (offset + 8 + bytes > src.size) {
      fail(
        `storage ${quote(key)} needs ${bytes} bytes at byte ${offset + 8} but the file has ` +
          `${src.size} bytes; the file is truncated`,
      );
    }
    dataAt.set(key, offset + 8);
    offset += 8 + bytes;
  }
  for (const [key, e] of storages) {
    if (e.root === key && !dataAt.has(key)) {
      fail(`storage ${quote(key)} is not in the file's storage list`);
    }
  }
  const sd = findStateDict(root);
  if (!sd) fail("no tensors found (expected a state dict, or one under 'model' / 'state_dict')");
  return stateDictTensors(sd!, (t, byteOffset, byteLength) => {
    const e = storages.get(t.storage.key)!;
    const at = dataAt.get(e.root)! + e.offset * DTYPE_SIZE[t.storage.dtype] + byteOffset;
    return { read: () => src.read(at, byteLength), storageKey: `${label}@${at}` };
  });
}
