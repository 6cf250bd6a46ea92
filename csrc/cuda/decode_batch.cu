/*
 * decode_batch.cu — the decoding state update with dt_proj fused (mb_selective_state_update_dt)
 * for batch > 1 (issue 13).
 *
 * The batch-1 kernel (step.cu, k_ssu_dt) runs one block row per sequence, so at batch B every
 * block re-reads its channels' dt_proj rows (B x 800 KB per 972M layer, from L2) and each thread
 * waits on one sequence's loads at a time. Here a block holds CB channels x BB sequences:
 *
 *   thread = (sequence group sg, channel c, lane gi): the L lanes of channel c hold P = 2 states
 *   each (L * P >= n), exactly as in k_ssu_dt; the block's 256 threads are SG = 2 sequence groups
 *   of 128 (CB = 128 / L channels); a thread runs KB sequences b = b0 + sg + SG * k (k < KB),
 *   so BB = SG * KB sequences per block.
 *
 * - The dt_proj rows of the block's channels are loaded into registers once (16-byte loads,
 *   before the PDL wait: the weights are constant) and used for all KB sequences.
 * - x_dbl's first dt_rank columns and the B, C rows of the block's BB sequences are staged in
 *   shared memory once.
 * - Every state is read once and written once; all KB sequences' states, u and z are loaded
 *   before any is used (memory-level parallelism instead of one dependent round trip per
 *   sequence), and the loads are coalesced (a warp covers 128 / L... consecutive channels of one
 *   sequence, its lanes consecutive states).
 *
 * Bits: the per-(b, c) arithmetic is k_ssu_dt's, statement for statement (the same lane split of
 * the dot product, the same shuffle tree, the same fmaf/exp2f sequence), so the two kernels give
 * the same result and the CPU tolerance of cuda_vs_cpu is unchanged.
 *
 * MAMBABYTE_CUDA_DECODE_BATCH=old (read per call) keeps the previous kernels for batch > 1, for A/B
 * runs: this state update and the tensor-core linear of gemv_tc.cu.
 */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "cuda_internal.cuh"

#define DB_LOG2E 1.4426950408889634f
#define DB_P 2       /* states per lane, as SCAN_P in step.cu */
#define DB_MAXC 4    /* 16-byte weight chunks per lane kept in registers, as SSU_MAXC */
#define DB_THREADS 256
#define DB_SG 2      /* sequence groups per block */

int mbcuda_decode_batch_enabled(void) {
  const char *e = getenv("MAMBABYTE_CUDA_DECODE_BATCH");
  return !(e && (!strcmp(e, "old") || !strcmp(e, "0")));
}

__device__ __forceinline__ float db_bf16(uint16_t v) { return __uint_as_float(((uint32_t)v) << 16); }
__device__ __forceinline__ float db_softplus(float x) { return x > 20.f ? x : log1pf(expf(x)); }
__device__ __forceinline__ float db_silu(float x) { return x / (1.f + expf(-x)); }

