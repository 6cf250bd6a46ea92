/*
 * ssu.cuh — the fused dt_proj + state update of the decoding step (mb_selective_state_update_dt,
 * mb_selective_scan_dt) as a device function of its kernel (step.cu), kept apart so that a kernel
 * running every layer of a step (branch decode-persistent) runs the same code and bits.
 */
#ifndef MAMBABYTE_SSU_CUH
#define MAMBABYTE_SSU_CUH

#include <stdint.h>

#include "cuda_internal.cuh"

/* L lanes per channel, SCAN_P = 2 states per lane (L * SCAN_P >= n, L a power of two <= 32). */
#define SCAN_P 2

static inline int scan_lanes(int64_t n) {
  int L = 1;
  while (L * SCAN_P < n) L <<= 1;
  return L;
}

/* ---- state update with dt_proj fused (decoding) --------------------------------------------- *
 * mb_selective_state_update_dt: per (b, c) the L lanes of channel c split the dt_rank-long dot
 * product x_dbl[b, :R] . dt_w[c, :] (16-byte weight loads, prefetched into registers before the
 * PDL wait: the weights are constant), reduce it with shuffles, add the bias, then update the
 * channel's n states (P = 2 per lane, SCAN_P) with exp2f of dt * A * log2(e). x_dbl's
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
  int tile;           /* positions staged at once (set by ssu_dt_launch_l: <= SSU_TILE) */
  int64_t batch;      /* sequences */
  uint16_t *y_bf16;   /* y as bfloat16 bits too (at ldy), or NULL */
  int64_t l2_lines;   /* k_ssu_dt_rows: the first row of blocks asks for this many 128-byte lines
                       * of the state into L2 before the PDL wait (the blocks that start under
                       * the kernels before; MAMBABYTE_CUDA_SSU_L2), or 0 */
};

/* y of row r, channel c (and its bf16 copy when asked for) */
__device__ __forceinline__ void ssu_store_y(const SsuDtArgs &a, int64_t r, int64_t c, float yv) {
  a.y[r * a.ldy + c] = yv;
  if (a.y_bf16) a.y_bf16[r * a.ldy + c] = mb_f32_to_bf16(yv);
}

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

/* A channel's constants of the state update, loaded before the PDL wait: A * log2(e) for the
 * lane's SCAN_P states, D, dt_proj's bias and row, and the lane's first dt_proj chunks (16-byte
 * loads when a.wvec). Shared by k_ssu_dt (ssu_dt_block) and k_ssu_pos (step.cu), which must give
 * the same bits. */
template <typename WT>
struct SsuConsts {
  float Ac[SCAN_P];
  float Dc, bc;
  const WT *wrow;
  int nch;
  uint4 wr[SSU_MAXC];
};

template <int L, typename WT>
__device__ __forceinline__ SsuConsts<WT> ssu_consts(const SsuDtArgs &a, int64_t c, bool cok,
                                                    int gi) {
  constexpr int EPV = 16 / sizeof(WT);
  SsuConsts<WT> k;
#pragma unroll
  for (int p = 0; p < SCAN_P; p++) {
    int s = gi * SCAN_P + p;
    k.Ac[p] = (cok && s < a.n) ? a.A[c * a.n + s] * MB_LOG2E : 0.f;
  }
  k.Dc = (cok && a.Dskip) ? a.Dskip[c] : 0.f;
  k.bc = (cok && a.wbias) ? a.wbias[c] : 0.f;
  k.wrow = (const WT *)a.w + (cok ? c : 0) * (int64_t)a.R;
  k.nch = a.wvec ? a.R / EPV : 0;
#pragma unroll
  for (int q = 0; q < SSU_MAXC; q++) {
    int j = gi + q * L;
    k.wr[q] =
        (cok && j < k.nch) ? mb_load_early((const uint4 *)k.wrow + j) : make_uint4(0, 0, 0, 0);
  }
  return k;
}

/* dt_proj's output before its bias for one position (x_dbl's first R values at xr): the lane's
 * chunks, then the butterfly over the channel's L lanes, so every lane holds the same sum. */
template <int L, typename WT>
__device__ __forceinline__ float ssu_dt_dot(const SsuDtArgs &a, const SsuConsts<WT> &k, int gi,
                                            bool cok, const float *xr) {
  constexpr int EPV = 16 / sizeof(WT);
  float dot = 0.f;
  if (a.wvec) {
#pragma unroll
    for (int q = 0; q < SSU_MAXC; q++) {
      int j = gi + q * L;
      if (j < k.nch) dot += dot16(k.wr[q], xr + j * EPV, WT());
    }
    if (cok)
      for (int j = gi + SSU_MAXC * L; j < k.nch; j += L)
        dot += dot16(__ldg((const uint4 *)k.wrow + j), xr + j * EPV, WT());
  } else if (cok) {
    for (int i = gi; i < a.R; i += L) dot = fmaf(wval(k.wrow, i), xr[i], dot);
  }
#pragma unroll
  for (int o = L / 2; o > 0; o >>= 1) dot += __shfl_xor_sync(0xffffffffu, dot, o);
  return dot;
}

