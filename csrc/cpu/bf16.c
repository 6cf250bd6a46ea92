/*
 * bf16.c — the CPU side of the bfloat16 activations (mambabyte.h: the producers' `_bf16` outputs
 * and mb_linear_bf16, and mb_linear_add_norm that takes either). The CPU model keeps fp32
 * activations; these exist so that the CUDA backend's fused forms have a reference: the fp32
 * result, rounded afterwards, and a product of the rounded values widened back to fp32 (exact).
 */
#include <stdlib.h>
#include <string.h>

#include "cpu_backend.h"
#include "vmath.h"

uint16_t mbcpu_f32_to_bf16(float f) {
  uint32_t u;
  memcpy(&u, &f, 4);
  if ((u & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((u >> 16) | 0x40u); /* quiet NaN */
  u += 0x7fffu + ((u >> 16) & 1u);                                           /* nearest even */
  return (uint16_t)(u >> 16);
}

void mbcpu_rows_to_bf16(const float *x, int64_t ldx, int64_t rows, int64_t cols, uint16_t *out,
                        int64_t ldo) {
  for (int64_t r = 0; r < rows; r++)
    for (int64_t c = 0; c < cols; c++) out[r * ldo + c] = mbcpu_f32_to_bf16(x[r * ldx + c]);
}

float *mbcpu_widen_rows(const uint16_t *x, int64_t ldx, int64_t rows, int64_t cols) {
  float *xf = (float *)malloc((size_t)(rows * cols) * sizeof(float) + 1);
  if (!xf) return NULL;
  for (int64_t r = 0; r < rows; r++)
    for (int64_t c = 0; c < cols; c++) xf[r * cols + c] = mb_bf16_to_f32(x[r * ldx + c]);
  return xf;
}

int mbcpu_linear_bf16(mb_ctx *ctx, const uint16_t *x, int64_t ldx, const void *w, int wdtype,
                      const float *bias, int64_t n, int64_t in_f, int64_t out_f, float *y,
                      int64_t ldy) {
  float *xf = mbcpu_widen_rows(x, ldx, n, in_f);
  if (!xf) return mb_fail(MB_ERR_OOM, "cpu: linear_bf16: no memory for %lld x %lld floats",
                          (long long)n, (long long)in_f);
  int st = mbcpu_linear(ctx, xf, in_f, w, wdtype, bias, n, in_f, out_f, y, ldy);
  free(xf);
  return st;
}

/* mb_linear_to_bf16: the fp32 product, rounded afterwards (the reference of CUDA's GEMM with a
 * bf16 output). */
int mbcpu_linear_to_bf16(mb_ctx *ctx, const float *x, const uint16_t *x_bf16, int64_t ldx,
                         const void *w, int wdtype, const float *bias, int64_t n, int64_t in_f,
                         int64_t out_f, uint16_t *y, int64_t ldy) {
  float *yf = (float *)malloc((size_t)(n * out_f) * sizeof(float));
  if (!yf) return mb_fail(MB_ERR_OOM, "cpu: linear_to_bf16: no memory for %lld x %lld floats",
                          (long long)n, (long long)out_f);
  int st = x ? mbcpu_linear(ctx, x, ldx, w, wdtype, bias, n, in_f, out_f, yf, out_f)
             : mbcpu_linear_bf16(ctx, x_bf16, ldx, w, wdtype, bias, n, in_f, out_f, yf, out_f);
  if (st == MB_OK) mbcpu_rows_to_bf16(yf, out_f, n, out_f, y, ldy);
  free(yf);
  return st;
}

/* mb_linear_add_norm: the two calls (the CUDA backend's split product has this as its reference). */
int mbcpu_linear_add_norm(mb_ctx *ctx, const float *x, const uint16_t *x_bf16, int64_t ldx,
                          const void *w, int wdtype, const float *bias, int64_t n, int64_t in_f,
                          int64_t out_f, float *h_scratch, float *residual, int accumulate,
                          const float *norm_weight, const float *norm_bias, int norm_kind,
                          float eps, float *out, uint16_t *out_bf16) {
  int st = x ? mbcpu_linear(ctx, x, ldx, w, wdtype, bias, n, in_f, out_f, h_scratch, out_f)
             : mbcpu_linear_bf16(ctx, x_bf16, ldx, w, wdtype, bias, n, in_f, out_f, h_scratch,
                                 out_f);
  if (st) return st;
  return mbcpu_add_norm(ctx, h_scratch, residual, accumulate, norm_weight, norm_bias, norm_kind,
                        eps, n, out_f, out, out_bf16);
}
