/*
 * vmath.h — small math helpers of the CPU kernels: scalar references (libm), AVX-512 versions and
 * their 8-lane AVX2 + FMA twins (the same algorithms and constants).
 *
 * Accuracy of the AVX-512 functions (measured against double-precision libm over the ranges the
 * kernels use; see csrc/tests/test_cpu.c):
 *   mbv_exp:      max relative error ~1.2e-7 (about 1 ulp) for x in [-87, 88]; x < -103.9 gives 0
 *                 (no NaN for very negative or -inf arguments), x > 88.7 gives +inf, NaN gives NaN.
 *                 Cephes' expf: x = n ln2 + r, |r| <= ln2/2, degree-5 polynomial, 2^n by scalef.
 *   mbv_log:      max relative error ~1.5e-7 for x in (0, inf) (Cephes' logf polynomial).
 *   mbv_softplus: torch's softplus (threshold 20): x > 20 ? x : log1p(exp(x)); log1p by the
 *                 log(u) * e / (u - 1) identity, so tiny exp(x) keeps full relative accuracy.
 */
#ifndef MAMBABYTE_CPU_VMATH_H
#define MAMBABYTE_CPU_VMATH_H

#include <math.h>
#include <stdint.h>
#include <string.h>

#if defined(__AVX512F__) || (defined(__AVX2__) && defined(__FMA__))
#include <immintrin.h>
#endif

/* The 8-lane (AVX2 + FMA) kernels run where AVX-512 is missing (AMD Zen 1-3, most Intel client
 * CPUs); where both exist the 16-lane ones do. */
#if !defined(__AVX512F__) && defined(__AVX2__) && defined(__FMA__)
#define MB_AVX2 1
#else
#define MB_AVX2 0
#endif

/* Cephes' expf and logf (the vector forms below, both widths, and scan.c's interleaved exp):
 * exp(x) = 2^n exp(r), n = round(x log2 e), r = x - n ln2 (ln2 in two parts), exp(r) by a
 * degree-5 polynomial; log(x) = e ln2 + log(m), m in [sqrt(1/2), sqrt(2)), log(m) by a degree-8
 * one. The clamps: exp(MB_EXP_HI) is the largest float, below MB_EXP_LO the result is 0. */
#define MB_EXP_HI 88.72283935546875f
#define MB_EXP_LO -103.97208f
#define MB_EXP_LOG2E 1.44269504088896341f
#define MB_LN2_HI 0.693359375f
#define MB_LN2_LO -2.12194440e-4f
#define MB_EXP_P0 1.9875691500E-4f
#define MB_EXP_P1 1.3981999507E-3f
#define MB_EXP_P2 8.3334519073E-3f
#define MB_EXP_P3 4.1665795894E-2f
#define MB_EXP_P4 1.6666665459E-1f
#define MB_EXP_P5 5.0000001201E-1f
#define MB_LOG_SQRT2 1.41421356237309505f
#define MB_LOG_P0 7.0376836292E-2f
#define MB_LOG_P1 -1.1514610310E-1f
#define MB_LOG_P2 1.1676998740E-1f
#define MB_LOG_P3 -1.2420140846E-1f
#define MB_LOG_P4 1.4249322787E-1f
#define MB_LOG_P5 -1.6668057665E-1f
#define MB_LOG_P6 2.0000714765E-1f
#define MB_LOG_P7 -2.4999993993E-1f
#define MB_LOG_P8 3.3333331174E-1f

/* ---- scalar ------------------------------------------------------------------------------- */

static inline float mb_bf16_to_f32(uint16_t h) {
  uint32_t u = (uint32_t)h << 16;
  float f;
  memcpy(&f, &u, 4);
  return f;
}

static inline float mbs_softplus(float x) { return x > 20.0f ? x : log1pf(expf(x)); }
static inline float mbs_silu(float x) { return x / (1.0f + expf(-x)); }

/* ---- AVX-512 ------------------------------------------------------------------------------ */
#ifdef __AVX512F__

