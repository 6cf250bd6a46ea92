/*
 * discrete_a.c — discrete-A of a layer, E[t, c, s] = exp(softplus(delta[t, c]) * A[c, s]), reduced
 * as it is made (mb_discrete_a), and its cosine similarity with the input (mb_discrete_a_input_sim).
 *
 * E is produced one row E[t, c, :] at a time (the n states of a channel: one zmm for n <= 16) and
 * folded straight into the reduction, so the (len, d, n) tensor is written only when it is asked
 * for (MB_REDUCE_NONE). Threads: over positions for everything computed per position (NONE, dims
 * 1 and 2, FRO, NUC, dim -1's partial sums, input similarity); over channels for dim 0, where each
 * thread owns its channels' accumulators across all positions, so no partials are merged.
 *
 * Precision: E is float32 (the vector exp is ~1 ulp, vmath.h; the scalar path uses libm). Every sum
 * (mean, norm, fro, dim -1, the dot products and norms of the similarity) accumulates in float64;
 * NUC accumulates the Gram matrix E[t]^T E[t] in float64 (a product of two floats is exact there),
 * then takes its eigenvalues by cyclic Jacobi in float64: the square roots of the eigenvalues are
 * the singular values. The Gram matrix must be this accurate: an error e * ||G|| in G moves a small
 * singular value by up to sqrt(e) * sigma_max, so float32 accumulation (e ~ 1e-7) would give
 * errors of ~3e-4; float64 (e ~ 1e-13 for d = 3584) keeps them below ~1e-6.
 *
 * The vector (AVX-512) path handles n <= 64 (up to four zmm per row); larger n runs the scalar
 * path. Built for AVX2 without AVX-512, the scalar path's reductions take their rows of E and the
 * softplus from the 8-lane exp (mbv8_exp, the same values as mbv_exp), fro and dim -1's sums
 * accumulate in 4-lane float64 vectors, and so do NUC's Gram rows. Where AVX2 exists (both vector
 * builds), NUC runs the Jacobi sweeps of 4 positions at once, a lane each (nuclear_from_gram4: the
 * same bits as one at a time; each matrix's sweeps are a chain of divisions and square roots).
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "cpu_backend.h"
#include "vmath.h"

#define DA_VEC_NMAX 64

typedef struct {
  const float *delta;
  int64_t ld;
  const float *A;
  const float *x; /* input similarity */
  int64_t ldx;
  float eps;
  int64_t len, d, n;
  int red, dim;
  int64_t pos0;
  double *acc;
  float *out;
  int64_t *idx;
  int vec;
  char *scratch; /* per thread: `per_thread` bytes, 64-byte aligned */
  size_t per_thread;
  /* dim -1: one partial per thread */
  double *psum;
  float *pval;
  int *phas;
} da_job;

static inline size_t al64(size_t b) { return (b + 63) & ~(size_t)63; }

/* A thread's scratch: the softplus row (d floats), a row of E (n floats), two float64
 * accumulators (n each), running values (n floats) and indices (n int64), and the Gram matrix
 * (n * n float64, NUC only). */
typedef struct {
  float *sp, *e, *bval;
  double *dsum, *dsq, *gram;
  int64_t *bidx;
  int defer_nuc; /* NUC: leave the Gram matrix in gram, the caller takes its norm */
} da_tls;

/* NUC's matrices: MB_NUC_LANES Gram matrices, then as many interleaved for nuclear_from_gram4 */
#define MB_NUC_LANES 4

static size_t tls_bytes(int64_t d, int64_t n, int nuc) {
  return al64((size_t)d * 4) + al64((size_t)n * 4) * 2 + al64((size_t)n * 8) * 3 +
         (nuc ? al64((size_t)(2 * MB_NUC_LANES * n * n) * 8) : 0);
}

static da_tls tls_of(const da_job *j, int tid) {
  char *p = j->scratch + (size_t)tid * j->per_thread;
  da_tls t;
  t.sp = (float *)p;
  p += al64((size_t)j->d * 4);
  t.e = (float *)p;
  p += al64((size_t)j->n * 4);
  t.bval = (float *)p;
  p += al64((size_t)j->n * 4);
  t.dsum = (double *)p;
  p += al64((size_t)j->n * 8);
  t.dsq = (double *)p;
  p += al64((size_t)j->n * 8);
  t.bidx = (int64_t *)p;
  p += al64((size_t)j->n * 8);
  t.gram = j->red == MB_REDUCE_NUC ? (double *)p : NULL;
  t.defer_nuc = 0;
  return t;
}

/* Does x replace the running best b? min: x < b, max: x > b; a NaN replaces a number and is never
 * replaced (torch propagates NaN); ties keep the earlier one. */
static inline int better(int is_max, float x, float b) {
  if (b != b) return 0;
  if (x != x) return 1;
  return is_max ? x > b : x < b;
}

static void softplus_row(int vec, const float *in, int64_t n, float *out) {
  int64_t k = 0;
#ifdef __AVX512F__
  if (vec)
    for (; k < n; k += 16) {
      const __mmask16 m = mbv_mask(n - k);
      _mm512_mask_storeu_ps(out + k, m, mbv_softplus(_mm512_maskz_loadu_ps(m, in + k)));
    }
#elif MB_AVX2
  if (vec) {
    for (; k + 32 <= n; k += 32) { /* four vectors side by side (mbv8_softplus4) */
      __m256 v[4];
      for (int g = 0; g < 4; g++) v[g] = _mm256_loadu_ps(in + k + 8 * g);
      mbv8_softplus4(v, v);
      for (int g = 0; g < 4; g++) _mm256_storeu_ps(out + k + 8 * g, v[g]);
    }
    for (; k < n; k += 8) {
      const int c = n - k < 8 ? (int)(n - k) : 8;
      mbv8_store_part(out + k, mbv8_softplus(mbv8_load_part(in + k, c)), c);
    }
  }
#endif
  for (; k < n; k++) out[k] = mbs_softplus(in[k]);
}

