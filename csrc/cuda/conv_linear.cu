/*
 * conv_linear.cu — mb_conv1d_step_linear on CUDA: a decoding batch's conv step and x_proj in one
 * kernel (from 9 rows, MAMBABYTE_CUDA_CONV_LINEAR, to 64, or 256 with bf16 weights; elsewhere the
 * conv and mb_linear).
 *
 * Before, a step of more than 8 sequences ran the conv step as a kernel of its own and x_proj
 * through cuBLAS (a split-K product and its reduction: two more kernels), three kernel boundaries
 * for ~1 MB of weights. Here block b owns CXL_CW channels: it loads its slice of x_proj's weights
 * (before the PDL wait: they are constant), runs its channels' conv step for every row (k_conv_seq's
 * arithmetic, so xc and the window get mb_causal_conv1d's bits), multiplies the slice by the rows'
 * outputs in fp32 into partial sums, and after a grid barrier (every block is resident: the grid is
 * at most the blocks an SM holds times the SMs, checked at launch) sums the partials of its share of
 * the outputs over the blocks in block order. A fixed order, so the same bits every run.
 * With bf16 weights the partial product runs on the tensor cores (mma.sync m16n8k16, fp32
 * accumulators) from the conv's outputs rounded to bf16, as the two ops' cuBLAS product rounds
 * its input (MAMBABYTE_CUDA_CONV_LINEAR_MMA=0: in fp32 FMAs from the fp32 outputs, as before),
 * and up to 256 rows: the op at 64 rows 11.7-11.9 us against 13.4-13.6, at 256 rows 30.7 against
 * the two ops' 39.3 (docs/cuda_notes.md, "The conv step and x_proj on the tensor cores").
 * The grid is d / 32 blocks (112 at the 972M shape, one an SM), so a block has 16 warps to hide
 * its latencies with. Measured against the two ops (cuda_bench --batch, H200, 972M bf16): decoding
 * +2-5.7% at 16 to 64 sequences, slower from 128 (docs/cuda_notes.md, "The conv step and x_proj in
 * one kernel", and "Batch 64 kernel by kernel").
 * Where a block's time went (clock stamps at each phase, docs/cuda_notes.md, "The conv step with
 * x_proj phase by phase"): at 256 rows the conv's two rounds of loads, the partials' scattered
 * stores and a reduction of one output a thread were most of it. So: a thread's rows of the conv
 * are loaded in one round (conv widths up to 4, the models'), the weights' slice stored only once
 * those loads are in flight, the partial tiles stored as float2 (whole 32-byte sectors) and the
 * reduction run on 4 outputs a thread with 16-byte loads.
 */
#include <stdint.h>

#include "cuda_internal.cuh"

#define CXL_CW 32              /* channels a block */
#define CXL_THREADS 512        /* 256 lost at 32 and 64 rows: 2.4% and 2.8% (cuda_bench --batch) */
#define CXL_RG 8               /* rows of one work item of the partial product */
#define CXL_OUT_MAX 256        /* x_proj's outputs (dt_rank + 2 d_state) a block holds */
#define CXL_N_MAX 64           /* rows of the fp32-FMA form: from 65 the two ops are faster (its
                                * partial sums' traffic and FP32 product grow with the rows: b128
                                * -5%, b256 -8.5%; b16 to b64 +1.2-1.5%, cuda_bench --batch, H200) */
#define CXL_N_MAX_MMA 256      /* rows of the tensor-core form (MAMBABYTE_CUDA_CONV_LINEAR_MAX, 9 to
                                * this; default this: b128 +7-10%, b256 +7-9% against the two ops,
                                * cuda_bench --batch-peers, H200) */
#define CXL_KMAX 8             /* conv width (k_conv_seq's CONV_KMAX) */
#define CXL_RED_B 16           /* partials (of 4 outputs each) a thread of the reduction loads
                                * together */
#define CXL_LD (CXL_CW + 4)    /* a row of the slices in shared memory: float4-aligned, and 8
                                * consecutive rows' float4 reads fall on distinct banks */
#define CXL_LDH (CXL_CW + 8)   /* the same in bf16 (the tensor-core form): 80-byte rows, so the 8
                                * rows of an mma fragment's 4-byte loads fall on distinct banks */