static inline __m512 mbv_exp(__m512 x) {
  const __m512 hi = _mm512_set1_ps(MB_EXP_HI);
  const __m512 lo = _mm512_set1_ps(MB_EXP_LO);
  /* also maps -inf to lo (-> 0); the clamp constants come first so that a NaN x passes through
   * (vminps/vmaxps return their second operand when either is NaN) */
  x = _mm512_max_ps(lo, _mm512_min_ps(hi, x));
  const __mmask16 under = _mm512_cmp_ps_mask(x, lo, _CMP_LE_OQ); /* exp(lo) would round to 2^-147 */
  __m512 n = _mm512_roundscale_ps(_mm512_mul_ps(x, _mm512_set1_ps(MB_EXP_LOG2E)),
                                  _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  __m512 r = _mm512_fnmadd_ps(n, _mm512_set1_ps(MB_LN2_HI), x);
  r = _mm512_fnmadd_ps(n, _mm512_set1_ps(MB_LN2_LO), r);
  __m512 p = _mm512_set1_ps(MB_EXP_P0);
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(MB_EXP_P1));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(MB_EXP_P2));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(MB_EXP_P3));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(MB_EXP_P4));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(MB_EXP_P5));
  __m512 r2 = _mm512_mul_ps(r, r);
  p = _mm512_fmadd_ps(p, r2, _mm512_add_ps(r, _mm512_set1_ps(1.0f)));
  return _mm512_maskz_mov_ps((__mmask16)~under, _mm512_scalef_ps(p, n));
}

/** Natural log for x > 0 (x == 0 gives -inf-ish garbage; callers pass x >= 1). */
static inline __m512 mbv_log(__m512 x) {
  /* x = m 2^e with m in [sqrt(1/2), sqrt(2)) */
  __m512 e = _mm512_getexp_ps(_mm512_mul_ps(x, _mm512_set1_ps(MB_LOG_SQRT2)));
  __m512 m = _mm512_scalef_ps(x, _mm512_sub_ps(_mm512_setzero_ps(), e));
  __m512 f = _mm512_sub_ps(m, _mm512_set1_ps(1.0f));
  __m512 z = _mm512_mul_ps(f, f);
  __m512 y = _mm512_set1_ps(MB_LOG_P0);
  y = _mm512_fmadd_ps(y, f, _mm512_set1_ps(MB_LOG_P1));
  y = _mm512_fmadd_ps(y, f, _mm512_set1_ps(MB_LOG_P2));
  y = _mm512_fmadd_ps(y, f, _mm512_set1_ps(MB_LOG_P3));
  y = _mm512_fmadd_ps(y, f, _mm512_set1_ps(MB_LOG_P4));
  y = _mm512_fmadd_ps(y, f, _mm512_set1_ps(MB_LOG_P5));
  y = _mm512_fmadd_ps(y, f, _mm512_set1_ps(MB_LOG_P6));
  y = _mm512_fmadd_ps(y, f, _mm512_set1_ps(MB_LOG_P7));
  y = _mm512_fmadd_ps(y, f, _mm512_set1_ps(MB_LOG_P8));
  y = _mm512_mul_ps(_mm512_mul_ps(y, f), z);
  y = _mm512_fmadd_ps(e, _mm512_set1_ps(MB_LN2_LO), y);
  y = _mm512_fnmadd_ps(z, _mm512_set1_ps(0.5f), y);
  __m512 r = _mm512_add_ps(f, y);
  return _mm512_fmadd_ps(e, _mm512_set1_ps(MB_LN2_HI), r);
}

static inline __m512 mbv_softplus(__m512 x) {
  __m512 ex = mbv_exp(_mm512_min_ps(_mm512_set1_ps(20.0f), x)); /* NaN passes (see mbv_exp) */
  __m512 u = _mm512_add_ps(ex, _mm512_set1_ps(1.0f));
  __m512 um1 = _mm512_sub_ps(u, _mm512_set1_ps(1.0f));
  __mmask16 tiny = _mm512_cmp_ps_mask(um1, _mm512_setzero_ps(), _CMP_EQ_OQ);
  /* log1p(e) = log(u) * e / (u - 1) (exact correction of the rounding of u = 1 + e) */
  __m512 l = _mm512_mul_ps(mbv_log(u), _mm512_div_ps(ex, _mm512_mask_blend_ps(tiny, um1,
                                                                                 ex)));
  l = _mm512_mask_blend_ps(tiny, l, ex);
  __mmask16 big = _mm512_cmp_ps_mask(x, _mm512_set1_ps(20.0f), _CMP_GT_OQ);
  return _mm512_mask_blend_ps(big, l, x);
}

static inline __m512 mbv_silu(__m512 x) {
  __m512 e = mbv_exp(_mm512_sub_ps(_mm512_setzero_ps(), x));
  return _mm512_div_ps(x, _mm512_add_ps(e, _mm512_set1_ps(1.0f)));
}

static inline __mmask16 mbv_mask(int64_t remaining) {
  return remaining >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << remaining) - 1u);
}

/** 16 bf16 values (masked) -> fp32 by shifting into the high half (exact). */
static inline __m512 mbv_load_bf16(const uint16_t *p) {
  __m256i h = _mm256_loadu_si256((const __m256i *)p);
  return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16));
}
static inline __m512 mbv_maskz_load_bf16(__mmask16 m, const uint16_t *p) {
  __m256i h = _mm256_maskz_loadu_epi16(m, p);
  return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16));
}

