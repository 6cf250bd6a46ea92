/*
 * gemm_ring.cu — in_proj's product at decoding batches (up to 64 rows of bf16 x, bf16 weights,
 * out_f >= 2 in_f) as a ring of bulk-copied weight stages on the tensor cores, in clusters of two
 * blocks that split the inner dimension: mb_linear's and mb_linear_bf16's bf16 GEMM takes it where
 * it fits (mbcuda_linear_ring_batch), cuBLAS elsewhere.
 *
 * Why not cuBLAS: at 64 rows its in_proj streams the 972M shape's 25.7 MB of weights at ~0.6 of
 * the copy rate and starts only when the norm before it has ended. Here every block asks for its
 * first stages before its PDL wait (the weights are constants), so the stream starts under the
 * norm, as the batch-1 ring's does (gemm.cu).
 *
 * The form. A cluster's two blocks take the same row groups (8 weight rows, the mma's n) in the
 * same order, block `rank` the inner dimension's half `rank`, whose x rows (64 x 896 bf16 at 972M's
 * shape, 112 KB) it holds in registers for the whole kernel: 16 warps, warp w the m-tile w % MT
 * (16 rows of x each) and the k-slice w / MT of KP = 16 / MT, its steps of 32 inputs kp, kp + KP,
 * ... (the lane's 8 consecutive inputs a step, A's and B's k order permuted alike, as gemv_tc.cuh).
 * A stage is a group's 8 half rows, 8 bulk copies into rows padded by 64 bytes (the B fragments'
 * 16-byte loads then cover the banks once). Each warp leaves its partial tile in a slot of its own
 * (no barrier between warps but where a stage is given back), and after the last group, a cluster
 * barrier later, each block sums every other group over both blocks' slots (distributed shared
 * memory) in one fixed order: rank 0's slices in k order, then rank 1's. So the bits are the same
 * every run and in graph replay; they are not cuBLAS's.
 */
#include <cooperative_groups.h>
#include <stdint.h>

#include "bulk_copy.cuh"
#include "cuda_internal.cuh"

namespace cg = cooperative_groups;

#define BR_WARPS 16
#define BR_THREADS (BR_WARPS * 32)
#define BR_ROWS 8        /* weight rows a group: the mma's n */
#define BR_XS 8          /* a warp's steps at most (its x chunks live in registers) */
#define BR_STAGES_MAX 12 /* ring stages of a block at most */
#define BR_MAX_ROWS 64

struct BrArgs {
  const uint16_t *x; /* n rows of in_f bf16 at ldx */
  int64_t ldx;
  const uint16_t *w; /* out_f rows of in_f bf16 */
  int64_t n, in_f, out_f;
  float *y;          /* part p's n rows at y + p * part_stride, ldy apart */
  int64_t ldy;
  int64_t parts;     /* the inner dimension's parts (a column's blocks; 2 in a cluster) */
  int64_t part_stride;
  int64_t columns;   /* the grid's columns of `parts` blocks; column c takes groups c, c +
                      * columns, ... */
  int stages;        /* ring stages (<= BR_STAGES_MAX) */
};

/* floats of a group's warp slices (KP slices x MT * 16 rows x 8 columns, the same for every MT),
 * and of its block sum (64 rows x 8) */
#define BR_SLOT (BR_WARPS * 16 * BR_ROWS)
#define BR_SUM (BR_MAX_ROWS * BR_ROWS)

/* CLUSTER: a column is a cluster of 2 blocks whose halves are summed into y (in_proj); else each
 * block writes its part's sums, which the caller adds (out_proj's parts, summed by the norm). */
