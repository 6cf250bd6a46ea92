/*
 * draft.cu — mb_draft_greedy on CUDA as one launch: a byte drafter's k greedy drafts run by one
 * thread-block cluster of DC_CTAS CTAs that holds the drafter's matrices in its shared memory.
 *
 * The ops one by one cost a round of speculative decoding ~13 graph nodes a drafted byte (~25 us
 * for a 256 x 2 drafter on the H200, ~0.2 ms of a 0.69 ms round): the drafter's weights are 4 MB,
 * its activations a few KB, so its steps are kernel boundaries and dependent round trips. Here CTA
 * r holds, as bfloat16, in_proj's x and z rows of its C = d_inner / DC_CTAS channels, x_proj's
 * columns of them, their conv, dt_proj, A and D, and its share of out_proj's and lm_head's rows.
 * A layer is three phases, each ending in a cluster barrier: (1) every warp adds the last layer's
 * output to the residual stream and takes the norm itself, in registers, then the CTA's in_proj
 * rows, the conv step, and x_proj over its own channels, whose partial sums go into every CTA's
 * shared memory (distributed shared memory); (2) x_dbl summed from the partials in rank order,
 * dt_proj, the state update and the gate, y stored into every CTA; (3) out_proj's rows into every
 * CTA. The head is one more phase, and every warp takes the argmax itself. A warp dots several rows
 * at once (their latencies overlap: with one CTA an SM there are only 8 warps to hide them), and a
 * value that every CTA needs is stored by 16 lanes at once, lane t into CTA t. The weights are
 * loaded once a launch, before the wait for the previous kernel (programmatic dependent launch), so
 * the load overlaps it.
 *
 * The drafts differ from the ops' where bf16 matrices change an argmax (the output of speculative
 * decoding does not: only the verification decides); csrc/tests/cuda_vs_cpu.c compares the logits
 * path through the state stack against the CPU's ops within bf16 tolerance.
 * MAMBABYTE_CUDA_DRAFT_CLUSTER=0 keeps the ops (A/B runs); MAMBABYTE_CUDA_DRAFT_TIMING=1 prints
 * where CTA 0's time goes, a line on stderr for every launch outside a graph capture.
 */
#include <cooperative_groups.h>
#include <stdint.h>
#include <stdio.h>

#include "cuda_internal.cuh"

namespace cg = cooperative_groups;

#define DC_CTAS 16      /* CTAs of the cluster (a non-portable size: Hopper allows 16) */
#define DC_THREADS 512  /* threads a CTA (16 warps: more rows at once to hide latencies) */
#define DC_MAX_LAYERS 4 /* drafters are shallow */
#define DC_MAX_N 16     /* SSM state a channel (exactly: a half-warp a channel) */
#define DC_K 4          /* conv width */
#define DC_WARPS (DC_THREADS / 32)
#define DC_MAX_D 512 /* d_model: a lane holds 8 of every 256 in registers */
#define DC_MAX_E 1024
#define DC_DCH (DC_MAX_D / 256)
#define DC_ECH (DC_MAX_E / 256)
static_assert(DC_MAX_N == DC_CTAS, "a channel's half-warp stores y into every CTA, lane t into t");

struct DcLayer {
  const float *norm_w, *norm_b, *in_b, *conv_w, *conv_b, *dt_b, *A, *Dskip, *out_b;
  const void *in_w, *x_w, *dt_w, *out_w;
  float *conv_state, *ssm_state; /* inside [state, state + state_bytes) */
};

struct DcArgs {
  DcLayer L[DC_MAX_LAYERS];
  int n_layer, D, E, N, R, V, vocab_rows, wbf16, rms, k;
  float eps;
  const void *embedding, *lm_head;
  const float *norm_f_w, *norm_f_b, *logits_in;
  const int32_t *read_id; /* non-NULL: read this byte first (its logits give the first draft) */
  int64_t *counter;
  char *state, *stack;
  int64_t state_bytes;
  int32_t *ids;
  long long *tm; /* MAMBABYTE_CUDA_DRAFT_TIMING=1, direct launches: CTA 0's clock at each phase */
};

/* CTA 0's thread 0 notes its clock (tm[2 + i]); tm[0] and tm[1] get the global timer at the first
 * and last stamps, to turn cycles into time. */
#define DC_STAMP()                                                                   \
  do {                                                                               \
    if (a.tm && rank == 0 && threadIdx.x == 0) {                                     \
      if (ti == 0) asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(a.tm[0]));       \
      a.tm[2 + ti] = clock64();                                                      \
      asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(a.tm[1]));                    \
    }                                                                                \
    ti++;                                                                            \
  } while (0)

/* The shared-memory plan of one CTA (offsets in bytes, from the launch's shapes). */
struct DcPlan {
  int C, XR, DR, VR;
  size_t in_w, out_w, x_w, dt_w, small, head, act, total; /* per-layer offsets and bases */
  size_t layer_bytes;
};

static __host__ __device__ inline size_t dc_align(size_t v) { return (v + 15) & ~(size_t)15; }

