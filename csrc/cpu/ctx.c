/*
 * ctx.c — CPU contexts, memory and the read-bandwidth probe.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cpu_backend.h"
#include "vmath.h"
#ifdef MB_WITH_OPENBLAS
#include <cblas.h> /* openblas_get_corename */
#endif

static int env_flag(const char *name) {
  const char *v = getenv(name);
  return v && v[0] && strcmp(v, "0") != 0;
}

/* OMP_NUM_THREADS when set (the usual knob, honoured as before the pool replaced OpenMP), else
 * the CPUs this process may run on (its affinity mask: taskset and cgroup cpusets shrink it). */
static int default_threads(void) {
  const char *env = getenv("OMP_NUM_THREADS");
  if (env && env[0]) {
    const long v = strtol(env, NULL, 10);
    if (v >= 1 && v <= 4096) return (int)v;
  }
  return mbc_allowed_cpus();
}

int mbcpu_ctx_create(int num_threads, mb_ctx **out_ctx) {
  mbcpu_ctx *c = (mbcpu_ctx *)calloc(1, sizeof *c);
  if (!c) return mb_fail(MB_ERR_OOM, "mb_ctx_create: out of memory");
  c->base.backend = MB_BACKEND_CPU;
  c->base.device = 0;
  c->base.num_threads = num_threads > 0 ? num_threads : default_threads();
  c->scalar = env_flag("MAMBABYTE_CPU_SCALAR");
#ifdef MB_WITH_BLAS
  c->use_blas = !env_flag("MAMBABYTE_CPU_NOBLAS");
#else
  c->use_blas = 0;
#endif
  *out_ctx = &c->base;
  return MB_OK;
}

int mbcpu_ctx_destroy(mb_ctx *ctx) {
  mbcpu_ctx *c = mbcpu(ctx);
  mbcpu_pool_release(ctx);
  free(c->scratch);
  free(c);
  return MB_OK;
}

/* OpenBLAS's kernel set ("Haswell", "Cooperlake", ...): chosen when it loads, from the CPU or from
 * OPENBLAS_CORETYPE, and what the products' rate depends on (on a 2-vCPU AVX-512 EPYC the Haswell
 * set that an environment forced ran sgemm at 126 GFLOP/s a core, the detected Cooperlake at 240),
 * so benchmarks print it beside their sgemm rate. */
static const char *blas_core(const mbcpu_ctx *c) {
#ifdef MB_WITH_OPENBLAS
  if (c->use_blas) {
    const char *name = openblas_get_corename();
    if (name && strlen(name) < 32 && !strpbrk(name, "\"\\")) return name;
  }
#else
  (void)c;
#endif
  return "";
}

int mbcpu_ctx_info(mb_ctx *ctx, char *buf, size_t cap) {
  mbcpu_ctx *c = mbcpu(ctx);
  snprintf(buf, cap,
           "{\"backend\":\"cpu\",\"threads\":%d,\"blas\":\"%s\",\"blas_core\":\"%s\","
           "\"simd\":\"%s\"}",
           ctx->num_threads, c->use_blas ? "openblas" : "none", blas_core(c),
           mbcpu_vec(ctx) ? "avx512" : mbcpu_vec8(ctx) ? "avx2" : "scalar");
  return MB_OK;
}

void *mbcpu_scratch(mb_ctx *ctx, size_t bytes) {
  mbcpu_ctx *c = mbcpu(ctx);
  if (c->scratch_bytes >= bytes) return c->scratch;
  size_t cap = (bytes + 4095) & ~(size_t)4095;
  void *p = aligned_alloc(64, cap);
  if (!p) return NULL;
  free(c->scratch);
  c->scratch = p;
  c->scratch_bytes = cap;
  return p;
}

int mbcpu_alloc(mb_ctx *ctx, size_t bytes, void **out) {
  (void)ctx;
  if (bytes > SIZE_MAX - 64) return mb_fail(MB_ERR_OOM, "mb_alloc: %zu bytes is too large", bytes);
  void *p = aligned_alloc(64, (bytes + 63) & ~(size_t)63);
  if (!p) return mb_fail(MB_ERR_OOM, "mb_alloc: out of memory allocating %zu bytes", bytes);
  *out = p;
  return MB_OK;
}

int mbcpu_free(mb_ctx *ctx, void *ptr) {
  (void)ctx;
  free(ptr);
  return MB_OK;
}

/* ---- read probe --------------------------------------------------------------------------- */

