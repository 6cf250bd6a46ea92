/*
 * cuda_vs_cpu.c — every CUDA op against its CPU twin, through the public ABI only.
 *
 * Fresh random inputs of odd sizes for every case; outputs are poisoned (NaN) before each run.
 * Tolerances (relative ||gpu - cpu|| / ||cpu||): fp32 1e-5, bf16 weights through the tensor cores
 * (x rounded to bf16) 1e-2, TF32 1e-3. The bf16 activations (the producers' `_bf16` outputs) are
 * held to the GPU's own fp32 output rounded, bit for bit, and to the CPU's within 1e-2 (a value
 * near a rounding midpoint may round the other way: one bf16 ulp, 2^-8 relative); mb_linear_bf16
 * to the CPU's within fp32's 1e-5 (the products of bf16 values are exact in fp32), and with bf16
 * weights and n > 8 to the bits of mb_linear of the fp32 rows they were rounded from. Sampling: identical ids for greedy; for drawn samples, ids
 * may differ only on rows where the CPU's draw lies within 1e-4 of a bucket edge (near ties).
 * Graphs: a captured decode-like op sequence replayed twice equals direct execution, bit for bit.
 * Downloads: mb_download_async gives the bytes the CPU twin gives (src as of the call).
 *
 *   cuda_vs_cpu [--small]
 *     [--only discrete_a|draft_greedy|linear|bf16|scan|ssu|decode|download|sample]
 *     [--draft_cases N]
 *     --small: the sizes used under compute-sanitizer; --only discrete_a: only the discrete-A ops;
 *     --only linear: only mb_linear, mb_linear_bf16, mb_linear_add_norm (and the norm's NT form),
 *     the scaled fp16 ops (mb_to_f16_scaled, mb_linear_f16, mb_add_norm_f16, mb_causal_conv1d's
 *     fp16 copy) and mb_conv1d_step_linear;
 *     --only bf16: only the bf16 xz and delta ops (mb_linear_to_bf16, the conv of bf16 x, the scan
 *     of bf16 delta and z; with --small also the tile scan's pairs, at 256 x 3584);
 *     --only scan: only mb_selective_scan (sequential, chunked, tile, bf16 and fp16-u cases);
 *     --only ssu: only mb_selective_state_update_dt, with its kernels' environment peers;
 *     --only decode: only mb_decode_layers (with its in_proj ring's peers) and mb_verify_layers;
 *     --only download: only mb_download_async and mb_download_async_direct;
 *     --only sample: only mb_sample (against the CPU, and its parallel kernel against the serial
 *     one) and mb_sample_rows;
 *     --only draft_greedy: only mb_draft_greedy, three times (with --small once); --draft_cases N:
 *     its first N cases only (racecheck on the cluster kernel is slow)
 * Exit status: 0 all passed (or skipped: no CUDA build / no GPU), 1 a failure.
 */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mambabyte.h"
#include "../cpu/f16.h" /* the fp16 rounding the backends' scaled copies are held to */

static mb_ctx *CPU, *GPU;
static int g_fail = 0, g_cases = 0, g_small = 0, g_only_da = 0, g_only_dg = 0, g_dg_cases = 0;
static int g_only_lin = 0; /* --only linear: the products (a sanitizer's short run) */
static int g_only_bf = 0;  /* --only bf16: the bf16 xz / delta ops, every case (also the tile scan's) */
static int g_only_ssu = 0; /* --only ssu: the decoding state update, with its kernels' peers */
static int g_only_dec = 0; /* --only decode: mb_decode_layers and the verification pass */
static int g_only_dl = 0;  /* --only download: the downloads (staged and direct) */
static int g_only_smp = 0; /* --only sample: the draws (serial, parallel, a counter a row) */
static int g_only_scan = 0; /* --only scan: every mb_selective_scan case (A/B runs of its forms) */
/* The switch with_gpu_env made the GPU context with (NULL: the usual context) */
static const char *g_peer_name = NULL, *g_peer_value = NULL;

/* An environment switch as the GPU context saw it when it was made: with_gpu_env's, or the
 * process's (NULL: unset). Tests read which kernels the context runs from these, as context.cu
 * parses them. */
static const char *gpu_env(const char *name) {
  return g_peer_name && !strcmp(name, g_peer_name) ? g_peer_value : getenv(name);
}
static int gpu_env_is(const char *name, const char *value) {
  const char *e = gpu_env(name);
  return e && !strcmp(e, value);
}
static uint64_t g_rng = 0x9E3779B97F4A7C15ull;

#define MBX(call)                                                                                 \
  do {                                                                                            \
    int st_ = (call);                                                                             \
    if (st_ != MB_OK) {                                                                           \
      fprintf(stderr, "FATAL %s:%d: %s -> %d: %s\n", __FILE__, __LINE__, #call, st_,             \
              mb_last_error());                                                                   \
      exit(1);                                                                                    \
    }                                                                                             \
  } while (0)

static uint64_t rnd64(void) {
  g_rng ^= g_rng << 13;
  g_rng ^= g_rng >> 7;
  g_rng ^= g_rng << 17;
  return g_rng;
}
static float urand(float lo, float hi) {
  return lo + (hi - lo) * (float)((rnd64() >> 40) * (1.0 / 16777216.0));
}
static float *hrand(int64_t n, float lo, float hi) {
  float *p = (float *)malloc((size_t)(n > 0 ? n : 1) * sizeof(float));
  for (int64_t i = 0; i < n; i++) p[i] = urand(lo, hi);
  return p;
}
static uint16_t f2bf(float f) { /* round to nearest even */
  uint32_t u;
  memcpy(&u, &f, 4);
  u += 0x7fff + ((u >> 16) & 1);
  return (uint16_t)(u >> 16);
}

/* A tensor present on both contexts. */
typedef struct {
  void *c, *g;
  size_t bytes;
} pair;

static pair pnew(const void *host, size_t bytes) {
  pair p = {NULL, NULL, bytes};
  MBX(mb_alloc(CPU, bytes, &p.c));
  MBX(mb_alloc(GPU, bytes, &p.g));
  if (host) {
    MBX(mb_memcpy_h2d(CPU, p.c, host, bytes));
    MBX(mb_memcpy_h2d(GPU, p.g, host, bytes));
  } else { /* poison: all-ones bytes are NaN floats */
    MBX(mb_memset(CPU, p.c, 0xff, bytes));
    MBX(mb_memset(GPU, p.g, 0xff, bytes));
  }
  return p;
}
static pair pf(const float *host, int64_t n) { return pnew(host, (size_t)n * sizeof(float)); }
static pair prand(int64_t n, float lo, float hi) {
  float *h = hrand(n, lo, hi);
  pair p = pf(h, n);
  free(h);
  return p;
}
static void pfree(pair *p) {
  MBX(mb_free(CPU, p->c));
  MBX(mb_free(GPU, p->g));
  p->c = p->g = NULL;
}
/* A (rows, cols) weight matrix of random values in [lo, hi), fp32 or rounded to bf16. */
static pair weights(int64_t rows, int64_t cols, int wdt, float lo, float hi) {
  float *wh = hrand(rows * cols, lo, hi);
  pair W;
  if (wdt == MB_DTYPE_BF16) {
    uint16_t *wb = (uint16_t *)malloc((size_t)(rows * cols) * 2);
    for (int64_t i = 0; i < rows * cols; i++) wb[i] = f2bf(wh[i]);
    W = pnew(wb, (size_t)(rows * cols) * 2);
    free(wb);
  } else {
    W = pf(wh, rows * cols);
  }
  free(wh);
  return W;
}

#define C(p) ((float *)(p).c)
#define G(p) ((float *)(p).g)

/* A (rows, cols) fp16 weight matrix (MB_DTYPE_F16 bits, the decoding twins' form): random values
 * scaled and rounded by the CPU's mb_to_f16_scaled, the same bits on both contexts. */
static pair weights_f16(int64_t rows, int64_t cols) {
  pair X = prand(rows * cols, -1, 1), W = pnew(NULL, (size_t)(rows * cols) * 2), E = pnew(NULL, 4);
  MBX(mb_to_f16_scaled(CPU, C(X), cols, rows, cols, (uint16_t *)W.c, (int32_t *)E.c));
  MBX(mb_memcpy_h2d(GPU, W.g, W.c, W.bytes)); /* CPU memory is host memory */
  pfree(&X), pfree(&E);
  return W;
}

/* Relative error (the norm of a - b over the norm of b) over the strided region (rows x cols, ld)
 * of two host copies of nf floats. NaN (an unwritten element) gives +inf. */
static double rel_of(const float *a, const float *b, size_t nf, int64_t rows, int64_t cols,
                     int64_t ld) {
  double num = 0, den = 0;
  int bad = 0;
  for (int64_t r = 0; r < rows; r++)
    for (int64_t c = 0; c < cols; c++) {
      size_t i = (size_t)(r * ld + c);
      if (i >= nf) continue;
      double x = a[i], y = b[i];
      if (isnan(x) || isnan(y)) bad = 1;
      num += (x - y) * (x - y);
      den += y * y;
    }
  if (bad) return INFINITY;
  if (den == 0) return num == 0 ? 0 : INFINITY;
  return sqrt(num / den);
}

/* Relative error of the GPU copy against the CPU copy over the strided region (rows x cols, ld). */
static double rel_err(pair *p, int64_t rows, int64_t cols, int64_t ld) {
  float *a = (float *)malloc(p->bytes), *b = (float *)malloc(p->bytes);
  MBX(mb_ctx_synchronize(GPU));
  MBX(mb_memcpy_d2h(GPU, a, p->g, p->bytes));
  MBX(mb_memcpy_d2h(CPU, b, p->c, p->bytes));
  const double e = rel_of(a, b, p->bytes / sizeof(float), rows, cols, ld);
  free(a);
  free(b);
  return e;
}
static double rel_all(pair *p) { return rel_err(p, 1, (int64_t)(p->bytes / 4), 0); }

/* A bf16 tensor on both contexts (n values), poisoned (0xffff is a NaN). */
static pair pb16(int64_t n) { return pnew(NULL, (size_t)(n > 0 ? n : 1) * 2); }

/* bf16 values (rows x cols at ld) of a context, widened to floats. */
static float *bf16_rows(mb_ctx *ctx, const void *dev, size_t bytes, int64_t rows, int64_t cols,
                        int64_t ld) {
  uint16_t *h = (uint16_t *)malloc(bytes);
  MBX(mb_ctx_synchronize(GPU));
  MBX(mb_memcpy_d2h(ctx, h, dev, bytes));
  float *f = (float *)malloc((size_t)(rows * cols > 0 ? rows * cols : 1) * sizeof(float));
  for (int64_t r = 0; r < rows; r++)
    for (int64_t c = 0; c < cols; c++) {
      uint32_t u = (uint32_t)h[r * ld + c] << 16;
      memcpy(&f[r * cols + c], &u, 4);
    }
  free(h);
  return f;
}

static void check(const char *op, const char *cfg, const char *what, double err, double tol);

/* The checks of a bf16 output B (rows x cols at ldb): against the CPU's within 1e-2; and, when the
 * GPU also wrote the fp32 output F (at ldf), equal to it rounded, bit for bit (err: mismatches). */
static void check_bf16(const char *op, const char *cfg, pair *B, pair *F, int64_t rows,
                       int64_t cols, int64_t ldb, int64_t ldf) {
  float *g = bf16_rows(GPU, B->g, B->bytes, rows, cols, ldb);
  float *c = bf16_rows(CPU, B->c, B->bytes, rows, cols, ldb);
  double num = 0, den = 0;
  int bad = 0;
  for (int64_t i = 0; i < rows * cols; i++) {
    if (isnan(g[i]) || isnan(c[i])) bad = 1;
    num += ((double)g[i] - c[i]) * ((double)g[i] - c[i]);
    den += (double)c[i] * c[i];
  }
  check(op, cfg, "bf16", bad ? INFINITY : den == 0 ? (num == 0 ? 0 : INFINITY) : sqrt(num / den),
        1e-2);
  if (F) {
    float *f = (float *)malloc(F->bytes);
    MBX(mb_memcpy_d2h(GPU, f, F->g, F->bytes));
    double miss = 0;
    for (int64_t r = 0; r < rows; r++)
      for (int64_t k = 0; k < cols; k++) {
        uint32_t u = (uint32_t)f2bf(f[r * ldf + k]) << 16;
        float want;
        memcpy(&want, &u, 4);
        if (memcmp(&want, &g[r * cols + k], 4) != 0) miss++;
      }
    check(op, cfg, "bf16=f32", miss, 0);
    free(f);
  }
  free(g);
  free(c);
}

static void check(const char *op, const char *cfg, const char *what, double err, double tol) {
  g_cases++;
  int ok = err <= tol;
  if (!ok) g_fail++;
  printf("%-16s %-44s %-10s %10.3e %8.0e  %s\n", op, cfg, what, err, tol, ok ? "ok" : "FAIL");
}

/* ---- ops -------------------------------------------------------------------------------------- */

static void t_embedding(void) {
  int64_t vocab = 259, dims[] = {37, 101};
  for (int di = 0; di < 2; di++)
    for (int dt = 0; dt < 2; dt++) {
      int64_t d = dims[di], n = 11;
      pair T = weights(vocab, d, dt, -2, 2);
      int32_t ids[11];
      for (int i = 0; i < 11; i++) ids[i] = (int32_t)(rnd64() % vocab);
      ids[0] = 0;
      ids[1] = (int32_t)vocab - 1;
      pair I = pnew(ids, sizeof ids), O = pf(NULL, n * d);
      MBX(mb_embedding(CPU, (int32_t *)I.c, n, T.c, dt, vocab, d, C(O)));
      MBX(mb_embedding(GPU, (int32_t *)I.g, n, T.g, dt, vocab, d, G(O)));
      char cfg[64];
      snprintf(cfg, sizeof cfg, "d=%lld %s", (long long)d, dt ? "bf16" : "f32");
      check("embedding", cfg, "out", rel_all(&O), 0);
      pfree(&T), pfree(&I), pfree(&O);
    }
}

static void t_add_norm(void) {
  /* rows >= 257 with d % 4 == 0 take the warp-per-row kernel (d 64, 1000, 1792; 300 and 257 rows
   * are not multiples of the block's 8); d = 1030 there, and 256 rows (the largest decoding batch)
   * keep the register kernel */
  int64_t dims[] = {37, 101, 1792, 64, 1000, 1792, 1030}, rows[] = {1, 3, 7, 300, 257, 256};
  for (int di = 0; di < 7; di++)
    for (int kind = 0; kind < 2; kind++)
      for (int acc = 0; acc < 2; acc++) {
        int64_t d = dims[di], n = di < 3 ? rows[(di + kind + acc) % 3] : rows[3 + (kind + acc) % 3];
        if (g_small && n > 7 && (kind || acc)) continue;
        int inplace = (kind + acc + di) % 2, hasb = (acc + di) % 2;
        pair X = prand(n * d, -2, 2), R = prand(n * d, -1, 3), W = prand(d, 0.5f, 1.5f);
        pair B = prand(d, -0.5f, 0.5f), O = pf(NULL, n * d), OB = pb16(n * d);
        pair *out = inplace ? &X : &O;
        /* a bf16 copy in every other case; in some of them alone (out NULL) */
        const int bf = (di + kind) % 2 == 0, only_bf = bf && !inplace && acc;
        float eps = 1e-5f;
        MBX(mb_add_norm(CPU, C(X), C(R), acc, C(W), hasb ? C(B) : NULL, kind, eps, n, d,
                        only_bf ? NULL : C(*out), bf ? (uint16_t *)OB.c : NULL));
        MBX(mb_add_norm(GPU, G(X), G(R), acc, G(W), hasb ? G(B) : NULL, kind, eps, n, d,
                        only_bf ? NULL : G(*out), bf ? (uint16_t *)OB.g : NULL));
        char cfg[80];
        snprintf(cfg, sizeof cfg, "n=%lld d=%lld %s acc=%d bias=%d inplace=%d bf=%d", (long long)n,
                 (long long)d, kind ? "rms" : "layer", acc, hasb, inplace, bf + only_bf);
        if (!only_bf) check("add_norm", cfg, "out", rel_all(out), 1e-5);
        check("add_norm", cfg, "residual", rel_all(&R), 1e-5);
        if (bf) check_bf16("add_norm", cfg, &OB, only_bf ? NULL : out, n, d, d, d);
        pfree(&X), pfree(&R), pfree(&W), pfree(&B), pfree(&O), pfree(&OB);
      }
}

static double bits_differ(const pair *A, const pair *B, int64_t n, int64_t m, int64_t ld);
static char *env_swap(const char *name, const char *value);
static void env_restore(const char *name, char *old);
static double diff_bits(const void *a, const void *b, size_t bytes);

/* A second CUDA context, made with the norm's generic form (MAMBABYTE_CUDA_NORM_NT=0 while it is
 * created; the environment restored after), for "the same bits without the NT form" checks. */
static mb_ctx *gpu_ctx_generic_norm(void) {
  mb_ctx *c = NULL;
  char *old_nt = env_swap("MAMBABYTE_CUDA_NORM_NT", "0");
  MBX(mb_ctx_create(MB_BACKEND_CUDA, 0, 0, &c));
  env_restore("MAMBABYTE_CUDA_NORM_NT", old_nt);
  return c;
}

/* mb_add_norm's decoding rows of the models' widths (1024, 1792: the NT form, norm_row.cuh) give
 * the bits of a context without it (MAMBABYTE_CUDA_NORM_NT=0: per-thread bounds and offsets). */
static void t_norm_nt(void) {
  mb_ctx *generic = gpu_ctx_generic_norm();
  const int64_t dims[] = {1024, 1792}, rows[] = {1, 3, 64};
  for (int di = 0; di < 2; di++)
    for (int ri = 0; ri < 3; ri++)
      for (int kind = 0; kind < 2; kind++)
        for (int acc = 0; acc < 2; acc++) {
          const int64_t d = dims[di], n = rows[ri];
          const int hasb = (ri + kind) % 2;
          float *rh = hrand(n * d, -1, 3);
          pair X = prand(n * d, -2, 2), W = prand(d, 0.5f, 1.5f), B = prand(d, -0.5f, 0.5f);
          pair R1 = pf(rh, n * d), R2 = pf(rh, n * d);
          pair O1 = pf(NULL, n * d), O2 = pf(NULL, n * d), B1 = pb16(n * d), B2 = pb16(n * d);
          MBX(mb_add_norm(GPU, G(X), G(R1), acc, G(W), hasb ? G(B) : NULL, kind, 1e-5f, n, d,
                          G(O1), (uint16_t *)B1.g));
          MBX(mb_add_norm(generic, G(X), G(R2), acc, G(W), hasb ? G(B) : NULL, kind, 1e-5f, n,
                          d, G(O2), (uint16_t *)B2.g));
          MBX(mb_ctx_synchronize(GPU));
          MBX(mb_ctx_synchronize(generic));
          char cfg[80];
          snprintf(cfg, sizeof cfg, "n=%lld d=%lld %s acc=%d bias=%d", (long long)n,
                   (long long)d, kind ? "rms" : "layer", acc, hasb);
          check("norm_nt", cfg, "=generic bits",
                diff_bits(O1.g, O2.g, O1.bytes) + diff_bits(R1.g, R2.g, R1.bytes) +
                    diff_bits(B1.g, B2.g, B1.bytes),
                0);
          pfree(&X), pfree(&W), pfree(&B), pfree(&R1), pfree(&R2), pfree(&O1), pfree(&O2);
          pfree(&B1), pfree(&B2);
          free(rh);
        }
  MBX(mb_ctx_destroy(generic));
}

static void t_linear(void) {
  /* n, in_f, out_f, pad of ldx/ldy */
  int64_t cfgs[][4] = {{1, 37, 101, 3},   {3, 101, 37, 1},   {8, 64, 200, 8},  {1, 1792, 257, 0},
                       {2, 112, 300, 8},  {5, 3584, 144, 4}, {1, 3584, 67, 4}, {17, 101, 37, 3},
                       {9, 256, 96, 0},   {300, 96, 160, 5}, {64, 1792, 384, 0},
                       /* few output tiles, long K: x_proj and out_proj at decoding batch 64 */
                       {64, 3584, 144, 0}, {64, 3584, 1792, 3}, {17, 1024, 96, 5}, {20, 512, 40, 0},
                       /* forward chunks (cuBLASLt's plans with MAMBABYTE_CUDA_LT_ALGO): in_proj-,
                        * out_proj-, x_proj- and dt_proj-like, and rows at odd strides */
                       {600, 512, 1024, 0}, {520, 1024, 256, 0}, {1030, 768, 144, 0},
                       {700, 112, 448, 0}, {600, 200, 96, 3}, {260, 64, 96, 0},
                       /* a bias in cuBLASLt's epilogue at a padded ldy, small enough for the
                        * sanitizers (--small), fp32 and bf16 */
                       {270, 48, 80, 2},
                       /* wide enough that TF32 runs on fp16 operands by default (gemm.cu) */
                       {6144, 512, 6144, 4}};
  int nc = (int)(sizeof cfgs / sizeof cfgs[0]);
  for (int ci = 0; ci < nc; ci++)
    for (int mode = 0; mode < 4; mode++) { /* 0 f32 strict, 1 f32 tf32, 2 bf16, 3 f16 (n <= 8) */
      int64_t n = cfgs[ci][0], in_f = cfgs[ci][1], out_f = cfgs[ci][2], pad = cfgs[ci][3];
      if (g_small && n * in_f * out_f > 2000000) continue;
      if (mode == 3 && n > 8) continue; /* fp16 weights: the decoding GEMV only */
      int64_t ldx = in_f + pad, ldy = out_f + pad;
      int hasb = (ci + mode) % 2;
      int dt = mode == 2 ? MB_DTYPE_BF16 : mode == 3 ? MB_DTYPE_F16 : MB_DTYPE_F32;
      pair Wp = mode == 3 ? weights_f16(out_f, in_f) : weights(out_f, in_f, dt, -1, 1);
      pair X = prand(n * ldx, -1, 1), B = prand(out_f, -1, 1), Y = pf(NULL, n * ldy);
      MBX(mb_ctx_set_flags(GPU, mode == 1 ? MB_FLAG_ALLOW_TF32 : 0));
      MBX(mb_linear(CPU, C(X), ldx, Wp.c, dt, hasb ? C(B) : NULL, n, in_f, out_f, C(Y), ldy));
      MBX(mb_linear(GPU, G(X), ldx, Wp.g, dt, hasb ? G(B) : NULL, n, in_f, out_f, G(Y), ldy));
      MBX(mb_ctx_set_flags(GPU, 0));
      double tol = n <= 8 ? 1e-5 : (mode == 0 ? 1e-5 : (mode == 1 ? 1e-3 : 1e-2));
      char cfg[80];
      snprintf(cfg, sizeof cfg, "n=%lld in=%lld out=%lld ld+%lld %s bias=%d", (long long)n,
               (long long)in_f, (long long)out_f, (long long)pad,
               mode == 0 ? "f32" : mode == 1 ? "tf32" : mode == 2 ? "bf16" : "f16", hasb);
      check("linear", cfg, "y", rel_err(&Y, n, out_f, ldy), tol);
      if (n > 256) { /* a forward chunk's product: the same bits when run again */
        pair Y2 = pf(NULL, n * ldy);
        MBX(mb_ctx_set_flags(GPU, mode == 1 ? MB_FLAG_ALLOW_TF32 : 0));
        MBX(mb_linear(GPU, G(X), ldx, Wp.g, dt, hasb ? G(B) : NULL, n, in_f, out_f, G(Y2), ldy));
        MBX(mb_ctx_set_flags(GPU, 0));
        check("linear", cfg, "rerun bits", bits_differ(&Y, &Y2, n, out_f, ldy), 0);
        pfree(&Y2);
      }
      /* the padding between rows must stay untouched (NaN poison on both) */
      pfree(&Wp), pfree(&X), pfree(&B), pfree(&Y);
    }
}

/* TF32 products on fp16 operands (run with MAMBABYTE_CUDA_TF32_F16=2, so every product of more
 * than 8 rows takes them): operands whose magnitudes fp16 could not hold unscaled (3e5, 1e-6, and
 * 1e36 against 1e-36, the latter's scale 2^134 beyond a float), rows spread over 2^20 below the
 * largest (each row within TF32's 1e-3 of the CPU: the scale is one per operand), and an all-zero
 * x (y is the bias, exactly). */
static void t_linear_f16_range(void) {
  const int64_t n = 300, in_f = 512, out_f = 384, ldx = 516;
  const float xs[5] = {3e5f, 1e-6f, 1.f, 1.f, 1e36f}, ws[5] = {1.f, 1e3f, 1e-5f, 1.f, 1e-36f};
  for (int k = 0; k < 5; k++) {
    float *xh = hrand(n * ldx, -1, 1), *wh = hrand(out_f * in_f, -1, 1);
    for (int64_t r = 0; r < n; r++)
      for (int64_t c = 0; c < ldx; c++)
        xh[r * ldx + c] = k == 3 ? 0.f : k == 2 ? ldexpf(xh[r * ldx + c], -(int)(r % 21))
                                                : xh[r * ldx + c] * xs[k];
    for (int64_t i = 0; i < out_f * in_f; i++) wh[i] *= ws[k];
    pair X = pf(xh, n * ldx), W = pf(wh, out_f * in_f), B = prand(out_f, -1, 1);
    pair Y = pf(NULL, n * out_f);
    MBX(mb_ctx_set_flags(GPU, MB_FLAG_ALLOW_TF32));
    MBX(mb_linear(CPU, C(X), ldx, W.c, MB_DTYPE_F32, C(B), n, in_f, out_f, C(Y), out_f));
    MBX(mb_linear(GPU, G(X), ldx, W.g, MB_DTYPE_F32, G(B), n, in_f, out_f, G(Y), out_f));
    MBX(mb_ctx_set_flags(GPU, 0));
    float *g = (float *)malloc(Y.bytes), *c = (float *)malloc(Y.bytes);
    MBX(mb_ctx_synchronize(GPU));
    MBX(mb_memcpy_d2h(GPU, g, Y.g, Y.bytes));
    MBX(mb_memcpy_d2h(CPU, c, Y.c, Y.bytes));
    double worst = 0;
    for (int64_t r = 0; r < n; r++) {
      const double e = rel_of(g + r * out_f, c + r * out_f, (size_t)out_f, 1, out_f, 0);
      worst = e > worst ? e : worst;
    }
    static const char *what[5] = {"x*3e5", "x*1e-6 w*1e3", "rows 2^0..2^-20 w*1e-5", "x=0",
                                  "x*1e36 w*1e-36"};
    char cfg[80];
    snprintf(cfg, sizeof cfg, "n=%lld in=%lld out=%lld tf32 f16 %s", (long long)n,
             (long long)in_f, (long long)out_f, what[k]);
    check("linear", cfg, "worst row", worst, k == 3 ? 0 : 1e-3);
    pfree(&X), pfree(&W), pfree(&B), pfree(&Y);
    free(xh), free(wh), free(g), free(c);
  }
}

/* fp16 bits -> float (exact). */
static float f16_to_f32(uint16_t h) {
  const int e = (h >> 10) & 31, m = h & 1023;
  const float v = e == 0 ? ldexpf((float)m, -24)
                  : e == 31 ? (m ? NAN : INFINITY)
                            : ldexpf((float)(m | 1024), e - 25);
  return h & 0x8000 ? -v : v;
}

