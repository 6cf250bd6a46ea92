/*
 * f16.c — the CPU side of the scaled fp16 operands (mambabyte.h: mb_to_f16_scaled, mb_linear_f16,
 * mb_add_norm_f16). The CPU model keeps fp32 products; these exist as the reference of the CUDA
 * backend's fp16 tensor-core path: the same power of two (f16.h's rule), the same rounding, and a
 * product of the rounded values widened back to fp32 (exact) through mb_linear's fp32 path.
 */
#include <math.h>
#include <stdlib.h>

#include "cpu_backend.h"
#include "f16.h"

/* Elements below which a pass runs on one thread (the fork/join costs more than it saves). */
#define MB_F16_THR 32768
/* Threads of the largest-magnitude pass: its partial maxima live on the stack. */
#define MB_F16_AMAX_THREADS 64

static int f16_threads(mb_ctx *ctx, int64_t work) {
  return work < MB_F16_THR ? 1 : ctx->num_threads;
}

/* ---- largest magnitude -------------------------------------------------------------------- */

typedef struct {
  const float *x;
  int64_t ldx, rows, cols;
  float part[MB_F16_AMAX_THREADS];
} amax_job;

static void amax_slice(void *raw, int tid, int nt) {
  amax_job *j = (amax_job *)raw;
  int64_t r0, r1;
  mbcpu_range(j->rows, tid, nt, &r0, &r1);
  float m = 0.0f;
  for (int64_t r = r0; r < r1; r++)
    for (int64_t c = 0; c < j->cols; c++) m = fmaxf(m, fabsf(j->x[r * j->ldx + c]));
  j->part[tid] = m;
}

/* max |x| over (rows, cols) at ld ldx, NaN skipped (fmaxf keeps the other operand); a maximum is
 * exact in any order, so the threads change nothing */
static float block_amax(mb_ctx *ctx, const float *x, int64_t ldx, int64_t rows, int64_t cols) {
  amax_job job = {.x = x, .ldx = ldx, .rows = rows, .cols = cols};
  int nt = f16_threads(ctx, rows * cols);
  if (nt > MB_F16_AMAX_THREADS) nt = MB_F16_AMAX_THREADS;
  if (nt > rows) nt = (int)rows;
  mbcpu_parallel(ctx, nt, amax_slice, &job); /* unused slots stay 0 */
  float m = 0.0f;
  for (int t = 0; t < MB_F16_AMAX_THREADS; t++) m = fmaxf(m, job.part[t]);
  return m;
}

int mbcpu_f16_rows_exp(mb_ctx *ctx, const float *x, int64_t ldx, int64_t rows, int64_t cols) {
  return mbcpu_f16_scale_exp(block_amax(ctx, x, ldx, rows, cols));
}

/* ---- conversions -------------------------------------------------------------------------- */

/* Rows of cols values into dense rows: fp32 source scaled by 2^e and rounded to fp16 (into h
 * and/or, widened back, f), or an fp16 source widened (h16 -> f). */
typedef struct {
  const float *src;
  const uint16_t *src16;
  int64_t lds, cols;
  int e;
  uint16_t *h;
  float *f;
  int64_t ldh; /* h's row stride (0: dense) */
} convert_job;

static void convert_rows(void *raw, int64_t i0, int64_t i1) {
  const convert_job *j = (const convert_job *)raw;
  for (int64_t i = i0; i < i1; i++)
    for (int64_t c = 0; c < j->cols; c++) {
      const int64_t s = i * j->lds + c, o = i * (j->ldh ? j->ldh : j->cols) + c;
      /* ldexpf is exact wherever the result is a float normal, so only the fp16 rounding rounds
       * (a result below fp32's normals is fp16's zero either way) */
      const uint16_t v = j->src ? mbcpu_f32_to_f16(ldexpf(j->src[s], j->e)) : j->src16[s];
      if (j->h) j->h[o] = v;
      if (j->f) j->f[o] = mbcpu_f16_to_f32(v);
    }
}

