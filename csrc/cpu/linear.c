/*
 * linear.c — y = x W^T + bias on the CPU.
 *
 * n <= MBCPU_SKINNY_MAX (decode: one row per sequence): a skinny kernel that streams W exactly once
 *   (rows of W split across threads in contiguous blocks, R rows x N inputs of independent AVX-512
 *   accumulators, bf16 expanded to fp32 by a zero-extend + shift, which is exact, so activations
 *   stay fp32). It runs at the machine's read bandwidth (see bench_cpu).
 *   Every row of x is computed with the arithmetic of n = 1 whatever n (the same accumulators per
 *   output, the same loads, the same reduction), so a row's result does not depend on how many
 *   rows share the call: speculative decoding verifies several positions in one call and needs
 *   the bits of one-position decoding steps.
 * larger n (prefill): cblas_sgemm(RowMajor, NoTrans x, Trans W) when BLAS is available (bf16 W
 *   converted to fp32 in the context's scratch first), one single-threaded call per pool thread
 *   on its slice; otherwise (and for bf16 W against at most MBCPU_TILED_BF16_MAX rows: batch
 *   decoding) the library's own GEMM: W in L2-sized row tiles (at least 4 a thread), each tile
 *   applied to the x rows 8 at a time with the skinny kernel, or, in the 8-lane build with bf16 W,
 *   12 at a time packed (tile8_bf16).
 */
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#ifdef MB_WITH_BLAS
#include <cblas.h>
#endif

#include "cpu_backend.h"
#include "vmath.h"

#ifdef __AVX512F__
#define MB_VEC512 1
#else
#define MB_VEC512 0
#endif

#define MBCPU_TILE_ROWS 64  /* own GEMM: rows of W per tile (at most; see tile_rows) */
#define MBCPU_TILE_XROWS 64 /* own GEMM: x rows per task */
#define MBCPU_TILED_THR (1 << 16) /* own GEMM: multiply-adds below which one thread runs it */
/* Skinny products: weight streams per thread and how far ahead each is prefetched (see
 * lanes_n1_f32 and rows8_t). */
#define MBCPU_N1_LANES 4
#define MBCPU_N1_PREFETCH 1024
#define MB_PREFETCH_AHEAD(p) _mm_prefetch((const char *)(p) + MBCPU_N1_PREFETCH, _MM_HINT_T0)

/* The block kernels (2 to 8 x rows) read their rows of W one block after another and ask for the
 * rows at least this many bytes ahead (at least the next block). bf16: one block ahead was 2 KiB
 * at the 353M in_proj's 1024 inputs, and 8 rows against it took 0.36 ms a product on two threads
 * (W out of cache), 0.24-0.26 with 8 KiB ahead (16 and 32 KiB the same); `small`'s in_proj and
 * out_proj 5-10% less. fp32 asked for nothing ahead: 8 rows 1.10-1.12 -> 0.72-0.74 ms (2-vCPU
 * AVX-512 EPYC; docs/cpu_notes.md). A hint, so the same bits. */
#define MB_BLOCK_PF_BYTES 8192
/* W's elements ahead of a block kernel's current ones to ask for (rows of in_f es-byte values). */
static inline int64_t block_pf_ahead(int R, int64_t in_f, int64_t es) {
  const int64_t rows = (MB_BLOCK_PF_BYTES + es * in_f - 1) / (es * in_f);
  return (rows > R ? rows : R) * in_f;
}

/* ---- scalar ------------------------------------------------------------------------------- */

static float dot_scalar(const void *w, int wdtype, const float *x, int64_t n) {
  float acc[16] = {0};
  int64_t k = 0;
  if (wdtype == MB_DTYPE_F32) {
    const float *wf = (const float *)w;
    for (; k + 16 <= n; k += 16)
      for (int j = 0; j < 16; j++) acc[j] += wf[k + j] * x[k + j];
    for (; k < n; k++) acc[k & 15] += wf[k] * x[k];
  } else {
    const uint16_t *wh = (const uint16_t *)w;
    for (; k + 16 <= n; k += 16)
      for (int j = 0; j < 16; j++) acc[j] += mb_bf16_to_f32(wh[k + j]) * x[k + j];
    for (; k < n; k++) acc[k & 15] += mb_bf16_to_f32(wh[k]) * x[k];
  }
  for (int s = 8; s > 0; s >>= 1)
    for (int j = 0; j < s; j++) acc[j] += acc[j + s];
  return acc[0];
}

/* rows [o0, o1) of W against x rows [0, n) */
static void rows_scalar(const float *x, int64_t ldx, const void *w, int wdtype, const float *bias,
                        int64_t n, int64_t in_f, int64_t o0, int64_t o1, float *y, int64_t ldy) {
  const size_t es = wdtype == MB_DTYPE_F32 ? 4 : 2;
  for (int64_t o = o0; o < o1; o++) {
    const void *wr = (const char *)w + (size_t)o * (size_t)in_f * es;
    const float b = bias ? bias[o] : 0.0f;
    for (int64_t i = 0; i < n; i++) y[i * ldy + o] = dot_scalar(wr, wdtype, x + i * ldx, in_f) + b;
  }
}

/* xp[i * kp + blk + j] = x[i][blk + 2j], xp[i * kp + blk + 16 + j] = x[i][blk + 2j + 1] */
static void permute_x_bf16(const float *x, int64_t ldx, int64_t n, int64_t in_f, int64_t kp,
                           float *xp) {
  for (int64_t i = 0; i < n; i++) {
    const float *xr = x + i * ldx;
    float *o = xp + i * kp;
    for (int64_t blk = 0; blk < kp; blk += 32)
      for (int j = 0; j < 16; j++) {
        int64_t e = blk + 2 * j, od = e + 1;
        o[blk + j] = e < in_f ? xr[e] : 0.0f;
        o[blk + 16 + j] = od < in_f ? xr[od] : 0.0f;
      }
  }
}

/* With AVX512-BF16 a single x row is split into bf16 hi + lo (hi + lo = x within ~2^-17
 * relative) so bf16 weights take vdpbf16ps: half the instructions of expanding every weight to
 * fp32, which lets one sequence's decoding GEMV keep up with memory. */
#if defined(__AVX512F__) && defined(__AVX512BF16__)
#define MB_BF16_DP 1
#else
#define MB_BF16_DP 0
#endif

/* bf16 weights against at most this many x rows take the library's own GEMM, whose tiles widen
 * each weight in registers, rather than BLAS, which needs all of W widened to fp32 first (a pass
 * over W writing twice its bytes): `small`'s in_proj (448 -> 1792) over 16 rows took 219 us against
 * 309, the two meeting near 40 rows (Zen 2 EPYC, two threads, weights out of cache). Batch decoding
 * of 9 to 32 sequences; every row then has the bits of a one-row call, as below 9. */
#define MBCPU_TILED_BF16_MAX 32

/* x's layout for the vector bf16 kernels of a call with n rows: 1 = split (xs: per row, kp hi then
 * kp lo bf16 values), 0 = permuted fp32 rows. Calls of up to MBCPU_TILED_BF16_MAX rows split
 * whenever the machine has vdpbf16ps (every row as n = 1 computes it, the tiled GEMM's too); longer
 * ones (the tiled GEMM without BLAS) permute. */
static int bf16_x_split(int64_t n) { return MB_BF16_DP && n <= MBCPU_TILED_BF16_MAX; }

#if MB_BF16_DP
static void split_x_bf16(const float *x, int64_t in_f, int64_t kp, uint16_t *xs) {
  for (int64_t k = 0; k < kp; k += 32) {
    const int64_t r0 = in_f - k, r1 = in_f - k - 16;
    const __m512 x0 = _mm512_maskz_loadu_ps(r0 > 0 ? mbv_mask(r0) : 0, x + k);
    const __m512 x1 = _mm512_maskz_loadu_ps(r1 > 0 ? mbv_mask(r1) : 0, x + k + 16);
    const __m512i h = (__m512i)_mm512_cvtne2ps_pbh(x1, x0);
    const __m512 h0 = _mm512_castsi512_ps(
        _mm512_slli_epi32(_mm512_cvtepu16_epi32(_mm512_castsi512_si256(h)), 16));
    const __m512 h1 = _mm512_castsi512_ps(
        _mm512_slli_epi32(_mm512_cvtepu16_epi32(_mm512_extracti64x4_epi64(h, 1)), 16));
    const __m512i l = (__m512i)_mm512_cvtne2ps_pbh(_mm512_sub_ps(x1, h1), _mm512_sub_ps(x0, h0));
    _mm512_store_si512((void *)(xs + k), h);
    _mm512_store_si512((void *)(xs + kp + k), l);
  }
}
#endif

