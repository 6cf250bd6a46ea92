/*
 * api.c — every mb_* function of include/mambabyte.h: validates the arguments once, handles
 * zero-sized work, then dispatches on ctx->backend to mbcpu_<name> (csrc/cpu) or, when built with
 * MB_WITH_CUDA, mbcuda_<name> (csrc/cuda); those are declared from the list in common/ops.def with
 * the types of the functions here. Only the functions defined here (and mb_last_error in
 * common/error.c) are exported from the shared library; everything else is hidden.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "common/internal.h"
#include "common/rng.h"
#include "cpu/cpu_backend.h"
#include "cpu/f16.h"

#define MB_EXPORT __attribute__((visibility("default")))

typedef long long ll;

#define CHECK_CTX(fn)                                                                             \
  do {                                                                                            \
    if (!ctx) return mb_fail(MB_ERR_INVALID, fn ": ctx is NULL");                                 \
  } while (0)
#define REQUIRE(cond, ...)                                                                        \
  do {                                                                                            \
    if (!(cond)) return mb_fail(MB_ERR_INVALID, __VA_ARGS__);                                     \
  } while (0)
#define NONNEG(fn, v) REQUIRE((v) >= 0, fn ": " #v " (%lld) < 0", (ll)(v))
#define NONNULL(fn, p) REQUIRE((p) != NULL, fn ": " #p " is NULL")
#define LD_OK(fn, ld, width)                                                                      \
  REQUIRE((ld) >= (width), fn ": " #ld " (%lld) < " #width " (%lld)", (ll)(ld), (ll)(width))
#define DTYPE_OK(fn, dt)                                                                          \
  REQUIRE((dt) == MB_DTYPE_F32 || (dt) == MB_DTYPE_BF16,                                          \
          fn ": unknown wdtype %d (MB_DTYPE_F32 = 0, MB_DTYPE_BF16 = 1)", (dt))
/* the products that take fp16 weights too (the decoding twins: mb_linear, mb_linear_conv1d_step) */
#define DTYPE16_OK(fn, dt)                                                                        \
  REQUIRE((dt) == MB_DTYPE_F32 || (dt) == MB_DTYPE_BF16 || (dt) == MB_DTYPE_F16,                  \
          fn ": unknown wdtype %d (MB_DTYPE_F32 = 0, MB_DTYPE_BF16 = 1, MB_DTYPE_F16 = 2)", (dt))
/* the layer tables of mb_decode_layers and mb_verify_layers: fp32 with fp16 in_proj / out_proj */
#define DTYPE_TABLE_OK(fn, dt)                                                                    \
  REQUIRE((dt) == MB_DTYPE_F32 || (dt) == MB_DTYPE_BF16 || (dt) == MB_DTYPE_F32_F16IO,            \
          fn ": unknown wdtype %d (MB_DTYPE_F32 = 0, MB_DTYPE_BF16 = 1, MB_DTYPE_F32_F16IO = 3)", \
          (dt))

#ifdef MB_WITH_CUDA
#define IS_CUDA(ctx) ((ctx)->backend == MB_BACKEND_CUDA)
#define DISPATCH(name, ...)                                                                       \
  return IS_CUDA(ctx) ? mbcuda_##name(__VA_ARGS__) : mbcpu_##name(__VA_ARGS__)
#else
#define IS_CUDA(ctx) 0
#define DISPATCH(name, ...) return mbcpu_##name(__VA_ARGS__)
#endif

/* fp16 weights (MB_DTYPE_F16) widened to a malloc'd fp32 copy for the CPU backend, whose products
 * are fp32 (exact: every fp16 value is a float); NULL after an error set for fn. */
static float *widen_f16(const void *w, int64_t count, const char *fn) {
  float *wf = (float *)malloc((size_t)(count > 0 ? count : 1) * sizeof(float));
  if (!wf) {
    mb_fail(MB_ERR_OOM, "%s: no memory to widen %lld fp16 weights", fn, (long long)count);
    return NULL;
  }
  const uint16_t *h = (const uint16_t *)w;
  for (int64_t i = 0; i < count; i++) wf[i] = mbcpu_f16_to_f32(h[i]);
  return wf;
}

/* ---- library ---------------------------------------------------------------------------------- */

MB_EXPORT int mb_abi_version(void) { return MB_ABI_VERSION; }

MB_EXPORT int mb_has_cuda(void) {
#ifdef MB_WITH_CUDA
  return 1;
#else
  return 0;
#endif
}

MB_EXPORT int mb_cuda_device_count(int *out_count) {
  NONNULL("mb_cuda_device_count", out_count);
#ifdef MB_WITH_CUDA
  return mbcuda_device_count(out_count);
#else
  *out_count = 0;
  return MB_OK;
#endif
}

/* ---- context ---------------------------------------------------------------------------------- */

MB_EXPORT int mb_ctx_create(int backend, int device, int num_threads, mb_ctx **out_ctx) {
  NONNULL("mb_ctx_create", out_ctx);
  *out_ctx = NULL;
  if (backend == MB_BACKEND_CPU) {
    REQUIRE(num_threads >= 0, "mb_ctx_create: num_threads (%d) < 0", num_threads);
    return mbcpu_ctx_create(num_threads, out_ctx);
  }
  if (backend == MB_BACKEND_CUDA) {
#ifdef MB_WITH_CUDA
    REQUIRE(device >= 0, "mb_ctx_create: device (%d) < 0", device);
    mb_ctx *c = (mb_ctx *)calloc(1, sizeof *c);
    if (!c) return mb_fail(MB_ERR_OOM, "mb_ctx_create: out of memory");
    c->backend = MB_BACKEND_CUDA;
    c->device = device;
    c->num_threads = 0;
    int st = mbcuda_ctx_init(c);
    if (st != MB_OK) {
      free(c);
      return st;
    }
    *out_ctx = c;
    return MB_OK;
#else
    return mb_fail(MB_ERR_UNSUPPORTED,
                   "this library was built without CUDA (rebuild with a CUDA toolkit and cuBLAS: "
                   "cmake -DMAMBABYTE_CUDA=ON)");
#endif
  }
  return mb_fail(MB_ERR_INVALID,
                 "mb_ctx_create: unknown backend %d (MB_BACKEND_CPU = 0, MB_BACKEND_CUDA = 1)",
                 backend);
}

MB_EXPORT int mb_ctx_destroy(mb_ctx *ctx) {
  if (!ctx) return MB_OK;
  mbc_host_prefault_wait(ctx->prefault); /* its threads may still be mapping the caller's memory */
#ifdef MB_WITH_CUDA
  if (IS_CUDA(ctx)) {
    int st = mbcuda_ctx_destroy(ctx);
    free(ctx);
    return st;
  }
#endif
  return mbcpu_ctx_destroy(ctx);
}

MB_EXPORT int mb_ctx_synchronize(mb_ctx *ctx) {
  CHECK_CTX("mb_ctx_synchronize");
#ifdef MB_WITH_CUDA
  if (IS_CUDA(ctx)) return mbcuda_ctx_synchronize(ctx);
#endif
  return MB_OK;
}

MB_EXPORT int mb_ctx_set_flags(mb_ctx *ctx, uint32_t flags) {
  CHECK_CTX("mb_ctx_set_flags");
  ctx->flags = flags;
  return MB_OK;
}

MB_EXPORT int mb_ctx_info(mb_ctx *ctx, char *buf, size_t cap) {
  CHECK_CTX("mb_ctx_info");
  if (cap == 0) return MB_OK;
  NONNULL("mb_ctx_info", buf);
  buf[0] = 0;
  DISPATCH(ctx_info, ctx, buf, cap);
}

/* ---- memory ----------------------------------------------------------------------------------- */

MB_EXPORT int mb_alloc(mb_ctx *ctx, size_t bytes, void **out) {
  CHECK_CTX("mb_alloc");
  NONNULL("mb_alloc", out);
  *out = NULL;
  if (bytes == 0) return MB_OK;
  DISPATCH(alloc, ctx, bytes, out);
}

MB_EXPORT int mb_free(mb_ctx *ctx, void *ptr) {
  CHECK_CTX("mb_free");
  if (!ptr) return MB_OK;
  DISPATCH(free, ctx, ptr);
}

/* Threads for host copies: a CPU context's own count, else the CPUs the process may run on. */
static int host_copy_threads(const mb_ctx *ctx) {
  return ctx->backend == MB_BACKEND_CPU && ctx->num_threads > 0 ? ctx->num_threads
                                                               : mbc_allowed_cpus();
}

/* A host copy into dst: where dst lies in ranges of the context's mb_host_prefault job, after
 * those are mapped (the job's threads would otherwise fault on the same pages as the copy's). */
static void host_copy(mb_ctx *ctx, void *dst, const void *src, size_t bytes) {
  const int mapped = mbc_host_prefault_cover(ctx->prefault, dst, bytes);
  mbc_host_copy(dst, src, bytes, host_copy_threads(ctx), mapped);
}

#define COPY_ARGS(fn, dst, src)                                                                   \
  CHECK_CTX(fn);                                                                                  \
  if (bytes == 0) return MB_OK;                                                                   \
  NONNULL(fn, dst);                                                                               \
  NONNULL(fn, src)

MB_EXPORT int mb_memcpy_h2d(mb_ctx *ctx, void *dst, const void *host_src, size_t bytes) {
  COPY_ARGS("mb_memcpy_h2d", dst, host_src);
#ifdef MB_WITH_CUDA
  if (IS_CUDA(ctx)) return mbcuda_memcpy_h2d(ctx, dst, host_src, bytes);
#endif
  memcpy(dst, host_src, bytes);
  return MB_OK;
}

MB_EXPORT int mb_memcpy_d2h(mb_ctx *ctx, void *host_dst, const void *src, size_t bytes) {
  COPY_ARGS("mb_memcpy_d2h", host_dst, src);
#ifdef MB_WITH_CUDA
  if (IS_CUDA(ctx)) return mbcuda_memcpy_d2h(ctx, host_dst, src, bytes);
#endif
  host_copy(ctx, host_dst, src, bytes); /* results land in fresh arrays */
  return MB_OK;
}

MB_EXPORT int mb_host_copy(mb_ctx *ctx, void *dst, const void *src, size_t bytes) {
  COPY_ARGS("mb_host_copy", dst, src);
  REQUIRE((const char *)dst + bytes <= (const char *)src || (const char *)src + bytes <= (const char *)dst,
          "mb_host_copy: dst and src overlap");
  host_copy(ctx, dst, src, bytes);
  return MB_OK;
}

