/*
 * gemm_skinny.cu — mb_linear for a decoding batch's products with few outputs (x_proj at a batch
 * of 9 to 256 sequences: 144 outputs of 3584 inputs, 1 MB of bf16 weights), which cuBLAS ran in
 * ~13 us at batch 64, as long as out_proj's 12.8 MB (cuda_bench --batch, docs/cuda_notes.md).
 *
 * The inner dimension is split over the blocks (SK_KS inputs each): a block stages its slice of
 * x (SK_MT rows) and of every weight row in shared memory and writes the slice's partial
 * products into the context's scratch; then k_skinny_reduce adds the slices in slice order, the
 * bias last, so every run gives the same bits. bf16 x and w, fp32 products and sums (a bf16
 * product is exact in fp32).
 */
#include <stdint.h>

#include "cuda_internal.cuh"

#define SK_MT 64       /* rows of x a block */
#define SK_KS 32       /* inputs a block */
#define SK_THREADS 256 /* 16 groups of 4 rows x 16 groups of outputs */
#define SK_RED_WARPS 8 /* k_skinny_reduce: warps a block, each a share of the slices */

__device__ __forceinline__ float sk_bf16(uint16_t v) { return __uint_as_float((uint32_t)v << 16); }

/* Grid (slices, ceil(n / SK_MT)). Thread (mg, og) computes rows m0 + 4 mg + j (j < 4) for the
 * outputs og + 16 i (i < OPT; out_f <= 16 OPT) over the block's slice; partial products of
 * slice k at part[(k n + row) out_f + o]. */
template <int OPT>
__global__ void __launch_bounds__(SK_THREADS)
k_skinny_partial(const uint16_t *__restrict__ x, int64_t ldx, const uint16_t *__restrict__ w,
                 int64_t n, int64_t in_f, int64_t out_f, float *__restrict__ part) {
  __shared__ float xs[SK_MT][SK_KS + 1]; /* + 1: the outputs' rows fall in distinct banks */
  __shared__ float ws[16 * OPT][SK_KS + 1];
  mb_pdl_trigger();
  const int64_t k0 = (int64_t)blockIdx.x * SK_KS, m0 = (int64_t)blockIdx.y * SK_MT;
  const int kn = in_f - k0 < SK_KS ? (int)(in_f - k0) : SK_KS;
  /* the weights are constant: staged before the PDL wait */
  for (int i = threadIdx.x; i < 16 * OPT * SK_KS; i += SK_THREADS) {
    const int o = i / SK_KS, kk = i % SK_KS;
    ws[o][kk] = (o < out_f && kk < kn) ? sk_bf16(w[o * in_f + k0 + kk]) : 0.f;
  }
  mb_pdl_wait();
  for (int i = threadIdx.x; i < SK_MT * SK_KS; i += SK_THREADS) {
    const int m = i / SK_KS, kk = i % SK_KS;
    xs[m][kk] = (m0 + m < n && kk < kn) ? sk_bf16(x[(m0 + m) * ldx + k0 + kk]) : 0.f;
  }
  __syncthreads();
  const int mg = threadIdx.x / 16, og = threadIdx.x % 16;
  float acc[4][OPT];
#pragma unroll
  for (int j = 0; j < 4; j++)
#pragma unroll
    for (int i = 0; i < OPT; i++) acc[j][i] = 0.f;
#pragma unroll 4
  for (int kk = 0; kk < SK_KS; kk++) {
    float xv[4], wv[OPT];
#pragma unroll
    for (int j = 0; j < 4; j++) xv[j] = xs[4 * mg + j][kk];
#pragma unroll
    for (int i = 0; i < OPT; i++) wv[i] = ws[og + 16 * i][kk];
#pragma unroll
    for (int j = 0; j < 4; j++)
#pragma unroll
      for (int i = 0; i < OPT; i++) acc[j][i] = fmaf(xv[j], wv[i], acc[j][i]);
  }
  float *p = part + (int64_t)blockIdx.x * n * out_f;
#pragma unroll
  for (int j = 0; j < 4; j++) {
    const int64_t m = m0 + 4 * mg + j;
    if (m >= n) break;
#pragma unroll
    for (int i = 0; i < OPT; i++) {
      const int o = og + 16 * i;
      if (o < out_f) p[m * out_f + o] = acc[j][i];
    }
  }
}