static void convert(mb_ctx *ctx, const convert_job *job, int64_t rows) {
  mbcpu_parallel_for(ctx, f16_threads(ctx, rows * job->cols), rows, convert_rows, (void *)job);
}

void mbcpu_rows_to_f16_scaled(mb_ctx *ctx, const float *x, int64_t ldx, int64_t rows, int64_t cols,
                              int e, uint16_t *out) {
  const convert_job job = {.src = x, .lds = ldx, .cols = cols, .e = e, .h = out};
  convert(ctx, &job, rows);
}

float *mbcpu_widen_f16_rows(const uint16_t *x, int64_t ldx, int64_t rows, int64_t cols, int e) {
  float *f = (float *)malloc((size_t)(rows * cols) * sizeof(float) + 1);
  if (!f) return NULL;
  for (int64_t r = 0; r < rows; r++)
    for (int64_t c = 0; c < cols; c++)
      f[r * cols + c] = ldexpf(mbcpu_f16_to_f32(x[r * ldx + c]), -e);
  return f;
}

int mbcpu_to_f16_scaled(mb_ctx *ctx, const float *x, int64_t ldx, int64_t rows, int64_t cols,
                        uint16_t *out, int32_t *out_exp) {
  const int e = mbcpu_f16_rows_exp(ctx, x, ldx, rows, cols);
  const convert_job job = {.src = x, .lds = ldx, .cols = cols, .e = e, .h = out};
  convert(ctx, &job, rows);
  *out_exp = e;
  return MB_OK;
}

/* ---- product ------------------------------------------------------------------------------ */

typedef struct {
  const float *acc, *bias;
  float scale, *y;
  int64_t out_f, ldy;
  int accumulate;
} scale_job;

static void scale_rows(void *raw, int64_t i0, int64_t i1) {
  const scale_job *j = (const scale_job *)raw;
  for (int64_t i = i0; i < i1; i++)
    for (int64_t o = 0; o < j->out_f; o++) {
      float v = j->acc[i * j->out_f + o] * j->scale; /* exact unless it leaves fp32's range */
      if (j->bias) v += j->bias[o];
      float *yo = j->y + i * j->ldy + o;
      *yo = j->accumulate ? v + *yo : v;
    }
}

/* The product into y with x, w and the sum's rows in xf, wf, acc (dense, allocated). */
static int linear_f16_into(mb_ctx *ctx, const float *x, const uint16_t *x_f16,
                           const int32_t *x_exp, int64_t ldx, const uint16_t *w_f16,
                           const int32_t *w_exp, const float *bias, int64_t n, int64_t in_f,
                           int64_t out_f, float *y, int64_t ldy, int accumulate,
                           uint16_t *y_f16, int32_t *y_exp, float *xf, float *wf, float *acc) {
  int ex;
  if (x) { /* rounded as mb_to_f16_scaled rounds it, by the given exponent when there is one */
    ex = x_exp ? *x_exp : mbcpu_f16_rows_exp(ctx, x, ldx, n, in_f);
    const convert_job jx = {.src = x, .lds = ldx, .cols = in_f, .e = ex, .f = xf};
    convert(ctx, &jx, n);
  } else {
    ex = *x_exp;
    const convert_job jx = {.src16 = x_f16, .lds = ldx, .cols = in_f, .f = xf};
    convert(ctx, &jx, n);
  }
  const convert_job jw = {.src16 = w_f16, .lds = in_f, .cols = in_f, .f = wf};
  convert(ctx, &jw, out_f);
  const int st = mbcpu_linear(ctx, xf, in_f, wf, MB_DTYPE_F32, NULL, n, in_f, out_f, acc, out_f);
  if (st != MB_OK) return st;
  if (y_f16) { /* the sum times 2^-(15 + c), c = ceil(log2(in_f)): below 2^15, rounded to fp16 */
    int c = 0;
    while (((int64_t)1 << c) < in_f) c++;
    const convert_job jy = {.src = acc, .lds = out_f, .cols = out_f, .e = -15 - c, .h = y_f16,
                            .ldh = ldy};
    convert(ctx, &jy, n);
    *y_exp = ex + *w_exp - 15 - c;
    return MB_OK;
  }
  /* 2^-(ex + ew) as one float: inf or 0 where the product leaves fp32's range (as on CUDA); the
   * exponents are the caller's int32s, so their sum is taken wide and clamped for ldexpf */
  int64_t se = -((int64_t)ex + (int64_t)*w_exp);
  se = se < -1000 ? -1000 : se > 1000 ? 1000 : se;
  const scale_job js = {.acc = acc, .bias = bias, .scale = ldexpf(1.0f, (int)se), .y = y,
                        .out_f = out_f, .ldy = ldy, .accumulate = accumulate};
  mbcpu_parallel_for(ctx, f16_threads(ctx, n * out_f), n, scale_rows, (void *)&js);
  return MB_OK;
}

