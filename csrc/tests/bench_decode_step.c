/*
 * bench_decode_step.c — where a CPU decoding step's time goes: the ops of one step of a
 * 353M-shaped model (53 layers, d_model 1024; random weights) in the order the model runs them,
 * each op's time summed over the layers, and the step against the read-bandwidth roofline (weight
 * bytes / mb_read_probe, the probe taken just before and after the steps).
 *
 * Build with -DMAMBABYTE_TESTS=ON; run build/bench_decode_step [bf16|fp32] [steps].
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bench_util.h"

enum { D = 1024, DI = 2048, N = 16, R = 64, K = 4, L = 53, XD = R + 2 * N };

static mb_ctx *ctx;

/* bytes of small finite values (valid as both bf16 and fp32 halves) */
static void *weights(size_t bytes) {
  void *p;
  CK(mb_alloc(ctx, bytes, &p));
  uint16_t *q = (uint16_t *)p;
  for (size_t i = 0; i < bytes / 2; i++) q[i] = (uint16_t)(0x3c00 + (i * 7919 % 97));
  return p;
}

static float *zeros(size_t floats) {
  void *p;
  CK(mb_alloc(ctx, floats * 4, &p));
  memset(p, 0, floats * 4);
  return (float *)p;
}

typedef struct {
  void *in_proj, *x_proj, *dt_proj, *out_proj;
  float *norm_w, *norm_b, *conv_w, *conv_b, *A, *Dskip, *dt_b, *conv_state, *ssm_state;
} layer;

static double probe(void *buf, size_t bytes, float *sink) {
  double best = 1e9;
  for (int r = 0; r < 3; r++) {
    const double t0 = now();
    CK(mb_read_probe(ctx, buf, bytes, sink));
    const double t = now() - t0;
    if (t < best) best = t;
  }
  return bytes / best;
}

int main(int argc, char **argv) {
  const int wd = argc > 1 && strcmp(argv[1], "fp32") == 0 ? MB_DTYPE_F32 : MB_DTYPE_BF16;
  const int steps = argc > 2 ? atoi(argv[2]) : 30;
  const size_t es = wd == MB_DTYPE_F32 ? 4 : 2;
  CK(mb_ctx_create(MB_BACKEND_CPU, 0, 0, &ctx));
  char info[256];
  CK(mb_ctx_info(ctx, info, sizeof info));
  static layer ly[L];
  for (int l = 0; l < L; l++) {
    layer *y = &ly[l];
    y->in_proj = weights((size_t)2 * DI * D * es);
    y->x_proj = weights((size_t)XD * DI * es);
    y->dt_proj = weights((size_t)DI * R * es);
    y->out_proj = weights((size_t)D * DI * es);
    y->norm_w = zeros(D), y->norm_b = zeros(D), y->conv_w = zeros(DI * K);
    y->conv_b = zeros(DI), y->A = zeros(DI * N), y->Dskip = zeros(DI), y->dt_b = zeros(DI);
    y->conv_state = zeros(DI * (K - 1)), y->ssm_state = zeros(DI * N);
    for (int i = 0; i < DI * N; i++) y->A[i] = -1.0f - (float)(i % N);
  }
  float *hidden = zeros(D), *residual = zeros(D), *normed = zeros(D), *xz = zeros(2 * DI);
  float *xc = zeros(DI), *xdbl = zeros(XD), *delta = zeros(DI), *yb = zeros(DI), *sink = zeros(16);
  for (int i = 0; i < D; i++) hidden[i] = 0.01f * (float)(i % 13);
  const size_t probe_bytes = (size_t)1 << 30;
  void *probe_buf;
  CK(mb_alloc(ctx, probe_bytes, &probe_buf));
  memset(probe_buf, 1, probe_bytes);

  enum { NORM, IN_CONV, XPROJ, DT_UPDATE, OUT, NOPS };
  static const char *names[NOPS] = {"add_norm", "in_proj + conv step", "x_proj",
                                    "dt_proj + state update", "out_proj"};
  double op[NOPS] = {0}, total = 0;
  const int warm = 3;
  const double bw_before = probe(probe_buf, probe_bytes, sink);
  for (int s = 0; s < steps + warm; s++) {
    double t[NOPS] = {0};
    const double t0 = now();
    for (int l = 0; l < L; l++) {
      layer *y = &ly[l];
      double a = now(), b;
#define TIMED(k, call)                                                                            \
  CK(call);                                                                                       \
  b = now();                                                                                      \
  t[k] += b - a;                                                                                  \
  a = b
      TIMED(NORM, mb_add_norm(ctx, hidden, residual, l > 0, y->norm_w, y->norm_b, MB_NORM_LAYER,
                              1e-5f, 1, D, normed, NULL));
      TIMED(IN_CONV, mb_linear_conv1d_step(ctx, normed, D, y->in_proj, wd, NULL, 1, D, 2 * DI, xz,
                                           2 * DI, y->conv_w, y->conv_b, y->conv_state, DI, K, xc,
                                           DI));
      TIMED(XPROJ, mb_linear(ctx, xc, DI, y->x_proj, wd, NULL, 1, DI, XD, xdbl, XD));
      TIMED(DT_UPDATE, mb_selective_state_update_dt(
                           ctx, xc, DI, xdbl, XD, y->dt_proj, wd, y->dt_b, R, y->A, xdbl + R, XD,
                           xdbl + R + N, XD, y->Dskip, xz + DI, 2 * DI, y->ssm_state, 1, DI, N, 1,
                           delta, yb, DI, NULL));
      TIMED(OUT, mb_linear(ctx, yb, DI, y->out_proj, wd, NULL, 1, DI, D, hidden, D));
#undef TIMED
    }
    if (s >= warm) {
      for (int k = 0; k < NOPS; k++) op[k] += t[k];
      total += now() - t0;
    }
  }
  const double bw_after = probe(probe_buf, probe_bytes, sink);
  const double bw = (bw_before + bw_after) / 2;
  const double per_layer = 2.0 * DI * D + (double)XD * DI + (double)DI * R + (double)D * DI;
  const double wbytes = L * per_layer * (double)es;
  printf("ctx %s; %s weights, %d layers, %d steps\n", info, es == 2 ? "bf16" : "fp32", L, steps);
  for (int k = 0; k < NOPS; k++)
    printf("  %-24s %7.1f us/layer %7.3f ms/step\n", names[k], op[k] / steps / L * 1e6,
           op[k] / steps * 1e3);
  const double step = total / steps;
  printf("step %.3f ms; read probe %.1f / %.1f GB/s (before / after); %.0f MB of weights: roofline "
         "%.3f ms, ratio %.2f\n",
         step * 1e3, bw_before / 1e9, bw_after / 1e9, wbytes / 1e6, wbytes / bw * 1e3,
         wbytes / bw / step);
  CK(mb_ctx_destroy(ctx));
  return 0;
}
