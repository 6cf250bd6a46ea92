/*
 * ops.c — embedding, fused add + norm, causal depthwise conv1d, log-softmax and log-prob/rank on
 * the CPU: threads over rows (or channel blocks), AVX-512 inside a row with a scalar fallback.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "cpu_backend.h"
#include "vmath.h"

/* Threads to use for `work` elementary operations (small work runs on one thread). */
static int threads_for(mb_ctx *ctx, int64_t work) {
  return work < 32768 ? 1 : ctx->num_threads;
}

/* ---- embedding ---------------------------------------------------------------------------- */

typedef struct {
  const int32_t *ids;
  const void *table;
  int wdtype;
  int64_t d;
  float *out;
  int vec;
} embed_job;

static void embed_rows(void *raw, int64_t i0, int64_t i1) {
  const embed_job *j = (const embed_job *)raw;
  const int64_t d = j->d;
  for (int64_t i = i0; i < i1; i++) {
    float *o = j->out + i * d;
    if (j->wdtype == MB_DTYPE_F32) {
      memcpy(o, (const float *)j->table + (int64_t)j->ids[i] * d, (size_t)d * 4);
    } else {
      const uint16_t *h = (const uint16_t *)j->table + (int64_t)j->ids[i] * d;
      int64_t k = 0;
#ifdef __AVX512F__
      if (j->vec)
        for (; k < d; k += 16) {
          __mmask16 m = mbv_mask(d - k);
          _mm512_mask_storeu_ps(o + k, m, mbv_maskz_load_bf16(m, h + k));
        }
#endif
      for (; k < d; k++) o[k] = mb_bf16_to_f32(h[k]);
    }
  }
}

int mbcpu_embedding(mb_ctx *ctx, const int32_t *ids, int64_t n, const void *table, int wdtype,
                    int64_t vocab, int64_t d, float *out) {
  for (int64_t i = 0; i < n; i++)
    if (ids[i] < 0 || ids[i] >= vocab)
      return mb_fail(MB_ERR_INVALID, "mb_embedding: ids[%lld] = %d is outside [0, %lld)",
                     (long long)i, ids[i], (long long)vocab);
  embed_job job = {.ids = ids, .table = table, .wdtype = wdtype, .d = d, .out = out,
                   .vec = mbcpu_vec(ctx)};
  mbcpu_parallel_for(ctx, threads_for(ctx, n * d), n, embed_rows, &job);
  return MB_OK;
}

/* ---- add + norm --------------------------------------------------------------------------- */

static void add_norm_row_scalar(const float *x, float *res, int accumulate, const float *w,
                                const float *b, int kind, float eps, int64_t d, float *out) {
  double sum = 0.0;
  for (int64_t k = 0; k < d; k++) {
    float r = (accumulate ? res[k] : 0.0f) + x[k];
    res[k] = r;
    sum += r;
  }
  const float mean = kind == MB_NORM_LAYER ? (float)(sum / (double)d) : 0.0f;
  double sq = 0.0;
  for (int64_t k = 0; k < d; k++) {
    double c = (double)res[k] - mean;
    sq += c * c;
  }
  const float rstd = (float)(1.0 / sqrt(sq / (double)d + (double)eps));
  for (int64_t k = 0; k < d; k++) {
    float v = (res[k] - mean) * rstd * w[k];
    out[k] = b ? v + b[k] : v;
  }
}

#ifdef __AVX512F__
static void add_norm_row_vec(const float *x, float *res, int accumulate, const float *w,
                             const float *b, int kind, float eps, int64_t d, float *out) {
  __m512 s0 = _mm512_setzero_ps(), s1 = s0;
  int64_t k = 0;
  for (; k + 32 <= d; k += 32) {
    __m512 r0 = _mm512_loadu_ps(x + k), r1 = _mm512_loadu_ps(x + k + 16);
    if (accumulate) {
      r0 = _mm512_add_ps(r0, _mm512_loadu_ps(res + k));
      r1 = _mm512_add_ps(r1, _mm512_loadu_ps(res + k + 16));
    }
    _mm512_storeu_ps(res + k, r0);
    _mm512_storeu_ps(res + k + 16, r1);
    s0 = _mm512_add_ps(s0, r0);
    s1 = _mm512_add_ps(s1, r1);
  }
  for (; k < d; k += 16) {
    __mmask16 m = mbv_mask(d - k);
    __m512 r = _mm512_maskz_loadu_ps(m, x + k);
    if (accumulate) r = _mm512_add_ps(r, _mm512_maskz_loadu_ps(m, res + k));
    _mm512_mask_storeu_ps(res + k, m, r);
    s0 = _mm512_add_ps(s0, r);
  }
  const float mean = kind == MB_NORM_LAYER ? _mm512_reduce_add_ps(_mm512_add_ps(s0, s1)) / d : 0;
  const __m512 mv = _mm512_set1_ps(mean);
  s0 = s1 = _mm512_setzero_ps();
  for (k = 0; k + 32 <= d; k += 32) {
    __m512 c0 = _mm512_sub_ps(_mm512_loadu_ps(res + k), mv);
    __m512 c1 = _mm512_sub_ps(_mm512_loadu_ps(res + k + 16), mv);
    s0 = _mm512_fmadd_ps(c0, c0, s0);
    s1 = _mm512_fmadd_ps(c1, c1, s1);
  }
  for (; k < d; k += 16) {
    __mmask16 m = mbv_mask(d - k);
    __m512 c = _mm512_maskz_sub_ps(m, _mm512_maskz_loadu_ps(m, res + k), mv);
    s0 = _mm512_fmadd_ps(c, c, s0);
  }
  const float var = _mm512_reduce_add_ps(_mm512_add_ps(s0, s1)) / d;
  const __m512 rstd = _mm512_set1_ps(1.0f / sqrtf(var + eps));
  for (k = 0; k < d; k += 16) {
    __mmask16 m = mbv_mask(d - k);
    __m512 c = _mm512_sub_ps(_mm512_maskz_loadu_ps(m, res + k), mv);
    __m512 v = _mm512_mul_ps(_mm512_mul_ps(c, rstd), _mm512_maskz_loadu_ps(m, w + k));
    if (b) v = _mm512_add_ps(v, _mm512_maskz_loadu_ps(m, b + k));
    _mm512_mask_storeu_ps(out + k, m, v);
  }
}
#endif