/* x prepared for the vector bf16 kernels into buf (n * kp floats; 64-byte aligned). */
static void prepare_x_bf16(const float *x, int64_t ldx, int64_t n, int64_t in_f, int64_t kp,
                           float *buf) {
#if MB_BF16_DP
  if (bf16_x_split(n)) {
    for (int64_t i = 0; i < n; i++) split_x_bf16(x + i * ldx, in_f, kp, (uint16_t *)(buf + i * kp));
    return;
  }
#endif
  permute_x_bf16(x, ldx, n, in_f, kp, buf);
}

/* ---- AVX-512 skinny kernel ------------------------------------------------------------------ */
#ifdef __AVX512F__

#define MB_INLINE static inline __attribute__((always_inline))

MB_INLINE __m512 load_w(const void *w, int bf16, int64_t k) {
  return bf16 ? mbv_load_bf16((const uint16_t *)w + k) : _mm512_loadu_ps((const float *)w + k);
}
MB_INLINE __m512 load_w_mask(const void *w, int bf16, int64_t k, __mmask16 m) {
  return bf16 ? mbv_maskz_load_bf16(m, (const uint16_t *)w + k)
              : _mm512_maskz_loadu_ps(m, (const float *)w + k);
}

/* R rows of W (starting at row o) x N rows of x, fp32 weights; N and R are compile-time
 * constants. Each (row, input) pair has lanes_n1_f32's arithmetic: elements [k, k+16) of every
 * 32 into one accumulator, [k+16, k+32) into another, the 16-wide masked tail into the first,
 * then reduce(a + c) + bias; so each row gives the bits of a one-row call. */
MB_INLINE void block_kernel(const float *x, int64_t ldx, const float *w, const float *bias,
                            const int N, const int R, int64_t in_f, int64_t o, float *y,
                            int64_t ldy) {
  const float *wr[8];
  for (int r = 0; r < R; r++) wr[r] = w + (size_t)(o + r) * (size_t)in_f;
  const int64_t pf_ahead = block_pf_ahead(R, in_f, 4);
  __m512 a[4][8], c[4][8];
  for (int r = 0; r < R; r++)
    for (int i = 0; i < N; i++) a[r][i] = c[r][i] = _mm512_setzero_ps();
  int64_t k = 0;
  for (; k + 32 <= in_f; k += 32) {
    for (int r = 0; r < R; r++) {
      _mm_prefetch((const char *)(wr[r] + k + pf_ahead), _MM_HINT_T0);
      _mm_prefetch((const char *)(wr[r] + k + pf_ahead + 16), _MM_HINT_T0);
      __m512 w0 = _mm512_loadu_ps(wr[r] + k), w1 = _mm512_loadu_ps(wr[r] + k + 16);
      /* held in registers: left alone, gcc loaded W again for every x row (a load beside each
       * FMA's own load of x) */
      __asm__("" : "+v"(w0), "+v"(w1));
      for (int i = 0; i < N; i++) {
        a[r][i] = _mm512_fmadd_ps(w0, _mm512_loadu_ps(x + i * ldx + k), a[r][i]);
        c[r][i] = _mm512_fmadd_ps(w1, _mm512_loadu_ps(x + i * ldx + k + 16), c[r][i]);
      }
    }
  }
  for (; k < in_f; k += 16) {
    const __mmask16 m = mbv_mask(in_f - k);
    for (int r = 0; r < R; r++) {
      const __m512 w0 = _mm512_maskz_loadu_ps(m, wr[r] + k);
      for (int i = 0; i < N; i++)
        a[r][i] = _mm512_fmadd_ps(w0, _mm512_maskz_loadu_ps(m, x + i * ldx + k), a[r][i]);
    }
  }
  for (int r = 0; r < R; r++)
    for (int i = 0; i < N; i++)
      y[i * ldy + o + r] =
          _mm512_reduce_add_ps(_mm512_add_ps(a[r][i], c[r][i])) + (bias ? bias[o + r] : 0.0f);
}

/*
 * N = 1 (decoding one sequence): R rows at a time (row r's weights at wr[r], its output at
 * y[yo[r]]), two accumulators per row. The caller hands each of the MBCPU_N1_LANES lanes its own
 * contiguous run of rows (lane r: rows s + r*per, s + r*per + 1, ...), so every lane reads one
 * long sequential stream instead of restarting every row, and each lane prefetches its stream
 * MBCPU_N1_PREFETCH bytes ahead (the hardware prefetcher alone stops at every 4 KiB page). Measured
 * here (353M in_proj + out_proj shapes, 2 threads, a throwaway harness): 8 lanes without prefetch
 * streamed at ~0.80 of the 8-stream read probe, 4 lanes ~0.90, 4 lanes with the 1 KiB prefetch
 * ~0.98 (bf16 and fp32 alike; 512 B, 768 B, 1.5 KiB and 2 KiB were slower, so were 2 lanes). A
 * row's arithmetic does not depend on its lane or on R, so any partition gives the same bits.
 */
MB_INLINE void lanes_n1_f32(const float *x, const float *const *wr, const int64_t *yo, const int R,
                            const float *bias, int64_t in_f, float *y) {
  __m512 a[8], c[8];
  for (int r = 0; r < R; r++) a[r] = c[r] = _mm512_setzero_ps();
  int64_t k = 0;
  for (; k + 32 <= in_f; k += 32) {
    const __m512 x0 = _mm512_loadu_ps(x + k), x1 = _mm512_loadu_ps(x + k + 16);
    for (int r = 0; r < R; r++) {
      MB_PREFETCH_AHEAD(wr[r] + k);
      MB_PREFETCH_AHEAD(wr[r] + k + 16);
      a[r] = _mm512_fmadd_ps(_mm512_loadu_ps(wr[r] + k), x0, a[r]);
      c[r] = _mm512_fmadd_ps(_mm512_loadu_ps(wr[r] + k + 16), x1, c[r]);
    }
  }
  for (; k < in_f; k += 16) {
    const __mmask16 m = mbv_mask(in_f - k);
    const __m512 x0 = _mm512_maskz_loadu_ps(m, x + k);
    for (int r = 0; r < R; r++)
      a[r] = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(m, wr[r] + k), x0, a[r]);
  }
  for (int r = 0; r < R; r++)
    y[yo[r]] = _mm512_reduce_add_ps(_mm512_add_ps(a[r], c[r])) + (bias ? bias[yo[r]] : 0.0f);
}

/* bf16, N = 1, the same lanes; x permuted (xp, zero-padded to a multiple of 32): per 32 weights
 * the even ones become fp32 by a shift left of 16, the odd ones by masking the low half (both
 * exact). */
MB_INLINE void lanes_n1_bf16(const float *xp, const uint16_t *const *wr, const int64_t *yo,
                             const int R, const float *bias, int64_t in_f, float *y) {
  const __m512i hi_mask = _mm512_set1_epi32((int)0xFFFF0000u);
  __m512 a[8], c[8];
  for (int r = 0; r < R; r++) a[r] = c[r] = _mm512_setzero_ps();
  for (int64_t k = 0; k < in_f; k += 32) {
    const __mmask32 m = in_f - k >= 32 ? (__mmask32)0xFFFFFFFFu
                                       : (__mmask32)((1u << (in_f - k)) - 1u);
    const __m512 x0 = _mm512_load_ps(xp + k), x1 = _mm512_load_ps(xp + k + 16);
    for (int r = 0; r < R; r++) {
      MB_PREFETCH_AHEAD(wr[r] + k);
      const __m512i v = m == (__mmask32)0xFFFFFFFFu ? _mm512_loadu_si512((const void *)(wr[r] + k))
                                                     : _mm512_maskz_loadu_epi16(m, wr[r] + k);
      a[r] = _mm512_fmadd_ps(_mm512_castsi512_ps(_mm512_slli_epi32(v, 16)), x0, a[r]);
      c[r] = _mm512_fmadd_ps(_mm512_castsi512_ps(_mm512_and_si512(v, hi_mask)), x1, c[r]);
    }
  }
  for (int r = 0; r < R; r++)
    y[yo[r]] = _mm512_reduce_add_ps(_mm512_add_ps(a[r], c[r])) + (bias ? bias[yo[r]] : 0.0f);
}