template <int MT, bool CLUSTER>
__global__ void __launch_bounds__(BR_THREADS, 1) k_linear_ring_batch(const BrArgs a) {
  constexpr int KP = BR_WARPS / MT;
  constexpr int SL = MT * 16 * BR_ROWS; /* a warp slice's floats */
  extern __shared__ __align__(128) unsigned char br_smem[];
  __shared__ uint64_t bar[BR_STAGES_MAX];
  const int S = a.stages;
  const unsigned rank = (unsigned)(blockIdx.x % a.parts);
  const int64_t cid = blockIdx.x / a.parts;
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, g = lane >> 2, t = lane & 3;
  const int64_t kpart = a.in_f / a.parts, pitch = kpart + 32; /* a staged row's elements */
  const size_t stage = (size_t)BR_ROWS * pitch;
  const int64_t ngroups = a.out_f / BR_ROWS;
  const int mine = (int)((ngroups - cid + a.columns - 1) / a.columns);
  uint16_t *const ring = (uint16_t *)br_smem;
  float *const tmp = (float *)(br_smem + (size_t)S * stage * sizeof(uint16_t)); /* 2 slots */
  float *const sums = tmp + 2 * BR_SLOT; /* CLUSTER: each group's block sum */
  const auto issue = [&](int i) { /* thread 0: this block's part of its i-th group */
    const int64_t g0 = (cid + (int64_t)i * a.columns) * BR_ROWS;
    uint64_t *b = &bar[i % S];
    uint16_t *dst = ring + (size_t)(i % S) * stage;
    mbar_expect(b, (unsigned)(BR_ROWS * kpart * sizeof(uint16_t)));
    for (int j = 0; j < BR_ROWS; j++)
      bulk_copy(dst + j * pitch, a.w + (g0 + j) * a.in_f + rank * kpart,
                (unsigned)(kpart * sizeof(uint16_t)), b);
  };
  if (threadIdx.x == 0) {
    for (int s = 0; s < S; s++) mbar_init(&bar[s], 1);
    for (int i = 0; i < S && i < mine; i++) issue(i); /* constants: before the wait */
  }
  mb_pdl_wait();
  /* the warp's x chunks: rows mt * 16 + g and + 8, its steps of this block's part */
  const int mt = warp % MT, kp = warp / MT, nsh = (int)(kpart / 32);
  const int64_t r0 = mt * 16 + g, r1 = r0 + 8;
  uint4 xa[BR_XS][2];
#pragma unroll
  for (int q = 0; q < BR_XS; q++) {
    const int s = kp + KP * q;
    const int64_t k = rank * kpart + (int64_t)s * 32 + 8 * t;
    const uint4 z = make_uint4(0u, 0u, 0u, 0u);
    xa[q][0] = s < nsh && r0 < a.n ? *(const uint4 *)(a.x + r0 * a.ldx + k) : z;
    xa[q][1] = s < nsh && r1 < a.n ? *(const uint4 *)(a.x + r1 * a.ldx + k) : z;
  }
  __syncthreads(); /* the barriers' initialisation seen */
  const int outs = (int)a.n * BR_ROWS;
  float *const yp = a.y + rank * a.part_stride;
  for (int i = 0; i < mine; i++) {
    mbar_wait(&bar[i % S], (unsigned)(i / S) & 1u);
    if (i == mine - 1) mb_pdl_trigger();
    const uint4 *ws = (const uint4 *)(ring + (size_t)(i % S) * stage + g * pitch) + t;
    float ca[4] = {0.f, 0.f, 0.f, 0.f}, cb[4] = {0.f, 0.f, 0.f, 0.f};
#pragma unroll
    for (int q = 0; q < BR_XS; q++) {
      const int s = kp + KP * q;
      if (s < nsh) {
        const uint4 wq = ws[4 * s];
        mb_mma_bf16_16816(ca, xa[q][0].x, xa[q][1].x, xa[q][0].y, xa[q][1].y, wq.x, wq.y);
        mb_mma_bf16_16816(cb, xa[q][0].z, xa[q][1].z, xa[q][0].w, xa[q][1].w, wq.z, wq.w);
      }
    }
    float *slot = tmp + (i & 1) * BR_SLOT + kp * SL;
    *(float2 *)&slot[r0 * BR_ROWS + 2 * t] =
        make_float2(__fadd_rn(ca[0], cb[0]), __fadd_rn(ca[1], cb[1]));
    *(float2 *)&slot[r1 * BR_ROWS + 2 * t] =
        make_float2(__fadd_rn(ca[2], cb[2]), __fadd_rn(ca[3], cb[3]));
    __syncthreads(); /* stage i % S read and the group's slices in (tmp slot i & 1) */
    if (threadIdx.x == 0 && i + S < mine) issue(i + S);
    /* the block's sum of the group (its slices in k order): kept for the cluster's sum, or its
     * part's output; slot i & 1 is written again only after the next iteration's barrier */
    const float *sl = tmp + (i & 1) * BR_SLOT;
    const int64_t g0 = (cid + (int64_t)i * a.columns) * BR_ROWS;
    for (int e = threadIdx.x; e < outs; e += BR_THREADS) {
      float v[KP];
#pragma unroll
      for (int j = 0; j < KP; j++) v[j] = sl[j * SL + e];
      float sum = v[0];
#pragma unroll
      for (int j = 1; j < KP; j++) sum = __fadd_rn(sum, v[j]);
      if (CLUSTER) sums[(size_t)i * BR_SUM + e] = sum;
      else yp[(e / BR_ROWS) * a.ldy + g0 + e % BR_ROWS] = sum;
    }
  }
  if constexpr (CLUSTER) {
    /* every other group: rank 0's block sum + rank 1's */
    cg::cluster_group cl = cg::this_cluster();
    cl.sync(); /* both blocks' sums complete and visible */
    const float *s0 = cl.map_shared_rank(sums, 0), *s1 = cl.map_shared_rank(sums, 1);
    for (int i = (int)rank; i < mine; i += 2) {
      const int64_t g0 = (cid + (int64_t)i * a.columns) * BR_ROWS;
      for (int e = threadIdx.x; e < outs; e += BR_THREADS) {
        const float v0 = s0[(size_t)i * BR_SUM + e], v1 = s1[(size_t)i * BR_SUM + e];
        a.y[(e / BR_ROWS) * a.ldy + g0 + e % BR_ROWS] = __fadd_rn(v0, v1);
      }
    }
    cl.sync(); /* the other block is done reading this one's sums */
  }
}

