/**
 * The forward's chunk length when the configuration says `chunk_size: auto`: on a GPU the largest
 * of 16384, 8192, 4096 and 2048 positions whose workspace takes at most a quarter of the device
 * memory left once the weights are in (one 8192-position chunk ran the 972M forward over 8192 bytes
 * in 57.2 ms against 61.1 ms in chunks of 2048 on an H200, for ~0.9 GB more device memory; chunks
 * of 16384 a 1 MiB prompt 1.5% faster than 8192, for 1.1 GB more: docs/performance.md); on the CPU
 * 2048, where longer chunks only take more memory.
 *
 * @module
 */

import type { ModelDims } from "../config/dims.ts";
import { workspaceBytes } from "./workspace.ts";

/** Chunk lengths a GPU tries, longest first; the last is also the CPU's. */
export const AUTO_CHUNKS = [16384, 8192, 4096, 2048] as const;

/** Where the chunk runs and what the workspace holds. */
export interface ChunkContext {
  /** The backend the model runs on. */
  device: "cpu" | "cuda";
  /** The model's shape. */
  dims: ModelDims;
  /** Device memory free now, in bytes (0: unknown). */
  freeBytes: number;
  /** Logits per position (the workspace holds a chunk's). */
  logitsWidth: number;
  /** Whether the workspace holds bf16 copies of the products' inputs too. */
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
