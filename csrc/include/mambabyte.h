/*
 * mambabyte.h — the C ABI between the TypeScript model and the C/CUDA kernels.
 *
 * Rules (docs/DESIGN.md has them all, and how to add an op):
 * - Plain C. Every function returns an int status (MB_OK = 0); mb_last_error() gives the message of
 *   the last failure on the calling thread.
 * - An opaque context per backend instance owns the threads (CPU) or the stream, cuBLAS handle and
 *   graphs (CUDA). All tensors passed to ops live in memory allocated through that context
 *   (mb_alloc); host memory is only touched by the explicit copy functions.
 * - Layout is row-major (batch, length, channels). A view such as x and z inside xz is passed with a
 *   leading dimension ("ld", in elements): row r of x starts at x + r * ldx.
 * - Activations are float32. The large matrices (embedding, in_proj, x_proj, dt_proj, out_proj,
 *   lm_head) may be float32 or bfloat16 (wdtype); every other parameter is float32. With bfloat16
 *   matrices, the producers of a product's input (add_norm, causal_conv1d, selective_scan) can
 *   also write it as bfloat16 bits (an `_bf16` output, rounded to nearest even), which
 *   mb_linear_bf16 takes: the bits mb_linear's tensor-core path would make of the fp32 input,
 *   without a pass of their own.
 * - Sizes are int64_t; ops accept zero-sized inputs and do nothing for them.
 * - This header is the one place a signature is written: the backends' prototypes are derived
 *   from it (csrc/common/ops.def), and tests/abi_header_test.ts holds src/native/lib.ts to it.
 *   Functions under "test-only" are called by tests alone, not by the toolkit.
 */
#ifndef MAMBABYTE_H
#define MAMBABYTE_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define MB_ABI_VERSION 18

/* Status codes. */
#define MB_OK 0
#define MB_ERR_INVALID 1     /* a bad argument: null pointer, negative size, unknown enum */
#define MB_ERR_OOM 2         /* an allocation failed */
#define MB_ERR_UNSUPPORTED 3 /* not built into this library (e.g. CUDA), or not on this backend */
#define MB_ERR_DEVICE 4      /* a device or driver error (no GPU, launch failure) */
#define MB_ERR_INTERNAL 5

/* Backends. */
#define MB_BACKEND_CPU 0
#define MB_BACKEND_CUDA 1

/* Weight dtypes. */
#define MB_DTYPE_F32 0
#define MB_DTYPE_BF16 1
/* IEEE binary16 weights (fp16 bits): mb_linear (on CUDA up to 8 rows, the decoding GEMV) and
 * mb_linear_conv1d_step only; the CPU widens them. The model's decoding twins of in_proj and
 * out_proj: fp16 of w 2^e, the inputs carrying 2^-e (MambaByteLM, src/model/f16_twins.ts). */
#define MB_DTYPE_F16 2
/* mb_decode_layers' and mb_verify_layers' tables only: fp32 weights whose IN_W and OUT_W are
 * MB_DTYPE_F16 (every other matrix fp32). */
#define MB_DTYPE_F32_F16IO 3

/* Norm kinds. */
#define MB_NORM_LAYER 0 /* LayerNorm with weight and (optional) bias: MambaByte */
#define MB_NORM_RMS 1   /* RMSNorm with weight: mamba_ssm, transformers */

/* Reductions of discrete-A (mb_discrete_a). */
#define MB_REDUCE_NONE 0 /* no reduction: the whole (len, d, n) tensor */
#define MB_REDUCE_MEAN 1
#define MB_REDUCE_MIN 2
#define MB_REDUCE_MAX 3
#define MB_REDUCE_NORM 4 /* 2-norm: sqrt of the sum of squares */
#define MB_REDUCE_FRO 5  /* Frobenius norm of each position's (d, n) matrix */
#define MB_REDUCE_NUC 6  /* nuclear norm (sum of singular values) of each position's (d, n) matrix */

/* Pointers of one layer in mb_decode_layers' table, in this order. */
#define MB_DL_NORM_W 0
#define MB_DL_NORM_B 1
#define MB_DL_IN_W 2
#define MB_DL_IN_B 3
#define MB_DL_CONV_W 4
#define MB_DL_CONV_B 5
#define MB_DL_CONV_STATE 6
#define MB_DL_X_W 7
#define MB_DL_DT_W 8
#define MB_DL_DT_B 9
#define MB_DL_A 10
#define MB_DL_D 11
#define MB_DL_SSM_STATE 12
#define MB_DL_OUT_W 13
#define MB_DL_OUT_B 14
#define MB_DL_PTRS 15

/* Context flags (mb_ctx_set_flags). */
/* CUDA: fp32 GEMMs may round their operands to 11 significant bits: on the TF32 tensor cores, or
 * (wide forward products) on the fp16 ones with each operand scaled by a power of two. */
#define MB_FLAG_ALLOW_TF32 1u
#define MB_FLAG_UNFUSED_STEPS 2u /* the fused decoding ops run as their two plain ops (A/B runs) */

typedef struct mb_ctx mb_ctx;

/* ---- library ---------------------------------------------------------------------------------- */

/** Message of the last failed call on this thread ("" when none). Never NULL. */
const char *mb_last_error(void);
/** MB_ABI_VERSION of the built library. */
int mb_abi_version(void);
/** 1 when the library was built with the CUDA backend, else 0. */
int mb_has_cuda(void);
/** Number of CUDA devices usable by this library (0 without CUDA support or without a GPU). */
int mb_cuda_device_count(int *out_count);

/* ---- context ---------------------------------------------------------------------------------- */

/**
 * Creates a context. backend: MB_BACKEND_*. device: the CUDA device index (ignored on CPU).
 * num_threads: CPU threads (0 = all cores; ignored on CUDA).
 */
int mb_ctx_create(int backend, int device, int num_threads, mb_ctx **out_ctx);
int mb_ctx_destroy(mb_ctx *ctx);
/** Waits for all work queued on the context. */
int mb_ctx_synchronize(mb_ctx *ctx);
/** Sets MB_FLAG_* bits (replaces the previous flags). */
int mb_ctx_set_flags(mb_ctx *ctx, uint32_t flags);
/** Writes a NUL-terminated JSON object describing the context (backend, threads, device name,
 * blas, ...) into buf (truncated to cap bytes). */
int mb_ctx_info(mb_ctx *ctx, char *buf, size_t cap);

