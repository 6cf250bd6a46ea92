/*
 * scan.cu — mb_selective_scan on CUDA. Two forms:
 * - k_scan_tile (long sequences, n <= 16, no states_all, enough channels to fill the GPU): parallel
 *   in time. A channel's 256-position chunk is split over L = 16 lanes that own K = 16
 *   consecutive positions each (two channels per warp). Per state, each lane composes its
 *   positions' (exp(dt A), dt u B) pairs, a warp-shuffle scan gives each lane
 *   its entering state, and the lane reruns its positions from it, so every exp is computed once
 *   and the carry between chunks stays in registers. Operands reach shared memory by coalesced
 *   cp.async copies (B and C once for the block's channels).
 * - k_scan_seq: one thread per (batch, channel), the n states in registers; when batch * d is small
 *   and len >= 64, the sequence is cut into chunks run in three passes (chunk-local scan, carry
 *   across chunks, output), the carries in the context's scratch. It also serves states_all.
 * The CPU version (csrc/cpu/scan.c) is the reference; csrc/tests/cuda_vs_cpu.c holds the two equal.
 */
#include <cuda_fp16.h>
#include <math.h>
#include <stdint.h>

#include "cuda_internal.cuh"

struct ScanArgs {
  const float *u; int64_t ldu;
  const float *delta; int64_t ld_delta;
  const float *delta_bias; /* (d) or NULL: added to delta before the softplus */
  const float *A;
  const float *Bm; int64_t ldb;
  const float *Cm; int64_t ldc;
  const float *Dskip;
  const float *z; int64_t ldz;
  const uint16_t *u_h;     /* u as bf16 bits (then u is NULL), ld ldu */
  const uint16_t *delta_h; /* delta as bf16 bits (then delta is NULL), ld ld_delta */
  const uint16_t *z_h;     /* z as bf16 bits (then z is NULL), ld ldz */
  const int32_t *u_exp;    /* u_h holds u's scaled fp16 rows, fp16(u 2^e) with e = *u_exp
                            * (mb_selective_scan's u_f16_exp), or NULL */
  const int32_t *delta_exp; /* the same for delta_h (delta_f16_exp), or NULL */
  float *state;
  float *states_all;
  int64_t batch, len, d;
  int n;
  int softplus;
  float *y; int64_t ldy;
  uint16_t *y_bf16;   /* (rows, ldy) bf16 bits of y, or NULL; y may be NULL then */
  int32_t *y_exp;     /* y's scaled fp16 exponent (mb_selective_scan's y_f16_exp), or NULL */
  unsigned *y_amax;   /* the tile scan's [0] largest |y| (bits), [1] blocks done: both 0
                       * between launches (the last block puts them back) */
  /* chunked scan */
  int64_t chunk;      /* positions per chunk */
  int64_t nchunks;
  float *hloc;        /* (batch, nchunks, d, n): chunk-local end state, then the state entering */
  float *dtsum;       /* (batch, nchunks, d): sum of dt over the chunk */
};

/* 2^-e as two floats (2^-e may not be one): v * s1 * s2 is v 2^-e exactly for the values of a
 * scaled fp16 row (their products with 2^-e are fp32 normals or zero). */
__device__ __forceinline__ void scan_unscale_factors(const int32_t *e, float *s1, float *s2) {
  mb_f16_scale_factors(-*e, s1, s2);
}