static inline void add_norm_row(int vec, const float *x, float *residual, int accumulate,
                                const float *weight, const float *bias, int norm_kind, float eps,
                                int64_t d, float *out, int64_t i) {
#ifdef __AVX512F__
  if (vec) {
    add_norm_row_vec(x + i * d, residual + i * d, accumulate, weight, bias, norm_kind, eps, d,
                     out + i * d);
    return;
  }
#endif
  (void)vec;
  add_norm_row_scalar(x + i * d, residual + i * d, accumulate, weight, bias, norm_kind, eps, d,
                      out + i * d);
}

typedef struct {
  int vec;
  const float *x;
  float *residual;
  int accumulate;
  const float *weight, *bias;
  int norm_kind;
  float eps;
  int64_t d;
  float *out;
} add_norm_job;

static void add_norm_rows(void *raw, int64_t i0, int64_t i1) {
  const add_norm_job *j = (const add_norm_job *)raw;
  for (int64_t i = i0; i < i1; i++)
    add_norm_row(j->vec, j->x, j->residual, j->accumulate, j->weight, j->bias, j->norm_kind,
                 j->eps, j->d, j->out, i);
}

int mbcpu_add_norm(mb_ctx *ctx, const float *x, float *residual, int accumulate,
                   const float *weight, const float *bias, int norm_kind, float eps, int64_t n,
                   int64_t d, float *out, uint16_t *out_bf16) {
  /* the bf16 copy: the fp32 rows rounded (into a temporary when out is not wanted) */
  float *tmp = NULL;
  if (!out) {
    tmp = (float *)malloc((size_t)(n * d) * sizeof(float));
    if (!tmp) return mb_fail(MB_ERR_OOM, "cpu: add_norm: no memory for the bf16 output's rows");
  }
  add_norm_job job = {.vec = mbcpu_vec(ctx), .x = x, .residual = residual,
                      .accumulate = accumulate, .weight = weight, .bias = bias,
                      .norm_kind = norm_kind, .eps = eps, .d = d, .out = out ? out : tmp};
  mbcpu_parallel_for(ctx, threads_for(ctx, n * d * 4), n, add_norm_rows, &job);
  if (out_bf16) mbcpu_rows_to_bf16(job.out, d, n, d, out_bf16, d);
  free(tmp);
  return MB_OK;
}

/* ---- causal depthwise conv1d -------------------------------------------------------------- */

/* A decoding step's conv over fewer (sequence, channel) pairs than this runs on one thread: the
 * AVX-512 build's, and the AVX2 build's (its step kernel takes ~1.7 ns a pair on one Zen 2 core, so
 * 16384 pairs are ~27 us). */
#define MB_CONV1_THR 65536
#define MB_CONV8_THR 16384

static void conv_channel_scalar(const float *x, int64_t ldx, const float *w, const float *bias,
                                float *st, int64_t len, int64_t d, int64_t k, int64_t c,
                                float *out, int64_t ldo, float *pre) {
  /* x, out, pre point at this sequence's first row; st at this channel's k-1 state values */
  const float *wc = w + c * k;
  const float b = bias ? bias[c] : 0.0f;
  for (int64_t t = 0; t < len; t++) {
    float acc = b;
    for (int64_t j = 0; j < k; j++) {
      int64_t p = t - (k - 1) + j;
      float v = p >= 0 ? x[p * ldx + c] : (st ? st[(k - 1) + p] : 0.0f);
      acc += wc[j] * v;
    }
    if (pre) pre[t * d + c] = acc;
    out[t * ldo + c] = mbs_silu(acc);
  }
  if (st && k > 1) {
    float tmp[64];
    float *nw = k - 1 <= 64 ? tmp : (float *)malloc((size_t)(k - 1) * 4);
    for (int64_t j = 0; j < k - 1; j++) {
      int64_t p = len - (k - 1) + j;
      nw[j] = p >= 0 ? x[p * ldx + c] : st[(k - 1) + p];
    }
    memcpy(st, nw, (size_t)(k - 1) * 4);
    if (nw != tmp) free(nw);
  }
}

#ifdef __AVX512F__
#define MB_CONV_KMAX 32
/* 16 channels [c0, c0+16) (masked by m) of one sequence; k <= MB_CONV_KMAX */
static void conv_block_vec(const float *x, int64_t ldx, const float *w, const float *bias,
                           float *state, int64_t len, int64_t d, int64_t k, int64_t c0,
                           __mmask16 m, float *out, int64_t ldo, float *pre) {
  float wt[MB_CONV_KMAX][16] __attribute__((aligned(64)));
  float st[MB_CONV_KMAX][16] __attribute__((aligned(64)));
  const int nc = __builtin_popcount(m);
  for (int64_t j = 0; j < k; j++)
    for (int c = 0; c < 16; c++) {
      wt[j][c] = c < nc ? w[(c0 + c) * k + j] : 0.0f;
      if (j < k - 1) st[j][c] = (state && c < nc) ? state[(c0 + c) * (k - 1) + j] : 0.0f;
    }
  const __m512 bv = bias ? _mm512_maskz_loadu_ps(m, bias + c0) : _mm512_setzero_ps();
  for (int64_t t = 0; t < len; t++) {
    /* the block walks down the rows: each is a new line, asked for ahead (as conv_block8) */
    if (t + 8 < len) _mm_prefetch((const char *)(x + (t + 8) * ldx + c0), _MM_HINT_T0);
    __m512 acc = bv;
    for (int64_t j = 0; j < k; j++) {
      int64_t p = t - (k - 1) + j;
      __m512 v = p >= 0 ? _mm512_maskz_loadu_ps(m, x + p * ldx + c0) : _mm512_load_ps(st[k - 1 + p]);
      acc = _mm512_fmadd_ps(_mm512_load_ps(wt[j]), v, acc);
    }
    if (pre) _mm512_mask_storeu_ps(pre + t * d + c0, m, acc);
    _mm512_mask_storeu_ps(out + t * ldo + c0, m, mbv_silu(acc));
  }
  if (state && k > 1) {
    float nw[MB_CONV_KMAX][16] __attribute__((aligned(64)));
    for (int64_t j = 0; j < k - 1; j++) {
      int64_t p = len - (k - 1) + j;
      __m512 v = p >= 0 ? _mm512_maskz_loadu_ps(m, x + p * ldx + c0) : _mm512_load_ps(st[k - 1 + p]);
      _mm512_store_ps(nw[j], v);
    }
    for (int c = 0; c < nc; c++)
      for (int64_t j = 0; j < k - 1; j++) state[(c0 + c) * (k - 1) + j] = nw[j][c];
  }
}

