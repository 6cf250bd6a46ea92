/*
 * decode_stream.cu — mb_decode_layers at batch 1 (bf16 weights) as one kernel whose blocks stream
 * the large products' weights without a break.
 *
 * One block an SM (a grid the GPU holds at once). Each block owns a fixed share of every phase of
 * every layer: in_proj's row groups of 8 rows (with the norm before them and the conv step in their
 * epilogue), x_proj's rows, the state update's channel slices and out_proj's row tasks. Its share
 * of in_proj's and out_proj's weights, in the order it consumes them across all layers, goes
 * through a ring of shared-memory stages by bulk copies: a stage is asked for again as soon as the
 * block is done with it, so the weights of later phases and layers stream while the block waits
 * for a phase's input. x_proj's and dt_proj's rows (2 MB a layer) are asked for before each such
 * wait, as the ops' kernels ask for them before their PDL wait.
 *
 * A phase's input is the output of all blocks' earlier phase: per layer, counters in device
 * memory (x groups done, z groups done, x_proj rows done, state slices done, out_proj rows done),
 * added to with release semantics by a block once its share is written, spun on with acquire
 * loads by the block that needs them. The activations between phases (xz, xc, x_dbl, y, the
 * residual) are reused by every layer, so they are read through L2 (ld.global.cg): a line another
 * SM wrote since is never read from this SM's L1. The last block to finish sets the counters back
 * to 0 for the next launch. Every block is resident (one an SM, asked by occupancy), so a spin
 * always ends; one that has not ended after ~2 s traps (a fault, not a hang).
 *
 * Every value keeps the ops' bits: the norm is add_norm_reg_row, in_proj's rows the ring kernel's
 * warp-a-row sums (k_gemv_norm_ring), x_proj gemv_block with a block a row (k_gemv), the state
 * update ssu_dt_block (k_ssu_dt), out_proj's rows gemv_block's block-a-row sums (k_gemv_res) from
 * shared memory. cuda_vs_cpu holds the kernel's outputs equal to the ops' bit for bit.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bulk_copy.cuh"
#include "cuda_internal.cuh"
#include "gemv.cuh"
#include "norm_row.cuh"
#include "ssu.cuh"

#define DS_MAX_LAYERS 64
#define DS_NORM_MAX 2048 /* d_model: add_norm_reg_row's rows (gemm.cu's NORM_PRO_MAX) */
#define DS_MAX_STAGES 8
#define DS_GROUP_ROWS 8  /* in_proj rows a group: a warp each (the ring kernel's) */
#define DS_OUT_ROWS_MAX 8 /* out_proj rows a task */
#define DS_OUT_PASS 4     /* out_proj tasks a pass */
#define DS_THREADS 256
#define DS_CNT 5 /* counters a layer */
static_assert(DS_MAX_LAYERS * DS_CNT + 1 == MBCUDA_DS_CNT, "the context allocates the counters");
enum { DS_X = 0, DS_Z, DS_XP, DS_Y, DS_OUT };

struct DsLayer {
  const float *norm_w, *norm_b;
  const uint16_t *in_w;
  const float *in_b, *conv_w, *conv_b;
  float *conv_state;
  const uint16_t *x_w, *dt_w;
  const float *dt_b, *A, *D;
  float *ssm_state;
  const uint16_t *out_w;
  const float *out_b;
};

struct DsArgs {
  int n_layer, norm_kind, norm_thr, K, N, R;
  float eps;
  int64_t D, E; /* d_model, d_inner */
  int stages, out_rows; /* ring stages; out_proj rows a task */
  int l2_pre;           /* x_proj's rows, the state update's weights, A and states asked into L2
                         * at each layer's start (MAMBABYTE_CUDA_DECODE_STREAM_L2=0: not) */
  size_t stage_bytes;
  float *hidden, *residual, *xz, *xc, *x_dbl, *delta, *y;
  unsigned int *cnt; /* n_layer * DS_CNT counters, then the blocks' exit count */
  long long *tm;     /* TM: n_layer x grid x DS_TM stamps */
  DsLayer L[DS_MAX_LAYERS];
};

/* Spins (thread 0) until *p >= target, then the block's barrier: what the counter's writers wrote
 * before their release is visible to every thread of the block after it. */