/* ---- NUC: eigenvalues of the Gram matrix ------------------------------------------------------ */

/* The Jacobi rotations without fused multiply-adds, so that with gcc the 4-lane form and the
 * one-matrix form give the same bits in every build (gcc contracts a * b - c * d under -std=gnu11,
 * CMake's default; csrc/tests/nuc4_check.c compares them). */
#if defined(__GNUC__) && !defined(__clang__)
#define MB_NO_CONTRACT __attribute__((optimize("fp-contract=off")))
#else
#define MB_NO_CONTRACT
#endif

/*
 * Sum of the square roots of the eigenvalues of the symmetric positive semidefinite n x n matrix a
 * (overwritten): the nuclear norm of a matrix whose Gram matrix it is. Cyclic Jacobi with
 * Rutishauser's rotation; an off-diagonal entry is rotated away while it exceeds 1e-17 of the trace
 * (far below float64's own rounding of the Gram matrix), and the sweeps stop when none does
 * (quadratic convergence: 5-8 sweeps for n = 16). Eigenvalues that rounding pushed below zero count
 * as 0. A non-finite trace (a NaN or an infinity in the matrix) is returned as it is.
 */
MB_NO_CONTRACT static double nuclear_from_gram(double *a, int64_t n) {
  double tr = 0.0;
  for (int64_t i = 0; i < n; i++) tr += a[i * n + i];
  if (!isfinite(tr)) return tr;
  if (tr <= 0.0) return 0.0;
  const double tiny = 1e-17 * tr;
  for (int sweep = 0; sweep < 100; sweep++) {
    int rotated = 0;
    for (int64_t p = 0; p < n - 1; p++)
      for (int64_t q = p + 1; q < n; q++) {
        const double apq = a[p * n + q];
        if (fabs(apq) <= tiny) continue;
        rotated = 1;
        const double app = a[p * n + p], aqq = a[q * n + q];
        const double theta = (aqq - app) / (2.0 * apq);
        const double t = fabs(theta) > 1e150
                             ? 0.5 / theta
                             : (theta >= 0 ? 1.0 : -1.0) / (fabs(theta) + sqrt(theta * theta + 1.0));
        const double c = 1.0 / sqrt(t * t + 1.0), s = t * c;
        for (int64_t k = 0; k < n; k++) {
          if (k == p || k == q) continue;
          const double akp = a[k * n + p], akq = a[k * n + q];
          a[k * n + p] = a[p * n + k] = c * akp - s * akq;
          a[k * n + q] = a[q * n + k] = s * akp + c * akq;
        }
        a[p * n + p] = app - t * apq;
        a[q * n + q] = aqq + t * apq;
        a[p * n + q] = a[q * n + p] = 0.0;
      }
    if (!rotated) break;
  }
  double s = 0.0;
  for (int64_t i = 0; i < n; i++) s += sqrt(fmax(a[i * n + i], 0.0));
  return s;
}

#if defined(__AVX2__) && defined(__FMA__)
/*
 * nuclear_from_gram for up to 4 matrices at once (a[l], l < cnt; out[l]), a lane each: the same
 * rotations in the same order, their divisions and square roots 4 at a time (one matrix's Jacobi is
 * a chain of them, ~100 cycles a rotation). A rotation that a lane's test skips is applied there as
 * a blend that keeps the old values, and a lane stops rotating when its sweep rotated nothing, so
 * every lane computes what nuclear_from_gram computes for its matrix. w: 4 n^2 doubles.
 */
