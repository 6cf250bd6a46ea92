/**
 * Element types of stored tensors, the raw tensor handle every format yields, and the conversions
 * to the two types the model uploads (float32 and bfloat16 bits). Stored data is little-endian.
 *
 * @module
 */

import { CheckpointError } from "./errors.ts";

/** Element types, named as safetensors names them. */
export type SafetensorsDType =
  | "F64"
  | "F32"
  | "F16"
  | "BF16"
  | "I64"
  | "I32"
  | "I16"
  | "I8"
  | "U8"
  | "BOOL";

/** Bytes per element of each dtype. */
export const DTYPE_SIZE: Readonly<Record<SafetensorsDType, number>> = {
  F64: 8,
  F32: 4,
  F16: 2,
  BF16: 2,
  I64: 8,
  I32: 4,
  I16: 2,
  I8: 1,
  U8: 1,
  BOOL: 1,
};

/** True when `s` names a supported dtype. */
export function isDType(s: unknown): s is SafetensorsDType {
  return typeof s === "string" && Object.hasOwn(DTYPE_SIZE, s);
}

/** True for the floating types that convert to float32 / bfloat16. */
export function isFloatDType(d: SafetensorsDType): boolean {
  return d === "F64" || d === "F32" || d === "F16" || d === "BF16";
}

/** A tensor in a checkpoint: its description, and its bytes on demand. */
export interface RawTensor {
  /** The name in the file. */
  name: string;
  dtype: SafetensorsDType;
  shape: number[];
  /** prod(shape) * itemsize. */
  byteLength: number;
  /** Reads the tensor's bytes (little-endian, row-major). */
  read(): Promise<Uint8Array>;
  /**
   * Identifies the stored bytes (file, entry, offset) where the format can share them between
   * tensors, as torch does for tied weights; equal keys mean the same data.
   */
  storageKey?: string;
}

/** Number of elements of a shape (1 for a scalar). */
export function numel(shape: readonly number[]): number {
  let n = 1;
  for (const d of shape) n *= d;
  return n;
}

// Typed-array views need aligned offsets; buffers from ByteSource.read start at 0, others get copied.
function aligned(bytes: Uint8Array, itemsize: number): Uint8Array {
  return bytes.byteOffset % itemsize === 0 ? bytes : bytes.slice();
}

const f16Scratch = new Float32Array(1);
const f16Bits = new Uint32Array(f16Scratch.buffer);

/** Converts IEEE half-precision bits to a number. */
export function f16ToF32(h: number): number {
  const sign = (h & 0x8000) << 16;
  const exp = (h >> 10) & 0x1f;
  const mant = h & 0x3ff;
  if (exp === 0) {
    // Zero or subnormal: mant * 2^-24.
    const v = mant * 5.960464477539063e-8;
    return sign ? -v : v;
  }
  if (exp === 0x1f) {
    f16Bits[0] = sign | 0x7f800000 | (mant << 13);
    return f16Scratch[0];
  }
  f16Bits[0] = sign | ((exp + 112) << 23) | (mant << 13);
  return f16Scratch[0];
}

/** Decodes float tensor bytes of `dtype` to float32 (F32 input is viewed, not copied). */
export function toFloat32(bytes: Uint8Array, dtype: SafetensorsDType, what: string): Float32Array {
  const isz = DTYPE_SIZE[dtype];
  if (bytes.length % isz !== 0) {
    throw new CheckpointError(`${what}: ${bytes.length} bytes is not a whole number of ${dtype}`);
  }
  const b = aligned(bytes, isz);
  const n = b.length / isz;
  switch (dtype) {
    case "F32":
      return new Float32Array(b.buffer, b.byteOffset, n);
    case "F64":
      return Float32Array.from(new Float64Array(b.buffer, b.byteOffset, n));
    case "BF16": {
      const src = new Uint16Array(b.buffer, b.byteOffset, n);
      const out = new Float32Array(n);
      const bits = new Uint32Array(out.buffer);
      for (let i = 0; i < n; i++) bits[i] = src[i] << 16;
      return out;
    }
    case "F16": {
      const src = new Uint16Array(b.buffer, b.byteOffset, n);
      const out = new Float32Array(n);
      for (let i = 0; i < n; i++) out[i] = f16ToF32(src[i]);
      return out;
    }
    default:
      throw new CheckpointError(`${what}: dtype ${dtype} is not a floating-point type`);
  }
}

/** Rounds float32 values to bfloat16 bits, to nearest even (NaN stays NaN). */
export function float32ToBF16(x: Float32Array): Uint16Array {
  const bits = new Uint32Array(x.buffer, x.byteOffset, x.length);
  const out = new Uint16Array(x.length);
  for (let i = 0; i < x.length; i++) {
    const u = bits[i];
    if ((u & 0x7fffffff) > 0x7f800000) {
      out[i] = (u >>> 16) | 0x0040; // quiet NaN, sign kept
    } else {
      out[i] = ((u + 0x7fff + ((u >>> 16) & 1)) >>> 16) & 0xffff;
    }
  }
  return out;
}

/** Decodes float tensor bytes to bfloat16 bits: a view of BF16 input, rounded from the others. */
export function toBFloat16(bytes: Uint8Array, dtype: SafetensorsDType, what: string): Uint16Array {
  if (dtype === "BF16") {
    if (bytes.length % 2 !== 0) {
      throw new CheckpointError(`${what}: ${bytes.length} bytes is not a whole number of BF16`);
    }
    const b = aligned(bytes, 2);
    return new Uint16Array(b.buffer, b.byteOffset, b.length / 2);
  }
  return float32ToBF16(toFloat32(bytes, dtype, what));
}
