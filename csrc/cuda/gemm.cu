/*
 * gemm.cu — mb_linear on CUDA: y = x w^T + bias, w (out_f, in_f) row-major, fp32 or bf16.
 *
 * n <= 8 (decoding): a GEMV kernel that streams the weights once with 16-byte loads and keeps
 * the n input rows' accumulators in registers (fp32 math): bound by reading the weights.
 * n > 8: cuBLAS. fp32 weights: CUBLAS_COMPUTE_32F (strict) or CUBLAS_COMPUTE_32F_FAST_TF32 when
 * the context allows TF32. bf16 weights: x is rounded to bf16 into the context's scratch and the
 * product runs on the bf16 tensor cores with fp32 accumulation and output.
 * The bias is added by a separate small kernel after cuBLAS, fused in the GEMV.
 *
 * This is the only file of the backend that includes cuBLAS.
 */
#include <cublas_v2.h>
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <stdint.h>

#include <type_traits>

#include "bulk_copy.cuh"
#include "cuda_internal.cuh"
#include "gemv.cuh"
#include "gemv_tc.cuh"
#include "norm_row.cuh"

static const char *blas_status_str(cublasStatus_t s) {
  switch (s) {
    case CUBLAS_STATUS_SUCCESS: return "success";
    case CUBLAS_STATUS_NOT_INITIALIZED: return "not initialized";
    case CUBLAS_STATUS_ALLOC_FAILED: return "allocation failed";
    case CUBLAS_STATUS_INVALID_VALUE: return "invalid value";
    case CUBLAS_STATUS_ARCH_MISMATCH: return "architecture mismatch";
    case CUBLAS_STATUS_MAPPING_ERROR: return "mapping error";
    case CUBLAS_STATUS_EXECUTION_FAILED: return "execution failed";
    case CUBLAS_STATUS_INTERNAL_ERROR: return "internal error";
    case CUBLAS_STATUS_NOT_SUPPORTED: return "not supported";
    default: return "unknown cuBLAS status";
  }
}

#define BLAS_CHECK(call, op)                                                                   \
  do {                                                                                         \
    cublasStatus_t bs_ = (call);                                                               \
    if (bs_ != CUBLAS_STATUS_SUCCESS)                                                          \
      return mb_fail(bs_ == CUBLAS_STATUS_ALLOC_FAILED ? MB_ERR_OOM : MB_ERR_DEVICE,           \
                     "cuda: %s: cuBLAS %s", (op), blas_status_str(bs_));                       \
  } while (0)

int mbcuda_blas_init(mb_ctx *ctx) {
  mbcuda_state *st = mbcuda_st(ctx);
  cublasHandle_t h = NULL;
  BLAS_CHECK(cublasCreate(&h), "cublasCreate");
  st->blas = h;
  BLAS_CHECK(cublasSetStream(h, st->stream), "cublasSetStream");
  BLAS_CHECK(cublasSetWorkspace(h, st->blas_ws, st->blas_ws_bytes), "cublasSetWorkspace");
  BLAS_CHECK(cublasSetMathMode(h, CUBLAS_DEFAULT_MATH), "cublasSetMathMode");
  mbcuda_lt_init(ctx);
  return MB_OK;
}

void mbcuda_blas_destroy(mb_ctx *ctx) {
  mbcuda_lt_destroy(ctx);
  mbcuda_state *st = mbcuda_st(ctx);
  if (st && st->blas) {
    cublasDestroy((cublasHandle_t)st->blas);
    st->blas = NULL;
  }
}

/* ---- GEMV (n <= 8) --------------------------------------------------------------------------- */

/* The GEMV kernel: one block of gemv_block (R output rows a thread), its weights loaded before
 * the PDL wait. */
template <typename WT, int N, int G, bool VEC, bool CONV, int R>
__global__ void __launch_bounds__(256)
k_gemv(const float *__restrict__ x, int64_t ldx, const WT *__restrict__ w,
       const float *__restrict__ bias, int n, int64_t in_f, int64_t out_f, float *__restrict__ y,
       int64_t ldy, ConvEpi ce, int jsplit) {
  mb_pdl_trigger();
  auto pdl_wait = [] { mb_pdl_wait(); };
  gemv_block<WT, N, G, VEC, CONV, XLoad::Ldg, decltype(pdl_wait), false, R>(
      x, ldx, w, bias, n, in_f, out_f, y, ldy, ce, jsplit, blockIdx.x, blockDim.x, pdl_wait);
}

template <typename WT, int N, int G, int R>
static cudaError_t gemv_launch_g(mb_ctx *ctx, bool vec, const float *x, int64_t ldx, const WT *w,
                                 const float *bias, int n, int64_t in_f, int64_t out_f, float *y,
                                 int64_t ldy, const ConvEpi &ce) {
  const int jsplit = (n + N - 1) / N;
  int threads = 256;
  if (G < 256) { /* smaller blocks when there are few rows, so that every SM gets work */
    const int64_t want = 2 * (int64_t)mbcuda_st(ctx)->sm_count;
    while (threads > 64 && threads > G &&
           jsplit * ((out_f * G + (int64_t)threads * R - 1) / ((int64_t)threads * R)) < want)
      threads >>= 1;
  }
  const int rpb = threads / G * R; /* rows a block */
  dim3 grid((unsigned)(((out_f + rpb - 1) / rpb) * jsplit)), block((unsigned)threads);
  if constexpr (R > 1) { /* the 16-byte path only (gemv_launch_rows) */
    if (ce.w)
      return mbcuda_launch(ctx, k_gemv<WT, N, G, true, true, R>, grid, block, 0, x, ldx, w, bias,
                           n, in_f, out_f, y, ldy, ce, jsplit);
    return mbcuda_launch(ctx, k_gemv<WT, N, G, true, false, R>, grid, block, 0, x, ldx, w, bias, n,
                         in_f, out_f, y, ldy, ce, jsplit);
  } else {
#define GEMV_LAUNCH(V, C)                                                                      \
  mbcuda_launch(ctx, k_gemv<WT, N, G, V, C, 1>, grid, block, 0, x, ldx, w, bias, n, in_f, out_f, \
                y, ldy, ce, jsplit)
    /* the conv epilogue is its own instantiation, so plain GEMVs keep their registers */
    if (ce.w) return vec ? GEMV_LAUNCH(true, true) : GEMV_LAUNCH(false, true);
    return vec ? GEMV_LAUNCH(true, false) : GEMV_LAUNCH(false, false);
#undef GEMV_LAUNCH
  }
}

/* Inputs per thread, N: 1 when the split still fits in about two waves of the GPU's threads
 * (small matrices: each thread's chain of dependent loads is what costs; with all 8 inputs in
 * one thread the 8-position verification's products took 414 against 251 us at the 384 x 24
 * shape, docs/cuda_notes.md), else more, up to 8 (large matrices: a split reads the weights once
 * per block group, from L2). MAMBABYTE_CUDA_GEMV_ROWS=1|2|4|8 fixes it (A/B runs). */
static int gemv_rows_per_thread(mb_ctx *ctx, int n, int64_t group_threads) {
  const int fixed = mbcuda_st(ctx)->gemv_rows;
  if (fixed > 0) return fixed < n ? fixed : n;
  const int64_t cap = 2 * (int64_t)mbcuda_st(ctx)->sm_count * 2048;
  int r = 1;
  while (r < n && group_threads * ((n + r - 1) / r) > cap) r <<= 1;
  return r;
}

/* Output rows per thread, R, for N inputs a thread: each x value loaded serves R rows, so a
 * weight costs N / R x loads instead of N (up to 4 rows: their weights in flight and unpacked
 * take 4 x 8 registers). 2 for N = 2, else 4: no other pair did better (cuda_bench --gemv8,
 * docs/cuda_notes.md). MAMBABYTE_CUDA_GEMV_OUT=1 keeps one row a thread (A/B runs). */
static int gemv_out_rows(mb_ctx *ctx, int n_per_thread) {
  if (n_per_thread < 2 || mbcuda_st(ctx)->gemv_out == 1) return 1;
  return n_per_thread < 4 ? 2 : 4;
}

template <typename WT, int G>
static cudaError_t gemv_launch_rows(mb_ctx *ctx, bool vec, const float *x, int64_t ldx,
                                    const WT *w, const float *bias, int n, int64_t in_f,
                                    int64_t out_f, float *y, int64_t ldy, const ConvEpi &ce) {
  const int r = gemv_rows_per_thread(ctx, n, out_f * G);
  const bool rows = vec && gemv_out_rows(ctx, r) > 1;
#define GL(N, R) gemv_launch_g<WT, N, G, R>(ctx, vec, x, ldx, w, bias, n, in_f, out_f, y, ldy, ce)
  if (r <= 1) return GL(1, 1);
  if (r == 2) return rows ? GL(2, 2) : GL(2, 1);
  if (r <= 4) return rows ? GL(4, 4) : GL(4, 1);
  return rows ? GL(8, 4) : GL(8, 1);
#undef GL
}

/* The end of a tensor-core row (lane 0 of its warp, row < out_f; gemv_block's epilogue): the bias,
 * y[at], with add_res the residual add res[at], with conv the conv step of input j. (Not a
 * template: nvcc 13.0's front end fails on a call of a template here from k_gemv_norm_tc, whose
 * prologue has a lambda in a lambda; the constant flags fold away as template ones would.) */
__device__ __forceinline__ void tc_row_end(bool conv, bool add_res, float s,
                                           const float *__restrict__ bias, int64_t row,
                                           float *__restrict__ y, float *__restrict__ res,
                                           int64_t at, const ConvEpi &ce,
                                           const float (&cw)[CONV_EPI_KMAX], float cb, int j) {
  const float v = s + (bias ? bias[row] : 0.f);
  y[at] = v;
  if (add_res && res) res[at] += v;
  if (conv && row < ce.dc) conv_epi(ce, cw, cb, j, row, v);
}

/* The ops' GEMV on the tensor cores (gemv_tc.cuh): block (b, j) takes row group b of input j,
 * its parts split from x after the PDL wait; the epilogue as gemv_block's (bias, the residual
 * add, the conv step of input j). */
template <bool CONV, bool RES>
__global__ void __launch_bounds__(256)
k_gemv_tc(const float *__restrict__ x, int64_t ldx, const uint16_t *__restrict__ w,
          const float *__restrict__ bias, int64_t in_f, int64_t out_f, float *__restrict__ y,
          int64_t ldy, ConvEpi ce, float *__restrict__ res) {
  mb_pdl_trigger();
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, j = (int)blockIdx.y;
  const int64_t row = (int64_t)blockIdx.x * TC_ROWS + warp;
  float cw[CONV_EPI_KMAX] = {0.f, 0.f, 0.f, 0.f}, cb = 0.f;
  if (CONV && lane == 0 && row < out_f && row < ce.dc) conv_consts(ce, row, cw, cb);
  const float s = tc_group_block<TC_MAX_IN>(w, in_f, out_f, (int64_t)blockIdx.x * TC_ROWS,
                                            [&](uint16_t *xp, int64_t pitch) {
    mb_pdl_wait();
    tc_split_row<XLoad::Ldg>(x + j * ldx, in_f, xp, pitch);
    __syncthreads();
  });
  if (lane != 0 || row >= out_f) return;
  tc_row_end(CONV, RES, s, bias, row, y, res, j * ldy + row, ce, cw, cb, j);
}

static cudaError_t gemv_tc_launch(mb_ctx *ctx, const float *x, int64_t ldx, const uint16_t *w,
                                  const float *bias, int n, int64_t in_f, int64_t out_f, float *y,
                                  int64_t ldy, const ConvEpi &ce, float *res) {
  const dim3 grid((unsigned)((out_f + TC_ROWS - 1) / TC_ROWS), (unsigned)n), block(256);
  if (ce.w)
    return mbcuda_launch(ctx, k_gemv_tc<true, false>, grid, block, 0, x, ldx, w, bias, in_f, out_f,
                         y, ldy, ce, res);
  if (res)
    return mbcuda_launch(ctx, k_gemv_tc<false, true>, grid, block, 0, x, ldx, w, bias, in_f, out_f,
                         y, ldy, ce, res);
  return mbcuda_launch(ctx, k_gemv_tc<false, false>, grid, block, 0, x, ldx, w, bias, in_f, out_f,
                       y, ldy, ce, res);
}

/* gemv_dispatch's tag for the tensor-core form (not a group size) */
#define GEMV_TC 1

/* Calls f(G, VEC) with gemv_block's group size for these rows (gemv_group_size) and whether its
 * loads are 16-byte ones (gemv_vec), as compile-time constants (std::integral_constant); G =
 * GEMV_TC (VEC true) where the tensor-core form takes the shape (gemv_tc_fits, bf16 only). Every
 * n <= 8 GEMV launcher picks its kernel through it, so they all take the same path for the same
 * shape: the condition of their giving the same bits. */
template <typename WT, typename F>
static cudaError_t gemv_dispatch(mb_ctx *ctx, int64_t in_f, int64_t ldx, int64_t out_f,
                                 const void *x, const void *w, F f) {
  constexpr int EPC = 16 / (int)sizeof(WT);
  const bool vec = gemv_vec(in_f, ldx, x, w, (int)sizeof(WT));
  if constexpr (std::is_same<WT, uint16_t>::value)
    if (gemv_tc_fits(mbcuda_st(ctx)->gemv_tc, true, vec, in_f, out_f))
      return f(std::integral_constant<int, GEMV_TC>(), std::true_type());
  const auto go = [&](auto g) {
    return vec ? f(g, std::true_type()) : f(g, std::false_type());
  };
  switch (gemv_group_size(out_f, vec ? in_f / EPC : in_f, mbcuda_st(ctx)->sm_count,
                          mbcuda_st(ctx)->gemv_g256_rows)) {
    case 256: return go(std::integral_constant<int, 256>());
    case 32: return go(std::integral_constant<int, 32>());
    case 8: return go(std::integral_constant<int, 8>());
    default: return go(std::integral_constant<int, 4>());
  }
}

