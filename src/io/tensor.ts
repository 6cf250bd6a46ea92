/**
 * HostTensor: a result tensor in host memory (row-major, C order), the unit every output writer
 * understands. Writers serialise its data as little-endian bytes.
 *
 * @module
 */

/** Element types a result tensor can hold (numpy names). */
export type HostDType = "float32" | "float64" | "int64" | "int32" | "uint8" | "bool";

/** The typed array behind a {@link HostTensor}; `bool` is stored as 0/1 bytes in a Uint8Array. */
export type HostData = Float32Array | Float64Array | BigInt64Array | Int32Array | Uint8Array;

/** A row-major tensor in host memory. */
export interface HostTensor {
  /** Element type. */
  dtype: HostDType;
  /** Shape, outermost first; `[]` is a scalar. */
  shape: number[];
  /** Elements in C order; its length equals the product of `shape`. */
  data: HostData;
}

/** Bytes per element of each {@link HostDType}. */
export const HOST_DTYPE_BYTES: Readonly<Record<HostDType, number>> = {
  float32: 4,
  float64: 8,
  int64: 8,
  int32: 4,
  uint8: 1,
  bool: 1,
};

/** A typed-array class: built from a length or over an ArrayBuffer. */
export interface HostArrayClass {
  new (n: number): HostData;
  new (b: ArrayBuffer): HostData;
  readonly BYTES_PER_ELEMENT: number;
}

/** The typed-array class that holds each dtype's data. */
export const ARRAY_OF: Readonly<Record<HostDType, HostArrayClass>> = {
  float32: Float32Array,
  float64: Float64Array,
  int64: BigInt64Array,
  int32: Int32Array,
  uint8: Uint8Array,
  bool: Uint8Array,
};

/** Number of elements of a shape (1 for a scalar). */
export function numel(shape: readonly number[]): number {
  let n = 1;
  for (const d of shape) n *= d;
  return n;
}

/**
 * Builds a HostTensor, checking that the array type matches the dtype and the length the shape.
 *
 * @example
 * ```ts
 * import { hostTensor } from "./tensor.ts";
 * const t = hostTensor("float32", [2, 2], new Float32Array([1, 2, 3, 4]));
 * ```
 */
export function hostTensor(dtype: HostDType, shape: readonly number[], data: HostData): HostTensor {
  for (const d of shape) {
    if (!Number.isSafeInteger(d) || d < 0) throw new RangeError(`bad dimension ${d} in shape`);
  }
  if (!(data instanceof ARRAY_OF[dtype])) {
    throw new TypeError(
      `dtype ${dtype} needs a ${ARRAY_OF[dtype].name}, got ${data.constructor.name}`,
    );
  }
  if (data.length !== numel(shape)) {
    throw new RangeError(`shape [${shape}] needs ${numel(shape)} elements, got ${data.length}`);
  }
  return { dtype, shape: [...shape], data };
}

/** A float32 tensor over `data` (no copy). */
export function float32(shape: readonly number[], data: Float32Array): HostTensor {
  return hostTensor("float32", shape, data);
}

/** A float64 tensor over `data` (no copy). */
export function float64(shape: readonly number[], data: Float64Array): HostTensor {
  return hostTensor("float64", shape, data);
}

/** An int64 tensor over `data` (no copy). */
export function int64(shape: readonly number[], data: BigInt64Array): HostTensor {
  return hostTensor("int64", shape, data);
}

/** An int32 tensor over `data` (no copy). */
export function int32(shape: readonly number[], data: Int32Array): HostTensor {
  return hostTensor("int32", shape, data);
}

/** A uint8 tensor over `data` (no copy). */
export function uint8(shape: readonly number[], data: Uint8Array): HostTensor {
  return hostTensor("uint8", shape, data);
}

/** A bool tensor; any non-zero byte (or `true`) becomes 1. */
export function bool(shape: readonly number[], data: Uint8Array | readonly boolean[]): HostTensor {
  const bytes = new Uint8Array(data.length);
  for (let i = 0; i < data.length; i++) bytes[i] = data[i] ? 1 : 0;
  return hostTensor("bool", shape, bytes);
}

/** A zero-filled tensor of the given dtype and shape. */
export function zeros(dtype: HostDType, shape: readonly number[]): HostTensor {
  return hostTensor(dtype, shape, new ARRAY_OF[dtype](numel(shape)));
}

/** True when `v` is shaped like a {@link HostTensor} (dtype, shape array, typed-array data). */
export function isHostTensor(v: unknown): v is HostTensor {
  if (typeof v !== "object" || v === null) return false;
  const t = v as Partial<HostTensor>;
  return typeof t.dtype === "string" && t.dtype in HOST_DTYPE_BYTES && Array.isArray(t.shape) &&
    ArrayBuffer.isView(t.data);
}

const LITTLE_ENDIAN = new Uint8Array(new Uint16Array([1]).buffer)[0] === 1;

/**
 * The tensor's elements as little-endian C-order bytes. A view (no copy) on little-endian hosts,
 * which is every host Deno ships for; big-endian hosts get a byte-swapped copy.
 */
export function tensorBytes(t: HostTensor): Uint8Array {
  const view = new Uint8Array(t.data.buffer, t.data.byteOffset, t.data.byteLength);
  const width = HOST_DTYPE_BYTES[t.dtype];
  if (LITTLE_ENDIAN || width === 1) return view;
  const out = new Uint8Array(view.length);
  for (let i = 0; i < view.length; i += width) {
    for (let j = 0; j < width; j++) out[i + j] = view[i + width - 1 - j];
  }
  return out;
}