MB_EXPORT int mb_host_prefault(mb_ctx *ctx, void *const *ptrs, const size_t *bytes, size_t n) {
  CHECK_CTX("mb_host_prefault");
  if (n == 0) return MB_OK;
  NONNULL("mb_host_prefault", ptrs);
  NONNULL("mb_host_prefault", bytes);
  mbc_host_prefault_wait(ctx->prefault);
  ctx->prefault = NULL;
  if (mbc_host_prefault_start(ptrs, bytes, n, &ctx->prefault) != 0) {
    return mb_fail(MB_ERR_OOM, "mb_host_prefault: out of memory");
  }
  return MB_OK;
}

MB_EXPORT int mb_host_prefault_wait(mb_ctx *ctx) {
  CHECK_CTX("mb_host_prefault_wait");
  mbc_host_prefault_wait(ctx->prefault);
  ctx->prefault = NULL;
  return MB_OK;
}

MB_EXPORT int mb_memcpy_d2d(mb_ctx *ctx, void *dst, const void *src, size_t bytes) {
  COPY_ARGS("mb_memcpy_d2d", dst, src);
#ifdef MB_WITH_CUDA
  if (IS_CUDA(ctx)) return mbcuda_memcpy_d2d(ctx, dst, src, bytes);
#endif
  memmove(dst, src, bytes);
  return MB_OK;
}

MB_EXPORT int mb_memset(mb_ctx *ctx, void *dst, int value, size_t bytes) {
  CHECK_CTX("mb_memset");
  if (bytes == 0) return MB_OK;
  NONNULL("mb_memset", dst);
#ifdef MB_WITH_CUDA
  if (IS_CUDA(ctx)) return mbcuda_memset(ctx, dst, value, bytes);
#endif
  memset(dst, value, bytes);
  return MB_OK;
}

MB_EXPORT int mb_host_alloc(mb_ctx *ctx, size_t bytes, void **out) {
  CHECK_CTX("mb_host_alloc");
  NONNULL("mb_host_alloc", out);
  *out = NULL;
  if (bytes == 0) return MB_OK;
#ifdef MB_WITH_CUDA
  if (IS_CUDA(ctx)) return mbcuda_host_alloc(ctx, bytes, out);
#endif
  return mbcpu_alloc(ctx, bytes, out);
}

MB_EXPORT int mb_host_free(mb_ctx *ctx, void *ptr) {
  CHECK_CTX("mb_host_free");
  if (!ptr) return MB_OK;
#ifdef MB_WITH_CUDA
  if (IS_CUDA(ctx)) return mbcuda_host_free(ctx, ptr);
#endif
  return mbcpu_free(ctx, ptr);
}

MB_EXPORT int mb_host_register(mb_ctx *ctx, void *ptr, size_t bytes) {
  CHECK_CTX("mb_host_register");
  if (bytes == 0) return MB_OK;
  NONNULL("mb_host_register", ptr);
#ifdef MB_WITH_CUDA
  if (IS_CUDA(ctx)) return mbcuda_host_register(ctx, ptr, bytes);
#endif
  return MB_OK; /* the CPU copies into any host memory */
}

MB_EXPORT int mb_host_unregister(mb_ctx *ctx, void *ptr) {
  CHECK_CTX("mb_host_unregister");
  NONNULL("mb_host_unregister", ptr);
#ifdef MB_WITH_CUDA
  if (IS_CUDA(ctx)) return mbcuda_host_unregister(ctx, ptr);
#endif
  return MB_OK;
}

/* mb_download_async and its direct form: the same checks and CPU copy; CUDA picks the form. */
static int download_async(mb_ctx *ctx, const char *fn, void *host_dst, const void *src,
                          size_t bytes, int staged, uint64_t *out_ticket) {
  REQUIRE(ctx != NULL, "%s: ctx is NULL", fn);
  REQUIRE(out_ticket != NULL, "%s: out_ticket is NULL", fn);
  *out_ticket = 0;
  if (bytes > 0) {
    REQUIRE(host_dst != NULL, "%s: host_dst is NULL", fn);
    REQUIRE(src != NULL, "%s: src is NULL", fn);
  }
#ifdef MB_WITH_CUDA
  if (IS_CUDA(ctx))
    return staged ? mbcuda_download_async(ctx, host_dst, src, bytes, out_ticket)
                  : mbcuda_download_async_direct(ctx, host_dst, src, bytes, out_ticket);
#endif
  if (bytes > 0) host_copy(ctx, host_dst, src, bytes);
  *out_ticket = ++ctx->downloads;
  return MB_OK;
}

MB_EXPORT int mb_download_async(mb_ctx *ctx, void *host_dst, const void *src, size_t bytes,
                                uint64_t *out_ticket) {
  return download_async(ctx, "mb_download_async", host_dst, src, bytes, 1, out_ticket);
}

MB_EXPORT int mb_download_async_direct(mb_ctx *ctx, void *host_dst, const void *src, size_t bytes,
                                       uint64_t *out_ticket) {
  return download_async(ctx, "mb_download_async_direct", host_dst, src, bytes, 0, out_ticket);
}

MB_EXPORT int mb_download_wait(mb_ctx *ctx, uint64_t ticket) {
  CHECK_CTX("mb_download_wait");
  REQUIRE(ticket >= 1 && ticket <= ctx->downloads,
          "mb_download_wait: ticket %llu was not issued (last issued: %llu)",
          (unsigned long long)ticket, (unsigned long long)ctx->downloads);
#ifdef MB_WITH_CUDA
  if (IS_CUDA(ctx)) return mbcuda_download_wait(ctx, ticket);
#endif
  return MB_OK;
}

/* ---- ops -------------------------------------------------------------------------------------- */

MB_EXPORT int mb_embedding(mb_ctx *ctx, const int32_t *ids, int64_t n, const void *table,
                           int wdtype, int64_t vocab, int64_t d, float *out) {
  CHECK_CTX("mb_embedding");
  NONNEG("mb_embedding", n);
  NONNEG("mb_embedding", vocab);
  NONNEG("mb_embedding", d);
  DTYPE_OK("mb_embedding", wdtype);
  if (n == 0 || d == 0) return MB_OK;
  REQUIRE(vocab >= 1, "mb_embedding: vocab (%lld) < 1", (ll)vocab);
  NONNULL("mb_embedding", ids);
  NONNULL("mb_embedding", table);
  NONNULL("mb_embedding", out);
  DISPATCH(embedding, ctx, ids, n, table, wdtype, vocab, d, out);
}

/* The checks mb_add_norm and mb_add_norm_f16 begin with (in this order, with these messages):
 * n, d >= 0, a known norm_kind, a finite eps >= 0. */
static int check_norm_shape(const char *fn, int64_t n, int64_t d, int norm_kind, float eps) {
  REQUIRE(n >= 0, "%s: n (%lld) < 0", fn, (ll)n);
  REQUIRE(d >= 0, "%s: d (%lld) < 0", fn, (ll)d);
  REQUIRE(norm_kind == MB_NORM_LAYER || norm_kind == MB_NORM_RMS,
          "%s: unknown norm_kind %d (MB_NORM_LAYER = 0, MB_NORM_RMS = 1)", fn, norm_kind);
  REQUIRE(eps >= 0.0f && isfinite(eps), "%s: eps (%g) must be finite and >= 0", fn,
          (double)eps);
  return MB_OK;
}

MB_EXPORT int mb_add_norm(mb_ctx *ctx, const float *x, float *residual, int accumulate,
                          const float *weight, const float *bias, int norm_kind, float eps,
                          int64_t n, int64_t d, float *out, uint16_t *out_bf16) {
  CHECK_CTX("mb_add_norm");
  const int st = check_norm_shape("mb_add_norm", n, d, norm_kind, eps);
  if (st != MB_OK) return st;
  if (n == 0 || d == 0) return MB_OK;
  NONNULL("mb_add_norm", x);
  NONNULL("mb_add_norm", residual);
  NONNULL("mb_add_norm", weight);
  REQUIRE(out || out_bf16, "mb_add_norm: out and out_bf16 are both NULL");
  DISPATCH(add_norm, ctx, x, residual, accumulate, weight, bias, norm_kind, eps, n, d, out,
           out_bf16);
}

MB_EXPORT int mb_linear(mb_ctx *ctx, const float *x, int64_t ldx, const void *w, int wdtype,
                        const float *bias, int64_t n, int64_t in_f, int64_t out_f, float *y,
                        int64_t ldy) {
  CHECK_CTX("mb_linear");
  NONNEG("mb_linear", n);
  NONNEG("mb_linear", in_f);
  NONNEG("mb_linear", out_f);
  DTYPE16_OK("mb_linear", wdtype);
  if (n == 0 || out_f == 0) return MB_OK;
  LD_OK("mb_linear", ldx, in_f);
  LD_OK("mb_linear", ldy, out_f);
  NONNULL("mb_linear", y);
  REQUIRE(wdtype != MB_DTYPE_F16 || !IS_CUDA(ctx) || n <= 8,
          "mb_linear: fp16 weights on CUDA: products of at most 8 rows (the decoding GEMV), "
          "not %lld", (ll)n);
  if (in_f > 0) {
    NONNULL("mb_linear", x);
    NONNULL("mb_linear", w);
    if (wdtype == MB_DTYPE_F16 && !IS_CUDA(ctx)) { /* the CPU widens them (its products are fp32) */
      float *wf = widen_f16(w, out_f * in_f, "mb_linear");
      if (!wf) return MB_ERR_OOM;
      const int st = mbcpu_linear(ctx, x, ldx, wf, MB_DTYPE_F32, bias, n, in_f, out_f, y, ldy);
      free(wf);
      return st;
    }
  } else if (IS_CUDA(ctx) || !x || !w) {
    /* an empty sum: y = bias (or 0), done here so backends never see in_f == 0 */
#ifdef MB_WITH_CUDA
    if (IS_CUDA(ctx))
      return mb_fail(MB_ERR_INVALID, "mb_linear: in_f is 0 (nothing to multiply)");
#endif
    for (int64_t i = 0; i < n; i++)
      for (int64_t o = 0; o < out_f; o++) y[i * ldy + o] = bias ? bias[o] : 0.0f;
    return MB_OK;
  }
  DISPATCH(linear, ctx, x, ldx, w, wdtype, bias, n, in_f, out_f, y, ldy);
}

/* The shape checks mb_linear_bf16, mb_linear_to_bf16 and mb_linear_add_norm begin with (in
 * this order, with these messages): n >= 0, in_f >= 1, out_f >= 0, a known weight type. */
