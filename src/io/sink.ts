/**
 * ByteSink: a buffered byte writer over a file, so serialisers can emit many small pieces cheaply
 * and hand multi-gigabyte tensor payloads straight to the file without copying them.
 *
 * @module
 */

/** Anything bytes can be written to, e.g. a `Deno.FsFile`. */
export interface ByteWriter {
  /** Writes some prefix of `p`, resolving to the number of bytes written. */
  write(p: Uint8Array): Promise<number>;
}

const BUFFER_SIZE = 1 << 20;
/** Large payloads go to the file in slices of this size (some platforms cap one write). */
const MAX_WRITE = 1 << 30;

async function writeAll(w: ByteWriter, p: Uint8Array): Promise<void> {
  let off = 0;
  while (off < p.length) {
    const end = Math.min(p.length, off + MAX_WRITE);
    off += await w.write(p.subarray(off, end));
  }
}

/** A buffered writer; call {@link ByteSink.flush} before closing the file. */
export class ByteSink {
  #w: ByteWriter;
  #buf = new Uint8Array(BUFFER_SIZE);
  #len = 0;
  #total = 0;

  /** Wraps a writer. */
  constructor(w: ByteWriter) {
    this.#w = w;
  }

  /** Bytes accepted so far (written or buffered). */
  get bytesWritten(): number {
    return this.#total;
  }

  /** Appends `p`; small pieces are buffered, large ones written through without a copy. */
  async write(p: Uint8Array): Promise<void> {
    this.#total += p.length;
    if (p.length <= this.#buf.length - this.#len) {
      this.#buf.set(p, this.#len);
      this.#len += p.length;
      return;
    }
    await this.flush();
    if (p.length < this.#buf.length) {
      this.#buf.set(p, 0);
      this.#len = p.length;
    } else {
      await writeAll(this.#w, p);
    }
  }

  /** Writes out anything buffered. */
  async flush(): Promise<void> {
    if (this.#len === 0) return;
    await writeAll(this.#w, this.#buf.subarray(0, this.#len));
    this.#len = 0;
  }
}

/** A {@link ByteWriter} that collects everything in memory (for small outputs and tests). */
export class MemoryWriter implements ByteWriter {
  #chunks: Uint8Array[] = [];

  /** Stores a copy of `p`. */
  write(p: Uint8Array): Promise<number> {
    this.#chunks.push(p.slice());
    return Promise.resolve(p.length);
  }

  /** Everything written so far, as one array. */
  bytes(): Uint8Array {
    let n = 0;
    for (const c of this.#chunks) n += c.length;
    const out = new Uint8Array(n);
    let off = 0;
    for (const c of this.#chunks) {
      out.set(c, off);
      off += c.length;
    }
    return out;
  }
}