/* ---- memory ----------------------------------------------------------------------------------- */

/** Allocates bytes (64-byte aligned on CPU). *out is NULL when bytes == 0. */
int mb_alloc(mb_ctx *ctx, size_t bytes, void **out);
/** Frees memory from mb_alloc (NULL is accepted). */
int mb_free(mb_ctx *ctx, void *ptr);
/** Copies host -> context memory. Returns once the host buffer may be reused. */
int mb_memcpy_h2d(mb_ctx *ctx, void *dst, const void *host_src, size_t bytes);
/** Copies context memory -> host; synchronous (the data is in host_dst on return). */
int mb_memcpy_d2h(mb_ctx *ctx, void *host_dst, const void *src, size_t bytes);
/** Copies within context memory. */
int mb_memcpy_d2d(mb_ctx *ctx, void *dst, const void *src, size_t bytes);
/** Sets bytes of context memory to the byte value. */
int mb_memset(mb_ctx *ctx, void *dst, int value, size_t bytes);
/**
 * Allocates bytes of host memory for mb_download_async: page-locked on CUDA (the device copies
 * into it without the host), 64-byte aligned on CPU. *out is NULL when bytes == 0.
 */
int mb_host_alloc(mb_ctx *ctx, size_t bytes, void **out);
/** Frees memory from mb_host_alloc (NULL is accepted); waits for the context's downloads first. */
int mb_host_free(mb_ctx *ctx, void *ptr);
/**
 * Registers bytes of the caller's host memory at ptr (e.g. result arrays that are filled again and
 * again) as a destination for mb_download_async: on CUDA it is page-locked for the device
 * (cudaHostRegister), so a download lands in it with no host-side copy; CPU: nothing to do. The
 * range must not overlap another registered range or memory from mb_host_alloc, and must be
 * unregistered before it is freed. bytes == 0 does nothing. Not allowed while a graph is captured.
 */
int mb_host_register(mb_ctx *ctx, void *ptr, size_t bytes);
/** Undoes mb_host_register for the range starting at ptr, after the context's downloads end. */
int mb_host_unregister(mb_ctx *ctx, void *ptr);
/**
 * Starts copying bytes of context memory at src to host_dst and returns a ticket (1, 2, ... in call
 * order). The bytes copied are src's as the work queued before this call leaves them: ops queued
 * after it may overwrite src at once. CUDA: src is copied on the context's stream into a staging
 * buffer of the context, then from there to host_dst on a second (copy) stream, so the transfer
 * overlaps the ops queued after this call; host_dst should come from mb_host_alloc (other host
 * memory works but the call then waits for the copy). CPU: a plain copy, done on return.
 * host_dst must not be read, freed or reused before mb_download_wait(ctx, ticket). Not allowed
 * while a graph is being captured.
 */
int mb_download_async(mb_ctx *ctx, void *host_dst, const void *src, size_t bytes,
                      uint64_t *out_ticket);
/**
 * mb_download_async without the staging copy: the copy stream reads src itself, once the work
 * queued before this call is done, so nothing runs on the context's stream for it (CUDA; on the
 * CPU a plain copy, done on return). In exchange the caller must not queue anything that writes
 * src before mb_download_wait(ctx, ticket) has returned. A decoding loop that samples into two
 * buffers in turn downloads each step's bytes this way (the staged copy between two replayed
 * steps cost ~48 us of an ~880 us batch-1 step on an H200).
 */
int mb_download_async_direct(mb_ctx *ctx, void *host_dst, const void *src, size_t bytes,
                             uint64_t *out_ticket);
/** Returns once download `ticket` and every earlier one of the context are in host memory. */
int mb_download_wait(mb_ctx *ctx, uint64_t ticket);
/**
 * Copies bytes of host memory from src to dst (they must not overlap), with several threads when
 * the copy is large (>= 8 MiB: up to 16, at most the CPUs the process may run on, or a CPU
 * context's threads), each asking the kernel to map its slice of dst first. Writing into fresh
 * memory costs a page fault per page; so a result array's first fill, e.g. from a buffer of
 * mb_download_async, runs several times faster than a single memcpy. A dst that is already mapped
 * (sampled: three pages) skips the mapping calls; a small one (< 256 KiB) is one plain memcpy.
 * Returns when done.
 */
int mb_host_copy(mb_ctx *ctx, void *dst, const void *src, size_t bytes);
/**
 * Starts mapping n ranges of fresh host memory (ptrs[i], bytes[i] each; e.g. new result arrays
 * that downloads will fill) on background threads (every CPU the process may run on but one, at
 * most 16), each range asked for transparent huge pages as mb_host_copy asks, then populated
 * (MADV_POPULATE_WRITE), so that their first writes later find the pages there instead of
 * faulting on them one at a time. The contents are not changed; the ranges may be written while
 * this runs, and must stay allocated until mb_host_prefault_wait. The context holds one such job:
 * a second call waits for the first; mb_ctx_destroy waits too. Ranges below 256 KiB are skipped;
 * MAMBABYTE_HOST_PREFAULT=N caps the threads at N; 0 (or a kernel without MADV_POPULATE_WRITE)
 * makes it do nothing. A copy into the ranges (mb_host_copy, mb_download_async, mb_memcpy_d2h on
 * the CPU) first waits until the ranges it writes are mapped: the job maps them in the order given.
 */
int mb_host_prefault(mb_ctx *ctx, void *const *ptrs, const size_t *bytes, size_t n);
/** Returns once the context's mb_host_prefault job (if any) has ended. */
int mb_host_prefault_wait(mb_ctx *ctx);

/* ---- ops -------------------------------------------------------------------------------------- */

/** out[i, :] = float(table[ids[i], :]) for i < n. ids are int32 in [0, vocab). table: (vocab, d). */
int mb_embedding(mb_ctx *ctx, const int32_t *ids, int64_t n, const void *table, int wdtype,
                 int64_t vocab, int64_t d, float *out);

/**
 * Fused residual add + norm over rows of width d:
 *   residual[i] = (accumulate ? residual[i] : 0) + x[i]      (fp32)
 *   out[i]      = norm(residual[i]) * weight + bias          (bias may be NULL)
 * norm_kind: MB_NORM_LAYER (mean/variance) or MB_NORM_RMS. x may equal out. out_bf16 (n, d), when
 * not NULL, receives out as bfloat16 bits; out may then be NULL (only the bf16 copy is written).
 */