struct ConvLinArgs {
  const float *x; /* in_proj's output rows (ld ldx): the conv reads columns 0..d-1 */
  int64_t ldx;
  const float *cw, *cb; /* conv weight (d, k), bias (d) or NULL */
  float *state;         /* (n, d, k-1) */
  float *xc;            /* conv output rows (ld ldo) */
  int64_t ldo;
  const void *w;     /* x_proj (out_f, d), fp32 or bf16 */
  const float *bias; /* (out_f) or NULL */
  float *y;          /* (n, out_f) rows, ld ldy */
  int64_t ldy;
  float *part;    /* (gridDim.x, n, out_f) partial sums */
  unsigned *bar;  /* [0] arrivals, [1] generation */
  int64_t n, d, out_f;
  int k;
};

__device__ __forceinline__ float cxl_weight(const float *w, int64_t i) { return w[i]; }
__device__ __forceinline__ float cxl_weight(const uint16_t *w, int64_t i) {
  return mb_bf16_to_f32(w[i]);
}

/* Every block of the grid arrives before any leaves (all are resident). The generation is read
 * before arriving, so the last arrival's increment is the one a block waits for; the arrivals
 * counter is back to 0 for the next launch. Each arrival is an acquire-release add (the block's
 * partial sums, written before the __syncthreads, published with it; the last arrival sees every
 * earlier one's through the counter's release sequence), the new generation a release, and the
 * waiters' reads acquires: no sequentially consistent fence (H100, against the __threadfence()
 * form in one call: k_conv_linear 11.37-11.40 against 11.52-11.58 us exposed a layer at b64,
 * 23.49-23.58 against 23.73-23.85 at b256; that form is commit da426c0's, a peer for
 * tools/device/tree_ab.sh). */
__device__ __forceinline__ void cxl_grid_sync(unsigned *bar) {
  __syncthreads();
  if (threadIdx.x == 0) {
    unsigned *gen = bar + 1;
    const unsigned g0 = mb_ld_acquire_gpu(gen);
    if (mb_atom_add_acq_rel_gpu(bar, 1u) == gridDim.x - 1) {
      atomicExch(bar, 0u);
      mb_red_add_release_gpu(gen, 1u);
    } else {
      while (mb_ld_acquire_gpu(gen) == g0) __nanosleep(32);
    }
  }
  __syncthreads();
}

/* The tensor-core form's partial product (bf16 weights): P (n, out_f) = Ub (rows of the conv's
 * outputs rounded to bf16, 16-row tiles) x Wb^T (the weights' slice, 8-row tiles), CXL_CW = 32
 * channels as two k-steps of mma.sync.m16n8k16 with fp32 accumulators; warp w takes tiles w,
 * w + 16, ... Rows past n and outputs past out_f are zeros in shared memory and not stored. */
__device__ __forceinline__ void cxl_mma_partials(const uint16_t *Ub, const uint16_t *Wb, int n,
                                                 int out_f, float *P) {
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, g = lane / 4, tq = lane % 4;
  const int mt = (n + 15) / 16, nt = (out_f + 7) / 8;
  for (int t = warp; t < mt * nt; t += CXL_THREADS / 32) {
    const int r0 = (t / nt) * 16, o0 = (t % nt) * 8;
    float d[4] = {0.f, 0.f, 0.f, 0.f};
#pragma unroll
    for (int ks = 0; ks < CXL_CW; ks += 16) {
      const uint16_t *ua = Ub + (r0 + g) * CXL_LDH + ks + 2 * tq;
      const uint16_t *wb = Wb + (o0 + g) * CXL_LDH + ks + 2 * tq;
      mb_mma_bf16_16816(d, mb_ld_bf16x2(ua), mb_ld_bf16x2(ua + 8 * CXL_LDH), mb_ld_bf16x2(ua + 8),
                        mb_ld_bf16x2(ua + 8 * CXL_LDH + 8), mb_ld_bf16x2(wb),
                        mb_ld_bf16x2(wb + 8));
    }
    const int o = o0 + 2 * tq;
#pragma unroll
    for (int h = 0; h < 2; h++) {
      const int r = r0 + g + 8 * h;
      if (r < n && o < out_f) {
        float *q = P + (int64_t)r * out_f + o;
        if (out_f % 2 == 0) /* o even, the slices' rows even: 8-byte aligned, whole sectors */
          *(float2 *)q = make_float2(d[2 * h], d[2 * h + 1]);
        else {
          q[0] = d[2 * h];
          if (o + 1 < out_f) q[1] = d[2 * h + 1];
        }
      }
    }
  }
}