/*
 * Decoding (len == 1), k <= MB_CONV1_KMAX. w (d, k) and the state (d, k-1) are read straight from
 * memory, 16 channels at a time: the block's k (k-1) registers of w (state) hold the taps
 * channel-major, and tap j for the 16 channels is gathered in registers by k (k-1) masked
 * permutes (the index and mask tables are built once per call). The new state is the old one
 * shifted by one element (valignd) with the new input permuted into every (k-1)-th lane. Same FMA
 * order as conv_block_vec, so len 1 == one position of a longer call, bit for bit.
 */
#define MB_CONV1_KMAX 8
typedef struct {
  __m512i wi[MB_CONV1_KMAX];    /* tap j: lane c reads w element (c*k + j) & 15 ... */
  __mmask16 wm[MB_CONV1_KMAX][MB_CONV1_KMAX]; /* ... of register r where wm[j][r] is set */
  __m512i si[MB_CONV1_KMAX];    /* the same for the state (stride k-1) */
  __mmask16 sm[MB_CONV1_KMAX][MB_CONV1_KMAX];
  __m512i xi[MB_CONV1_KMAX];    /* new state register q: lanes from x (channel index) ... */
  __mmask16 xm[MB_CONV1_KMAX];  /* ... where set */
} conv1_tables;

static void conv1_tables_init(conv1_tables *t, int64_t k) {
  const __m512i iota = _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
  const __m512i vk = _mm512_set1_epi32((int)k), vk1 = _mm512_set1_epi32((int)(k - 1));
  for (int64_t j = 0; j < k; j++) {
    __m512i e = _mm512_add_epi32(_mm512_mullo_epi32(iota, vk), _mm512_set1_epi32((int)j));
    t->wi[j] = _mm512_and_si512(e, _mm512_set1_epi32(15));
    __m512i reg = _mm512_srli_epi32(e, 4);
    for (int64_t r = 0; r < k; r++)
      t->wm[j][r] = _mm512_cmpeq_epi32_mask(reg, _mm512_set1_epi32((int)r));
    if (j < k - 1) {
      e = _mm512_add_epi32(_mm512_mullo_epi32(iota, vk1), _mm512_set1_epi32((int)j));
      t->si[j] = _mm512_and_si512(e, _mm512_set1_epi32(15));
      reg = _mm512_srli_epi32(e, 4);
      for (int64_t r = 0; r < k - 1; r++)
        t->sm[j][r] = _mm512_cmpeq_epi32_mask(reg, _mm512_set1_epi32((int)r));
    }
  }
  for (int64_t q = 0; q < k - 1; q++) {
    int32_t ci[16];
    __mmask16 m = 0;
    for (int l = 0; l < 16; l++) {
      const int64_t e = 16 * q + l;
      ci[l] = (int32_t)(e / (k - 1));
      if (e % (k - 1) == k - 2) m |= (__mmask16)(1u << l);
    }
    t->xi[q] = _mm512_loadu_si512(ci);
    t->xm[q] = m;
  }
}

static inline __mmask16 mask_from(int64_t remaining) {
  return remaining <= 0 ? (__mmask16)0 : mbv_mask(remaining);
}

static void conv1_block(const conv1_tables *t, const float *x, const float *w, const float *bias,
                        float *state, int64_t k, int64_t c0, int nc, float *out, float *pre) {
  const __mmask16 m = mbv_mask(nc);
  __m512 wr[MB_CONV1_KMAX], sr[MB_CONV1_KMAX + 1];
  for (int64_t r = 0; r < k; r++)
    wr[r] = _mm512_maskz_loadu_ps(mask_from((int64_t)nc * k - 16 * r), w + c0 * k + 16 * r);
  const int64_t k1 = k - 1;
  for (int64_t r = 0; r < k1; r++)
    sr[r] = state ? _mm512_maskz_loadu_ps(mask_from((int64_t)nc * k1 - 16 * r),
                                          state + c0 * k1 + 16 * r)
                  : _mm512_setzero_ps();
  sr[k1] = _mm512_setzero_ps();
  const __m512 xv = _mm512_maskz_loadu_ps(m, x + c0);
  __m512 acc = bias ? _mm512_maskz_loadu_ps(m, bias + c0) : _mm512_setzero_ps();
  for (int64_t j = 0; j < k1; j++) {
    __m512 wj = _mm512_setzero_ps(), sj = _mm512_setzero_ps();
    for (int64_t r = 0; r < k; r++) wj = _mm512_mask_permutexvar_ps(wj, t->wm[j][r], t->wi[j], wr[r]);
    for (int64_t r = 0; r < k1; r++)
      sj = _mm512_mask_permutexvar_ps(sj, t->sm[j][r], t->si[j], sr[r]);
    acc = _mm512_fmadd_ps(wj, sj, acc);
  }
  {
    __m512 wj = _mm512_setzero_ps();
    for (int64_t r = 0; r < k; r++)
      wj = _mm512_mask_permutexvar_ps(wj, t->wm[k1][r], t->wi[k1], wr[r]);
    acc = _mm512_fmadd_ps(wj, xv, acc);
  }
  if (pre) _mm512_mask_storeu_ps(pre + c0, m, acc);
  _mm512_mask_storeu_ps(out + c0, m, mbv_silu(acc));
  if (state)
    for (int64_t q = 0; q < k1; q++) {
      __m512 sh = _mm512_castsi512_ps(_mm512_alignr_epi32(_mm512_castps_si512(sr[q + 1]),
                                                          _mm512_castps_si512(sr[q]), 1));
      sh = _mm512_mask_permutexvar_ps(sh, t->xm[q], t->xi[q], xv);
      _mm512_mask_storeu_ps(state + c0 * k1 + 16 * q, mask_from((int64_t)nc * k1 - 16 * q), sh);
    }
}