__device__ __forceinline__ void ds_wait(const unsigned int *p, unsigned int target) {
  if (threadIdx.x == 0) {
    unsigned int v;
    long long spins = 0;
    for (;;) { /* relaxed loads (an acquire load also invalidates L1 each time), then one fence */
      asm volatile("ld.relaxed.gpu.global.u32 %0, [%1];" : "=r"(v) : "l"(p) : "memory");
      if (v >= target) break;
      if (++spins > (1ll << 26)) __trap(); /* seconds: a block that never arrives is a fault */
    }
    asm volatile("fence.acq_rel.gpu;" ::: "memory");
  }
  __syncthreads();
}

/* The block meets, then thread 0 adds to the counter with release semantics, which covers the
 * writes the barrier ordered before it (cooperative groups' grid barrier does the same). */
__device__ __forceinline__ void ds_signal(unsigned int *p, unsigned int add) {
  __syncthreads();
  if (threadIdx.x == 0) {
    __threadfence();
    asm volatile("red.release.gpu.global.add.u32 [%0], %1;" ::"l"(p), "r"(add) : "memory");
  }
}

/* MAMBABYTE_CUDA_DECODE_STREAM=2: each block's %globaltimer at the phase boundaries of every
 * layer (DS_TM a layer), summed up on stderr after direct launches */
#define DS_TM 13 /* 0-10 phase boundaries, 11 and 12 thread 0's ring waits (ns) */
__device__ __forceinline__ long long ds_now() {
  long long t;
  asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(t));
  return t;
}

/* The conv step of one x row (conv_epi's operations in its order, on values loaded earlier: taps
 * 0..k-2 and the last at CONV_EPI_KMAX - 1, the window st), its window advanced in memory. */
__device__ __forceinline__ void ds_conv(const DsArgs &a, const DsLayer &P, int64_t row,
                                        const float (&cw)[CONV_EPI_KMAX],
                                        const float (&st)[CONV_EPI_KMAX - 1], float cb, float xv) {
  const int k = a.K;
  float acc = cb;
#pragma unroll
  for (int i = 0; i < CONV_EPI_KMAX - 1; i++)
    if (i < k - 1) acc = fmaf(cw[i], st[i], acc);
  acc = fmaf(cw[CONV_EPI_KMAX - 1], xv, acc);
  float *sp = P.conv_state + row * (k - 1);
#pragma unroll
  for (int i = 0; i < CONV_EPI_KMAX - 2; i++)
    if (i + 1 < k - 1) sp[i] = st[i + 1];
  if (k > 1) sp[k - 2] = xv;
  a.xc[row] = acc / (1.f + expf(-acc));
}

