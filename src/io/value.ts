/**
 * The shapes a result record may take, and the helpers the writers share to walk one: containers
 * (plain objects, Maps, arrays, tuples), tensors, and leaves.
 *
 * @module
 */

import { OutputError } from "./errors.ts";
import { ARRAY_OF, type HostDType, type HostTensor, isHostTensor, numel } from "./tensor.ts";

/** A Python tuple in a result record (msgpack and safetensors treat it as a list). */
export class PyTuple {
  /** The elements. */
  readonly items: readonly unknown[];
  /** Wraps the elements. */
  constructor(items: readonly unknown[]) {
    this.items = items;
  }
}

/** Builds a {@link PyTuple}. */
export function tuple(...items: unknown[]): PyTuple {
  return new PyTuple(items);
}

/**
 * A tensor to be written as a real `torch.Tensor` in a pickle (what `--output_layout original`
 * stores); msgpack and safetensors write it as its plain tensor.
 */
export class TorchTensor {
  /** The tensor's data. */
  readonly tensor: HostTensor;
  /** Wraps `tensor` (not copied). */
  constructor(tensor: HostTensor) {
    this.tensor = tensor;
  }
}

/** Marks `t` to be pickled as a `torch.Tensor`. */
export function torchTensor(t: HostTensor): TorchTensor {
  return new TorchTensor(t);
}

/**
 * The `(values, indices)` pair `torch.min(x, dim)` / `torch.max(x, dim)` return, pickled as a
 * `torch.return_types.min` / `max` of two tensors; msgpack writes it as the map
 * `{"values": ..., "indices": ...}` and safetensors as the entries `<key>.values`, `<key>.indices`.
 */
export class TorchMinMax {
  /** Which reduction produced it. */
  readonly kind: "min" | "max";
  /** The reduced values. */
  readonly values: HostTensor;
  /** Where each value was found along the reduced dimension (int64). */
  readonly indices: HostTensor;
  /** Wraps the pair; throws when `indices` is not int64 or the shapes differ. */
  constructor(kind: "min" | "max", values: HostTensor, indices: HostTensor) {
    if (kind !== "min" && kind !== "max") throw new TypeError(`kind must be min or max: ${kind}`);
    if (indices.dtype !== "int64") {
      throw new TypeError(`torch.return_types.${kind} indices must be int64, got ${indices.dtype}`);
    }
    if (
      values.shape.length !== indices.shape.length ||
      values.shape.some((d, i) => d !== indices.shape[i])
    ) {
      throw new RangeError(
        `torch.return_types.${kind}: values [${values.shape}] and indices [${indices.shape}] differ`,
      );
    }
    this.kind = kind;
    this.values = values;
    this.indices = indices;
  }
}

/** Builds a {@link TorchMinMax}: `torch.return_types.<kind>(values, indices)`. */
export function torchMinMax(
  kind: "min" | "max",
  values: HostTensor,
  indices: HostTensor,
): TorchMinMax {
  return new TorchMinMax(kind, values, indices);
}

/** True for `{...}` object literals (not class instances, arrays or typed arrays). */
export function isPlainObject(v: unknown): v is Record<string, unknown> {
  if (typeof v !== "object" || v === null) return false;
  const proto = Object.getPrototypeOf(v);
  return proto === Object.prototype || proto === null;
}

/** A mapping's entries (a Map keeps its key types; an object has string keys), or null. */
export function mappingEntries(v: unknown): [unknown, unknown][] | null {
  if (v instanceof Map) return [...v.entries()];
  // Writers without torch types see a min/max pair as {values, indices}.
  if (v instanceof TorchMinMax) return [["values", v.values], ["indices", v.indices]];
  if (isPlainObject(v)) return Object.entries(v);
  return null;
}

/** A sequence's elements (arrays and tuples), or null. */
export function sequenceItems(v: unknown): readonly unknown[] | null {
  if (Array.isArray(v)) return v;
  if (v instanceof PyTuple) return v.items;
  return null;
}

/**
 * The tensor `v` stands for: a HostTensor, a {@link TorchTensor}'s tensor, or a bare typed array
 * other than Uint8Array (taken as 1-D). Uint8Array alone means bytes, not a tensor. Null when `v`
 * is not a tensor.
 */
export function asTensor(v: unknown): HostTensor | null {
  if (isHostTensor(v)) return v;
  if (v instanceof TorchTensor) return v.tensor;
  let dtype: HostDType | null = null;
  if (v instanceof Float32Array) dtype = "float32";
  else if (v instanceof Float64Array) dtype = "float64";
  else if (v instanceof BigInt64Array) dtype = "int64";
  else if (v instanceof Int32Array) dtype = "int32";
  if (dtype === null) return null;
  const data = v as HostTensor["data"];
  return { dtype, shape: [data.length], data };
}

/** A short type name for error messages. */
export function typeName(v: unknown): string {
  if (v === null) return "null";
  if (typeof v !== "object") return typeof v;
  return (v as object).constructor?.name ?? "object";
}

/** Renders a key path like `discrete_A[3].x` for error messages. */
export function keyPath(path: readonly unknown[]): string {
  let s = "";
  for (const k of path) s += typeof k === "string" ? (s ? `.${k}` : k) : `[${String(k)}]`;
  return s || "<root>";
}

/** {@link asTensor}, but an inconsistent tensor (length vs shape, array vs dtype) is an error. */
export function checkedTensor(v: unknown, path: readonly unknown[]): HostTensor | null {
  const t = asTensor(v);
  if (t === null) return null;
  const want = ARRAY_OF[t.dtype];
  if (!(t.data instanceof want)) {
    throw new OutputError(
      `${keyPath(path)}: dtype ${t.dtype} needs a ${want.name}, got ${typeName(t.data)}`,
    );
  }
  if (t.data.length !== numel(t.shape) || t.shape.some((d) => !Number.isSafeInteger(d) || d < 0)) {
    throw new OutputError(
      `${keyPath(path)}: shape [${t.shape}] does not match ${t.data.length} elements`,
    );
  }
  return t;
}

/** Deepest nesting of containers a record may have (CPython's pickle fails near 1000). */
export const MAX_RECORD_DEPTH = 200;

/**
 * Throws an OutputError if containers nest deeper than {@link MAX_RECORD_DEPTH} (a cycle nests
 * forever): the writers and JSON.stringify recurse, and would overflow the stack instead.
 * Iterative, so it cannot overflow itself.
 */
export function checkDepth(record: unknown): void {
  const todo: [unknown, unknown[]][] = [[record, []]];
  while (todo.length > 0) {
    const [v, path] = todo.pop()!;
    if (asTensor(v) !== null) continue;
    const children = mappingEntries(v) ?? sequenceItems(v)?.map((x, i) => [i, x] as const);
    if (!children) continue;
    if (path.length >= MAX_RECORD_DEPTH) {
      throw new OutputError(
        `${keyPath(path.slice(0, 8))}...: containers nest deeper than ${MAX_RECORD_DEPTH} levels`,
      );
    }
    for (const [k, x] of children) todo.push([x, [...path, k]]);
  }
}
