/**
 * PyTorch checkpoints written by torch.save: the zip layout (torch >= 1.6), a zip holding
 * `<prefix>/data.pkl` (the pickled object, with tensors as persistent ids) and `<prefix>/data/<key>`
 * (raw storages), and the legacy layout (src/checkpoint/pytorch_legacy.ts), tried for any file that
 * is not a zip. Both pickles are read by the same restricted unpickler; tensors stay in the file
 * until read.
 *
 * @module
 */

import { type ByteSource, FileByteSource } from "./byte_source.ts";
import { DTYPE_SIZE, numel, type RawTensor } from "./dtypes.ts";
import { CheckpointError } from "./errors.ts";
import { MAX_TENSORS } from "./limits.ts";
import { readLegacyPytorch } from "./pytorch_legacy.ts";
import { quote } from "./show.ts";
import { findStateDict, parseStorageId, stateDictTensors } from "./torch_storage.ts";
import { PickledTensor, type PyValue, StorageRef, unpickle } from "./unpickle.ts";
import { ZipArchive } from "./zip.ts";

/** Largest data.pkl accepted: a state dict's pickle is kilobytes to a few megabytes. */
const MAX_PICKLE_BYTES = 256 << 20;

/** Reads the tensors of a torch.save file (zip or legacy layout) from `src`. */
export async function readPytorch(src: ByteSource): Promise<Map<string, RawTensor>> {
  const magic = await src.read(0, Math.min(4, src.size));
  if (magic.length === 4 && magic[0] === 0x50 && magic[1] === 0x4b) return await readZip(src);
  return await readLegacyPytorch(src);
}

async function readZip(src: ByteSource): Promise<Map<string, RawTensor>> {
  const label = src.label;
  const fail = (msg: string): never => {
    throw new CheckpointError(`${label}: ${msg}`);
  };
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
    const { dtype, key, location, numel: count } = parseStorageId(pid, "data.pkl", fail);
    const shown = quote(key);
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
    const ref = new StorageRef(key, dtype, count, location);
    storages.set(key, ref);
    return ref;
  };
  const pickle = await zip.read(pklEntry.name, 0, undefined, { keep: false });
  const root = unpickle(pickle, { label, persistentLoad });
  const sd = findStateDict(root);
  if (!sd) fail("no tensors found (expected a state dict, or one under 'model' / 'state_dict')");
  const tensors = stateDictTensors(sd!, (t, offset, length) => {
    const entryName = `${prefix}data/${t.storage.key}`;
    return {
      read: () => zip.read(entryName, offset, length),
      storageKey: `${label}:${entryName}@${offset}`,
    };
  });
  if (tensors.size > MAX_TENSORS) {
    fail(`state dict has ${tensors.size} tensors; a checkpoint has at most ${MAX_TENSORS}`);
  }
  // Bytes of each storage that its tensors use: a compressed entry is inflated whole, so it may
  // hold no more than that (else a small file could make every load inflate a large entry).
  const used = new Map<string, number>();
  for (const [k, v] of sd!) {
    if (typeof k !== "string" || !(v instanceof PickledTensor)) continue;
    const isz = DTYPE_SIZE[v.storage.dtype];
    const end = (v.storageOffset + numel(v.shape)) * isz;
    const entryName = `${prefix}data/${v.storage.key}`;
    if (numel(v.shape) > 0) used.set(entryName, Math.max(used.get(entryName) ?? 0, end));
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
