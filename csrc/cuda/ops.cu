/*
 * ops.cu — CUDA kernels for every op except mb_linear (gemm.cu): embedding, add_norm,
 * causal_conv1d, selective_scan / state update, log_softmax, logprob_rank, sample, read_probe.
 * Each op enqueues on the context's stream only (graph-capturable). The CPU versions in
 * csrc/cpu are the reference; csrc/tests/cuda_vs_cpu.c holds the two equal.
 */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "../common/rng.h"
#include "cuda_internal.cuh"

/* ---- helpers --------------------------------------------------------------------------------- */

__device__ __forceinline__ float mb_bf16_to_f32(uint16_t v) {
  return __uint_as_float(((uint32_t)v) << 16);
}

__device__ __forceinline__ float warp_sum(float v) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}
__device__ __forceinline__ float warp_max(float v) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
  return v;
}

/* Block-wide sum/max; every thread gets the result. red must hold 32 floats. */
__device__ float block_sum(float v, float *red) {
  int lane = threadIdx.x & 31, wid = threadIdx.x >> 5, nw = (blockDim.x + 31) >> 5;
  v = warp_sum(v);
  __syncthreads();
  if (lane == 0) red[wid] = v;
  __syncthreads();
  v = (threadIdx.x < nw) ? red[threadIdx.x] : 0.f;
  if (wid == 0) {
    v = warp_sum(v);
    if (lane == 0) red[0] = v;
  }
  __syncthreads();
  return red[0];
}
__device__ float block_max(float v, float *red) {
  int lane = threadIdx.x & 31, wid = threadIdx.x >> 5, nw = (blockDim.x + 31) >> 5;
  v = warp_max(v);
  __syncthreads();
  if (lane == 0) red[wid] = v;
  __syncthreads();
  v = (threadIdx.x < nw) ? red[threadIdx.x] : -INFINITY;
  if (wid == 0) {
    v = warp_max(v);
    if (lane == 0) red[0] = v;
  }
  __syncthreads();
  return red[0];
}

__device__ __forceinline__ float mb_softplus(float x) { return x > 20.f ? x : log1pf(expf(x)); }
__device__ __forceinline__ float mb_silu(float x) { return x / (1.f + expf(-x)); }

static int row_threads(int64_t d) {
  int t = 32;
  while (t < 256 && t < d) t <<= 1;
  return t;
}

/* ---- embedding ------------------------------------------------------------------------------- */

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

/* ---- add_norm -------------------------------------------------------------------------------- */

/* The v3 kernels pass cuda_vs_cpu on an H200. The register add_norm is the default
 * (it is what sped decoding up: bf16 b1 685 -> 776 B/s with all of v3); the tiled scan and the
 * tiled prefill conv slowed the 8192-byte forward (183 -> 236 ms; docs/cuda_notes.md), so they
 * stay opt-in (MAMBABYTE_CUDA_V3=1). */
static int v3_kernels(void) {
  static int cached = -1;
  if (cached < 0) {
    const char *e = getenv("MAMBABYTE_CUDA_V3");
    cached = e && e[0] == '1';
  }
  return cached;
}

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

/* ---- causal_conv1d --------------------------------------------------------------------------- */

#define CONV_KMAX 8
#define MB_LOG2E 1.4426950408889634f

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

/* One thread per (b, c, tile of CONV_TT positions), channels across the block (coalesced): the
 * window slides in registers, so each input is read ~(1 + (k-1)/CONV_TT) times instead of k, and
 * the index math is per tile, not per element (prefill, k <= CONV_KMAX). */
