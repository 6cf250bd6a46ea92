/*
 * norm_row.cuh — the decoding rows of mb_add_norm (residual add + LayerNorm / RMSNorm of a row of
 * d <= VPT * nthr values held in registers) as a device function, shared by its kernel (norm.cu)
 * and in_proj's norm prologue (k_gemv_norm, gemm.cu), so both give the same bits.
 */
#ifndef MAMBABYTE_NORM_ROW_CUH
#define MAMBABYTE_NORM_ROW_CUH

#include <stdint.h>

#include <type_traits>

#include "cuda_internal.cuh"
#include "gemv_tc.cuh"

/* Element c of a normed row: into the fp32 row and/or its bf16 copy (either may be NULL). */
__device__ __forceinline__ void norm_store(float *orow, uint16_t *brow, int64_t c, float o) {
  if (orow) orow[c] = o;
  if (brow) brow[c] = mb_f32_to_bf16(o);
}

/* One row: r = x (+ res_in when accumulate), stored to res_out (when not NULL), then normed into
 * orow / brow. Thread t < nthr owns elements t + i * nthr (i < VPT) as a block of nthr threads
 * would; threads from nthr on (a larger block) own none and add exact zeros to the block sums.
 * weight and bias are loaded before `wait()` (called once by every thread). red: 32 floats.
 * PLAIN_X: r = x, for a row that already holds the residual sum (not with HOIST).
 * PARTS > 0 (with HOIST only): x is PARTS parts of a product, part p at xr + p * part_stride,
 * summed in that order (then + h_bias, when not NULL) before the residual add
 * (mb_linear_add_norm's split product).
 * The FMAs are spelled out: left to the compiler, their contraction changed with the code around
 * them (k_add_norm_reg's and k_gemv_norm's rows must round alike).
 * NT > 0: the caller's promise that nthr == NT == the block's threads and that d is a multiple of
 * NT (norm_nt_fits), so that element i of every thread is in the row iff i < d / NT (a bound the
 * block shares, no compare a thread) and lies NT i floats after the thread's first (an offset the
 * load takes as a constant: no address arithmetic an element). The same elements, operations and
 * order as NT = 0, so the same bits.
 * HOIST: every load of the row (x or its parts, and the residual) issued first, branch-free (an
 * element past the row reads element 0 and is dropped), then the arithmetic: with a branch an
 * element, the SASS of k_add_norm_reg and k_sum_add_norm_reg waited for element i's loads before
 * it issued element i + 1's (an L2 round trip an element after the PDL wait). The same operations
 * and order, so the same bits. The norm kernels take it (batch-64 step -4.5%, batch 256 -2%); in
 * in_proj's ring prologue (PLAIN_X) ptxas put each element's select right behind its load, and
 * the batch-1 step took 973 against 880 us, so the prologues keep the branches (H200,
 * docs/cuda_notes.md).
 * SPLIT: the normed row goes out as its three bf16 parts (tc_split_store: brow's rows
 * split_pitch elements apart) for the tensor-core GEMV, orow unused. */
template <int VPT, XLoad XL, typename Wait, bool PLAIN_X = false, int PARTS = 0, int NT = 0,
          bool HOIST = false, bool SPLIT = false>