/* A scaled fp16 buffer of each context (n values, exponent e), decoded to floats. */
static float *f16_decoded(mb_ctx *ctx, const void *dev, int64_t n, int32_t e) {
  uint16_t *h = (uint16_t *)malloc((size_t)(n > 0 ? n : 1) * 2);
  MBX(mb_ctx_synchronize(GPU));
  MBX(mb_memcpy_d2h(ctx, h, dev, (size_t)n * 2));
  float *f = (float *)malloc((size_t)(n > 0 ? n : 1) * sizeof(float));
  for (int64_t i = 0; i < n; i++) f[i] = ldexpf(f16_to_f32(h[i]), -e);
  free(h);
  return f;
}
/* A scaled fp16 copy (n rows of m, dense) of fp32 rows O (at ld), 2^e: on each backend its bits
 * those of its own fp32 rows times 2^e rounded (f16.h's rounding), and the GPU's decoded values
 * the CPU's within fp16's rounding. */
static void check_f16_copy(const char *op, const char *cfg, const pair *H, const pair *O,
                           int64_t n, int64_t m, int64_t ld, int32_t e) {
  uint16_t *h = (uint16_t *)malloc((size_t)(n * m) * 2 + 2);
  float *o = (float *)malloc(O->bytes);
  for (int k = 0; k < 2; k++) {
    mb_ctx *cx = k ? GPU : CPU;
    MBX(mb_ctx_synchronize(GPU));
    MBX(mb_memcpy_d2h(cx, h, k ? H->g : H->c, (size_t)(n * m) * 2));
    MBX(mb_memcpy_d2h(cx, o, k ? O->g : O->c, O->bytes));
    double miss = 0;
    for (int64_t r = 0; r < n; r++)
      for (int64_t c = 0; c < m; c++)
        if (h[r * m + c] != mbcpu_f32_to_f16(ldexpf(o[r * ld + c], e))) miss++;
    check(op, cfg, k ? "f16 bits gpu" : "f16 bits cpu", miss, 0);
  }
  float *c = f16_decoded(CPU, H->c, n * m, e), *g = f16_decoded(GPU, H->g, n * m, e);
  check(op, cfg, "f16 copy", rel_of(g, c, (size_t)(n * m), 1, n * m, 0), 1e-3);
  free(c), free(g), free(h), free(o);
}

static int32_t exp_of(mb_ctx *ctx, const void *dev) {
  int32_t e;
  MBX(mb_ctx_synchronize(GPU));
  MBX(mb_memcpy_d2h(ctx, &e, dev, 4));
  return e;
}

/* mb_to_f16_scaled: the same exponent and bits on both (a maximum, a power of two and a rounding
 * are exact), over magnitudes fp16 holds only scaled, an all-zero block and an infinite one. */
static void t_to_f16_scaled(void) {
  const int64_t shapes[][3] = {{1, 5, 5}, {37, 33, 40}, {300, 512, 516}, {64, 1792, 1792}};
  const float mags[] = {1.f, 3e5f, 1e-30f, 1e36f, 0.f, INFINITY};
  for (int si = 0; si < 4; si++)
    for (int mi = 0; mi < 6; mi++) {
      const int64_t rows = shapes[si][0], cols = shapes[si][1], ld = shapes[si][2];
      if (g_small && si == 3) continue;
      float *h = hrand(rows * ld, -1, 1);
      for (int64_t i = 0; i < rows * ld; i++)
        h[i] = mags[mi] == 0.f ? 0.f : isinf(mags[mi]) ? h[i] : h[i] * mags[mi];
      if (isinf(mags[mi])) h[(rows / 2) * ld + cols / 2] = -INFINITY;
      pair X = pf(h, rows * ld), O = pb16(rows * cols), E = pnew(NULL, 4);
      MBX(mb_to_f16_scaled(CPU, C(X), ld, rows, cols, (uint16_t *)O.c, (int32_t *)E.c));
      MBX(mb_to_f16_scaled(GPU, G(X), ld, rows, cols, (uint16_t *)O.g, (int32_t *)E.g));
      char cfg[80];
      snprintf(cfg, sizeof cfg, "rows=%lld cols=%lld ld=%lld mag=%g", (long long)rows,
               (long long)cols, (long long)ld, (double)mags[mi]);
      const int32_t ec = exp_of(CPU, E.c), eg = exp_of(GPU, E.g);
      check("to_f16_scaled", cfg, "exp", ec == eg ? 0 : 1, 0);
      uint16_t *a = (uint16_t *)malloc(O.bytes), *b = (uint16_t *)malloc(O.bytes);
      MBX(mb_memcpy_d2h(CPU, a, O.c, O.bytes));
      MBX(mb_memcpy_d2h(GPU, b, O.g, O.bytes));
      check("to_f16_scaled", cfg, "bits", memcmp(a, b, O.bytes) ? 1 : 0, 0);
      free(a), free(b), free(h);
      pfree(&X), pfree(&O), pfree(&E);
    }
}

/* mb_linear_f16 from fp32 rows and from scaled fp16 ones, bias or not, added to y or not: within
 * fp32's 1e-5 of the CPU (products of fp16 values are exact in fp32; only the order of the sums
 * differs). */
static void t_linear_f16(void) {
  const int64_t shapes[][4] = {{1, 5, 7, 0}, {3, 33, 7, 3}, {9, 512, 384, 4},
                               {300, 512, 384, 0}, {257, 1792, 1000, 8}};
  for (int si = 0; si < 5; si++)
    for (int form = 0; form < 6; form++) {
      const int64_t n = shapes[si][0], in_f = shapes[si][1], out_f = shapes[si][2];
      const int64_t ldx = in_f + shapes[si][3];
      if (g_small && si == 4) continue;
      /* forms 4, 5: fp32 rows with their exponent given (as the scan's y_f16_exp gives it) */
      const int given = form >= 4, from_f32 = (form & 1) || given;
      const int acc = given ? form & 1 : (form >> 1) & 1, hasb = (form + si) % 2;
      pair X = prand(n * ldx, -3, 3), W = prand(out_f * in_f, -0.2f, 0.2f);
      pair B = prand(out_f, -1, 1), Y = prand(n * out_f, -1, 1);
      pair XH = pb16(n * ldx), WH = pb16(out_f * in_f), E = pnew(NULL, 8);
      mb_ctx *ctxs[2] = {CPU, GPU};
      for (int k = 0; k < 2; k++) {
        mb_ctx *cx = ctxs[k];
        void *x = k ? X.g : X.c, *xh = k ? XH.g : XH.c, *w = k ? W.g : W.c;
        void *wh = k ? WH.g : WH.c, *e = k ? E.g : E.c, *b = k ? B.g : B.c, *y = k ? Y.g : Y.c;
        MBX(mb_to_f16_scaled(cx, (const float *)w, in_f, out_f, in_f, (uint16_t *)wh,
                             (int32_t *)e + 1));
        if (!from_f32 || given)
          MBX(mb_to_f16_scaled(cx, (const float *)x, ldx, n, in_f, (uint16_t *)xh, (int32_t *)e));
        MBX(mb_linear_f16(cx, from_f32 ? (const float *)x : NULL,
                          from_f32 ? NULL : (const uint16_t *)xh,
                          from_f32 && !given ? NULL : (int32_t *)e,
                          from_f32 ? ldx : in_f, (const uint16_t *)wh, (const int32_t *)e + 1,
                          hasb ? (const float *)b : NULL, n, in_f, out_f, (float *)y, out_f, acc,
                          NULL, NULL));
      }
      char cfg[80];
      snprintf(cfg, sizeof cfg, "n=%lld in=%lld out=%lld ldx=%lld %s acc=%d bias=%d",
               (long long)n, (long long)in_f, (long long)out_f, (long long)ldx,
               given ? "x fp32, exp" : from_f32 ? "x fp32" : "x f16", acc, hasb);
      check("linear_f16", cfg, "y", rel_all(&Y), 1e-5);
      /* y_f16 (dt_proj's delta for the scan): the same product as scaled fp16 rows (ld out_f +
       * 2), its exponent ex + ew - 15 - ceil(log2(in_f)) on both backends, the values the fp32
       * product's within fp16's rounding */
      if (!acc && !hasb) {
        const int64_t ldh = out_f + 2;
        pair YH = pb16(n * ldh), E2 = pnew(NULL, 4);
        for (int k = 0; k < 2; k++) {
          mb_ctx *cx = ctxs[k];
          void *x = k ? X.g : X.c, *xh = k ? XH.g : XH.c, *wh = k ? WH.g : WH.c;
          void *e = k ? E.g : E.c;
          MBX(mb_linear_f16(cx, from_f32 ? (const float *)x : NULL,
                            from_f32 ? NULL : (const uint16_t *)xh,
                            from_f32 && !given ? NULL : (int32_t *)e, from_f32 ? ldx : in_f,
                            (const uint16_t *)wh, (const int32_t *)e + 1, NULL, n, in_f, out_f,
                            NULL, ldh, 0, (uint16_t *)(k ? YH.g : YH.c),
                            (int32_t *)(k ? E2.g : E2.c)));
        }
        int c = 0;
        while (((int64_t)1 << c) < in_f) c++;
        const int32_t ey = exp_of(GPU, E2.g), ex = exp_of(CPU, E.c);
        const int32_t ew = exp_of(CPU, (int32_t *)E.c + 1);
        /* (x's exponent is in E where it was given or made above) */
        const int wrong = ey != exp_of(CPU, E2.c) ||
                          ((!from_f32 || given) && ey != ex + ew - 15 - c);
        check("linear_f16", cfg, "y_f16 exp", wrong, 0);
        float *yc = f16_decoded(CPU, YH.c, n * ldh, ey), *yg = f16_decoded(GPU, YH.g, n * ldh, ey);
        float *yr = (float *)malloc(Y.bytes);
        MBX(mb_memcpy_d2h(GPU, yr, Y.g, Y.bytes));
        check("linear_f16", cfg, "y_f16 gpu=cpu", rel_of(yg, yc, (size_t)(n * ldh), n, out_f, ldh),
              1e-3);
        double err = 0, den = 0; /* against the fp32 product (rows at out_f) */
        for (int64_t i = 0; i < n; i++)
          for (int64_t o = 0; o < out_f; o++)
            err += fabs(yg[i * ldh + o] - yr[i * out_f + o]), den += fabs(yr[i * out_f + o]);
        check("linear_f16", cfg, "y_f16 = y", den > 0 ? err / den : err, 1e-3);
        free(yc), free(yg), free(yr), pfree(&YH), pfree(&E2);
      }
      pfree(&X), pfree(&W), pfree(&B), pfree(&Y), pfree(&XH), pfree(&WH), pfree(&E);
    }
}

/* mb_add_norm_f16 on both of the CUDA backend's paths (the warp kernel from 257 rows of d % 4 ==
 * 0; the fp32 norm then its scaling otherwise): the residual as mb_add_norm's within 1e-5, the
 * same exponent, the decoded rows within fp16's rounding of the CPU's. */
static void t_add_norm_f16(void) {
  const int64_t shapes[][2] = {{1, 37}, {7, 1792}, {300, 1792}, {257, 1000}, {300, 1030},
                               {2000, 512}};
  for (int si = 0; si < 6; si++)
    for (int form = 0; form < 4; form++) {
      const int64_t n = shapes[si][0], d = shapes[si][1];
      if (g_small && n > 300) continue;
      const int kind = form & 1, acc = (form >> 1) & 1, hasb = !kind;
      const int same = !acc && (si + form) % 3 == 0; /* x is the residual */
      pair X = prand(n * d, -2, 2), R = prand(n * d, -1, 3), W = prand(d, -1.5f, 1.5f);
      pair B = prand(d, -0.5f, 0.5f), O = pb16(n * d), E = pnew(NULL, 4);
      MBX(mb_add_norm_f16(CPU, same ? C(R) : C(X), C(R), acc, C(W), hasb ? C(B) : NULL, kind,
                          1e-5f, n, d, (uint16_t *)O.c, (int32_t *)E.c, 0));
      MBX(mb_add_norm_f16(GPU, same ? G(R) : G(X), G(R), acc, G(W), hasb ? G(B) : NULL, kind,
                          1e-5f, n, d, (uint16_t *)O.g, (int32_t *)E.g, 0));
      char cfg[80];
      snprintf(cfg, sizeof cfg, "n=%lld d=%lld %s acc=%d bias=%d x=res:%d", (long long)n,
               (long long)d, kind ? "rms" : "layer", acc, hasb, same);
      check("add_norm_f16", cfg, "residual", rel_all(&R), 1e-5);
      const int32_t ec = exp_of(CPU, E.c), eg = exp_of(GPU, E.g);
      check("add_norm_f16", cfg, "exp", ec == eg ? 0 : 1, 0);
      float *c = f16_decoded(CPU, O.c, n * d, ec), *g = f16_decoded(GPU, O.g, n * d, eg);
      check("add_norm_f16", cfg, "out", rel_of(g, c, (size_t)(n * d), 1, n * d, 0), 1e-3);
      free(c), free(g);
      if (!acc && !same) { /* exp_given: an exponent 2 below the bound's is read, not replaced */
        const int32_t eq = ec - 2;
        MBX(mb_memcpy_h2d(CPU, E.c, &eq, 4));
        MBX(mb_memcpy_h2d(GPU, E.g, &eq, 4));
        MBX(mb_add_norm_f16(CPU, C(X), C(R), 0, C(W), hasb ? C(B) : NULL, kind, 1e-5f, n, d,
                            (uint16_t *)O.c, (int32_t *)E.c, 1));
        MBX(mb_add_norm_f16(GPU, G(X), G(R), 0, G(W), hasb ? G(B) : NULL, kind, 1e-5f, n, d,
                            (uint16_t *)O.g, (int32_t *)E.g, 1));
        check("add_norm_f16", cfg, "given exp",
              exp_of(CPU, E.c) != eq || exp_of(GPU, E.g) != eq, 0);
        float *c2 = f16_decoded(CPU, O.c, n * d, eq), *g2 = f16_decoded(GPU, O.g, n * d, eq);
        check("add_norm_f16", cfg, "out, given exp",
              rel_of(g2, c2, (size_t)(n * d), 1, n * d, 0), 1e-3);
        free(c2), free(g2);
      }
      pfree(&X), pfree(&R), pfree(&W), pfree(&B), pfree(&O), pfree(&E);
    }
}

/* Elements (n rows of m at ld ld) of two device buffers whose bits differ. */
static double bits_differ(const pair *A, const pair *B, int64_t n, int64_t m, int64_t ld) {
  float *a = (float *)malloc(A->bytes), *b = (float *)malloc(A->bytes);
  MBX(mb_ctx_synchronize(GPU));
  MBX(mb_memcpy_d2h(GPU, a, A->g, A->bytes));
  MBX(mb_memcpy_d2h(GPU, b, B->g, A->bytes));
  double miss = 0;
  for (int64_t r = 0; r < n; r++)
    for (int64_t o = 0; o < m; o++)
      if (memcmp(&a[r * ld + o], &b[r * ld + o], 4) != 0) miss++;
  free(a), free(b);
  return miss;
}

/* Relative error (as rel_err's) of device buffer A against device buffer B over n rows of m at ld. */
static double rel_gpu(const pair *A, const pair *B, int64_t n, int64_t m, int64_t ld) {
  float *a = (float *)malloc(A->bytes), *b = (float *)malloc(A->bytes);
  MBX(mb_ctx_synchronize(GPU));
  MBX(mb_memcpy_d2h(GPU, a, A->g, A->bytes));
  MBX(mb_memcpy_d2h(GPU, b, B->g, A->bytes));
  const double e = rel_of(a, b, A->bytes / sizeof(float), n, m, ld);
  free(a), free(b);
  return e;
}

/* mb_linear_bf16: x as bf16 bits. GPU vs CPU within fp32's tolerance (products of bf16 values
 * are exact in fp32); with bf16 weights and n > 8, the GPU's bits equal mb_linear's of the fp32
 * rows the bf16 ones were rounded from (the same tensor-core product, its conversion done); from
 * 2 rows on, a rerun's bits equal the first run's. */
static void t_linear_bf16(void) {
  /* n, in_f, out_f, pad of ldx/ldy */
  int64_t cfgs[][4] = {{1, 37, 101, 3},    {5, 3584, 144, 4},  {9, 256, 96, 0},
                       {300, 96, 160, 5},  {257, 1792, 384, 0}, {33, 112, 300, 8},
                       {64, 3584, 144, 0}, {17, 1024, 96, 5},
                       /* 9 to 64 rows (decoding batches): partial output tiles, decoding's
                        * in_proj, x_proj and out_proj shapes */
                       {40, 1792, 1000, 8}, {9, 3584, 144, 0}, {64, 1792, 7168, 0},
                       {23, 3584, 1792, 8}, {64, 128, 64, 0}, {12, 256, 100, 8},
                       /* 2 to 8 rows: the tensor cores with bf16 weights (decoding batches) */
                       {4, 1792, 7168, 0}, {8, 3584, 1792, 3}, {2, 112, 300, 0}};
  for (int ci = 0; ci < (int)(sizeof cfgs / sizeof cfgs[0]); ci++)
    for (int dt = 0; dt < 2; dt++) {
      int64_t n = cfgs[ci][0], in_f = cfgs[ci][1], out_f = cfgs[ci][2], pad = cfgs[ci][3];
      if (g_small && n * in_f * out_f > 2000000) continue;
      int64_t ldx = in_f + pad, ldy = out_f + pad;
      int hasb = (ci + dt) % 2;
      float *xh = hrand(n * ldx, -1, 1);
      uint16_t *xb = (uint16_t *)malloc((size_t)(n * ldx) * 2);
      for (int64_t i = 0; i < n * ldx; i++) xb[i] = f2bf(xh[i]);
      pair Wp = weights(out_f, in_f, dt, -1, 1);
      pair XB = pnew(xb, (size_t)(n * ldx) * 2), X = pf(xh, n * ldx), B = prand(out_f, -1, 1);
      pair Y = pf(NULL, n * ldy), Y2 = pf(NULL, n * ldy);
      MBX(mb_linear_bf16(CPU, (uint16_t *)XB.c, ldx, Wp.c, dt, hasb ? C(B) : NULL, n, in_f, out_f,
                         C(Y), ldy));
      MBX(mb_linear_bf16(GPU, (uint16_t *)XB.g, ldx, Wp.g, dt, hasb ? G(B) : NULL, n, in_f, out_f,
                         G(Y), ldy));
      char cfg[80];
      snprintf(cfg, sizeof cfg, "n=%lld in=%lld out=%lld ld+%lld %s bias=%d", (long long)n,
               (long long)in_f, (long long)out_f, (long long)pad, dt ? "bf16" : "f32", hasb);
      check("linear_bf16", cfg, "y", rel_err(&Y, n, out_f, ldy), 1e-5);
      if (dt == MB_DTYPE_BF16 && n >= 2) { /* a second run gives the same bits */
        MBX(mb_linear_bf16(GPU, (uint16_t *)XB.g, ldx, Wp.g, dt, hasb ? G(B) : NULL, n, in_f,
                           out_f, G(Y2), ldy));
        check("linear_bf16", cfg, "rerun bits", bits_differ(&Y, &Y2, n, out_f, ldy), 0);
      }
      if (dt == MB_DTYPE_BF16 && n > 8 && pad == 0) { /* mb_linear's own rows are dense */
        MBX(mb_linear(GPU, G(X), ldx, Wp.g, dt, hasb ? G(B) : NULL, n, in_f, out_f, G(Y2), ldy));
        check("linear_bf16", cfg, "=linear", bits_differ(&Y, &Y2, n, out_f, ldy), 0);
      }
      pfree(&Wp), pfree(&XB), pfree(&X), pfree(&B), pfree(&Y), pfree(&Y2), free(xh), free(xb);
    }
}

/* count random values in [lo, hi) rounded to bf16: the bits (*bits, both contexts) and the floats
 * they stand for (returned, both contexts). */
static pair prand_bf16_pair(int64_t count, float lo, float hi, pair *bits) {
  float *h = hrand(count, lo, hi);
  uint16_t *b = (uint16_t *)malloc((size_t)(count > 0 ? count : 1) * 2);
  for (int64_t i = 0; i < count; i++) {
    b[i] = f2bf(h[i]);
    uint32_t u = (uint32_t)b[i] << 16;
    memcpy(&h[i], &u, 4);
  }
  *bits = pnew(b, (size_t)(count > 0 ? count : 1) * 2);
  pair f = pf(h, count);
  free(h), free(b);
  return f;
}

/* mb_linear_to_bf16 (the forward's in_proj -> xz and dt_proj -> delta with bf16 activations):
 * the bf16 output against the CPU's rounded product (1e-2: the GPU's GEMM writes bf16 from its own
 * fp32 accumulation); with bf16 weights and more than 8 rows a rerun keeps the bits. */
static void t_linear_to_bf16(void) {
  /* n, in_f, out_f, pad of ldx/ldy */
  int64_t cfgs[][4] = {{1, 37, 101, 3},   {5, 112, 300, 4},   {9, 256, 96, 0},
                       {300, 96, 160, 5}, {257, 1792, 7168, 0}, {513, 112, 3584, 8},
                       {64, 1792, 384, 2}, {1030, 112, 3584, 0}};
  for (int ci = 0; ci < (int)(sizeof cfgs / sizeof cfgs[0]); ci++)
    for (int dt = 0; dt < 2; dt++)
      for (int xbf = 0; xbf < 2; xbf++) {
        int64_t n = cfgs[ci][0], in_f = cfgs[ci][1], out_f = cfgs[ci][2], pad = cfgs[ci][3];
        if (g_small && n * in_f * out_f > 2000000) continue;
        const int64_t ldx = in_f + pad, ldy = out_f + pad;
        const int hasb = (ci + dt + xbf) % 3 == 0;
        pair XB, X = prand_bf16_pair(n * ldx, -1, 1, &XB);
        pair Wp = weights(out_f, in_f, dt, -1, 1), B = prand(out_f, -1, 1);
        pair Y = pb16(n * ldy), Y2 = pb16(n * ldy);
#define LTB(ctx, P, y)                                                                             \
  MBX(mb_linear_to_bf16(ctx, xbf ? NULL : (float *)X.P, xbf ? (uint16_t *)XB.P : NULL, ldx, Wp.P,  \
                        dt, hasb ? (float *)B.P : NULL, n, in_f, out_f, (uint16_t *)y.P, ldy))
        LTB(CPU, c, Y);
        LTB(GPU, g, Y);
        char cfg[80];
        snprintf(cfg, sizeof cfg, "n=%lld in=%lld out=%lld ld+%lld %s x=%s bias=%d", (long long)n,
                 (long long)in_f, (long long)out_f, (long long)pad, dt ? "bf16" : "f32",
                 xbf ? "bf16" : "f32", hasb);
        check_bf16("linear_to_bf16", cfg, &Y, NULL, n, out_f, ldy, ldy);
        if (dt == MB_DTYPE_BF16 && n > 8) {
          LTB(GPU, g, Y2);
          float *a = bf16_rows(GPU, Y.g, Y.bytes, n, out_f, ldy);
          float *b = bf16_rows(GPU, Y2.g, Y2.bytes, n, out_f, ldy);
          check("linear_to_bf16", cfg, "rerun bits",
                memcmp(a, b, (size_t)(n * out_f) * sizeof(float)) != 0, 0);
          free(a), free(b);
        }
#undef LTB
        pfree(&XB), pfree(&X), pfree(&Wp), pfree(&B), pfree(&Y), pfree(&Y2);
      }
}

/* One mb_linear_add_norm case's operands (both contexts) and its switches. */
typedef struct {
  int64_t n, in_f, out_f, ldx;
  int dt, xbf, kind, acc, hasb, hasnb, want_f32, want_bf;
  int tf32; /* the GPU context allows TF32 (fp32 weights' forward chunks: the product in place) */
  pair W, X, XB, B, NW, NB, H;
} lan_case;

/* Runs the case on the CPU (gpu = 0) or the GPU, into residual R and outputs O / OB. */
static void lan_run_on(mb_ctx *gctx, const lan_case *c, int gpu, pair *R, pair *O, pair *OB) {
#define SIDE(p) (gpu ? (p).g : (p).c)
  if (gpu && c->tf32) MBX(mb_ctx_set_flags(gctx, MB_FLAG_ALLOW_TF32));
  MBX(mb_linear_add_norm(gpu ? gctx : CPU, c->xbf ? NULL : (float *)SIDE(c->X),
                         c->xbf ? (uint16_t *)SIDE(c->XB) : NULL, c->ldx, SIDE(c->W), c->dt,
                         c->hasb ? (float *)SIDE(c->B) : NULL, c->n, c->in_f, c->out_f,
                         (float *)SIDE(c->H), (float *)SIDE(*R), c->acc, (float *)SIDE(c->NW),
                         c->hasnb ? (float *)SIDE(c->NB) : NULL, c->kind, 1e-5f,
                         c->want_f32 ? (float *)SIDE(*O) : NULL,
                         c->want_bf ? (uint16_t *)SIDE(*OB) : NULL));
  if (gpu && c->tf32) MBX(mb_ctx_set_flags(gctx, 0));
#undef SIDE
}
static void lan_run(const lan_case *c, int gpu, pair *R, pair *O, pair *OB) {
  lan_run_on(GPU, c, gpu, R, O, OB);
}

/* mb_linear_add_norm: the residual and the normed rows (fp32, bf16) against the CPU's two calls;
 * bf16 weights and 2 to 256 rows split the product over in_f (parts of 8, 4 or 2 as in_f allows,
 * else the product whole), more rows add it into the residual in the GEMM; reruns hold their bits.
 * Tolerances as t_linear's (1e-2 where x is rounded to bf16). The rows of 1024 and 1792 (the
 * models') take the norm's NT form by default: a context without it (MAMBABYTE_CUDA_NORM_NT=0)
 * gives the same bits. */