#define CONV_TT 16
template <int K>
__global__ void k_conv_tile(const float *__restrict__ x, int64_t ldx, const float *__restrict__ w,
                            const float *__restrict__ bias, const float *__restrict__ conv_state,
                            int64_t len, int64_t d, float *__restrict__ out, int64_t ldo,
                            float *__restrict__ pre_out) {
  mb_pdl_trigger();
  const int64_t c = blockIdx.x * (int64_t)blockDim.x + threadIdx.x;
  const int64_t t0 = (int64_t)blockIdx.y * CONV_TT, b = blockIdx.z;
  if (c >= d) return;
  float wc[K], win[K];
#pragma unroll
  for (int j = 0; j < K; j++) wc[j] = w[c * K + j];
  const float bc = bias ? bias[c] : 0.f;
  mb_pdl_wait();
  /* win[j], j < K-1: the input at t0 - (K-1) + j */
#pragma unroll
  for (int j = 0; j < K - 1; j++) {
    int64_t p = t0 - (K - 1) + j;
    if (p >= 0) win[j] = x[(b * len + p) * ldx + c];
    else win[j] = conv_state ? conv_state[(b * d + c) * (K - 1) + (K - 1) + p] : 0.f;
  }
  const int nt = (int)(len - t0 < CONV_TT ? len - t0 : CONV_TT);
  const float *xp = x + (b * len + t0) * ldx + c;
  float *op = out + (b * len + t0) * ldo + c;
  float *pp = pre_out ? pre_out + (b * len + t0) * d + c : nullptr;
#pragma unroll
  for (int i = 0; i < CONV_TT; i++) {
    if (i < nt) {
      win[K - 1] = __ldg(xp + i * ldx);
      float acc = bc;
#pragma unroll
      for (int j = 0; j < K; j++) acc = fmaf(wc[j], win[j], acc);
#pragma unroll
      for (int j = 0; j < K - 1; j++) win[j] = win[j + 1];
      op[i * ldo] = mb_silu(acc);
      if (pp) pp[i * d] = acc;
    }
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
  if (v3_kernels() && k >= 2 && k <= 4 && batch <= 65535 &&
      (len + CONV_TT - 1) / CONV_TT <= 65535) {
    dim3 grid(mbcuda_blocks(d, 128), (unsigned)((len + CONV_TT - 1) / CONV_TT), (unsigned)batch);
    if (k == 4)
      MBCUDA_LAUNCH("causal_conv1d", k_conv_tile<4>, grid, dim3(128), 0, x, ldx, w, bias, conv_state, len, d, out, ldo, out_preact);
    else if (k == 3)
      MBCUDA_LAUNCH("causal_conv1d", k_conv_tile<3>, grid, dim3(128), 0, x, ldx, w, bias, conv_state, len, d, out, ldo, out_preact);
    else
      MBCUDA_LAUNCH("causal_conv1d", k_conv_tile<2>, grid, dim3(128), 0, x, ldx, w, bias, conv_state, len, d, out, ldo, out_preact);
  } else {
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

/* ---- selective scan -------------------------------------------------------------------------- */

struct ScanArgs {
  const float *u; int64_t ldu;
  const float *delta; int64_t ld_delta;
  const float *A;
  const float *Bm; int64_t ldb;
  const float *Cm; int64_t ldc;
  const float *Dskip;
  const float *z; int64_t ldz;
  float *state;
  float *states_all;
  int64_t batch, len, d;
  int n;
  int softplus;
  float *y; int64_t ldy;
  /* chunked scan */
  int64_t chunk;      /* positions per chunk */
  int64_t nchunks;
  float *hloc;        /* (batch, nchunks, d, n): chunk-local end state, then the state entering */
  float *dtsum;       /* (batch, nchunks, d): sum of dt over the chunk */
};

/* Runs positions [t0, t1) of channel (b, c) from h; writes y (and states_all) when OUT, and
 * returns the dt sum. */
template <int NMAX, bool OUT>
__device__ __forceinline__ float scan_range(const ScanArgs &a, int64_t b, int64_t c, int64_t t0,
                                            int64_t t1, float (&h)[NMAX]) {
  const int n = a.n;
  float Ac[NMAX];
#pragma unroll
  for (int s = 0; s < NMAX; s++) Ac[s] = s < n ? a.A[c * n + s] * MB_LOG2E : 0.f; /* exp via exp2 */
  float Dc = a.Dskip ? a.Dskip[c] : 0.f;
  float dts = 0.f;
  for (int64_t t = t0; t < t1; t++) {
    int64_t r = b * a.len + t;
    float uu = __ldg(a.u + r * a.ldu + c);
    float dt = __ldg(a.delta + r * a.ld_delta + c);
    if (a.softplus) dt = mb_softplus(dt);
    dts += dt;
    const float *Br = a.Bm + r * a.ldb;
    const float *Cr = a.Cm + r * a.ldc;
    float du = dt * uu;
    float yv = 0.f;
#pragma unroll
    for (int s = 0; s < NMAX; s++) {
      if (s < n) {
        float dA = exp2f(dt * Ac[s]);
        h[s] = dA * h[s] + __ldg(Br + s) * du;
        if (OUT) yv += __ldg(Cr + s) * h[s];
      }
    }
    if (OUT) {
      yv += Dc * uu;
      if (a.z) yv *= mb_silu(__ldg(a.z + r * a.ldz + c));
      a.y[r * a.ldy + c] = yv;
      if (a.states_all) {
        float *sa = a.states_all + (r * a.d + c) * n;
#pragma unroll
        for (int s = 0; s < NMAX; s++)
          if (s < n) sa[s] = h[s];
      }
    }
  }
  return dts;
}

/* One thread per (b, c), sequential over the whole length. */
template <int NMAX>
__global__ void k_scan_seq(ScanArgs a) {
  MB_PDL_ENTRY();
  int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x;
  if (i >= a.batch * a.d) return;
  int64_t b = i / a.d, c = i - b * a.d;
  float h[NMAX];
  float *st = a.state ? a.state + (b * a.d + c) * a.n : nullptr;
#pragma unroll
  for (int s = 0; s < NMAX; s++) h[s] = (st && s < a.n) ? st[s] : 0.f;
  scan_range<NMAX, true>(a, b, c, 0, a.len, h);
  if (st) {
#pragma unroll
    for (int s = 0; s < NMAX; s++)
      if (s < a.n) st[s] = h[s];
  }
}

/* Chunked pass 1: per (b, chunk, c), the chunk's end state from zero and its dt sum. */
template <int NMAX>
__global__ void k_scan_chunk_local(ScanArgs a) {
  MB_PDL_ENTRY();
  int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x;
  if (i >= a.batch * a.nchunks * a.d) return;
  int64_t c = i % a.d, bk = i / a.d, k = bk % a.nchunks, b = bk / a.nchunks;
  if (k == a.nchunks - 1) return; /* the last chunk's local state is never needed */
  float h[NMAX];
#pragma unroll
  for (int s = 0; s < NMAX; s++) h[s] = 0.f;
  int64_t t0 = k * a.chunk, t1 = t0 + a.chunk < a.len ? t0 + a.chunk : a.len;
  float dts = scan_range<NMAX, false>(a, b, c, t0, t1, h);
  float *hl = a.hloc + i * a.n;
#pragma unroll
  for (int s = 0; s < NMAX; s++)
    if (s < a.n) hl[s] = h[s];
  a.dtsum[i] = dts;
}

/* Chunked pass 2: per (b, c), carries the state across chunks; hloc becomes the entering state. */
template <int NMAX>
__global__ void k_scan_chunk_carry(ScanArgs a) {
  MB_PDL_ENTRY();
  int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x;
  if (i >= a.batch * a.d) return;
  int64_t b = i / a.d, c = i - b * a.d;
  float h[NMAX], Ac[NMAX];
  float *st = a.state ? a.state + (b * a.d + c) * a.n : nullptr;
#pragma unroll
  for (int s = 0; s < NMAX; s++) {
    h[s] = (st && s < a.n) ? st[s] : 0.f;
    Ac[s] = s < a.n ? a.A[c * a.n + s] * MB_LOG2E : 0.f;
  }
  for (int64_t k = 0; k < a.nchunks; k++) {
    int64_t j = (b * a.nchunks + k) * a.d + c;
    float *hl = a.hloc + j * a.n;
    float dts = k < a.nchunks - 1 ? a.dtsum[j] : 0.f;
#pragma unroll
    for (int s = 0; s < NMAX; s++) {
      if (s < a.n) {
        float loc = k < a.nchunks - 1 ? hl[s] : 0.f;
        hl[s] = h[s];
        h[s] = exp2f(dts * Ac[s]) * h[s] + loc;
      }
    }
  }
}

/* Chunked pass 3: per (b, chunk, c), reruns the chunk from its entering state with outputs. */
template <int NMAX>
__global__ void k_scan_chunk_out(ScanArgs a) {
  MB_PDL_ENTRY();
  int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x;
  if (i >= a.batch * a.nchunks * a.d) return;
  int64_t c = i % a.d, bk = i / a.d, k = bk % a.nchunks, b = bk / a.nchunks;
  float h[NMAX];
  const float *hl = a.hloc + i * a.n;
#pragma unroll
  for (int s = 0; s < NMAX; s++) h[s] = s < a.n ? hl[s] : 0.f;
  int64_t t0 = k * a.chunk, t1 = t0 + a.chunk < a.len ? t0 + a.chunk : a.len;
  scan_range<NMAX, true>(a, b, c, t0, t1, h);
  if (k == a.nchunks - 1 && a.state) {
    float *st = a.state + (b * a.d + c) * a.n;
#pragma unroll
    for (int s = 0; s < NMAX; s++)
      if (s < a.n) st[s] = h[s];
  }
}

template <int NMAX>
static int scan_launch(mb_ctx *ctx, ScanArgs &a) {
  cudaStream_t s = mbcuda_stream(ctx);
  int64_t chans = a.batch * a.d;
  int64_t target = (int64_t)mbcuda_st(ctx)->sm_count * 1024;
  int64_t nchunks = 1;
  if (a.len >= 64 && chans < target) {
    nchunks = (target + chans - 1) / chans;
    int64_t maxc = a.len / 32;
    if (nchunks > maxc) nchunks = maxc;
    if (nchunks < 1) nchunks = 1;
  }
  if (nchunks <= 1) {
    MBCUDA_LAUNCH("selective_scan", k_scan_seq<NMAX>, dim3(mbcuda_blocks(chans, 128)), dim3(128), 0, a);
    return MB_OK;
  }
  a.chunk = (a.len + nchunks - 1) / nchunks;
  a.nchunks = (a.len + a.chunk - 1) / a.chunk;
  size_t hl_bytes = (size_t)(a.batch * a.nchunks * a.d * a.n) * sizeof(float);
  size_t dt_bytes = (size_t)(a.batch * a.nchunks * a.d) * sizeof(float);
  hl_bytes = (hl_bytes + 255) & ~(size_t)255;
  void *scr = NULL;
  int rc = mbcuda_scratch(ctx, hl_bytes + dt_bytes, "selective_scan", &scr);
  if (rc) return rc;
  a.hloc = (float *)scr;
  a.dtsum = (float *)((char *)scr + hl_bytes);
  int64_t work = a.batch * a.nchunks * a.d;
  MBCUDA_LAUNCH("selective_scan (chunk local)", k_scan_chunk_local<NMAX>, dim3(mbcuda_blocks(work, 128)), dim3(128), 0, a);
  MBCUDA_LAUNCH("selective_scan (chunk carry)", k_scan_chunk_carry<NMAX>, dim3(mbcuda_blocks(chans, 128)), dim3(128), 0, a);
  MBCUDA_LAUNCH("selective_scan (chunk out)", k_scan_chunk_out<NMAX>, dim3(mbcuda_blocks(work, 128)), dim3(128), 0, a);
  return MB_OK;
}

/* ---- selective scan, v3: tiled, (channel, state pair) per lane ------------------------------ *
 * L lanes per channel, P = 2 states per lane (L * P >= n, L a power of two <= 32): the 16 states
 * of a 972M channel are spread over 8 lanes, so batch 1 x 3584 channels gives 28,672 threads with
 * no time chunking (the recurrence runs once). A block of `threads` lanes holds CB = threads / L
 * channels of one sequence and walks the sequence in tiles of T positions: the tile's u, delta, z
 * (CB channels) and B, C (n states) are copied into shared memory with cp.async (double buffered:
 * tile k+1 is in flight while tile k is computed), transformed once per (t, c) in place (softplus,
 * silu), then the recurrence reads only shared memory. y goes through shared memory to coalesced
 * stores. Invalid positions/channels are neutral (dt = 0, u = 0, B = C = 0) so every lane runs the
 * same loop and the shuffles see a full warp. */
#define SCAN_P 2

__device__ __forceinline__ void cp_async4(float *dst, const float *src) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
  unsigned sa = (unsigned)__cvta_generic_to_shared(dst);
  asm volatile("cp.async.ca.shared.global [%0], [%1], 4;" ::"r"(sa), "l"(src) : "memory");
#else
  *dst = *src;
#endif
}
__device__ __forceinline__ void cp_async_commit() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
  asm volatile("cp.async.commit_group;" ::: "memory");
#endif
}
template <int N>
__device__ __forceinline__ void cp_async_wait() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
  asm volatile("cp.async.wait_group %0;" ::"n"(N) : "memory");
#endif
}

