/*
 * ctx.c — CPU contexts, memory and the read-bandwidth probe.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#ifdef _OPENMP
#include <omp.h>
#endif

#include "cpu_backend.h"
#include "vmath.h"

static int env_flag(const char *name) {
  const char *v = getenv(name);
  return v && v[0] && strcmp(v, "0") != 0;
}

int mbcpu_ctx_create(int num_threads, mb_ctx **out_ctx) {
  mbcpu_ctx *c = (mbcpu_ctx *)calloc(1, sizeof *c);
  if (!c) return mb_fail(MB_ERR_OOM, "mb_ctx_create: out of memory");
  c->base.backend = MB_BACKEND_CPU;
  c->base.device = 0;
#ifdef _OPENMP
  c->base.num_threads = num_threads > 0 ? num_threads : omp_get_max_threads();
#else
  c->base.num_threads = 1;
  (void)num_threads;
#endif
  if (c->base.num_threads < 1) c->base.num_threads = 1;
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

int mbcpu_ctx_info(mb_ctx *ctx, char *buf, size_t cap) {
  mbcpu_ctx *c = mbcpu(ctx);
  snprintf(buf, cap, "{\"backend\":\"cpu\",\"threads\":%d,\"blas\":\"%s\",\"simd\":\"%s\"}",
           ctx->num_threads, c->use_blas ? "openblas" : "none",
           mbcpu_vec(ctx) ? "avx512" : "scalar");
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

int mbcpu_read_probe(mb_ctx *ctx, const void *p, size_t bytes, float *sink) {
  const float *f = (const float *)p;
  const int64_t nf = (int64_t)(bytes / 4);
  const int nt = ctx->num_threads;
  double total = 0.0;
  const int vec = mbcpu_vec(ctx);
#pragma omp parallel num_threads(nt) reduction(+ : total)
  {
    /* contiguous slices of whole 64-byte lines */
    int64_t b, e;
    mbcpu_thread_range(nf / 16, &b, &e);
    b *= 16;
    e *= 16;
    float s = 0.0f;
#ifdef __AVX512F__
    if (vec) {
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
#endif
    {
      float acc[16] = {0};
      for (int64_t i = b; i < e; i += 16)
        for (int j = 0; j < 16; j++) acc[j] += f[i + j];
      for (int j = 0; j < 16; j++) s += acc[j];
    }
    (void)vec;
    total += s;
  }
  *sink = (float)total;
  return MB_OK;
}
