/*
 * bench_cpu.c — decode matvec bandwidth against mb_read_probe, and GEMM GFLOP/s, on the CPU
 * backend. Build with -DMAMBABYTE_TESTS=ON; run build/bench_cpu [layers].
 * Shapes: the 353M model (d_model 1024): in_proj 4096x1024, out_proj 1024x2048, x_proj 96x2048,
 * dt_proj 2048x64, and lm_head 256x1024.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bench_util.h"

static const long long SH[5][2] = {{4096, 1024}, {1024, 2048}, {96, 2048}, {2048, 64}, {256, 1024}};

int main(int argc, char **argv) {
  int layers = argc > 1 ? atoi(argv[1]) : 16;
  mb_ctx *ctx;
  CK(mb_ctx_create(MB_BACKEND_CPU, 0, 0, &ctx));
  char info[256];
  CK(mb_ctx_info(ctx, info, sizeof info));
  printf("ctx: %s\n", info);
  for (int dt = 0; dt < 2; dt++) {
    size_t es = dt == 0 ? 4 : 2;
    /* per layer: the four mixer matrices; lm_head once */
    size_t per_layer = 0;
    for (int m = 0; m < 4; m++) per_layer += SH[m][0] * SH[m][1];
    size_t total = per_layer * layers + SH[4][0] * SH[4][1];
    size_t bytes = (total * es + 63) & ~(size_t)63;
    void *w;
    CK(mb_alloc(ctx, bytes, &w));
    memset(w, 0x3c, bytes); /* small finite values in both dtypes */
    float *x, *y, *sink;
    CK(mb_alloc(ctx, 8 * 4096 * 4, (void **)&x));
    CK(mb_alloc(ctx, 8 * 4096 * 4, (void **)&y));
    CK(mb_alloc(ctx, 64, (void **)&sink));
    for (int i = 0; i < 8 * 4096; i++) x[i] = 0.001f * (i % 97);
    /* probe and matvec interleaved (the machine's bandwidth drifts), best of reps each */
    const int reps = 12;
    double best_probe = 1e9, best[4] = {1e9, 1e9, 1e9, 1e9};
    for (int r = 0; r < reps; r++) {
      double t0 = now();
      CK(mb_read_probe(ctx, w, bytes, sink));
      double t = now() - t0;
      if (t < best_probe) best_probe = t;
      for (int ni = 0; ni < 4; ni++) {
        int n = 1 << ni;
        t0 = now();
        char *p = (char *)w;
        for (int l = 0; l < layers; l++)
          for (int m = 0; m < 4; m++) {
            CK(mb_linear(ctx, x, SH[m][1], p, dt, NULL, n, SH[m][1], SH[m][0], y, SH[m][0]));
            p += SH[m][0] * SH[m][1] * es;
          }
        CK(mb_linear(ctx, x, SH[4][1], p, dt, NULL, n, SH[4][1], SH[4][0], y, SH[4][0]));
        t = now() - t0;
        if (t < best[ni]) best[ni] = t;
      }
    }
    printf("%s weights: %.1f MB; read_probe %.2f GB/s\n", dt ? "bf16" : "fp32", bytes / 1e6,
           bytes / best_probe / 1e9);
    for (int ni = 0; ni < 4; ni++)
      printf("  linear n=%d: %.2f GB/s of weights = %.1f%% of read_probe (%.2f ms per pass)\n",
             1 << ni, total * es / best[ni] / 1e9,
             100.0 * best_probe / best[ni] * (total * es) / bytes, best[ni] * 1e3);
    mb_free(ctx, w);
    mb_free(ctx, x);
    mb_free(ctx, y);
    mb_free(ctx, sink);
  }
  /* GEMM 2048 x 1024 x 4096 (n x in_f x out_f) */
  for (int noblas = 0; noblas < 2; noblas++) {
    mb_ctx *g;
    if (noblas) setenv("MAMBABYTE_CPU_NOBLAS", "1", 1);
    CK(mb_ctx_create(MB_BACKEND_CPU, 0, 0, &g));
    unsetenv("MAMBABYTE_CPU_NOBLAS");
    CK(mb_ctx_info(g, info, sizeof info));
    const long long n = 2048, in_f = 1024, out_f = 4096;
    float *x, *y;
    void *w;
    CK(mb_alloc(g, n * in_f * 4, (void **)&x));
    CK(mb_alloc(g, n * out_f * 4, (void **)&y));
    CK(mb_alloc(g, out_f * in_f * 4, &w));
    for (long long i = 0; i < n * in_f; i++) x[i] = 0.001f * (i % 89);
    memset(w, 0x3c, out_f * in_f * 4);
    for (int dt = 0; dt < 2; dt++) {
      double best = 1e9;
      for (int r = 0; r < 3; r++) {
        double t0 = now();
        CK(mb_linear(g, x, in_f, w, dt, NULL, n, in_f, out_f, y, out_f));
        double t = now() - t0;
        if (t < best) best = t;
      }
      printf("gemm %lldx%lldx%lld %s (%s): %.1f GFLOP/s\n", n, in_f, out_f, dt ? "bf16" : "fp32",
             info, 2.0 * n * in_f * out_f / best / 1e9);
    }
    mb_free(g, x);
    mb_free(g, y);
    mb_free(g, w);
    mb_ctx_destroy(g);
  }
  mb_ctx_destroy(ctx);
  return 0;
}
