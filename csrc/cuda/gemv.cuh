/*
 * gemv.cuh — the n <= 8 GEMV of mb_linear as a device function, shared by its kernel and
 * mb_decode_layers' batch-1 forms (k_gemv, k_gemv_norm, k_gemv_res in gemm.cu), so they give the
 * same bits; a kernel that runs every layer of a step (branch decode-persistent) reuses it too.
 */
#ifndef MAMBABYTE_GEMV_CUH
#define MAMBABYTE_GEMV_CUH

#include <cuda_fp16.h>
#include <stdint.h>

#include "cuda_internal.cuh"

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
/* fp16 weights (MB_DTYPE_F16: the decoding twins of fp32 in_proj and out_proj) */
__device__ __forceinline__ void unpack(const uint4 &q, float (&f)[8], __half) {
  const uint32_t v[4] = {q.x, q.y, q.z, q.w};
#pragma unroll
  for (int i = 0; i < 4; i++) {
    const float2 t = __half22float2(*(const __half2 *)&v[i]); /* .x: the low half, as bf16's */
    f[2 * i] = t.x;
    f[2 * i + 1] = t.y;
  }
}
__device__ __forceinline__ float wload(const uint16_t *p) { return __uint_as_float(((uint32_t)*p) << 16); }
__device__ __forceinline__ float wload(const __half *p) { return __half2float(*p); }
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

/* The window conv_epi_warp reads (the row's state, oldest first; zeros past k - 1, and all zeros
 * when k > CONV_EPI_KMAX, where conv_epi reads its own): loaded apart, so that a caller can ask for
 * it before it waits for the row's value. */
__device__ __forceinline__ void conv_window(const ConvEpi &ce, int64_t row,
                                            float (&old)[CONV_EPI_KMAX - 1]) {
  const int k = ce.k;
  const float *st = ce.state + row * (k - 1);
#pragma unroll
  for (int i = 0; i < CONV_EPI_KMAX - 1; i++)
    old[i] = k <= CONV_EPI_KMAX && i < k - 1 ? st[i] : 0.f;
}

/* conv_epi (input 0) run by every lane of a warp that holds the same xv, with only `store` (one
 * lane) writing: no branch a lane, so the warp's next row need not wait for one lane's tail. `old`:
 * the row's window (conv_window). The same operations in the same order as conv_epi, so the same
 * bits. A function of its own: conv_epi written this way (or given a store flag) changed the
 * register allocation of the GEMV kernels that call it, spilling in three of them (ptxas), which no
 * H200 run has measured. */
__device__ __forceinline__ void conv_epi_warp(const ConvEpi &ce, const float (&cw)[CONV_EPI_KMAX],
                                              float cb, const float (&old)[CONV_EPI_KMAX - 1],
                                              int64_t row, float xv, bool store) {
  const int k = ce.k;
  if (k > CONV_EPI_KMAX) {
    if (store) conv_epi(ce, cw, cb, 0, row, xv);
    return;
  }
  float *st = ce.state + row * (k - 1);
  float acc = cb;
#pragma unroll
  for (int i = 0; i < CONV_EPI_KMAX - 1; i++)
    if (i < k - 1) acc = fmaf(cw[i], old[i], acc);
  acc = fmaf(cw[CONV_EPI_KMAX - 1], xv, acc);
  const float o = acc / (1.f + expf(-acc));
  if (store) {
#pragma unroll
    for (int i = 0; i + 1 < CONV_EPI_KMAX - 1; i++)
      if (i + 1 < k - 1) st[i] = old[i + 1];
    if (k > 1) st[k - 2] = xv;
    ce.out[row] = o;
  }
}

__device__ __forceinline__ void prefetch_l2(const void *p) {
  asm volatile("prefetch.global.L2 [%0];" ::"l"(p));
}
__device__ __forceinline__ void prefetch_l1(const void *p) {
  asm volatile("prefetch.global.L1 [%0];" ::"l"(p));
}