MB_NO_CONTRACT static void nuclear_from_gram4(double *const *a, int cnt, int64_t n, double *w,
                                             double *out) {
  double trs[4] = {0, 0, 0, 0};
  int live[4] = {0, 0, 0, 0};
  for (int l = 0; l < cnt; l++) {
    for (int64_t i = 0; i < n; i++) trs[l] += a[l][i * n + i];
    if (!isfinite(trs[l]))
      out[l] = trs[l];
    else if (trs[l] <= 0.0)
      out[l] = 0.0;
    else
      live[l] = 1;
  }
  for (int64_t i = 0; i < n * n; i++)
    for (int l = 0; l < 4; l++) w[i * 4 + l] = live[l] ? a[l][i] : 0.0;
  const __m256d tiny = _mm256_mul_pd(_mm256_set1_pd(1e-17), _mm256_loadu_pd(trs));
  const __m256d absmask = _mm256_castsi256_pd(_mm256_set1_epi64x(0x7fffffffffffffffLL));
  const __m256d one = _mm256_set1_pd(1.0), zero = _mm256_setzero_pd();
  __m256d on = _mm256_castsi256_pd(
      _mm256_sub_epi64(_mm256_setzero_si256(), _mm256_setr_epi64x(live[0], live[1], live[2],
                                                                   live[3])));
#define MB_W(i, k) (w + ((i) * n + (k)) * 4)
  for (int sweep = 0; sweep < 100 && _mm256_movemask_pd(on); sweep++) {
    __m256d rotated = zero;
    for (int64_t p = 0; p < n - 1; p++)
      for (int64_t q = p + 1; q < n; q++) {
        const __m256d apq = _mm256_load_pd(MB_W(p, q));
        /* rotated unless |apq| <= tiny, as nuclear_from_gram (a NaN rotates) */
        const __m256d m =
            _mm256_and_pd(on, _mm256_cmp_pd(_mm256_and_pd(apq, absmask), tiny, _CMP_NLE_UQ));
        if (!_mm256_movemask_pd(m)) continue;
        rotated = _mm256_or_pd(rotated, m);
        const __m256d app = _mm256_load_pd(MB_W(p, p)), aqq = _mm256_load_pd(MB_W(q, q));
        const __m256d theta =
            _mm256_div_pd(_mm256_sub_pd(aqq, app), _mm256_mul_pd(_mm256_set1_pd(2.0), apq));
        const __m256d ath = _mm256_and_pd(theta, absmask);
        const __m256d sgn = _mm256_blendv_pd(_mm256_set1_pd(-1.0), one,
                                             _mm256_cmp_pd(theta, zero, _CMP_GE_OQ));
        const __m256d t_near = _mm256_div_pd(
            sgn, _mm256_add_pd(ath, _mm256_sqrt_pd(_mm256_add_pd(_mm256_mul_pd(theta, theta), one))));
        const __m256d t = _mm256_blendv_pd(t_near, _mm256_div_pd(_mm256_set1_pd(0.5), theta),
                                           _mm256_cmp_pd(ath, _mm256_set1_pd(1e150), _CMP_GT_OQ));
        const __m256d c = _mm256_div_pd(one, _mm256_sqrt_pd(_mm256_add_pd(_mm256_mul_pd(t, t), one)));
        const __m256d s = _mm256_mul_pd(t, c);
        for (int64_t k = 0; k < n; k++) {
          if (k == p || k == q) continue;
          const __m256d akp = _mm256_load_pd(MB_W(k, p)), akq = _mm256_load_pd(MB_W(k, q));
          const __m256d np = _mm256_blendv_pd(
              akp, _mm256_sub_pd(_mm256_mul_pd(c, akp), _mm256_mul_pd(s, akq)), m);
          const __m256d nq = _mm256_blendv_pd(
              akq, _mm256_add_pd(_mm256_mul_pd(s, akp), _mm256_mul_pd(c, akq)), m);
          _mm256_store_pd(MB_W(k, p), np);
          _mm256_store_pd(MB_W(p, k), np);
          _mm256_store_pd(MB_W(k, q), nq);
          _mm256_store_pd(MB_W(q, k), nq);
        }
        const __m256d tapq = _mm256_mul_pd(t, apq);
        _mm256_store_pd(MB_W(p, p), _mm256_blendv_pd(app, _mm256_sub_pd(app, tapq), m));
        _mm256_store_pd(MB_W(q, q), _mm256_blendv_pd(aqq, _mm256_add_pd(aqq, tapq), m));
        const __m256d z = _mm256_blendv_pd(apq, zero, m);
        _mm256_store_pd(MB_W(p, q), z);
        _mm256_store_pd(MB_W(q, p), z);
      }
    on = _mm256_and_pd(on, rotated);
  }
  for (int l = 0; l < cnt; l++) {
    if (!live[l]) continue;
    double sum = 0.0;
    for (int64_t i = 0; i < n; i++) sum += sqrt(fmax(MB_W(i, i)[l], 0.0));
    out[l] = sum;
  }
#undef MB_W
}
#endif

/* ---- AVX-512 helpers -------------------------------------------------------------------------- */
#ifdef __AVX512F__
/* E[t, c, s .. s+15] (lanes outside m hold exp(0) = 1: mask them in the reductions) */
static inline __m512 vrow(float dt, const float *a, int64_t s, __mmask16 m) {
  return mbv_exp(_mm512_mul_ps(_mm512_set1_ps(dt), _mm512_maskz_loadu_ps(m, a + s)));
}
static inline __m512d lo_pd(__m512 v) { return _mm512_cvtps_pd(_mm512_castps512_ps256(v)); }
static inline __m512d hi_pd(__m512 v) {
  return _mm512_cvtps_pd(_mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(v), 1)));
}
/* lanes where x replaces b (see better()) */
static inline __mmask16 vbetter(int is_max, __m512 x, __m512 b) {
  const __mmask16 bnan = _mm512_cmp_ps_mask(b, b, _CMP_UNORD_Q);
  const __mmask16 xnan = _mm512_cmp_ps_mask(x, x, _CMP_UNORD_Q);
  const __mmask16 c =
      is_max ? _mm512_cmp_ps_mask(x, b, _CMP_GT_OQ) : _mm512_cmp_ps_mask(x, b, _CMP_LT_OQ);
  return (__mmask16)((c | xnan) & ~bnan);
}
/* min or max of the lanes in m, and the first lane holding it (a NaN lane first) */
static inline float vbest_lane(int is_max, __m512 e, __mmask16 m, int *lane) {
  const __mmask16 nan = _mm512_cmp_ps_mask(e, e, _CMP_UNORD_Q) & m;
  if (nan) {
    *lane = __builtin_ctz(nan);
    return NAN;
  }
  const __m512 v = _mm512_mask_blend_ps(m, _mm512_set1_ps(is_max ? -INFINITY : INFINITY), e);
  const float b = is_max ? _mm512_reduce_max_ps(v) : _mm512_reduce_min_ps(v);
  *lane = __builtin_ctz(_mm512_cmp_ps_mask(v, _mm512_set1_ps(b), _CMP_EQ_OQ) & m);
  return b;
}
#endif

#if MB_AVX2
/* v's 8 values (squared when sq) added into two float64 accumulators of 4 lanes */
static inline void sum8_add(__m256 v, int sq, __m256d *lo, __m256d *hi) {
  const __m256d a = _mm256_cvtps_pd(_mm256_castps256_ps128(v));
  const __m256d b = _mm256_cvtps_pd(_mm256_extractf128_ps(v, 1));
  *lo = sq ? _mm256_fmadd_pd(a, a, *lo) : _mm256_add_pd(*lo, a);
  *hi = sq ? _mm256_fmadd_pd(b, b, *hi) : _mm256_add_pd(*hi, b);
}

