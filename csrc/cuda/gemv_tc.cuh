/*
 * gemv_tc.cuh — the n <= 8 GEMV of in_proj's shape with bf16 weights on the tensor cores, as
 * device functions shared by every kernel that computes it (the ops' GEMV, the batch-1 ring, the
 * norm prologue's fallback and the verification pass's rows, in gemm.cu), so they give the same
 * bits.
 *
 * A row group of 8 weight rows is the B operand of mma.sync.m16n8k16 (8 columns); the fp32 input
 * is split into three bf16 parts, hi + mid + lo == x exactly (truncations: hi keeps x's top 16
 * bits, mid the top 16 of x - hi, lo is the rest, at most 8 significant bits), which are A's rows
 * 0, 1 and 2 (rows 3..15 zero). bf16 x bf16 products are exact in fp32, so the only rounding is
 * the tensor core's fp32 accumulation, where the FMA form (gemv_block) rounds each chunk's FMAs:
 * the sums differ from it by about an fp32 rounding of each partial sum. A lane takes 8
 * consecutive inputs a step (one 16-byte load of its row's weights, one of its part's x chunk),
 * which two mma cover: inputs 8t..8t+3 of lane (g, t) in the first, 8t+4..8t+7 in the second (A's
 * and B's k order permuted alike, so each k pairs the same x and w).
 *
 * The bits, fixed for every caller (they depend on nothing else):
 *   - in_f a multiple of 32: nss = in_f / 32 steps of 32 inputs; warp w of 8 (TC_WARPS) takes the
 *     steps w, w + 8, ... in order, its two mma of a step into two accumulators from zero, then
 *     their sum (tc_warp_slice);
 *   - the warp's three part sums of a row added lo + mid first, then hi (tc_parts);
 *   - the 8 warps' sums added in warp order (tc_row_sum), then the bias (+ 0 without one).
 * The ring kernel reads its weights from shared memory, the others from global memory: the same
 * values in the same operations.
 */
#ifndef MAMBABYTE_GEMV_TC_CUH
#define MAMBABYTE_GEMV_TC_CUH

#include <stdint.h>

#include "cuda_internal.cuh"
#include "gemv.cuh"

#define TC_WARPS 8      /* k-slices of a row group (a block's warps): part of the bits */
#define TC_ROWS 8       /* weight rows a group: the mma's n */
#define TC_MAX_IN 4096  /* in_f of the form (its x parts in static shared memory) */

/* Whether an n <= 8 GEMV takes this form: bf16 weights with gemv_block's 16-byte loads, in_f a
 * multiple of 32 up to TC_MAX_IN, and in_proj's shape (out_f >= 2 in_f: at least two row groups
 * for every k-slice of an input's, which out_proj, x_proj, dt_proj and the head never are). The
 * rule every n <= 8 launcher reads through gemv_dispatch, so that they all give the same bits. */
static inline bool gemv_tc_fits(int on, bool bf16, bool vec, int64_t in_f, int64_t out_f) {
  return on && bf16 && vec && in_f % 32 == 0 && in_f <= TC_MAX_IN && out_f >= 2 * in_f;
}

/* Elements of a padded row of the x parts (bf16) of in_f inputs: a multiple of 8 whose byte size
 * is 64 more than a multiple of 128, so that the two rows a quarter-warp's 16-byte loads touch
 * (lanes 4g..4g+3 at chunks 0..3 of rows g, g + 1) cover the 32 banks once. */
__host__ __device__ __forceinline__ int64_t tc_pitch(int64_t in_f) {
  const int64_t ch = (in_f + 7) / 8;
  return (ch + (12 - ch % 8) % 8) * 8;
}
/* tc_pitch(n) as a constant, for n a multiple of 64 (shared-memory arrays' sizes) */
#define TC_PITCH_OF(n) (((n) / 8 + 4) * 8)

/* The three parts of one input as fp32 bit patterns whose top 16 bits are the bf16 parts (hi: the
 * input's own bits; mid: those of v - hi; lo: the rest, exact in bf16). */
