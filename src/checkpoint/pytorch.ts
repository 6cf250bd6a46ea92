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
import { DTYPE_SIZE, type RawTensor } from "./dtypes.ts";
import { CheckpointError } from "./errors.ts";
import { readLegacyPytorch } from "./pytorch_legacy.ts";
import { findStateDict, parseStorageId, stateDictTensors } from "./torch_storage.ts";
import { type PyValue, StorageRef, unpickle } from "./unpickle.ts";
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
        : `zip archive has several pickles (${pkls.join(", ")})`,
    );
  }
  const prefix = pkls[0].slice(0, -"data.pkl".length);
  const byteorder = zip.entries.get(`${prefix}byteorder`);
  if (byteorder && byteorder.size <= 16) {
    const order = new TextDecoder().decode(await zip.read(byteorder.name)).trim();
    if (order !== "little") {
      fail(`tensors are stored ${order}-endian; only little-endian is supported`);
    }
  }
  const pklEntry = zip.entries.get(pkls[0])!;
  if (pklEntry.size > MAX_PICKLE_BYTES) fail(`data.pkl of ${pklEntry.size} bytes is too large`);
  const storages = new Map<string, StorageRef>();
  const persistentLoad = (pid: PyValue): PyValue => {
    const { dtype, key, location, numel: count } = parseStorageId(pid, "data.pkl", fail);
    const known = storages.get(key);
    if (known) {
      if (known.dtype !== dtype || known.numel !== count) {
        fail(`storage "${key}" is described inconsistently`);
      }
      return known;
    }
    const entry = zip.entries.get(`${prefix}data/${key}`);
    if (!entry) return fail(`storage "${key}" is missing from the archive (${prefix}data/${key})`);
    const bytes = count * DTYPE_SIZE[dtype];
    if (bytes > entry.size) {
      fail(
        `storage "${key}" claims ${count} ${dtype} elements (${bytes} bytes) ` +
          `but the archive holds ${entry.size} bytes`,
      );
    }
    const ref = new StorageRef(key, dtype, count, location);
    storages.set(key, ref);
    return ref;
  };
  const root = unpickle(await zip.read(pklEntry.name), { label, persistentLoad });
  const sd = findStateDict(root);
  if (!sd) fail("no tensors found (expected a state dict, or one under 'model' / 'state_dict')");
  return stateDictTensors(sd!, (t, offset, length) => {
    const entryName = `${prefix}data/${t.storage.key}`;
    return {
      read: () => zip.read(entryName, offset, length),
      storageKey: `${label}:${entryName}@${offset}`,
    };
  });
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
