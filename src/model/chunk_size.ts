/**
 * The forward's chunk length when the configuration says `chunk_size: auto`: on a GPU the largest
 * of 8192, 4096 and 2048 positions whose workspace takes at most a quarter of the device memory
 * left once the weights are in (one 8192-position chunk ran the 972M forward over 8192 bytes in
 * 59.9 ms against 63.4 ms in chunks of 2048 on an H200, for ~0.9 GB of workspace:
 * docs/performance.md); on the CPU 2048, where longer chunks only take more memory.
 *
 * @module
 */

import type { ModelDims } from "../config/dims.ts";
import { workspaceBytes } from "./workspace.ts";

/** Chunk lengths a GPU tries, longest first; the last is also the CPU's. */
export const AUTO_CHUNKS = [8192, 4096, 2048] as const;

/** Where the chunk runs and what the workspace holds. */
export interface ChunkContext {
  device: "cpu" | "cuda";
  dims: ModelDims;
  /** Device memory free now, in bytes (0: unknown). */
  freeBytes: number;
  logitsWidth: number;
  bf16Activations: boolean;
}

/** `setting` when it is a number, else the automatic choice for `ctx`. */
export function resolveChunkSize(setting: number | "auto", ctx: ChunkContext): number {
  if (setting !== "auto") return setting;
  const fallback = AUTO_CHUNKS[AUTO_CHUNKS.length - 1];
  if (ctx.device !== "cuda" || !(ctx.freeBytes > 0)) return fallback;
  for (const rows of AUTO_CHUNKS) {
    const need = workspaceBytes(ctx.dims, rows, ctx.logitsWidth, ctx.bf16Activations);
    if (need <= ctx.freeBytes / 4) return rows;
  }
  return fallback;
}
