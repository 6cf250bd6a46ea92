/**
 * safetensors: an 8-byte little-endian header length, a JSON header, then the tensors' bytes.
 * The reader validates every field of the (untrusted) header; the writer is atomic.
 *
 * @module
 */

import { type ByteSource, FileByteSource } from "./byte_source.ts";
import { DTYPE_SIZE, isDType, numel, type RawTensor, type SafetensorsDType } from "./dtypes.ts";
import { CheckpointError } from "./errors.ts";
import { JsonSyntaxError, parseJsonStrict } from "./json.ts";
import { MAX_SAFETENSORS_HEADER_BYTES, MAX_TENSORS } from "./limits.ts";
import { kindOf, quote, showInts } from "./show.ts";
import { atomicWrite } from "../io/atomic.ts";
import { formatBytes } from "../io/read_limited.ts";

/** Largest header accepted: {@link MAX_SAFETENSORS_HEADER_BYTES} (see limits.ts for why). */
export const MAX_HEADER_BYTES = MAX_SAFETENSORS_HEADER_BYTES;

/** The parsed header of a safetensors file, with lazy access to each tensor. */
export interface SafetensorsContents {
  /** Tensors in file order. */
  tensors: Map<string, RawTensor>;
  /** The `__metadata__` string map ({} when absent). */
  metadata: Record<string, string>;
}

/** A tensor to write. */
export interface SafetensorsEntry {
  name: string;
  dtype: SafetensorsDType;
  shape: number[];
  /** Little-endian, row-major; exactly prod(shape) * itemsize bytes. */
  data: Uint8Array;
}

interface HeaderEntry {
  name: string;
  dtype: SafetensorsDType;
  shape: number[];
  begin: number;
  end: number;
}

/** Parses and validates the header of a safetensors source; tensors are read on demand. */
export async function readSafetensors(src: ByteSource): Promise<SafetensorsContents> {
  const label = src.label;
  const fail = (msg: string): never => {
    throw new CheckpointError(`${label}: ${msg}`);
  };
  if (src.size < 8) fail(`truncated safetensors file (${src.size} bytes, no header length)`);
  const lenBytes = await src.read(0, 8);
  const headerLen = new DataView(lenBytes.buffer).getBigUint64(0, true);
  // The declared length is not shown: for a file that is not safetensors it is 8 bytes of text.
  if (headerLen > BigInt(src.size - 8)) {
    fail(`safetensors header runs past the end of the file (${src.size} bytes)`);
  }
  if (headerLen > BigInt(MAX_HEADER_BYTES)) {
    fail(
      `safetensors header of ${headerLen} bytes exceeds the ${formatBytes(MAX_HEADER_BYTES)} ` +
        `limit (a checkpoint's is well under 1 MiB)`,
    );
  }
  const n = Number(headerLen);
  const dataStart = 8 + n;
  const dataSize = src.size - dataStart;
  const raw = await src.read(8, n);
  if (raw[0] === 0xef && raw[1] === 0xbb && raw[2] === 0xbf) {
    fail("safetensors header starts with a UTF-8 byte-order mark; it must start with '{'");
  }
  if (raw[0] !== 0x7b) fail("safetensors header does not start with '{'");
  let header: unknown;
  try {
    // Strict: duplicate keys are refused (JSON.parse keeps the last one silently, so two readers
    // could load different weights), and errors never quote the header.
    header = parseJsonStrict(new TextDecoder("utf-8", { fatal: true }).decode(raw));
  } catch (e) {
    if (e instanceof JsonSyntaxError && e.message.startsWith("duplicate key")) {
      fail(`safetensors header has a ${e.message}`);
    }
    fail(
      e instanceof JsonSyntaxError
        ? `safetensors header is not valid JSON (${e.message})`
        : "safetensors header is not valid UTF-8 JSON (invalid UTF-8)",
    );
  }
  if (typeof header !== "object" || header === null || Array.isArray(header)) {
    fail("safetensors header is not a JSON object");
  }
  const names = Object.keys(header as object);
  const count = names.length - (names.includes("__metadata__") ? 1 : 0);
  if (count > MAX_TENSORS) {
    fail(`safetensors header lists ${count} tensors; a checkpoint has at most ${MAX_TENSORS}`);
  }
  const metadata: Record<string, string> = {};
  const entries: HeaderEntry[] = [];
  for (const [name, value] of Object.entries(header as Record<string, unknown>)) {
    if (name === "__metadata__") {
      if (typeof value !== "object" || value === null || Array.isArray(value)) {
        fail("__metadata__ is not a string map");
      }
      for (const [k, v] of Object.entries(value as Record<string, unknown>)) {
        if (typeof v !== "string") fail(`__metadata__ value of ${quote(k)} is not a string`);
        metadata[k] = v as string;
      }
      continue;
    }
    entries.push(parseEntry(name, value, dataSize, fail));
  }
  // No two tensors may share bytes: sort by start and compare neighbours (empty tensors skipped).
  const spans = entries.filter((e) => e.end > e.begin).sort((a, b) => a.begin - b.begin);
  for (let i = 1; i < spans.length; i++) {
    if (spans[i].begin < spans[i - 1].end) {
      fail(
        `tensors ${quote(spans[i - 1].name)} and ${quote(spans[i].name)} overlap in the data area`,
      );
    }
  }
  const tensors = new Map<string, RawTensor>();
  for (const e of entries) {
    const offset = dataStart + e.begin;
    const length = e.end - e.begin;
    tensors.set(e.name, {
      name: e.name,
      dtype: e.dtype,
      shape: e.shape,
      byteLength: length,
      read: () => src.read(offset, length),
      storageKey: `${label}@${offset}`,
    });
  }
  return { tensors, metadata };
}