template <int VPT, bool TM, int MINB>
__global__ void __launch_bounds__(DS_THREADS, MINB) k_decode_stream(const __grid_constant__ DsArgs a) {
  extern __shared__ __align__(128) unsigned char ds_smem[];
  __shared__ __align__(16) float xs[DS_NORM_MAX];
  __shared__ float red[32];
  __shared__ float ored[DS_THREADS / 32][DS_OUT_PASS * DS_OUT_ROWS_MAX];
  __shared__ uint64_t bar[DS_MAX_STAGES];
  __shared__ unsigned int arrived[DS_MAX_STAGES]; /* warps done with a stage, ever (mod 8) */
  const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31;
  const int G = (int)gridDim.x, b = (int)blockIdx.x, S = a.stages;
  const int64_t D = a.D, E = a.E, dx = a.R + 2 * (int64_t)a.N;
  const int ngroups = (int)(2 * E / DS_GROUP_ROWS), xgroups = (int)(E / DS_GROUP_ROWS);
  const int mine_in = (ngroups - b + G - 1) / G;
  const int mine_x = b < xgroups ? (xgroups - b + G - 1) / G : 0; /* its first mine_x are x groups */
  const int out_tasks = (int)((D + a.out_rows - 1) / a.out_rows);
  const int ob = G - 1 - b; /* out_proj task t goes to block G - 1 - t % G */
  const int mine_out = ob < out_tasks ? (out_tasks - ob + G - 1) / G : 0;
  const int per_layer = mine_in + mine_out;
  const int total = a.n_layer * per_layer;
  unsigned char *ring = ds_smem;
  float *ys = (float *)(ds_smem + (size_t)S * a.stage_bytes); /* out_proj's input, E floats */
  float *ssu_smem = ys + ((E + 3) & ~(int64_t)3);
  /* copy q of this block: layer q / per_layer; its first mine_in are in_proj groups */
  const auto issue = [&](int q) {
    const int l = q / per_layer, j = q % per_layer;
    const void *src;
    unsigned bytes;
    if (j < mine_in) {
      const int64_t g = b + (int64_t)j * G;
      src = a.L[l].in_w + g * DS_GROUP_ROWS * D;
      bytes = (unsigned)(DS_GROUP_ROWS * D * 2);
    } else {
      const int64_t t = ob + (int64_t)(j - mine_in) * G;
      const int64_t r0 = t * a.out_rows, rows = min((int64_t)a.out_rows, D - r0);
      src = a.L[l].out_w + r0 * E;
      bytes = (unsigned)(rows * E * 2);
    }
    bulk_load(ring + (size_t)(q % S) * a.stage_bytes, src, bytes, &bar[q % S]);
  };
  if (tid == 0)
    for (int s = 0; s < S; s++) mbar_init(&bar[s], 1), arrived[s] = 0;
  __syncthreads();
  /* constant weights: asked for before the wait, by the warps' first lanes in turn */
  if (lane == 0)
    for (int qq = warp; qq < S && qq < total; qq += DS_THREADS / 32) issue(qq);
  mb_pdl_wait();
  int q = 0; /* the next copy this block consumes */
  long long ring_wait = 0; /* TM: thread 0's time in mbar_wait this phase */
  const auto stage_ready = [&](int qq) {
    const long long t0 = TM && tid == 0 ? ds_now() : 0;
    mbar_wait(&bar[qq % S], (unsigned)(qq / S) & 1u);
    if (TM && tid == 0) ring_wait += ds_now() - t0;
    return ring + (size_t)(qq % S) * a.stage_bytes;
  };
  const ConvEpi none = {nullptr, nullptr, nullptr, nullptr, 0, 0, 0};
  const int nslices = (int)((E + DS_THREADS / 8 - 1) / (DS_THREADS / 8));
  for (int l = 0; l < a.n_layer; l++) {
    const DsLayer P = a.L[l]; /* the layer's pointers in registers, read from the parameters once */
    unsigned int *cnt = a.cnt + (size_t)l * DS_CNT;
    const bool last = l + 1 == a.n_layer;
    long long *tm = TM ? a.tm + ((size_t)l * G + b) * DS_TM : nullptr;
    const auto stamp = [&](int k) {
      if (TM && tid == 0) tm[k] = ds_now();
    };
    stamp(0);
    /* the conv step's values of this warp's x rows, lane i holding its i-th group's row (taps
     * 0..k-2, the last tap at CONV_EPI_KMAX - 1, as conv_consts; the window), loaded now so
     * that no group's epilogue waits on them */
    float c_w[CONV_EPI_KMAX] = {0.f, 0.f, 0.f, 0.f}, c_st[CONV_EPI_KMAX - 1] = {0.f, 0.f, 0.f},
          c_b = 0.f;
    if (lane < mine_x) {
      const int64_t row = (b + (int64_t)lane * G) * DS_GROUP_ROWS + warp;
      const ConvEpi ce = {P.conv_w, P.conv_b, P.conv_state, a.xc, E, E, a.K};
      conv_consts(ce, row, c_w, c_b);
#pragma unroll
      for (int t = 0; t < CONV_EPI_KMAX - 1; t++)
        if (t < a.K - 1) c_st[t] = P.conv_state[row * (a.K - 1) + t];
    }
    /* what this block's x_proj rows and state slice read that no phase writes, into L2 now:
     * 128-byte lines, one a thread */
    if (a.l2_pre) {
      for (int64_t r = b; r < dx; r += G)
        for (int64_t o = tid * 128; o < E * 2; o += DS_THREADS * 128)
          prefetch_l2((const char *)(P.x_w + r * E) + o);
      for (int64_t sl = b; sl < nslices; sl += G) {
        const int64_t c0 = sl * (DS_THREADS / 8), cn = min((int64_t)DS_THREADS / 8, E - c0);
        const int64_t wbytes = cn * a.R * 2, sbytes = cn * a.N * 4;
        for (int64_t o = tid * 128; o < wbytes; o += DS_THREADS * 128)
          prefetch_l2((const char *)(P.dt_w + c0 * a.R) + o);
        for (int64_t o = tid * 128; o < sbytes; o += DS_THREADS * 128) {
          prefetch_l2((const char *)(P.A + c0 * a.N) + o);
          prefetch_l2((const char *)(P.ssm_state + c0 * a.N) + o);
        }
      }
    }
    /* ---- the norm, then in_proj: warp w takes row w of each of the block's groups on its own
     * (no block barrier a group); the last warp done with a stage asks for its next copy ---- */
    if (mine_in > 0) {
      auto wait_prev = [&] {
        if (l > 0) ds_wait(a.cnt + (size_t)(l - 1) * DS_CNT + DS_OUT, (unsigned)D);
        stamp(1);
      };
      if (l == 0)
        add_norm_reg_row<VPT, XLoad::Cg, decltype(wait_prev), false>(
            a.hidden, nullptr, b == 0 ? a.residual : nullptr, 0, P.norm_w, P.norm_b, a.norm_kind,
            a.eps, D, a.norm_thr, xs, nullptr, red, wait_prev);
      else
        add_norm_reg_row<VPT, XLoad::Cg, decltype(wait_prev), true>(
            a.residual, nullptr, nullptr, 0, P.norm_w, P.norm_b, a.norm_kind, a.eps, D,
            a.norm_thr, xs, nullptr, red, wait_prev);
      __syncthreads();
      stamp(2);
      const int64_t nch = D / 8;
      for (int i = 0; i < mine_in; i++, q++) {
        const int64_t g = b + (int64_t)i * G, row = g * DS_GROUP_ROWS + warp;
        const uint4 *wq = (const uint4 *)(stage_ready(q) + (size_t)warp * D * 2);
        float acc = 0.f;
#pragma unroll 8
        for (int64_t ch = lane; ch < nch; ch += 32) {
          float wf[8];
          unpack(wq[ch], wf, uint16_t());
          const float4 *xp = (const float4 *)(xs + ch * 8);
#pragma unroll
          for (int e = 0; e < 2; e++) acc = dot4_acc(acc, &wf[4 * e], xp[e]);
        }
#pragma unroll
        for (int o = 16; o > 0; o >>= 1) acc += __shfl_xor_sync(0xffffffffu, acc, o, 32);
        /* the conv's values of this group's row, from lane i */
        float cw[CONV_EPI_KMAX], cs[CONV_EPI_KMAX - 1];
#pragma unroll
        for (int t = 0; t < CONV_EPI_KMAX; t++) cw[t] = __shfl_sync(0xffffffffu, c_w[t], i & 31);
#pragma unroll
        for (int t = 0; t < CONV_EPI_KMAX - 1; t++)
          cs[t] = __shfl_sync(0xffffffffu, c_st[t], i & 31);
        const float cb = __shfl_sync(0xffffffffu, c_b, i & 31);
        if (lane == 0) {
          const float v = acc + (P.in_b ? P.in_b[row] : 0.f);
          a.xz[row] = v;
          if (i < mine_x) ds_conv(a, P, row, cw, cs, cb, v);
        }
        __syncwarp();
        if (lane == 0) {
          /* the last of the 8 warps done with the stage asks for its next copy */
          __threadfence_block();
          if (atomicAdd(&arrived[q % S], 1u) % 8 == 7 && q + S < total) issue(q + S);
          /* this warp's x rows, then its z rows, written: released to the other blocks */
          if (i + 1 == mine_x || (i + 1 == mine_in && mine_in > mine_x)) {
            __threadfence();
            const unsigned n = i + 1 == mine_x ? mine_x : mine_in - mine_x;
            asm volatile("red.release.gpu.global.add.u32 [%0], %1;" ::"l"(
                             cnt + (i + 1 == mine_x ? DS_X : DS_Z)),
                         "r"(n)
                         : "memory");
          }
        }
        if (i + 1 == mine_x) stamp(3);
      }
    }
    stamp(4);
    /* ---- x_proj: a block a row, its weights asked for before the wait ---- */
    for (int64_t r = b; r < dx; r += G) {
      auto wait_x = [&] {
        ds_wait(cnt + DS_X, (unsigned)E);
        stamp(5);
      };
      gemv_block<uint16_t, 1, 256, true, false, XLoad::Cg, decltype(wait_x)>(
          a.xc, E, P.x_w, nullptr, 1, E, dx, a.x_dbl, dx, none, 1, (unsigned)r, DS_THREADS, wait_x);
      ds_signal(cnt + DS_XP, 1);
    }
    if (TM && tid == 0) tm[11] = ring_wait, ring_wait = 0;
    stamp(6);
    /* ---- dt_proj and the state update: slices of 32 channels (8 lanes each) ---- */
    for (int s = b; s < nslices; s += G) {
      SsuDtArgs sa = {a.xc, E, a.x_dbl, dx, P.dt_w, P.dt_b, a.R, 1, P.A, a.x_dbl + a.R, dx,
                      a.x_dbl + a.R + a.N, dx, P.D, a.xz + E, 2 * E, P.ssm_state, E, a.N, 1,
                      a.delta, a.y, E, 1, nullptr, 1, 1, nullptr, 0};
      auto wait_xp = [&] {
        ds_wait(cnt + DS_Z, (unsigned)E);
        ds_wait(cnt + DS_XP, (unsigned)dx);
        stamp(7);
      };
      /* the state before the wait: only this task touches this layer's slice in a launch */
      ssu_dt_block<8, uint16_t, 1, XLoad::Cg, decltype(wait_xp), true>(
          sa, (unsigned)s, 0, DS_THREADS, ssu_smem, wait_xp);
      ds_signal(cnt + DS_Y, 1);
    }
    stamp(8);
    /* ---- out_proj from the ring: up to DS_OUT_PASS tasks in one pass, each row reduced as a
     * one-row block reduces it ---- */
    if (mine_out > 0) {
      ds_wait(cnt + DS_Y, (unsigned)nslices);
      /* y into shared memory once, every load in flight at once */
      for (int64_t i = tid; i < E / 4; i += DS_THREADS)
        ((float4 *)ys)[i] = __ldcg((const float4 *)a.y + i);
      __syncthreads();
    }
    stamp(9);
    unsigned orows = 0; /* this block's rows so far */
    for (int j0 = 0; j0 < mine_out; j0 += DS_OUT_PASS) {
      const int nt = min(DS_OUT_PASS, mine_out - j0);
      const int64_t nch = E / 8;
      int rows[DS_OUT_PASS];
      const uint4 *wq[DS_OUT_PASS];
      float acc[DS_OUT_PASS][DS_OUT_ROWS_MAX];
#pragma unroll
      for (int j = 0; j < DS_OUT_PASS; j++) {
        const int64_t t = ob + (int64_t)(j0 + j) * G;
        rows[j] = j < nt ? (int)min((int64_t)a.out_rows, D - t * a.out_rows) : 0;
        wq[j] = j < nt ? (const uint4 *)stage_ready(q + j) : nullptr;
#pragma unroll
        for (int r = 0; r < DS_OUT_ROWS_MAX; r++) acc[j][r] = 0.f;
      }
      for (int64_t ch = tid; ch < nch; ch += DS_THREADS) {
        const float4 x0 = *(const float4 *)(ys + ch * 8);
        const float4 x1 = *(const float4 *)(ys + ch * 8 + 4);
#pragma unroll
        for (int j = 0; j < DS_OUT_PASS; j++)
#pragma unroll
          for (int r = 0; r < DS_OUT_ROWS_MAX; r++) {
            if (r < rows[j]) {
              float wf[8];
              unpack(wq[j][r * nch + ch], wf, uint16_t());
              acc[j][r] = dot4_acc(acc[j][r], &wf[0], x0);
              acc[j][r] = dot4_acc(acc[j][r], &wf[4], x1);
            }
          }
      }
#pragma unroll
      for (int j = 0; j < DS_OUT_PASS; j++)
#pragma unroll
        for (int r = 0; r < DS_OUT_ROWS_MAX; r++) {
          if (r < rows[j]) { /* the same for the whole block */
#pragma unroll
            for (int o = 16; o > 0; o >>= 1)
              acc[j][r] += __shfl_xor_sync(0xffffffffu, acc[j][r], o, 32);
            if (lane == 0) ored[warp][j * DS_OUT_ROWS_MAX + r] = acc[j][r];
          }
        }
      __syncthreads();
      /* every stage of the pass is free: warp j's first lane asks for task j's next copy */
      if (lane == 0 && warp < nt && q + warp + S < total) issue(q + warp + S);
      if (tid < DS_OUT_PASS * DS_OUT_ROWS_MAX) {
        const int j = tid / DS_OUT_ROWS_MAX, r = tid % DS_OUT_ROWS_MAX;
        if (r < rows[j]) {
          float s = 0.f;
#pragma unroll
          for (int w = 0; w < DS_THREADS / 32; w++) s += ored[w][tid];
          const int64_t row = (ob + (int64_t)(j0 + j) * G) * a.out_rows + r;
          s += P.out_b ? P.out_b[row] : 0.f;
          a.hidden[row] = s;
          if (!last) __stcg(a.residual + row, __ldcg(a.residual + row) + s);
        }
      }
      for (int j = 0; j < nt; j++) orows += (unsigned)rows[j];
      q += nt;
      if (j0 + nt >= mine_out)
        ds_signal(cnt + DS_OUT, orows);
      else
        __syncthreads(); /* ored is reused */
    }
    if (TM && tid == 0) tm[12] = ring_wait, ring_wait = 0;
    stamp(10);
  }
  mb_pdl_trigger();
  /* the last block out sets the counters back to 0 for the next launch */
  __syncthreads();
  if (tid == 0) {
    unsigned int *exits = a.cnt + (size_t)a.n_layer * DS_CNT;
    __threadfence();
    if (atomicAdd(exits, 1u) == (unsigned)G - 1) {
      for (int i = 0; i < a.n_layer * DS_CNT; i++) a.cnt[i] = 0;
      *exits = 0;
      __threadfence();
    }
  }
}

