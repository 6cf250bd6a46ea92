/*
 * gemv.cuh — the n <= 8 GEMV of mb_linear as a device function, shared by its kernel (gemm.cu) and
 * the decoding kernel that runs every layer of a step (decode.cu), so both give the same bits.
 */
#ifndef MAMBABYTE_GEMV_CUH
#define MAMBABYTE_GEMV_CUH

#include <stdint.h>

#include "cuda_internal.cuh"

/* How the GEMV and the state update read activations: through the read-only path (written by
 * an earlier kernel), from L2 only (written by other blocks of the same kernel: the L1 of this
 * SM may hold a stale line), or generic (shared memory). */
enum class XLoad { Ldg, Cg, Generic };
template <XLoad XL> struct XLoadTag {};
__device__ __forceinline__ float4 xload(const float4 *p, XLoadTag<XLoad::Ldg>) { return __ldg(p); }
__device__ __forceinline__ float4 xload(const float4 *p, XLoadTag<XLoad::Cg>) { return __ldcg(p); }
__device__ __forceinline__ float4 xload(const float4 *p, XLoadTag<XLoad::Generic>) { return *p; }
__device__ __forceinline__ float xload(const float *p, XLoadTag<XLoad::Ldg>) { return __ldg(p); }
__device__ __forceinline__ float xload(const float *p, XLoadTag<XLoad::Cg>) { return __ldcg(p); }
__device__ __forceinline__ float xload(const float *p, XLoadTag<XLoad::Generic>) { return *p; }

__device__ __forceinline__ void unpack(const uint4 &q, float (&f)[8], uint16_t) {
  const uint32_t v[4] = {q.x, q.y, q.z, q.w};
#pragma unroll
  for (int i = 0; i < 4; i++) {
    f[2 * i] = __uint_as_float(v[i] << 16);
    f[2 * i + 1] = __uint_as_float(v[i] & 0xffff0000u);
  }
}
__device__ __forceinline__ void unpack(const uint4 &q, float (&f)[4], float) {
  f[0] = __uint_as_float(q.x);
  f[1] = __uint_as_float(q.y);
  f[2] = __uint_as_float(q.z);
  f[3] = __uint_as_float(q.w);
}
__device__ __forceinline__ float wload(const uint16_t *p) { return __uint_as_float(((uint32_t)*p) << 16); }
__device__ __forceinline__ float wload(const float *p) { return *p; }

#define GEMV_UNROLL 4

/* Optional GEMV epilogue (mb_linear_conv1d_step): for output rows < dc, the decoding step of the
 * causal depthwise conv1d on the value just computed, by the thread that writes it (state of
 * sequence j at state + (j * dc + row) * (k - 1), oldest first; out = silu(pre)). w == NULL: off. */
struct ConvEpi {
  const float *w, *b;
  float *state, *out;
  int64_t ldo, dc;
  int k;
};
#define CONV_EPI_KMAX 4

__device__ __forceinline__ void conv_epi(const ConvEpi &ce, const float (&cw)[CONV_EPI_KMAX],
                                         float cb, int j, int64_t row, float xv) {
  float *st = ce.state + ((int64_t)j * ce.dc + row) * (ce.k - 1);
  const int k = ce.k;
  float acc = cb;
  if (k <= CONV_EPI_KMAX) {
#pragma unroll
    for (int i = 0; i < CONV_EPI_KMAX - 1; i++)
      if (i < k - 1) acc = fmaf(cw[i], st[i], acc);
    acc = fmaf(cw[CONV_EPI_KMAX - 1], xv, acc); /* cw holds the last tap at index KMAX-1 */
  } else {
    const float *w = ce.w + row * k;
    for (int i = 0; i < k - 1; i++) acc = fmaf(w[i], st[i], acc);
    acc = fmaf(w[k - 1], xv, acc);
  }
  for (int i = 0; i + 1 < k - 1; i++) st[i] = st[i + 1];
  if (k > 1) st[k - 2] = xv;
  ce.out[(int64_t)j * ce.ldo + row] = acc / (1.f + expf(-acc));
}

