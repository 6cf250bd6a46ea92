/*
 * embed.cu — mb_embedding on CUDA: one thread per output element, fp32 or bf16 table.
 * The CPU version (csrc/cpu/ops.c) is the reference; csrc/tests/cuda_vs_cpu.c holds the two equal.
 */
#include <stdint.h>

#include "cuda_internal.cuh"

template <typename T>
__global__ void k_embedding(const int32_t *__restrict__ ids, int64_t n, const T *__restrict__ table,
                            int64_t d, float *__restrict__ out) {
  MB_PDL_ENTRY();
  int64_t total = n * d;
  for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < total;
       i += (int64_t)gridDim.x * blockDim.x) {
    int64_t r = i / d, c = i - r * d;
    int64_t id = ids[r];
    if constexpr (sizeof(T) == 2)
      out[i] = mb_bf16_to_f32(table[id * d + c]);
    else
      out[i] = table[id * d + c];
  }
}

extern "C" int mbcuda_embedding(mb_ctx *ctx, const int32_t *ids, int64_t n, const void *table,
                                int wdtype, int64_t vocab, int64_t d, float *out) {
  (void)vocab;
  if (n <= 0 || d <= 0) return MB_OK;
  int64_t total = n * d;
  unsigned int blocks = mbcuda_blocks(total, 256);
  if (blocks > 65535u * 8) blocks = 65535u * 8;
  if (wdtype == MB_DTYPE_BF16)
    MBCUDA_LAUNCH("embedding", k_embedding<uint16_t>, dim3(blocks), dim3(256), 0, ids, n, (const uint16_t *)table, d, out);
  else
    MBCUDA_LAUNCH("embedding", k_embedding<float>, dim3(blocks), dim3(256), 0, ids, n, (const float *)table, d, out);
  return MB_OK;
}