static int check_product_shape(const char *fn, int64_t n, int64_t in_f, int64_t out_f,
                               int wdtype) {
  REQUIRE(n >= 0, "%s: n (%lld) < 0", fn, (ll)n);
  REQUIRE(in_f >= 1, "%s: in_f (%lld) < 1", fn, (ll)in_f);
  REQUIRE(out_f >= 0, "%s: out_f (%lld) < 0", fn, (ll)out_f);
  REQUIRE(wdtype == MB_DTYPE_F32 || wdtype == MB_DTYPE_BF16,
          "%s: unknown wdtype %d (MB_DTYPE_F32 = 0, MB_DTYPE_BF16 = 1)", fn, wdtype);
  return MB_OK;
}

MB_EXPORT int mb_linear_bf16(mb_ctx *ctx, const uint16_t *x, int64_t ldx, const void *w,
                             int wdtype, const float *bias, int64_t n, int64_t in_f,
                             int64_t out_f, float *y, int64_t ldy) {
  CHECK_CTX("mb_linear_bf16");
  int st = check_product_shape("mb_linear_bf16", n, in_f, out_f, wdtype);
  if (st != MB_OK) return st;
  if (n == 0 || out_f == 0) return MB_OK;
  LD_OK("mb_linear_bf16", ldx, in_f);
  LD_OK("mb_linear_bf16", ldy, out_f);
  NONNULL("mb_linear_bf16", x);
  NONNULL("mb_linear_bf16", w);
  NONNULL("mb_linear_bf16", y);
  DISPATCH(linear_bf16, ctx, x, ldx, w, wdtype, bias, n, in_f, out_f, y, ldy);
}

MB_EXPORT int mb_linear_to_bf16(mb_ctx *ctx, const float *x, const uint16_t *x_bf16,
                                int64_t ldx, const void *w, int wdtype, const float *bias,
                                int64_t n, int64_t in_f, int64_t out_f, uint16_t *y,
                                int64_t ldy) {
  CHECK_CTX("mb_linear_to_bf16");
  int st = check_product_shape("mb_linear_to_bf16", n, in_f, out_f, wdtype);
  if (st != MB_OK) return st;
  if (n == 0 || out_f == 0) return MB_OK;
  REQUIRE((x != NULL) != (x_bf16 != NULL),
          "mb_linear_to_bf16: exactly one of x and x_bf16 must be given");
  LD_OK("mb_linear_to_bf16", ldx, in_f);
  LD_OK("mb_linear_to_bf16", ldy, out_f);
  NONNULL("mb_linear_to_bf16", w);
  NONNULL("mb_linear_to_bf16", y);
  DISPATCH(linear_to_bf16, ctx, x, x_bf16, ldx, w, wdtype, bias, n, in_f, out_f, y, ldy);
}

MB_EXPORT int mb_linear_add_norm(mb_ctx *ctx, const float *x, const uint16_t *x_bf16, int64_t ldx,
                                 const void *w, int wdtype, const float *bias, int64_t n,
                                 int64_t in_f, int64_t out_f, float *h_scratch, float *residual,
                                 int accumulate, const float *norm_weight, const float *norm_bias,
                                 int norm_kind, float eps, float *out, uint16_t *out_bf16) {
  CHECK_CTX("mb_linear_add_norm");
  int st = check_product_shape("mb_linear_add_norm", n, in_f, out_f, wdtype);
  if (st != MB_OK) return st;
  REQUIRE(norm_kind == MB_NORM_LAYER || norm_kind == MB_NORM_RMS,
          "mb_linear_add_norm: unknown norm_kind %d (MB_NORM_LAYER = 0, MB_NORM_RMS = 1)",
          norm_kind);
  REQUIRE(eps >= 0.0f && isfinite(eps), "mb_linear_add_norm: eps (%g) must be finite and >= 0",
          (double)eps);
  if (n == 0 || out_f == 0) return MB_OK;
  REQUIRE((x != NULL) != (x_bf16 != NULL),
          "mb_linear_add_norm: exactly one of x and x_bf16 must be given");
  LD_OK("mb_linear_add_norm", ldx, in_f);
  NONNULL("mb_linear_add_norm", w);
  NONNULL("mb_linear_add_norm", h_scratch);
  NONNULL("mb_linear_add_norm", residual);
  NONNULL("mb_linear_add_norm", norm_weight);
  REQUIRE(out || out_bf16, "mb_linear_add_norm: out and out_bf16 are both NULL");
  DISPATCH(linear_add_norm, ctx, x, x_bf16, ldx, w, wdtype, bias, n, in_f, out_f, h_scratch,
           residual, accumulate, norm_weight, norm_bias, norm_kind, eps, out, out_bf16);
}

MB_EXPORT int mb_to_f16_scaled(mb_ctx *ctx, const float *x, int64_t ldx, int64_t rows,
                               int64_t cols, uint16_t *out, int32_t *out_exp) {
  CHECK_CTX("mb_to_f16_scaled");
  NONNEG("mb_to_f16_scaled", rows);
  NONNEG("mb_to_f16_scaled", cols);
  if (rows == 0 || cols == 0) return MB_OK; /* nothing written, out_exp included */
  LD_OK("mb_to_f16_scaled", ldx, cols);
  NONNULL("mb_to_f16_scaled", x);
  NONNULL("mb_to_f16_scaled", out);
  NONNULL("mb_to_f16_scaled", out_exp);
  DISPATCH(to_f16_scaled, ctx, x, ldx, rows, cols, out, out_exp);
}

MB_EXPORT int mb_linear_f16(mb_ctx *ctx, const float *x, const uint16_t *x_f16,
                            const int32_t *x_exp, int64_t ldx, const uint16_t *w_f16,
                            const int32_t *w_exp, const float *bias, int64_t n, int64_t in_f,
                            int64_t out_f, float *y, int64_t ldy, int accumulate,
                            uint16_t *y_f16, int32_t *y_exp) {
  CHECK_CTX("mb_linear_f16");
  NONNEG("mb_linear_f16", n);
  REQUIRE(in_f >= 1, "mb_linear_f16: in_f (%lld) < 1", (ll)in_f);
  NONNEG("mb_linear_f16", out_f);
  if (n == 0 || out_f == 0) return MB_OK;
  REQUIRE((x != NULL) != (x_f16 != NULL),
          "mb_linear_f16: exactly one of x and x_f16 must be given");
  if (x_f16) NONNULL("mb_linear_f16", x_exp);
  LD_OK("mb_linear_f16", ldx, in_f);
  LD_OK("mb_linear_f16", ldy, out_f);
  NONNULL("mb_linear_f16", w_f16);
  NONNULL("mb_linear_f16", w_exp);
  if (y_f16) {
    REQUIRE(!y && !bias && !accumulate,
            "mb_linear_f16: y_f16 is given with y, a bias or accumulate set");
    NONNULL("mb_linear_f16", y_exp);
  } else {
    NONNULL("mb_linear_f16", y);
  }
  DISPATCH(linear_f16, ctx, x, x_f16, x_exp, ldx, w_f16, w_exp, bias, n, in_f, out_f, y, ldy,
           accumulate, y_f16, y_exp);
}

MB_EXPORT int mb_add_norm_f16(mb_ctx *ctx, const float *x, float *residual, int accumulate,
                              const float *weight, const float *bias, int norm_kind, float eps,
                              int64_t n, int64_t d, uint16_t *out_f16, int32_t *out_exp,
                              int exp_given) {
  CHECK_CTX("mb_add_norm_f16");
  const int st = check_norm_shape("mb_add_norm_f16", n, d, norm_kind, eps);
  if (st != MB_OK) return st;
  if (n == 0 || d == 0) return MB_OK;
  NONNULL("mb_add_norm_f16", x);
  NONNULL("mb_add_norm_f16", residual);
  NONNULL("mb_add_norm_f16", weight);
  NONNULL("mb_add_norm_f16", out_f16);
  NONNULL("mb_add_norm_f16", out_exp);
  /* the residual would be added to itself: the sum is meant to be in it already */
  REQUIRE(!(accumulate && x == residual),
          "mb_add_norm_f16: x equals residual with accumulate set");
  REQUIRE(exp_given == 0 || exp_given == 1, "mb_add_norm_f16: exp_given (%d) is not 0 or 1",
          exp_given);
  DISPATCH(add_norm_f16, ctx, x, residual, accumulate, weight, bias, norm_kind, eps, n, d, out_f16,
           out_exp, exp_given);
}

MB_EXPORT int mb_causal_conv1d(mb_ctx *ctx, const float *x, const uint16_t *x_bf16, int64_t ldx,
                               const float *w, const float *bias, float *conv_state,
                               int64_t batch, int64_t len, int64_t d, int64_t k, float *out,
                               int64_t ldo, float *out_preact, uint16_t *out16,
                               const int32_t *out16_f16_exp) {
  CHECK_CTX("mb_causal_conv1d");
  NONNEG("mb_causal_conv1d", batch);
  NONNEG("mb_causal_conv1d", len);
  NONNEG("mb_causal_conv1d", d);
  REQUIRE(k >= 1, "mb_causal_conv1d: k (%lld) < 1", (ll)k);
  if (batch == 0 || len == 0 || d == 0) return MB_OK;
  LD_OK("mb_causal_conv1d", ldx, d);
  LD_OK("mb_causal_conv1d", ldo, d);
  REQUIRE((x != NULL) != (x_bf16 != NULL),
          "mb_causal_conv1d: exactly one of x and x_bf16 must be given");
  NONNULL("mb_causal_conv1d", w);
  REQUIRE(out || out16, "mb_causal_conv1d: out and out16 are both NULL");
  REQUIRE(!out16_f16_exp || out16, "mb_causal_conv1d: out16_f16_exp needs out16");
  DISPATCH(causal_conv1d, ctx, x, x_bf16, ldx, w, bias, conv_state, batch, len, d, k, out, ldo,
           out_preact, out16, out16_f16_exp);
}