static __host__ __device__ inline DcPlan dc_plan(int D, int E, int N, int R, int V, int n_layer) {
  DcPlan p;
  p.C = E / DC_CTAS;
  p.XR = R + 2 * N;
  p.DR = D / DC_CTAS;
  p.VR = V / DC_CTAS;
  /* a layer: in_proj's x and z rows of this CTA's channels (2C x D), out_proj's rows (DR x E),
   * x_proj's columns of this CTA's channels (XR x C), all bf16; dt_proj's rows (C x R), conv (C x
   * 4), conv bias, dt bias, D, in_proj bias (2C), A (C x N), the conv window (C x 3) and the state
   * (C x N): fp32; out_proj bias (DR), norm w and b (2D) */
  p.in_w = 0;
  p.out_w = dc_align(p.in_w + (size_t)2 * p.C * D * 2);
  p.x_w = dc_align(p.out_w + (size_t)p.DR * E * 2);
  p.dt_w = dc_align(p.x_w + (size_t)p.XR * p.C * 2);
  p.small = dc_align(p.dt_w + (size_t)p.C * R * 4);
  p.layer_bytes = dc_align(p.small + (size_t)4 * (p.C * DC_K + 3 * p.C + 2 * p.C + p.C * N +
                                                  p.C * (DC_K - 1) + p.C * N + p.DR + 2 * D));
  p.head = p.layer_bytes * n_layer;                         /* lm_head rows (VR x D) bf16, norm_f */
  p.act = dc_align(p.head + (size_t)p.VR * D * 2 + (size_t)2 * D * 4);
  /* activations: the residual stream twice (ping-pong), hidden (D each), x and z of this CTA's
   * channels (2C), their conv (C), y (E), x_dbl (XR), x_proj's partial sums from every CTA
   * (16 x XR), logits (V) */
  p.total = dc_align(p.act + (size_t)4 * (3 * D + 3 * p.C + E + p.XR + DC_CTAS * p.XR + V));
  return p;
}

/* The fp32 pointers of layer l's small vectors in shared memory (dc_plan's order). */
struct DcSmall {
  float *conv_w, *conv_b, *dt_b, *Dskip, *in_b, *A, *win, *h, *out_b, *norm_w, *norm_b;
};
static __device__ inline DcSmall dc_small(char *base, const DcPlan &p, int D, int N) {
  float *f = (float *)(base + p.small);
  DcSmall s;
  s.conv_w = f; f += p.C * DC_K;
  s.conv_b = f; f += p.C;
  s.dt_b = f; f += p.C;
  s.Dskip = f; f += p.C;
  s.in_b = f; f += 2 * p.C;
  s.A = f; f += p.C * N;
  s.win = f; f += p.C * (DC_K - 1);
  s.h = f; f += p.C * N;
  s.out_b = f; f += p.DR;
  s.norm_w = f; f += D;
  s.norm_b = f;
  return s;
}

static __device__ inline float dc_w(const void *w, int wbf16, size_t i) {
  return wbf16 ? mb_bf16_to_f32(((const uint16_t *)w)[i]) : ((const float *)w)[i];
}

/* The block rows [row0, row0 + rows) x columns [col0, col0 + cols) of a global (total_rows x ld)
 * matrix into shared bf16 (rows x cols; rows past the end: zeros), 8 elements a thread at a time
 * (cols, col0 and ld multiples of 8). */
static __device__ void dc_load_block(uint16_t *dst, const void *w, int wbf16, int64_t row0,
                                     int rows, int col0, int cols, int ld, int64_t total_rows) {
  const int per = cols / 8, all8 = rows * per;
#pragma unroll 4
  for (int i = threadIdx.x; i < all8; i += DC_THREADS) {
    const int r = i / per, c = (i % per) * 8;
    uint4 out = make_uint4(0, 0, 0, 0);
    if (row0 + r < total_rows) {
      const size_t at = (size_t)(row0 + r) * ld + col0 + c;
      if (wbf16) {
        out = __ldg((const uint4 *)((const uint16_t *)w + at));
      } else {
        const float4 *src = (const float4 *)((const float *)w + at);
        float4 a = __ldg(src), b = __ldg(src + 1);
        uint2 lo = mb_f32x4_to_bf16(a), hi = mb_f32x4_to_bf16(b);
        out = make_uint4(lo.x, lo.y, hi.x, hi.y);
      }
    }
    ((uint4 *)dst)[i] = out;
  }
}

static __device__ void dc_load_f32(float *dst, const float *src, int n, float fill) {
  for (int i = threadIdx.x; i < n; i += DC_THREADS) dst[i] = src ? src[i] : fill;
}

/* A vector of n (n % 8 == 0) as each lane holds it: elements 256 m + 8 lane + e in x[8 m + e]
 * (zeros past n). The rows' dots below take their x this way, so a row's 8 bf16 are one load. */
template <int CH>
static __device__ inline void dc_lane_chunks(const float *src, int n, float *x) {
  const int lane = threadIdx.x & 31;
#pragma unroll
  for (int m = 0; m < CH; m++) {
    const int j = 256 * m + 8 * lane;
    float4 a = make_float4(0.f, 0.f, 0.f, 0.f), b = a;
    if (j < n) a = *(const float4 *)(src + j), b = *(const float4 *)(src + j + 4);
    x[8 * m + 0] = a.x, x[8 * m + 1] = a.y, x[8 * m + 2] = a.z, x[8 * m + 3] = a.w;
    x[8 * m + 4] = b.x, x[8 * m + 5] = b.y, x[8 * m + 6] = b.z, x[8 * m + 7] = b.w;
  }
}