/* acc + w . x over 4 elements, with the operations in the order the compiler chose for
 * `acc += w0 x0 + w1 x1 + w2 x2 + w3 x3` (the form every GEMV's bits were checked with): spelled
 * out, so that every instantiation rounds the same way. */
__device__ __forceinline__ float dot4_acc(float acc, const float *w, const float4 &x) {
  float t = __fmul_rn(w[1], x.y);
  t = __fmaf_rn(w[0], x.x, t);
  t = __fmaf_rn(w[2], x.z, t);
  t = __fmaf_rn(w[3], x.w, t);
  return __fadd_rn(acc, t);
}

/* The conv epilogue's constants of one row: taps 0..k-2 at 0.., the last at KMAX-1. */
__device__ __forceinline__ void conv_consts(const ConvEpi &ce, int64_t row,
                                            float (&cw)[CONV_EPI_KMAX], float &cb) {
  if (ce.k <= CONV_EPI_KMAX) {
#pragma unroll
    for (int i = 0; i < CONV_EPI_KMAX - 1; i++)
      if (i < ce.k - 1) cw[i] = ce.w[row * ce.k + i];
    cw[CONV_EPI_KMAX - 1] = ce.w[row * ce.k + ce.k - 1];
  }
  if (ce.b) cb = ce.b[row];
}

/* One block's work of the GEMV (`blk` plays blockIdx.x, `nthr` blockDim.x). A group of G
 * consecutive threads computes R output rows (rpb = nthr / G apart) for N of the inputs (G = 256:
 * the whole block, reduced through shared memory; else nthr / G groups per block). The n inputs
 * are split into ceil(n / N) groups, one per block of a run of `jsplit` adjacent blocks that share
 * their weight rows (so they meet in L2). An output element's arithmetic does not depend on N, R
 * or the split: lane g of its group sums the same chunks in the same order, then the same
 * reduction, so every split gives the bits of n = 1 (verification's bits are decoding's). R > 1
 * (the 16-byte path only) reuses each x value loaded for R rows: with N inputs a thread read
 * N x values per weight (8-row products 1.4-1.6x faster with R = 4, docs/cuda_notes.md).
 * VEC: 16-byte loads of w (EPC elements) and x (aligned, in_f a multiple of EPC, ldx a multiple
 * of 4). Before `wait()` (every thread calls it once, at the same point: the kernel's PDL wait,
 * or k_gemv_norm's norm prologue) the first weight chunks of each thread are loaded and the rest
 * of its rows prefetched into L2: the weights stream while earlier work finishes.
 * x is read through XL (its loads only: the arithmetic is the same for every XL). A caller that
 * runs it twice in one block must __syncthreads() in between (G = 256 reuses `red`). RES: also
 * res[j * ldy + row] += each output (the next layer's residual add, where the value is made),
 * unless res is NULL (the last layer's out_proj: y alone). */
template <typename WT, int N, int G, bool VEC, bool CONV, XLoad XL, typename Wait, bool RES = false,
          int R = 1, int UN = 0>