#if MB_BF16_DP
/* bf16, N = 1, the same lanes, x split (xs: hi then lo, kp each): two vdpbf16ps per 32 weights. */
MB_INLINE void lanes_n1_bf16dp(const uint16_t *xs, int64_t kp, const uint16_t *const *wr,
                               const int64_t *yo, const int R, const float *bias, int64_t in_f,
                               float *y) {
  __m512 a[8], c[8];
  for (int r = 0; r < R; r++) a[r] = c[r] = _mm512_setzero_ps();
  for (int64_t k = 0; k < in_f; k += 32) {
    const __mmask32 m = in_f - k >= 32 ? (__mmask32)0xFFFFFFFFu
                                       : (__mmask32)((1u << (in_f - k)) - 1u);
    const __m512bh h = (__m512bh)_mm512_load_si512((const void *)(xs + k));
    const __m512bh l = (__m512bh)_mm512_load_si512((const void *)(xs + kp + k));
    for (int r = 0; r < R; r++) {
      MB_PREFETCH_AHEAD(wr[r] + k);
      const __m512i v = m == (__mmask32)0xFFFFFFFFu ? _mm512_loadu_si512((const void *)(wr[r] + k))
                                                     : _mm512_maskz_loadu_epi16(m, wr[r] + k);
      a[r] = _mm512_dpbf16_ps(a[r], (__m512bh)v, h);
      c[r] = _mm512_dpbf16_ps(c[r], (__m512bh)v, l);
    }
  }
  for (int r = 0; r < R; r++)
    y[yo[r]] = _mm512_reduce_add_ps(_mm512_add_ps(a[r], c[r])) + (bias ? bias[yo[r]] : 0.0f);
}
#endif

/* One group of R lanes (R = MBCPU_N1_LANES, or 1 for the remainder) by the kernel for the
 * weights' type and x's layout (xs: split for vdpbf16ps; xp: permuted fp32). */
MB_INLINE void lanes_n1(const float *x, const float *xp, const uint16_t *xs, int64_t kp,
                        const int BF16, const void *const *wr, const int64_t *yo, const int R,
                        const float *bias, int64_t in_f, float *y) {
  if (!BF16) {
    lanes_n1_f32(x, (const float *const *)wr, yo, R, bias, in_f, y);
    return;
  }
#if MB_BF16_DP
  if (xs) {
    lanes_n1_bf16dp(xs, kp, (const uint16_t *const *)wr, yo, R, bias, in_f, y);
    return;
  }
#endif
  (void)xs;
  (void)kp;
  lanes_n1_bf16(xp, (const uint16_t *const *)wr, yo, R, bias, in_f, y);
}

/* Rows [o0, o1), N = 1: MBCPU_N1_LANES lanes of `per` consecutive rows each, then the remainder
 * one by one. */
MB_INLINE void rows_n1(const float *x, const float *xp, const uint16_t *xs, int64_t kp,
                       const void *w, const int BF16, const float *bias, int64_t in_f, int64_t o0,
                       int64_t o1, float *y) {
  const int lanes = MBCPU_N1_LANES;
  const int64_t per = (o1 - o0) / lanes;
  const size_t es = BF16 ? 2 : 4;
  const char *base = (const char *)w;
  /* the lanes' first MBCPU_N1_PREFETCH bytes, which their running prefetch never covers */
  for (int r = 0; r < lanes && per > 0; r++)
    for (int b = 0; b < MBCPU_N1_PREFETCH; b += 64)
      _mm_prefetch(base + (size_t)(o0 + r * per) * (size_t)in_f * es + b, _MM_HINT_T0);
  for (int64_t j = 0; j < per; j++) {
    int64_t yo[MBCPU_N1_LANES];
    const void *wr[MBCPU_N1_LANES];
    for (int r = 0; r < lanes; r++) {
      yo[r] = o0 + r * per + j;
      wr[r] = base + (size_t)yo[r] * (size_t)in_f * es;
    }
    lanes_n1(x, xp, xs, kp, BF16, wr, yo, lanes, bias, in_f, y);
  }
  for (int64_t o = o0 + lanes * per; o < o1; o++) {
    const void *wr1 = base + (size_t)o * (size_t)in_f * es;
    lanes_n1(x, xp, xs, kp, BF16, &wr1, &o, 1, bias, in_f, y);
  }
}

/*
 * bf16 weights: 32 weights (64 bytes) per load; the even ones become fp32 by a shift left of 16,
 * the odd ones by masking the low half (both exact). x is pre-permuted to match (xp: per block of
 * 32, the 16 even elements then the 16 odd ones, zero-padded to kp = round_up(in_f, 32)). The even
 * products go to one accumulator, the odd ones to another, as in lanes_n1_bf16 (same bits as a
 * one-row call).
 */
MB_INLINE void block_kernel_bf16(const float *xp, int64_t kp, const uint16_t *w, const float *bias,
                                 const int N, const int R, int64_t in_f, int64_t o, float *y,
                                 int64_t ldy) {
  const uint16_t *wr[8];
  for (int r = 0; r < R; r++) wr[r] = w + (size_t)(o + r) * (size_t)in_f;
  const int64_t pf_ahead = block_pf_ahead(R, in_f, 2);
  const __m512i hi_mask = _mm512_set1_epi32((int)0xFFFF0000u);
  __m512 a[4][8], c[4][8];
  for (int r = 0; r < R; r++)
    for (int i = 0; i < N; i++) a[r][i] = c[r][i] = _mm512_setzero_ps();
  for (int64_t k = 0; k < in_f; k += 32) {
    const __mmask32 m = in_f - k >= 32 ? (__mmask32)0xFFFFFFFFu
                                       : (__mmask32)((1u << (in_f - k)) - 1u);
    for (int r = 0; r < R; r++) {
      /* rows are short streams (2 KiB for in_f = 1024): ask for rows ahead */
      _mm_prefetch((const char *)(wr[r] + k + pf_ahead), _MM_HINT_T0);
      __m512i v = m == (__mmask32)0xFFFFFFFFu ? _mm512_loadu_si512((const void *)(wr[r] + k))
                                              : _mm512_maskz_loadu_epi16(m, wr[r] + k);
      __m512 lo = _mm512_castsi512_ps(_mm512_slli_epi32(v, 16));
      __m512 hi = _mm512_castsi512_ps(_mm512_and_si512(v, hi_mask));
      for (int i = 0; i < N; i++) {
        a[r][i] = _mm512_fmadd_ps(lo, _mm512_load_ps(xp + i * kp + k), a[r][i]);
        c[r][i] = _mm512_fmadd_ps(hi, _mm512_load_ps(xp + i * kp + k + 16), c[r][i]);
      }
    }
  }
  for (int r = 0; r < R; r++)
    for (int i = 0; i < N; i++)
      y[i * ldy + o + r] =
          _mm512_reduce_add_ps(_mm512_add_ps(a[r][i], c[r][i])) + (bias ? bias[o + r] : 0.0f);
}

#if MB_BF16_DP
/* bf16 weights, x split per row (xs + i * 2 kp: hi then lo): lanes_n1_bf16dp's arithmetic for
 * every (row, input) pair. */
MB_INLINE void block_kernel_bf16dp(const uint16_t *xs, int64_t kp, const uint16_t *w,
                                   const float *bias, const int N, const int R, int64_t in_f,
                                   int64_t o, float *y, int64_t ldy) {
  const uint16_t *wr[8];
  for (int r = 0; r < R; r++) wr[r] = w + (size_t)(o + r) * (size_t)in_f;
  const int64_t pf_ahead = block_pf_ahead(R, in_f, 2);
  __m512 a[4][8], c[4][8];
  for (int r = 0; r < R; r++)
    for (int i = 0; i < N; i++) a[r][i] = c[r][i] = _mm512_setzero_ps();
  for (int64_t k = 0; k < in_f; k += 32) {
    const __mmask32 m = in_f - k >= 32 ? (__mmask32)0xFFFFFFFFu
                                       : (__mmask32)((1u << (in_f - k)) - 1u);
    for (int r = 0; r < R; r++) {
      _mm_prefetch((const char *)(wr[r] + k + pf_ahead), _MM_HINT_T0);
      const __m512i v = m == (__mmask32)0xFFFFFFFFu ? _mm512_loadu_si512((const void *)(wr[r] + k))
                                                     : _mm512_maskz_loadu_epi16(m, wr[r] + k);
      for (int i = 0; i < N; i++) {
        const uint16_t *xi = xs + (size_t)i * 2 * (size_t)kp;
        const __m512bh h = (__m512bh)_mm512_load_si512((const void *)(xi + k));
        const __m512bh l = (__m512bh)_mm512_load_si512((const void *)(xi + kp + k));
        a[r][i] = _mm512_dpbf16_ps(a[r][i], (__m512bh)v, h);
        c[r][i] = _mm512_dpbf16_ps(c[r][i], (__m512bh)v, l);
      }
    }
  }
  for (int r = 0; r < R; r++)
    for (int i = 0; i < N; i++)
      y[i * ldy + o + r] =
          _mm512_reduce_add_ps(_mm512_add_ps(a[r][i], c[r][i])) + (bias ? bias[o + r] : 0.0f);
}
#endif

