/**
 * writeOutputs: saves a result record in the format its file extension names.
 *
 * @module
 */

import { OutputError } from "./errors.ts";
import { writeMsgpack } from "./msgpack.ts";
import { writePickle } from "./pickle.ts";
import { writeSafetensorsRecord } from "./safetensors.ts";
import { checkDepth } from "./value.ts";

type Writer = (path: string, record: Record<string, unknown>) => Promise<void>;

const WRITERS: Record<string, Writer> = {
  ".msgpack": writeMsgpack,
  ".pkl": writePickle,
  ".pickle": writePickle,
  ".safetensors": writeSafetensorsRecord,
};

/** File extensions {@link writeOutputs} accepts. */
export const OUTPUT_EXTENSIONS: readonly string[] = Object.keys(WRITERS);

function extensionOf(path: string): string {
  const base = path.slice(path.lastIndexOf("/") + 1);
  const dot = base.lastIndexOf(".");
  return dot <= 0 ? "" : base.slice(dot).toLowerCase();
}

/**
 * Writes `record` to `path` as .msgpack, .pkl/.pickle or .safetensors, chosen by extension.
 * Parent directories are created; the file appears whole or not at all.
 *
 * @example
 * ```ts ignore
 * import { float32, writeOutputs } from "./mod.ts";
 * await writeOutputs("artefacts/out.pkl", {
 *   prompt: "hi",
 *   delta: new Map([[0, float32([2, 2], new Float32Array(4))]]),
 * });
 * ```
 */
export async function writeOutputs(path: string, record: Record<string, unknown>): Promise<void> {
  const writer = WRITERS[extensionOf(path)];
  if (writer === undefined) {
    throw new OutputError(
      `unsupported output extension for ${path}; use one of ${OUTPUT_EXTENSIONS.join(", ")}`,
    );
  }
  checkDepth(record);
  await writer(path, record);
}