struct TileGeom {
  int T, CB, NP; /* positions per tile, channels per block, padded states (L * P) */
  /* Segment starts are kept 16-byte aligned: B and C are read as float2, and T * CB is odd for a
   * short sequence (T = len) in a one-channel block (a misaligned-address fault on the H200). */
  __host__ __device__ int seg() const { return (T * CB + 3) & ~3; }
  __host__ __device__ int bseg() const { return (T * NP + 3) & ~3; }
  /* floats per stage: u, dt, g (seg each), B, C (bseg each) */
  __host__ __device__ int stage() const { return 3 * seg() + 2 * bseg(); }
};

/* Issues the copies of tile (t0 .. t0+T) for channels c0 .. c0+CB of sequence b into stage sm. */
__device__ __forceinline__ void scan_tile_issue(const ScanArgs &a, const TileGeom &g, float *sm,
                                                int64_t b, int64_t c0, int64_t t0) {
  float *su = sm, *sdt = sm + g.seg(), *sg = sm + 2 * g.seg();
  float *sB = sm + 3 * g.seg(), *sC = sB + g.bseg();
  const int nthr = blockDim.x;
  const int cw = g.CB;
  for (int e = threadIdx.x; e < g.T * cw; e += nthr) {
    int t = e / cw, cl = e - t * cw;
    int64_t tt = t0 + t, c = c0 + cl;
    if (tt < a.len && c < a.d) {
      int64_t r = b * a.len + tt;
      cp_async4(su + e, a.u + r * a.ldu + c);
      cp_async4(sdt + e, a.delta + r * a.ld_delta + c);
      if (a.z) cp_async4(sg + e, a.z + r * a.ldz + c);
    }
  }
  for (int e = threadIdx.x; e < g.T * a.n; e += nthr) {
    int t = e / a.n, s = e - t * a.n;
    int64_t tt = t0 + t;
    if (tt < a.len) {
      int64_t r = b * a.len + tt;
      cp_async4(sB + t * g.NP + s, a.Bm + r * a.ldb + s);
      cp_async4(sC + t * g.NP + s, a.Cm + r * a.ldc + s);
    }
  }
}

