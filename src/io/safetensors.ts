/**
 * Result records as safetensors: every tensor becomes a named entry ("<key>" for a plain tensor,
 * "<key>.<layer>" for a per-layer Map entry, dot-joined deeper down) and every other field goes
 * into `__metadata__` as a JSON-encoded string under its dotted key. The file itself is written
 * by src/checkpoint/safetensors.ts, the project's one safetensors writer.
 *
 * @module
 */

import { writeSafetensorsTo } from "../checkpoint/safetensors.ts";
import { quote } from "../checkpoint/show.ts";
import { atomicWrite } from "./atomic.ts";
import { OutputError } from "./errors.ts";
import { type HostDType, type HostTensor, tensorBytes } from "./tensor.ts";
import {
  checkedTensor,
  keyPath,
  mappingEntries,
  PyTuple,
  sequenceItems,
  typeName,
} from "./value.ts";

/** safetensors dtype names of the result dtypes. */
export const SAFETENSORS_DTYPE = {
  float32: "F32",
  float64: "F64",
  int64: "I64",
  int32: "I32",
  uint8: "U8",
  bool: "BOOL",
} as const satisfies Record<HostDType, string>;

/** One tensor entry, in the form `writeSafetensorsTo` takes. */
export interface SafetensorsEntryOut {
  /** Dotted name, e.g. `discrete_A.3`. */
  name: string;
  /** safetensors dtype. */
  dtype: (typeof SAFETENSORS_DTYPE)[HostDType];
  /** Shape. */
  shape: number[];
  /** Little-endian C-order bytes. */
  data: Uint8Array;
}

function containsTensor(v: unknown): boolean {
  if (checkedTensor(v, []) !== null) return true;
  const entries = mappingEntries(v);
  if (entries !== null) return entries.some(([, x]) => containsTensor(x));
  const items = sequenceItems(v);
  return items !== null && items.some(containsTensor);
}

/** Rejects what JSON would silently mangle (class instances such as Date, functions, symbols). */
function checkJsonable(v: unknown, path: unknown[]): void {
  if (v === null || v === undefined) return;
  const t = typeof v;
  if (t === "string" || t === "number" || t === "boolean" || t === "bigint") return;
  if (v instanceof Uint8Array) return;
  const entries = mappingEntries(v);
  if (entries !== null) {
    for (const [k, x] of entries) checkJsonable(x, [...path, k]);
    return;
  }
  const items = sequenceItems(v);
  if (items !== null) {
    items.forEach((x, i) => checkJsonable(x, [...path, i]));
    return;
  }
  throw new OutputError(`${keyPath(path)}: cannot store a ${typeName(v)} in safetensors metadata`);
}

/** JSON that tolerates bigints (as numbers when exact, otherwise as strings), Maps, tuples. */
function toJson(v: unknown): string {
  return JSON.stringify(v, (_k, x) => {
    if (typeof x === "bigint") {
      return Number.isSafeInteger(Number(x)) ? Number(x) : x.toString();
    }
    if (x instanceof Map) return Object.fromEntries([...x].map(([k, y]) => [String(k), y]));
    if (x instanceof PyTuple) return x.items;
    if (x instanceof Uint8Array) return [...x];
    return x;
  });
}

/**
 * Splits a record into tensor entries and JSON metadata. Containers holding tensors are walked;
 * any subtree without tensors is one metadata entry. Two values landing on one name is an error.
 */
export function flattenRecord(
  record: Record<string, unknown>,
): { tensors: SafetensorsEntryOut[]; metadata: Record<string, string> } {
  const tensors: SafetensorsEntryOut[] = [];
  const metadata: Record<string, string> = {};
  const seen = new Set<string>();
  const claim = (name: string, path: unknown[]) => {
    if (seen.has(name)) {
      throw new OutputError(`${keyPath(path)}: duplicate safetensors name ${quote(name)}`);
    }
    seen.add(name);
  };
  const walk = (v: unknown, path: unknown[]) => {
    const name = path.map(String).join(".");
    const t: HostTensor | null = checkedTensor(v, path);
    if (t !== null) {
      claim(name, path);
      const data = tensorBytes(t);
      tensors.push({ name, dtype: SAFETENSORS_DTYPE[t.dtype], shape: [...t.shape], data });
      return;
    }
    if (containsTensor(v)) {
      const entries = mappingEntries(v) ?? sequenceItems(v)!.map((x, i) => [i, x]);
      for (const [k, x] of entries) walk(x, [...path, k]);
      return;
    }
    claim(name, path);
    checkJsonable(v, path);
    metadata[name] = toJson(v === undefined ? null : v);
  };
  for (const [k, v] of Object.entries(record)) walk(v, [k]);
  return { tensors, metadata };
}

/** Writes a result record as safetensors to `path` atomically. */
export async function writeSafetensorsRecord(
  path: string,
  record: Record<string, unknown>,
): Promise<void> {
  const { tensors, metadata } = flattenRecord(record);
  // One temporary file (atomicWrite's): writeSafetensors would add a second of its own.
  await atomicWrite(path, (file) => writeSafetensorsTo(file, tensors, metadata, path));
}