template <typename WT>
static cudaError_t gemv(mb_ctx *ctx, const float *x, int64_t ldx, const WT *w, const float *bias,
                        int n, int64_t in_f, int64_t out_f, float *y, int64_t ldy,
                        const ConvEpi &ce) {
  return gemv_dispatch<WT>(ctx, in_f, ldx, out_f, x, w, [&](auto g, auto v) {
    if constexpr (decltype(g)::value == GEMV_TC)
      return gemv_tc_launch(ctx, x, ldx, (const uint16_t *)w, bias, n, in_f, out_f, y, ldy, ce,
                            nullptr);
    else
      return gemv_launch_rows<WT, decltype(g)::value>(ctx, decltype(v)::value, x, ldx, w, bias, n,
                                                      in_f, out_f, y, ldy, ce);
  });
}

/* ---- helpers for the cuBLAS path ------------------------------------------------------------- */

/* The row-wise elementwise kernels below run on a 2D grid: threads along a row's columns (x), a
 * block row per EW_ROWS rows (y, striding when there are more than 65535 groups), so that no
 * index is divided (a 64-bit division per element made them issue-bound, not memory-bound). */
#define EW_THREADS 256
#define EW_ROWS 8

static dim3 ew_grid(int64_t cols, int64_t n) {
  int64_t groups = (n + EW_ROWS - 1) / EW_ROWS;
  return dim3(mbcuda_blocks(cols, EW_THREADS), (unsigned)(groups < 65535 ? groups : 65535));
}

/* fp32 <-> bf16 bits, by the output type: rounded to nearest even, or widened (exact). */
__device__ __forceinline__ uint16_t ew_convert(float v, uint16_t *) { return mb_f32_to_bf16(v); }
__device__ __forceinline__ float ew_convert(uint16_t v, float *) { return mb_bf16_to_f32(v); }

/* out (n, k) at ld ldo = x (n rows of k values at ld ldx), converted (any alignment): fp32 rows to
 * bf16 for mb_linear's tensor-core path and mb_linear_to_bf16's output, bf16 rows to fp32 for
 * mb_linear_bf16's other paths. */
template <typename TI, typename TO>
__global__ void k_convert_rows(const TI *__restrict__ x, int64_t ldx, int64_t n, int64_t k,
                               TO *__restrict__ out, int64_t ldo) {
  MB_PDL_ENTRY();
  const int64_t c = blockIdx.x * (int64_t)blockDim.x + threadIdx.x;
  if (c >= k) return;
  for (int64_t r0 = (int64_t)blockIdx.y * EW_ROWS; r0 < n; r0 += (int64_t)gridDim.y * EW_ROWS) {
    const int64_t r1 = r0 + EW_ROWS < n ? r0 + EW_ROWS : n;
    for (int64_t r = r0; r < r1; r++) out[r * ldo + c] = ew_convert(x[r * ldx + c], out);
  }
}

/* out (n, 4 k4) bf16, dense = x (n rows of 4 k4 floats at ld ldx, 16-byte aligned), rounded. */
__global__ void k_to_bf16_v4(const float *__restrict__ x, int64_t ldx, int64_t n, int64_t k4,
                             __nv_bfloat16 *__restrict__ out) {
  MB_PDL_ENTRY();
  const int64_t c = blockIdx.x * (int64_t)blockDim.x + threadIdx.x;
  if (c >= k4) return;
  for (int64_t r0 = (int64_t)blockIdx.y * EW_ROWS; r0 < n; r0 += (int64_t)gridDim.y * EW_ROWS) {
    const int64_t r1 = r0 + EW_ROWS < n ? r0 + EW_ROWS : n;
    for (int64_t r = r0; r < r1; r++)
      *(uint2 *)(out + 4 * (r * k4 + c)) = mb_f32x4_to_bf16(*(const float4 *)(x + r * ldx + 4 * c));
  }
}

/* y[r, c] += bias[c] for r < n, c < m. */
__global__ void k_add_bias(float *y, int64_t ldy, const float *__restrict__ bias, int64_t n,
                           int64_t m) {
  mb_pdl_trigger();
  const int64_t c = blockIdx.x * (int64_t)blockDim.x + threadIdx.x;
  if (c >= m) return;
  const float b = bias[c]; /* constant: before the wait */
  mb_pdl_wait();
  for (int64_t r0 = (int64_t)blockIdx.y * EW_ROWS; r0 < n; r0 += (int64_t)gridDim.y * EW_ROWS) {
    const int64_t r1 = r0 + EW_ROWS < n ? r0 + EW_ROWS : n;
    if (r1 - r0 == EW_ROWS) {
      /* the group's loads first: as `y[r] += b` row after row, each load waited for the store
       * before it (the compiler cannot rule out that they alias), 8 round trips a thread */
      float v[EW_ROWS];
#pragma unroll
      for (int k = 0; k < EW_ROWS; k++) v[k] = y[(r0 + k) * ldy + c];
#pragma unroll
      for (int k = 0; k < EW_ROWS; k++) y[(r0 + k) * ldy + c] = v[k] + b;
    } else {
      for (int64_t r = r0; r < r1; r++) y[r * ldy + c] += b;
    }
  }
}

/* A product's bias added by a pass of its own (where no epilogue added it): y[r, c] += bias[c]. */
static int add_bias(mb_ctx *ctx, float *y, int64_t ldy, const float *bias, int64_t n,
                    int64_t out_f, const char *op) {
  MBCUDA_LAUNCH(op, k_add_bias, ew_grid(out_f, n), dim3(EW_THREADS), 0, y, ldy, bias, n, out_f);
  return MB_OK;
}

/* x (n rows of in_f floats at ld ldx) rounded to bf16 into dst (dense rows): the bits of the
 * tensor-core path's input, as the producers' _bf16 outputs round them too. */
static int rows_to_bf16(mb_ctx *ctx, const float *x, int64_t ldx, int64_t n, int64_t in_f,
                        __nv_bfloat16 *dst, const char *op) {
  if (in_f % 4 == 0 && ldx % 4 == 0 && ((uintptr_t)x % 16) == 0)
    MBCUDA_LAUNCH(op, k_to_bf16_v4, ew_grid(in_f / 4, n), dim3(EW_THREADS), 0, x, ldx, n, in_f / 4, dst);
  else
    MBCUDA_LAUNCH(op, (k_convert_rows<float, uint16_t>), ew_grid(in_f, n), dim3(EW_THREADS), 0, x, ldx, n, in_f, (uint16_t *)dst, in_f);
  return MB_OK;
}

/* y = x w^T + beta y with cuBLAS: rows x (ld ldx) and weights w (out_f, in_f) of type t (bf16 on
 * the tensor cores, or fp32 with compute type ct), fp32 accumulation, output of type yt (fp32, or
 * bf16 for mb_linear_to_bf16) at ld ldy; the one call of every product here that is not a GEMV
 * or mb_linear_add_norm's split. Forward chunks run through cuBLASLt's plans where the context
 * says so (blas_lt.cu): products added in place (beta != 0) on lt_acc (bf16) or lt_acc_f32
 * (fp32), the others on lt_algo (dt_proj writing bf16 on entry 2 or 0 measured as GemmEx).
 * `bias` (out_f floats, with fp32 y and beta 0) is added to every row: by cuBLASLt's epilogue where
 * it takes a forward chunk's product (lt_algo's entry, or the heuristic's first; lt_bias), else by
 * a pass of its own after the product. */
static int gemm(mb_ctx *ctx, cudaDataType t, cublasComputeType_t ct, const void *x, int64_t ldx,
                const void *w, int64_t n, int64_t in_f, int64_t out_f, void *y, cudaDataType yt,
                int64_t ldy, float beta, const char *op, const float *bias = NULL) {
  mbcuda_state *st = mbcuda_st(ctx);
  int done = 0;
  if (bias && st->lt_bias) {
    const int rc = mbcuda_gemm_lt(ctx, st->lt_algo >= 0 ? st->lt_algo : 0, w, t, x, t, ldx, n,
                                  in_f, out_f, y, yt, ldy, beta, NULL, bias, ct, op, &done);
    if (rc || done) return rc;
  }
  const int index = beta == 0.f ? st->lt_algo : t == CUDA_R_16BF ? st->lt_acc : st->lt_acc_f32;
  int rc = mbcuda_gemm_lt(ctx, index, w, t, x, t, ldx, n, in_f, out_f, y, yt, ldy, beta, NULL,
                          NULL, ct, op, &done);
  if (rc) return rc;
  if (!done) {
    const float alpha = 1.f;
    BLAS_CHECK(cublasGemmEx((cublasHandle_t)st->blas, CUBLAS_OP_T, CUBLAS_OP_N, (int)out_f,
                            (int)n, (int)in_f, &alpha, w, t, (int)in_f, x, t, (int)ldx, &beta, y,
                            yt, (int)ldy, ct, CUBLAS_GEMM_DEFAULT),
               op);
  }
  return bias ? add_bias(ctx, (float *)y, ldy, bias, n, out_f, "linear (bias)") : MB_OK;
}

/* gemm on the tensor cores: bf16 rows and weights. */
static int gemm_bf16(mb_ctx *ctx, const void *x, int64_t ldx, const void *w, int64_t n,
                     int64_t in_f, int64_t out_f, float *y, int64_t ldy, float beta,
                     const char *op, const float *bias = NULL) {
  return gemm(ctx, CUDA_R_16BF, CUBLAS_COMPUTE_32F, x, ldx, w, n, in_f, out_f, y, CUDA_R_32F, ldy,
              beta, op, bias);
}

/* ---- TF32 products on fp16 operands ------------------------------------------------------------
 * Where TF32 is allowed, a wide forward product (in_proj's 8192 x 1792 x 7168) runs ~2x faster on
 * the fp16 tensor cores than on TF32's. fp16 keeps TF32's 11-bit significand (both round an fp32
 * value to 10 stored bits) but not its exponent range, so each operand is first scaled by a power
 * of two that puts its largest magnitude in [2^14, 2^15): no value can overflow, every value within
 * 2^-28 of the largest keeps the full significand (smaller ones, fp16 subnormals, are off by at
 * most 2^-39 of the largest, far below the accumulation's own rounding), and the product is scaled back
 * exactly by cuBLAS's alpha (read from device memory: the scales are known only there). Costs two
 * passes over each operand (its largest magnitude, then the conversion), ~10 bytes an element, so
 * f16_worth takes this path only where the tensor cores' saving is well above them. */

struct F16Operand { /* rows of cols floats at ld -> dense fp16 rows */
  const float *src;
  int64_t ld, rows, cols;
  __half *dst;
};

/* a or b by blockIdx.y, field by field: a reference chosen at run time would make the compiler
 * copy both parameter structs to local memory to address them */
__device__ __forceinline__ F16Operand f16_pick(const F16Operand &a, const F16Operand &b) {
  const bool y = blockIdx.y != 0;
  return F16Operand{y ? b.src : a.src, y ? b.ld : a.ld, y ? b.rows : a.rows,
                    y ? b.cols : a.cols, y ? b.dst : a.dst};
}

template <int V>
__device__ __forceinline__ float f16_absmax(const float *p) {
  if (V == 4) {
    const float4 v = *(const float4 *)p;
    return fmaxf(fmaxf(fabsf(v.x), fabsf(v.y)), fmaxf(fabsf(v.z), fabsf(v.w)));
  }
  return fabsf(*p);
}

/* Rows a block takes at a time in the two kernels below: their loads are all asked for before
 * the first is used (one row at a time ran the passes at ~2.1 TB/s on the H100, four at ~2.9). */
#define F16_ROWS 4

/* slots[y] = max |element| of operand y (blockIdx.y: 0 a, 1 b), as the bits of a non-negative
 * float (ordered as unsigned); row groups striped over the blocks, a row's columns over the
 * block's threads. */
template <int V>
__global__ void k_f16_amax(F16Operand a, F16Operand b, unsigned *slots) {
  MB_PDL_ENTRY();
  const F16Operand o = f16_pick(a, b);
  float m = 0.f;
  const int64_t cv = o.cols / V;
  for (int64_t r0 = (int64_t)blockIdx.x * F16_ROWS; r0 < o.rows;
       r0 += (int64_t)gridDim.x * F16_ROWS) {
    const int nr = o.rows - r0 < F16_ROWS ? (int)(o.rows - r0) : F16_ROWS;
    const float *row = o.src + r0 * o.ld;
    for (int64_t c = threadIdx.x; c < cv; c += blockDim.x) {
      float v[F16_ROWS];
#pragma unroll
      for (int i = 0; i < F16_ROWS; i++)
        v[i] = i < nr ? f16_absmax<V>(row + i * o.ld + V * c) : 0.f;
#pragma unroll
      for (int i = 0; i < F16_ROWS; i++) m = fmaxf(m, v[i]);
    }
  }
  __shared__ float red[32];
  m = block_max(m, red);
  if (threadIdx.x == 0) atomicMax(slots + blockIdx.y, __float_as_uint(m));
}

/* dst = src scaled by its power of two (from its largest magnitude's bits in slots, or given:
 * exp_in, one operand), rounded to fp16 (nearest even). Block (0, y) writes operand y's exponent
 * to exps (when not NULL); block (0, 0) the product's alpha (the inverse of both scales) and beta
 * for cuBLAS (when ab is not NULL). */