/* Rows [0, rows) of a shared bf16 (rows x n) matrix dotted with x (dc_lane_chunks' layout), RPW
 * rows a warp at once (independent chains: a warp's rows overlap their latencies); every lane of
 * the warp gets each sum and calls store(row, sum). LANE: lane q alone calls store for the
 * warp's q-th row, so the warp's rows are stored side by side (one divergent body, not RPW). */
template <int CH, int RPW, bool LANE = false, class F>
static __device__ inline void dc_rows_rpw(const uint16_t *w, int rows, int n, const float *x,
                                          F store) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  for (int r0 = warp * RPW; r0 < rows; r0 += DC_WARPS * RPW) {
    float acc[RPW];
#pragma unroll
    for (int q = 0; q < RPW; q++) acc[q] = 0.f;
#pragma unroll
    for (int m = 0; m < CH; m++) {
      const int j = 256 * m + 8 * lane;
      if (j >= n) break;
#pragma unroll
      for (int q = 0; q < RPW; q++) {
        if (r0 + q >= rows) break;
        const uint4 wv = *(const uint4 *)(w + (size_t)(r0 + q) * n + j);
        const uint32_t u[4] = {wv.x, wv.y, wv.z, wv.w};
#pragma unroll
        for (int e = 0; e < 4; e++) {
          acc[q] = fmaf(__uint_as_float(u[e] << 16), x[8 * m + 2 * e], acc[q]);
          acc[q] = fmaf(__uint_as_float(u[e] & 0xffff0000u), x[8 * m + 2 * e + 1], acc[q]);
        }
      }
    }
#pragma unroll
    for (int q = 0; q < RPW; q++) acc[q] = warp_sum(acc[q]);
    if (LANE) {
      float mine = acc[0];
#pragma unroll
      for (int q = 1; q < RPW; q++)
        if (lane == q) mine = acc[q];
      if (lane < RPW && r0 + lane < rows) store(r0 + lane, mine);
    } else {
#pragma unroll
      for (int q = 0; q < RPW; q++)
        if (r0 + q < rows) store(r0 + q, acc[q]);
    }
  }
}
/* dc_rows_rpw with RPW from the rows a warp gets (1, 2, 4 or 8 at once). */
template <int CH, bool LANE = false, class F>
static __device__ inline void dc_rows(const uint16_t *w, int rows, int n, const float *x, F store) {
  const int per = (rows + DC_WARPS - 1) / DC_WARPS;
  if (per >= 8) dc_rows_rpw<CH, 8, LANE>(w, rows, n, x, store);
  else if (per >= 4) dc_rows_rpw<CH, 4, LANE>(w, rows, n, x, store);
  else if (per >= 2) dc_rows_rpw<CH, 2, LANE>(w, rows, n, x, store);
  else dc_rows_rpw<CH, 1, LANE>(w, rows, n, x, store);
}

/* Each warp's own norm of the D values its lanes hold (dc_lane_chunks' layout; LayerNorm or
 * RMSNorm, times w plus b as mb_add_norm: an RMSNorm's bias too, when it has one), in place: no
 * shared memory, no block barrier. Two passes, as the CPU's. */
static __device__ inline void dc_warp_norm(float *v, const float *w, const float *b, int D, int rms,
                                           float eps) {
  const int lane = threadIdx.x & 31;
  float s = 0.f;
#pragma unroll
  for (int i = 0; i < 8 * DC_DCH; i++) s += v[i];
  const float mean = rms ? 0.f : warp_sum(s) / D;
  float q = 0.f;
#pragma unroll
  for (int m = 0; m < DC_DCH; m++)
#pragma unroll
    for (int e = 0; e < 8; e++) {
      const float d = 256 * m + 8 * lane < D ? v[8 * m + e] - mean : 0.f;
      q = fmaf(d, d, q);
    }
  const float inv = rsqrtf(warp_sum(q) / D + eps);
#pragma unroll
  for (int m = 0; m < DC_DCH; m++) {
    const int j = 256 * m + 8 * lane;
    if (j >= D) break;
#pragma unroll
    for (int e = 0; e < 8; e++)
      v[8 * m + e] = (v[8 * m + e] - mean) * inv * w[j + e] + (b ? b[j + e] : 0.f);
  }
}

/* The argmax of V values (lowest index on ties), each warp on its own; every lane gets it. */
static __device__ int dc_argmax(const float *x, int V) {
  const int lane = threadIdx.x & 31;
  float best = -INFINITY;
  int bi = 0x7fffffff;
  for (int i = lane; i < V; i += 32)
    if (x[i] > best || (x[i] == best && i < bi)) best = x[i], bi = i;
#pragma unroll
  for (int o = 16; o; o >>= 1) {
    float ob = __shfl_xor_sync(0xffffffffu, best, o);
    int oi = __shfl_xor_sync(0xffffffffu, bi, o);
    if (ob > best || (ob == best && oi < bi)) best = ob, bi = oi;
  }
  return bi < V ? bi : 0; /* all NaN: a valid id all the same (the embedding row is read next) */
}

