/*
 * norm.cu — mb_add_norm on CUDA (residual add + LayerNorm / RMSNorm): rows of d <= 2048 keep the row
 * in registers (k_add_norm_reg, the default there), longer rows use one block per row (k_add_norm).
 * Many rows (a forward's chunk, n >= ADD_NORM_WARP_MIN_ROWS) of d <= 2048, d % 4 == 0: a warp per
 * row (k_add_norm_warp), float4 loads, no block barrier. Decoding (up to 256 sequences) and
 * verification (n <= 65 rows) keep k_add_norm_reg, so a verified position still gets the bits of a
 * decoding step, and every decoding batch the same kernel.
 */
#include <cuda_fp16.h>
#include <math.h>
#include <stdint.h>

#include "cuda_internal.cuh"
#include "norm_row.cuh"

__global__ void k_add_norm(const float *x, float *residual, int accumulate,
                           const float *__restrict__ weight, const float *__restrict__ bias,
                           int norm_kind, float eps, int64_t d, float *out, uint16_t *out_bf16) {
  MB_PDL_ENTRY();
  __shared__ float red[32];
  int64_t row = blockIdx.x;
  const float *xr = x + row * d;
  float *rr = residual + row * d;
  float *orow = out ? out + row * d : nullptr;
  uint16_t *brow = out_bf16 ? out_bf16 + row * d : nullptr;
  float s = 0.f;
  for (int64_t c = threadIdx.x; c < d; c += blockDim.x) {
    float r = (accumulate ? rr[c] : 0.f) + xr[c];
    rr[c] = r;
    s += (norm_kind == MB_NORM_RMS) ? r * r : r;
  }
  s = block_sum(s, red);
  float mean = 0.f, rstd;
  if (norm_kind == MB_NORM_RMS) {
    rstd = 1.f / sqrtf(s / (float)d + eps);
  } else {
    mean = s / (float)d;
    float v = 0.f;
    for (int64_t c = threadIdx.x; c < d; c += blockDim.x) {
      float t = rr[c] - mean;
      v += t * t;
    }
    v = block_sum(v, red);
    rstd = 1.f / sqrtf(v / (float)d + eps);
  }
  for (int64_t c = threadIdx.x; c < d; c += blockDim.x) {
    float o = (rr[c] - mean) * rstd * weight[c];
    if (bias) o += bias[c];
    norm_store(orow, brow, c, o);
  }
}

/* Rows of d <= VPT * blockDim.x (decoding): the row stays in registers (no re-read of the
 * residual), weight and bias are loaded before the PDL wait, the same two-pass statistics. */
template <int VPT, int NT>
__global__ void k_add_norm_reg(const float *x, float *residual, int accumulate,
                               const float *__restrict__ weight, const float *__restrict__ bias,
                               int norm_kind, float eps, int64_t d, float *out,
                               uint16_t *out_bf16) {
  mb_pdl_trigger();
  __shared__ float red[32];
  const int64_t row = blockIdx.x;
  auto pdl_wait = [] { mb_pdl_wait(); };
  add_norm_reg_row<VPT, XLoad::Generic, decltype(pdl_wait), false, 0, NT, true>(
      x + row * d, residual + row * d, residual + row * d, accumulate, weight, bias, norm_kind,
      eps, d, blockDim.x, out ? out + row * d : nullptr, out_bf16 ? out_bf16 + row * d : nullptr,
      red, pdl_wait);
}

/* mb_linear_add_norm's split product (gemm.cu): row i's h is the sum of PARTS parts (part p at
 * parts + p * part_stride, rows of d) in that order, + h_bias; then k_add_norm_reg's row. */