int mb_add_norm(mb_ctx *ctx, const float *x, float *residual, int accumulate, const float *weight,
                const float *bias, int norm_kind, float eps, int64_t n, int64_t d, float *out,
                uint16_t *out_bf16);

/**
 * y[i, o] = sum_k x[i, k] * w[o, k] + bias[o]   for i < n, o < out_f   (bias may be NULL).
 * w: (out_f, in_f) row-major, PyTorch's nn.Linear layout, float32 or bfloat16 (or fp16,
 * MB_DTYPE_F16: on CUDA for n <= 8 only); fp32 accumulation.
 * For n <= 8 every row of y has the bits it has in a call with n = 1 (on each backend), so
 * several positions can be run as one product with the results of one-position decoding steps.
 */
int mb_linear(mb_ctx *ctx, const float *x, int64_t ldx, const void *w, int wdtype, const float *bias,
              int64_t n, int64_t in_f, int64_t out_f, float *y, int64_t ldy);

/**
 * mb_linear with x as bfloat16 bits (ld ldx), as the producers' `_bf16` outputs write it; the
 * product is of those values with fp32 accumulation. On CUDA with bfloat16 weights and n >= 2 the
 * rows go to the tensor cores as they are: for n > 8 the same bits as mb_linear of the fp32 x
 * they were rounded from; for 2 <= n <= 8 not mb_linear's one-row bits (decoding batches that do
 * not need them). in_f >= 1.
 */
int mb_linear_bf16(mb_ctx *ctx, const uint16_t *x, int64_t ldx, const void *w, int wdtype,
                   const float *bias, int64_t n, int64_t in_f, int64_t out_f, float *y,
                   int64_t ldy);

/**
 * A product whose output is stored as bfloat16 bits (the forward's in_proj -> xz and dt_proj ->
 * delta with bf16 activations): y = bf16(x w^T + bias), the fp32 result rounded to nearest even,
 * from x (fp32) or x_bf16 (bfloat16 bits; exactly one is given), ld ldx; y: n rows of out_f, ld
 * ldy. On CUDA with bfloat16 weights, n > 8 and no bias, the GEMM writes the bf16 output itself
 * (fp32 accumulation, its own algorithm: within bf16 rounding of mb_linear, not its bits);
 * otherwise it is mb_linear (or mb_linear_bf16) rounded afterwards, as on the CPU. in_f >= 1.
 */
int mb_linear_to_bf16(mb_ctx *ctx, const float *x, const uint16_t *x_bf16, int64_t ldx,
                      const void *w, int wdtype, const float *bias, int64_t n, int64_t in_f,
                      int64_t out_f, uint16_t *y, int64_t ldy);

/**
 * A product and the add + norm that takes its output, in one call (a decoding batch's out_proj
 * and the next layer's norm):
 *   h = x w^T + bias        mb_linear of x, or mb_linear_bf16 of x_bf16 (exactly one is given,
 *                           ld ldx), n rows of out_f
 *   mb_add_norm(h, residual, accumulate, norm_weight, norm_bias, norm_kind, eps, n, out_f, out,
 *               out_bf16)
 * h_scratch: n x out_f floats the call may use for h (their contents afterwards are unspecified;
 * they must not overlap x, residual or the outputs).
 * On the CPU it is those two calls. On CUDA with bfloat16 weights, 2 to 256 rows run the product
 * on the tensor cores (x rounded to bf16 as mb_linear rounds it) split over in_f into parts that
 * the norm's kernel sums in a fixed order (no reduction kernel of its own), so h is associated
 * differently from mb_linear's (every such call gives the same bits, from x or x_bf16 alike); more
 * rows without a bias (forward chunks) have the GEMM add the product to the residual in place,
 * then norm it. MAMBABYTE_CUDA_OUT_SPLIT=0 runs the product whole, then the norm.
 */
int mb_linear_add_norm(mb_ctx *ctx, const float *x, const uint16_t *x_bf16, int64_t ldx,
                       const void *w, int wdtype, const float *bias, int64_t n, int64_t in_f,
                       int64_t out_f, float *h_scratch, float *residual, int accumulate,
                       const float *norm_weight, const float *norm_bias, int norm_kind, float eps,
                       float *out, uint16_t *out_bf16);

/**
 * Scaled fp16 rows, the operands of mb_linear_f16 (TF32's precision on the fp16 tensor cores):
 *   out[i, j] = fp16(x[i * ldx + j] * 2^e)          (round to nearest even), i < rows, j < cols
 *   *out_exp  = e
 * e (one int32, written where the call's other outputs are: device memory on CUDA) puts the
 * block's largest finite magnitude in [2^14, 2^15): no value overflows, and every value within
 * 2^-28 of the largest keeps an 11-bit significand, as TF32 rounds it; smaller ones become fp16
 * subnormals (absolute error at most 2^-39 of the largest). e = 0 when every value is 0 or the
 * largest magnitude is infinite (values then pass unscaled); NaN stays NaN. out: dense (rows,
 * cols). Weights are converted once, at load, with this.
 */
int mb_to_f16_scaled(mb_ctx *ctx, const float *x, int64_t ldx, int64_t rows, int64_t cols,
                     uint16_t *out, int32_t *out_exp);

/**
 * A product of scaled fp16 operands (mb_to_f16_scaled's), fp32 accumulation and output:
 *   y[i, o] = 2^-(ex + ew) * sum_k xh[i, k] * wh[o, k] + bias[o] (+ y[i, o] when accumulate)
 * x is given either as fp32 rows (x, ld ldx: the call scales and rounds them first, as
 * mb_to_f16_scaled does) or as scaled fp16 rows (x_f16 with its exponent x_exp, ld ldx); exactly
 * one. With fp32 rows, x_exp may give their exponent (mb_selective_scan's y_f16_exp: no pass for
 * the largest magnitude then; an exponent above the rule's can overflow fp16). w_f16: (out_f,
 * in_f) dense with its exponent w_exp. x_exp and w_exp are read where the operands are (device
 * memory on CUDA). bias may be NULL. On CUDA the fp16 tensor cores (for
 * n <= 8 too); 2^-(ex + ew) is inf or 0 exactly where the product leaves fp32's range. in_f >= 1.
 * y_f16 (ABI 18), given instead of y (bias NULL, accumulate 0): the product as scaled fp16 rows,
 * row i at y_f16 + i * ldy, fp16(y 2^ey) rounded to nearest even, with ey = ex + ew - 15 - c and
 * c = ceil(log2(in_f)) written to *y_exp: the scaled operands' products sum to less than in_f 2^30
 * in their units, so no output can overflow, whatever the values (dt_proj's delta for the scan, in
 * a TF32 forward on the twins: half the bytes of fp32 rows).
 */