/* k == 4 (every Mamba): the same values by two-source permutes, all in registers */
static void conv1_block_k4(const float *x, const float *w, const float *bias, float *state,
                           int64_t c0, int nc, float *out, float *pre) {
  const __m512i iota = _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
  const __m512i i4 = _mm512_slli_epi32(iota, 2), i3 = _mm512_mullo_epi32(iota, _mm512_set1_epi32(3));
  const __mmask16 m = mbv_mask(nc);
  const __mmask16 full = (__mmask16)0xFFFF;
  const __m512 w0 = _mm512_maskz_loadu_ps(nc >= 16 ? full : mask_from(nc * 4), w + c0 * 4);
  const __m512 w1 = _mm512_maskz_loadu_ps(nc >= 16 ? full : mask_from(nc * 4 - 16), w + c0 * 4 + 16);
  const __m512 w2 = _mm512_maskz_loadu_ps(nc >= 16 ? full : mask_from(nc * 4 - 32), w + c0 * 4 + 32);
  const __m512 w3 = _mm512_maskz_loadu_ps(nc >= 16 ? full : mask_from(nc * 4 - 48), w + c0 * 4 + 48);
  __m512 s0 = _mm512_setzero_ps(), s1 = s0, s2 = s0;
  if (state) {
    s0 = _mm512_maskz_loadu_ps(nc >= 16 ? full : mask_from(nc * 3), state + c0 * 3);
    s1 = _mm512_maskz_loadu_ps(nc >= 16 ? full : mask_from(nc * 3 - 16), state + c0 * 3 + 16);
    s2 = _mm512_maskz_loadu_ps(nc >= 16 ? full : mask_from(nc * 3 - 32), state + c0 * 3 + 32);
  }
  const __m512 xv = _mm512_maskz_loadu_ps(m, x + c0);
  __m512 acc = bias ? _mm512_maskz_loadu_ps(m, bias + c0) : _mm512_setzero_ps();
  const __m512i i31 = _mm512_set1_epi32(31), i15 = _mm512_set1_epi32(15);
#define MB_WTAP(j)                                                                                \
  _mm512_mask_blend_ps(                                                                           \
      (__mmask16)0xFF00,                                                                          \
      _mm512_permutex2var_ps(w0, _mm512_and_si512(_mm512_add_epi32(i4, _mm512_set1_epi32(j)), i31), w1), \
      _mm512_permutex2var_ps(w2, _mm512_and_si512(_mm512_add_epi32(i4, _mm512_set1_epi32(j)), i31), w3))
  for (int j = 0; j < 3; j++) {
    const __m512i e = _mm512_add_epi32(i3, _mm512_set1_epi32(j));
    __m512 sj = _mm512_permutex2var_ps(s0, _mm512_and_si512(e, i31), s1);
    sj = _mm512_mask_permutexvar_ps(sj, _mm512_cmpgt_epi32_mask(e, i31), _mm512_and_si512(e, i15),
                                    s2);
    acc = _mm512_fmadd_ps(MB_WTAP(j), sj, acc);
  }
  acc = _mm512_fmadd_ps(MB_WTAP(3), xv, acc);
#undef MB_WTAP
  if (pre) _mm512_mask_storeu_ps(pre + c0, m, acc);
  _mm512_mask_storeu_ps(out + c0, m, mbv_silu(acc));
  if (state) {
    /* new state element e = 3c + i: old element e + 1 (i < 2), x[c] (i == 2) */
    const __m512 z = _mm512_setzero_ps();
    const __m512i xi0 = _mm512_setr_epi32(0, 0, 0, 1, 1, 1, 2, 2, 2, 3, 3, 3, 4, 4, 4, 5);
    const __m512i xi1 = _mm512_setr_epi32(5, 5, 6, 6, 6, 7, 7, 7, 8, 8, 8, 9, 9, 9, 10, 10);
    const __m512i xi2 = _mm512_setr_epi32(10, 11, 11, 11, 12, 12, 12, 13, 13, 13, 14, 14, 14, 15, 15, 15);
#define MB_SHIFT(a, b) \
  _mm512_castsi512_ps(_mm512_alignr_epi32(_mm512_castps_si512(b), _mm512_castps_si512(a), 1))
    const __m512 n0 = _mm512_mask_permutexvar_ps(MB_SHIFT(s0, s1), (__mmask16)0x4924, xi0, xv);
    const __m512 n1 = _mm512_mask_permutexvar_ps(MB_SHIFT(s1, s2), (__mmask16)0x2492, xi1, xv);
    const __m512 n2 = _mm512_mask_permutexvar_ps(MB_SHIFT(s2, z), (__mmask16)0x9249, xi2, xv);
#undef MB_SHIFT
    _mm512_mask_storeu_ps(state + c0 * 3, nc >= 16 ? full : mask_from(nc * 3), n0);
    _mm512_mask_storeu_ps(state + c0 * 3 + 16, nc >= 16 ? full : mask_from(nc * 3 - 16), n1);
    _mm512_mask_storeu_ps(state + c0 * 3 + 32, nc >= 16 ? full : mask_from(nc * 3 - 32), n2);
  }
}

static void conv1_rows(const conv1_tables *t, const float *x, int64_t ldx, const float *w,
                       const float *bias, float *conv_state, int64_t d, int64_t k, float *out,
                       int64_t ldo, float *out_preact, int64_t task0, int64_t task1) {
  const int64_t nblk = (d + 15) / 16;
  for (int64_t task = task0; task < task1; task++) {
    const int64_t b = task / nblk, c0 = (task % nblk) * 16;
    const int nc = (int)(d - c0 < 16 ? d - c0 : 16);
    float *st = conv_state ? conv_state + b * d * (k - 1) : NULL;
    float *pre = out_preact ? out_preact + b * d : NULL;
    if (k == 4)
      conv1_block_k4(x + b * ldx, w, bias, st, c0, nc, out + b * ldo, pre);
    else
      conv1_block(t, x + b * ldx, w, bias, st, k, c0, nc, out + b * ldo, pre);
  }
}
#endif