/* y[m, o] = the sum over the slices, in slice order, + bias[o]. A block covers 32 consecutive
 * (row, output) elements: warp v sums its share of the slices (fixed bounds, coalesced loads),
 * then thread v = 0 adds the warps' sums in warp order. */
__global__ void __launch_bounds__(32 * SK_RED_WARPS)
k_skinny_reduce(const float *__restrict__ part, int slices, int64_t n, int64_t out_f,
                const float *__restrict__ bias, float *__restrict__ y, int64_t ldy) {
  __shared__ float sums[SK_RED_WARPS][32];
  mb_pdl_trigger();
  const int lane = threadIdx.x % 32, v = threadIdx.x / 32;
  const int64_t total = n * out_f, e = (int64_t)blockIdx.x * 32 + lane;
  const bool ok = e < total;
  const float b = (ok && bias) ? bias[e % out_f] : 0.f;
  mb_pdl_wait();
  const int per = (slices + SK_RED_WARPS - 1) / SK_RED_WARPS;
  const int k0 = v * per, k1 = k0 + per < slices ? k0 + per : slices;
  float s = 0.f;
  if (ok) {
    const float *p = part + e;
#pragma unroll 8
    for (int k = k0; k < k1; k++) s += p[(int64_t)k * total];
  }
  sums[v][lane] = s;
  __syncthreads();
  if (v == 0 && ok) {
    float t = sums[0][lane];
#pragma unroll
    for (int i = 1; i < SK_RED_WARPS; i++) t += sums[i][lane];
    y[(e / out_f) * ldy + e % out_f] = t + b;
  }
}

extern "C" int mbcuda_skinny_ok(mb_ctx *ctx, int64_t n, int64_t in_f, int64_t out_f) {
  return mbcuda_st(ctx)->skinny && n > 8 && n <= SK_SKINNY_NMAX && out_f > 0 &&
         out_f <= SK_SKINNY_OMAX && in_f > 0 && in_f <= INT32_MAX;
}

extern "C" size_t mbcuda_skinny_scratch(int64_t n, int64_t in_f, int64_t out_f) {
  return (size_t)((in_f + SK_KS - 1) / SK_KS) * (size_t)(n * out_f) * sizeof(float);
}

template <int OPT>
static cudaError_t skinny_launch(mb_ctx *ctx, const uint16_t *x, int64_t ldx, const uint16_t *w,
                                 int64_t n, int64_t in_f, int64_t out_f, float *part) {
  const dim3 grid((unsigned)((in_f + SK_KS - 1) / SK_KS), (unsigned)((n + SK_MT - 1) / SK_MT));
  return mbcuda_launch(ctx, k_skinny_partial<OPT>, grid, dim3(SK_THREADS), 0, x, ldx, w, n, in_f,
                       out_f, part);
}

extern "C" int mbcuda_linear_skinny(mb_ctx *ctx, const uint16_t *x, int64_t ldx, const uint16_t *w,
                                    const float *bias, int64_t n, int64_t in_f, int64_t out_f,
                                    float *y, int64_t ldy, float *part) {
  const int slices = (int)((in_f + SK_KS - 1) / SK_KS);
  cudaError_t e;
  if (out_f <= 64) e = skinny_launch<4>(ctx, x, ldx, w, n, in_f, out_f, part);
  else if (out_f <= 128) e = skinny_launch<8>(ctx, x, ldx, w, n, in_f, out_f, part);
  else if (out_f <= 192) e = skinny_launch<12>(ctx, x, ldx, w, n, in_f, out_f, part);
  else e = skinny_launch<16>(ctx, x, ldx, w, n, in_f, out_f, part);
  MBCUDA_CHECK(e, "linear (skinny partials)");
  const int64_t blocks = (n * out_f + 31) / 32;
  MBCUDA_CHECK(mbcuda_launch(ctx, k_skinny_reduce, dim3((unsigned)blocks), dim3(32 * SK_RED_WARPS),
                             0, (const float *)part, slices, n, out_f, bias, y, ldy),
               "linear (skinny sums)");
  return MB_OK;
}
