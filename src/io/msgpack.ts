/**
 * A streaming MessagePack writer for result records. Leaves (strings, numbers, booleans, nil,
 * bigints) are encoded by npm:@msgpack/msgpack; containers are framed here so tensor payloads are
 * written straight from their memory. A tensor becomes the map
 * `{"dtype": "float32", "shape": [...], "data": <bin: little-endian C-order bytes>}`;
 * Map keys keep their type (integer layer indices stay integers).
 *
 * @module
 */

// Versioned inline: a project importing mod.ts by URL does not see our deno.json import map.
// deno-lint-ignore no-import-prefix
import { Encoder } from "npm:@msgpack/msgpack@3.1.3";
import { atomicWrite } from "./atomic.ts";
import { OutputError } from "./errors.ts";
import { ByteSink, type ByteWriter, MemoryWriter } from "./sink.ts";
import { tensorBytes } from "./tensor.ts";
import { checkedTensor, keyPath, mappingEntries, sequenceItems, typeName } from "./value.ts";

/** A header byte plus a 0-, 2- or 4-byte big-endian length, picking the smallest form. */
function header(n: number, fix: number | null, fixMax: number, op16: number, op32: number) {
  if (fix !== null && n <= fixMax) return Uint8Array.of(fix | n);
  if (n <= 0xffff) return Uint8Array.of(op16, n >> 8, n & 0xff);
  if (n > 0xffffffff) return null;
  const h = new Uint8Array(5);
  h[0] = op32;
  new DataView(h.buffer).setUint32(1, n, false);
  return h;
}

/** Serialises values as MessagePack onto a {@link ByteSink}. */
export class MsgpackWriter {
  #sink: ByteSink;
  // Two encoders: with useBigInt64 the library turns large safe integers into floats.
  #leaf = new Encoder();
  #bigint = new Encoder({ useBigInt64: true });

  /** Writes to `sink`; the caller flushes it afterwards. */
  constructor(sink: ByteSink) {
    this.#sink = sink;
  }

  /** Writes one value. */
  async write(v: unknown, path: unknown[] = []): Promise<void> {
    const t = checkedTensor(v, path);
    if (t !== null) {
      await this.#mapHeader(3, path);
      await this.#leafValue("dtype", path);
      await this.#leafValue(t.dtype, path);
      await this.#leafValue("shape", path);
      await this.#arrayHeader(t.shape.length, path);
      for (const d of t.shape) await this.#leafValue(d, path);
      await this.#leafValue("data", path);
      return await this.#bin(tensorBytes(t), path);
    }
    if (v instanceof Uint8Array) return await this.#bin(v, path);
    const entries = mappingEntries(v);
    if (entries !== null) {
      await this.#mapHeader(entries.length, path);
      for (const [k, val] of entries) {
        await this.write(k, path);
        await this.write(val, [...path, k]);
      }
      return;
    }
    const items = sequenceItems(v);
    if (items !== null) {
      await this.#arrayHeader(items.length, path);
      for (let i = 0; i < items.length; i++) await this.write(items[i], [...path, i]);
      return;
    }
    if (typeof v === "bigint" && (v < -(2n ** 63n) || v >= 2n ** 64n)) {
      // The encoder would silently wrap it modulo 2^64.
      throw new OutputError(`${keyPath(path)}: integer ${v} does not fit msgpack's 64 bits`);
    }
    if (v !== null && typeof v === "object") {
      throw new OutputError(`${keyPath(path)}: cannot encode a ${typeName(v)} as msgpack`);
    }
    await this.#leafValue(v, path);
  }

  async #leafValue(v: unknown, path: unknown[]): Promise<void> {
    try {
      // encodeSharedRef returns a view of the encoder's buffer; the sink copies it at once.
      const enc = typeof v === "bigint" ? this.#bigint : this.#leaf;
      await this.#sink.write(enc.encodeSharedRef(v));
    } catch (err) {
      const why = err instanceof Error ? err.message : String(err);
      throw new OutputError(`${keyPath(path)}: cannot encode as msgpack: ${why}`, { cause: err });
    }
  }

  async #mapHeader(n: number, path: unknown[]): Promise<void> {
    await this.#sink.write(this.#checked(header(n, 0x80, 15, 0xde, 0xdf), "map", n, path));
  }

  async #arrayHeader(n: number, path: unknown[]): Promise<void> {
    await this.#sink.write(this.#checked(header(n, 0x90, 15, 0xdc, 0xdd), "array", n, path));
  }

  async #bin(p: Uint8Array, path: unknown[]): Promise<void> {
    const h = header(p.length, null, 0, 0xc5, 0xc6);
    // bin8 for short payloads keeps the output identical to the library's own encoding.
    const head = p.length < 256
      ? Uint8Array.of(0xc4, p.length)
      : this.#checked(h, "bin", p.length, path);
    await this.#sink.write(head);
    await this.#sink.write(p);
  }

  #checked(h: Uint8Array | null, what: string, n: number, path: unknown[]): Uint8Array {
    if (h === null) {
      throw new OutputError(
        `${keyPath(path)}: ${what} of ${n} bytes/items exceeds msgpack's 4 GiB limit; ` +
          `use .pkl or .safetensors`,
      );
    }
    return h;
  }
}

/** Encodes `value` as MessagePack onto any writer (buffered; flushed before returning). */
export async function dumpMsgpack(w: ByteWriter, value: unknown): Promise<void> {
  const sink = new ByteSink(w);
  await new MsgpackWriter(sink).write(value);
  await sink.flush();
}

/** Encodes `value` as MessagePack in memory; for small values and tests. */
export async function encodeMsgpack(value: unknown): Promise<Uint8Array> {
  const w = new MemoryWriter();
  await dumpMsgpack(w, value);
  return w.bytes();
}

/** Writes `value` as MessagePack to `path` atomically (temporary file, then rename). */
export async function writeMsgpack(path: string, value: unknown): Promise<void> {
  await atomicWrite(path, (file) => dumpMsgpack(file, value));
}