int mb_linear_f16(mb_ctx *ctx, const float *x, const uint16_t *x_f16, const int32_t *x_exp,
                  int64_t ldx, const uint16_t *w_f16, const int32_t *w_exp, const float *bias,
                  int64_t n, int64_t in_f, int64_t out_f, float *y, int64_t ldy, int accumulate,
                  uint16_t *y_f16, int32_t *y_exp);

/**
 * mb_add_norm with its output as scaled fp16 rows (in_proj's operand for mb_linear_f16):
 * residual is updated as mb_add_norm updates it, and
 *   out_f16[i, :] = fp16((norm(residual[i, :]) * weight + bias) * 2^e)   (dense (n, d))
 *   *out_exp      = e
 * with e from a bound known before any row is normed, sqrt(d) max|weight| + max|bias| (a normed
 * row's elements are at most sqrt(d) in magnitude), put in [2^14, 2^15) as mb_to_f16_scaled
 * puts a largest magnitude: one pass, no overflow, and a row's elements keep 11 significant bits
 * down to 2^-28 of the bound. x may equal residual when accumulate is 0 (the residual already
 * holds the sum: the forward's out_proj added its product in place).
 * exp_given (ABI 16): 1 when *out_exp already holds e, written by an earlier call with this weight
 * and bias (it depends on nothing else), so it is read, not found again (the model's twins hold
 * each layer's); 0 to find and write it.
 */
int mb_add_norm_f16(mb_ctx *ctx, const float *x, float *residual, int accumulate,
                    const float *weight, const float *bias, int norm_kind, float eps, int64_t n,
                    int64_t d, uint16_t *out_f16, int32_t *out_exp, int exp_given);

/**
 * Causal depthwise conv1d over `batch` sequences of `len` positions and d channels, kernel width k:
 *   pre[b, t, c] = bias[c] + sum_j w[c, j] * xin[b, t - (k-1) + j, c]
 * where positions before 0 come from conv_state (b, c, 0..k-2), oldest first (zeros when
 * conv_state is NULL). out = silu(pre) (ld ldo); out_preact, when not NULL, receives pre
 * (contiguous, (batch*len, d)); out16, when not NULL, receives out as bfloat16 bits
 * (contiguous, (batch*len, d)), and out may then be NULL (the forward's bf16 u). conv_state, when
 * not NULL, is updated to hold the last k-1 inputs.
 * out16_f16_exp (ABI 16), when not NULL (out16 then required; out may be NULL, ABI 17): out16
 * receives instead the scaled fp16 rows of out, fp16(out * 2^e) rounded to nearest even with e =
 * *out16_f16_exp (one int32 in backend memory): mb_linear_f16's x_f16 with x_exp = out16_f16_exp
 * and mb_selective_scan's u_bf16 with u_f16_exp (x_proj's and the scan's u in a TF32 forward on the
 * fp16 twins, whose e comes from a bound of the layer's weights).
 * w: (d, k) float32. bias may be NULL. x is read with leading dimension ldx; exactly one of x and
 * x_bf16 (bfloat16 bits, read as the floats they stand for: a bf16 xz from mb_linear_to_bf16) is
 * given. conv_state then holds those floats.
 */
int mb_causal_conv1d(mb_ctx *ctx, const float *x, const uint16_t *x_bf16, int64_t ldx,
                     const float *w, const float *bias,
                     float *conv_state, int64_t batch, int64_t len, int64_t d, int64_t k, float *out,
                     int64_t ldo, float *out_preact, uint16_t *out16,
                     const int32_t *out16_f16_exp);

/**
 * Decoding: mb_linear then the conv1d step on the first d_conv output columns, in one kernel on
 * CUDA for n <= 8 (the conv runs in the GEMV's epilogue: in_proj -> x, z, then conv(x)):
 *   mb_linear(x, ldx, w, wdtype, bias, n, in_f, out_f, y, ldy);
 *   mb_causal_conv1d(y, NULL, ldy, conv_w, conv_bias, conv_state, n, 1, d_conv, k, xc, ldo, NULL, NULL);
 * (n rows = n sequences of one position each). conv_state (n, d_conv, k-1) is required;
 * d_conv <= out_f; xc must not overlap y. With MB_FLAG_UNFUSED_STEPS it runs as those two calls.
 */
int mb_linear_conv1d_step(mb_ctx *ctx, const float *x, int64_t ldx, const void *w, int wdtype,
                          const float *bias, int64_t n, int64_t in_f, int64_t out_f, float *y,
                          int64_t ldy, const float *conv_w, const float *conv_bias,
                          float *conv_state, int64_t d_conv, int64_t k, float *xc, int64_t ldo);

/**
 * Decoding batches: the conv1d step, then a product of its output (x_proj), in one kernel on CUDA
 * for 8 < n <= 64, and with bf16 weights up to 256 (MAMBABYTE_CUDA_CONV_LINEAR=N: from N rows;
 * the product split over channel slices, the slices' partial sums added in a fixed order, so the
 * same bits every run; fp32 arithmetic with fp32 weights; with bf16 weights the tensor cores on
 * the conv's outputs rounded to bf16, as mb_linear's tensor-core path rounds its rows):
 *   mb_causal_conv1d(x, NULL, ldx, conv_w, conv_bias, conv_state, n, 1, d, k, xc, ldo, NULL, NULL);
 *   mb_linear(xc, ldo, w, wdtype, bias, n, d, out_f, y, ldy);
 * (n rows = n sequences of one position each). conv_state (n, d, k-1) is required; xc must not
 * overlap x or y. Elsewhere it runs as those two calls on every backend.
 */
int mb_conv1d_step_linear(mb_ctx *ctx, const float *x, int64_t ldx, const float *conv_w,
                          const float *conv_bias, float *conv_state, int64_t n, int64_t d,
                          int64_t k, float *xc, int64_t ldo, const void *w, int wdtype,
                          const float *bias, int64_t out_f, float *y, int64_t ldy);

