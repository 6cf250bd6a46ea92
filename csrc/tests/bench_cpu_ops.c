/*
 * bench_cpu_ops.c — single CPU ops timed call by call, with a hash of what they wrote, for A/B runs
 * of two builds of the library (LD_LIBRARY_PATH=<dir of one build> build/bench_cpu_ops ...): the
 * same hash means the same bits. Build with -DMAMBABYTE_TESTS=ON.
 *   bench_cpu_ops scan LEN D THREADS REPS [N=16] [Z=1]   mb_selective_scan (softplus, a state)
 *   bench_cpu_ops conv LEN D THREADS REPS                mb_causal_conv1d (k = 4, a state)
 *   bench_cpu_ops linear ROWS IN OUT THREADS REPS [COPIES=1] [bf16|f32]
 *                                                        mb_linear; COPIES of W in turn, so that
 *                                                        with enough of them each call reads W
 *                                                        from memory
 * Prints the best call, the median of the second half of the calls (the first ones pay for page
 * faults and, on a new thread pool, for where the scheduler puts its threads) and the hash;
 * BENCH_CPU_OPS_PER_CALL=1 also prints every call's time (ms) to stderr.
 */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bench_util.h"

static uint64_t seed = 1;
static float frand(float lo, float hi) {
  seed = seed * 6364136223846793005ULL + 1442695040888963407ULL;
  return lo + (hi - lo) * (float)((seed >> 40) / 16777216.0);
}
static float *frand_array(size_t n, float lo, float hi) {
  float *p = (float *)malloc(n * sizeof(float));
  if (!p) exit(1);
  for (size_t i = 0; i < n; i++) p[i] = frand(lo, hi);
  return p;
}
static uint64_t hash_bytes(uint64_t h, const void *p, size_t bytes) {
  const unsigned char *b = (const unsigned char *)p;
  for (size_t i = 0; i < bytes; i++) h = (h ^ b[i]) * 1099511628211ULL;
  return h;
}
static int cmp_double(const void *a, const void *b) {
  const double x = *(const double *)a, y = *(const double *)b;
  return (x > y) - (x < y);
}

/* best and second-half median of reps times (sorts their second half) */
static void report(const char *what, double *t, int reps, uint64_t h, double work,
                   const char *unit) {
  double best = t[0];
  for (int i = 1; i < reps; i++)
    if (t[i] < best) best = t[i];
  const int half = reps / 2;
  qsort(t + half, (size_t)(reps - half), sizeof *t, cmp_double);
  const double med = t[half + (reps - half) / 2];
  printf("%s: best %.3f ms, median %.3f ms (%.1f %s), hash %016llx\n", what, best * 1e3,
         med * 1e3, work / med / 1e9, unit, (unsigned long long)h);
}

static double timed(double t0, int per) {
  const double t = now() - t0;
  if (per) fprintf(stderr, "%.3f ", t * 1e3);
  return t;
}