/* In place: dt = softplus(delta), g = silu(z) (1 without z); neutral values where invalid. */
__device__ __forceinline__ void scan_tile_prep(const ScanArgs &a, const TileGeom &g, float *sm,
                                               int64_t c0, int64_t t0) {
  float *su = sm, *sdt = sm + g.seg(), *sg = sm + 2 * g.seg();
  float *sB = sm + 3 * g.seg(), *sC = sB + g.bseg();
  const int nthr = blockDim.x;
  for (int e = threadIdx.x; e < g.T * g.CB; e += nthr) {
    int t = e / g.CB, cl = e - t * g.CB;
    bool ok = t0 + t < a.len && c0 + cl < a.d;
    if (ok) {
      float dt = sdt[e];
      sdt[e] = a.softplus ? mb_softplus(dt) : dt;
      sg[e] = a.z ? mb_silu(sg[e]) : 1.f;
    } else {
      su[e] = 0.f;
      sdt[e] = 0.f;
      sg[e] = 0.f;
    }
  }
  for (int e = threadIdx.x; e < g.T * g.NP; e += nthr) {
    int t = e / g.NP, s = e - t * g.NP;
    if (!(t0 + t < a.len && s < a.n)) {
      sB[e] = 0.f;
      sC[e] = 0.f;
    }
  }
}

template <int L>
__global__ void k_scan_tile(ScanArgs a, TileGeom g) {
  extern __shared__ __align__(16) float smem_scan[];
  mb_pdl_trigger();
  const int lane_c = threadIdx.x / L, gi = threadIdx.x % L;
  const int64_t b = blockIdx.y, c0 = (int64_t)blockIdx.x * g.CB, c = c0 + lane_c;
  const bool cok = c < a.d;
  /* constants before the PDL wait */
  float Ac[SCAN_P];
#pragma unroll
  for (int p = 0; p < SCAN_P; p++) {
    int s = gi * SCAN_P + p;
    Ac[p] = (cok && s < a.n) ? a.A[c * a.n + s] * MB_LOG2E : 0.f;
  }
  const float Dc = (cok && a.Dskip) ? a.Dskip[c] : 0.f;
  mb_pdl_wait();
  float h[SCAN_P];
  float *st = (cok && a.state) ? a.state + (b * a.d + c) * a.n : nullptr;
#pragma unroll
  for (int p = 0; p < SCAN_P; p++) {
    int s = gi * SCAN_P + p;
    h[p] = (st && s < a.n) ? st[s] : 0.f;
  }
  const int stage = g.stage();
  float *sy = smem_scan + 2 * stage;
  const int64_t ntiles = (a.len + g.T - 1) / g.T;
  scan_tile_issue(a, g, smem_scan, b, c0, 0);
  cp_async_commit();
  for (int64_t k = 0; k < ntiles; k++) {
    float *sm = smem_scan + (k & 1) * stage;
    const int64_t t0 = k * g.T;
    if (k + 1 < ntiles) {
      scan_tile_issue(a, g, smem_scan + ((k + 1) & 1) * stage, b, c0, t0 + g.T);
      cp_async_commit();
      cp_async_wait<1>();
    } else {
      cp_async_wait<0>();
    }
    __syncthreads();
    scan_tile_prep(a, g, sm, c0, t0);
    __syncthreads();
    const float *su = sm, *sdt = sm + g.seg(), *sg = sm + 2 * g.seg();
    const float *sB = sm + 3 * g.seg(), *sC = sB + g.bseg();
    const int tl = (int)(a.len - t0 < g.T ? a.len - t0 : g.T);
#pragma unroll 4
    for (int t = 0; t < tl; t++) {
      const float dt = sdt[t * g.CB + lane_c], uu = su[t * g.CB + lane_c];
      const float du = dt * uu;
      const float2 bv = *(const float2 *)(sB + t * g.NP + gi * SCAN_P);
      const float2 cv = *(const float2 *)(sC + t * g.NP + gi * SCAN_P);
      h[0] = fmaf(exp2f(dt * Ac[0]), h[0], du * bv.x);
      h[1] = fmaf(exp2f(dt * Ac[1]), h[1], du * bv.y);
      float yp = fmaf(cv.y, h[1], cv.x * h[0]);
#pragma unroll
      for (int o = L / 2; o > 0; o >>= 1) yp += __shfl_xor_sync(0xffffffffu, yp, o);
      if (gi == 0) sy[t * g.CB + lane_c] = (yp + Dc * uu) * sg[t * g.CB + lane_c];
      if (a.states_all && cok) {
        float *sa = a.states_all + ((b * a.len + t0 + t) * a.d + c) * a.n + gi * SCAN_P;
        if (gi * SCAN_P < a.n) sa[0] = h[0];
        if (gi * SCAN_P + 1 < a.n) sa[1] = h[1];
      }
    }
    __syncthreads();
    for (int e = threadIdx.x; e < tl * g.CB; e += blockDim.x) {
      int t = e / g.CB, cl = e - t * g.CB;
      if (c0 + cl < a.d) a.y[(b * a.len + t0 + t) * a.ldy + c0 + cl] = sy[e];
    }
    /* the next iteration's copies target the other stage; this stage is rewritten two tiles on,
     * after the __syncthreads above */
  }
  if (st) {
#pragma unroll
    for (int p = 0; p < SCAN_P; p++) {
      int s = gi * SCAN_P + p;
      if (s < a.n) st[s] = h[p];
    }
  }
}

static int scan_lanes(int64_t n) {
  int L = 1;
  while (L * SCAN_P < n) L <<= 1;
  return L;
}

template <int L>
static int scan_tile_launch_l(mb_ctx *ctx, ScanArgs &a, int threads, int T) {
  TileGeom g;
  g.T = T;
  g.CB = threads / L;
  g.NP = L * SCAN_P;
  size_t smem = (size_t)(2 * g.stage() + g.seg()) * sizeof(float);
  if (smem > 48 * 1024) {
    MBCUDA_CHECK(cudaFuncSetAttribute(k_scan_tile<L>, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                      (int)smem),
                 "selective_scan (smem attribute)");
  }
  dim3 grid((unsigned)((a.d + g.CB - 1) / g.CB), (unsigned)a.batch);
  MBCUDA_LAUNCH("selective_scan", k_scan_tile<L>, grid, dim3(threads), smem, a, g);
  return MB_OK;
}

/* The tiled scan for any len (decoding steps too). threads per block: MAMBABYTE_CUDA_SCAN_THREADS
 * (32/64/128/256) or the largest of 128/64/32 whose grid still has >= 4 blocks per SM. T: positions
 * per tile, MAMBABYTE_CUDA_SCAN_T or 32 (at most len). */