template <int VPT, int PARTS, int NT>
__global__ void k_sum_add_norm_reg(const float *parts, int64_t part_stride,
                                   const float *__restrict__ h_bias, float *residual,
                                   int accumulate, const float *__restrict__ weight,
                                   const float *__restrict__ bias, int norm_kind, float eps,
                                   int64_t d, float *out, uint16_t *out_bf16) {
  mb_pdl_trigger();
  __shared__ float red[32];
  const int64_t row = blockIdx.x;
  auto pdl_wait = [] { mb_pdl_wait(); };
  add_norm_reg_row<VPT, XLoad::Cg, decltype(pdl_wait), false, PARTS, NT, true>(
      parts + row * d, residual + row * d, residual + row * d, accumulate, weight, bias,
      norm_kind, eps, d, blockDim.x, out ? out + row * d : nullptr,
      out_bf16 ? out_bf16 + row * d : nullptr, red, pdl_wait, part_stride, h_bias);
}

template <int VPT>
static int sum_add_norm_vpt(mb_ctx *ctx, int thr, const float *parts, int nparts,
                            int64_t part_stride, const float *h_bias, float *residual,
                            int accumulate, const float *weight, const float *bias, int norm_kind,
                            float eps, int64_t n, int64_t d, float *out, uint16_t *out_bf16) {
  const dim3 grid((unsigned)n), block(thr);
  return norm_nt_dispatch(d, thr, mbcuda_st(ctx)->norm_nt, [&](auto nt) -> int {
    constexpr int NT = decltype(nt)::value;
#define MB_SUM_ADD_NORM(P)                                                                        \
  MBCUDA_LAUNCH("linear_add_norm (sum + add_norm)", (k_sum_add_norm_reg<VPT, P, NT>), grid, block, \
                0, parts, part_stride, h_bias, residual, accumulate, weight, bias, norm_kind, eps, \
                d, out, out_bf16)
    switch (nparts) {
      case 2: MB_SUM_ADD_NORM(2); break;
      case 4: MB_SUM_ADD_NORM(4); break;
      case 8: MB_SUM_ADD_NORM(8); break;
      case 16: MB_SUM_ADD_NORM(16); break;
      default: return mb_fail(MB_ERR_INTERNAL, "cuda: linear_add_norm: %d parts", nparts);
    }
#undef MB_SUM_ADD_NORM
    return MB_OK;
  });
}

int mbcuda_sum_add_norm(mb_ctx *ctx, const float *parts, int nparts, int64_t part_stride,
                        const float *h_bias, float *residual, int accumulate, const float *weight,
                        const float *bias, int norm_kind, float eps, int64_t n, int64_t d,
                        float *out, uint16_t *out_bf16) {
  if (n > 0x7fffffff || d > 8 * 256)
    return mb_fail(MB_ERR_INTERNAL, "cuda: linear_add_norm: rows beyond the norm's kernel");
  int thr, vpt;
  norm_reg_shape(d, &thr, &vpt);
  return vpt == 4 ? sum_add_norm_vpt<4>(ctx, thr, parts, nparts, part_stride, h_bias, residual,
                                        accumulate, weight, bias, norm_kind, eps, n, d, out,
                                        out_bf16)
                  : sum_add_norm_vpt<8>(ctx, thr, parts, nparts, part_stride, h_bias, residual,
                                        accumulate, weight, bias, norm_kind, eps, n, d, out,
                                        out_bf16);
}

/* Above the largest decoding batch (256): at 256 rows the register kernel's 256 blocks finish the
 * step's first and final norms in ~3.5 us where the warp kernel's 32 took ~9.7 (H200 timeline). */
#define ADD_NORM_WARP_MIN_ROWS 257
#define ADD_NORM_WARPS 8 /* rows per block */

/* A warp per row, V4 float4s per lane (row element 4 (lane + 32 j) + e), the row in registers;
 * the statistics as k_add_norm_reg's (sum, then the squared deviations) with warp reductions.
 * STORE_RES false: the row is not stored back (mbcuda_norm_rows: x is the residual already).
 * F16: out_bf16 receives scaled fp16 rows instead, by the exponent at f16_exp
 * (mb_add_norm_f16). */
