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
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "cpu_backend.h"
#include "vmath.h"

static void scan_channel_scalar(const float *u, int64_t ldu, const float *delta, int64_t ld_delta,
                                const float *delta_bias, const float *A, const float *Bm, int64_t ldb, const float *Cm,
                                int64_t ldc, const float *Dskip, const float *z, int64_t ldz,
                                float *h, float *states_all, int64_t len, int64_t d, int64_t n,
                                int delta_softplus, float *y, int64_t ldy, int64_t c) {
  /* row pointers are at this sequence's first row; h holds this channel's n states */
  const float *a = A + c * n;
  const float dsk = Dskip ? Dskip[c] : 0.0f;
  for (int64_t t = 0; t < len; t++) {
    const float uu = u[t * ldu + c];
    float dt = delta[t * ld_delta + c];
    if (delta_bias) dt += delta_bias[c];
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

/* A decoding step's update of at most this many (sequence, channel, state) values runs on one
 * thread (~20 us and less: the fork/join would cost more). The 8-lane kernel is slower per value
 * (1.0-1.4 ns on a Zen 2 EPYC, where a hand-off to the pool's spinning worker is ~1 us), so its
 * bar is far lower: at 16,384, `small`'s 896 x 16 update (~20 us a layer) ran on one thread while
 * the other waited, and bf16 decoding went 1,790 -> 2,150 bytes/s with it split (tiny's 256 x 16:
 * 7,400 -> 8,350-9,050). */
#ifndef MB_SU_THR
#define MB_SU_THR 131072
#endif
#ifndef MB_SU_THR8
#define MB_SU_THR8 4096
#endif

#ifdef __AVX512F__
#define MB_INLINE static inline __attribute__((always_inline))

/* Lane-pair swaps used by the 16-vector reduction below. */
MB_INLINE __m512 swap1(__m512 v) { return _mm512_permute_ps(v, 0xB1); }
MB_INLINE __m512 swap2(__m512 v) { return _mm512_permute_ps(v, 0x4E); }
MB_INLINE __m512 swap4(__m512 v) { return _mm512_shuffle_f32x4(v, v, 0xB1); }
MB_INLINE __m512 swap8(__m512 v) { return _mm512_shuffle_f32x4(v, v, 0x4E); }
/* lanes of a where mask is clear, of b where set, plus the same for the swapped halves */
#define MB_HSTEP(a, b, msk, sw)                                                                   \
  _mm512_add_ps(_mm512_mask_blend_ps((__mmask16)(msk), a, b),                                   \
                sw(_mm512_mask_blend_ps((__mmask16)(msk), b, a)))

/* out[c] = sum over the 16 lanes of p[c], for 16 vectors, in 15 adds (no horizontal reduce). */
MB_INLINE __m512 reduce16(const __m512 p[16]) {
  __m512 q[8], r[4], s[2];
  for (int i = 0; i < 8; i++) q[i] = MB_HSTEP(p[2 * i], p[2 * i + 1], 0xAAAA, swap1);
  for (int i = 0; i < 4; i++) r[i] = MB_HSTEP(q[2 * i], q[2 * i + 1], 0xCCCC, swap2);
  for (int i = 0; i < 2; i++) s[i] = MB_HSTEP(r[2 * i], r[2 * i + 1], 0xF0F0, swap4);
  return MB_HSTEP(s[0], s[1], 0xFF00, swap8);
}

/*
 * One position of a full block of 16 channels, n <= 16 states (masked by ms): h[c] at
 * h + c * hs, A rows at a + c * n. dA = exp(dt * A) for the 16 channels are independent, so the
 * unrolled loop keeps several zmm exps in flight; y's 16 dot products by one reduce16.
 * Returns y before the D skip and gate. Shared by the decode step (h = the state itself) and the
 * scan (h = the block's buffer), so both give the same bits.
 */
MB_INLINE __m512 step16(float *h, int64_t hs, const float *a, int64_t n, __mmask16 ms,
                        const float *dts, const float *dus, const float *b, const float *cm,
                        float *sa) {
  const __m512 bv = _mm512_maskz_loadu_ps(ms, b), cv = _mm512_maskz_loadu_ps(ms, cm);
  /* n == 16 (every Mamba): plain loads and stores */
  const int full = n == 16;
  __m512 p[16];
  /* G channels at a time, each step of mbv_exp written for the G of them in turn: the exp is one
   * long dependency chain, and interleaving keeps the FP scheduler fed (same arithmetic, same
   * bits as mbv_exp). */
  enum { G = 4 };
  for (int c0 = 0; c0 < 16; c0 += G) {
    __m512 x[G], nn[G], r[G], q[G], r2[G];
    for (int g = 0; g < G; g++) {
      const int c = c0 + g;
      const __m512 av = full ? _mm512_loadu_ps(a + c * n) : _mm512_maskz_loadu_ps(ms, a + c * n);
      x[g] = _mm512_mul_ps(_mm512_set1_ps(dts[c]), av);
    }
    for (int g = 0; g < G; g++)
      x[g] = _mm512_max_ps(_mm512_min_ps(x[g], _mm512_set1_ps(MB_EXP_HI)),
                           _mm512_set1_ps(MB_EXP_LO));
    for (int g = 0; g < G; g++)
      nn[g] = _mm512_roundscale_ps(_mm512_mul_ps(x[g], _mm512_set1_ps(MB_EXP_LOG2E)),
                                   _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    for (int g = 0; g < G; g++) r[g] = _mm512_fnmadd_ps(nn[g], _mm512_set1_ps(MB_LN2_HI), x[g]);
    for (int g = 0; g < G; g++)
      r[g] = _mm512_fnmadd_ps(nn[g], _mm512_set1_ps(MB_LN2_LO), r[g]);
    for (int g = 0; g < G; g++) q[g] = _mm512_set1_ps(MB_EXP_P0);
    for (int g = 0; g < G; g++) q[g] = _mm512_fmadd_ps(q[g], r[g], _mm512_set1_ps(MB_EXP_P1));
    for (int g = 0; g < G; g++) q[g] = _mm512_fmadd_ps(q[g], r[g], _mm512_set1_ps(MB_EXP_P2));
    for (int g = 0; g < G; g++) q[g] = _mm512_fmadd_ps(q[g], r[g], _mm512_set1_ps(MB_EXP_P3));
    for (int g = 0; g < G; g++) q[g] = _mm512_fmadd_ps(q[g], r[g], _mm512_set1_ps(MB_EXP_P4));
    for (int g = 0; g < G; g++) q[g] = _mm512_fmadd_ps(q[g], r[g], _mm512_set1_ps(MB_EXP_P5));
    for (int g = 0; g < G; g++) r2[g] = _mm512_mul_ps(r[g], r[g]);
    for (int g = 0; g < G; g++)
      q[g] = _mm512_fmadd_ps(q[g], r2[g], _mm512_add_ps(r[g], _mm512_set1_ps(1.0f)));
    for (int g = 0; g < G; g++) {
      const int c = c0 + g;
      const __m512 dA = _mm512_scalef_ps(q[g], nn[g]);
      __m512 hv = full ? _mm512_loadu_ps(h + c * hs) : _mm512_maskz_loadu_ps(ms, h + c * hs);
      hv = _mm512_fmadd_ps(dA, hv, _mm512_mul_ps(_mm512_set1_ps(dus[c]), bv));
      if (full)
        _mm512_storeu_ps(h + c * hs, hv);
      else
        _mm512_mask_storeu_ps(h + c * hs, ms, hv);
      if (sa) {
        if (full)
          _mm512_storeu_ps(sa + c * n, hv);
        else
          _mm512_mask_storeu_ps(sa + c * n, ms, hv);
      }
      p[c] = _mm512_mul_ps(hv, cv);
    }
  }
  return reduce16(p);
}

/* channels [c0, c0 + popcount(m)) of one sequence; hb: 16 x npad floats (64-byte aligned) */
static void scan_block_vec(const float *u, int64_t ldu, const float *delta, int64_t ld_delta,
                           const float *delta_bias, const float *A, const float *Bm, int64_t ldb, const float *Cm,
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
  const __m512 dv_bias = delta_bias ? _mm512_maskz_loadu_ps(m, delta_bias + c0) : _mm512_setzero_ps();
  /* dt (softplus), dt * u and SiLU(z) for a tile of positions ahead of their states, as
   * scan_block8 does: each softplus is a long dependency chain, and computed at its position's
   * start it waited there while the state loop filled the reorder window; in a loop of their own
   * the tile's chains overlap. The same operations, so the same values. */
  enum { TILE = 16 };
  float dtb[TILE][16] __attribute__((aligned(64)));
  float dub[TILE][16] __attribute__((aligned(64)));
  float szb[TILE][16] __attribute__((aligned(64)));
  float ys[16] __attribute__((aligned(64)));
  for (int64_t t = 0; t < len; t++) {
    const int64_t ti = t % TILE;
    if (ti == 0) {
      const int64_t tn = len - t < TILE ? len - t : TILE;
      for (int64_t i = 0; i < tn; i++) {
        const __m512 ui = _mm512_maskz_loadu_ps(m, u + (t + i) * ldu + c0);
        __m512 dt = _mm512_maskz_loadu_ps(m, delta + (t + i) * ld_delta + c0);
        if (delta_bias) dt = _mm512_add_ps(dt, dv_bias);
        if (delta_softplus) dt = mbv_softplus(dt);
        _mm512_store_ps(dtb[i], dt);
        _mm512_store_ps(dub[i], _mm512_mul_ps(dt, ui));
        if (z) _mm512_store_ps(szb[i], mbv_silu(_mm512_maskz_loadu_ps(m, z + (t + i) * ldz + c0)));
      }
    }
    if (t + TILE < len) { /* a task walks its 16 channels down the rows: a new line each, asked
                           * for a tile ahead */
      _mm_prefetch((const char *)(u + (t + TILE) * ldu + c0), _MM_HINT_T0);
      _mm_prefetch((const char *)(delta + (t + TILE) * ld_delta + c0), _MM_HINT_T0);
      if (z) _mm_prefetch((const char *)(z + (t + TILE) * ldz + c0), _MM_HINT_T0);
    }
    const __m512 uv = _mm512_maskz_loadu_ps(m, u + t * ldu + c0);
    const float *dts = dtb[ti], *dus = dub[ti];
    const float *b = Bm + t * ldb, *cm = Cm + t * ldc;
    float *sa = states_all ? states_all + (t * d + c0) * n : NULL;
    if (n <= 16 && nc == 16) {
      const __m512 yv0 = n == 16 ? step16(hb, 16, A + c0 * 16, 16, mbv_mask(n), dts, dus, b, cm, sa)
                                 : step16(hb, npad, A + c0 * n, n, mbv_mask(n), dts, dus, b, cm, sa);
      _mm512_store_ps(ys, yv0);
    } else if (n <= 16) {
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
    if (z) yv = _mm512_mul_ps(yv, _mm512_load_ps(szb[ti]));
    _mm512_mask_storeu_ps(y + t * ldy + c0, m, yv);
  }
  if (state)
    for (int c = 0; c < nc; c++) memcpy(state + (c0 + c) * n, hb + c * npad, (size_t)n * 4);
}

/*
 * Decoding (len == 1, n <= 16): the state is updated in place (no buffer, no copies), full
 * blocks by step16; partial blocks (d % 16) by scan_block_vec. Blocks [t0, t1) of `batch`.
 * Runs of up to MB_SB_RUN full blocks in two passes: first dt (softplus), dt * u and the gate
 * silu(z) of the whole run, then step16 per block. step16 broadcasts dt and dt * u one channel at
 * a time from memory; written just before, those loads wait on store forwarding, and the
 * softplus and silu chains would sit between the exps (measured: ~2.4 ns a channel of 5.7).
 * In a decoding step A and the state come from memory (the weights' stream has evicted them):
 * each block prefetches the rows of the block MB_SB_PF ahead (dt_proj + update 17.8 -> 15.7 us
 * a layer of the 353M model over three alternating runs, 16.4-18.0 us in four later ones: at the
 * edge of this host's noise; 2, 4 and 8 blocks alike).
 */
#define MB_SB_RUN 32
#define MB_SB_PF 2
static void step_blocks_vec(const float *u, int64_t ldu, const float *delta, int64_t ld_delta,
                            const float *delta_bias, const float *A, const float *Bm, int64_t ldb, const float *Cm,
                            int64_t ldc, const float *Dskip, const float *z, int64_t ldz,
                            float *state, int64_t d, int64_t n, int delta_softplus, float *y,
                            int64_t ldy, int64_t t0, int64_t t1, float *hb) {
  const int64_t nblk = (d + 15) / 16, nfull = d / 16;
  const __mmask16 ms = mbv_mask(n);
  float dts[MB_SB_RUN * 16] __attribute__((aligned(64)));
  float dus[MB_SB_RUN * 16] __attribute__((aligned(64)));
  float gate[MB_SB_RUN * 16] __attribute__((aligned(64)));
  for (int64_t task = t0; task < t1;) {
    const int64_t b = task / nblk, j0 = task % nblk;
    if (j0 >= nfull) { /* the partial last block */
      scan_block_vec(u + b * ldu, ldu, delta + b * ld_delta, ld_delta, delta_bias, A, Bm + b * ldb, ldb,
                     Cm + b * ldc, ldc, Dskip, z ? z + b * ldz : NULL, ldz, state + b * d * n,
                     NULL, 1, d, n, delta_softplus, y + b * ldy, ldy, j0 * 16,
                     mbv_mask(d - j0 * 16), hb, 16);
      task++;
      continue;
    }
    int64_t j1 = j0 + (t1 - task);
    if (j1 > nfull) j1 = nfull;
    if (j1 - j0 > MB_SB_RUN) j1 = j0 + MB_SB_RUN;
    const float *ub = u + b * ldu, *zb = z ? z + b * ldz : NULL;
    for (int64_t j = j0; j < j1; j++) {
      const int64_t c0 = j * 16, o = (j - j0) * 16;
      __m512 dt = _mm512_loadu_ps(delta + b * ld_delta + c0);
      if (delta_bias) dt = _mm512_add_ps(dt, _mm512_loadu_ps(delta_bias + c0));
      if (delta_softplus) dt = mbv_softplus(dt);
      _mm512_store_ps(dts + o, dt);
      _mm512_store_ps(dus + o, _mm512_mul_ps(dt, _mm512_loadu_ps(ub + c0)));
      if (zb) _mm512_store_ps(gate + o, mbv_silu(_mm512_loadu_ps(zb + c0)));
    }
    for (int64_t j = j0; j < j1; j++) {
      const int64_t c0 = j * 16, o = (j - j0) * 16;
      if (j + MB_SB_PF < nfull) {
        const char *pa = (const char *)(A + (c0 + MB_SB_PF * 16) * n);
        const char *ps = (const char *)(state + (b * d + c0 + MB_SB_PF * 16) * n);
        for (int64_t q = 0; q < 16 * n * 4; q += 64) {
          _mm_prefetch(pa + q, _MM_HINT_T0);
          _mm_prefetch(ps + q, _MM_HINT_T0);
        }
      }
      __m512 yv = n == 16 ? step16(state + (b * d + c0) * 16, 16, A + c0 * 16, 16, ms, dts + o,
                                   dus + o, Bm + b * ldb, Cm + b * ldc, NULL)
                          : step16(state + (b * d + c0) * n, n, A + c0 * n, n, ms, dts + o,
                                   dus + o, Bm + b * ldb, Cm + b * ldc, NULL);
      const __m512 dv_skip = Dskip ? _mm512_loadu_ps(Dskip + c0) : _mm512_setzero_ps();
      yv = _mm512_fmadd_ps(dv_skip, _mm512_loadu_ps(ub + c0), yv);
      if (zb) yv = _mm512_mul_ps(yv, _mm512_load_ps(gate + o));
      _mm512_storeu_ps(y + b * ldy + c0, yv);
    }
    task += j1 - j0;
  }
}
#endif /* __AVX512F__ */

#if MB_AVX2
/*
 * The 8-lane scan (AVX2 + FMA): channels [c0, c0 + k) of one sequence (k <= 8), one channel a
 * lane, the n states in a loop. Per channel the arithmetic is the scalar path's, in its order
 * (h = exp(dt A) h + du B, then y += C h over the states, then y + D u, times silu(z)), with
 * mbv8_exp for expf, so no reduction across lanes is needed. Every length runs this one function
 * (a decoding step's whole blocks run step_block8, the same operations), so a decoding step and a
 * scan over positions give the same bits. hb and at: n x 8 floats (32-byte aligned): the states
 * with the channels innermost, and A transposed so.
 */
/* The block's states (hb: n x 8, channels innermost) back to k channels' rows of n at dst: states
 * [0, nt8) by 8 x 8 transposes (nt8 = 0 unless k = 8), the rest one by one. The final state and
 * the states after each position (states_all) both go this way. */
static void hb_store8(const float *hb, int64_t n, int64_t nt8, int k, float *dst) {
  for (int64_t s = 0; s < nt8; s += 8) mbv8_transpose8(hb + s * 8, 8, dst + s, n);
  for (int i = 0; i < k; i++)
    for (int64_t s = nt8; s < n; s++) dst[i * n + s] = hb[s * 8 + i];
}

/* One state of 8 channels at one position: h = e h + du b into hb, and acc + c h returned. */
static inline __m256 state8(float *hb, __m256 e, __m256 du, float b, float c, __m256 acc) {
  const __m256 h = _mm256_fmadd_ps(e, _mm256_load_ps(hb), _mm256_mul_ps(du, _mm256_set1_ps(b)));
  _mm256_store_ps(hb, h);
  return _mm256_fmadd_ps(_mm256_set1_ps(c), h, acc);
}

/* A decoding step of 8 whole channels with a state of n = 8m states: the states are updated in
 * their rows (a channel's states 8 to a vector: A, B and the state read and the state written
 * without the 6 block transposes of scan_block8), then only the new states go to channel lanes (two
 * transposes at n = 16) for y's chain over the states. Each value comes from the same operations on
 * the same operands as in scan_block8 (dt u b and dt A are the same products, the exps are lane by
 * lane, y's chain runs over the states in order), so a step has the bits of a scan over positions. */
static void step_block8(const float *u, __m256 dt, const float *A, const float *Bm,
                        const float *Cm, const float *Dskip, const float *z, float *state,
                        int64_t n, float *y, int64_t c0, float *hb) {
  const __m256 uv = _mm256_loadu_ps(u + c0);
  float dts[8] __attribute__((aligned(32))), dus[8] __attribute__((aligned(32)));
  _mm256_store_ps(dts, dt);
  _mm256_store_ps(dus, _mm256_mul_ps(dt, uv));
  float *h0 = state + c0 * n;
  const float *a0 = A + c0 * n;
  /* the block's 8n states as n vectors, four at a time (their exps side by side); vector q holds
   * channel q / (n / 8)'s states (q % (n / 8)) * 8 on: ch and st follow q without a division */
  int64_t ch = 0, st = 0;
  for (int64_t q = 0; q < n; q += 4) {
    __m256 xs[4], e[4];
    int64_t chs[4], sts[4];
    for (int g = 0; g < 4; g++) {
      chs[g] = ch, sts[g] = st;
      xs[g] = _mm256_mul_ps(_mm256_set1_ps(dts[ch]), _mm256_loadu_ps(a0 + (q + g) * 8));
      st += 8;
      if (st == n) st = 0, ch++;
    }
    mbv8_exp4(xs, e);
    for (int g = 0; g < 4; g++) {
      const __m256 du_b = _mm256_mul_ps(_mm256_set1_ps(dus[chs[g]]), _mm256_loadu_ps(Bm + sts[g]));
      _mm256_storeu_ps(h0 + (q + g) * 8,
                       _mm256_fmadd_ps(e[g], _mm256_loadu_ps(h0 + (q + g) * 8), du_b));
    }
  }
  for (int64_t s = 0; s < n; s += 8) mbv8_transpose8(h0 + s, n, hb + s * 8, 8);
  __m256 acc = _mm256_setzero_ps();
  for (int64_t s = 0; s < n; s++)
    acc = _mm256_fmadd_ps(_mm256_set1_ps(Cm[s]), _mm256_load_ps(hb + s * 8), acc);
  __m256 yv = _mm256_fmadd_ps(Dskip ? _mm256_loadu_ps(Dskip + c0) : _mm256_setzero_ps(), uv, acc);
  if (z) yv = _mm256_mul_ps(yv, mbv8_silu(_mm256_loadu_ps(z + c0)));
  _mm256_storeu_ps(y + c0, yv);
}

/* A decoding step's dt for blocks [0, nb) of 8 channels from c0 into dt (nb x 8): softplus four
 * blocks at a time (mbv8_softplus4, the values of mbv8_softplus), ahead of the blocks' states.
 * Computed at its block's start, each softplus (~150 cycles deep) held up that block's exps. */
static void step_dt8(const float *delta, const float *delta_bias, int delta_softplus, int64_t c0,
                     int64_t nb, float *dt) {
  for (int64_t b = 0; b < nb; b += 4) {
    const int m = nb - b < 4 ? (int)(nb - b) : 4;
    __m256 v[4];
    for (int g = 0; g < 4; g++) {
      const int64_t c = c0 + (b + (g < m ? g : 0)) * 8;
      v[g] = _mm256_loadu_ps(delta + c);
      if (delta_bias) v[g] = _mm256_add_ps(v[g], _mm256_loadu_ps(delta_bias + c));
    }
    if (delta_softplus) mbv8_softplus4(v, v);
    for (int g = 0; g < m; g++) _mm256_store_ps(dt + (b + g) * 8, v[g]);
  }
}

static void scan_block8(const float *u, int64_t ldu, const float *delta, int64_t ld_delta,
                        const float *delta_bias, const float *A, const float *Bm, int64_t ldb,
                        const float *Cm, int64_t ldc, const float *Dskip, const float *z,
                        int64_t ldz, float *state, float *states_all, int64_t len, int64_t d,
                        int64_t n, int delta_softplus, float *y, int64_t ldy, int64_t c0, int k,
                        float *hb, float *at) {
  /* a decoding step is mostly these copies: whole 8 x 8 blocks go by vector transposes */
  const int64_t nt8 = k == 8 ? n / 8 * 8 : 0;
  for (int64_t s = 0; s < nt8; s += 8) {
    mbv8_transpose8(A + c0 * n + s, n, at + s * 8, 8);
    if (state) mbv8_transpose8(state + c0 * n + s, n, hb + s * 8, 8);
  }
  for (int64_t s = nt8; s < n; s++)
    for (int i = 0; i < 8; i++) at[s * 8 + i] = i < k ? A[(c0 + i) * n + s] : 0.0f;
  for (int64_t s = state ? nt8 : 0; s < n; s++)
    for (int i = 0; i < 8; i++) hb[s * 8 + i] = i < k && state ? state[(c0 + i) * n + s] : 0.0f;
  const __m256 dskip = Dskip ? mbv8_load_part(Dskip + c0, k) : _mm256_setzero_ps();
  const __m256 dbias = delta_bias ? mbv8_load_part(delta_bias + c0, k) : _mm256_setzero_ps();
  /* dt (softplus) and SiLU(z) for a tile of positions ahead of their states: each is a long
   * dependency chain (softplus ~150 cycles), and computed at its position's start it waited there,
   * the state loop filling the reorder window (a third of a 2048 x 896 scan); side by side in a
   * loop of their own they overlap one another. The same operations, so the same values. */
  enum { TILE = 16 };
  float dtb[TILE][8] __attribute__((aligned(32)));
  float szb[TILE][8] __attribute__((aligned(32)));
  for (int64_t t = 0; t < len; t++) {
    const int64_t ti = t % TILE;
    if (ti == 0) {
      const int64_t tn = len - t < TILE ? len - t : TILE;
      int64_t i = 0;
      for (; i + 4 <= tn; i += 4) { /* four softplus side by side (mbv8_softplus4) */
        __m256 v[4];
        for (int g = 0; g < 4; g++) {
          v[g] = mbv8_load_part(delta + (t + i + g) * ld_delta + c0, k);
          if (delta_bias) v[g] = _mm256_add_ps(v[g], dbias);
        }
        if (delta_softplus) mbv8_softplus4(v, v);
        for (int g = 0; g < 4; g++) _mm256_store_ps(dtb[i + g], v[g]);
      }
      for (; i < tn; i++) { /* the tile's last few (a decoding step's one) */
        __m256 v = mbv8_load_part(delta + (t + i) * ld_delta + c0, k);
        if (delta_bias) v = _mm256_add_ps(v, dbias);
        if (delta_softplus) v = mbv8_softplus(v);
        _mm256_store_ps(dtb[i], v);
      }
      if (z)
        for (int64_t i = 0; i < tn; i++)
          _mm256_store_ps(szb[i], mbv8_silu(mbv8_load_part(z + (t + i) * ldz + c0, k)));
    }
    /* a task walks its 8 channels down the rows: each row is a new line, asked for ahead */
    if (t + 8 < len) _mm_prefetch((const char *)(u + (t + 8) * ldu + c0), _MM_HINT_T0);
    if (t + TILE < len) { /* delta and z: a tile ahead */
      _mm_prefetch((const char *)(delta + (t + TILE) * ld_delta + c0), _MM_HINT_T0);
      if (z) _mm_prefetch((const char *)(z + (t + TILE) * ldz + c0), _MM_HINT_T0);
    }
    const __m256 uv = mbv8_load_part(u + t * ldu + c0, k);
    const __m256 dt = _mm256_load_ps(dtb[ti]);
    const __m256 du = _mm256_mul_ps(dt, uv);
    const float *b = Bm + t * ldb, *cm = Cm + t * ldc;
    __m256 acc = _mm256_setzero_ps();
    int64_t s = 0;
    /* four states a turn, their exps behind one range check (mbv8_exp4) */
    for (; s + 4 <= n; s += 4) {
      __m256 xs[4], e[4];
      for (int g = 0; g < 4; g++) xs[g] = _mm256_mul_ps(dt, _mm256_load_ps(at + (s + g) * 8));
      mbv8_exp4(xs, e);
      for (int g = 0; g < 4; g++)
        acc = state8(hb + (s + g) * 8, e[g], du, b[s + g], cm[s + g], acc);
    }
    for (; s < n; s++)
      acc = state8(hb + s * 8, mbv8_exp(_mm256_mul_ps(dt, _mm256_load_ps(at + s * 8))), du, b[s],
                   cm[s], acc);
    if (states_all) hb_store8(hb, n, nt8, k, states_all + (t * d + c0) * n);
    __m256 yv = _mm256_fmadd_ps(dskip, uv, acc);
    if (z) yv = _mm256_mul_ps(yv, _mm256_load_ps(szb[ti]));
    mbv8_store_part(y + t * ldy + c0, yv, k);
  }
  if (state) hb_store8(hb, n, nt8, k, state + c0 * n);
}
#endif /* MB_AVX2 */

/* The scan's kernels as pool jobs: items are 16-channel blocks of one sequence (the decoding
 * step, the vector scan), 8-channel blocks (AVX2) or single channels (scalar), over all
 * sequences. */
typedef struct {
  int kind; /* 0: len-1 step blocks, 1: vector blocks, 2: scalar channels, 3: 8-lane blocks */
  const float *u;
  int64_t ldu;
  const float *delta;
  int64_t ld_delta;
  const float *delta_bias;
  const float *A, *Bm;
  int64_t ldb;
  const float *Cm;
  int64_t ldc;
  const float *Dskip, *z;
  int64_t ldz;
  float *state, *states_all;
  int64_t len, d, n;
  int delta_softplus;
  float *y;
  int64_t ldy;
  atomic_int failed;
} scan_job;

static void scan_items(void *raw, int64_t t0, int64_t t1) {
  scan_job *j = (scan_job *)raw;
  const int64_t len = j->len, d = j->d, n = j->n;
#ifdef __AVX512F__
  if (j->kind == 0) {
    float hb[16 * 16] __attribute__((aligned(64)));
    step_blocks_vec(j->u, j->ldu, j->delta, j->ld_delta, j->delta_bias, j->A, j->Bm, j->ldb, j->Cm, j->ldc,
                    j->Dskip, j->z, j->ldz, j->state, d, n, j->delta_softplus, j->y, j->ldy, t0,
                    t1, hb);
    return;
  }
  if (j->kind == 1) {
    const int64_t nblk = (d + 15) / 16, npad = (n + 15) / 16 * 16;
    float *hb = (float *)aligned_alloc(64, (size_t)(16 * npad) * 4);
    if (!hb) {
      atomic_store(&j->failed, 1);
      return;
    }
    for (int64_t task = t0; task < t1; task++) {
      const int64_t b = task / nblk, c0 = (task % nblk) * 16, r = b * len;
      scan_block_vec(j->u + r * j->ldu, j->ldu, j->delta + r * j->ld_delta, j->ld_delta,
                     j->delta_bias, j->A,
                     j->Bm + r * j->ldb, j->ldb, j->Cm + r * j->ldc, j->ldc, j->Dskip,
                     j->z ? j->z + r * j->ldz : NULL, j->ldz,
                     j->state ? j->state + b * d * n : NULL,
                     j->states_all ? j->states_all + r * d * n : NULL, len, d, n,
                     j->delta_softplus, j->y + r * j->ldy, j->ldy, c0, mbv_mask(d - c0), hb,
                     npad);
    }
    free(hb);
    return;
  }
#endif
#if MB_AVX2
  if (j->kind == 3) {
    const int64_t nblk = (d + 7) / 8;
    float *hb = (float *)aligned_alloc(32, (size_t)(16 * n) * 4);
    if (!hb) {
      atomic_store(&j->failed, 1);
      return;
    }
    for (int64_t task = t0; task < t1; task++) {
      const int64_t b = task / nblk, c0 = (task % nblk) * 8, r = b * len;
      if (len == 1 && n % 8 == 0 && j->state && !j->states_all && c0 + 8 <= d) {
        /* a decoding step: this sequence's whole blocks from here at once (step_block8) */
        int64_t nb = 1;
        while (task + nb < t1 && (task + nb) % nblk != 0 && c0 + (nb + 1) * 8 <= d) nb++;
        for (int64_t q = 0; q < nb; q += 16) {
          const int64_t m = nb - q < 16 ? nb - q : 16;
          float dt[16 * 8] __attribute__((aligned(32)));
          step_dt8(j->delta + r * j->ld_delta, j->delta_bias, j->delta_softplus, c0 + q * 8, m,
                   dt);
          for (int64_t i = 0; i < m; i++)
            step_block8(j->u + r * j->ldu, _mm256_load_ps(dt + i * 8), j->A, j->Bm + r * j->ldb,
                        j->Cm + r * j->ldc, j->Dskip, j->z ? j->z + r * j->ldz : NULL,
                        j->state + b * d * n, n, j->y + r * j->ldy, c0 + (q + i) * 8, hb);
        }
        task += nb - 1;
        continue;
      }
      scan_block8(j->u + r * j->ldu, j->ldu, j->delta + r * j->ld_delta, j->ld_delta,
                  j->delta_bias, j->A, j->Bm + r * j->ldb, j->ldb, j->Cm + r * j->ldc, j->ldc,
                  j->Dskip, j->z ? j->z + r * j->ldz : NULL, j->ldz,
                  j->state ? j->state + b * d * n : NULL,
                  j->states_all ? j->states_all + r * d * n : NULL, len, d, n,
                  j->delta_softplus, j->y + r * j->ldy, j->ldy, c0,
                  d - c0 < 8 ? (int)(d - c0) : 8, hb, hb + 8 * n);
    }
    free(hb);
    return;
  }
#endif
  float *h = (float *)malloc((size_t)n * 4);
  if (!h) {
    atomic_store(&j->failed, 1);
    return;
  }
  for (int64_t task = t0; task < t1; task++) {
    const int64_t b = task / d, c = task % d, r = b * len;
    float *st = j->state ? j->state + (b * d + c) * n : NULL;
    if (st)
      memcpy(h, st, (size_t)n * 4);
    else
      memset(h, 0, (size_t)n * 4);
    scan_channel_scalar(j->u + r * j->ldu, j->ldu, j->delta + r * j->ld_delta, j->ld_delta,
                        j->delta_bias, j->A,
                        j->Bm + r * j->ldb, j->ldb, j->Cm + r * j->ldc, j->ldc, j->Dskip,
                        j->z ? j->z + r * j->ldz : NULL, j->ldz, h,
                        j->states_all ? j->states_all + r * d * n : NULL, len, d, n,
                        j->delta_softplus, j->y + r * j->ldy, j->ldy, c);
    if (st) memcpy(st, h, (size_t)n * 4);
  }
  free(h);
}

int mbcpu_selective_scan(mb_ctx *ctx, const float *u, const uint16_t *u_bf16, int64_t ldu,
                         const float *delta, const uint16_t *delta_bf16, int64_t ld_delta,
                         const float *delta_bias, const float *A, const float *Bm, int64_t ldb,
                         const float *Cm, int64_t ldc, const float *Dskip, const float *z,
                         const uint16_t *z_bf16,
                         int64_t ldz, float *state, float *states_all, int64_t batch, int64_t len,
                         int64_t d, int64_t n, int delta_softplus, float *y, int64_t ldy,
                         uint16_t *y_bf16, int32_t *y_f16_exp, const int32_t *u_f16_exp,
                         const int32_t *delta_f16_exp) {
  if (u_bf16 || delta_bf16 || z_bf16) { /* the floats the bits stand for, then the fp32 scan */
    const int64_t rows = batch * len;
    float *uf = !u_bf16    ? NULL
                : u_f16_exp ? mbcpu_widen_f16_rows(u_bf16, ldu, rows, d, *u_f16_exp)
                            : mbcpu_widen_rows(u_bf16, ldu, rows, d);
    float *df = !delta_bf16    ? NULL
                : delta_f16_exp ? mbcpu_widen_f16_rows(delta_bf16, ld_delta, rows, d, *delta_f16_exp)
                                : mbcpu_widen_rows(delta_bf16, ld_delta, rows, d);
    float *zf = z_bf16 ? mbcpu_widen_rows(z_bf16, ldz, rows, d) : NULL;
    int st = MB_OK;
    if ((u_bf16 && !uf) || (delta_bf16 && !df) || (z_bf16 && !zf))
      st = mb_fail(MB_ERR_OOM, "cpu: selective_scan: no memory to widen u, delta or z");
    else
      st = mbcpu_selective_scan(ctx, uf ? uf : u, NULL, uf ? d : ldu, df ? df : delta, NULL,
                                df ? d : ld_delta,
                                delta_bias, A, Bm, ldb, Cm, ldc, Dskip, zf ? zf : z, NULL,
                                zf ? d : ldz, state, states_all, batch, len, d, n, delta_softplus,
                                y, ldy, y_bf16, y_f16_exp, NULL, NULL);
    free(uf);
    free(df);
    free(zf);
    return st;
  }
  const int64_t work = batch * len * d * n;
  int nt = work < 16384 ? 1 : ctx->num_threads;
  /* the bf16 copy: the fp32 y rounded (into a temporary when y is not wanted) */
  float *tmp = NULL;
  if (!y) {
    tmp = (float *)malloc((size_t)(batch * len * ldy) * sizeof(float));
    if (!tmp) return mb_fail(MB_ERR_OOM, "mb_selective_scan: out of memory (the bf16 y's rows)");
    y = tmp;
  }
  scan_job job = {.kind = 2, .u = u, .ldu = ldu, .delta = delta, .ld_delta = ld_delta,
                  .delta_bias = delta_bias, .A = A,
                  .Bm = Bm, .ldb = ldb, .Cm = Cm, .ldc = ldc, .Dskip = Dskip, .z = z, .ldz = ldz,
                  .state = state, .states_all = states_all, .len = len, .d = d, .n = n,
                  .delta_softplus = delta_softplus, .y = y, .ldy = ldy};
  int64_t items = batch * d;
#ifdef __AVX512F__
  if (mbcpu_vec(ctx) && len == 1 && n <= 16 && !states_all && state) {
    job.kind = 0;
    items = batch * ((d + 15) / 16);
    nt = work < MB_SU_THR ? 1 : ctx->num_threads;
  } else if (mbcpu_vec(ctx)) {
    job.kind = 1;
    items = batch * ((d + 15) / 16);
  }
#elif MB_AVX2
  if (mbcpu_vec8(ctx)) {
    job.kind = 3;
    items = batch * ((d + 7) / 8);
    if (len == 1) nt = work < MB_SU_THR8 ? 1 : ctx->num_threads;
  }
#endif
  mbcpu_parallel_for(ctx, nt, items, scan_items, &job);
  if (y_bf16) mbcpu_rows_to_bf16(y, ldy, batch * len, d, y_bf16, ldy);
  free(tmp);
  if (atomic_load(&job.failed))
    return mb_fail(MB_ERR_OOM, "mb_selective_scan: out of memory (state buffer)");
  /* out_proj's exponent: mb_to_f16_scaled's over y's rows (y is given: api.c) */
  if (y_f16_exp) *y_f16_exp = mbcpu_f16_rows_exp(ctx, y, ldy, batch * len, d);
  return MB_OK;
}

/* The fused decoding op's CPU twin gives the bits of mb_linear (dt_proj) then the state update, so
 * the CUDA kernel is held equal to the unfused pair. */
#if defined(__AVX512F__) || MB_AVX2
/* The fused dt_proj + state update as a pool job: thread slices of blocks of `blk` channels (16,
 * or 8 in the 8-lane build); the update half is the one-step scan's own job (scan_items, kind 0
 * or 3) over those blocks. */
typedef struct {
  scan_job update; /* delta: dt_proj's output, written here */
  const float *x_dbl;
  int64_t ld_xdbl;
  const float *xp;
  int64_t kp;
  const void *dt_w;
  int wdtype;
  const float *dt_bias;
  int64_t dt_rank, batch, nblk, blk;
} update_dt_job;

static void update_dt_slice(void *raw, int tid, int nt) {
  update_dt_job *j = (update_dt_job *)raw;
  const int64_t d = j->update.d;
  int64_t j0, j1;
  mbcpu_range(j->nblk, tid, nt, &j0, &j1);
  const int64_t o0 = j0 * j->blk, o1 = j1 * j->blk < d ? j1 * j->blk : d;
  if (o0 >= o1) return;
  mbcpu_linear_rows(1, j->x_dbl, j->ld_xdbl, j->xp, j->kp, j->dt_w, j->wdtype, j->dt_bias,
                    (int)j->batch, j->dt_rank, o0, o1, (float *)j->update.delta, d);
  for (int64_t b = 0; b < j->batch; b++)
    scan_items(&j->update, b * j->nblk + j0, b * j->nblk + j1);
}
#endif

int mbcpu_selective_state_update_dt(mb_ctx *ctx, const float *u, int64_t ldu, const float *x_dbl,
                                    int64_t ld_xdbl, const void *dt_w, int wdtype,
                                    const float *dt_bias, int64_t dt_rank, const float *A,
                                    const float *Bm, int64_t ldb, const float *Cm, int64_t ldc,
                                    const float *Dskip, const float *z, int64_t ldz, float *state,
                                    int64_t batch, int64_t d, int64_t n, int delta_softplus,
                                    float *delta_out, float *y, int64_t ldy, uint16_t *y_bf16) {
#if defined(__AVX512F__) || MB_AVX2
  /* Fused: each thread computes dt_proj for its own blocks of channels (the row kernels of
   * mb_linear, so the same bits) and updates those channels' states at once: one parallel region
   * instead of two, and delta never leaves the thread's cache. */
#ifdef __AVX512F__
  const int fused = mbcpu_vec(ctx) && n <= 16, kind = 0, blk = 16, permute = 1;
  const int64_t thr = MB_SU_THR;
#else
  const int fused = mbcpu_vec8(ctx), kind = 3, blk = 8, permute = 0; /* the 8-lane rows read x */
  const int64_t thr = MB_SU_THR8;
#endif
  if (fused && batch <= MBCPU_SKINNY_MAX) {
    const int bf16 = wdtype == MB_DTYPE_BF16;
    const int64_t kp = mbcpu_linear_kp(dt_rank);
    const size_t xfl = bf16 && permute ? (size_t)(batch * kp) : 0;
    const size_t dfl = delta_out ? 0 : (size_t)(batch * d);
    float *scr = (float *)mbcpu_scratch(ctx, (xfl + dfl) * sizeof(float));
    if (!scr && xfl + dfl > 0)
      return mb_fail(MB_ERR_OOM, "mb_selective_state_update_dt: out of memory (scratch)");
    float *xp = xfl ? scr : NULL;
    if (xp) mbcpu_linear_prepare_x(x_dbl, ld_xdbl, batch, dt_rank, kp, xp);
    float *delta = delta_out ? delta_out : scr + xfl;
    const int64_t nblk = (d + blk - 1) / blk;
    const size_t wbytes = (size_t)d * (size_t)dt_rank * (bf16 ? 2 : 4);
    const int nt = wbytes < 65536 && batch * d * n < thr ? 1 : ctx->num_threads;
    update_dt_job job = {.update = {.kind = kind, .u = u, .ldu = ldu, .delta = delta,
                                    .ld_delta = d, .A = A, .Bm = Bm, .ldb = ldb, .Cm = Cm,
                                    .ldc = ldc, .Dskip = Dskip, .z = z, .ldz = ldz,
                                    .state = state, .len = 1, .d = d, .n = n,
                                    .delta_softplus = delta_softplus, .y = y, .ldy = ldy},
                         .x_dbl = x_dbl, .ld_xdbl = ld_xdbl, .xp = xp, .kp = kp, .dt_w = dt_w,
                         .wdtype = wdtype, .dt_bias = dt_bias, .dt_rank = dt_rank,
                         .batch = batch, .nblk = nblk, .blk = blk};
    mbcpu_parallel(ctx, nt, update_dt_slice, &job);
    if (y_bf16) mbcpu_rows_to_bf16(y, ldy, batch, d, y_bf16, ldy);
    if (atomic_load(&job.update.failed))
      return mb_fail(MB_ERR_OOM, "mb_selective_state_update_dt: out of memory (state buffer)");
    return MB_OK;
  }
#endif
  /* Elsewhere the unfused pair: mb_linear then the one-step scan. */
  float *delta = delta_out;
  if (!delta) {
    delta = (float *)malloc((size_t)(batch * d) * sizeof(float));
    if (!delta) return mb_fail(MB_ERR_OOM, "mb_selective_state_update_dt: out of memory (delta)");
  }
  int st = mbcpu_linear(ctx, x_dbl, ld_xdbl, dt_w, wdtype, dt_bias, batch, dt_rank, d, delta, d);
  if (st == MB_OK)
    st = mbcpu_selective_scan(ctx, u, NULL, ldu, delta, NULL, d, NULL, A, Bm, ldb, Cm, ldc, Dskip,
                              z, NULL, ldz, state, NULL, batch, 1, d, n, delta_softplus, y, ldy,
                              y_bf16, NULL, NULL, NULL);
  if (delta != delta_out) free(delta);
  return st;
}


/* mb_selective_scan_dt on the CPU: dt_proj by mb_linear in calls of at most 8 rows (each row with
 * the bits of a one-row call, as the fused decoding op computes it), then the scan, whose
 * positions run step16 / scan_block_vec / the scalar channel loop exactly as the one-position
 * decoding update does: every position has the bits of a decoding step. */
int mbcpu_selective_scan_dt(mb_ctx *ctx, const float *u, int64_t ldu, const float *x_dbl,
                            int64_t ld_xdbl, const void *dt_w, int wdtype, const float *dt_bias,
                            int64_t dt_rank, const float *A, const float *Bm, int64_t ldb,
                            const float *Cm, int64_t ldc, const float *Dskip, const float *z,
                            int64_t ldz, float *state, float *states_all, int64_t batch,
                            int64_t len, int64_t d, int64_t n, int delta_softplus,
                            float *delta_out, float *y, int64_t ldy) {
  const int64_t rows = batch * len;
  float *delta = delta_out;
  if (!delta) {
    delta = (float *)malloc((size_t)(rows * d) * sizeof(float));
    if (!delta) return mb_fail(MB_ERR_OOM, "mb_selective_scan_dt: out of memory (delta)");
  }
  int st = MB_OK;
  for (int64_t r = 0; r < rows && st == MB_OK; r += MBCPU_SKINNY_MAX) {
    const int64_t m = rows - r < MBCPU_SKINNY_MAX ? rows - r : MBCPU_SKINNY_MAX;
    st = mbcpu_linear(ctx, x_dbl + r * ld_xdbl, ld_xdbl, dt_w, wdtype, dt_bias, m, dt_rank, d,
                      delta + r * d, d);
  }
  if (st == MB_OK)
    st = mbcpu_selective_scan(ctx, u, NULL, ldu, delta, NULL, d, NULL, A, Bm, ldb, Cm, ldc, Dskip,
                              z, NULL, ldz, state, states_all, batch, len, d, n, delta_softplus, y,
                              ldy, NULL, NULL, NULL, NULL);
  if (delta != delta_out) free(delta);
  return st;
}