typedef struct {
  const float *f;
  int64_t nf;
  int vec;
  double *partial; /* one sum per thread */
} probe_job;

static void probe_slice(void *raw, int tid, int nt) {
  const probe_job *j = (const probe_job *)raw;
  const float *f = j->f;
  /* contiguous slices of whole 64-byte lines */
  int64_t b, e;
  mbcpu_range(j->nf / 16, tid, nt, &b, &e);
  b *= 16;
  e *= 16;
  float s = 0.0f;
#ifdef __AVX512F__
  if (j->vec) {
    /* Four streams per thread, two lines from each per visit, each stream prefetched 1 KiB
     * ahead: the fastest read pattern found here (a harness over 1 GiB, 2 threads: 8 streams
     * without prefetch ~48 GB/s, 8 with ~50, 4 without ~56, 4 with 1-2 KiB ~66, 2 or 6 with
     * ~52-60). It is the decoding GEMV's pattern; a slower probe would flatter every ratio. */
    enum { S = 4, PF = 1024 };
    const int64_t per = (e - b) / (S * 32) * 32; /* floats per stream, whole 128-byte runs */
    __m512 acc[S];
    for (int q = 0; q < S; q++) acc[q] = _mm512_setzero_ps();
    for (int64_t i = 0; i < per; i += 32)
      for (int q = 0; q < S; q++) {
        const float *p = f + b + q * per + i;
        _mm_prefetch((const char *)p + PF, _MM_HINT_T0);
        _mm_prefetch((const char *)p + PF + 64, _MM_HINT_T0);
        const __m512 two = _mm512_add_ps(_mm512_loadu_ps(p), _mm512_loadu_ps(p + 16));
        acc[q] = _mm512_add_ps(acc[q], two);
      }
    for (int64_t i = b + S * per; i < e; i += 16)
      acc[0] = _mm512_add_ps(acc[0], _mm512_loadu_ps(f + i));
    __m512 t = acc[0];
    for (int q = 1; q < S; q++) t = _mm512_add_ps(t, acc[q]);
    s = _mm512_reduce_add_ps(t);
  } else
#elif MB_AVX2
  if (j->vec) { /* the same pattern in 8-lane loads, four a 128-byte run */
    enum { S = 4, PF = 1024 };
    const int64_t per = (e - b) / (S * 32) * 32;
    __m256 acc[S];
    for (int q = 0; q < S; q++) acc[q] = _mm256_setzero_ps();
    for (int64_t i = 0; i < per; i += 32)
      for (int q = 0; q < S; q++) {
        const float *p = f + b + q * per + i;
        _mm_prefetch((const char *)p + PF, _MM_HINT_T0);
        _mm_prefetch((const char *)p + PF + 64, _MM_HINT_T0);
        const __m256 lo = _mm256_add_ps(_mm256_loadu_ps(p), _mm256_loadu_ps(p + 8));
        const __m256 hi = _mm256_add_ps(_mm256_loadu_ps(p + 16), _mm256_loadu_ps(p + 24));
        acc[q] = _mm256_add_ps(acc[q], _mm256_add_ps(lo, hi));
      }
    for (int64_t i = b + S * per; i < e; i += 8)
      acc[0] = _mm256_add_ps(acc[0], _mm256_loadu_ps(f + i));
    __m256 t = acc[0];
    for (int q = 1; q < S; q++) t = _mm256_add_ps(t, acc[q]);
    float l[8];
    _mm256_storeu_ps(l, t);
    for (int k = 0; k < 8; k++) s += l[k];
  } else
#endif
  {
    float acc[16] = {0};
    for (int64_t i = b; i < e; i += 16)
      for (int k = 0; k < 16; k++) acc[k] += f[i + k];
    for (int k = 0; k < 16; k++) s += acc[k];
  }
  j->partial[tid] = s;
}

int mbcpu_read_probe(mb_ctx *ctx, const void *p, size_t bytes, float *sink) {
  const int nt = ctx->num_threads;
  double *partial = (double *)calloc((size_t)nt, sizeof(double));
  if (!partial) return mb_fail(MB_ERR_OOM, "mb_read_probe: out of memory");
  probe_job job = {.f = (const float *)p, .nf = (int64_t)(bytes / 4), .vec = mbcpu_vec_any(ctx),
                   .partial = partial};
  mbcpu_parallel(ctx, nt, probe_slice, &job);
  double total = 0.0;
  for (int t = 0; t < nt; t++) total += partial[t];
  free(partial);
  *sink = (float)total;
  return MB_OK;
}
