/*
 * conv.cu — mb_causal_conv1d on CUDA: one thread per (b, c) sequential over t for decoding (len <= 8)
 * or many channels (k_conv_seq, state updated in the same kernel); otherwise one thread per
 * (b, t, c) (k_conv_par) followed by the state update (k_conv_state).
 * (The fused in_proj + conv step, mb_linear_conv1d_step, is in gemm.cu's GEMV epilogue.)
 */
#include <stdint.h>

#include "cuda_internal.cuh"

#define CONV_KMAX 8


/* One thread per (b, c), sequential over t, the window in registers (k <= CONV_KMAX): one launch,
 * used for short lengths (decoding). */
__global__ void k_conv_seq(const float *__restrict__ x, int64_t ldx, const float *__restrict__ w,
                           const float *__restrict__ bias, float *conv_state, int64_t batch,
                           int64_t len, int64_t d, int k, float *__restrict__ out, int64_t ldo,
                           float *__restrict__ pre_out) {
  mb_pdl_trigger();
  int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x;
  if (i >= batch * d) return;
  int64_t b = i / d, c = i - b * d;
  float win[CONV_KMAX], wc[CONV_KMAX];
  float *st = conv_state ? conv_state + (b * d + c) * (k - 1) : nullptr;
  /* weights and bias are constant: load them before the PDL wait */
#pragma unroll
  for (int j = 0; j < CONV_KMAX; j++) wc[j] = j < k ? w[c * k + j] : 0.f;
  float bc = bias ? bias[c] : 0.f;
  mb_pdl_wait();
#pragma unroll
  for (int j = 0; j < CONV_KMAX; j++) win[j] = (j < k - 1 && st) ? st[j] : 0.f;
  for (int64_t t = 0; t < len; t++) {
    int64_t r = b * len + t;
    float xv = x[r * ldx + c];
    /* window positions t-(k-1) .. t: win[0..k-2] then xv */
    float acc = bc;
#pragma unroll
    for (int j = 0; j < CONV_KMAX; j++) {
      if (j < k - 1) acc += wc[j] * win[j];
      else if (j == k - 1) acc += wc[j] * xv;
    }
#pragma unroll
    for (int j = 0; j < CONV_KMAX - 1; j++) {
      if (j < k - 2) win[j] = win[j + 1];
      else if (j == k - 2) win[j] = xv;
    }
    out[r * ldo + c] = mb_silu(acc);
    if (pre_out) pre_out[r * d + c] = acc;
  }
  if (st) {
#pragma unroll
    for (int j = 0; j < CONV_KMAX; j++)
      if (j < k - 1) st[j] = win[j];
  }
}

/* One thread per (b, t, c): fully parallel over positions (prefill). */
__global__ void k_conv_par(const float *__restrict__ x, int64_t ldx, const float *__restrict__ w,
                           const float *__restrict__ bias, const float *__restrict__ conv_state,
                           int64_t batch, int64_t len, int64_t d, int k, float *__restrict__ out,
                           int64_t ldo, float *__restrict__ pre_out) {
  MB_PDL_ENTRY();
  int64_t total = batch * len * d;
  for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < total;
       i += (int64_t)gridDim.x * blockDim.x) {
    int64_t r = i / d, c = i - r * d;
    int64_t b = r / len, t = r - b * len;
    float acc = bias ? bias[c] : 0.f;
    for (int j = 0; j < k; j++) {
      int64_t p = t - (k - 1) + j;
      float v;
      if (p >= 0) v = x[(b * len + p) * ldx + c];
      else v = conv_state ? conv_state[(b * d + c) * (k - 1) + (k - 1) + p] : 0.f;
      acc += w[c * k + j] * v;
    }
    out[r * ldo + c] = mb_silu(acc);
    if (pre_out) pre_out[r * d + c] = acc;
  }
}


/* After k_conv_par: the state keeps the last k-1 inputs (in place, ascending j is safe). */
__global__ void k_conv_state(const float *__restrict__ x, int64_t ldx, float *conv_state,
                             int64_t batch, int64_t len, int64_t d, int k) {
  MB_PDL_ENTRY();
  int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x;
  if (i >= batch * d) return;
  int64_t b = i / d, c = i - b * d;
  float *st = conv_state + (b * d + c) * (k - 1);
  for (int j = 0; j < k - 1; j++) {
    int64_t p = len - (k - 1) + j;
    st[j] = p >= 0 ? x[(b * len + p) * ldx + c] : st[len + j];
  }
}

extern "C" int mbcuda_causal_conv1d(mb_ctx *ctx, const float *x, int64_t ldx, const float *w,
                                    const float *bias, float *conv_state, int64_t batch,
                                    int64_t len, int64_t d, int64_t k, float *out, int64_t ldo,
                                    float *out_preact) {
  if (batch <= 0 || len <= 0 || d <= 0 || k <= 0) return MB_OK;
  cudaStream_t s = mbcuda_stream(ctx);
  int64_t chans = batch * d;
  if (k <= CONV_KMAX && (len <= 8 || chans >= 65536)) {
    MBCUDA_LAUNCH("causal_conv1d", k_conv_seq, dim3(mbcuda_blocks(chans, 128)), dim3(128), 0, x, ldx, w, bias, conv_state, batch, len, d, (int)k, out, ldo, out_preact);
    return MB_OK;
  }
  {
    int64_t total = chans * len;
    unsigned int blocks = mbcuda_blocks(total, 256);
    unsigned int cap = (unsigned)mbcuda_st(ctx)->sm_count * 16;
    if (blocks > cap) blocks = cap;
    MBCUDA_LAUNCH("causal_conv1d", k_conv_par, dim3(blocks), dim3(256), 0, x, ldx, w, bias, conv_state, batch, len, d, (int)k, out, ldo, out_preact);
  }
  if (conv_state && k > 1) {
    MBCUDA_LAUNCH("causal_conv1d (state)", k_conv_state, dim3(mbcuda_blocks(chans, 128)), dim3(128), 0, x, ldx, conv_state, batch, len, d, (int)k);
  }
  return MB_OK;
}