/* The columns of k_linear_ring_batch<MT, CLUSTER> the GPU holds at once at `smem` bytes a block
 * (opting in to that much first; clusters of 2, or blocks / parts), asked once a size (the
 * context's cache); 0 where none fits. */
template <int MT, bool CLUSTER>
static int64_t ring_batch_columns(mb_ctx *ctx, size_t smem, int64_t parts) {
  mbcuda_state *st = mbcuda_st(ctx);
  constexpr int idx = (MT == 1 ? 0 : MT == 2 ? 1 : 2) + (CLUSTER ? 0 : 3);
  if (st->ring_batch_smem_set[idx] == smem) return st->ring_batch_fit[idx] / parts;
  int n = 0;
  cudaError_t e = cudaFuncSetAttribute(k_linear_ring_batch<MT, CLUSTER>,
                                       cudaFuncAttributeMaxDynamicSharedMemorySize, (int)smem);
  if (e == cudaSuccess && CLUSTER) {
    cudaLaunchConfig_t cfg = {};
    cfg.gridDim = dim3(2 * (unsigned)st->sm_count);
    cfg.blockDim = dim3(BR_THREADS);
    cfg.dynamicSmemBytes = smem;
    cudaLaunchAttribute at[1];
    at[0].id = cudaLaunchAttributeClusterDimension;
    at[0].val.clusterDim.x = 2, at[0].val.clusterDim.y = 1, at[0].val.clusterDim.z = 1;
    cfg.attrs = at, cfg.numAttrs = 1;
    e = cudaOccupancyMaxActiveClusters(&n, k_linear_ring_batch<MT, CLUSTER>, &cfg);
    n *= 2; /* blocks */
  } else if (e == cudaSuccess) {
    e = cudaOccupancyMaxActiveBlocksPerMultiprocessor(&n, k_linear_ring_batch<MT, CLUSTER>,
                                                      BR_THREADS, smem);
    n *= st->sm_count;
  }
  if (e != cudaSuccess) { /* more shared memory than a block may have: not an error of the op */
    (void)cudaGetLastError();
    n = 0;
  }
  st->ring_batch_smem_set[idx] = smem;
  st->ring_batch_fit[idx] = n;
  return n / parts;
}

/* The launch of one form: as many columns as the GPU holds at once (at most one a group), each
 * block's slots sized for its column's groups; *fits false, launching nothing, where none fits. */