/* E[t, c, s .. s+k) in 8 lanes, k <= 8 (lanes past k: 0) */
static inline __m256 vrow8(float dt, const float *a, int64_t s, int k) {
  const __m256 e = mbv8_exp(_mm256_mul_ps(_mm256_set1_ps(dt), mbv8_load_part(a + s, k)));
  return k < 8 ? _mm256_and_ps(e, mbv8_lanes(k)) : e;
}
#endif

/* E[t, c, :] = exp(dt * a[:]) for one channel into e (n floats): the vector exp where the vector
 * path runs, so every mode of a context computes the same E. */
static void row_e(int vec, float dt, const float *a, int64_t n, float *e) {
#ifdef __AVX512F__
  if (vec && n <= DA_VEC_NMAX) {
    for (int64_t s = 0; s < n; s += 16) {
      const __mmask16 m = mbv_mask(n - s);
      _mm512_mask_storeu_ps(e + s, m, vrow(dt, a, s, m));
    }
    return;
  }
#elif MB_AVX2
  if (vec) {
    for (int64_t s = 0; s < n; s += 8) {
      const int c = n - s < 8 ? (int)(n - s) : 8;
      mbv8_store_part(e + s, vrow8(dt, a, s, c), c);
    }
    return;
  }
#endif
  (void)vec;
  for (int64_t s = 0; s < n; s++) e[s] = expf(dt * a[s]);
}

/* ---- per position ----------------------------------------------------------------------------- */