int main(int argc, char **argv) {
  if (argc < 6) {
    fprintf(stderr, "usage: see the comment at the top of csrc/tests/bench_cpu_ops.c\n");
    return 2;
  }
  const char *op = argv[1];
  const int per = getenv("BENCH_CPU_OPS_PER_CALL") != NULL;
  mb_ctx *ctx;
  char what[160];
  if (!strcmp(op, "scan") || !strcmp(op, "conv")) {
    const int64_t len = atoll(argv[2]), d = atoll(argv[3]);
    const int thr = atoi(argv[4]), reps = atoi(argv[5]);
    if (len < 1 || d < 1 || reps < 1) return 2;
    CK(mb_ctx_create(MB_BACKEND_CPU, 0, thr, &ctx));
    double *t = (double *)malloc((size_t)reps * sizeof(double));
    float *y = (float *)calloc((size_t)(len * d), sizeof(float));
    uint64_t h = 1469598103934665603ULL;
    if (!strcmp(op, "scan")) {
      const int64_t n = argc > 6 ? atoll(argv[6]) : 16;
      const int zon = argc > 7 ? atoi(argv[7]) : 1;
      float *u = frand_array((size_t)(len * d), -2, 2), *dl = frand_array((size_t)(len * d), -4, 1);
      float *z = frand_array((size_t)(len * d), -3, 3);
      float *bc = frand_array((size_t)(len * 2 * n), -1, 1);
      float *A = frand_array((size_t)(d * n), 0, 1);
      float *D = frand_array((size_t)d, -1, 1), *db = frand_array((size_t)d, -2, 0.5f);
      float *st = (float *)malloc((size_t)(d * n) * sizeof(float));
      for (int64_t i = 0; i < d * n; i++) A[i] = -expf(logf((float)(i % n + 1)) * A[i]);
      for (int r = 0; r < reps; r++) {
        for (int64_t i = 0; i < d * n; i++) st[i] = 0.1f * (float)(i % 7);
        const double t0 = now();
        CK(mb_selective_scan(ctx, u, NULL, d, dl, NULL, d, db, A, bc, 2 * n, bc + n, 2 * n, D,
                             zon ? z : NULL, NULL, d, st, NULL, 1, len, d, n, 1, y, d, NULL,
                             NULL, NULL, NULL));
        t[r] = timed(t0, per);
      }
      h = hash_bytes(hash_bytes(h, y, (size_t)(len * d) * 4), st, (size_t)(d * n) * 4);
      snprintf(what, sizeof what, "scan %lld x %lld, n %lld, z %d, %d threads", (long long)len,
               (long long)d, (long long)n, zon, thr);
      report(what, t, reps, h, (double)len * d * n, "G updates/s");
    } else {
      const int64_t k = 4;
      float *x = frand_array((size_t)(len * 2 * d), -0.5f, 0.5f);
      float *w = frand_array((size_t)(d * k), -1, 1);
      float *b = frand_array((size_t)d, -1, 1), *st = (float *)malloc((size_t)(d * (k - 1)) * 4);
      for (int r = 0; r < reps; r++) {
        memset(st, 0, (size_t)(d * (k - 1)) * 4);
        const double t0 = now();
        CK(mb_causal_conv1d(ctx, x, NULL, 2 * d, w, b, st, 1, len, d, k, y, d, NULL, NULL, NULL));
        t[r] = timed(t0, per);
      }
      h = hash_bytes(hash_bytes(h, y, (size_t)(len * d) * 4), st, (size_t)(d * (k - 1)) * 4);
      snprintf(what, sizeof what, "conv %lld x %lld, k 4, %d threads", (long long)len,
               (long long)d, thr);
      report(what, t, reps, h, (double)len * d, "G positions x channels/s");
    }
  } else if (!strcmp(op, "linear") && argc >= 7) {
    const int64_t n = atoll(argv[2]), in_f = atoll(argv[3]), out_f = atoll(argv[4]);
    const int thr = atoi(argv[5]), reps = atoi(argv[6]);
    const int copies = argc > 7 ? atoi(argv[7]) : 1;
    const int bf16 = !(argc > 8 && !strcmp(argv[8], "f32"));
    if (n < 1 || in_f < 1 || out_f < 1 || reps < 1 || copies < 1) return 2;
    CK(mb_ctx_create(MB_BACKEND_CPU, 0, thr, &ctx));
    const size_t es = bf16 ? 2 : 4, wn = (size_t)copies * (size_t)(in_f * out_f);
    float *x = frand_array((size_t)(n * in_f), -0.5f, 0.5f);
    float *y = (float *)calloc((size_t)(n * out_f), sizeof(float));
    unsigned char *w = (unsigned char *)malloc(wn * es);
    double *t = (double *)malloc((size_t)reps * sizeof(double));
    for (size_t i = 0; i < wn; i++) {
      if (bf16) {
        const uint16_t v = (uint16_t)(0x3c00 + ((uint32_t)(frand(0, 1) * 255.f) & 0xff));
        memcpy(w + i * 2, &v, 2);
      } else {
        const float v = frand(-0.05f, 0.05f);
        memcpy(w + i * 4, &v, 4);
      }
    }
    for (int r = 0; r < reps; r++) {
      const double t0 = now();
      CK(mb_linear(ctx, x, in_f, w + (size_t)(r % copies) * (size_t)(in_f * out_f) * es,
                   bf16 ? MB_DTYPE_BF16 : MB_DTYPE_F32, NULL, n, in_f, out_f, y, out_f));
      t[r] = timed(t0, per);
    }
    const uint64_t h = hash_bytes(1469598103934665603ULL, y, (size_t)(n * out_f) * 4);
    snprintf(what, sizeof what, "linear %s, %lld rows x %lld x %lld, %d copies, %d threads",
             bf16 ? "bf16" : "f32", (long long)n, (long long)out_f, (long long)in_f, copies, thr);
    report(what, t, reps, h, 2.0 * (double)(n * in_f * out_f), "GFLOP/s");
  } else {
    fprintf(stderr, "usage: see the comment at the top of csrc/tests/bench_cpu_ops.c\n");
    return 2;
  }
  if (per) fputc('\n', stderr);
  CK(mb_ctx_destroy(ctx));
  return 0;
}