template <int V4, bool STORE_RES = true, bool F16 = false>
__global__ void __launch_bounds__(ADD_NORM_WARPS * 32)
    k_add_norm_warp(const float *x, float *residual, int accumulate,
                    const float *__restrict__ weight, const float *__restrict__ bias,
                    int norm_kind, float eps, int64_t n, int64_t d, float *out,
                    uint16_t *out_bf16, const int32_t *f16_exp) {
  MB_PDL_ENTRY();
  const int lane = threadIdx.x & 31;
  const int64_t row = (int64_t)blockIdx.x * ADD_NORM_WARPS + (threadIdx.x >> 5);
  if (row >= n) return;
  const int64_t d4 = d / 4;
  const float4 *xr = (const float4 *)(x + row * d);
  float4 *rr = (float4 *)(residual + row * d);
  float4 *orow = out ? (float4 *)(out + row * d) : nullptr;
  uint2 *brow = out_bf16 ? (uint2 *)(out_bf16 + row * d) : nullptr;
  float4 rv[V4];
  /* every load (and the add) before the first store: x and residual may alias for the compiler,
   * so a store between them held each lane to one load in flight; the same sums after */
#pragma unroll
  for (int j = 0; j < V4; j++) {
    const int64_t c = lane + 32 * j;
    float4 r = make_float4(0.f, 0.f, 0.f, 0.f);
    if (c < d4) {
      const float4 xv = xr[c];
      if (accumulate) {
        const float4 a = rr[c];
        r = make_float4(a.x + xv.x, a.y + xv.y, a.z + xv.z, a.w + xv.w);
      } else {
        r = xv;
      }
    }
    rv[j] = r;
  }
  float s = 0.f;
#pragma unroll
  for (int j = 0; j < V4; j++) {
    const float4 r = rv[j];
    if (STORE_RES && lane + 32 * j < d4) rr[lane + 32 * j] = r;
    s += norm_kind == MB_NORM_RMS ? r.x * r.x + r.y * r.y + r.z * r.z + r.w * r.w
                                  : r.x + r.y + r.z + r.w;
  }
  s = warp_sum(s);
  float mean = 0.f, rstd;
  if (norm_kind == MB_NORM_RMS) {
    rstd = 1.f / sqrtf(s / (float)d + eps);
  } else {
    mean = s / (float)d;
    float v = 0.f;
#pragma unroll
    for (int j = 0; j < V4; j++) {
      if (lane + 32 * j < d4) {
        const float a = rv[j].x - mean, b = rv[j].y - mean, c = rv[j].z - mean,
                    e = rv[j].w - mean;
        v += a * a + b * b + c * c + e * e;
      }
    }
    v = warp_sum(v);
    rstd = 1.f / sqrtf(v / (float)d + eps);
  }
  const float4 *w4 = (const float4 *)weight, *b4 = (const float4 *)bias;
  float s1 = 1.f, s2 = 1.f;
  if (F16) mb_f16_scale_factors(*f16_exp, &s1, &s2);
#pragma unroll
  for (int j = 0; j < V4; j++) {
    const int64_t c = lane + 32 * j;
    if (c < d4) {
      const float4 wv = w4[c];
      const float4 bv = bias ? b4[c] : make_float4(0.f, 0.f, 0.f, 0.f);
      float4 o;
      o.x = (rv[j].x - mean) * rstd * wv.x + bv.x;
      o.y = (rv[j].y - mean) * rstd * wv.y + bv.y;
      o.z = (rv[j].z - mean) * rstd * wv.z + bv.z;
      o.w = (rv[j].w - mean) * rstd * wv.w + bv.w;
      if (orow) orow[c] = o;
      if (F16) {
        const __half2 h[2] = {__floats2half2_rn(o.x * s1 * s2, o.y * s1 * s2),
                              __floats2half2_rn(o.z * s1 * s2, o.w * s1 * s2)};
        brow[c] = *(const uint2 *)h;
      } else if (brow) {
        brow[c] = mb_f32x4_to_bf16(o);
      }
    }
  }
}

static bool aligned16(const void *p) { return ((uintptr_t)p & 15) == 0; }

