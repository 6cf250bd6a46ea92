/**
 * Whole-file reads of small user-supplied files (config.json, index files, prompts, text files)
 * with a size cap: the path is checked with stat before it is opened, so a FIFO, a device or a
 * directory is refused instead of blocking (opening a FIFO waits for a writer) or reading forever
 * (/dev/zero), and a file larger than the cap is refused before any of it is read.
 *
 * @module
 */

import { MambaByteError } from "../errors.ts";

/** Why a limited read failed. */
export type ReadLimitedReason = "missing" | "not-file" | "too-large" | "unreadable";

/** A file that cannot be read under the cap; the message is one line. */
export class InputFileError extends MambaByteError {
  /** What went wrong, for callers that treat a missing file specially. */
  readonly reason: ReadLimitedReason;
  /** Creates the error. */
  constructor(message: string, reason: ReadLimitedReason, options?: ErrorOptions) {
    super(message);
    if (options?.cause !== undefined) this.cause = options.cause;
    this.name = "InputFileError";
    this.reason = reason;
  }
}

/** Options of {@link readFileLimited}. */
export interface ReadLimitedOptions {
  /** Builds the error to throw (default: an {@link InputFileError}). */
  makeError?: (message: string, reason: ReadLimitedReason) => Error;
}

/** "a FIFO", "a directory", ...: what a non-regular file is, for messages. */
export function describeFileKind(info: Deno.FileInfo): string {
  if (info.isDirectory) return "a directory";
  if (info.isFifo) return "a FIFO";
  if (info.isCharDevice) return "a character device";
  if (info.isBlockDevice) return "a block device";
  if (info.isSocket) return "a socket";
  return "not a regular file";
}

/** `n` bytes in the largest whole binary unit (64 MiB, 1 KiB, 100 bytes). */
export function formatBytes(n: number): string {
  for (const [unit, size] of [["GiB", 2 ** 30], ["MiB", 2 ** 20], ["KiB", 2 ** 10]] as const) {
    if (n >= size && n % size === 0) return `${n / size} ${unit}`;
  }
  return `${n} bytes`;
}

function reasonOf(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}

/**
 * Reads the regular file at `path` if it holds at most `maxBytes` bytes. `what` names the file in
 * errors ("prompt file", "config.json"): "<what> not found: <path>", "<what> <path> is a FIFO,
 * not a regular file", "<what> <path> is 73400320 bytes, over the 64 MiB limit", "cannot read
 * <what> <path>: <reason>".
 */
export async function readFileLimited(
  path: string,
  maxBytes: number,
  what: string,
  opts: ReadLimitedOptions = {},
): Promise<Uint8Array> {
  const fail = (message: string, reason: ReadLimitedReason, cause?: unknown): never => {
    if (opts.makeError) throw opts.makeError(message, reason);
    throw new InputFileError(message, reason, { cause });
  };
  let info: Deno.FileInfo;
  try {
    info = await Deno.stat(path);
  } catch (err) {
    if (err instanceof Deno.errors.NotFound) return fail(`${what} not found: ${path}`, "missing");
    return fail(`cannot read ${what} ${path}: ${reasonOf(err)}`, "unreadable", err);
  }
  const tooLarge = (size: number) =>
    fail(
      `${what} ${path} is ${size} bytes, over the ${formatBytes(maxBytes)} limit`,
      "too-large",
    );
  if (!info.isFile) {
    return fail(`${what} ${path} is ${describeFileKind(info)}, not a regular file`, "not-file");
  }
  if (info.size > maxBytes) return tooLarge(info.size);
  let file: Deno.FsFile;
  try {
    file = await Deno.open(path, { read: true });
  } catch (err) {
    return fail(`cannot read ${what} ${path}: ${reasonOf(err)}`, "unreadable", err);
  }
  let now: Deno.FileInfo;
  let buf: Uint8Array;
  let got = 0;
  try {
    // The path may have changed since stat: check the open file again, and never read past the cap.
    now = await file.stat();
    buf = new Uint8Array(now.isFile ? Math.min(now.size, maxBytes) + 1 : 0);
    while (got < buf.length) {
      const n = await file.read(buf.subarray(got));
      if (n === null) break;
      got += n;
    }
  } catch (err) {
    return fail(`cannot read ${what} ${path}: ${reasonOf(err)}`, "unreadable", err);
  } finally {
    file.close();
  }
  if (!now.isFile) {
    return fail(`${what} ${path} is ${describeFileKind(now)}, not a regular file`, "not-file");
  }
  if (got > maxBytes) return tooLarge(Math.max(now.size, got));
  return buf.subarray(0, got);
}

/**
 * {@link readFileLimited}, decoded as UTF-8 (invalid sequences become U+FFFD; a leading BOM is
 * kept, so callers that must refuse one can).
 */
export async function readTextFileLimited(
  path: string,
  maxBytes: number,
  what: string,
  opts: ReadLimitedOptions = {},
): Promise<string> {
  const bytes = await readFileLimited(path, maxBytes, what, opts);
  return new TextDecoder("utf-8", { ignoreBOM: true }).decode(bytes);
}
