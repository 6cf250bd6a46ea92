/*
 * decode.cu — mb_decode_layers on CUDA: every layer of a batch-1 decoding step in one persistent
 * kernel, instead of five kernels a layer (48 x 5 launches a 972M step, each boundary ~3.5 us of
 * dependent round trips: docs/cuda_notes.md).
 *
 * Each layer is four phases, separated by grid-wide barriers (one arrival counter each):
 *   A  add + norm, in_proj with the conv step in its epilogue   (every block norms the row itself)
 *   B  x_proj
 *   C  dt_proj + the state update
 *   D  out_proj
 * A phase's work items are the blocks its op's own kernel would launch, dealt round-robin to the
 * resident blocks, and each runs the device function that kernel runs (gemv.cuh, norm_row.cuh,
 * ssu.cuh) with the same group sizes, so every value has the bits of the ops (mb_decode_layers'
 * contract; cuda_vs_cpu checks it). Before waiting at a barrier a block loads the first weight
 * chunks of its next item and prefetches the rest of its rows into L2, as the ops do before their
 * PDL wait, so the weights stream while the barrier completes.
 *
 * The residual cannot be updated in place (other blocks still read it while block 0 writes it):
 * layer i reads the buffer layer i - 1 wrote and writes the other, ending in `residual`.
 * Activations written inside the kernel are read from L2 (ld.global.cg), never through L1, which
 * is not coherent across SMs.
 */
#include <stdint.h>

#include "cuda_internal.cuh"
#include "gemv.cuh"
#include "norm_row.cuh"
#include "ssu.cuh"

#define DEC_THREADS 256
#define DEC_NORM_MAX 2048               /* d_model: rows of mb_add_norm's register kernel */
#define DEC_X_MAX 4096                  /* d_inner staged in shared memory for x_proj, out_proj */
#define DEC_SSU_FLOATS (1024 + 2 * 64)  /* the state update's staged row: dt_rank <= 1024 */
#define DEC_DEFAULT_BLOCKS_PER_SM 2

struct DecodeArgs {
  const uint64_t *layers; /* n_layer * MB_DL_PTRS pointers, context memory */
  int n_layer;
  int64_t dm, di, n, R, dconv, dx;
  int norm_kind, norm_thr, norm_vpt;
  float eps;
  int g_in, g_x, g_out; /* GEMV group sizes, as mb_linear would choose them */
  int vec_in, vec_x, vec_out, wvec_dt;
  int prefetch; /* bulk L2 prefetches of later phases' weights (MAMBABYTE_CUDA_DECODE_PREFETCH) */
  float *hidden, *res, *res_alt, *xz, *xc, *xdbl, *delta, *y;
  unsigned int *bar; /* 4 arrival counters a layer, zeroed before the launch */
};

__device__ __forceinline__ unsigned int ld_acquire(const unsigned int *p) {
  unsigned int v;
  asm volatile("ld.acquire.gpu.global.u32 %0, [%1];" : "=r"(v) : "l"(p) : "memory");
  return v;
}

/* Every thread of the block is done with the phase; one arrival for the block (the release
 * orders the block's writes, which bar.sync made this thread's to publish, before it). */
__device__ __forceinline__ void dec_arrive(unsigned int *bar) {
  __syncthreads();
  if (threadIdx.x == 0) asm volatile("red.release.gpu.global.add.u32 [%0], 1;" ::"l"(bar) : "memory");
}

/* Until every block has arrived at `bar` (the acquire makes their writes visible, bar.sync hands
 * that on to the block). A barrier that never completes (a block that cannot run: the launch is
 * cooperative, so it should not happen) traps after ~2^35 cycles instead of hanging the device:
 * the launch then fails with an error. */
__device__ __forceinline__ void dec_wait(const unsigned int *bar) {
  if (threadIdx.x == 0) {
    const long long t0 = clock64();
    int spins = 0;
    while (ld_acquire(bar) < gridDim.x) {
      if (++spins == 1024) {
        spins = 0;
        if (clock64() - t0 > (1ll << 35)) __trap();
      }
    }
  }
  __syncthreads();
}