#if MB_AVX2
#define MB_CONV8_KMAX 32

/* Mamba's k = 4, 8 whole channels: the taps (8 x 4, rows of 4) transposed in registers into
 * wt[j][c] (element-wise stores and a wide reload had cost a decoding step's conv ~140 cycles a
 * block). */
static void conv8_taps_k4(const float *w, float (*wt)[8]) {
  const __m256 r0 = _mm256_loadu_ps(w), r1 = _mm256_loadu_ps(w + 8);
  const __m256 r2 = _mm256_loadu_ps(w + 16), r3 = _mm256_loadu_ps(w + 24);
  /* a = channels 0 | 4, b = 1 | 5, c = 2 | 6, d = 3 | 7 (4 taps each half) */
  const __m256 a = _mm256_permute2f128_ps(r0, r2, 0x20), b = _mm256_permute2f128_ps(r0, r2, 0x31);
  const __m256 c = _mm256_permute2f128_ps(r1, r3, 0x20), d = _mm256_permute2f128_ps(r1, r3, 0x31);
  const __m256 ab0 = _mm256_unpacklo_ps(a, b), ab1 = _mm256_unpackhi_ps(a, b);
  const __m256 cd0 = _mm256_unpacklo_ps(c, d), cd1 = _mm256_unpackhi_ps(c, d);
  _mm256_store_ps(wt[0], _mm256_shuffle_ps(ab0, cd0, 0x44));
  _mm256_store_ps(wt[1], _mm256_shuffle_ps(ab0, cd0, 0xEE));
  _mm256_store_ps(wt[2], _mm256_shuffle_ps(ab1, cd1, 0x44));
  _mm256_store_ps(wt[3], _mm256_shuffle_ps(ab1, cd1, 0xEE));
}

/* The k = 4 state, 8 whole channels: rows of 3 (channel-major, the ABI's layout)
 * <-> three 8-lane vectors, tap-major. Element (c, j) lies at 3c + j, so tap j's channels sit in
 * the three loaded vectors at disjoint lane sets that cover all 8 lanes: two blends gather them
 * (in the order c = 3L mod 8 and its shifts) and one permutation sorts them; the store runs the
 * same steps backwards: 9 shuffles each way (the gathers by index vectors before took 15 and 21,
 * part of a decoding step's ~140 cycles a block). */
static inline void conv8_state_load(const float *s, __m256 *t0, __m256 *t1, __m256 *t2) {
  const __m256 v0 = _mm256_loadu_ps(s), v1 = _mm256_loadu_ps(s + 8), v2 = _mm256_loadu_ps(s + 16);
  const __m256 u0 = _mm256_blend_ps(_mm256_blend_ps(v0, v1, 0x92), v2, 0x24);
  const __m256 u1 = _mm256_blend_ps(_mm256_blend_ps(v0, v1, 0x24), v2, 0x49);
  const __m256 u2 = _mm256_blend_ps(_mm256_blend_ps(v0, v1, 0x49), v2, 0x92);
  *t0 = _mm256_permutevar8x32_ps(u0, _mm256_setr_epi32(0, 3, 6, 1, 4, 7, 2, 5));
  *t1 = _mm256_permutevar8x32_ps(u1, _mm256_setr_epi32(1, 4, 7, 2, 5, 0, 3, 6));
  *t2 = _mm256_permutevar8x32_ps(u2, _mm256_setr_epi32(2, 5, 0, 3, 6, 1, 4, 7));
}

static inline void conv8_state_store(float *s, __m256 t0, __m256 t1, __m256 t2) {
  const __m256 u0 = _mm256_permutevar8x32_ps(t0, _mm256_setr_epi32(0, 3, 6, 1, 4, 7, 2, 5));
  const __m256 u1 = _mm256_permutevar8x32_ps(t1, _mm256_setr_epi32(5, 0, 3, 6, 1, 4, 7, 2));
  const __m256 u2 = _mm256_permutevar8x32_ps(t2, _mm256_setr_epi32(2, 5, 0, 3, 6, 1, 4, 7));
  _mm256_storeu_ps(s, _mm256_blend_ps(_mm256_blend_ps(u0, u1, 0x92), u2, 0x24));
  _mm256_storeu_ps(s + 8, _mm256_blend_ps(_mm256_blend_ps(u0, u1, 0x24), u2, 0x49));
  _mm256_storeu_ps(s + 16, _mm256_blend_ps(_mm256_blend_ps(u0, u1, 0x49), u2, 0x92));
}

/* 8 channels [c0, c0 + nc) of one sequence, k <= MB_CONV8_KMAX: conv_block_vec's arithmetic in
 * 8 lanes (the scalar path's order, bias then the taps in turn), for every length, so a decoding
 * step equals one position of a longer call bit for bit. */
