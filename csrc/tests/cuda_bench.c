/*
 * cuda_bench.c — CUDA micro-benchmarks for a 972M-shaped MambaByte, through the public ABI.
 *
 * Measured in the same run:
 *   copy   device-to-device copy of 2 GiB (bytes read + written): the bandwidth roofline
 *   linear mb_linear with n = 1 (the GEMV) on each 972M layer shape, bf16 and fp32 weights,
 *          weights rotated over >= 512 MiB so L2 never holds them, 200 calls captured in a graph:
 *          achieved bandwidth and its ratio to the copy bandwidth (--batch: n = 16, 64, 256)
 *   decode the whole per-byte step (embedding, 48 x [add_norm, in_proj + conv1d step
 *          (mb_linear_conv1d_step), x_proj, dt_proj + state update (mb_selective_state_update_dt),
 *          out_proj], final norm, lm_head (tied), sample) captured in one graph and replayed:
 *          bytes/s and the weight-bandwidth roofline ratio; "unfus": the 7-op layer of v2
 *   forward 8192 positions, batch 1, bf16 weights and fp32 weights with TF32: milliseconds
 *   discrete_a one 2048-position chunk of one layer (d_inner 3584, d_state 16) per reduction:
 *          microseconds per call, and x 48 layers x 4 chunks (a PG19 sample's 7,850 bytes)
 * The table is printed last. Times: wall clock around synchronised batches; median of repeats.
 *
 *   cuda_bench [--quick]
 *   cuda_bench --batch   decoding batches only (1 to 256 bf16, up to 8 through mb_decode_layers as
 *                        the model steps; 64 fp32), the batch-64 layer's
 *                        per-op times and its large products at 16, 64 and 256 rows
 *   cuda_bench --sample       mb_sample alone at batches 1 to 256 (greedy, full sort, the defaults),
 *                             against the peers in CUDA_BENCH_PEERS
 *   cuda_bench --batch-peers  decoding batches 16 to 256 (bf16), the conv step with x_proj and
 *                        the state update with dt_proj alone, against the peers in
 *                        CUDA_BENCH_PEERS, alternated
 *   cuda_bench --ssu64   the batch-64 layer's per-op times only (a short run for ncu)
 *   cuda_bench --fwd     the forward's layer ops, scan and 8192-position pass (bf16), against
 *                        the peers in CUDA_BENCH_PEERS ("NAME=VALUE ..."), alternated
 *                        CUDA_BENCH_ROUNDS times (default 2)
 *   cuda_bench --gemv8   the n <= 8 GEMV's rows and outputs per thread, swept (8-row products,
 *                        decoding at batch 4 and 8)
 *   cuda_bench --ablate  where a decoding step goes (bf16 at batch 1, 8, 64; fp32 at 1): the
 *                        step's graph without one kind of op at a time
 *   cuda_bench --discrete-a  the discrete_a rows alone (mb_discrete_a per reduction, and the
 *                        input similarity)
 *   cuda_bench --host    where module outputs' host copies go: a 29 MiB tap chunk's download and
 *                        copies, and 5.4 GB of fresh result arrays filled with and without
 *                        mb_host_prefault, registered and unregistered
 *   cuda_bench --ncu-step B  one decoding step of B sequences (bf16), run directly between
 *                        cuProfilerStart and cuProfilerStop (after two warm-up steps), for
 *                        `ncu --profile-from-start off` (tools/device/ncu_step.sh)
 *   cuda_bench --timeline [B ...]  the kernels of a replayed decoding step's graph as CUPTI
 *                        records them (kernel_timeline.h): per kernel its time, the part of the
 *                        step that ends with it, and how far it started under its predecessor;
 *                        bf16 at each B (default 1 8 64 256), fp32 at 1
 *   cuda_bench --timeline-fwd [LEN [bf16|tf32|both]]  the same table for a forward over LEN
 *                        positions (9 to 65536, default 8192), bf16 weights, then fp32 weights
 *                        with TF32, and layer 0's scan alone on the forward's rows
 */
#define _DEFAULT_SOURCE /* madvise (with the build's _POSIX_C_SOURCE) */
#include <dlfcn.h>
#include <pthread.h>
#include <sys/mman.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "mambabyte.h"

#define MBX(call)                                                                                 \
  do {                                                                                            \
    int st_ = (call);                                                                             \
    if (st_ != MB_OK) {                                                                           \
      fprintf(stderr, "FATAL %s:%d: %s -> %d: %s\n", __FILE__, __LINE__, #call, st_,             \
              mb_last_error());                                                                   \
      exit(1);                                                                                    \
    }                                                                                             \
  } while (0)

static mb_ctx *G;
static int g_fused = 1; /* decode: mb_selective_state_update_dt instead of dt_proj + update */
static int g_bf16_acts = 1; /* forward with bf16 weights: the products' inputs written as bf16 */
/* ... and xz and delta stored as bf16, as the model's bf16MixerActivations (read at each pass, so
 * that a --fwd peer MAMBABYTE_CUDA_BF16_MIXER=0 runs the fp32 form) */
static int bf16_mixer(void) {
  const char *e = getenv("MAMBABYTE_CUDA_BF16_MIXER");
  return !e || strcmp(e, "0") != 0;
}
static int g_y_bf16 = 1; /* decoding batches (> 8, bf16 weights): the state update writes out_proj's
                          * bf16 input (0: out_proj converts the fp32 y, the former path) */
static int g_layers = 0; /* decoding up to 8 sequences: one mb_decode_layers call, as the model */
/* bf16 weights: decoding batches from this size take the tensor-core steps, as the model
 * (MAMBABYTE_CUDA_TC_MIN_BATCH, read by the model too; default 4) */
static int g_tc_min = 4;
/* decoding steps (the fused path): op kinds left out of every layer, a bit each (--ablate) */
enum { SKIP_NORM = 1, SKIP_IN = 2, SKIP_XPROJ = 4, SKIP_SSU = 8, SKIP_OUT = 16, SKIP_HEAD = 32 };
static int g_skip = 0;
#define RUN(bit, call)                   \
  do {                                   \
    if (!(g_skip & (bit))) MBX(call);    \
  } while (0)