/* Whether rows take k_add_norm_warp: many rows of d <= 2048, d % 4 == 0, 16-byte aligned. */
static bool warp_rows_fit(int64_t n, int64_t d, const float *x, const float *residual,
                          const float *weight, const float *bias, const float *out,
                          const uint16_t *out_bf16) {
  return n >= ADD_NORM_WARP_MIN_ROWS && n <= 0x7fffffff && d <= 2048 && d % 4 == 0 &&
         aligned16(x) && aligned16(residual) && aligned16(weight) && (!bias || aligned16(bias)) &&
         aligned16(out) && ((uintptr_t)out_bf16 & 7) == 0;
}

/* k_add_norm_warp over n rows, its V4 by d (rows that warp_rows_fit). */
template <bool STORE_RES, bool F16 = false>
static int add_norm_warp_launch(mb_ctx *ctx, const char *op, const float *x, float *residual,
                                int accumulate, const float *weight, const float *bias,
                                int norm_kind, float eps, int64_t n, int64_t d, float *out,
                                uint16_t *out_bf16, const int32_t *f16_exp = nullptr) {
  const dim3 grid((unsigned)((n + ADD_NORM_WARPS - 1) / ADD_NORM_WARPS));
  const dim3 block(ADD_NORM_WARPS * 32);
  if (d <= 512)
    MBCUDA_LAUNCH(op, (k_add_norm_warp<4, STORE_RES, F16>), grid, block, 0, x, residual, accumulate, weight, bias, norm_kind, eps, n, d, out, out_bf16, f16_exp);
  else if (d <= 1024)
    MBCUDA_LAUNCH(op, (k_add_norm_warp<8, STORE_RES, F16>), grid, block, 0, x, residual, accumulate, weight, bias, norm_kind, eps, n, d, out, out_bf16, f16_exp);
  else
    MBCUDA_LAUNCH(op, (k_add_norm_warp<16, STORE_RES, F16>), grid, block, 0, x, residual, accumulate, weight, bias, norm_kind, eps, n, d, out, out_bf16, f16_exp);
  return MB_OK;
}

bool mbcuda_norm_rows_fit(int64_t n, int64_t d, const float *res, const float *weight,
                          const float *bias, const float *out, const uint16_t *out_bf16) {
  return warp_rows_fit(n, d, res, res, weight, bias, out, out_bf16);
}

int mbcuda_norm_rows(mb_ctx *ctx, const float *res, const float *weight, const float *bias,
                     int norm_kind, float eps, int64_t n, int64_t d, float *out,
                     uint16_t *out_bf16) {
  /* x = the residual rows, not accumulated and (STORE_RES false) not written */
  return add_norm_warp_launch<false>(ctx, "linear_add_norm (norm)", res, (float *)res, 0, weight,
                                     bias, norm_kind, eps, n, d, out, out_bf16);
}

extern "C" int mbcuda_add_norm(mb_ctx *ctx, const float *x, float *residual, int accumulate,
                               const float *weight, const float *bias, int norm_kind, float eps,
                               int64_t n, int64_t d, float *out, uint16_t *out_bf16) {
  if (n <= 0 || d <= 0) return MB_OK;
  if (n > 0x7fffffff) return mb_fail(MB_ERR_INVALID, "cuda: add_norm: too many rows");
  if (warp_rows_fit(n, d, x, residual, weight, bias, out, out_bf16))
    return add_norm_warp_launch<true>(ctx, "add_norm", x, residual, accumulate, weight, bias,
                                      norm_kind, eps, n, d, out, out_bf16);
  if (d <= 8 * 256) { /* rows held in registers (v3; the default) */
    int thr, vpt;
    norm_reg_shape(d, &thr, &vpt);
    return norm_nt_dispatch(d, thr, mbcuda_st(ctx)->norm_nt, [&](auto nt) -> int {
      constexpr int NT = decltype(nt)::value;
      if (vpt == 4)
        MBCUDA_LAUNCH("add_norm", (k_add_norm_reg<4, NT>), dim3((unsigned)n), dim3(thr), 0, x,
                      residual, accumulate, weight, bias, norm_kind, eps, d, out, out_bf16);
      else
        MBCUDA_LAUNCH("add_norm", (k_add_norm_reg<8, NT>), dim3((unsigned)n), dim3(thr), 0, x,
                      residual, accumulate, weight, bias, norm_kind, eps, d, out, out_bf16);
      return MB_OK;
    });
  }
  MBCUDA_LAUNCH("add_norm", k_add_norm, dim3((unsigned)n), dim3(row_threads(d)), 0, x, residual, accumulate, weight, bias, norm_kind, eps, d, out, out_bf16);
  return MB_OK;
}