/* output j of the n x out_f (ld ldy), with x_proj's bias (32-bit division: n out_f < 2^31) */
__device__ __forceinline__ void cxl_store_out(const ConvLinArgs &a, int j, float v) {
  const int out_f = (int)a.out_f, r = j / out_f, o = j % out_f;
  a.y[(int64_t)r * a.ldy + o] = a.bias ? v + a.bias[o] : v;
}

/* After the grid barrier: block b sums outputs [j0, j0 + jn) of the n x out_f over the G blocks'
 * partials, in 4-output groups (16-byte loads; the partials' rows are whole groups when n out_f is
 * a multiple of 4, else groups of one), Jc groups at a time: nsl slices of the blocks a thread each
 * (block order within a slice, CXL_RED_B loads in flight), then the slices in order. At 256 rows a
 * block sums 330 outputs over 112 partials: one output a thread took 7 rounds of 16 L2 loads.
 * Indices in 32 bits (the launch checks that G n out_f < 2^31): in 64 bits they took ~340
 * instructions a warp after the grid barrier (ncu, batch 64). */
__device__ __forceinline__ void cxl_reduce(const ConvLinArgs &a, float4 *red) {
  const int tid = threadIdx.x;
  const int total = (int)(a.n * a.out_f), G = (int)gridDim.x;
  const int V = total % 4 == 0 ? 4 : 1; /* outputs a group */
  const int T = total / V, J = (T + G - 1) / G, j0 = (int)blockIdx.x * J;
  const int jn = j0 >= T ? 0 : (T - j0 < J ? T - j0 : J);
  const int Jc = J < CXL_THREADS ? J : CXL_THREADS, nsl = CXL_THREADS / Jc;
  const int jl = tid % Jc, s = tid / Jc;
  for (int base = 0; base < jn; base += Jc) {
    if (s < nsl && base + jl < jn) {
      const int j = j0 + base + jl;
      float4 acc = make_float4(0.f, 0.f, 0.f, 0.f);
      for (int g = s; g < G; g += CXL_RED_B * nsl) {
        float4 v[CXL_RED_B];
#pragma unroll
        for (int q = 0; q < CXL_RED_B; q++) {
          const int gg = g + q * nsl;
          const float *p = a.part + (unsigned)(gg * total);
          v[q] = gg >= G   ? make_float4(0.f, 0.f, 0.f, 0.f)
                 : V == 4 ? __ldcg((const float4 *)p + j)
                          : make_float4(__ldcg(p + j), 0.f, 0.f, 0.f);
        }
#pragma unroll
        for (int q = 0; q < CXL_RED_B; q++)
          acc.x += v[q].x, acc.y += v[q].y, acc.z += v[q].z, acc.w += v[q].w;
      }
      red[s * Jc + jl] = acc;
    }
    __syncthreads();
    if (tid < Jc && base + tid < jn) {
      float4 v = red[tid];
      for (int q = 1; q < nsl; q++) {
        const float4 w = red[q * Jc + tid];
        v.x += w.x, v.y += w.y, v.z += w.z, v.w += w.w;
      }
      const int j4 = (j0 + base + tid) * V;
      cxl_store_out(a, j4, v.x);
      if (V == 4) {
        cxl_store_out(a, j4 + 1, v.y);
        cxl_store_out(a, j4 + 2, v.z);
        cxl_store_out(a, j4 + 3, v.w);
      }
    }
    __syncthreads();
  }
}

/* The conv step of every (row, channel) of the block, k_conv_seq's arithmetic for one position;
 * CB rows' inputs loaded before the first is used (a store between would hold the next load back:
 * the pointers may alias); `stash` stores the weights' slice once those loads are in flight.
 * Element offsets in 32 bits (the launch checks that n ldx, n ldo and n d k are below 2^31): in
 * 64 bits each row's three addresses, with their selects, took ~300 of a warp's ~1,000
 * instructions after the PDL wait at batch 64 (ncu; the step 2,317.8 -> 2,244.6 us with the
 * reduction's 32-bit indices, docs/cuda_notes.md). */