static void t_linear_add_norm(void) {
  mb_ctx *generic = gpu_ctx_generic_norm();
  /* n, in_f, out_f, pad of ldx: out_proj at decoding batches 12, 64 and 256; parts of 4 (448),
   * none (1000, 96: the product whole), out_f beyond the norm's kernel (2049), 2 to 8 rows, and
   * forward chunks (the product added to the residual by the GEMM; with a bias, the two calls) */
  int64_t cfgs[][4] = {{64, 3584, 1792, 0}, {12, 3584, 1792, 8}, {256, 3584, 1792, 0},
                       {40, 448, 101, 0},   {9, 1000, 37, 3},    {33, 96, 2048, 0},
                       {17, 1024, 2049, 0}, {5, 512, 64, 1},     {20, 2048, 640, 2},
                       /* decoding batches 2 to 8 (tensor cores from 2 rows) and one row */
                       {4, 3584, 1792, 0},  {8, 3584, 1792, 8},  {2, 448, 101, 0},
                       {1, 3584, 1792, 0},
                       /* forward chunks (above 256 rows): the GEMM adds into the residual */
                       {300, 3584, 1792, 0}, {512, 1000, 512, 4}, {257, 96, 1028, 0},
                       {260, 16, 64, 1}};
  int k = 0;
  for (int ci = 0; ci < (int)(sizeof cfgs / sizeof cfgs[0]); ci++)
    for (int dt = 0; dt < 2; dt++)
      for (int xbf = 0; xbf < 2; xbf++, k++) {
        lan_case c = {.n = cfgs[ci][0], .in_f = cfgs[ci][1], .out_f = cfgs[ci][2], .dt = dt,
                      .xbf = xbf};
        const int64_t n = c.n, out_f = c.out_f;
        if (g_small && n * c.in_f * out_f > 4000000) continue;
        c.ldx = c.in_f + cfgs[ci][3];
        c.kind = k % 2, c.acc = (k / 2) % 2 == 0, c.hasb = k % 3 == 0, c.hasnb = k % 3 == 1;
        c.want_f32 = k % 4 != 3, c.want_bf = k % 4 != 0;
        c.tf32 = dt == MB_DTYPE_F32 && !xbf && n > 256;
        float *xh = hrand(n * c.ldx, -1, 1), *rh = hrand(n * out_f, -1, 3);
        uint16_t *xb = (uint16_t *)malloc((size_t)(n * c.ldx) * 2);
        for (int64_t i = 0; i < n * c.ldx; i++) xb[i] = f2bf(xh[i]);
        c.W = weights(out_f, c.in_f, dt, -1, 1), c.X = pf(xh, n * c.ldx);
        c.XB = pnew(xb, (size_t)(n * c.ldx) * 2), c.B = prand(out_f, -1, 1);
        c.NW = prand(out_f, 0.5f, 1.5f), c.NB = prand(out_f, -0.5f, 0.5f);
        c.H = pf(NULL, n * out_f);
        pair R = pf(rh, n * out_f), R2 = pf(rh, n * out_f);
        pair O = pf(NULL, n * out_f), O2 = pf(NULL, n * out_f), OB = pb16(n * out_f);
        lan_run(&c, 0, &R, &O, &OB);
        lan_run(&c, 1, &R, &O, &OB);
        char cfg[96];
        snprintf(cfg, sizeof cfg, "n=%lld in=%lld out=%lld ld+%lld %s x=%s %s acc=%d b=%d/%d",
                 (long long)n, (long long)c.in_f, (long long)out_f, (long long)cfgs[ci][3],
                 dt ? "bf16" : (c.tf32 ? "tf32" : "f32"), xbf ? "bf16" : "f32",
                 c.kind ? "rms" : "layer", c.acc, c.hasb, c.hasnb);
        const double tol = dt == MB_DTYPE_BF16 && n >= 2 && !xbf ? 1e-2 : c.tf32 ? 1e-3 : 1e-5;
        check("linear_add_norm", cfg, "residual", rel_all(&R), tol);
        if (c.want_f32) check("linear_add_norm", cfg, "out", rel_all(&O), tol);
        if (c.want_bf)
          check_bf16("linear_add_norm", cfg, &OB, c.want_f32 ? &O : NULL, n, out_f, out_f, out_f);
        if (c.want_f32) { /* a second run from the same residual gives the same bits */
          lan_run(&c, 1, &R2, &O2, &OB);
          check("linear_add_norm", cfg, "rerun bits", bits_differ(&O, &O2, n, out_f, out_f), 0);
          check("linear_add_norm", cfg, "rerun res", bits_differ(&R, &R2, n, out_f, out_f), 0);
          /* and without the norm's NT form: with x in bf16 (with fp32 x and bf16 weights a fresh
           * context's product gave other bits than the test's long-lived one, on the H200, the
           * norm's form aside: not the norm's question; t_norm_nt holds the norm alone) */
          if (xbf && out_f % 256 == 0 && out_f >= 1024 && out_f <= 2048) {
            pair R3 = pf(rh, n * out_f), O3 = pf(NULL, n * out_f);
            lan_run_on(generic, &c, 1, &R3, &O3, &OB);
            MBX(mb_ctx_synchronize(generic));
            check("linear_add_norm", cfg, "=generic norm bits",
                  bits_differ(&O, &O3, n, out_f, out_f) + bits_differ(&R, &R3, n, out_f, out_f),
                  0);
            pfree(&R3), pfree(&O3);
          }
        }
        pfree(&c.W), pfree(&c.X), pfree(&c.XB), pfree(&c.B), pfree(&c.NW), pfree(&c.NB);
        pfree(&c.H), pfree(&R), pfree(&R2), pfree(&O), pfree(&O2), pfree(&OB);
        free(xh), free(rh), free(xb);
      }
  MBX(mb_ctx_destroy(generic));
}

static void t_conv(void) {
  int64_t lens[] = {1, 7, 300}, dims[] = {37, 101}, batches[] = {1, 3}, ks[] = {4, 3, 1, 4};
  for (int li = 0; li < 3; li++)
    for (int di = 0; di < 2; di++)
      for (int bi = 0; bi < 2; bi++) {
        int64_t len = lens[li], d = dims[di], batch = batches[bi], k = ks[(li + di + bi) % 4];
        if (g_small && len > 7 && batch > 1) continue;
        int use_state = (li + bi) % 3 != 2, use_pre = (di + bi) % 2, hasb = (li + di) % 2 == 0;
        int64_t ldx = 2 * d + 1, ldo = d + 5, rows = batch * len;
        pair X = prand(rows * ldx, -2, 2), W = prand(d * k, -1, 1), B = prand(d, -1, 1);
        pair S = prand(batch * d * (k > 1 ? k - 1 : 1), -2, 2);
        pair O = pf(NULL, rows * ldo), P = pf(NULL, rows * d), OB = pb16(rows * d);
        /* the 16-bit copy: none, bf16, or scaled fp16 (out16_f16_exp; len 300 is the tile
         * kernel's store, 1 and 7 the conversion after the other kernels) */
        const int copy = (int)((li + 2 * di + bi) % 3), bf = copy == 1, f16 = copy == 2;
        const int32_t e16 = (li + di) % 2 ? 3 : -2;
        pair E = pnew(&e16, 4);
        MBX(mb_causal_conv1d(CPU, C(X), NULL, ldx, C(W), hasb ? C(B) : NULL, use_state ? C(S) : NULL,
                             batch, len, d, k, C(O), ldo, use_pre ? C(P) : NULL,
                             copy ? (uint16_t *)OB.c : NULL, f16 ? (int32_t *)E.c : NULL));
        MBX(mb_causal_conv1d(GPU, G(X), NULL, ldx, G(W), hasb ? G(B) : NULL, use_state ? G(S) : NULL,
                             batch, len, d, k, G(O), ldo, use_pre ? G(P) : NULL,
                             copy ? (uint16_t *)OB.g : NULL, f16 ? (int32_t *)E.g : NULL));
        char cfg[80];
        snprintf(cfg, sizeof cfg, "b=%lld len=%lld d=%lld k=%lld st=%d pre=%d bias=%d copy=%s",
                 (long long)batch, (long long)len, (long long)d, (long long)k, use_state, use_pre,
                 hasb, bf ? "bf16" : f16 ? "f16" : "-");
        if (bf) check_bf16("causal_conv1d", cfg, &OB, &O, rows, d, d, ldo);
        if (f16) check_f16_copy("causal_conv1d", cfg, &OB, &O, rows, d, ldo, e16);
        pfree(&E);
        check("causal_conv1d", cfg, "out", rel_err(&O, rows, d, ldo), 1e-5);
        if (use_pre) check("causal_conv1d", cfg, "preact", rel_all(&P), 1e-5);
        if (use_state && k > 1) check("causal_conv1d", cfg, "state", rel_all(&S), 1e-6);
        pfree(&X), pfree(&W), pfree(&B), pfree(&S), pfree(&O), pfree(&P), pfree(&OB);
      }
}

/* mb_causal_conv1d of bf16 rows (the forward's bf16 xz): GPU vs CPU, and on the GPU the bits of
 * the same call on the floats the bits stand for (each input widened as it is loaded). */
static void t_conv_bf16(void) {
  /* only_bf with an even d: the pair kernel (k_conv_tile_pair), its bf16 output held to the fp32
   * call's rounded bit for bit */
  struct { int64_t batch, len, d, k; int st, only_bf; } cs[] = {
      {1, 300, 101, 4, 1, 0}, {2, 7, 37, 3, 1, 1},    {1, 1030, 4100, 4, 1, 0},
      {3, 65, 33, 4, 0, 1},   {1, 257, 3584, 4, 1, 1}, {2, 100, 260, 4, 1, 1},
      {1, 300, 1002, 3, 0, 1},
  };
  for (size_t i = 0; i < sizeof cs / sizeof cs[0]; i++) {
    const int64_t batch = cs[i].batch, len = cs[i].len, d = cs[i].d, k = cs[i].k;
    if (g_small && !g_only_bf && batch * len * d > 100000) continue;
    const int64_t ldx = 2 * d, ldo = d, rows = batch * len;
    pair XB, X = prand_bf16_pair(rows * ldx, -2, 2, &XB);
    pair W = prand(d * k, -1, 1), B = prand(d, -1, 1);
    float *sh = hrand(batch * d * (k - 1), -2, 2);
    pair S = pf(sh, batch * d * (k - 1)), S2 = pf(sh, batch * d * (k - 1));
    pair O = pf(NULL, rows * ldo), O2 = pf(NULL, rows * ldo), OB = pb16(rows * d);
    float *st = cs[i].st ? C(S) : NULL;
    const int ob = cs[i].only_bf; /* the bf16 output alone (the forward's bf16 u) */
    MBX(mb_causal_conv1d(CPU, NULL, (uint16_t *)XB.c, ldx, C(W), C(B), st, batch, len, d, k,
                         ob ? NULL : C(O), ldo, NULL, (uint16_t *)OB.c, NULL));
    MBX(mb_causal_conv1d(GPU, NULL, (uint16_t *)XB.g, ldx, G(W), G(B), cs[i].st ? G(S) : NULL,
                         batch, len, d, k, ob ? NULL : G(O), ldo, NULL, (uint16_t *)OB.g, NULL));
    MBX(mb_causal_conv1d(GPU, G(X), NULL, ldx, G(W), G(B), cs[i].st ? G(S2) : NULL, batch, len, d,
                         k, G(O2), ldo, NULL, NULL, NULL));
    char cfg[80];
    snprintf(cfg, sizeof cfg, "x=bf16 b=%lld len=%lld d=%lld k=%lld st=%d out=%s",
             (long long)batch, (long long)len, (long long)d, (long long)k, cs[i].st,
             ob ? "bf16" : "both");
    if (!ob) {
      check("causal_conv1d", cfg, "out", rel_err(&O, rows, d, ldo), 1e-5);
      check("causal_conv1d", cfg, "=f32 bits", bits_differ(&O, &O2, rows, d, ldo), 0);
    }
    /* the bf16 output: the CPU's, and the fp32 call's output rounded (O2: the fp32 x's) */
    check_bf16("causal_conv1d", cfg, &OB, &O2, rows, d, d, ldo);
    if (cs[i].st) {
      check("causal_conv1d", cfg, "state", rel_all(&S), 1e-6);
      check("causal_conv1d", cfg, "=f32 state", bits_differ(&S, &S2, 1, batch * d * (k - 1), 0),
            0);
    }
    pfree(&XB), pfree(&X), pfree(&W), pfree(&B), pfree(&S), pfree(&S2), pfree(&O), pfree(&O2);
    pfree(&OB), free(sh);
  }
}

/* A scan case's checks: y against the CPU's; against the GPU's call on the fp32 rows the 16-bit
 * ones stand for (`peer`), bit for bit where both take the same form (`same`), else within fp32's
 * tolerance; and the final state where there is one. */
static void check_scan_peer(const char *cfg, const char *peer, pair *Y, pair *Y2, pair *S,
                            int64_t rows, int64_t d, int64_t ldy, int same, int st) {
  check("selective_scan", cfg, "y", rel_err(Y, rows, d, ldy), 1e-5);
  if (same) {
    char what[32];
    snprintf(what, sizeof what, "%s bits", peer);
    check("selective_scan", cfg, what, bits_differ(Y, Y2, rows, d, ldy), 0);
  } else {
    check("selective_scan", cfg, peer, rel_gpu(Y, Y2, rows, d, ldy), 1e-5);
  }
  if (st) check("selective_scan", cfg, "state", rel_all(S), 1e-5);
}

/* mb_selective_scan of bf16 u, delta and z (the forward's bf16 activations): GPU vs CPU, and on the
 * GPU the bits of the same call on the floats they stand for where both run the same kernel
 * (`same`). The tile scan stages them as pairs of channels (d and the leading dimensions even:
 * the first cases); an odd d, an odd leading dimension or fp32 u or z beside a bf16 delta take the
 * chunked kernels, which widen each value (the fp32 call of those shapes runs the tile scan: the
 * same values within rounding, not the same bits). */
static void t_scan_bf16(void) {
  struct { int64_t batch, len, d, n, ldd_pad; int ubf, zbf, zf32, st, same; } cs[] = {
      {1, 700, 4100, 16, 2, 1, 1, 0, 1, 1}, {1, 256, 3584, 16, 0, 1, 1, 0, 0, 1},
      {2, 300, 4100, 5, 4, 1, 0, 0, 1, 1},  {1, 513, 4099, 16, 1, 1, 1, 0, 1, 0},
      {1, 300, 4100, 16, 1, 1, 1, 0, 1, 0}, {1, 400, 4100, 16, 2, 1, 0, 1, 1, 0},
      {1, 300, 4100, 16, 2, 0, 1, 0, 1, 0}, {3, 7, 37, 16, 1, 1, 1, 0, 1, 1},
      {1, 2100, 101, 3, 3, 0, 1, 0, 0, 1},
  };
  for (size_t i = 0; i < sizeof cs / sizeof cs[0]; i++) {
    const int64_t batch = cs[i].batch, len = cs[i].len, d = cs[i].d, n = cs[i].n;
    if (g_small && !(g_only_bf && len * d < 1000000) && batch * len * d > 100000) continue;
    const int64_t rows = batch * len, ldu = d, ldd = d + cs[i].ldd_pad, ldbc = 2 * n;
    const int64_t ldz = 2 * d, ldy = d;
    pair DH, D = prand_bf16_pair(rows * ldd, -4, 1, &DH);
    pair ZH, Z = prand_bf16_pair(rows * ldz, -3, 3, &ZH);
    pair UH, U = prand_bf16_pair(rows * ldu, -2, 2, &UH);
    pair BC = prand(rows * ldbc, -1, 1), Dk = prand(d, -1, 1);
    pair DB = prand(d, -2, 0.5f);
    float *ah = hrand(d * n, 0, 1);
    for (int64_t j = 0; j < d * n; j++) ah[j] = -expf(logf((float)(j % n + 1)) * ah[j]);
    pair A = pf(ah, d * n);
    float *sh = hrand(batch * d * n, -1, 1);
    pair S = pf(sh, batch * d * n), S2 = pf(sh, batch * d * n);
    pair Y = pf(NULL, rows * ldy), Y2 = pf(NULL, rows * ldy);
    const int ub = cs[i].ubf, zb = cs[i].zbf, zf = cs[i].zf32;
#define SCAN_BF(ctx, P, SS, y, zfp)                                                                \
  MBX(mb_selective_scan(ctx, ub ? NULL : (float *)U.P, ub ? (uint16_t *)UH.P : NULL, ldu, NULL,   \
                        (uint16_t *)DH.P, ldd, (float *)DB.P,                                     \
                        (float *)A.P, (float *)BC.P, ldbc, (float *)BC.P + n, ldbc,               \
                        (float *)Dk.P, zfp, zb ? (uint16_t *)ZH.P : NULL, ldz,                    \
                        cs[i].st ? (float *)SS.P : NULL, NULL, batch, len, d, n, 1,               \
                        (float *)y.P, ldy, NULL, NULL, NULL, NULL))
    SCAN_BF(CPU, c, S, Y, zf ? C(Z) : NULL);
    SCAN_BF(GPU, g, S, Y, zf ? G(Z) : NULL);
#undef SCAN_BF
    MBX(mb_selective_scan(GPU, G(U), NULL, ldu, G(D), NULL, ldd, G(DB), G(A), G(BC), ldbc, G(BC) + n,
                          ldbc, G(Dk), (zb || zf) ? G(Z) : NULL, NULL, ldz,
                          cs[i].st ? G(S2) : NULL, NULL, batch, len, d, n, 1, G(Y2), ldy, NULL,
                          NULL, NULL, NULL));
    char cfg[96];
    snprintf(cfg, sizeof cfg, "u=%s delta=bf16 z=%s b=%lld len=%lld d=%lld n=%lld ldd+%lld st=%d",
             ub ? "bf16" : "f32", zb ? "bf16" : zf ? "f32" : "-", (long long)batch, (long long)len, (long long)d,
             (long long)n, (long long)cs[i].ldd_pad, cs[i].st);
    check_scan_peer(cfg, "=f32", &Y, &Y2, &S, rows, d, ldy, cs[i].same, cs[i].st);
    pfree(&DH), pfree(&D), pfree(&ZH), pfree(&Z), pfree(&UH), pfree(&U), pfree(&BC), pfree(&Dk);
    pfree(&DB);
    pfree(&A), pfree(&S), pfree(&S2), pfree(&Y), pfree(&Y2), free(ah), free(sh);
  }
}

/* fp16(h[j] 2^e) of n floats (malloc'd); where snap, h[j] becomes the float that stands for. */
static uint16_t *f16_scaled_rows(float *h, int64_t n, int32_t e, int snap) {
  uint16_t *r = (uint16_t *)malloc((size_t)n * 2);
  for (int64_t j = 0; j < n; j++) {
    r[j] = mbcpu_f32_to_f16(ldexpf(h[j], e));
    if (snap) h[j] = ldexpf(mbcpu_f16_to_f32(r[j]), -e);
  }
  return r;
}

/* mb_selective_scan with u, and delta where df, as scaled fp16 rows (u_f16_exp, delta_f16_exp:
 * the TF32 forward on the twins reads the conv's fp16 copy and dt_proj's fp16 output): GPU vs
 * CPU, and on the GPU the bits of the same call on the fp32 rows the fp16 ones stand for (the tile
 * scan's fp16 pair staging, or the other forms' loads). */
static void t_scan_f16u(void) {
  /* same: both calls take the same form (an odd d keeps the fp16 rows off the tile scan's pair
   * staging while the fp32 rows take the tile scan: then within fp32's tolerance) */
  struct { int64_t batch, len, d, n; int e, z, st, same, df; } cs[] = {
      {1, 700, 4100, 16, 3, 1, 1, 1, 1}, {1, 256, 3584, 16, -2, 1, 0, 1, 1},
      {2, 300, 4100, 5, 0, 0, 1, 1, 0},  {1, 513, 4099, 16, 1, 1, 1, 0, 1},
      {3, 7, 37, 16, 5, 1, 1, 1, 1},     {1, 2100, 101, 3, -4, 1, 0, 1, 1},
      {1, 300, 4100, 16, 2, 1, 1, 1, 0},
  };
  for (size_t i = 0; i < sizeof cs / sizeof cs[0]; i++) {
    const int64_t batch = cs[i].batch, len = cs[i].len, d = cs[i].d, n = cs[i].n;
    /* --small --only scan keeps one tile case (the sanitizers' view of the fp16 pair staging) */
    if (g_small && !(g_only_scan && len * d < 1000000) && batch * len * d > 100000) continue;
    const int64_t rows = batch * len, ldbc = 2 * n, ldz = 2 * d;
    const int32_t e = cs[i].e;
    /* u's fp16 rows and the floats they stand for */
    float *uh = hrand(rows * d, -2, 2);
    uint16_t *u16 = f16_scaled_rows(uh, rows * d, e, 1);
    pair UH = pnew(u16, (size_t)(rows * d) * 2), U = pf(uh, rows * d), E = pnew(&e, 4);
    /* delta's fp16 rows (by e - 1) and the floats they stand for, where df */
    const int32_t ed = e - 1;
    float *dh = hrand(rows * d, -4, 1);
    uint16_t *d16 = f16_scaled_rows(dh, rows * d, ed, cs[i].df);
    pair DH = pnew(d16, (size_t)(rows * d) * 2), D = pf(dh, rows * d), ED = pnew(&ed, 4);
    pair Z = prand(rows * ldz, -3, 3);
    pair BC = prand(rows * ldbc, -1, 1), Dk = prand(d, -1, 1), DB = prand(d, -2, 0.5f);
    float *ah = hrand(d * n, 0, 1);
    for (int64_t j = 0; j < d * n; j++) ah[j] = -expf(logf((float)(j % n + 1)) * ah[j]);
    pair A = pf(ah, d * n);
    float *sh = hrand(batch * d * n, -1, 1);
    pair S = pf(sh, batch * d * n), S2 = pf(sh, batch * d * n);
    pair Y = pf(NULL, rows * d), Y2 = pf(NULL, rows * d);
    for (int k = 0; k < 2; k++) {
      mb_ctx *cx = k ? GPU : CPU;
#define P(X) (k ? G(X) : C(X))
      const int df = cs[i].df;
      MBX(mb_selective_scan(cx, NULL, (const uint16_t *)(k ? UH.g : UH.c), d, df ? NULL : P(D),
                            df ? (const uint16_t *)(k ? DH.g : DH.c) : NULL, d, P(DB), P(A),
                            P(BC), ldbc, P(BC) + n, ldbc, P(Dk), cs[i].z ? P(Z) : NULL, NULL,
                            ldz, cs[i].st ? P(S) : NULL, NULL, batch, len, d, n, 1, P(Y), d, NULL,
                            NULL, (const int32_t *)(k ? E.g : E.c),
                            df ? (const int32_t *)(k ? ED.g : ED.c) : NULL));
#undef P
    }
    MBX(mb_selective_scan(GPU, G(U), NULL, d, G(D), NULL, d, G(DB), G(A), G(BC), ldbc, G(BC) + n,
                          ldbc, G(Dk), cs[i].z ? G(Z) : NULL, NULL, ldz, cs[i].st ? G(S2) : NULL,
                          NULL, batch, len, d, n, 1, G(Y2), d, NULL, NULL, NULL, NULL));
    char cfg[96];
    snprintf(cfg, sizeof cfg, "u=f16 e=%d delta=%s z=%d b=%lld len=%lld d=%lld n=%lld st=%d", e,
             cs[i].df ? "f16" : "f32", cs[i].z, (long long)batch, (long long)len, (long long)d,
             (long long)n, cs[i].st);
    check_scan_peer(cfg, "=f32 rows", &Y, &Y2, &S, rows, d, d, cs[i].same, cs[i].st);
    pfree(&UH), pfree(&U), pfree(&E), pfree(&D), pfree(&Z), pfree(&BC), pfree(&Dk), pfree(&DB);
    pfree(&A), pfree(&S), pfree(&S2), pfree(&Y), pfree(&Y2), pfree(&DH), pfree(&ED);
    free(uh), free(u16), free(ah), free(sh), free(dh), free(d16);
  }
}

/* One selective-scan case (update: a decoding step, the scan over one position with a required
 * state), GPU vs CPU. C follows B in the same rows as in the model's x_dbl, or with sep_bc in rows
 * of its own (the tile scan stages the two apart then). */
static void scan_case(int update, int64_t batch, int64_t len, int64_t d, int64_t n, int use_state,
                      int use_all, int use_D, int use_z, int sp, int use_bias, int sep_bc) {
  int64_t rows = batch * len;
  int64_t ldu = d + 3, ldd = d + 1, ldbc = 2 * n + 5, ldz = 2 * d, ldy = d + 2;
  pair U = prand(rows * ldu, -2, 2), D = prand(rows * ldd, sp ? -4 : 0.001f, sp ? 1 : 0.3f);
  float *ah = hrand(d * n, 0, 1);
  for (int64_t i = 0; i < d * n; i++) ah[i] = -expf(logf((float)(i % n + 1)) * ah[i]);
  pair A = pf(ah, d * n);
  free(ah);
  pair BC = prand(rows * ldbc, -1, 1), Dk = prand(d, -1, 1), Z = prand(rows * ldz, -3, 3);
  /* dt_proj's bias; without the softplus a negative dt would grow the state past float range */
  pair DB = prand(d, sp ? -2 : 0, 0.5f);
  pair S = prand(batch * d * n, -1, 1), SA = pf(NULL, use_all ? rows * d * n : 1);
  pair Y = pf(NULL, rows * ldy), YB = pb16(rows * ldy);
  const float *bc_c = C(BC), *bc_g = G(BC);
  /* sep_bc: C from the rows' far end, n + 1 apart (ldc = ldbc still, C not at B + n) */
  const int64_t c_off = sep_bc ? n + 4 : n;
  if (update) len = 1, use_state = 1, use_all = 0;
  /* y as bf16 too in some cases, in some of them alone (y NULL) */
  const int bf = !update && (len + n) % 2 == 1, only_bf = bf && batch > 1;
  /* y's scaled fp16 exponent in every other case with a fp32 y (the tile scan's blocks find it) */
  const int ye = !only_bf && (len + d + n) % 2 == 0;
  pair E = pnew(NULL, 4);
  MBX(mb_selective_scan(CPU, C(U), NULL, ldu, C(D), NULL, ldd, use_bias ? C(DB) : NULL, C(A), bc_c, ldbc, bc_c + c_off, ldbc,
                        use_D ? C(Dk) : NULL, use_z ? C(Z) : NULL, NULL, ldz, use_state ? C(S) : NULL,
                        use_all ? C(SA) : NULL, batch, len, d, n, sp, only_bf ? NULL : C(Y), ldy,
                        bf ? (uint16_t *)YB.c : NULL, ye ? (int32_t *)E.c : NULL, NULL, NULL));
  MBX(mb_selective_scan(GPU, G(U), NULL, ldu, G(D), NULL, ldd, use_bias ? G(DB) : NULL, G(A), bc_g, ldbc, bc_g + c_off, ldbc,
                        use_D ? G(Dk) : NULL, use_z ? G(Z) : NULL, NULL, ldz, use_state ? G(S) : NULL,
                        use_all ? G(SA) : NULL, batch, len, d, n, sp, only_bf ? NULL : G(Y), ldy,
                        bf ? (uint16_t *)YB.g : NULL, ye ? (int32_t *)E.g : NULL, NULL, NULL));
  char cfg[96];
  snprintf(cfg, sizeof cfg,
           "b=%lld len=%lld d=%lld n=%lld st=%d all=%d D=%d z=%d sp=%d db=%d bf=%d%s",
           (long long)batch, (long long)len, (long long)d, (long long)n, use_state, use_all, use_D,
           use_z, sp, use_bias, bf + only_bf, sep_bc ? " bc=apart" : "");
  const char *op = update ? "state_update" : "selective_scan";
  if (!only_bf) check(op, cfg, "y", rel_err(&Y, rows, d, ldy), 1e-5);
  if (bf) check_bf16(op, cfg, &YB, only_bf ? NULL : &Y, rows, d, ldy, ldy);
  if (use_state) check(op, cfg, "state", rel_all(&S), 1e-5);
  if (use_all) check(op, cfg, "states_all", rel_all(&SA), 1e-5);
  if (ye) { /* each backend's exponent is the rule's on its own y (their y differ by 1e-5) */
    float *yh = (float *)malloc(Y.bytes);
    for (int k = 0; k < 2; k++) {
      MBX(mb_ctx_synchronize(GPU));
      MBX(mb_memcpy_d2h(k ? GPU : CPU, yh, k ? Y.g : Y.c, Y.bytes));
      float m = 0.f;
      for (int64_t r = 0; r < rows; r++)
        for (int64_t c = 0; c < d; c++) m = fmaxf(m, fabsf(yh[r * ldy + c]));
      int fe = 0;
      (void)frexpf(m, &fe);
      const int32_t want = m > 0.f && !isinf(m) ? 15 - fe : 0;
      check(op, cfg, k ? "y_exp gpu" : "y_exp cpu", exp_of(k ? GPU : CPU, k ? E.g : E.c) != want,
            0);
    }
    free(yh);
  }
  pfree(&U), pfree(&D), pfree(&A), pfree(&BC), pfree(&Dk), pfree(&Z), pfree(&S);
  pfree(&SA), pfree(&Y), pfree(&DB), pfree(&YB), pfree(&E);
}