MB_EXPORT int mb_linear_conv1d_step(mb_ctx *ctx, const float *x, int64_t ldx, const void *w,
                                    int wdtype, const float *bias, int64_t n, int64_t in_f,
                                    int64_t out_f, float *y, int64_t ldy, const float *conv_w,
                                    const float *conv_bias, float *conv_state, int64_t d_conv,
                                    int64_t k, float *xc, int64_t ldo) {
  static const char fn[] = "mb_linear_conv1d_step";
  CHECK_CTX("mb_linear_conv1d_step");
  NONNEG("mb_linear_conv1d_step", n);
  NONNEG("mb_linear_conv1d_step", out_f);
  NONNEG("mb_linear_conv1d_step", d_conv);
  DTYPE16_OK("mb_linear_conv1d_step", wdtype);
  REQUIRE(in_f >= 1, "%s: in_f (%lld) < 1", fn, (ll)in_f);
  REQUIRE(wdtype != MB_DTYPE_F16 || !IS_CUDA(ctx) || n <= 8,
          "%s: fp16 weights on CUDA: at most 8 rows (the decoding GEMV), not %lld", fn, (ll)n);
  REQUIRE(k >= 1, "%s: k (%lld) < 1", fn, (ll)k);
  REQUIRE(d_conv <= out_f, "%s: d_conv (%lld) > out_f (%lld)", fn, (ll)d_conv, (ll)out_f);
  if (n == 0 || out_f == 0) return MB_OK;
  LD_OK("mb_linear_conv1d_step", ldx, in_f);
  LD_OK("mb_linear_conv1d_step", ldy, out_f);
  NONNULL("mb_linear_conv1d_step", x);
  NONNULL("mb_linear_conv1d_step", w);
  NONNULL("mb_linear_conv1d_step", y);
  if (d_conv > 0) {
    LD_OK("mb_linear_conv1d_step", ldo, d_conv);
    NONNULL("mb_linear_conv1d_step", conv_w);
    NONNULL("mb_linear_conv1d_step", conv_state);
    NONNULL("mb_linear_conv1d_step", xc);
  }
  if (wdtype == MB_DTYPE_F16 && !IS_CUDA(ctx)) { /* the CPU widens them (its products are fp32) */
    float *wf = widen_f16(w, out_f * in_f, fn);
    if (!wf) return MB_ERR_OOM;
    const int st = mb_linear_conv1d_step(ctx, x, ldx, wf, MB_DTYPE_F32, bias, n, in_f, out_f, y,
                                         ldy, conv_w, conv_bias, conv_state, d_conv, k, xc, ldo);
    free(wf);
    return st;
  }
  if (ctx->flags & MB_FLAG_UNFUSED_STEPS) { /* the two plain ops, as the header spells them */
    int st = mb_linear(ctx, x, ldx, w, wdtype, bias, n, in_f, out_f, y, ldy);
    if (st != MB_OK || d_conv == 0) return st;
    return mb_causal_conv1d(ctx, y, NULL, ldy, conv_w, conv_bias, conv_state, n, 1, d_conv, k, xc,
                            ldo, NULL, NULL, NULL);
  }
  DISPATCH(linear_conv1d_step, ctx, x, ldx, w, wdtype, bias, n, in_f, out_f, y, ldy, conv_w,
           conv_bias, conv_state, d_conv, k, xc, ldo);
}

MB_EXPORT int mb_conv1d_step_linear(mb_ctx *ctx, const float *x, int64_t ldx,
                                    const float *conv_w, const float *conv_bias,
                                    float *conv_state, int64_t n, int64_t d, int64_t k, float *xc,
                                    int64_t ldo, const void *w, int wdtype, const float *bias,
                                    int64_t out_f, float *y, int64_t ldy) {
  static const char fn[] = "mb_conv1d_step_linear";
  CHECK_CTX("mb_conv1d_step_linear");
  NONNEG("mb_conv1d_step_linear", n);
  NONNEG("mb_conv1d_step_linear", out_f);
  DTYPE_OK("mb_conv1d_step_linear", wdtype);
  REQUIRE(d >= 1, "%s: d (%lld) < 1", fn, (ll)d);
  REQUIRE(k >= 1, "%s: k (%lld) < 1", fn, (ll)k);
  if (n == 0) return MB_OK;
  LD_OK("mb_conv1d_step_linear", ldx, d);
  LD_OK("mb_conv1d_step_linear", ldo, d);
  NONNULL("mb_conv1d_step_linear", x);
  NONNULL("mb_conv1d_step_linear", conv_w);
  NONNULL("mb_conv1d_step_linear", conv_state);
  NONNULL("mb_conv1d_step_linear", xc);
  if (out_f > 0) {
    LD_OK("mb_conv1d_step_linear", ldy, out_f);
    NONNULL("mb_conv1d_step_linear", w);
    NONNULL("mb_conv1d_step_linear", y);
  }
  DISPATCH(conv1d_step_linear, ctx, x, ldx, conv_w, conv_bias, conv_state, n, d, k, xc, ldo, w,
           wdtype, bias, out_f, y, ldy);
}

MB_EXPORT int mb_linear_bf16_conv1d_step_linear(mb_ctx *ctx, const uint16_t *x, int64_t ldx,
                                                const void *w, int wdtype, int64_t n,
                                                int64_t in_f, int64_t out_f, float *y,
                                                int64_t ldy, const float *conv_w,
                                                const float *conv_bias, float *conv_state,
                                                int64_t d, int64_t k, float *xc, int64_t ldo,
                                                const void *w2, int64_t out_f2, float *y2,
                                                int64_t ldy2) {
  static const char fn[] = "mb_linear_bf16_conv1d_step_linear";
  CHECK_CTX("mb_linear_bf16_conv1d_step_linear");
  int st = check_product_shape(fn, n, in_f, out_f, wdtype);
  if (st != MB_OK) return st;
  NONNEG("mb_linear_bf16_conv1d_step_linear", out_f2);
  REQUIRE(d >= 1 && d <= out_f, "%s: d (%lld) not in 1..out_f (%lld)", fn, (ll)d, (ll)out_f);
  REQUIRE(k >= 1, "%s: k (%lld) < 1", fn, (ll)k);
  if (n == 0) return MB_OK;
  LD_OK("mb_linear_bf16_conv1d_step_linear", ldx, in_f);
  LD_OK("mb_linear_bf16_conv1d_step_linear", ldy, out_f);
  LD_OK("mb_linear_bf16_conv1d_step_linear", ldo, d);
  NONNULL("mb_linear_bf16_conv1d_step_linear", x);
  NONNULL("mb_linear_bf16_conv1d_step_linear", w);
  NONNULL("mb_linear_bf16_conv1d_step_linear", y);
  NONNULL("mb_linear_bf16_conv1d_step_linear", conv_w);
  NONNULL("mb_linear_bf16_conv1d_step_linear", conv_state);
  NONNULL("mb_linear_bf16_conv1d_step_linear", xc);
  if (out_f2 > 0) {
    LD_OK("mb_linear_bf16_conv1d_step_linear", ldy2, out_f2);
    NONNULL("mb_linear_bf16_conv1d_step_linear", w2);
    NONNULL("mb_linear_bf16_conv1d_step_linear", y2);
  }
#ifdef MB_WITH_CUDA
  if (IS_CUDA(ctx) && !(ctx->flags & MB_FLAG_UNFUSED_STEPS))
    return mbcuda_linear_bf16_conv1d_step_linear(ctx, x, ldx, w, wdtype, n, in_f, out_f, y, ldy,
                                                 conv_w, conv_bias, conv_state, d, k, xc, ldo,
                                                 w2, out_f2, y2, ldy2);
#endif
  st = mb_linear_bf16(ctx, x, ldx, w, wdtype, NULL, n, in_f, out_f, y, ldy);
  if (st != MB_OK) return st;
  return mb_conv1d_step_linear(ctx, y, ldy, conv_w, conv_bias, conv_state, n, d, k, xc, ldo, w2,
                               wdtype, NULL, out_f2, y2, ldy2);
}

static int scan_check(const char *fn, mb_ctx *ctx, const float *u, int64_t ldu,
                      const float *delta, int64_t ld_delta, const float *A, const float *Bm,
                      int64_t ldb, const float *Cm, int64_t ldc, const float *z, int64_t ldz,
                      int64_t batch, int64_t len, int64_t d, int64_t n, float *y, int64_t ldy) {
  if (!ctx) return mb_fail(MB_ERR_INVALID, "%s: ctx is NULL", fn);
  REQUIRE(batch >= 0, "%s: batch (%lld) < 0", fn, (ll)batch);
  REQUIRE(len >= 0, "%s: len (%lld) < 0", fn, (ll)len);
  REQUIRE(d >= 0, "%s: d (%lld) < 0", fn, (ll)d);
  REQUIRE(n >= 1, "%s: n (%lld) < 1", fn, (ll)n);
  if (batch == 0 || len == 0 || d == 0) return -1; /* nothing to do */
  REQUIRE(ldu >= d, "%s: ldu (%lld) < d (%lld)", fn, (ll)ldu, (ll)d);
  REQUIRE(ld_delta >= d, "%s: ld_delta (%lld) < d (%lld)", fn, (ll)ld_delta, (ll)d);
  REQUIRE(ldb >= n, "%s: ldb (%lld) < n (%lld)", fn, (ll)ldb, (ll)n);
  REQUIRE(ldc >= n, "%s: ldc (%lld) < n (%lld)", fn, (ll)ldc, (ll)n);
  REQUIRE(ldy >= d, "%s: ldy (%lld) < d (%lld)", fn, (ll)ldy, (ll)d);
  REQUIRE(!z || ldz >= d, "%s: ldz (%lld) < d (%lld)", fn, (ll)ldz, (ll)d);
  REQUIRE(u, "%s: u is NULL", fn);
  REQUIRE(delta, "%s: delta is NULL", fn);
  REQUIRE(A, "%s: A is NULL", fn);
  REQUIRE(Bm, "%s: Bm is NULL", fn);
  REQUIRE(Cm, "%s: Cm is NULL", fn);
  REQUIRE(y, "%s: y is NULL", fn);
  return MB_OK;
}

MB_EXPORT int mb_selective_scan(mb_ctx *ctx, const float *u, const uint16_t *u_bf16, int64_t ldu,
                                const float *delta, const uint16_t *delta_bf16, int64_t ld_delta,
                                const float *delta_bias, const float *A, const float *Bm,
                                int64_t ldb, const float *Cm, int64_t ldc, const float *Dskip,
                                const float *z, const uint16_t *z_bf16, int64_t ldz, float *state,
                                float *states_all, int64_t batch, int64_t len, int64_t d,
                                int64_t n, int delta_softplus, float *y, int64_t ldy,
                                uint16_t *y_bf16, int32_t *y_f16_exp,
                                const int32_t *u_f16_exp, const int32_t *delta_f16_exp) {
  static const char fn[] = "mb_selective_scan";
  REQUIRE(!(u && u_bf16), "%s: u and u_bf16 are both given", fn);
  REQUIRE(!(delta && delta_bf16), "%s: delta and delta_bf16 are both given", fn);
  REQUIRE(!(z && z_bf16), "%s: z and z_bf16 are both given", fn);
  REQUIRE(!y_f16_exp || y, "%s: y_f16_exp needs y", fn);
  REQUIRE(!u_f16_exp || u_bf16, "%s: u_f16_exp needs u_bf16 (u's fp16 rows)", fn);
  REQUIRE(!delta_f16_exp || delta_bf16, "%s: delta_f16_exp needs delta_bf16 (delta's fp16 rows)",
          fn);
  /* the checks see each operand as given, fp32 or bf16 */
  const float *uu = u ? u : (const float *)u_bf16;
  const float *dd = delta ? delta : (const float *)delta_bf16;
  const float *zz = z ? z : (const float *)z_bf16;
  int st = scan_check(fn, ctx, uu, ldu, dd, ld_delta, A, Bm, ldb, Cm, ldc, zz, ldz, batch, len, d,
                      n, y ? y : (float *)y_bf16, ldy);
  if (st != MB_OK) return st < 0 ? MB_OK : st;
  DISPATCH(selective_scan, ctx, u, u_bf16, ldu, delta, delta_bf16, ld_delta, delta_bias, A, Bm,
           ldb, Cm, ldc, Dskip, z, z_bf16, ldz, state, states_all, batch, len, d, n,
           delta_softplus, y, ldy, y_bf16, y_f16_exp, u_f16_exp, delta_f16_exp);
}