/**
 * Decoding batches with bf16 activations: in_proj, the conv1d step and x_proj in one call,
 *   mb_linear_bf16(x, ldx, w, wdtype, NULL, n, in_f, out_f, y, ldy);
 *   mb_conv1d_step_linear(y, ldy, conv_w, conv_bias, conv_state, n, d, k, xc, ldo, w2, wdtype,
 *                         NULL, out_f2, y2, ldy2);
 * (x: n rows of bfloat16 bits; w: out_f x in_f and w2: out_f2 x d, both of wdtype; the conv runs
 * on y's first d columns, d <= out_f). Those two calls on every backend; the call is where a
 * backend may run the three as one kernel (the product's tile of a batch's channels holds every
 * input of their conv step and of x_proj's partial sums over them), in which case y's first d
 * columns (the conv's input) may be left unwritten.
 */
int mb_linear_bf16_conv1d_step_linear(mb_ctx *ctx, const uint16_t *x, int64_t ldx, const void *w,
                                      int wdtype, int64_t n, int64_t in_f, int64_t out_f,
                                      float *y, int64_t ldy, const float *conv_w,
                                      const float *conv_bias, float *conv_state, int64_t d,
                                      int64_t k, float *xc, int64_t ldo, const void *w2,
                                      int64_t out_f2, float *y2, int64_t ldy2);

/**
 * Selective scan (mamba_ssm's selective_scan_fn) over `batch` sequences of `len` positions, d
 * channels, n states. For each b, t, c:
 *   d    = delta[b,t,c] + delta_bias[c]                                 (delta_bias may be NULL)
 *   dt   = delta_softplus ? softplus(d) : d                             (torch softplus, threshold 20)
 *   h[c, s] = exp(dt * A[c, s]) * h[c, s] + dt * Bm[b,t,s] * u[b,t,c]
 *   y[b,t,c] = sum_s Cm[b,t,s] * h[c, s] + Dskip[c] * u[b,t,c]
 *   if z: y[b,t,c] *= silu(z[b,t,c])
 * state (batch, d, n): the initial state on entry (zeros when NULL), the final state on return.
 * states_all (batch, len, d, n), when not NULL, receives the state after every position
 * (speculative verification resumes from any position). Dskip, z and delta_bias may be NULL.
 * delta_bias is mamba_ssm's: dt_proj's bias added here, so that the forward's dt_proj product
 * needs no pass of its own to add it (delta + bias is the same float addition either way).
 * Row r = b*len + t of u, delta, Bm, Cm, z, y is read/written at base + r * ld. y_bf16, when not
 * NULL, receives y as bfloat16 bits (row r at y_bf16 + r * ldy); y may then be NULL.
 * u_bf16, delta_bf16 and z_bf16 are u, delta and z as bfloat16 bits (read as the floats they
 * stand for; the forward's bf16 activations: the conv's out16, mb_linear_to_bf16's output):
 * exactly one of u and u_bf16 and of delta and delta_bf16 is given, at most one of z and z_bf16.
 * y_f16_exp (ABI 15), when not NULL (y then required), receives the exponent mb_to_f16_scaled
 * would choose for y's batch*len rows of d (one int32, where y is): out_proj then takes the fp32 y
 * by mb_linear_f16 without a pass for its largest magnitude (on CUDA the scan's blocks find it).
 * u_f16_exp (ABI 17), when not NULL (u_bf16 then required): u_bf16 holds u's scaled fp16 rows
 * instead, fp16(u 2^e) with e = *u_f16_exp (the conv's out16 with out16_f16_exp), read as the
 * floats 2^-e times their values (exact). delta_f16_exp (ABI 18) the same for delta_bf16
 * (mb_linear_f16's y_f16 with y_exp).
 */
int mb_selective_scan(mb_ctx *ctx, const float *u, const uint16_t *u_bf16, int64_t ldu,
                      const float *delta,
                      const uint16_t *delta_bf16, int64_t ld_delta, const float *delta_bias,
                      const float *A, const float *Bm, int64_t ldb, const float *Cm, int64_t ldc,
                      const float *Dskip, const float *z, const uint16_t *z_bf16, int64_t ldz,
                      float *state,
                      float *states_all, int64_t batch, int64_t len, int64_t d, int64_t n,
                      int delta_softplus, float *y, int64_t ldy, uint16_t *y_bf16,
                      int32_t *y_f16_exp, const int32_t *u_f16_exp,
                      const int32_t *delta_f16_exp);

/**
 * One decoding step of the SSM (mamba_ssm's selective_state_update) with dt_proj fused in (one
 * decoding kernel instead of two); rows are the batch entries, the state is required:
 *   delta[b, c] = sum_{k < dt_rank} x_dbl[b * ld_xdbl + k] * dt_w[c, k] + dt_bias[c]
 * (dt_w: (d, dt_rank) row-major, float32 or bfloat16 (wdtype); dt_bias may be NULL), i.e. exactly
 *   mb_linear(x_dbl, ld_xdbl, dt_w, wdtype, dt_bias, batch, dt_rank, d, delta, d);
 *   mb_selective_scan(u, NULL, ldu, delta, NULL, d, NULL, A, Bm, ldb, Cm, ldc, Dskip, z, NULL, ldz,
 *                     state, NULL, batch, 1, d, n, delta_softplus, y, ldy, y_bf16);
 * delta_out (batch, d), when not NULL, receives delta (before softplus, as mb_linear writes it).
 * y_bf16, when not NULL, also receives y as bfloat16 bits (row b at y_bf16 + b * ldy), the
 * rounding mb_linear's tensor-core path makes of it: out_proj then takes it by mb_linear_bf16.
 * With MB_FLAG_UNFUSED_STEPS it runs as those two calls, delta_out (then required) holding delta.
 */
int mb_selective_state_update_dt(mb_ctx *ctx, const float *u, int64_t ldu, const float *x_dbl,
                                 int64_t ld_xdbl, const void *dt_w, int wdtype,
                                 const float *dt_bias, int64_t dt_rank, const float *A,
                                 const float *Bm, int64_t ldb, const float *Cm, int64_t ldc,
                                 const float *Dskip, const float *z, int64_t ldz, float *state,
                                 int64_t batch, int64_t d, int64_t n, int delta_softplus,
                                 float *delta_out, float *y, int64_t ldy, uint16_t *y_bf16);

