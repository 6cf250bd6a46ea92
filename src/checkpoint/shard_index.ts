/**
 * The shard list of a sharded Hugging Face checkpoint (`model.safetensors.index.json`,
 * `pytorch_model.bin.index.json`): the distinct files its `weight_map` names, each checked to be a
 * plain file name in the same folder (an index must not point outside it).
 *
 * @module
 */

import { basename } from "node:path";
import { readTextFileLimited } from "../io/read_limited.ts";
import { CheckpointError } from "./errors.ts";
import { JsonSyntaxError, parseJsonStrict } from "./json.ts";
import { MAX_HF_INDEX_BYTES } from "./limits.ts";
import { hasControl, kindOf, quote } from "./show.ts";

/** The weight files of a Hugging Face folder, in the order they are looked for. */
export const HF_WEIGHT_FILES = [
  "model.safetensors.index.json",
  "model.safetensors",
  "pytorch_model.bin.index.json",
  "pytorch_model.bin",
] as const;

/** The distinct shard files of an index's JSON text (`label` names it in errors). */
export function parseShardIndex(text: string, label: string): string[] {
  let index: unknown;
  try {
    index = parseJsonStrict(text);
  } catch (e) {
    if (!(e instanceof JsonSyntaxError)) throw e;
    throw new CheckpointError(`${label}: invalid index (${e.message})`);
  }
  const map = (index as { weight_map?: unknown })?.weight_map;
  if (typeof map !== "object" || map === null) {
    throw new CheckpointError(`${label}: index has no weight_map`);
  }
  const files = [...new Set(Object.values(map as Record<string, unknown>))];
  for (const f of files) {
    if (
      typeof f !== "string" || f !== basename(f) || f === "" || f === "." || f === ".." ||
      hasControl(f)
    ) {
      throw new CheckpointError(
        `${label}: shard name ${
          typeof f === "string" ? quote(f) : kindOf(f)
        } is not a file in the folder`,
      );
    }
  }
  return files as string[];
}

/** Reads the index at `path` and returns its shard files. */
export async function readShardIndex(path: string): Promise<string[]> {
  const text = await readTextFileLimited(path, MAX_HF_INDEX_BYTES, "shard index", {
    makeError: (message) => new CheckpointError(message),
  });
  return parseShardIndex(text, path);
}