/* The checks of the two ops that compute delta from x_dbl (dt_proj) before the update: delta is
 * computed, not read, so the rest is validated as the plain scan with ld d. Returns MB_OK, an
 * error status, or a negative value when there is nothing to do (as scan_check). */
static int scan_dt_check(const char *fn, mb_ctx *ctx, const float *u, int64_t ldu,
                         const float *x_dbl, int64_t ld_xdbl, const void *dt_w, int wdtype,
                         int64_t dt_rank, const float *A, const float *Bm, int64_t ldb,
                         const float *Cm, int64_t ldc, const float *z, int64_t ldz,
                         const float *state, int64_t batch, int64_t len, int64_t d, int64_t n,
                         float *y, int64_t ldy) {
  if (!ctx) return mb_fail(MB_ERR_INVALID, "%s: ctx is NULL", fn);
  REQUIRE(dt_rank >= 0, "%s: dt_rank (%lld) < 0", fn, (ll)dt_rank);
  REQUIRE(x_dbl || batch <= 0 || len <= 0 || d <= 0, "%s: x_dbl is NULL", fn);
  int st = scan_check(fn, ctx, u, ldu, x_dbl, d, A, Bm, ldb, Cm, ldc, z, ldz, batch, len, d, n, y,
                      ldy);
  if (st != MB_OK) return st;
  REQUIRE(dt_rank >= 1, "%s: dt_rank (%lld) < 1", fn, (ll)dt_rank);
  REQUIRE(ld_xdbl >= dt_rank, "%s: ld_xdbl (%lld) < dt_rank (%lld)", fn, (ll)ld_xdbl,
          (ll)dt_rank);
  REQUIRE(dt_w, "%s: dt_w is NULL", fn);
  REQUIRE(state, "%s: state is NULL", fn);
  REQUIRE(wdtype == MB_DTYPE_F32 || wdtype == MB_DTYPE_BF16,
          "%s: unknown wdtype %d (MB_DTYPE_F32 = 0, MB_DTYPE_BF16 = 1)", fn, wdtype);
  return MB_OK;
}

MB_EXPORT int mb_selective_state_update_dt(mb_ctx *ctx, const float *u, int64_t ldu,
                                           const float *x_dbl, int64_t ld_xdbl, const void *dt_w,
                                           int wdtype, const float *dt_bias, int64_t dt_rank,
                                           const float *A, const float *Bm, int64_t ldb,
                                           const float *Cm, int64_t ldc, const float *Dskip,
                                           const float *z, int64_t ldz, float *state,
                                           int64_t batch, int64_t d, int64_t n,
                                           int delta_softplus, float *delta_out, float *y,
                                           int64_t ldy, uint16_t *y_bf16) {
  static const char fn[] = "mb_selective_state_update_dt";
  int st = scan_dt_check(fn, ctx, u, ldu, x_dbl, ld_xdbl, dt_w, wdtype, dt_rank, A, Bm, ldb, Cm,
                         ldc, z, ldz, state, batch, 1, d, n, y, ldy);
  if (st != MB_OK) return st < 0 ? MB_OK : st;
  if (ctx->flags & MB_FLAG_UNFUSED_STEPS) { /* the two plain ops, as the header spells them */
    REQUIRE(delta_out, "%s: delta_out is NULL (MB_FLAG_UNFUSED_STEPS keeps delta there)", fn);
    int st = mb_linear(ctx, x_dbl, ld_xdbl, dt_w, wdtype, dt_bias, batch, dt_rank, d, delta_out, d);
    if (st != MB_OK) return st;
    return mb_selective_scan(ctx, u, NULL, ldu, delta_out, NULL, d, NULL, A, Bm, ldb, Cm, ldc,
                             Dskip, z, NULL, ldz, state, NULL, batch, 1, d, n, delta_softplus, y,
                             ldy, y_bf16, NULL, NULL, NULL);
  }
  DISPATCH(selective_state_update_dt, ctx, u, ldu, x_dbl, ld_xdbl, dt_w, wdtype, dt_bias, dt_rank,
           A, Bm, ldb, Cm, ldc, Dskip, z, ldz, state, batch, d, n, delta_softplus, delta_out, y,
           ldy, y_bf16);
}

MB_EXPORT int mb_selective_scan_dt(mb_ctx *ctx, const float *u, int64_t ldu, const float *x_dbl,
                                   int64_t ld_xdbl, const void *dt_w, int wdtype,
                                   const float *dt_bias, int64_t dt_rank, const float *A,
                                   const float *Bm, int64_t ldb, const float *Cm, int64_t ldc,
                                   const float *Dskip, const float *z, int64_t ldz, float *state,
                                   float *states_all, int64_t batch, int64_t len, int64_t d,
                                   int64_t n, int delta_softplus, float *delta_out, float *y,
                                   int64_t ldy) {
  static const char fn[] = "mb_selective_scan_dt";
  int st = scan_dt_check(fn, ctx, u, ldu, x_dbl, ld_xdbl, dt_w, wdtype, dt_rank, A, Bm, ldb, Cm,
                         ldc, z, ldz, state, batch, len, d, n, y, ldy);
  if (st != MB_OK) return st < 0 ? MB_OK : st;
  if (ctx->flags & MB_FLAG_UNFUSED_STEPS) { /* the two plain ops, as the header spells them */
    REQUIRE(delta_out, "%s: delta_out is NULL (MB_FLAG_UNFUSED_STEPS keeps delta there)", fn);
    const int64_t rows = batch * len;
    for (int64_t r = 0; r < rows; r += 8) {
      const int64_t m = rows - r < 8 ? rows - r : 8;
      int st = mb_linear(ctx, x_dbl + r * ld_xdbl, ld_xdbl, dt_w, wdtype, dt_bias, m, dt_rank, d,
                         delta_out + r * d, d);
      if (st != MB_OK) return st;
    }
    return mb_selective_scan(ctx, u, NULL, ldu, delta_out, NULL, d, NULL, A, Bm, ldb, Cm, ldc,
                             Dskip, z, NULL, ldz, state, states_all, batch, len, d, n,
                             delta_softplus, y, ldy, NULL, NULL, NULL, NULL);
  }
  DISPATCH(selective_scan_dt, ctx, u, ldu, x_dbl, ld_xdbl, dt_w, wdtype, dt_bias, dt_rank, A, Bm,
           ldb, Cm, ldc, Dskip, z, ldz, state, states_all, batch, len, d, n, delta_softplus,
           delta_out, y, ldy);
}

/* The checks of the per-layer calls (mb_decode_layers, mb_verify_layers, mb_resume_layers): the
 * norm kind and the dimensions, and the table's pointers that every layer needs. */
static int check_layer_shape(const char *fn, int norm_kind, int64_t d_model, int64_t d_inner,
                             int64_t d_state, int64_t dt_rank, int64_t d_conv) {
  REQUIRE(norm_kind == MB_NORM_LAYER || norm_kind == MB_NORM_RMS,
          "%s: unknown norm_kind %d (MB_NORM_LAYER = 0, MB_NORM_RMS = 1)", fn, norm_kind);
  REQUIRE(d_model >= 1 && d_inner >= 1 && d_state >= 1 && dt_rank >= 1 && d_conv >= 1,
          "%s: d_model, d_inner, d_state, dt_rank and d_conv must be >= 1", fn);
  return MB_OK;
}

/* A step's and a verification pass's required pointers (the others may be 0). */
static const int STEP_REQUIRED[] = {MB_DL_NORM_W, MB_DL_IN_W, MB_DL_CONV_W, MB_DL_CONV_STATE,
                                    MB_DL_X_W, MB_DL_DT_W, MB_DL_A, MB_DL_SSM_STATE, MB_DL_OUT_W};
#define N_STEP_REQUIRED (sizeof STEP_REQUIRED / sizeof STEP_REQUIRED[0])

/* The checks mb_verify_layers and mb_resume_layers share: the table's required pointers. */
static int check_layer_table(const char *fn, const uint64_t *layers, int64_t n_layer,
                             const int *required, size_t nreq) {
  for (int64_t i = 0; i < n_layer; i++)
    for (size_t q = 0; q < nreq; q++)
      REQUIRE(layers[i * MB_DL_PTRS + required[q]] != 0, "%s: layer %lld: pointer %d is NULL", fn,
              (ll)i, required[q]);
  return MB_OK;
}

/* A layer table's dtype (MB_DTYPE_F32_F16IO or a plain one): in_proj's and out_proj's, the
 * other matrices'. */
static int table_io_dtype(int wdtype) {
  return wdtype == MB_DTYPE_F32_F16IO ? MB_DTYPE_F16 : wdtype;
}
static int table_mat_dtype(int wdtype) {
  return wdtype == MB_DTYPE_F32_F16IO ? MB_DTYPE_F32 : wdtype;
}

