/**
 * A read-only zip reader for torch.save archives: finds the end-of-central-directory record in the
 * last 64 KiB, reads the central directory (ZIP64 included, for files over 4 GB), and serves
 * entries by offset. STORED entries (what torch writes) are read in place; a DEFLATE entry is
 * inflated once (tensors that are views of one storage share the result), to no more than its
 * declared size, and the archive's inflated total is capped. Every offset and size is checked
 * against the file, and each local header must name the entry the central directory names.
 *
 * @module
 */

import { formatBytes } from "../io/read_limited.ts";
import { type ByteSource, checkRange } from "./byte_source.ts";
import { CheckpointError } from "./errors.ts";
import { MAX_CENTRAL_DIR_BYTES, MAX_INFLATED_BYTES, MAX_ZIP_ENTRIES } from "./limits.ts";
import { quote } from "./show.ts";

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
/** DEFLATE's largest expansion: 258 bytes per 2-bit code, ~1032:1 (plus block overhead). */
const MAX_DEFLATE_RATIO = 1032;

/** Options of {@link ZipArchive.open}. */
export interface ZipOptions {
  /** Most bytes inflated from the archive in total (default {@link MAX_INFLATED_BYTES}). */
  maxInflatedBytes?: number;
}

/** The central directory of an archive, with reads of its entries. */
export class ZipArchive {
  /** Entries by name. */
  readonly entries: Map<string, ZipEntry>;
  readonly #src: ByteSource;
  readonly #maxInflated: number;
  #inflatedTotal = 0;
  /** Inflated DEFLATE entries, each inflated once and kept for the archive's other reads. */
  readonly #inflated = new Map<string, Promise<Uint8Array>>();

  private constructor(src: ByteSource, entries: Map<string, ZipEntry>, maxInflated: number) {
    this.#src = src;
    this.entries = entries;
    this.#maxInflated = maxInflated;
  }

  /** Reads and validates the central directory of `src`. */
  static async open(src: ByteSource, opts: ZipOptions = {}): Promise<ZipArchive> {
    const max = opts.maxInflatedBytes ?? MAX_INFLATED_BYTES;
    return new ZipArchive(src, await readDirectory(src), max);
  }

  /**
   * Reads `length` bytes at `offset` of entry `name`'s uncompressed data (default: all). A DEFLATE
   * entry is inflated on its first read and kept, unless `keep` is false (a one-off read such as
   * the pickle) and nothing kept it before.
   */
  async read(
    name: string,
    offset = 0,
    length?: number,
    opts: { keep?: boolean } = {},
  ): Promise<Uint8Array> {
    const label = this.#src.label;
    const e = this.entries.get(name);
    if (!e) throw new CheckpointError(`${label}: zip entry ${quote(name)} not found`);
    const len = length ?? e.size - offset;
    checkRange(`${label}: zip entry ${quote(name)}`, e.size, offset, len);
    if (len === 0) return new Uint8Array(0);
    if (e.method === 0) return await this.#src.read(e.dataOffset + offset, len);
    let all = this.#inflated.get(name);
    if (!all) {
      if (this.#inflatedTotal + e.size > this.#maxInflated) {
        throw new CheckpointError(
          `${label}: inflating ${quote(name)} would exceed the limit of ` +
            `${formatBytes(this.#maxInflated)} of decompressed data per archive`,
        );
      }
      this.#inflatedTotal += e.size;
      all = this.#src.read(e.dataOffset, e.compressedSize).then((d) => inflate(d, e, label));
      if (opts.keep !== false) this.#inflated.set(name, all);
    }
    return (await all).slice(offset, offset + len);
  }
}