static int scan_tile_launch(mb_ctx *ctx, ScanArgs &a) {
  const int L = scan_lanes(a.n);
  int sm = mbcuda_st(ctx)->sm_count;
  int threads = 0, T = 32;
  const char *e = getenv("MAMBABYTE_CUDA_SCAN_THREADS");
  if (e && *e) threads = atoi(e);
  if (threads != 32 && threads != 64 && threads != 128 && threads != 256) threads = 0;
  if (threads && threads < L) threads = 0;
  if (!threads) {
    threads = 32;
    for (int cand = 128; cand >= 32; cand >>= 1) {
      if (cand < L) break;
      int64_t blocks = (a.d + cand / L - 1) / (cand / L) * a.batch;
      if (blocks >= 4 * (int64_t)sm) { threads = cand; break; }
    }
    if (threads < L) threads = L < 32 ? 32 : L;
  }
  const char *et = getenv("MAMBABYTE_CUDA_SCAN_T");
  if (et && *et) {
    int v = atoi(et);
    if (v >= 1 && v <= 256) T = v;
  }
  if (a.len < T) T = (int)a.len;
  if (a.batch > 65535) return mb_fail(MB_ERR_UNSUPPORTED, "cuda: selective_scan: batch > 65535");
  switch (L) {
    case 1: return scan_tile_launch_l<1>(ctx, a, threads, T);
    case 2: return scan_tile_launch_l<2>(ctx, a, threads, T);
    case 4: return scan_tile_launch_l<4>(ctx, a, threads, T);
    case 8: return scan_tile_launch_l<8>(ctx, a, threads, T);
    case 16: return scan_tile_launch_l<16>(ctx, a, threads, T);
    case 32: return scan_tile_launch_l<32>(ctx, a, threads, T);
  }
  return mb_fail(MB_ERR_UNSUPPORTED, "cuda: selective_scan: d_state %d > 64 is not supported", a.n);
}

extern "C" int mbcuda_selective_scan(mb_ctx *ctx, const float *u, int64_t ldu, const float *delta,
                                     int64_t ld_delta, const float *A, const float *Bm,
                                     int64_t ldb, const float *Cm, int64_t ldc,
                                     const float *Dskip, const float *z, int64_t ldz,
                                     float *state, float *states_all, int64_t batch, int64_t len,
                                     int64_t d, int64_t n, int delta_softplus, float *y,
                                     int64_t ldy) {
  if (batch <= 0 || len <= 0 || d <= 0) return MB_OK;
  ScanArgs a = {u, ldu, delta, ld_delta, A, Bm, ldb, Cm, ldc, Dskip, z, ldz, state, states_all,
                batch, len, d, (int)n, delta_softplus, y, ldy, 0, 0, nullptr, nullptr};
  const char *e_old = getenv("MAMBABYTE_CUDA_SCAN");
  /* n >= 1 here: api.c rejects n < 1 */
  if (v3_kernels() && n <= 64 && !(e_old && !strcmp(e_old, "old")))
    return scan_tile_launch(ctx, a);
  if (n <= 4) return scan_launch<4>(ctx, a);
  if (n <= 8) return scan_launch<8>(ctx, a);
  if (n <= 16) return scan_launch<16>(ctx, a);
  if (n <= 32) return scan_launch<32>(ctx, a);
  if (n <= 64) return scan_launch<64>(ctx, a);
  return mb_fail(MB_ERR_UNSUPPORTED, "cuda: selective_scan: d_state %lld > 64 is not supported",
                 (long long)n);
}

/* ---- state update with dt_proj fused (decoding) --------------------------------------------- *
 * mb_selective_state_update_dt: per (b, c) the L lanes of channel c split the dt_rank-long dot
 * product x_dbl[b, :R] . dt_w[c, :] (16-byte weight loads, prefetched into registers before the
 * PDL wait: the weights are constant), reduce it with shuffles, add the bias, then update the
 * channel's n states (P = 2 per lane) exactly as the tiled scan does for one position. x_dbl's
 * first R columns and the B, C rows are staged in shared memory once per block. */
struct SsuDtArgs {
  const float *u; int64_t ldu;
  const float *xdbl; int64_t ldx;
  const void *w; const float *wbias; int R; int wvec;
  const float *A;
  const float *Bm; int64_t ldb;
  const float *Cm; int64_t ldc;
  const float *Dskip;
  const float *z; int64_t ldz;
  float *state;
  int64_t d; int n; int softplus;
  float *delta_out;
  float *y; int64_t ldy;
  int64_t len;        /* positions per sequence: 1 for the decoding step, more for mb_selective_scan_dt */
  float *states_all;  /* (batch, len, d, n) or NULL */
};

#define SSU_MAXC 4

__device__ __forceinline__ float dot16(uint4 w, const float *x, float) {
  float4 a = *(const float4 *)x;
  return __uint_as_float(w.x) * a.x + __uint_as_float(w.y) * a.y + __uint_as_float(w.z) * a.z +
         __uint_as_float(w.w) * a.w;
}
__device__ __forceinline__ float dot16(uint4 w, const float *x, uint16_t) {
  float4 a = *(const float4 *)x, b = *(const float4 *)(x + 4);
  float s = __uint_as_float(w.x << 16) * a.x;
  s = fmaf(__uint_as_float(w.x & 0xffff0000u), a.y, s);
  s = fmaf(__uint_as_float(w.y << 16), a.z, s);
  s = fmaf(__uint_as_float(w.y & 0xffff0000u), a.w, s);
  s = fmaf(__uint_as_float(w.z << 16), b.x, s);
  s = fmaf(__uint_as_float(w.z & 0xffff0000u), b.y, s);
  s = fmaf(__uint_as_float(w.w << 16), b.z, s);
  s = fmaf(__uint_as_float(w.w & 0xffff0000u), b.w, s);
  return s;
}
__device__ __forceinline__ float wval(const float *w, int64_t i) { return __ldg(w + i); }
__device__ __forceinline__ float wval(const uint16_t *w, int64_t i) { return mb_bf16_to_f32(__ldg(w + i)); }

/* One block row per sequence b; positions t = 0..len-1 run in order, the state in registers
 * between them, each with the arithmetic of the one-position decoding step (mb_selective_scan_dt
 * gives every position the bits of mb_selective_state_update_dt: the same code runs both). */