static void t_scan(int update) {
  int64_t lens[] = {1, 7, 300, 2100}, dims[] = {37, 101}, batches[] = {1, 3};
  int64_t ns[] = {16, 3, 17, 8, 1, 64, 33};
  for (int li = 0; li < (update ? 1 : 4); li++)
    for (int di = 0; di < 2; di++)
      for (int bi = 0; bi < 2; bi++)
        for (int var = 0; var < 2; var++) {
          int64_t len = lens[li], d = dims[di], batch = batches[bi];
          int64_t n = ns[(li * 4 + di * 2 + bi + var) % 7];
          if (g_small && len > 7 && (batch > 1 || var)) continue;
          if (len > 300 && (batch > 1 || g_small)) continue;
          int use_state = update || (var + li) % 2 == 0, use_all = !update && (var + bi) % 2 == 0;
          int use_D = (di + var) % 2 == 0, use_z = (bi + var + li) % 2 == 1 || var;
          int sp = (di + bi + var) % 2 == 0 || update;
          scan_case(update, batch, len, d, n, use_state, use_all, use_D, use_z, sp,
                    (li + di + var) % 2, 0);
        }
}

/* The parallel-in-time scan (k_scan_tile): long sequences, n <= 16, no states_all, and enough
 * channels (d / 14 * batch >= the GPU's multiprocessors; 4099 / 14 > 292); partial last chunks, the
 * carry across chunks, every optional operand. */
static void t_scan_tile(void) {
  struct { int64_t batch, len, d, n; int st, D, z, sp; } cs[] = {
      {1, 256, 4099, 16, 1, 1, 1, 1}, {1, 700, 4099, 16, 0, 1, 1, 1}, {1, 1500, 4099, 5, 1, 0, 1, 0},
      {2, 300, 4099, 12, 1, 1, 0, 1}, {1, 513, 4104, 1, 1, 1, 1, 1},  {3, 257, 4099, 16, 0, 0, 0, 0},
  };
  for (size_t i = 0; i < sizeof cs / sizeof cs[0]; i++) {
    if (g_small && i > 1) continue;
    scan_case(0, cs[i].batch, cs[i].len, cs[i].d, cs[i].n, cs[i].st, 0, cs[i].D, cs[i].z, cs[i].sp,
              (int)(i % 2), 0);
  }
  /* B and C apart (whole chunks and a partial one, n = 16: the whole-chunk staging's other path) */
  scan_case(0, 1, 700, 4099, 16, 1, 0, 1, 1, 1, 1, 1);
}

/* mb_linear_conv1d_step: GPU (conv in the GEMV epilogue for n <= 8) vs CPU (linear + conv). */
static void t_linear_conv(void) {
  struct { int64_t n, in_f, out_f, dc, k; int wdt, bias, cbias; } cs[] = {
      {1, 64, 144, 72, 4, MB_DTYPE_BF16, 0, 1},  {3, 40, 100, 50, 4, MB_DTYPE_F32, 1, 1},
      {1, 1792, 7168, 3584, 4, MB_DTYPE_BF16, 0, 1}, {2, 33, 30, 30, 3, MB_DTYPE_F32, 0, 0},
      {8, 128, 96, 48, 1, MB_DTYPE_BF16, 1, 1},  {5, 72, 4000, 2000, 5, MB_DTYPE_F32, 1, 1},
      {12, 64, 200, 100, 4, MB_DTYPE_F32, 1, 1}, {1, 256, 90, 0, 4, MB_DTYPE_BF16, 1, 1},
      /* the tensor-core form (bf16, in_f % 32 == 0, out_f >= 2 in_f): a partial last group */
      {1, 96, 200, 100, 4, MB_DTYPE_BF16, 1, 1}, {3, 128, 260, 130, 4, MB_DTYPE_BF16, 1, 0},
  };
  for (size_t ci = 0; ci < sizeof cs / sizeof cs[0]; ci++) {
    int64_t n = cs[ci].n, in_f = cs[ci].in_f, out_f = cs[ci].out_f, dc = cs[ci].dc, k = cs[ci].k;
    if (g_small && out_f > 1000) continue;
    int64_t ldx = in_f + 4, ldy = out_f + 3, ldo = dc + 1;
    pair X = prand(n * ldx, -1, 1), Bi = prand(out_f, -1, 1), CW = prand((dc ? dc : 1) * k, -1, 1);
    pair CB = prand(dc ? dc : 1, -1, 1), CS = prand(n * (dc ? dc : 1) * (k > 1 ? k - 1 : 1), -1, 1);
    pair Y = pf(NULL, n * ldy), XC = pf(NULL, n * (ldo ? ldo : 1));
    float *wh = hrand(out_f * in_f, -0.1f, 0.1f);
    pair W;
    if (cs[ci].wdt == MB_DTYPE_BF16) {
      uint16_t *wb = (uint16_t *)malloc((size_t)(out_f * in_f) * 2);
      for (int64_t i = 0; i < out_f * in_f; i++) wb[i] = f2bf(wh[i]);
      W = pnew(wb, (size_t)(out_f * in_f) * 2);
      free(wb);
    } else {
      W = pf(wh, out_f * in_f);
    }
    free(wh);
    MBX(mb_linear_conv1d_step(CPU, C(X), ldx, W.c, cs[ci].wdt, cs[ci].bias ? C(Bi) : NULL, n,
                              in_f, out_f, C(Y), ldy, C(CW), cs[ci].cbias ? C(CB) : NULL, C(CS),
                              dc, k, C(XC), ldo));
    MBX(mb_linear_conv1d_step(GPU, G(X), ldx, W.g, cs[ci].wdt, cs[ci].bias ? G(Bi) : NULL, n,
                              in_f, out_f, G(Y), ldy, G(CW), cs[ci].cbias ? G(CB) : NULL, G(CS),
                              dc, k, G(XC), ldo));
    char cfg[96];
    snprintf(cfg, sizeof cfg, "n=%lld %lldx%lld dc=%lld k=%lld %s", (long long)n,
             (long long)out_f, (long long)in_f, (long long)dc, (long long)k,
             cs[ci].wdt ? "bf16" : "f32");
    /* n > 8 runs cuBLAS (bf16: x rounded to bf16) */
    double tol = n > 8 ? (cs[ci].wdt ? 1e-2 : 1e-3) : 1e-5;
    check("linear_conv", cfg, "y", rel_err(&Y, n, out_f, ldy), tol);
    if (dc) {
      check("linear_conv", cfg, "xc", rel_err(&XC, n, dc, ldo), tol);
      if (k > 1) check("linear_conv", cfg, "conv_state", rel_all(&CS), tol);
    }
    pfree(&X), pfree(&Bi), pfree(&CW), pfree(&CB), pfree(&CS), pfree(&Y), pfree(&XC), pfree(&W);
  }
}

/* mb_selective_state_update_dt: GPU (fused kernel) vs CPU (linear + state update). */
static float *dl(mb_ctx *ctx, const void *p, size_t bytes);
static double diff_bits(const void *a, const void *b, size_t bytes);

/* mb_conv1d_step_linear: GPU (one kernel for 8 < n <= 64, with bf16 weights <= 256, out_f <= 256,
 * k <= 8; else the conv and mb_linear) vs CPU (the conv and mb_linear). The fused form sums in
 * fp32 in another order: 1e-5; with bf16 weights on the tensor cores from the conv's outputs
 * rounded to bf16 (1e-2, and 1e-5 against the CPU's product of the rounded rows). Its xc and
 * window are the conv op's bits on the GPU; a second run from the same window and a replay of a
 * captured graph give the first run's bits. */
/* How the GPU context runs it, read from the switches it was created with (context.cu's
 * parsing): as two ops (MAMBABYTE_CUDA_CONV_LINEAR=0), or as one kernel from this many rows
 * (MAMBABYTE_CUDA_CONV_LINEAR=N; default 9); with bf16 weights its partial product in fp32 FMAs
 * (MAMBABYTE_CUDA_CONV_LINEAR_MMA=0) or, by default, on the tensor cores from the conv's outputs
 * rounded to bf16, as the two ops' cuBLAS product rounds them, up to this many rows
 * (MAMBABYTE_CUDA_CONV_LINEAR_MAX, 9 to 256; default 256). */
static int cl_off(void) {
  const char *e = gpu_env("MAMBABYTE_CUDA_CONV_LINEAR");
  return e && e[0] && atoi(e) <= 0;
}
static int cl_min_rows(void) {
  const char *e = gpu_env("MAMBABYTE_CUDA_CONV_LINEAR");
  return !e || !e[0] ? 9 : atoi(e) < 2 ? 2 : atoi(e);
}
static int cl_fma(void) { return gpu_env_is("MAMBABYTE_CUDA_CONV_LINEAR_MMA", "0"); }
static int cl_max_rows(void) {
  const char *e = gpu_env("MAMBABYTE_CUDA_CONV_LINEAR_MAX");
  const int v = e ? atoi(e) : 0;
  return v >= 9 && v < 256 ? v : 256;
}
static void t_conv_linear(void) {
  struct { int64_t n, d, out_f, k; int wdt, bias, cbias; } cs[] = {
      {64, 3584, 144, 4, MB_DTYPE_BF16, 0, 1}, {16, 2048, 96, 4, MB_DTYPE_F32, 0, 1},
      {256, 3584, 144, 4, MB_DTYPE_BF16, 0, 1}, {9, 1000, 37, 3, MB_DTYPE_F32, 1, 0},
      {33, 4099, 200, 2, MB_DTYPE_BF16, 1, 1},  {100, 256, 256, 4, MB_DTYPE_F32, 0, 1},
      {20, 100, 20, 1, MB_DTYPE_F32, 1, 1},     {300, 64, 50, 4, MB_DTYPE_F32, 0, 1},
      {5, 500, 40, 4, MB_DTYPE_BF16, 0, 1},     {12, 128, 300, 4, MB_DTYPE_BF16, 0, 1},
      {4, 3584, 144, 4, MB_DTYPE_BF16, 0, 1},   {8, 3584, 144, 4, MB_DTYPE_BF16, 0, 1},
      {2, 1000, 37, 3, MB_DTYPE_F32, 1, 0},
      /* small bf16 ones for the sanitizers: a partial output tile and a partial row tile */
      {16, 200, 40, 4, MB_DTYPE_BF16, 1, 1},    {24, 1000, 37, 3, MB_DTYPE_BF16, 0, 0},
      /* conv widths past 4: the kernel's wide-window form */
      {40, 1000, 96, 6, MB_DTYPE_BF16, 1, 1},   {20, 300, 50, 8, MB_DTYPE_F32, 0, 1},
  };
  for (size_t ci = 0; ci < sizeof cs / sizeof cs[0]; ci++) {
    const int64_t n = cs[ci].n, d = cs[ci].d, out_f = cs[ci].out_f, k = cs[ci].k;
    if (g_small && n * d > 100000) continue;
    const int bf_mma = cs[ci].wdt == MB_DTYPE_BF16 && !cl_fma();
    const int fused = !cl_off() && n >= cl_min_rows() && n <= (bf_mma ? cl_max_rows() : 64) &&
                      out_f <= 256 && k <= 8;
    const int mma = fused && bf_mma;
    const int64_t ldx = 2 * d + 3, ldy = out_f + 3, ldo = d + 1, sw = n * d * (k > 1 ? k - 1 : 1);
    pair X = prand(n * ldx, -1, 1), Bi = prand(out_f, -1, 1), CW = prand(d * k, -1, 1);
    pair CB = prand(d, -1, 1), CS = prand(sw, -1, 1), Y = pf(NULL, n * ldy), XC = pf(NULL, n * ldo);
    pair W = weights(out_f, d, cs[ci].wdt, -0.1f, 0.1f);
    pair CS0 = pf(NULL, sw), Y2 = pf(NULL, n * ldy), XC2 = pf(NULL, n * ldo), CS2 = pf(NULL, sw);
    MBX(mb_memcpy_d2d(GPU, CS0.g, CS.g, CS.bytes)); /* the window before the call */
    const float *bias_c = cs[ci].bias ? C(Bi) : NULL, *bias_g = cs[ci].bias ? G(Bi) : NULL;
    const float *cb_c = cs[ci].cbias ? C(CB) : NULL, *cb_g = cs[ci].cbias ? G(CB) : NULL;
    MBX(mb_conv1d_step_linear(CPU, C(X), ldx, C(CW), cb_c, C(CS), n, d, k, C(XC), ldo, W.c,
                              cs[ci].wdt, bias_c, out_f, C(Y), ldy));
    MBX(mb_conv1d_step_linear(GPU, G(X), ldx, G(CW), cb_g, G(CS), n, d, k, G(XC), ldo, W.g,
                              cs[ci].wdt, bias_g, out_f, G(Y), ldy));
    char cfg[96];
    snprintf(cfg, sizeof cfg, "n=%lld d=%lld out=%lld k=%lld %s%s", (long long)n, (long long)d,
             (long long)out_f, (long long)k, cs[ci].wdt ? "bf16" : "f32",
             mma ? " fused mma" : fused ? " fused" : "");
    /* the fallback's n > 8 runs cuBLAS (bf16 weights: x rounded to bf16), as the tensor-core form */
    const double tol = (fused && !mma) || n <= 8 ? 1e-5 : (cs[ci].wdt ? 1e-2 : 1e-3);
    check("conv_linear", cfg, "y", rel_err(&Y, n, out_f, ldy), tol);
    if (mma) {
      /* exactly the product of the rows the kernel multiplied (the GPU's own xc rounded: the
       * CPU's xc differs in its last bits, and a value near a bf16 midpoint would round the other
       * way, one bf16 step, ~3e-6 of y's norm here each), but for the order of the fp32 sums */
      pair XR = pf(NULL, n * ldo), YR = pf(NULL, n * ldy);
      float *xg = dl(GPU, G(XC), XC.bytes);
      for (int64_t i = 0; i < n * ldo; i++) {
        const uint32_t u = (uint32_t)f2bf(xg[i]) << 16;
        memcpy(&C(XR)[i], &u, 4);
      }
      free(xg);
      MBX(mb_linear(CPU, C(XR), ldo, W.c, cs[ci].wdt, bias_c, n, d, out_f, C(YR), ldy));
      pair YG = {YR.c, Y.g, Y.bytes};
      check("conv_linear", cfg, "y=rounded", rel_err(&YG, n, out_f, ldy), 1e-5);
      pfree(&XR), pfree(&YR);
    }
    check("conv_linear", cfg, "xc", rel_err(&XC, n, d, ldo), 1e-5);
    if (k > 1) check("conv_linear", cfg, "conv_state", rel_all(&CS), 1e-5);
    /* xc and the window: mb_causal_conv1d's bits */
    MBX(mb_memcpy_d2d(GPU, CS2.g, CS0.g, CS0.bytes));
    MBX(mb_causal_conv1d(GPU, G(X), NULL, ldx, G(CW), cb_g, G(CS2), n, 1, d, k, G(XC2), ldo, NULL, NULL, NULL));
    check("conv_linear", cfg, "xc=conv", diff_bits(G(XC), G(XC2), XC.bytes), 0);
    if (k > 1) check("conv_linear", cfg, "state=conv", diff_bits(G(CS), G(CS2), CS.bytes), 0);
    /* a rerun from the same window, then a graph's replay: the first run's bits */
    MBX(mb_memcpy_d2d(GPU, CS2.g, CS0.g, CS0.bytes));
    MBX(mb_conv1d_step_linear(GPU, G(X), ldx, G(CW), cb_g, G(CS2), n, d, k, G(XC2), ldo, W.g,
                              cs[ci].wdt, bias_g, out_f, G(Y2), ldy));
    check("conv_linear", cfg, "y rerun", diff_bits(G(Y), G(Y2), Y.bytes), 0);
    int graph = 0;
    MBX(mb_graph_begin(GPU));
    MBX(mb_conv1d_step_linear(GPU, G(X), ldx, G(CW), cb_g, G(CS2), n, d, k, G(XC2), ldo, W.g,
                              cs[ci].wdt, bias_g, out_f, G(Y2), ldy));
    MBX(mb_graph_end(GPU, &graph));
    MBX(mb_memcpy_d2d(GPU, CS2.g, CS0.g, CS0.bytes));
    MBX(mb_memset(GPU, G(Y2), 0xff, Y2.bytes)); /* poisoned as Y's padding is */
    MBX(mb_graph_launch(GPU, graph));
    check("conv_linear", cfg, "y graph", diff_bits(G(Y), G(Y2), Y.bytes), 0);
    MBX(mb_graph_destroy(GPU, graph));
    pfree(&X), pfree(&Bi), pfree(&CW), pfree(&CB), pfree(&CS), pfree(&Y), pfree(&XC), pfree(&W);
    pfree(&CS0), pfree(&Y2), pfree(&XC2), pfree(&CS2);
  }
}

/* mb_linear_bf16_conv1d_step_linear (a decoding batch's in_proj, conv step and x_proj; n rows of
 * bf16 input): GPU vs CPU. y's columns past d (z) and xc within 1e-5 (both products exact in fp32,
 * summed in another order); x_proj (y2) within 1e-5 of the CPU's product of the GPU's own xc
 * rounded to bf16 with bf16 weights (the rows the GPU's tensor cores multiply: the CPU's xc
 * differs in its last bits, and a value near a bf16 midpoint would round the other way), of the
 * CPU's own with fp32 weights; a rerun from the same window and a graph's replay keep the bits.
 * y's first d columns are not compared: a fused form may leave them unwritten. */
static void t_in_conv_xproj(void) {
  struct { int64_t n, in_f, d, out_f, out_f2, k; int wdt, cbias; } cs[] = {
      {64, 1792, 3584, 7168, 144, 4, MB_DTYPE_BF16, 1}, {9, 1024, 2048, 4096, 96, 4, MB_DTYPE_BF16, 1},
      {33, 256, 512, 1024, 80, 4, MB_DTYPE_BF16, 0},    {12, 100, 200, 400, 37, 3, MB_DTYPE_F32, 1},
      /* small ones for the sanitizers: a z part wider than d, x_proj's rows past a 16-row tile */
      {16, 128, 256, 640, 40, 4, MB_DTYPE_BF16, 1},     {40, 64, 128, 256, 20, 4, MB_DTYPE_BF16, 0},
  };
  for (size_t ci = 0; ci < sizeof cs / sizeof cs[0]; ci++) {
    const int64_t n = cs[ci].n, in_f = cs[ci].in_f, d = cs[ci].d, out_f = cs[ci].out_f;
    const int64_t out_f2 = cs[ci].out_f2, k = cs[ci].k;
    const int wdt = cs[ci].wdt;
    if (g_small && n * in_f * out_f > 2000000) continue;
    const int64_t ldx = in_f, ldy = out_f, ldo = d, ldy2 = out_f2, sw = n * d * (k - 1);
    pair XB, X = prand_bf16_pair(n * ldx, -1, 1, &XB);
    pair W = weights(out_f, in_f, wdt, -0.1f, 0.1f), W2 = weights(out_f2, d, wdt, -0.1f, 0.1f);
    pair CW = prand(d * k, -1, 1), CB = prand(d, -1, 1), CS = prand(sw, -1, 1);
    pair Y = pf(NULL, n * ldy), XC = pf(NULL, n * ldo), Y2 = pf(NULL, n * ldy2);
    pair CS0 = pf(NULL, sw), CS2 = pf(NULL, sw), YB = pf(NULL, n * ldy2), XC2 = pf(NULL, n * ldo);
    pair YY = pf(NULL, n * ldy);
    MBX(mb_memcpy_d2d(GPU, CS0.g, CS.g, CS.bytes)); /* the window before the call */
    const float *cb_c = cs[ci].cbias ? C(CB) : NULL, *cb_g = cs[ci].cbias ? G(CB) : NULL;
    MBX(mb_linear_bf16_conv1d_step_linear(CPU, (uint16_t *)XB.c, ldx, W.c, wdt, n, in_f, out_f,
                                          C(Y), ldy, C(CW), cb_c, C(CS), d, k, C(XC), ldo, W2.c,
                                          out_f2, C(Y2), ldy2));
    MBX(mb_linear_bf16_conv1d_step_linear(GPU, (uint16_t *)XB.g, ldx, W.g, wdt, n, in_f, out_f,
                                          G(Y), ldy, G(CW), cb_g, G(CS), d, k, G(XC), ldo, W2.g,
                                          out_f2, G(Y2), ldy2));
    char cfg[96];
    snprintf(cfg, sizeof cfg, "n=%lld in=%lld d=%lld out=%lld out2=%lld k=%lld %s", (long long)n,
             (long long)in_f, (long long)d, (long long)out_f, (long long)out_f2, (long long)k,
             wdt ? "bf16" : "f32");
    /* z: the columns past d, as rows of their own */
    pair Z = {C(Y) + d, G(Y) + d, (size_t)(n * ldy - d) * 4};
    check("in_conv_xproj", cfg, "z", rel_err(&Z, n, out_f - d, ldy), 1e-5);
    check("in_conv_xproj", cfg, "xc", rel_err(&XC, n, d, ldo), 1e-5);
    if (k > 1) check("in_conv_xproj", cfg, "conv_state", rel_all(&CS), 1e-5);
    if (wdt == MB_DTYPE_BF16) {
      pair XR = pf(NULL, n * ldo);
      float *xg = dl(GPU, G(XC), XC.bytes);
      for (int64_t i = 0; i < n * ldo; i++) {
        const uint32_t u = (uint32_t)f2bf(xg[i]) << 16;
        memcpy(&C(XR)[i], &u, 4);
      }
      free(xg);
      MBX(mb_linear(CPU, C(XR), ldo, W2.c, wdt, NULL, n, d, out_f2, C(YB), ldy2));
      pair YG = {YB.c, Y2.g, Y2.bytes};
      check("in_conv_xproj", cfg, "y2=rounded", rel_err(&YG, n, out_f2, ldy2), 1e-5);
      pfree(&XR);
    } else {
      check("in_conv_xproj", cfg, "y2", rel_err(&Y2, n, out_f2, ldy2), 1e-5);
    }
    /* a rerun from the same window, then a graph's replay: the first run's bits */
    MBX(mb_memcpy_d2d(GPU, CS2.g, CS0.g, CS0.bytes));
    MBX(mb_linear_bf16_conv1d_step_linear(GPU, (uint16_t *)XB.g, ldx, W.g, wdt, n, in_f, out_f,
                                          G(YY), ldy, G(CW), cb_g, G(CS2), d, k, G(XC2), ldo,
                                          W2.g, out_f2, G(YB), ldy2));
    check("in_conv_xproj", cfg, "y2 rerun", diff_bits(G(Y2), G(YB), Y2.bytes), 0);
    check("in_conv_xproj", cfg, "xc rerun", diff_bits(G(XC), G(XC2), XC.bytes), 0);
    int graph = 0;
    MBX(mb_graph_begin(GPU));
    MBX(mb_linear_bf16_conv1d_step_linear(GPU, (uint16_t *)XB.g, ldx, W.g, wdt, n, in_f, out_f,
                                          G(YY), ldy, G(CW), cb_g, G(CS2), d, k, G(XC2), ldo,
                                          W2.g, out_f2, G(YB), ldy2));
    MBX(mb_graph_end(GPU, &graph));
    MBX(mb_memcpy_d2d(GPU, CS2.g, CS0.g, CS0.bytes));
    MBX(mb_memset(GPU, G(YB), 0xff, YB.bytes));
    MBX(mb_graph_launch(GPU, graph));
    check("in_conv_xproj", cfg, "y2 graph", diff_bits(G(Y2), G(YB), Y2.bytes), 0);
    check("in_conv_xproj", cfg, "state graph", diff_bits(G(CS), G(CS2), CS.bytes), 0);
    MBX(mb_graph_destroy(GPU, graph));
    pfree(&XB), pfree(&X), pfree(&W), pfree(&W2), pfree(&CW), pfree(&CB), pfree(&CS), pfree(&Y);
    pfree(&XC), pfree(&Y2), pfree(&CS0), pfree(&CS2), pfree(&YB), pfree(&XC2), pfree(&YY);
  }
}

/* The GPU context's state update takes its rows kernel from this batch on (MAMBABYTE_CUDA_SSU_ROWS,
 * default 16; 0 never); there, with bf16 weights in 16-byte rows, dt_proj runs on the tensor cores
 * from x_dbl's first R columns rounded to bf16, with the MUFU forms of exp2, softplus and SiLU by
 * default (1e-2 against the CPU, 1e-5 against the CPU's run on the rounded columns, and a rerun's
 * bits), unless MAMBABYTE_CUDA_SSU_ROWS_MMA=0 (the lanes' FMAs, 1e-5, and a batch's rows the bits
 * of one-sequence calls). */