/* ---- mb_add_norm_f16 --------------------------------------------------------------------------
 * The rows' exponent comes first, from a bound on every normed element (sqrt(d) max|weight| +
 * max|bias|), so the rows are normed and stored as scaled fp16 in one pass. */

/* One block: *out_exp = the exponent of the bound; bound_bits (when not NULL) = its bits, as
 * the largest magnitude k_f16_convert scales by (the generic path below). */
__global__ void k_norm_f16_exp(const float *__restrict__ weight, const float *__restrict__ bias,
                               int64_t d, int32_t *out_exp, unsigned *bound_bits) {
  MB_PDL_ENTRY();
  __shared__ float red[32];
  float mw = 0.f, mb = 0.f;
  for (int64_t c = threadIdx.x; c < d; c += blockDim.x) {
    mw = fmaxf(mw, fabsf(weight[c]));
    if (bias) mb = fmaxf(mb, fabsf(bias[c]));
  }
  mw = block_max(mw, red);
  mb = block_max(mb, red);
  if (threadIdx.x == 0) {
    /* no fused multiply-add: the CPU's bound, the same float operations */
    const float b = __fadd_rn(__fmul_rn(sqrtf((float)d), mw), mb);
    *out_exp = mb_f16_scale_exp(__float_as_uint(b));
    if (bound_bits) *bound_bits = __float_as_uint(b);
  }
}

extern "C" int mbcuda_add_norm_f16(mb_ctx *ctx, const float *x, float *residual, int accumulate,
                                   const float *weight, const float *bias, int norm_kind,
                                   float eps, int64_t n, int64_t d, uint16_t *out_f16,
                                   int32_t *out_exp, int exp_given) {
  if (n <= 0 || d <= 0) return MB_OK;
  if (n > 0x7fffffff) return mb_fail(MB_ERR_INVALID, "cuda: add_norm_f16: too many rows");
  const char *op = "add_norm_f16";
  if (warp_rows_fit(n, d, x, residual, weight, bias, NULL, out_f16)) {
    if (!exp_given) /* else an earlier call's, for this weight and bias (~5 us a 972M layer) */
      MBCUDA_LAUNCH(op, k_norm_f16_exp, dim3(1), dim3(256), 0, weight, bias, d, out_exp,
                    (unsigned *)NULL);
    if (x == residual && !accumulate) /* the residual holds the sum already: not stored back */
      return add_norm_warp_launch<false, true>(ctx, op, x, residual, 0, weight, bias, norm_kind,
                                               eps, n, d, NULL, out_f16, out_exp);
    return add_norm_warp_launch<true, true>(ctx, op, x, residual, accumulate, weight, bias,
                                            norm_kind, eps, n, d, NULL, out_f16, out_exp);
  }
  /* other shapes: mb_add_norm's fp32 rows in the scratch, then scaled by the bound */
  void *rows = NULL, *head = NULL;
  int rc = mbcuda_scratch(ctx, (size_t)(n * d) * sizeof(float), op, &rows);
  if (!rc && !exp_given) rc = mbcuda_scratch_f16(ctx, 64, op, &head); /* the bound's bits */
  if (!rc) rc = mbcuda_add_norm(ctx, x, residual, accumulate, weight, bias, norm_kind, eps, n, d,
                                (float *)rows, NULL);
  if (rc) return rc;
  if (exp_given)
    return mbcuda_f16_rows_given(ctx, (const float *)rows, d, n, d, out_exp, out_f16, op);
  MBCUDA_LAUNCH(op, k_norm_f16_exp, dim3(1), dim3(256), 0, weight, bias, d, out_exp,
                (unsigned *)head);
  return mbcuda_f16_scale_rows(ctx, (const float *)rows, d, n, d, (const unsigned *)head,
                               out_f16, op);
}