/* One block row per sequence b; positions t = 0..len-1 run in order, the state in registers
 * between them, each with the arithmetic of the one-position decoding step (mb_selective_scan_dt
 * gives every position the bits of mb_selective_state_update_dt: the same code runs both).
 * The rows of up to a.tile positions (x_dbl's first R columns, B, C; u and z in registers) are
 * staged at once, with two barriers per tile instead of two per position: a verification pass
 * of 8 positions waited on sixteen. `bx` plays blockIdx.x, `b` blockIdx.y (the sequence), `nthr`
 * blockDim.x; `wait()` (every thread calls it once) comes after the constants' loads, and the
 * activations (x_dbl, B, C, u, z) are read through XL. */
#define SSU_TILE 8
template <int L, typename WT, int TILE, XLoad XL, typename Wait,
          bool STATE_EARLY = false> /* TILE: 1 (decoding: a step's registers) or SSU_TILE */
__device__ __forceinline__ void ssu_dt_block(const SsuDtArgs &a, unsigned bx, int64_t b, int nthr,
                                             float *smem_ssu, Wait wait) {
  using XLC = XLoadTag<XL>;
  const int lane_c = threadIdx.x / L, gi = threadIdx.x % L, CB = nthr / L;
  const int64_t c = (int64_t)bx * CB + lane_c;
  const bool cok = c < a.d;
  const int R = a.R, Rp = (R + 7) & ~7, NP = L * SCAN_P, TT = TILE == 1 ? 1 : a.tile;
  float *xs = smem_ssu, *sB = smem_ssu + TT * Rp, *sC = sB + TT * NP;
  /* constants before the PDL wait */
  const SsuConsts<WT> cs = ssu_consts<L, WT>(a, c, cok, gi);
  /* the state: after the wait, unless the caller knows no earlier work in flight writes it */
  float h[SCAN_P];
  float *st = a.state + (b * a.d + (cok ? c : 0)) * a.n;
  if (!STATE_EARLY) wait();
#pragma unroll
  for (int p = 0; p < SCAN_P; p++) {
    int s = gi * SCAN_P + p;
    h[p] = (cok && s < a.n) ? st[s] : 0.f;
  }
  if (STATE_EARLY) wait();
  for (int64_t t0 = 0; t0 < a.len; t0 += TT) {
    const int tn = TILE == 1 ? 1 : (int)min((int64_t)TT, a.len - t0);
    const int64_t r0 = b * a.len + t0;
    if (t0 > 0) __syncthreads(); /* every lane is done with the previous tile's rows */
    /* u and z: with fp32 weights asked for first, beside the rows' loads; after the rows' stores
     * into shared memory (which a generic load may alias) they are a second global round trip
     * after the PDL wait (SASS). H100, against the tree before, graph replay: the fp32 batch-1
     * update 4.87-4.90 against 5.21-5.23 us exposed a layer; with bf16 weights the update gained
     * 0.05 us and out_proj after it lost 0.13 (the step 1,023 against 1,014 us), so bf16 keeps
     * them after the stores (docs/cuda_notes.md, "Loads the compiler had put one after
     * another") */
    constexpr bool UZ_FIRST = sizeof(WT) == 4;
    float uu[TILE], zz[TILE];
    const auto load_uz = [&] {
#pragma unroll
      for (int tt = 0; tt < TILE; tt++) {
        uu[tt] = 0.f, zz[tt] = 0.f;
        if (tt < tn && cok) {
          uu[tt] = xload(a.u + (r0 + tt) * a.ldu + c, XLC());
          if (a.z) zz[tt] = xload(a.z + (r0 + tt) * a.ldz + c, XLC());
        }
      }
    };
    if constexpr (UZ_FIRST) load_uz();
    if (Rp <= 2 * nthr && NP <= nthr) {
      /* every load of the tile's rows first, then the stores: interleaved, each load waited for
       * the store before it (a generic load may alias shared memory), one global latency per
       * row and operand (docs/cuda_notes.md) */
      const int k0 = threadIdx.x, k1 = threadIdx.x + nthr;
      float vx[TILE][2], vb[TILE], vc[TILE];
#pragma unroll
      for (int tt = 0; tt < TILE; tt++) {
        const int64_t r = r0 + tt;
        const bool on = tt < tn;
        vx[tt][0] = on && k0 < R ? xload(a.xdbl + r * a.ldx + k0, XLC()) : 0.f;
        vx[tt][1] = on && k1 < R ? xload(a.xdbl + r * a.ldx + k1, XLC()) : 0.f;
        vb[tt] = on && k0 < a.n ? xload(a.Bm + r * a.ldb + k0, XLC()) : 0.f;
        vc[tt] = on && k0 < a.n ? xload(a.Cm + r * a.ldc + k0, XLC()) : 0.f;
      }
#pragma unroll
      for (int tt = 0; tt < TILE; tt++) {
        if (tt < tn) {
          if (k0 < Rp) xs[tt * Rp + k0] = vx[tt][0];
          if (k1 < Rp) xs[tt * Rp + k1] = vx[tt][1];
          if (k0 < NP) sB[tt * NP + k0] = vb[tt], sC[tt * NP + k0] = vc[tt];
        }
      }
    } else {
#pragma unroll
      for (int tt = 0; tt < TILE; tt++) {
        if (tt < tn) {
          const int64_t r = r0 + tt;
          for (int k = threadIdx.x; k < Rp; k += blockDim.x) xs[tt * Rp + k] = k < R ? xload(a.xdbl + r * a.ldx + k, XLC()) : 0.f;
          for (int k = threadIdx.x; k < NP; k += blockDim.x) {
            sB[tt * NP + k] = k < a.n ? xload(a.Bm + r * a.ldb + k, XLC()) : 0.f;
            sC[tt * NP + k] = k < a.n ? xload(a.Cm + r * a.ldc + k, XLC()) : 0.f;
          }
        }
      }
    }
    if constexpr (!UZ_FIRST) load_uz();
    __syncthreads();
    /* Phase 1: what does not depend on the state (dt_proj's dot, softplus, the decay and the
     * input term), for every position of the tile: independent chains the GPU overlaps. Every
     * position of TILE is computed, one past the tile's end on row 0's values (never kept): a
     * branch per position made the chains run one after the other (a verification pass's 8
     * positions took 16.6 against 3.7 us for one, docs/cuda_notes.md). */
    float ea[TILE][SCAN_P], bu[TILE][SCAN_P];
#pragma unroll
    for (int tt = 0; tt < TILE; tt++) {
      const int tr = tt < tn ? tt : 0; /* the staged row it reads */
      const float draw = ssu_dt_dot<L, WT>(a, cs, gi, cok, xs + tr * Rp) + cs.bc;
      if (tt < tn && gi == 0 && cok && a.delta_out) a.delta_out[(r0 + tt) * a.d + c] = draw;
      const float dt = a.softplus ? mb_softplus(draw) : draw;
      const float du = dt * uu[tt];
      const float2 bv = *(const float2 *)(sB + tr * NP + gi * SCAN_P);
      ea[tt][0] = exp2f(dt * cs.Ac[0]), bu[tt][0] = du * bv.x;
      ea[tt][1] = exp2f(dt * cs.Ac[1]), bu[tt][1] = du * bv.y;
    }
    /* Phase 2: the recurrence position after position (only the state's FMAs are a chain), then
     * every position's output reduction, interleaved. */
    float hs[TILE][SCAN_P], yp[TILE];
#pragma unroll
    for (int tt = 0; tt < TILE; tt++) {
      const float h0 = fmaf(ea[tt][0], h[0], bu[tt][0]);
      const float h1 = fmaf(ea[tt][1], h[1], bu[tt][1]);
      if (tt < tn) h[0] = h0, h[1] = h1;
      hs[tt][0] = h[0], hs[tt][1] = h[1];
      const float2 cv = *(const float2 *)(sC + (tt < tn ? tt : 0) * NP + gi * SCAN_P);
      yp[tt] = fmaf(cv.y, hs[tt][1], cv.x * hs[tt][0]);
    }
#pragma unroll
    for (int o = L / 2; o > 0; o >>= 1)
#pragma unroll
      for (int tt = 0; tt < TILE; tt++) yp[tt] += __shfl_xor_sync(0xffffffffu, yp[tt], o);
#pragma unroll
    for (int tt = 0; tt < TILE; tt++) {
      if (tt < tn && cok) {
        const int64_t r = r0 + tt;
        if (a.states_all) {
          float *sa = a.states_all + (r * a.d + c) * a.n;
#pragma unroll
          for (int p = 0; p < SCAN_P; p++) {
            int s = gi * SCAN_P + p;
            if (s < a.n) sa[s] = hs[tt][p];
          }
        }
        if (gi == 0) {
          float yv = yp[tt] + cs.Dc * uu[tt];
          if (a.z) yv *= mb_silu(zz[tt]);
          ssu_store_y(a, r, c, yv);
        }
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


/* Whether the state update reads dt_proj's rows in 16-byte chunks (wvec). */
static inline int ssu_wvec(int64_t dt_rank, int wdtype, const void *dt_w) {
  const size_t es = wdtype == MB_DTYPE_BF16 ? 2 : 4;
  return ((size_t)dt_rank * es) % 16 == 0 && ((uintptr_t)dt_w & 15) == 0;
}

#endif