static int ssu_rows_from(void) {
  const char *e = gpu_env("MAMBABYTE_CUDA_SSU_ROWS");
  return e && e[0] ? atoi(e) : 16;
}
static void t_ssu_dt(void) {
  /* al: x_dbl's rows 16-byte aligned (ldx a multiple of 4), as the model's are (the batch
   * kernel's four-threads-a-channel form, built and retired, took only those) */
  struct { int64_t batch, d, n, R; int wdt, bias, Dz, dout, al; } cs[] = {
      {1, 37, 16, 8, MB_DTYPE_F32, 1, 1, 1, 0},   {3, 101, 16, 112, MB_DTYPE_BF16, 1, 0, 0, 0},
      {1, 101, 3, 112, MB_DTYPE_BF16, 0, 1, 1, 0}, {2, 37, 17, 13, MB_DTYPE_BF16, 1, 1, 0, 0},
      {1, 70, 33, 40, MB_DTYPE_F32, 1, 0, 1, 0},  {2, 50, 64, 40, MB_DTYPE_BF16, 1, 1, 1, 0},
      {1, 3584, 16, 112, MB_DTYPE_BF16, 1, 1, 1, 0}, {64, 300, 16, 112, MB_DTYPE_F32, 1, 1, 0, 0},
      {5, 33, 1, 112, MB_DTYPE_F32, 1, 1, 1, 0},  {6, 1000, 16, 112, MB_DTYPE_BF16, 0, 1, 1, 0},
      /* decoding batches of 8 to 64 */
      {19, 101, 16, 112, MB_DTYPE_BF16, 1, 1, 1, 0}, {17, 37, 17, 13, MB_DTYPE_F32, 1, 0, 1, 0},
      {16, 50, 64, 40, MB_DTYPE_BF16, 0, 1, 0, 0},  {64, 3584, 16, 112, MB_DTYPE_BF16, 1, 1, 1, 0},
      {9, 37, 1, 8, MB_DTYPE_F32, 1, 1, 1, 0},      {8, 70, 33, 40, MB_DTYPE_F32, 1, 0, 1, 0},
      {8, 101, 16, 13, MB_DTYPE_BF16, 1, 1, 1, 0}, /* R = 13: the weights' scalar path */
      /* aligned rows (partial blocks of channels and of sequences, fp32's 28 chunks, R = 64) */
      {64, 3584, 16, 112, MB_DTYPE_BF16, 1, 1, 1, 1}, {19, 101, 16, 112, MB_DTYPE_BF16, 1, 1, 1, 1},
      {33, 300, 16, 112, MB_DTYPE_F32, 1, 0, 1, 1},   {16, 37, 16, 64, MB_DTYPE_BF16, 0, 1, 0, 1},
      {3, 101, 16, 112, MB_DTYPE_BF16, 1, 1, 1, 1},   {256, 200, 16, 112, MB_DTYPE_BF16, 1, 1, 0, 1},
      /* whole 32-channel blocks of 16 states with a partial last block of sequences (one real
       * sequence in it at 21), dt_rank 64 */
      {20, 64, 16, 112, MB_DTYPE_BF16, 1, 1, 1, 1},   {21, 96, 16, 112, MB_DTYPE_F32, 1, 0, 1, 1},
      {50, 128, 16, 64, MB_DTYPE_BF16, 0, 1, 0, 1},
  };
  for (size_t ci = 0; ci < sizeof cs / sizeof cs[0]; ci++) {
    int64_t B = cs[ci].batch, d = cs[ci].d, n = cs[ci].n, R = cs[ci].R;
    if (g_small && (d > 1000 || B > 24)) continue;
    int64_t ldu = d + 3, ldz = 2 * d, ldy = d + 2;
    int64_t ldx = cs[ci].al ? (R + 2 * n + 3) / 4 * 4 : R + 2 * n + 1;
    pair U = prand(B * ldu, -2, 2), X = prand(B * ldx, -1, 1), Z = prand(B * ldz, -3, 3);
    pair W = weights(d, R, cs[ci].wdt, -0.5f, 0.5f);
    pair Bi = prand(d, -4, -1), Dk = prand(d, -1, 1);
    float *ah = hrand(d * n, 0, 1);
    for (int64_t i = 0; i < d * n; i++) ah[i] = -expf(logf((float)(i % n + 1)) * ah[i]);
    pair A = pf(ah, d * n);
    free(ah);
    float *sh = hrand(B * d * n, -1, 1);
    pair S = pf(sh, B * d * n), S1 = pf(sh, B * d * n), Y = pf(NULL, B * ldy), DO = pf(NULL, B * d);
    pair S2 = pf(sh, B * d * n), Y2 = pf(NULL, B * ldy), DO2 = pf(NULL, B * d);
    pair Y1 = pf(NULL, B * ldy), DO1 = pf(NULL, B * d);
    pair YB = pb16(B * ldy); /* y as bf16 too, in every other case */
    uint16_t *yb_c = ci % 2 ? (uint16_t *)YB.c : NULL, *yb_g = ci % 2 ? (uint16_t *)YB.g : NULL;
    free(sh);
    const float *xc = C(X), *xg = G(X);
    int D = cs[ci].Dz;
    MBX(mb_selective_state_update_dt(CPU, C(U), ldu, xc, ldx, W.c, cs[ci].wdt,
                                     cs[ci].bias ? C(Bi) : NULL, R, C(A), xc + R, ldx,
                                     xc + R + n, ldx, D ? C(Dk) : NULL, D ? C(Z) : NULL, ldz,
                                     C(S), B, d, n, 1, cs[ci].dout ? C(DO) : NULL, C(Y), ldy, yb_c));
    MBX(mb_selective_state_update_dt(GPU, G(U), ldu, xg, ldx, W.g, cs[ci].wdt,
                                     cs[ci].bias ? G(Bi) : NULL, R, G(A), xg + R, ldx,
                                     xg + R + n, ldx, D ? G(Dk) : NULL, D ? G(Z) : NULL, ldz,
                                     G(S), B, d, n, 1, cs[ci].dout ? G(DO) : NULL, G(Y), ldy, yb_g));
    const int from = ssu_rows_from(), fma = gpu_env_is("MAMBABYTE_CUDA_SSU_ROWS_MMA", "0");
    const int mma = cs[ci].wdt == MB_DTYPE_BF16 && !fma && from > 0 && B >= from &&
                    (R * 2) % 16 == 0;
    char cfg[96];
    snprintf(cfg, sizeof cfg, "b=%lld d=%lld n=%lld R=%lld %s bias=%d Dz=%d%s%s", (long long)B,
             (long long)d, (long long)n, (long long)R, cs[ci].wdt ? "bf16" : "f32", cs[ci].bias,
             D, cs[ci].al ? " aligned" : "", mma ? " mma" : "");
    const double tol = mma ? 1e-2 : 1e-5;
    check("ssu_dt", cfg, "y", rel_err(&Y, B, d, ldy), tol);
    check("ssu_dt", cfg, "state", rel_all(&S), tol);
    if (cs[ci].dout) check("ssu_dt", cfg, "delta", rel_all(&DO), tol);
    if (yb_g) check_bf16("ssu_dt", cfg, &YB, &Y, B, d, ldy, ldy); /* and the fp32 y rounded */
    if (mma) { /* the CPU's op on x_dbl's dt_proj columns rounded to bf16: all but the sums' order */
      float *xr = (float *)malloc((size_t)(B * ldx) * sizeof(float));
      memcpy(xr, xc, (size_t)(B * ldx) * sizeof(float));
      for (int64_t b = 0; b < B; b++)
        for (int64_t k = 0; k < R; k++) {
          const uint32_t u = (uint32_t)f2bf(xr[b * ldx + k]) << 16;
          memcpy(&xr[b * ldx + k], &u, 4);
        }
      MBX(mb_selective_state_update_dt(CPU, C(U), ldu, xr, ldx, W.c, cs[ci].wdt,
                                       cs[ci].bias ? C(Bi) : NULL, R, C(A), xc + R, ldx,
                                       xc + R + n, ldx, D ? C(Dk) : NULL, D ? C(Z) : NULL, ldz,
                                       C(S2), B, d, n, 1, cs[ci].dout ? C(DO2) : NULL, C(Y2), ldy,
                                       NULL));
      free(xr);
      pair YG = {Y2.c, Y.g, Y.bytes}, SG = {S2.c, S.g, S.bytes}, DG = {DO2.c, DO.g, DO.bytes};
      check("ssu_dt", cfg, "y=rounded", rel_err(&YG, B, d, ldy), 1e-5);
      check("ssu_dt", cfg, "state=rounded", rel_all(&SG), 1e-5);
      if (cs[ci].dout) check("ssu_dt", cfg, "delta=rounded", rel_all(&DG), 1e-5);
      /* a rerun of the batch from the same states: the first run's bits */
      MBX(mb_selective_state_update_dt(GPU, G(U), ldu, xg, ldx, W.g, cs[ci].wdt,
                                       cs[ci].bias ? G(Bi) : NULL, R, G(A), xg + R, ldx,
                                       xg + R + n, ldx, D ? G(Dk) : NULL, D ? G(Z) : NULL, ldz,
                                       G(S1), B, d, n, 1, cs[ci].dout ? G(DO1) : NULL, G(Y1), ldy,
                                       NULL));
      check("ssu_dt", cfg, "y rerun", diff_bits(Y.g, Y1.g, Y.bytes), 0);
      check("ssu_dt", cfg, "state rerun", diff_bits(S.g, S1.g, S.bytes), 0);
      if (cs[ci].dout) check("ssu_dt", cfg, "delta rerun", diff_bits(DO.g, DO1.g, DO.bytes), 0);
    } else if (B > 1) { /* each row as a batch of one: the same bits (a row's arithmetic is its own) */
      for (int64_t b = 0; b < B; b++) {
        MBX(mb_selective_state_update_dt(
            GPU, G(U) + b * ldu, ldu, xg + b * ldx, ldx, W.g, cs[ci].wdt,
            cs[ci].bias ? G(Bi) : NULL, R, G(A), xg + b * ldx + R, ldx, xg + b * ldx + R + n,
            ldx, D ? G(Dk) : NULL, D ? G(Z) + b * ldz : NULL, ldz, G(S1) + b * d * n, 1, d, n, 1,
            cs[ci].dout ? G(DO1) + b * d : NULL, G(Y1) + b * ldy, ldy, NULL));
      }
      float *y = dl(GPU, Y.g, Y.bytes), *y1 = dl(GPU, Y1.g, Y.bytes);
      double miss = 0;
      for (int64_t b = 0; b < B; b++) miss += memcmp(y + b * ldy, y1 + b * ldy, (size_t)d * 4) != 0;
      free(y), free(y1);
      check("ssu_dt", cfg, "y=rows", miss, 0);
      check("ssu_dt", cfg, "state=rows", diff_bits(S.g, S1.g, S.bytes), 0);
      if (cs[ci].dout) check("ssu_dt", cfg, "delta=rows", diff_bits(DO.g, DO1.g, DO.bytes), 0);
    }
    pfree(&U), pfree(&X), pfree(&Z), pfree(&W), pfree(&Bi), pfree(&Dk), pfree(&A), pfree(&S);
    pfree(&Y), pfree(&DO), pfree(&S1), pfree(&Y1), pfree(&DO1), pfree(&YB);
    pfree(&S2), pfree(&Y2), pfree(&DO2);
  }
}

/* ---- speculative decoding: what verification relies on ----------------------------------------
 * mb_selective_scan_dt GPU vs CPU; and on the GPU, bit for bit: scan_dt over len positions equals
 * len decoding steps (mb_selective_state_update_dt), every row of an n <= 8 mb_linear equals the
 * one-row call, and mb_linear (n rows) + mb_causal_conv1d (len n) equal n mb_linear_conv1d_step
 * calls (the conv in the GEMV's epilogue). */
static float *dl(mb_ctx *ctx, const void *p, size_t bytes) {
  float *h = (float *)malloc(bytes ? bytes : 4);
  MBX(mb_ctx_synchronize(ctx));
  MBX(mb_memcpy_d2h(ctx, h, p, bytes));
  return h;
}
/* 0 when the two GPU buffers hold the same bits, else 1 (reported as the error) */
static double diff_bits(const void *a, const void *b, size_t bytes) {
  float *x = dl(GPU, a, bytes), *y = dl(GPU, b, bytes);
  int d = memcmp(x, y, bytes) != 0;
  free(x), free(y);
  return d;
}
static void t_spec(void) {
  /* scan_dt: GPU vs CPU, and GPU scan_dt == len GPU ssu_dt steps */
  struct { int64_t batch, len, d, n, R; int wdt; } cs[] = {
      {1, 8, 37, 16, 8, MB_DTYPE_F32},     {1, 8, 896, 16, 28, MB_DTYPE_BF16},
      {2, 5, 101, 16, 112, MB_DTYPE_BF16}, {1, 17, 70, 33, 40, MB_DTYPE_F32},
      {1, 8, 3584, 16, 112, MB_DTYPE_BF16}, {1, 3, 50, 64, 40, MB_DTYPE_BF16},
  };
  /* al 0: x_dbl's rows at an odd stride (the lanes' kernel); al 1: at a multiple of 4 (several
   * positions take the warp-per-position kernel) */
  for (int al = 0; al < 2; al++)
  for (size_t ci = 0; ci < sizeof cs / sizeof cs[0]; ci++) {
    int64_t B = cs[ci].batch, L = cs[ci].len, d = cs[ci].d, n = cs[ci].n, R = cs[ci].R;
    if (g_small && d > 1000) continue;
    int64_t rows = B * L, ldu = d + 3, ldz = 2 * d, ldy = d + 2;
    int64_t ldx = al ? ((R + 2 * n + 3) & ~(int64_t)3) : R + 2 * n + 1;
    pair U = prand(rows * ldu, -2, 2), X = prand(rows * ldx, -1, 1), Z = prand(rows * ldz, -3, 3);
    pair W = weights(d, R, cs[ci].wdt, -0.5f, 0.5f);
    pair Bi = prand(d, -4, -1), Dk = prand(d, -1, 1);
    float *ah = hrand(d * n, 0, 1);
    for (int64_t i = 0; i < d * n; i++) ah[i] = -expf(logf((float)(i % n + 1)) * ah[i]);
    pair A = pf(ah, d * n);
    free(ah);
    float *sh = hrand(B * d * n, -1, 1);
    pair S = pf(sh, B * d * n), S2 = pf(sh, B * d * n);
    free(sh);
    pair SA = pf(NULL, rows * d * n), Y = pf(NULL, rows * ldy), DO = pf(NULL, rows * d);
    pair Y2 = pf(NULL, rows * ldy), DO2 = pf(NULL, rows * d), SA2 = pf(NULL, rows * d * n);
    const float *xc = C(X), *xg = G(X);
    int dt = cs[ci].wdt;
    MBX(mb_selective_scan_dt(CPU, C(U), ldu, xc, ldx, W.c, dt, C(Bi), R, C(A), xc + R, ldx,
                             xc + R + n, ldx, C(Dk), C(Z), ldz, C(S), C(SA), B, L, d, n, 1, C(DO),
                             C(Y), ldy));
    MBX(mb_selective_scan_dt(GPU, G(U), ldu, xg, ldx, W.g, dt, G(Bi), R, G(A), xg + R, ldx,
                             xg + R + n, ldx, G(Dk), G(Z), ldz, G(S), G(SA), B, L, d, n, 1, G(DO),
                             G(Y), ldy));
    /* the same positions as decoding steps, one at a time, on the GPU */
    for (int64_t b = 0; b < B; b++)
      for (int64_t t = 0; t < L; t++) {
        int64_t r = b * L + t;
        MBX(mb_selective_state_update_dt(GPU, G(U) + r * ldu, ldu, xg + r * ldx, ldx, W.g, dt,
                                         G(Bi), R, G(A), xg + r * ldx + R, ldx,
                                         xg + r * ldx + R + n, ldx, G(Dk), G(Z) + r * ldz, ldz,
                                         G(S2) + b * d * n, 1, d, n, 1, G(DO2) + r * d,
                                         G(Y2) + r * ldy, ldy, NULL));
        MBX(mb_memcpy_d2d(GPU, G(SA2) + r * d * n, G(S2) + b * d * n, (size_t)(d * n) * 4));
      }
    char cfg[96];
    snprintf(cfg, sizeof cfg, "b=%lld len=%lld d=%lld n=%lld R=%lld ldx=%lld %s", (long long)B,
             (long long)L, (long long)d, (long long)n, (long long)R, (long long)ldx,
             dt ? "bf16" : "f32");
    check("scan_dt", cfg, "y", rel_err(&Y, rows, d, ldy), 1e-5);
    check("scan_dt", cfg, "states_all", rel_all(&SA), 1e-5);
    check("scan_dt", cfg, "state", rel_all(&S), 1e-5);
    check("scan_dt", cfg, "delta", rel_all(&DO), 1e-5);
    check("scan_dt=steps", cfg, "y bits", diff_bits(G(Y), G(Y2), Y.bytes), 0);
    check("scan_dt=steps", cfg, "sa bits", diff_bits(G(SA), G(SA2), SA.bytes), 0);
    check("scan_dt=steps", cfg, "dt bits", diff_bits(G(DO), G(DO2), DO.bytes), 0);
    pfree(&U), pfree(&X), pfree(&Z), pfree(&W), pfree(&Bi), pfree(&Dk), pfree(&A), pfree(&S);
    pfree(&S2), pfree(&SA), pfree(&Y), pfree(&DO), pfree(&Y2), pfree(&DO2), pfree(&SA2);
  }

  /* linear rows: n <= 8 rows == n one-row calls (the shapes of the bundled and paper models) */
  int64_t ls[][2] = {{448, 1792}, {896, 60}, {28, 896}, {448, 256}, {1792, 7168}, {3584, 1792},
                     {37, 101}, {1024, 256}, {96, 300}};
  for (size_t li = 0; li < sizeof ls / sizeof ls[0]; li++)
    for (int dt = 0; dt < 2; dt++) {
      int64_t in_f = ls[li][0], out_f = ls[li][1];
      if (g_small && in_f * out_f > 1000000) continue;
      pair W = weights(out_f, in_f, dt, -0.1f, 0.1f), Bi = prand(out_f, -1, 1);
      pair X = prand(8 * in_f, -1, 1), Y = pf(NULL, 8 * out_f), Y1 = pf(NULL, 8 * out_f);
      for (int64_t r = 0; r < 8; r++)
        MBX(mb_linear(GPU, G(X) + r * in_f, in_f, W.g, dt, G(Bi), 1, in_f, out_f,
                      G(Y1) + r * out_f, out_f));
      for (int64_t nn = 2; nn <= 8; nn++) {
        MBX(mb_linear(GPU, G(X), in_f, W.g, dt, G(Bi), nn, in_f, out_f, G(Y), out_f));
        char cfg[96];
        snprintf(cfg, sizeof cfg, "n=%lld %lldx%lld %s", (long long)nn, (long long)out_f,
                 (long long)in_f, dt ? "bf16" : "f32");
        check("linear rows", cfg, "y bits", diff_bits(G(Y), G(Y1), (size_t)(nn * out_f) * 4), 0);
      }
      pfree(&W), pfree(&Bi), pfree(&X), pfree(&Y), pfree(&Y1);
    }

  /* in_proj + conv, as verification and as a decoding batch run it, against one-row steps */
  struct { int64_t len, in_f, di, k; int wdt; } vs[] = {
      {8, 448, 896, 4, MB_DTYPE_F32}, {8, 448, 896, 4, MB_DTYPE_BF16}, {5, 128, 256, 4, MB_DTYPE_F32},
      {8, 1792, 3584, 4, MB_DTYPE_BF16}, {3, 64, 100, 3, MB_DTYPE_F32},
  };
  /* mode 0: linear (n rows) + conv (len n) == n steps of one sequence; mode 1, a decoding batch:
   * mb_linear_conv1d_step over n <= 8 sequences, each its own conv state, == n one-sequence calls
   * (the GEMV's rows and the conv epilogue, whatever rows a thread takes) */
  for (int mode = 0; mode < 2; mode++)
    for (size_t vi = 0; vi < sizeof vs / sizeof vs[0]; vi++) {
      int64_t L = vs[vi].len, in_f = vs[vi].in_f, di = vs[vi].di, k = vs[vi].k, out_f = 2 * di;
      if (g_small && di > 1000) continue;
      int dt = vs[vi].wdt;
      const int64_t sl = di * (k - 1), ns = mode ? L : 1; /* a state's floats; states */
      pair W = weights(out_f, in_f, dt, -0.1f, 0.1f), X = prand(L * in_f, -1, 1);
      pair CW = prand(di * k, -1, 1), CB = prand(di, -1, 1);
      float *st = hrand(ns * sl, -1, 1);
      pair CS = pf(st, ns * sl), CS2 = pf(st, ns * sl);
      free(st);
      pair Y = pf(NULL, L * out_f), XC = pf(NULL, L * di), Y2 = pf(NULL, L * out_f),
           XC2 = pf(NULL, L * di);
      if (mode == 0) {
        MBX(mb_linear(GPU, G(X), in_f, W.g, dt, NULL, L, in_f, out_f, G(Y), out_f));
        MBX(mb_causal_conv1d(GPU, G(Y), NULL, out_f, G(CW), G(CB), G(CS), 1, L, di, k, G(XC), di, NULL,
                             NULL, NULL));
      } else {
        MBX(mb_linear_conv1d_step(GPU, G(X), in_f, W.g, dt, NULL, L, in_f, out_f, G(Y), out_f,
                                  G(CW), G(CB), G(CS), di, k, G(XC), di));
      }
      for (int64_t t = 0; t < L; t++)
        MBX(mb_linear_conv1d_step(GPU, G(X) + t * in_f, in_f, W.g, dt, NULL, 1, in_f, out_f,
                                  G(Y2) + t * out_f, out_f, G(CW), G(CB),
                                  G(CS2) + (mode ? t * sl : 0), di, k, G(XC2) + t * di, di));
      const char *op = mode ? "conv batch=rows" : "conv=steps";
      char cfg[96];
      snprintf(cfg, sizeof cfg, "%s=%lld %lldx%lld k=%lld %s", mode ? "batch" : "len",
               (long long)L, (long long)out_f, (long long)in_f, (long long)k,
               dt ? "bf16" : "f32");
      check(op, cfg, "y bits", diff_bits(G(Y), G(Y2), Y.bytes), 0);
      check(op, cfg, "xc bits", diff_bits(G(XC), G(XC2), XC.bytes), 0);
      check(op, cfg, "state bits", diff_bits(G(CS), G(CS2), CS.bytes), 0);
      pfree(&W), pfree(&X), pfree(&CW), pfree(&CB), pfree(&CS), pfree(&CS2), pfree(&Y);
      pfree(&XC), pfree(&Y2), pfree(&XC2);
    }
}

/* ---- mb_decode_layers: every layer of a decoding step in one call ---------------------------
 * The GPU's call against the CPU's from the same weights and states, over a few steps; and two
 * steps captured in a graph and replayed against two direct ones, bit for bit. */
typedef struct {
  int64_t L, batch, dm, di, n, R, k;
  int wdt, norm, bias;
} dl_case;

typedef struct {
  pair w[MB_DL_PTRS]; /* a layer's tensors at their table index (bytes 0: none) */
} dl_layer;

/* the table of one context's pointers */
static uint64_t *dl_table(const dl_case *c, dl_layer *ly, int gpu) {
  uint64_t *t = (uint64_t *)calloc((size_t)(c->L * MB_DL_PTRS), 8);
  for (int64_t i = 0; i < c->L; i++)
    for (int q = 0; q < MB_DL_PTRS; q++)
      if (ly[i].w[q].bytes)
        t[i * MB_DL_PTRS + q] = (uint64_t)(uintptr_t)(gpu ? ly[i].w[q].g : ly[i].w[q].c);
  return t;
}

static void dl_run(mb_ctx *ctx, const dl_case *c, const uint64_t *t, int gpu, pair *hid,
                   pair *res, pair *nrm, pair *xz, pair *xc, pair *xd, pair *de, pair *y) {
#define P_(x) ((float *)(gpu ? (x)->g : (x)->c))
  MBX(mb_decode_layers(ctx, t, c->L, c->batch, c->dm, c->di, c->n, c->R, c->k, c->wdt, c->norm,
                       1e-5f, P_(hid), P_(res), P_(nrm), P_(xz), P_(xc), P_(xd), P_(de), P_(y)));
#undef P_
}

/* a copy of p's GPU bytes into a new pair (the CPU side copied too) */
static pair pclone(pair *p) {
  void *h = malloc(p->bytes);
  MBX(mb_ctx_synchronize(GPU));
  MBX(mb_memcpy_d2h(GPU, h, p->g, p->bytes));
  pair q = pnew(h, p->bytes);
  free(h);
  return q;
}

/* ly with fresh copies of its recurrent states (the weights shared), and their release */
static dl_layer *dl_fork_states(const dl_case *c, dl_layer *ly) {
  dl_layer *f = (dl_layer *)malloc((size_t)c->L * sizeof *f);
  memcpy(f, ly, (size_t)c->L * sizeof *f);
  for (int64_t i = 0; i < c->L; i++) {
    f[i].w[MB_DL_CONV_STATE] = pclone(&ly[i].w[MB_DL_CONV_STATE]);
    f[i].w[MB_DL_SSM_STATE] = pclone(&ly[i].w[MB_DL_SSM_STATE]);
  }
  return f;
}
static void dl_free_states(const dl_case *c, dl_layer *f) {
  for (int64_t i = 0; i < c->L; i++) {
    pfree(&f[i].w[MB_DL_CONV_STATE]);
    pfree(&f[i].w[MB_DL_SSM_STATE]);
  }
  free(f);
}

/* A case's layers: random weights of its shape, random recurrent states of its batch. */
static dl_layer *dl_make_layers(const dl_case *c) {
  const int64_t B = c->batch, dm = c->dm, di = c->di, n = c->n, R = c->R, dx = R + 2 * n;
  const float sc = 1.f / sqrtf((float)dm), sci = 1.f / sqrtf((float)di);
    dl_layer *ly = (dl_layer *)calloc((size_t)c->L, sizeof *ly);
    for (int64_t i = 0; i < c->L; i++) {
      pair *w = ly[i].w;
      w[MB_DL_NORM_W] = prand(dm, 0.5f, 1.5f);
      if (c->bias) w[MB_DL_NORM_B] = prand(dm, -0.1f, 0.1f);
      w[MB_DL_IN_W] = weights(2 * di, dm, c->wdt, -sc, sc);
      if (c->bias) w[MB_DL_IN_B] = prand(2 * di, -0.1f, 0.1f);
      w[MB_DL_CONV_W] = prand(di * c->k, -0.5f, 0.5f);
      if (c->bias) w[MB_DL_CONV_B] = prand(di, -0.1f, 0.1f);
      w[MB_DL_CONV_STATE] = prand(B * di * (c->k - 1), -1, 1);
      w[MB_DL_X_W] = weights(dx, di, c->wdt, -sci, sci);
      w[MB_DL_DT_W] = weights(di, R, c->wdt, -0.5f, 0.5f);
      w[MB_DL_DT_B] = prand(di, -4, -1);
      float *ah = hrand(di * n, 0, 1);
      for (int64_t q = 0; q < di * n; q++) ah[q] = -expf(logf((float)(q % n + 1)) * ah[q]);
      w[MB_DL_A] = pf(ah, di * n);
      free(ah);
      w[MB_DL_D] = prand(di, -1, 1);
      w[MB_DL_SSM_STATE] = prand(B * di * n, -1, 1);
      w[MB_DL_OUT_W] = weights(dm, di, c->wdt, -sci, sci);
      if (c->bias) w[MB_DL_OUT_B] = prand(dm, -0.1f, 0.1f);
    }
  return ly;
}

static void dl_free_layers(const dl_case *c, dl_layer *ly) {
  for (int64_t i = 0; i < c->L; i++)
    for (int q = 0; q < MB_DL_PTRS; q++)
      if (ly[i].w[q].bytes) pfree(&ly[i].w[q]);
  free(ly);
}

/* A second CUDA context on the same device whose mb_decode_layers runs every op as its own call
 * (MAMBABYTE_CUDA_NORM_PROLOGUE=0 when it was created). */
static mb_ctx *g_gpu_ops;