/* 8 consecutive weights from global memory as fp32 (at % 8 == 0). */
template <int WB>
static __device__ inline void dc_load8(const void *w, size_t at, float *x) {
  if (WB) {
    const uint4 v = __ldg((const uint4 *)((const uint16_t *)w + at));
    const uint32_t u[4] = {v.x, v.y, v.z, v.w};
#pragma unroll
    for (int e = 0; e < 4; e++)
      x[2 * e] = __uint_as_float(u[e] << 16), x[2 * e + 1] = __uint_as_float(u[e] & 0xffff0000u);
  } else {
    const float4 *src = (const float4 *)((const float *)w + at);
    const float4 a = __ldg(src), b = __ldg(src + 1);
    x[0] = a.x, x[1] = a.y, x[2] = a.z, x[3] = a.w, x[4] = b.x, x[5] = b.y, x[6] = b.z, x[7] = b.w;
  }
}

/* The residual stream r plus the last layer's output h (D each), in dc_lane_chunks' layout. */
static __device__ inline void dc_add_chunks(const float *r, const float *h, int D, float *v) {
  dc_lane_chunks<DC_DCH>(r, D, v);
  float t[8 * DC_DCH];
  dc_lane_chunks<DC_DCH>(h, D, t);
#pragma unroll
  for (int i = 0; i < 8 * DC_DCH; i++) v[i] += t[i];
}

/* Embedding row `id` (D wide), in dc_lane_chunks' layout. */
template <int WB>
static __device__ inline void dc_embed_chunks(const void *emb, int id, int D, float *v) {
  const int lane = threadIdx.x & 31;
#pragma unroll
  for (int m = 0; m < DC_DCH; m++) {
    const int j = 256 * m + 8 * lane;
    if (j < D) {
      dc_load8<WB>(emb, (size_t)id * D + j, v + 8 * m);
    } else {
#pragma unroll
      for (int e = 0; e < 8; e++) v[8 * m + e] = 0.f;
    }
  }
}

/* v (dc_lane_chunks' layout) into dst (D wide): one warp's lanes. */
static __device__ inline void dc_store_chunks(float *dst, int D, const float *v) {
  const int lane = threadIdx.x & 31;
#pragma unroll
  for (int m = 0; m < DC_DCH; m++) {
    const int j = 256 * m + 8 * lane;
    if (j >= D) continue;
    *(float4 *)(dst + j) = make_float4(v[8 * m], v[8 * m + 1], v[8 * m + 2], v[8 * m + 3]);
    *(float4 *)(dst + j + 4) = make_float4(v[8 * m + 4], v[8 * m + 5], v[8 * m + 6], v[8 * m + 7]);
  }
}

