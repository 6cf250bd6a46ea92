/*
 * scan.c — mamba_ssm's selective scan on the CPU.
 *
 * Threads over (batch, block of 16 channels). Per position the channel-wise quantities (softplus
 * of delta, delta*u, D skip, SiLU gate) are computed for the 16 channels at once; then, per
 * channel, the n states are updated 16 at a time in one zmm (n = 16 is a single vector):
 *   dA = exp(dt * A[c, :])  (mbv_exp, ~1 ulp),  h = dA * h + (dt * u) * B_t,  y = sum(C_t * h).
 * The scalar path is the plain formula with libm's expf/log1pf.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "cpu_backend.h"
#include "vmath.h"

static void scan_channel_scalar(const float *u, int64_t ldu, const float *delta, int64_t ld_delta,
                                const float *A, const float *Bm, int64_t ldb, const float *Cm,
                                int64_t ldc, const float *Dskip, const float *z, int64_t ldz,
                                float *h, float *states_all, int64_t len, int64_t d, int64_t n,
                                int delta_softplus, float *y, int64_t ldy, int64_t c) {
  /* row pointers are at this sequence's first row; h holds this channel's n states */
  const float *a = A + c * n;
  const float dsk = Dskip ? Dskip[c] : 0.0f;
  for (int64_t t = 0; t < len; t++) {
    const float uu = u[t * ldu + c];
    float dt = delta[t * ld_delta + c];
    if (delta_softplus) dt = mbs_softplus(dt);
    const float du = dt * uu;
    const float *b = Bm + t * ldb, *cm = Cm + t * ldc;
    float acc = 0.0f;
    for (int64_t s = 0; s < n; s++) {
      h[s] = expf(dt * a[s]) * h[s] + du * b[s];
      acc += cm[s] * h[s];
    }
    if (states_all) memcpy(states_all + (t * d + c) * n, h, (size_t)n * 4);
    float yy = acc + dsk * uu;
    if (z) yy *= mbs_silu(z[t * ldz + c]);
    y[t * ldy + c] = yy;
  }
}