template <int KM, int CB, bool MMA, typename Stash>
__device__ __forceinline__ void cxl_conv_rows(const ConvLinArgs &a, int tid, bool con,
                                                int64_t ch, int cme, const float (&wc)[KM],
                                                float bc, uint16_t *Ub, float *Us, Stash stash) {
  constexpr int RS = CXL_THREADS / CXL_CW; /* rows apart, a thread's consecutive rows */
  const int n = (int)a.n, k = a.k;
  const unsigned km1 = (unsigned)(k - 1), ud = (unsigned)a.d, uch = (unsigned)ch;
  const unsigned ldx = (unsigned)a.ldx, ldo = (unsigned)a.ldo;
  for (int r0 = tid / CXL_CW; r0 < n; r0 += CB * RS) {
    float xs[CB], win[CB][KM - 1];
    /* the row's window in the states (recomputed for the stores: kept, 16 offsets spilled) */
    const auto so = [&](int r) { return ((unsigned)r * ud + uch) * km1; };
#pragma unroll
    for (int b = 0; b < CB; b++) {
      const int r = r0 + b * RS;
      const bool on = con && r < n;
      const float *st = a.state + so(r);
#pragma unroll
      for (int j = 0; j < KM - 1; j++) win[b][j] = (on && j < k - 1) ? st[j] : 0.f;
      xs[b] = on ? a.x[(unsigned)r * ldx + uch] : 0.f;
    }
    stash();
#pragma unroll
    for (int b = 0; b < CB; b++) {
      const int r = r0 + b * RS;
      if (r >= n) continue;
      float o = 0.f;
      if (con) {
        float acc = bc;
#pragma unroll
        for (int j = 0; j < KM; j++) {
          if (j < k - 1 && j < KM - 1) acc += wc[j] * win[b][j];
          else if (j == k - 1) acc += wc[j] * xs[b];
        }
        o = mb_silu(acc);
        a.xc[(unsigned)r * ldo + uch] = o;
        float *st = a.state + so(r);
#pragma unroll
        for (int j = 0; j < KM - 1; j++) {
          if (j < k - 2 && j + 1 < KM - 1) st[j] = win[b][j + 1];
          else if (j == k - 2) st[j] = xs[b];
        }
      }
      if constexpr (MMA)
        Ub[r * CXL_LDH + cme] = mb_f32_to_bf16(o);
      else
        Us[r * CXL_LD + cme] = o;
    }
  }
}

/* MMA (bf16 weights only): the partial product on the tensor cores (cxl_mma_partials) from bf16
 * copies of the slice and of the conv's outputs; else in fp32 FMAs from fp32 copies. */