/* WB: the matrices in global memory are bf16 (1) or fp32 (0). */
template <int WB>
__global__ void __launch_bounds__(DC_THREADS, 1) k_draft_cluster(const __grid_constant__ DcArgs a) {
  extern __shared__ __align__(16) char sm[];
  cg::cluster_group cl = cg::this_cluster();
  const int rank = (int)cl.block_rank();
  const int D = a.D, E = a.E, N = a.N, R = a.R, V = a.V;
  const DcPlan p = dc_plan(D, E, N, R, V, a.n_layer);
  const int C = p.C, c0 = rank * C, XR = p.XR;
  const int lane = threadIdx.x & 31;
  int ti = 0; /* DC_STAMP's count */
  DC_STAMP(); /* the start */
  mb_pdl_trigger();
  /* A CTA may store into another's shared memory only once that one has started: arrive now,
   * wait before the first remote store (the weights' load runs in between). */
  cl.barrier_arrive();

  /* the weights, before the wait: nothing in the stream writes them */
  for (int l = 0; l < a.n_layer; l++) {
    const DcLayer &L = a.L[l];
    char *base = sm + p.layer_bytes * l;
    uint16_t *win_ = (uint16_t *)(base + p.in_w);
    dc_load_block(win_, L.in_w, WB, c0, C, 0, D, D, 2 * (int64_t)E);          /* x rows */
    dc_load_block(win_ + (size_t)C * D, L.in_w, WB, E + c0, C, 0, D, D, 2 * (int64_t)E);
    dc_load_block((uint16_t *)(base + p.out_w), L.out_w, WB, (int64_t)rank * p.DR, p.DR, 0,
                  E, E, D);
    dc_load_block((uint16_t *)(base + p.x_w), L.x_w, WB, 0, XR, c0, C, E, XR);
    float *dtw = (float *)(base + p.dt_w);
    for (int i = threadIdx.x; i < C * R; i += DC_THREADS)
      dtw[i] = dc_w(L.dt_w, WB, (size_t)c0 * R + i);
    DcSmall s = dc_small(base, p, D, N);
    dc_load_f32(s.conv_w, L.conv_w + (size_t)c0 * DC_K, C * DC_K, 0.f);
    dc_load_f32(s.conv_b, L.conv_b ? L.conv_b + c0 : NULL, C, 0.f);
    dc_load_f32(s.dt_b, L.dt_b ? L.dt_b + c0 : NULL, C, 0.f);
    dc_load_f32(s.Dskip, L.Dskip ? L.Dskip + c0 : NULL, C, 0.f);
    dc_load_f32(s.in_b, L.in_b ? L.in_b + c0 : NULL, C, 0.f);
    dc_load_f32(s.in_b + C, L.in_b ? L.in_b + E + c0 : NULL, C, 0.f);
    dc_load_f32(s.A, L.A + (size_t)c0 * N, C * N, 0.f);
    dc_load_f32(s.out_b, L.out_b ? L.out_b + (size_t)rank * p.DR : NULL, p.DR, 0.f);
    dc_load_f32(s.norm_w, L.norm_w, D, 1.f);
    dc_load_f32(s.norm_b, L.norm_b, D, 0.f);
  }
  uint16_t *head_w = (uint16_t *)(sm + p.head);
  dc_load_block(head_w, a.lm_head, WB, (int64_t)rank * p.VR, p.VR, 0, D, D, V);
  float *nfw = (float *)(sm + dc_align(p.head + (size_t)p.VR * D * 2)), *nfb = nfw + D;
  dc_load_f32(nfw, a.norm_f_w, D, 1.f);
  dc_load_f32(nfb, a.norm_f_b, D, 0.f);
  float *act = (float *)(sm + p.act);
  float *res[2] = {act, act + D}, *hidden = act + 2 * D, *xz = hidden + D, *xc = xz + 2 * C;
  float *y = xc + C, *xdbl = y + E, *part_x = xdbl + XR, *logits = part_x + DC_CTAS * XR;

  DC_STAMP(); /* this thread's share of the weights loaded */
  mb_pdl_wait();
  DC_STAMP(); /* the previous kernel done */
  cl.barrier_wait();
  DC_STAMP(); /* every CTA started */
  /* the state of this CTA's channels, and slot 0 of the stack (with a byte to read first, slot 0
   * is the state after it: step 0 below) */
  const bool read = a.read_id != NULL;
  for (int l = 0; l < a.n_layer; l++) {
    const DcLayer &L = a.L[l];
    DcSmall s = dc_small(sm + p.layer_bytes * l, p, D, N);
    for (int i = threadIdx.x; i < C * (DC_K - 1); i += DC_THREADS) {
      float v = __ldcg(L.conv_state + (size_t)c0 * (DC_K - 1) + i);
      s.win[i] = v;
      if (!read)
        *(float *)(a.stack + ((char *)(L.conv_state + (size_t)c0 * (DC_K - 1) + i) - a.state)) = v;
    }
    for (int i = threadIdx.x; i < C * N; i += DC_THREADS) {
      float v = __ldcg(L.ssm_state + (size_t)c0 * N + i);
      s.h[i] = v;
      if (!read) *(float *)(a.stack + ((char *)(L.ssm_state + (size_t)c0 * N + i) - a.state)) = v;
    }
  }
  int cur;
  if (read) {
    cur = __ldcg(a.read_id); /* written by the kernel before (the round's commit): through L2 */
    if (cur < 0 || cur >= a.vocab_rows) cur = 0; /* any id is as good: only the drafts change */
    __syncthreads();
  } else {
    for (int i = threadIdx.x; i < V; i += DC_THREADS) logits[i] = __ldcg(a.logits_in + i);
    __syncthreads();
    cur = dc_argmax(logits, V);
  }
  DC_STAMP(); /* the state, slot 0, the first argmax */
  if (!read && rank == 0 && threadIdx.x == 0) a.ids[0] = cur;
  int par = 0; /* res[par]: the residual stream so far */

  /* step s reads cur (the settled byte at step 0, draft s after) into slot s, then drafts */
  for (int step = read ? 0 : 1; step <= a.k; step++) {
    for (int l = 0; l < a.n_layer; l++) {
      char *base = sm + p.layer_bytes * l;
      DcSmall s = dc_small(base, p, D, N);
      /* 1. each warp: the residual stream plus the last layer's output (layer 0: the embedding of
       * the last draft), its norm, in registers (warp 0 stores the stream); in_proj's x and z rows
       * of this CTA's channels, the conv step; x_proj's sums over these channels into every CTA */
      float v[8 * DC_DCH];
      if (l == 0) dc_embed_chunks<WB>(a.embedding, cur, D, v);
      else dc_add_chunks(res[par], hidden, D, v);
      if (threadIdx.x < 32) dc_store_chunks(res[par ^ 1], D, v);
      par ^= 1;
      dc_warp_norm(v, s.norm_w, s.norm_b, D, a.rms, a.eps);
      if (a.tm) __syncthreads(); /* timing: the norm's own part */
      DC_STAMP();
      /* a row's lane stores it (the conv step of an x row): the warp's rows side by side */
      dc_rows<DC_DCH, true>((const uint16_t *)(base + p.in_w), 2 * C, D, v, [&](int r, float t) {
        t += s.in_b[r];
        if (r >= C) {
          xz[r] = t; /* z */
          return;
        }
        float *w3 = s.win + r * (DC_K - 1);
        float pre = s.conv_b[r];
#pragma unroll
        for (int j = 0; j < DC_K - 1; j++) pre = fmaf(s.conv_w[r * DC_K + j], w3[j], pre);
        pre = fmaf(s.conv_w[r * DC_K + DC_K - 1], t, pre);
#pragma unroll
        for (int j = 0; j < DC_K - 2; j++) w3[j] = w3[j + 1];
        w3[DC_K - 2] = t;
        xc[r] = mb_silu(pre);
      });
      __syncthreads();
      DC_STAMP();
      {
        float xv[8];
        dc_lane_chunks<1>(xc, C, xv);
        dc_rows<1>((const uint16_t *)(base + p.x_w), XR, C, xv, [&](int r, float t) {
          if (lane < DC_CTAS) cl.map_shared_rank(part_x, lane)[rank * XR + r] = t;
        });
      }
      DC_STAMP();
      cl.sync();
      DC_STAMP();
      /* 2. x_dbl = the CTAs' sums in rank order; dt_proj, softplus, the state update and the
       * gate of this CTA's channels: 16 lanes a channel, one a state element (d_state == 16),
       * dt and the output summed over the half-warp; lane t stores y into CTA t */
      for (int j = threadIdx.x; j < XR; j += DC_THREADS) {
        float t = 0.f;
#pragma unroll
        for (int q = 0; q < DC_CTAS; q++) t += part_x[q * XR + j];
        xdbl[j] = t;
      }
      __syncthreads();
      const float *dtw = (const float *)(base + p.dt_w);
      const float *Bv = xdbl + R, *Cv = xdbl + R + N;
      for (int idx = threadIdx.x; idx < C * DC_MAX_N; idx += DC_THREADS) {
        const int c = idx / DC_MAX_N, n = idx % DC_MAX_N;
        float dt = 0.f;
        for (int r = n; r < R; r += DC_MAX_N) dt = fmaf(dtw[c * R + r], xdbl[r], dt);
#pragma unroll
        for (int o = DC_MAX_N / 2; o; o >>= 1) dt += __shfl_xor_sync(0xffffffffu, dt, o);
        const float delta = mb_softplus(dt + s.dt_b[c]), x = xc[c];
        float *h = s.h + c * N + n;
        const float hn = expf(delta * s.A[c * N + n]) * *h + delta * Bv[n] * x;
        *h = hn;
        float acc = hn * Cv[n];
#pragma unroll
        for (int o = DC_MAX_N / 2; o; o >>= 1) acc += __shfl_xor_sync(0xffffffffu, acc, o);
        cl.map_shared_rank(y, n)[c0 + c] = (acc + s.Dskip[c] * x) * mb_silu(xz[C + c]);
      }
      DC_STAMP();
      cl.sync();
      DC_STAMP();
      /* 3. out_proj's rows of this CTA into every CTA's hidden */
      {
        float yv[8 * DC_ECH];
        dc_lane_chunks<DC_ECH>(y, E, yv);
        dc_rows<DC_ECH>((const uint16_t *)(base + p.out_w), p.DR, E, yv, [&](int r, float t) {
          if (lane < DC_CTAS) cl.map_shared_rank(hidden, lane)[rank * p.DR + r] = t + s.out_b[r];
        });
      }
      DC_STAMP();
      cl.sync();
      DC_STAMP();
    }
    /* the state after this draft into its slot (and, after the last, into the state) */
    char *slot = a.stack + (size_t)step * a.state_bytes;
    for (int l = 0; l < a.n_layer; l++) {
      const DcLayer &L = a.L[l];
      DcSmall s = dc_small(sm + p.layer_bytes * l, p, D, N);
      for (int i = threadIdx.x; i < C * (DC_K - 1); i += DC_THREADS) {
        float *g = L.conv_state + (size_t)c0 * (DC_K - 1) + i;
        *(float *)(slot + ((char *)g - a.state)) = s.win[i];
        if (step == a.k) *g = s.win[i];
      }
      for (int i = threadIdx.x; i < C * N; i += DC_THREADS) {
        float *g = L.ssm_state + (size_t)c0 * N + i;
        *(float *)(slot + ((char *)g - a.state)) = s.h[i];
        if (step == a.k) *g = s.h[i];
      }
    }
    DC_STAMP(); /* the stack */
    if (step == a.k) break;
    /* the head: each warp adds the last layer's output and takes norm_f in registers; lm_head's
     * rows of this CTA into every CTA's logits; then every warp's argmax */
    {
      float v[8 * DC_DCH];
      dc_add_chunks(res[par], hidden, D, v);
      dc_warp_norm(v, nfw, nfb, D, a.rms, a.eps);
      dc_rows<DC_DCH>(head_w, p.VR, D, v, [&](int r, float t) {
        if (lane < DC_CTAS) cl.map_shared_rank(logits, lane)[rank * p.VR + r] = t;
      });
    }
    DC_STAMP();
    cl.sync();
    DC_STAMP();
    cur = dc_argmax(logits, V);
    DC_STAMP(); /* the argmax */
    if (rank == 0 && threadIdx.x == 0) a.ids[step] = cur;
  }
  if (rank == 0 && threadIdx.x == 0) *a.counter = __ldcg(a.counter) + a.k; /* (the counter: L2) */
  cl.sync(); /* no CTA leaves while another may still store into its shared memory */
  DC_STAMP(); /* the end */
}