/* Thread 0 asks the memory system to bring `bytes` from p into L2 (one bulk prefetch per 64 KB;
 * p 16-byte aligned, bytes rounded down to 16): the weights of a later phase stream from DRAM
 * while this one and its barrier run, so each phase's rows come from L2. */
__device__ __forceinline__ void prefetch_bytes(const void *p, size_t bytes) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  if (threadIdx.x != 0 || ((uintptr_t)p & 15)) return;
  const char *c = (const char *)p;
  for (size_t off = 0; off + 16 <= bytes; off += 65536) {
    const unsigned n = (unsigned)((bytes - off < 65536 ? bytes - off : 65536) & ~(size_t)15);
    asm volatile("cp.async.bulk.prefetch.L2.global [%0], %1;" ::"l"(c + off), "r"(n) : "memory");
  }
#endif
}

/* This block's rows of a GEMV phase (items of `rpb` rows of `row_bytes`, round-robin), to L2. */
__device__ __forceinline__ void prefetch_items(const void *w, int64_t rows, int rpb,
                                               size_t row_bytes) {
  const int64_t items = (rows + rpb - 1) / rpb;
  for (int64_t it = blockIdx.x; it < items; it += gridDim.x) {
    const int64_t r0 = it * rpb, nr = rows - r0 < rpb ? rows - r0 : rpb;
    prefetch_bytes((const char *)w + r0 * row_bytes, (size_t)nr * row_bytes);
  }
}

/* x (n floats, global) into shared memory, for a phase whose every item reads all of it. */
__device__ __forceinline__ void stage_x(float *sx, const float *x, int64_t n) {
  for (int64_t i = threadIdx.x; i < n; i += blockDim.x) sx[i] = __ldcg(x + i);
  __syncthreads();
}

template <typename T>
__device__ __forceinline__ T dl_ptr(const uint64_t *P, int k) {
  return (T)(uintptr_t)__ldg((const unsigned long long *)P + k);
}

/* Up to KM rows of one GEMV at once (N = 1): this block's items it0 + k * istride, k < nk
 * (gemv_block's blocks: RPB rows each, one per group of G threads). Every row's lane g sums the
 * same chunks in the same order as in gemv_block, then the same reduction, so every row has
 * gemv_block's bits (cuda_vs_cpu holds them equal); but the KM rows' weight loads are in flight
 * together: a persistent block has few warps, and one row after the other left DRAM idle.
 * U: 16-byte loads per row per round. A caller that runs it twice must __syncthreads() between. */
