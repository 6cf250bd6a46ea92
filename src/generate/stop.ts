/**
 * Stop sequences: a generated sample ends right after it produces one of them (the sequence is
 * kept in its output, as Hugging Face's `stop_strings` do), or at `maxNewTokens` bytes. Each sample
 * of a batch ends on its own; decoding ends when every sample has.
 *
 * @module
 */

import { MambaByteError } from "../errors.ts";

/** At most this many stop sequences. */
export const MAX_STOPS = 16;
/** Each stop sequence has 1 to this many bytes. */
export const MAX_STOP_BYTES = 256;

/** Checks stop sequences, throwing one usage-error line (exit 2) when one is out of bounds. */
export function validateStops(stops: readonly Uint8Array[]): Uint8Array[] {
  if (stops.length > MAX_STOPS) {
    throw new MambaByteError(`at most ${MAX_STOPS} stop sequences (got ${stops.length})`, 2);
  }
  for (const s of stops) {
    if (!(s instanceof Uint8Array) || s.length === 0 || s.length > MAX_STOP_BYTES) {
      throw new MambaByteError(`a stop sequence has 1 to ${MAX_STOP_BYTES} bytes`, 2);
    }
  }
  return stops.map((s) => s.slice());
}

/**
 * Decodes a `--stop` argument: its UTF-8 bytes, with the escapes `\n`, `\t`, `\r`, `\\` and
 * `\xHH` (one byte) so that a shell line can name newlines and arbitrary bytes. Throws a message
 * (exit 2) on a malformed escape.
 *
 * @example
 * ```ts
 * import { decodeStopArgument } from "./stop.ts";
 * console.log(decodeStopArgument("\\n\\n")); // Uint8Array [10, 10]
 * ```
 */
export function decodeStopArgument(text: string): Uint8Array {
  const out: number[] = [];
  const enc = new TextEncoder();
  for (let i = 0; i < text.length; i++) {
    const c = text[i];
    if (c !== "\\") {
      // Whole code points (a surrogate pair is one character of UTF-8).
      const cp = text.codePointAt(i)!;
      const ch = String.fromCodePoint(cp);
      out.push(...enc.encode(ch));
      i += ch.length - 1;
      continue;
    }
    const e = text[++i];
    if (e === "n") out.push(10);
    else if (e === "t") out.push(9);
    else if (e === "r") out.push(13);
    else if (e === "\\") out.push(92);
    else if (e === "x" && /^[0-9a-fA-F]{2}$/.test(text.slice(i + 1, i + 3))) {
      out.push(parseInt(text.slice(i + 1, i + 3), 16));
      i += 2;
    } else {
      throw new MambaByteError(`unknown escape '\\${e ?? ""}' (known: \\n \\t \\r \\\\ \\xHH)`, 2);
    }
  }
  return Uint8Array.from(out);
}

/** Watches one sample's bytes for the stop sequences. */
export class StopMatcher {
  readonly #stops: readonly Uint8Array[];
  /** The last bytes seen, as many as the longest stop sequence. */
  readonly #tail: Uint8Array;
  #seen = 0;

  constructor(stops: readonly Uint8Array[]) {
    this.#stops = stops;
    this.#tail = new Uint8Array(Math.max(0, ...stops.map((s) => s.length)));
  }

  /** Adds the next byte; true when the bytes so far end with a stop sequence. */
  push(byte: number): boolean {
    const n = this.#tail.length;
    if (n === 0) return false;
    this.#tail.copyWithin(0, 1);
    this.#tail[n - 1] = byte;
    this.#seen++;
    for (const s of this.#stops) {
      if (s.length > this.#seen) continue;
      let k = 0;
      while (k < s.length && this.#tail[n - s.length + k] === s[k]) k++;
      if (k === s.length) return true;
    }
    return false;
  }
}