/* Whether the cluster form takes this drafter (decided once a shape; every CTA's plan must fit). */
extern "C" int mbcuda_draft_cluster_ok(mb_ctx *ctx, int64_t n_layer, int64_t d_model,
                                       int64_t d_inner, int64_t d_state, int64_t dt_rank,
                                       int64_t d_conv, int64_t vocab_out) {
  mbcuda_state *st = mbcuda_st(ctx);
  if (!st->draft_cluster || st->cc_major < 9) return 0;
  if (n_layer < 1 || n_layer > DC_MAX_LAYERS || d_conv != DC_K || d_state != DC_MAX_N) return 0;
  /* d_inner % 128: a CTA's channels a multiple of 8 (x_proj's columns load 8 at a time) */
  if (d_model % 64 || d_inner % 128 || d_model > DC_MAX_D || d_inner > DC_MAX_E ||
      vocab_out % DC_CTAS)
    return 0;
  DcPlan p = dc_plan((int)d_model, (int)d_inner, (int)d_state, (int)dt_rank, (int)vocab_out,
                     (int)n_layer);
  int max_smem = 0;
  if (cudaDeviceGetAttribute(&max_smem, cudaDevAttrMaxSharedMemoryPerBlockOptin, ctx->device) !=
          cudaSuccess ||
      p.total > (size_t)max_smem)
    return 0;
  if (st->draft_cluster_smem < p.total) {
    if (cudaFuncSetAttribute(k_draft_cluster<0>, cudaFuncAttributeNonPortableClusterSizeAllowed,
                             1) != cudaSuccess ||
        cudaFuncSetAttribute(k_draft_cluster<1>, cudaFuncAttributeNonPortableClusterSizeAllowed,
                             1) != cudaSuccess ||
        cudaFuncSetAttribute(k_draft_cluster<0>, cudaFuncAttributeMaxDynamicSharedMemorySize,
                             (int)p.total) != cudaSuccess ||
        cudaFuncSetAttribute(k_draft_cluster<1>, cudaFuncAttributeMaxDynamicSharedMemorySize,
                             (int)p.total) != cudaSuccess) {
      cudaGetLastError();
      return 0;
    }
    /* the cluster must fit on the device at this shared memory */
    cudaLaunchConfig_t cfg = {};
    cfg.gridDim = dim3(DC_CTAS);
    cfg.blockDim = dim3(DC_THREADS);
    cfg.dynamicSmemBytes = p.total;
    cudaLaunchAttribute at[1];
    at[0].id = cudaLaunchAttributeClusterDimension;
    at[0].val.clusterDim.x = DC_CTAS;
    at[0].val.clusterDim.y = 1;
    at[0].val.clusterDim.z = 1;
    cfg.attrs = at;
    cfg.numAttrs = 1;
    int clusters = 0;
    if (cudaOccupancyMaxActiveClusters(&clusters, k_draft_cluster<1>, &cfg) != cudaSuccess ||
        clusters < 1) {
      cudaGetLastError();
      return 0;
    }
    st->draft_cluster_smem = p.total;
  }
  return 1;
}