template <int V>
__global__ void k_f16_convert(F16Operand a, F16Operand b, const unsigned *slots,
                              const int32_t *exp_in, float *ab, float beta, int32_t *exps) {
  MB_PDL_ENTRY();
  const F16Operand o = f16_pick(a, b);
  /* 2^s as two floats (2^164 is not one); v * s1 * s2 is v * 2^s exactly wherever the result is
   * an fp16 normal */
  const int se = exp_in ? *exp_in : mb_f16_scale_exp(slots[blockIdx.y]);
  float s1, s2;
  mb_f16_scale_factors(se, &s1, &s2);
  if (blockIdx.x == 0 && threadIdx.x == 0) {
    if (exps) exps[blockIdx.y] = se;
    /* 2^-(s_x + s_w): inf or 0 where the product itself leaves fp32's range, as TF32's would */
    if (ab && blockIdx.y == 0) {
      ab[0] = ldexpf(1.f, -(mb_f16_scale_exp(slots[0]) + mb_f16_scale_exp(slots[1])));
      ab[1] = beta;
    }
  }
  const int64_t cv = o.cols / V;
  for (int64_t r0 = (int64_t)blockIdx.x * F16_ROWS; r0 < o.rows;
       r0 += (int64_t)gridDim.x * F16_ROWS) {
    const int nr = o.rows - r0 < F16_ROWS ? (int)(o.rows - r0) : F16_ROWS;
    const float *row = o.src + r0 * o.ld;
    __half *out = o.dst + r0 * o.cols;
    for (int64_t c = threadIdx.x; c < cv; c += blockDim.x) {
      if (V == 4) {
        float4 v[F16_ROWS];
#pragma unroll
        for (int i = 0; i < F16_ROWS; i++)
          if (i < nr) v[i] = *(const float4 *)(row + i * o.ld + 4 * c);
#pragma unroll
        for (int i = 0; i < F16_ROWS; i++)
          if (i < nr) {
            __half2 h[2] = {__floats2half2_rn(v[i].x * s1 * s2, v[i].y * s1 * s2),
                            __floats2half2_rn(v[i].z * s1 * s2, v[i].w * s1 * s2)};
            *(uint2 *)(out + i * o.cols + 4 * c) = *(const uint2 *)h;
          }
      } else {
        float v[F16_ROWS];
#pragma unroll
        for (int i = 0; i < F16_ROWS; i++)
          if (i < nr) v[i] = row[i * o.ld + c];
#pragma unroll
        for (int i = 0; i < F16_ROWS; i++)
          if (i < nr) out[i * o.cols + c] = __float2half_rn(v[i] * s1 * s2);
      }
    }
  }
}

/* Whether a TF32 product of n x in_f x out_f gains on fp16 operands: the tensor cores' time saved
 * (fp16 at ~1.9x TF32's rate: ~750 against ~400 TFLOP/s on the H100 and H200) at least twice the
 * two passes' traffic (~10 bytes an element of x and of w at ~3 TB/s). By that, in_proj over a
 * forward chunk of 8192 rows (246 us saved, 92 us of passes) takes it; out_proj (123, 119), x_proj
 * and dt_proj do not, nor chunks of fewer than ~4,000 rows. Products with in_f < 512 never do:
 * their output's traffic, not the tensor cores, bounds them. */
static bool f16_worth(const mbcuda_state *st, int64_t n, int64_t in_f, int64_t out_f) {
  if (st->tf32_f16 != 1) return st->tf32_f16 == 2;
  if (in_f < 512) return false; /* shallow products are bound by their output, not their math */
  const double saved = 2.0 * n * in_f * out_f * (1.0 / 400e12 - 1.0 / 750e12);
  const double passes = 10.0 * (double)(n + out_f) * in_f / 3.0e12;
  return saved > 2.0 * passes;
}

/* alpha = 2^-(ex + ew) and beta for cuBLAS, from operands' exponents in device memory; with
 * y_exp (fp16 output, c = ceil(log2(in_f))): alpha 2^-(15 + c), the output's exponent
 * ex + ew - 15 - c into *y_exp (mb_linear_f16's y_f16). */
__global__ void k_f16_alpha(const int32_t *ex, const int32_t *ew, float *ab, float beta, int c,
                            int32_t *y_exp) {
  MB_PDL_ENTRY();
  if (threadIdx.x == 0) {
    ab[0] = y_exp ? ldexpf(1.f, -15 - c) : ldexpf(1.f, -(*ex + *ew));
    ab[1] = beta;
    if (y_exp) *y_exp = *ex + *ew - 15 - c;
  }
}

/* The f16 scratch's head (F16_HEAD bytes): the largest magnitudes' bits (offset 0), alpha and
 * beta (F16_AB), exponents of conversions made by a call (F16_EXPS); then x's rows, then w's. */
#define F16_HEAD 256
#define F16_AB 64
#define F16_EXPS 128
static size_t f16_x_bytes(int64_t n, int64_t in_f) {
  return ((size_t)(n * in_f) * 2 + 255) & ~(size_t)255;
}
static size_t f16_scratch_bytes(int64_t n, int64_t in_f, int64_t out_f) {
  return F16_HEAD + f16_x_bytes(n, in_f) + (size_t)(out_f * in_f) * 2;
}

/* The passes' grid: row groups striped over at most 8 blocks an SM, a row per operand (y). */
static dim3 f16_grid(const mbcuda_state *st, const F16Operand &a, const F16Operand &b) {
  const bool two = b.src != NULL;
  const int64_t rows = two && b.rows > a.rows ? b.rows : a.rows;
  const int64_t groups = (rows + F16_ROWS - 1) / F16_ROWS;
  return dim3((unsigned)(groups < 8 * (int64_t)st->sm_count ? groups : 8 * st->sm_count),
              two ? 2 : 1);
}

/* Whether both operands (b absent: a alone) take float4 loads. */
static bool f16_v4(const F16Operand &a, const F16Operand &b) {
  const auto ok = [](const F16Operand &o) {
    return o.cols % 4 == 0 && o.ld % 4 == 0 && (uintptr_t)o.src % 16 == 0;
  };
  return ok(a) && (b.src == NULL || ok(b));
}

/* k_f16_amax over a (and b when b.src is not NULL) into slots, zeroed by the caller. */
static int f16_amax(mb_ctx *ctx, const F16Operand &a, const F16Operand &b, unsigned *slots,
                    const char *op) {
  const dim3 grid = f16_grid(mbcuda_st(ctx), a, b);
  if (f16_v4(a, b)) MBCUDA_LAUNCH(op, k_f16_amax<4>, grid, dim3(256), 0, a, b, slots);
  else MBCUDA_LAUNCH(op, k_f16_amax<1>, grid, dim3(256), 0, a, b, slots);
  return MB_OK;
}

/* k_f16_convert of a (and b): by the largest magnitudes in slots, or (one operand) by the
 * exponent at exp_in; exps and ab as the kernel writes them (either may be NULL). */
static int f16_convert(mb_ctx *ctx, const F16Operand &a, const F16Operand &b,
                       const unsigned *slots, const int32_t *exp_in, float *ab, float beta,
                       int32_t *exps, const char *op) {
  const dim3 grid = f16_grid(mbcuda_st(ctx), a, b);
  if (f16_v4(a, b))
    MBCUDA_LAUNCH(op, k_f16_convert<4>, grid, dim3(256), 0, a, b, slots, exp_in, ab, beta, exps);
  else
    MBCUDA_LAUNCH(op, k_f16_convert<1>, grid, dim3(256), 0, a, b, slots, exp_in, ab, beta, exps);
  return MB_OK;
}

/* An absent second operand (the passes over one). */
static const F16Operand F16_NONE = {NULL, 0, 0, 0, NULL};

/* The amax and conversion passes over one or two operands (a; b when b.src is not NULL) into
 * the scratch whose head is `head`: exps (when not NULL) receives their exponents, ab (when not
 * NULL) alpha and beta for a product of the two. */
static int f16_passes(mb_ctx *ctx, const F16Operand &a, const F16Operand &b, void *head,
                      int32_t *exps, float *ab, float beta, const char *op) {
  mbcuda_state *st = mbcuda_st(ctx);
  unsigned *slots = (unsigned *)head; /* [0] a's largest magnitude, [1] b's */
  MBCUDA_CHECK(cudaMemsetAsync(slots, 0, 2 * sizeof(unsigned), st->stream), op);
  int rc = f16_amax(ctx, a, b, slots, op);
  if (rc) return rc;
  return f16_convert(ctx, a, b, slots, NULL, ab, beta, exps, op);
}

/* y = alpha (x_h w_h^T) + beta y on the fp16 tensor cores, fp32 accumulation, fp32 output (yt
 * CUDA_R_32F) or fp16 (CUDA_R_16F, rounded from the fp32 alpha (x_h w_h^T)), x_h (n rows at
 * ldxh) and w_h (out_f, in_f) fp16, alpha and beta read from ab in device memory. */
static int f16_product(mb_ctx *ctx, const __half *xh, int64_t ldxh, const __half *wh, int64_t n,
                       int64_t in_f, int64_t out_f, void *y, cudaDataType_t yt, int64_t ldy,
                       float beta, const float *ab, const char *op) {
  mbcuda_state *st = mbcuda_st(ctx);
  int done = 0;
  /* fp16 outputs take GemmEx alone, with reductions in fp32: a split K's partial sums kept in
   * fp16 can leave its range before alpha scales them (a 257 x 1792 x 1000 product gave inf on
   * the H100), however far below 2^15 the scaled result stays; cuBLASLt's entries say nothing of
   * it */
  const bool f16_out = yt == CUDA_R_16F;
  int rc = MB_OK;
  if (!f16_out) {
    rc = mbcuda_gemm_lt(ctx, st->lt_f16, wh, CUDA_R_16F, xh, CUDA_R_16F, ldxh, n, in_f, out_f, y,
                        yt, ldy, beta, ab, NULL, CUBLAS_COMPUTE_32F, op, &done);
    if (rc || done) return rc;
  }
  cublasHandle_t h = (cublasHandle_t)st->blas;
  BLAS_CHECK(cublasSetPointerMode(h, CUBLAS_POINTER_MODE_DEVICE), op);
  if (f16_out)
    BLAS_CHECK(cublasSetMathMode(h, CUBLAS_MATH_DISALLOW_REDUCED_PRECISION_REDUCTION), op);
  const cublasStatus_t bs =
      cublasGemmEx(h, CUBLAS_OP_T, CUBLAS_OP_N, (int)out_f, (int)n, (int)in_f, ab, wh,
                   CUDA_R_16F, (int)in_f, xh, CUDA_R_16F, (int)ldxh, ab + 1, y, yt,
                   (int)ldy, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT);
  if (f16_out) BLAS_CHECK(cublasSetMathMode(h, CUBLAS_DEFAULT_MATH), op); /* the context's */
  BLAS_CHECK(cublasSetPointerMode(h, CUBLAS_POINTER_MODE_HOST), op);
  BLAS_CHECK(bs, op);
  return MB_OK;
}

static int gemm_f32_via_f16(mb_ctx *ctx, const float *x, int64_t ldx, const void *w, int64_t n,
                            int64_t in_f, int64_t out_f, float *y, int64_t ldy, float beta,
                            const char *op) {
  const size_t xb = f16_x_bytes(n, in_f);
  void *scr = NULL;
  int rc = mbcuda_scratch_f16(ctx, f16_scratch_bytes(n, in_f, out_f), op, &scr);
  if (rc) return rc;
  float *ab = (float *)((char *)scr + F16_AB);
  __half *xh = (__half *)((char *)scr + F16_HEAD), *wh = (__half *)((char *)scr + F16_HEAD + xb);
  const F16Operand ox = {x, ldx, n, in_f, xh}, ow = {(const float *)w, in_f, out_f, in_f, wh};
  rc = f16_passes(ctx, ox, ow, scr, NULL, ab, beta, op);
  if (rc) return rc;
  return f16_product(ctx, xh, in_f, wh, n, in_f, out_f, y, CUDA_R_32F, ldy, beta, ab, op);
}

int mbcuda_f16_scale_rows(mb_ctx *ctx, const float *rows, int64_t ld, int64_t n, int64_t cols,
                          const unsigned *bound_bits, uint16_t *dst, const char *op) {
  const F16Operand o = {rows, ld, n, cols, (__half *)dst};
  return f16_convert(ctx, o, F16_NONE, bound_bits, NULL, NULL, 0.f, NULL, op);
}

int mbcuda_f16_rows_given(mb_ctx *ctx, const float *rows, int64_t ld, int64_t n, int64_t cols,
                          const int32_t *exp, uint16_t *dst, const char *op) {
  const F16Operand o = {rows, ld, n, cols, (__half *)dst};
  return f16_convert(ctx, o, F16_NONE, NULL, exp, NULL, 0.f, NULL, op);
}

/* *exp = the exponent of the largest magnitude whose bits are at slots[0]. */
__global__ void k_f16_exp_of(const unsigned *slots, int32_t *exp) {
  MB_PDL_ENTRY();
  if (threadIdx.x == 0) *exp = mb_f16_scale_exp(slots[0]);
}