static void conv_block8(const float *x, int64_t ldx, const float *w, const float *bias,
                        float *state, int64_t len, int64_t d, int64_t k, int64_t c0, int nc,
                        float *out, int64_t ldo, float *pre) {
  float wt[MB_CONV8_KMAX][8] __attribute__((aligned(32)));
  float st[MB_CONV8_KMAX][8] __attribute__((aligned(32)));
  const int k4 = k == 4 && nc == 8;
  if (k4) {
    conv8_taps_k4(w + c0 * 4, wt);
    __m256 s0 = _mm256_setzero_ps(), s1 = s0, s2 = s0;
    if (state) conv8_state_load(state + c0 * 3, &s0, &s1, &s2);
    _mm256_store_ps(st[0], s0);
    _mm256_store_ps(st[1], s1);
    _mm256_store_ps(st[2], s2);
  } else
    for (int64_t j = 0; j < k; j++)
      for (int c = 0; c < 8; c++) {
        wt[j][c] = c < nc ? w[(c0 + c) * k + j] : 0.0f;
        if (j < k - 1) st[j][c] = (state && c < nc) ? state[(c0 + c) * (k - 1) + j] : 0.0f;
      }
  const __m256 bv = bias ? mbv8_load_part(bias + c0, nc) : _mm256_setzero_ps();
  for (int64_t t = 0; t < len; t++) {
    /* the block walks down the rows: each is a new line, asked for ahead (as the scan's u) */
    if (t + 8 < len) _mm_prefetch((const char *)(x + (t + 8) * ldx + c0), _MM_HINT_T0);
    __m256 acc = bv;
    for (int64_t j = 0; j < k; j++) {
      const int64_t p = t - (k - 1) + j;
      const __m256 v = p >= 0 ? mbv8_load_part(x + p * ldx + c0, nc) : _mm256_load_ps(st[k - 1 + p]);
      acc = _mm256_fmadd_ps(_mm256_load_ps(wt[j]), v, acc);
    }
    if (pre) mbv8_store_part(pre + t * d + c0, acc, nc);
    mbv8_store_part(out + t * ldo + c0, mbv8_silu(acc), nc);
  }
  if (state && k > 1) {
    float nw[MB_CONV8_KMAX][8] __attribute__((aligned(32)));
    for (int64_t j = 0; j < k - 1; j++) {
      const int64_t p = len - (k - 1) + j;
      const __m256 v = p >= 0 ? mbv8_load_part(x + p * ldx + c0, nc) : _mm256_load_ps(st[k - 1 + p]);
      _mm256_store_ps(nw[j], v);
    }
    if (k4)
      conv8_state_store(state + c0 * 3, _mm256_load_ps(nw[0]), _mm256_load_ps(nw[1]),
                        _mm256_load_ps(nw[2]));
    else
      for (int c = 0; c < nc; c++)
        for (int64_t j = 0; j < k - 1; j++) state[(c0 + c) * (k - 1) + j] = nw[j][c];
  }
}

/* A decoding step (len 1, k = 4, a state) of the 8 whole channels from c0 for sequences [b0, b1):
 * the taps transposed once for all of them, then conv_block8's arithmetic for one position (the
 * bias, then the taps in turn), so the bits are a longer call's. */
static void conv8_step_k4(const float *x, int64_t ldx, const float *w, const float *bias,
                          float *conv_state, int64_t d, int64_t c0, float *out, int64_t ldo,
                          int64_t b0, int64_t b1) {
  float wt[4][8] __attribute__((aligned(32)));
  conv8_taps_k4(w + c0 * 4, wt);
  const __m256 w0 = _mm256_load_ps(wt[0]), w1 = _mm256_load_ps(wt[1]);
  const __m256 w2 = _mm256_load_ps(wt[2]), w3 = _mm256_load_ps(wt[3]);
  const __m256 bv = bias ? _mm256_loadu_ps(bias + c0) : _mm256_setzero_ps();
  for (int64_t b = b0; b < b1; b++) {
    float *st = conv_state + (b * d + c0) * 3;
    __m256 s0, s1, s2;
    conv8_state_load(st, &s0, &s1, &s2);
    const __m256 xv = _mm256_loadu_ps(x + b * ldx + c0);
    __m256 acc = _mm256_fmadd_ps(w0, s0, bv);
    acc = _mm256_fmadd_ps(w1, s1, acc);
    acc = _mm256_fmadd_ps(w2, s2, acc);
    acc = _mm256_fmadd_ps(w3, xv, acc);
    _mm256_storeu_ps(out + b * ldo + c0, mbv8_silu(acc));
    conv8_state_store(st, s1, s2, xv);
  }
}

/* A decoding step's items ordered block-major (item = block * batch + b), so a thread's run of
 * items shares each block's transposed taps; a last partial block runs conv_block8. */
static void conv8_step_items(const float *x, int64_t ldx, const float *w, const float *bias,
                             float *conv_state, int64_t batch, int64_t d, float *out, int64_t ldo,
                             int64_t t0, int64_t t1) {
  while (t0 < t1) {
    const int64_t blk = t0 / batch, b0 = t0 % batch;
    const int64_t b1 = t1 - blk * batch < batch ? t1 - blk * batch : batch;
    const int64_t c0 = blk * 8;
    if (c0 + 8 <= d)
      conv8_step_k4(x, ldx, w, bias, conv_state, d, c0, out, ldo, b0, b1);
    else
      for (int64_t b = b0; b < b1; b++)
        conv_block8(x + b * ldx, ldx, w, bias, conv_state + b * d * 3, 1, d, 4, c0, (int)(d - c0),
                    out + b * ldo, ldo, NULL);
    t0 = blk * batch + b1;
  }
}

/* Tasks [task0, task1) of 8-channel blocks over the sequences (as conv1_rows: task = b * nblk +
 * block), each sequence's len rows at x + b * len * ldx. */
static void conv8_rows(const float *x, int64_t ldx, const float *w, const float *bias,
                       float *conv_state, int64_t len, int64_t d, int64_t k, float *out,
                       int64_t ldo, float *out_preact, int64_t task0, int64_t task1) {
  const int64_t nblk = (d + 7) / 8;
  for (int64_t task = task0; task < task1; task++) {
    const int64_t b = task / nblk, c0 = (task % nblk) * 8;
    conv_block8(x + b * len * ldx, ldx, w, bias, conv_state ? conv_state + b * d * (k - 1) : NULL,
                len, d, k, c0, d - c0 < 8 ? (int)(d - c0) : 8, out + b * len * ldo, ldo,
                out_preact ? out_preact + b * len * d : NULL);
  }
}
#endif

/* For the fused in_proj + conv step (linear.c): channels [c0, c1) (c0 a multiple of 16) of the
 * len-1 conv of `batch` sequences, by the kernels of mb_causal_conv1d's decoding path (same bits). */
int mbcpu_conv1_step_applies(mb_ctx *ctx, int64_t k) {
#ifdef __AVX512F__
  return mbcpu_vec(ctx) && k >= 1 && k <= MB_CONV1_KMAX;
#elif MB_AVX2
  return mbcpu_vec8(ctx) && k >= 1 && k <= MB_CONV8_KMAX;
#else
  (void)ctx;
  (void)k;
  return 0;
#endif
}

