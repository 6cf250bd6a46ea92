/**
 * Backends (CPU, CUDA) over the native library, and tensors in their memory.
 *
 * @module
 */
export * from "./backend.ts";
export * from "./tensor.ts";
