/*
 * bulk_copy.cuh — Hopper's bulk copies (one instruction moves a contiguous global range, or a 2D
 * box of a tensor map, into shared memory, completing on a shared-memory barrier), for kernels
 * that stream weights into a ring of shared-memory stages while they compute on an earlier one
 * (sm_90 and later; callers check the device). The device probes share them.
 */
#ifndef MAMBABYTE_BULK_COPY_CUH
#define MAMBABYTE_BULK_COPY_CUH

#include <stdint.h>

__device__ __forceinline__ unsigned smem_u32(const void *p) {
  return (unsigned)__cvta_generic_to_shared(p);
}

/* A barrier that completes when `count` threads arrived and the bytes they announced landed. */
__device__ __forceinline__ void mbar_init(uint64_t *bar, unsigned count) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("mbarrier.init.shared::cta.b64 [%0], %1;" ::"r"(smem_u32(bar)), "r"(count));
  asm volatile("fence.mbarrier_init.release.cluster;" ::: "memory");
#endif
}

/* One thread: arrives on the barrier announcing `bytes` that a copy issued after it will bring. */
__device__ __forceinline__ void mbar_expect_tx(uint64_t *bar, unsigned bytes) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("mbarrier.arrive.expect_tx.shared::cta.b64 _, [%0], %1;" ::"r"(smem_u32(bar)),
               "r"(bytes)
               : "memory");
#endif
}

/* One thread: a plain arrival (a consumer giving a stage back). */
__device__ __forceinline__ void mbar_arrive(uint64_t *bar) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("mbarrier.arrive.shared::cta.b64 _, [%0];" ::"r"(smem_u32(bar)) : "memory");
#endif
}

/* One thread: arrives on the barrier announcing `bytes`, then copies them from global `src` to
 * shared `dst` (both 16-byte aligned, bytes a multiple of 16); the barrier's phase completes when
 * they are there. Earlier generic-proxy accesses of dst (reads of the stage's previous contents,
 * ordered before this by a __syncthreads) are fenced from the copy's writes. */
__device__ __forceinline__ void bulk_load(void *dst, const void *src, unsigned bytes, uint64_t *bar) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("fence.proxy.async.shared::cta;" ::: "memory");
  mbar_expect_tx(bar, bytes);
  asm volatile(
      "cp.async.bulk.shared::cluster.global.mbarrier::complete_tx::bytes [%0], [%1], %2, [%3];" ::"r"(
          smem_u32(dst)),
      "l"(src), "r"(bytes), "r"(smem_u32(bar))
      : "memory");
#endif
}

/* One thread: the box at coordinates (c0 along the inner dimension, c1 rows) of a 2D tensor map
 * (a __grid_constant__ kernel parameter) into shared memory, completing on bar (announce its
 * bytes first, mbar_expect_tx). With the 128-byte swizzle dst must be 1024-byte aligned. */
__device__ __forceinline__ void tensor_load_2d(void *dst, const void *map, int c0, int c1,
                                               uint64_t *bar) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile(
      "cp.async.bulk.tensor.2d.shared::cluster.global.tile.mbarrier::complete_tx::bytes [%0], "
      "[%1, {%2, %3}], [%4];" ::"r"(smem_u32(dst)),
      "l"((uint64_t)map), "r"(c0), "r"(c1), "r"(smem_u32(bar))
      : "memory");
#endif
}

/* Waits until the barrier's phase of this parity (0 for its first use, then alternating) completed. */
__device__ __forceinline__ void mbar_wait(uint64_t *bar, unsigned parity) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  unsigned done = 0;
  while (!done) {
    asm volatile(
        "{\n .reg .pred p;\n mbarrier.try_wait.parity.shared::cta.b64 p, [%1], %2;\n selp.u32 %0, 1, 0, p;\n}\n"
        : "=r"(done)
        : "r"(smem_u32(bar)), "r"(parity)
        : "memory");
  }
#endif
}

#endif