/* Both operands widened to fp32 (exact), their sum by mb_linear's fp32 path, then the scale. */
int mbcpu_linear_f16(mb_ctx *ctx, const float *x, const uint16_t *x_f16, const int32_t *x_exp,
                     int64_t ldx, const uint16_t *w_f16, const int32_t *w_exp, const float *bias,
                     int64_t n, int64_t in_f, int64_t out_f, float *y, int64_t ldy,
                     int accumulate, uint16_t *y_f16, int32_t *y_exp) {
  float *xf = (float *)malloc((size_t)(n * in_f) * sizeof(float));
  float *wf = (float *)malloc((size_t)(out_f * in_f) * sizeof(float));
  float *acc = (float *)malloc((size_t)(n * out_f) * sizeof(float));
  const int st =
      !xf || !wf || !acc
          ? mb_fail(MB_ERR_OOM, "cpu: linear_f16: no memory for the widened operands (%lld x %lld"
                                " and %lld x %lld floats)", (long long)n, (long long)in_f,
                    (long long)out_f, (long long)in_f)
          : linear_f16_into(ctx, x, x_f16, x_exp, ldx, w_f16, w_exp, bias, n, in_f, out_f, y,
                            ldy, accumulate, y_f16, y_exp, xf, wf, acc);
  free(xf);
  free(wf);
  free(acc);
  return st;
}

/* ---- add + norm --------------------------------------------------------------------------- */

/* mb_add_norm itself (its residual and fp32 rows, bit for bit), then the rows scaled by the power
 * of two of the bound sqrt(d) max|weight| + max|bias| and rounded to fp16. */
int mbcpu_add_norm_f16(mb_ctx *ctx, const float *x, float *residual, int accumulate,
                       const float *weight, const float *bias, int norm_kind, float eps, int64_t n,
                       int64_t d, uint16_t *out_f16, int32_t *out_exp, int exp_given) {
  float *o = (float *)malloc((size_t)(n * d) * sizeof(float));
  if (!o) return mb_fail(MB_ERR_OOM, "cpu: add_norm_f16: no memory for %lld x %lld floats",
                         (long long)n, (long long)d);
  int st = mbcpu_add_norm(ctx, x, residual, accumulate, weight, bias, norm_kind, eps, n, d, o,
                          NULL);
  if (st == MB_OK) {
    int e = *out_exp; /* exp_given: an earlier call's, with this weight and bias */
    if (!exp_given) {
      const float wmax = block_amax(ctx, weight, d, 1, d);
      const float bmax = bias ? block_amax(ctx, bias, d, 1, d) : 0.0f;
      e = mbcpu_f16_scale_exp(sqrtf((float)d) * wmax + bmax);
    }
    const convert_job job = {.src = o, .lds = d, .cols = d, .e = e, .h = out_f16};
    convert(ctx, &job, n);
    if (!exp_given) *out_exp = e;
  }
  free(o);
  return st;
}