template <typename WT, bool MMA, int KM>
__global__ void __launch_bounds__(CXL_THREADS) k_conv_linear(ConvLinArgs a) {
  static_assert(KM <= CXL_KMAX, "conv width");
  /* rows of a thread's conv loaded together: the tensor-core form's 256 rows in one round; the
   * fp32-FMA form runs at most CXL_N_MAX = 64 (16 spilled it), and wide windows take registers */
  constexpr int CB = MMA && KM <= 4 ? 16 : 4;
  static_assert(MMA || CXL_N_MAX <= CB * (CXL_THREADS / CXL_CW), "one round of rows");
  static_assert(!MMA || sizeof(WT) == 2, "the tensor-core form takes bf16 weights");
  static_assert(!MMA || CXL_CW % 16 == 0, "whole k-steps of 16 channels");
  extern __shared__ __align__(16) float cxl_shared[];
  __shared__ float4 red4[CXL_THREADS];
  mb_pdl_trigger();
  const int tid = threadIdx.x;
  const int64_t c0 = (int64_t)blockIdx.x * CXL_CW;
  const int cn = (int)(a.d - c0 < CXL_CW ? a.d - c0 : CXL_CW);
  const int n = (int)a.n, out_f = (int)a.out_f, k = a.k;
  float *const Ws = cxl_shared, *const Us = cxl_shared + out_f * CXL_LD;
  /* MMA: the slice's rows padded to whole 8-row tiles, then the conv's rows */
  uint16_t *const Wb = (uint16_t *)cxl_shared;
  uint16_t *const Ub = Wb + ((out_f + 7) / 8 * 8) * CXL_LDH;
  /* the weights' slice: constant, so asked for before the PDL wait; 16-byte loads, all of a
   * thread's issued before the first store (a loop of a load and a store each waited ~1 us a round
   * trip), and stored only once the conv's loads are in flight too: the kernel before is cuBLAS's,
   * which does not trigger its dependents early, so the wait returns at once and the two round
   * trips were back to back (~2 us at 64 rows, tools/device/phase_sum.py) */
  const WT *W = (const WT *)a.w;
  constexpr int VE = 16 / sizeof(WT);                       /* weights a 16-byte load holds */
  constexpr int VPR = CXL_CW / VE;                          /* loads a row of the slice */
  constexpr int VMAX = CXL_OUT_MAX * VPR / CXL_THREADS;     /* loads a thread, at most */
  const bool wvec = cn == CXL_CW && a.d % VE == 0 && ((uintptr_t)W & 15) == 0;
  uint4 v[VMAX];
  if (wvec) {
#pragma unroll
    for (int q = 0; q < VMAX; q++) {
      const int i = tid + q * CXL_THREADS, o = i / VPR, c = (i % VPR) * VE;
      if (o < out_f) v[q] = __ldg((const uint4 *)(W + o * a.d + c0 + c));
    }
  } else {
    for (int i = tid; i < out_f * CXL_CW; i += CXL_THREADS) {
      const int o = i / CXL_CW, c = i % CXL_CW;
      if constexpr (MMA)
        Wb[o * CXL_LDH + c] = c < cn ? ((const uint16_t *)W)[o * a.d + c0 + c] : (uint16_t)0;
      else
        Ws[o * CXL_LD + c] = c < cn ? cxl_weight(W, o * a.d + c0 + c) : 0.f;
    }
  }
  const auto stash_weights = [&] {
#pragma unroll
    for (int q = 0; q < VMAX; q++) {
      const int i = tid + q * CXL_THREADS, o = i / VPR, c = (i % VPR) * VE;
      if (o < out_f) {
        if constexpr (MMA) {
          *(uint4 *)(Wb + o * CXL_LDH + c) = v[q];
        } else {
          const WT *e = (const WT *)&v[q];
#pragma unroll
          for (int t = 0; t < VE; t++) Ws[o * CXL_LD + c + t] = cxl_weight(e, t);
        }
      }
    }
  };
  bool stashed = !wvec;
  if (KM > 4 && wvec) stash_weights(), stashed = true; /* wide windows: registers */
  if constexpr (MMA) /* the outputs past out_f up to a whole tile */
    for (int i = tid; i < ((out_f + 7) / 8 * 8 - out_f) * CXL_CW; i += CXL_THREADS)
      Wb[(out_f + i / CXL_CW) * CXL_LDH + i % CXL_CW] = 0;
  /* a thread's channel is the same in every row it runs (CXL_THREADS is a multiple of CXL_CW):
   * its conv weights are loaded once, before the wait too */
  const int cme = tid % CXL_CW;
  const bool con = cme < cn;
  const int64_t ch = c0 + (con ? cme : 0);
  float wc[KM];
#pragma unroll
  for (int j = 0; j < KM; j++) wc[j] = (con && j < k) ? a.cw[ch * k + j] : 0.f;
  const float bc = (con && a.cb) ? a.cb[ch] : 0.f;
  mb_pdl_wait();
  cxl_conv_rows<KM, CB, MMA>(a, tid, con, ch, cme, wc, bc, Ub, Us, [&] {
    if (!stashed) stash_weights(), stashed = true;
  });
  if (!stashed) stash_weights(); /* a thread without rows */
  if constexpr (MMA) {
    /* the rows past n up to a whole 16-row tile: zeros */
    for (int i = tid; i < ((n + 15) / 16 * 16 - n) * CXL_CW; i += CXL_THREADS)
      Ub[(n + i / CXL_CW) * CXL_LDH + i % CXL_CW] = 0;
    __syncthreads();
    cxl_mma_partials(Ub, Wb, n, out_f, a.part + (int64_t)blockIdx.x * n * out_f);
  } else {
    /* the rows past n up to a whole row group: zeros, so that every group runs all its rows */
    const int groups = (n + CXL_RG - 1) / CXL_RG;
    for (int i = tid; i < (groups * CXL_RG - n) * CXL_CW; i += CXL_THREADS)
      Us[(n + i / CXL_CW) * CXL_LD + i % CXL_CW] = 0.f;
    __syncthreads();
    /* partial products: item (o, row group) reads W's row o once into registers; the group's rows
     * are independent chains (no early exit), so they overlap */
    float *P = a.part + (int64_t)blockIdx.x * n * out_f;
    for (int it = tid; it < out_f * groups; it += CXL_THREADS) {
      const int o = it % out_f, r0 = (it / out_f) * CXL_RG;
      float wv[CXL_CW];
#pragma unroll
      for (int c = 0; c < CXL_CW; c += 4) {
        const float4 q = *(const float4 *)(Ws + o * CXL_LD + c);
        wv[c] = q.x, wv[c + 1] = q.y, wv[c + 2] = q.z, wv[c + 3] = q.w;
      }
      float sum[CXL_RG];
#pragma unroll
      for (int rr = 0; rr < CXL_RG; rr++) {
        const int r = r0 + rr;
        float s0 = 0.f, s1 = 0.f, s2 = 0.f, s3 = 0.f; /* four chains, summed in a fixed order */
#pragma unroll
        for (int c = 0; c < CXL_CW; c += 4) {
          const float4 u = *(const float4 *)(Us + r * CXL_LD + c);
          s0 += u.x * wv[c], s1 += u.y * wv[c + 1], s2 += u.z * wv[c + 2], s3 += u.w * wv[c + 3];
        }
        sum[rr] = (s0 + s1) + (s2 + s3);
      }
#pragma unroll
      for (int rr = 0; rr < CXL_RG; rr++)
        if (r0 + rr < n) P[(int64_t)(r0 + rr) * out_f + o] = sum[rr];
    }
  }
  cxl_grid_sync(a.bar);
  cxl_reduce(a, red4);
}