MB_EXPORT int mb_decode_layers(mb_ctx *ctx, const uint64_t *layers, int64_t n_layer,
                               int64_t batch, int64_t d_model, int64_t d_inner, int64_t d_state,
                               int64_t dt_rank, int64_t d_conv, int wdtype, int norm_kind,
                               float eps, float *hidden, float *residual, float *normed,
                               float *xz, float *xc, float *x_dbl, float *delta, float *y) {
  static const char fn[] = "mb_decode_layers";
  CHECK_CTX("mb_decode_layers");
  NONNEG("mb_decode_layers", n_layer);
  NONNEG("mb_decode_layers", batch);
  DTYPE_TABLE_OK("mb_decode_layers", wdtype);
  int st = check_layer_shape(fn, norm_kind, d_model, d_inner, d_state, dt_rank, d_conv);
  if (st != MB_OK) return st;
  if (n_layer == 0 || batch == 0) return MB_OK;
  NONNULL("mb_decode_layers", layers);
  NONNULL("mb_decode_layers", hidden);
  NONNULL("mb_decode_layers", residual);
  NONNULL("mb_decode_layers", normed);
  NONNULL("mb_decode_layers", xz);
  NONNULL("mb_decode_layers", xc);
  NONNULL("mb_decode_layers", x_dbl);
  NONNULL("mb_decode_layers", delta);
  NONNULL("mb_decode_layers", y);
  st = check_layer_table(fn, layers, n_layer, STEP_REQUIRED, N_STEP_REQUIRED);
  if (st != MB_OK) return st;
  const int64_t dx = dt_rank + 2 * d_state;
  const int io_dt = table_io_dtype(wdtype), mat_dt = table_mat_dtype(wdtype);
  /* CUDA at batch 1: the norm runs inside in_proj's kernel and the residual add in the previous
   * out_proj's, one kernel fewer a layer with the same bits (decided once, before any work) */
  int fused = 0;
#ifdef MB_WITH_CUDA
  if (IS_CUDA(ctx) && batch == 1 && !(ctx->flags & MB_FLAG_UNFUSED_STEPS))
    fused = mbcuda_norm_in_proj_ok(ctx, d_model, 2 * d_inner);
#endif
  for (int64_t i = 0; i < n_layer; i++) {
    const uint64_t *P = layers + i * MB_DL_PTRS;
#define DL_PTR(T, k) ((T)(uintptr_t)P[MB_DL_##k])
    st = MB_OK;
#ifdef MB_WITH_CUDA
    if (fused) {
      const mbcuda_norm_in_proj a = {
          i == 0 ? hidden : residual, i == 0 ? residual : NULL, i > 0,
          DL_PTR(const float *, NORM_W), DL_PTR(const float *, NORM_B), norm_kind, eps, d_model,
          DL_PTR(const void *, IN_W), io_dt, DL_PTR(const float *, IN_B), 2 * d_inner, xz,
          DL_PTR(const float *, CONV_W), DL_PTR(const float *, CONV_B),
          DL_PTR(float *, CONV_STATE), d_inner, d_conv, xc, normed};
      st = mbcuda_norm_in_proj_step(ctx, &a);
    }
#endif
    if (!fused) {
      st = mb_add_norm(ctx, hidden, residual, i > 0, DL_PTR(const float *, NORM_W),
                       DL_PTR(const float *, NORM_B), norm_kind, eps, batch, d_model, normed,
                       NULL);
      if (st == MB_OK)
        st = mb_linear_conv1d_step(ctx, normed, d_model, DL_PTR(const void *, IN_W), io_dt,
                                   DL_PTR(const float *, IN_B), batch, d_model, 2 * d_inner, xz,
                                   2 * d_inner, DL_PTR(const float *, CONV_W),
                                   DL_PTR(const float *, CONV_B), DL_PTR(float *, CONV_STATE),
                                   d_inner, d_conv, xc, d_inner);
    }
    if (st == MB_OK)
      st = mb_linear(ctx, xc, d_inner, DL_PTR(const void *, X_W), mat_dt, NULL, batch, d_inner,
                     dx, x_dbl, dx);
    if (st == MB_OK)
      st = mb_selective_state_update_dt(
          ctx, xc, d_inner, x_dbl, dx, DL_PTR(const void *, DT_W), mat_dt,
          DL_PTR(const float *, DT_B), dt_rank, DL_PTR(const float *, A), x_dbl + dt_rank, dx,
          x_dbl + dt_rank + d_state, dx, DL_PTR(const float *, D), xz + d_inner, 2 * d_inner,
          DL_PTR(float *, SSM_STATE), batch, d_inner, d_state, 1, delta, y, d_inner, NULL);
    /* fused, out_proj makes the next layer's add. The last layer has none to make; with bf16
     * weights it runs the same kernel without it (8 rows a block, its weights asked for before its
     * wait: ~2.8 against 5.9 us exposed as the ops' GEMV on the H200; fp32's 4 rows a block did not
     * show a gain) */
    const int last = i + 1 == n_layer;
    const int res_epi = fused && (!last || io_dt != MB_DTYPE_F32);
#ifdef MB_WITH_CUDA
    if (st == MB_OK && res_epi)
      st = mbcuda_linear_residual(ctx, y, DL_PTR(const void *, OUT_W), io_dt,
                                  DL_PTR(const float *, OUT_B), d_inner, d_model, hidden,
                                  last ? NULL : residual);
#endif
    if (st == MB_OK && !res_epi)
      st = mb_linear(ctx, y, d_inner, DL_PTR(const void *, OUT_W), io_dt,
                     DL_PTR(const float *, OUT_B), batch, d_inner, d_model, hidden, d_model);
#undef DL_PTR
    if (st != MB_OK) return st;
  }
  return MB_OK;
}

/* mb_linear over n rows in calls of at most 8 (each row with a one-row call's bits). */
static int linear_rows8(mb_ctx *ctx, const float *x, int64_t ldx, const void *w, int wdtype,
                        const float *bias, int64_t n, int64_t in_f, int64_t out_f, float *y,
                        int64_t ldy) {
  for (int64_t r0 = 0; r0 < n; r0 += 8) {
    const int64_t m = n - r0 < 8 ? n - r0 : 8;
    const int st = mb_linear(ctx, x + r0 * ldx, ldx, w, wdtype, bias, m, in_f, out_f, y + r0 * ldy,
                             ldy);
    if (st != MB_OK) return st;
  }
  return MB_OK;
}

#define VERIFY_MAX_LEN 65

/* mb_verify_layers' conv: the layer's window saved to conv_save, then advanced over the len
 * positions (on CUDA the conv kernel saves the window as it reads it: no copy). */
static int verify_conv(mb_ctx *ctx, const uint64_t *P, const float *xz, float *conv_save,
                       int64_t len, int64_t d_inner, int64_t d_conv, float *xc) {
  const float *w = (const float *)(uintptr_t)P[MB_DL_CONV_W];
  const float *b = (const float *)(uintptr_t)P[MB_DL_CONV_B];
  float *state = (float *)(uintptr_t)P[MB_DL_CONV_STATE];
#ifdef MB_WITH_CUDA
  if (IS_CUDA(ctx) && d_conv <= 8)
    return mbcuda_conv1d_save(ctx, xz, 2 * d_inner, w, b, state, conv_save, len, d_inner, d_conv,
                              xc, d_inner);
#endif
  int st = mb_memcpy_d2d(ctx, conv_save, state, (size_t)(d_inner * (d_conv - 1)) * sizeof(float));
  if (st == MB_OK)
    st = mb_causal_conv1d(ctx, xz, NULL, 2 * d_inner, w, b, state, 1, len, d_inner, d_conv, xc,
                          d_inner, NULL, NULL, NULL);
  return st;
}

MB_EXPORT int mb_verify_layers(mb_ctx *ctx, const uint64_t *layers, int64_t n_layer, int64_t len,
                               int64_t d_model, int64_t d_inner, int64_t d_state, int64_t dt_rank,
                               int64_t d_conv, int wdtype, int norm_kind, float eps,
                               float *hidden, float *residual, float *normed, float *xc,
                               float *x_dbl, float *delta, float *y, float *saved_xz,
                               float *saved_ssm, float *saved_conv) {
  static const char fn[] = "mb_verify_layers";
  CHECK_CTX("mb_verify_layers");
  NONNEG("mb_verify_layers", n_layer);
  DTYPE_TABLE_OK("mb_verify_layers", wdtype);
  REQUIRE(len >= 1 && len <= VERIFY_MAX_LEN, "%s: len %lld is outside 1..%d", fn, (ll)len,
          VERIFY_MAX_LEN);
  int st = check_layer_shape(fn, norm_kind, d_model, d_inner, d_state, dt_rank, d_conv);
  if (st != MB_OK) return st;
  if (n_layer == 0) return MB_OK;
  NONNULL("mb_verify_layers", layers);
  NONNULL("mb_verify_layers", hidden);
  NONNULL("mb_verify_layers", residual);
  NONNULL("mb_verify_layers", normed);
  NONNULL("mb_verify_layers", xc);
  NONNULL("mb_verify_layers", x_dbl);
  NONNULL("mb_verify_layers", delta);
  NONNULL("mb_verify_layers", y);
  NONNULL("mb_verify_layers", saved_xz);
  NONNULL("mb_verify_layers", saved_ssm);
  NONNULL("mb_verify_layers", saved_conv);
  st = check_layer_table(fn, layers, n_layer, STEP_REQUIRED, N_STEP_REQUIRED);
  if (st != MB_OK) return st;
  const int64_t dx = dt_rank + 2 * d_state, win = d_conv - 1;
  const int io_dt = table_io_dtype(wdtype), mat_dt = table_mat_dtype(wdtype);
  /* CUDA: add + norm inside in_proj's kernel (one kernel fewer a layer, the same bits). The
   * residual sums alternate between `normed` (then unused) and `residual`, ending in `residual`:
   * layer i writes `residual` when n_layer - 1 - i is even. */
  int fused = 0, fused_conv = 0;
#ifdef MB_WITH_CUDA
  if (IS_CUDA(ctx) && !(ctx->flags & MB_FLAG_UNFUSED_STEPS)) {
    fused = mbcuda_verify_in_proj_ok(ctx, d_model, 2 * d_inner, len, io_dt);
    /* and the conv in that kernel's last block of each row group */
    fused_conv = fused && mbcuda_verify_conv_ok(ctx, len, d_inner, d_conv);
  }
#endif
  for (int64_t i = 0; i < n_layer && st == MB_OK; i++) {
    const uint64_t *P = layers + i * MB_DL_PTRS;
#define VL_PTR(T, k) ((T)(uintptr_t)P[MB_DL_##k])
    float *xz = saved_xz + i * len * 2 * d_inner;
    float *ssm_all = saved_ssm + i * len * d_inner * d_state;
    float *conv_save = saved_conv + i * d_inner * win;
#ifdef MB_WITH_CUDA
    if (fused) {
      float *sum_to = (n_layer - 1 - i) % 2 == 0 ? residual : normed;
      const mbcuda_norm_in_proj_rows a = {
          hidden, sum_to == residual ? normed : residual, sum_to, i > 0,
          VL_PTR(const float *, NORM_W), VL_PTR(const float *, NORM_B), norm_kind, eps, d_model,
          len, VL_PTR(const void *, IN_W), io_dt, VL_PTR(const float *, IN_B), 2 * d_inner, xz,
          2 * d_inner, normed,
          fused_conv ? VL_PTR(const float *, CONV_W) : NULL, VL_PTR(const float *, CONV_B),
          VL_PTR(float *, CONV_STATE), conv_save, xc, d_inner, d_conv, d_inner};
      st = mbcuda_verify_in_proj(ctx, &a);
    }
#endif
    if (!fused) {
      st = mb_add_norm(ctx, hidden, residual, i > 0, VL_PTR(const float *, NORM_W),
                       VL_PTR(const float *, NORM_B), norm_kind, eps, len, d_model, normed, NULL);
      if (st == MB_OK)
        st = linear_rows8(ctx, normed, d_model, VL_PTR(const void *, IN_W), io_dt,
                          VL_PTR(const float *, IN_B), len, d_model, 2 * d_inner, xz, 2 * d_inner);
    }
    if (st == MB_OK && !fused_conv)
      st = verify_conv(ctx, P, xz, conv_save, len, d_inner, d_conv, xc);
    if (st == MB_OK)
      st = linear_rows8(ctx, xc, d_inner, VL_PTR(const void *, X_W), mat_dt, NULL, len, d_inner,
                        dx, x_dbl, dx);
    if (st == MB_OK)
      st = mb_selective_scan_dt(ctx, xc, d_inner, x_dbl, dx, VL_PTR(const void *, DT_W), mat_dt,
                                VL_PTR(const float *, DT_B), dt_rank, VL_PTR(const float *, A),
                                x_dbl + dt_rank, dx, x_dbl + dt_rank + d_state, dx,
                                VL_PTR(const float *, D), xz + d_inner, 2 * d_inner,
                                VL_PTR(float *, SSM_STATE), ssm_all, 1, len, d_inner, d_state, 1,
                                delta, y, d_inner);
    if (st == MB_OK)
      st = linear_rows8(ctx, y, d_inner, VL_PTR(const void *, OUT_W), io_dt,
                        VL_PTR(const float *, OUT_B), len, d_inner, d_model, hidden, d_model);
#undef VL_PTR
  }
  return st;
}