template <int L, typename WT>
__global__ void k_ssu_dt(SsuDtArgs a) {
  extern __shared__ __align__(16) float smem_ssu[];
  mb_pdl_trigger();
  constexpr int EPV = 16 / sizeof(WT);
  const int lane_c = threadIdx.x / L, gi = threadIdx.x % L, CB = blockDim.x / L;
  const int64_t b = blockIdx.y, c = (int64_t)blockIdx.x * CB + lane_c;
  const bool cok = c < a.d;
  const int R = a.R, Rp = (R + 7) & ~7, NP = L * SCAN_P;
  float *xs = smem_ssu, *sB = smem_ssu + Rp, *sC = sB + NP;
  /* constants before the PDL wait */
  float Ac[SCAN_P];
#pragma unroll
  for (int p = 0; p < SCAN_P; p++) {
    int s = gi * SCAN_P + p;
    Ac[p] = (cok && s < a.n) ? a.A[c * a.n + s] * MB_LOG2E : 0.f;
  }
  const float Dc = (cok && a.Dskip) ? a.Dskip[c] : 0.f;
  const float bc = (cok && a.wbias) ? a.wbias[c] : 0.f;
  const WT *wrow = (const WT *)a.w + (cok ? c : 0) * (int64_t)R;
  const int nch = a.wvec ? R / EPV : 0;
  uint4 wr[SSU_MAXC];
#pragma unroll
  for (int q = 0; q < SSU_MAXC; q++) {
    int j = gi + q * L;
    wr[q] = (cok && j < nch) ? __ldg((const uint4 *)wrow + j) : make_uint4(0, 0, 0, 0);
  }
  mb_pdl_wait();
  float h[SCAN_P];
  float *st = a.state + (b * a.d + (cok ? c : 0)) * a.n;
#pragma unroll
  for (int p = 0; p < SCAN_P; p++) {
    int s = gi * SCAN_P + p;
    h[p] = (cok && s < a.n) ? st[s] : 0.f;
  }
  for (int64_t t = 0; t < a.len; t++) {
    const int64_t r = b * a.len + t;
    if (t > 0) __syncthreads(); /* every lane is done with the previous position's rows */
    for (int e = threadIdx.x; e < Rp; e += blockDim.x) xs[e] = e < R ? a.xdbl[r * a.ldx + e] : 0.f;
    for (int e = threadIdx.x; e < NP; e += blockDim.x) {
      sB[e] = e < a.n ? a.Bm[r * a.ldb + e] : 0.f;
      sC[e] = e < a.n ? a.Cm[r * a.ldc + e] : 0.f;
    }
    float uu = 0.f, zz = 0.f;
    if (cok) {
      uu = a.u[r * a.ldu + c];
      if (a.z) zz = a.z[r * a.ldz + c];
    }
    __syncthreads();
    float dot = 0.f;
    if (a.wvec) {
#pragma unroll
      for (int q = 0; q < SSU_MAXC; q++) {
        int j = gi + q * L;
        if (j < nch) dot += dot16(wr[q], xs + j * EPV, WT());
      }
      if (cok)
        for (int j = gi + SSU_MAXC * L; j < nch; j += L)
          dot += dot16(__ldg((const uint4 *)wrow + j), xs + j * EPV, WT());
    } else if (cok) {
      for (int k = gi; k < R; k += L) dot = fmaf(wval(wrow, k), xs[k], dot);
    }
#pragma unroll
    for (int o = L / 2; o > 0; o >>= 1) dot += __shfl_xor_sync(0xffffffffu, dot, o);
    const float draw = dot + bc;
    if (gi == 0 && cok && a.delta_out) a.delta_out[r * a.d + c] = draw;
    const float dt = a.softplus ? mb_softplus(draw) : draw;
    const float du = dt * uu;
    const float2 bv = *(const float2 *)(sB + gi * SCAN_P);
    const float2 cv = *(const float2 *)(sC + gi * SCAN_P);
    h[0] = fmaf(exp2f(dt * Ac[0]), h[0], du * bv.x);
    h[1] = fmaf(exp2f(dt * Ac[1]), h[1], du * bv.y);
    float yp = fmaf(cv.y, h[1], cv.x * h[0]);
#pragma unroll
    for (int o = L / 2; o > 0; o >>= 1) yp += __shfl_xor_sync(0xffffffffu, yp, o);
    if (cok) {
      if (a.states_all) {
        float *sa = a.states_all + (r * a.d + c) * a.n;
#pragma unroll
        for (int p = 0; p < SCAN_P; p++) {
          int s = gi * SCAN_P + p;
          if (s < a.n) sa[s] = h[p];
        }
      }
      if (gi == 0) {
        float yv = yp + Dc * uu;
        if (a.z) yv *= mb_silu(zz);
        a.y[r * a.ldy + c] = yv;
      }
    }
  }
  if (cok) {
#pragma unroll
    for (int p = 0; p < SCAN_P; p++) {
      int s = gi * SCAN_P + p;
      if (s < a.n) st[s] = h[p];
    }
  }
}

template <int L>
static int ssu_dt_launch_l(mb_ctx *ctx, SsuDtArgs &a, int wdtype, int64_t batch) {
  const int threads = L > 64 ? L : 64;
  const int CB = threads / L;
  size_t smem = (size_t)(((a.R + 7) & ~7) + 2 * L * SCAN_P) * sizeof(float);
  dim3 grid((unsigned)((a.d + CB - 1) / CB), (unsigned)batch);
  if (wdtype == MB_DTYPE_BF16) {
    if (smem > 48 * 1024)
      MBCUDA_CHECK(cudaFuncSetAttribute(k_ssu_dt<L, uint16_t>, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)smem), "selective_state_update_dt (smem attribute)");
    MBCUDA_LAUNCH("selective_state_update_dt", k_ssu_dt<L, uint16_t>, grid, dim3(threads), smem, a);
  } else {
    if (smem > 48 * 1024)
      MBCUDA_CHECK(cudaFuncSetAttribute(k_ssu_dt<L, float>, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)smem), "selective_state_update_dt (smem attribute)");
    MBCUDA_LAUNCH("selective_state_update_dt", k_ssu_dt<L, float>, grid, dim3(threads), smem, a);
  }
  return MB_OK;
}

static int ssu_dt_launch(mb_ctx *ctx, SsuDtArgs &a, int wdtype, int64_t batch);