static void t_decode_layers(void) {
  /* and the norm's generic form (MAMBABYTE_CUDA_NORM_NT=0), so that "=ops bits" also holds the
   * NT form (the fused kernels' default at 972M's and 353M's rows) to it */
  char *old_pro = env_swap("MAMBABYTE_CUDA_NORM_PROLOGUE", "0");
  g_gpu_ops = gpu_ctx_generic_norm();
  env_restore("MAMBABYTE_CUDA_NORM_PROLOGUE", old_pro);
  const dl_case cs[] = {
      {2, 1, 1792, 3584, 16, 112, 4, MB_DTYPE_BF16, MB_NORM_LAYER, 1}, /* 972M's shape */
      {3, 1, 1024, 2048, 16, 64, 4, MB_DTYPE_F32, MB_NORM_RMS, 1},      /* 353M's */
      {3, 1, 64, 128, 16, 4, 4, MB_DTYPE_F32, MB_NORM_LAYER, 1},
      {2, 1, 100, 203, 5, 7, 3, MB_DTYPE_F32, MB_NORM_RMS, 0}, /* scalar loads everywhere */
      {3, 1, 448, 896, 16, 28, 4, MB_DTYPE_BF16, MB_NORM_RMS, 1},
      {2, 1, 200, 400, 33, 13, 5, MB_DTYPE_BF16, MB_NORM_LAYER, 1}, /* k > 4, R % 8 != 0 */
      {2, 3, 64, 128, 16, 4, 4, MB_DTYPE_BF16, MB_NORM_LAYER, 1},
      {2, 8, 96, 192, 16, 6, 4, MB_DTYPE_F32, MB_NORM_LAYER, 1},
      /* in_proj's ring kernel at a size the sanitizers run (a warp a row from 512 fp32 inputs
       * and 2112 rows on 132 SMs): 276 row groups, the last one partial */
      {2, 1, 512, 1101, 16, 32, 4, MB_DTYPE_F32, MB_NORM_LAYER, 1},
      /* its tensor-core form (bf16, d_model a multiple of 32): several groups a block, the last
       * partial; and one group a block, 196 rows */
      {2, 1, 512, 1101, 16, 32, 4, MB_DTYPE_BF16, MB_NORM_LAYER, 1},
      {2, 1, 96, 98, 16, 6, 4, MB_DTYPE_BF16, MB_NORM_RMS, 1},
      {2, 1, 256, 2200, 16, 16, 4, MB_DTYPE_BF16, MB_NORM_LAYER, 1}, /* 550 groups: stages reused */
  };
  for (size_t ci = 0; ci < sizeof cs / sizeof cs[0]; ci++) {
    const dl_case *c = &cs[ci];
    if (g_small && c->dm > 512) continue;
    const int64_t B = c->batch, dm = c->dm, di = c->di, n = c->n, R = c->R, dx = R + 2 * n;
    dl_layer *ly = dl_make_layers(c);
    pair hid = prand(B * dm, -1, 1), res = prand(B * dm, -1, 1);
    pair nrm = pf(NULL, B * dm), xz = pf(NULL, B * 2 * di), xc = pf(NULL, B * di);
    pair xd = pf(NULL, B * dx), de = pf(NULL, B * di), y = pf(NULL, B * di);
    uint64_t *tc = dl_table(c, ly, 0), *tg = dl_table(c, ly, 1);
    for (int s = 0; s < 3; s++) {
      dl_run(CPU, c, tc, 0, &hid, &res, &nrm, &xz, &xc, &xd, &de, &y);
      dl_run(GPU, c, tg, 1, &hid, &res, &nrm, &xz, &xc, &xd, &de, &y);
    }
    char cfg[112];
    snprintf(cfg, sizeof cfg, "L=%lld b=%lld dm=%lld di=%lld n=%lld R=%lld k=%lld %s %s",
             (long long)c->L, (long long)B, (long long)dm, (long long)di, (long long)n,
             (long long)R, (long long)c->k, c->wdt ? "bf16" : "f32", c->norm ? "rms" : "ln");
    const double tol = 1e-4; /* several layers and steps of fp32 sums in other orders */
    check("decode_layers", cfg, "hidden", rel_all(&hid), tol);
    check("decode_layers", cfg, "residual", rel_all(&res), tol);
    check("decode_layers", cfg, "y", rel_all(&y), tol);
    check("decode_layers", cfg, "delta", rel_all(&de), tol);
    double st_err = 0;
    for (int64_t i = 0; i < c->L; i++) {
      double e1 = rel_all(&ly[i].w[MB_DL_CONV_STATE]), e2 = rel_all(&ly[i].w[MB_DL_SSM_STATE]);
      if (e1 > st_err) st_err = e1;
      if (e2 > st_err) st_err = e2;
    }
    check("decode_layers", cfg, "states", st_err, tol);
    if (B == 1) { /* batch 1 runs the norm in in_proj's kernel: the ops' bits, two more steps */
      pair hid2 = pclone(&hid), res2 = pclone(&res);
      dl_layer *ly2 = dl_fork_states(c, ly);
      uint64_t *t2 = dl_table(c, ly2, 1);
      pair xz2 = pf(NULL, B * 2 * di), xc2 = pf(NULL, B * di), xd2 = pf(NULL, B * dx);
      pair de2 = pf(NULL, B * di), y2 = pf(NULL, B * di);
      for (int r = 0; r < 2; r++) {
        dl_run(GPU, c, tg, 1, &hid, &res, &nrm, &xz, &xc, &xd, &de, &y);
        dl_run(g_gpu_ops, c, t2, 1, &hid2, &res2, &nrm, &xz2, &xc2, &xd2, &de2, &y2);
      }
      MBX(mb_ctx_synchronize(g_gpu_ops));
      double bits = diff_bits(hid.g, hid2.g, hid.bytes) + diff_bits(res.g, res2.g, res.bytes) +
                    diff_bits(xz.g, xz2.g, xz.bytes) + diff_bits(xc.g, xc2.g, xc.bytes) +
                    diff_bits(xd.g, xd2.g, xd.bytes) + diff_bits(de.g, de2.g, de.bytes) +
                    diff_bits(y.g, y2.g, y.bytes);
      for (int64_t i = 0; i < c->L; i++)
        for (int q = MB_DL_CONV_STATE; q <= MB_DL_SSM_STATE; q += MB_DL_SSM_STATE - MB_DL_CONV_STATE)
          bits += diff_bits(ly[i].w[q].g, ly2[i].w[q].g, ly[i].w[q].bytes);
      check("decode_layers", cfg, "=ops bits", bits, 0);
      free(t2);
      dl_free_states(c, ly2);
      pfree(&hid2), pfree(&res2), pfree(&xz2), pfree(&xc2), pfree(&xd2), pfree(&de2), pfree(&y2);
    }
    if (ci == 2 || ci == 8) { /* graph replay: two replays equal two direct steps, bit for bit */
      int graph = -1;
      pair hid3 = pclone(&hid), res3 = pclone(&res);
      dl_layer *ly3 = dl_fork_states(c, ly);
      for (int r = 0; r < 2; r++) dl_run(GPU, c, tg, 1, &hid, &res, &nrm, &xz, &xc, &xd, &de, &y);
      uint64_t *t3 = dl_table(c, ly3, 1);
      MBX(mb_graph_begin(GPU));
      dl_run(GPU, c, t3, 1, &hid3, &res3, &nrm, &xz, &xc, &xd, &de, &y);
      MBX(mb_graph_end(GPU, &graph));
      free(t3); /* the graph holds the launches, not the table */
      MBX(mb_graph_launch(GPU, graph));
      MBX(mb_graph_launch(GPU, graph));
      MBX(mb_graph_destroy(GPU, graph));
      double gb = diff_bits(hid.g, hid3.g, hid.bytes) + diff_bits(res.g, res3.g, res.bytes);
      for (int64_t i = 0; i < c->L; i++)
        gb += diff_bits(ly[i].w[MB_DL_SSM_STATE].g, ly3[i].w[MB_DL_SSM_STATE].g,
                        ly[i].w[MB_DL_SSM_STATE].bytes);
      check("decode_layers", cfg, "graph=direct", gb, 0);
      dl_free_states(c, ly3);
      pfree(&hid3), pfree(&res3);
    }
    free(tc), free(tg);
    dl_free_layers(c, ly);
    pfree(&hid), pfree(&res), pfree(&nrm), pfree(&xz), pfree(&xc), pfree(&xd), pfree(&de),
        pfree(&y);
  }
  MBX(mb_ctx_destroy(g_gpu_ops));
}

/* mb_decode_layers with batch 1's in_proj in each of its forms, the ring kernel (the default for
 * both weight types) and k_gemv_norm (a block per 8 rows), each held to the ops' bits; with bf16
 * weights at in_proj's shapes both on the tensor cores (gemv_tc.cuh), and with that form off
 * (MAMBABYTE_CUDA_GEMV_TC=0) the FMA forms */
static void with_gpu_env(const char *name, const char *value, const char *what,
                         void (*test)(void));
static void t_decode_layers_all(void) {
  t_decode_layers();
  with_gpu_env("MAMBABYTE_CUDA_IN_RING", "0", "in_proj a block per 8 rows", t_decode_layers);
  /* set while the test runs too, so that the ops' context (g_gpu_ops) has the same form */
  char *old_tc = env_swap("MAMBABYTE_CUDA_GEMV_TC", "0");
  with_gpu_env("MAMBABYTE_CUDA_GEMV_TC", "0", "the n <= 8 GEMV's FMA form", t_decode_layers);
  env_restore("MAMBABYTE_CUDA_GEMV_TC", old_tc);
}

/* ---- mb_verify_layers and mb_resume_layers (speculative decoding) ----------------------------
 * A verification pass of len positions on the GPU against len batch-1 steps of mb_decode_layers
 * on the GPU (bit for bit: every row has a step's bits), and against the CPU's pass (the
 * tolerance of decode_layers); then mb_resume_layers at several accepted prefixes against the
 * stepped states, bit for bit, and the accepted count. */
static void t_verify_layers(void) {
  const dl_case cs[] = {
      {3, 1, 64, 128, 16, 4, 4, MB_DTYPE_F32, MB_NORM_LAYER, 1},
      {2, 1, 100, 203, 5, 7, 3, MB_DTYPE_F32, MB_NORM_RMS, 0},
      {3, 1, 384, 768, 16, 24, 4, MB_DTYPE_F32, MB_NORM_LAYER, 1}, /* the trained target's */
      {2, 1, 448, 896, 16, 28, 4, MB_DTYPE_BF16, MB_NORM_RMS, 1},
      {2, 1, 1792, 3584, 16, 112, 4, MB_DTYPE_BF16, MB_NORM_LAYER, 1},
  };
  const int64_t lens[] = {8, 11, 1};
  for (size_t ci = 0; ci < sizeof cs / sizeof cs[0]; ci++)
    for (size_t li = 0; li < sizeof lens / sizeof lens[0]; li++) {
      const dl_case *c = &cs[ci];
      const int64_t M = lens[li];
      if (g_small && c->dm > 512) continue;
      const int64_t dm = c->dm, di = c->di, n = c->n, dx = c->R + 2 * n, w = c->k - 1;
      dl_layer *ly = dl_make_layers(c);      /* verified */
      dl_layer *st = dl_fork_states(c, ly); /* stepped, on the GPU */
      uint64_t *tc = dl_table(c, ly, 0), *tg = dl_table(c, ly, 1), *ts = dl_table(c, st, 1);
      pair hid = prand(M * dm, -1, 1), res = pf(NULL, M * dm), nrm = pf(NULL, M * dm);
      pair xc = pf(NULL, M * di), xd = pf(NULL, M * dx), de = pf(NULL, M * di), y = pf(NULL, M * di);
      pair sxz = pf(NULL, c->L * M * 2 * di), sssm = pf(NULL, c->L * M * di * n);
      pair sconv = pf(NULL, c->L * di * (w > 0 ? w : 1));
      /* the steps first, each from the pass's input row t (the hidden rows are overwritten) */
      pair h1 = pf(NULL, dm), r1 = pf(NULL, dm), n1 = pf(NULL, dm), xz1 = pf(NULL, 2 * di);
      pair xc1 = pf(NULL, di), xd1 = pf(NULL, dx), de1 = pf(NULL, di), y1 = pf(NULL, di);
      float *hout = (float *)malloc((size_t)(M * dm) * 4), *rout = (float *)malloc((size_t)(M * dm) * 4);
      float **conv_at = (float **)calloc((size_t)(M * c->L), sizeof(float *));
      float **ssm_at = (float **)calloc((size_t)(M * c->L), sizeof(float *));
      for (int64_t t = 0; t < M; t++) {
        MBX(mb_memcpy_d2d(GPU, h1.g, G(hid) + t * dm, (size_t)dm * 4));
        MBX(mb_decode_layers(GPU, ts, c->L, 1, dm, di, n, c->R, c->k, c->wdt, c->norm, 1e-5f,
                             G(h1), G(r1), G(n1), G(xz1), G(xc1), G(xd1), G(de1), G(y1)));
        MBX(mb_ctx_synchronize(GPU));
        MBX(mb_memcpy_d2h(GPU, hout + t * dm, h1.g, (size_t)dm * 4));
        MBX(mb_memcpy_d2h(GPU, rout + t * dm, r1.g, (size_t)dm * 4));
        for (int64_t i = 0; i < c->L; i++) {
          pair *cs_ = &st[i].w[MB_DL_CONV_STATE], *ss_ = &st[i].w[MB_DL_SSM_STATE];
          conv_at[t * c->L + i] = (float *)malloc(cs_->bytes);
          ssm_at[t * c->L + i] = (float *)malloc(ss_->bytes);
          MBX(mb_memcpy_d2h(GPU, conv_at[t * c->L + i], cs_->g, cs_->bytes));
          MBX(mb_memcpy_d2h(GPU, ssm_at[t * c->L + i], ss_->g, ss_->bytes));
        }
      }
#define VL(ctx, t, gpu)                                                                         \
  MBX(mb_verify_layers(ctx, t, c->L, M, dm, di, n, c->R, c->k, c->wdt, c->norm, 1e-5f,           \
                       gpu ? G(hid) : C(hid), gpu ? G(res) : C(res), gpu ? G(nrm) : C(nrm),      \
                       gpu ? G(xc) : C(xc), gpu ? G(xd) : C(xd), gpu ? G(de) : C(de),            \
                       gpu ? G(y) : C(y), gpu ? G(sxz) : C(sxz), gpu ? G(sssm) : C(sssm),        \
                       gpu ? G(sconv) : C(sconv)))
      VL(CPU, tc, 0);
      VL(GPU, tg, 1);
#undef VL
      char cfg[112];
      snprintf(cfg, sizeof cfg, "len=%lld L=%lld dm=%lld di=%lld n=%lld k=%lld %s", (long long)M,
               (long long)c->L, (long long)dm, (long long)di, (long long)n, (long long)c->k,
               c->wdt ? "bf16" : "f32");
      const double tol = 1e-4;
      check("verify_layers", cfg, "hidden", rel_all(&hid), tol);
      check("verify_layers", cfg, "saved xz", rel_all(&sxz), tol);
      check("verify_layers", cfg, "saved ssm", rel_all(&sssm), tol);
      check("verify_layers", cfg, "saved conv", rel_all(&sconv), 0);
      MBX(mb_ctx_synchronize(GPU));
      float *hv = (float *)malloc(hid.bytes), *rv = (float *)malloc(res.bytes);
      MBX(mb_memcpy_d2h(GPU, hv, hid.g, hid.bytes));
      MBX(mb_memcpy_d2h(GPU, rv, res.g, res.bytes));
      check("verify_layers", cfg, "=steps bits",
            (double)(memcmp(hv, hout, hid.bytes) != 0) + (memcmp(rv, rout, res.bytes) != 0), 0);
      free(hv), free(rv);
      /* resume at accepted prefixes j: drafts agree with the draws up to j (then -1 or another) */
      const int64_t js[] = {0, M / 2, M - 1};
      int32_t *ids = (int32_t *)calloc((size_t)(2 * M + 1), 4); /* sampled M, drafted M, acc 1 */
      for (size_t q = 0; q < 3; q++) {
        const int64_t j = js[q];
        for (int64_t t = 0; t < M; t++) ids[t] = (int32_t)(t * 7 % 256);
        for (int64_t t = 0; t + 1 < M; t++)
          ids[M + t] = t < j ? ids[t] : (t == j ? (q == 1 ? -1 : ids[t] + 1) : ids[t]);
        pair I = pnew(ids, (size_t)(2 * M + 1) * 4);
        dl_layer *rs = dl_fork_states(c, ly); /* the verified states, resumed */
        uint64_t *tr = dl_table(c, rs, 1);
        MBX(mb_resume_layers(GPU, tr, c->L, M, di, n, c->k, G(sxz), G(sssm), G(sconv),
                             (const int32_t *)I.g, (const int32_t *)I.g + M,
                             (int32_t *)I.g + 2 * M));
        MBX(mb_ctx_synchronize(GPU));
        int32_t acc = -1;
        MBX(mb_memcpy_d2h(GPU, &acc, (int32_t *)I.g + 2 * M, 4));
        double bad = acc != j;
        for (int64_t i = 0; i < c->L; i++) {
          pair *cs_ = &rs[i].w[MB_DL_CONV_STATE], *ss_ = &rs[i].w[MB_DL_SSM_STATE];
          float *hc = (float *)malloc(cs_->bytes), *hs = (float *)malloc(ss_->bytes);
          MBX(mb_memcpy_d2h(GPU, hc, cs_->g, cs_->bytes));
          MBX(mb_memcpy_d2h(GPU, hs, ss_->g, ss_->bytes));
          bad += memcmp(hc, conv_at[j * c->L + i], cs_->bytes) != 0;
          bad += memcmp(hs, ssm_at[j * c->L + i], ss_->bytes) != 0;
          free(hc), free(hs);
        }
        char rc[140];
        snprintf(rc, sizeof rc, "%s j=%lld", cfg, (long long)j);
        check("resume_layers", rc, "=steps bits", bad, 0);
        free(tr);
        dl_free_states(c, rs);
        pfree(&I);
      }
      free(ids);
      for (int64_t q = 0; q < M * c->L; q++) free(conv_at[q]), free(ssm_at[q]);
      free(conv_at), free(ssm_at), free(hout), free(rout);
      free(tc), free(tg), free(ts);
      dl_free_states(c, st);
      dl_free_layers(c, ly);
      pfree(&hid), pfree(&res), pfree(&nrm), pfree(&xc), pfree(&xd), pfree(&de), pfree(&y);
      pfree(&sxz), pfree(&sssm), pfree(&sconv);
      pfree(&h1), pfree(&r1), pfree(&n1), pfree(&xz1), pfree(&xc1), pfree(&xd1), pfree(&de1),
          pfree(&y1);
    }
}

/* ---- mb_draft_greedy: a byte drafter's k greedy drafts in one call ---------------------------
 * The GPU's call (one cluster launch where the shape allows, MAMBABYTE_CUDA_DRAFT_CLUSTER=0: the
 * ops) against the CPU's (the ops) from the same weights, state and logits. The cluster form holds
 * the matrices in bf16: with bf16 matrices (the same values on both sides) the drafts are equal and
 * the states within fp32 summation order; with fp32 matrices the first draft (the given logits'
 * argmax) is equal and the states after it within bf16 rounding. Each case runs twice: drafting
 * from the given logits, and after reading a byte first (read_id: slot 0 is the state after it;
 * with fp32 matrices its logits, and so the first draft, may differ by bf16 rounding). */
static void t_draft_greedy(void) {
  const dl_case cs[] = {
      {2, 1, 64, 128, 16, 4, 4, MB_DTYPE_BF16, MB_NORM_LAYER, 1},
      {2, 1, 256, 512, 16, 16, 4, MB_DTYPE_BF16, MB_NORM_RMS, 0}, /* the trained drafter's shape */
      {1, 1, 128, 256, 16, 8, 4, MB_DTYPE_F32, MB_NORM_LAYER, 1},
      /* d_model past 256 (a lane's second chunk half full), dt_rank past 16, 48 channels a CTA */
      {1, 1, 384, 768, 16, 24, 4, MB_DTYPE_BF16, MB_NORM_LAYER, 1},
      {2, 1, 100, 200, 5, 7, 3, MB_DTYPE_F32, MB_NORM_LAYER, 1}, /* no cluster form: the ops */
  };
  const int64_t V = 256, K = 6;
  mb_ctx *ops;
  setenv("MAMBABYTE_CUDA_DRAFT_CLUSTER", "0", 1);
  MBX(mb_ctx_create(MB_BACKEND_CUDA, 0, 0, &ops));
  unsetenv("MAMBABYTE_CUDA_DRAFT_CLUSTER");
  const size_t ncs = sizeof cs / sizeof cs[0];
  for (size_t ci = 0; ci < (g_dg_cases > 0 && (size_t)g_dg_cases < ncs ? (size_t)g_dg_cases : ncs);
       ci++) {
   for (int read = 0; read < 2; read++) {
    const dl_case *c = &cs[ci];
    const int64_t dm = c->dm, di = c->di, n = c->n, win = di * (c->k - 1);
    dl_layer *ly = dl_make_layers(c);
    /* one state for all layers: windows and states side by side, the table pointing into it */
    const int64_t per = win + di * n, sb = c->L * per * 4;
    pair st = prand(c->L * per, -1, 1);
    uint64_t *tc = dl_table(c, ly, 0), *tg = dl_table(c, ly, 1);
    for (int64_t i = 0; i < c->L; i++) {
      tc[i * MB_DL_PTRS + MB_DL_CONV_STATE] = (uint64_t)(uintptr_t)((float *)st.c + i * per);
      tc[i * MB_DL_PTRS + MB_DL_SSM_STATE] = (uint64_t)(uintptr_t)((float *)st.c + i * per + win);
      tg[i * MB_DL_PTRS + MB_DL_CONV_STATE] = (uint64_t)(uintptr_t)((float *)st.g + i * per);
      tg[i * MB_DL_PTRS + MB_DL_SSM_STATE] = (uint64_t)(uintptr_t)((float *)st.g + i * per + win);
    }
    const float sc = 1.f / sqrtf((float)dm);
    pair emb = weights(V, dm, c->wdt, -1, 1), head = weights(V, dm, c->wdt, -4 * sc, 4 * sc);
    float *lg0 = hrand(V, -3, 3);
    pair nfw = prand(dm, 0.5f, 1.5f), nfb = prand(dm, -0.1f, 0.1f), lg = pf(lg0, V);
    pair hid = pf(NULL, dm), res = pf(NULL, dm), nrm = pf(NULL, dm), xz = pf(NULL, 2 * di);
    pair xc = pf(NULL, di), xd = pf(NULL, c->R + 2 * n), de = pf(NULL, di), y = pf(NULL, di);
    pair stack = pf(NULL, (K + 1) * sb / 4), ids = pnew(NULL, (size_t)K * 4);
    int64_t zero = 0;
    pair ctr = pnew(&zero, 8);
    int32_t rid = 65;
    pair rd = pnew(&rid, 4);
    float *st0 = (float *)malloc((size_t)sb);
    MBX(mb_memcpy_d2h(CPU, st0, st.c, (size_t)sb)); /* the state before, for the ops' context */
    /* the case's call on ctx, with the CPU's buffers (g 0) or the GPU's (g 1) */
#define P_(x) ((void *)(g ? (x).g : (x).c))
#define DRAFT_CALL(ctx, gpu)                                                                       \
  do {                                                                                             \
    const int g = (gpu);                                                                           \
    MBX(mb_draft_greedy(ctx, g ? tg : tc, c->L, dm, di, n, c->R, c->k, c->wdt, c->norm, 1e-5f,      \
                        P_(emb), V, (const float *)P_(nfw), (const float *)P_(nfb), P_(head), V,    \
                        (float *)P_(hid), (float *)P_(res), (float *)P_(nrm), (float *)P_(xz),      \
                        (float *)P_(xc), (float *)P_(xd), (float *)P_(de), (float *)P_(y),          \
                        read ? (const int32_t *)P_(rd) : NULL, (float *)P_(lg), (int64_t *)P_(ctr), \
                        P_(st), sb, P_(stack), (int32_t *)P_(ids), K));                             \
  } while (0)
    for (int side = 0; side < 3; side++) { /* CPU, GPU, GPU with the ops */
      mb_ctx *ctx = side == 0 ? CPU : side == 1 ? GPU : ops;
      DRAFT_CALL(ctx, side > 0);
      if (side == 0) continue;
      char cfg[112];
      snprintf(cfg, sizeof cfg, "L=%lld dm=%lld di=%lld n=%lld R=%lld k=%lld %s %s%s%s",
               (long long)c->L, (long long)dm, (long long)di, (long long)n, (long long)c->R,
               (long long)c->k, c->wdt ? "bf16" : "f32", c->norm ? "rms" : "ln",
               side == 2 ? " ops" : "", read ? " read" : "");
      MBX(mb_ctx_synchronize(ctx));
      int32_t ic[64], ig[64];
      int64_t cc = -1, cg = -1;
      MBX(mb_memcpy_d2h(CPU, ic, ids.c, (size_t)K * 4));
      MBX(mb_memcpy_d2h(GPU, ig, ids.g, (size_t)K * 4));
      MBX(mb_memcpy_d2h(CPU, &cc, ctr.c, 8));
      MBX(mb_memcpy_d2h(GPU, &cg, ctr.g, 8));
      int same = 0;
      while (same < K && ic[same] == ig[same]) same++;
      const int exact = c->wdt == MB_DTYPE_BF16 || side == 2;
      check("draft_greedy", cfg, "drafts",
            exact ? (double)(K - same) : (same >= 1 || read ? 0 : 1), 0);
      check("draft_greedy", cfg, "counter", (double)llabs(cg - (side == 2 ? 2 : 1) * K) +
                                                (double)llabs(cc - K), 0);
      /* the stack's slots while the drafts agree (slot i follows draft i - 1) */
      float *a = (float *)malloc((size_t)((K + 1) * sb)), *b = (float *)malloc((size_t)((K + 1) * sb));
      MBX(mb_memcpy_d2h(GPU, a, stack.g, (size_t)((K + 1) * sb)));
      MBX(mb_memcpy_d2h(CPU, b, stack.c, (size_t)((K + 1) * sb)));
      double worst = 0;
      for (int64_t slot = 0; slot <= same && slot <= K; slot++) {
        double num = 0, den = 0;
        for (int64_t i = 0; i < sb / 4; i++) {
          double x = a[slot * sb / 4 + i], yv = b[slot * sb / 4 + i];
          num += (x - yv) * (x - yv);
          den += yv * yv;
        }
        double e = isnan(num) ? INFINITY : sqrt(num / (den > 0 ? den : 1));
        if (e > worst) worst = e;
      }
      check("draft_greedy", cfg, "stack", worst, exact ? 1e-4 : 2e-2);
      free(a);
      free(b);
      if (side == 1) {
        /* the same call again from the same inputs: the same drafts and stack bit for bit (a race
         * between the cluster's CTAs would show here first), then the ops' context starts from
         * the same state and logits again */
        float *s1 = (float *)malloc((size_t)((K + 1) * sb)), *s2 = (float *)malloc((size_t)((K + 1) * sb));
        int32_t i2[64];
        MBX(mb_memcpy_d2h(GPU, s1, stack.g, (size_t)((K + 1) * sb)));
        MBX(mb_memcpy_h2d(GPU, st.g, st0, (size_t)sb));
        MBX(mb_memcpy_h2d(GPU, lg.g, lg0, (size_t)V * 4));
        DRAFT_CALL(GPU, 1);
        MBX(mb_ctx_synchronize(GPU));
        MBX(mb_memcpy_d2h(GPU, i2, ids.g, (size_t)K * 4));
        MBX(mb_memcpy_d2h(GPU, s2, stack.g, (size_t)((K + 1) * sb)));
        int diff = memcmp(s1, s2, (size_t)((K + 1) * sb)) != 0;
        for (int64_t i = 0; i < K; i++) diff += ig[i] != i2[i];
        check("draft_greedy", cfg, "rerun", (double)diff, 0);
        free(s1), free(s2);
        int64_t back = K; /* the rerun drew K more: the ops' side expects the count after one */
        MBX(mb_memcpy_h2d(GPU, ctr.g, &back, 8));
        MBX(mb_memcpy_h2d(GPU, st.g, st0, (size_t)sb));
        MBX(mb_memcpy_h2d(GPU, lg.g, lg0, (size_t)V * 4));
      }
    }
#undef DRAFT_CALL
#undef P_
    pfree(&st), pfree(&emb), pfree(&head), pfree(&nfw), pfree(&nfb), pfree(&lg), pfree(&hid);
    pfree(&res), pfree(&nrm), pfree(&xz), pfree(&xc), pfree(&xd), pfree(&de), pfree(&y);
    pfree(&stack), pfree(&ids), pfree(&ctr), pfree(&rd);
    free(lg0);
    free(st0);
    dl_free_layers(c, ly);
    free(tc);
    free(tg);
   }
  }
  MBX(mb_ctx_destroy(ops));
}

/* mb_spec_commit: four rounds in turn (j = len - 1, 0, len / 2, len - 1, the last past cap) on
 * both contexts from the same inputs; every output byte equal (the copy in 16-byte, 4-byte and
 * 1-byte units by the sizes' alignment). */