static double now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return ts.tv_sec + ts.tv_nsec * 1e-9;
}
static int dcmp(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return x < y ? -1 : x > y;
}
static double median(double *v, int n) {
  qsort(v, (size_t)n, sizeof *v, dcmp);
  return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

/* Seconds a run of `stmt` (ops on G) takes: the median of 3 rounds of `reps` runs back to back,
 * each round between synchronisations. */
#define TIME_OP(out_s, reps, stmt)                                                                \
  do {                                                                                            \
    double t_[3];                                                                                 \
    for (int r_ = 0; r_ < 3; r_++) {                                                              \
      MBX(mb_ctx_synchronize(G));                                                                 \
      const double t0_ = now();                                                                   \
      for (int i_ = 0; i_ < (reps); i_++) {                                                       \
        stmt;                                                                                     \
      }                                                                                           \
      MBX(mb_ctx_synchronize(G));                                                                 \
      t_[r_] = (now() - t0_) / (reps);                                                            \
    }                                                                                             \
    (out_s) = median(t_, 3);                                                                      \
  } while (0)

/* ---- random fill from host pools ---- */
#define POOL_F (4u << 20) /* floats */
static float *pool_f;
static uint16_t *pool_b;
static uint64_t rng = 88172645463325252ull;
static uint64_t rnd(void) {
  rng ^= rng << 13;
  rng ^= rng >> 7;
  rng ^= rng << 17;
  return rng;
}
static void pools(void) {
  pool_f = (float *)malloc(POOL_F * 4);
  pool_b = (uint16_t *)malloc(POOL_F * 2);
  for (size_t i = 0; i < POOL_F; i++) {
    float f = ((float)(rnd() >> 40) / 16777216.0f * 2.0f - 1.0f) * 0.03f;
    pool_f[i] = f;
    uint32_t u;
    memcpy(&u, &f, 4);
    pool_b[i] = (uint16_t)((u + 0x7fff + ((u >> 16) & 1)) >> 16);
  }
}
static void *wnew(size_t elems, int dtype) {
  size_t es = dtype == MB_DTYPE_BF16 ? 2 : 4, bytes = elems * es, done = 0;
  void *p;
  MBX(mb_alloc(G, bytes, &p));
  const char *src = dtype == MB_DTYPE_BF16 ? (const char *)pool_b : (const char *)pool_f;
  size_t pool_bytes = (size_t)POOL_F * es;
  while (done < bytes) {
    size_t off = (rnd() % (POOL_F / 2)) * es, n = pool_bytes - off;
    if (n > bytes - done) n = bytes - done;
    MBX(mb_memcpy_h2d(G, (char *)p + done, src + off, n));
    done += n;
  }
  return p;
}
static float *fconst(size_t n, float v) {
  float *h = (float *)malloc(n * 4);
  for (size_t i = 0; i < n; i++) h[i] = v;
  void *p;
  MBX(mb_alloc(G, n * 4, &p));
  MBX(mb_memcpy_h2d(G, p, h, n * 4));
  free(h);
  return (float *)p;
}
static float *fbuf(size_t n) {
  void *p;
  MBX(mb_alloc(G, n * 4, &p));
  MBX(mb_memset(G, p, 0, n * 4));
  return (float *)p;
}

/* ---- results table ---- */
#define TABLE_ROWS 160
static char table[TABLE_ROWS][200];
static int nrows = 0;
#define ROW(...)                                                                                  \
  do {                                                                                            \
    if (nrows < TABLE_ROWS) {                                                                     \
      snprintf(table[nrows], sizeof table[0], __VA_ARGS__);                                       \
      fprintf(stderr, "ROW %s\n", table[nrows++]);                                                \
    }                                                                                             \
  } while (0)

/* --timeline reads CUPTI's records: with the toolkit's headers (CMake adds them; a plain compile
 * of this file without them builds every other mode) */
#if defined(__has_include)
#if __has_include(<cupti_activity.h>)
#define MB_HAVE_TIMELINE 1
#include "kernel_timeline.h" /* uses ROW */
#endif
#endif

static double copy_bw(void) {
  size_t bytes = (size_t)2 << 30;
  void *a, *b;
  MBX(mb_alloc(G, bytes, &a));
  MBX(mb_alloc(G, bytes, &b));
  MBX(mb_memset(G, a, 1, bytes));
  MBX(mb_memset(G, b, 2, bytes));
  MBX(mb_memcpy_d2d(G, b, a, bytes));
  MBX(mb_ctx_synchronize(G));
  double t[9];
  for (int r = 0; r < 9; r++) {
    double t0 = now();
    MBX(mb_memcpy_d2d(G, b, a, bytes));
    MBX(mb_ctx_synchronize(G));
    t[r] = now() - t0;
  }
  double bw = 2.0 * bytes / median(t, 9);
  /* read probe: read-only bandwidth */
  float *sink = fbuf(1);
  for (int r = 0; r < 9; r++) {
    double t0 = now();
    MBX(mb_read_probe(G, a, bytes, sink));
    MBX(mb_ctx_synchronize(G));
    t[r] = now() - t0;
  }
  double rbw = bytes / median(t, 9);
  MBX(mb_free(G, a));
  MBX(mb_free(G, b));
  MBX(mb_free(G, sink));
  ROW("%-34s %12.1f GB/s  (read probe %.1f GB/s)", "copy d2d 2 GiB (read+write)", bw / 1e9,
      rbw / 1e9);
  return bw;
}

static void gemv_bench(double bw, const char *name, int64_t out_f, int64_t in_f, int dtype,
                       int64_t n) {
  size_t es = dtype == MB_DTYPE_BF16 ? 2 : 4, wb = (size_t)(out_f * in_f) * es;
  int copies = (int)((512u << 20) / wb) + 1;
  if (copies > 200) copies = 200;
  void **w = (void **)malloc(sizeof(void *) * copies);
  for (int i = 0; i < copies; i++) w[i] = wnew((size_t)(out_f * in_f), dtype);
  float *x = fbuf((size_t)(n * in_f)), *y = fbuf((size_t)(n * out_f));
  MBX(mb_memcpy_d2d(G, x, w[0], (size_t)in_f * 2)); /* some nonzero values */
  const int calls = 200;
  MBX(mb_linear(G, x, in_f, w[0], dtype, NULL, n, in_f, out_f, y, out_f));
  int graph;
  MBX(mb_graph_begin(G));
  for (int c = 0; c < calls; c++)
    MBX(mb_linear(G, x, in_f, w[c % copies], dtype, NULL, n, in_f, out_f, y, out_f));
  MBX(mb_graph_end(G, &graph));
  MBX(mb_graph_launch(G, graph));
  MBX(mb_ctx_synchronize(G));
  double t[7];
  for (int r = 0; r < 7; r++) {
    double t0 = now();
    MBX(mb_graph_launch(G, graph));
    MBX(mb_ctx_synchronize(G));
    t[r] = (now() - t0) / calls;
  }
  double tm = median(t, 7), gbs = (wb + n * (in_f + out_f) * 4) / tm;
  ROW("linear %-10s %-5s %5lldx%-5lld n=%lld %7.2f us %7.1f GB/s %5.1f%% of copy", name,
      dtype ? "bf16" : "f32", (long long)out_f, (long long)in_f, (long long)n, tm * 1e6,
      gbs / 1e9, 100 * gbs / bw);
  MBX(mb_graph_destroy(G, graph));
  for (int i = 0; i < copies; i++) MBX(mb_free(G, w[i]));
  MBX(mb_free(G, x));
  MBX(mb_free(G, y));
  free(w);
}

/* ---- the model ---- */
enum { DM = 1792, DI = 3584, NS = 16, R = 112, KC = 4, V = 256, NL = 48, XP = R + 2 * NS };
typedef struct {
  float *nw, *nb, *cw, *cb, *dtb, *A, *D;
  void *in, *xp, *dt, *out;
  uint16_t *in16, *out16; /* fp32 weights: in_proj's and out_proj's fp16 twins (as the model) */
  uint16_t *xp16, *dt16;  /* ... and x_proj's, dt_proj's */
  int32_t *e16; /* exponents: [0] in, [1] out, [2] x_proj, [3] u, [4] the norm's, [5] dt_proj */
} layer;
/* Whether the context allows TF32 (set with it): the fp32 forward then takes the twins. */
static int g_tf32 = 0;
static void set_tf32(int on) {
  MBX(mb_ctx_set_flags(G, on ? MB_FLAG_ALLOW_TF32 : 0));
  g_tf32 = on;
}
typedef struct {
  int dtype;
  int twins; /* fp32 weights with fp16 twins (MAMBABYTE_CUDA_TF32_F16 not 0, as the model) */
  layer l[NL];
  void *emb;
  float *nfw, *nfb;
  double weight_bytes;
} model;

static void model_init(model *m, int dtype) {
  m->dtype = dtype;
  size_t es = dtype ? 2 : 4;
  m->weight_bytes = 0;
  float *ah = (float *)malloc(DI * NS * 4);
  for (int c = 0; c < DI; c++)
    for (int s = 0; s < NS; s++) ah[c * NS + s] = -(float)(s + 1);
  for (int i = 0; i < NL; i++) {
    layer *L = &m->l[i];
    L->nw = fconst(DM, 1.0f);
    L->nb = fconst(DM, 0.0f);
    L->in = wnew((size_t)2 * DI * DM, dtype);
    L->cw = (float *)wnew((size_t)DI * KC, MB_DTYPE_F32);
    L->cb = fconst(DI, 0.01f);
    L->xp = wnew((size_t)XP * DI, dtype);
    L->dt = wnew((size_t)DI * R, dtype);
    L->dtb = fconst(DI, -4.6f);
    L->A = fbuf(DI * NS);
    MBX(mb_memcpy_h2d(G, L->A, ah, DI * NS * 4));
    L->D = fconst(DI, 1.0f);
    L->out = wnew((size_t)DM * DI, dtype);
    L->in16 = L->out16 = L->xp16 = L->dt16 = NULL, L->e16 = NULL;
    m->weight_bytes += (double)es * (2.0 * DI * DM + XP * DI + DI * R + DM * DI) +
                       4.0 * (2 * DM + DI * KC + DI + DI + DI * NS + DI);
  }
  m->emb = wnew((size_t)V * DM, dtype);
  m->nfw = fconst(DM, 1.0f);
  m->nfb = fconst(DM, 0.0f);
  m->weight_bytes += (double)es * V * DM + 8.0 * DM;
  free(ah);
  const char *tw = getenv("MAMBABYTE_CUDA_TF32_F16");
  m->twins = dtype == MB_DTYPE_F32 && !(tw && tw[0] == '0');
  for (int i = 0; i < NL && m->twins; i++) {
    layer *L = &m->l[i];
    L->in16 = (uint16_t *)fbuf((size_t)DI * DM), L->out16 = (uint16_t *)fbuf((size_t)DM * DI / 2);
    L->xp16 = (uint16_t *)fbuf((size_t)XP * DI / 2);
    L->dt16 = (uint16_t *)fbuf((size_t)DI * R / 2);
    L->e16 = (int32_t *)fbuf(8);
    MBX(mb_to_f16_scaled(G, (const float *)L->in, DM, 2 * DI, DM, L->in16, L->e16));
    MBX(mb_to_f16_scaled(G, (const float *)L->out, DI, DM, DI, L->out16, L->e16 + 1));
    MBX(mb_to_f16_scaled(G, (const float *)L->xp, DI, XP, DI, L->xp16, L->e16 + 2));
    MBX(mb_to_f16_scaled(G, (const float *)L->dt, R, DI, R, L->dt16, L->e16 + 5));
    /* u's exponent: the model's comes from a bound of the layer's weights (f16_twins.ts); the
     * timing does not depend on it, and these weights keep u well inside fp16 unscaled */
    const int32_t eu = 0;
    MBX(mb_memcpy_h2d(G, L->e16 + 3, &eu, 4));
    /* the norm's, found once as the model's twins find it (a one-row call) */
    float *r1 = fbuf(2 * DM);
    MBX(mb_add_norm_f16(G, r1, r1 + DM, 0, L->nw, L->nb, MB_NORM_LAYER, 1e-5f, 1, DM,
                        (uint16_t *)r1, L->e16 + 4, 0));
    MBX(mb_ctx_synchronize(G));
    MBX(mb_free(G, r1));
  }
}
static void model_free(model *m) {
  for (int i = 0; i < NL; i++) {
    layer *L = &m->l[i];
    void *p[] = {L->nw, L->nb, L->in, L->cw, L->cb, L->xp, L->dt, L->dtb, L->A, L->D, L->out};
    for (size_t j = 0; j < sizeof p / sizeof p[0]; j++) MBX(mb_free(G, p[j]));
    void *t[] = {L->in16, L->out16, L->xp16, L->dt16, L->e16};
    for (size_t j = 0; j < 5 && L->in16; j++) MBX(mb_free(G, t[j]));
  }
  MBX(mb_free(G, m->emb));
  MBX(mb_free(G, m->nfw));
  MBX(mb_free(G, m->nfb));
}

typedef struct {
  int64_t B; /* rows (batch, or positions for the forward) */
  float *h, *res, *hn, *xz, *xc, *dbc, *dt, *y, *logits;
  uint16_t *hnb, *xcb, *yb; /* bf16 copies of hn, xc, y (the products' inputs) */
  float *conv_state, *ssm_state; /* NL x batch x ... */
  int32_t *ids;
  int64_t *ctr;
  int32_t *e16; /* exponents: [0] delta's, [1] y's (the norms' are the layers', found once) */
} acts;
static void acts_init(acts *a, int64_t B, int64_t seqs) {
  a->B = B;
  a->h = fbuf(B * DM), a->res = fbuf(B * DM), a->hn = fbuf(B * DM);
  a->xz = fbuf(B * 2 * DI), a->xc = fbuf(B * DI), a->dbc = fbuf(B * XP), a->dt = fbuf(B * DI);
  a->y = fbuf(B * DI), a->logits = fbuf(B * V);
  a->hnb = (uint16_t *)fbuf((B * DM + 1) / 2), a->xcb = (uint16_t *)fbuf((B * DI + 1) / 2);
  a->yb = (uint16_t *)fbuf((B * DI + 1) / 2);
  a->conv_state = fbuf((size_t)NL * seqs * DI * (KC - 1));
  a->ssm_state = fbuf((size_t)NL * seqs * DI * NS);
  void *p;
  MBX(mb_alloc(G, (size_t)B * 4, &p));
  MBX(mb_memset(G, p, 0, (size_t)B * 4));
  a->ids = (int32_t *)p;
  MBX(mb_alloc(G, 8, &p));
  MBX(mb_memset(G, p, 0, 8));
  a->ctr = (int64_t *)p;
  a->e16 = (int32_t *)fbuf(2);
}
static void acts_free(acts *a) {
  void *p[] = {a->h, a->res, a->hn, a->xz, a->xc, a->dbc, a->dt, a->y, a->logits,
               a->conv_state, a->ssm_state, a->ids, a->ctr, a->hnb, a->xcb, a->yb, a->e16};
  for (size_t j = 0; j < sizeof p / sizeof p[0]; j++) MBX(mb_free(G, p[j]));
}

/* A forward's scan of layer L over len positions of each of batch sequences, as the model runs
 * it: with bf16 pairs, u (the conv's bf16 copy), delta and z as bf16 bits (xz's and delta's
 * buffers hold bf16 in their first halves) and y as bf16; else fp32 rows and y. dt_proj's bias is
 * added by the scan. */
/* u_exp (the TF32 forward on the twins): u as the conv's scaled fp16 rows in xc's first half, and
 * delta as dt_proj's in dt's (its exponent in a->e16[0]) */
static void forward_scan(const layer *L, acts *a, int64_t batch, int64_t len, float *ss,
                         int bf16_pairs, int32_t *y_exp, const int32_t *u_exp) {
  if (bf16_pairs)
    MBX(mb_selective_scan(G, NULL, a->xcb, DI, NULL, (uint16_t *)a->dt, DI, L->dtb, L->A,
                          a->dbc + R, XP, a->dbc + R + NS, XP, L->D, NULL, (uint16_t *)a->xz + DI,
                          2 * DI, ss, NULL, batch, len, DI, NS, 1, NULL, DI, a->yb, NULL, NULL, NULL));
  else
    MBX(mb_selective_scan(G, u_exp ? NULL : a->xc, u_exp ? (uint16_t *)a->xc : NULL, DI,
                          u_exp ? NULL : a->dt, u_exp ? (uint16_t *)a->dt : NULL, DI, L->dtb, L->A,
                          a->dbc + R, XP, a->dbc + R + NS, XP, L->D, a->xz + DI, NULL, 2 * DI, ss,
                          NULL, batch, len, DI, NS, 1, a->y, DI, NULL, y_exp, u_exp,
                          u_exp ? a->e16 : NULL));
}

/* One pass over `len` positions of `batch` sequences (rows = batch*len); decode: len = 1. */
static void model_pass(model *m, acts *a, int64_t batch, int64_t len, int sample) {
  int64_t rows = batch * len;
  int dt = m->dtype;
  MBX(mb_embedding(G, a->ids, rows, m->emb, dt, V, DM, a->h));
  /* as the model: with bf16 weights (and activations) decoding batches from g_tc_min sequences
   * take the steps of more than 8 (tensor-core products), not mb_decode_layers */
  const int many = len == 1 && g_fused && (rows > 8 || (dt == MB_DTYPE_BF16 && g_bf16_acts &&
                                                        batch >= g_tc_min));
  const int one_call = len == 1 && batch <= 8 && !many && g_layers && g_fused && !g_skip;
  if (one_call) {
    uint64_t t[NL * MB_DL_PTRS];
    for (int i = 0; i < NL; i++) {
      const layer *L = &m->l[i];
      uint64_t *P = t + i * MB_DL_PTRS;
      memset(P, 0, MB_DL_PTRS * sizeof *P);
      P[MB_DL_NORM_W] = (uintptr_t)L->nw, P[MB_DL_NORM_B] = (uintptr_t)L->nb;
      P[MB_DL_IN_W] = (uintptr_t)L->in, P[MB_DL_CONV_W] = (uintptr_t)L->cw;
      P[MB_DL_CONV_B] = (uintptr_t)L->cb;
      P[MB_DL_CONV_STATE] = (uintptr_t)(a->conv_state + (size_t)i * batch * DI * (KC - 1));
      P[MB_DL_X_W] = (uintptr_t)L->xp, P[MB_DL_DT_W] = (uintptr_t)L->dt;
      P[MB_DL_DT_B] = (uintptr_t)L->dtb, P[MB_DL_A] = (uintptr_t)L->A, P[MB_DL_D] = (uintptr_t)L->D;
      P[MB_DL_SSM_STATE] = (uintptr_t)(a->ssm_state + (size_t)i * batch * DI * NS);
      P[MB_DL_OUT_W] = (uintptr_t)L->out;
    }
    MBX(mb_decode_layers(G, t, NL, batch, DM, DI, NS, R, KC, dt, MB_NORM_LAYER, 1e-5f, a->h,
                         a->res, a->hn, a->xz, a->xc, a->dbc, a->dt, a->y));
  }
  for (int i = 0; i < NL && !one_call; i++) {
    layer *L = &m->l[i];
    float *cs = a->conv_state + (size_t)i * batch * DI * (KC - 1);
    float *ss = a->ssm_state + (size_t)i * batch * DI * NS;
    /* as the model's forward over more than 8 positions: each out_proj but the last with the next
     * layer's add + norm (mb_linear_add_norm), so only layer 0 has a norm call of its own */
    const int fwd_fuse = len > 8 && batch == 1;
    const layer *N = i + 1 < NL ? &m->l[i + 1] : NULL;
    if (len > 1 && rows > 8 && dt == MB_DTYPE_BF16 && g_bf16_acts) { /* as the model's forward */
      if (!fwd_fuse || i == 0)
        MBX(mb_add_norm(G, a->h, a->res, i > 0, L->nw, L->nb, MB_NORM_LAYER, 1e-5f, rows, DM,
                        NULL, a->hnb));
      if (bf16_mixer()) { /* xz and delta as bf16 bits in the first half of their buffers, u as
                           * the conv's bf16 copy alone */
        uint16_t *xzb = (uint16_t *)a->xz, *dtb = (uint16_t *)a->dt;
        MBX(mb_linear_to_bf16(G, NULL, a->hnb, DM, L->in, dt, NULL, rows, DM, 2 * DI, xzb, 2 * DI));
        MBX(mb_causal_conv1d(G, NULL, xzb, 2 * DI, L->cw, L->cb, cs, batch, len, DI, KC, NULL,
                             DI, NULL, a->xcb, NULL));
        MBX(mb_linear_bf16(G, a->xcb, DI, L->xp, dt, NULL, rows, DI, XP, a->dbc, XP));
        MBX(mb_linear_to_bf16(G, a->dbc, NULL, XP, L->dt, dt, NULL, rows, R, DI, dtb, DI));
        forward_scan(L, a, batch, len, ss, 1, NULL, NULL);
      } else {
        MBX(mb_linear_bf16(G, a->hnb, DM, L->in, dt, NULL, rows, DM, 2 * DI, a->xz, 2 * DI));
        MBX(mb_causal_conv1d(G, a->xz, NULL, 2 * DI, L->cw, L->cb, cs, batch, len, DI, KC, a->xc,
                             DI, NULL, a->xcb, NULL));
        MBX(mb_linear_bf16(G, a->xcb, DI, L->xp, dt, NULL, rows, DI, XP, a->dbc, XP));
        MBX(mb_linear(G, a->dbc, XP, L->dt, dt, NULL, rows, R, DI, a->dt, DI));
        MBX(mb_selective_scan(G, a->xc, NULL, DI, a->dt, NULL, DI, L->dtb, L->A, a->dbc + R, XP,
                              a->dbc + R + NS, XP, L->D, a->xz + DI, NULL, 2 * DI, ss, NULL, batch,
                              len, DI, NS, 1, NULL, DI, a->yb, NULL, NULL, NULL));
      }
      if (fwd_fuse && N)
        MBX(mb_linear_add_norm(G, NULL, a->yb, DI, L->out, dt, NULL, rows, DI, DM, a->h, a->res, 1,
                               N->nw, N->nb, MB_NORM_LAYER, 1e-5f, NULL, a->hnb));
      else
        MBX(mb_linear_bf16(G, a->yb, DI, L->out, dt, NULL, rows, DI, DM, a->h, DM));
      continue;
    }
    const int bf_step = many && dt == MB_DTYPE_BF16 && g_bf16_acts;
    /* as the model for more than 8 sequences: each out_proj but the last runs with the next
     * layer's add + norm (mb_linear_add_norm), so only layer 0 has a norm call of its own */
    const int norm_in_out = bf_step || (len > 1 && fwd_fuse);
    if (!norm_in_out || i == 0)
      RUN(SKIP_NORM, mb_add_norm(G, a->h, a->res, i > 0, L->nw, L->nb, MB_NORM_LAYER, 1e-5f,
                                 rows, DM, bf_step ? NULL : a->hn, bf_step ? a->hnb : NULL));
    if (len == 1 && g_fused) { /* 5 kernels: norm, in_proj+conv, x_proj, dt_proj+update, out */
      if (many && bf_step) { /* as the model for more than 8 sequences with bf16 rows: in_proj,
                              * the conv step and x_proj in one call */
        RUN(SKIP_IN, mb_linear_bf16_conv1d_step_linear(G, a->hnb, DM, L->in, dt, rows, DM, 2 * DI,
                                                       a->xz, 2 * DI, L->cw, L->cb, cs, DI, KC,
                                                       a->xc, DI, L->xp, XP, a->dbc, XP));
      } else if (many) { /* in_proj, then the conv step with x_proj in one call */
        RUN(SKIP_IN, mb_linear(G, a->hn, DM, L->in, dt, NULL, rows, DM, 2 * DI, a->xz, 2 * DI));
        RUN(SKIP_XPROJ, mb_conv1d_step_linear(G, a->xz, 2 * DI, L->cw, L->cb, cs, batch, DI, KC,
                                              a->xc, DI, L->xp, dt, NULL, XP, a->dbc, XP));
      } else {
        RUN(SKIP_IN, mb_linear_conv1d_step(G, a->hn, DM, L->in, dt, NULL, rows, DM, 2 * DI, a->xz,
                                           2 * DI, L->cw, L->cb, cs, DI, KC, a->xc, DI));
        RUN(SKIP_XPROJ, mb_linear(G, a->xc, DI, L->xp, dt, NULL, rows, DI, XP, a->dbc, XP));
      }
      /* as the model: more than 8 sequences with bf16 weights take out_proj on the update's bf16 y */
      const int y_bf = bf_step && g_y_bf16;
      RUN(SKIP_SSU, mb_selective_state_update_dt(G, a->xc, DI, a->dbc, XP, L->dt, dt, L->dtb, R,
                                                 L->A, a->dbc + R, XP, a->dbc + R + NS, XP, L->D,
                                                 a->xz + DI, 2 * DI, ss, batch, DI, NS, 1, NULL,
                                                 a->y, DI, y_bf ? a->yb : NULL));
      if (norm_in_out && i + 1 < NL) {
        const layer *N = &m->l[i + 1];
        RUN(SKIP_OUT, mb_linear_add_norm(G, y_bf ? NULL : a->y, y_bf ? a->yb : NULL, DI, L->out,
                                         dt, NULL, rows, DI, DM, a->h, a->res, 1, N->nw, N->nb,
                                         MB_NORM_LAYER, 1e-5f, NULL, a->hnb));
      } else if (y_bf)
        RUN(SKIP_OUT, mb_linear_bf16(G, a->yb, DI, L->out, dt, NULL, rows, DI, DM, a->h, DM));
      else
        RUN(SKIP_OUT, mb_linear(G, a->y, DI, L->out, dt, NULL, rows, DI, DM, a->h, DM));
      continue;
    }
    /* as the model's forward with TF32: in_proj, x_proj and out_proj on the weights' fp16 twins,
     * the norm writing in_proj's input as scaled fp16 in hn's first half (by the exponent found
     * once), the conv u only as scaled fp16 rows in xc's first half (x_proj's and the scan's) */
    const int tw = m->twins && g_tf32 && fwd_fuse;
    uint16_t *hn16 = (uint16_t *)a->hn, *u16 = (uint16_t *)a->xc;
    if (tw && i == 0)
      MBX(mb_add_norm_f16(G, a->h, a->res, 0, L->nw, L->nb, MB_NORM_LAYER, 1e-5f, rows, DM, hn16,
                          L->e16 + 4, 1));
    if (tw)
      MBX(mb_linear_f16(G, NULL, hn16, L->e16 + 4, DM, L->in16, L->e16, NULL, rows, DM, 2 * DI,
                        a->xz, 2 * DI, 0, NULL, NULL));
    else
      MBX(mb_linear(G, a->hn, DM, L->in, dt, NULL, rows, DM, 2 * DI, a->xz, 2 * DI));
    MBX(mb_causal_conv1d(G, a->xz, NULL, 2 * DI, L->cw, L->cb, cs, batch, len, DI, KC,
                         tw ? NULL : a->xc, DI, NULL, tw ? u16 : NULL, tw ? L->e16 + 3 : NULL));
    if (tw)
      MBX(mb_linear_f16(G, NULL, u16, L->e16 + 3, DI, L->xp16, L->e16 + 2, NULL, rows, DI, XP,
                        a->dbc, XP, 0, NULL, NULL));
    else
      MBX(mb_linear(G, a->xc, DI, L->xp, dt, NULL, rows, DI, XP, a->dbc, XP));
    /* as the model's forward: dt_proj's bias added by the scan (delta_bias); on the twins delta as
     * scaled fp16 rows in dt's first half */
    if (tw)
      MBX(mb_linear_f16(G, a->dbc, NULL, NULL, XP, L->dt16, L->e16 + 5, NULL, rows, R, DI, NULL,
                        DI, 0, (uint16_t *)a->dt, a->e16));
    else
      MBX(mb_linear(G, a->dbc, XP, L->dt, dt, NULL, rows, R, DI, a->dt, DI));
    forward_scan(L, a, batch, len, ss, 0, tw ? a->e16 + 1 : NULL, tw ? L->e16 + 3 : NULL);
    if (tw && N) { /* out_proj added into the residual in place, then the next layer's norm */
      MBX(mb_linear_f16(G, a->y, NULL, a->e16 + 1, DI, L->out16, L->e16 + 1, NULL, rows, DI, DM,
                        a->res, DM, 1, NULL, NULL));
      MBX(mb_add_norm_f16(G, a->res, a->res, 0, N->nw, N->nb, MB_NORM_LAYER, 1e-5f, rows, DM, hn16,
                          N->e16 + 4, 1));
    } else if (tw) {
      MBX(mb_linear_f16(G, a->y, NULL, a->e16 + 1, DI, L->out16, L->e16 + 1, NULL, rows, DI, DM, a->h,
                        DM, 0, NULL, NULL));
    } else if (fwd_fuse && N) /* as the model's forward (fp32 activations) */
      MBX(mb_linear_add_norm(G, a->y, NULL, DI, L->out, dt, NULL, rows, DI, DM, a->h, a->res, 1,
                             N->nw, N->nb, MB_NORM_LAYER, 1e-5f, a->hn, NULL));
    else
      MBX(mb_linear(G, a->y, DI, L->out, dt, NULL, rows, DI, DM, a->h, DM));
  }
  RUN(SKIP_HEAD, mb_add_norm(G, a->h, a->res, 1, m->nfw, m->nfb, MB_NORM_LAYER, 1e-5f, rows, DM,
                             a->hn, NULL));
  if (sample) {
    RUN(SKIP_HEAD, mb_linear(G, a->hn, DM, m->emb, dt, NULL, rows, DM, V, a->logits, V));
    RUN(SKIP_HEAD, mb_sample(G, a->logits, batch, V, 1.0f, 0, 1.0f, 42, a->ctr, a->ids));
  }
}

/* Seconds a decoding step of `batch` sequences takes as a replayed graph (median of 5 x 100);
 * ids[0] of the last step into *id0 when id0 is not NULL. */
/* A decoding step of `batch` sequences on *a (made here) captured as a graph, after a warm-up
 * step outside the capture (which grows the scratch if needed); returns the graph. */
static int step_graph(model *m, acts *a, int64_t batch) {
  acts_init(a, batch, batch);
  model_pass(m, a, batch, 1, 1);
  int graph;
  MBX(mb_graph_begin(G));
  model_pass(m, a, batch, 1, 1);
  MBX(mb_graph_end(G, &graph));
  return graph;
}

static double step_seconds(model *m, int64_t batch, int32_t *id0) {
  acts a;
  const int graph = step_graph(m, &a, batch);
  MBX(mb_graph_launch(G, graph));
  MBX(mb_ctx_synchronize(G));
  const int steps = 100;
  double t[5];
  for (int r = 0; r < 5; r++) {
    double t0 = now();
    for (int s = 0; s < steps; s++) MBX(mb_graph_launch(G, graph));
    MBX(mb_ctx_synchronize(G));
    t[r] = (now() - t0) / steps;
  }
  if (id0) MBX(mb_memcpy_d2h(G, id0, a.ids, 4));
  MBX(mb_graph_destroy(G, graph));
  acts_free(&a);
  return median(t, 5);
}

/* Seconds a decoding step of `batch` sequences takes at the copy bandwidth `bw`: the weights once
 * and the recurrent state (conv window and SSM state) read and written. */
static double step_roofline(const model *m, double bw, int64_t batch) {
  const double state = (double)batch * NL * DI * (KC - 1 + NS) * 4 * 2;
  return (m->weight_bytes + state) / bw;
}

/* --split B [K ...]: a decoding step of B sequences as K independent groups of B / K, each a
 * graph of its own on a context (stream) of its own over the same weights, replayed side by side:
 * does running the groups' latency-bound chains concurrently beat one graph of B? (graph replay,
 * median of 5 x 100 steps; the groups' streams are joined only at the end of each round) */
static void split_bench(model *m, double bw, int64_t batch, int k) {
  if (k < 1 || k > 8 || batch % k) return;
  mb_ctx *c[8];
  acts a[8];
  int graph[8];
  mb_ctx *g0 = G;
  for (int i = 0; i < k; i++) {
    c[i] = g0;
    if (i) MBX(mb_ctx_create(MB_BACKEND_CUDA, 0, 0, &c[i]));
    G = c[i];
    graph[i] = step_graph(m, &a[i], batch / k);
  }
  G = g0;
  for (int i = 0; i < k; i++) MBX(mb_graph_launch(c[i], graph[i]));
  for (int i = 0; i < k; i++) MBX(mb_ctx_synchronize(c[i]));
  const int steps = 100;
  double t[5];
  for (int r = 0; r < 5; r++) {
    double t0 = now();
    for (int s = 0; s < steps; s++)
      for (int i = 0; i < k; i++) MBX(mb_graph_launch(c[i], graph[i]));
    for (int i = 0; i < k; i++) MBX(mb_ctx_synchronize(c[i]));
    t[r] = (now() - t0) / steps;
  }
  const double ts = median(t, 5);
  const double roof = step_roofline(m, bw, batch);
  ROW("decode split %d x %-4lld b=%-3lld %7.3f ms/step %9.0f bytes/s  roofline %7.0f (%4.1f%%)", k,
      (long long)(batch / k), (long long)batch, ts * 1e3, batch / ts, batch / roof,
      100 * roof / ts);
  for (int i = 0; i < k; i++) {
    G = c[i];
    MBX(mb_graph_destroy(G, graph[i]));
    acts_free(&a[i]);
    if (i) MBX(mb_ctx_destroy(c[i]));
  }
  G = g0;
}

/* --ablate: where a decoding step goes, as a timeline of kernels in the replayed graph would show
 * it: the step captured again with one kind of op left out of every layer (or the head), the
 * difference in replay time being that op's cost in the pipeline (its launch, its latency and
 * what PDL does not overlap); the sum of the costs against the whole step shows the overlap. */
static void ablate_bench(model *m, int64_t batch, const char *label) {
  /* more than 8 sequences: the conv step runs with x_proj (mb_conv1d_step_linear), and with
   * bf16 weights (from g_tc_min sequences) in one call with in_proj
   * (mb_linear_bf16_conv1d_step_linear: "without x_proj" leaves nothing out there) and out_proj
   * with the next layer's norm (only layer 0's norm is a call of its own) */
  const int norm_in_out =
      (batch > 8 || batch >= g_tc_min) && m->dtype == MB_DTYPE_BF16 && g_fused && g_bf16_acts;
  const int many = batch > 8 || norm_in_out;
  const char *names[] = {norm_in_out ? "add_norm(0)" : "add_norm",
                         norm_in_out ? "in+conv+x_proj" : many ? "in_proj" : "in_proj+conv",
                         norm_in_out ? "(nothing)" : many ? "conv+x_proj" : "x_proj",
                         "ssu_dt",
                         norm_in_out ? "out+norm" : "out_proj", "head"};
  const double full = step_seconds(m, batch, NULL);
  ROW("ablate %-5s b=%-3lld step %8.1f us (graph replay; %d layers)", label, (long long)batch,
      full * 1e6, NL);
  double sum = 0;
  for (int k = 0; k < 6; k++) {
    g_skip = 1 << k;
    const double t = step_seconds(m, batch, NULL);
    g_skip = 0;
    sum += full - t;
    ROW("  without %-12s %8.1f us  cost %7.1f us  (%5.2f us a layer, %4.1f%%)", names[k],
        t * 1e6, (full - t) * 1e6, (full - t) * 1e6 / (k == 5 ? 1 : NL),
        100 * (full - t) / full);
  }
  ROW("  sum of the costs %8.1f us (%4.1f%% of the step)", sum * 1e6, 100 * sum / full);
}

static void decode_bench(model *m, double bw, int64_t batch, const char *label) {
  int32_t id0 = 0;
  const double ts = step_seconds(m, batch, &id0);
  const double roof = step_roofline(m, bw, batch);
  ROW("decode %-9s b=%-3lld %7.3f ms/step %9.0f bytes/s  roofline %7.0f (%4.1f%%)", label,
      (long long)batch, ts * 1e3, batch / ts, batch / roof, 100 * roof / ts);
  fprintf(stderr, "decode %s b=%lld: step %.3f ms, %.3f GB moved, id[0]=%d\n", label,
          (long long)batch, ts * 1e3, roof * bw / 1e9, id0);
}

static void forward_bench(model *m, int64_t len, const char *label) {
  acts a;
  acts_init(&a, len, 1);
  {
    int32_t *h = (int32_t *)malloc((size_t)len * 4);
    for (int64_t i = 0; i < len; i++) h[i] = (int32_t)(rnd() % V);
    MBX(mb_memcpy_h2d(G, a.ids, h, (size_t)len * 4));
    free(h);
  }
  model_pass(m, &a, 1, len, 0);
  MBX(mb_ctx_synchronize(G));
  double t[5];
  for (int r = 0; r < 5; r++) {
    double t0 = now();
    model_pass(m, &a, 1, len, 0);
    MBX(mb_ctx_synchronize(G));
    t[r] = now() - t0;
  }
  double ts = median(t, 5);
  double flops = 2.0 * len * NL * (2.0 * DI * DM + XP * DI + DI * R + DM * DI);
  ROW("forward %-8s len=%-5lld %8.2f ms  GEMM %6.1f TFLOP/s effective", label, (long long)len,
      ts * 1e3, flops / ts / 1e12);
  acts_free(&a);
}


/* Per-op times of one layer (layer 0), each op repeated back to back: where the time goes. */
static void breakdown(model *m, int64_t batch, int64_t len, const char *label) {
  acts a;
  int64_t rows = batch * len;
  acts_init(&a, rows, batch);
  MBX(mb_memset(G, a.ids, 0, (size_t)rows * 4));
  model_pass(m, &a, batch, len, 0); /* warm-up, fills activations */
  MBX(mb_ctx_synchronize(G));
  layer *L = &m->l[0];
  int dt = m->dtype, reps = len > 1 ? 5 : 50;
  const char *names[9] = {"add_norm", "in_proj", "conv1d", "x_proj", "dt_proj", "scan", "out_proj", "ssu_dt", "in+conv"};
  int nops = len == 1 ? 9 : 7;
  char line[200];
  int off = snprintf(line, sizeof line, "layer ops %-6s b=%lld len=%lld us:", label,
                     (long long)batch, (long long)len);
  double total = 0;
  for (int op = 0; op < nops; op++) {
    double tm;
    TIME_OP(tm, reps, {
      switch (op) {
        case 0: MBX(mb_add_norm(G, a.h, a.res, 1, L->nw, L->nb, MB_NORM_LAYER, 1e-5f, rows, DM, a.hn, NULL)); break;
        case 1: MBX(mb_linear(G, a.hn, DM, L->in, dt, NULL, rows, DM, 2 * DI, a.xz, 2 * DI)); break;
        case 2: MBX(mb_causal_conv1d(G, a.xz, NULL, 2 * DI, L->cw, L->cb, a.conv_state, batch, len, DI, KC, a.xc, DI, NULL, NULL, NULL)); break;
        case 3: MBX(mb_linear(G, a.xc, DI, L->xp, dt, NULL, rows, DI, XP, a.dbc, XP)); break;
        case 4: MBX(mb_linear(G, a.dbc, XP, L->dt, dt, len > 1 ? NULL : L->dtb, rows, R, DI, a.dt, DI)); break;
        case 5: MBX(mb_selective_scan(G, a.xc, NULL, DI, a.dt, NULL, DI, len > 1 ? L->dtb : NULL, L->A, a.dbc + R, XP, a.dbc + R + NS, XP, L->D, a.xz + DI, NULL, 2 * DI, a.ssm_state, NULL, batch, len, DI, NS, 1, a.y, DI, NULL, NULL, NULL, NULL)); break;
        case 6: MBX(mb_linear(G, a.y, DI, L->out, dt, NULL, rows, DI, DM, a.h, DM)); break;
        case 8: MBX(mb_linear_conv1d_step(G, a.hn, DM, L->in, dt, NULL, rows, DM, 2 * DI, a.xz, 2 * DI, L->cw, L->cb, a.conv_state, DI, KC, a.xc, DI)); break;
        default: MBX(mb_selective_state_update_dt(G, a.xc, DI, a.dbc, XP, L->dt, dt, L->dtb, R, L->A, a.dbc + R, XP, a.dbc + R + NS, XP, L->D, a.xz + DI, 2 * DI, a.ssm_state, batch, DI, NS, 1, NULL, a.y, DI, NULL)); break;
      }
    });
    if (op < 7) total += tm;
    off += snprintf(line + off, sizeof line - (size_t)off, " %s %.1f", names[op], tm * 1e6);
  }
  snprintf(line + off, sizeof line - (size_t)off, " | sum %.1f", total * 1e6);
  ROW("%s", line);
  acts_free(&a);
}

/* The forward's mixer ops with bf16 activations (bf16 weights, len > 8), each with fp32 xz, u and
 * delta and with bf16 ones (bf16MixerActivations): in_proj, the conv, dt_proj and the scan, layer
 * 0, each repeated back to back; the fp32 forms first, on the warm-up's values. Then out_proj
 * writing a fresh output, and as the forward runs it: added into the residual in place, then the
 * next layer's norm (mb_linear_add_norm; the difference is about the norm's cost). */
static void breakdown_mixer(model *m, int64_t len, const char *label) {
  acts a;
  acts_init(&a, len, 1);
  MBX(mb_memset(G, a.ids, 0, (size_t)len * 4));
  model_pass(m, &a, 1, len, 0);
  MBX(mb_ctx_synchronize(G));
  const layer *L = &m->l[0];
  const int dt = m->dtype, reps = 5;
  uint16_t *xzb = (uint16_t *)a.xz, *dtb = (uint16_t *)a.dt;
  const layer *N = &m->l[1];
  const char *names[10] = {"in_proj", "conv1d",    "dt_proj", "scan", "in>bf16",
                           "conv<bf16", "dt>bf16", "scan<bf16", "out", "out+norm"};
  char line[200];
  int off = snprintf(line, sizeof line, "mixer ops %-6s len=%lld us:", label, (long long)len);
  for (int op = 0; op < 10; op++) {
    double tm;
    TIME_OP(tm, reps, {
      switch (op) {
        case 0: MBX(mb_linear_bf16(G, a.hnb, DM, L->in, dt, NULL, len, DM, 2 * DI, a.xz, 2 * DI)); break;
        case 1: MBX(mb_causal_conv1d(G, a.xz, NULL, 2 * DI, L->cw, L->cb, a.conv_state, 1, len, DI, KC, a.xc, DI, NULL, a.xcb, NULL)); break;
        case 2: MBX(mb_linear(G, a.dbc, XP, L->dt, dt, NULL, len, R, DI, a.dt, DI)); break;
        case 3: MBX(mb_selective_scan(G, a.xc, NULL, DI, a.dt, NULL, DI, L->dtb, L->A, a.dbc + R, XP, a.dbc + R + NS, XP, L->D, a.xz + DI, NULL, 2 * DI, a.ssm_state, NULL, 1, len, DI, NS, 1, NULL, DI, a.yb, NULL, NULL, NULL)); break;
        case 4: MBX(mb_linear_to_bf16(G, NULL, a.hnb, DM, L->in, dt, NULL, len, DM, 2 * DI, xzb, 2 * DI)); break;
        case 5: MBX(mb_causal_conv1d(G, NULL, xzb, 2 * DI, L->cw, L->cb, a.conv_state, 1, len, DI, KC, NULL, DI, NULL, a.xcb, NULL)); break;
        case 6: MBX(mb_linear_to_bf16(G, a.dbc, NULL, XP, L->dt, dt, NULL, len, R, DI, dtb, DI)); break;
        case 7: MBX(mb_selective_scan(G, NULL, a.xcb, DI, NULL, dtb, DI, L->dtb, L->A, a.dbc + R, XP, a.dbc + R + NS, XP, L->D, NULL, xzb + DI, 2 * DI, a.ssm_state, NULL, 1, len, DI, NS, 1, NULL, DI, a.yb, NULL, NULL, NULL)); break;
        case 8: MBX(mb_linear_bf16(G, a.yb, DI, L->out, dt, NULL, len, DI, DM, a.h, DM)); break;
        default: MBX(mb_linear_add_norm(G, NULL, a.yb, DI, L->out, dt, NULL, len, DI, DM, a.h, a.res, 1, N->nw, N->nb, MB_NORM_LAYER, 1e-5f, NULL, a.hnb)); break;
      }
    });
    off += snprintf(line + off, sizeof line - (size_t)off, " %s %.1f", names[op], tm * 1e6);
  }
  ROW("%s", line);
  acts_free(&a);
}

/* The forward's selective scan alone (len 8192, batch 1, layer 0's inputs). */
static void scan_alone(model *m, int64_t len, const char *label) {
  acts a;
  acts_init(&a, len, 1);
  MBX(mb_memset(G, a.ids, 0, (size_t)len * 4));
  model_pass(m, &a, 1, len, 0);
  MBX(mb_ctx_synchronize(G));
  layer *L = &m->l[0];
  double t[5];
  for (int r = 0; r < 5; r++) {
    double t0 = now();
    for (int i = 0; i < 3; i++)
      MBX(mb_selective_scan(G, a.xc, NULL, DI, a.dt, NULL, DI, NULL, L->A, a.dbc + R, XP, a.dbc + R + NS, XP, L->D,
                            a.xz + DI, NULL, 2 * DI, a.ssm_state, NULL, 1, len, DI, NS, 1, a.y, DI,
                            NULL, NULL, NULL, NULL));
    MBX(mb_ctx_synchronize(G));
    t[r] = (now() - t0) / 3;
  }
  ROW("scan %s len=%lld: %.0f us", label, (long long)len, median(t, 5) * 1e6);
  acts_free(&a);
}

/* mb_discrete_a on one forward chunk of one 972M layer, per reduction. */
static void discrete_a_bench(void) {
  const int64_t len = 2048, d = DI, n = 16;
  float *delta = fconst((size_t)(len * d), -3.0f), *A = fconst((size_t)(d * n), -4.0f);
  float *x = fconst((size_t)(len * 2 * d), 0.5f), *out = fbuf((size_t)(len * d * n));
  void *acc, *idx;
  MBX(mb_alloc(G, (size_t)(d * n) * 8, &acc));
  MBX(mb_alloc(G, (size_t)(len * d) * 8, &idx));
  struct { const char *name; int red, dim; } cs[] = {
      {"fro", MB_REDUCE_FRO, 0},    {"nuc", MB_REDUCE_NUC, 0},   {"mean/0", MB_REDUCE_MEAN, 0},
      {"max/0", MB_REDUCE_MAX, 0},  {"norm/1", MB_REDUCE_NORM, 1}, {"min/1", MB_REDUCE_MIN, 1},
      {"mean/2", MB_REDUCE_MEAN, 2}, {"max/2", MB_REDUCE_MAX, 2}, {"mean/-1", MB_REDUCE_MEAN, -1},
      {"none", MB_REDUCE_NONE, 0},  {"input_sim", -1, 0}};
  for (size_t i = 0; i < sizeof cs / sizeof cs[0]; i++) {
    double t[5];
    for (int r = -1; r < 5; r++) {
      MBX(mb_ctx_synchronize(G));
      double t0 = now();
      for (int k = 0; k < 10; k++) {
        if (cs[i].red < 0)
          MBX(mb_discrete_a_input_sim(G, delta, d, A, x, 2 * d, len, d, n, 1e-8f, out));
        else
          MBX(mb_discrete_a(G, delta, d, A, len, d, n, cs[i].red, cs[i].dim, 0, (double *)acc,
                            out, (int64_t *)idx));
      }
      MBX(mb_ctx_synchronize(G));
      if (r >= 0) t[r] = (now() - t0) / 10;
    }
    const double us = median(t, 5) * 1e6;
    ROW("discrete_a %-9s 2048x3584x16 %8.1f us/call  x 48 layers x 4 chunks %7.2f ms",
        cs[i].name, us, us * 192 / 1e3);
  }
  void *all[] = {delta, A, x, out, acc, idx};
  for (size_t i = 0; i < sizeof all / sizeof all[0]; i++) MBX(mb_free(G, all[i]));
}

/* Where module outputs' downloads go (5.4 GB for dt_proj over 8192 bytes): per 29 MiB tap chunk
 * (a 2048-position chunk of dt_proj), the device -> pinned download (staging copy included),
 * mb_host_copy from pinned into already-mapped memory (a reused result array) and into fresh
 * memory (a new one), and one memcpy for comparison; GB/s, medians of 5. */
static void host_bench(void) {
  const size_t bytes = (size_t)2048 * 3584 * 4;
  void *dev, *pin;
  MBX(mb_alloc(G, bytes, &dev));
  MBX(mb_memset(G, dev, 1, bytes));
  MBX(mb_host_alloc(G, bytes, &pin));
  char *mapped = (char *)malloc(bytes);
  memset(mapped, 0, bytes);
  double t[4][5];
  for (int r = 0; r < 5; r++) {
    uint64_t ticket;
    double t0 = now();
    MBX(mb_download_async(G, pin, dev, bytes, &ticket));
    MBX(mb_download_wait(G, ticket));
    double t1 = now();
    MBX(mb_host_copy(G, mapped, pin, bytes));
    double t2 = now();
    char *fresh = (char *)malloc(bytes);
    double t3 = now();
    MBX(mb_host_copy(G, fresh, pin, bytes));
    double t4 = now();
    memcpy(mapped, pin, bytes);
    double t5 = now();
    free(fresh);
    t[0][r] = t1 - t0, t[1][r] = t2 - t1, t[2][r] = t4 - t3, t[3][r] = t5 - t4;
  }
  const double gb = bytes / 1e9;
  ROW("host 29 MiB chunk GB/s: d2h pinned %.1f | host_copy mapped %.1f | host_copy fresh %.1f | "
      "memcpy mapped %.1f", gb / median(t[0], 5), gb / median(t[1], 5), gb / median(t[2], 5),
      gb / median(t[3], 5));
  free(mapped);
  MBX(mb_host_free(G, pin));
  MBX(mb_free(G, dev));
}

/* --host: where the first touch of module outputs' fresh result arrays goes (48 arrays of dt_proj
 * over 7,850 bytes, 5.4 GB, filled a 2048-row chunk at a time from one pinned buffer, as the tap
 * pipeline fills them): the fill into fresh arrays alone; for each prefault thread count (the
 * default, 8, 4: MAMBABYTE_HOST_PREFAULT) mb_host_prefault alone and the fill right after
 * mb_host_prefault starts (the two overlapping, as an extraction runs them; the copies wait for
 * their ranges); the fill into mapped arrays, and registering / unregistering mapped arrays
 * (mb_host_register); ms and GB/s of the 5.4 GB, one run each. */
enum { HB_ARRAYS = 48 };
static const size_t HB_ROWS = 7850, HB_COLS = 3584, HB_CHUNK = 2048;

/* the arrays a filled from pin a chunk at a time through c's mb_host_copy */
static void hb_fill(mb_ctx *c, char *const *a, const void *pin) {
  for (int i = 0; i < HB_ARRAYS; i++)
    for (size_t r = 0; r < HB_ROWS; r += HB_CHUNK)
      MBX(mb_host_copy(c, a[i] + r * HB_COLS * 4, pin,
                       (HB_ROWS - r < HB_CHUNK ? HB_ROWS - r : HB_CHUNK) * HB_COLS * 4));
}

static void hb_alloc(char **a, size_t bytes) {
  for (int i = 0; i < HB_ARRAYS; i++) a[i] = (char *)malloc(bytes);
}

static void hb_free(char **a) {
  for (int i = 0; i < HB_ARRAYS; i++) free(a[i]);
}

/* Seconds to fill fresh arrays a (sizes sz) from pin through copy_ctx's mb_host_copy while G's
 * mb_host_prefault maps them. */
static double hb_prefault_fill(char **a, const size_t *sz, const void *pin, mb_ctx *copy_ctx) {
  const double t0 = now();
  MBX(mb_host_prefault(G, (void *const *)a, sz, HB_ARRAYS));
  hb_fill(copy_ctx, a, pin);
  MBX(mb_host_prefault_wait(G));
  return now() - t0;
}

/* MADV_HUGEPAGE on the 2 MiB-aligned part of a range (as mb_host_copy and mb_host_prefault ask) */
static int madvise_huge_for_bench(void *p, size_t bytes) {
  const uintptr_t h = (uintptr_t)2 << 20;
  const uintptr_t lo = ((uintptr_t)p + h - 1) & ~(h - 1), hi = ((uintptr_t)p + bytes) & ~(h - 1);
  return hi > lo ? madvise((void *)lo, hi - lo, 14 /* MADV_HUGEPAGE */) : 0;
}

/* mb_host_register (or unregister) of arrays i = first, first + step, ... from one thread */
struct hb_reg {
  char **a;
  size_t bytes;
  int first, step, unreg;
};
static void *hb_reg_main(void *arg) {
  const struct hb_reg *r = (const struct hb_reg *)arg;
  for (int i = r->first; i < HB_ARRAYS; i += r->step)
    MBX(r->unreg ? mb_host_unregister(G, r->a[i]) : mb_host_register(G, r->a[i], r->bytes));
  return NULL;
}
static double hb_register(char **a, size_t bytes, int threads, int unreg) {
  pthread_t th[16];
  struct hb_reg r[16];
  const double t0 = now();
  for (int t = 0; t < threads; t++) {
    r[t] = (struct hb_reg){a, bytes, t, threads, unreg};
    if (pthread_create(&th[t], NULL, hb_reg_main, &r[t]) != 0) abort();
  }
  for (int t = 0; t < threads; t++) pthread_join(th[t], NULL);
  return now() - t0;
}

static void host_big_bench(void) {
  const size_t bytes = HB_ROWS * HB_COLS * 4, cbytes = HB_CHUNK * HB_COLS * 4;
  void *pin;
  MBX(mb_host_alloc(G, cbytes, &pin));
  memset(pin, 1, cbytes);
  char *a[HB_ARRAYS];
  size_t sz[HB_ARRAYS];
  for (int i = 0; i < HB_ARRAYS; i++) sz[i] = bytes;
  const double gb = (double)HB_ARRAYS * bytes / 1e9;
  const char *threads[] = {"", "8", "4"};
  mb_ctx *cpu_ctx = NULL;
  MBX(mb_ctx_create(MB_BACKEND_CPU, 0, 0, &cpu_ctx));
  for (int round = 0; round < 2; round++) {
    hb_alloc(a, bytes);
    double t0 = now();
    hb_fill(G, a, pin);
    const double fresh = now() - t0;
    hb_free(a);
    ROW("host 5.4 GB into fresh arrays: fill alone %.0f ms (%.1f GB/s)", fresh * 1e3, gb / fresh);
    for (int k = 0; k < 3; k++) {
      if (threads[k][0]) setenv("MAMBABYTE_HOST_PREFAULT", threads[k], 1);
      hb_alloc(a, bytes);
      t0 = now();
      MBX(mb_host_prefault(G, (void *const *)a, sz, HB_ARRAYS));
      MBX(mb_host_prefault_wait(G));
      const double pf = now() - t0;
      hb_free(a);
      hb_alloc(a, bytes);
      const double both = hb_prefault_fill(a, sz, pin, G);
      hb_free(a);
      /* the same with the copies through a context without the job: they do not wait for their
       * ranges, and populate what is not mapped yet themselves */
      hb_alloc(a, bytes);
      const double nowait = hb_prefault_fill(a, sz, pin, cpu_ctx);
      unsetenv("MAMBABYTE_HOST_PREFAULT");
      ROW("  prefault threads %-7s prefault alone %.0f ms (%.1f GB/s) | prefault + fill %.0f ms (%.1f "
          "GB/s) | copies not waiting %.0f ms",
          threads[k][0] ? threads[k] : "default", pf * 1e3, gb / pf, both * 1e3, gb / both,
          nowait * 1e3);
      if (k < 2) {
        hb_free(a);
        continue;
      }
      t0 = now();
      hb_fill(G, a, pin);
      const double mapped = now() - t0;
      const double reg = hb_register(a, bytes, 1, 0), unreg = hb_register(a, bytes, 1, 1);
      const double reg8 = hb_register(a, bytes, 8, 0), unreg8 = hb_register(a, bytes, 8, 1);
      hb_free(a);
      /* registering fresh arrays maps them too (advised onto huge pages first, as prefault does) */
      hb_alloc(a, bytes);
      for (int i = 0; i < HB_ARRAYS; i++) (void)madvise_huge_for_bench(a[i], bytes);
      const double regf8 = hb_register(a, bytes, 8, 0);
      (void)hb_register(a, bytes, 8, 1);
      hb_free(a);
      ROW("  fill mapped %.0f ms (%.1f GB/s) | register mapped %.0f ms, from 8 threads %.0f | "
          "unregister %.0f, from 8 threads %.0f | register fresh from 8 threads %.0f",
          mapped * 1e3, gb / mapped, reg * 1e3, reg8 * 1e3, unreg * 1e3, unreg8 * 1e3,
          regf8 * 1e3);
    }
  }
  MBX(mb_ctx_destroy(cpu_ctx));
  MBX(mb_host_free(G, pin));
}

/* An environment switch set for a while and then put back as it was (a run's base may set the
 * same switch a peer changes): env_set saves the value before into *saved, env_restore puts it
 * back (or unsets the switch if it had none). */
typedef struct {
  int had;
  char value[64];
} env_saved;
static void env_set(const char *name, const char *value, env_saved *saved) {
  const char *e = getenv(name);
  saved->had = e != NULL;
  snprintf(saved->value, sizeof saved->value, "%s", e ? e : "");
  setenv(name, value, 1);
}
static void env_restore(const char *name, const env_saved *saved) {
  if (saved->had)
    setenv(name, saved->value, 1);
  else
    unsetenv(name);
}

/* A second CUDA context made with one environment variable set (the A/B switches are read at
 * context creation); the model's device memory serves both. */
static mb_ctx *ctx_with_env(const char *name, const char *value) {
  mb_ctx *c = NULL;
  env_saved saved;
  env_set(name, value, &saved);
  MBX(mb_ctx_create(MB_BACKEND_CUDA, 0, 0, &c));
  env_restore(name, &saved);
  return c;
}

/* The peers of --fwd and --batch-peers: CUDA_BENCH_PEERS ("NAME=VALUE ...", at most 8) into
 * names and values; returns their count. */
static int parse_peers(char (*names)[64], char (*values)[64]) {
  const char *env = getenv("CUDA_BENCH_PEERS");
  int np = 0;
  if (env) {
    char buf[512];
    snprintf(buf, sizeof buf, "%s", env);
    for (char *tok = strtok(buf, " "); tok && np < 8; tok = strtok(NULL, " ")) {
      char *eq = strchr(tok, '=');
      if (!eq) continue;
      *eq = 0;
      snprintf(names[np], sizeof names[np], "%s", tok);
      snprintf(values[np], sizeof values[np], "%s", eq + 1);
      np++;
    }
  }
  return np;
}

/* body(m, label, round, peer, arg) for the default context (peer -1, labelled `base`) and for each
 * peer in CUDA_BENCH_PEERS (an environment switch each, in a context of its own over the same
 * weights, G while it runs, the switch also set in the environment for what the passes read,
 * bf16_mixer), the whole list alternated CUDA_BENCH_ROUNDS times (default 2), so that drift in the
 * GPU's clocks falls on every form alike. */
typedef void (*peer_body)(model *m, const char *label, int round, int peer, void *arg);
static void run_peers(model *m, const char *base, peer_body body, void *arg) {
  char names[8][64], values[8][64];
  const int np = parse_peers(names, values);
  const char *e_rounds = getenv("CUDA_BENCH_ROUNDS");
  const int rounds = e_rounds && atoi(e_rounds) > 0 ? atoi(e_rounds) : 2;
  for (int r = 0; r < rounds; r++) {
    for (int p = -1; p < np; p++) {
      mb_ctx *g1 = G;
      char label[96];
      env_saved saved;
      snprintf(label, sizeof label, "%s", base);
      if (p >= 0) { /* the switch stays set while the peer runs, for what the passes read */
        env_set(names[p], values[p], &saved);
        MBX(mb_ctx_create(MB_BACKEND_CUDA, 0, 0, &G));
        snprintf(label, sizeof label, "%s=%s", names[p], values[p]);
      }
      body(m, label, r, p, arg);
      if (p >= 0) {
        env_restore(names[p], &saved);
        MBX(mb_ctx_destroy(G));
        G = g1;
      }
    }
  }
}

/* --fwd's list for one context: the layer's ops at 8192 positions (the default's mixer row too),
 * the scan alone and the forward over 8192 positions (bf16). */
static void fwd_forms(model *m, const char *label, int round, int peer, void *arg) {
  (void)round, (void)arg;
  breakdown(m, 1, 8192, label);
  if (peer < 0) breakdown_mixer(m, 8192, label);
  scan_alone(m, 8192, label);
  forward_bench(m, 8192, label);
}

/* --fwd: the forward's kernels against the peers in CUDA_BENCH_PEERS in one process (run_peers). */
static void fwd_peers(void) {
  model m;
  model_init(&m, MB_DTYPE_BF16);
  run_peers(&m, "default", fwd_forms, NULL);
  model_free(&m);
}

/* The conv step with x_proj (mb_conv1d_step_linear) and the state update with dt_proj
 * (mb_selective_state_update_dt) of layer 0 at `batch` rows, each repeated back to back: us a
 * call. */
static void step_ops_alone(model *m, int64_t batch, const char *label) {
  acts a;
  acts_init(&a, batch, batch);
  const layer *L = &m->l[0];
  double ts;
  TIME_OP(ts, 50,
          MBX(mb_conv1d_step_linear(G, a.xz, 2 * DI, L->cw, L->cb, a.conv_state, batch, DI, KC,
                                    a.xc, DI, L->xp, m->dtype, NULL, XP, a.dbc, XP)));
  ROW("conv1d_step_linear %-34s b=%-3lld %7.2f us", label, (long long)batch, ts * 1e6);
  TIME_OP(ts, 50,
          MBX(mb_selective_state_update_dt(G, a.xc, DI, a.dbc, XP, L->dt, m->dtype, L->dtb, R,
                                           L->A, a.dbc + R, XP, a.dbc + R + NS, XP, L->D,
                                           a.xz + DI, 2 * DI, a.ssm_state, batch, DI, NS, 1, NULL,
                                           a.y, DI, NULL)));
  ROW("selective_state_update_dt %-27s b=%-3lld %7.2f us", label, (long long)batch, ts * 1e6);
  acts_free(&a);
}

/* --sample's list for one context: mb_sample alone (back to back, so each launch waits for the
 * last) on random logits of 256 bytes at batches 1 to 256: greedy, the full sort (top-k 0, top-p
 * 1) and the generate script's defaults (top-k 256, top-p 0.98). */
static void sample_forms(model *m, const char *label, int round, int peer, void *arg) {
  (void)m, (void)round, (void)peer, (void)arg;
  const int64_t batches[] = {1, 8, 64, 256};
  const struct { const char *name; int top_k; float top_p; } forms[] = {
      {"greedy", 1, 1.0f}, {"k0 p1", 0, 1.0f}, {"k256 p.98", 256, 0.98f}};
  for (int bi = 0; bi < 4; bi++) {
    const int64_t batch = batches[bi];
    acts a;
    acts_init(&a, batch, 1);
    {
      float *h = (float *)malloc((size_t)batch * V * 4);
      for (int64_t i = 0; i < batch * V; i++) h[i] = (float)(rnd() % 12000) / 1000.f - 6.f;
      MBX(mb_memcpy_h2d(G, a.logits, h, (size_t)batch * V * 4));
      free(h);
    }
    for (int f = 0; f < 3; f++) {
      double ts;
      TIME_OP(ts, 200,
              MBX(mb_sample(G, a.logits, batch, V, 1.0f, forms[f].top_k, forms[f].top_p, 7, a.ctr,
                            a.ids)));
      ROW("sample %-34s b=%-3lld %-10s %7.2f us", label, (long long)batch, forms[f].name, ts * 1e6);
    }
    acts_free(&a);
  }
}

/* --batch-peers' list for one context: decoding batches 16 to 256 (bf16, graph replay) and, in
 * the first round, the two batch ops alone at 64 and 256 rows (arg: the copy bandwidth). */
static void batch_forms(model *m, const char *label, int round, int peer, void *arg) {
  (void)peer;
  const double bw = *(const double *)arg;
  const int64_t batches[] = {16, 32, 64, 128, 256};
  for (int i = 0; i < 5; i++) decode_bench(m, bw, batches[i], label);
  if (round == 0) {
    step_ops_alone(m, 64, label);
    step_ops_alone(m, 256, label);
  }
}

/* --batch-peers: decoding batches against the peers in CUDA_BENCH_PEERS in one process
 * (run_peers). */
static void batch_peers(double bw) {
  model m;
  model_init(&m, MB_DTYPE_BF16);
  run_peers(&m, "bf16", batch_forms, &bw);
  model_free(&m);
}

/* --batch: a layer's large products alone at 16, 64 and 256 rows (bf16 weights, cold), then
 * decoding batches of 1 to 256 (bf16) and 64 (fp32), with the batch-64 layer's per-op times. A
 * peer runs through tools/device/ab_check.sh (AB_VAR: an environment switch, each value in its
 * own process). */
static void batch_benches(double bw) {
  const int64_t batches[] = {1, 2, 4, 8, 16, 32, 64, 128, 256};
  { /* the layer's large products alone at batch rows (fp32 rows, as mb_linear takes them) */
    const int64_t shapes[3][2] = {{2 * DI, DM}, {DM, DI}, {XP, DI}}, rows[3] = {16, 64, 256};
    const char *names[3] = {"in_proj", "out_proj", "x_proj"};
    for (int r = 0; r < 3; r++)
      for (int i = 0; i < 3; i++)
        gemv_bench(bw, names[i], shapes[i][0], shapes[i][1], MB_DTYPE_BF16, rows[r]);
  }
  model m;
  model_init(&m, MB_DTYPE_BF16);
  const int nb = (int)(sizeof batches / sizeof batches[0]), b16 = 4; /* batches[b16] = 16 */
  g_layers = 1; /* up to 8 sequences: mb_decode_layers, as the model steps */
  for (int i = 0; i < nb; i++) decode_bench(&m, bw, batches[i], "bf16");
  g_layers = 0;
  { /* the peer in the same run: the conv step and x_proj as two ops (conv, cuBLAS) */
    mb_ctx *g1 = G;
    G = ctx_with_env("MAMBABYTE_CUDA_CONV_LINEAR", "0");
    for (int i = b16; i < nb; i++) decode_bench(&m, bw, batches[i], "bf16,cl0");
    MBX(mb_ctx_destroy(G));
    G = g1;
    for (int i = b16; i < nb; i++) decode_bench(&m, bw, batches[i], "bf16 #2");
  }
  g_y_bf16 = 0; /* the peer: out_proj converting the update's fp32 y in a kernel of its own */
  for (int i = b16; i < nb; i++) decode_bench(&m, bw, batches[i], "bf16,yf32");
  g_y_bf16 = 1;
  for (int i = b16; i < nb; i++) decode_bench(&m, bw, batches[i], "bf16 #3");
  breakdown(&m, 64, 1, "bf16");
  model_free(&m);
  model_init(&m, MB_DTYPE_F32);
  decode_bench(&m, bw, 64, "f32");
  model_free(&m);
}

/* --gemv8: the n <= 8 GEMV's inputs per thread (MAMBABYTE_CUDA_GEMV_ROWS, 0: by shape) with its
 * output rows per thread by the inputs (MAMBABYTE_CUDA_GEMV_OUT=0) and one (=1), each pair in a
 * context of its own: the four products of a layer at 8 rows (bf16, weights cold), then decoding
 * at batch 4 and 8. */
static void gemv8_sweep(double bw) {
  const char *rows[] = {"0", "2", "4", "8"}, *outs[] = {"0", "1"};
  int64_t shapes[4][2] = {{2 * DI, DM}, {DM, DI}, {XP, DI}, {DI, R}};
  const char *names[4] = {"in_proj", "out_proj", "x_proj", "dt_proj"};
  model m;
  model_init(&m, MB_DTYPE_BF16);
  for (int ri = 0; ri < 4; ri++)
    for (int oi = 0; oi < 2; oi++) {
      mb_ctx *g0 = G;
      env_saved saved;
      env_set("MAMBABYTE_CUDA_GEMV_ROWS", rows[ri], &saved);
      G = ctx_with_env("MAMBABYTE_CUDA_GEMV_OUT", outs[oi]);
      env_restore("MAMBABYTE_CUDA_GEMV_ROWS", &saved);
      ROW("-- GEMV_ROWS=%s GEMV_OUT=%s", rows[ri], outs[oi]);
      for (int i = 0; i < 4; i++)
        gemv_bench(bw, names[i], shapes[i][0], shapes[i][1], MB_DTYPE_BF16, 8);
      char l[32];
      snprintf(l, sizeof l, "r%so%s", rows[ri], outs[oi]);
      decode_bench(&m, bw, 4, l);
      decode_bench(&m, bw, 8, l);
      MBX(mb_ctx_destroy(G));
      G = g0;
    }
  model_free(&m);
}

/* cuProfilerStart / cuProfilerStop of the CUDA driver the library has loaded (looked up, so that
 * this program stays on the public ABI): a profiler started with --profile-from-start off then
 * sees only the kernels in between. No driver loaded: nothing. */
static void profiler(int on) {
  void *drv = dlopen("libcuda.so.1", RTLD_NOW | RTLD_NOLOAD);
  if (!drv) return;
  int (*fn)(void) = (int (*)(void))dlsym(drv, on ? "cuProfilerStart" : "cuProfilerStop");
  if (fn) fn();
  dlclose(drv);
}

/* --ncu-step: one direct decoding step of `batch` sequences (bf16) under the profiler. */
static void ncu_step(int64_t batch) {
  model m;
  model_init(&m, MB_DTYPE_BF16);
  acts a;
  acts_init(&a, batch, batch);
  MBX(mb_memset(G, a.ids, 0, (size_t)batch * 4));
  g_layers = 1; /* up to 8 sequences: mb_decode_layers, as the model steps */
  for (int i = 0; i < 2; i++) model_pass(&m, &a, batch, 1, 1); /* scratch grown, code loaded */
  MBX(mb_ctx_synchronize(G));
  profiler(1);
  model_pass(&m, &a, batch, 1, 1);
  MBX(mb_ctx_synchronize(G));
  profiler(0);
  acts_free(&a);
  model_free(&m);
}

#ifdef MB_HAVE_TIMELINE
/* --timeline: CUPTI's records of 20 replays of the step's graph (kt_open() already called). */
static void timeline_bench(model *m, int64_t batch, double untraced_s, const char *label) {
  acts a;
  const int graph = step_graph(m, &a, batch);
  for (int s = 0; s < 10; s++) MBX(mb_graph_launch(G, graph));
  MBX(mb_ctx_synchronize(G));
  const int steps = 20;
  kt_begin();
  for (int s = 0; s < steps; s++) MBX(mb_graph_launch(G, graph));
  MBX(mb_ctx_synchronize(G));
  kt_end();
  char l[64];
  snprintf(l, sizeof l, "%s b=%lld", label, (long long)batch);
  kt_report(steps, untraced_s, l);
  MBX(mb_graph_destroy(G, graph));
  acts_free(&a);
}

/* --timeline [B ...]: every case's untraced step time first (CUPTI, once enabled, records every
 * kernel after it), then the traced runs. */
static void timelines(int nb, const int64_t *batches) {
  g_layers = 1; /* up to 8 sequences: mb_decode_layers, as the model steps */
  double untraced[17];
  model m;
  for (int dt = 1; dt >= 0; dt--) {
    model_init(&m, dt ? MB_DTYPE_BF16 : MB_DTYPE_F32);
    if (dt)
      for (int i = 0; i < nb; i++) untraced[i] = step_seconds(&m, batches[i], NULL);
    else
      untraced[nb] = step_seconds(&m, 1, NULL);
    model_free(&m);
  }
  if (kt_open() != 0) {
    ROW("timeline: CUPTI not available (see stderr)");
    return;
  }
  for (int dt = 1; dt >= 0; dt--) {
    model_init(&m, dt ? MB_DTYPE_BF16 : MB_DTYPE_F32);
    if (dt)
      for (int i = 0; i < nb; i++) timeline_bench(&m, batches[i], untraced[i], "bf16");
    else
      timeline_bench(&m, 1, untraced[nb], "f32");
    model_free(&m);
  }
}

/* --timeline-fwd LEN: CUPTI's records of 3 forwards over LEN positions with weights of dtype, after
 * two untraced ones and one timed: where a forward's time goes kernel by kernel (the same table as
 * a decoding step's, a forward counted as a step). */
static void fwd_timeline_one(int dtype, int64_t len) {
  model m;
  model_init(&m, dtype);
  if (dtype == MB_DTYPE_F32) set_tf32(1);
  acts a;
  acts_init(&a, len, 1);
  MBX(mb_memset(G, a.ids, 0, (size_t)len * 4));
  for (int r = 0; r < 2; r++) model_pass(&m, &a, 1, len, 0);
  MBX(mb_ctx_synchronize(G));
  const double t0 = now();
  model_pass(&m, &a, 1, len, 0);
  MBX(mb_ctx_synchronize(G));
  const double untraced = now() - t0;
  const int passes = 3;
  kt_begin();
  for (int r = 0; r < passes; r++) model_pass(&m, &a, 1, len, 0);
  MBX(mb_ctx_synchronize(G));
  kt_end();
  char l[64];
  snprintf(l, sizeof l, "forward %s len=%lld", dtype == MB_DTYPE_F32 ? "tf32" : "bf16",
           (long long)len);
  kt_report(passes, untraced, l);
  /* layer 0's scan alone on the forward's own rows, back to back: the scan's time in the forward
   * against its time with nothing around it (fp32 rows; on the twins u as scaled fp16 rows; bf16
   * weights: the bf16 pairs) */
  const layer *L = &m.l[0];
  const int hb = dtype == MB_DTYPE_BF16 && g_bf16_acts && bf16_mixer();
  const int32_t *ue = dtype == MB_DTYPE_F32 && m.twins ? L->e16 + 3 : NULL;
  double ts;
  TIME_OP(ts, 5, forward_scan(L, &a, 1, len, a.ssm_state, hb, NULL, ue));
  ROW("  layer 0's scan alone on the forward's rows (%s): %.1f us",
      hb ? "bf16 pairs" : ue ? "fp32 rows, u fp16" : "fp32 rows", ts * 1e6);
  acts_free(&a);
  set_tf32(0);
  model_free(&m);
}

static void fwd_timelines(int64_t len, const char *which) {
  if (kt_open() != 0) {
    ROW("timeline: CUPTI not available (see stderr)");
    return;
  }
  if (strcmp(which, "tf32")) fwd_timeline_one(MB_DTYPE_BF16, len);
  if (strcmp(which, "bf16")) fwd_timeline_one(MB_DTYPE_F32, len);
}
#else
static void fwd_timelines(int64_t len, const char *which) {
  (void)len, (void)which;
  ROW("timeline: cuda_bench was built without CUPTI's headers (cupti_activity.h)");
}
static void timelines(int nb, const int64_t *batches) {
  (void)nb, (void)batches;
  ROW("timeline: cuda_bench was built without CUPTI's headers (cupti_activity.h)");
}
#endif

/* A mode's end: the context destroyed, then the table of results under its title (none: no
 * title line). Returns main's exit status. */
static int finish(const char *title) {
  MBX(mb_ctx_destroy(G));
  if (title) printf("\n==== %s ====\n", title);
  for (int i = 0; i < nrows; i++) printf("%s\n", table[i]);
  return 0;
}

int main(int argc, char **argv) {
  int quick = argc > 1 && !strcmp(argv[1], "--quick");
  int batch_only = argc > 1 && !strcmp(argv[1], "--batch");
  int ssu_only = argc > 1 && !strcmp(argv[1], "--ssu64"); /* for ncu: the b64 layer's ops only */
  int count = 0;
  const char *e_tc = getenv("MAMBABYTE_CUDA_TC_MIN_BATCH");
  if (e_tc && atoi(e_tc) >= 2) g_tc_min = atoi(e_tc);
  if (!mb_has_cuda()) {
    printf("SKIP: library built without CUDA\n");
    return 0;
  }
  MBX(mb_cuda_device_count(&count));
  if (!count) {
    printf("SKIP: no CUDA device\n");
    return 0;
  }
  MBX(mb_ctx_create(MB_BACKEND_CUDA, 0, 0, &G));
  char info[512];
  MBX(mb_ctx_info(G, info, sizeof info));
  fprintf(stderr, "%s\n", info);
  pools();
  if (argc > 2 && !strcmp(argv[1], "--ncu-step")) {
    ncu_step(atoll(argv[2]));
    MBX(mb_ctx_destroy(G));
    return 0;
  }
  if (argc > 1 && !strcmp(argv[1], "--timeline")) {
    int64_t batches[16] = {1, 8, 64, 256};
    int nb = 4;
    if (argc > 2) {
      nb = 0;
      for (int i = 2; i < argc && nb < 16; i++) {
        batches[nb] = atoll(argv[i]);
        if (batches[nb] < 1 || batches[nb] > 256) {
          fprintf(stderr, "cuda_bench --timeline: batch %s is not in 1..256\n", argv[i]);
          return 2;
        }
        nb++;
      }
    }
    timelines(nb, batches);
    return finish("cuda_bench --timeline (graph replay, CUPTI kernel records)");
  }
  if (argc > 1 && !strcmp(argv[1], "--timeline-fwd")) {
    const int64_t len = argc > 2 ? atoll(argv[2]) : 8192;
    if (len < 9 || len > 65536) { /* from 9 positions, a forward chunk (not 8-row products) */
      fprintf(stderr, "cuda_bench --timeline-fwd: length %s is not in 9..65536\n", argv[2]);
      return 2;
    }
    const char *which = argc > 3 ? argv[3] : "both";
    if (strcmp(which, "bf16") && strcmp(which, "tf32") && strcmp(which, "both")) {
      fprintf(stderr, "cuda_bench --timeline-fwd: weights %s are not bf16, tf32 or both\n", which);
      return 2;
    }
    fwd_timelines(len, which);
    return finish("cuda_bench --timeline-fwd (CUPTI kernel records of a forward)");
  }
  if (argc > 1 && !strcmp(argv[1], "--discrete-a")) {
    discrete_a_bench();
    return finish("cuda_bench --discrete-a (mb_discrete_a alone, us a call)");
  }
  if (argc > 1 && !strcmp(argv[1], "--host")) {
    host_bench();
    host_big_bench();
    return finish("cuda_bench --host");
  }
  double bw = copy_bw();
  if (ssu_only) {
    model m;
    model_init(&m, MB_DTYPE_BF16);
    breakdown(&m, 64, 1, "bf16");
    model_free(&m);
    return finish(NULL);
  }
  if (argc > 1 && !strcmp(argv[1], "--ablate")) {
    model m;
    const int64_t batches[] = {1, 8, 64};
    for (int dt = 1; dt >= 0; dt--) {
      model_init(&m, dt ? MB_DTYPE_BF16 : MB_DTYPE_F32);
      for (int i = 0; i < 3; i++)
        if (dt || batches[i] == 1) ablate_bench(&m, batches[i], dt ? "bf16" : "f32");
      model_free(&m);
    }
    return finish("cuda_bench --ablate");
  }
  if (argc > 1 && !strcmp(argv[1], "--gemv8")) {
    gemv8_sweep(bw);
    return finish("cuda_bench --gemv8");
  }
  if (argc > 1 && !strcmp(argv[1], "--fwd")) {
    fwd_peers();
    return finish("cuda_bench --fwd (target: forward 8192 bf16 <= 30 ms)");
  }
  if (argc > 2 && !strcmp(argv[1], "--split")) {
    /* --split B [B ...]: each batch as one graph, then as 2 and 4 groups side by side */
    model m;
    model_init(&m, MB_DTYPE_BF16);
    g_layers = 1; /* up to 8 sequences: mb_decode_layers, as the model steps */
    for (int r = 0; r < 2; r++)
      for (int i = 2; i < argc; i++) {
        const int64_t b = atoll(argv[i]);
        if (b < 2 || b > 256) continue;
        decode_bench(&m, bw, b, "bf16");
        split_bench(&m, bw, b, 2);
        if (b >= 32) split_bench(&m, bw, b, 4);
      }
    model_free(&m);
    return finish("cuda_bench --split (decoding groups side by side)");
  }
  if (argc > 1 && !strcmp(argv[1], "--sample")) {
    run_peers(NULL, "default", sample_forms, NULL);
    return finish("cuda_bench --sample (mb_sample alone, us a call)");
  }
  if (argc > 1 && !strcmp(argv[1], "--batch-peers")) {
    batch_peers(bw);
    return finish("cuda_bench --batch-peers (target: decode b64 bf16 >= 50000 bytes/s)");
  }
  if (batch_only) {
    batch_benches(bw);
    return finish("cuda_bench --batch (target: decode b64 bf16 >= 50000 bytes/s)");
  }
  host_bench();
  int64_t shapes[4][2] = {{2 * DI, DM}, {DM, DI}, {XP, DI}, {DI, R}};
  const char *names[4] = {"in_proj", "out_proj", "x_proj", "dt_proj"};
  for (int dt = 1; dt >= 0; dt--)
    for (int i = 0; i < 4; i++) gemv_bench(bw, names[i], shapes[i][0], shapes[i][1], dt, 1);
  {
    model m;
    model_init(&m, MB_DTYPE_BF16);
    fprintf(stderr, "bf16 model: %.3f GB of weights\n", m.weight_bytes / 1e9);
    decode_bench(&m, bw, 1, "bf16");
    g_fused = 0;
    decode_bench(&m, bw, 1, "bf16,unfus");
    g_fused = 1;
    if (!quick) {
      g_fused = 0;
      decode_bench(&m, bw, 64, "bf16,unfus");
      g_fused = 1;
    }
    {
      mb_ctx *g1 = G;
      G = ctx_with_env("MAMBABYTE_CUDA_PDL", "0");
      decode_bench(&m, bw, 1, "bf16,noPDL");
      MBX(mb_ctx_destroy(G));
      G = g1;
    }
    if (!quick) decode_bench(&m, bw, 64, "bf16");
    forward_bench(&m, 8192, "bf16");
    breakdown(&m, 1, 1, "bf16");
    if (!quick) breakdown(&m, 64, 1, "bf16");
    breakdown(&m, 1, 8192, "bf16");
    forward_bench(&m, 8192, "bf16 #2");
    g_bf16_acts = 0; /* the peer: fp32 activations, each product converting its input */
    forward_bench(&m, 8192, "bf16,f32acts");
    g_bf16_acts = 1;
    scan_alone(&m, 8192, "tile");
    { /* the peer in the same run: the sequential scan */
      mb_ctx *g1 = G;
      G = ctx_with_env("MAMBABYTE_CUDA_SCAN_TILE", "0");
      scan_alone(&m, 8192, "seq");
      forward_bench(&m, 8192, "bf16,seqscan");
      MBX(mb_ctx_destroy(G));
      G = g1;
    }
    model_free(&m);
  }
  {
    model m;
    model_init(&m, MB_DTYPE_F32);
    decode_bench(&m, bw, 1, "f32");
    g_fused = 0;
    decode_bench(&m, bw, 1, "f32,unfus");
    g_fused = 1;
    set_tf32(1);
    forward_bench(&m, 8192, "tf32");
    breakdown(&m, 1, 8192, "tf32");
    set_tf32(0);
    if (!quick) forward_bench(&m, 8192, "f32");
    model_free(&m);
  }
  discrete_a_bench();
  return finish("cuda_bench (targets: decode b1 bf16 >= 1700 B/s, b1 f32 >= 900, b64 bf16 >= "
                "50000; forward 8192 bf16 <= 30 ms, tf32 <= 60 ms)");
}