template <typename WT, int G, bool VEC, bool CONV, XLoad XL, int KM, int U, typename Wait>
__device__ __forceinline__ void gemv_multi(const float *__restrict__ x,
                                           const WT *__restrict__ w,
                                           const float *__restrict__ bias, int64_t in_f,
                                           int64_t out_f, float *__restrict__ y,
                                           const ConvEpi &ce, int64_t it0, int64_t istride,
                                           int nk, Wait wait) {
  using XLC = XLoadTag<XL>;
  constexpr int EPC = 16 / (int)sizeof(WT), RPB = DEC_THREADS / G;
  const int g = threadIdx.x % G;
  int row[KM];
#pragma unroll
  for (int k = 0; k < KM; k++) {
    const int64_t r = (it0 + k * istride) * RPB + threadIdx.x / G;
    row[k] = (int)(r < out_f ? r : out_f - 1); /* keep the group's lanes in the shuffles */
  }
  float acc[KM];
#pragma unroll
  for (int k = 0; k < KM; k++) acc[k] = 0.f;
  if (VEC) {
    const int64_t nch = in_f / EPC;
    uint4 q[KM][U];
    auto load = [&](int64_t base) {
#pragma unroll
      for (int k = 0; k < KM; k++)
#pragma unroll
        for (int u = 0; u < U; u++) {
          const int64_t ch = base + (int64_t)u * G;
          q[k][u] = k < nk && ch < nch ? __ldcs((const uint4 *)(w + (int64_t)row[k] * in_f) + ch)
                                       : make_uint4(0, 0, 0, 0);
        }
    };
    load(g);
    wait();
    for (int64_t base = g; base < nch; base += (int64_t)G * U) {
      if (base != g) load(base);
#pragma unroll
      for (int u = 0; u < U; u++) {
        const int64_t ch = base + (int64_t)u * G;
        if (ch < nch) {
          const float4 *xp = (const float4 *)(x + ch * EPC);
          float4 xv[EPC / 4];
#pragma unroll
          for (int e = 0; e < EPC / 4; e++) xv[e] = xload(xp + e, XLC());
#pragma unroll
          for (int k = 0; k < KM; k++) {
            if (k < nk) {
              float wf[EPC];
              unpack(q[k][u], wf, WT());
#pragma unroll
              for (int e = 0; e < EPC / 4; e++)
                acc[k] += wf[4 * e] * xv[e].x + wf[4 * e + 1] * xv[e].y + wf[4 * e + 2] * xv[e].z +
                          wf[4 * e + 3] * xv[e].w;
            }
          }
        }
      }
    }
  } else {
    wait();
    for (int64_t kk = g; kk < in_f; kk += G) {
      const float xv = xload(x + kk, XLC());
#pragma unroll
      for (int k = 0; k < KM; k++)
        if (k < nk) acc[k] += wload(w + (int64_t)row[k] * in_f + kk) * xv;
    }
  }
  constexpr int WG = G < 32 ? G : 32;
#pragma unroll
  for (int k = 0; k < KM; k++) {
    if (k < nk) {
#pragma unroll
      for (int o = WG / 2; o > 0; o >>= 1) acc[k] += __shfl_xor_sync(0xffffffffu, acc[k], o, WG);
    }
  }
  auto epilogue = [&](int64_t r, float v) {
    y[r] = v;
    if (CONV && r < ce.dc) {
      float cw[CONV_EPI_KMAX] = {0.f, 0.f, 0.f, 0.f};
      if (ce.k <= CONV_EPI_KMAX) {
#pragma unroll
        for (int i = 0; i < CONV_EPI_KMAX - 1; i++)
          if (i < ce.k - 1) cw[i] = ce.w[r * ce.k + i];
        cw[CONV_EPI_KMAX - 1] = ce.w[r * ce.k + ce.k - 1];
      }
      conv_epi(ce, cw, ce.b ? ce.b[r] : 0.f, 0, r, v);
    }
  };
  if constexpr (G > 32) {
    constexpr int NW = G / 32;
    __shared__ float red[NW][KM];
    const int wid = threadIdx.x / 32, lane = threadIdx.x % 32;
    if (lane == 0) {
#pragma unroll
      for (int k = 0; k < KM; k++) red[wid][k] = acc[k];
    }
    __syncthreads();
    const int k = threadIdx.x;
    if (k < nk) {
      const int64_t r = it0 + k * istride; /* RPB = 1 */
      float s = 0.f;
#pragma unroll
      for (int i = 0; i < NW; i++) s += red[i][k];
      s += bias ? bias[r] : 0.f;
      epilogue(r, s);
    }
  } else {
    if (g == 0) {
#pragma unroll
      for (int k = 0; k < KM; k++) {
        const int64_t r = (it0 + k * istride) * RPB + threadIdx.x / G;
        if (k < nk && r < out_f) {
          const float b = bias ? bias[r] : 0.f;
          epilogue(r, acc[k] + b);
        }
      }
    }
  }
}

/* A GEMV phase: this block's items (round-robin over the grid) KM at a time, with the group size
 * and the vector path gemv_block's rules chose. `wait` runs once, after the first loads. */