__device__ __forceinline__ void prefetch_l2(const void *p) {
  asm volatile("prefetch.global.L2 [%0];" ::"l"(p));
}

/* One block's work of the GEMV (`blk` plays blockIdx.x, `nthr` blockDim.x). A group of G
 * consecutive threads computes one output row for N of the inputs (G = 256: the whole block,
 * reduced through shared memory; else nthr / G rows per block). The n inputs
 * are split into ceil(n / N) groups, one per block of a run of `jsplit` adjacent blocks that share
 * their weight rows (so they meet in L2). An output element's arithmetic does not depend on N or
 * the split: lane g of its group sums the same chunks in the same order, then the same reduction,
 * so every split gives the bits of n = 1 (verification's bits are decoding's).
 * VEC: 16-byte loads of w (EPC elements) and x (aligned, in_f a multiple of EPC, ldx a multiple
 * of 4). Before `wait()` (every thread calls it once, at the same point: k_gemv's PDL wait, the
 * decoding kernel's grid barrier) the first GEMV_UNROLL weight chunks of each thread are loaded
 * and the rest of its row prefetched into L2: the weights stream while earlier work finishes.
 * x is read through XL (its loads only: the arithmetic is the same for every XL). A caller that
 * runs it twice in one block must __syncthreads() in between (G = 256 reuses `red`). RES: also
 * res[j * ldy + row] += each output (the next layer's residual add, where the value is made). */
