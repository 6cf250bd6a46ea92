/**
 * Bits per byte, the paper's measure: the mean negative log2-probability the model gives each byte
 * of a text given everything before it (the first byte, which has no prefix, is not scored), and
 * the same measure for general-purpose compressors (xz -9e, gzip -9) for scale.
 *
 * @module
 */

import type { MambaByteLM } from "../model/model.ts";

/** Bits per byte of one text under a model. */
export interface BitsPerByte {
  /** Bytes scored (L - 1). */
  scored: number;
  /** Sum of -ln p over the scored bytes. */
  nats: number;
  /** nats / ln 2 / scored. */
  bitsPerByte: number;
}

/** Scores `bytes` with the model (chunked, state carried across chunks). */
export async function modelBitsPerByte(
  lm: MambaByteLM,
  bytes: Uint8Array,
  onProgress?: (done: number, total: number) => void,
): Promise<BitsPerByte> {
  const { logProbs } = await lm.logProbs(bytes, onProgress);
  let nats = 0;
  for (let i = 0; i < logProbs.length; i++) nats -= logProbs[i];
  const scored = logProbs.length;
  return { scored, nats, bitsPerByte: scored ? nats / Math.LN2 / scored : NaN };
}

/** Bits per byte of a compressor's output (8 * compressed / original), or null if unavailable. */
export async function compressorBitsPerByte(
  bytes: Uint8Array,
  command: string,
  args: string[],
): Promise<number | null> {
  if (bytes.length === 0) return null;
  try {
    const child = new Deno.Command(command, {
      args,
      stdin: "piped",
      stdout: "piped",
      stderr: "null",
    }).spawn();
    const writer = child.stdin.getWriter();
    const written = writer.write(bytes).then(() => writer.close());
    const out = await child.output();
    await written;
    if (!out.success) return null;
    return (8 * out.stdout.length) / bytes.length;
  } catch {
    return null; // the compressor is not installed
  }
}

/** xz -9e and gzip -9 bits per byte of the same bytes. */
export async function baselineBitsPerByte(
  bytes: Uint8Array,
): Promise<{ xz: number | null; gzip: number | null }> {
  return {
    xz: await compressorBitsPerByte(bytes, "xz", ["-9e", "-c", "-T1"]),
    gzip: await compressorBitsPerByte(bytes, "gzip", ["-9", "-c"]),
  };
}