function parseEntry(
  name: string,
  value: unknown,
  dataSize: number,
  fail: (msg: string) => never,
): HeaderEntry {
  const t = `tensor ${quote(name)}`;
  if (typeof value !== "object" || value === null || Array.isArray(value)) {
    fail(`${t}: header entry is not an object`);
  }
  const v = value as Record<string, unknown>;
  if (!isDType(v.dtype)) {
    fail(
      `${t}: unsupported dtype ${
        typeof v.dtype === "string" && /^\w{1,12}$/.test(v.dtype) ? quote(v.dtype) : kindOf(v.dtype)
      }`,
    );
  }
  const dtype = v.dtype as SafetensorsDType;
  if (!Array.isArray(v.shape) || !v.shape.every((d) => Number.isSafeInteger(d) && d >= 0)) {
    fail(
      `${t}: shape ${
        Array.isArray(v.shape) ? showInts(v.shape) : kindOf(v.shape)
      } is not a list of non-negative integers`,
    );
  }
  const shape = v.shape as number[];
  const offs = v.data_offsets;
  if (
    !Array.isArray(offs) || offs.length !== 2 ||
    !offs.every((o) => Number.isSafeInteger(o) && o >= 0)
  ) {
    fail(
      `${t}: data_offsets ${
        Array.isArray(offs) ? showInts(offs) : kindOf(offs)
      } is not two non-negative integers`,
    );
  }
  const [begin, end] = offs as number[];
  if (begin > end) fail(`${t}: data_offsets begin ${begin} > end ${end}`);
  if (end > dataSize) {
    fail(`${t}: data_offsets [${begin}, ${end}] run past the data area (${dataSize} bytes)`);
  }
  const count = numel(shape);
  const expected = count * DTYPE_SIZE[dtype];
  if (!Number.isSafeInteger(expected) || expected !== end - begin) {
    fail(
      `${t}: ${end - begin} bytes stored but shape ${
        showInts(shape)
      } of ${dtype} needs ${expected}`,
    );
  }
  return { name, dtype, shape, begin, end };
}