static size_t cxl_smem(int64_t n, int64_t out_f, bool mma) {
  if (mma) /* bf16: the slice's rows and the conv's rows, each padded to whole tiles */
    return (size_t)((n + 15) / 16 * 16 + (out_f + 7) / 8 * 8) * CXL_LDH * sizeof(uint16_t);
  const int64_t rows = (n + CXL_RG - 1) / CXL_RG * CXL_RG; /* whole row groups */
  return (size_t)(rows + out_f) * CXL_LD * sizeof(float);
}

/* Blocks of k_conv_linear<WT, MMA, KM> an SM holds with smem bytes of dynamic shared memory into
 * *per_sm, after the opt-in to more than 48 KiB. */
template <typename WT, bool MMA, int KM>
static int cxl_per_sm_km(int smem, int *per_sm) {
  MBCUDA_CHECK(cudaFuncSetAttribute(k_conv_linear<WT, MMA, KM>,
                                    cudaFuncAttributeMaxDynamicSharedMemorySize, smem),
               "conv1d_step_linear");
  MBCUDA_CHECK(cudaOccupancyMaxActiveBlocksPerMultiprocessor(per_sm, k_conv_linear<WT, MMA, KM>,
                                                             CXL_THREADS, (size_t)smem),
               "conv1d_step_linear");
  return MB_OK;
}
/* Blocks of k_conv_linear<WT, MMA, *> an SM holds at its largest shared memory (the fewer of its
 * two conv widths' forms) into *cache (asked once). */
template <typename WT, bool MMA>
static int cxl_per_sm(int *cache) {
  if (*cache >= 0) return MB_OK;
  const int smem = (int)cxl_smem(MMA ? CXL_N_MAX_MMA : CXL_N_MAX, CXL_OUT_MAX, MMA);
  int p4 = 0, p8 = 0, e = cxl_per_sm_km<WT, MMA, 4>(smem, &p4);
  if (e == MB_OK) e = cxl_per_sm_km<WT, MMA, CXL_KMAX>(smem, &p8);
  if (e != MB_OK) return e;
  *cache = p4 < p8 ? p4 : p8;
  return MB_OK;
}