template <typename WT, bool CONV, XLoad XL, typename Wait>
__device__ __forceinline__ void dec_gemv(int G, int vec, const float *x, const WT *w,
                                         const float *bias, int64_t in_f, int64_t out_f,
                                         float *y, const ConvEpi &ce, Wait wait) {
  const int64_t items = (out_f + DEC_THREADS / G - 1) / (DEC_THREADS / G);
  const int64_t mine = items > blockIdx.x ? (items - blockIdx.x + gridDim.x - 1) / gridDim.x : 0;
#define DEC_GEMV(GG, VV, KM, U)                                                                 \
  for (int64_t k0 = 0; k0 < mine; k0 += KM) {                                                   \
    if (k0) __syncthreads();                                                                    \
    gemv_multi<WT, GG, VV, CONV, XL, KM, U>(x, w, bias, in_f, out_f, y, ce,                     \
                                            blockIdx.x + k0 * gridDim.x, gridDim.x,             \
                                            (int)(mine - k0 < KM ? mine - k0 : KM), wait);      \
  }
  switch (G) {
    case 256:
      if (vec) { DEC_GEMV(256, true, 8, 2) } else { DEC_GEMV(256, false, 8, 2) }
      break;
    case 32:
      if (vec) { DEC_GEMV(32, true, 4, 4) } else { DEC_GEMV(32, false, 4, 4) }
      break;
    case 8:
      if (vec) { DEC_GEMV(8, true, 4, 4) } else { DEC_GEMV(8, false, 4, 4) }
      break;
    default:
      if (vec) { DEC_GEMV(4, true, 4, 4) } else { DEC_GEMV(4, false, 4, 4) }
      break;
  }
#undef DEC_GEMV
}

/* Runs `body(item, wait)` for this block's items of a phase of `items` (round-robin), `wait`
 * doing the barrier (and `after_wait`) once, when the first item's constants are loaded; a block
 * with no item waits for nothing (it only arrives). The GEMV phases (dec_gemv) do the same. */
template <typename Body, typename AfterWait>
__device__ __forceinline__ void dec_phase(int64_t items, const unsigned int *prev, Body body,
                                          AfterWait after_wait) {
  bool waited = false;
  auto wait = [&] {
    if (waited) return;
    waited = true;
    if (prev) dec_wait(prev);
    after_wait();
  };
  for (int64_t it = blockIdx.x; it < items; it += gridDim.x) {
    if (it != (int64_t)blockIdx.x) __syncthreads(); /* shared rows of the previous item */
    body((unsigned)it, wait);
  }
}