__device__ __forceinline__ void add_norm_reg_row(const float *xr, const float *res_in,
                                                 float *res_out, int accumulate,
                                                 const float *__restrict__ weight,
                                                 const float *__restrict__ bias, int norm_kind,
                                                 float eps, int64_t d, int nthr, float *orow,
                                                 uint16_t *brow, float *red, Wait wait,
                                                 int64_t part_stride = 0,
                                                 const float *h_bias = nullptr,
                                                 int64_t split_pitch = 0) {
  using XLC = XLoadTag<XL>;
  static_assert(!(HOIST && PLAIN_X), "the hoisted loads: rows with a residual add (norm.cu)");
  static_assert(PARTS == 0 || HOIST, "a product's parts: the hoisted form only");
  /* element indices in 32 bits (d <= 2048 here): with 64-bit selects and compares for each
   * element, this prologue was 39% of the batch-1 in_proj ring kernel's instructions (ncu, 972M
   * step; docs/cuda_notes.md) */
  const int dd = (int)d, tid = (int)threadIdx.x;
  const bool owner = NT > 0 || tid < nthr;
  const int nt = NT > 0 ? NT : nthr;
  const auto col = [&](int i) { return owner ? tid + i * nt : dd; }; /* dd: owns none */
  const auto in_row = [&](int i) { return NT > 0 ? i * NT < dd : col(i) < dd; };
  float wv[VPT], bv[VPT], rv[VPT];
#pragma unroll
  for (int i = 0; i < VPT; i++) {
    const int c = col(i);
    wv[i] = in_row(i) ? weight[c] : 0.f;
    bv[i] = (in_row(i) && bias) ? bias[c] : 0.f;
  }
  wait();
  float s = 0.f;
  if constexpr (HOIST) {
    constexpr int NP = PARTS > 0 ? PARTS : 1;
    /* the residual's loads read x again when there is none to add (no branch; dropped below) */
    const float *rsrc = accumulate ? res_in : xr;
    float xin[VPT][NP], rin[VPT];
#pragma unroll
    for (int i = 0; i < VPT; i++) {
      const int c = in_row(i) ? col(i) : 0;
#pragma unroll
      for (int p = 0; p < NP; p++) xin[i][p] = xload(xr + p * part_stride + c, XLC());
      rin[i] = xload(rsrc + c, XLC());
    }
#pragma unroll
    for (int i = 0; i < VPT; i++) {
      float r = 0.f;
      if (in_row(i)) {
        float h = xin[i][0];
#pragma unroll
        for (int p = 1; p < NP; p++) h += xin[i][p];
        if (PARTS > 0 && h_bias) h += h_bias[col(i)];
        r = (accumulate ? rin[i] : 0.f) + h;
      }
      rv[i] = r;
    }
#pragma unroll
    for (int i = 0; i < VPT; i++) {
      if (in_row(i) && res_out) res_out[col(i)] = rv[i];
      s = (norm_kind == MB_NORM_RMS) ? fmaf(rv[i], rv[i], s) : s + rv[i];
    }
  } else {
#pragma unroll
    for (int i = 0; i < VPT; i++) {
      const int c = col(i);
      float r = 0.f;
      if (in_row(i)) {
        if (PLAIN_X) /* x is the residual sum already (made by the last out_proj's epilogue) */
          r = xload(xr + c, XLC());
        else
          r = (accumulate ? xload(res_in + c, XLC()) : 0.f) + xload(xr + c, XLC());
        if (res_out) res_out[c] = r;
      }
      rv[i] = r;
      s = (norm_kind == MB_NORM_RMS) ? fmaf(r, r, s) : s + r;
    }
  }
  s = block_sum_all(s, red);
  float mean = 0.f, rstd;
  if (norm_kind == MB_NORM_RMS) {
    rstd = 1.f / sqrtf(s / (float)dd + eps);
  } else {
    mean = s / (float)dd;
    float v = 0.f;
#pragma unroll
    for (int i = 0; i < VPT; i++) {
      const float t = rv[i] - mean;
      if (in_row(i)) v = fmaf(t, t, v);
    }
    v = block_sum_all(v, red);
    rstd = 1.f / sqrtf(v / (float)dd + eps);
  }
#pragma unroll
  for (int i = 0; i < VPT; i++) {
    const int c = col(i);
    if (in_row(i)) {
      const float o = fmaf((rv[i] - mean) * rstd, wv[i], bv[i]);
      if constexpr (SPLIT)
        tc_split_store(brow, split_pitch, c, o);
      else
        norm_store(orow, brow, c, o);
    }
  }
}

/* Whether a row of d values on thr threads takes add_norm_reg_row's NT = NORM_NT form (the
 * models' rows: 1024 and 1792 values on 256 threads); `on`: the context's switch
 * (MAMBABYTE_CUDA_NORM_NT=0 off, A/B runs). */
#define NORM_NT 256
static inline bool norm_nt_fits(int64_t d, int thr, int on) {
  return on && thr == NORM_NT && d % NORM_NT == 0;
}
/* f(NT) with NT = NORM_NT where norm_nt_fits, else 0, as a compile-time constant
 * (std::integral_constant): every launcher of a decoding norm picks its form through it. */
template <typename F>
static inline auto norm_nt_dispatch(int64_t d, int thr, int on, F f) {
  return norm_nt_fits(d, thr, on) ? f(std::integral_constant<int, NORM_NT>())
                                  : f(std::integral_constant<int, 0>());
}

/* The block of mb_add_norm's register rows for d <= 2048: threads (*thr) and values per thread. */
static inline void norm_reg_shape(int64_t d, int *thr, int *vpt) {
  *thr = d <= 4 * 256 ? row_threads((d + 3) / 4) : 256;
  *vpt = d <= 4 * (int64_t)*thr ? 4 : 8;
}

#endif