/* One position t of a per-position reduction (or of dim -1's partial: *psum, *pval, *phas). */
static void da_position(const da_job *j, const da_tls *w, int64_t t, double *psum, float *pval,
                        int *phas) {
  const int64_t d = j->d, n = j->n;
  const float *A = j->A;
  const int red = j->red, dim = j->dim;
  const int is_max = red == MB_REDUCE_MAX;
  const int minmax = red == MB_REDUCE_MIN || red == MB_REDUCE_MAX;
  const int sq = red == MB_REDUCE_NORM || red == MB_REDUCE_FRO; /* sums of squares */
  float *sp = w->sp;
  softplus_row(j->vec, j->delta + t * j->ld, d, sp);
  const int per_dim = red >= MB_REDUCE_MEAN && red <= MB_REDUCE_NORM;
  const int all = per_dim && dim == -1;
#ifdef __AVX512F__
  if (j->vec && n <= DA_VEC_NMAX) {
    const int nv = (int)((n + 15) / 16);
    if (red == MB_REDUCE_NONE) {
      float *o = j->out + t * d * n;
      for (int64_t c = 0; c < d; c++)
        for (int v = 0; v < nv; v++) {
          const __mmask16 m = mbv_mask(n - 16 * v);
          _mm512_mask_storeu_ps(o + c * n + 16 * v, m, vrow(sp[c], A + c * n, 16 * v, m));
        }
      return;
    }
    if (red == MB_REDUCE_FRO || (all && !minmax)) {
      __m512d s0 = _mm512_setzero_pd(), s1 = _mm512_setzero_pd();
      for (int64_t c = 0; c < d; c++)
        for (int v = 0; v < nv; v++) {
          const __mmask16 m = mbv_mask(n - 16 * v);
          const __m512 e = _mm512_maskz_mov_ps(m, vrow(sp[c], A + c * n, 16 * v, m));
          const __m512d lo = lo_pd(e), hi = hi_pd(e);
          s0 = sq ? _mm512_fmadd_pd(lo, lo, s0) : _mm512_add_pd(s0, lo);
          s1 = sq ? _mm512_fmadd_pd(hi, hi, s1) : _mm512_add_pd(s1, hi);
        }
      const double s = _mm512_reduce_add_pd(_mm512_add_pd(s0, s1));
      if (all)
        *psum += s;
      else
        j->out[t] = (float)sqrt(s);
      return;
    }
    if (all) { /* min / max of everything: one running vector */
      const __m512 fill = _mm512_set1_ps(is_max ? -INFINITY : INFINITY);
      __m512 b = fill;
      for (int64_t c = 0; c < d; c++)
        for (int v = 0; v < nv; v++) {
          const __mmask16 m = mbv_mask(n - 16 * v);
          const __m512 e = vrow(sp[c], A + c * n, 16 * v, m);
          b = _mm512_mask_mov_ps(b, vbetter(is_max, e, b) & m, e);
        }
      int lane;
      const float r = vbest_lane(is_max, b, 0xFFFF, &lane);
      if (!*phas || better(is_max, r, *pval)) *pval = r;
      *phas = 1;
      return;
    }
    if (red == MB_REDUCE_NUC && n <= 16) {
      /* upper triangle of the Gram matrix in 24 zmm of float64: rows 0-7 need columns 0-15
       * (two zmm), rows 8-15 columns 8-15 (one) */
      __m512d g[24];
      for (int k = 0; k < 24; k++) g[k] = _mm512_setzero_pd();
      double ed[16] __attribute__((aligned(64)));
      const __mmask16 m = mbv_mask(n);
      for (int64_t c = 0; c < d; c++) {
        const __m512 e = _mm512_maskz_mov_ps(m, vrow(sp[c], A + c * n, 0, m));
        const __m512d lo = lo_pd(e), hi = hi_pd(e);
        _mm512_store_pd(ed, lo);
        _mm512_store_pd(ed + 8, hi);
        for (int i = 0; i < 8; i++) {
          const __m512d b = _mm512_set1_pd(ed[i]);
          g[2 * i] = _mm512_fmadd_pd(b, lo, g[2 * i]);
          g[2 * i + 1] = _mm512_fmadd_pd(b, hi, g[2 * i + 1]);
        }
        for (int i = 8; i < 16; i++) g[8 + i] = _mm512_fmadd_pd(_mm512_set1_pd(ed[i]), hi, g[8 + i]);
      }
      double full[16 * 16] __attribute__((aligned(64)));
      for (int i = 0; i < 8; i++) {
        _mm512_store_pd(full + i * 16, g[2 * i]);
        _mm512_store_pd(full + i * 16 + 8, g[2 * i + 1]);
      }
      for (int i = 8; i < 16; i++) _mm512_store_pd(full + i * 16 + 8, g[8 + i]);
      double *G = w->gram;
      for (int64_t i = 0; i < n; i++)
        for (int64_t k = i; k < n; k++) G[i * n + k] = G[k * n + i] = full[i * 16 + k];
      if (!w->defer_nuc) j->out[t] = (float)nuclear_from_gram(G, n);
      return;
    }
    if (per_dim && dim == 2) { /* over the n states of each channel: out (len, d) */
      for (int64_t c = 0; c < d; c++) {
        if (minmax) {
          float best = 0.0f;
          int64_t bi = 0;
          for (int v = 0; v < nv; v++) {
            const __mmask16 m = mbv_mask(n - 16 * v);
            int lane;
            const float r = vbest_lane(is_max, vrow(sp[c], A + c * n, 16 * v, m), m, &lane);
            if (v == 0 || better(is_max, r, best)) best = r, bi = 16 * v + lane;
          }
          j->out[t * d + c] = best;
          if (j->idx) j->idx[t * d + c] = bi;
        } else {
          __m512d s0 = _mm512_setzero_pd(), s1 = _mm512_setzero_pd();
          for (int v = 0; v < nv; v++) {
            const __mmask16 m = mbv_mask(n - 16 * v);
            const __m512 e = _mm512_maskz_mov_ps(m, vrow(sp[c], A + c * n, 16 * v, m));
            const __m512d lo = lo_pd(e), hi = hi_pd(e);
            s0 = sq ? _mm512_fmadd_pd(lo, lo, s0) : _mm512_add_pd(s0, lo);
            s1 = sq ? _mm512_fmadd_pd(hi, hi, s1) : _mm512_add_pd(s1, hi);
          }
          const double s = _mm512_reduce_add_pd(_mm512_add_pd(s0, s1));
          j->out[t * d + c] = (float)(sq ? sqrt(s) : s / (double)n);
        }
      }
      return;
    }
    if (per_dim && dim == 1) { /* over the d channels: out (len, n) */
      __m512d s0[4], s1[4];
      __m512 bv[4];
      __m512i bi[4];
      for (int v = 0; v < 4; v++) {
        s0[v] = s1[v] = _mm512_setzero_pd();
        bv[v] = _mm512_setzero_ps();
        bi[v] = _mm512_setzero_si512();
      }
      for (int64_t c = 0; c < d; c++)
        for (int v = 0; v < nv; v++) {
          const __mmask16 m = mbv_mask(n - 16 * v);
          const __m512 e = vrow(sp[c], A + c * n, 16 * v, m);
          if (minmax) {
            if (c == 0) {
              bv[v] = e;
            } else {
              const __mmask16 k = vbetter(is_max, e, bv[v]);
              bv[v] = _mm512_mask_mov_ps(bv[v], k, e);
              bi[v] = _mm512_mask_mov_epi32(bi[v], k, _mm512_set1_epi32((int)c));
            }
          } else {
            const __m512d lo = lo_pd(e), hi = hi_pd(e);
            s0[v] = sq ? _mm512_fmadd_pd(lo, lo, s0[v]) : _mm512_add_pd(s0[v], lo);
            s1[v] = sq ? _mm512_fmadd_pd(hi, hi, s1[v]) : _mm512_add_pd(s1[v], hi);
          }
        }
      float *o = j->out + t * n;
      for (int v = 0; v < nv; v++) {
        const int64_t s = 16 * v, cnt = n - s < 16 ? n - s : 16;
        if (minmax) {
          _mm512_mask_storeu_ps(o + s, mbv_mask(cnt), bv[v]);
          if (j->idx) {
            int32_t ix[16] __attribute__((aligned(64)));
            _mm512_store_si512(ix, bi[v]);
            for (int64_t k = 0; k < cnt; k++) j->idx[t * n + s + k] = ix[k];
          }
        } else {
          double sums[16] __attribute__((aligned(64)));
          _mm512_store_pd(sums, s0[v]);
          _mm512_store_pd(sums + 8, s1[v]);
          for (int64_t k = 0; k < cnt; k++)
            o[s + k] = (float)(sq ? sqrt(sums[k]) : sums[k] / (double)d);
        }
      }
      return;
    }
    /* NUC with 16 < n <= 64: the scalar Gram below, rows from the vector exp */
  }
#endif
  /* ---- scalar path (and NUC with n > 16) ---- */
  float *e = w->e;
  double *dsum = w->dsum, *G = w->gram;
  float *bval = w->bval;
  int64_t *bidx = w->bidx;
  double s_all = 0.0;
  float b_all = 0.0f;
  int has_all = 0;
  if (G) memset(G, 0, (size_t)(n * n) * sizeof(double));
  if (per_dim && dim == 1)
    for (int64_t s = 0; s < n; s++) dsum[s] = 0.0;
#if MB_AVX2
  /* the whole-position sums in float64 lanes (one scalar chain of float64 adds took ~4 cycles a
   * value, most of the extraction's time), merged into s_all at the end */
  const int sum8 = j->vec && (red == MB_REDUCE_FRO || (all && !minmax));
  __m256d v_lo = _mm256_setzero_pd(), v_hi = _mm256_setzero_pd();
  int64_t c_first = 0;
  if (sum8 && n == 16) /* two channels a turn, their four exps together (mbv8_exp4); the same
                        * sums in the same order, and a quarter fewer of da_position's samples in
                        * tiny's fro extraction */
    for (; c_first + 2 <= d; c_first += 2) {
      __m256 x[4], v[4];
      for (int g = 0; g < 4; g++)
        x[g] = _mm256_mul_ps(_mm256_set1_ps(sp[c_first + g / 2]),
                             _mm256_loadu_ps(A + (c_first + g / 2) * 16 + (g % 2) * 8));
      mbv8_exp4(x, v);
      for (int g = 0; g < 4; g++) sum8_add(v[g], sq, &v_lo, &v_hi);
    }
#else
  const int64_t c_first = 0;
#endif
  for (int64_t c = c_first; c < d; c++) {
#if MB_AVX2
    if (sum8) { /* row_e's values, straight from the registers */
      for (int64_t s = 0; s < n; s += 8) {
        sum8_add(vrow8(sp[c], A + c * n, s, n - s < 8 ? (int)(n - s) : 8), sq, &v_lo, &v_hi);
      }
      continue;
    }
#endif
    row_e(j->vec, sp[c], A + c * n, n, e);
    if (red == MB_REDUCE_NONE) {
      memcpy(j->out + (t * d + c) * n, e, (size_t)n * 4);
    } else if (red == MB_REDUCE_NUC) {
#if MB_AVX2
      if (j->vec && n <= DA_VEC_NMAX) { /* whole rows, 4 float64 lanes: the same sums (a product
                                         * of two floats is exact in float64) */
        double ed[DA_VEC_NMAX + 4] __attribute__((aligned(32)));
        for (int64_t k = 0; k < n; k++) ed[k] = e[k];
        const int64_t n4 = n / 4 * 4;
        for (int64_t i = 0; i < n; i++) {
          const __m256d b = _mm256_set1_pd(ed[i]);
          double *gi = G + i * n;
          for (int64_t k = 0; k < n4; k += 4)
            _mm256_storeu_pd(gi + k, _mm256_fmadd_pd(b, _mm256_load_pd(ed + k),
                                                     _mm256_loadu_pd(gi + k)));
          for (int64_t k = n4; k < n; k++) gi[k] += ed[i] * ed[k];
        }
        continue;
      }
#endif
      for (int64_t i = 0; i < n; i++) {
        const double ei = e[i];
        for (int64_t k = i; k < n; k++) G[i * n + k] += ei * (double)e[k];
      }
    } else if (red == MB_REDUCE_FRO || (all && !minmax)) {
      for (int64_t s = 0; s < n; s++) s_all += sq ? (double)e[s] * e[s] : (double)e[s];
    } else if (all) {
      for (int64_t s = 0; s < n; s++)
        if (!has_all || better(is_max, e[s], b_all)) b_all = e[s], has_all = 1;
    } else if (dim == 2) {
      if (minmax) {
        float b = e[0];
        int64_t bi = 0;
        for (int64_t s = 1; s < n; s++)
          if (better(is_max, e[s], b)) b = e[s], bi = s;
        j->out[t * d + c] = b;
        if (j->idx) j->idx[t * d + c] = bi;
      } else {
        double s2 = 0.0;
        for (int64_t s = 0; s < n; s++) s2 += sq ? (double)e[s] * e[s] : (double)e[s];
        j->out[t * d + c] = (float)(sq ? sqrt(s2) : s2 / (double)n);
      }
    } else { /* dim 1 */
      if (minmax) {
        for (int64_t s = 0; s < n; s++)
          if (c == 0 || better(is_max, e[s], bval[s])) bval[s] = e[s], bidx[s] = c;
      } else {
        for (int64_t s = 0; s < n; s++) dsum[s] += sq ? (double)e[s] * e[s] : (double)e[s];
      }
    }
  }
#if MB_AVX2
  if (sum8) {
    double l[4];
    _mm256_storeu_pd(l, _mm256_add_pd(v_lo, v_hi));
    s_all += (l[0] + l[1]) + (l[2] + l[3]);
  }
#endif
  if (red == MB_REDUCE_NUC) {
    for (int64_t i = 0; i < n; i++)
      for (int64_t k = 0; k < i; k++) G[i * n + k] = G[k * n + i];
    if (!w->defer_nuc) j->out[t] = (float)nuclear_from_gram(G, n);
  } else if (red == MB_REDUCE_FRO) {
    j->out[t] = (float)sqrt(s_all);
  } else if (all && !minmax) {
    *psum += s_all;
  } else if (all) {
    if (!*phas || better(is_max, b_all, *pval)) *pval = b_all;
    *phas = 1;
  } else if (per_dim && dim == 1) {
    for (int64_t s = 0; s < n; s++) {
      if (minmax) {
        j->out[t * n + s] = bval[s];
        if (j->idx) j->idx[t * n + s] = bidx[s];
      } else {
        j->out[t * n + s] = (float)(sq ? sqrt(dsum[s]) : dsum[s] / (double)d);
      }
    }
  }
}