__device__ __forceinline__ float db_dot16(uint4 w, const float *x, float) {
  float4 a = *(const float4 *)x;
  return __uint_as_float(w.x) * a.x + __uint_as_float(w.y) * a.y + __uint_as_float(w.z) * a.z +
         __uint_as_float(w.w) * a.w;
}
__device__ __forceinline__ float db_dot16(uint4 w, const float *x, uint16_t) {
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
__device__ __forceinline__ float db_wval(const float *w, int64_t i) { return __ldg(w + i); }
__device__ __forceinline__ float db_wval(const uint16_t *w, int64_t i) { return db_bf16(__ldg(w + i)); }

struct DbArgs {
  const float *u; int64_t ldu;
  const float *xdbl; int64_t ldx;
  const void *w; const float *wbias; int R; int wvec;
  const float *A;
  const float *Bm; int64_t ldb;
  const float *Cm; int64_t ldc;
  const float *Dskip;
  const float *z; int64_t ldz;
  float *state;
  int64_t batch, d; int n; int softplus;
  float *delta_out;
  float *y; int64_t ldy;
};

template <int L, int KB, typename WT>
__global__ void __launch_bounds__(DB_THREADS, 1) k_ssu_dt_batch(DbArgs a) {
  extern __shared__ __align__(16) float smem_db[];
  mb_pdl_trigger();
  constexpr int EPV = 16 / sizeof(WT);
  constexpr int CB = (DB_THREADS / DB_SG) / L;
  constexpr int BB = DB_SG * KB;
  const int gi = threadIdx.x % L, lane_c = (threadIdx.x / L) % CB, sg = threadIdx.x / (L * CB);
  const int64_t c = (int64_t)blockIdx.x * CB + lane_c, b0 = (int64_t)blockIdx.y * BB;
  const bool cok = c < a.d;
  const int R = a.R, Rp = (R + 7) & ~7, NP = L * DB_P, n = a.n;
  float *xs = smem_db, *sB = smem_db + BB * Rp, *sC = sB + BB * NP;
  /* constants before the PDL wait */
  float Ac[DB_P];
#pragma unroll
  for (int p = 0; p < DB_P; p++) {
    int s = gi * DB_P + p;
    Ac[p] = (cok && s < n) ? a.A[c * n + s] * DB_LOG2E : 0.f;
  }
  const float Dc = (cok && a.Dskip) ? a.Dskip[c] : 0.f;
  const float bc = (cok && a.wbias) ? a.wbias[c] : 0.f;
  const WT *wrow = (const WT *)a.w + (cok ? c : 0) * (int64_t)R;
  const int nch = a.wvec ? R / EPV : 0;
  uint4 wr[DB_MAXC];
#pragma unroll
  for (int q = 0; q < DB_MAXC; q++) {
    int j = gi + q * L;
    wr[q] = (cok && j < nch) ? __ldg((const uint4 *)wrow + j) : make_uint4(0, 0, 0, 0);
  }
  mb_pdl_wait();
  /* stage the block's sequences' dt inputs and B, C rows */
  for (int e = threadIdx.x; e < BB * Rp; e += DB_THREADS) {
    int bl = e / Rp, k = e - bl * Rp;
    int64_t b = b0 + bl;
    xs[e] = (b < a.batch && k < R) ? a.xdbl[b * a.ldx + k] : 0.f;
  }
  for (int e = threadIdx.x; e < BB * NP; e += DB_THREADS) {
    int bl = e / NP, s = e - bl * NP;
    int64_t b = b0 + bl;
    bool ok = b < a.batch && s < n;
    sB[e] = ok ? a.Bm[b * a.ldb + s] : 0.f;
    sC[e] = ok ? a.Cm[b * a.ldc + s] : 0.f;
  }
  /* every sequence's state, u and z of this thread, loaded before any is used */
  float h[KB][DB_P], uu[KB], zz[KB];
#pragma unroll
  for (int k = 0; k < KB; k++) {
    const int64_t b = b0 + sg + DB_SG * k;
    const bool ok = cok && b < a.batch;
    const float *st = a.state + (b * a.d + c) * n;
#pragma unroll
    for (int p = 0; p < DB_P; p++) {
      int s = gi * DB_P + p;
      h[k][p] = (ok && s < n) ? st[s] : 0.f;
    }
    uu[k] = ok ? a.u[b * a.ldu + c] : 0.f;
    zz[k] = (ok && a.z) ? a.z[b * a.ldz + c] : 0.f;
  }
  __syncthreads();
#pragma unroll
  for (int k = 0; k < KB; k++) {
    const int bl = sg + DB_SG * k;
    const int64_t b = b0 + bl;
    const bool ok = cok && b < a.batch;
    const float *xb = xs + bl * Rp;
    float dot = 0.f;
    if (a.wvec) {
#pragma unroll
      for (int q = 0; q < DB_MAXC; q++) {
        int j = gi + q * L;
        if (j < nch) dot += db_dot16(wr[q], xb + j * EPV, WT());
      }
      if (cok)
        for (int j = gi + DB_MAXC * L; j < nch; j += L)
          dot += db_dot16(__ldg((const uint4 *)wrow + j), xb + j * EPV, WT());
    } else if (cok) {
      for (int kk = gi; kk < R; kk += L) dot = fmaf(db_wval(wrow, kk), xb[kk], dot);
    }
#pragma unroll
    for (int o = L / 2; o > 0; o >>= 1) dot += __shfl_xor_sync(0xffffffffu, dot, o);
    const float draw = dot + bc;
    if (gi == 0 && ok && a.delta_out) a.delta_out[b * a.d + c] = draw;
    const float dt = a.softplus ? db_softplus(draw) : draw;
    const float du = dt * uu[k];
    const float2 bv = *(const float2 *)(sB + bl * NP + gi * DB_P);
    const float2 cv = *(const float2 *)(sC + bl * NP + gi * DB_P);
    h[k][0] = fmaf(exp2f(dt * Ac[0]), h[k][0], du * bv.x);
    h[k][1] = fmaf(exp2f(dt * Ac[1]), h[k][1], du * bv.y);
    float yp = fmaf(cv.y, h[k][1], cv.x * h[k][0]);
#pragma unroll
    for (int o = L / 2; o > 0; o >>= 1) yp += __shfl_xor_sync(0xffffffffu, yp, o);
    if (ok) {
      float *st = a.state + (b * a.d + c) * n;
#pragma unroll
      for (int p = 0; p < DB_P; p++) {
        int s = gi * DB_P + p;
        if (s < n) st[s] = h[k][p];
      }
      if (gi == 0) {
        float yv = yp + Dc * uu[k];
        if (a.z) yv *= db_silu(zz[k]);
        a.y[b * a.ldy + c] = yv;
      }
    }
  }
}

template <int L, int KB, typename WT>
static int db_launch_k(mb_ctx *ctx, DbArgs &a, size_t smem) {
  constexpr int CB = (DB_THREADS / DB_SG) / L;
  constexpr int BB = DB_SG * KB;
  dim3 grid((unsigned)((a.d + CB - 1) / CB), (unsigned)((a.batch + BB - 1) / BB));
  MBCUDA_LAUNCH("selective_state_update_dt (batch)", k_ssu_dt_batch<L, KB, WT>, grid, dim3(DB_THREADS), smem, a);
  return MB_OK;
}

template <int L, typename WT>
static int db_launch_l(mb_ctx *ctx, DbArgs &a, int KB) {
  const size_t per_seq = (size_t)(((a.R + 7) & ~7) + 2 * L * DB_P) * sizeof(float);
  /* keep the staging in the default 48 KB of shared memory */
  while (KB > 1 && (size_t)DB_SG * KB * per_seq > 48 * 1024) KB >>= 1;
  const size_t smem = (size_t)DB_SG * KB * per_seq;
  if (smem > 48 * 1024) return MBCUDA_NOT_HANDLED;
  switch (KB) {
    case 1: return db_launch_k<L, 1, WT>(ctx, a, smem);
    case 2: return db_launch_k<L, 2, WT>(ctx, a, smem);
    case 4: return db_launch_k<L, 4, WT>(ctx, a, smem);
    default: return db_launch_k<L, 8, WT>(ctx, a, smem);
  }
}

template <typename WT>
static int db_launch(mb_ctx *ctx, DbArgs &a, int L, int KB) {
  switch (L) {
    case 1: return db_launch_l<1, WT>(ctx, a, KB);
    case 2: return db_launch_l<2, WT>(ctx, a, KB);
    case 4: return db_launch_l<4, WT>(ctx, a, KB);
    case 8: return db_launch_l<8, WT>(ctx, a, KB);
    case 16: return db_launch_l<16, WT>(ctx, a, KB);
    default: return db_launch_l<32, WT>(ctx, a, KB);
  }
}

/* Returns MBCUDA_NOT_HANDLED when the caller should run the batch-1 kernel (batch 1, d_state
 * > 64, a dt_rank whose staging does not fit, or MAMBABYTE_CUDA_DECODE_BATCH=old). */
int mbcuda_ssu_dt_batch(mb_ctx *ctx, const float *u, int64_t ldu, const float *x_dbl,
                        int64_t ld_xdbl, const void *dt_w, int wdtype, const float *dt_bias,
                        int64_t dt_rank, const float *A, const float *Bm, int64_t ldb,
                        const float *Cm, int64_t ldc, const float *Dskip, const float *z,
                        int64_t ldz, float *state, int64_t batch, int64_t d, int64_t n,
                        int delta_softplus, float *delta_out, float *y, int64_t ldy) {
  if (batch <= 1 || n > 64 || dt_rank > 8192 || !mbcuda_decode_batch_enabled())
    return MBCUDA_NOT_HANDLED;
  int L = 1;
  while (L * DB_P < n) L <<= 1;
  /* sequences per thread: up to 8 (BB = 16 per block), fewer for a small batch */
  int KB = 1;
  while (KB < 8 && DB_SG * KB < batch) KB <<= 1;
  /* keep enough blocks to fill the GPU: ~2 waves of 256-thread blocks */
  const int64_t CB = (DB_THREADS / DB_SG) / L;
  const int64_t cblocks = (d + CB - 1) / CB;
  const int64_t want = (int64_t)mbcuda_st(ctx)->sm_count * 4;
  while (KB > 1 && cblocks * ((batch + DB_SG * KB - 1) / (DB_SG * KB)) < want) KB >>= 1;
  if ((batch + DB_SG * KB - 1) / (DB_SG * KB) > 65535) return MBCUDA_NOT_HANDLED;
  const size_t es = wdtype == MB_DTYPE_BF16 ? 2 : 4;
  const int wvec = ((size_t)dt_rank * es) % 16 == 0 && ((uintptr_t)dt_w & 15) == 0;
  DbArgs a = {u, ldu, x_dbl, ld_xdbl, dt_w, dt_bias, (int)dt_rank, wvec, A, Bm, ldb, Cm, ldc,
              Dskip, z, ldz, state, batch, d, (int)n, delta_softplus, delta_out, y, ldy};
  return wdtype == MB_DTYPE_BF16 ? db_launch<uint16_t>(ctx, a, L, KB) : db_launch<float>(ctx, a, L, KB);
}
