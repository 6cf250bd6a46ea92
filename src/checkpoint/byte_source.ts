/**
 * Random-access reads over a file or a buffer, so that a multi-gigabyte checkpoint is never read
 * whole. Every offset and length is checked against the source's size before use, because they
 * usually come from the (untrusted) file itself.
 *
 * @module
 */

import { describeFileKind } from "../io/read_limited.ts";
import { CheckpointError } from "./errors.ts";

/** A sized, randomly readable run of bytes. */
export interface ByteSource {
  /** A name for error messages (the file path). */
  readonly label: string;
  /** Total size in bytes. */
  readonly size: number;
  /** Reads exactly `length` bytes at `offset` into a fresh buffer; throws past the end. */
  read(offset: number, length: number): Promise<Uint8Array>;
  /** Releases the underlying file (idempotent). */
  close(): void;
}

/** Throws a CheckpointError unless `[offset, offset + length)` lies inside `[0, size)`. */
export function checkRange(label: string, size: number, offset: number, length: number): void {
  if (
    !Number.isSafeInteger(offset) || !Number.isSafeInteger(length) || offset < 0 || length < 0 ||
    offset + length > size
  ) {
    throw new CheckpointError(
      `${label}: read of ${length} bytes at offset ${offset} is outside the file (${size} bytes); ` +
        `the file is truncated or corrupt`,
    );
  }
}

function notRegular(path: string, info: Deno.FileInfo): CheckpointError {
  return new CheckpointError(`${path} is ${describeFileKind(info)}, not a regular file`);
}

/** A ByteSource over an open Deno file. Reads are serialised because they share the seek position. */
export class FileByteSource implements ByteSource {
  readonly label: string;
  readonly size: number;
  #file: Deno.FsFile | null;
  #queue: Promise<unknown> = Promise.resolve();

  private constructor(label: string, file: Deno.FsFile, size: number) {
    this.label = label;
    this.#file = file;
    this.size = size;
  }

  /**
   * Opens `path` read-only. The kind of file is checked with stat first: opening a FIFO blocks
   * until a writer appears, and a device never ends.
   */
  static async open(path: string): Promise<FileByteSource> {
    const before = await Deno.stat(path);
    if (!before.isFile) throw notRegular(path, before);
    const file = await Deno.open(path, { read: true });
    try {
      const info = await file.stat();
      if (!info.isFile) throw notRegular(path, info);
      return new FileByteSource(path, file, info.size);
    } catch (e) {
      file.close();
      throw e;
    }
  }

  /** Reads exactly `length` bytes at `offset`. */
  read(offset: number, length: number): Promise<Uint8Array> {
    checkRange(this.label, this.size, offset, length);
    const run = this.#queue.then(() => this.#readNow(offset, length));
    this.#queue = run.catch(() => {});
    return run;
  }

  async #readNow(offset: number, length: number): Promise<Uint8Array> {
    const file = this.#file;
    if (!file) throw new CheckpointError(`${this.label}: read after close`);
    const out = new Uint8Array(length);
    await file.seek(offset, Deno.SeekMode.Start);
    let done = 0;
    while (done < length) {
      const n = await file.read(out.subarray(done));
      if (n === null || n === 0) {
        throw new CheckpointError(`${this.label}: unexpected end of file at ${offset + done}`);
      }
      done += n;
    }
    return out;
  }

  /** Closes the file. */
  close(): void {
    if (this.#file) {
      this.#file.close();
      this.#file = null;
    }
  }
}

/** A ByteSource over bytes in memory (tests, small decompressed entries). */
export class MemoryByteSource implements ByteSource {
  readonly label: string;
  readonly size: number;
  #bytes: Uint8Array;

  /** Wraps `bytes` (not copied). */
  constructor(bytes: Uint8Array, label = "<memory>") {
    this.#bytes = bytes;
    this.size = bytes.length;
    this.label = label;
  }

  /** Returns a copy of the requested range. */
  read(offset: number, length: number): Promise<Uint8Array> {
    try {
      checkRange(this.label, this.size, offset, length);
    } catch (e) {
      return Promise.reject(e);
    }
    return Promise.resolve(this.#bytes.slice(offset, offset + length));
  }

  /** Nothing to release. */
  close(): void {}
}