/* ---- host side ------------------------------------------------------------------------------ */

/* Static shared memory of the kernel and room for the compiler's, below the dynamic part. */
#define DS_STATIC_SMEM (10 * 1024) /* the kernel's static shared memory is 9,472 bytes */

struct DsShape {
  size_t stage_bytes, dyn_smem;
  int stages, out_rows;
};

static DsShape ds_shape(const cudaDeviceProp &prop, int64_t D, int64_t E, int64_t N, int64_t R,
                        int minb) {
  DsShape s = {};
  s.stage_bytes = (size_t)DS_GROUP_ROWS * D * 2;
  if ((size_t)E * 2 > s.stage_bytes) s.stage_bytes = (size_t)E * 2;
  s.stage_bytes = (s.stage_bytes + 127) & ~(size_t)127;
  s.out_rows = (int)(s.stage_bytes / ((size_t)E * 2));
  if (s.out_rows > DS_OUT_ROWS_MAX) s.out_rows = DS_OUT_ROWS_MAX;
  const size_t ssu = (size_t)(((R + 7) & ~7) + 2 * 8 * SCAN_P) * sizeof(float) +
                     (size_t)((E + 3) & ~(int64_t)3) * sizeof(float); /* and y */
  /* a block's share of the SM's shared memory (1 KB of it reserved a block) */
  size_t per_block = prop.sharedMemPerMultiprocessor / minb - 1024;
  if (per_block > prop.sharedMemPerBlockOptin) per_block = prop.sharedMemPerBlockOptin;
  const size_t room = per_block > DS_STATIC_SMEM + ssu ? per_block - DS_STATIC_SMEM - ssu : 0;
  s.stages = (int)(room / s.stage_bytes);
  if (s.stages > DS_MAX_STAGES) s.stages = DS_MAX_STAGES;
  s.dyn_smem = (size_t)s.stages * s.stage_bytes + ssu;
  return s;
}