#ifdef __AVX512F__
/* channels [c0, c0 + popcount(m)) of one sequence; hb: 16 x npad floats (64-byte aligned) */
static void scan_block_vec(const float *u, int64_t ldu, const float *delta, int64_t ld_delta,
                           const float *A, const float *Bm, int64_t ldb, const float *Cm,
                           int64_t ldc, const float *Dskip, const float *z, int64_t ldz,
                           float *state, float *states_all, int64_t len, int64_t d, int64_t n,
                           int delta_softplus, float *y, int64_t ldy, int64_t c0, __mmask16 m,
                           float *hb, int64_t npad) {
  const int nc = __builtin_popcount(m);
  for (int c = 0; c < nc; c++) {
    if (state)
      memcpy(hb + c * npad, state + (c0 + c) * n, (size_t)n * 4);
    else
      memset(hb + c * npad, 0, (size_t)n * 4);
    memset(hb + c * npad + n, 0, (size_t)(npad - n) * 4);
  }
  const __m512 dv_skip = Dskip ? _mm512_maskz_loadu_ps(m, Dskip + c0) : _mm512_setzero_ps();
  float dts[16] __attribute__((aligned(64)));
  float dus[16] __attribute__((aligned(64)));
  float ys[16] __attribute__((aligned(64)));
  for (int64_t t = 0; t < len; t++) {
    const __m512 uv = _mm512_maskz_loadu_ps(m, u + t * ldu + c0);
    __m512 dt = _mm512_maskz_loadu_ps(m, delta + t * ld_delta + c0);
    if (delta_softplus) dt = mbv_softplus(dt);
    _mm512_store_ps(dts, dt);
    _mm512_store_ps(dus, _mm512_mul_ps(dt, uv));
    const float *b = Bm + t * ldb, *cm = Cm + t * ldc;
    float *sa = states_all ? states_all + (t * d + c0) * n : NULL;
    if (n <= 16) {
      const __mmask16 ms = mbv_mask(n);
      const __m512 bv = _mm512_maskz_loadu_ps(ms, b), cv = _mm512_maskz_loadu_ps(ms, cm);
      for (int c = 0; c < nc; c++) {
        const __m512 av = _mm512_maskz_loadu_ps(ms, A + (c0 + c) * n);
        const __m512 dA = mbv_exp(_mm512_mul_ps(_mm512_set1_ps(dts[c]), av));
        __m512 h = _mm512_load_ps(hb + c * npad);
        h = _mm512_fmadd_ps(dA, h, _mm512_mul_ps(_mm512_set1_ps(dus[c]), bv));
        _mm512_store_ps(hb + c * npad, h);
        if (sa) _mm512_mask_storeu_ps(sa + c * n, ms, h);
        ys[c] = _mm512_reduce_add_ps(_mm512_mul_ps(h, cv));
      }
    } else {
      for (int c = 0; c < nc; c++) {
        const __m512 dtc = _mm512_set1_ps(dts[c]), duc = _mm512_set1_ps(dus[c]);
        __m512 yacc = _mm512_setzero_ps();
        for (int64_t s = 0; s < n; s += 16) {
          const __mmask16 ms = mbv_mask(n - s);
          const __m512 av = _mm512_maskz_loadu_ps(ms, A + (c0 + c) * n + s);
          const __m512 dA = mbv_exp(_mm512_mul_ps(dtc, av));
          __m512 h = _mm512_load_ps(hb + c * npad + s);
          h = _mm512_fmadd_ps(dA, h, _mm512_mul_ps(duc, _mm512_maskz_loadu_ps(ms, b + s)));
          _mm512_store_ps(hb + c * npad + s, h);
          if (sa) _mm512_mask_storeu_ps(sa + c * n + s, ms, h);
          yacc = _mm512_fmadd_ps(h, _mm512_maskz_loadu_ps(ms, cm + s), yacc);
        }
        ys[c] = _mm512_reduce_add_ps(yacc);
      }
    }
    __m512 yv = _mm512_fmadd_ps(dv_skip, uv, _mm512_maskz_load_ps(m, ys));
    if (z) yv = _mm512_mul_ps(yv, mbv_silu(_mm512_maskz_loadu_ps(m, z + t * ldz + c0)));
    _mm512_mask_storeu_ps(y + t * ldy + c0, m, yv);
  }
  if (state)
    for (int c = 0; c < nc; c++) memcpy(state + (c0 + c) * n, hb + c * npad, (size_t)n * 4);
}
#endif