/* Rows of W per block for N inputs: 4 (N = 2), 2 (N <= 4), 1 (N <= 8): 2*R*N accumulators <= 16. */
#if MB_BF16_DP
#define MB_BF16_BLOCK(NN, RR, oo)                                                                 \
  (xsplit ? block_kernel_bf16dp((const uint16_t *)xp, kp, w, bias, NN, RR, in_f, oo, y, ldy)      \
          : block_kernel_bf16(xp, kp, w, bias, NN, RR, in_f, oo, y, ldy))
#else
#define MB_BF16_BLOCK(NN, RR, oo) block_kernel_bf16(xp, kp, w, bias, NN, RR, in_f, oo, y, ldy)
#endif
#define MB_CASE_BF16(NN, RR)                                                                      \
  case NN:                                                                                        \
    for (; o + RR <= o1; o += RR) MB_BF16_BLOCK(NN, RR, o);                                       \
    for (; o < o1; o++) MB_BF16_BLOCK(NN, 1, o);                                                  \
    break;

static void rows_vec_bf16p(const float *xp, int xsplit, int64_t kp, const uint16_t *w,
                           const float *bias, int N, int64_t in_f, int64_t o0, int64_t o1, float *y,
                           int64_t ldy) {
  int64_t o = o0;
  switch (N) {
    case 1:
      rows_n1(NULL, xsplit ? NULL : xp, xsplit ? (const uint16_t *)xp : NULL, kp, w, 1, bias,
              in_f, o0, o1, y);
      break;
    MB_CASE_BF16(2, 4)
    MB_CASE_BF16(3, 2)
    MB_CASE_BF16(4, 2)
    MB_CASE_BF16(5, 1)
    MB_CASE_BF16(6, 1)
    MB_CASE_BF16(7, 1)
    MB_CASE_BF16(8, 1)
    default:
      break;
  }
}

#define MB_CASE_N(NN, RR)                                                                         \
  case NN:                                                                                        \
    for (; o + RR <= o1; o += RR) block_kernel(x, ldx, (const float *)w, bias, NN, RR, in_f, o, y, ldy); \
    for (; o < o1; o++) block_kernel(x, ldx, (const float *)w, bias, NN, 1, in_f, o, y, ldy);     \
    break;

/* rows [o0, o1) x inputs [0, N), N <= 8 */
MB_INLINE void rows_vec_t(const float *x, int64_t ldx, const void *w, const int BF16,
                          const float *bias, int N, int64_t in_f, int64_t o0, int64_t o1, float *y,
                          int64_t ldy) {
  int64_t o = o0;
  switch (N) {
    case 1:
      rows_n1(x, NULL, NULL, 0, w, BF16, bias, in_f, o0, o1, y);
      break;
      MB_CASE_N(2, 4)
      MB_CASE_N(3, 2)
      MB_CASE_N(4, 2)
      MB_CASE_N(5, 1)
      MB_CASE_N(6, 1)
      MB_CASE_N(7, 1)
      MB_CASE_N(8, 1)
    default:
      break;
  }
}

static void rows_vec_f32(const float *x, int64_t ldx, const void *w, const float *bias, int N,
                         int64_t in_f, int64_t o0, int64_t o1, float *y, int64_t ldy) {
  rows_vec_t(x, ldx, w, 0, bias, N, in_f, o0, o1, y, ldy);
}
#endif /* __AVX512F__ */

/* ---- AVX2 + FMA skinny kernel ----------------------------------------------------------------- */
#if MB_AVX2
#define MB_INLINE8 static inline __attribute__((always_inline))

/* W's inputs [k, k + c) of a row as 8 fp32 lanes (bf16 widened exactly; lanes past c are 0). */
MB_INLINE8 __m256 w8(const void *w, int bf16, int64_t k, int c) {
  if (!bf16) return mbv8_load_part((const float *)w + k, c);
  const __m128i v = mbv8_load_part_u16((const uint16_t *)w + k, c);
  return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(v), 16));
}

/* The 8 lanes' sum in a fixed order. */
MB_INLINE8 float hsum8(__m256 v) {
  __m128 q = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  q = _mm_add_ps(q, _mm_movehl_ps(q, q));
  q = _mm_add_ss(q, _mm_movehdup_ps(q));
  return _mm_cvtss_f32(q);
}

/* The dots' last inputs [k, in_f), 8 at a time (a partial last vector), into the accumulators
 * a[r * M + i]: the end of dots8 and dots8_r4m3. */
MB_INLINE8 void dots8_tail(const void *const *wr, const int R, int bf16, const float *x,
                           int64_t ldx, int64_t k, int64_t in_f, const int M, __m256 *a) {
  for (; k < in_f; k += 8) {
    const int c = in_f - k < 8 ? (int)(in_f - k) : 8;
    for (int r = 0; r < R; r++) {
      const __m256 w = w8(wr[r], bf16, k, c);
      for (int i = 0; i < M; i++)
        a[r * M + i] = _mm256_fmadd_ps(w, mbv8_load_part(x + i * ldx + k, c), a[r * M + i]);
    }
  }
}

/* R rows of W (wr[r]) against M rows of x, out[r * M + i]: one 8-lane accumulator a pair, the
 * inputs in order, each row prefetched MBCPU_N1_PREFETCH bytes ahead. A dot's operations depend on
 * neither R nor M, so a (row, x row) pair gets the same bits in any call and any grouping. One
 * accumulator (not two) keeps 8 pairs' sums in registers beside the weights: with two, gcc ran
 * out of the 16 registers at 8 pairs and reloaded every weight for every x row. */
MB_INLINE8 void dots8(const void *const *wr, const int R, int bf16, const float *x, int64_t ldx,
                      int64_t in_f, const int M, const int tail, float *out) {
  const size_t es = bf16 ? 2 : 4;
  __m256 a[8];
  for (int q = 0; q < R * M; q++) a[q] = _mm256_setzero_ps();
  int64_t k = 0;
  for (; k + 16 <= in_f; k += 16) {
    for (int r = 0; r < R; r++) {
      MB_PREFETCH_AHEAD((const char *)wr[r] + (size_t)k * es);
      const __m256 w0 = w8(wr[r], bf16, k, 8), w1 = w8(wr[r], bf16, k + 8, 8);
      for (int i = 0; i < M; i++) {
        a[r * M + i] = _mm256_fmadd_ps(w0, _mm256_loadu_ps(x + i * ldx + k), a[r * M + i]);
        a[r * M + i] = _mm256_fmadd_ps(w1, _mm256_loadu_ps(x + i * ldx + k + 8), a[r * M + i]);
      }
    }
  }
  if (tail) dots8_tail(wr, R, bf16, x, ldx, k, in_f, M, a);
  for (int q = 0; q < R * M; q++) out[q] = hsum8(a[q]);
}

/* Four fp32 weight rows against 3 x rows: 12 accumulators, the x rows' 8 inputs held in registers
 * and each weight vector loaded once for them (16 vector registers in all). With 8 accumulators
 * a turn of 8 inputs waits on the FMAs' latency (8 chains of one FMA), and x as a memory operand
 * of every FMA leaves the loop load-bound; 12 chains keep both FMA pipes busy (fp32 rows 10-28%
 * faster for 3 to 8 x rows). The same dots, in the same order, as dots8. */