/** Opens a safetensors file; call `close()` on the result's source when done. */
export async function openSafetensors(
  path: string,
): Promise<SafetensorsContents & { close(): void }> {
  const src = await FileByteSource.open(path);
  try {
    return { ...(await readSafetensors(src)), close: () => src.close() };
  } catch (e) {
    src.close();
    throw e;
  }
}

/** Encodes the header bytes (length prefix + JSON padded with spaces to a multiple of 8). */
export function encodeSafetensorsHeader(
  tensors: readonly Omit<SafetensorsEntry, "data">[],
  byteLengths: readonly number[],
  metadata?: Record<string, string>,
): Uint8Array {
  const header: Record<string, unknown> = {};
  if (metadata && Object.keys(metadata).length > 0) header.__metadata__ = metadata;
  let offset = 0;
  tensors.forEach((t, i) => {
    if (t.name === "__metadata__") {
      throw new CheckpointError(`tensor name "__metadata__" is reserved`);
    }
    if (Object.hasOwn(header, t.name)) {
      throw new CheckpointError(`duplicate tensor name ${quote(t.name)}`);
    }
    header[t.name] = {
      dtype: t.dtype,
      shape: t.shape,
      data_offsets: [offset, offset + byteLengths[i]],
    };
    offset += byteLengths[i];
  });
  const json = new TextEncoder().encode(JSON.stringify(header));
  const padded = Math.ceil(json.length / 8) * 8;
  const out = new Uint8Array(8 + padded).fill(0x20, 8);
  new DataView(out.buffer).setBigUint64(0, BigInt(padded), true);
  out.set(json, 8);
  return out;
}

/**
 * Writes tensors (in the order given) and optional metadata as a safetensors file. The file is
 * written under a temporary name beside `path` and renamed (src/io/atomic.ts), so `path` is never
 * half-written, not even when the process is interrupted; parent directories are created.
 */
export async function writeSafetensors(
  path: string,
  tensors: SafetensorsEntry[],
  metadata?: Record<string, string>,
): Promise<void> {
  const header = checkedHeader(path, tensors, metadata);
  await atomicWrite(path, (file) => writeBody(file, header, tensors));
}

/**
 * Writes a safetensors file's bytes to an open file, for callers that manage the temporary file
 * themselves (`label` names the output in errors).
 */
export async function writeSafetensorsTo(
  file: { write(p: Uint8Array): Promise<number> },
  tensors: SafetensorsEntry[],
  metadata: Record<string, string> | undefined,
  label: string,
): Promise<void> {
  await writeBody(file, checkedHeader(label, tensors, metadata), tensors);
}

function checkedHeader(
  label: string,
  tensors: SafetensorsEntry[],
  metadata?: Record<string, string>,
): Uint8Array {
  for (const t of tensors) {
    const name = `${label}: tensor ${quote(t.name)}`;
    if (!Object.hasOwn(DTYPE_SIZE, t.dtype)) {
      throw new CheckpointError(`${name} has unsupported dtype ${t.dtype}`);
    }
    if (!t.shape.every((d) => Number.isSafeInteger(d) && d >= 0)) {
      throw new CheckpointError(`${name} has invalid shape [${t.shape}]`);
    }
    const need = numel(t.shape) * DTYPE_SIZE[t.dtype];
    if (t.data.length !== need) {
      throw new CheckpointError(
        `${name} has ${t.data.length} bytes, shape [${t.shape}] of ${t.dtype} needs ${need}`,
      );
    }
  }
  return encodeSafetensorsHeader(tensors, tensors.map((t) => t.data.length), metadata);
}

async function writeBody(
  file: { write(p: Uint8Array): Promise<number> },
  header: Uint8Array,
  tensors: SafetensorsEntry[],
): Promise<void> {
  await writeAll(file, header);
  for (const t of tensors) await writeAll(file, t.data);
}

async function writeAll(
  file: { write(p: Uint8Array): Promise<number> },
  data: Uint8Array,
): Promise<void> {
  let done = 0;
  while (done < data.length) done += await file.write(data.subarray(done));
}