#define DC_TM_MAX 2400 /* stamps: 6 + (k + 1) (8 layers + 4) at most, k <= 64, 4 layers */
#define DC_TM_LAYER 8  /* stamps a layer: phase 1 in three parts, then each phase's barrier */

/* MAMBABYTE_CUDA_DRAFT_TIMING=1: one line on stderr a direct launch, CTA 0's microseconds in each
 * part (a phase's own work, then its cluster barrier; each layer's and the steps' means). */
static void dc_report_timing(mb_ctx *ctx, const long long *tm_dev, int n_layer, int k, int read) {
  long long tm[DC_TM_MAX];
  if (cudaStreamSynchronize(mbcuda_stream(ctx)) != cudaSuccess ||
      cudaMemcpy(tm, tm_dev, sizeof tm, cudaMemcpyDeviceToHost) != cudaSuccess) {
    cudaGetLastError();
    return;
  }
  const long long *c = tm + 2;
  const int steps = k + read; /* steps of the layers (a read first: one more), heads one fewer */
  const int n = 5 + steps * (DC_TM_LAYER * n_layer + 1) + (steps - 1) * 3 + 1;
  const double us = (double)(tm[1] - tm[0]) / 1e3 / (double)(c[n - 1] - c[0]); /* a cycle */
  double ph[DC_MAX_LAYERS][DC_TM_LAYER] = {{0}}, stack = 0, head = 0, head_bar = 0, argmax = 0;
  int i = 5;
  for (int step = 1; step <= steps; step++) {
    for (int l = 0; l < n_layer; l++, i += DC_TM_LAYER)
      for (int q = 0; q < DC_TM_LAYER; q++) ph[l][q] += (double)(c[i + q] - c[i + q - 1]);
    stack += (double)(c[i] - c[i - 1]);
    i++;
    if (step == steps) break;
    head += (double)(c[i] - c[i - 1]);
    head_bar += (double)(c[i + 1] - c[i]);
    argmax += (double)(c[i + 2] - c[i + 1]);
    i += 3;
  }
  const double per_step = us / steps, per_head = steps > 1 ? us / (steps - 1) : 0;
  char layers[600] = "";
  for (int l = 0, at = 0; l < n_layer && at < (int)sizeof layers; l++)
    at += snprintf(layers + at, sizeof layers - (size_t)at,
                   "; layer %d: phase 1 (input + norm %.2f, in_proj + conv %.2f, x_proj %.2f) + "
                   "barrier %.2f, phase 2 %.2f + %.2f, phase 3 %.2f + %.2f",
                   l, ph[l][0] * per_step, ph[l][1] * per_step, ph[l][2] * per_step,
                   ph[l][3] * per_step, ph[l][4] * per_step, ph[l][5] * per_step,
                   ph[l][6] * per_step, ph[l][7] * per_step);
  fprintf(stderr,
          "draft cluster timing (CTA 0, us): k %d%s, %d layers, total %.1f; load %.1f, previous kernel "
          "%.1f, CTAs started %.1f, state + first argmax %.1f%s; a step: stack %.2f, head %.2f + "
          "%.2f, argmax %.2f; end %.1f\n",
          k, read ? " after a read" : "", n_layer, (double)(c[n - 1] - c[0]) * us, (double)(c[1] - c[0]) * us,
          (double)(c[2] - c[1]) * us, (double)(c[3] - c[2]) * us, (double)(c[4] - c[3]) * us,
          layers, stack * per_step, head * per_head, head_bar * per_head, argmax * per_head,
          (double)(c[n - 1] - c[i - 1]) * us);
}