MB_INLINE8 void dots8_r4m3(const void *const *wr, const float *x, int64_t ldx, int64_t in_f,
                           const int tail, float *out) {
  __m256 a[12];
  for (int q = 0; q < 12; q++) a[q] = _mm256_setzero_ps();
  int64_t k = 0;
  for (; k + 16 <= in_f; k += 16) {
    for (int r = 0; r < 4; r++) MB_PREFETCH_AHEAD((const float *)wr[r] + k);
    for (int h = 0; h < 16; h += 8) {
      __m256 x0 = _mm256_loadu_ps(x + k + h), x1 = _mm256_loadu_ps(x + ldx + k + h),
             x2 = _mm256_loadu_ps(x + 2 * ldx + k + h);
      /* held in registers: left alone, gcc folds each x load into every FMA instead */
      __asm__("" : "+x"(x0), "+x"(x1), "+x"(x2));
      for (int r = 0; r < 4; r++) {
        __m256 w = _mm256_loadu_ps((const float *)wr[r] + k + h);
        __asm__("" : "+x"(w));
        a[r * 3] = _mm256_fmadd_ps(w, x0, a[r * 3]);
        a[r * 3 + 1] = _mm256_fmadd_ps(w, x1, a[r * 3 + 1]);
        a[r * 3 + 2] = _mm256_fmadd_ps(w, x2, a[r * 3 + 2]);
      }
    }
  }
  if (tail) dots8_tail(wr, 4, 0, x, ldx, k, in_f, 3, a);
  for (int q = 0; q < 12; q++) out[q] = hsum8(a[q]);
}

/* fp32 weights: the four streams' rows against 3 x rows (dots8_r4m3), written to y with the bias.
 * Not inlined into rows8_t: there gcc's register allocation of these loops moved with the code
 * around them (the 8-row products up to 25% apart between builds of the same source). */
static __attribute__((noinline)) void rows8_group_r4m3(const char *base, size_t rb,
                                                       const float *xi, int64_t ldx, int64_t in_f,
                                                       const float *bias, int64_t o, int64_t per,
                                                       float *yi, int64_t ldy) {
  const void *wr[4];
  float d[12];
  for (int r = 0; r < 4; r++) wr[r] = base + (size_t)(o + r * per) * rb;
  if (in_f % 16)
    dots8_r4m3(wr, xi, ldx, in_f, 1, d);
  else
    dots8_r4m3(wr, xi, ldx, in_f, 0, d);
  for (int r = 0; r < 4; r++)
    for (int i = 0; i < 3; i++)
      yi[(int64_t)i * ldy + o + r * per] = d[r * 3 + i] + (bias ? bias[o + r * per] : 0.0f);
}

/* x rows [i, i + M) against R weight rows, the first at row o0 + j and the others `per` rows apart
 * (one stream each), written to y with the bias. */
MB_INLINE8 void rows8_group(const char *base, size_t rb, int bf16, const float *xi, int64_t ldx,
                            int64_t in_f, const float *bias, int64_t o, int64_t per, const int R,
                            const int M, float *yi, int64_t ldy) {
  const void *wr[MBCPU_N1_LANES];
  float d[8];
  for (int r = 0; r < R; r++) wr[r] = base + (size_t)(o + r * per) * rb;
  /* a separate copy for in_f % 16 != 0: with the partial loads beside it, gcc no longer kept the
   * weights in registers in the main loop (8-row products at 2/3 of the speed) */
  if (in_f % 16)
    dots8(wr, R, bf16, xi, ldx, in_f, M, 1, d);
  else
    dots8(wr, R, bf16, xi, ldx, in_f, M, 0, d);
  for (int r = 0; r < R; r++)
    for (int i = 0; i < M; i++)
      yi[(int64_t)i * ldy + o + r * per] = d[r * M + i] + (bias ? bias[o + r * per] : 0.0f);
}

/* rows [o0, o1) of W against x rows [0, n), n <= 8. As the AVX-512 kernels: the range is split
 * into MBCPU_N1_LANES runs read side by side, each one sequential stream (a single stream left the
 * 353M bf16 decode load-bound at ~0.66 of the read probe). A turn is the four runs' rows against
 * up to 2 x rows, or (bf16) two runs' rows against 4 (8 accumulators either way), or (fp32) the
 * four runs' rows against 3 (12); more x rows re-read the rows from the cache. */
MB_INLINE8 void rows8_t(const float *x, int64_t ldx, const void *w, const int bf16,
                        const float *bias, int n, int64_t in_f, int64_t o0, int64_t o1, float *y,
                        int64_t ldy) {
  const size_t rb = (size_t)in_f * (bf16 ? 2 : 4);
  const char *base = (const char *)w;
  const int64_t per = (o1 - o0) / MBCPU_N1_LANES;
  for (int r = 0; r < MBCPU_N1_LANES && per > 0; r++) /* the streams' heads */
    for (int b = 0; b < MBCPU_N1_PREFETCH; b += 64)
      _mm_prefetch(base + (size_t)(o0 + r * per) * rb + b, _MM_HINT_T0);
  for (int64_t j = 0; j < per; j++)
    for (int i = 0; i < n;) {
      const float *xi = x + (int64_t)i * ldx;
      if (n - i >= 3 && !bf16) { /* 12 chains (bf16 weights measured no faster so) */
        rows8_group_r4m3(base, rb, xi, ldx, in_f, bias, o0 + j, per, y + (int64_t)i * ldy, ldy);
        i += 3;
      } else if (n - i >= 4) { /* the streams in two pairs, so each widened weight meets 4 x rows */
        for (int h = 0; h < MBCPU_N1_LANES; h += 2)
          rows8_group(base, rb, bf16, xi, ldx, in_f, bias, o0 + j + h * per, per, 2, 4,
                      y + (int64_t)i * ldy, ldy);
        i += 4;
      } else if (n - i >= 2) {
        rows8_group(base, rb, bf16, xi, ldx, in_f, bias, o0 + j, per, MBCPU_N1_LANES, 2,
                    y + (int64_t)i * ldy, ldy);
        i += 2;
      } else {
        rows8_group(base, rb, bf16, xi, ldx, in_f, bias, o0 + j, per, MBCPU_N1_LANES, 1,
                    y + (int64_t)i * ldy, ldy);
        i += 1;
      }
    }
  for (int64_t o = o0 + MBCPU_N1_LANES * per; o < o1; o++)
    for (int i = 0; i < n;) {
      const float *xi = x + (int64_t)i * ldx;
      const int m = n - i >= 4 ? 4 : n - i >= 2 ? 2 : 1;
      if (m == 4)
        rows8_group(base, rb, bf16, xi, ldx, in_f, bias, o, 0, 1, 4, y + (int64_t)i * ldy, ldy);
      else if (m == 2)
        rows8_group(base, rb, bf16, xi, ldx, in_f, bias, o, 0, 1, 2, y + (int64_t)i * ldy, ldy);
      else
        rows8_group(base, rb, bf16, xi, ldx, in_f, bias, o, 0, 1, 1, y + (int64_t)i * ldy, ldy);
      i += m;
    }
}

/* One function per weight type: inlined into one, gcc's register allocation of either type's
 * loops moved with the other's code (the 8-row products 15-25% apart between builds). */
static __attribute__((noinline)) void rows8_f32(const float *x, int64_t ldx, const void *w,
                                                const float *bias, int n, int64_t in_f, int64_t o0,
                                                int64_t o1, float *y, int64_t ldy) {
  rows8_t(x, ldx, w, 0, bias, n, in_f, o0, o1, y, ldy);
}
static __attribute__((noinline)) void rows8_bf16(const float *x, int64_t ldx, const void *w,
                                                 const float *bias, int n, int64_t in_f, int64_t o0,
                                                 int64_t o1, float *y, int64_t ldy) {
  rows8_t(x, ldx, w, 1, bias, n, in_f, o0, o1, y, ldy);
}

/* x rows [0, m) packed for px_row: their inputs 8 at a time, row by row (block b of row r at
 * (b * m + r) * 8), a partial last block zero-filled as mbv8_load_part reads it. */
static void pack_x8(const float *x, int64_t ldx, int m, int64_t in_f, float *xp) {
  for (int64_t b = 0; b * 8 < in_f; b++) {
    const int c = in_f - b * 8 < 8 ? (int)(in_f - b * 8) : 8;
    for (int r = 0; r < m; r++)
      _mm256_store_ps(xp + (b * m + r) * 8, mbv8_load_part(x + r * ldx + b * 8, c));
  }
}