MB_EXPORT int mb_resume_layers(mb_ctx *ctx, const uint64_t *layers, int64_t n_layer, int64_t len,
                               int64_t d_inner, int64_t d_state, int64_t d_conv,
                               const float *saved_xz, const float *saved_ssm,
                               const float *saved_conv, const int32_t *sampled,
                               const int32_t *drafted, int32_t *accepted) {
  static const char fn[] = "mb_resume_layers";
  CHECK_CTX("mb_resume_layers");
  NONNEG("mb_resume_layers", n_layer);
  REQUIRE(len >= 1 && len <= VERIFY_MAX_LEN, "%s: len %lld is outside 1..%d", fn, (ll)len,
          VERIFY_MAX_LEN);
  REQUIRE(d_inner >= 1 && d_state >= 1 && d_conv >= 1,
          "%s: d_inner, d_state and d_conv must be >= 1", fn);
  NONNULL("mb_resume_layers", sampled);
  NONNULL("mb_resume_layers", drafted);
  NONNULL("mb_resume_layers", accepted);
  if (n_layer > 0) {
    NONNULL("mb_resume_layers", layers);
    NONNULL("mb_resume_layers", saved_xz);
    NONNULL("mb_resume_layers", saved_ssm);
    NONNULL("mb_resume_layers", saved_conv);
    static const int required[] = {MB_DL_CONV_STATE, MB_DL_SSM_STATE};
    const int st = check_layer_table(fn, layers, n_layer, required, 2);
    if (st != MB_OK) return st;
  }
  DISPATCH(resume_layers, ctx, layers, n_layer, len, d_inner, d_state, d_conv, saved_xz, saved_ssm,
           saved_conv, sampled, drafted, accepted);
}

MB_EXPORT int mb_spec_commit(mb_ctx *ctx, int64_t len, const int32_t *sampled,
                             const int32_t *accepted, int32_t *out, int64_t cap,
                             int64_t *progress, int32_t *ids, int64_t *counters, void *dst,
                             const void *src, int64_t src_stride, int64_t bytes) {
  static const char fn[] = "mb_spec_commit";
  CHECK_CTX("mb_spec_commit");
  REQUIRE(len >= 1 && len <= VERIFY_MAX_LEN, "%s: len %lld is outside 1..%d", fn, (ll)len,
          VERIFY_MAX_LEN);
  NONNEG("mb_spec_commit", cap);
  NONNEG("mb_spec_commit", bytes);
  REQUIRE(src_stride >= bytes, "%s: src_stride (%lld) < bytes (%lld)", fn, (ll)src_stride,
          (ll)bytes);
  NONNULL("mb_spec_commit", sampled);
  NONNULL("mb_spec_commit", accepted);
  NONNULL("mb_spec_commit", progress);
  NONNULL("mb_spec_commit", ids);
  NONNULL("mb_spec_commit", counters);
  if (cap > 0) NONNULL("mb_spec_commit", out);
  if (bytes > 0) {
    NONNULL("mb_spec_commit", dst);
    NONNULL("mb_spec_commit", src);
  }
  DISPATCH(spec_commit, ctx, len, sampled, accepted, out, cap, progress, ids, counters, dst, src,
           src_stride, bytes);
}

/* mb_draft_greedy's two halves of a drafted byte, in the header's order: the byte at `id` through
 * the embedding and the layers, then norm_f and lm_head into logits. */
static int draft_read(mb_ctx *ctx, const int32_t *id, const uint64_t *layers, int64_t n_layer,
                      int64_t d_model, int64_t d_inner, int64_t d_state, int64_t dt_rank,
                      int64_t d_conv, int wdtype, int norm_kind, float eps, const void *embedding,
                      int64_t vocab_rows, float *hidden, float *residual, float *normed,
                      float *xz, float *xc, float *x_dbl, float *delta, float *y) {
  int st = mb_embedding(ctx, id, 1, embedding, wdtype, vocab_rows, d_model, hidden);
  if (st == MB_OK)
    st = mb_decode_layers(ctx, layers, n_layer, 1, d_model, d_inner, d_state, dt_rank, d_conv,
                          wdtype, norm_kind, eps, hidden, residual, normed, xz, xc, x_dbl, delta,
                          y);
  return st;
}
static int draft_head(mb_ctx *ctx, int64_t n_layer, int64_t d_model, int wdtype, int norm_kind,
                      float eps, const float *norm_f_w, const float *norm_f_b, const void *lm_head,
                      int64_t vocab_out, float *hidden, float *residual, float *normed,
                      float *logits) {
  int st = mb_add_norm(ctx, hidden, residual, n_layer > 0, norm_f_w, norm_f_b, norm_kind, eps, 1,
                       d_model, normed, NULL);
  if (st == MB_OK)
    st = mb_linear(ctx, normed, d_model, lm_head, wdtype, NULL, 1, d_model, vocab_out, logits,
                   vocab_out);
  return st;
}

/* The drafter's k drafts (mambabyte.h): the ops in the order the header gives, on every backend. */
#define DRAFT_MAX_K 64
MB_EXPORT int mb_draft_greedy(mb_ctx *ctx, const uint64_t *layers, int64_t n_layer,
                              int64_t d_model, int64_t d_inner, int64_t d_state, int64_t dt_rank,
                              int64_t d_conv, int wdtype, int norm_kind, float eps,
                              const void *embedding, int64_t vocab_rows, const float *norm_f_w,
                              const float *norm_f_b, const void *lm_head, int64_t vocab_out,
                              float *hidden, float *residual, float *normed, float *xz, float *xc,
                              float *x_dbl, float *delta, float *y, const int32_t *read_id,
                              float *logits, int64_t *counter, void *state, int64_t state_bytes,
                              void *stack, int32_t *ids, int64_t k) {
  static const char fn[] = "mb_draft_greedy";
  CHECK_CTX("mb_draft_greedy");
  REQUIRE(k >= 1 && k <= DRAFT_MAX_K, "%s: k %lld is outside 1..%d", fn, (ll)k, DRAFT_MAX_K);
  NONNEG("mb_draft_greedy", n_layer);
  REQUIRE(vocab_rows >= 1 && vocab_out >= 1, "%s: vocab_rows and vocab_out must be >= 1", fn);
  REQUIRE(state_bytes >= 1, "%s: state_bytes must be >= 1", fn);
  DTYPE_OK("mb_draft_greedy", wdtype);
  int st = check_layer_shape(fn, norm_kind, d_model, d_inner, d_state, dt_rank, d_conv);
  if (st != MB_OK) return st;
  NONNULL("mb_draft_greedy", embedding);
  NONNULL("mb_draft_greedy", norm_f_w);
  NONNULL("mb_draft_greedy", lm_head);
  NONNULL("mb_draft_greedy", logits);
  NONNULL("mb_draft_greedy", counter);
  NONNULL("mb_draft_greedy", state);
  NONNULL("mb_draft_greedy", stack);
  NONNULL("mb_draft_greedy", ids);
  if (n_layer > 0) NONNULL("mb_draft_greedy", layers);
  /* the table's states must lie inside the state that is copied */
  for (int64_t i = 0; i < n_layer; i++) {
    const uint64_t *P = layers + i * MB_DL_PTRS;
    const uint64_t lo = (uint64_t)(uintptr_t)state, hi = lo + (uint64_t)state_bytes;
    const uint64_t cs = P[MB_DL_CONV_STATE], ss = P[MB_DL_SSM_STATE];
    const uint64_t cb = (uint64_t)(d_inner * (d_conv - 1)) * 4, sb = (uint64_t)(d_inner * d_state) * 4;
    REQUIRE(cs >= lo && cs + cb <= hi && ss >= lo && ss + sb <= hi,
            "%s: layer %lld's conv window or SSM state lies outside [state, state + state_bytes)",
            fn, (ll)i);
  }
#ifdef MB_WITH_CUDA
  /* CUDA: one cluster launch where the drafter's shape allows (its matrices in bf16) */
  if (IS_CUDA(ctx) && n_layer > 0 && vocab_rows >= vocab_out &&
      mbcuda_draft_cluster_ok(ctx, n_layer, d_model, d_inner, d_state, dt_rank, d_conv, vocab_out))
    return mbcuda_draft_cluster(ctx, layers, n_layer, d_model, d_inner, d_state, dt_rank, wdtype,
                                norm_kind, eps, embedding, vocab_rows, norm_f_w, norm_f_b, lm_head,
                                vocab_out, read_id, logits, counter, state, state_bytes, stack,
                                ids, k);
#endif
#define DRAFT_READ(id)                                                                        \
  draft_read(ctx, id, layers, n_layer, d_model, d_inner, d_state, dt_rank, d_conv, wdtype,        \
             norm_kind, eps, embedding, vocab_rows, hidden, residual, normed, xz, xc, x_dbl,     \
             delta, y)
#define DRAFT_HEAD()                                                                          \
  draft_head(ctx, n_layer, d_model, wdtype, norm_kind, eps, norm_f_w, norm_f_b, lm_head,        \
             vocab_out, hidden, residual, normed, logits)
  if (read_id) { /* the byte at read_id first: its logits are the first draft's */
    st = DRAFT_READ(read_id);
    if (st == MB_OK) st = DRAFT_HEAD();
    if (st != MB_OK) return st;
  }
  st = mb_sample(ctx, logits, 1, vocab_out, 1.0f, 1, 0.0f, 0, counter, ids);
  if (st == MB_OK) st = mb_memcpy_d2d(ctx, stack, state, (size_t)state_bytes);
  for (int64_t i = 1; i <= k && st == MB_OK; i++) {
    st = DRAFT_READ(ids + i - 1);
    if (st == MB_OK)
      st = mb_memcpy_d2d(ctx, (char *)stack + i * state_bytes, state, (size_t)state_bytes);
    if (st != MB_OK || i == k) break;
    st = DRAFT_HEAD();
    if (st == MB_OK) st = mb_sample(ctx, logits, 1, vocab_out, 1.0f, 1, 0.0f, 0, counter, ids + i);
  }
#undef DRAFT_READ
#undef DRAFT_HEAD
  return st;
}