int mbcuda_f16_exp_rows(mb_ctx *ctx, const float *rows, int64_t ld, int64_t n, int64_t cols,
                        int32_t *exp, const char *op) {
  void *head = NULL;
  int rc = mbcuda_scratch_f16(ctx, F16_HEAD, op, &head);
  if (rc) return rc;
  unsigned *slots = (unsigned *)head;
  const F16Operand o = {rows, ld, n, cols, NULL};
  MBCUDA_CHECK(cudaMemsetAsync(slots, 0, sizeof(unsigned), mbcuda_st(ctx)->stream), op);
  rc = f16_amax(ctx, o, F16_NONE, slots, op);
  if (rc) return rc;
  const unsigned *cslots = slots;
  MBCUDA_LAUNCH(op, k_f16_exp_of, dim3(1), dim3(32), 0, cslots, exp);
  return MB_OK;
}

extern "C" int mbcuda_to_f16_scaled(mb_ctx *ctx, const float *x, int64_t ldx, int64_t rows,
                                    int64_t cols, uint16_t *out, int32_t *out_exp) {
  if (rows <= 0 || cols <= 0) return MB_OK;
  void *head = NULL;
  int rc = mbcuda_scratch_f16(ctx, F16_HEAD, "to_f16_scaled", &head);
  if (rc) return rc;
  const F16Operand o = {x, ldx, rows, cols, (__half *)out};
  return f16_passes(ctx, o, F16_NONE, head, out_exp, NULL, 0.f, "to_f16_scaled");
}

extern "C" int mbcuda_linear_f16(mb_ctx *ctx, const float *x, const uint16_t *x_f16,
                                 const int32_t *x_exp, int64_t ldx, const uint16_t *w_f16,
                                 const int32_t *w_exp, const float *bias, int64_t n, int64_t in_f,
                                 int64_t out_f, float *y, int64_t ldy, int accumulate,
                                 uint16_t *y_f16, int32_t *y_exp) {
  if (n <= 0 || out_f <= 0) return MB_OK;
  if (n > INT32_MAX || in_f > INT32_MAX || out_f > INT32_MAX || ldx > INT32_MAX || ldy > INT32_MAX)
    return mb_fail(MB_ERR_UNSUPPORTED, "cuda: linear_f16: dimensions beyond 2^31");
  const char *op = "linear_f16";
  const float beta = accumulate ? 1.f : 0.f;
  const __half *xh = (const __half *)x_f16;
  int64_t ldxh = ldx;
  void *scr = NULL;
  /* a graph being captured cannot grow the scratch: x's rows need it there already */
  const size_t need = x ? F16_HEAD + f16_x_bytes(n, in_f) : F16_HEAD;
  if (mbcuda_st(ctx)->capturing && need > mbcuda_st(ctx)->scratch_f16_bytes)
    return mb_fail(MB_ERR_INVALID, "cuda: linear_f16: fp32 rows in a graph capture need %zu bytes "
                   "of scratch, %zu held (run the call once before capturing)", need,
                   mbcuda_st(ctx)->scratch_f16_bytes);
  int rc = mbcuda_scratch_f16(ctx, need, op, &scr);
  if (rc) return rc;
  float *ab = (float *)((char *)scr + F16_AB);
  if (x) { /* x's rows scaled and rounded first (by x_exp when given; else their exponent is
            * found and put in the head) */
    int32_t *exps = (int32_t *)((char *)scr + F16_EXPS);
    __half *dst = (__half *)((char *)scr + F16_HEAD);
    const F16Operand ox = {x, ldx, n, in_f, dst};
    rc = x_exp ? f16_convert(ctx, ox, F16_NONE, NULL, x_exp, NULL, 0.f, NULL, op)
               : f16_passes(ctx, ox, F16_NONE, scr, exps, NULL, 0.f, op);
    if (rc) return rc;
    xh = dst;
    ldxh = in_f;
    if (!x_exp) x_exp = exps;
  }
  int c = 0; /* y_f16: in_f <= 2^c */
  while (((int64_t)1 << c) < in_f) c++;
  MBCUDA_LAUNCH(op, k_f16_alpha, dim3(1), dim3(32), 0, x_exp, w_exp, ab, beta, c,
                y_f16 ? y_exp : (int32_t *)NULL);
  rc = y_f16 ? f16_product(ctx, xh, ldxh, (const __half *)w_f16, n, in_f, out_f, y_f16,
                           CUDA_R_16F, ldy, 0.f, ab, op)
             : f16_product(ctx, xh, ldxh, (const __half *)w_f16, n, in_f, out_f, y, CUDA_R_32F,
                           ldy, beta, ab, op);
  if (rc) return rc;
  return bias ? add_bias(ctx, y, ldy, bias, n, out_f, "linear_f16 (bias)") : MB_OK;
}

/* gemm with fp32 rows and weights (and a bias as gemm takes it), on TF32 where the context allows
 * it (wide forward products on fp16 operands, as above, their bias in a pass of its own). */
static int gemm_f32(mb_ctx *ctx, const float *x, int64_t ldx, const void *w, int64_t n,
                    int64_t in_f, int64_t out_f, float *y, int64_t ldy, float beta,
                    const char *op, const float *bias = NULL) {
  const bool tf32 = (ctx->flags & MB_FLAG_ALLOW_TF32) != 0;
  const mbcuda_state *st = mbcuda_st(ctx);
  /* a graph being captured cannot grow the scratch: TF32 as it is then */
  if (tf32 && n > 8 && f16_worth(st, n, in_f, out_f) &&
      (!st->capturing || f16_scratch_bytes(n, in_f, out_f) <= st->scratch_f16_bytes)) {
    const int rc = gemm_f32_via_f16(ctx, x, ldx, w, n, in_f, out_f, y, ldy, beta, op);
    if (rc || !bias) return rc;
    return add_bias(ctx, y, ldy, bias, n, out_f, "linear (bias)");
  }
  const cublasComputeType_t ct = tf32 ? CUBLAS_COMPUTE_32F_FAST_TF32 : CUBLAS_COMPUTE_32F;
  return gemm(ctx, CUDA_R_32F, ct, x, ldx, w, n, in_f, out_f, y, CUDA_R_32F, ldy, beta, op, bias);
}

extern "C" int mbcuda_linear(mb_ctx *ctx, const float *x, int64_t ldx, const void *w, int wdtype,
                             const float *bias, int64_t n, int64_t in_f, int64_t out_f, float *y,
                             int64_t ldy) {
  if (n <= 0 || out_f <= 0) return MB_OK;
  mbcuda_state *st = mbcuda_st(ctx);
  cudaStream_t s = st->stream;
  if (in_f <= 0) { /* y = bias (or 0) */
    for (int64_t r = 0; r < n; r++)
      MBCUDA_CHECK(cudaMemsetAsync(y + r * ldy, 0, (size_t)out_f * sizeof(float), s), "linear");
    return bias ? add_bias(ctx, y, ldy, bias, n, out_f, "linear (bias)") : MB_OK;
  }
  if (n <= 8) {
    const ConvEpi none = {nullptr, nullptr, nullptr, nullptr, 0, 0, 0};
    cudaError_t e = wdtype == MB_DTYPE_BF16
                        ? gemv<uint16_t>(ctx, x, ldx, (const uint16_t *)w, bias, (int)n, in_f, out_f, y, ldy, none)
                    : wdtype == MB_DTYPE_F16
                        ? gemv<__half>(ctx, x, ldx, (const __half *)w, bias, (int)n, in_f, out_f, y, ldy, none)
                        : gemv<float>(ctx, x, ldx, (const float *)w, bias, (int)n, in_f, out_f, y, ldy, none);
    MBCUDA_CHECK(e, "linear (gemv)");
    return MB_OK;
  }
  if (n > INT32_MAX || in_f > INT32_MAX || out_f > INT32_MAX || ldx > INT32_MAX || ldy > INT32_MAX)
    return mb_fail(MB_ERR_UNSUPPORTED, "cuda: linear: dimensions beyond 2^31");
  if (wdtype == MB_DTYPE_BF16) {
    void *scr = NULL;
    int rc = mbcuda_scratch(ctx, (size_t)(n * in_f) * 2, "linear", &scr);
    if (rc) return rc;
    __nv_bfloat16 *xb = (__nv_bfloat16 *)scr;
    rc = rows_to_bf16(ctx, x, ldx, n, in_f, xb, "linear (x to bf16)");
    if (rc) return rc;
    return gemm_bf16(ctx, xb, in_f, w, n, in_f, out_f, y, ldy, 0.f,
                     "linear (cublasGemmEx bf16)", bias);
  }
  return gemm_f32(ctx, x, ldx, w, n, in_f, out_f, y, ldy, 0.f, "linear (cublasGemmEx fp32)", bias);
}

/* mb_linear_bf16: bf16 weights and n >= MBCUDA_TC_MIN_ROWS take x to the tensor cores as it is
 * (for n > 8 the GEMM of mb_linear's bf16 path, without its conversion pass; from 2 rows on, where
 * mb_linear runs its one-row-bits GEMV, decoding batches that do not need those bits); otherwise x
 * is widened into the scratch and mb_linear runs (its fp32-weight GEMM and its GEMV use no scratch
 * of their own). */
extern "C" int mbcuda_linear_bf16(mb_ctx *ctx, const uint16_t *x, int64_t ldx, const void *w,
                                  int wdtype, const float *bias, int64_t n, int64_t in_f,
                                  int64_t out_f, float *y, int64_t ldy) {
  if (n <= 0 || out_f <= 0) return MB_OK;
  if (wdtype != MB_DTYPE_BF16 || n < MBCUDA_TC_MIN_ROWS) {
    void *scr = NULL;
    int rc = mbcuda_scratch(ctx, (size_t)(n * in_f) * sizeof(float), "linear_bf16", &scr);
    if (rc) return rc;
    MBCUDA_LAUNCH("linear_bf16 (x to fp32)", (k_convert_rows<uint16_t, float>), ew_grid(in_f, n), dim3(EW_THREADS), 0, x, ldx, n, in_f, (float *)scr, in_f);
    return mbcuda_linear(ctx, (const float *)scr, in_f, w, wdtype, bias, n, in_f, out_f, y, ldy);
  }
  if (n > INT32_MAX || in_f > INT32_MAX || out_f > INT32_MAX || ldx > INT32_MAX || ldy > INT32_MAX)
    return mb_fail(MB_ERR_UNSUPPORTED, "cuda: linear_bf16: dimensions beyond 2^31");
  return gemm_bf16(ctx, x, ldx, w, n, in_f, out_f, y, ldy, 0.f, "linear_bf16 (cublasGemmEx bf16)",
                   bias);
}

/* mb_linear_to_bf16: with bf16 weights, more than 8 rows and no bias, cuBLAS writes the bf16
 * output from its fp32 accumulators (x rounded to bf16 first when given as fp32, as mb_linear
 * rounds it); otherwise mb_linear (x) or mb_linear_bf16 (x_bf16) into the scratch, rounded
 * afterwards (the CPU's form). Those two take at most n * in_f floats from the scratch's start (x
 * converted), so the fp32 rows go behind that and the buffer does not move under them. */
extern "C" int mbcuda_linear_to_bf16(mb_ctx *ctx, const float *x, const uint16_t *x_bf16,
                                     int64_t ldx, const void *w, int wdtype, const float *bias,
                                     int64_t n, int64_t in_f, int64_t out_f, uint16_t *y,
                                     int64_t ldy) {
  if (n <= 0 || out_f <= 0) return MB_OK;
  if (n > INT32_MAX || in_f > INT32_MAX || out_f > INT32_MAX || ldx > INT32_MAX || ldy > INT32_MAX)
    return mb_fail(MB_ERR_UNSUPPORTED, "cuda: linear_to_bf16: dimensions beyond 2^31");
  void *scr = NULL;
  int rc;
  if (wdtype == MB_DTYPE_BF16 && n > 8 && !bias) {
    const void *xb = x_bf16;
    int64_t ldb = ldx;
    if (x) { /* the tensor cores' input: x rounded */
      rc = mbcuda_scratch(ctx, (size_t)(n * in_f) * 2, "linear_to_bf16", &scr);
      if (rc) return rc;
      rc = rows_to_bf16(ctx, x, ldx, n, in_f, (__nv_bfloat16 *)scr, "linear_to_bf16 (x to bf16)");
      if (rc) return rc;
      xb = scr, ldb = in_f;
    }
    return gemm(ctx, CUDA_R_16BF, CUBLAS_COMPUTE_32F, xb, ldb, w, n, in_f, out_f, y, CUDA_R_16BF,
                ldy, 0.f, "linear_to_bf16 (cublasGemmEx, bf16 output)");
  }
  const size_t head = ((size_t)(n * in_f) * sizeof(float) + 255) & ~(size_t)255;
  rc = mbcuda_scratch(ctx, head + (size_t)(n * out_f) * sizeof(float), "linear_to_bf16", &scr);
  if (rc) return rc;
  float *yf = (float *)((char *)scr + head);
  rc = x ? mbcuda_linear(ctx, x, ldx, w, wdtype, bias, n, in_f, out_f, yf, out_f)
         : mbcuda_linear_bf16(ctx, x_bf16, ldx, w, wdtype, bias, n, in_f, out_f, yf, out_f);
  if (rc) return rc;
  MBCUDA_LAUNCH("linear_to_bf16 (to bf16)", (k_convert_rows<float, uint16_t>), ew_grid(out_f, n), dim3(EW_THREADS), 0, yf, out_f, n, out_f, y, ldy);
  return MB_OK;
}

/* mb_linear_add_norm as its two calls: mb_linear (x) or mb_linear_bf16 (x_bf16) into h, then
 * mb_add_norm of h. */