__device__ __forceinline__ void tc_split(float v, uint32_t &hi, uint32_t &mid, uint32_t &lo) {
  hi = __float_as_uint(v);
  const float r = __fsub_rn(v, __uint_as_float(hi & 0xffff0000u));
  mid = __float_as_uint(r);
  lo = __float_as_uint(__fsub_rn(r, __uint_as_float(mid & 0xffff0000u)));
}

/* The three parts of 2 inputs (v0 the lower k), each pair packed as an mma operand register. */
__device__ __forceinline__ void tc_split2(float v0, float v1, uint32_t &hi, uint32_t &mid,
                                          uint32_t &lo) {
  uint32_t h0, m0, l0, h1, m1, l1;
  tc_split(v0, h0, m0, l0);
  tc_split(v1, h1, m1, l1);
  hi = __byte_perm(h0, h1, 0x7632); /* the top halves: v0's in the low 16 bits */
  mid = __byte_perm(m0, m1, 0x7632);
  lo = __byte_perm(l0, l1, 0x7632);
}

/* x[0..in_f) split into the parts' rows xp, xp + pitch, xp + 2 pitch (shared memory), by a
 * block's threads, 4 inputs a thread at a time (x 16-byte aligned, in_f a multiple of 4). */
template <XLoad XL>
__device__ __forceinline__ void tc_split_row(const float *x, int64_t in_f, uint16_t *xp,
                                             int64_t pitch) {
  using XLC = XLoadTag<XL>;
  for (int64_t c = 4 * (int64_t)threadIdx.x; c < in_f; c += 4 * (int64_t)blockDim.x) {
    const float4 v = xload((const float4 *)(x + c), XLC());
    uint32_t h0, m0, l0, h1, m1, l1;
    tc_split2(v.x, v.y, h0, m0, l0);
    tc_split2(v.z, v.w, h1, m1, l1);
    *(uint2 *)(xp + c) = make_uint2(h0, h1);
    *(uint2 *)(xp + pitch + c) = make_uint2(m0, m1);
    *(uint2 *)(xp + 2 * pitch + c) = make_uint2(l0, l1);
  }
}

/* One input's three parts stored at column c of the parts' rows (the norm prologue's store). */
__device__ __forceinline__ void tc_split_store(uint16_t *xp, int64_t pitch, int64_t c, float v) {
  uint32_t h, m, l;
  tc_split(v, h, m, l);
  xp[c] = (uint16_t)(h >> 16);
  xp[pitch + c] = (uint16_t)(m >> 16);
  xp[2 * pitch + c] = (uint16_t)(l >> 16);
}

/* The two mma of a step: xq the lane's part chunk (8 inputs), wq its row's weight chunk. */
__device__ __forceinline__ void tc_step(float (&ca)[4], float (&cb)[4], const uint4 &xq,
                                        const uint4 &wq) {
  mb_mma_bf16_16816(ca, xq.x, 0u, xq.y, 0u, wq.x, wq.y);
  mb_mma_bf16_16816(cb, xq.z, 0u, xq.w, 0u, wq.z, wq.w);
}

/* One warp's k-slice of a row group (steps warp, warp + 8, ... < nss), U steps' loads at a time
 * (the bits do not depend on U). xf(s), wf(s): the lane's x-part and weight chunks of step s.
 * first: the first U steps' weights, loaded by the caller (before its wait). Returns, in lane
 * (g, t), part g's sums of rows 2t and 2t + 1 (g >= 3: zeros). */