#endif /* __AVX512F__ */

/* ---- AVX2 + FMA (8 lanes) ------------------------------------------------------------------ */
#if MB_AVX2

/* 2^n for integral n in [-126, 127] given as floats: the exponent field built directly. */
static inline __m256 mbv8_pow2i(__m256 n) {
  const __m256i e = _mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127));
  return _mm256_castsi256_ps(_mm256_slli_epi32(e, 23));
}

/* exp(r) for r = x - n ln2 (ln2 in two parts): mbv_exp's polynomial, in its order. */
static inline __m256 mbv8_exp_poly(__m256 x, __m256 n) {
  __m256 r = _mm256_fnmadd_ps(n, _mm256_set1_ps(MB_LN2_HI), x);
  r = _mm256_fnmadd_ps(n, _mm256_set1_ps(MB_LN2_LO), r);
  __m256 p = _mm256_set1_ps(MB_EXP_P0);
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(MB_EXP_P1));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(MB_EXP_P2));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(MB_EXP_P3));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(MB_EXP_P4));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(MB_EXP_P5));
  const __m256 r2 = _mm256_mul_ps(r, r);
  return _mm256_fmadd_ps(p, r2, _mm256_add_ps(r, _mm256_set1_ps(1.0f)));
}

/* mbv_exp's algorithm and constants lane for lane (the same values: AVX-512's scalef(p, n) is p
 * times 2^n rounded once, here p * 2^h * 2^(n - h) with h = trunc(n / 2), whose first product is
 * exact and whose second rounds once, so results below 2^-126 come out as scalef's). */
