/**
 * Tensor: a handle (pointer + dtype + shape) into a backend's memory. Memory is explicit: a tensor
 * owns its memory until free() (ggml-style); sub-ranges are passed to ops as pointers (at()).
 *
 * @module
 */

import { type Backend, offsetPtr, type Ptr } from "./backend.ts";

/** Element types a tensor can hold. */
export type ElemType = "f32" | "bf16" | "i32" | "i64";

/** Bytes per element of each {@link ElemType}. */
export const ELEM_BYTES: Record<ElemType, number> = { f32: 4, bf16: 2, i32: 4, i64: 8 };

/** The host array type matching an element type. */
export type HostArray = Float32Array | Uint16Array | Int32Array | BigInt64Array;

function hostArray(dtype: ElemType, length: number): HostArray {
  switch (dtype) {
    case "f32":
      return new Float32Array(length);
    case "bf16":
      return new Uint16Array(length);
    case "i32":
      return new Int32Array(length);
    case "i64":
      return new BigInt64Array(length);
  }
}

/** A row-major tensor in backend memory. */
export class Tensor {
  /** The backend owning the memory. */
  readonly backend: Backend;
  /** Element type. */
  readonly dtype: ElemType;
  /** Shape, outermost first. */
  readonly shape: readonly number[];
  /** Pointer to the first element (null when empty). */
  readonly ptr: Ptr;
  #owned = true;

  private constructor(backend: Backend, dtype: ElemType, shape: readonly number[], ptr: Ptr) {
    this.backend = backend;
    this.dtype = dtype;
    this.shape = shape;
    this.ptr = ptr;
  }

  /** Allocates an uninitialised tensor. */
  static empty(backend: Backend, dtype: ElemType, shape: readonly number[]): Tensor {
    const numel = shape.reduce((a, b) => a * b, 1);
    return new Tensor(backend, dtype, [...shape], backend.alloc(numel * ELEM_BYTES[dtype]));
  }

  /**
   * A tensor over memory another tensor owns (`ptr` into it): its free() does nothing, and it is
   * valid while the owner is.
   */
  static view(backend: Backend, dtype: ElemType, shape: readonly number[], ptr: Ptr): Tensor {
    const t = new Tensor(backend, dtype, [...shape], ptr);
    t.#owned = false;
    return t;
  }

  /** Allocates a zero-filled tensor. */
  static zeros(backend: Backend, dtype: ElemType, shape: readonly number[]): Tensor {
    const t = Tensor.empty(backend, dtype, shape);
    backend.memset(t.ptr, 0, t.bytes);
    return t;
  }

  /** Copies a host array into a new tensor of the given shape. */
  static fromHost(
    backend: Backend,
    data: HostArray,
    shape: readonly number[],
    dtype?: ElemType,
  ): Tensor {
    const type = dtype ?? inferType(data);
    const t = Tensor.empty(backend, type, shape);
    if (data.byteLength !== t.bytes) {
      t.free();
      throw new Error(`fromHost: ${data.byteLength} bytes for shape [${shape}] of ${type}`);
    }
    backend.upload(t.ptr, data);
    return t;
  }

  /** Number of elements. */
  get numel(): number {
    return this.shape.reduce((a, b) => a * b, 1);
  }

  /** Size in bytes. */
  get bytes(): number {
    return this.numel * ELEM_BYTES[this.dtype];
  }

  /** Pointer to element `index` (flat, row-major). */
  at(index: number): Ptr {
    return offsetPtr(this.ptr, index * ELEM_BYTES[this.dtype]);
  }

  /** Copies the whole tensor to a new host array. */
  toHost(): HostArray {
    const out = hostArray(this.dtype, this.numel);
    this.backend.download(out, this.ptr);
    return out;
  }

  /** Frees the memory. Idempotent. */
  free(): void {
    if (this.#owned) {
      this.#owned = false;
      this.backend.free(this.ptr);
    }
  }
}

function inferType(data: HostArray): ElemType {
  if (data instanceof Float32Array) return "f32";
  if (data instanceof Uint16Array) return "bf16";
  if (data instanceof Int32Array) return "i32";
  return "i64";
}
