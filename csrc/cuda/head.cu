/*
 * head.cu — ops on the LM head's logits on CUDA: mb_log_softmax and mb_logprob_rank (one block per
 * row, block reductions).
 */
#include <math.h>
#include <stdint.h>

#include "cuda_internal.cuh"

__global__ void k_log_softmax(const float *logits, int64_t v, float *out) {
  MB_PDL_ENTRY();
  __shared__ float red[32];
  const float *row = logits + blockIdx.x * v;
  float *orow = out + blockIdx.x * v;
  float m = -INFINITY;
  for (int64_t c = threadIdx.x; c < v; c += blockDim.x) m = fmaxf(m, row[c]);
  m = block_max(m, red);
  float s = 0.f;
  for (int64_t c = threadIdx.x; c < v; c += blockDim.x) s += expf(row[c] - m);
  s = block_sum(s, red);
  float lse = m + logf(s);
  for (int64_t c = threadIdx.x; c < v; c += blockDim.x) orow[c] = row[c] - lse;
}

extern "C" int mbcuda_log_softmax(mb_ctx *ctx, const float *logits, int64_t n, int64_t v,
                                  float *out) {
  if (n <= 0 || v <= 0) return MB_OK;
  if (n > 0x7fffffff) return mb_fail(MB_ERR_INVALID, "cuda: log_softmax: too many rows");
  MBCUDA_LAUNCH("log_softmax", k_log_softmax, dim3((unsigned)n), dim3(row_threads(v)), 0, logits, v, out);
  return MB_OK;
}

__global__ void k_logprob_rank(const float *__restrict__ logits, int64_t v,
                               const int32_t *__restrict__ targets, float *out_lp,
                               int32_t *out_rank) {
  MB_PDL_ENTRY();
  __shared__ float red[32];
  const float *row = logits + blockIdx.x * v;
  float tv = row[targets[blockIdx.x]];
  float m = -INFINITY, cnt = 0.f;
  for (int64_t c = threadIdx.x; c < v; c += blockDim.x) {
    float x = row[c];
    m = fmaxf(m, x);
    cnt += x > tv ? 1.f : 0.f;
  }
  m = block_max(m, red);
  cnt = block_sum(cnt, red); /* exact: counts stay far below 2^24 */
  float s = 0.f;
  for (int64_t c = threadIdx.x; c < v; c += blockDim.x) s += expf(row[c] - m);
  s = block_sum(s, red);
  if (threadIdx.x == 0) {
    out_lp[blockIdx.x] = tv - (m + logf(s));
    out_rank[blockIdx.x] = (int32_t)cnt;
  }
}

extern "C" int mbcuda_logprob_rank(mb_ctx *ctx, const float *logits, int64_t n, int64_t v,
                                   const int32_t *targets, float *out_logprob, int32_t *out_rank) {
  if (n <= 0 || v <= 0) return MB_OK;
  if (n > 0x7fffffff || v >= (1 << 24))
    return mb_fail(MB_ERR_INVALID, "cuda: logprob_rank: too large");
  MBCUDA_LAUNCH("logprob_rank", k_logprob_rank, dim3((unsigned)n), dim3(row_threads(v)), 0, logits, v, targets, out_logprob, out_rank);
  return MB_OK;
}