/**
 * mb_selective_state_update_dt over `len` positions of each of `batch` sequences, position after
 * position: row r = b * len + t of u, x_dbl, Bm, Cm, z, y (and of delta_out, (batch * len, d))
 * is one decoding step of sequence b from the state its previous position left, with exactly the
 * arithmetic of mb_selective_state_update_dt, so every position gives the bits that a decoding
 * step gives (speculative decoding verifies several drafted bytes in one call and resumes from
 * any of them). state (batch, d, n) is required: the state before the first position on entry,
 * after the last on return. states_all (batch, len, d, n), when not NULL, receives the state
 * after every position. With MB_FLAG_UNFUSED_STEPS (delta_out then required) it runs as
 *   mb_linear(x_dbl rows, in calls of at most 8 rows, ...) -> delta_out; then
 *   mb_selective_scan(u, NULL, ldu, delta_out, NULL, d, NULL, ..., state, states_all, batch, len, ...).
 */
int mb_selective_scan_dt(mb_ctx *ctx, const float *u, int64_t ldu, const float *x_dbl,
                         int64_t ld_xdbl, const void *dt_w, int wdtype, const float *dt_bias,
                         int64_t dt_rank, const float *A, const float *Bm, int64_t ldb,
                         const float *Cm, int64_t ldc, const float *Dskip, const float *z,
                         int64_t ldz, float *state, float *states_all, int64_t batch, int64_t len,
                         int64_t d, int64_t n, int delta_softplus, float *delta_out, float *y,
                         int64_t ldy);

/**
 * Every layer of one decoding step (the mixer layers of MambaByteLM.stepLayers for batch <= 8) in
 * one call, so that a step costs one call instead of five a layer (on the CPU the calls
 * themselves were a third of a small model's step). For each layer i < n_layer, with the layer's
 * pointers P = layers + i * MB_DL_PTRS (indexes MB_DL_*; NORM_B, IN_B, CONV_B, DT_B, D, OUT_B may
 * be 0), it is exactly
 *   mb_add_norm(hidden, residual, i > 0, P[NORM_W], P[NORM_B], norm_kind, eps, batch, d_model,
 *               normed, NULL);
 *   mb_linear_conv1d_step(normed, d_model, P[IN_W], wdtype, P[IN_B], batch, d_model, 2 d_inner,
 *               xz, 2 d_inner, P[CONV_W], P[CONV_B], P[CONV_STATE], d_inner, d_conv, xc, d_inner);
 *   mb_linear(xc, d_inner, P[X_W], wdtype, NULL, batch, d_inner, dt_rank + 2 d_state, x_dbl, ...);
 *   mb_selective_state_update_dt(xc, d_inner, x_dbl, dt_rank + 2 d_state, P[DT_W], wdtype,
 *               P[DT_B], dt_rank, P[A], B and C in x_dbl, P[D], z = xz + d_inner (ld 2 d_inner),
 *               P[SSM_STATE], batch, d_inner, d_state, 1, delta, y, d_inner);
 *   mb_linear(y, d_inner, P[OUT_W], wdtype, P[OUT_B], batch, d_inner, d_model, hidden, d_model);
 * so its results are those calls' bits on every backend (CUDA at batch 1 runs the norm inside
 * in_proj's kernel and the residual add in the previous out_proj's, one kernel fewer a layer
 * with the same bits; normed is then not written). layers: n_layer * MB_DL_PTRS context
 * pointers as uint64 values, in host memory (read during the call only); the buffers are (batch,
 * width) rows in context memory. wdtype MB_DTYPE_F32_F16IO: in_proj's and out_proj's calls take
 * MB_DTYPE_F16, x_proj's and dt_proj's MB_DTYPE_F32.
 */
int mb_decode_layers(mb_ctx *ctx, const uint64_t *layers, int64_t n_layer, int64_t batch,
                     int64_t d_model, int64_t d_inner, int64_t d_state, int64_t dt_rank,
                     int64_t d_conv, int wdtype, int norm_kind, float eps, float *hidden,
                     float *residual, float *normed, float *xz, float *xc, float *x_dbl,
                     float *delta, float *y);

/**
 * The verification pass of speculative decoding: len positions of ONE sequence (rows of hidden)
 * through every layer of the table (mb_decode_layers' MB_DL_* pointers), each position with the
 * arithmetic of a batch-1 decoding step, so that every row's results are the bits of len decoding
 * steps. For each layer i, with P as in mb_decode_layers and saved_xz_i = saved_xz + i len 2
 * d_inner, saved_ssm_i = saved_ssm + i len d_inner d_state, saved_conv_i = saved_conv + i d_inner
 * (d_conv - 1), it is exactly
 *   mb_add_norm(hidden, residual, i > 0, P[NORM_W], P[NORM_B], norm_kind, eps, len, d_model,
 *               normed, NULL);
 *   mb_linear(normed, ..., P[IN_W], P[IN_B], len, d_model, 2 d_inner, saved_xz_i, 2 d_inner);
 *   saved_conv_i = P[CONV_STATE];   (the window before the pass)
 *   mb_causal_conv1d(saved_xz_i, NULL, 2 d_inner, P[CONV_W], P[CONV_B], P[CONV_STATE], 1, len,
 *               d_inner, d_conv, xc, d_inner, NULL, NULL);
 *   mb_linear(xc, d_inner, P[X_W], wdtype, NULL, len, d_inner, dt_rank + 2 d_state, x_dbl, ...);
 *   mb_selective_scan_dt(xc, d_inner, x_dbl, ..., P[DT_W], P[DT_B], ..., z = saved_xz_i + d_inner,
 *               2 d_inner, P[SSM_STATE], saved_ssm_i, 1, len, d_inner, d_state, 1, delta, y,
 *               d_inner);
 *   mb_linear(y, d_inner, P[OUT_W], wdtype, P[OUT_B], len, d_inner, d_model, hidden, d_model);
 * with every mb_linear in calls of at most 8 rows (each row with a one-row call's bits; CUDA runs
 * each add + norm, and for up to 8 positions the conv, inside in_proj's kernel with the same
 * bits, and `normed` then holds residual sums, not the normed rows). Afterwards
 * the table's conv windows and SSM states are those after the last position; mb_resume_layers moves
 * them back to just after any position. 1 <= len <= 65; buffers in context memory. wdtype as in
 * mb_decode_layers (MB_DTYPE_F32_F16IO too).
 */