/* One bf16 weight row's inputs [k0, k0 + kc) against M packed x rows (pack_x8 of those inputs),
 * M <= 12 accumulators carried in acc (M x 8 floats) between a row's chunks: zeros before the
 * first (k0 == 0), and after the last (k0 + kc == in_f) the sums with the bias to yo[i * ldy]
 * instead. Each pair's dot is dots8's: 8 inputs a turn in order, the widened weights times x (the
 * last turn partial), then hsum8 and the bias; an accumulator stored and reloaded is exact. With
 * the rows packed the loads share one pointer: addressing 12 rows of x, gcc ran out of general
 * registers and reloaded row pointers inside the loop. */
MB_INLINE8 void px_row(const uint16_t *wr, const float *xp, int64_t k0, int64_t kc, int64_t in_f,
                       const int M, float *acc, const float *bias, float *yo, int64_t ldy) {
  __m256 a[12];
  for (int i = 0; i < M; i++) a[i] = k0 == 0 ? _mm256_setzero_ps() : _mm256_load_ps(acc + i * 8);
  int64_t k = k0;
  const int64_t k1 = k0 + kc;
  for (; k + 8 <= k1; k += 8, xp += M * 8) {
    const __m256 wv = w8(wr, 1, k, 8);
    for (int i = 0; i < M; i++) a[i] = _mm256_fmadd_ps(wv, _mm256_load_ps(xp + i * 8), a[i]);
  }
  if (k < k1) {
    const __m256 wv = w8(wr, 1, k, (int)(k1 - k));
    for (int i = 0; i < M; i++) a[i] = _mm256_fmadd_ps(wv, _mm256_load_ps(xp + i * 8), a[i]);
  }
  if (k1 < in_f)
    for (int i = 0; i < M; i++) _mm256_store_ps(acc + i * 8, a[i]);
  else
    for (int i = 0; i < M; i++) yo[i * ldy] = hsum8(a[i]) + (bias ? bias[0] : 0.0f);
}

/* The packed rows' inputs per chunk (tile8_chunk): rows of up to 512 inputs whole (12 packed rows
 * of 512 floats are 24 KiB, in L1 beside a tile's row), longer ones in equal chunks of at most 256
 * (all of a row's inputs did not fit L1 past ~512: at 896, 12 rows are 42 KiB). One Zen 2 core:
 * 448 inputs in two chunks took 290 against 244 us whole (-> 1792 rows, 9 x rows), 1024 in
 * chunks of 256 1,457 against 1,715 us in chunks of 512 (-> 4096, 9). */
#define MBCPU_TILE8_WHOLE 512
#define MBCPU_TILE8_KC 256

static int64_t tile8_chunk(int64_t in_f) {
  if (in_f <= MBCPU_TILE8_WHOLE) return in_f;
  const int64_t nc = (in_f + MBCPU_TILE8_KC - 1) / MBCPU_TILE8_KC;
  return ((in_f + nc - 1) / nc + 7) / 8 * 8;
}

/* Floats of tile8_bf16's buffer: the packed rows of a chunk, then the tile's accumulators. */
static size_t tile8_floats(void) {
  return (size_t)12 * MBCPU_TILE8_WHOLE + (size_t)MBCPU_TILE_ROWS * 12 * 8;
}

/* M x rows against the tile's rows [o0, o1), chunk by chunk of their inputs: the chunk packed
 * into xp (pack_x8), then each row against it (px_row, accumulators in acc). `first`: the tile's
 * first pass, which asks for the rows' chunk two rows ahead. */
MB_INLINE8 void px_group(const float *x, int64_t ldx, const uint16_t *wb, const float *bias,
                         int64_t in_f, int64_t o0, int64_t o1, float *y, int64_t ldy, float *xp,
                         float *acc, int first, const int M) {
  const int64_t chunk = tile8_chunk(in_f);
  for (int64_t k0 = 0; k0 < in_f; k0 += chunk) {
    const int64_t kc = in_f - k0 < chunk ? in_f - k0 : chunk;
    pack_x8(x + k0, ldx, M, kc, xp);
    for (int64_t o = o0; o < o1; o++) {
      if (first && o + 2 < o1) {
        const char *p = (const char *)(wb + (o + 2) * in_f + k0);
        for (int64_t b = 0; b < kc * 2; b += 64) _mm_prefetch(p + b, _MM_HINT_T0);
      }
      px_row(wb + o * in_f, xp, k0, kc, in_f, M, acc + (o - o0) * M * 8, bias ? bias + o : NULL,
             y + o, ldy);
    }
  }
}

/* The own tiles' bf16 rows [o0, o1) against x rows [0, n), W's tile in the cache (n > 8): x rows
 * 12 at a time, each weight row against them with 12 accumulators (with 8, as rows8_t's turns,
 * the FMAs' latency binds: 5 cycles, two pipes), the inputs in chunks (tile8_chunk, px_group);
 * then, for rows of up to 512 inputs, 8 rows a turn; the last few by rows8_bf16. buf:
 * tile8_floats() floats, 32-byte aligned. Every pair gets a one-row call's bits. */
static __attribute__((noinline)) void tile8_bf16(const float *x, int64_t ldx, const void *w,
                                                 const float *bias, int n, int64_t in_f,
                                                 int64_t o0, int64_t o1, float *y, int64_t ldy,
                                                 float *buf) {
  const uint16_t *wb = (const uint16_t *)w;
  float *acc = buf + 12 * MBCPU_TILE8_WHOLE;
  int i = 0;
  for (; n - i >= 12; i += 12)
    px_group(x + (int64_t)i * ldx, ldx, wb, bias, in_f, o0, o1, y + (int64_t)i * ldy, ldy, buf,
             acc, i == 0, 12);
  if (in_f <= MBCPU_TILE8_WHOLE) /* in chunks, 8 packed rows lost to rows8_t's turns */
    for (; n - i >= 8; i += 8)
      px_group(x + (int64_t)i * ldx, ldx, wb, bias, in_f, o0, o1, y + (int64_t)i * ldy, ldy, buf,
               acc, i == 0, 8);
  for (; i < n; i += 8)
    rows8_bf16(x + (int64_t)i * ldx, ldx, w, bias, n - i < 8 ? n - i : 8, in_f, o0, o1,
               y + (int64_t)i * ldy, ldy);
}

static void rows_avx2(const float *x, int64_t ldx, const void *w, int wdtype, const float *bias,
                      int n, int64_t in_f, int64_t o0, int64_t o1, float *y, int64_t ldy) {
  if (wdtype == MB_DTYPE_BF16)
    rows8_bf16(x, ldx, w, bias, n, in_f, o0, o1, y, ldy);
  else
    rows8_f32(x, ldx, w, bias, n, in_f, o0, o1, y, ldy);
}
#endif /* MB_AVX2 */

/* rows [o0, o1) of W against x rows [0, n), n <= 8; xp: x permuted for bf16 (vector path) */
static void rows_any(int vec, const float *x, int64_t ldx, const float *xp, int xsplit,
                     int64_t kp, const void *w, int wdtype, const float *bias, int n, int64_t in_f,
                     int64_t o0, int64_t o1, float *y, int64_t ldy) {
#ifdef __AVX512F__
  if (vec) {
    if (wdtype == MB_DTYPE_F32)
      rows_vec_f32(x, ldx, w, bias, n, in_f, o0, o1, y, ldy);
    else
      rows_vec_bf16p(xp, xsplit, kp, (const uint16_t *)w, bias, n, in_f, o0, o1, y, ldy);
    return;
  }
#elif MB_AVX2
  if (vec) {
    rows_avx2(x, ldx, w, wdtype, bias, n, in_f, o0, o1, y, ldy);
    return;
  }
#endif
  (void)xp;
  (void)xsplit;
  (void)kp;
  (void)vec;
  rows_scalar(x, ldx, w, wdtype, bias, n, in_f, o0, o1, y, ldy);
}

/* For fused decoding ops elsewhere (scan.c): the same row kernels as mb_linear's skinny path, so a
 * fused op gives the bits of the unfused pair. */
void mbcpu_linear_prepare_x(const float *x, int64_t ldx, int64_t n, int64_t in_f, int64_t kp,
                            float *xp) {
  prepare_x_bf16(x, ldx, n, in_f, kp, xp);
}

void mbcpu_linear_rows(int vec, const float *x, int64_t ldx, const float *xp, int64_t kp,
                       const void *w, int wdtype, const float *bias, int n, int64_t in_f,
                       int64_t o0, int64_t o1, float *y, int64_t ldy) {
  rows_any(vec, x, ldx, xp, bf16_x_split(n), kp, w, wdtype, bias, n, in_f, o0, o1, y, ldy);
}