static bool aligned16(uint64_t p) { return (p & 15) == 0; }

/* Whether the kernel runs this step with the ops' bits: the switch, Hopper's bulk copies, bf16
 * weights, and shapes whose ops it reproduces (in_proj a warp a row, x_proj and out_proj a block
 * a row, 8 lanes a channel in the state update, the conv in in_proj's epilogue). */
extern "C" int mbcuda_decode_stream_ok(mb_ctx *ctx, const uint64_t *layers, int64_t n_layer,
                                       int64_t d_model, int64_t d_inner, int64_t d_state,
                                       int64_t dt_rank, int64_t d_conv, int wdtype,
                                       const float *xc, const float *y, const float *normed) {
  mbcuda_state *st = mbcuda_st(ctx);
  if (st->decode_stream < 1 || st->cc_major < 9 || !st->ds_cnt || wdtype != MB_DTYPE_BF16)
    return 0;
  if (n_layer < 1 || n_layer > DS_MAX_LAYERS || d_model > DS_NORM_MAX || d_model % 8 ||
      d_inner % 8 || dt_rank % 8 || d_conv < 1 || d_conv > CONV_EPI_KMAX ||
      scan_lanes(d_state) != 8)
    return 0;
  const int64_t dx = dt_rank + 2 * d_state;
  const int sm = st->sm_count, g256 = st->gemv_g256_rows;
  if ((d_inner / 8 + sm - 1) / sm > 32) return 0; /* a block's x groups: a lane's values each */
  if (gemv_group_size(2 * d_inner, d_model / 8, sm, g256) != 32 ||
      gemv_group_size(dx, d_inner / 8, sm, g256) != 256 ||
      gemv_group_size(d_model, d_inner / 8, sm, g256) != 256)
    return 0;
  if (!aligned16((uintptr_t)xc) || !aligned16((uintptr_t)y) || !aligned16((uintptr_t)normed))
    return 0;
  for (int64_t i = 0; i < n_layer; i++) {
    const uint64_t *P = layers + i * MB_DL_PTRS;
    if (!aligned16(P[MB_DL_IN_W]) || !aligned16(P[MB_DL_X_W]) || !aligned16(P[MB_DL_DT_W]) ||
        !aligned16(P[MB_DL_OUT_W]))
      return 0;
  }
  cudaDeviceProp prop;
  if (cudaGetDeviceProperties(&prop, ctx->device) != cudaSuccess) return 0;
  const DsShape s = ds_shape(prop, d_model, d_inner, d_state, dt_rank, st->ds_blocks);
  return s.stages >= 2 && s.out_rows >= 1;
}