template <int MT, bool CLUSTER>
static cudaError_t ring_batch_launch(mb_ctx *ctx, BrArgs a, bool *fits) {
  mbcuda_state *st = mbcuda_st(ctx);
  constexpr int idx = (MT == 1 ? 0 : MT == 2 ? 1 : 2) + (CLUSTER ? 0 : 3);
  const int64_t ngroups = a.out_f / BR_ROWS;
  const size_t stage_bytes = (size_t)BR_ROWS * (a.in_f / a.parts + 32) * sizeof(uint16_t);
  int64_t c = st->sm_count / a.parts < ngroups ? st->sm_count / a.parts : ngroups;
  if (st->ring_batch_groups[idx] == ngroups * 64 + a.parts) c = st->ring_batch_c[idx];
  size_t smem = 0;
  *fits = false;
  for (int tries = 0; tries < 3 && !*fits && c >= 1; tries++) {
    /* as many stages as a column has groups, up to BR_STAGES_MAX and what fits beside the two
     * slice slots and (clusters) the groups' sums */
    const int64_t mine = (ngroups + c - 1) / c;
    const size_t fixed =
        (2 * BR_SLOT + (CLUSTER ? (size_t)mine * BR_SUM : 0)) * sizeof(float) + 1024;
    const size_t room = st->smem_optin > fixed ? st->smem_optin - fixed : 0;
    int64_t stages = (int64_t)(room / stage_bytes);
    if (stages > BR_STAGES_MAX) stages = BR_STAGES_MAX;
    if (stages > mine) stages = mine;
    if (stages < 2) break;
    a.stages = (int)stages;
    smem = fixed - 1024 + (size_t)stages * stage_bytes;
    const int64_t n = ring_batch_columns<MT, CLUSTER>(ctx, smem, a.parts);
    if (n >= c) *fits = true;
    else c = n; /* fewer columns, each with more groups' slots: ask again */
  }
  if (!*fits) return cudaSuccess;
  st->ring_batch_groups[idx] = ngroups * 64 + a.parts, st->ring_batch_c[idx] = c;
  a.columns = c;
  cudaLaunchConfig_t cfg = {};
  cfg.gridDim = dim3((unsigned)(a.parts * c));
  cfg.blockDim = dim3(BR_THREADS);
  cfg.dynamicSmemBytes = smem;
  cfg.stream = mbcuda_stream(ctx);
  cudaLaunchAttribute at[2];
  int na = 0;
  if (CLUSTER) {
    at[na].id = cudaLaunchAttributeClusterDimension;
    at[na].val.clusterDim.x = 2, at[na].val.clusterDim.y = 1, at[na].val.clusterDim.z = 1;
    na++;
  }
  if (st->pdl) {
    at[na].id = cudaLaunchAttributeProgrammaticStreamSerialization;
    at[na].val.programmaticStreamSerializationAllowed = 1;
    na++;
  }
  cfg.attrs = at;
  cfg.numAttrs = na;
  const cudaError_t e = cudaLaunchKernelEx(&cfg, k_linear_ring_batch<MT, CLUSTER>, a);
  if (e == cudaSuccess) mbcuda_launched(ctx);
  return e;
}

/* Whether the ring takes n rows of in_f split into `parts`: bf16 rows and weights 16-byte
 * aligned, groups of 8 whole rows, every warp's steps within BR_XS. */
static bool ring_batch_fits(mb_ctx *ctx, int on, const void *x, int64_t ldx, const void *w,
                            int64_t n, int64_t in_f, int64_t out_f, int64_t parts) {
  const int MT = n <= 16 ? 1 : n <= 32 ? 2 : 4;
  return n >= 1 && n <= on && n <= BR_MAX_ROWS && mbcuda_st(ctx)->cc_major >= 9 &&
         in_f % (32 * parts) == 0 && out_f % BR_ROWS == 0 &&
         in_f / parts / 32 <= (int64_t)(BR_WARPS / MT) * BR_XS && ldx % 8 == 0 &&
         (uintptr_t)x % 16 == 0 && (uintptr_t)w % 16 == 0;
}

template <bool CLUSTER>
static cudaError_t ring_batch_dispatch(mb_ctx *ctx, const BrArgs &a, bool *fits) {
  return a.n <= 16   ? ring_batch_launch<1, CLUSTER>(ctx, a, fits)
         : a.n <= 32 ? ring_batch_launch<2, CLUSTER>(ctx, a, fits)
                     : ring_batch_launch<4, CLUSTER>(ctx, a, fits);
}

int mbcuda_linear_ring_batch(mb_ctx *ctx, const void *x, int64_t ldx, const void *w, int64_t n,
                             int64_t in_f, int64_t out_f, float *y, int64_t ldy, int *done) {
  *done = 0;
  if (out_f < 2 * in_f ||
      !ring_batch_fits(ctx, mbcuda_st(ctx)->ring_batch, x, ldx, w, n, in_f, out_f, 2))
    return MB_OK;
  const BrArgs a = {(const uint16_t *)x, ldx, (const uint16_t *)w, n, in_f, out_f, y, ldy, 2, 0,
                    0, 0};
  bool fits = false;
  MBCUDA_CHECK(ring_batch_dispatch<true>(ctx, a, &fits), "linear (batch ring)");
  *done = fits;
  return MB_OK;
}

int mbcuda_linear_ring_parts(mb_ctx *ctx, const void *x, int64_t ldx, const void *w, int64_t n,
                             int64_t in_f, int64_t out_f, int64_t parts, float *y, int *done) {
  *done = 0;
  if (parts < 2 ||
      !ring_batch_fits(ctx, mbcuda_st(ctx)->ring_parts, x, ldx, w, n, in_f, out_f, parts))
    return MB_OK;
  const BrArgs a = {(const uint16_t *)x, ldx, (const uint16_t *)w, n, in_f, out_f, y, out_f,
                    parts, n * out_f, 0, 0};
  bool fits = false;
  MBCUDA_CHECK(ring_batch_dispatch<false>(ctx, a, &fits), "linear_add_norm (batch ring parts)");
  *done = fits;
  return MB_OK;
}