template <typename WT, bool MMA>
static int cxl_launch(mb_ctx *ctx, const ConvLinArgs &args, unsigned grid, size_t smem) {
  if (args.k <= 4)
    MBCUDA_LAUNCH("conv1d_step_linear", (k_conv_linear<WT, MMA, 4>), dim3(grid),
                  dim3(CXL_THREADS), smem, args);
  else
    MBCUDA_LAUNCH("conv1d_step_linear", (k_conv_linear<WT, MMA, CXL_KMAX>), dim3(grid),
                  dim3(CXL_THREADS), smem, args);
  return MB_OK;
}

extern "C" int mbcuda_conv1d_step_linear(mb_ctx *ctx, const float *x, int64_t ldx,
                                         const float *conv_w, const float *conv_bias,
                                         float *conv_state, int64_t n, int64_t d, int64_t k,
                                         float *xc, int64_t ldo, const void *w, int wdtype,
                                         const float *bias, int64_t out_f, float *y, int64_t ldy) {
  mbcuda_state *st = mbcuda_st(ctx);
  const int bf16 = wdtype == MB_DTYPE_BF16;
  /* bf16 weights: the partial product on the tensor cores unless MAMBABYTE_CUDA_CONV_LINEAR_MMA=0 */
  const bool mma = bf16 && st->conv_linear_mma;
  const int form = mma ? 2 : bf16; /* conv_linear_per_sm's index */
  const int64_t grid = (d + CXL_CW - 1) / CXL_CW;
  const int cl_max = st->conv_linear_max; /* MAMBABYTE_CUDA_CONV_LINEAR_MAX, 9 to CXL_N_MAX_MMA */
  const int64_t n_max = !mma                                   ? CXL_N_MAX
                        : cl_max >= 9 && cl_max < CXL_N_MAX_MMA ? cl_max
                                                                 : CXL_N_MAX_MMA;
  /* the kernel's element offsets in 32 bits (cxl_conv_rows, cxl_reduce) */
  const int64_t lim = INT32_MAX;
  const bool fits32 = n * (ldx > ldo ? ldx : ldo) < lim && n * d * k < lim &&
                      ((d + CXL_CW - 1) / CXL_CW + CXL_RED_B * CXL_THREADS) * n * out_f < lim;
  /* (the reduction's slices run up to CXL_RED_B CXL_THREADS partials past the grid, whose
   * offsets it computes but does not read) */
  bool fused = st->conv_linear && n >= st->conv_linear && n <= n_max && out_f >= 1 &&
               out_f <= CXL_OUT_MAX && k <= CXL_KMAX && fits32;
  if (fused) {
    int *per_sm = &st->conv_linear_per_sm[form];
    const int e = mma    ? cxl_per_sm<uint16_t, true>(per_sm)
                  : bf16 ? cxl_per_sm<uint16_t, false>(per_sm)
                         : cxl_per_sm<float, false>(per_sm);
    if (e != MB_OK) return e;
    fused = grid <= (int64_t)*per_sm * st->sm_count; /* every block resident: the barrier */
  }
  if (!fused) {
    int e = mbcuda_causal_conv1d(ctx, x, NULL, ldx, conv_w, conv_bias, conv_state, n, 1, d, k, xc,
                                 ldo, NULL, NULL, NULL);
    if (e != MB_OK || out_f == 0) return e;
    return mbcuda_linear(ctx, xc, ldo, w, wdtype, bias, n, d, out_f, y, ldy);
  }
  void *part = NULL;
  const int e = mbcuda_scratch(ctx, (size_t)grid * n * out_f * sizeof(float), "conv1d_step_linear",
                               &part);
  if (e != MB_OK) return e;
  const ConvLinArgs args = {x, ldx, conv_w, conv_bias, conv_state, xc, ldo, w, bias, y, ldy,
                            (float *)part, st->done + MBCUDA_DONE_GRID_BAR, n, d, out_f, (int)k};
  const size_t smem = cxl_smem(n, out_f, mma);
  return mma    ? cxl_launch<uint16_t, true>(ctx, args, (unsigned)grid, smem)
         : bf16 ? cxl_launch<uint16_t, false>(ctx, args, (unsigned)grid, smem)
                : cxl_launch<float, false>(ctx, args, (unsigned)grid, smem);
}