static int linear_then_norm(mb_ctx *ctx, const float *x, const uint16_t *x_bf16, int64_t ldx,
                            const void *w, int wdtype, const float *bias, int64_t n, int64_t in_f,
                            int64_t out_f, float *h, float *residual, int accumulate,
                            const float *norm_weight, const float *norm_bias, int norm_kind,
                            float eps, float *out, uint16_t *out_bf16) {
  int rc = x ? mbcuda_linear(ctx, x, ldx, w, wdtype, bias, n, in_f, out_f, h, out_f)
             : mbcuda_linear_bf16(ctx, x_bf16, ldx, w, wdtype, bias, n, in_f, out_f, h, out_f);
  if (rc) return rc;
  return mbcuda_add_norm(ctx, h, residual, accumulate, norm_weight, norm_bias, norm_kind, eps, n,
                         out_f, out, out_bf16);
}

/* mb_linear_add_norm. With bf16 weights and n >= MBCUDA_TC_MIN_ROWS the product runs on the
 * tensor cores, on x rounded to bf16 as mb_linear's tensor-core path rounds it:
 * - more than MBCUDA_ACC_MIN_ROWS rows (forward chunks), no bias: the GEMM adds it to the residual
 *   in place (beta = 1), and the norm reads those rows without storing them back;
 * - else (decoding batches) as a batch of products over consecutive slices of in_f (a strided-
 *   batched GEMM: cuBLAS's split-K would add a reduction kernel of its own), whose parts the
 *   norm's kernel sums in a fixed order; with fewer than 2 parts, the product whole, then the norm.
 * Otherwise the two calls. */
extern "C" int mbcuda_linear_add_norm(mb_ctx *ctx, const float *x, const uint16_t *x_bf16,
                                      int64_t ldx, const void *w, int wdtype, const float *bias,
                                      int64_t n, int64_t in_f, int64_t out_f, float *h_scratch,
                                      float *residual, int accumulate, const float *norm_weight,
                                      const float *norm_bias, int norm_kind, float eps,
                                      float *out, uint16_t *out_bf16) {
  if (n <= 0 || out_f <= 0) return MB_OK;
  mbcuda_state *st = mbcuda_st(ctx);
  const bool dims_ok =
      n <= INT32_MAX && in_f <= INT32_MAX && ldx <= INT32_MAX && out_f <= INT32_MAX;
  /* forward chunks (no bias, rows the in-place norm takes): the GEMM can add the product to the
   * residual itself (beta = 1), and the norm reads those rows without storing them back */
  const bool acc_rows = n > MBCUDA_ACC_MIN_ROWS && !bias && dims_ok &&
                        mbcuda_norm_rows_fit(n, out_f, residual, norm_weight, norm_bias, out,
                                             out_bf16);
  const bool tf32 = (ctx->flags & MB_FLAG_ALLOW_TF32) != 0;
  if (wdtype == MB_DTYPE_F32 && x && acc_rows && (st->f32_acc > 1 || (st->f32_acc == 1 && tf32))) {
    /* fp32 weights with TF32 (MAMBABYTE_CUDA_F32_ACC): 86.7 against 87.7-87.9 ms for the forward
     * over 8192 bytes on the H200 (the two calls; GemmEx in place 88.5-88.8) */
    int rc = gemm_f32(ctx, x, ldx, w, n, in_f, out_f, residual, out_f, accumulate ? 1.f : 0.f,
                      "linear_add_norm (cublasGemmEx fp32)");
    if (rc) return rc;
    return mbcuda_norm_rows(ctx, residual, norm_weight, norm_bias, norm_kind, eps, n, out_f, out,
                            out_bf16);
  }
  if (wdtype != MB_DTYPE_BF16 || n < MBCUDA_TC_MIN_ROWS)
    return linear_then_norm(ctx, x, x_bf16, ldx, w, wdtype, bias, n, in_f, out_f, h_scratch,
                            residual, accumulate, norm_weight, norm_bias, norm_kind, eps, out,
                            out_bf16);
  if (!dims_ok)
    return mb_fail(MB_ERR_UNSUPPORTED, "cuda: linear_add_norm: dimensions beyond 2^31");
  /* forward 8192 bf16 -1 to -2% in place (MAMBABYTE_CUDA_OUT_SPLIT=0: the two calls) */
  const bool in_place = st->out_split > 0 && acc_rows;
  /* parts: the largest power of two up to MAMBABYTE_CUDA_OUT_SPLIT (at most 16) that leaves each
   * part a multiple of 8 and at least 64 long; fewer than 2: the product whole */
  int parts = 16;
  while (parts > st->out_split) parts /= 2;
  while (parts >= 2 && (in_f % (8 * parts) != 0 || in_f / parts < 64)) parts /= 2;
  if (in_place || out_f > 8 * 256 || n * out_f > INT32_MAX / 16) parts = 0;
  const size_t parts_bytes =
      parts >= 2 ? ((size_t)parts * n * out_f * sizeof(float) + 255) & ~(size_t)255 : 0;
  void *scr = NULL;
  int rc = mbcuda_scratch(ctx, parts_bytes + (x ? (size_t)(n * in_f) * 2 : 0), "linear_add_norm",
                          &scr);
  if (rc) return rc;
  const __nv_bfloat16 *xb = (const __nv_bfloat16 *)x_bf16;
  int64_t ldb = ldx;
  if (x) { /* the bits mb_linear's conversion makes (and the producers' _bf16 outputs) */
    __nv_bfloat16 *conv = (__nv_bfloat16 *)((char *)scr + parts_bytes);
    rc = rows_to_bf16(ctx, x, ldx, n, in_f, conv, "linear_add_norm (x to bf16)");
    if (rc) return rc;
    xb = conv;
    ldb = in_f;
  }
  if (in_place) {
    rc = gemm_bf16(ctx, xb, ldb, w, n, in_f, out_f, residual, out_f, accumulate ? 1.f : 0.f,
                   "linear_add_norm (cublasGemmEx bf16)");
    if (rc) return rc;
    return mbcuda_norm_rows(ctx, residual, norm_weight, norm_bias, norm_kind, eps, n, out_f, out,
                            out_bf16);
  }
  if (parts < 2)
    return linear_then_norm(ctx, NULL, (const uint16_t *)xb, ldb, w, wdtype, bias, n, in_f, out_f,
                            h_scratch, residual, accumulate, norm_weight, norm_bias, norm_kind,
                            eps, out, out_bf16);
  const int64_t kp = in_f / parts;
  const float alpha = 1.f, beta = 0.f;
  BLAS_CHECK(cublasGemmStridedBatchedEx((cublasHandle_t)st->blas, CUBLAS_OP_T, CUBLAS_OP_N,
                                        (int)out_f, (int)n, (int)kp, &alpha, w, CUDA_R_16BF,
                                        (int)in_f, (long long)kp, xb, CUDA_R_16BF, (int)ldb,
                                        (long long)kp, &beta, (float *)scr, CUDA_R_32F,
                                        (int)out_f, (long long)(n * out_f), parts,
                                        CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT),
             "linear_add_norm (cublasGemmStridedBatchedEx bf16)");
  return mbcuda_sum_add_norm(ctx, (const float *)scr, parts, n * out_f, bias, residual,
                             accumulate, norm_weight, norm_bias, norm_kind, eps, n, out_f, out,
                             out_bf16);
}

/* mb_linear_conv1d_step: in_proj with the decoding conv step in the GEMV epilogue (n <= 8);
 * larger n: the two ops. */
extern "C" int mbcuda_linear_conv1d_step(mb_ctx *ctx, const float *x, int64_t ldx, const void *w,
                                         int wdtype, const float *bias, int64_t n, int64_t in_f,
                                         int64_t out_f, float *y, int64_t ldy,
                                         const float *conv_w, const float *conv_bias,
                                         float *conv_state, int64_t d_conv, int64_t k, float *xc,
                                         int64_t ldo) {
  if (n <= 0 || out_f <= 0) return MB_OK;
  if (n > 8 || d_conv <= 0) {
    int rc = mbcuda_linear(ctx, x, ldx, w, wdtype, bias, n, in_f, out_f, y, ldy);
    if (rc || d_conv <= 0) return rc;
    return mbcuda_causal_conv1d(ctx, y, NULL, ldy, conv_w, conv_bias, conv_state, n, 1, d_conv, k,
                                xc, ldo, NULL, NULL, NULL);
  }
  const ConvEpi ce = {conv_w, conv_bias, conv_state, xc, ldo, d_conv, (int)k};
  cudaError_t e = wdtype == MB_DTYPE_BF16
                      ? gemv<uint16_t>(ctx, x, ldx, (const uint16_t *)w, bias, (int)n, in_f, out_f, y, ldy, ce)
                  : wdtype == MB_DTYPE_F16
                      ? gemv<__half>(ctx, x, ldx, (const __half *)w, bias, (int)n, in_f, out_f, y, ldy, ce)
                      : gemv<float>(ctx, x, ldx, (const float *)w, bias, (int)n, in_f, out_f, y, ldy, ce);
  MBCUDA_CHECK(e, "linear_conv1d_step (gemv)");
  return MB_OK;
}

/* ---- mb_decode_layers' batch-1 forms: the norm in in_proj's prologue, the residual add in
 * out_proj's epilogue (one kernel fewer a layer; every value keeps the ops' bits) ------------ */

#define NORM_PRO_MAX 2048 /* d_model: mb_add_norm's register rows */

struct NormPro {
  const float *x;
  float *res_out;
  const float *w, *b;
  int kind, thr;
  float eps;
};

/* Chunks in flight a row (gemv_block's UN) of the batch-1 GEMVs of mb_decode_layers
 * (k_gemv_norm, k_gemv_res) with 16-byte loads and G = 32: a lane's whole row of in_proj (7
 * chunks of bf16, 14 of fp32) is loaded at once, not 4 chunks a round (cuda_bench --gemv1 on the
 * H200: 8 for bf16 and 16 for fp32 were the fastest of 4, 8, 16; docs/cuda_notes.md; the others
 * are retired). The bits do not depend on it (an output's lanes, chunks and reduction are the
 * same). */
template <typename WT, bool MANY>
constexpr int gemv1_unroll() {
  return MANY ? (sizeof(WT) == 2 ? 8 : 16) : GEMV_UNROLL;
}

/* One block: its in_proj weights in flight first, then (after the PDL wait) the normed row into
 * shared memory with k_add_norm_reg's thread mapping (add_norm_reg_row), then gemv_block on it
 * with the conv step in the epilogue, as mb_linear_conv1d_step runs it. */
template <typename WT, int G, bool VEC, int VPT, bool PLAIN, int UN>
__global__ void __launch_bounds__(256)
k_gemv_norm(NormPro np, const WT *__restrict__ w, const float *__restrict__ bias, int64_t in_f,
            int64_t out_f, float *__restrict__ y, ConvEpi ce) {
  __shared__ __align__(16) float xs[NORM_PRO_MAX];
  __shared__ float red[32];
  mb_pdl_trigger();
  auto norm = [&] {
    auto pdl_wait = [] { mb_pdl_wait(); };
    add_norm_reg_row<VPT, XLoad::Generic, decltype(pdl_wait), PLAIN>(
        np.x, nullptr, blockIdx.x == 0 ? np.res_out : nullptr, 0, np.w, np.b, np.kind, np.eps,
        in_f, np.thr, xs, nullptr, red, pdl_wait);
    __syncthreads();
  };
  gemv_block<WT, 1, G, VEC, true, XLoad::Generic, decltype(norm), false, 1, UN>(
      xs, in_f, w, bias, 1, in_f, out_f, y, out_f, ce, 1, blockIdx.x, blockDim.x, norm);
}

/* in_proj's batch-1 kernel with its weights in a shared-memory ring. k_gemv_norm runs 8 rows a
 * block in ~2.3 waves (896 blocks at 972M's shape, 3 an SM); a later wave's blocks ask for their
 * weights only once they start, and norm the row again. Here a grid the GPU holds at once takes
 * the row groups in turn (block b: groups b, b + grid, ...), each group's weights (8 contiguous
 * rows) streamed by one bulk copy into a ring of RING stages, the first ones before the PDL wait,
 * and the norm runs once a block. A row's arithmetic is gemv_block's with G = 32 and 16-byte
 * chunks (lane l sums chunks l, l + 32, ... in order, the same shuffle reduction, bias and conv
 * epilogue), so its bits are k_gemv_norm's and the ops'. */
#define IN_RING_ROWS 8   /* rows a group: a warp each */
/* Stages a block: 2 for 2-byte weights (bf16, or fp32's fp16 twins; two blocks an SM): with 3, the
 * stages asked for at entry (23 MB at 972M's shape) held out_proj's stream back (H100: bf16 962-965
 * against 1,001-1,008 us a step in graph replay, the fp16 twins' step 1,018 against 1,049 in
 * bench:gpu); 3 for fp32 (one block an SM: 1,590 against 1,612 us at 2; docs/cuda_notes.md) */
template <typename WT>
constexpr int in_ring_stages() {
  return sizeof(WT) == 4 ? 3 : 2;
}

