/**
 * One entry point for every checkpoint layout: a Hugging Face style folder, a safetensors file,
 * a torch.save file, or a Hugging Face hub repo (`hf://owner/name[@revision]`, resolved to its
 * cached snapshot folder first). A file's kind comes from its first bytes, whatever its extension
 * says, and anything else is "not a checkpoint" (its bytes are never shown, nor read as a header
 * length).
 *
 * @module
 */

import { join } from "node:path";
import { type ByteSource, FileByteSource } from "./byte_source.ts";
import type { RawTensor } from "./dtypes.ts";
import { CheckpointError } from "./errors.ts";
import { type HfDims, readHfConfig } from "./hf_config.ts";
import { type HubOptions, isHubSpec, resolveHubSnapshot } from "./hub.ts";
import { readPytorch } from "./pytorch.ts";
import { quote, showPath } from "./show.ts";
import { readSafetensors } from "./safetensors.ts";
import { HF_WEIGHT_FILES, readShardIndex } from "./shard_index.ts";

/** Checkpoint layouts. */
export type CheckpointFormat = "safetensors" | "pytorch" | "hf-folder";

/** An open checkpoint: tensors under their names in the file, read on demand until `close()`. */
export interface OpenedCheckpoint {
  tensors: Map<string, RawTensor>;
  format: CheckpointFormat;
  /** Dimensions from the folder's config.json (HF folders only). */
  hfDims?: HfDims;
  /** Closes every file; tensors cannot be read afterwards. */
  close(): void;
}

/** Options of {@link openCheckpoint}; they matter only for `hf://` specs (see hub.ts). */
export type OpenCheckpointOptions = HubOptions;

/**
 * Opens the checkpoint at `path`: a file, a Hugging Face style folder, or `hf://owner/name` (with
 * an optional `@revision`), which is downloaded once into the Hugging Face cache and then read from
 * there (`options.onDownload` reports the transfer).
 */
export async function openCheckpoint(
  path: string,
  options: OpenCheckpointOptions = {},
): Promise<OpenedCheckpoint> {
  if (isHubSpec(path)) return await openHfFolder(await resolveHubSnapshot(path, options));
  let info: Deno.FileInfo;
  try {
    info = await Deno.stat(path);
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) {
      throw new CheckpointError(`checkpoint not found: ${showPath(path)}`);
    }
    throw new CheckpointError(`${showPath(path)}: cannot open (${(e as Error).message})`);
  }
  if (info.isDirectory) return await openHfFolder(path);
  const { tensors, close, format } = await openFile(path);
  return { tensors, format, close };
}

async function openFile(
  path: string,
): Promise<{ tensors: Map<string, RawTensor>; format: "safetensors" | "pytorch"; close(): void }> {
  let src: FileByteSource;
  try {
    src = await FileByteSource.open(path);
  } catch (e) {
    if (e instanceof CheckpointError) throw e;
    if (e instanceof Deno.errors.NotFound) {
      throw new CheckpointError(`checkpoint not found: ${showPath(path)}`);
    }
    throw new CheckpointError(`${showPath(path)}: cannot open (${(e as Error).message})`);
  }
  try {
    const format = await sniff(src);
    if (!format) {
      throw new CheckpointError(
        `${showPath(path)} is not a checkpoint (expected .safetensors, a PyTorch .pt/.bin, ` +
          `or a Hugging Face folder)`,
      );
    }
    const tensors = format === "safetensors"
      ? (await readSafetensors(src)).tensors
      : await readPytorch(src);
    return { tensors, format, close: () => src.close() };
  } catch (e) {
    src.close();
    throw e;
  }
}

/**
 * The format a file's first bytes announce: a zip local header (torch.save >= 1.6), a pickle
 * PROTO opcode (legacy torch.save), or an 8-byte length followed by '{' (safetensors; a UTF-8 BOM
 * there is let through so that the reader can name it).
 */
async function sniff(src: ByteSource): Promise<"safetensors" | "pytorch" | null> {
  const head = await src.read(0, Math.min(12, src.size));
  if (head.length >= 4 && head[0] === 0x50 && head[1] === 0x4b && head[2] === 3 && head[3] === 4) {
    return "pytorch";
  }
  if (head.length >= 2 && head[0] === 0x80 && head[1] >= 2 && head[1] <= 5) return "pytorch";
  if (head.length >= 10 && head[8] === 0x7b) return "safetensors";
  if (head.length >= 12 && head[8] === 0xef && head[9] === 0xbb && head[10] === 0xbf) {
    return "safetensors";
  }
  return null;
}

/** True when something is at `p` (a non-file there is reported when it is opened). */
async function exists(p: string): Promise<boolean> {
  try {
    await Deno.lstat(p);
    return true;
  } catch {
    return false;
  }
}

async function openHfFolder(dir: string): Promise<OpenedCheckpoint> {
  const hfDims = await readHfConfig(join(dir, "config.json"));
  let weights: string | undefined;
  for (const f of HF_WEIGHT_FILES) {
    if (await exists(join(dir, f))) {
      weights = f;
      break;
    }
  }
  if (!weights) {
    throw new CheckpointError(
      `${dir}: folder has no model.safetensors or pytorch_model.bin (or a sharded index)`,
    );
  }
  const files = weights.endsWith(".index.json")
    ? await readShardIndex(join(dir, weights))
    : [weights];
  const tensors = new Map<string, RawTensor>();
  const closers: (() => void)[] = [];
  const close = () => closers.forEach((c) => c());
  try {
    for (const f of files) {
      const opened = await openFile(join(dir, f));
      closers.push(opened.close);
      for (const [name, t] of opened.tensors) {
        if (tensors.has(name)) {
          throw new CheckpointError(`${dir}: tensor ${quote(name)} is in two shards`);
        }
        tensors.set(name, t);
      }
    }
  } catch (e) {
    close();
    throw e;
  }
  return { tensors, format: "hf-folder", hfDims, close };
}
