/**
 * A read-only zip reader for torch.save archives: finds the end-of-central-directory record in the
 * last 64 KiB, reads the central directory (ZIP64 included, for files over 4 GB), and serves
 * entries by offset. STORED entries (what torch writes) are read in place; DEFLATE entries are
 * inflated with a cap at their declared size. Every offset and size is checked against the file.
 *
 * @module
 */

import { type ByteSource, checkRange } from "./byte_source.ts";
import { CheckpointError } from "./errors.ts";

/** One file inside the archive. */
export interface ZipEntry {
  name: string;
  /** 0 = STORED, 8 = DEFLATE. */
  method: number;
  compressedSize: number;
  /** Uncompressed size. */
  size: number;
  /** Offset of the entry's data in the archive file. */
  dataOffset: number;
}

const SIG_EOCD = 0x06054b50;
const SIG_EOCD64 = 0x06064b50;
const SIG_LOC64 = 0x07064b50;
const SIG_CENTRAL = 0x02014b50;
const SIG_LOCAL = 0x04034b50;
const MAX_CENTRAL_DIR = 64 << 20;
/** Largest DEFLATE entry we inflate; torch never compresses tensor data. */
const MAX_INFLATED = 256 << 20;

/** The central directory of an archive, with reads of its entries. */
export class ZipArchive {
  /** Entries by name. */
  readonly entries: Map<string, ZipEntry>;
  readonly #src: ByteSource;

  private constructor(src: ByteSource, entries: Map<string, ZipEntry>) {
    this.#src = src;
    this.entries = entries;
  }

  /** Reads and validates the central directory of `src`. */
  static async open(src: ByteSource): Promise<ZipArchive> {
    return new ZipArchive(src, await readDirectory(src));
  }

  /** Reads `length` bytes at `offset` of entry `name`'s uncompressed data (default: all). */
  async read(name: string, offset = 0, length?: number): Promise<Uint8Array> {
    const e = this.entries.get(name);
    if (!e) throw new CheckpointError(`${this.#src.label}: zip entry "${name}" not found`);
    const len = length ?? e.size - offset;
    checkRange(`${this.#src.label}: zip entry "${name}"`, e.size, offset, len);
    if (e.method === 0) return await this.#src.read(e.dataOffset + offset, len);
    const all = await inflate(
      await this.#src.read(e.dataOffset, e.compressedSize),
      e,
      this.#src.label,
    );
    return all.slice(offset, offset + len);
  }
}

async function inflate(data: Uint8Array, e: ZipEntry, label: string): Promise<Uint8Array> {
  const fail = (why: string): never => {
    throw new CheckpointError(`${label}: zip entry "${e.name}" ${why}`);
  };
  if (e.size > MAX_INFLATED) fail(`is a ${e.size}-byte compressed entry, too large to inflate`);
  const out = new Uint8Array(e.size);
  let got = 0;
  const reader = new Blob([data as Uint8Array<ArrayBuffer>]).stream()
    .pipeThrough(new DecompressionStream("deflate-raw")).getReader();
  try {
    while (true) {
      const { done, value } = await reader.read();
      if (done) break;
      if (got + value.length > e.size) fail(`inflates to more than its declared ${e.size} bytes`);
      out.set(value, got);
      got += value.length;
    }
  } catch (err) {
    if (err instanceof CheckpointError) throw err;
    fail(`is not valid DEFLATE data (${(err as Error).message})`);
  } finally {
    reader.cancel().catch(() => {});
  }
  if (got !== e.size) fail(`inflates to ${got} bytes, declared ${e.size}`);
  return out;
}