/* The grid: MINB blocks an SM where they fit, every block resident at once (which the
 * counters' spins rely on). */
template <int VPT, bool TM, int MINB>
static cudaError_t ds_launch(mb_ctx *ctx, const DsArgs &a, size_t dyn, int *grid) {
  mbcuda_state *st = mbcuda_st(ctx);
  int &per_sm = st->ds_per_sm[VPT == 8][TM][MINB == 2];
  if (per_sm <= 0 || st->ds_smem_set[VPT == 8][TM][MINB == 2] < dyn) {
    const cudaError_t e = cudaFuncSetAttribute(k_decode_stream<VPT, TM, MINB>,
                                               cudaFuncAttributeMaxDynamicSharedMemorySize, (int)dyn);
    if (e != cudaSuccess) return e;
    const cudaError_t o = cudaOccupancyMaxActiveBlocksPerMultiprocessor(
        &per_sm, k_decode_stream<VPT, TM, MINB>, DS_THREADS, dyn);
    if (o != cudaSuccess) return o;
    if (per_sm < 1) return cudaErrorInvalidConfiguration;
    st->ds_smem_set[VPT == 8][TM][MINB == 2] = dyn;
  }
  *grid = (per_sm < MINB ? per_sm : MINB) * st->sm_count;
  return mbcuda_launch(ctx, k_decode_stream<VPT, TM, MINB>, dim3((unsigned)*grid),
                       dim3(DS_THREADS), dyn, a);
}