extern "C" int mbcuda_selective_state_update_dt(
    mb_ctx *ctx, const float *u, int64_t ldu, const float *x_dbl, int64_t ld_xdbl,
    const void *dt_w, int wdtype, const float *dt_bias, int64_t dt_rank, const float *A,
    const float *Bm, int64_t ldb, const float *Cm, int64_t ldc, const float *Dskip, const float *z,
    int64_t ldz, float *state, int64_t batch, int64_t d, int64_t n, int delta_softplus,
    float *delta_out, float *y, int64_t ldy) {
  if (batch <= 0 || d <= 0) return MB_OK;
  if (n > 64)
    return mb_fail(MB_ERR_UNSUPPORTED,
                   "cuda: selective_state_update_dt: d_state %lld > 64 is not supported", (long long)n);
  if (batch > 65535 || dt_rank > 8192)
    return mb_fail(MB_ERR_UNSUPPORTED, "cuda: selective_state_update_dt: batch > 65535 or dt_rank > 8192");
  { /* batch > 1: decode_batch.cu (MAMBABYTE_CUDA_DECODE_BATCH=old: the kernel below) */
    int rc = mbcuda_ssu_dt_batch(ctx, u, ldu, x_dbl, ld_xdbl, dt_w, wdtype, dt_bias, dt_rank, A,
                                 Bm, ldb, Cm, ldc, Dskip, z, ldz, state, batch, d, n,
                                 delta_softplus, delta_out, y, ldy);
    if (rc != MBCUDA_NOT_HANDLED) return rc;
  }
  const size_t es = wdtype == MB_DTYPE_BF16 ? 2 : 4;
  const int wvec = ((size_t)dt_rank * es) % 16 == 0 && ((uintptr_t)dt_w & 15) == 0;
  SsuDtArgs a = {u, ldu, x_dbl, ld_xdbl, dt_w, dt_bias, (int)dt_rank, wvec, A, Bm, ldb, Cm, ldc,
                 Dskip, z, ldz, state, d, (int)n, delta_softplus, delta_out, y, ldy, 1, nullptr};
  return ssu_dt_launch(ctx, a, wdtype, batch);
}

/* mb_selective_scan_dt: the decoding step's kernel with a.len positions per sequence. */
extern "C" int mbcuda_selective_scan_dt(
    mb_ctx *ctx, const float *u, int64_t ldu, const float *x_dbl, int64_t ld_xdbl,
    const void *dt_w, int wdtype, const float *dt_bias, int64_t dt_rank, const float *A,
    const float *Bm, int64_t ldb, const float *Cm, int64_t ldc, const float *Dskip, const float *z,
    int64_t ldz, float *state, float *states_all, int64_t batch, int64_t len, int64_t d, int64_t n,
    int delta_softplus, float *delta_out, float *y, int64_t ldy) {
  if (batch <= 0 || len <= 0 || d <= 0) return MB_OK;
  if (n > 64)
    return mb_fail(MB_ERR_UNSUPPORTED,
                   "cuda: selective_scan_dt: d_state %lld > 64 is not supported", (long long)n);
  if (batch > 65535 || dt_rank > 8192)
    return mb_fail(MB_ERR_UNSUPPORTED, "cuda: selective_scan_dt: batch > 65535 or dt_rank > 8192");
  const size_t es = wdtype == MB_DTYPE_BF16 ? 2 : 4;
  const int wvec = ((size_t)dt_rank * es) % 16 == 0 && ((uintptr_t)dt_w & 15) == 0;
  SsuDtArgs a = {u, ldu, x_dbl, ld_xdbl, dt_w, dt_bias, (int)dt_rank, wvec, A, Bm, ldb, Cm, ldc,
                 Dskip, z, ldz, state, d, (int)n, delta_softplus, delta_out, y, ldy, len,
                 states_all};
  return ssu_dt_launch(ctx, a, wdtype, batch);
}

static int ssu_dt_launch(mb_ctx *ctx, SsuDtArgs &a, int wdtype, int64_t batch) {
  switch (scan_lanes(a.n)) {
    case 1: return ssu_dt_launch_l<1>(ctx, a, wdtype, batch);
    case 2: return ssu_dt_launch_l<2>(ctx, a, wdtype, batch);
    case 4: return ssu_dt_launch_l<4>(ctx, a, wdtype, batch);
    case 8: return ssu_dt_launch_l<8>(ctx, a, wdtype, batch);
    case 16: return ssu_dt_launch_l<16>(ctx, a, wdtype, batch);
    default: return ssu_dt_launch_l<32>(ctx, a, wdtype, batch);
  }
}

/* ---- log_softmax, logprob_rank --------------------------------------------------------------- */

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

/* ---- sample ---------------------------------------------------------------------------------- */

#define SAMPLE_VMAX 4096
#define SAMPLE_THREADS 256

/* Sorted order: larger logit first, lower index first on ties. */
__device__ __forceinline__ bool before(float va, int ia, float vb, int ib) {
  return va > vb || (va == vb && ia < ib);
}

/* Counter handling: every block reads *counter; the last block to finish increments it (the
 * "done" counter in context memory returns to 0), so the op replays inside a graph. */
__device__ void sample_finish(int64_t *counter, unsigned int *done) {
  __shared__ bool last;
  __syncthreads();
  if (threadIdx.x == 0) {
    __threadfence();
    unsigned int prev = atomicAdd(done, 1u);
    last = (prev == gridDim.x - 1);
    if (last) {
      *done = 0;
      *(volatile int64_t *)counter = *(volatile int64_t *)counter + 1;
      __threadfence();
    }
  }
}

__global__ void k_sample_greedy(const float *__restrict__ logits, int64_t v, int32_t *out_ids,
                                int64_t *counter, unsigned int *done) {
  MB_PDL_ENTRY();
  __shared__ float sv[32];
  __shared__ int si[32];
  const float *row = logits + blockIdx.x * v;
  float bv = -INFINITY;
  int bi = 0x7fffffff;
  for (int64_t c = threadIdx.x; c < v; c += blockDim.x) {
    float x = row[c];
    if (bi == 0x7fffffff || before(x, (int)c, bv, bi)) { bv = x; bi = (int)c; }
  }
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) {
    float ov = __shfl_xor_sync(0xffffffffu, bv, o);
    int oi = __shfl_xor_sync(0xffffffffu, bi, o);
    if (oi != 0x7fffffff && (bi == 0x7fffffff || before(ov, oi, bv, bi))) { bv = ov; bi = oi; }
  }
  int lane = threadIdx.x & 31, wid = threadIdx.x >> 5, nw = blockDim.x >> 5;
  if (lane == 0) { sv[wid] = bv; si[wid] = bi; }
  __syncthreads();
  if (threadIdx.x == 0) {
    for (int w = 1; w < nw; w++)
      if (si[w] != 0x7fffffff && (bi == 0x7fffffff || before(sv[w], si[w], bv, bi))) {
        bv = sv[w]; bi = si[w];
      }
    out_ids[blockIdx.x] = bi == 0x7fffffff ? 0 : bi;
  }
  sample_finish(counter, done);
}