template <typename WT, int N, int G, bool VEC, bool CONV, XLoad XL, typename Wait, bool RES = false>
__device__ __forceinline__ void gemv_block(const float *__restrict__ x, int64_t ldx,
                                           const WT *__restrict__ w,
                                           const float *__restrict__ bias, int n, int64_t in_f,
                                           int64_t out_f, float *__restrict__ y, int64_t ldy,
                                           const ConvEpi &ce, int jsplit, unsigned blk, int nthr,
                                           Wait wait, float *res = nullptr) {
  using XLC = XLoadTag<XL>;
  constexpr int EPC = 16 / (int)sizeof(WT);
  const int rpb = nthr / G;
  const int g = threadIdx.x % G;
  const int j0 = (int)(blk % (unsigned)jsplit) * N; /* this block's first input */
  x += j0 * ldx;
  y += j0 * ldy;
  n = min(N, n - j0);
  int64_t row = (int64_t)(blk / (unsigned)jsplit) * rpb + threadIdx.x / G;
  const bool valid = row < out_f;
  if (!valid) row = out_f - 1; /* keep the group's lanes in the shuffles */
  const WT *wr = w + row * in_f;
  /* conv epilogue constants (before the PDL wait): taps 0..k-2 at 0.., the last at KMAX-1 */
  const bool conv = CONV && valid && row < ce.dc;
  float cw[CONV_EPI_KMAX] = {0.f, 0.f, 0.f, 0.f}, cb = 0.f;
  if (conv && ce.k <= CONV_EPI_KMAX) {
#pragma unroll
    for (int i = 0; i < CONV_EPI_KMAX - 1; i++)
      if (i < ce.k - 1) cw[i] = ce.w[row * ce.k + i];
    cw[CONV_EPI_KMAX - 1] = ce.w[row * ce.k + ce.k - 1];
  }
  if (conv && ce.b) cb = ce.b[row];
  float acc[N];
#pragma unroll
  for (int j = 0; j < N; j++) acc[j] = 0.f;
  if (VEC) {
    const int64_t nch = in_f / EPC;
    const uint4 *w4 = (const uint4 *)wr;
    uint4 q[GEMV_UNROLL];
#pragma unroll
    for (int u = 0; u < GEMV_UNROLL; u++) {
      int64_t ch = g + (int64_t)u * G;
      q[u] = ch < nch ? __ldcs(w4 + ch) : make_uint4(0, 0, 0, 0);
    }
    for (int64_t ch = g + (int64_t)GEMV_UNROLL * G; ch < nch; ch += G) prefetch_l2(w4 + ch);
    wait();
    for (int64_t base = g; base < nch; base += (int64_t)G * GEMV_UNROLL) {
      if (base != g) {
#pragma unroll
        for (int u = 0; u < GEMV_UNROLL; u++) {
          int64_t ch = base + (int64_t)u * G;
          q[u] = ch < nch ? __ldcs(w4 + ch) : make_uint4(0, 0, 0, 0);
        }
      }
#pragma unroll
      for (int u = 0; u < GEMV_UNROLL; u++) {
        int64_t ch = base + (int64_t)u * G;
        if (ch < nch) {
          float wf[EPC];
          unpack(q[u], wf, WT());
#pragma unroll
          for (int j = 0; j < N; j++) {
            if (j < n) {
              const float4 *xp = (const float4 *)(x + j * ldx + ch * EPC);
#pragma unroll
              for (int e = 0; e < EPC / 4; e++) {
                float4 xv = xload(xp + e, XLC());
                acc[j] += wf[4 * e] * xv.x + wf[4 * e + 1] * xv.y + wf[4 * e + 2] * xv.z +
                          wf[4 * e + 3] * xv.w;
              }
            }
          }
        }
      }
    }
  } else {
    wait();
    for (int64_t k = g; k < in_f; k += G) {
      float wv = wload(wr + k);
#pragma unroll
      for (int j = 0; j < N; j++)
        if (j < n) acc[j] += wv * xload(x + j * ldx + k, XLC());
    }
  }
  /* reduce over the group */
  constexpr int WG = G < 32 ? G : 32;
#pragma unroll
  for (int j = 0; j < N; j++) {
#pragma unroll
    for (int o = WG / 2; o > 0; o >>= 1) acc[j] += __shfl_xor_sync(0xffffffffu, acc[j], o, WG);
  }
  if constexpr (G > 32) {
    constexpr int NW = G / 32;
    __shared__ float red[NW][N];
    const int wid = threadIdx.x / 32, lane = threadIdx.x % 32;
    if (lane == 0) {
#pragma unroll
      for (int j = 0; j < N; j++) red[wid][j] = acc[j];
    }
    __syncthreads();
    if (threadIdx.x < N && threadIdx.x < n && valid) {
      float s = 0.f;
#pragma unroll
      for (int i = 0; i < NW; i++) s += red[i][threadIdx.x];
      s += bias ? bias[row] : 0.f;
      y[threadIdx.x * ldy + row] = s;
      if constexpr (RES) res[threadIdx.x * ldy + row] += s;
      if (conv) conv_epi(ce, cw, cb, j0 + threadIdx.x, row, s);
    }
  } else {
    if (g == 0 && valid) {
      float b = bias ? bias[row] : 0.f;
#pragma unroll
      for (int j = 0; j < N; j++)
        if (j < n) {
          y[j * ldy + row] = acc[j] + b;
          if constexpr (RES) res[j * ldy + row] += acc[j] + b;
          if (conv) conv_epi(ce, cw, cb, j0 + j, row, acc[j] + b);
        }
    }
  }
}


/* The group size G of an n <= 8 GEMV: few rows (under ~16 per SM) take a whole block per row,
 * split over the inner dimension; `units`: loads per row (in_f / EPC when vectorised). */
static inline int gemv_group_size(int64_t out_f, int64_t units, int sm_count) {
  if (out_f < 16 * (int64_t)sm_count && units >= 128) return 256;
  if (units >= 128) return 32;
  if (units >= 32) return 8;
  return 4;
}

/* Whether the GEMV takes 16-byte loads of w and x (in_f a multiple of EPC, ldx of 4, aligned). */
static inline bool gemv_vec(int64_t in_f, int64_t ldx, const void *x, const void *w, int wbytes) {
  const int epc = 16 / wbytes;
  return (in_f % epc) == 0 && (ldx % 4) == 0 && ((uintptr_t)x % 16) == 0 &&
         ((uintptr_t)w % 16) == 0;
}

#endif