/* u, delta and z at row r, channel c, from fp32, bf16 or scaled fp16 rows (the same value). */
__device__ __forceinline__ float scan_u_at(const ScanArgs &a, int64_t r, int64_t c) {
  if (a.u_h && a.u_exp) {
    float s1, s2;
    scan_unscale_factors(a.u_exp, &s1, &s2);
    return __half2float(__ushort_as_half(a.u_h[r * a.ldu + c])) * s1 * s2;
  }
  return a.u_h ? mb_bf16_to_f32(a.u_h[r * a.ldu + c]) : __ldg(a.u + r * a.ldu + c);
}
__device__ __forceinline__ float scan_delta_at(const ScanArgs &a, int64_t r, int64_t c) {
  if (a.delta_h && a.delta_exp) {
    float s1, s2;
    scan_unscale_factors(a.delta_exp, &s1, &s2);
    return __half2float(__ushort_as_half(a.delta_h[r * a.ld_delta + c])) * s1 * s2;
  }
  return a.delta_h ? mb_bf16_to_f32(a.delta_h[r * a.ld_delta + c])
                   : __ldg(a.delta + r * a.ld_delta + c);
}
__device__ __forceinline__ float scan_z_at(const ScanArgs &a, int64_t r, int64_t c) {
  return a.z_h ? mb_bf16_to_f32(a.z_h[r * a.ldz + c]) : __ldg(a.z + r * a.ldz + c);
}

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
  const float dbias = a.delta_bias ? a.delta_bias[c] : 0.f;
  float dts = 0.f;
  for (int64_t t = t0; t < t1; t++) {
    int64_t r = b * a.len + t;
    float uu = scan_u_at(a, r, c);
    float dt = scan_delta_at(a, r, c);
    if (a.delta_bias) dt += dbias;
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
      if (a.z || a.z_h) yv *= mb_silu(scan_z_at(a, r, c));
      if (a.y) a.y[r * a.ldy + c] = yv;
      if (a.y_bf16) a.y_bf16[r * a.ldy + c] = mb_f32_to_bf16(yv);
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


/* ---- parallel-in-time form --------------------------------------------------------------------- */

/* A chunk of SCAN_TC positions per channel; its lanes own K consecutive positions each
 * (L = SCAN_TC / K lanes per channel, 32 / L channels per warp). K = 16 runs: two channels per
 * warp, half the shuffle-scan steps per position of K = 8 (a warp per channel; 4 levels over 16
 * positions instead of 5 over 8) for twice the registers per lane. K = 8 lost (524 against 487 us
 * a 972M layer at 8192 positions, H200) and is no longer built. */
#define SCAN_TC 256
#define SCAN_TILE_CH 14 /* channels per block: 3584 / 14 = 256 blocks, one round at two blocks per
                         * SM on 132 SMs (8 channels: 448 blocks, 894 us against 724 on the H200) */
#define SCAN_TILE_NMAX 16

template <int K>
struct ScanTile {
  static constexpr int L = SCAN_TC / K;        /* lanes per channel */
  static constexpr int CPW = 32 / L;           /* channels per warp */
  static constexpr int THREADS = SCAN_TILE_CH * L;
  static constexpr int STRIDE = K + 4;         /* a lane's positions in shared memory: float4-aligned,
                                                * and 8 lanes' float4 reads fall on distinct banks */
  static constexpr int ROW = L * STRIDE + 4;   /* one state's or channel's row (+4 spreads the
                                                * staging writes) */
  static_assert(SCAN_TC % K == 0 && 32 % L == 0 && SCAN_TILE_CH % CPW == 0, "tile shape");
  static_assert(K % 8 == 0 && 32 % K == 0, "rows of a staging pass map to whole lane groups");
  /* position tl of a row */
  __device__ static __forceinline__ int pos(int tl) { return (tl / K) * STRIDE + tl % K; }
  static size_t smem(int n) { return (size_t)(2 * n + 2 * SCAN_TILE_CH) * ROW * sizeof(float); }
};

/* Thread i of the block stages channel w = i % SCAN_TILE_CH of rows tl0 + R j (tl0 = i /
 * SCAN_TILE_CH, R = THREADS / SCAN_TILE_CH = L rows per pass): consecutive threads along the
 * channels, the row pointer advanced by R rows. `rows`: the chunk's positions before the end. */

/* Stages one per-channel operand (u, delta or z; row r = b * len + t at src + r * ld) of the
 * block's channels for the chunk at t0 into rows of dst; past the end of the sequence or of the
 * channels: zeros. */
template <int K>
__device__ __forceinline__ void scan_stage_rows(const ScanArgs &a, int64_t b, int64_t c0,
                                                int64_t t0, int rows, const float *src,
                                                int64_t ld, float *dst) {
  using T = ScanTile<K>;
  constexpr int R = T::L;
  const int w = threadIdx.x % SCAN_TILE_CH, tl0 = threadIdx.x / SCAN_TILE_CH;
  const bool cok = c0 + w < a.d;
  const float *p = src + (b * a.len + t0 + tl0) * ld + (cok ? c0 + w : 0);
  const int64_t step = R * ld;
  float *q = dst + w * T::ROW + T::pos(tl0);
  if (cok && rows == SCAN_TC) { /* a whole chunk of a real channel: no per-row predicate */
#pragma unroll
    for (int j = 0; j < SCAN_TC / R; j++) {
      cp_async4(q + j * (R / K) * T::STRIDE, p, true);
      p += step;
    }
    return;
  }
#pragma unroll
  for (int j = 0; j < SCAN_TC / R; j++) {
    const bool valid = cok && tl0 + R * j < rows;
    cp_async4(q + j * (R / K) * T::STRIDE, valid ? p : src, valid);
    p += step;
  }
}

/* The bf16 form of scan_stage_rows (HB: the forward's bf16 u, delta and z; d, ld and the rows'
 * alignment even): a 4-byte copy carries channels c0 + 2p and c0 + 2p + 1 of a row into word
 * pos(t) of pair row p of dst, which the pair's two channels then read (scan_ldsk_pair). Half the
 * copies and half the bytes of fp32 rows. */
template <int K>
__device__ __forceinline__ void scan_stage_pairs(const ScanArgs &a, int64_t b, int64_t c0,
                                                 int64_t t0, int rows, const uint16_t *src,
                                                 int64_t ld, float *dst) {
  using T = ScanTile<K>;
  constexpr int P = SCAN_TILE_CH / 2, R = T::THREADS / P; /* pairs of a row; rows per pass */
  static_assert(SCAN_TILE_CH % 2 == 0 && T::THREADS % P == 0 && R % K == 0, "pair passes");
  const int p = threadIdx.x % P, tl0 = threadIdx.x / P;
  const bool cok = c0 + 2 * p < a.d;
  const uint16_t *q = src + (b * a.len + t0 + tl0) * ld + (cok ? c0 + 2 * p : 0);
  float *o = dst + p * T::ROW + T::pos(tl0);
  if (cok && rows == SCAN_TC) { /* a whole chunk of real channels: no per-row predicate and select
                                 * (~10 instructions a copy, then ~3) */
#pragma unroll
    for (int j = 0; j < SCAN_TC / R; j++) {
      cp_async4(o + j * (R / K) * T::STRIDE, (const float *)q, true);
      q += R * ld;
    }
    return;
  }
#pragma unroll
  for (int j = 0; j < SCAN_TC / R; j++) {
    const bool valid = cok && tl0 + R * j < rows;
    cp_async4(o + j * (R / K) * T::STRIDE, (const float *)(valid ? q : src), valid);
    q += R * ld;
  }
}

/* B and C of a whole chunk with n == NMAX (Cs = Bs + NMAX ROW). Thread (s, g), g < G = THREADS /
 * NMAX, copies state s of the rows at position g of every lane's K (rows g + K j: shared-memory
 * offsets STRIDE apart, constants), then rows at positions G..K-1 the same way. A row costs its
 * two copies and a pointer add (~4 instructions, where rows a pass apart took ~20: pos() of a
 * runtime row and 64-bit products). In the model's x_dbl C follows B in the same rows, so C's copy
 * takes B's pointer plus a constant. The same copies as scan_stage's other paths. */
template <int NMAX, int K>
__device__ __forceinline__ void scan_stage_bc_whole(const ScanArgs &a, int64_t b, int64_t t0,
                                                    float *Bs) {
  using T = ScanTile<K>;
  constexpr int G = T::THREADS / NMAX, SEGS = SCAN_TC / K, CS = NMAX * T::ROW;
  static_assert(G <= K && T::THREADS % NMAX == 0, "a thread a state and a position of the K");
  const int s = threadIdx.x % NMAX, g = threadIdx.x / NMAX;
  const bool adj = a.Cm == a.Bm + NMAX && a.ldc == a.ldb;
  const int64_t r0 = b * a.len + t0;
  {
    const float *pb = a.Bm + (r0 + g) * a.ldb + s, *pc = a.Cm + (r0 + g) * a.ldc + s;
    const int64_t sb = K * a.ldb, sc = K * a.ldc;
    float *const q = Bs + s * T::ROW + g;
    if (adj) {
#pragma unroll
      for (int j = 0; j < SEGS; j++, pb += sb) {
        cp_async4(q + j * T::STRIDE, pb, true);
        cp_async4(q + CS + j * T::STRIDE, pb + NMAX, true);
      }
    } else {
#pragma unroll
      for (int j = 0; j < SEGS; j++, pb += sb, pc += sc) {
        cp_async4(q + j * T::STRIDE, pb, true);
        cp_async4(q + CS + j * T::STRIDE, pc, true);
      }
    }
  }
  if constexpr (G < K) {
    /* positions G..K-1 of every lane: thread g takes position G + g % H of segments g / H + (G / H)
     * m (H = K - G), so these rows too are constants apart */
    constexpr int H = K - G, SP = G / H;
    static_assert(G % H == 0, "whole rounds of the other positions");
    const int pos = G + g % H, seg0 = g / H;
    const float *pb = a.Bm + (r0 + seg0 * K + pos) * a.ldb + s;
    const float *pc = a.Cm + (r0 + seg0 * K + pos) * a.ldc + s;
    const int64_t sb = SP * K * a.ldb, sc = SP * K * a.ldc;
    float *const q = Bs + s * T::ROW + seg0 * T::STRIDE + pos;
#pragma unroll
    for (int m = 0; m < (SEGS + SP - 1) / SP; m++, pb += sb, pc += sc) {
      if (SEGS % SP && seg0 + SP * m >= SEGS) break; /* the last round only */
      cp_async4(q + m * SP * T::STRIDE, pb, true);
      cp_async4(q + CS + m * SP * T::STRIDE, adj ? pb + NMAX : pc, true);
    }
  }
}

/* Stages B, C (consecutive threads along a row's states), u and delta of the chunk at t0 (HB:
 * both as bf16 pairs; UF: u as scaled fp16 pairs, and delta too with DF, else fp32 rows). */
template <int NMAX, int K, bool HB, bool UF, bool DF>
__device__ __forceinline__ void scan_stage(const ScanArgs &a, int64_t b, int64_t c0, int64_t t0,
                                           int rows, float *Bs, float *Cs, float *Us, float *Ds) {
  using T = ScanTile<K>;
  const int n = a.n, nt = T::THREADS;
  if (n == NMAX) { /* the usual d_state: a fixed pattern, pointers advanced by whole passes */
    constexpr int per_pass = T::THREADS / NMAX;
    const int s = threadIdx.x % NMAX, tl0 = threadIdx.x / NMAX;
    const int64_t r0 = b * a.len + t0 + tl0;
    const float *pb = a.Bm + r0 * a.ldb + s, *pc = a.Cm + r0 * a.ldc + s;
    const int64_t sb = per_pass * a.ldb, sc = per_pass * a.ldc;
    if (rows == SCAN_TC) { /* a whole chunk: no per-row predicate */
      scan_stage_bc_whole<NMAX, K>(a, b, t0, Bs);
    } else {
#pragma unroll 4
      for (int tl = tl0; tl < SCAN_TC; tl += per_pass) {
        const bool valid = tl < rows;
        const int o = s * T::ROW + T::pos(tl);
        cp_async4(Bs + o, valid ? pb : a.Bm, valid);
        cp_async4(Cs + o, valid ? pc : a.Cm, valid);
        pb += sb;
        pc += sc;
      }
    }
  } else {
    const int dtl = nt / n, ds = nt % n;
    for (int tl = threadIdx.x / n, s = threadIdx.x % n; tl < SCAN_TC;) {
      bool valid = tl < rows;
      int64_t r = b * a.len + t0 + (valid ? tl : 0);
      int o = s * T::ROW + T::pos(tl);
      cp_async4(Bs + o, a.Bm + r * a.ldb + s, valid);
      cp_async4(Cs + o, a.Cm + r * a.ldc + s, valid);
      tl += dtl;
      s += ds;
      if (s >= n) s -= n, tl++;
    }
  }
  if (HB) {
    scan_stage_pairs<K>(a, b, c0, t0, rows, a.u_h, a.ldu, Us);
    scan_stage_pairs<K>(a, b, c0, t0, rows, a.delta_h, a.ld_delta, Ds);
  } else {
    if (UF) scan_stage_pairs<K>(a, b, c0, t0, rows, a.u_h, a.ldu, Us);
    else scan_stage_rows<K>(a, b, c0, t0, rows, a.u, a.ldu, Us);
    if (DF) scan_stage_pairs<K>(a, b, c0, t0, rows, a.delta_h, a.ld_delta, Ds);
    else scan_stage_rows<K>(a, b, c0, t0, rows, a.delta, a.ld_delta, Ds);
  }
}

/* Writes the chunk's y rows (in Us, per channel) to global memory, fp32 and/or bf16, coalesced
 * (the staging's thread pattern); with a.y_exp, the largest |y| written goes into *ymax (bits, in
 * shared memory: a register held across the whole kernel made the state loop spill). */
template <int K>
__device__ __forceinline__ void scan_store_y(const ScanArgs &a, int64_t b, int64_t c0, int64_t t0,
                                             int rows, const float *Ys, unsigned *ymax) {
  using T = ScanTile<K>;
  constexpr int R = T::L;
  const int w = threadIdx.x % SCAN_TILE_CH, tl0 = threadIdx.x / SCAN_TILE_CH;
  if (c0 + w >= a.d) return;
  const int64_t o = (b * a.len + t0 + tl0) * a.ldy + c0 + w;
  const int64_t step = R * a.ldy;
  const float *q = Ys + w * T::ROW + T::pos(tl0);
  const bool whole = rows == SCAN_TC; /* no per-row predicate */
  if (a.y) {
    float *p = a.y + o, m = 0.f;
    if (whole) { /* its own loop, as y_bf16's below */
#pragma unroll
      for (int j = 0; j < SCAN_TC / R; j++, p += step) {
        const float v = q[j * (R / K) * T::STRIDE];
        *p = v;
        m = fmaxf(m, fabsf(v)); /* NaN skipped */
      }
    } else {
#pragma unroll
      for (int j = 0; j < SCAN_TC / R; j++, p += step) {
        if (tl0 + R * j < rows) {
          const float v = q[j * (R / K) * T::STRIDE];
          *p = v;
          m = fmaxf(m, fabsf(v));
        }
      }
    }
    if (a.y_exp) atomicMax(ymax, __float_as_uint(m));
  }
  if (a.y_bf16) {
    uint16_t *p = a.y_bf16 + o;
    if (whole) { /* its own loop: with `whole ||` in the condition every row stayed predicated */
#pragma unroll
      for (int j = 0; j < SCAN_TC / R; j++, p += step)
        *p = mb_f32_to_bf16(q[j * (R / K) * T::STRIDE]);
      return;
    }
#pragma unroll
    for (int j = 0; j < SCAN_TC / R; j++) {
      if (tl0 + R * j < rows) *p = mb_f32_to_bf16(q[j * (R / K) * T::STRIDE]);
      p += step;
    }
  }
}

/* y_f16_exp from the tile scan's blocks (one thread each): each adds its largest |y| to
 * a.y_amax[0] (non-negative floats order as their bits), the last to finish writes the exponent
 * and puts both counters back to 0 for the next launch. */
__device__ void scan_y_exp_finish(const ScanArgs &a, float ymax) {
  atomicMax(a.y_amax, __float_as_uint(ymax));
  __threadfence();
  if (atomicAdd(a.y_amax + 1, 1u) == gridDim.x * gridDim.y - 1) {
    __threadfence();
    *a.y_exp = mb_f16_scale_exp(atomicExch(a.y_amax, 0u));
    atomicExch(a.y_amax + 1, 0u);
  }
}

/* K consecutive floats of shared memory (16-byte aligned) into registers. */
template <int K>
__device__ __forceinline__ void scan_ldsk(const float *p, float (&v)[K]) {
#pragma unroll
  for (int i = 0; i < K; i += 4) {
    const float4 q = *(const float4 *)(p + i);
    v[i] = q.x, v[i + 1] = q.y, v[i + 2] = q.z, v[i + 3] = q.w;
  }
}

/* A lane's K values from its pair row (scan_stage_pairs): the low half of each word for the even
 * channel of the pair, the high half for the odd one. */
template <int K>
__device__ __forceinline__ void scan_ldsk_pair(const float *p, bool odd, float (&v)[K]) {
  scan_ldsk<K>(p, v);
  /* the half into the high bits, zeros below: one byte permute a value (a mask or a shift chosen
   * by the lane took a LOP3 and a predicated SHF) */
  const unsigned sel = odd ? 0x3244u : 0x1044u;
#pragma unroll
  for (int k = 0; k < K; k++) v[k] = __uint_as_float(__byte_perm(__float_as_uint(v[k]), 0u, sel));
}

/* A lane's K values of u from its scaled fp16 pair row (UF): the half of each word for the lane's
 * channel, widened, times 2^-e (s1 s2: exact). */
template <int K>
__device__ __forceinline__ void scan_ldsk_f16_pair(const float *p, bool odd, float s1, float s2,
                                                   float (&v)[K]) {
  scan_ldsk<K>(p, v);
#pragma unroll
  for (int k = 0; k < K; k++) {
    const uint32_t w = __float_as_uint(v[k]);
    v[k] = __half2float(__ushort_as_half((unsigned short)(odd ? w >> 16 : w & 0xffffu))) * s1 * s2;
  }
}

/* The K values summed in four interleaved partial sums (short chains; a fixed order, so the
 * same bits every run). */
template <int K>
__device__ __forceinline__ float scan_sum(const float (&v)[K]) {
  static_assert(K % 4 == 0, "four partial sums");
  float t0 = v[0], t1 = v[1], t2 = v[2], t3 = v[3];
#pragma unroll
  for (int k = 4; k < K; k += 4) t0 += v[k], t1 += v[k + 1], t2 += v[k + 2], t3 += v[k + 3];
  return (t0 + t1) + (t2 + t3);
}

/* A lane's K deltas from dt_proj's output: the bias, the softplus when SP, and 0 past the chunk's
 * rows (h passes unchanged). The softplus flag is a template parameter so that the K positions'
 * exps and logs form one straight block the scheduler interleaves: tested at run time inside the
 * loop, it made each position a branch of its own, 16 dependent exp -> log chains one after another
 * in the SASS. The same operations in the same order, so the same bits. */
template <int K, bool SP>
__device__ __forceinline__ void scan_prep_deltas(bool bias, float dbias, int first, int rows,
                                                 float (&dt)[K]) {
  /* the bias and the rows' bound each as a loop of its own behind a test the warp shares (bias) or
   * that holds only in a chunk's last rows: inside the loop they cost a select a position each */
  if (bias) {
#pragma unroll
    for (int k = 0; k < K; k++) dt[k] += dbias;
  }
  if (SP) {
#pragma unroll
    for (int k = 0; k < K; k++) dt[k] = mb_fast_softplus(dt[k]);
  }
  if (rows - first < K) {
#pragma unroll
    for (int k = 0; k < K; k++)
      if (first + k >= rows) dt[k] = 0.f;
  }
}

/* A tile scan state's decays for one lane: dA[k] = exp(dt[k] A) and their product pa, with A
 * broadcast from lane s of the channel (a2_l: A * log2(e), one state per lane). */
template <int K>
__device__ __forceinline__ void scan_state_exps(int s, float a2_l, const float (&dt)[K],
                                                float dt_sum, float (&dA)[K], float &pa) {
  const float A2 = __shfl_sync(0xffffffffu, a2_l, s, ScanTile<K>::L);
#pragma unroll
  for (int k = 0; k < K; k++) dA[k] = mb_fast_ex2(dt[k] * A2);
  /* the decays' product over the lane's positions is one exp of the summed dt (a multiply and an
   * exp where a product took K - 1 multiplies per state: 206 M warp instructions a 972M layer at
   * 8192 positions against 236 M, 459-462 us against 464-465) */
  pa = mb_fast_ex2(dt_sum * A2);
}

/* One level of the shuffle scan of the lanes' maps (segments of L lanes): the map `off` lanes
 * before, composed into this lane's where there is one, i.e. `if (ll >= off) { pb = pa * ub + pb;
 * pa *= ua; }` with ua, ub shuffled up from pa, pb. shfl.up's own predicate says whether the source
 * lane lies in the segment, so the level needs no compare of the lane index and the two updates run
 * predicated in place; ptxas made of the `if` a compare, an unpredicated product and a select in
 * the chain from one shuffle to the next. The same fma and multiply (what the compiler contracts
 * the C form to), so the same bits. */
template <int L>
__device__ __forceinline__ void scan_level(float &pa, float &pb, int off) {
  asm("{\n\t.reg .pred p;\n\t.reg .f32 ua, ub;\n\t"
      "shfl.sync.up.b32 ua|p, %0, %2, %3, -1;\n\t"
      "shfl.sync.up.b32 ub, %1, %2, %3, -1;\n\t"
      "@p fma.rn.f32 %1, %0, ub, %1;\n\t"
      "@p mul.rn.f32 %0, %0, ua;\n\t}"
      : "+f"(pa), "+f"(pb)
      : "r"(off), "n"((32 - L) << 8));
}

/* A lane's entering state from the scanned maps: the carry cin through the map of the lanes
 * before it, `ll == 0 ? cin : ea * cin + eb` with ea, eb shuffled up by one (scan_level's
 * predicate again; the fma's operands commute, so the same bits). */
template <int L>
__device__ __forceinline__ float scan_enter(float pa, float pb, float cin) {
  float h;
  asm("{\n\t.reg .pred p;\n\t.reg .f32 ea, eb;\n\t"
      "shfl.sync.up.b32 ea|p, %1, 1, %4, -1;\n\t"
      "shfl.sync.up.b32 eb, %2, 1, %4, -1;\n\t"
      "mov.f32 %0, %3;\n\t"
      "@p fma.rn.f32 %0, ea, %3, eb;\n\t}"
      : "=f"(h)
      : "f"(pa), "f"(pb), "f"(cin), "n"((32 - L) << 8));
  return h;
}

/* The rest of state s for one lane (ll: its index among its channel's L lanes, whose shuffles
 * stay within the channel: width L): its positions composed into one map, the shuffle scan over
 * the channel's lanes, and the rerun of its positions into y from the entering state. carry_l: the
 * carry of state `ll`, held one state per lane. */
template <int K>
__device__ __forceinline__ void scan_state_run(int s, int ll, float &carry_l, const float *Bs,
                                               const float *Cs, const float (&dA)[K], float pa,
                                               const float (&du)[K], float (&y)[K]) {
  using T = ScanTile<K>;
  constexpr int L = T::L;
  const float cin = __shfl_sync(0xffffffffu, carry_l, s, L);
  float Bv[K], bx[K];
  scan_ldsk<K>(Bs + s * T::ROW + ll * T::STRIDE, Bv);
#pragma unroll
  for (int k = 0; k < K; k++) bx[k] = du[k] * Bv[k];
  /* the lane's positions as one affine map h -> pa * h + pb */
  float pb = bx[0];
#pragma unroll
  for (int k = 1; k < K; k++) pb = dA[k] * pb + bx[k];
  /* inclusive scan of the maps over the channel's lanes (earlier lanes first) */
#pragma unroll
  for (int off = 1; off < L; off <<= 1) scan_level<L>(pa, pb, off);
  float h = scan_enter<L>(pa, pb, cin);
  float Cv[K];
  scan_ldsk<K>(Cs + s * T::ROW + ll * T::STRIDE, Cv);
#pragma unroll
  for (int k = 0; k < K; k++) {
    h = dA[k] * h + bx[k];
    y[k] += Cv[k] * h;
  }
  const float cout = __shfl_sync(0xffffffffu, h, L - 1, L);
  if (ll == s) carry_l = cout;
}

/* Grid (ceil(d / SCAN_TILE_CH), batch); block SCAN_TILE_CH channels of L lanes each. Every
 * operand of a chunk is staged through shared memory with coalesced copies and y leaves the same
 * way (lanes own positions, so direct loads would touch a cache line per lane); z is copied into
 * delta's rows while the states are computed; two blocks per multiprocessor overlap one's copies
 * with the other's arithmetic. The per-state carry and A of a lane's channel are held one state
 * per lane (lane s of the channel) and broadcast by shuffles. */
template <int NMAX, int K, bool HB, bool UF, bool DF>
__global__ void __launch_bounds__(ScanTile<K>::THREADS, 2) k_scan_tile(ScanArgs a) {
  using T = ScanTile<K>;
  static_assert(2 * (2 * NMAX + 2 * SCAN_TILE_CH) * T::ROW * 4 <= 227 * 1024, "two blocks per SM");
  static_assert(NMAX <= T::L, "one state per lane");
  static_assert(NMAX % 2 == 0, "the state loop takes states two at a time");
  extern __shared__ float4 scan_smem[];
  const int n = a.n;
  float *const Bs = (float *)scan_smem, *const Cs = Bs + n * T::ROW;
  float *const Us = Cs + n * T::ROW, *const Ds = Us + SCAN_TILE_CH * T::ROW;
  const int lane = threadIdx.x & 31, ll = lane % T::L;
  const int w = (threadIdx.x >> 5) * T::CPW + lane / T::L; /* the lane's channel in the block */
  const int64_t b = blockIdx.y;
  const int64_t c0 = (int64_t)blockIdx.x * SCAN_TILE_CH, c = c0 + w;
  const bool active = c < a.d;
  mb_pdl_trigger();
  const float a2_l = (active && ll < n) ? a.A[c * n + ll] * MB_LOG2E : 0.f; /* exp via exp2 */
  const float Dc = (active && a.Dskip) ? a.Dskip[c] : 0.f;
  const float dbias = (active && a.delta_bias) ? a.delta_bias[c] : 0.f;
  mb_pdl_wait();
  float *st = (active && a.state) ? a.state + (b * a.d + c) * n : nullptr;
  float carry_l = (st && ll < n) ? st[ll] : 0.f;
  const int lo = w * T::ROW + ll * T::STRIDE; /* this lane's positions in Us/Ds */
  const int lo_pair = (w >> 1) * T::ROW + ll * T::STRIDE; /* ... in pair rows (HB, UF's u) */
  const bool has_z = HB ? a.z_h != nullptr : a.z != nullptr;
  __shared__ unsigned ymax; /* y_exp: the block's largest |y| so far (bits; scan_store_y) */
  if (threadIdx.x == 0) ymax = 0u; /* seen after the loop's first barrier */

  for (int64_t t0 = 0; t0 < a.len; t0 += SCAN_TC) {
    const int rows = a.len - t0 < SCAN_TC ? (int)(a.len - t0) : SCAN_TC;
    __syncthreads(); /* the previous chunk's y is out of Us */
    scan_stage<NMAX, K, HB, UF, DF>(a, b, c0, t0, rows, Bs, Cs, Us, Ds);
    cp_async_commit();
    cp_async_wait_all();
    __syncthreads();
    float dt[K], du[K], y[K], uu[K];
    if (HB) {
      scan_ldsk_pair<K>(Us + lo_pair, w & 1, uu);
      scan_ldsk_pair<K>(Ds + lo_pair, w & 1, dt);
    } else {
      if (UF) { /* the exponent read again each chunk: no register held through the states */
        float s1, s2;
        scan_unscale_factors(a.u_exp, &s1, &s2);
        scan_ldsk_f16_pair<K>(Us + lo_pair, w & 1, s1, s2, uu);
      } else {
        scan_ldsk<K>(Us + lo, uu);
      }
      if (DF) {
        float s1, s2;
        scan_unscale_factors(a.delta_exp, &s1, &s2);
        scan_ldsk_f16_pair<K>(Ds + lo_pair, w & 1, s1, s2, dt);
      } else {
        scan_ldsk<K>(Ds + lo, dt);
      }
    }
    if (a.softplus) scan_prep_deltas<K, true>(a.delta_bias != nullptr, dbias, ll * K, rows, dt);
    else scan_prep_deltas<K, false>(a.delta_bias != nullptr, dbias, ll * K, rows, dt);
#pragma unroll
    for (int k = 0; k < K; k++) {
      du[k] = dt[k] * uu[k];
      y[k] = Dc * uu[k];
    }
    const float dt_sum = scan_sum<K>(dt);
    if (has_z) { /* z's copies into Ds fly during the states */
      __syncthreads(); /* every warp has read its delta */
      if (HB) scan_stage_pairs<K>(a, b, c0, t0, rows, a.z_h, a.ldz, Ds);
      else scan_stage_rows<K>(a, b, c0, t0, rows, a.z, a.ldz, Ds);
      cp_async_commit();
    }
    /* Each state's exps are issued inside the guard of the state before, so they fly beside its
     * composition, shuffle scan and rerun (one state of decays more in registers; the same
     * operations in the same order, so the same bits). Past n they are exp(0) (a2_l is 0 on lanes
     * >= n) and unused. Against a state at a time, H200, 972M shape, 8192 positions: the scan
     * 422.9 against 427.9 us a layer on bf16 pairs, 478.6-481.3 against 487.1-487.2 in the fp32
     * + TF32 forward (docs/cuda_notes.md, "The tile scan's exps a state ahead"). */
    {
      float dA0[K], dA1[K], pa0, pa1;
      scan_state_exps<K>(0, a2_l, dt, dt_sum, dA0, pa0);
#pragma unroll
      for (int s = 0; s < NMAX; s += 2) {
        if (s < n) {
          scan_state_exps<K>(s + 1, a2_l, dt, dt_sum, dA1, pa1);
          scan_state_run<K>(s, ll, carry_l, Bs, Cs, dA0, pa0, du, y);
        }
        if (s + 1 < n) {
          if (s + 2 < NMAX) scan_state_exps<K>(s + 2, a2_l, dt, dt_sum, dA0, pa0);
          scan_state_run<K>(s + 1, ll, carry_l, Bs, Cs, dA1, pa1, du, y);
        }
      }
    }
    if (has_z) {
      cp_async_wait_all();
      __syncthreads();
      float zz[K];
      if (HB) scan_ldsk_pair<K>(Ds + lo_pair, w & 1, zz);
      else scan_ldsk<K>(Ds + lo, zz);
#pragma unroll
      for (int k = 0; k < K; k++) y[k] *= mb_fast_silu(zz[k]);
    }
    /* HB, UF: u's pair rows are read by two channels' lanes, and y's rows are per channel: every
     * warp must have read u (z's barrier above is that, where there is a z) */
    if ((HB || UF) && !has_z) __syncthreads();
    /* y replaces u in the lane's own row (u was read above) */
#pragma unroll
    for (int k = 0; k < K; k += 4)
      *(float4 *)(Us + lo + k) = make_float4(y[k], y[k + 1], y[k + 2], y[k + 3]);
    __syncthreads();
    scan_store_y<K>(a, b, c0, t0, rows, Us, &ymax);
  }
  if (st && ll < n) st[ll] = carry_l;
  if (a.y_exp) {
    __syncthreads(); /* every thread's atomicMax on ymax is done */
    if (threadIdx.x == 0) scan_y_exp_finish(a, __uint_as_float(ymax));
  }
}

template <int K, bool HB, bool UF, bool DF>
static int scan_tile_run(mb_ctx *ctx, ScanArgs &a, int64_t tiles) {
  using T = ScanTile<K>;
  mbcuda_state *st = mbcuda_st(ctx);
  /* > 48 KiB of dynamic shared memory needs the opt-in, per kernel */
  const int set = HB ? 2 : DF ? 8 : UF ? 4 : 1;
  if (!(st->scan_tile_smem_set & set)) {
    MBCUDA_CHECK(cudaFuncSetAttribute(k_scan_tile<SCAN_TILE_NMAX, K, HB, UF, DF>,
                                      cudaFuncAttributeMaxDynamicSharedMemorySize,
                                      (int)T::smem(SCAN_TILE_NMAX)),
                 "selective_scan (tile)");
    st->scan_tile_smem_set |= set;
  }
  /* Launched without the programmatic attribute, so its blocks are placed once the product
   * before it has left the SMs: under cuBLAS's TF32 dt_proj (PDL) they ran ~1.4x slower, the fp32 +
   * TF32 forward over 8192 bytes 83.7 against 74.8 ms on the H200 (688 against 481 us a layer of
   * scan), the bf16 forward the same either way (docs/cuda_notes.md, "The tile scan's launch, its
   * forms and one carveout: measured") */
  MBCUDA_CHECK(mbcuda_launch_pdl(ctx, false, k_scan_tile<SCAN_TILE_NMAX, K, HB, UF, DF>,
                                 dim3((unsigned)tiles, (unsigned)a.batch), dim3(T::THREADS),
                                 T::smem(a.n), a),
               "selective_scan (tile)");
  return MB_OK;
}

/* Whether 16-bit rows at p (ld ld) can be staged as pairs (scan_stage_pairs): with d even too, no
 * pair straddles a row's end. */
static bool pair_rows_ok(const void *p, int64_t ld) {
  return ld % 2 == 0 && ((uintptr_t)p & 3) == 0;
}

/* Whether the tile scan can stage u, delta and z as bf16 pairs: all bf16 (z may be absent), d even
 * and each one's rows pair_rows_ok. */
static bool scan_tile_pairs_ok(const ScanArgs &a) {
  if (!a.u_h || !a.delta_h || a.z || a.u_exp || a.delta_exp) return false;
  if (a.d % 2 || !pair_rows_ok(a.u_h, a.ldu) || !pair_rows_ok(a.delta_h, a.ld_delta)) return false;
  return !a.z_h || pair_rows_ok(a.z_h, a.ldz);
}

/* The tiled form when it applies (see the file comment): *launched = 1 when it ran, 0 to fall
 * back to k_scan_seq. st->scan_tile: 0 off, else the positions per lane (16). */
static int scan_tile_launch(mb_ctx *ctx, ScanArgs &a, int *launched) {
  mbcuda_state *st = mbcuda_st(ctx);
  *launched = 0;
  if (!st->scan_tile || a.states_all || a.n > SCAN_TILE_NMAX || a.len < SCAN_TC) return MB_OK;
  int64_t tiles = (a.d + SCAN_TILE_CH - 1) / SCAN_TILE_CH;
  if (tiles * a.batch < st->sm_count || tiles > 0x7fffffff || a.batch > 65535) return MB_OK;
  int rc;
  const bool df = a.delta_exp != nullptr; /* delta as scaled fp16 pairs too */
  if (a.u_exp && !a.z_h && (df || !a.delta_h)) { /* u (and delta) as fp16 pairs, z fp32 rows */
    if (a.d % 2 || !pair_rows_ok(a.u_h, a.ldu)) return MB_OK;
    if (df && !pair_rows_ok(a.delta_h, a.ld_delta)) return MB_OK;
    rc = df ? scan_tile_run<16, false, true, true>(ctx, a, tiles)
            : scan_tile_run<16, false, true, false>(ctx, a, tiles);
  } else if (a.u_h || a.delta_h || a.z_h) {
    if (!scan_tile_pairs_ok(a)) return MB_OK; /* k_scan_seq reads any mix of fp32 and bf16 */
    rc = scan_tile_run<16, true, false, false>(ctx, a, tiles);
  } else {
    rc = scan_tile_run<16, false, false, false>(ctx, a, tiles);
  }
  if (rc == MB_OK) *launched = 1;
  return rc;
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

extern "C" int mbcuda_selective_scan(mb_ctx *ctx, const float *u, const uint16_t *u_bf16,
                                     int64_t ldu, const float *delta,
                                     const uint16_t *delta_bf16, int64_t ld_delta,
                                     const float *delta_bias, const float *A, const float *Bm,
                                     int64_t ldb, const float *Cm, int64_t ldc,
                                     const float *Dskip, const float *z, const uint16_t *z_bf16,
                                     int64_t ldz, float *state, float *states_all, int64_t batch,
                                     int64_t len, int64_t d, int64_t n, int delta_softplus,
                                     float *y, int64_t ldy, uint16_t *y_bf16,
                                     int32_t *y_f16_exp, const int32_t *u_f16_exp,
                                     const int32_t *delta_f16_exp) {
  if (batch <= 0 || len <= 0 || d <= 0) return MB_OK;
  ScanArgs a = {u, ldu, delta, ld_delta, delta_bias, A, Bm, ldb, Cm, ldc, Dskip, z, ldz,
                u_bf16, delta_bf16, z_bf16, u_f16_exp, delta_f16_exp, state, states_all, batch,
                len, d, (int)n,
                delta_softplus, y, ldy, y_bf16, y_f16_exp,
                mbcuda_st(ctx)->done + MBCUDA_DONE_SCAN_AMAX, 0, 0, nullptr, nullptr};
  /* n >= 1 here: api.c rejects n < 1 */
  int launched = 0;
  int rc = scan_tile_launch(ctx, a, &launched);
  if (rc || launched) return rc; /* the tile scan's blocks found y's exponent */
  if (n <= 4) rc = scan_launch<4>(ctx, a);
  else if (n <= 8) rc = scan_launch<8>(ctx, a);
  else if (n <= 16) rc = scan_launch<16>(ctx, a);
  else if (n <= 32) rc = scan_launch<32>(ctx, a);
  else if (n <= 64) rc = scan_launch<64>(ctx, a);
  else
    return mb_fail(MB_ERR_UNSUPPORTED,
                   "cuda: selective_scan: d_state %lld > 64 is not supported", (long long)n);
  if (rc || !y_f16_exp) return rc;
  return mbcuda_f16_exp_rows(ctx, y, ldy, batch * len, d, y_f16_exp, "selective_scan (y_f16_exp)");
}