static inline __m256 mbv8_exp_full(__m256 x) {
  const __m256 hi = _mm256_set1_ps(MB_EXP_HI);
  const __m256 lo = _mm256_set1_ps(MB_EXP_LO);
  x = _mm256_max_ps(lo, _mm256_min_ps(hi, x)); /* NaN passes, -inf -> lo (as mbv_exp) */
  const __m256 under = _mm256_cmp_ps(x, lo, _CMP_LE_OQ);
  const __m256 n = _mm256_round_ps(_mm256_mul_ps(x, _mm256_set1_ps(MB_EXP_LOG2E)),
                                   _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  const __m256 p = mbv8_exp_poly(x, n);
  /* n in [-150, 128]: both halves in [-75, 64]; a NaN n becomes an integer, and p stays NaN */
  const __m256 h = _mm256_round_ps(_mm256_mul_ps(n, _mm256_set1_ps(0.5f)),
                                   _MM_FROUND_TO_ZERO | _MM_FROUND_NO_EXC);
  const __m256 v = _mm256_mul_ps(_mm256_mul_ps(p, mbv8_pow2i(h)),
                                 mbv8_pow2i(_mm256_sub_ps(n, h)));
  return _mm256_andnot_ps(under, v);
}

/* Lanes whose n = round(x log2 e) leaves exp(x) a normal float (mbv8_exp's fast path). */
static inline __m256 mbv8_exp_fast_ok(__m256 n) {
  return _mm256_and_ps(_mm256_cmp_ps(n, _mm256_set1_ps(-125.0f), _CMP_GE_OQ),
                       _mm256_cmp_ps(n, _mm256_set1_ps(127.0f), _CMP_LE_OQ));
}
/* mbv8_exp's fast path: 2^n added to the polynomial's exponent field. */
static inline __m256 mbv8_exp_fast(__m256 x, __m256 n) {
  const __m256i e = _mm256_slli_epi32(_mm256_cvtps_epi32(n), 23);
  return _mm256_castsi256_ps(_mm256_add_epi32(_mm256_castps_si256(mbv8_exp_poly(x, n)), e));
}

/* The same values, faster where every lane's result is a normal float (n in [-125, 127], so no
 * clamp applies and p * 2^n is exact): 2^n added to p's exponent field. Other vectors (tiny or
 * huge results, NaN) take mbv8_exp_full. */
static inline __m256 mbv8_exp(__m256 x) {
  const __m256 n = _mm256_round_ps(_mm256_mul_ps(x, _mm256_set1_ps(MB_EXP_LOG2E)),
                                   _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  if (__builtin_expect(_mm256_movemask_ps(mbv8_exp_fast_ok(n)) != 0xFF, 0))
    return mbv8_exp_full(x);
  return mbv8_exp_fast(x, n);
}

/* mbv8_exp of four vectors (the same values) behind one range check: with a branch each, four
 * calls in a row left each exp's ~17-deep chain waiting on the one before (most of what the
 * 8-lane scan gained from four states a turn). Written step by step for the four in turn it
 * measured 2-3% faster still, not worth a second copy of the polynomial. */
static inline void mbv8_exp4(const __m256 x[4], __m256 out[4]) {
  __m256 n[4];
  int bad = 0;
  for (int g = 0; g < 4; g++) {
    n[g] = _mm256_round_ps(_mm256_mul_ps(x[g], _mm256_set1_ps(MB_EXP_LOG2E)),
                           _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    bad |= _mm256_movemask_ps(mbv8_exp_fast_ok(n[g])) ^ 0xFF;
  }
  if (__builtin_expect(bad != 0, 0)) {
    for (int g = 0; g < 4; g++) out[g] = mbv8_exp(x[g]);
    return;
  }
  for (int g = 0; g < 4; g++) out[g] = mbv8_exp_fast(x[g], n[g]);
}

/* mbv_log for x >= 1 (its callers): getexp and scalef by the exponent field, both exact here. */
static inline __m256 mbv8_log(__m256 x) {
  const __m256i bits = _mm256_castps_si256(_mm256_mul_ps(x, _mm256_set1_ps(MB_LOG_SQRT2)));
  const __m256i ei = _mm256_sub_epi32(_mm256_srli_epi32(bits, 23), _mm256_set1_epi32(127));
  const __m256 e = _mm256_cvtepi32_ps(ei);
  const __m256 m = _mm256_mul_ps(
      x, _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_sub_epi32(_mm256_set1_epi32(127), ei), 23)));
  const __m256 f = _mm256_sub_ps(m, _mm256_set1_ps(1.0f));
  const __m256 z = _mm256_mul_ps(f, f);
  __m256 y = _mm256_set1_ps(MB_LOG_P0);
  y = _mm256_fmadd_ps(y, f, _mm256_set1_ps(MB_LOG_P1));
  y = _mm256_fmadd_ps(y, f, _mm256_set1_ps(MB_LOG_P2));
  y = _mm256_fmadd_ps(y, f, _mm256_set1_ps(MB_LOG_P3));
  y = _mm256_fmadd_ps(y, f, _mm256_set1_ps(MB_LOG_P4));
  y = _mm256_fmadd_ps(y, f, _mm256_set1_ps(MB_LOG_P5));
  y = _mm256_fmadd_ps(y, f, _mm256_set1_ps(MB_LOG_P6));
  y = _mm256_fmadd_ps(y, f, _mm256_set1_ps(MB_LOG_P7));
  y = _mm256_fmadd_ps(y, f, _mm256_set1_ps(MB_LOG_P8));
  y = _mm256_mul_ps(_mm256_mul_ps(y, f), z);
  y = _mm256_fmadd_ps(e, _mm256_set1_ps(MB_LN2_LO), y);
  y = _mm256_fnmadd_ps(z, _mm256_set1_ps(0.5f), y);
  const __m256 r = _mm256_add_ps(f, y);
  return _mm256_fmadd_ps(e, _mm256_set1_ps(MB_LN2_HI), r);
}

/* mbv8_softplus after its exp: ex = mbv8_exp(min(20, x)). */
static inline __m256 mbv8_softplus_from_exp(__m256 x, __m256 ex) {
  const __m256 u = _mm256_add_ps(ex, _mm256_set1_ps(1.0f));
  const __m256 um1 = _mm256_sub_ps(u, _mm256_set1_ps(1.0f));
  const __m256 tiny = _mm256_cmp_ps(um1, _mm256_setzero_ps(), _CMP_EQ_OQ);
  __m256 l = _mm256_mul_ps(mbv8_log(u), _mm256_div_ps(ex, _mm256_blendv_ps(um1, ex, tiny)));
  l = _mm256_blendv_ps(l, ex, tiny);
  const __m256 big = _mm256_cmp_ps(x, _mm256_set1_ps(20.0f), _CMP_GT_OQ);
  return _mm256_blendv_ps(l, x, big);
}

/* mbv_softplus, 8 lanes (the same operations). */
static inline __m256 mbv8_softplus(__m256 x) {
  return mbv8_softplus_from_exp(x, mbv8_exp(_mm256_min_ps(_mm256_set1_ps(20.0f), x)));
}

/* mbv8_softplus of four vectors, their exps side by side (mbv8_exp4; the same values): the
 * scan's dt for a tile of positions (0.74 -> 0.68 ns an update at 2048 x 896). */
static inline void mbv8_softplus4(const __m256 x[4], __m256 out[4]) {
  __m256 xc[4], ex[4];
  for (int g = 0; g < 4; g++) xc[g] = _mm256_min_ps(_mm256_set1_ps(20.0f), x[g]);
  mbv8_exp4(xc, ex);
  for (int g = 0; g < 4; g++) out[g] = mbv8_softplus_from_exp(x[g], ex[g]);
}

static inline __m256 mbv8_silu(__m256 x) {
  const __m256 e = mbv8_exp(_mm256_sub_ps(_mm256_setzero_ps(), x));
  return _mm256_div_ps(x, _mm256_add_ps(e, _mm256_set1_ps(1.0f)));
}

/* A mask of the first k of 8 lanes (all bits set there; k clamped to 0..8), read from a table:
 * computed from an iota constant, gcc kept that constant in a register through the product loops
 * around the masked loads, and the 2-row fp32 products reloaded their weights (81 -> 105 us). */
static inline __m256 mbv8_lanes(int k) {
  static const int32_t tab[16] = {-1, -1, -1, -1, -1, -1, -1, -1, 0, 0, 0, 0, 0, 0, 0, 0};
  return _mm256_loadu_ps((const float *)(tab + 8 - (k < 0 ? 0 : k > 8 ? 8 : k)));
}

/* The first k of 8 floats at p (the rest 0), without reading past them. */
static inline __m256 mbv8_load_part(const float *p, int k) {
  if (k >= 8) return _mm256_loadu_ps(p);
  /* a masked load (masked lanes read nothing, so no fault past the end): a copy through the stack
   * cost a memcpy call and a stalled reload, ~15 us of a 896 x 28 product's 18 */
  return _mm256_maskload_ps(p, _mm256_castps_si256(mbv8_lanes(k)));
}
static inline void mbv8_store_part(float *p, __m256 v, int k) {
  if (k >= 8) {
    _mm256_storeu_ps(p, v);
    return;
  }
  _mm256_maskstore_ps(p, _mm256_castps_si256(mbv8_lanes(k)), v);
}

/* The first k of 8 bf16 values at h (the rest 0) as 16-bit lanes, without reading past them: whole
 * pairs by a masked 32-bit load, an odd last one blended in. */
static inline __m128i mbv8_load_part_u16(const uint16_t *h, int k) {
  if (k >= 8) return _mm_loadu_si128((const __m128i *)h);
  const __m128i iota = _mm_setr_epi32(0, 1, 2, 3);
  const __m128i pairs = _mm_cmpgt_epi32(_mm_set1_epi32(k / 2), iota);
  __m128i v = _mm_maskload_epi32((const int *)h, pairs);
  if (k > 0 && (k & 1)) {
    const __m128i at = _mm_cmpeq_epi16(_mm_setr_epi16(0, 1, 2, 3, 4, 5, 6, 7),
                                       _mm_set1_epi16((short)(k - 1)));
    v = _mm_blendv_epi8(v, _mm_set1_epi16((short)h[k - 1]), at);
  }
  return v;
}

/* An 8 x 8 block transposed: dst[j * ldd + i] = src[i * lds + j] (data movement only). */
static inline void mbv8_transpose8(const float *src, int64_t lds, float *dst, int64_t ldd) {
  __m256 r[8], t[8];
  for (int i = 0; i < 8; i++) r[i] = _mm256_loadu_ps(src + i * lds);
  for (int i = 0; i < 8; i += 2) {
    t[i] = _mm256_unpacklo_ps(r[i], r[i + 1]);
    t[i + 1] = _mm256_unpackhi_ps(r[i], r[i + 1]);
  }
  for (int i = 0; i < 8; i += 4) {
    r[i] = _mm256_shuffle_ps(t[i], t[i + 2], 0x44);
    r[i + 1] = _mm256_shuffle_ps(t[i], t[i + 2], 0xEE);
    r[i + 2] = _mm256_shuffle_ps(t[i + 1], t[i + 3], 0x44);
    r[i + 3] = _mm256_shuffle_ps(t[i + 1], t[i + 3], 0xEE);
  }
  /* r[i], i < 4: column i of rows 0-3, then column i + 4 of them; r[i + 4]: the same of rows 4-7 */
  for (int i = 0; i < 4; i++) {
    _mm256_storeu_ps(dst + i * ldd, _mm256_permute2f128_ps(r[i], r[i + 4], 0x20));
    _mm256_storeu_ps(dst + (i + 4) * ldd, _mm256_permute2f128_ps(r[i], r[i + 4], 0x31));
  }
}

#endif /* MB_AVX2 */

#endif /* MAMBABYTE_CPU_VMATH_H */
