/*
 * internal.h — what the CPU and CUDA halves share behind the public ABI (not installed).
 *
 * csrc/api.c implements every mb_* function of mambabyte.h: it validates the arguments once, then
 * dispatches on ctx->backend to mbcpu_<name> (csrc/cpu) or mbcuda_<name> (csrc/cuda, only when
 * built with MB_WITH_CUDA). Each backend function has exactly the public signature of mb_<name>,
 * declared from the list in ops.def, and may assume validated arguments (non-null required
 * pointers, sizes >= 0, n > 0 work).
 */
#ifndef MAMBABYTE_INTERNAL_H
#define MAMBABYTE_INTERNAL_H

#include <stddef.h>
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
  uint64_t downloads; /* tickets issued by mb_download_async */
  struct mbc_prefault *prefault; /* mb_host_prefault's job in flight, or NULL */
};

/** Records a printf-style message as this thread's last error and returns status. */
int mb_fail(int status, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 2, 3)))
#endif
    ;

/** Copies bytes of host memory with up to max_threads threads (large copies only; see
 * common/host_copy.c); mapped: dst's pages are known to be there (no populate calls). */
void mbc_host_copy(void *dst, const void *src, size_t bytes, int max_threads, int mapped);
/** Threads mapping fresh host ranges in the background (mb_host_prefault; common/host_copy.c). */
typedef struct mbc_prefault mbc_prefault;
/** Starts them (*out NULL when nothing runs: MAMBABYTE_HOST_PREFAULT=0, nothing large enough, no
 * thread to be had); -1 when out of memory. */
int mbc_host_prefault_start(void *const *ptrs, const size_t *bytes, size_t n, mbc_prefault **out);
/** Whether [dst, dst + bytes) overlaps the job's ranges; if so, returns once those ranges are
 * mapped (a copy into them then finds its pages there and skips its own populate calls). */
int mbc_host_prefault_cover(mbc_prefault *job, const void *dst, size_t bytes);
/** Joins and frees a job (NULL: nothing). */
void mbc_host_prefault_wait(mbc_prefault *job);
/** The CPUs this process may run on (its affinity mask: taskset and cgroup cpusets shrink it),
 * at least 1. In common/host_copy.c; CPU contexts count their default threads with it too. */
int mbc_allowed_cpus(void);

/* MB_DECLARE_AS(impl, name): declares the function `impl` with exactly the type of the public
 * function `name` (the header is the one place a signature is written; see ops.def). */
#ifdef __cplusplus
#define MB_DECLARE_AS(impl, name) extern decltype(name) impl
#else
#define MB_DECLARE_AS(impl, name) extern __typeof__(name) impl
#endif

#ifdef MB_WITH_CUDA
/* Implemented in csrc/cuda: mbcuda_<name> for every entry of ops.def, plus the context's set-up. */
#define MB_OP(name) MB_DECLARE_AS(mbcuda_##name, mb_##name);
#define MB_CUDA_OP(name) MB_DECLARE_AS(mbcuda_##name, mb_##name);
#include "ops.def"
int mbcuda_device_count(int *out_count);
int mbcuda_ctx_init(mb_ctx *ctx); /* ctx->device is set; fills ctx->cuda */

/* mb_decode_layers' batch-1 forms on CUDA (csrc/cuda/gemm.cu): one kernel fewer a layer, the
 * same bits. in_proj's GEMV with the layer's add + norm as its prologue (every block norms the
 * row itself): r = 0 + x stored to res_out by block 0 (first layer), or r = x when x is already
 * the residual sum (plain: later layers, whose sum the last out_proj's epilogue made). */
typedef struct {
  const float *x;
  float *res_out;
  int plain;
  const float *norm_w, *norm_b;
  int norm_kind;
  float eps;
  int64_t d_model;
  const void *w;
  int wdtype;
  const float *bias;
  int64_t out_f;
  float *y;
  const float *conv_w, *conv_b;
  float *conv_state;
  int64_t d_conv, k;
  float *xc;
  const float *x_ref; /* where the ops would read the normed row (its alignment picks the path) */
} mbcuda_norm_in_proj;
/* Whether it takes these shapes (and is on: MAMBABYTE_CUDA_NORM_PROLOGUE=0 turns it off). */
int mbcuda_norm_in_proj_ok(mb_ctx *ctx, int64_t d_model, int64_t out_f);
int mbcuda_norm_in_proj_step(mb_ctx *ctx, const mbcuda_norm_in_proj *a);
/* mb_verify_layers' in_proj with the layer's add + norm as its prologue (csrc/cuda/gemm.cu), the
 * same bits as mb_add_norm then mb_linear over the len rows: the ops' GEMV with one position a
 * block, and each block norms its position's row into shared memory (add_norm_reg_row, as
 * k_add_norm_reg). The residual sum cannot be written in place (other blocks of the position still
 * read it): r = (accumulate ? res_in : 0) + x goes to res_out, by the position's first block. */