__device__ __forceinline__ void gemv_block(const float *__restrict__ x, int64_t ldx,
                                           const WT *__restrict__ w,
                                           const float *__restrict__ bias, int n, int64_t in_f,
                                           int64_t out_f, float *__restrict__ y, int64_t ldy,
                                           const ConvEpi &ce, int jsplit, unsigned blk, int nthr,
                                           Wait wait, float *res = nullptr) {
  static_assert(R == 1 || VEC, "several rows a thread: the 16-byte path only");
  using XLC = XLoadTag<XL>;
  constexpr int EPC = 16 / (int)sizeof(WT);
  const int rpb = nthr / G;
  const int g = threadIdx.x % G;
  const int j0 = (int)(blk % (unsigned)jsplit) * N; /* this block's first input */
  x += j0 * ldx;
  y += j0 * ldy;
  n = min(N, n - j0);
  const int64_t row0 = (int64_t)(blk / (unsigned)jsplit) * rpb * R + threadIdx.x / G;
  int64_t row[R];
  bool valid[R];
#pragma unroll
  for (int r = 0; r < R; r++) {
    row[r] = row0 + (int64_t)r * rpb;
    valid[r] = row[r] < out_f;
    if (!valid[r]) row[r] = out_f - 1; /* keep the group's lanes in the shuffles */
  }
  /* conv epilogue constants: one row's before the PDL wait, several rows' in the epilogue */
  float cw[CONV_EPI_KMAX] = {0.f, 0.f, 0.f, 0.f}, cb = 0.f;
  if (R == 1 && CONV && valid[0] && row[0] < ce.dc) conv_consts(ce, row[0], cw, cb);
  float acc[R][N];
#pragma unroll
  for (int r = 0; r < R; r++)
#pragma unroll
    for (int j = 0; j < N; j++) acc[r][j] = 0.f;
  if (VEC) {
    /* chunks in flight per row: UN, else GEMV_UNROLL / R */
    constexpr int U = UN > 0 ? UN : GEMV_UNROLL / R > 0 ? GEMV_UNROLL / R : 1;
    const int64_t nch = in_f / EPC;
    const uint4 *w4[R];
#pragma unroll
    for (int r = 0; r < R; r++) w4[r] = (const uint4 *)(w + row[r] * in_f);
    uint4 q[U][R];
#pragma unroll
    for (int u = 0; u < U; u++) {
      int64_t ch = g + (int64_t)u * G;
#pragma unroll
      for (int r = 0; r < R; r++) q[u][r] = ch < nch ? __ldcs(w4[r] + ch) : make_uint4(0, 0, 0, 0);
    }
    for (int64_t ch = g + (int64_t)U * G; ch < nch; ch += G)
#pragma unroll
      for (int r = 0; r < R; r++) prefetch_l2(w4[r] + ch);
    wait();
    for (int64_t base = g; base < nch; base += (int64_t)G * U) {
      if (base != g) {
#pragma unroll
        for (int u = 0; u < U; u++) {
          int64_t ch = base + (int64_t)u * G;
#pragma unroll
          for (int r = 0; r < R; r++)
            q[u][r] = ch < nch ? __ldcs(w4[r] + ch) : make_uint4(0, 0, 0, 0);
        }
      }
      /* a block-a-row product of one input with fp32 weights (x_proj at batch 1): every x chunk
       * of this pass asked for at once, before any arithmetic, where the loop below (a branch a
       * chunk) waited for each chunk's load after the previous chunk's FMAs: one L2 round trip a
       * chunk after the PDL wait (SASS), 3-4 of them at 972M's 3584 inputs. The same operations in
       * the same order, so the same bits. H100, one call against the tree before: x_proj 2.36
       * against 2.77 us exposed a layer, the fp32 step 1,596-1,598 against 1,634-1,636 us; bf16
       * weights (two chunks a thread) 2.02 against 1.93, so they keep the loop
       * (docs/cuda_notes.md, "Loads the compiler had put one after another"). */
      constexpr bool XFIRST =
          N == 1 && R == 1 && G == 256 && sizeof(WT) == 4 && XL != XLoad::Generic;
      float4 xf[XFIRST ? U : 1][EPC / 4];
      if constexpr (XFIRST) {
#pragma unroll
        for (int u = 0; u < U; u++) {
          const int64_t ch = base + (int64_t)u * G;
          const float4 *xp = (const float4 *)(x + ch * EPC);
#pragma unroll
          for (int e = 0; e < EPC / 4; e++)
            xf[u][e] = ch < nch ? xload(xp + e, XLC()) : make_float4(0.f, 0.f, 0.f, 0.f);
        }
      }
#pragma unroll
      for (int u = 0; u < U; u++) {
        int64_t ch = base + (int64_t)u * G;
        if (ch < nch) {
          float wf[R][EPC];
#pragma unroll
          for (int r = 0; r < R; r++) unpack(q[u][r], wf[r], WT());
#pragma unroll
          for (int j = 0; j < N; j++) {
            if (j < n) {
              const float4 *xp = (const float4 *)(x + j * ldx + ch * EPC);
#pragma unroll
              for (int e = 0; e < EPC / 4; e++) {
                const float4 xv = XFIRST ? xf[XFIRST ? u : 0][e] : xload(xp + e, XLC());
#pragma unroll
                for (int r = 0; r < R; r++) acc[r][j] = dot4_acc(acc[r][j], &wf[r][4 * e], xv);
              }
            }
          }
        }
      }
    }
  } else {
    const WT *wr = w + row[0] * in_f;
    wait();
    for (int64_t k = g; k < in_f; k += G) {
      float wv = wload(wr + k);
#pragma unroll
      for (int j = 0; j < N; j++)
        if (j < n) acc[0][j] += wv * xload(x + j * ldx + k, XLC());
    }
  }
  /* reduce over the group */
  constexpr int WG = G < 32 ? G : 32;
#pragma unroll
  for (int r = 0; r < R; r++)
#pragma unroll
    for (int j = 0; j < N; j++) {
#pragma unroll
      for (int o = WG / 2; o > 0; o >>= 1)
        acc[r][j] += __shfl_xor_sync(0xffffffffu, acc[r][j], o, WG);
    }
  /* one output: the row's value s for input j (of this block's inputs) */
  const auto put = [&](int64_t orow, int j, float s, const float (&ccw)[CONV_EPI_KMAX],
                       float ccb) {
    y[j * ldy + orow] = s;
    if constexpr (RES)
      if (res) res[j * ldy + orow] += s;
    if (CONV && orow < ce.dc) conv_epi(ce, ccw, ccb, j0 + j, orow, s);
  };
  if constexpr (G > 32) {
    constexpr int NW = G / 32;
    __shared__ float red[NW][R * N];
    const int wid = threadIdx.x / 32, lane = threadIdx.x % 32;
    if (lane == 0) {
#pragma unroll
      for (int r = 0; r < R; r++)
#pragma unroll
        for (int j = 0; j < N; j++) red[wid][r * N + j] = acc[r][j];
    }
    __syncthreads();
    /* thread t < R N writes row r = t / N (rpb = 1 here: G = nthr) for input j = t % N */
    const int t = threadIdx.x, r = t / N, j = t % N;
    const int64_t orow = row0 + (int64_t)r * rpb;
    if (t < R * N && j < n && orow < out_f) {
      float s = 0.f;
#pragma unroll
      for (int i = 0; i < NW; i++) s += red[i][t];
      s += bias ? bias[orow] : 0.f;
      if (R > 1 && CONV && orow < ce.dc) conv_consts(ce, orow, cw, cb);
      put(orow, j, s, cw, cb);
    }
  } else {
    if (g == 0) {
#pragma unroll
      for (int r = 0; r < R; r++) {
        if (!valid[r]) continue;
        float b = bias ? bias[row[r]] : 0.f;
        if (R > 1 && CONV && row[r] < ce.dc) conv_consts(ce, row[r], cw, cb);
#pragma unroll
        for (int j = 0; j < N; j++)
          if (j < n) put(row[r], j, acc[r][j] + b, cw, cb);
      }
    }
  }
}


/* The group size G of an n <= 8 GEMV: few rows (under `g256_rows` per SM) take a whole block
 * per row, split over the inner dimension; `units`: loads per row (in_f / EPC when
 * vectorised). */
static inline int gemv_group_size(int64_t out_f, int64_t units, int sm_count, int g256_rows) {
  if (out_f < g256_rows * (int64_t)sm_count && units >= 128) return 256;
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
