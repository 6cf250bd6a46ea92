/**
 * PyTorch checkpoints written by torch.save (>= 1.6): a zip holding `<prefix>/data.pkl` (the
 * pickled object, with tensors as persistent ids) and `<prefix>/data/<key>` (raw storages). The
 * pickle is read by the restricted unpickler; tensors stay in the file until read.
 *
 * @module
 */

import { type ByteSource, FileByteSource } from "./byte_source.ts";
import { DTYPE_SIZE, numel, type RawTensor } from "./dtypes.ts";
import { CheckpointError } from "./errors.ts";
import { MAX_TENSORS } from "./limits.ts";
import { quote } from "./show.ts";
import {
  PickledTensor,
  PyGlobal,
  type PyValue,
  StorageRef,
  TORCH_STORAGE_DTYPES,
  unpickle,
} from "./unpickle.ts";
import { ZipArchive } from "./zip.ts";

/** Largest data.pkl accepted: a state dict's pickle is kilobytes to a few megabytes. */
const MAX_PICKLE_BYTES = 256 << 20;
/** Keys under which training scripts nest the state dict. */
const WRAPPER_KEYS = ["model", "state_dict", "model_state_dict", "module"];

/** Reads the tensors of a torch.save zip archive from `src`. */
export async function readPytorch(src: ByteSource): Promise<Map<string, RawTensor>> {
  const label = src.label;
  const fail = (msg: string): never => {
    throw new CheckpointError(`${label}: ${msg}`);
  };
  const magic = await src.read(0, Math.min(4, src.size));
  if (magic[0] !== 0x50 || magic[1] !== 0x4b) {
    if (magic[0] === 0x80) fail("legacy PyTorch format: re-save with torch>=1.6 (zip format)");
    fail("not a PyTorch checkpoint (no zip signature)");
  }
  const zip = await ZipArchive.open(src);
  const pkls = [...zip.entries.keys()].filter((n) => /^([^/]+\/)?data\.pkl$/.test(n));
  if (pkls.length !== 1) {
    fail(
      pkls.length === 0
        ? "zip archive has no data.pkl: not a torch.save checkpoint"
        : `zip archive has several pickles (${pkls.slice(0, 3).map((n) => quote(n)).join(", ")})`,
    );
  }
  const prefix = pkls[0].slice(0, -"data.pkl".length);
  const byteorder = zip.entries.get(`${prefix}byteorder`);
  if (byteorder && byteorder.size <= 16) {
    const order = new TextDecoder().decode(await zip.read(byteorder.name)).trim();
    if (order === "big") fail("tensors are stored big-endian; only little-endian is supported");
    if (order !== "little") fail(`the byteorder record says neither "little" nor "big"`);
  }
  const pklEntry = zip.entries.get(pkls[0])!;
  if (pklEntry.size > MAX_PICKLE_BYTES) fail(`data.pkl of ${pklEntry.size} bytes is too large`);
  const storages = new Map<string, StorageRef>();
  const persistentLoad = (pid: PyValue): PyValue => {
    if (!Array.isArray(pid) || pid.length < 5 || pid[0] !== "storage") {
      return fail("unsupported persistent id in data.pkl (expected a 'storage' tuple)");
    }
    const [, type, key, location, count] = pid;
    const dtype = type instanceof PyGlobal && type.module === "torch"
      ? TORCH_STORAGE_DTYPES[type.name]
      : undefined;
    if (!dtype) return fail("storage of an unsupported type in data.pkl");
    if (typeof key !== "string" || !/^[\w.-]+$/.test(key)) return fail("malformed storage key");
    const shown = quote(key);
    if (typeof count !== "number" || !Number.isSafeInteger(count) || count < 0) {
      return fail(`storage ${shown} has an invalid element count`);
    }
    const known = storages.get(key);
    if (known) {
      if (known.dtype !== dtype || known.numel !== count) {
        fail(`storage ${shown} is described inconsistently`);
      }
      return known;
    }
    const entry = zip.entries.get(`${prefix}data/${key}`);
    if (!entry) {
      return fail(
        `storage ${shown} is missing from the archive (${quote(`${prefix}data/${key}`)})`,
      );
    }
    const bytes = count * DTYPE_SIZE[dtype];
    if (bytes > entry.size) {
      fail(
        `storage ${shown} claims ${count} ${dtype} elements (${bytes} bytes) ` +
          `but the archive holds ${entry.size} bytes`,
      );
    }
    const ref = new StorageRef(key, dtype, count, typeof location === "string" ? location : "");
    storages.set(key, ref);
    return ref;
  };
  const pickle = await zip.read(pklEntry.name, 0, undefined, { keep: false });
  const root = unpickle(pickle, { label, persistentLoad });
  const sd = findStateDict(root);
  if (!sd) fail("no tensors found (expected a state dict, or one under 'model' / 'state_dict')");
  const count = tensorCount(sd!);
  if (count > MAX_TENSORS) {
    fail(`state dict has ${count} tensors; a checkpoint has at most ${MAX_TENSORS}`);
  }
  const tensors = new Map<string, RawTensor>();
  // Bytes of each storage that its tensors use: a compressed entry is inflated whole, so it may
  // hold no more than that (else a small file could make every load inflate a large entry).
  const used = new Map<string, number>();
  for (const [k, v] of sd!) {
    if (typeof k !== "string" || !(v instanceof PickledTensor)) continue; // non-tensor entries
    const isz = DTYPE_SIZE[v.storage.dtype];
    const entryName = `${prefix}data/${v.storage.key}`;
    const offset = v.storageOffset * isz;
    const length = numel(v.shape) * isz;
    if (length > 0) used.set(entryName, Math.max(used.get(entryName) ?? 0, offset + length));
    tensors.set(k, {
      name: k,
      dtype: v.storage.dtype,
      shape: v.shape,
      byteLength: length,
      read: () => zip.read(entryName, offset, length),
      storageKey: `${label}:${entryName}@${offset}`,
    });
  }
  for (const [name, bytes] of used) {
    const e = zip.entries.get(name)!;
    if (e.method !== 0 && e.size > bytes) {
      fail(
        `zip entry ${quote(name)} is compressed and inflates to ${e.size} bytes, but its tensors ` +
          `use ${bytes}; re-save the checkpoint with torch.save (uncompressed)`,
      );
    }
  }
  return tensors;
}

function tensorCount(v: PyValue): number {
  if (!(v instanceof Map)) return 0;
  let n = 0;
  for (const x of v.values()) if (x instanceof PickledTensor) n++;
  return n;
}

/** The state dict itself, or one nested (at most three deep) under a wrapper key. */
function findStateDict(root: PyValue): Map<PyValue, PyValue> | null {
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

/** Opens a torch.save file; the result's `close()` closes the file. */
export async function openPytorch(
  path: string,
): Promise<{ tensors: Map<string, RawTensor>; close(): void }> {
  const src = await FileByteSource.open(path);
  try {
    return { tensors: await readPytorch(src), close: () => src.close() };
  } catch (e) {
    src.close();
    throw e;
  }
}