/* ---- skinny (decode) ---------------------------------------------------------------------- */

/* For the vector bf16 kernels: x permuted into the context scratch (NULL on OOM). */
static float *permuted_x(mb_ctx *ctx, int vec, int wdtype, const float *x, int64_t ldx, int64_t n,
                         int64_t in_f, int64_t *kp, int *failed) {
  *kp = mbcpu_linear_kp(in_f);
  *failed = 0;
  if (!MB_VEC512 || !vec || wdtype != MB_DTYPE_BF16) return NULL; /* the AVX2 rows read x */
  float *xp = (float *)mbcpu_scratch(ctx, (size_t)(n * *kp) * 4);
  if (!xp) {
    *failed = 1;
    return NULL;
  }
  prepare_x_bf16(x, ldx, n, in_f, *kp, xp);
  return xp;
}

/* The conv1d step fused into the skinny product's epilogue (mb_linear_conv1d_step). */
typedef struct {
  const float *w, *bias;
  float *state;
  int64_t d, k, ldo;
  float *out;
} conv_step;

/* Thread slices of a skinny product are whole blocks of rows: 8 (the row kernels' blocks), 16 for
 * the rows of a fused conv step (its channel blocks: 16 in the AVX-512 build, 8 in AVX2's). */
#define MBCPU_SLICE_ROWS 8
#define MBCPU_SLICE_CONV_ROWS 16

/* One skinny product as a pool job. */
typedef struct {
  int vec, n, xsplit;
  const float *x, *xp, *bias;
  int64_t ldx, kp, in_f, out_f, ldy;
  const void *w;
  int wdtype;
  float *y;
  const conv_step *cv;
} skinny_job;

static void skinny_rows(const skinny_job *j, int64_t o0, int64_t o1) {
  if (o0 < o1)
    rows_any(j->vec, j->x, j->ldx, j->xp, j->xsplit, j->kp, j->w, j->wdtype, j->bias, j->n,
             j->in_f, o0, o1, j->y, j->ldy);
}

static void skinny_slice(void *raw, int tid, int nt) {
  const skinny_job *j = (const skinny_job *)raw;
  const conv_step *cv = j->cv;
  int64_t b0, b1;
  if (!cv) {
    mbcpu_range_blocks(j->out_f, MBCPU_SLICE_ROWS, tid, nt, &b0, &b1);
    skinny_rows(j, b0, b1);
    return;
  }
  /* With the conv: a share of the conv's channels (whose rows come first, in_proj's x half) and
   * a share of the rows after them (the z half). One contiguous slice of all rows gave the whole
   * conv to the first thread while the other waited. */
  mbcpu_range_blocks(cv->d, MBCPU_SLICE_CONV_ROWS, tid, nt, &b0, &b1);
  skinny_rows(j, b0, b1);
  if (b0 < b1)
    mbcpu_conv1_step_range(j->y, j->ldy, cv->w, cv->bias, cv->state, j->n, cv->d, cv->k, cv->out,
                           cv->ldo, b0, b1);
  mbcpu_range_blocks(j->out_f - cv->d, MBCPU_SLICE_ROWS, tid, nt, &b0, &b1);
  skinny_rows(j, cv->d + b0, cv->d + b1);
}

static int linear_skinny(mb_ctx *ctx, const float *x, int64_t ldx, const void *w, int wdtype,
                         const float *bias, int n, int64_t in_f, int64_t out_f, float *y,
                         int64_t ldy, const conv_step *cv) {
  const int vec = mbcpu_vec_any(ctx);
  int64_t kp;
  int failed;
  const float *xp = permuted_x(ctx, vec, wdtype, x, ldx, n, in_f, &kp, &failed);
  if (failed) return mb_fail(MB_ERR_OOM, "mb_linear: out of memory (scratch)");
  const size_t es = wdtype == MB_DTYPE_F32 ? 4 : 2;
  int nt = ctx->num_threads;
  /* below ~64 KiB of weights the fork/join costs more than it saves */
  if ((size_t)out_f * (size_t)in_f * es < 65536) nt = 1;
  skinny_job job = {.vec = vec, .n = n, .xsplit = bf16_x_split(n), .x = x, .xp = xp,
                    .bias = bias, .ldx = ldx, .kp = kp, .in_f = in_f, .out_f = out_f, .ldy = ldy,
                    .w = w, .wdtype = wdtype, .y = y, .cv = cv};
  mbcpu_parallel(ctx, nt, skinny_slice, &job);
  return MB_OK;
}

int mbcpu_linear_conv1d_step(mb_ctx *ctx, const float *x, int64_t ldx, const void *w,
                             int wdtype, const float *bias, int64_t n, int64_t in_f, int64_t out_f,
                             float *y, int64_t ldy, const float *conv_w, const float *conv_bias,
                             float *conv_state, int64_t d_conv, int64_t k, float *xc, int64_t ldo) {
  if (d_conv > 0 && n <= MBCPU_SKINNY_MAX && mbcpu_conv1_step_applies(ctx, k)) {
    const conv_step cv = {conv_w, conv_bias, conv_state, d_conv, k, ldo, xc};
    return linear_skinny(ctx, x, ldx, w, wdtype, bias, (int)n, in_f, out_f, y, ldy, &cv);
  }
  /* Elsewhere the unfused pair: mb_linear then the len-1 conv. */
  int st = mbcpu_linear(ctx, x, ldx, w, wdtype, bias, n, in_f, out_f, y, ldy);
  if (st != MB_OK || d_conv == 0) return st;
  return mbcpu_causal_conv1d(ctx, y, NULL, ldy, conv_w, conv_bias, conv_state, n, 1, d_conv, k, xc,
                             ldo, NULL, NULL, NULL);
}

/* ---- own GEMM (no BLAS) ------------------------------------------------------------------- */

/* Tiles handed out one at a time (OpenMP's dynamic schedule): the last x rows' tiles are short. */
typedef struct {
  int vec, xsplit;
  const float *x, *xp, *bias;
  int64_t ldx, kp, n, in_f, out_f, ldy, tile_rows, ntile, ntask;
  const void *w;
  int wdtype;
  float *y;
  atomic_llong next;
} tiled_job;

/* Rows of W per tile: MBCPU_TILE_ROWS, halved (down to 16) until there are 4 tiles a thread; with
 * few rows (x_proj's 60: one tile) one thread did the whole product while the others waited, and
 * out_proj's 448 rows made 7 tiles for 2 threads. */
static int64_t tile_rows(int64_t out_f, int nt) {
  int64_t tr = MBCPU_TILE_ROWS;
  while (tr > 16 && (out_f + tr - 1) / tr < 4 * (int64_t)nt) tr /= 2;
  return tr;
}

static void tiled_worker(void *raw, int tid, int nt) {
  (void)tid;
  (void)nt;
  tiled_job *j = (tiled_job *)raw;
  float *buf = NULL; /* tile8_bf16's (without it, the n <= 8 kernels: the same bits) */
#if MB_AVX2
  if (j->vec && j->wdtype == MB_DTYPE_BF16)
    buf = (float *)aligned_alloc(32, tile8_floats() * sizeof(float));
#endif
  for (;;) {
    const int64_t t = (int64_t)atomic_fetch_add(&j->next, 1);
    if (t >= j->ntask) break;
    const int64_t tile = t % j->ntile, xt = t / j->ntile;
    const int64_t o0 = tile * j->tile_rows;
    const int64_t o1 = o0 + j->tile_rows < j->out_f ? o0 + j->tile_rows : j->out_f;
    const int64_t i0 = xt * MBCPU_TILE_XROWS;
    const int64_t i1 = i0 + MBCPU_TILE_XROWS < j->n ? i0 + MBCPU_TILE_XROWS : j->n;
#if MB_AVX2
    if (buf) {
      tile8_bf16(j->x + i0 * j->ldx, j->ldx, j->w, j->bias, (int)(i1 - i0), j->in_f, o0, o1,
                 j->y + i0 * j->ldy, j->ldy, buf);
      continue;
    }
#endif
    for (int64_t i = i0; i < i1; i += MBCPU_SKINNY_MAX) {
      const int cnt = (int)(i1 - i < MBCPU_SKINNY_MAX ? i1 - i : MBCPU_SKINNY_MAX);
      rows_any(j->vec, j->x + i * j->ldx, j->ldx, j->xp ? j->xp + i * j->kp : NULL, j->xsplit,
               j->kp, j->w, j->wdtype, j->bias, cnt, j->in_f, o0, o1, j->y + i * j->ldy, j->ldy);
    }
  }
  free(buf);
}