typedef struct {
  const float *x, *res_in; /* (len, d_model) rows; res_in unused without accumulate */
  float *res_out;          /* (len, d_model): the residual sum */
  int accumulate;
  const float *norm_w, *norm_b;
  int norm_kind;
  float eps;
  int64_t d_model, len;
  const void *w;
  int wdtype;
  const float *bias;
  int64_t out_f;
  float *y; /* (len, ldy) rows */
  int64_t ldy;
  const float *x_ref; /* where the ops would read the normed rows (ld d_model) */
  /* The conv over the positions (mbcuda_verify_conv_ok), or conv_w NULL: the first dc rows of y
   * are its inputs; the window conv_state (dc, k - 1) is saved to state_save, then advanced;
   * silu(conv) rows into xc (ld ldo). mbcuda_conv1d_save's arithmetic. */
  const float *conv_w, *conv_b;
  float *conv_state, *state_save, *xc;
  int64_t dc, k, ldo;
} mbcuda_norm_in_proj_rows;
/* Whether the pass's in_proj kernel can also run the conv (len <= 8, k <= 4; and it is on:
 * MAMBABYTE_CUDA_VERIFY_CONV=0 turns it off). */
/* mb_draft_greedy as one thread-block cluster launch (csrc/cuda/draft.cu): whether it takes the
 * shape, and the launch (the arguments as mb_draft_greedy's, validated) */
int mbcuda_draft_cluster_ok(mb_ctx *ctx, int64_t n_layer, int64_t d_model, int64_t d_inner,
                            int64_t d_state, int64_t dt_rank, int64_t d_conv, int64_t vocab_out);
int mbcuda_draft_cluster(mb_ctx *ctx, const uint64_t *layers, int64_t n_layer, int64_t d_model,
                         int64_t d_inner, int64_t d_state, int64_t dt_rank, int wdtype,
                         int norm_kind, float eps, const void *embedding, int64_t vocab_rows,
                         const float *norm_f_w, const float *norm_f_b, const void *lm_head,
                         int64_t vocab_out, const int32_t *read_id, const float *logits,
                         int64_t *counter, void *state, int64_t state_bytes, void *stack,
                         int32_t *ids, int64_t k);
int mbcuda_verify_conv_ok(mb_ctx *ctx, int64_t len, int64_t d_inner, int64_t d_conv);
/* Whether it takes these shapes (and is on: MAMBABYTE_CUDA_VERIFY_NORM=0 turns it off): where the
 * ops' GEMV would give each block one position too. */
int mbcuda_verify_in_proj_ok(mb_ctx *ctx, int64_t d_model, int64_t out_f, int64_t len,
                             int wdtype);
int mbcuda_verify_in_proj(mb_ctx *ctx, const mbcuda_norm_in_proj_rows *a);
/* out_proj's GEMV (n = 1) that also adds its output into the residual: y = x w^T + bias,
 * residual += y (the next layer's add, as mb_add_norm computes it); residual NULL: y alone, with
 * the bits of mb_linear. */
int mbcuda_linear_residual(mb_ctx *ctx, const float *x, const void *w, int wdtype,
                           const float *bias, int64_t in_f, int64_t out_f, float *y,
                           float *residual);
/* mb_verify_layers' conv (csrc/cuda/conv.cu): mb_causal_conv1d of one sequence (batch 1) whose
 * window, before the call, is also written to state_save (d * (k - 1) floats); k <= 8. */
int mbcuda_conv1d_save(mb_ctx *ctx, const float *x, int64_t ldx, const float *w,
                       const float *bias, float *conv_state, float *state_save, int64_t len,
                       int64_t d, int64_t k, float *out, int64_t ldo);
#endif

#ifdef __cplusplus
}
#endif

#endif /* MAMBABYTE_INTERNAL_H */
