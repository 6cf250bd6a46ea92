/**
 * A streaming JSON writer for result records, for readers without msgpack, pickle or safetensors
 * (a browser, jq, a spreadsheet). Same shapes as the msgpack layout: a tensor becomes
 * `{"dtype": "float32", "shape": [...], "data": [...]}` with the elements in C order, a per-layer
 * Map an object keyed by the layer index as a string, a min/max pair `{"values", "indices"}`.
 * Non-finite numbers (which JSON cannot hold) are written as null. Tensor data is written in slices
 * straight to the file, so a large tensor never becomes one giant string.
 *
 * @module
 */

import { atomicWrite } from "./atomic.ts";
import { OutputError } from "./errors.ts";
import { ByteSink, type ByteWriter, MemoryWriter } from "./sink.ts";
import { checkDepth } from "./value.ts";
import { checkedTensor, keyPath, mappingEntries, sequenceItems, typeName } from "./value.ts";

/** Elements of a tensor turned into text at a time. */
const SLICE = 1 << 14;

function number(x: number | bigint): string {
  if (typeof x === "bigint") return x.toString();
  return Number.isFinite(x) ? String(x) : "null";
}

/** Serialises values as indented JSON onto a {@link ByteSink}. */
class JsonWriter {
  #sink: ByteSink;
  #enc = new TextEncoder();

  constructor(sink: ByteSink) {
    this.#sink = sink;
  }

  #text(s: string): Promise<void> {
    return this.#sink.write(this.#enc.encode(s));
  }

  async write(v: unknown, path: unknown[], indent: string): Promise<void> {
    const t = checkedTensor(v, path);
    if (t !== null) {
      await this.#text(`{"dtype": ${JSON.stringify(t.dtype)}, "shape": [${t.shape.join(", ")}], `);
      await this.#text(`"data": [`);
      const data = t.data as ArrayLike<number | bigint>;
      for (let i = 0; i < data.length; i += SLICE) {
        const end = Math.min(data.length, i + SLICE);
        const parts: string[] = [];
        for (let j = i; j < end; j++) parts.push(number(data[j]));
        await this.#text((i > 0 ? ", " : "") + parts.join(", "));
      }
      return await this.#text("]}");
    }
    if (v instanceof Uint8Array) return await this.#text(`[${v.join(", ")}]`);
    const inner = indent + "  ";
    const entries = mappingEntries(v);
    if (entries !== null) {
      if (entries.length === 0) return await this.#text("{}");
      await this.#text("{");
      for (let i = 0; i < entries.length; i++) {
        const [k, x] = entries[i];
        if (typeof k !== "string" && typeof k !== "number" && typeof k !== "bigint") {
          throw new OutputError(`${keyPath(path)}: a ${typeName(k)} key cannot be a JSON key`);
        }
        await this.#text(`${i > 0 ? "," : ""}\n${inner}${JSON.stringify(String(k))}: `);
        await this.write(x, [...path, k], inner);
      }
      return await this.#text(`\n${indent}}`);
    }
    const items = sequenceItems(v);
    if (items !== null) {
      const flat = items.every((x) => x === null || typeof x !== "object");
      if (flat) {
        return await this.#text(`[${items.map((x, i) => leaf(x, [...path, i])).join(", ")}]`);
      }
      await this.#text("[");
      for (let i = 0; i < items.length; i++) {
        await this.#text(`${i > 0 ? "," : ""}\n${inner}`);
        await this.write(items[i], [...path, i], inner);
      }
      return await this.#text(`\n${indent}]`);
    }
    await this.#text(leaf(v, path));
  }
}

/** A leaf value as JSON text. */
function leaf(v: unknown, path: unknown[]): string {
  if (v === null || v === undefined) return "null";
  if (typeof v === "number" || typeof v === "bigint") return number(v);
  if (typeof v === "string" || typeof v === "boolean") return JSON.stringify(v);
  throw new OutputError(`${keyPath(path)}: cannot encode a ${typeName(v)} as JSON`);
}

/** Encodes `value` as JSON onto any writer (buffered; flushed before returning). */
export async function dumpJson(w: ByteWriter, value: unknown): Promise<void> {
  checkDepth(value);
  const sink = new ByteSink(w);
  await new JsonWriter(sink).write(value, [], "");
  await sink.write(new TextEncoder().encode("\n"));
  await sink.flush();
}

/** Encodes `value` as JSON in memory; for small values and tests. */
export async function encodeJson(value: unknown): Promise<Uint8Array> {
  const w = new MemoryWriter();
  await dumpJson(w, value);
  return w.bytes();
}

/** Writes `value` as JSON to `path` atomically (temporary file, then rename). */
export async function writeJson(path: string, value: unknown): Promise<void> {
  await atomicWrite(path, (file) => dumpJson(file, value));
}