int mbcpu_selective_scan(mb_ctx *ctx, const float *u, int64_t ldu, const float *delta,
                         int64_t ld_delta, const float *A, const float *Bm, int64_t ldb,
                         const float *Cm, int64_t ldc, const float *Dskip, const float *z,
                         int64_t ldz, float *state, float *states_all, int64_t batch, int64_t len,
                         int64_t d, int64_t n, int delta_softplus, float *y, int64_t ldy) {
  const int64_t work = batch * len * d * n;
  const int nt = work < 16384 ? 1 : ctx->num_threads;
  int failed = 0;
#ifdef __AVX512F__
  if (mbcpu_vec(ctx)) {
    const int64_t nblk = (d + 15) / 16, npad = (n + 15) / 16 * 16;
#pragma omp parallel num_threads(nt) if (nt > 1) reduction(| : failed)
    {
      float *hb = (float *)aligned_alloc(64, (size_t)(16 * npad) * 4);
      if (!hb) failed = 1;
#pragma omp for schedule(static)
      for (int64_t task = 0; task < batch * nblk; task++) {
        if (!hb) continue;
        const int64_t b = task / nblk, c0 = (task % nblk) * 16, r = b * len;
        scan_block_vec(u + r * ldu, ldu, delta + r * ld_delta, ld_delta, A, Bm + r * ldb, ldb,
                       Cm + r * ldc, ldc, Dskip, z ? z + r * ldz : NULL, ldz,
                       state ? state + b * d * n : NULL,
                       states_all ? states_all + r * d * n : NULL, len, d, n, delta_softplus,
                       y + r * ldy, ldy, c0, mbv_mask(d - c0), hb, npad);
      }
      free(hb);
    }
    if (failed) return mb_fail(MB_ERR_OOM, "mb_selective_scan: out of memory (state buffer)");
    return MB_OK;
  }
#endif
#pragma omp parallel num_threads(nt) if (nt > 1) reduction(| : failed)
  {
    float *h = (float *)malloc((size_t)n * 4);
    if (!h) failed = 1;
#pragma omp for schedule(static)
    for (int64_t task = 0; task < batch * d; task++) {
      if (!h) continue;
      const int64_t b = task / d, c = task % d, r = b * len;
      float *st = state ? state + (b * d + c) * n : NULL;
      if (st)
        memcpy(h, st, (size_t)n * 4);
      else
        memset(h, 0, (size_t)n * 4);
      scan_channel_scalar(u + r * ldu, ldu, delta + r * ld_delta, ld_delta, A, Bm + r * ldb, ldb,
                          Cm + r * ldc, ldc, Dskip, z ? z + r * ldz : NULL, ldz, h,
                          states_all ? states_all + r * d * n : NULL, len, d, n, delta_softplus,
                          y + r * ldy, ldy, c);
      if (st) memcpy(st, h, (size_t)n * 4);
    }
    free(h);
  }
  if (failed) return mb_fail(MB_ERR_OOM, "mb_selective_scan: out of memory (state buffer)");
  return MB_OK;
}

/* The fused decoding op's CPU twin: literally mb_linear (dt_proj) then the state update, so the
 * CUDA kernel is held equal to the unfused pair. */
int mbcpu_selective_state_update_dt(mb_ctx *ctx, const float *u, int64_t ldu, const float *x_dbl,
                                    int64_t ld_xdbl, const void *dt_w, int wdtype,
                                    const float *dt_bias, int64_t dt_rank, const float *A,
                                    const float *Bm, int64_t ldb, const float *Cm, int64_t ldc,
                                    const float *Dskip, const float *z, int64_t ldz, float *state,
                                    int64_t batch, int64_t d, int64_t n, int delta_softplus,
                                    float *delta_out, float *y, int64_t ldy) {
  float *delta = delta_out;
  if (!delta) {
    delta = (float *)malloc((size_t)(batch * d) * sizeof(float));
    if (!delta) return mb_fail(MB_ERR_OOM, "mb_selective_state_update_dt: out of memory (delta)");
  }
  int st = mbcpu_linear(ctx, x_dbl, ld_xdbl, dt_w, wdtype, dt_bias, batch, dt_rank, d, delta, d);
  if (st == MB_OK)
    st = mbcpu_selective_scan(ctx, u, ldu, delta, d, A, Bm, ldb, Cm, ldc, Dskip, z, ldz, state,
                              NULL, batch, 1, d, n, delta_softplus, y, ldy);
  if (delta != delta_out) free(delta);
  return st;
}

/* The fused in_proj + conv step's CPU twin: mb_linear then mb_causal_conv1d (len 1). */
int mbcpu_linear_conv1d_step(mb_ctx *ctx, const float *x, int64_t ldx, const void *w,
                             int wdtype, const float *bias, int64_t n, int64_t in_f, int64_t out_f,
                             float *y, int64_t ldy, const float *conv_w, const float *conv_bias,
                             float *conv_state, int64_t d_conv, int64_t k, float *xc, int64_t ldo) {
  int st = mbcpu_linear(ctx, x, ldx, w, wdtype, bias, n, in_f, out_f, y, ldy);
  if (st != MB_OK || d_conv == 0) return st;
  return mbcpu_causal_conv1d(ctx, y, ldy, conv_w, conv_bias, conv_state, n, 1, d_conv, k, xc, ldo,
                             NULL);
}
