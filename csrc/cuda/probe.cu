/*
 * probe.cu — mb_read_probe on CUDA: streams a buffer once (the bandwidth ceiling for benchmarks).
 */
#include <stddef.h>
#include <stdint.h>

#include "cuda_internal.cuh"

__global__ void k_read_probe(const uint4 *__restrict__ p, size_t n16, float *sink) {
  MB_PDL_ENTRY();
  __shared__ float red[32];
  uint32_t acc = 0;
  size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x;
  size_t stride = (size_t)gridDim.x * blockDim.x;
  for (; i + 3 * stride < n16; i += 4 * stride) {
    uint4 a = __ldcs(p + i), b = __ldcs(p + i + stride), c = __ldcs(p + i + 2 * stride),
          d = __ldcs(p + i + 3 * stride);
    acc ^= a.x ^ a.y ^ a.z ^ a.w ^ b.x ^ b.y ^ b.z ^ b.w ^ c.x ^ c.y ^ c.z ^ c.w ^ d.x ^ d.y ^
           d.z ^ d.w;
  }
  for (; i < n16; i += stride) {
    uint4 a = __ldcs(p + i);
    acc ^= a.x ^ a.y ^ a.z ^ a.w;
  }
  float s = block_sum((float)(acc & 0xffff), red);
  if (threadIdx.x == 0) atomicAdd(sink, s);
}

extern "C" int mbcuda_read_probe(mb_ctx *ctx, const void *p, size_t bytes, float *sink) {
  cudaStream_t s = mbcuda_stream(ctx);
  MBCUDA_CHECK(cudaMemsetAsync(sink, 0, sizeof(float), s), "read_probe (memset)");
  if (bytes == 0) return MB_OK;
  unsigned int blocks = (unsigned)mbcuda_st(ctx)->sm_count * 8;
  MBCUDA_LAUNCH("read_probe", k_read_probe, dim3(blocks), dim3(256), 0, (const uint4 *)p, bytes / 16, sink);
  return MB_OK;
}