template <int VPT, bool TM>
static cudaError_t ds_launch_b(mb_ctx *ctx, const DsArgs &a, size_t dyn, int *grid) {
  return mbcuda_st(ctx)->ds_blocks == 2 ? ds_launch<VPT, TM, 2>(ctx, a, dyn, grid)
                                        : ds_launch<VPT, TM, 1>(ctx, a, dyn, grid);
}

/* The stamps of a direct launch on stderr: per phase, the mean over blocks of each block's median
 * over layers (us), and the step's span. */
static void ds_report(const long long *tm, int n_layer, int G) {
  static const char *name[DS_TM - 1] = {"norm wait", "norm",  "x groups", "z groups", "x wait",
                                        "x_proj", "state wait", "state", "y wait", "out_proj",
                                        "(ring waits: in_proj", "out_proj)"};
  double mean[DS_TM - 1] = {0};
  int used[DS_TM - 1] = {0};
  double *v = (double *)malloc((size_t)n_layer * sizeof(double));
  for (int k = 0; k < DS_TM - 1; k++) { /* k < 10: interval k -> k + 1; 10, 11: stamps 11, 12 */
    for (int b = 0; b < G; b++) {
      int m = 0;
      for (int l = 0; l < n_layer; l++) {
        const long long *t = tm + ((size_t)l * G + b) * DS_TM;
        if (k >= 10)
          v[m++] = (double)t[k + 1] * 1e-3;
        else if (t[k] > 0 && t[k + 1] > 0)
          v[m++] = (double)(t[k + 1] - t[k]) * 1e-3;
      }
      if (!m) continue;
      for (int i = 1; i < m; i++) /* insertion sort: n_layer <= 64 */
        for (int j = i; j > 0 && v[j - 1] > v[j]; j--) {
          const double x = v[j];
          v[j] = v[j - 1], v[j - 1] = x;
        }
      mean[k] += v[m / 2], used[k]++;
    }
  }
  free(v);
  const long long t0 = tm[0], t1 = tm[((size_t)(n_layer - 1) * G) * DS_TM + 10];
  fprintf(stderr, "decode_stream: %d layers, span %.1f us (block 0):", n_layer, (t1 - t0) * 1e-3);
  for (int k = 0; k < DS_TM - 1; k++)
    fprintf(stderr, " %s %.2f", name[k], used[k] ? mean[k] / used[k] : 0.0);
  fprintf(stderr, " (us a layer, medians over layers, mean over blocks)\n");
}