MB_EXPORT int mb_log_softmax(mb_ctx *ctx, const float *logits, int64_t n, int64_t v, float *out) {
  CHECK_CTX("mb_log_softmax");
  NONNEG("mb_log_softmax", n);
  NONNEG("mb_log_softmax", v);
  if (n == 0 || v == 0) return MB_OK;
  NONNULL("mb_log_softmax", logits);
  NONNULL("mb_log_softmax", out);
  DISPATCH(log_softmax, ctx, logits, n, v, out);
}

MB_EXPORT int mb_logprob_rank(mb_ctx *ctx, const float *logits, int64_t n, int64_t v,
                              const int32_t *targets, float *out_logprob, int32_t *out_rank) {
  CHECK_CTX("mb_logprob_rank");
  NONNEG("mb_logprob_rank", n);
  NONNEG("mb_logprob_rank", v);
  if (n == 0) return MB_OK;
  REQUIRE(v >= 1, "mb_logprob_rank: v (%lld) < 1", (ll)v);
  NONNULL("mb_logprob_rank", logits);
  NONNULL("mb_logprob_rank", targets);
  NONNULL("mb_logprob_rank", out_logprob);
  NONNULL("mb_logprob_rank", out_rank);
  DISPATCH(logprob_rank, ctx, logits, n, v, targets, out_logprob, out_rank);
}

MB_EXPORT int mb_discrete_a(mb_ctx *ctx, const float *delta, int64_t ld_delta, const float *A,
                            int64_t len, int64_t d, int64_t n, int reduction, int dim,
                            int64_t pos0, double *acc, float *out, int64_t *out_idx) {
  static const char fn[] = "mb_discrete_a";
  CHECK_CTX("mb_discrete_a");
  NONNEG("mb_discrete_a", len);
  NONNEG("mb_discrete_a", pos0);
  REQUIRE(d >= 1, "%s: d (%lld) < 1", fn, (ll)d);
  REQUIRE(n >= 1, "%s: n (%lld) < 1", fn, (ll)n);
  REQUIRE(reduction >= MB_REDUCE_NONE && reduction <= MB_REDUCE_NUC,
          "%s: unknown reduction %d (MB_REDUCE_NONE = 0 .. MB_REDUCE_NUC = 6)", fn, reduction);
  const int per_dim = reduction >= MB_REDUCE_MEAN && reduction <= MB_REDUCE_NORM;
  REQUIRE(!per_dim || (dim >= -1 && dim <= 2),
          "%s: dim (%d) must be 0, 1, 2 or -1 (all elements)", fn, dim);
  if (len == 0) return MB_OK;
  LD_OK("mb_discrete_a", ld_delta, d);
  NONNULL("mb_discrete_a", delta);
  NONNULL("mb_discrete_a", A);
  NONNULL("mb_discrete_a", out);
  const int sums = reduction == MB_REDUCE_MEAN || reduction == MB_REDUCE_NORM;
  REQUIRE(!(sums && (dim == 0 || dim == -1)) || acc,
          "%s: acc is NULL (mean and norm over dim %d keep their sums there)", fn, dim);
  DISPATCH(discrete_a, ctx, delta, ld_delta, A, len, d, n, reduction, dim, pos0, acc, out,
           out_idx);
}

MB_EXPORT int mb_discrete_a_input_sim(mb_ctx *ctx, const float *delta, int64_t ld_delta,
                                      const float *A, const float *x, int64_t ldx, int64_t len,
                                      int64_t d, int64_t n, float eps, float *out) {
  static const char fn[] = "mb_discrete_a_input_sim";
  CHECK_CTX("mb_discrete_a_input_sim");
  NONNEG("mb_discrete_a_input_sim", len);
  REQUIRE(d >= 1, "%s: d (%lld) < 1", fn, (ll)d);
  REQUIRE(n >= 1, "%s: n (%lld) < 1", fn, (ll)n);
  REQUIRE(eps >= 0.0f && isfinite(eps), "%s: eps (%g) must be finite and >= 0", fn, (double)eps);
  if (len == 0) return MB_OK;
  LD_OK("mb_discrete_a_input_sim", ld_delta, d);
  LD_OK("mb_discrete_a_input_sim", ldx, d);
  NONNULL("mb_discrete_a_input_sim", delta);
  NONNULL("mb_discrete_a_input_sim", A);
  NONNULL("mb_discrete_a_input_sim", x);
  NONNULL("mb_discrete_a_input_sim", out);
  DISPATCH(discrete_a_input_sim, ctx, delta, ld_delta, A, x, ldx, len, d, n, eps, out);
}

/* The draw settings mb_sample and mb_sample_rows share (rows: `what`, n of them), before and after
 * their zero-row return. */
static int check_draw_settings(const char *fn, const char *what, int64_t n, int64_t v,
                               float temperature, int32_t top_k, float top_p) {
  REQUIRE(n >= 0, "%s: %s (%lld) < 0", fn, what, (ll)n);
  REQUIRE(v >= 0, "%s: v (%lld) < 0", fn, (ll)v);
  REQUIRE(top_k == 1 || (temperature > 0.0f && isfinite(temperature)),
          "%s: temperature (%g) must be > 0 and finite", fn, (double)temperature);
  REQUIRE(!isnan(top_p), "%s: top_p is NaN", fn);
  return MB_OK;
}
static int check_draw_rows(const char *fn, int64_t v) {
  REQUIRE(v >= 1, "%s: v (%lld) < 1", fn, (ll)v);
  REQUIRE(v <= INT32_MAX, "%s: v (%lld) > INT32_MAX", fn, (ll)v);
  return MB_OK;
}

MB_EXPORT int mb_sample(mb_ctx *ctx, const float *logits, int64_t batch, int64_t v,
                        float temperature, int32_t top_k, float top_p, uint64_t seed,
                        int64_t *counter, int32_t *out_ids) {
  CHECK_CTX("mb_sample");
  int st = check_draw_settings("mb_sample", "batch", batch, v, temperature, top_k, top_p);
  if (st != MB_OK) return st;
  NONNULL("mb_sample", counter);
  if (batch == 0) return MB_OK;
  if ((st = check_draw_rows("mb_sample", v)) != MB_OK) return st;
  NONNULL("mb_sample", logits);
  NONNULL("mb_sample", out_ids);
  DISPATCH(sample, ctx, logits, batch, v, temperature, top_k, top_p, seed, counter, out_ids);
}

MB_EXPORT int mb_sample_rows(mb_ctx *ctx, const float *logits, int64_t n, int64_t v,
                             float temperature, int32_t top_k, float top_p, uint64_t seed,
                             int64_t *counters, int32_t *out_ids) {
  CHECK_CTX("mb_sample_rows");
  int st = check_draw_settings("mb_sample_rows", "n", n, v, temperature, top_k, top_p);
  if (st != MB_OK) return st;
  if (n == 0) return MB_OK;
  REQUIRE(n <= INT32_MAX, "mb_sample_rows: n (%lld) > INT32_MAX", (ll)n);
  if ((st = check_draw_rows("mb_sample_rows", v)) != MB_OK) return st;
  NONNULL("mb_sample_rows", logits);
  NONNULL("mb_sample_rows", counters);
  NONNULL("mb_sample_rows", out_ids);
  DISPATCH(sample_rows, ctx, logits, n, v, temperature, top_k, top_p, seed, counters, out_ids);
}

MB_EXPORT float mb_uniform(uint64_t seed, uint64_t index) { return mb_uniform_at(seed, index); }

MB_EXPORT int mb_read_probe(mb_ctx *ctx, const void *p, size_t bytes, float *sink) {
  CHECK_CTX("mb_read_probe");
  REQUIRE(bytes % 64 == 0, "mb_read_probe: bytes (%zu) is not a multiple of 64", bytes);
  NONNULL("mb_read_probe", sink);
  if (bytes == 0) return MB_OK;
  NONNULL("mb_read_probe", p);
  DISPATCH(read_probe, ctx, p, bytes, sink);
}

/* ---- graphs ----------------------------------------------------------------------------------- */

#ifdef MB_WITH_CUDA
#define GRAPH_DISPATCH(fn, name, ...)                                                             \
  if (IS_CUDA(ctx)) return mbcuda_##name(__VA_ARGS__);                                            \
  return mb_fail(MB_ERR_UNSUPPORTED, fn ": graphs need a CUDA context (this one is CPU)")
#else
#define GRAPH_DISPATCH(fn, name, ...)                                                             \
  return mb_fail(MB_ERR_UNSUPPORTED, fn ": graphs need a CUDA context (this one is CPU)")
#endif

MB_EXPORT int mb_graph_begin(mb_ctx *ctx) {
  CHECK_CTX("mb_graph_begin");
  GRAPH_DISPATCH("mb_graph_begin", graph_begin, ctx);
}

MB_EXPORT int mb_graph_end(mb_ctx *ctx, int *out_graph) {
  CHECK_CTX("mb_graph_end");
  NONNULL("mb_graph_end", out_graph);
  GRAPH_DISPATCH("mb_graph_end", graph_end, ctx, out_graph);
}

MB_EXPORT int mb_graph_launch(mb_ctx *ctx, int graph) {
  CHECK_CTX("mb_graph_launch");
  GRAPH_DISPATCH("mb_graph_launch", graph_launch, ctx, graph);
}

MB_EXPORT int mb_graph_destroy(mb_ctx *ctx, int graph) {
  CHECK_CTX("mb_graph_destroy");
  GRAPH_DISPATCH("mb_graph_destroy", graph_destroy, ctx, graph);
}