void mbcpu_conv1_step_range(const float *x, int64_t ldx, const float *w, const float *bias,
                            float *conv_state, int64_t batch, int64_t d, int64_t k, float *out,
                            int64_t ldo, int64_t c0, int64_t c1) {
#ifdef __AVX512F__
  conv1_tables t;
  if (k != 4) conv1_tables_init(&t, k);
  const int64_t nblk = (d + 15) / 16, j0 = c0 / 16, j1 = (c1 + 15) / 16;
  for (int64_t b = 0; b < batch; b++)
    conv1_rows(&t, x, ldx, w, bias, conv_state, d, k, out, ldo, NULL, b * nblk + j0,
               b * nblk + j1);
#elif MB_AVX2
  const int64_t nblk = (d + 7) / 8, j0 = c0 / 8, j1 = (c1 + 7) / 8;
  if (k == 4 && conv_state) {
    conv8_step_items(x, ldx, w, bias, conv_state, batch, d, out, ldo, j0 * batch, j1 * batch);
    return;
  }
  for (int64_t b = 0; b < batch; b++)
    conv8_rows(x, ldx, w, bias, conv_state, 1, d, k, out, ldo, NULL, b * nblk + j0, b * nblk + j1);
#else
  (void)x, (void)ldx, (void)w, (void)bias, (void)conv_state, (void)batch, (void)d, (void)k;
  (void)out, (void)ldo, (void)c0, (void)c1;
#endif
}

/* The conv's kernels as pool jobs: items are 16-channel blocks (len == 1, or any len), 8-channel
 * blocks (AVX2) or single channels (scalar), over all sequences. */
typedef struct {
  int kind; /* 0: len-1 step blocks, 1: vector blocks, 2: scalar channels, 3: 8-lane blocks,
             * 4: 8-lane len-1 k-4 steps, block-major */
#ifdef __AVX512F__
  const conv1_tables *tables;
#endif
  const float *x;
  int64_t ldx;
  const float *w, *bias;
  float *state;
  int64_t batch, len, d, k;
  float *out;
  int64_t ldo;
  float *pre;
} conv_job;

static void conv_items(void *raw, int64_t t0, int64_t t1) {
  const conv_job *j = (const conv_job *)raw;
  const int64_t len = j->len, d = j->d, k = j->k, ldx = j->ldx, ldo = j->ldo;
#ifdef __AVX512F__
  if (j->kind == 0) {
    conv1_rows(j->tables, j->x, ldx, j->w, j->bias, j->state, d, k, j->out, ldo, j->pre, t0, t1);
    return;
  }
  if (j->kind == 1) {
    const int64_t nblk = (d + 15) / 16;
    for (int64_t task = t0; task < t1; task++) {
      const int64_t b = task / nblk, c0 = (task % nblk) * 16;
      conv_block_vec(j->x + b * len * ldx, ldx, j->w, j->bias,
                     j->state ? j->state + b * d * (k - 1) : NULL, len, d, k, c0,
                     mbv_mask(d - c0), j->out + b * len * ldo, ldo,
                     j->pre ? j->pre + b * len * d : NULL);
    }
    return;
  }
#endif
#if MB_AVX2
  if (j->kind == 3) {
    conv8_rows(j->x, ldx, j->w, j->bias, j->state, len, d, k, j->out, ldo, j->pre, t0, t1);
    return;
  }
  if (j->kind == 4) {
    conv8_step_items(j->x, ldx, j->w, j->bias, j->state, j->batch, d, j->out, ldo, t0, t1);
    return;
  }
#endif
  for (int64_t task = t0; task < t1; task++) {
    const int64_t b = task / d, c = task % d;
    conv_channel_scalar(j->x + b * len * ldx, ldx, j->w, j->bias,
                        j->state ? j->state + (b * d + c) * (k - 1) : NULL, len, d, k, c,
                        j->out + b * len * ldo, ldo, j->pre ? j->pre + b * len * d : NULL);
  }
}

int mbcpu_causal_conv1d(mb_ctx *ctx, const float *x, const uint16_t *x_bf16, int64_t ldx,
                        const float *w, const float *bias, float *conv_state, int64_t batch,
                        int64_t len, int64_t d, int64_t k, float *out, int64_t ldo,
                        float *out_preact, uint16_t *out16, const int32_t *out16_f16_exp) {
  if (x_bf16) { /* the floats the bits stand for, then the fp32 conv: the same arithmetic */
    float *xf = mbcpu_widen_rows(x_bf16, ldx, batch * len, d);
    if (!xf) return mb_fail(MB_ERR_OOM, "cpu: causal_conv1d: no memory to widen x");
    int st = mbcpu_causal_conv1d(ctx, xf, NULL, d, w, bias, conv_state, batch, len, d, k, out, ldo,
                                 out_preact, out16, out16_f16_exp);
    free(xf);
    return st;
  }
  if (!out) { /* only the bf16 copy: the fp32 output into a temporary, rounded from there */
    float *of = (float *)malloc((size_t)(batch * len * d) * sizeof(float) + 1);
    if (!of) return mb_fail(MB_ERR_OOM, "cpu: causal_conv1d: no memory for the fp32 output");
    int st = mbcpu_causal_conv1d(ctx, x, NULL, ldx, w, bias, conv_state, batch, len, d, k, of, d,
                                 out_preact, out16, out16_f16_exp);
    free(of);
    return st;
  }
  int nt = threads_for(ctx, batch * len * d * k);
  conv_job job = {.kind = 2, .x = x, .ldx = ldx, .w = w, .bias = bias, .state = conv_state,
                  .batch = batch, .len = len, .d = d, .k = k, .out = out, .ldo = ldo,
                  .pre = out_preact};
  int64_t items = batch * d;
#ifdef __AVX512F__
  conv1_tables t;
  if (mbcpu_vec(ctx) && len == 1 && k <= MB_CONV1_KMAX) {
    if (k != 4) conv1_tables_init(&t, k); /* k == 4 has its own kernel */
    job.kind = 0;
    job.tables = &t;
    items = batch * ((d + 15) / 16);
    nt = batch * d < MB_CONV1_THR ? 1 : ctx->num_threads;
  } else if (mbcpu_vec(ctx) && k <= MB_CONV_KMAX) {
    job.kind = 1;
    items = batch * ((d + 15) / 16);
  }
#elif MB_AVX2
  if (mbcpu_vec8(ctx) && k <= MB_CONV8_KMAX) {
    job.kind = len == 1 && k == 4 && conv_state && !out_preact ? 4 : 3;
    items = batch * ((d + 7) / 8);
    if (len == 1) nt = batch * d < MB_CONV8_THR ? 1 : ctx->num_threads;
  }
#endif
  mbcpu_parallel_for(ctx, nt, items, conv_items, &job);
  if (out16 && out16_f16_exp) /* the scaled fp16 copy (x_proj's operand on the twins) */
    mbcpu_rows_to_f16_scaled(ctx, out, ldo, batch * len, d, *out16_f16_exp, out16);
  else if (out16) mbcpu_rows_to_bf16(out, ldo, batch * len, d, out16, d);
  return MB_OK;
}