int mb_verify_layers(mb_ctx *ctx, const uint64_t *layers, int64_t n_layer, int64_t len,
                     int64_t d_model, int64_t d_inner, int64_t d_state, int64_t dt_rank,
                     int64_t d_conv, int wdtype, int norm_kind, float eps, float *hidden,
                     float *residual, float *normed, float *xc, float *x_dbl, float *delta,
                     float *y, float *saved_xz, float *saved_ssm, float *saved_conv);

/**
 * After mb_verify_layers over len positions whose next-position draws are sampled[0..len-1] and
 * whose positions 1..len-1 were the drafted ids drafted[0..len-2] (a negative id never matches):
 * j = the longest prefix with sampled[t] == drafted[t] (t < len - 1) is written to *accepted, and
 * every layer's conv window and SSM state (the table's MB_DL_CONV_STATE and MB_DL_SSM_STATE) are
 * moved to just after position j, as if positions 0..j alone had been stepped: the window holds the
 * last d_conv - 1 conv inputs up to j (from saved_conv and saved_xz), the state saved_ssm's row j.
 * Reads only device memory (sampled, drafted and accepted are context memory), so a captured graph
 * can hold it. The saved buffers are laid out as mb_verify_layers wrote them for this len.
 */
int mb_resume_layers(mb_ctx *ctx, const uint64_t *layers, int64_t n_layer, int64_t len,
                     int64_t d_inner, int64_t d_state, int64_t d_conv, const float *saved_xz,
                     const float *saved_ssm, const float *saved_conv, const int32_t *sampled,
                     const int32_t *drafted, int32_t *accepted);

/**
 * The end of a speculative decoding round on the device, so that rounds follow one another with no
 * host step between them (one captured graph a round, replayed back to back). After
 * mb_resume_layers over len positions with draws sampled[0..len-1] and j = *accepted, and with
 * e = progress[0]:
 *   out[e + t] = sampled[t] for t = 0..j, where e + t < cap (the bytes this round settled);
 *   progress[0] = e + j + 1 (bytes so far), progress[1] += j (drafts accepted), progress[2] += 1
 *   (rounds);
 *   ids[0] = sampled[j] (the next pass's first id) and counters[t] = e + j + 1 + t for t < len
 *   (the next pass's draw counters: position s draws with counter s, as plain decoding does);
 *   when bytes > 0, the bytes at src + j * src_stride are copied to dst (the drafter's state
 *   after the j drafts it had right; the rows of src must not overlap dst).
 * progress is int64[3], counters int64[len], out int32[cap], ids int32[1]: context memory.
 * 1 <= len <= 65; src_stride >= bytes >= 0.
 */
int mb_spec_commit(mb_ctx *ctx, int64_t len, const int32_t *sampled, const int32_t *accepted,
                   int32_t *out, int64_t cap, int64_t *progress, int32_t *ids, int64_t *counters,
                   void *dst, const void *src, int64_t src_stride, int64_t bytes);

/**
 * A byte drafter's k greedy drafts for speculative decoding, with its state after each: the
 * drafter's part of a round on the device. With the drafter's layer table `layers`
 * (mb_decode_layers' MB_DL_* pointers, whose conv windows and SSM states all lie inside
 * [state, state + state_bytes)) and slot(i) = stack + i state_bytes, it is exactly
 *   if read_id != NULL:                   (first read the byte at read_id: a round's settled one)
 *     mb_embedding(read_id, 1, embedding, wdtype, vocab_rows, d_model, hidden);
 *     mb_decode_layers(layers, n_layer, 1, d_model, ..., hidden, residual, normed, xz, xc, x_dbl,
 *                      delta, y);
 *     mb_add_norm(hidden, residual, n_layer > 0, norm_f_w, norm_f_b, norm_kind, eps, 1, d_model,
 *                 normed, NULL);
 *     mb_linear(normed, d_model, lm_head, wdtype, NULL, 1, d_model, vocab_out, logits, vocab_out);
 *   mb_sample(logits, 1, vocab_out, 1, 1, 0, 0, counter, ids);        (ids[0], greedy)
 *   mb_memcpy_d2d(slot(0), state, state_bytes);
 *   for i = 1 .. k:
 *     mb_embedding(ids + i - 1, 1, embedding, wdtype, vocab_rows, d_model, hidden);
 *     mb_decode_layers(layers, n_layer, 1, d_model, ..., hidden, residual, normed, xz, xc, x_dbl,
 *                      delta, y);
 *     mb_memcpy_d2d(slot(i), state, state_bytes);
 *     if i < k:
 *       mb_add_norm(hidden, residual, n_layer > 0, norm_f_w, norm_f_b, norm_kind, eps, 1,
 *                   d_model, normed, NULL);
 *       mb_linear(normed, d_model, lm_head, wdtype, NULL, 1, d_model, vocab_out, logits,
 *                 vocab_out);
 *       mb_sample(logits, 1, vocab_out, 1, 1, 0, 0, counter, ids + i);
 * so the drafts and states are those calls' (the state ends as slot(k); logits and the activation
 * rows hold unspecified values afterwards; with read_id the logits in are not read). CUDA runs it
 * as one launch of a thread-block cluster
 * where the shape allows (csrc/cuda/draft.cu: 1..4 layers, d_conv 4, d_state 16, d_model a
 * multiple of 64 up to 512, d_inner a multiple of 128 up to 1024, vocab_out a multiple of 16, the
 * matrices fitting the cluster's shared memory as bfloat16): its drafts
 * may then differ where that rounding changes an argmax, which only changes how many drafts a
 * verification keeps. 1 <= k <= 64; every buffer in context memory, the table in host memory
 * (read during the call only).
 */
int mb_draft_greedy(mb_ctx *ctx, const uint64_t *layers, int64_t n_layer, int64_t d_model,
                    int64_t d_inner, int64_t d_state, int64_t dt_rank, int64_t d_conv, int wdtype,
                    int norm_kind, float eps, const void *embedding, int64_t vocab_rows,
                    const float *norm_f_w, const float *norm_f_b, const void *lm_head,
                    int64_t vocab_out, float *hidden, float *residual, float *normed, float *xz,
                    float *xc, float *x_dbl, float *delta, float *y, const int32_t *read_id,
                    float *logits, int64_t *counter, void *state, int64_t state_bytes, void *stack,
                    int32_t *ids, int64_t k);

/** out[i, :] = log_softmax(logits[i, :]) over v columns, rows of n. out may equal logits. */
int mb_log_softmax(mb_ctx *ctx, const float *logits, int64_t n, int64_t v, float *out);