static int linear_tiled(mb_ctx *ctx, const float *x, int64_t ldx, const void *w, int wdtype,
                        const float *bias, int64_t n, int64_t in_f, int64_t out_f, float *y,
                        int64_t ldy) {
  const int vec = mbcpu_vec_any(ctx);
  int64_t kp;
  int failed;
  const float *xp = permuted_x(ctx, vec, wdtype, x, ldx, n, in_f, &kp, &failed);
  if (failed) return mb_fail(MB_ERR_OOM, "mb_linear: out of memory (scratch)");
  /* below 2^16 multiply-adds (~1 us) the fork/join costs more than it saves */
  const int nt = n * in_f * out_f < MBCPU_TILED_THR ? 1 : ctx->num_threads;
  const int64_t tr = tile_rows(out_f, nt);
  const int64_t ntile = (out_f + tr - 1) / tr;
  const int64_t nxt = (n + MBCPU_TILE_XROWS - 1) / MBCPU_TILE_XROWS;
  tiled_job job = {.vec = vec, .xsplit = bf16_x_split(n), .x = x, .xp = xp, .bias = bias,
                   .ldx = ldx, .kp = kp, .n = n, .in_f = in_f, .out_f = out_f, .ldy = ldy,
                   .tile_rows = tr, .ntile = ntile, .ntask = ntile * nxt, .w = w,
                   .wdtype = wdtype, .y = y};
  mbcpu_parallel(ctx, nt, tiled_worker, &job);
  return MB_OK;
}

/* ---- BLAS --------------------------------------------------------------------------------- */
#ifdef MB_WITH_BLAS
/* bf16 weights widened to fp32 for sgemm, in chunks of 4096 */
typedef struct {
  const uint16_t *h;
  float *s;
  size_t count;
  int vec;
} widen_job;

static void widen_chunks(void *raw, int64_t c0, int64_t c1) {
  const widen_job *j = (const widen_job *)raw;
  for (int64_t c = c0; c < c1; c++) {
    size_t b = (size_t)c * 4096, e = b + 4096 < j->count ? b + 4096 : j->count;
    size_t i = b;
#ifdef __AVX512F__
    if (j->vec)
      for (; i + 16 <= e; i += 16) _mm512_storeu_ps(j->s + i, mbv_load_bf16(j->h + i));
#endif
    for (; i < e; i++) j->s[i] = mb_bf16_to_f32(j->h[i]);
  }
}

typedef struct {
  const float *bias;
  int64_t out_f;
  float *y;
  int64_t ldy;
} bias_job;

static void add_bias_rows(void *raw, int64_t i0, int64_t i1) {
  const bias_job *j = (const bias_job *)raw;
  for (int64_t i = i0; i < i1; i++)
    for (int64_t o = 0; o < j->out_f; o++) j->y[i * j->ldy + o] += j->bias[o];
}

/*
 * The BLAS product on the pool: each thread runs a single-threaded sgemm on its slice of the rows
 * of x (or of W, whichever is longer). OpenBLAS's own threads are never used: after a product
 * they spin for ~0.1 s (its THREAD_TIMEOUT), and on few cores that starved the pool's decoding
 * jobs that follow a prefill (steps of 50 ms instead of 0.1 ms on the tiny model, the caller
 * waiting 4-7 ms per job for a worker that had no CPU). Concurrent single-threaded calls are
 * OpenBLAS's documented way to run inside a threaded program (thread-safe since 0.3.7; Debian
 * bookworm ships 0.3.21). The sgemm rate at the prefill shape is unchanged: 174-181 GFLOP/s
 * either way (build/bench_cpu, three runs alternating the two libraries).
 */
typedef struct {
  const float *x, *wf;
  int64_t ldx, n, in_f, out_f, ldy;
  float *y;
  int split_rows;
} sgemm_job;

static void sgemm_slice(void *raw, int tid, int nt) {
  const sgemm_job *j = (const sgemm_job *)raw;
  int64_t b, e;
  if (j->split_rows) {
    mbcpu_range(j->n, tid, nt, &b, &e);
    if (b < e)
      cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)(e - b), (int)j->out_f,
                  (int)j->in_f, 1.0f, j->x + b * j->ldx, (int)j->ldx, j->wf, (int)j->in_f, 0.0f,
                  j->y + b * j->ldy, (int)j->ldy);
    return;
  }
  mbcpu_range_blocks(j->out_f, 16, tid, nt, &b, &e); /* output columns in blocks of 16 */
  if (b < e)
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)j->n, (int)(e - b), (int)j->in_f,
                1.0f, j->x, (int)j->ldx, j->wf + b * j->in_f, (int)j->in_f, 0.0f, j->y + b,
                (int)j->ldy);
}

static int linear_blas(mb_ctx *ctx, const float *x, int64_t ldx, const void *w, int wdtype,
                       const float *bias, int64_t n, int64_t in_f, int64_t out_f, float *y,
                       int64_t ldy) {
  const float *wf = (const float *)w;
  const int nt = ctx->num_threads;
  if (wdtype == MB_DTYPE_BF16) {
    const size_t count = (size_t)out_f * (size_t)in_f;
    float *s = (float *)mbcpu_scratch(ctx, count * 4);
    if (!s)
      return mb_fail(MB_ERR_OOM, "mb_linear: out of memory for the bf16 -> fp32 weight scratch "
                                 "(%zu bytes)", count * 4);
    widen_job job = {.h = (const uint16_t *)w, .s = s, .count = count, .vec = mbcpu_vec(ctx)};
    mbcpu_parallel_for(ctx, nt, (int64_t)((count + 4095) / 4096), widen_chunks, &job);
    wf = s;
  }
#ifdef MB_WITH_OPENBLAS
  openblas_set_num_threads(1);
#endif
  sgemm_job job = {.x = x, .ldx = ldx, .wf = wf, .n = n, .in_f = in_f, .out_f = out_f, .y = y,
                   .ldy = ldy, .split_rows = n >= out_f};
  mbcpu_parallel(ctx, nt, sgemm_slice, &job);
  if (bias) {
    bias_job job = {.bias = bias, .out_f = out_f, .y = y, .ldy = ldy};
    mbcpu_parallel_for(ctx, n * out_f > 65536 ? nt : 1, n, add_bias_rows, &job);
  }
  return MB_OK;
}
#endif

int mbcpu_linear(mb_ctx *ctx, const float *x, int64_t ldx, const void *w, int wdtype,
                 const float *bias, int64_t n, int64_t in_f, int64_t out_f, float *y,
                 int64_t ldy) {
  if (n <= MBCPU_SKINNY_MAX)
    return linear_skinny(ctx, x, ldx, w, wdtype, bias, (int)n, in_f, out_f, y, ldy, NULL);
#ifdef MB_WITH_BLAS
  const int bf16_tiled = wdtype == MB_DTYPE_BF16 && n <= MBCPU_TILED_BF16_MAX;
  if (mbcpu(ctx)->use_blas && !bf16_tiled && in_f > 0 && n <= INT32_MAX && in_f <= INT32_MAX &&
      out_f <= INT32_MAX && ldx <= INT32_MAX && ldy <= INT32_MAX)
    return linear_blas(ctx, x, ldx, w, wdtype, bias, n, in_f, out_f, y, ldy);
#endif
  return linear_tiled(ctx, x, ldx, w, wdtype, bias, n, in_f, out_f, y, ldy);
}

/* The decoding conv step then x_proj (mb_conv1d_step_linear): the two ops, as the header spells
 * them (the CPU's product of a few rows gains nothing from sharing a pass with the conv). */
int mbcpu_conv1d_step_linear(mb_ctx *ctx, const float *x, int64_t ldx, const float *conv_w,
                             const float *conv_bias, float *conv_state, int64_t n, int64_t d,
                             int64_t k, float *xc, int64_t ldo, const void *w, int wdtype,
                             const float *bias, int64_t out_f, float *y, int64_t ldy) {
  int st = mbcpu_causal_conv1d(ctx, x, NULL, ldx, conv_w, conv_bias, conv_state, n, 1, d, k, xc,
                               ldo, NULL, NULL, NULL);
  if (st != MB_OK || out_f == 0) return st;
  return mbcpu_linear(ctx, xc, ldo, w, wdtype, bias, n, d, out_f, y, ldy);
}