template <int U, typename XF, typename WF>
__device__ __forceinline__ float2 tc_warp_slice(int nss, int warp, XF xf, WF wf,
                                                const uint4 (&first)[U]) {
  float ca[4] = {0.f, 0.f, 0.f, 0.f}, cb[4] = {0.f, 0.f, 0.f, 0.f};
  for (int s0 = warp; s0 < nss; s0 += U * TC_WARPS) {
    uint4 wq[U], xq[U];
#pragma unroll
    for (int u = 0; u < U; u++) {
      const int s = s0 + u * TC_WARPS;
      wq[u] = s0 == warp ? first[u] : s < nss ? wf(s) : make_uint4(0u, 0u, 0u, 0u);
      xq[u] = s < nss ? xf(s) : make_uint4(0u, 0u, 0u, 0u);
    }
#pragma unroll
    for (int u = 0; u < U; u++)
      if (s0 + u * TC_WARPS < nss) tc_step(ca, cb, xq[u], wq[u]);
  }
  return make_float2(__fadd_rn(ca[0], cb[0]), __fadd_rn(ca[1], cb[1]));
}

/* Lanes t < 4: rows 2t, 2t + 1's warp sums over the parts (lo + mid, then + hi). Every lane
 * calls it (shuffles). */
__device__ __forceinline__ float2 tc_parts(float2 c) {
  const float m0 = __shfl_down_sync(0xffffffffu, c.x, 4), m1 = __shfl_down_sync(0xffffffffu, c.y, 4);
  const float l0 = __shfl_down_sync(0xffffffffu, c.x, 8), l1 = __shfl_down_sync(0xffffffffu, c.y, 8);
  return make_float2(__fadd_rn(__fadd_rn(l0, m0), c.x), __fadd_rn(__fadd_rn(l1, m1), c.y));
}

/* Row n's sum over the warps' slices, in warp order. */
__device__ __forceinline__ float tc_row_sum(const float (&red)[TC_WARPS][TC_ROWS], int n) {
  float s = red[0][n];
#pragma unroll
  for (int w = 1; w < TC_WARPS; w++) s = __fadd_rn(s, red[w][n]);
  return s;
}

/* A block's row group from global weights (rows row0.. of w, in_f <= XP_MAX each; rows past out_f
 * read as zeros) on one input whose parts `pro(xp, pitch)` writes into the block's parts rows and
 * makes visible (every thread calls it once: the PDL wait, the split or the norm, a
 * __syncthreads). The first step of each warp's weights is loaded before it. Returns the row's sum
 * (no bias) in lane 0 of warp n for row row0 + n. Ends with a __syncthreads (the warps' sums
 * complete). */
template <int XP_MAX, typename Pro>
__device__ __forceinline__ float tc_group_block(const uint16_t *__restrict__ w, int64_t in_f,
                                                int64_t out_f, int64_t row0, Pro pro) {
  constexpr int U = 4;
  static_assert(XP_MAX % 64 == 0, "TC_PITCH_OF");
  __shared__ __align__(16) uint16_t xp[3 * TC_PITCH_OF(XP_MAX)];
  __shared__ __align__(16) float red[TC_WARPS][TC_ROWS];
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, g = lane >> 2, t = lane & 3;
  const int nss = (int)(in_f / 32);
  const int64_t pitch = tc_pitch(in_f);
  const bool wrow = row0 + g < out_f;
  const uint4 *wr = (const uint4 *)(w + (wrow ? row0 + g : 0) * in_f) + t;
  const uint4 *xr = (const uint4 *)(xp + (g < 3 ? g : 0) * pitch) + t;
  const auto wf = [&](int s) { return wrow ? __ldcs(wr + 4 * s) : make_uint4(0u, 0u, 0u, 0u); };
  const auto xf = [&](int s) { return g < 3 ? xr[4 * s] : make_uint4(0u, 0u, 0u, 0u); };
  uint4 first[U];
#pragma unroll
  for (int u = 0; u < U; u++) {
    const int s = warp + u * TC_WARPS;
    first[u] = s < nss ? wf(s) : make_uint4(0u, 0u, 0u, 0u);
  }
  pro(xp, pitch);
  const float2 v = tc_parts(tc_warp_slice<U>(nss, warp, xf, wf, first));
  if (lane < 4) *(float2 *)&red[warp][2 * lane] = v;
  __syncthreads();
  return tc_row_sum(red, warp);
}

#endif