template <typename WT, int L>
__global__ void __launch_bounds__(DEC_THREADS) k_decode_layers(DecodeArgs a) {
  /* the normed row (phase A), or x_proj's / out_proj's input (phases B, D) */
  __shared__ __align__(16) float s_norm[DEC_X_MAX];
  __shared__ __align__(16) float s_ssu[DEC_SSU_FLOATS];
  __shared__ float s_red[32];
  const ConvEpi none = {nullptr, nullptr, nullptr, nullptr, 0, 0, 0};
  const bool stage = a.di <= DEC_X_MAX;
  const size_t wb = sizeof(WT);
  if (a.prefetch)
    prefetch_items(dl_ptr<const void *>(a.layers, MB_DL_IN_W), 2 * a.di, DEC_THREADS / a.g_in,
                   a.dm * wb);
  for (int i = 0; i < a.n_layer; i++) {
    const uint64_t *P = a.layers + (int64_t)i * MB_DL_PTRS;
    unsigned int *bar = a.bar + 4 * i;
    const unsigned int *prev = i > 0 ? bar - 1 : nullptr;
    float *res_out = ((a.n_layer - 1 - i) % 2 == 0) ? a.res : a.res_alt;
    const float *res_in = ((a.n_layer - i) % 2 == 0) ? a.res : a.res_alt; /* layer i - 1's */

    /* A: norm (every block, into shared memory; block 0 keeps the residual) + in_proj + conv */
    {
      const ConvEpi ce = {dl_ptr<const float *>(P, MB_DL_CONV_W),
                          dl_ptr<const float *>(P, MB_DL_CONV_B),
                          dl_ptr<float *>(P, MB_DL_CONV_STATE), a.xc, a.di, a.di, (int)a.dconv};
      const WT *w = dl_ptr<const WT *>(P, MB_DL_IN_W);
      const float *bias = dl_ptr<const float *>(P, MB_DL_IN_B);
      const float *nw = dl_ptr<const float *>(P, MB_DL_NORM_W);
      const float *nb = dl_ptr<const float *>(P, MB_DL_NORM_B);
      if (a.prefetch) { /* the rest of this layer's weights, behind in_proj's */
        prefetch_items(dl_ptr<const void *>(P, MB_DL_X_W), a.dx, DEC_THREADS / a.g_x, a.di * wb);
        prefetch_items(dl_ptr<const void *>(P, MB_DL_DT_W), a.di, DEC_THREADS / L, a.R * wb);
        prefetch_items(dl_ptr<const void *>(P, MB_DL_OUT_W), a.dm, DEC_THREADS / a.g_out,
                       a.di * wb);
      }
      auto norm = [&] {
        auto nowait = [] {};
        if (a.norm_vpt == 4)
          add_norm_reg_row<4, XLoad::Cg>(a.hidden, res_in, blockIdx.x == 0 ? res_out : nullptr,
                                         i > 0, nw, nb, a.norm_kind, a.eps, a.dm, a.norm_thr,
                                         s_norm, nullptr, s_red, nowait);
        else
          add_norm_reg_row<8, XLoad::Cg>(a.hidden, res_in, blockIdx.x == 0 ? res_out : nullptr,
                                         i > 0, nw, nb, a.norm_kind, a.eps, a.dm, a.norm_thr,
                                         s_norm, nullptr, s_red, nowait);
        __syncthreads(); /* the normed row, for every thread's GEMV */
      };
      bool waited = false;
      auto wait = [&] {
        if (waited) return;
        waited = true;
        if (prev) dec_wait(prev);
        norm();
      };
      dec_gemv<WT, true, XLoad::Generic>(a.g_in, a.vec_in, s_norm, w, bias, a.dm, 2 * a.di, a.xz,
                                         ce, wait);
      dec_arrive(bar + 0);
    }
    /* B: x_proj */
    {
      const WT *w = dl_ptr<const WT *>(P, MB_DL_X_W);
      bool waited = false;
      auto wait = [&] {
        if (waited) return;
        waited = true;
        dec_wait(bar + 0);
        if (stage) stage_x(s_norm, a.xc, a.di);
      };
      if (stage)
        dec_gemv<WT, false, XLoad::Generic>(a.g_x, a.vec_x, s_norm, w, nullptr, a.di, a.dx, a.xdbl,
                                            none, wait);
      else
        dec_gemv<WT, false, XLoad::Cg>(a.g_x, a.vec_x, a.xc, w, nullptr, a.di, a.dx, a.xdbl, none,
                                       wait);
      dec_arrive(bar + 1);
    }
    /* C: dt_proj + the state update (k_ssu_dt's blocks of DEC_THREADS / L channels) */
    {
      SsuDtArgs s = {a.xc, a.di, a.xdbl, a.dx, dl_ptr<const void *>(P, MB_DL_DT_W),
                     dl_ptr<const float *>(P, MB_DL_DT_B), (int)a.R, a.wvec_dt,
                     dl_ptr<const float *>(P, MB_DL_A), a.xdbl + a.R, a.dx, a.xdbl + a.R + a.n,
                     a.dx, dl_ptr<const float *>(P, MB_DL_D), a.xz + a.di, 2 * a.di,
                     dl_ptr<float *>(P, MB_DL_SSM_STATE), a.di, (int)a.n, 1, a.delta, a.y, a.di,
                     1, nullptr, 1, 1};
      constexpr int CB = DEC_THREADS / L;
      if (a.prefetch && i + 1 < a.n_layer) /* the next layer's in_proj */
        prefetch_items(dl_ptr<const void *>(P + MB_DL_PTRS, MB_DL_IN_W), 2 * a.di,
                       DEC_THREADS / a.g_in, a.dm * wb);
      dec_phase((a.di + CB - 1) / CB, bar + 1, [&](unsigned it, auto &wait) {
        /* the state is read before the barrier: only this block writes it in this launch */
        ssu_dt_block<L, WT, 1, XLoad::Cg, decltype(wait), true>(s, it, 0, DEC_THREADS, s_ssu,
                                                                  wait);
      }, [] {});
      dec_arrive(bar + 2);
    }
    /* D: out_proj */
    {
      const WT *w = dl_ptr<const WT *>(P, MB_DL_OUT_W);
      const float *bias = dl_ptr<const float *>(P, MB_DL_OUT_B);
      bool waited = false;
      auto wait = [&] {
        if (waited) return;
        waited = true;
        dec_wait(bar + 2);
        if (stage) stage_x(s_norm, a.y, a.di);
      };
      if (stage)
        dec_gemv<WT, false, XLoad::Generic>(a.g_out, a.vec_out, s_norm, w, bias, a.di, a.dm,
                                            a.hidden, none, wait);
      else
        dec_gemv<WT, false, XLoad::Cg>(a.g_out, a.vec_out, a.y, w, bias, a.di, a.dm, a.hidden,
                                       none, wait);
      if (i + 1 < a.n_layer) dec_arrive(bar + 3); /* the last layer ends with the kernel */
    }
  }
}