async function inflate(data: Uint8Array, e: ZipEntry, label: string): Promise<Uint8Array> {
  const fail = (why: string): never => {
    throw new CheckpointError(`${label}: zip entry ${quote(e.name)} ${why}`);
  };
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
  if (count > MAX_ZIP_ENTRIES) {
    throw new CheckpointError(
      `${label}: zip archive has ${count} entries; a checkpoint has at most ${MAX_ZIP_ENTRIES}`,
    );
  }
  if (cdOffset + cdSize > src.size) {
    fail(`central directory [${cdOffset}, +${cdSize}] runs past the end of the file`);
  }
  if (cdSize > MAX_CENTRAL_DIR_BYTES) {
    fail(
      `central directory of ${cdSize} bytes is larger than a checkpoint's can be ` +
        `(${formatBytes(MAX_CENTRAL_DIR_BYTES)})`,
    );
  }
  if (count * 46 > cdSize) {
    fail(`${count} entries cannot fit in a ${cdSize}-byte central directory`);
  }
  const cd = await src.read(cdOffset, cdSize);
  const dv = new DataView(cd.buffer);
  const dec = new TextDecoder();
  const entries = new Map<string, ZipEntry>();
  const rawNames = new Map<ZipEntry, Uint8Array>();
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
    const rawName = cd.subarray(p + 46, p + 46 + nameLen);
    const name = dec.decode(rawName);
    const shown = quote(name);
    // ZIP64 extra field (id 1): the 64-bit values of the fields saturated at 0xffffffff, in order.
    let x = p + 46 + nameLen;
    const xEnd = x + extraLen;
    while (x + 4 <= xEnd) {
      const id = dv.getUint16(x, true);
      const sz = dv.getUint16(x + 2, true);
      if (x + 4 + sz > xEnd) fail(`entry ${shown} has a malformed extra field`);
      if (id === 1) {
        let q = x + 4;
        const take = (): number => {
          if (q + 8 > x + 4 + sz) fail(`entry ${shown} has a short ZIP64 extra field`);
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
    if (flags & 1) fail(`entry ${shown} is encrypted`);
    if (method !== 0 && method !== 8) {
      fail(`entry ${shown} uses unsupported compression ${method}`);
    }
    if (method === 0 && csize !== usize) fail(`stored entry ${shown} has differing sizes`);
    // A bomb is refused before any inflation: no DEFLATE stream expands by more than ~1032x.
    if (method === 8 && usize > csize * MAX_DEFLATE_RATIO + 1024) {
      fail(`entry ${shown} cannot inflate to its declared ${usize} bytes from ${csize}`);
    }
    if (entries.has(name)) fail(`duplicate entry ${shown}`);
    const entry = { name, method, compressedSize: csize, size: usize, dataOffset: localOffset };
    entries.set(name, entry);
    rawNames.set(entry, rawName);
  }
  // Resolve each local header: its own name/extra lengths (torch pads the extra field to align
  // data). Its name and method must be the central directory's, or two zip readers would disagree
  // about which bytes an entry holds.
  for (const e of entries.values()) {
    const at = e.dataOffset;
    const shown = quote(e.name);
    const want = rawNames.get(e)!;
    if (at + 30 + want.length > src.size) {
      fail(`entry ${shown} has a local header past the end of the file`);
    }
    const head = await src.read(at, 30 + want.length);
    const lh = new DataView(head.buffer);
    if (lh.getUint32(0, true) !== SIG_LOCAL) fail(`entry ${shown} has no local header`);
    const localName = head.subarray(30, 30 + lh.getUint16(26, true));
    if (localName.length !== want.length || !localName.every((b, i) => b === want[i])) {
      fail(`the local header of entry ${shown} names ${quote(dec.decode(localName))}`);
    }
    if (lh.getUint16(8, true) !== e.method) {
      fail(`the local header of entry ${shown} gives another compression method`);
    }
    e.dataOffset = at + 30 + lh.getUint16(26, true) + lh.getUint16(28, true);
    if (e.dataOffset + e.compressedSize > src.size) {
      fail(`entry ${shown} (${e.compressedSize} bytes) runs past the end of the file`);
    }
  }
  return entries;
}

function safeU64(dv: DataView, at: number, fail: (why: string) => never): number {
  const v = dv.getBigUint64(at, true);
  if (v > BigInt(Number.MAX_SAFE_INTEGER)) fail(`64-bit field ${v} is out of range`);
  return Number(v);
}
