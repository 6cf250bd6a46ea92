/*
 * internal.h — what the CPU and CUDA halves share behind the public ABI (not installed).
 *
 * csrc/api.c implements every mb_* function of mambabyte.h: it validates the arguments once, then
 * dispatches on ctx->backend to mbcpu_<name> (csrc/cpu) or mbcuda_<name> (csrc/cuda, only when
 * built with MB_WITH_CUDA). Each backend function has exactly the public signature of mb_<name>
 * and may assume validated arguments (non-null required pointers, sizes >= 0, n > 0 work).
 */
#ifndef MAMBABYTE_INTERNAL_H
#define MAMBABYTE_INTERNAL_H

#include <stdint.h>
#include "../include/mambabyte.h"

#ifdef __cplusplus
extern "C" {
#endif

struct mb_ctx {
  int backend;     /* MB_BACKEND_* */
  int device;      /* CUDA device index */
  int num_threads; /* CPU threads actually used */
  uint32_t flags;  /* MB_FLAG_* */
  void *cuda;      /* CUDA backend state (stream, cuBLAS handle, graphs), owned by csrc/cuda */
};

/** Records a printf-style message as this thread's last error and returns status. */
int mb_fail(int status, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 2, 3)))
#endif
    ;

#ifdef MB_WITH_CUDA
/* Implemented in csrc/cuda. */
int mbcuda_device_count(int *out_count);
int mbcuda_ctx_init(mb_ctx *ctx);     /* ctx->device is set; fills ctx->cuda */
int mbcuda_ctx_destroy(mb_ctx *ctx); /* frees ctx->cuda */
int mbcuda_ctx_synchronize(mb_ctx *ctx);
int mbcuda_ctx_info(mb_ctx *ctx, char *buf, size_t cap);
int mbcuda_alloc(mb_ctx *ctx, size_t bytes, void **out);
int mbcuda_free(mb_ctx *ctx, void *ptr);
int mbcuda_memcpy_h2d(mb_ctx *ctx, void *dst, const void *host_src, size_t bytes);
int mbcuda_memcpy_d2h(mb_ctx *ctx, void *host_dst, const void *src, size_t bytes);
int mbcuda_memcpy_d2h_async(mb_ctx *ctx, void *host_dst, const void *src, size_t bytes);
int mbcuda_memcpy_d2d(mb_ctx *ctx, void *dst, const void *src, size_t bytes);
int mbcuda_memset(mb_ctx *ctx, void *dst, int value, size_t bytes);
int mbcuda_embedding(mb_ctx *ctx, const int32_t *ids, int64_t n, const void *table, int wdtype,
                     int64_t vocab, int64_t d, float *out);
int mbcuda_add_norm(mb_ctx *ctx, const float *x, float *residual, int accumulate,
                    const float *weight, const float *bias, int norm_kind, float eps, int64_t n,
                    int64_t d, float *out);
int mbcuda_linear(mb_ctx *ctx, const float *x, int64_t ldx, const void *w, int wdtype,
                  const float *bias, int64_t n, int64_t in_f, int64_t out_f, float *y, int64_t ldy);
int mbcuda_causal_conv1d(mb_ctx *ctx, const float *x, int64_t ldx, const float *w,
                         const float *bias, float *conv_state, int64_t batch, int64_t len,
                         int64_t d, int64_t k, float *out, int64_t ldo, float *out_preact);
int mbcuda_linear_conv1d_step(mb_ctx *ctx, const float *x, int64_t ldx, const void *w,
                              int wdtype, const float *bias, int64_t n, int64_t in_f,
                              int64_t out_f, float *y, int64_t ldy, const float *conv_w,
                              const float *conv_bias, float *conv_state, int64_t d_conv,
                              int64_t k, float *xc, int64_t ldo);
int mbcuda_selective_scan(mb_ctx *ctx, const float *u, int64_t ldu, const float *delta,
                          int64_t ld_delta, const float *A, const float *Bm, int64_t ldb,
                          const float *Cm, int64_t ldc, const float *Dskip, const float *z,
                          int64_t ldz, float *state, float *states_all, int64_t batch,
                          int64_t len, int64_t d, int64_t n, int delta_softplus, float *y,
                          int64_t ldy);
int mbcuda_selective_state_update_dt(mb_ctx *ctx, const float *u, int64_t ldu,
                                     const float *x_dbl, int64_t ld_xdbl, const void *dt_w,
                                     int wdtype, const float *dt_bias, int64_t dt_rank,
                                     const float *A, const float *Bm, int64_t ldb,
                                     const float *Cm, int64_t ldc, const float *Dskip,
                                     const float *z, int64_t ldz, float *state, int64_t batch,
                                     int64_t d, int64_t n, int delta_softplus, float *delta_out,
                                     float *y, int64_t ldy);
int mbcuda_log_softmax(mb_ctx *ctx, const float *logits, int64_t n, int64_t v, float *out);
int mbcuda_logprob_rank(mb_ctx *ctx, const float *logits, int64_t n, int64_t v,
                        const int32_t *targets, float *out_logprob, int32_t *out_rank);
int mbcuda_sample(mb_ctx *ctx, const float *logits, int64_t batch, int64_t v, float temperature,
                  int32_t top_k, float top_p, uint64_t seed, int64_t *counter, int32_t *out_ids);
int mbcuda_read_probe(mb_ctx *ctx, const void *p, size_t bytes, float *sink);
int mbcuda_graph_begin(mb_ctx *ctx);
int mbcuda_graph_end(mb_ctx *ctx, int *out_graph);
int mbcuda_graph_launch(mb_ctx *ctx, int graph);
int mbcuda_graph_destroy(mb_ctx *ctx, int graph);
#endif

#ifdef __cplusplus
}
#endif

#endif /* MAMBABYTE_INTERNAL_H */
