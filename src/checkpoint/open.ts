/**
 * One entry point for every checkpoint layout: a Hugging Face style folder, a safetensors file,
 * a torch.save file, or a Hugging Face hub repo (`hf://owner/name[@revision]`, resolved to its
 * cached snapshot folder first); the kind is chosen from the path, then from the file's first bytes.
 *
 * @module
 */

import { extname, join } from "node:path";
import { FileByteSource } from "./byte_source.ts";
import type { RawTensor } from "./dtypes.ts";
import { CheckpointError } from "./errors.ts";
import { type HfDims, readHfConfig } from "./hf_config.ts";
import { type HubOptions, isHubSpec, resolveHubSnapshot } from "./hub.ts";
import { readPytorch } from "./pytorch.ts";
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

const PYTORCH_EXTS = new Set([".pt", ".bin", ".pth", ".ckpt"]);

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
      throw new CheckpointError(`checkpoint not found: ${path}`);
    }
    throw new CheckpointError(`${path}: cannot open (${(e as Error).message})`);
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
      throw new CheckpointError(`checkpoint not found: ${path}`);
    }
    throw new CheckpointError(`${path}: cannot open (${(e as Error).message})`);
  }
  try {
    const ext = extname(path).toLowerCase();
    let format: "safetensors" | "pytorch";
    if (ext === ".safetensors") format = "safetensors";
    else if (PYTORCH_EXTS.has(ext)) format = "pytorch";
    else {
      const head = await src.read(0, Math.min(4, src.size));
      const zip = head.length === 4 && head[0] === 0x50 && head[1] === 0x4b && head[2] === 3 &&
        head[3] === 4;
      format = zip || head[0] === 0x80 ? "pytorch" : "safetensors";
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

async function exists(p: string): Promise<boolean> {
  try {
    return (await Deno.stat(p)).isFile;
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
          throw new CheckpointError(`${dir}: tensor "${name}" is in two shards`);
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