extern "C" int mbcuda_draft_cluster(mb_ctx *ctx, const uint64_t *layers, int64_t n_layer,
                                    int64_t d_model, int64_t d_inner, int64_t d_state,
                                    int64_t dt_rank, int wdtype, int norm_kind, float eps,
                                    const void *embedding, int64_t vocab_rows,
                                    const float *norm_f_w, const float *norm_f_b,
                                    const void *lm_head, int64_t vocab_out,
                                    const int32_t *read_id, const float *logits, int64_t *counter,
                                    void *state, int64_t state_bytes, void *stack, int32_t *ids,
                                    int64_t k) {
  DcArgs a = {};
  for (int64_t l = 0; l < n_layer; l++) {
    const uint64_t *P = layers + l * MB_DL_PTRS;
#define DC_P(T, i) ((T)(uintptr_t)P[MB_DL_##i])
    a.L[l] = DcLayer{DC_P(const float *, NORM_W), DC_P(const float *, NORM_B),
                     DC_P(const float *, IN_B),   DC_P(const float *, CONV_W),
                     DC_P(const float *, CONV_B), DC_P(const float *, DT_B),
                     DC_P(const float *, A),      DC_P(const float *, D),
                     DC_P(const float *, OUT_B),  DC_P(const void *, IN_W),
                     DC_P(const void *, X_W),     DC_P(const void *, DT_W),
                     DC_P(const void *, OUT_W),   DC_P(float *, CONV_STATE),
                     DC_P(float *, SSM_STATE)};
#undef DC_P
  }
  a.n_layer = (int)n_layer;
  a.D = (int)d_model;
  a.E = (int)d_inner;
  a.N = (int)d_state;
  a.R = (int)dt_rank;
  a.V = (int)vocab_out;
  a.vocab_rows = (int)vocab_rows;
  a.wbf16 = wdtype == MB_DTYPE_BF16;
  a.rms = norm_kind == MB_NORM_RMS;
  a.k = (int)k;
  a.eps = eps;
  a.embedding = embedding;
  a.lm_head = lm_head;
  a.norm_f_w = norm_f_w;
  a.norm_f_b = norm_f_b;
  a.logits_in = logits;
  a.read_id = read_id;
  a.counter = counter;
  a.state = (char *)state;
  a.stack = (char *)stack;
  a.state_bytes = state_bytes;
  a.ids = ids;
  const DcPlan p = dc_plan(a.D, a.E, a.N, a.R, a.V, a.n_layer);
  cudaLaunchConfig_t cfg = {};
  cfg.gridDim = dim3(DC_CTAS);
  cfg.blockDim = dim3(DC_THREADS);
  cfg.dynamicSmemBytes = p.total;
  cfg.stream = mbcuda_stream(ctx);
  cudaLaunchAttribute at[2];
  at[0].id = cudaLaunchAttributeClusterDimension;
  at[0].val.clusterDim.x = DC_CTAS;
  at[0].val.clusterDim.y = 1;
  at[0].val.clusterDim.z = 1;
  at[1].id = cudaLaunchAttributeProgrammaticStreamSerialization;
  at[1].val.programmaticStreamSerializationAllowed = 1;
  cfg.attrs = at;
  cfg.numAttrs = mbcuda_st(ctx)->pdl ? 2 : 1;
  /* the timing stamps on direct launches only (a captured graph would replay into one buffer) */
  mbcuda_state *st = mbcuda_st(ctx);
  cudaStreamCaptureStatus cap = cudaStreamCaptureStatusNone;
  if (st->draft_timing)
    MBCUDA_CHECK(cudaStreamIsCapturing(cfg.stream, &cap), "draft_greedy (capture status)");
  const int timed = st->draft_timing && cap == cudaStreamCaptureStatusNone;
  if (timed && !st->draft_timing_buf)
    MBCUDA_CHECK(cudaMalloc((void **)&st->draft_timing_buf, DC_TM_MAX * sizeof(long long)),
                 "draft_greedy (timing buffer)");
  a.tm = timed ? st->draft_timing_buf : NULL;
  MBCUDA_CHECK(a.wbf16 ? cudaLaunchKernelEx(&cfg, k_draft_cluster<1>, a)
                       : cudaLaunchKernelEx(&cfg, k_draft_cluster<0>, a),
               "draft_greedy (cluster)");
  mbcuda_launched(ctx);
  if (timed) dc_report_timing(ctx, st->draft_timing_buf, a.n_layer, a.k, read_id != NULL);
  return MB_OK;
}