static void da_positions(void *raw, int tid, int nt) {
  const da_job *j = (const da_job *)raw;
  const da_tls w = tls_of(j, tid);
  int64_t t0, t1;
  mbcpu_range(j->len, tid, nt, &t0, &t1);
  double psum = 0.0;
  float pval = 0.0f;
  int phas = 0;
#if defined(__AVX2__) && defined(__FMA__)
  if (j->red == MB_REDUCE_NUC && j->vec) { /* positions' Gram matrices 4 at a time */
    const int64_t nn = j->n * j->n;
    for (int64_t t = t0; t < t1; t += MB_NUC_LANES) {
      const int cnt = (int)(t1 - t < MB_NUC_LANES ? t1 - t : MB_NUC_LANES);
      double *g[MB_NUC_LANES], nuc[MB_NUC_LANES];
      for (int l = 0; l < cnt; l++) {
        da_tls wl = w;
        wl.gram = w.gram + l * nn;
        wl.defer_nuc = 1;
        g[l] = wl.gram;
        da_position(j, &wl, t + l, &psum, &pval, &phas);
      }
      nuclear_from_gram4(g, cnt, j->n, w.gram + MB_NUC_LANES * nn, nuc);
      for (int l = 0; l < cnt; l++) j->out[t + l] = (float)nuc[l];
    }
    return;
  }
#endif
  for (int64_t t = t0; t < t1; t++) da_position(j, &w, t, &psum, &pval, &phas);
  if (j->psum) {
    j->psum[tid] = psum;
    j->pval[tid] = pval;
    j->phas[tid] = phas;
  }
}