static void t_spec_commit(void) {
  const int64_t cases[][4] = {{8, 78848, 78848, 40}, {5, 12, 20, 9}, {3, 7, 9, 11}, {65, 0, 0, 80}};
  for (int ci = 0; ci < 4; ci++) {
    const int64_t len = cases[ci][0], bytes = cases[ci][1], stride = cases[ci][2];
    const int64_t cap = cases[ci][3];
    const size_t nsrc = (size_t)(len * stride) + 1;
    unsigned char *stack = (unsigned char *)malloc(nsrc);
    for (size_t i = 0; i < nsrc; i++) stack[i] = (unsigned char)rnd64();
    int32_t sampled[65], outinit[80];
    for (int i = 0; i < 65; i++) sampled[i] = (int32_t)(rnd64() % 256);
    for (int i = 0; i < 80; i++) outinit[i] = -7;
    const int64_t prog0[3] = {cap - 2 * len - 1 < 0 ? 0 : cap - 2 * len - 1, 0, 0};
    pair S = pnew(stack, nsrc), D = pnew(NULL, (size_t)(bytes > 0 ? bytes : 1));
    pair SP = pnew(sampled, sizeof sampled), O = pnew(outinit, sizeof outinit);
    pair PR = pnew(prog0, sizeof prog0), ID = pnew(NULL, 4), CT = pnew(NULL, 8 * 65);
    pair AC = pnew(NULL, 4);
    const int64_t js[4] = {len - 1, 0, len / 2, len - 1};
    char cfg[80];
    snprintf(cfg, sizeof cfg, "len=%lld bytes=%lld stride=%lld cap=%lld", (long long)len,
             (long long)bytes, (long long)stride, (long long)cap);
    double bad = 0;
    for (int r = 0; r < 4; r++) {
      const int32_t j = (int32_t)js[r];
      MBX(mb_memcpy_h2d(CPU, AC.c, &j, 4));
      MBX(mb_memcpy_h2d(GPU, AC.g, &j, 4));
      /* the byte case reads its stack one byte in, so no unit wider than a byte divides it */
      const int off = ci == 2 ? 1 : 0;
      MBX(mb_spec_commit(CPU, len, (const int32_t *)SP.c, (const int32_t *)AC.c,
                         (int32_t *)O.c, cap, (int64_t *)PR.c, (int32_t *)ID.c,
                         (int64_t *)CT.c, D.c, (const char *)S.c + off, stride, bytes));
      MBX(mb_spec_commit(GPU, len, (const int32_t *)SP.g, (const int32_t *)AC.g,
                         (int32_t *)O.g, cap, (int64_t *)PR.g, (int32_t *)ID.g,
                         (int64_t *)CT.g, D.g, (const char *)S.g + off, stride, bytes));
      MBX(mb_ctx_synchronize(GPU));
      pair *outs[5] = {&D, &O, &PR, &ID, &CT};
      const size_t sizes[5] = {(size_t)bytes, sizeof outinit, sizeof prog0, 4, (size_t)(8 * len)};
      for (int q = 0; q < 5; q++) {
        if (sizes[q] == 0) continue;
        unsigned char *hc = (unsigned char *)malloc(sizes[q]), *hg = (unsigned char *)malloc(sizes[q]);
        MBX(mb_memcpy_d2h(CPU, hc, outs[q]->c, sizes[q]));
        MBX(mb_memcpy_d2h(GPU, hg, outs[q]->g, sizes[q]));
        if (memcmp(hc, hg, sizes[q])) bad += 1;
        free(hc), free(hg);
      }
    }
    check("spec_commit", cfg, "all bytes", bad, 0);
    pfree(&S), pfree(&D), pfree(&SP), pfree(&O), pfree(&PR), pfree(&ID), pfree(&CT), pfree(&AC);
    free(stack);
  }
}

static void t_softmax_rank(void) {
  int64_t vs[] = {256, 37, 1000};
  for (int vi = 0; vi < 3; vi++) {
    int64_t v = vs[vi], n = 5;
    float *lh = hrand(n * v, -8, 8);
    lh[3] = lh[7]; /* a tie */
    pair L = pf(lh, n * v), O = pf(NULL, n * v);
    MBX(mb_log_softmax(CPU, C(L), n, v, C(O)));
    MBX(mb_log_softmax(GPU, G(L), n, v, G(O)));
    char cfg[64];
    snprintf(cfg, sizeof cfg, "n=%lld v=%lld", (long long)n, (long long)v);
    check("log_softmax", cfg, "out", rel_all(&O), 1e-5);
    int32_t tg[5];
    for (int i = 0; i < 5; i++) tg[i] = (int32_t)(rnd64() % v);
    tg[0] = 7;
    pair T = pnew(tg, sizeof tg), LP = pf(NULL, n), RK = pnew(NULL, n * 4);
    MBX(mb_logprob_rank(CPU, C(L), n, v, (int32_t *)T.c, C(LP), (int32_t *)RK.c));
    MBX(mb_logprob_rank(GPU, G(L), n, v, (int32_t *)T.g, G(LP), (int32_t *)RK.g));
    check("logprob_rank", cfg, "logprob", rel_all(&LP), 1e-5);
    int32_t rc[5], rg[5];
    MBX(mb_ctx_synchronize(GPU));
    MBX(mb_memcpy_d2h(CPU, rc, RK.c, sizeof rc));
    MBX(mb_memcpy_d2h(GPU, rg, RK.g, sizeof rg));
    check("logprob_rank", cfg, "rank", memcmp(rc, rg, sizeof rc) ? 1 : 0, 0);
    /* in place */
    MBX(mb_log_softmax(CPU, C(L), n, v, C(L)));
    MBX(mb_log_softmax(GPU, G(L), n, v, G(L)));
    check("log_softmax", cfg, "inplace", rel_all(&L), 1e-5);
    pfree(&L), pfree(&O), pfree(&T), pfree(&LP), pfree(&RK), free(lh);
  }
}

/* Is the CPU's draw for row b near a bucket edge (a near tie)? Recomputes the CPU algorithm's
 * cumulative sums in double and reports the distance of u*total from the nearest edge. */
static int cand_cmp(const void *a, const void *b) {
  const float *x = (const float *)a, *y = (const float *)b;
  if (x[0] != y[0]) return x[0] > y[0] ? -1 : 1;
  return x[1] < y[1] ? -1 : (x[1] > y[1]);
}
static double edge_distance(const float *r, int64_t v, float temp, int top_k, float top_p, float u) {
  float *c = (float *)malloc((size_t)v * 2 * sizeof(float));
  double *p = (double *)malloc((size_t)v * sizeof(double));
  for (int64_t i = 0; i < v; i++) c[2 * i] = r[i], c[2 * i + 1] = (float)i;
  qsort(c, (size_t)v, 2 * sizeof(float), cand_cmp);
  int64_t k = (top_k <= 0 || top_k >= v) ? v : top_k;
  double tot = 0, mx = c[0] / (double)temp;
  for (int64_t i = 0; i < k; i++) tot += (p[i] = exp(c[2 * i] / (double)temp - mx));
  int64_t kept = k;
  double mind = 1;
  if (top_p > 0 && top_p < 1) {
    double tail = 0, thr = 1.0 - top_p;
    int64_t i = k - 1;
    for (; i > 0; i--) {
      tail += p[i] / tot;
      if (fabs(tail - thr) < mind) mind = fabs(tail - thr);
      if (tail > thr) break;
    }
    kept = i + 1;
    tot = 0;
    for (int64_t j = 0; j < kept; j++) tot += p[j];
  }
  double cum = 0, tgt = u * tot;
  for (int64_t i = 0; i < kept; i++) {
    cum += p[i];
    if (fabs(cum - tgt) / tot < mind) mind = fabs(cum - tgt) / tot;
  }
  free(c), free(p);
  return mind;
}

static void t_sample(void) {
  struct { int64_t batch, v; float temp; int top_k; float top_p; } cs[] = {
      {1, 256, 1.0f, 1, 1.0f},   {3, 256, 1.0f, 1, 1.0f},  {64, 256, 0.7f, 1, 0.9f},
      {1, 256, 1.0f, 0, 1.0f},   {64, 256, 1.0f, 0, 1.0f}, {64, 256, 0.7f, 40, 1.0f},
      {64, 256, 1.3f, 0, 0.9f},  {64, 256, 1.0f, 5, 0.5f}, {7, 37, 1.0f, 300, 0.0f},
      {64, 256, 0.5f, 256, 0.95f}, {5, 1000, 1.0f, 50, 0.8f}, {3, 3000, 2.0f, 0, 0.99f}};
  int nc = (int)(sizeof cs / sizeof cs[0]);
  for (int ci = 0; ci < nc; ci++) {
    int64_t batch = cs[ci].batch, v = cs[ci].v;
    float *lh = hrand(batch * v, -6, 6);
    if (ci == 1) lh[5] = lh[9] = 7.0f; /* tie on the max: lowest index */
    pair L = pf(lh, batch * v), O = pnew(NULL, batch * 4);
    int64_t c0 = 5 + ci;
    pair K = pnew(&c0, 8);
    uint64_t seed = 1234 + ci;
    int rounds = 3, mism = 0, hard = 0;
    for (int r = 0; r < rounds; r++) {
      MBX(mb_sample(CPU, C(L), batch, v, cs[ci].temp, cs[ci].top_k, cs[ci].top_p, seed,
                    (int64_t *)K.c, (int32_t *)O.c));
      MBX(mb_sample(GPU, G(L), batch, v, cs[ci].temp, cs[ci].top_k, cs[ci].top_p, seed,
                    (int64_t *)K.g, (int32_t *)O.g));
      int32_t *ic = (int32_t *)malloc((size_t)batch * 4), *ig = (int32_t *)malloc((size_t)batch * 4);
      MBX(mb_ctx_synchronize(GPU));
      MBX(mb_memcpy_d2h(CPU, ic, O.c, (size_t)batch * 4));
      MBX(mb_memcpy_d2h(GPU, ig, O.g, (size_t)batch * 4));
      for (int64_t b = 0; b < batch; b++)
        if (ic[b] != ig[b]) {
          mism++;
          float u = mb_uniform(seed, (uint64_t)((c0 + r) * batch + b));
          if (cs[ci].top_k == 1 ||
              edge_distance(lh + b * v, v, cs[ci].temp, cs[ci].top_k, cs[ci].top_p, u) > 1e-4)
            hard++;
        }
      free(ic), free(ig);
    }
    int64_t kc, kg;
    MBX(mb_memcpy_d2h(CPU, &kc, K.c, 8));
    MBX(mb_memcpy_d2h(GPU, &kg, K.g, 8));
    char cfg[80];
    snprintf(cfg, sizeof cfg, "b=%lld v=%lld T=%.1f k=%d p=%.2f (%d mism)", (long long)batch,
             (long long)v, cs[ci].temp, cs[ci].top_k, cs[ci].top_p, mism);
    check("sample", cfg, "ids", hard, 0);
    check("sample", cfg, "counter", (kc == c0 + rounds && kg == kc) ? 0 : 1, 0);
    pfree(&L), pfree(&O), pfree(&K), free(lh);
  }
}

/* mb_sample's parallel kernel (vocabularies of up to 256: k_sample256) draws what the serial one
 * draws (MAMBABYTE_CUDA_SAMPLE_SERIAL=1 on a second context), id for id and counter for counter,
 * on random rows with ties, -inf, NaN and a row of one value, for every top-k / top-p form. */
static void t_sample_parallel(void) {
  mb_ctx *serial = NULL;
  char *old = env_swap("MAMBABYTE_CUDA_SAMPLE_SERIAL", "1");
  MBX(mb_ctx_create(MB_BACKEND_CUDA, 0, 0, &serial));
  env_restore("MAMBABYTE_CUDA_SAMPLE_SERIAL", old);
  struct { int64_t batch, v; float temp; int top_k; float top_p; } cs[] = {
      {1, 256, 1.0f, 256, 0.98f}, {64, 256, 1.0f, 0, 1.0f},   {64, 256, 0.7f, 40, 0.9f},
      {17, 256, 1.3f, 0, 0.5f},   {64, 256, 1.0f, 5, 0.05f},  {7, 37, 1.0f, 300, 0.0f},
      {5, 200, 0.5f, 100, 0.95f}, {3, 1, 1.0f, 0, 0.9f},      {9, 129, 2.0f, 64, 0.999f},
      {256, 256, 1.0f, 256, 0.98f}};
  for (int ci = 0; ci < (int)(sizeof cs / sizeof cs[0]); ci++) {
    const int64_t batch = cs[ci].batch, v = cs[ci].v;
    float *lh = hrand(batch * v, -6, 6);
    for (int64_t b = 0; b < batch; b++) {
      float *r = lh + b * v;
      if (b % 4 == 1 && v > 9) r[3] = r[7] = r[9] = 9.0f;          /* a three-way tie at the top */
      if (b % 4 == 2 && v > 20) r[11] = -INFINITY, r[20] = NAN;    /* -inf and a NaN */
      if (b % 4 == 3) for (int64_t i = 0; i < v; i++) r[i] = 0.25f; /* one value */
      if (b % 8 == 5) for (int64_t i = 0; i < v; i++) r[i] = (float)(i % 7) * 0.5f; /* many ties */
    }
    float *gl[2];
    int32_t *go[2];
    int64_t *gc[2];
    mb_ctx *cx[2] = {GPU, serial};
    for (int k = 0; k < 2; k++) {
      MBX(mb_alloc(cx[k], (size_t)batch * v * 4, (void **)&gl[k]));
      MBX(mb_alloc(cx[k], (size_t)batch * 4, (void **)&go[k]));
      MBX(mb_alloc(cx[k], 8, (void **)&gc[k]));
      MBX(mb_memcpy_h2d(cx[k], gl[k], lh, (size_t)batch * v * 4));
      const int64_t c0 = 11 + ci;
      MBX(mb_memcpy_h2d(cx[k], gc[k], &c0, 8));
    }
    int bad = 0;
    for (int r = 0; r < 3; r++) {
      int32_t ids[2][256];
      for (int k = 0; k < 2; k++) {
        MBX(mb_sample(cx[k], gl[k], batch, v, cs[ci].temp, cs[ci].top_k, cs[ci].top_p, 99 + ci,
                      gc[k], go[k]));
        MBX(mb_memcpy_d2h(cx[k], ids[k], go[k], (size_t)batch * 4));
      }
      for (int64_t b = 0; b < batch; b++) bad += ids[0][b] != ids[1][b];
    }
    int64_t kc[2];
    for (int k = 0; k < 2; k++) MBX(mb_memcpy_d2h(cx[k], &kc[k], gc[k], 8));
    char cfg[96];
    snprintf(cfg, sizeof cfg, "b=%lld v=%lld T=%.1f k=%d p=%.3f", (long long)batch, (long long)v,
             cs[ci].temp, cs[ci].top_k, cs[ci].top_p);
    check("sample_parallel", cfg, "ids =serial", bad, 0);
    check("sample_parallel", cfg, "counter =serial", kc[0] == kc[1] && kc[0] == 11 + ci + 3 ? 0 : 1, 0);
    for (int k = 0; k < 2; k++) {
      MBX(mb_free(cx[k], gl[k]));
      MBX(mb_free(cx[k], go[k]));
      MBX(mb_free(cx[k], gc[k]));
    }
    free(lh);
  }
  MBX(mb_ctx_destroy(serial));
}

/* mb_sample_rows: a counter a row (each row as a batch-1 mb_sample with its counter), GPU vs
 * CPU: the ids as t_sample checks them, and every counter incremented once a call. */
static void t_sample_rows(void) {
  struct { int64_t n, v; float temp; int top_k; float top_p; } cs[] = {
      {1, 256, 1.0f, 1, 1.0f}, {8, 256, 1.0f, 1, 1.0f}, {8, 256, 0.7f, 40, 0.9f},
      {65, 256, 1.0f, 0, 1.0f}, {5, 37, 1.3f, 5, 0.5f}};
  for (int ci = 0; ci < (int)(sizeof cs / sizeof cs[0]); ci++) {
    const int64_t n = cs[ci].n, v = cs[ci].v;
    float *lh = hrand(n * v, -6, 6);
    int64_t *c0 = (int64_t *)malloc((size_t)n * 8);
    for (int64_t b = 0; b < n; b++) c0[b] = (int64_t)(rnd64() % 100000);
    pair L = pf(lh, n * v), O = pnew(NULL, n * 4), K = pnew(c0, n * 8);
    const uint64_t seed = 99 + ci;
    const int rounds = 2;
    int hard = 0;
    int32_t *ic = (int32_t *)malloc((size_t)n * 4), *ig = (int32_t *)malloc((size_t)n * 4);
    for (int r = 0; r < rounds; r++) {
      MBX(mb_sample_rows(CPU, C(L), n, v, cs[ci].temp, cs[ci].top_k, cs[ci].top_p, seed,
                         (int64_t *)K.c, (int32_t *)O.c));
      MBX(mb_sample_rows(GPU, G(L), n, v, cs[ci].temp, cs[ci].top_k, cs[ci].top_p, seed,
                         (int64_t *)K.g, (int32_t *)O.g));
      MBX(mb_ctx_synchronize(GPU));
      MBX(mb_memcpy_d2h(CPU, ic, O.c, (size_t)n * 4));
      MBX(mb_memcpy_d2h(GPU, ig, O.g, (size_t)n * 4));
      for (int64_t b = 0; b < n; b++)
        if (ic[b] != ig[b]) {
          const float u = mb_uniform(seed, (uint64_t)(c0[b] + r));
          if (cs[ci].top_k == 1 ||
              edge_distance(lh + b * v, v, cs[ci].temp, cs[ci].top_k, cs[ci].top_p, u) > 1e-4)
            hard++;
        }
    }
    int64_t *kc = (int64_t *)malloc((size_t)n * 8), *kg = (int64_t *)malloc((size_t)n * 8);
    MBX(mb_memcpy_d2h(CPU, kc, K.c, (size_t)n * 8));
    MBX(mb_memcpy_d2h(GPU, kg, K.g, (size_t)n * 8));
    int bad = 0;
    for (int64_t b = 0; b < n; b++) bad += kc[b] != c0[b] + rounds || kg[b] != kc[b];
    char cfg[80];
    snprintf(cfg, sizeof cfg, "n=%lld v=%lld T=%.1f k=%d p=%.2f", (long long)n, (long long)v,
             cs[ci].temp, cs[ci].top_k, cs[ci].top_p);
    check("sample_rows", cfg, "ids", hard, 0);
    check("sample_rows", cfg, "counters", bad, 0);
    pfree(&L), pfree(&O), pfree(&K);
    free(lh), free(c0), free(ic), free(ig), free(kc), free(kg);
  }
}

/* mb_discrete_a / mb_discrete_a_input_sim: every reduction and dim, fed in chunks (positions
 * carried across calls), GPU vs CPU. Values: relative error over the whole output <= 1e-5 (the
 * CPU sums in float64; CUDA's E differs by expf's rounding, ~2 ulp, or in its sums by ex2's and a
 * scaled A's, and its tile kernels' first sums are float32: discrete_a.cu). Indices (min / max
 * over dim 0, 1, 2): equal, except where the two picked elements are within 1e-6 of each other in
 * float64 (a near tie that the two exps may order differently). */
static double da_e(const float *delta, int64_t ld, const float *A, int64_t n, int64_t t, int64_t c,
                   int64_t s) {
  double x = delta[t * ld + c];
  double sp = x > 20 ? x : log1p(exp(x));
  return exp(sp * (double)A[c * n + s]);
}

static void t_discrete_a(void) {
  struct { int64_t len, d, n, pad; int initA; } cs[] = {
      {7, 37, 16, 3, 0}, {300, 101, 16, 1, 1}, {5, 19, 5, 0, 0},      {4, 33, 17, 2, 0},
      {3, 40, 64, 0, 1}, {2, 9, 70, 1, 0},     {2048, 3584, 16, 0, 1}, /* a 972M chunk */
      {50, 600, 16, 2, 0}, /* the tile kernels' partial channel and position tiles */
  };
  const int reds[] = {MB_REDUCE_NONE, MB_REDUCE_FRO, MB_REDUCE_NUC, MB_REDUCE_MEAN,
                      MB_REDUCE_MIN,  MB_REDUCE_MAX, MB_REDUCE_NORM};
  const char *names[] = {"none", "mean", "min", "max", "norm", "fro", "nuc"};
  for (size_t ci = 0; ci < sizeof cs / sizeof cs[0]; ci++) {
    const int64_t len = cs[ci].len, d = cs[ci].d, n = cs[ci].n, ld = d + cs[ci].pad;
    if (g_small && len * d > 100000) continue;
    float *hd = hrand(len * ld, -7, 3), *ha = hrand(d * n, 0, 1);
    for (int64_t i = 0; i < d * n; i++)
      ha[i] = cs[ci].initA ? -(float)(i % n + 1) : -expf(logf(16.0f) * ha[i]);
    if (ci == 0) { /* a NaN row and a NaN state: min / max must agree on NaN and its index */
      hd[2 * ld + 5] = NAN;
      ha[7 * n + 3] = NAN;
    }
    pair D = pf(hd, len * ld), A = pf(ha, d * n);
    int64_t parts[4] = {1, 0, len - 3, 2};
    int np = len >= 3 ? 4 : 1;
    if (len < 3) parts[0] = len;
    for (size_t ri = 0; ri < sizeof reds / sizeof reds[0]; ri++) {
      const int red = reds[ri];
      const int per_dim = red >= MB_REDUCE_MEAN && red <= MB_REDUCE_NORM;
      const int ndims = per_dim ? 4 : 1;
      for (int di = 0; di < ndims; di++) {
        const int dim = per_dim ? di - 1 : 0; /* -1, 0, 1, 2 */
        if (red == MB_REDUCE_NONE && len * d * n > 4000000) continue;
        int64_t size, width;
        if (red == MB_REDUCE_NONE) size = len * d * n, width = d * n;
        else if (!per_dim) size = len, width = 1;
        else if (dim == -1) size = 1, width = 0;
        else if (dim == 0) size = d * n, width = 0;
        else if (dim == 1) size = len * n, width = n;
        else size = len * d, width = d;
        const int minmax = red == MB_REDUCE_MIN || red == MB_REDUCE_MAX;
        const int with_idx = minmax && per_dim && dim >= 0;
        pair O = pf(NULL, size), I = pnew(NULL, (size_t)size * 8), AC = pnew(NULL, (size_t)(d * n) * 8);
        int64_t pos = 0;
        for (int k = 0; k < np; k++) {
          const int64_t m = parts[k];
          for (int g = 0; g < 2; g++) {
            mb_ctx *ctx = g ? GPU : CPU;
            const float *dp = (const float *)(g ? D.g : D.c) + pos * ld;
            float *op = (float *)(g ? O.g : O.c) + (width ? pos * width : 0);
            int64_t *ip = (int64_t *)(g ? I.g : I.c) + (width ? pos * width : 0);
            MBX(mb_discrete_a(ctx, dp, ld, g ? G(A) : C(A), m, d, n, red, dim, pos,
                              (double *)(g ? AC.g : AC.c), op, with_idx ? ip : NULL));
          }
          pos += m;
        }
        char cfg[96];
        snprintf(cfg, sizeof cfg, "len=%lld d=%lld n=%lld %s dim=%d%s", (long long)len,
                 (long long)d, (long long)n, names[red], dim, cs[ci].initA ? " A=-(1..n)" : "");
        /* NaN positions (case 0) make the norm-wise error NaN: compare the finite part */
        float *oc = (float *)malloc((size_t)size * 4), *og = (float *)malloc((size_t)size * 4);
        MBX(mb_ctx_synchronize(GPU));
        MBX(mb_memcpy_d2h(CPU, oc, O.c, (size_t)size * 4));
        MBX(mb_memcpy_d2h(GPU, og, O.g, (size_t)size * 4));
        double num = 0, den = 0;
        int nanbad = 0;
        for (int64_t i = 0; i < size; i++) {
          if (isnan(oc[i]) || isnan(og[i])) {
            nanbad += isnan(oc[i]) != isnan(og[i]);
            continue;
          }
          num += ((double)og[i] - oc[i]) * ((double)og[i] - oc[i]);
          den += (double)oc[i] * oc[i];
        }
        double err = nanbad ? INFINITY : (den > 0 ? sqrt(num / den) : sqrt(num));
        check("discrete_a", cfg, "out", err, 1e-5);
        if (with_idx) {
          int64_t *ic = (int64_t *)malloc((size_t)size * 8), *ig = (int64_t *)malloc((size_t)size * 8);
          MBX(mb_memcpy_d2h(CPU, ic, I.c, (size_t)size * 8));
          MBX(mb_memcpy_d2h(GPU, ig, I.g, (size_t)size * 8));
          int64_t hard = 0, ties = 0;
          for (int64_t i = 0; i < size; i++) {
            if (ic[i] == ig[i]) continue;
            /* the two picked elements, in float64 */
            int64_t t1, c1, s1, t2, c2, s2;
            if (dim == 0) t1 = ic[i], t2 = ig[i], c1 = c2 = i / n, s1 = s2 = i % n;
            else if (dim == 1) c1 = ic[i], c2 = ig[i], t1 = t2 = i / n, s1 = s2 = i % n;
            else s1 = ic[i], s2 = ig[i], t1 = t2 = i / d, c1 = c2 = i % d;
            int ok = ig[i] >= 0 && ig[i] < (dim == 0 ? len : dim == 1 ? d : n);
            if (ok) {
              double e1 = da_e(hd, ld, ha, n, t1, c1, s1), e2 = da_e(hd, ld, ha, n, t2, c2, s2);
              ok = fabs(e1 - e2) <= 1e-6 * fabs(e1);
            }
            if (ok) ties++;
            else hard++;
          }
          char what[32];
          snprintf(what, sizeof what, "idx(%lld tie)", (long long)ties);
          check("discrete_a", cfg, what, (double)hard, 0);
          free(ic), free(ig);
        }
        free(oc), free(og);
        pfree(&O), pfree(&I), pfree(&AC);
      }
    }
    /* input similarity, x inside a wider buffer (ldx = 2 d + 1) */
    const int64_t ldx = 2 * d + 1;
    pair X = prand(len * ldx, -1, 1), S = pf(NULL, len * n);
    MBX(mb_discrete_a_input_sim(CPU, C(D), ld, C(A), C(X), ldx, len, d, n, 1e-8f, C(S)));
    MBX(mb_discrete_a_input_sim(GPU, G(D), ld, G(A), G(X), ldx, len, d, n, 1e-8f, G(S)));
    if (ci != 0) { /* case 0 holds NaNs */
      char cfg[96];
      snprintf(cfg, sizeof cfg, "len=%lld d=%lld n=%lld", (long long)len, (long long)d,
               (long long)n);
      check("discrete_a_sim", cfg, "out", rel_all(&S), 1e-5);
    }
    pfree(&X), pfree(&S), pfree(&D), pfree(&A), free(hd), free(ha);
  }
}

/* A decode-like step on the GPU: norm -> linear (bf16 GEMV) -> conv (len 1, state) -> linear
 * (x_proj, f32) -> state update -> linear (head) -> sample. Captured once, replayed twice, and
 * compared with the same ops run directly twice from the same starting buffers. */
