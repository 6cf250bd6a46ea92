/*
 * step.cu — the fused decoding ops on CUDA: mb_selective_state_update_dt (dt_proj inside the state
 * update) and mb_selective_scan_dt (the same kernel over len positions). The CPU twins (csrc/cpu)
 * are the unfused pairs; csrc/tests/cuda_vs_cpu.c holds the two equal.
 */
#include <math.h>
#include <stdint.h>

#include "cuda_internal.cuh"

/* L lanes per channel, SCAN_P = 2 states per lane (L * SCAN_P >= n, L a power of two <= 32). */
#define SCAN_P 2

static int scan_lanes(int64_t n) {
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
  int64_t batch;      /* sequences (k_ssu_dt_rows bounds its last block row with it) */
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
 * gives every position the bits of mb_selective_state_update_dt: the same code runs both).
 * The rows of up to a.tile positions (x_dbl's first R columns, B, C; u and z in registers) are
 * staged at once, with two barriers per tile instead of two per position: a verification pass
 * of 8 positions waited on sixteen. */
#define SSU_TILE 8
template <int L, typename WT, int TILE> /* TILE: 1 (decoding: a step's registers) or SSU_TILE */
__global__ void k_ssu_dt(SsuDtArgs a) {
  extern __shared__ __align__(16) float smem_ssu[];
  mb_pdl_trigger();
  constexpr int EPV = 16 / sizeof(WT);
  const int lane_c = threadIdx.x / L, gi = threadIdx.x % L, CB = blockDim.x / L;
  const int64_t b = blockIdx.y, c = (int64_t)blockIdx.x * CB + lane_c;
  const bool cok = c < a.d;
  const int R = a.R, Rp = (R + 7) & ~7, NP = L * SCAN_P, TT = TILE == 1 ? 1 : a.tile;
  float *xs = smem_ssu, *sB = smem_ssu + TT * Rp, *sC = sB + TT * NP;
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
  for (int64_t t0 = 0; t0 < a.len; t0 += TT) {
    const int tn = TILE == 1 ? 1 : (int)min((int64_t)TT, a.len - t0);
    const int64_t r0 = b * a.len + t0;
    if (t0 > 0) __syncthreads(); /* every lane is done with the previous tile's rows */
#pragma unroll
    for (int tt = 0; tt < TILE; tt++) {
      if (tt < tn) {
        const int64_t r = r0 + tt;
        for (int k = threadIdx.x; k < Rp; k += blockDim.x) xs[tt * Rp + k] = k < R ? a.xdbl[r * a.ldx + k] : 0.f;
        for (int k = threadIdx.x; k < NP; k += blockDim.x) {
          sB[tt * NP + k] = k < a.n ? a.Bm[r * a.ldb + k] : 0.f;
          sC[tt * NP + k] = k < a.n ? a.Cm[r * a.ldc + k] : 0.f;
        }
      }
    }
    float uu[TILE], zz[TILE];
#pragma unroll
    for (int tt = 0; tt < TILE; tt++) {
      uu[tt] = 0.f, zz[tt] = 0.f;
      if (tt < tn && cok) {
        uu[tt] = a.u[(r0 + tt) * a.ldu + c];
        if (a.z) zz[tt] = a.z[(r0 + tt) * a.ldz + c];
      }
    }
    __syncthreads();
    /* Phase 1: what does not depend on the state (dt_proj's dot, softplus, the decay and the
     * input term), for every position of the tile: independent chains the GPU overlaps. */
    float ea[TILE][SCAN_P], bu[TILE][SCAN_P];
#pragma unroll
    for (int tt = 0; tt < TILE; tt++) {
      if (tt >= tn) break;
      const float *xr = xs + tt * Rp;
      float dot = 0.f;
      if (a.wvec) {
#pragma unroll
        for (int q = 0; q < SSU_MAXC; q++) {
          int j = gi + q * L;
          if (j < nch) dot += dot16(wr[q], xr + j * EPV, WT());
        }
        if (cok)
          for (int j = gi + SSU_MAXC * L; j < nch; j += L)
            dot += dot16(__ldg((const uint4 *)wrow + j), xr + j * EPV, WT());
      } else if (cok) {
        for (int k = gi; k < R; k += L) dot = fmaf(wval(wrow, k), xr[k], dot);
      }
#pragma unroll
      for (int o = L / 2; o > 0; o >>= 1) dot += __shfl_xor_sync(0xffffffffu, dot, o);
      const float draw = dot + bc;
      if (gi == 0 && cok && a.delta_out) a.delta_out[(r0 + tt) * a.d + c] = draw;
      const float dt = a.softplus ? mb_softplus(draw) : draw;
      const float du = dt * uu[tt];
      const float2 bv = *(const float2 *)(sB + tt * NP + gi * SCAN_P);
      ea[tt][0] = exp2f(dt * Ac[0]), bu[tt][0] = du * bv.x;
      ea[tt][1] = exp2f(dt * Ac[1]), bu[tt][1] = du * bv.y;
    }
    /* Phase 2: the recurrence and the outputs, position after position. */
#pragma unroll
    for (int tt = 0; tt < TILE; tt++) {
      if (tt >= tn) break;
      const int64_t r = r0 + tt;
      const float2 cv = *(const float2 *)(sC + tt * NP + gi * SCAN_P);
      h[0] = fmaf(ea[tt][0], h[0], bu[tt][0]);
      h[1] = fmaf(ea[tt][1], h[1], bu[tt][1]);
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
          float yv = yp + Dc * uu[tt];
          if (a.z) yv *= mb_silu(zz[tt]);
          a.y[r * a.ldy + c] = yv;
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

/* ---- decoding batches: one thread per (sequence, channel) ------------------------------------ *
 * k_ssu_dt at batch 64 ran 28,672 two-warp blocks in ~18 waves, each wave a chain of dependent
 * loads (43 us a 972M layer for ~7 us of state traffic). Here a thread owns a (sequence, channel)
 * pair and plays the L lanes of that kernel itself: each virtual lane's partial dot product and
 * state pair in the same order, then the lanes' butterfly (xor o = L/2 .. 1: lane i adds lane i ^ o,
 * and since a + b == b + a bit for bit, every lane holds the same value; lane 0's is taken). So
 * every value has the lane kernel's bits: a batch decodes as its sequences would one by one (the
 * `y=rows` checks of cuda_vs_cpu's ssu_dt cases). A block is SSU_ROW_C channels (a warp: the
 * state, u, z and y accesses of a warp are contiguous) by SSU_ROW_B sequences (which share the
 * dt_proj rows through L1). */
#define SSU_ROW_C 32
#define SSU_ROW_B 4
template <int L, typename WT>
__global__ void __launch_bounds__(SSU_ROW_C *SSU_ROW_B) k_ssu_dt_rows(SsuDtArgs a) {
  extern __shared__ __align__(16) float smem_rows[];
  mb_pdl_trigger();
  constexpr int EPV = 16 / sizeof(WT), NP = L * SCAN_P;
  const int64_t c = (int64_t)blockIdx.x * SSU_ROW_C + threadIdx.x;
  const int64_t b = (int64_t)blockIdx.y * SSU_ROW_B + threadIdx.y;
  const bool cok = c < a.d, ok = cok && b < a.batch;
  const int R = a.R, Rp = (R + 7) & ~7;
  float *xs = smem_rows + threadIdx.y * (Rp + 2 * NP), *sB = xs + Rp, *sC = sB + NP;
  /* constants before the PDL wait */
  float Ac[NP];
#pragma unroll
  for (int s = 0; s < NP; s++) Ac[s] = (cok && s < a.n) ? a.A[c * a.n + s] * MB_LOG2E : 0.f;
  const float Dc = (cok && a.Dskip) ? a.Dskip[c] : 0.f;
  const float bc = (cok && a.wbias) ? a.wbias[c] : 0.f;
  const WT *wrow = (const WT *)a.w + (cok ? c : 0) * (int64_t)R;
  const int nch = a.wvec ? R / EPV : 0;
  mb_pdl_wait();
  const int64_t bb = b < a.batch ? b : 0; /* rows past the batch stage a valid row, unused */
  for (int k = threadIdx.x; k < Rp; k += SSU_ROW_C) xs[k] = k < R ? a.xdbl[bb * a.ldx + k] : 0.f;
  for (int k = threadIdx.x; k < NP; k += SSU_ROW_C) {
    sB[k] = k < a.n ? a.Bm[bb * a.ldb + k] : 0.f;
    sC[k] = k < a.n ? a.Cm[bb * a.ldc + k] : 0.f;
  }
  float h[NP];
  float *st = a.state + (bb * a.d + (cok ? c : 0)) * a.n;
#pragma unroll
  for (int s = 0; s < NP; s++) h[s] = (ok && s < a.n) ? st[s] : 0.f;
  const float uu = ok ? a.u[bb * a.ldu + c] : 0.f;
  const float zz = ok && a.z ? a.z[bb * a.ldz + c] : 0.f;
  __syncthreads();
  if (!ok) return; /* after the block's only barrier */
  /* dt_proj: lane gi's chunks j = gi, gi + L, ... in order, then the butterfly. The lanes advance
   * together (round m: chunk m L + gi of every lane), so a round's L weight loads are in flight at
   * once instead of one after another (ncu: the loop lane by lane waited on L1 most cycles). */
  float p[L];
#pragma unroll
  for (int gi = 0; gi < L; gi++) p[gi] = 0.f;
  if (a.wvec) {
    for (int m = 0; m < nch; m += L) {
      uint4 wq[L];
#pragma unroll
      for (int gi = 0; gi < L; gi++)
        wq[gi] = m + gi < nch ? __ldg((const uint4 *)wrow + m + gi) : make_uint4(0, 0, 0, 0);
#pragma unroll
      for (int gi = 0; gi < L; gi++)
        if (m + gi < nch) p[gi] += dot16(wq[gi], xs + (m + gi) * EPV, WT());
    }
  } else {
    for (int m = 0; m < R; m += L) {
      float wq[L];
#pragma unroll
      for (int gi = 0; gi < L; gi++) wq[gi] = m + gi < R ? wval(wrow, m + gi) : 0.f;
#pragma unroll
      for (int gi = 0; gi < L; gi++)
        if (m + gi < R) p[gi] = fmaf(wq[gi], xs[m + gi], p[gi]);
    }
  }
#pragma unroll
  for (int o = L / 2; o > 0; o >>= 1) {
    float q[L];
#pragma unroll
    for (int i = 0; i < L; i++) q[i] = p[i] + p[i ^ o];
#pragma unroll
    for (int i = 0; i < L; i++) p[i] = q[i];
  }
  const float draw = p[0] + bc;
  if (a.delta_out) a.delta_out[b * a.d + c] = draw;
  const float dt = a.softplus ? mb_softplus(draw) : draw;
  const float du = dt * uu;
  /* lane gi's two states, then the same butterfly over the lanes' partial outputs */
  float yl[L];
#pragma unroll
  for (int gi = 0; gi < L; gi++) {
    const int s0 = gi * SCAN_P;
    h[s0] = fmaf(exp2f(dt * Ac[s0]), h[s0], du * sB[s0]);
    h[s0 + 1] = fmaf(exp2f(dt * Ac[s0 + 1]), h[s0 + 1], du * sB[s0 + 1]);
    yl[gi] = fmaf(sC[s0 + 1], h[s0 + 1], sC[s0] * h[s0]);
  }
#pragma unroll
  for (int o = L / 2; o > 0; o >>= 1) {
    float q[L];
#pragma unroll
    for (int i = 0; i < L; i++) q[i] = yl[i] + yl[i ^ o];
#pragma unroll
    for (int i = 0; i < L; i++) yl[i] = q[i];
  }
  float yv = yl[0] + Dc * uu;
  if (a.z) yv *= mb_silu(zz);
  a.y[b * a.ldy + c] = yv;
#pragma unroll
  for (int s = 0; s < NP; s++)
    if (s < a.n) st[s] = h[s];
}

/* From this batch on, decoding steps take k_ssu_dt_rows (MAMBABYTE_CUDA_SSU_ROWS=N: from batch N;
 * 0: never). H200, 972M bf16 (`cuda_bench --batch`, both in one run): rows against lanes 1,981 vs
 * 2,174 B/s at b8, 6,143 vs 6,805 at b16, 13,871 vs 14,371 at b64, 22,089 vs 18,830 at b256. */
#define SSU_ROWS_MIN_BATCH 128

template <int L, typename WT>
static int ssu_dt_rows_launch(mb_ctx *ctx, const SsuDtArgs &a) {
  const int R = a.R, Rp = (R + 7) & ~7;
  const size_t smem = (size_t)SSU_ROW_B * (Rp + 2 * L * SCAN_P) * sizeof(float);
  if (smem > 48 * 1024)
    MBCUDA_CHECK(cudaFuncSetAttribute(k_ssu_dt_rows<L, WT>, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)smem), "selective_state_update_dt (smem attribute)");
  const dim3 grid(mbcuda_blocks(a.d, SSU_ROW_C), (unsigned)((a.batch + SSU_ROW_B - 1) / SSU_ROW_B));
  MBCUDA_LAUNCH("selective_state_update_dt (rows)", (k_ssu_dt_rows<L, WT>), grid, dim3(SSU_ROW_C, SSU_ROW_B), smem, a);
  return MB_OK;
}

/* 64 threads a block at every batch. Tried: 256 from batch 4 (the 28,672 two-warp blocks of batch
 * 64 looked like scheduling overhead): this op alone 55.2 against 49.5 us a 972M layer at batch 64
 * on the H200 (cuda_bench's breakdown, consecutive runs); reverted. */
template <int L, typename WT, int TILE>
static int ssu_dt_launch_t(mb_ctx *ctx, const SsuDtArgs &a, dim3 grid, int threads, size_t smem) {
  if (smem > 48 * 1024)
    MBCUDA_CHECK(cudaFuncSetAttribute(k_ssu_dt<L, WT, TILE>, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)smem), "selective_state_update_dt (smem attribute)");
  MBCUDA_LAUNCH("selective_state_update_dt", k_ssu_dt<L, WT, TILE>, grid, dim3(threads), smem, a);
  return MB_OK;
}

template <int L>
static int ssu_dt_launch_l(mb_ctx *ctx, SsuDtArgs &a, int wdtype, int64_t batch) {
  const int env = mbcuda_st(ctx)->ssu_rows, from = env < 0 ? SSU_ROWS_MIN_BATCH : env;
  if (a.len == 1 && from > 0 && batch >= from)
    return wdtype == MB_DTYPE_BF16 ? ssu_dt_rows_launch<L, uint16_t>(ctx, a)
                                   : ssu_dt_rows_launch<L, float>(ctx, a);
  const int threads = L > 64 ? L : 64;
  const int CB = threads / L;
  const size_t per_pos = (size_t)(((a.R + 7) & ~7) + 2 * L * SCAN_P) * sizeof(float);
  /* positions staged at once: up to SSU_TILE while that fits in 48 KB (one for a long dt_rank) */
  a.tile = (int)(a.len < SSU_TILE ? a.len : SSU_TILE);
  while (a.tile > 1 && per_pos * a.tile > 48 * 1024) a.tile >>= 1;
  const size_t smem = per_pos * a.tile;
  const dim3 grid((unsigned)((a.d + CB - 1) / CB), (unsigned)batch);
  const bool bf16 = wdtype == MB_DTYPE_BF16;
  if (a.tile == 1)
    return bf16 ? ssu_dt_launch_t<L, uint16_t, 1>(ctx, a, grid, threads, smem)
                : ssu_dt_launch_t<L, float, 1>(ctx, a, grid, threads, smem);
  return bf16 ? ssu_dt_launch_t<L, uint16_t, SSU_TILE>(ctx, a, grid, threads, smem)
              : ssu_dt_launch_t<L, float, SSU_TILE>(ctx, a, grid, threads, smem);
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
  const size_t es = wdtype == MB_DTYPE_BF16 ? 2 : 4;
  const int wvec = ((size_t)dt_rank * es) % 16 == 0 && ((uintptr_t)dt_w & 15) == 0;
  SsuDtArgs a = {u, ldu, x_dbl, ld_xdbl, dt_w, dt_bias, (int)dt_rank, wvec, A, Bm, ldb, Cm, ldc,
                 Dskip, z, ldz, state, d, (int)n, delta_softplus, delta_out, y, ldy, 1, nullptr, 0, batch};
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
                 states_all, 0, batch};
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