async function readDirectory(src: ByteSource): Promise<Map<string, ZipEntry>> {
  const label = src.label;
  const fail = (why: string): never => {
    throw new CheckpointError(`${label}: corrupt zip archive: ${why}`);
  };
  if (src.size < 22) fail("too small to hold an end-of-central-directory record");
  // The EOCD is 22 bytes followed by a comment of at most 65535 bytes.
  const tailLen = Math.min(src.size, 22 + 0xffff);
  const tailStart = src.size - tailLen;
  const tail = await src.read(tailStart, tailLen);
  const tv = new DataView(tail.buffer);
  let eocd = -1;
  for (let p = tailLen - 22; p >= 0; p--) {
    if (tv.getUint32(p, true) === SIG_EOCD && p + 22 + tv.getUint16(p + 20, true) <= tailLen) {
      eocd = p;
      break;
    }
  }
  if (eocd < 0) fail("no end-of-central-directory record");
  let count = tv.getUint16(eocd + 10, true);
  let cdSize = tv.getUint32(eocd + 12, true);
  let cdOffset = tv.getUint32(eocd + 16, true);
  const eocdAbs = tailStart + eocd;
  if (count === 0xffff || cdSize === 0xffffffff || cdOffset === 0xffffffff) {
    // ZIP64: a 20-byte locator sits right before the EOCD and points at the ZIP64 EOCD record.
    if (eocdAbs < 20) fail("missing ZIP64 locator");
    const loc = new DataView((await src.read(eocdAbs - 20, 20)).buffer);
    if (loc.getUint32(0, true) !== SIG_LOC64) fail("missing ZIP64 locator");
    const rec64 = safeU64(loc, 8, fail);
    checkRange(label, src.size, rec64, 56);
    const r = new DataView((await src.read(rec64, 56)).buffer);
    if (r.getUint32(0, true) !== SIG_EOCD64) fail("bad ZIP64 end-of-central-directory record");
    count = safeU64(r, 32, fail);
    cdSize = safeU64(r, 40, fail);
    cdOffset = safeU64(r, 48, fail);
  }
  if (cdOffset + cdSize > src.size) {
    fail(`central directory [${cdOffset}, +${cdSize}] runs past the end of the file`);
  }
  if (cdSize > MAX_CENTRAL_DIR) fail(`central directory of ${cdSize} bytes is implausibly large`);
  if (count * 46 > cdSize) {
    fail(`${count} entries cannot fit in a ${cdSize}-byte central directory`);
  }
  const cd = await src.read(cdOffset, cdSize);
  const dv = new DataView(cd.buffer);
  const dec = new TextDecoder();
  const entries = new Map<string, ZipEntry>();
  let p = 0;
  for (let i = 0; i < count; i++) {
    if (p + 46 > cdSize || dv.getUint32(p, true) !== SIG_CENTRAL) {
      fail(`central directory entry ${i} is malformed`);
    }
    const flags = dv.getUint16(p + 8, true);
    const method = dv.getUint16(p + 10, true);
    let csize = dv.getUint32(p + 20, true);
    let usize = dv.getUint32(p + 24, true);
    const nameLen = dv.getUint16(p + 28, true);
    const extraLen = dv.getUint16(p + 30, true);
    const commentLen = dv.getUint16(p + 32, true);
    let localOffset = dv.getUint32(p + 42, true);
    const end = p + 46 + nameLen + extraLen + commentLen;
    if (end > cdSize) fail(`central directory entry ${i} runs past the directory`);
    const name = dec.decode(cd.subarray(p + 46, p + 46 + nameLen));
    // ZIP64 extra field (id 1): the 64-bit values of the fields saturated at 0xffffffff, in order.
    let x = p + 46 + nameLen;
    const xEnd = x + extraLen;
    while (x + 4 <= xEnd) {
      const id = dv.getUint16(x, true);
      const sz = dv.getUint16(x + 2, true);
      if (x + 4 + sz > xEnd) fail(`entry "${name}" has a malformed extra field`);
      if (id === 1) {
        let q = x + 4;
        const take = (): number => {
          if (q + 8 > x + 4 + sz) fail(`entry "${name}" has a short ZIP64 extra field`);
          const v = safeU64(dv, q, fail);
          q += 8;
          return v;
        };
        if (usize === 0xffffffff) usize = take();
        if (csize === 0xffffffff) csize = take();
        if (localOffset === 0xffffffff) localOffset = take();
      }
      x += 4 + sz;
    }
    p = end;
    if (flags & 1) fail(`entry "${name}" is encrypted`);
    if (method !== 0 && method !== 8) {
      fail(`entry "${name}" uses unsupported compression ${method}`);
    }
    if (method === 0 && csize !== usize) fail(`stored entry "${name}" has differing sizes`);
    if (entries.has(name)) fail(`duplicate entry "${name}"`);
    entries.set(name, {
      name,
      method,
      compressedSize: csize,
      size: usize,
      dataOffset: localOffset,
    });
  }
  // Resolve each local header: its own name/extra lengths (torch pads the extra field to align data).
  for (const e of entries.values()) {
    const at = e.dataOffset;
    if (at + 30 > src.size) fail(`entry "${e.name}" has a local header past the end of the file`);
    const lh = new DataView((await src.read(at, 30)).buffer);
    if (lh.getUint32(0, true) !== SIG_LOCAL) fail(`entry "${e.name}" has no local header`);
    e.dataOffset = at + 30 + lh.getUint16(26, true) + lh.getUint16(28, true);
    if (e.dataOffset + e.compressedSize > src.size) {
      fail(`entry "${e.name}" (${e.compressedSize} bytes) runs past the end of the file`);
    }
  }
  return entries;
}

function safeU64(dv: DataView, at: number, fail: (why: string) => never): number {
  const v = dv.getBigUint64(at, true);
  if (v > BigInt(Number.MAX_SAFE_INTEGER)) fail(`64-bit field ${v} is out of range`);
  return Number(v);
}
