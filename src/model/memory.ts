/**
 * Memory a model and a run need, estimated before anything is allocated, so an absurd size is
 * refused with one clear line instead of growing until the machine gives up.
 *
 * @module
 */

import type { ModelDims } from "../config/dims.ts";
import { MambaByteError } from "../errors.ts";

/** Bytes of the model's parameters in backend memory (large matrices in `matrixBytes` each). */
export function weightBytes(
  dims: ModelDims,
  matrixBytes: 2 | 4,
  opts: { vocabRows?: number; untiedHead?: boolean } = {},
): number {
  const { dModel: d, dInner: di, dState: n, dConv: k, dtRank: r, nLayer } = dims;
  const rows = opts.vocabRows ?? dims.vocabSize;
  const matrices = 2 * di * d + (r + 2 * n) * di + di * r + d * di;
  // norm, conv, dt bias, A, D (fp32), plus biases a checkpoint may carry.
  const vectors = 2 * d + di * k + di + di * n + di + 2 * di + d;
  const perLayer = matrices * matrixBytes + vectors * 4 + di * n * 4; // + host copy of A
  const head = rows * d * matrixBytes * (opts.untiedHead ? 2 : 1);
  return nLayer * perLayer + head + 2 * d * 4;
}

/** Bytes of one sequence's recurrent state (conv window and SSM state of every layer). */
export function stateBytes(dims: ModelDims): number {
  return dims.nLayer * dims.dInner * (dims.dState + dims.dConv) * 4;
}

/** Host memory available to this process, in bytes (a generous guess when the OS won't say). */
export function availableHostBytes(): number {
  try {
    const m = Deno.systemMemoryInfo();
    return m.available > 0 ? m.available : m.free;
  } catch {
    return 8 * 2 ** 30;
  }
}

/** A size for messages, rounded: "1.23 GiB", "2.5 MiB", "3 KiB". */
export function approxSize(bytes: number): string {
  if (bytes >= 2 ** 30) return `${(bytes / 2 ** 30).toFixed(2)} GiB`;
  if (bytes >= 2 ** 20) return `${(bytes / 2 ** 20).toFixed(1)} MiB`;
  return `${Math.ceil(bytes / 1024)} KiB`;
}

/**
 * Throws a one-line error when `need` bytes exceed `available` (default: 90% of the host's
 * available memory); `what` names the thing and `hint` says how to shrink it.
 */
export function ensureMemory(
  need: number,
  what: string,
  hint: string,
  available = 0.9 * availableHostBytes(),
  where = "memory",
): void {
  if (need > available) {
    throw new MambaByteError(
      `${what} needs about ${approxSize(need)} of ${where} but only ${
        approxSize(available)
      } is available: ${hint}`,
    );
  }
}