template <typename WT, int VPT, bool PLAIN, int RING, bool FULL, int NT>
__global__ void __launch_bounds__(256)
k_gemv_norm_ring(NormPro np, const WT *__restrict__ w, const float *__restrict__ bias,
                 int64_t in_f, int64_t out_f, float *__restrict__ y, ConvEpi ce) {
  extern __shared__ __align__(128) unsigned char in_ring_smem[];
  __shared__ __align__(16) float xs[NORM_PRO_MAX];
  __shared__ float red[32];
  __shared__ uint64_t bar[RING];
  constexpr int EPC = 16 / (int)sizeof(WT);
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  const int64_t ngroups = (out_f + IN_RING_ROWS - 1) / IN_RING_ROWS;
  const int mine = (int)((ngroups - blockIdx.x + gridDim.x - 1) / gridDim.x);
  const size_t stage = (size_t)IN_RING_ROWS * in_f; /* elements */
  WT *const ring = (WT *)in_ring_smem;
  const auto issue = [&](int i) { /* thread 0: this block's i-th group into stage i % RING */
    const int64_t g = blockIdx.x + (int64_t)i * gridDim.x;
    const int64_t rows = min((int64_t)IN_RING_ROWS, out_f - g * IN_RING_ROWS);
    bulk_load(ring + (size_t)(i % RING) * stage, w + g * IN_RING_ROWS * in_f,
              (unsigned)(rows * in_f * (int64_t)sizeof(WT)), &bar[i % RING]);
  };
  if (threadIdx.x == 0) {
    for (int s = 0; s < RING; s++) mbar_init(&bar[s], 1);
    for (int i = 0; i < RING && i < mine; i++) issue(i); /* constant weights: before the wait */
  }
  {
    auto pdl_wait = [] { mb_pdl_wait(); };
    add_norm_reg_row<VPT, XLoad::Generic, decltype(pdl_wait), PLAIN, 0, NT>(
        np.x, nullptr, blockIdx.x == 0 ? np.res_out : nullptr, 0, np.w, np.b, np.kind, np.eps,
        in_f, np.thr, xs, nullptr, red, pdl_wait);
  }
  __syncthreads(); /* xs complete (and the barriers' initialisation seen) */
  /* the conv windows and taps of this warp's rows asked into L1 now, so that each group's loads
   * of them (before its stage's wait) find them there (its windows are written only here) */
  for (int i = lane; i < mine; i += 32) {
    const int64_t row = (blockIdx.x + (int64_t)i * gridDim.x) * IN_RING_ROWS + warp;
    if (row < out_f && row < ce.dc) {
      prefetch_l1(ce.state + row * (ce.k - 1));
      prefetch_l1(ce.w + row * ce.k);
    }
  }
  const int nch = (int)(in_f / EPC); /* in_f <= NORM_PRO_MAX */
  /* the lane's chunks of the normed row (the same for every group) held in registers, so that a
   * group reads only its weights from shared memory (read from shared memory each group, the
   * batch-1 bf16 step took 1,049 against 1,019 us on the H200: docs/cuda_notes.md) */
  constexpr int XCH = NORM_PRO_MAX / EPC / 32;
  float4 xr[XCH][EPC / 4];
#pragma unroll
  for (int k = 0; k < XCH; k++)
#pragma unroll
    for (int e = 0; e < EPC / 4; e++) {
      const int ch = lane + 32 * k;
      xr[k][e] = ch < nch ? ((const float4 *)(xs + ch * EPC))[e] : make_float4(0.f, 0.f, 0.f, 0.f);
    }
  for (int i = 0; i < mine; i++) {
    const int64_t row = (blockIdx.x + (int64_t)i * gridDim.x) * IN_RING_ROWS + warp;
    float cw[CONV_EPI_KMAX] = {0.f, 0.f, 0.f, 0.f}, cb = 0.f;
    float old[CONV_EPI_KMAX - 1] = {0.f, 0.f, 0.f};
    /* every lane: the epilogue's constants and window, asked for before the stage's wait (loaded
     * in the epilogue, the window held each conv row's FMAs back: 3.4% of the ring's stall
     * samples on one line, ncu on an H100, docs/cuda_notes.md) */
    if (row < out_f && row < ce.dc) {
      conv_consts(ce, row, cw, cb);
      conv_window(ce, row, old);
    }
    mbar_wait(&bar[i % RING], (unsigned)(i / RING) & 1u);
    /* the next kernels may start once this block's last weights are in: triggered at entry,
     * their waiting blocks took the SM room this kernel's blocks and copies needed (CUPTI
     * timeline: 1,065-1,076 us a step against 1,043 here; at exit: 1,066) */
    if (i == mine - 1) mb_pdl_trigger();
    const uint4 *wq = (const uint4 *)(ring + (size_t)(i % RING) * stage + (size_t)warp * in_f);
    float acc = 0.f;
#pragma unroll
    for (int k = 0; k < XCH; k++) { /* chunks lane, lane + 32, ... in order */
      const int ch = lane + 32 * k;
      /* FULL (every lane has nch / 32 chunks): a bound the whole warp shares, so no branch a lane
       * (per-lane bounds took ~70 of a row's 272 instructions: ncu, 972M batch-1 step) */
      if (FULL ? 32 * k < nch : ch < nch) {
        float wf[EPC];
        unpack(wq[ch], wf, WT());
#pragma unroll
        for (int e = 0; e < EPC / 4; e++) acc = dot4_acc(acc, &wf[4 * e], xr[k][e]);
      }
    }
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) acc += __shfl_xor_sync(0xffffffffu, acc, o, 32);
    /* every lane holds the row's sum (the butterfly gives each lane the same bits) and runs the
     * epilogue, lane 0 storing: as a branch of lane 0 alone it held the warp's next row back
     * (with FULL and the norm's 32-bit indices: a batch-1 bf16 step 892 against 992.7 us, H200,
     * docs/cuda_notes.md) */
    if (row < out_f) {
      const float v = acc + (bias ? bias[row] : 0.f);
      if (lane == 0) y[row] = v;
      if (row < ce.dc) conv_epi_warp(ce, cw, cb, old, row, v, lane == 0);
    }
    if (i + RING < mine) {
      __syncthreads(); /* every warp is done with stage i % RING */
      if (threadIdx.x == 0) issue(i + RING);
    }
  }
}

/* k_gemv_norm's tensor-core form (gemv_tc.cuh): a block a row group, the norm's output split
 * into the parts' rows; the conv step in lane 0 of each row's warp. */
template <int VPT, bool PLAIN>
__global__ void __launch_bounds__(256)
k_gemv_norm_tc(NormPro np, const uint16_t *__restrict__ w, const float *__restrict__ bias,
               int64_t in_f, int64_t out_f, float *__restrict__ y, ConvEpi ce) {
  __shared__ float nred[32];
  mb_pdl_trigger();
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  const int64_t row = (int64_t)blockIdx.x * TC_ROWS + warp;
  float cw[CONV_EPI_KMAX] = {0.f, 0.f, 0.f, 0.f}, cb = 0.f;
  if (lane == 0 && row < out_f && row < ce.dc) conv_consts(ce, row, cw, cb);
  const float s = tc_group_block<NORM_PRO_MAX>(w, in_f, out_f, (int64_t)blockIdx.x * TC_ROWS,
                                               [&](uint16_t *xp, int64_t pitch) {
    auto pdl_wait = [] { mb_pdl_wait(); };
    add_norm_reg_row<VPT, XLoad::Generic, decltype(pdl_wait), PLAIN, 0, 0, false, true>(
        np.x, nullptr, blockIdx.x == 0 ? np.res_out : nullptr, 0, np.w, np.b, np.kind, np.eps,
        in_f, np.thr, nullptr, xp, nred, pdl_wait, 0, nullptr, pitch);
    __syncthreads();
  });
  if (lane != 0 || row >= out_f) return;
  tc_row_end(true, false, s, bias, row, y, nullptr, row, ce, cw, cb, 0);
}

/* The ring kernel's tensor-core form: k_gemv_norm_ring's grid, ring and norm, each warp a k-slice
 * of every group (gemv_tc.cuh) with its x parts in registers (loaded once: the same for every
 * group). A group's slices wait in shared memory (a slot a group, so the warps run through their
 * groups without meeting but where a stage is given back, as k_gemv_norm_ring's do); after the
 * last group, lane i of warp n sums and finishes row n of group i, every group's epilogue at once.
 * With a group's sums and epilogue after a barrier each the step took 1,090 us against 1,002-1,008
 * for k_gemv_norm_ring, with the slots 1,016-1,022 (both at three stages); at two stages 938-946
 * against 962-965. A stage's rows are one bulk copy, 3,584 bytes apart, so a quarter-warp's loads
 * of two rows meet on the same banks (2-way); rows copied one a lane into padded rows, without the
 * conflicts, took the same time (H100 graph replay, 972M bf16 step; docs/cuda_notes.md). */
#define TC_XS (NORM_PRO_MAX / 32 / TC_WARPS) /* a warp's steps at most */
#define TC_RING_GROUPS 16                    /* a block's groups at most (its slots) */

template <int VPT, bool PLAIN, int RING, int NT>
__global__ void __launch_bounds__(256)
k_gemv_norm_ring_tc(NormPro np, const uint16_t *__restrict__ w, const float *__restrict__ bias,
                    int64_t in_f, int64_t out_f, float *__restrict__ y, ConvEpi ce) {
  extern __shared__ __align__(128) unsigned char in_ring_smem[];
  __shared__ __align__(16) uint16_t xp[3 * TC_PITCH_OF(NORM_PRO_MAX)];
  __shared__ __align__(16) float red[TC_RING_GROUPS][TC_WARPS][TC_ROWS];
  __shared__ float nred[32];
  __shared__ uint64_t bar[RING];
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, g = lane >> 2, t = lane & 3;
  const int64_t ngroups = (out_f + TC_ROWS - 1) / TC_ROWS;
  const int mine = (int)((ngroups - blockIdx.x + gridDim.x - 1) / gridDim.x); /* <= 16 */
  const int64_t pitch = tc_pitch(in_f); /* of the x parts */
  const size_t stage = (size_t)TC_ROWS * in_f; /* elements */
  uint16_t *const ring = (uint16_t *)in_ring_smem;
  const auto issue = [&](int i) { /* thread 0: this block's i-th group into stage i % RING */
    const int64_t g0 = (blockIdx.x + (int64_t)i * gridDim.x) * TC_ROWS;
    const int64_t rows = min((int64_t)TC_ROWS, out_f - g0);
    bulk_load(ring + (size_t)(i % RING) * stage, w + g0 * in_f,
              (unsigned)(rows * in_f * (int64_t)sizeof(uint16_t)), &bar[i % RING]);
  };
  if (threadIdx.x == 0) {
    for (int s = 0; s < RING; s++) mbar_init(&bar[s], 1);
    for (int i = 0; i < RING && i < mine; i++) issue(i); /* constant weights: before the wait */
  }
  {
    auto pdl_wait = [] { mb_pdl_wait(); };
    add_norm_reg_row<VPT, XLoad::Generic, decltype(pdl_wait), PLAIN, 0, NT, false, true>(
        np.x, nullptr, blockIdx.x == 0 ? np.res_out : nullptr, 0, np.w, np.b, np.kind, np.eps,
        in_f, np.thr, nullptr, xp, nred, pdl_wait, 0, nullptr, pitch);
  }
  __syncthreads(); /* the parts complete (and the barriers' initialisation seen) */
  /* the epilogue's row (row `warp` of group `lane`): its conv constants and window, asked for
   * now and used after the last group */
  const int64_t erow = (blockIdx.x + (int64_t)lane * gridDim.x) * TC_ROWS + warp;
  const bool eon = lane < mine && erow < out_f;
  float cw[CONV_EPI_KMAX] = {0.f, 0.f, 0.f, 0.f}, cb = 0.f;
  float old[CONV_EPI_KMAX - 1] = {0.f, 0.f, 0.f};
  if (eon && erow < ce.dc) {
    conv_consts(ce, erow, cw, cb);
    conv_window(ce, erow, old);
  }
  const int nss = (int)(in_f / 32);
  uint4 xa[TC_XS]; /* the lane's part chunks of its steps warp + 8 q */
#pragma unroll
  for (int q = 0; q < TC_XS; q++) {
    const int s = warp + TC_WARPS * q;
    xa[q] = g < 3 && s < nss ? ((const uint4 *)(xp + g * pitch))[4 * s + t]
                             : make_uint4(0u, 0u, 0u, 0u);
  }
  for (int i = 0; i < mine; i++) {
    mbar_wait(&bar[i % RING], (unsigned)(i / RING) & 1u);
    if (i == mine - 1) mb_pdl_trigger(); /* as k_gemv_norm_ring */
    const uint4 *ws = (const uint4 *)(ring + (size_t)(i % RING) * stage + (size_t)g * in_f) + t;
    uint4 wq[TC_XS];
#pragma unroll
    for (int q = 0; q < TC_XS; q++) {
      const int s = warp + TC_WARPS * q;
      wq[q] = s < nss ? ws[4 * s] : make_uint4(0u, 0u, 0u, 0u);
    }
    float ca[4] = {0.f, 0.f, 0.f, 0.f}, cb4[4] = {0.f, 0.f, 0.f, 0.f};
#pragma unroll
    for (int q = 0; q < TC_XS; q++)
      if (warp + TC_WARPS * q < nss) tc_step(ca, cb4, xa[q], wq[q]);
    const float2 v = tc_parts(make_float2(__fadd_rn(ca[0], cb4[0]), __fadd_rn(ca[1], cb4[1])));
    if (lane < 4) *(float2 *)&red[i][warp][2 * lane] = v;
    if (i + RING < mine) {
      __syncthreads(); /* every warp is done with stage i % RING */
      if (threadIdx.x == 0) issue(i + RING);
    }
  }
  __syncthreads(); /* every group's slices in */
  if (eon) {
    const float r = tc_row_sum(red[lane], warp) + (bias ? bias[erow] : 0.f);
    y[erow] = r;
    if (erow < ce.dc) conv_epi_warp(ce, cw, cb, old, erow, r, true);
  }
}

/* The shared memory of a ring kernel's launch, opted in to and its resident blocks an SM asked for
 * once a size (*per_sm, *smem_set: the context's cache of them) */