/**
 * For each row i < n: out_logprob[i] = log_softmax(logits[i])[targets[i]] and
 * out_rank[i] = number of columns whose logit is strictly greater than logits[i, targets[i]].
 */
int mb_logprob_rank(mb_ctx *ctx, const float *logits, int64_t n, int64_t v, const int32_t *targets,
                    float *out_logprob, int32_t *out_rank);

/**
 * discrete-A of a layer, reduced as it is made (the (len, d, n) tensor is written out only for
 * MB_REDUCE_NONE):
 *   E[t, c, s] = exp(softplus(delta[t * ld_delta + c]) * A[c * n + s])   (torch softplus, threshold 20)
 * for len positions t, d channels c, n states s; delta is dt_proj's output (bias included), A is
 * (d, n). reduction (MB_REDUCE_*) and dim (0, 1, 2, or -1 for all elements) as torch reduces E:
 *   NONE            out (len, d, n); dim ignored.
 *   FRO, NUC        out (len): each position's matrix norm (dim ignored). NUC: the square roots of
 *                   the eigenvalues of the (n, n) Gram matrix E[t]^T E[t], accumulated in float64,
 *                   summed (Jacobi eigenvalues in float64).
 *   MEAN, MIN, MAX, NORM over dim 1 -> out (len, n), over dim 2 -> out (len, d): per position.
 *   ... over dim 0 -> out (d, n), over dim -1 -> out (1): across positions, carried across calls:
 *                   pos0 is the position of delta's first row in the sequence; pos0 == 0 starts a
 *                   new reduction, pos0 > 0 continues the previous call's (same out, out_idx, acc),
 *                   and after every call out holds the reduction of positions [0, pos0 + len).
 *                   MEAN and NORM keep float64 sums in acc (d * n doubles for dim 0, 1 for -1;
 *                   required); acc is not read otherwise (may be NULL).
 * Sums (mean, norm, fro, the Gram matrix) accumulate in float64. MIN and MAX propagate NaN (a NaN
 * wins and stays); out_idx (int64, out's shape; may be NULL), for MIN and MAX over dim 0, 1 or 2,
 * receives torch's indices along dim (the first on ties, the first NaN), over dim 0 counted from
 * the sequence's start (pos0 + t); it is not written otherwise. d >= 1 and n >= 1.
 */
int mb_discrete_a(mb_ctx *ctx, const float *delta, int64_t ld_delta, const float *A, int64_t len,
                  int64_t d, int64_t n, int reduction, int dim, int64_t pos0, double *acc,
                  float *out, int64_t *out_idx);

/**
 * Cosine similarity over the d channels between each state column of discrete-A (E of
 * mb_discrete_a) and the mixer input x, as torch's cosine_similarity(E, x[..., None], dim=-2, eps):
 *   out[t * n + s] = sum_c E[t,c,s] x[t,c] / (max(||E[t,:,s]||, eps) * max(||x[t,:]||, eps))
 * for len positions (out (len, n)); x row t at x + t * ldx (x inside in_proj's output: ldx = 2 d).
 * Dot products and norms accumulate in float64. d >= 1 and n >= 1.
 */
int mb_discrete_a_input_sim(mb_ctx *ctx, const float *delta, int64_t ld_delta, const float *A,
                            const float *x, int64_t ldx, int64_t len, int64_t d, int64_t n,
                            float eps, float *out);

/**
 * Draws one id per row of logits (batch, v) as mamba_ssm's sample():
 *   top_k == 1: argmax (lowest index on ties);
 *   else: keep the top_k largest logits (top_k <= 0 or > v: all), divide by temperature, drop the
 *   tail whose cumulative probability (ascending order) is <= 1 - top_p (top_p >= 1 or <= 0: keep
 *   all; the most probable is always kept), renormalise, draw with uniform u: walk the kept ids
 *   in descending logit order (ties: lower index first) and take the first whose cumulative
 *   probability exceeds u * (sum of kept probabilities). temperature must be > 0 unless top_k == 1.
 * The uniform for row b is mb_uniform(seed, (*counter) * batch + b); the op then increments
 * *counter (an int64 in context memory, so the op can be replayed inside a graph).
 * out_ids (batch) int32 in context memory.
 */
int mb_sample(mb_ctx *ctx, const float *logits, int64_t batch, int64_t v, float temperature,
              int32_t top_k, float top_p, uint64_t seed, int64_t *counter, int32_t *out_ids);

/**
 * mb_sample with a counter a row: row b of logits (n, v) is drawn as mb_sample(logits + b v, 1, v,
 * ..., counters + b, out_ids + b) draws it (the uniform mb_uniform(seed, counters[b])), and
 * counters[b] is then incremented: n such calls in one (a speculative pass draws each of its
 * positions with that position's counter). counters (n int64) and out_ids (n int32) in context
 * memory.
 */
int mb_sample_rows(mb_ctx *ctx, const float *logits, int64_t n, int64_t v, float temperature,
                   int32_t top_k, float top_p, uint64_t seed, int64_t *counters,
                   int32_t *out_ids);

/** Reads every byte of p once and writes a float checksum to *sink (both context memory): a
 * read-bandwidth probe for benchmarks. bytes must be a multiple of 64. */
int mb_read_probe(mb_ctx *ctx, const void *p, size_t bytes, float *sink);

/* ---- graphs (CUDA only; CPU returns MB_ERR_UNSUPPORTED) --------------------------------------- */

/** Starts capturing the ops issued on the context into a graph. */
int mb_graph_begin(mb_ctx *ctx);
/** Ends the capture; *out_graph is an id for mb_graph_launch. */
int mb_graph_end(mb_ctx *ctx, int *out_graph);
/** Replays a captured graph on the context's stream (asynchronous). */
int mb_graph_launch(mb_ctx *ctx, int graph);
/** Releases a captured graph. */
int mb_graph_destroy(mb_ctx *ctx, int graph);

/* ---- test-only: called by tests (to check mb_sample's draws), not by the toolkit -------------- */

/**
 * The counter-based uniform in [0, 1) used by mb_sample: splitmix64(seed ^ splitmix64(index)),
 * top 24 bits * 2^-24. Identical on every backend (host function).
 */
float mb_uniform(uint64_t seed, uint64_t index);

#ifdef __cplusplus
}
#endif

#endif /* MAMBABYTE_H */