template <typename WT, int L>
static int decode_launch(mb_ctx *ctx, const DecodeArgs &a) {
  mbcuda_state *st = mbcuda_st(ctx);
  int occ = 0;
  MBCUDA_CHECK(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&occ, k_decode_layers<WT, L>,
                                                             DEC_THREADS, 0),
               "decode_layers (occupancy)");
  const int want = st->decode_blocks > 0 ? st->decode_blocks : DEC_DEFAULT_BLOCKS_PER_SM;
  const int per_sm = occ < want ? occ : want;
  if (per_sm < 1) return mb_fail(MB_ERR_UNSUPPORTED, "cuda: decode_layers: the kernel does not fit on an SM");
  MBCUDA_CHECK(cudaMemsetAsync(a.bar, 0, (size_t)a.n_layer * 4 * sizeof(unsigned int), st->stream),
               "decode_layers (barriers)");
  cudaLaunchConfig_t cfg = {};
  cfg.gridDim = dim3((unsigned)(st->sm_count * per_sm));
  cfg.blockDim = dim3(DEC_THREADS);
  cfg.stream = st->stream;
  cudaLaunchAttribute attr[1];
  attr[0].id = cudaLaunchAttributeCooperative; /* every block resident, or the launch fails */
  attr[0].val.cooperative = 1;
  cfg.attrs = attr;
  cfg.numAttrs = 1;
  MBCUDA_CHECK(cudaLaunchKernelEx(&cfg, k_decode_layers<WT, L>, a), "decode_layers (launch)");
  return MB_OK;
}

template <typename WT>
static int decode_launch_wt(mb_ctx *ctx, const DecodeArgs &a) {
  switch (scan_lanes(a.n)) {
    case 1: return decode_launch<WT, 1>(ctx, a);
    case 2: return decode_launch<WT, 2>(ctx, a);
    case 4: return decode_launch<WT, 4>(ctx, a);
    case 8: return decode_launch<WT, 8>(ctx, a);
    case 16: return decode_launch<WT, 16>(ctx, a);
    default: return decode_launch<WT, 32>(ctx, a);
  }
}

/* The layer pointer k of every layer: one value when all layers agree on `pred`, else -1. */
static int all_layers(const uint64_t *layers, int64_t n_layer, int k, bool (*pred)(uint64_t)) {
  const bool first = pred(layers[k]);
  for (int64_t i = 1; i < n_layer; i++)
    if (pred(layers[i * MB_DL_PTRS + k]) != first) return -1;
  return first ? 1 : 0;
}
static bool aligned16(uint64_t p) { return (p & 15) == 0; }