template <typename K>
static int ring_blocks_per_sm(K kern, size_t smem, int *per_sm, size_t *smem_set) {
  if (*per_sm < 0 || *smem_set != smem) {
    int n = 0;
    cudaError_t e =
        cudaFuncSetAttribute(kern, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)smem);
    if (e == cudaSuccess) e = cudaOccupancyMaxActiveBlocksPerMultiprocessor(&n, kern, 256, smem);
    if (e != cudaSuccess) { /* more shared memory than a block may have: not an error of the op */
      (void)cudaGetLastError();
      n = 0;
    }
    *per_sm = n;
    *smem_set = smem;
  }
  return *per_sm;
}

/* The ring kernel's launch: as many blocks as the GPU holds at once (asked once a context), the
 * row groups dealt out in turn. *fits = false, launching nothing, where not one block fits an SM
 * (its stages need more shared memory than the device gives a block: fp32 rows on a GPU with
 * ~100 KB an SM), so that the caller runs k_gemv_norm instead. */
template <typename WT, int VPT, bool PLAIN, int RING, bool FULL, int NT>
static cudaError_t in_ring_launch_f(mb_ctx *ctx, const mbcuda_norm_in_proj *a, const NormPro &np,
                                    const ConvEpi &ce, bool *fits) {
  mbcuda_state *st = mbcuda_st(ctx);
  const size_t smem = (size_t)RING * IN_RING_ROWS * a->d_model * sizeof(WT);
  constexpr int BF = sizeof(WT) == 2, V8 = VPT == 8, FORM = FULL + (NT > 0);
  const int per_sm = ring_blocks_per_sm(k_gemv_norm_ring<WT, VPT, PLAIN, RING, FULL, NT>, smem,
                                        &st->in_ring_per_sm[BF][V8][PLAIN][FORM],
                                        &st->in_ring_smem_set[BF][V8][PLAIN][FORM]);
  *fits = per_sm >= 1;
  if (!*fits) return cudaSuccess;
  const int64_t ngroups = (a->out_f + IN_RING_ROWS - 1) / IN_RING_ROWS;
  const int64_t cap = (int64_t)per_sm * st->sm_count;
  /* every block the GPU holds, some with a group fewer (the fewest blocks that kept the groups
   * even, 224 instead of 264 at 972M's shape, took 1,018 against 992 us a batch-1 bf16 step on the
   * H200: docs/cuda_notes.md) */
  const dim3 grid((unsigned)(ngroups < cap ? ngroups : cap)), block(256);
  return mbcuda_launch(ctx, k_gemv_norm_ring<WT, VPT, PLAIN, RING, FULL, NT>, grid, block, smem,
                       np, (const WT *)a->w, a->bias, a->d_model, a->out_f, a->y, ce);
}

/* FULL: every lane of a row has the same number of 16-byte chunks (d_model a multiple of 32
 * chunks, as 1792 and 1024 are in bf16 and fp32), so the chunk loop's bound is the warp's; with
 * it, the norm's NT form where its row fits (norm_nt_fits: the models' rows) */
template <typename WT, int VPT, bool PLAIN, int RING>
static cudaError_t in_ring_launch(mb_ctx *ctx, const mbcuda_norm_in_proj *a, const NormPro &np,
                                  const ConvEpi &ce, bool *fits) {
  const bool full = (a->d_model / (16 / (int64_t)sizeof(WT))) % 32 == 0;
  if (!full) return in_ring_launch_f<WT, VPT, PLAIN, RING, false, 0>(ctx, a, np, ce, fits);
  return norm_nt_dispatch(a->d_model, np.thr, mbcuda_st(ctx)->norm_nt, [&](auto nt) {
    return in_ring_launch_f<WT, VPT, PLAIN, RING, true, decltype(nt)::value>(ctx, a, np, ce, fits);
  });
}

/* k_gemv_norm_ring_tc's launch, as in_ring_launch_f's (*fits false where not one block fits) */
template <int VPT, bool PLAIN, int NT>
static cudaError_t in_ring_tc_launch_f(mb_ctx *ctx, const mbcuda_norm_in_proj *a,
                                       const NormPro &np, const ConvEpi &ce, bool *fits) {
  mbcuda_state *st = mbcuda_st(ctx);
  constexpr int RING = in_ring_stages<uint16_t>();
  const size_t smem = (size_t)RING * TC_ROWS * a->d_model * sizeof(uint16_t);
  const int per_sm = ring_blocks_per_sm(k_gemv_norm_ring_tc<VPT, PLAIN, RING, NT>, smem,
                                        &st->in_ring_tc_per_sm[VPT == 8][PLAIN][NT > 0],
                                        &st->in_ring_tc_smem_set[VPT == 8][PLAIN][NT > 0]);
  *fits = per_sm >= 1;
  if (!*fits) return cudaSuccess;
  const int64_t ngroups = (a->out_f + TC_ROWS - 1) / TC_ROWS;
  const int64_t cap = (int64_t)per_sm * st->sm_count;
  /* at most TC_RING_GROUPS a block (its slots): else k_gemv_norm_tc */
  *fits = *fits && ngroups <= cap * TC_RING_GROUPS;
  if (!*fits) return cudaSuccess;
  const dim3 grid((unsigned)(ngroups < cap ? ngroups : cap)), block(256);
  return mbcuda_launch(ctx, k_gemv_norm_ring_tc<VPT, PLAIN, RING, NT>, grid, block, smem, np,
                       (const uint16_t *)a->w, a->bias, a->d_model, a->out_f, a->y, ce);
}

/* in_proj's batch-1 kernel in the tensor-core form: the ring where it is on and fits, else
 * k_gemv_norm_tc (the same bits) */
template <int VPT, bool PLAIN>
static cudaError_t norm_in_proj_tc(mb_ctx *ctx, const mbcuda_norm_in_proj *a, const NormPro &np,
                                   const ConvEpi &ce) {
  if (mbcuda_st(ctx)->in_ring != 0) {
    bool fits = true;
    const cudaError_t e = norm_nt_dispatch(a->d_model, np.thr, mbcuda_st(ctx)->norm_nt, [&](auto nt) {
      return in_ring_tc_launch_f<VPT, PLAIN, decltype(nt)::value>(ctx, a, np, ce, &fits);
    });
    if (e != cudaSuccess || fits) return e;
  }
  const dim3 grid((unsigned)((a->out_f + TC_ROWS - 1) / TC_ROWS)), block(256);
  return mbcuda_launch(ctx, k_gemv_norm_tc<VPT, PLAIN>, grid, block, 0, np, (const uint16_t *)a->w,
                       a->bias, a->d_model, a->out_f, a->y, ce);
}

template <typename WT, int G, bool VEC>
static cudaError_t norm_in_proj_launch(mb_ctx *ctx, const mbcuda_norm_in_proj *a, int vpt,
                                       const NormPro &np, const ConvEpi &ce) {
  /* the ring for both weight types: fp32's 57 KB stages leave one block an SM, which lost to
   * k_gemv_norm (1,418.8 against 1,413.0 us a step) until the ring's rows took fewer instructions;
   * then 1,337.1 against 1,418.5 us (H200, docs/cuda_notes.md) */
  const int ring = mbcuda_st(ctx)->in_ring;
  if constexpr (G == GEMV_TC) {
    if (vpt == 4) return a->plain ? norm_in_proj_tc<4, true>(ctx, a, np, ce)
                                  : norm_in_proj_tc<4, false>(ctx, a, np, ce);
    return a->plain ? norm_in_proj_tc<8, true>(ctx, a, np, ce)
                    : norm_in_proj_tc<8, false>(ctx, a, np, ce);
  } else {
    if constexpr (G == 32 && VEC) { /* the ring's rows are the warp-a-row GEMV's */
      if (ring != 0) {
        bool fits = true;
#define IRL(V, P) in_ring_launch<WT, V, P, in_ring_stages<WT>()>(ctx, a, np, ce, &fits)
        const cudaError_t e = vpt == 4 ? (a->plain ? IRL(4, true) : IRL(4, false))
                                       : (a->plain ? IRL(8, true) : IRL(8, false));
#undef IRL
        if (e != cudaSuccess || fits) return e;
      }
    }
    const dim3 grid((unsigned)((a->out_f + 256 / G - 1) / (256 / G))), block(256);
    const WT *w = (const WT *)a->w;
    constexpr int UN = gemv1_unroll<WT, VEC && G == 32>();
#define NPL(V, P) mbcuda_launch(ctx, k_gemv_norm<WT, G, VEC, V, P, UN>, grid, block, 0, np, w, \
                                a->bias, a->d_model, a->out_f, a->y, ce)
    if (vpt == 4) return a->plain ? NPL(4, true) : NPL(4, false);
    return a->plain ? NPL(8, true) : NPL(8, false);
#undef NPL
  }
}

template <typename WT>
static cudaError_t norm_in_proj_wt(mb_ctx *ctx, const mbcuda_norm_in_proj *a, int vpt,
                                   const NormPro &np, const ConvEpi &ce) {
  /* the path mb_linear_conv1d_step would take on the normed row (x_ref) */
  return gemv_dispatch<WT>(ctx, a->d_model, a->d_model, a->out_f, a->x_ref, a->w,
                           [&](auto g, auto v) {
                             return norm_in_proj_launch<WT, decltype(g)::value, decltype(v)::value>(
                                 ctx, a, vpt, np, ce);
                           });
}

extern "C" int mbcuda_norm_in_proj_ok(mb_ctx *ctx, int64_t d_model, int64_t out_f) {
  return mbcuda_st(ctx)->norm_prologue && d_model <= NORM_PRO_MAX && out_f > 0 &&
         out_f <= INT32_MAX;
}

extern "C" int mbcuda_norm_in_proj_step(mb_ctx *ctx, const mbcuda_norm_in_proj *a) {
  if (!mbcuda_norm_in_proj_ok(ctx, a->d_model, a->out_f) || a->d_conv <= 0)
    return mb_fail(MB_ERR_UNSUPPORTED, "cuda: norm_in_proj: off, or a shape it does not take");
  int thr, vpt;
  norm_reg_shape(a->d_model, &thr, &vpt);
  const NormPro np = {a->x, a->res_out, a->norm_w, a->norm_b, a->norm_kind, thr, a->eps};
  const ConvEpi ce = {a->conv_w, a->conv_b, a->conv_state, a->xc, a->d_conv, a->d_conv, (int)a->k};
  const cudaError_t e = a->wdtype == MB_DTYPE_BF16  ? norm_in_proj_wt<uint16_t>(ctx, a, vpt, np, ce)
                        : a->wdtype == MB_DTYPE_F16 ? norm_in_proj_wt<__half>(ctx, a, vpt, np, ce)
                                                    : norm_in_proj_wt<float>(ctx, a, vpt, np, ce);
  MBCUDA_CHECK(e, "norm_in_proj (gemv)");
  return MB_OK;
}

/* mb_verify_layers' in_proj over len positions, one a block (gemv_block's split with N = 1 and
 * jsplit = len: block b takes position b % len): its weights in flight first, then (after the PDL
 * wait) its position's row added and normed into shared memory with k_add_norm_reg's mapping, then
 * gemv_block on it (ldx 0: every position's row is that one). The position's first block (row
 * group 0) stores the residual sum. */
struct NormRows {
  const float *x, *res_in;
  float *res_out;
  int accumulate;
  const float *w, *b;
  int kind, thr;
  float eps;
  int len;
  /* the conv (conv_w NULL: none), run by the last block of each row group to finish */
  const float *conv_w, *conv_b;
  float *conv_state, *state_save, *xc;
  int64_t dc, ldo;
  int k;
  unsigned int *done;
};

#define ROW_CONV_POS 8 /* positions of the conv in the pass's in_proj: lanes a channel */

/* The conv of a row group's channels over the len positions, once every block of the group has
 * written its position's row: a thread per (channel, position), a channel's positions in adjacent
 * lanes of one warp, each sum in k_conv_pos's order (so mbcuda_conv1d_save's bits). The rows come
 * from other blocks: read through L2, after a fence. */
__device__ __forceinline__ void row_group_conv(const NormRows &nr, const float *y, int64_t ldy,
                                               int64_t c0, int rows) {
  const int k = nr.k;
  for (int base = 0; base < rows * ROW_CONV_POS; base += blockDim.x) {
    const int q = base + (int)threadIdx.x, t = q % ROW_CONV_POS;
    const int64_t c = c0 + q / ROW_CONV_POS;
    const bool on = q < rows * ROW_CONV_POS && c < nr.dc && t < nr.len;
    float wc[CONV_EPI_KMAX], v[CONV_EPI_KMAX];
#pragma unroll
    for (int j = 0; j < CONV_EPI_KMAX; j++) wc[j] = (on && j < k) ? nr.conv_w[c * k + j] : 0.f;
    const float bc = (on && nr.conv_b) ? nr.conv_b[c] : 0.f;
    float *st = nr.conv_state + (on ? c : 0) * (k - 1);
#pragma unroll
    for (int j = 0; j < CONV_EPI_KMAX; j++) {
      const int p = t - (k - 1) + j; /* the input position of tap j */
      v[j] = (on && j < k) ? (p >= 0 ? __ldcg(y + p * ldy + c) : __ldcg(st + (k - 1) + p)) : 0.f;
    }
    float acc = bc;
#pragma unroll
    for (int j = 0; j < CONV_EPI_KMAX; j++)
      if (j < k) acc += wc[j] * v[j];
    if (on) nr.xc[t * nr.ldo + c] = mb_silu(acc);
    if (on && t == 0) {
#pragma unroll
      for (int j = 0; j < CONV_EPI_KMAX - 1; j++)
        if (j < k - 1) nr.state_save[c * (k - 1) + j] = v[j];
    }
    __syncwarp();
    if (on && t == nr.len - 1) {
#pragma unroll
      for (int j = 0; j < CONV_EPI_KMAX - 1; j++)
        if (j < k - 1) st[j] = v[j + 1];
    }
  }
}

