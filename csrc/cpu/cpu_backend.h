/*
 * cpu_backend.h — the CPU backend behind csrc/api.c. Every mbcpu_<name> has the public signature
 * of mb_<name> and may assume the arguments were validated by api.c (non-null required pointers,
 * sizes >= 0 and > 0 work, ld >= row width, valid enums).
 *
 * Threads: every parallel kernel runs on the context's own pool (pool.c), up to ctx->num_threads
 * threads; OpenBLAS, when used, runs single-threaded on slices there (linear.c). A context's
 * scratch buffer and its pool make concurrent calls on the SAME context unsafe; use one context
 * per thread.
 *
 * Environment, read at mbcpu_ctx_create:
 *   MAMBABYTE_CPU_SCALAR=1  force the portable scalar kernels (tests hold AVX-512 and AVX2 ==
 *                           scalar)
 *   MAMBABYTE_CPU_NOBLAS=1  do not use BLAS for large products (tests the library's own GEMM)
 */
#ifndef MAMBABYTE_CPU_BACKEND_H
#define MAMBABYTE_CPU_BACKEND_H

#include <stddef.h>
#include <stdint.h>

#include "../common/internal.h"

#ifdef __cplusplus
extern "C" {
#endif

struct mbcpu_pool;

/** The CPU context: the public struct first (so an mb_ctx* is an mbcpu_ctx*), then CPU state. */
typedef struct mbcpu_ctx {
  struct mb_ctx base;
  int scalar;              /* 1: portable scalar kernels only */
  int use_blas;            /* 1: cblas_sgemm for large products */
  void *scratch;           /* bf16 -> fp32 weight conversion (64-byte aligned) */
  size_t scratch_bytes;    /* capacity of scratch */
  struct mbcpu_pool *pool; /* the kernels' threads, started on first use (pool.c) */
  int pool_failed;         /* 1: threads could not be started; jobs run on the caller's thread */
} mbcpu_ctx;

static inline mbcpu_ctx *mbcpu(mb_ctx *ctx) { return (mbcpu_ctx *)ctx; }
/** Thread tid's contiguous share [*b, *e) of n items among nt threads, split evenly. */
static inline void mbcpu_range(int64_t n, int tid, int nt, int64_t *b, int64_t *e) {
  *b = n * tid / nt;
  *e = n * (tid + 1) / nt;
}

/** Thread tid's share [*b, *e) of n items in whole blocks of blk (the last one clipped to n). */
static inline void mbcpu_range_blocks(int64_t n, int64_t blk, int tid, int nt, int64_t *b,
                                      int64_t *e) {
  mbcpu_range((n + blk - 1) / blk, tid, nt, b, e);
  *b *= blk;
  *e = *e * blk < n ? *e * blk : n;
}

/** A job of mbcpu_parallel: runs once on each thread tid in [0, nt). */
typedef void (*mbcpu_pool_fn)(void *arg, int tid, int nt);
/** Runs fn on min(nt, ctx->num_threads) threads of the context's pool (the caller is thread 0)
 * and returns when all are done. */
void mbcpu_parallel(mb_ctx *ctx, int nt, mbcpu_pool_fn fn, void *arg);
/** A loop body of mbcpu_parallel_for: items [i0, i1). */
typedef void (*mbcpu_for_fn)(void *arg, int64_t i0, int64_t i1);
/** Items [0, n) in contiguous slices over min(nt, n) threads of the pool (OpenMP's static
 * schedule); nt <= 1 runs the whole range on the caller's thread. */
void mbcpu_parallel_for(mb_ctx *ctx, int nt, int64_t n, mbcpu_for_fn fn, void *arg);
/** Stops the pool's threads (mbcpu_ctx_destroy). */
void mbcpu_pool_release(mb_ctx *ctx);

/** 1 when the vector (AVX-512) kernels may run on this context. */
static inline int mbcpu_vec(mb_ctx *ctx) {
#ifdef __AVX512F__
  return !((mbcpu_ctx *)ctx)->scalar;
#else
  (void)ctx;
  return 0;
#endif
}

/** 1 when the 8-lane (AVX2 + FMA) kernels may run on this context: a build for a processor with
 * AVX2 and FMA but without AVX-512 (vmath.h's MB_AVX2). */
static inline int mbcpu_vec8(mb_ctx *ctx) {
#if !defined(__AVX512F__) && defined(__AVX2__) && defined(__FMA__)
  return !((mbcpu_ctx *)ctx)->scalar;
#else
  (void)ctx;
  return 0;
#endif
}

/** 1 when this build's vector kernels, AVX-512 or 8-lane (only one of the two is built), may run:
 * for the kernels written for both widths. */
static inline int mbcpu_vec_any(mb_ctx *ctx) { return mbcpu_vec(ctx) || mbcpu_vec8(ctx); }

/* mbcpu_<name> for every MB_OP of ops.def, with the type of mb_<name> (mambabyte.h). */
#define MB_OP(name) MB_DECLARE_AS(mbcpu_##name, mb_##name);
#include "../common/ops.def"

/** Creates a CPU context of num_threads threads (0: OMP_NUM_THREADS, else the CPUs this process
 * may run on). */
int mbcpu_ctx_create(int num_threads, mb_ctx **out_ctx);
/** Returns the context's scratch buffer with at least `bytes` (grown as needed), NULL on OOM. */
void *mbcpu_scratch(mb_ctx *ctx, size_t bytes);

/** bf16.c: fp32 -> bfloat16 bits, round to nearest even (NaN stays NaN); rows of a matrix. */
uint16_t mbcpu_f32_to_bf16(float f);
void mbcpu_rows_to_bf16(const float *x, int64_t ldx, int64_t rows, int64_t cols, uint16_t *out,
                        int64_t ldo);
/** bfloat16 rows widened into a new (rows, cols) fp32 matrix (free() it); NULL without memory. */
float *mbcpu_widen_rows(const uint16_t *x, int64_t ldx, int64_t rows, int64_t cols);

/** f16.c: the power of two mb_to_f16_scaled chooses for (rows, cols) at ld ldx (f16.h's
 * mbcpu_f16_scale_exp of the largest magnitude, NaN skipped); rows, cols >= 1. */
int mbcpu_f16_rows_exp(mb_ctx *ctx, const float *x, int64_t ldx, int64_t rows, int64_t cols);
/** f16.c: rows of x (ld ldx) times 2^e rounded to fp16, dense into out (mb_to_f16_scaled's
 * conversion by a given exponent). */
void mbcpu_rows_to_f16_scaled(mb_ctx *ctx, const float *x, int64_t ldx, int64_t rows, int64_t cols,
                              int e, uint16_t *out);
/** f16.c: scaled fp16 rows (ld ldx) widened to a malloc'd dense fp32 copy times 2^-e (exact), or
 * NULL when out of memory. */
float *mbcpu_widen_f16_rows(const uint16_t *x, int64_t ldx, int64_t rows, int64_t cols, int e);

/** mb_linear's skinny (decoding) path: at most this many input rows. */
#define MBCPU_SKINNY_MAX 8

/** The vector bf16 kernels' padded row length of x: in_f rounded up to 32. */
static inline int64_t mbcpu_linear_kp(int64_t in_f) { return (in_f + 31) / 32 * 32; }

/** linear.c, for fused decoding ops: x prepared for the vector bf16 kernels into xp (n * kp
 * floats, 64-byte aligned; permuted, or split into bf16 hi + lo for one row), and rows [o0, o1)
 * of W x for n <= MBCPU_SKINNY_MAX inputs. */
void mbcpu_linear_prepare_x(const float *x, int64_t ldx, int64_t n, int64_t in_f, int64_t kp,
                            float *xp);
void mbcpu_linear_rows(int vec, const float *x, int64_t ldx, const float *xp, int64_t kp,
                       const void *w, int wdtype, const float *bias, int n, int64_t in_f,
                       int64_t o0, int64_t o1, float *y, int64_t ldy);
/** ops.c, for the fused in_proj + conv step: whether the len-1 vector conv applies, and that conv
 * over channels [c0, c1) (c0 a multiple of 16) of `batch` sequences. */
int mbcpu_conv1_step_applies(mb_ctx *ctx, int64_t k);
void mbcpu_conv1_step_range(const float *x, int64_t ldx, const float *w, const float *bias,
                            float *conv_state, int64_t batch, int64_t d, int64_t k, float *out,
                            int64_t ldo, int64_t c0, int64_t c1);

#ifdef __cplusplus
}
#endif

#endif /* MAMBABYTE_CPU_BACKEND_H */