/* ---- dim 0: across positions, threads over channels ------------------------------------------ */

static void da_channels(void *raw, int tid, int nt) {
  const da_job *j = (const da_job *)raw;
  const da_tls w = tls_of(j, tid);
  const int64_t n = j->n;
  int64_t c0, c1;
  mbcpu_range_blocks(j->d, 16, tid, nt, &c0, &c1);
  if (c0 >= c1) return;
  const int red = j->red, is_max = red == MB_REDUCE_MAX;
  const int minmax = red == MB_REDUCE_MIN || red == MB_REDUCE_MAX;
  const int sq = red == MB_REDUCE_NORM;
  float *out = j->out;
  double *acc = j->acc;
  int64_t *idx = j->idx;
  for (int64_t t = 0; t < j->len; t++) {
    softplus_row(j->vec, j->delta + t * j->ld + c0, c1 - c0, w.sp);
    const int first = j->pos0 == 0 && t == 0;
    const int64_t pos = j->pos0 + t;
    for (int64_t c = c0; c < c1; c++) {
      const float dt = w.sp[c - c0];
      const float *a = j->A + c * n;
      const int64_t base = c * n;
#ifdef __AVX512F__
      if (j->vec && n <= DA_VEC_NMAX) {
        for (int64_t s = 0; s < n; s += 16) {
          const __mmask16 m = mbv_mask(n - s);
          const __mmask8 m0 = (__mmask8)(m & 0xFF), m1 = (__mmask8)(m >> 8);
          const __m512 e = vrow(dt, a, s, m);
          if (minmax) {
            const __mmask16 k =
                first ? m : vbetter(is_max, e, _mm512_maskz_loadu_ps(m, out + base + s)) & m;
            _mm512_mask_storeu_ps(out + base + s, k, e);
            if (idx) {
              const __m512i p = _mm512_set1_epi64(pos);
              _mm512_mask_storeu_epi64(idx + base + s, (__mmask8)(k & 0xFF), p);
              _mm512_mask_storeu_epi64(idx + base + s + 8, (__mmask8)(k >> 8), p);
            }
          } else {
            __m512d lo = lo_pd(e), hi = hi_pd(e);
            if (sq) lo = _mm512_mul_pd(lo, lo), hi = _mm512_mul_pd(hi, hi);
            if (!first) {
              lo = _mm512_add_pd(lo, _mm512_maskz_loadu_pd(m0, acc + base + s));
              hi = _mm512_add_pd(hi, _mm512_maskz_loadu_pd(m1, acc + base + s + 8));
            }
            _mm512_mask_storeu_pd(acc + base + s, m0, lo);
            _mm512_mask_storeu_pd(acc + base + s + 8, m1, hi);
          }
        }
        continue;
      }
#endif
      row_e(j->vec, dt, a, n, w.e);
      for (int64_t s = 0; s < n; s++) {
        const float e = w.e[s];
        if (minmax) {
          if (first || better(is_max, e, out[base + s])) {
            out[base + s] = e;
            if (idx) idx[base + s] = pos;
          }
        } else {
          const double v = sq ? (double)e * e : (double)e;
          acc[base + s] = first ? v : acc[base + s] + v;
        }
      }
    }
  }
  if (!minmax) {
    const double count = (double)(j->pos0 + j->len);
    for (int64_t i = c0 * n; i < c1 * n; i++)
      out[i] = (float)(sq ? sqrt(acc[i]) : acc[i] / count);
  }
}

/* ---- entry points ----------------------------------------------------------------------------- */

static int threads_for(mb_ctx *ctx, int64_t work, int64_t items) {
  int64_t nt = work < 32768 ? 1 : ctx->num_threads;
  if (nt > items) nt = items;
  return nt < 1 ? 1 : (int)nt;
}