extern "C" int mbcuda_decode_stream(mb_ctx *ctx, const uint64_t *layers, int64_t n_layer,
                                    int64_t d_model, int64_t d_inner, int64_t d_state,
                                    int64_t dt_rank, int64_t d_conv, int norm_kind, float eps,
                                    float *hidden, float *residual, float *xz, float *xc,
                                    float *x_dbl, float *delta, float *y) {
  mbcuda_state *st = mbcuda_st(ctx);
  cudaDeviceProp prop;
  MBCUDA_CHECK(cudaGetDeviceProperties(&prop, ctx->device), "decode_stream (device)");
  const DsShape s = ds_shape(prop, d_model, d_inner, d_state, dt_rank, st->ds_blocks);
  static thread_local DsArgs a; /* ~8 KB: off the stack; copied into the launch's parameters */
  memset(&a, 0, sizeof a);
  a.n_layer = (int)n_layer;
  a.norm_kind = norm_kind;
  int thr, vpt;
  norm_reg_shape(d_model, &thr, &vpt);
  a.norm_thr = thr;
  a.K = (int)d_conv;
  a.N = (int)d_state;
  a.R = (int)dt_rank;
  a.eps = eps;
  a.D = d_model;
  a.E = d_inner;
  a.stages = s.stages;
  a.out_rows = s.out_rows;
  a.stage_bytes = s.stage_bytes;
  a.hidden = hidden, a.residual = residual, a.xz = xz, a.xc = xc, a.x_dbl = x_dbl;
  a.delta = delta, a.y = y;
  a.cnt = st->ds_cnt;
  a.l2_pre = st->ds_l2;
  const bool tm = st->decode_stream == 2 && !st->capturing;
  const size_t tm_n = (size_t)n_layer * st->sm_count * st->ds_blocks * DS_TM;
  if (tm) {
    if (!st->ds_tm) MBCUDA_CHECK(cudaMalloc((void **)&st->ds_tm, (size_t)DS_MAX_LAYERS * 1024 * DS_TM * sizeof(long long)), "decode_stream (stamps)");
    MBCUDA_CHECK(cudaMemsetAsync(st->ds_tm, 0, tm_n * sizeof(long long), mbcuda_stream(ctx)), "decode_stream (stamps)");
    a.tm = st->ds_tm;
  }
  for (int64_t i = 0; i < n_layer; i++) {
    const uint64_t *P = layers + i * MB_DL_PTRS;
#define DSP(T, k) ((T)(uintptr_t)P[MB_DL_##k])
    a.L[i] = {DSP(const float *, NORM_W), DSP(const float *, NORM_B), DSP(const uint16_t *, IN_W),
              DSP(const float *, IN_B),   DSP(const float *, CONV_W), DSP(const float *, CONV_B),
              DSP(float *, CONV_STATE),   DSP(const uint16_t *, X_W), DSP(const uint16_t *, DT_W),
              DSP(const float *, DT_B),   DSP(const float *, A),      DSP(const float *, D),
              DSP(float *, SSM_STATE),    DSP(const uint16_t *, OUT_W), DSP(const float *, OUT_B)};
#undef DSP
  }
  int grid = 0;
  const cudaError_t e = tm ? (vpt == 4 ? ds_launch_b<4, true>(ctx, a, s.dyn_smem, &grid)
                                       : ds_launch_b<8, true>(ctx, a, s.dyn_smem, &grid))
                           : (vpt == 4 ? ds_launch_b<4, false>(ctx, a, s.dyn_smem, &grid)
                                       : ds_launch_b<8, false>(ctx, a, s.dyn_smem, &grid));
  MBCUDA_CHECK(e, "decode_stream");
  if (tm && grid <= 1024) {
    long long *h = (long long *)malloc(tm_n * sizeof(long long));
    if (h && cudaMemcpyAsync(h, st->ds_tm, tm_n * sizeof(long long), cudaMemcpyDeviceToHost,
                             mbcuda_stream(ctx)) == cudaSuccess &&
        cudaStreamSynchronize(mbcuda_stream(ctx)) == cudaSuccess)
      ds_report(h, (int)n_layer, grid);
    free(h);
  }
  return MB_OK;
}