/* ---- log-softmax and log-prob / rank ------------------------------------------------------ */

/* log(sum(exp(row))) */
static float row_lse(int vec, const float *r, int64_t v) {
#ifdef __AVX512F__
  if (vec) {
    const __m512 ninf = _mm512_set1_ps(-INFINITY);
    __m512 mx = ninf;
    for (int64_t k = 0; k < v; k += 16)
      mx = _mm512_max_ps(mx, _mm512_mask_loadu_ps(ninf, mbv_mask(v - k), r + k));
    const float m = _mm512_reduce_max_ps(mx);
    const __m512 mv = _mm512_set1_ps(m);
    __m512 s = _mm512_setzero_ps();
    for (int64_t k = 0; k < v; k += 16) {
      __mmask16 msk = mbv_mask(v - k);
      __m512 e = mbv_exp(_mm512_sub_ps(_mm512_mask_loadu_ps(ninf, msk, r + k), mv));
      s = _mm512_mask_add_ps(s, msk, s, e);
    }
    return m + logf(_mm512_reduce_add_ps(s));
  }
#elif MB_AVX2
  if (vec) { /* the same steps in 8 lanes (a tail's missing lanes read as -inf) */
    __m256 mx = _mm256_set1_ps(-INFINITY);
    for (int64_t k = 0; k < v; k += 8) {
      const int c = v - k < 8 ? (int)(v - k) : 8;
      __m256 x = mbv8_load_part(r + k, c);
      if (c < 8) x = _mm256_blendv_ps(_mm256_set1_ps(-INFINITY), x, mbv8_lanes(c));
      mx = _mm256_max_ps(mx, x);
    }
    float l[8];
    _mm256_storeu_ps(l, mx);
    float m = l[0];
    for (int i = 1; i < 8; i++) m = l[i] > m ? l[i] : m;
    const __m256 mv = _mm256_set1_ps(m);
    __m256 sv = _mm256_setzero_ps();
    for (int64_t k = 0; k < v; k += 8) {
      const int c = v - k < 8 ? (int)(v - k) : 8;
      const __m256 e = mbv8_exp(_mm256_sub_ps(mbv8_load_part(r + k, c), mv));
      sv = _mm256_add_ps(sv, c < 8 ? _mm256_and_ps(e, mbv8_lanes(c)) : e);
    }
    _mm256_storeu_ps(l, sv);
    float t = 0.0f;
    for (int i = 0; i < 8; i++) t += l[i];
    return m + logf(t);
  }
#endif
  (void)vec;
  float m = -INFINITY;
  for (int64_t k = 0; k < v; k++) m = r[k] > m ? r[k] : m;
  double s = 0.0;
  for (int64_t k = 0; k < v; k++) s += expf(r[k] - m);
  return m + (float)log(s);
}

typedef struct {
  int vec;
  const float *logits;
  int64_t v;
  float *out;
  const int32_t *targets;
  float *logprob;
  int32_t *rank;
} softmax_job;

static void log_softmax_rows(void *raw, int64_t i0, int64_t i1) {
  const softmax_job *j = (const softmax_job *)raw;
  const int64_t v = j->v;
  for (int64_t i = i0; i < i1; i++) {
    const float *r = j->logits + i * v;
    float *o = j->out + i * v;
    const float lse = row_lse(j->vec, r, v);
    for (int64_t k = 0; k < v; k++) o[k] = r[k] - lse;
  }
}

int mbcpu_log_softmax(mb_ctx *ctx, const float *logits, int64_t n, int64_t v, float *out) {
  softmax_job job = {.vec = mbcpu_vec_any(ctx), .logits = logits, .v = v, .out = out};
  mbcpu_parallel_for(ctx, threads_for(ctx, n * v * 8), n, log_softmax_rows, &job);
  return MB_OK;
}

static void logprob_rank_rows(void *raw, int64_t i0, int64_t i1) {
  const softmax_job *j = (const softmax_job *)raw;
  const int64_t v = j->v;
  const int vec = j->vec;
  for (int64_t i = i0; i < i1; i++) {
    const float *r = j->logits + i * v;
    const float lt = r[j->targets[i]];
    int64_t rank = 0;
#ifdef __AVX512F__
    if (vec) {
      const __m512 tv = _mm512_set1_ps(lt);
      for (int64_t k = 0; k < v; k += 16)
        rank += __builtin_popcount(_mm512_mask_cmp_ps_mask(
            mbv_mask(v - k), _mm512_maskz_loadu_ps(mbv_mask(v - k), r + k), tv, _CMP_GT_OQ));
    } else
#endif
      for (int64_t k = 0; k < v; k++) rank += r[k] > lt;
    j->logprob[i] = lt - row_lse(vec, r, v);
    j->rank[i] = (int32_t)rank;
  }
}

int mbcpu_logprob_rank(mb_ctx *ctx, const float *logits, int64_t n, int64_t v,
                       const int32_t *targets, float *out_logprob, int32_t *out_rank) {
  for (int64_t i = 0; i < n; i++)
    if (targets[i] < 0 || targets[i] >= v)
      return mb_fail(MB_ERR_INVALID, "mb_logprob_rank: targets[%lld] = %d is outside [0, %lld)",
                     (long long)i, targets[i], (long long)v);
  softmax_job job = {.vec = mbcpu_vec_any(ctx), .logits = logits, .v = v, .targets = targets,
                     .logprob = out_logprob, .rank = out_rank};
  mbcpu_parallel_for(ctx, threads_for(ctx, n * v * 8), n, logprob_rank_rows, &job);
  return MB_OK;
}