/* One block per row: bitonic sort of the row (padded to a power of two), then top-k,
 * temperature, top-p and the draw, as the CPU does (csrc/cpu). */
__global__ void __launch_bounds__(SAMPLE_THREADS)
k_sample(const float *__restrict__ logits, int64_t batch, int v, int P, float temperature,
         int top_k, float top_p, uint64_t seed, int64_t *counter, int32_t *out_ids,
         unsigned int *done) {
  MB_PDL_ENTRY();
  extern __shared__ unsigned char smem[];
  float *val = (float *)smem; /* sorted logits, then (in place) their exp-weights */
  int *idx = (int *)(val + P);
  float *p = val;
  __shared__ float red[32];
  const int64_t b = blockIdx.x;
  const float *row = logits + b * v;
  const int64_t ctr = *(volatile int64_t *)counter;
  for (int i = threadIdx.x; i < P; i += blockDim.x) {
    val[i] = i < v ? row[i] : -INFINITY;
    idx[i] = i < v ? i : 0x7fffffff;
  }
  __syncthreads();
  /* bitonic sort, "before" order */
  for (int size = 2; size <= P; size <<= 1) {
    for (int stride = size >> 1; stride > 0; stride >>= 1) {
      for (int i = threadIdx.x; i < P; i += blockDim.x) {
        int j = i ^ stride;
        if (j > i) {
          bool up = (i & size) == 0;
          float vi = val[i], vj = val[j];
          int ii = idx[i], ij = idx[j];
          bool jfirst = before(vj, ij, vi, ii);
          if (jfirst == up) {
            val[i] = vj; val[j] = vi; idx[i] = ij; idx[j] = ii;
          }
        }
      }
      __syncthreads();
    }
  }
  int k = (top_k <= 0 || top_k > v) ? v : top_k;
  /* probabilities of the kept top-k after temperature, relative to the largest */
  float s0 = val[0] / temperature;
  __syncthreads(); /* everyone has read val[0] before it is overwritten */
  float part = 0.f;
  for (int i = threadIdx.x; i < k; i += blockDim.x) {
    float e = expf(val[i] / temperature - s0);
    p[i] = e;
    part += e;
  }
  float total = block_sum(part, red);
  /* top-p: drop the tail whose cumulative probability (ascending) is <= 1 - top_p */
  if (threadIdx.x < 32) {
    int lane = threadIdx.x;
    int kept = k;
    if (top_p > 0.f && top_p < 1.f) {
      float thr = 1.f - top_p;
      float carry = 0.f; /* sum of p over indices above the current chunk, normalised */
      kept = 1;
      for (int base = ((k - 1) / 32) * 32; base >= 0; base -= 32) {
        int i = base + lane;
        float x = i < k ? p[i] / total : 0.f;
        /* suffix sum within the chunk: sum over lanes >= lane */
        float sfx = x;
#pragma unroll
        for (int o = 1; o < 32; o <<= 1) {
          float t = __shfl_down_sync(0xffffffffu, sfx, o);
          if (lane + o < 32) sfx += t;
        }
        float cum = carry + sfx;
        bool keep = (i < k) && (i == 0 || cum > thr);
        unsigned m = __ballot_sync(0xffffffffu, keep);
        if (m) { /* cum decreases with i: the kept set is a prefix */
          int hi = 31 - __clz(m);
          kept = max(kept, base + hi + 1);
        }
        carry += __shfl_sync(0xffffffffu, sfx, 0);
      }
    }
    /* draw over the kept prefix in sorted order */
    float sub = 0.f;
    for (int i = lane; i < kept; i += 32) sub += p[i];
    sub = warp_sum(sub);
    float target = mb_uniform_at(seed, (uint64_t)(ctr * batch + b)) * sub;
    int chosen = kept - 1;
    float run = 0.f;
    for (int base = 0; base < kept; base += 32) {
      int i = base + lane;
      float x = i < kept ? p[i] : 0.f;
      float inc = x;
#pragma unroll
      for (int o = 1; o < 32; o <<= 1) {
        float t = __shfl_up_sync(0xffffffffu, inc, o);
        if (lane >= o) inc += t;
      }
      unsigned m = __ballot_sync(0xffffffffu, i < kept && run + inc > target);
      if (m) { chosen = base + __ffs(m) - 1; break; }
      run += __shfl_sync(0xffffffffu, inc, 31);
    }
    if (lane == 0) out_ids[b] = idx[chosen];
  }
  sample_finish(counter, done);
}

extern "C" int mbcuda_sample(mb_ctx *ctx, const float *logits, int64_t batch, int64_t v,
                             float temperature, int32_t top_k, float top_p, uint64_t seed,
                             int64_t *counter, int32_t *out_ids) {
  if (batch <= 0) return MB_OK;
  if (batch > 0x7fffffff) return mb_fail(MB_ERR_INVALID, "cuda: sample: batch too large");
  cudaStream_t s = mbcuda_stream(ctx);
  unsigned int *done = mbcuda_st(ctx)->done;
  if (top_k == 1 || temperature <= 0.f) {
    MBCUDA_LAUNCH("sample (greedy)", k_sample_greedy, dim3((unsigned)batch), dim3(256), 0, logits, v, out_ids, counter, done);
    return MB_OK;
  }
  if (v > SAMPLE_VMAX)
    return mb_fail(MB_ERR_UNSUPPORTED, "cuda: sample: vocabulary %lld > %d with top_k != 1",
                   (long long)v, SAMPLE_VMAX);
  int P = 32;
  while (P < v) P <<= 1;
  size_t sm = (size_t)P * (sizeof(float) + sizeof(int));
  MBCUDA_LAUNCH("sample", k_sample, dim3((unsigned)batch), dim3(SAMPLE_THREADS), sm, logits, batch, (int)v, P, temperature, top_k, top_p, seed, counter, out_ids, done);
  return MB_OK;
}

/* ---- read_probe ------------------------------------------------------------------------------ */

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
