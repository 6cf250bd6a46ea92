/*
 * norm.cu — mb_add_norm on CUDA (residual add + LayerNorm / RMSNorm): rows of d <= 2048 keep the row
 * in registers (k_add_norm_reg, the default there), longer rows use one block per row (k_add_norm).
 */
#include <math.h>
#include <stdint.h>

#include "cuda_internal.cuh"

__global__ void k_add_norm(const float *x, float *residual, int accumulate,
                           const float *__restrict__ weight, const float *__restrict__ bias,
                           int norm_kind, float eps, int64_t d, float *out) {
  MB_PDL_ENTRY();
  __shared__ float red[32];
  int64_t row = blockIdx.x;
  const float *xr = x + row * d;
  float *rr = residual + row * d;
  float *orow = out + row * d;
  float s = 0.f;
  for (int64_t c = threadIdx.x; c < d; c += blockDim.x) {
    float r = (accumulate ? rr[c] : 0.f) + xr[c];
    rr[c] = r;
    s += (norm_kind == MB_NORM_RMS) ? r * r : r;
  }
  s = block_sum(s, red);
  float mean = 0.f, rstd;
  if (norm_kind == MB_NORM_RMS) {
    rstd = 1.f / sqrtf(s / (float)d + eps);
  } else {
    mean = s / (float)d;
    float v = 0.f;
    for (int64_t c = threadIdx.x; c < d; c += blockDim.x) {
      float t = rr[c] - mean;
      v += t * t;
    }
    v = block_sum(v, red);
    rstd = 1.f / sqrtf(v / (float)d + eps);
  }
  for (int64_t c = threadIdx.x; c < d; c += blockDim.x) {
    float o = (rr[c] - mean) * rstd * weight[c];
    if (bias) o += bias[c];
    orow[c] = o;
  }
}

/* Rows of d <= VPT * blockDim.x (decoding): the row stays in registers (no re-read of the
 * residual), weight and bias are loaded before the PDL wait, the same two-pass statistics. */
template <int VPT>
__global__ void k_add_norm_reg(const float *x, float *residual, int accumulate,
                               const float *__restrict__ weight, const float *__restrict__ bias,
                               int norm_kind, float eps, int64_t d, float *out) {
  mb_pdl_trigger();
  __shared__ float red[32];
  const int64_t row = blockIdx.x;
  float wv[VPT], bv[VPT], rv[VPT];
#pragma unroll
  for (int i = 0; i < VPT; i++) {
    int64_t c = threadIdx.x + (int64_t)i * blockDim.x;
    wv[i] = c < d ? weight[c] : 0.f;
    bv[i] = (c < d && bias) ? bias[c] : 0.f;
  }
  mb_pdl_wait();
  const float *xr = x + row * d;
  float *rr = residual + row * d;
  float *orow = out + row * d;
  float s = 0.f;
#pragma unroll
  for (int i = 0; i < VPT; i++) {
    int64_t c = threadIdx.x + (int64_t)i * blockDim.x;
    float r = 0.f;
    if (c < d) {
      r = (accumulate ? rr[c] : 0.f) + xr[c];
      rr[c] = r;
    }
    rv[i] = r;
    s += (norm_kind == MB_NORM_RMS) ? r * r : r;
  }
  s = block_sum(s, red);
  float mean = 0.f, rstd;
  if (norm_kind == MB_NORM_RMS) {
    rstd = 1.f / sqrtf(s / (float)d + eps);
  } else {
    mean = s / (float)d;
    float v = 0.f;
#pragma unroll
    for (int i = 0; i < VPT; i++) {
      int64_t c = threadIdx.x + (int64_t)i * blockDim.x;
      float t = rv[i] - mean;
      if (c < d) v += t * t;
    }
    v = block_sum(v, red);
    rstd = 1.f / sqrtf(v / (float)d + eps);
  }
#pragma unroll
  for (int i = 0; i < VPT; i++) {
    int64_t c = threadIdx.x + (int64_t)i * blockDim.x;
    if (c < d) orow[c] = (rv[i] - mean) * rstd * wv[i] + bv[i];
  }
}

extern "C" int mbcuda_add_norm(mb_ctx *ctx, const float *x, float *residual, int accumulate,
                               const float *weight, const float *bias, int norm_kind, float eps,
                               int64_t n, int64_t d, float *out) {
  if (n <= 0 || d <= 0) return MB_OK;
  if (n > 0x7fffffff) return mb_fail(MB_ERR_INVALID, "cuda: add_norm: too many rows");
  if (d <= 8 * 256) { /* rows held in registers (v3; the default) */
    int thr = d <= 4 * 256 ? row_threads((d + 3) / 4) : 256;
    if (d <= 4 * (int64_t)thr)
      MBCUDA_LAUNCH("add_norm", k_add_norm_reg<4>, dim3((unsigned)n), dim3(thr), 0, x, residual, accumulate, weight, bias, norm_kind, eps, d, out);
    else
      MBCUDA_LAUNCH("add_norm", k_add_norm_reg<8>, dim3((unsigned)n), dim3(thr), 0, x, residual, accumulate, weight, bias, norm_kind, eps, d, out);
    return MB_OK;
  }
  MBCUDA_LAUNCH("add_norm", k_add_norm, dim3((unsigned)n), dim3(row_threads(d)), 0, x, residual, accumulate, weight, bias, norm_kind, eps, d, out);
  return MB_OK;
}