/* The conv of the block's row group (rpb rows a block), by the last of its len blocks to finish
 * (threadFenceReduction's pattern: every writer fences, one arrival a block, the last fences again
 * and reads). Every thread of the block calls it. */
__device__ __forceinline__ void rows_conv_tail(const NormRows &nr, const float *y, int64_t ldy,
                                               int rpb) {
  if (!nr.conv_w) return;
  const unsigned rg = blockIdx.x / (unsigned)nr.len;
  const int64_t c0 = (int64_t)rg * rpb;
  if (c0 >= nr.dc) return; /* z rows: no conv */
  __shared__ bool last;
  __threadfence();
  __syncthreads();
  if (threadIdx.x == 0) {
    last = atomicAdd(nr.done + rg, 1u) == (unsigned)nr.len - 1;
    if (last) nr.done[rg] = 0; /* every block of the group has arrived: ready for the next launch */
  }
  __syncthreads();
  if (!last) return;
  __threadfence();
  const int64_t rows = nr.dc - c0 < rpb ? nr.dc - c0 : rpb;
  row_group_conv(nr, y, ldy, c0, (int)rows);
}

template <typename WT, int G, bool VEC, int VPT>
__global__ void __launch_bounds__(256)
k_gemv_norm_rows(NormRows nr, const WT *__restrict__ w, const float *__restrict__ bias,
                 int64_t in_f, int64_t out_f, float *__restrict__ y, int64_t ldy) {
  __shared__ __align__(16) float xs[NORM_PRO_MAX];
  __shared__ float red[32];
  mb_pdl_trigger();
  const int64_t j = blockIdx.x % (unsigned)nr.len;
  const bool first = blockIdx.x < (unsigned)nr.len;
  auto norm = [&] {
    auto pdl_wait = [] { mb_pdl_wait(); };
    add_norm_reg_row<VPT, XLoad::Generic, decltype(pdl_wait), false>(
        nr.x + j * in_f, nr.accumulate ? nr.res_in + j * in_f : nullptr,
        first ? nr.res_out + j * in_f : nullptr, nr.accumulate, nr.w, nr.b, nr.kind, nr.eps, in_f,
        nr.thr, xs, nullptr, red, pdl_wait);
    __syncthreads();
  };
  const ConvEpi none = {nullptr, nullptr, nullptr, nullptr, 0, 0, 0};
  gemv_block<WT, 1, G, VEC, false, XLoad::Generic, decltype(norm)>(
      xs, 0, w, bias, nr.len, in_f, out_f, y, ldy, none, nr.len, blockIdx.x, blockDim.x, norm);
  rows_conv_tail(nr, y, ldy, 256 / G);
}

/* k_gemv_norm_rows' tensor-core form (gemv_tc.cuh): block b takes row group b / len of position
 * b % len, the norm's output split into the parts' rows. */
template <int VPT>
__global__ void __launch_bounds__(256)
k_gemv_norm_rows_tc(NormRows nr, const uint16_t *__restrict__ w, const float *__restrict__ bias,
                    int64_t in_f, int64_t out_f, float *__restrict__ y, int64_t ldy) {
  __shared__ float nred[32];
  mb_pdl_trigger();
  const int64_t j = blockIdx.x % (unsigned)nr.len,
                row0 = (int64_t)(blockIdx.x / (unsigned)nr.len) * TC_ROWS;
  const bool first = blockIdx.x < (unsigned)nr.len;
  const int64_t row = row0 + (threadIdx.x >> 5);
  const float s = tc_group_block<NORM_PRO_MAX>(w, in_f, out_f, row0, [&](uint16_t *xp,
                                                                          int64_t pitch) {
    auto pdl_wait = [] { mb_pdl_wait(); };
    add_norm_reg_row<VPT, XLoad::Generic, decltype(pdl_wait), false, 0, 0, false, true>(
        nr.x + j * in_f, nr.accumulate ? nr.res_in + j * in_f : nullptr,
        first ? nr.res_out + j * in_f : nullptr, nr.accumulate, nr.w, nr.b, nr.kind, nr.eps, in_f,
        nr.thr, nullptr, xp, nred, pdl_wait, 0, nullptr, pitch);
    __syncthreads();
  });
  if ((threadIdx.x & 31) == 0 && row < out_f) y[j * ldy + row] = s + (bias ? bias[row] : 0.f);
  rows_conv_tail(nr, y, ldy, TC_ROWS);
}

template <typename WT>
static cudaError_t norm_in_proj_rows_wt(mb_ctx *ctx, const mbcuda_norm_in_proj_rows *a,
                                        const NormRows &nr, int vpt) {
  /* the path mb_linear would take on the normed rows (x_ref, ld d_model) */
  return gemv_dispatch<WT>(ctx, a->d_model, a->d_model, a->out_f, a->x_ref, a->w,
                           [&](auto g, auto v) {
    constexpr int G = decltype(g)::value;
    constexpr bool VEC = decltype(v)::value;
    if constexpr (G == GEMV_TC) {
      const int64_t groups = (a->out_f + TC_ROWS - 1) / TC_ROWS;
      const dim3 grid((unsigned)(groups * a->len)), block(256);
      const uint16_t *w = (const uint16_t *)a->w;
      if (vpt == 4)
        return mbcuda_launch(ctx, k_gemv_norm_rows_tc<4>, grid, block, 0, nr, w, a->bias,
                             a->d_model, a->out_f, a->y, a->ldy);
      return mbcuda_launch(ctx, k_gemv_norm_rows_tc<8>, grid, block, 0, nr, w, a->bias,
                           a->d_model, a->out_f, a->y, a->ldy);
    } else {
      const int64_t groups = (a->out_f + 256 / G - 1) / (256 / G);
      const dim3 grid((unsigned)(groups * a->len)), block(256);
      const WT *w = (const WT *)a->w;
      if (vpt == 4)
        return mbcuda_launch(ctx, k_gemv_norm_rows<WT, G, VEC, 4>, grid, block, 0, nr, w, a->bias,
                             a->d_model, a->out_f, a->y, a->ldy);
      return mbcuda_launch(ctx, k_gemv_norm_rows<WT, G, VEC, 8>, grid, block, 0, nr, w, a->bias,
                           a->d_model, a->out_f, a->y, a->ldy);
    }
  });
}

extern "C" int mbcuda_verify_in_proj_ok(mb_ctx *ctx, int64_t d_model, int64_t out_f,
                                        int64_t len, int wdtype) {
  mbcuda_state *st = mbcuda_st(ctx);
  if (!st->verify_norm || d_model > NORM_PRO_MAX || out_f <= 0 || len < 1 || len > 65 ||
      out_f * len > (int64_t)INT32_MAX)
    return 0;
  /* Only where the ops' GEMV gives each block one position anyway (small products: the weights
   * are read once per position either way); where it gives a block several, one a block would
   * read them more often. */
  /* the tensor-core form runs a block a position and row group whatever the shape */
  if (gemv_tc_fits(st->gemv_tc, wdtype == MB_DTYPE_BF16, d_model % 8 == 0, d_model, out_f))
    return 1;
  const int64_t epc = wdtype == MB_DTYPE_F32 ? 4 : 8; /* weights a 16-byte chunk */
  const int g = gemv_group_size(out_f, d_model % epc == 0 ? d_model / epc : d_model, st->sm_count,
                                st->gemv_g256_rows);
  return gemv_rows_per_thread(ctx, (int)(len < 8 ? len : 8), out_f * g) == 1;
}

extern "C" int mbcuda_verify_conv_ok(mb_ctx *ctx, int64_t len, int64_t d_inner, int64_t d_conv) {
  return mbcuda_st(ctx)->verify_conv && len >= 1 && len <= ROW_CONV_POS && d_conv >= 1 &&
         d_conv <= CONV_EPI_KMAX && 2 * d_inner <= MBCUDA_ROW_DONE;
}

extern "C" int mbcuda_verify_in_proj(mb_ctx *ctx, const mbcuda_norm_in_proj_rows *a) {
  if (!mbcuda_verify_in_proj_ok(ctx, a->d_model, a->out_f, a->len, a->wdtype))
    return mb_fail(MB_ERR_UNSUPPORTED, "cuda: norm_in_proj_rows: off, or a shape it does not take");
  int thr, vpt;
  norm_reg_shape(a->d_model, &thr, &vpt);
  const bool conv = a->conv_w != nullptr;
  if (conv && (!mbcuda_verify_conv_ok(ctx, a->len, a->dc, a->k) || a->dc > a->out_f))
    return mb_fail(MB_ERR_UNSUPPORTED, "cuda: norm_in_proj_rows: a conv it does not take");
  const NormRows nr = {a->x,
                       a->res_in,
                       a->res_out,
                       a->accumulate,
                       a->norm_w,
                       a->norm_b,
                       a->norm_kind,
                       thr,
                       a->eps,
                       (int)a->len,
                       a->conv_w,
                       a->conv_b,
                       a->conv_state,
                       a->state_save,
                       a->xc,
                       a->dc,
                       a->ldo,
                       (int)a->k,
                       mbcuda_st(ctx)->row_done};
  const cudaError_t e = a->wdtype == MB_DTYPE_BF16  ? norm_in_proj_rows_wt<uint16_t>(ctx, a, nr, vpt)
                        : a->wdtype == MB_DTYPE_F16 ? norm_in_proj_rows_wt<__half>(ctx, a, nr, vpt)
                                                    : norm_in_proj_rows_wt<float>(ctx, a, nr, vpt);
  MBCUDA_CHECK(e, "norm_in_proj_rows (gemv)");
  return MB_OK;
}

/* out_proj: gemv_block with the residual add in its epilogue (N = 1, as the ops' GEMV). With a
 * block a row (G = 256), RB rows a block: every thread loads its chunks of all RB rows at once
 * (UN each), and the block reduces each row as a one-row block does, so the bits are the ops'. */
template <typename WT, int G, bool VEC, int UN, int RB = 1>
__global__ void __launch_bounds__(256)
k_gemv_res(const float *__restrict__ x, const WT *__restrict__ w, const float *__restrict__ bias,
           int64_t in_f, int64_t out_f, float *__restrict__ y, float *__restrict__ res) {
  mb_pdl_trigger();
  const ConvEpi none = {nullptr, nullptr, nullptr, nullptr, 0, 0, 0};
  auto pdl_wait = [] { mb_pdl_wait(); };
  gemv_block<WT, 1, G, VEC, false, XLoad::Ldg, decltype(pdl_wait), true, RB, UN>(
      x, in_f, w, bias, 1, in_f, out_f, y, out_f, none, 1, blockIdx.x, blockDim.x, pdl_wait, res);
}

/* Rows a block of k_gemv_res with a block a row (8 for bf16 weights, 4 for fp32: the fastest of
 * 1, 2, 4 and 8 in cuda_bench --gemv1 on the H200, docs/cuda_notes.md; the others are retired),
 * and each row's chunks in flight: a thread's share of a 3584-wide row (1.75 chunks of bf16, 3.5
 * of fp32). */
template <typename WT>
constexpr int gemv1_res_rows() {
  return sizeof(WT) == 2 ? 8 : 4;
}
template <typename WT>
constexpr int gemv1_res_unroll() {
  return sizeof(WT) == 2 ? 2 : 4;
}

template <typename WT>
static cudaError_t linear_residual_wt(mb_ctx *ctx, const float *x, const WT *w, const float *bias,
                                      int64_t in_f, int64_t out_f, float *y, float *res) {
  return gemv_dispatch<WT>(ctx, in_f, in_f, out_f, x, w, [&](auto g, auto v) {
    constexpr int G = decltype(g)::value;
    constexpr bool VEC = decltype(v)::value;
    const dim3 block(256);
    if constexpr (G == GEMV_TC) {
      const ConvEpi none = {nullptr, nullptr, nullptr, nullptr, 0, 0, 0};
      return gemv_tc_launch(ctx, x, in_f, (const uint16_t *)w, bias, 1, in_f, out_f, y, out_f,
                            none, res);
    } else if constexpr (G == 256 && VEC) {
      constexpr int RB = gemv1_res_rows<WT>();
      const dim3 grid((unsigned)((out_f + RB - 1) / RB));
      return mbcuda_launch(ctx, k_gemv_res<WT, G, VEC, gemv1_res_unroll<WT>(), RB>, grid, block, 0,
                           x, w, bias, in_f, out_f, y, res);
    } else {
      const dim3 grid((unsigned)((out_f + 256 / G - 1) / (256 / G)));
      return mbcuda_launch(ctx, k_gemv_res<WT, G, VEC, gemv1_unroll<WT, VEC && G == 32>()>, grid,
                           block, 0, x, w, bias, in_f, out_f, y, res);
    }
  });
}

extern "C" int mbcuda_linear_residual(mb_ctx *ctx, const float *x, const void *w, int wdtype,
                                      const float *bias, int64_t in_f, int64_t out_f, float *y,
                                      float *residual) {
  const cudaError_t e =
      wdtype == MB_DTYPE_BF16
          ? linear_residual_wt<uint16_t>(ctx, x, (const uint16_t *)w, bias, in_f, out_f, y, residual)
      : wdtype == MB_DTYPE_F16
          ? linear_residual_wt<__half>(ctx, x, (const __half *)w, bias, in_f, out_f, y, residual)
          : linear_residual_wt<float>(ctx, x, (const float *)w, bias, in_f, out_f, y, residual);
  MBCUDA_CHECK(e, "linear_residual (gemv)");
  return MB_OK;
}