int mbcpu_discrete_a(mb_ctx *ctx, const float *delta, int64_t ld_delta, const float *A,
                     int64_t len, int64_t d, int64_t n, int reduction, int dim, int64_t pos0,
                     double *acc, float *out, int64_t *out_idx) {
  da_job j = {.delta = delta, .ld = ld_delta, .A = A, .len = len, .d = d, .n = n,
              .red = reduction, .dim = dim, .pos0 = pos0, .acc = acc, .out = out,
              .idx = out_idx, .vec = mbcpu_vec_any(ctx)};
  const int per_dim = reduction >= MB_REDUCE_MEAN && reduction <= MB_REDUCE_NORM;
  if (!per_dim) j.dim = 0; /* NONE, FRO, NUC: dim is not read */
  const int minmax = reduction == MB_REDUCE_MIN || reduction == MB_REDUCE_MAX;
  if (!(minmax && per_dim && dim >= 0)) j.idx = NULL;
  const int64_t work = len * d * n;
  if (per_dim && dim == 0) {
    const int nt = threads_for(ctx, work, (d + 15) / 16);
    j.per_thread = tls_bytes(d, n, 0);
    j.scratch = (char *)mbcpu_scratch(ctx, (size_t)nt * j.per_thread);
    if (!j.scratch) return mb_fail(MB_ERR_OOM, "mb_discrete_a: out of memory (scratch)");
    mbcpu_parallel(ctx, nt, da_channels, &j);
    return MB_OK;
  }
  const int nt = threads_for(ctx, reduction == MB_REDUCE_NUC ? work * n : work, len);
  const int all = per_dim && dim == -1;
  j.per_thread = tls_bytes(d, n, reduction == MB_REDUCE_NUC);
  size_t bytes = (size_t)nt * j.per_thread;
  if (all) bytes += al64((size_t)nt * (sizeof(double) + sizeof(float) + sizeof(int)));
  j.scratch = (char *)mbcpu_scratch(ctx, bytes);
  if (!j.scratch) return mb_fail(MB_ERR_OOM, "mb_discrete_a: out of memory (scratch)");
  if (all) {
    j.psum = (double *)(j.scratch + (size_t)nt * j.per_thread);
    j.pval = (float *)(j.psum + nt);
    j.phas = (int *)(j.pval + nt);
  }
  mbcpu_parallel(ctx, nt, da_positions, &j);
  if (all) { /* merge the threads' partials in thread order, then the carried result */
    if (minmax) {
      const int is_max = reduction == MB_REDUCE_MAX;
      float b = pos0 > 0 ? out[0] : 0.0f;
      int has = pos0 > 0;
      for (int i = 0; i < nt; i++)
        if (j.phas[i] && (!has || better(is_max, j.pval[i], b))) b = j.pval[i], has = 1;
      out[0] = b;
    } else {
      double s = pos0 > 0 ? acc[0] : 0.0;
      for (int i = 0; i < nt; i++) s += j.psum[i];
      acc[0] = s;
      const double count = (double)(pos0 + len) * (double)d * (double)n;
      out[0] = (float)(reduction == MB_REDUCE_NORM ? sqrt(s) : s / count);
    }
  }
  return MB_OK;
}

/* ---- input similarity ------------------------------------------------------------------------- */

static void sim_positions(void *raw, int tid, int nt) {
  const da_job *j = (const da_job *)raw;
  const da_tls w = tls_of(j, tid);
  const int64_t d = j->d, n = j->n;
  const double eps = j->eps;
  double *dot = w.dsum, *q = w.dsq;
  int64_t t0, t1;
  mbcpu_range(j->len, tid, nt, &t0, &t1);
  for (int64_t t = t0; t < t1; t++) {
    softplus_row(j->vec, j->delta + t * j->ld, d, w.sp);
    const float *xt = j->x + t * j->ldx;
    double xx = 0.0;
    for (int64_t c = 0; c < d; c++) xx += (double)xt[c] * xt[c];
#ifdef __AVX512F__
    if (j->vec && n <= 16) {
      const __mmask16 m = mbv_mask(n);
      __m512d d0 = _mm512_setzero_pd(), d1 = d0, q0 = d0, q1 = d0;
      for (int64_t c = 0; c < d; c++) {
        const __m512 e = _mm512_maskz_mov_ps(m, vrow(w.sp[c], j->A + c * n, 0, m));
        const __m512d lo = lo_pd(e), hi = hi_pd(e), xv = _mm512_set1_pd((double)xt[c]);
        d0 = _mm512_fmadd_pd(lo, xv, d0);
        d1 = _mm512_fmadd_pd(hi, xv, d1);
        q0 = _mm512_fmadd_pd(lo, lo, q0);
        q1 = _mm512_fmadd_pd(hi, hi, q1);
      }
      double buf[32] __attribute__((aligned(64)));
      _mm512_store_pd(buf, d0);
      _mm512_store_pd(buf + 8, d1);
      _mm512_store_pd(buf + 16, q0);
      _mm512_store_pd(buf + 24, q1);
      for (int64_t s = 0; s < n; s++) dot[s] = buf[s], q[s] = buf[16 + s];
    } else
#endif
    {
      for (int64_t s = 0; s < n; s++) dot[s] = q[s] = 0.0;
      for (int64_t c = 0; c < d; c++) {
        row_e(j->vec, w.sp[c], j->A + c * n, n, w.e);
        const double xv = xt[c];
        for (int64_t s = 0; s < n; s++) {
          const double e = w.e[s];
          dot[s] += e * xv;
          q[s] += e * e;
        }
      }
    }
    /* torch clamps each norm to eps (a NaN stays NaN) */
    double nx = sqrt(xx);
    nx = nx < eps ? eps : nx;
    for (int64_t s = 0; s < n; s++) {
      double ne = sqrt(q[s]);
      ne = ne < eps ? eps : ne;
      j->out[t * n + s] = (float)(dot[s] / (ne * nx));
    }
  }
}

int mbcpu_discrete_a_input_sim(mb_ctx *ctx, const float *delta, int64_t ld_delta, const float *A,
                               const float *x, int64_t ldx, int64_t len, int64_t d, int64_t n,
                               float eps, float *out) {
  da_job j = {.delta = delta, .ld = ld_delta, .A = A, .x = x, .ldx = ldx, .eps = eps, .len = len,
              .d = d, .n = n, .red = MB_REDUCE_NONE, .out = out, .vec = mbcpu_vec_any(ctx)};
  const int nt = threads_for(ctx, len * d * n, len);
  j.per_thread = tls_bytes(d, n, 0);
  j.scratch = (char *)mbcpu_scratch(ctx, (size_t)nt * j.per_thread);
  if (!j.scratch) return mb_fail(MB_ERR_OOM, "mb_discrete_a_input_sim: out of memory (scratch)");
  mbcpu_parallel(ctx, nt, sim_positions, &j);
  return MB_OK;
}