extern "C" int mbcuda_decode_layers(mb_ctx *ctx, const uint64_t *layers, const void *layers_dev,
                                    int64_t n_layer, int64_t batch, int64_t d_model,
                                    int64_t d_inner, int64_t d_state, int64_t dt_rank,
                                    int64_t d_conv, int wdtype, int norm_kind, float eps,
                                    float *hidden, float *residual, float *residual_alt,
                                    float *normed, float *xz, float *xc, float *x_dbl,
                                    float *delta, float *y) {
  (void)normed;
  mbcuda_state *st = mbcuda_st(ctx);
  if (st->decode_blocks == 0)
    return mb_fail(MB_ERR_UNSUPPORTED, "cuda: decode_layers: off (MAMBABYTE_CUDA_DECODE_BLOCKS=0)");
  if (!layers_dev || batch != 1 || d_model > DEC_NORM_MAX || d_state > 64 ||
      ((dt_rank + 7) & ~7) + 2 * 32 * SCAN_P > DEC_SSU_FLOATS ||
      n_layer * 4 > MBCUDA_DECODE_BARRIERS || d_inner > INT32_MAX / 4)
    return mb_fail(MB_ERR_UNSUPPORTED, "cuda: decode_layers: a shape the kernel does not take");
  const int wbytes = wdtype == MB_DTYPE_BF16 ? 2 : 4, epc = 16 / wbytes;
  /* the vector paths need aligned weights in every layer (the ops decide per call) */
  const int al_in = all_layers(layers, n_layer, MB_DL_IN_W, aligned16);
  const int al_x = all_layers(layers, n_layer, MB_DL_X_W, aligned16);
  const int al_out = all_layers(layers, n_layer, MB_DL_OUT_W, aligned16);
  const int al_dt = all_layers(layers, n_layer, MB_DL_DT_W, aligned16);
  if (al_in < 0 || al_x < 0 || al_out < 0 || al_dt < 0)
    return mb_fail(MB_ERR_UNSUPPORTED, "cuda: decode_layers: weights aligned in some layers only");
  DecodeArgs a;
  a.layers = (const uint64_t *)layers_dev;
  a.n_layer = (int)n_layer;
  a.dm = d_model, a.di = d_inner, a.n = d_state, a.R = dt_rank, a.dconv = d_conv;
  a.dx = dt_rank + 2 * d_state;
  a.norm_kind = norm_kind;
  norm_reg_shape(d_model, &a.norm_thr, &a.norm_vpt);
  a.eps = eps;
  /* the ops' rules, on the buffers the ops would read (every one 16-byte aligned here) */
  a.vec_in = al_in && gemv_vec(d_model, d_model, normed, (const void *)(uintptr_t)16, wbytes);
  a.vec_x = al_x && gemv_vec(d_inner, d_inner, xc, (const void *)(uintptr_t)16, wbytes);
  a.vec_out = al_out && gemv_vec(d_inner, d_inner, y, (const void *)(uintptr_t)16, wbytes);
  a.g_in = gemv_group_size(2 * d_inner, a.vec_in ? d_model / epc : d_model, st->sm_count);
  a.g_x = gemv_group_size(a.dx, a.vec_x ? d_inner / epc : d_inner, st->sm_count);
  a.g_out = gemv_group_size(d_model, a.vec_out ? d_inner / epc : d_inner, st->sm_count);
  a.wvec_dt = al_dt && ssu_wvec(dt_rank, wdtype, (const void *)(uintptr_t)16);
  a.hidden = hidden, a.res = residual, a.res_alt = residual_alt;
  a.xz = xz, a.xc = xc, a.xdbl = x_dbl, a.delta = delta, a.y = y;
  a.bar = st->decode_bar;
  a.prefetch = st->decode_prefetch;
  return wdtype == MB_DTYPE_BF16 ? decode_launch_wt<uint16_t>(ctx, a)
                                 : decode_launch_wt<float>(ctx, a);
}