static void t_graph(int fused, int64_t B) {
  const int64_t dm = 40, di = 72, n = 16, k = 4, V = 256, r = 8;
  char gcase[96]; /* from 9 rows the products run on cuBLAS: graph edges out of its kernels */
  snprintf(gcase, sizeof gcase, "%sdecode-like step of %lld, replayed twice",
           fused ? "fused " : "", (long long)B);
  float *hx = hrand(B * dm, -1, 1), *hres = hrand(B * dm, -1, 1), *hnw = hrand(dm, 0.5f, 1.5f);
  float *hwin = hrand(2 * di * dm, -0.2f, 0.2f), *hcw = hrand(di * k, -1, 1);
  float *hcs = hrand(B * di * (k - 1), -1, 1), *hxp = hrand((r + 2 * n) * di, -0.2f, 0.2f);
  float *hA = hrand(di * n, -2, -0.1f), *hss = hrand(B * di * n, -1, 1);
  float *hhead = hrand(V * di, -0.3f, 0.3f), *hdtw = hrand(di * r, -0.5f, 0.5f);
  uint16_t *wbf = (uint16_t *)malloc((size_t)(2 * di * dm) * 2);
  for (int64_t i = 0; i < 2 * di * dm; i++) wbf[i] = f2bf(hwin[i]);
  void *x, *res, *nw, *win, *cw, *cs, *xp, *A, *ss, *head, *hn, *xz, *xc, *dbc, *y, *lg, *ids, *ctr;
  void *dtw;
  MBX(mb_alloc(GPU, (size_t)(di * r) * 4, &dtw));
  MBX(mb_memcpy_h2d(GPU, dtw, hdtw, (size_t)(di * r) * 4));
  MBX(mb_alloc(GPU, (size_t)(B * dm) * 4, &x));
  MBX(mb_alloc(GPU, (size_t)(B * dm) * 4, &res));
  MBX(mb_alloc(GPU, (size_t)dm * 4, &nw));
  MBX(mb_alloc(GPU, (size_t)(2 * di * dm) * 2, &win));
  MBX(mb_alloc(GPU, (size_t)(di * k) * 4, &cw));
  MBX(mb_alloc(GPU, (size_t)(B * di * (k - 1)) * 4, &cs));
  MBX(mb_alloc(GPU, (size_t)((r + 2 * n) * di) * 4, &xp));
  MBX(mb_alloc(GPU, (size_t)(di * n) * 4, &A));
  MBX(mb_alloc(GPU, (size_t)(B * di * n) * 4, &ss));
  MBX(mb_alloc(GPU, (size_t)(V * di) * 4, &head));
  MBX(mb_alloc(GPU, (size_t)(B * dm) * 4, &hn));
  MBX(mb_alloc(GPU, (size_t)(B * 2 * di) * 4, &xz));
  MBX(mb_alloc(GPU, (size_t)(B * di) * 4, &xc));
  MBX(mb_alloc(GPU, (size_t)(B * (r + 2 * n)) * 4, &dbc));
  MBX(mb_alloc(GPU, (size_t)(B * di) * 4, &y));
  MBX(mb_alloc(GPU, (size_t)(B * V) * 4, &lg));
  MBX(mb_alloc(GPU, (size_t)B * 4 * 4, &ids));
  MBX(mb_alloc(GPU, 8, &ctr));
  MBX(mb_memcpy_h2d(GPU, nw, hnw, (size_t)dm * 4));
  MBX(mb_memcpy_h2d(GPU, win, wbf, (size_t)(2 * di * dm) * 2));
  MBX(mb_memcpy_h2d(GPU, cw, hcw, (size_t)(di * k) * 4));
  MBX(mb_memcpy_h2d(GPU, xp, hxp, (size_t)((r + 2 * n) * di) * 4));
  MBX(mb_memcpy_h2d(GPU, A, hA, (size_t)(di * n) * 4));
  MBX(mb_memcpy_h2d(GPU, head, hhead, (size_t)(V * di) * 4));
  const int64_t L = r + 2 * n;
  float *out[2][4];
  for (int mode = 0; mode < 2; mode++) { /* 0 direct, 1 graph */
    int64_t c0 = 3;
    MBX(mb_memcpy_h2d(GPU, x, hx, (size_t)(B * dm) * 4));
    MBX(mb_memcpy_h2d(GPU, res, hres, (size_t)(B * dm) * 4));
    MBX(mb_memcpy_h2d(GPU, cs, hcs, (size_t)(B * di * (k - 1)) * 4));
    MBX(mb_memcpy_h2d(GPU, ss, hss, (size_t)(B * di * n) * 4));
    MBX(mb_memcpy_h2d(GPU, ctr, &c0, 8));
    int graph = 0;
    for (int step = 0; step < 2; step++) {
      if (mode == 1 && step == 0) MBX(mb_graph_begin(GPU));
      if (mode == 0 || step == 0) {
        MBX(mb_add_norm(GPU, (float *)x, (float *)res, 1, (float *)nw, NULL, MB_NORM_RMS, 1e-5f, B,
                        dm, (float *)hn, NULL));
        if (fused) {
          MBX(mb_linear_conv1d_step(GPU, (float *)hn, dm, win, MB_DTYPE_BF16, NULL, B, dm, 2 * di,
                                    (float *)xz, 2 * di, (float *)cw, NULL, (float *)cs, di, k,
                                    (float *)xc, di));
        } else {
          MBX(mb_linear(GPU, (float *)hn, dm, win, MB_DTYPE_BF16, NULL, B, dm, 2 * di,
                        (float *)xz, 2 * di));
          MBX(mb_causal_conv1d(GPU, (float *)xz, NULL, 2 * di, (float *)cw, NULL, (float *)cs, B, 1, di,
                               k, (float *)xc, di, NULL, NULL, NULL));
        }
        MBX(mb_linear(GPU, (float *)xc, di, xp, MB_DTYPE_F32, NULL, B, di, L, (float *)dbc, L));
        if (fused) /* delta = dt_proj(dbc[:, :r]) inside the update */
          MBX(mb_selective_state_update_dt(GPU, (float *)xc, di, (float *)dbc, L, dtw,
                                           MB_DTYPE_F32, NULL, r, (float *)A, (float *)dbc + r, L,
                                           (float *)dbc + r + n, L, NULL, (float *)xz + di, 2 * di,
                                           (float *)ss, B, di, n, 1, NULL, (float *)y, di, NULL));
        else /* delta: the pre-conv x half of xz (softplus), to keep the step small */
          MBX(mb_selective_scan(GPU, (float *)xc, NULL, di, (float *)xz, NULL, 2 * di, NULL, (float *)A,
                                (float *)dbc + r, L, (float *)dbc + r + n, L, NULL,
                                (float *)xz + di, NULL, 2 * di, (float *)ss, NULL, B, 1, di, n, 1,
                                (float *)y, di, NULL, NULL, NULL, NULL));
        MBX(mb_linear(GPU, (float *)y, di, head, MB_DTYPE_F32, NULL, B, di, V, (float *)lg, V));
        MBX(mb_sample(GPU, (float *)lg, B, V, 1.0f, 0, 0.9f, 77, (int64_t *)ctr,
                      (int32_t *)ids));
        MBX(mb_memcpy_d2d(GPU, (int32_t *)ids + B, ids, (size_t)B * 4));
      }
      if (mode == 1 && step == 0) MBX(mb_graph_end(GPU, &graph));
      if (mode == 1) MBX(mb_graph_launch(GPU, graph));
    }
    MBX(mb_ctx_synchronize(GPU));
    out[mode][0] = (float *)malloc((size_t)(B * dm) * 4);
    out[mode][1] = (float *)malloc((size_t)(B * di * n) * 4);
    out[mode][2] = (float *)malloc((size_t)(B * V) * 4);
    out[mode][3] = (float *)malloc((size_t)(B * 4) * 4 + 8);
    MBX(mb_memcpy_d2h(GPU, out[mode][0], res, (size_t)(B * dm) * 4));
    MBX(mb_memcpy_d2h(GPU, out[mode][1], ss, (size_t)(B * di * n) * 4));
    MBX(mb_memcpy_d2h(GPU, out[mode][2], lg, (size_t)(B * V) * 4));
    MBX(mb_memcpy_d2h(GPU, out[mode][3], ids, (size_t)B * 8));
    MBX(mb_memcpy_d2h(GPU, (char *)out[mode][3] + B * 4 * 4, ctr, 8));
    if (graph) MBX(mb_graph_destroy(GPU, graph));
  }
  check("graph", gcase, "residual",
        memcmp(out[0][0], out[1][0], (size_t)(B * dm) * 4) ? 1 : 0, 0);
  check("graph", gcase, "ssm state",
        memcmp(out[0][1], out[1][1], (size_t)(B * di * n) * 4) ? 1 : 0, 0);
  check("graph", gcase, "logits",
        memcmp(out[0][2], out[1][2], (size_t)(B * V) * 4) ? 1 : 0, 0);
  check("graph", gcase, "ids+ctr",
        (memcmp(out[0][3], out[1][3], (size_t)B * 8) ||
         memcmp((char *)out[0][3] + B * 16, (char *)out[1][3] + B * 16, 8))
            ? 1
            : 0,
        0);
  int64_t cend;
  memcpy(&cend, (char *)out[1][3] + B * 16, 8);
  check("graph", gcase, "counter=5", cend == 5 ? 0 : 1, 0);
  for (int m = 0; m < 2; m++)
    for (int i = 0; i < 4; i++) free(out[m][i]);
  void *all[] = {x, res, nw, win, cw, cs, xp, A, ss, head, hn, xz, xc, dbc, y, lg, ids, ctr, dtw};
  for (size_t i = 0; i < sizeof all / sizeof all[0]; i++) MBX(mb_free(GPU, all[i]));
  free(hx), free(hres), free(hnw), free(hwin), free(hcw), free(hcs), free(hxp), free(hA);
  free(hss), free(hhead), free(wbf), free(hdtw);
}

/* A captured product that uses the scratch buffer (bf16 rows widened into it for the GEMV of
 * mb_linear_bf16) replays with the bits of a direct run after a larger product made the scratch
 * grow: the graph's buffer is kept while the graph lives. (No cuBLAS here: its split-K kernels
 * report races of their own under racecheck.) */
static pair prand_bf16(int64_t count) {
  float *h = hrand(count, -1, 1);
  uint16_t *b = (uint16_t *)malloc((size_t)count * 2);
  for (int64_t i = 0; i < count; i++) b[i] = f2bf(h[i]);
  pair p = pnew(b, (size_t)count * 2);
  free(h), free(b);
  return p;
}

static void t_graph_scratch(void) {
  /* big: 8 rows of 600,000 widened to 19.2 MB, past the initial 16 MiB of scratch */
  const int64_t n = 4, in_f = 1024, out_f = 40, big = 600000, bout = 8;
  pair W = weights(out_f, in_f, 1, -0.1f, 0.1f), X = prand_bf16(n * in_f);
  pair Y0 = pf(NULL, n * out_f), Y1 = pf(NULL, n * out_f);
  pair WB = weights(bout, big, 1, -0.1f, 0.1f), XB = prand_bf16(8 * big), YB = pf(NULL, 8 * bout);
  mb_ctx *ctx = NULL;
  MBX(mb_ctx_synchronize(GPU)); /* the buffers were filled on the usual context's stream */
  MBX(mb_ctx_create(MB_BACKEND_CUDA, 0, 0, &ctx)); /* a fresh context: the smallest scratch */
  const uint16_t *x = (const uint16_t *)X.g, *xb = (const uint16_t *)XB.g;
  MBX(mb_linear_bf16(ctx, x, in_f, W.g, MB_DTYPE_BF16, NULL, n, in_f, out_f, G(Y0), out_f));
  int graph = 0;
  MBX(mb_graph_begin(ctx));
  MBX(mb_linear_bf16(ctx, x, in_f, W.g, MB_DTYPE_BF16, NULL, n, in_f, out_f, G(Y1), out_f));
  MBX(mb_graph_end(ctx, &graph));
  MBX(mb_linear_bf16(ctx, xb, big, WB.g, MB_DTYPE_BF16, NULL, 8, big, bout, G(YB), bout));
  MBX(mb_memset(ctx, G(Y1), 0, Y1.bytes));
  MBX(mb_graph_launch(ctx, graph));
  MBX(mb_ctx_synchronize(ctx));
  check("graph", "replay after the scratch grew", "y bits", diff_bits(G(Y0), G(Y1), Y0.bytes), 0);
  MBX(mb_graph_destroy(ctx, graph));
  MBX(mb_ctx_destroy(ctx));
  pfree(&W), pfree(&X), pfree(&Y0), pfree(&Y1), pfree(&WB), pfree(&XB), pfree(&YB);
}

static void t_misc(void) {
  /* read_probe runs and writes a finite value */
  void *p, *s;
  size_t bytes = 1 << 20;
  MBX(mb_alloc(GPU, bytes, &p));
  MBX(mb_alloc(GPU, 4, &s));
  MBX(mb_memset(GPU, p, 0x3c, bytes));
  MBX(mb_read_probe(GPU, p, bytes, (float *)s));
  float v = NAN;
  MBX(mb_memcpy_d2h(GPU, &v, s, 4));
  check("read_probe", "1 MiB", "finite", isfinite(v) ? 0 : 1, 0);
  /* the memset reached every byte */
  float *h = (float *)malloc(bytes);
  MBX(mb_memcpy_d2h(GPU, h, p, bytes));
  uint32_t w;
  memcpy(&w, (char *)h + 4096, 4);
  check("memcpy", "d2h 1 MiB", "value", w == 0x3c3c3c3cu ? 0 : 1, 0);
  free(h);
  MBX(mb_free(GPU, p));
  MBX(mb_free(GPU, s));
}

/* mb_download_async / mb_download_wait: each download gets src as the ops queued before it left
 * it, although src is overwritten right after the call; more downloads than staging slots, growing
 * sizes, zero bytes, pageable memory, waits out of order; the CPU twin gives the same bytes. Every
 * third download is mb_download_async_direct's (src written only after its wait, but for a part
 * it does not read), its tickets in the same count. */
static void t_download(void) {
  enum { ND = 21 };
  const size_t maxb = g_small ? (size_t)256 << 10 : (size_t)24 << 20;
  size_t sizes[ND];
  for (int i = 0; i < ND; i++) {
    size_t b = (size_t)(i * 37 + 1) * 4099; /* odd sizes, growing, some past maxb get clamped */
    if (i % 7 == 3) b = 0;
    if (i % 5 == 4) b = maxb;
    sizes[i] = b > maxb ? maxb - (size_t)i : b;
  }
  mb_ctx *ctxs[2] = {CPU, GPU};
  unsigned char *host[2][ND];
  uint64_t tickets[2][ND];
  for (int k = 0; k < 2; k++) {
    mb_ctx *c = ctxs[k];
    void *src;
    MBX(mb_alloc(c, maxb, &src));
    for (int i = 0; i < ND; i++) {
      const int pageable = i == 6, registered = i == 9 || i == 15; /* the caller's memory */
      if (pageable) host[k][i] = (unsigned char *)malloc(sizes[i] ? sizes[i] : 1);
      else if (registered) {
        void *p = aligned_alloc(4096, ((sizes[i] + 4095) & ~(size_t)4095) + 4096);
        host[k][i] = (unsigned char *)p;
        MBX(mb_host_register(c, p, sizes[i]));
      } else MBX(mb_host_alloc(c, sizes[i], (void **)&host[k][i]));
      if (sizes[i]) memset(host[k][i], 0x5a, sizes[i]);
      MBX(mb_memset(c, src, (i * 29 + 1) & 0xff, maxb)); /* the value this download must see */
      if (sizes[i] > 64) MBX(mb_memset(c, (char *)src + 64, (i * 31 + 7) & 0xff, sizes[i] / 2));
      if (i % 3 == 1) { /* the direct form: src left as it is until the ticket is waited for */
        MBX(mb_download_async_direct(c, host[k][i], src, sizes[i], &tickets[k][i]));
        if (i % 2 && sizes[i] <= maxb / 2) /* a part it does not read, written under the copy */
          MBX(mb_memset(c, (char *)src + maxb / 2, 0xee, maxb / 2));
        MBX(mb_download_wait(c, tickets[k][i]));
      } else
        MBX(mb_download_async(c, host[k][i], src, sizes[i], &tickets[k][i]));
      MBX(mb_memset(c, src, 0xee, maxb)); /* overwritten at once */
      if (i % 4 == 2) MBX(mb_download_wait(c, tickets[k][i - 1]));
    }
    for (int i = ND - 1; i >= ND / 2; i--) MBX(mb_download_wait(c, tickets[k][i]));
    MBX(mb_free(c, src));
  }
  for (int i = 0; i < ND; i++) {
    char cfg[64];
    snprintf(cfg, sizeof cfg, "#%d %zu bytes%s", i, sizes[i],
             i == 6 ? " pageable" : (i == 9 || i == 15) ? " registered" : "");
    size_t bad = 0;
    for (size_t j = 0; j < sizes[i]; j++) bad += host[0][i][j] != host[1][i][j];
    /* the CPU copy itself holds the expected pattern */
    unsigned char want = (unsigned char)((i * 29 + 1) & 0xff);
    if (sizes[i] && host[0][i][0] != want) bad++;
    check("download_async", cfg, "bytes", (double)bad, 0);
    check("download_async", cfg, "ticket", tickets[1][i] == tickets[0][i] - tickets[0][0] + tickets[1][0] ? 0 : 1, 0);
    for (int k = 0; k < 2; k++) {
      if (i == 9 || i == 15) {
        MBX(mb_host_unregister(ctxs[k], host[k][i]));
        free(host[k][i]);
      } else if (i == 6) free(host[k][i]);
      else MBX(mb_host_free(ctxs[k], host[k][i]));
    }
  }
  /* a ticket that was not issued is an error on both */
  for (int k = 0; k < 2; k++) {
    int st = mb_download_wait(ctxs[k], tickets[k][ND - 1] + 1);
    check("download_wait", k ? "cuda: unissued ticket" : "cpu: unissued ticket", "status",
          st == MB_ERR_INVALID ? 0 : 1, 0);
  }
}

/* Sets name=value in the environment (value NULL: unset) and returns the former value (a copy, or
 * NULL), for env_restore. */
static char *env_swap(const char *name, const char *value) {
  const char *old = getenv(name);
  char *copy = old ? strdup(old) : NULL;
  if (value) setenv(name, value, 1);
  else unsetenv(name);
  return copy;
}
static void env_restore(const char *name, char *old) {
  free(env_swap(name, old));
  free(old);
}

/* Runs `test` again on a GPU context made with name=value in the environment (the variables the
 * CUDA backend reads at context creation; gpu_env answers for it meanwhile), then restores the
 * environment and the usual context. */
static void with_gpu_env(const char *name, const char *value, const char *what,
                         void (*test)(void)) {
  mb_ctx *usual = GPU;
  char *old = env_swap(name, value);
  MBX(mb_ctx_create(MB_BACKEND_CUDA, 0, 0, &GPU));
  env_restore(name, old);
  printf("-- %s (%s=%s):\n", what, name, value);
  g_peer_name = name, g_peer_value = value;
  test();
  g_peer_name = g_peer_value = NULL;
  MBX(mb_ctx_destroy(GPU));
  GPU = usual;
}

/* mb_selective_state_update_dt as the default context runs it, then with the thread-per-(sequence,
 * channel) kernel from batch 2 (by default from 16), then with its dt_proj in the lanes' FMAs there
 * too: each batch's rows against one-sequence calls, which keep the lanes' kernel; then with the
 * tensor cores' dt_proj and the accurate exp2, softplus and SiLU. */
static void t_ssu_dt_all(void) {
  t_ssu_dt();
  with_gpu_env("MAMBABYTE_CUDA_SSU_ROWS", "2", "the state update's rows kernel from batch 2",
               t_ssu_dt);
  char *old = env_swap("MAMBABYTE_CUDA_SSU_ROWS", "2");
  with_gpu_env("MAMBABYTE_CUDA_SSU_ROWS_MMA", "0",
               "the rows kernel from batch 2 (MAMBABYTE_CUDA_SSU_ROWS=2), dt_proj in FMAs",
               t_ssu_dt);
  with_gpu_env("MAMBABYTE_CUDA_SSU_ROWS_FAST", "0",
               "the rows kernel from batch 2 (MAMBABYTE_CUDA_SSU_ROWS=2), the accurate exp2, "
               "softplus and SiLU with the tensor cores' dt_proj",
               t_ssu_dt);
  env_restore("MAMBABYTE_CUDA_SSU_ROWS", old);
}

/* The products where TF32 is allowed, every one of more than 8 rows on fp16 operands (the context
 * made with MAMBABYTE_CUDA_TF32_F16=2): mb_linear's and mb_linear_add_norm's cases, and operands
 * of ranges fp16 holds only scaled. */
static void t_tf32_f16(void) {
  t_linear();
  t_linear_add_norm();
  t_linear_f16_range();
}

/* The run's end: both contexts destroyed, the summary line (`label`: which cases ran), the exit
 * status. */
static int finish_run(const char *label) {
  MBX(mb_ctx_destroy(GPU));
  MBX(mb_ctx_destroy(CPU));
  printf("cuda_vs_cpu%s: %d cases, %d failed\n", label, g_cases, g_fail);
  return g_fail ? 1 : 0;
}

int main(int argc, char **argv) {
  setvbuf(stdout, NULL, _IOLBF, 0); /* a FATAL on stderr lands after the last case that ran */
  for (int i = 1; i < argc; i++) {
    if (!strcmp(argv[i], "--small")) g_small = 1;
    if (!strcmp(argv[i], "--only") && i + 1 < argc && !strcmp(argv[i + 1], "discrete_a"))
      g_only_da = 1;
    if (!strcmp(argv[i], "--only") && i + 1 < argc && !strcmp(argv[i + 1], "draft_greedy"))
      g_only_dg = 1;
    if (!strcmp(argv[i], "--only") && i + 1 < argc && !strcmp(argv[i + 1], "linear"))
      g_only_lin = 1;
    if (!strcmp(argv[i], "--only") && i + 1 < argc && !strcmp(argv[i + 1], "bf16"))
      g_only_bf = 1;
    if (!strcmp(argv[i], "--only") && i + 1 < argc && !strcmp(argv[i + 1], "ssu"))
      g_only_ssu = 1;
    if (!strcmp(argv[i], "--only") && i + 1 < argc && !strcmp(argv[i + 1], "decode"))
      g_only_dec = 1;
    if (!strcmp(argv[i], "--only") && i + 1 < argc && !strcmp(argv[i + 1], "download"))
      g_only_dl = 1;
    if (!strcmp(argv[i], "--only") && i + 1 < argc && !strcmp(argv[i + 1], "sample"))
      g_only_smp = 1;
    if (!strcmp(argv[i], "--only") && i + 1 < argc && !strcmp(argv[i + 1], "scan"))
      g_only_scan = 1;
    if (!strcmp(argv[i], "--draft_cases") && i + 1 < argc) g_dg_cases = atoi(argv[i + 1]);
  }
  int count = 0;
  if (!mb_has_cuda()) {
    printf("SKIP: library built without CUDA\n");
    return 0;
  }
  MBX(mb_cuda_device_count(&count));
  if (count == 0) {
    printf("SKIP: no CUDA device\n");
    return 0;
  }
  MBX(mb_ctx_create(MB_BACKEND_CPU, 0, 0, &CPU));
  MBX(mb_ctx_create(MB_BACKEND_CUDA, 0, 0, &GPU));
  char info[512];
  MBX(mb_ctx_info(GPU, info, sizeof info));
  printf("gpu: %s\n", info);
  printf("%-16s %-44s %-10s %10s %8s\n", "op", "case", "output", "rel.err", "tol");
  if (g_only_da) {
    t_discrete_a();
    return finish_run(" (discrete_a only)");
  }
  if (g_only_dg) { /* three times (--small: once): fresh inputs, more chances for a race */
    for (int r = 0; r < (g_small ? 1 : 3); r++) t_draft_greedy();
    return finish_run(" (draft_greedy only)");
  }
  if (g_only_bf) {
    t_linear_to_bf16();
    t_conv_bf16();
    t_scan_bf16();
    return finish_run(" (bf16 xz and delta only)");
  }
  if (g_only_scan) {
    t_scan(0);
    t_scan(1);
    t_scan_tile();
    t_scan_bf16();
    t_scan_f16u();
    return finish_run(" (selective_scan only)");
  }
  if (g_only_ssu) {
    t_ssu_dt_all();
    return finish_run(" (ssu_dt only)");
  }
  if (g_only_dl) {
    t_download();
    return finish_run(" (downloads only)");
  }
  if (g_only_smp) {
    t_sample();
    t_sample_parallel();
    t_sample_rows();
    return finish_run(" (sample only)");
  }
  if (g_only_dec) {
    t_decode_layers_all();
    t_verify_layers();
    return finish_run(" (decode_layers and verify_layers only)");
  }
  if (g_only_lin) {
    t_linear();
    t_to_f16_scaled();
    t_linear_f16();
    t_add_norm_f16();
    t_conv(); /* its scaled fp16 copy: x_proj's operand on the twins */
    with_gpu_env("MAMBABYTE_CUDA_TF32_F16", "2", "TF32 on fp16 operands from 9 rows", t_tf32_f16);
    t_linear_bf16();
    t_linear_to_bf16();
    t_linear_add_norm();
    t_norm_nt();
    t_conv_linear();
    with_gpu_env("MAMBABYTE_CUDA_CONV_LINEAR_MAX", "64", "the tensor-core form up to 64 rows",
                 t_conv_linear);
    t_in_conv_xproj();
    return finish_run(" (linear only)");
  }
  t_embedding();
  t_add_norm();
  t_norm_nt();
  t_linear();
  t_linear_bf16();
  t_linear_to_bf16();
  t_linear_add_norm();
  t_to_f16_scaled();
  t_linear_f16();
  t_add_norm_f16();
  with_gpu_env("MAMBABYTE_CUDA_TF32_F16", "2", "TF32 on fp16 operands from 9 rows", t_tf32_f16);
  /* its peer: the two calls everywhere */
  with_gpu_env("MAMBABYTE_CUDA_OUT_SPLIT", "0", "out_proj and the norm as two calls",
               t_linear_add_norm);
  t_conv();
  t_conv_bf16();
  t_scan(0);
  t_scan(1);
  t_scan_tile();
  t_scan_bf16();
  t_scan_f16u();
  t_ssu_dt_all();
  t_linear_conv();
  t_conv_linear();
  t_in_conv_xproj();
  /* its peer: the conv then mb_linear (cuBLAS from 9 rows) */
  with_gpu_env("MAMBABYTE_CUDA_CONV_LINEAR", "0", "the conv step and x_proj as two ops",
               t_conv_linear);
  /* and with bf16 weights its partial product in fp32 FMAs (the form before the tensor cores) */
  with_gpu_env("MAMBABYTE_CUDA_CONV_LINEAR_MMA", "0", "the conv step and x_proj in fp32 FMAs",
               t_conv_linear);
  with_gpu_env("MAMBABYTE_CUDA_CONV_LINEAR_MAX", "64", "the tensor-core form up to 64 rows",
               t_conv_linear);
  t_spec();
  /* the n <= 8 GEMV with every input in one thread (4 output rows a thread at every shape), with
   * two (2 rows a thread), and with one output row a thread (the form before rows were shared) */
  with_gpu_env("MAMBABYTE_CUDA_GEMV_ROWS", "8", "the GEMV with 8 inputs a thread", t_linear_conv);
  with_gpu_env("MAMBABYTE_CUDA_GEMV_ROWS", "8", "the GEMV with 8 inputs a thread", t_spec);
  with_gpu_env("MAMBABYTE_CUDA_GEMV_ROWS", "2", "the GEMV with 2 inputs a thread", t_spec);
  with_gpu_env("MAMBABYTE_CUDA_GEMV_OUT", "1", "the GEMV with one output row a thread", t_spec);
  t_decode_layers_all();
  t_verify_layers();
  /* the pass with add + norm as a kernel of its own, as before they moved into in_proj's */
  with_gpu_env("MAMBABYTE_CUDA_VERIFY_NORM", "0", "the pass's add + norm as its own kernel",
               t_verify_layers);
  with_gpu_env("MAMBABYTE_CUDA_VERIFY_CONV", "0", "the pass's conv as its own kernel",
               t_verify_layers);
  t_spec_commit();
  t_softmax_rank();
  t_discrete_a();
  t_sample();
  t_sample_parallel();
  t_sample_rows();
  t_graph(0, 2);
  t_graph(1, 2);
  t_graph(0, 12);
  t_graph(1, 64);
  t_graph_scratch();
  t_misc();
  t_draft_greedy();
  t_download();
  return finish_run("");
}
