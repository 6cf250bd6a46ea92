/*
 * conv.cu — mb_causal_conv1d on CUDA: one thread per (b, c) sequential over t for decoding (len <= 8)
 * or many channels (k_conv_seq, state updated in the same kernel); otherwise (prefill) one thread
 * per (b, channel, tile of CONV_TILE positions) with the window in registers, so each input is
 * read about once (k_conv_tile; k_conv_tile_pair, two channels a thread, for the forward's bf16
 * xz -> bf16 u), followed by the state update (k_conv_state). The tile kernels take SiLU by the
 * MUFU forms (mb_fast_silu, as the forward's scan gate does); k_conv_seq (decoding, short
 * chunks) and k_conv_par (windows above CONV_KMAX) keep the accurate expf and division.
 * (The fused in_proj + conv step, mb_linear_conv1d_step, is in gemm.cu's GEMV epilogue.)
 */
#include <cuda_fp16.h>
#include <stdint.h>

#include <type_traits>

#include "cuda_internal.cuh"

#define CONV_KMAX 8


/* One position of k_conv_seq: window positions t-(k-1) .. t are win[0..k-2] then xv. */
__device__ __forceinline__ void conv_seq_pos(float (&win)[CONV_KMAX], const float (&wc)[CONV_KMAX],
                                             float bc, int k, float xv, int64_t r, int64_t c,
                                             int64_t d, float *__restrict__ out, int64_t ldo,
                                             float *__restrict__ pre_out,
                                             uint16_t *__restrict__ out_bf16) {
  float acc = bc;
#pragma unroll
  for (int j = 0; j < CONV_KMAX; j++) {
    if (j < k - 1) acc += wc[j] * win[j];
    else if (j == k - 1) acc += wc[j] * xv;
  }
#pragma unroll
  for (int j = 0; j < CONV_KMAX - 1; j++) {
    if (j < k - 2) win[j] = win[j + 1];
    else if (j == k - 2) win[j] = xv;
  }
  const float o = mb_silu(acc);
  if (out) out[r * ldo + c] = o;
  if (pre_out) pre_out[r * d + c] = acc;
  if (out_bf16) out_bf16[r * d + c] = mb_f32_to_bf16(o);
}

#define CONV_SEQ_PRELOAD 8

/* One thread per (b, c), sequential over t, the window in registers (k <= CONV_KMAX): one launch,
 * used for short lengths (decoding, verification). Up to CONV_SEQ_PRELOAD positions' inputs are
 * loaded before the first is used (a verification pass of 8 positions waited on eight dependent
 * loads one after the other). */
template <typename XT>
__global__ void k_conv_seq(const XT *__restrict__ x, int64_t ldx, const float *__restrict__ w,
                           const float *__restrict__ bias, float *conv_state,
                           float *__restrict__ state_save, int64_t batch,
                           int64_t len, int64_t d, int k, float *__restrict__ out, int64_t ldo,
                           float *__restrict__ pre_out, uint16_t *__restrict__ out_bf16) {
  mb_pdl_trigger();
  int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x;
  if (i >= batch * d) return;
  int64_t b = i / d, c = i - b * d;
  float win[CONV_KMAX], wc[CONV_KMAX];
  float *st = conv_state ? conv_state + (b * d + c) * (k - 1) : nullptr;
  /* weights and bias are constant: load them before the PDL wait */
#pragma unroll
  for (int j = 0; j < CONV_KMAX; j++) wc[j] = j < k ? w[c * k + j] : 0.f;
  float bc = bias ? bias[c] : 0.f;
  mb_pdl_wait();
#pragma unroll
  for (int j = 0; j < CONV_KMAX; j++) win[j] = (j < k - 1 && st) ? st[j] : 0.f;
  /* the window before this call (verification keeps it for resuming), stored after the inputs'
   * loads are issued (a store before them would hold them back: the pointers may alias) */
  const auto save_window = [&] {
    if (!state_save) return;
    float *sv = state_save + (b * d + c) * (k - 1);
#pragma unroll
    for (int j = 0; j < CONV_KMAX; j++)
      if (j < k - 1) sv[j] = win[j];
  };
  if (len <= CONV_SEQ_PRELOAD) {
    /* every position's sum first, with no branch between them (the window moves only within
     * len), then the outputs: the positions' chains overlap (conv_seq_pos's arithmetic) */
    float xs[CONV_SEQ_PRELOAD], acc[CONV_SEQ_PRELOAD];
#pragma unroll
    for (int t = 0; t < CONV_SEQ_PRELOAD; t++)
      xs[t] = t < len ? mb_act(x + (b * len + t) * ldx + c) : 0.f;
    save_window();
#pragma unroll
    for (int t = 0; t < CONV_SEQ_PRELOAD; t++) {
      float s = bc;
#pragma unroll
      for (int j = 0; j < CONV_KMAX; j++) {
        if (j < k - 1) s += wc[j] * win[j];
        else if (j == k - 1) s += wc[j] * xs[t];
      }
      acc[t] = s;
      if (t < len) {
#pragma unroll
        for (int j = 0; j < CONV_KMAX - 1; j++) {
          if (j < k - 2) win[j] = win[j + 1];
          else if (j == k - 2) win[j] = xs[t];
        }
      }
    }
#pragma unroll
    for (int t = 0; t < CONV_SEQ_PRELOAD; t++) {
      if (t < len) {
        const int64_t r = b * len + t;
        const float o = mb_silu(acc[t]);
        if (out) out[r * ldo + c] = o;
        if (pre_out) pre_out[r * d + c] = acc[t];
        if (out_bf16) out_bf16[r * d + c] = mb_f32_to_bf16(o);
      }
    }
  } else {
    save_window();
    for (int64_t t = 0; t < len; t++) {
      const int64_t r = b * len + t;
      conv_seq_pos(win, wc, bc, k, mb_act(x + r * ldx + c), r, c, d, out, ldo, pre_out, out_bf16);
    }
  }
  if (st) {
#pragma unroll
    for (int j = 0; j < CONV_KMAX; j++)
      if (j < k - 1) st[j] = win[j];
  }
}

#define CONV_TILE 32
#define CONV_GROUP 8 /* positions whose inputs k_conv_tile loads before the first is used */

/* One position of the tile kernels' window of K (k a template parameter): xv enters, the sum of
 * bias and taps is returned, the window moves on (k_conv_seq's arithmetic, in its order). */
template <int K>
__device__ __forceinline__ float conv_tile_step(float (&win)[K], const float (&wc)[K], float bc,
                                                float xv) {
  win[K - 1] = xv;
  float acc = bc;
#pragma unroll
  for (int j = 0; j < K; j++) acc += wc[j] * win[j];
#pragma unroll
  for (int j = 0; j < K - 1; j++) win[j] = win[j + 1];
  return acc;
}

/* Grid (channel blocks, position tiles, batch): thread (b, c) runs positions [t0, t0 + T) with the
 * window in registers, its first k-1 inputs read from x before t0 (or the state before position
 * 0). The arithmetic is k_conv_seq's; k is a template parameter, so the window moves in registers
 * without predicates. The inputs of CONV_GROUP positions are loaded before the first is used: one
 * load in flight a thread held the conv to 106 us a 972M layer at 8192 positions, 68 us with 8
 * (the traffic's ~69 us at the copy rate; cuda_bench --fwd on the H200). */
template <int K, typename XT>
__global__ void k_conv_tile(const XT *__restrict__ x, int64_t ldx, const float *__restrict__ w,
                            const float *__restrict__ bias, const float *__restrict__ conv_state,
                            int64_t len, int64_t d, int64_t T, float *__restrict__ out,
                            int64_t ldo, float *__restrict__ pre_out,
                            uint16_t *__restrict__ out_bf16, const int32_t *__restrict__ f16_exp) {
  mb_pdl_trigger();
  int64_t c = blockIdx.x * (int64_t)blockDim.x + threadIdx.x;
  if (c >= d) return;
  int64_t b = blockIdx.z;
  int64_t t0 = blockIdx.y * T, t1 = t0 + T < len ? t0 + T : len;
  float win[K], wc[K];
#pragma unroll
  for (int j = 0; j < K; j++) wc[j] = w[c * K + j];
  float bc = bias ? bias[c] : 0.f;
  mb_pdl_wait();
  /* f16_exp: out_bf16 takes the scaled fp16 rows, fp16(o 2^e) (v s1 s2 is v 2^e exactly wherever
   * the result is an fp16 normal, as k_f16_convert scales) */
  float s1 = 1.f, s2 = 1.f;
  if (f16_exp) mb_f16_scale_factors(*f16_exp, &s1, &s2);
  const float *st = conv_state ? conv_state + (b * d + c) * (K - 1) : nullptr;
#pragma unroll
  for (int j = 0; j < K - 1; j++) {
    int64_t p = t0 - (K - 1) + j;
    win[j] = p >= 0 ? mb_act(x + (b * len + p) * ldx + c) : (st ? st[(K - 1) + p] : 0.f);
  }
  const XT *xp = x + (b * len + t0) * ldx + c;
  float *op = out ? out + (b * len + t0) * ldo + c : nullptr; /* NULL: the bf16 copy alone */
  float *pp = pre_out ? pre_out + (b * len + t0) * d + c : nullptr;
  uint16_t *bp = out_bf16 ? out_bf16 + (b * len + t0) * d + c : nullptr;
  /* one position: its input xv, its outputs at offset i rows from op / pp / bp */
  const auto position = [&](float xv, int64_t i) {
    const float acc = conv_tile_step<K>(win, wc, bc, xv);
    /* the MUFU form (file header): expf and the IEEE division took ~40% of the instructions;
     * k_conv_tile_pair takes the same, so its bf16 copy is this fp32 output's rounding */
    const float o = mb_fast_silu(acc);
    if (op) op[i * ldo] = o;
    if (pp) pp[i * d] = acc;
    if (bp)
      bp[i * d] = f16_exp ? __half_as_ushort(__float2half_rn(o * s1 * s2)) : mb_f32_to_bf16(o);
  };
  int64_t t = t0;
  for (; t + CONV_GROUP <= t1; t += CONV_GROUP) {
    float xs[CONV_GROUP];
#pragma unroll
    for (int u = 0; u < CONV_GROUP; u++) xs[u] = mb_act(xp + u * ldx);
#pragma unroll
    for (int u = 0; u < CONV_GROUP; u++) position(xs[u], u);
    xp += CONV_GROUP * ldx;
    if (op) op += CONV_GROUP * ldo;
    if (pp) pp += CONV_GROUP * d;
    if (bp) bp += CONV_GROUP * d;
  }
  for (; t < t1; t++) {
    position(mb_act(xp), 0);
    xp += ldx;
    if (op) op += ldo;
    if (pp) pp += d;
    if (bp) bp += d;
  }
}

/* k_conv_tile for the forward's bf16 xz -> bf16 u (x bf16, the bf16 output alone; d, ldx and
 * the rows' starts even): a thread runs two adjacent channels, their inputs and outputs moved as
 * 4-byte pairs, so a warp's load or store is 128 bytes where k_conv_tile's 2-byte ones made 64.
 * Each channel's arithmetic is k_conv_tile's (the same bits). */
template <int K>
__global__ void k_conv_tile_pair(const uint16_t *__restrict__ x, int64_t ldx,
                                 const float *__restrict__ w, const float *__restrict__ bias,
                                 const float *__restrict__ conv_state, int64_t len, int64_t d,
                                 int64_t T, uint16_t *__restrict__ out_bf16) {
  mb_pdl_trigger();
  const int64_t c = 2 * (blockIdx.x * (int64_t)blockDim.x + threadIdx.x); /* the pair c, c + 1 */
  if (c >= d) return;
  const int64_t b = blockIdx.z;
  const int64_t t0 = blockIdx.y * T, t1 = t0 + T < len ? t0 + T : len;
  float win0[K], win1[K], wc0[K], wc1[K];
#pragma unroll
  for (int j = 0; j < K; j++) wc0[j] = w[c * K + j], wc1[j] = w[(c + 1) * K + j];
  const float bc0 = bias ? bias[c] : 0.f, bc1 = bias ? bias[c + 1] : 0.f;
  mb_pdl_wait();
  const float *st = conv_state ? conv_state + (b * d + c) * (K - 1) : nullptr;
#pragma unroll
  for (int j = 0; j < K - 1; j++) {
    const int64_t p = t0 - (K - 1) + j;
    if (p >= 0) {
      const uint32_t v = *(const uint32_t *)(x + (b * len + p) * ldx + c);
      win0[j] = __uint_as_float(v << 16), win1[j] = __uint_as_float(v & 0xffff0000u);
    } else {
      win0[j] = st ? st[(K - 1) + p] : 0.f;
      win1[j] = st ? st[(K - 1) + (K - 1) + p] : 0.f;
    }
  }
  const uint32_t *xp = (const uint32_t *)(x + (b * len + t0) * ldx + c);
  uint32_t *bp = (uint32_t *)(out_bf16 + (b * len + t0) * d + c);
  const int64_t ldx2 = ldx / 2, d2 = d / 2; /* in pairs */
  const auto position = [&](uint32_t v, int64_t i) {
    const float a0 = conv_tile_step<K>(win0, wc0, bc0, __uint_as_float(v << 16));
    const float a1 = conv_tile_step<K>(win1, wc1, bc1, __uint_as_float(v & 0xffff0000u));
    const uint32_t o0 = mb_f32_to_bf16(mb_fast_silu(a0)), o1 = mb_f32_to_bf16(mb_fast_silu(a1));
    bp[i * d2] = o0 | (o1 << 16);
  };
  int64_t t = t0;
  for (; t + CONV_GROUP <= t1; t += CONV_GROUP) {
    uint32_t xs[CONV_GROUP];
#pragma unroll
    for (int u = 0; u < CONV_GROUP; u++) xs[u] = xp[u * ldx2];
#pragma unroll
    for (int u = 0; u < CONV_GROUP; u++) position(xs[u], u);
    xp += CONV_GROUP * ldx2;
    bp += CONV_GROUP * d2;
  }
  for (; t < t1; t++) {
    position(*xp, 0);
    xp += ldx2;
    bp += d2;
  }
}

/* The pair form applies: bf16 x, the bf16 output alone, d, ldx and both rows' starts even. */
static bool conv_pairs_ok(const uint16_t *x, int64_t ldx, int64_t d, const float *out,
                          const float *pre_out, const uint16_t *out_bf16) {
  const auto even = [](const void *p) { return ((uintptr_t)p & 3) == 0; };
  return out_bf16 && !out && !pre_out && d % 2 == 0 && ldx % 2 == 0 && even(x) && even(out_bf16);
}

/* f(std::integral_constant<int, k>{}) for the window length k <= CONV_KMAX: the tile kernels'
 * one instantiation per k. */
template <typename F>
static cudaError_t with_window(int64_t k, F f) {
  static_assert(CONV_KMAX == 8, "one instantiation per window length");
  switch (k) {
    case 1: return f(std::integral_constant<int, 1>{});
    case 2: return f(std::integral_constant<int, 2>{});
    case 3: return f(std::integral_constant<int, 3>{});
    case 4: return f(std::integral_constant<int, 4>{});
    case 5: return f(std::integral_constant<int, 5>{});
    case 6: return f(std::integral_constant<int, 6>{});
    case 7: return f(std::integral_constant<int, 7>{});
    default: return f(std::integral_constant<int, 8>{});
  }
}

/* One thread per (b, t, c): fully parallel over positions (prefill; k > CONV_KMAX). */
template <typename XT>
__global__ void k_conv_par(const XT *__restrict__ x, int64_t ldx, const float *__restrict__ w,
                           const float *__restrict__ bias, const float *__restrict__ conv_state,
                           int64_t batch, int64_t len, int64_t d, int k, float *__restrict__ out,
                           int64_t ldo, float *__restrict__ pre_out,
                           uint16_t *__restrict__ out_bf16) {
  MB_PDL_ENTRY();
  int64_t total = batch * len * d;
  for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < total;
       i += (int64_t)gridDim.x * blockDim.x) {
    int64_t r = i / d, c = i - r * d;
    int64_t b = r / len, t = r - b * len;
    float acc = bias ? bias[c] : 0.f;
    for (int j = 0; j < k; j++) {
      int64_t p = t - (k - 1) + j;
      float v;
      if (p >= 0) v = mb_act(x + (b * len + p) * ldx + c);
      else v = conv_state ? conv_state[(b * d + c) * (k - 1) + (k - 1) + p] : 0.f;
      acc += w[c * k + j] * v;
    }
    const float o = mb_silu(acc);
    if (out) out[r * ldo + c] = o;
    if (pre_out) pre_out[r * d + c] = acc;
    if (out_bf16) out_bf16[r * d + c] = mb_f32_to_bf16(o);
  }
}


/* After k_conv_par: the state keeps the last k-1 inputs (in place, ascending j is safe). */
template <typename XT>
__global__ void k_conv_state(const XT *__restrict__ x, int64_t ldx, float *conv_state,
                             int64_t batch, int64_t len, int64_t d, int k) {
  MB_PDL_ENTRY();
  int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x;
  if (i >= batch * d) return;
  int64_t b = i / d, c = i - b * d;
  float *st = conv_state + (b * d + c) * (k - 1);
  for (int j = 0; j < k - 1; j++) {
    int64_t p = len - (k - 1) + j;
    st[j] = p >= 0 ? mb_act(x + (b * len + p) * ldx + c) : st[len + j];
  }
}

/* f16_exp (out16_f16_exp): out_bf16 takes the scaled fp16 rows of out instead, in the tile
 * kernel's stores; the other forms write out (the scratch when out is NULL), then convert it
 * (mbcuda_f16_rows_given). */
template <typename XT>
static int causal_conv1d(mb_ctx *ctx, const XT *x, int64_t ldx, const float *w, const float *bias,
                         float *conv_state, int64_t batch, int64_t len, int64_t d, int64_t k,
                         float *out, int64_t ldo, float *out_preact, uint16_t *out_bf16,
                         const int32_t *f16_exp) {
  cudaStream_t s = mbcuda_stream(ctx);
  int64_t chans = batch * d;
  /* the forms: k_conv_seq, else the tile kernels (pairs or not), else k_conv_par */
  const bool seq = k <= CONV_KMAX && (len <= 8 || chans >= 65536);
  const bool tile = !seq && k <= CONV_KMAX && batch <= 65535;
  if (f16_exp && !tile) {
    int rc = MB_OK;
    if (!out) { /* the fp16 copy alone: the fp32 rows into the scratch first */
      void *scr = NULL;
      rc = mbcuda_scratch(ctx, (size_t)(batch * len * d) * sizeof(float), "causal_conv1d", &scr);
      out = (float *)scr, ldo = d;
    }
    if (!rc)
      rc = causal_conv1d(ctx, x, ldx, w, bias, conv_state, batch, len, d, k, out, ldo, out_preact,
                         (uint16_t *)NULL, (const int32_t *)NULL);
    if (rc) return rc;
    return mbcuda_f16_rows_given(ctx, out, ldo, batch * len, d, f16_exp, out_bf16,
                                 "causal_conv1d (fp16 copy)");
  }
  if (seq) {
    MBCUDA_LAUNCH("causal_conv1d", k_conv_seq<XT>, dim3(mbcuda_blocks(chans, 128)), dim3(128), 0, x, ldx, w, bias, conv_state, (float *)NULL, batch, len, d, (int)k, out, ldo, out_preact, out_bf16);
    return MB_OK;
  }
  int64_t T = CONV_TILE;
  if ((len + T - 1) / T > 65535) T = (len + 65534) / 65535;
  bool pairs = false;
  if constexpr (std::is_same<XT, uint16_t>::value)
    pairs = tile && !f16_exp && conv_pairs_ok(x, ldx, d, out, out_preact, out_bf16);
  if (pairs) {
    dim3 grid(mbcuda_blocks(d / 2, 128), (unsigned)((len + T - 1) / T), (unsigned)batch);
    MBCUDA_CHECK(with_window(k,
                             [&](auto K) {
                               return mbcuda_launch(ctx, k_conv_tile_pair<K()>, grid, dim3(128), 0,
                                                    (const uint16_t *)x, ldx, w, bias, conv_state,
                                                    len, d, T, out_bf16);
                             }),
                 "causal_conv1d (pairs)");
  } else if (tile) {
    dim3 grid(mbcuda_blocks(d, 128), (unsigned)((len + T - 1) / T), (unsigned)batch);
    MBCUDA_CHECK(with_window(k,
                             [&](auto K) {
                               return mbcuda_launch(ctx, k_conv_tile<K(), XT>, grid, dim3(128), 0,
                                                    x, ldx, w, bias, conv_state, len, d, T, out,
                                                    ldo, out_preact, out_bf16, f16_exp);
                             }),
                 "causal_conv1d");
  } else {
    int64_t total = chans * len;
    unsigned int blocks = mbcuda_blocks(total, 256);
    unsigned int cap = (unsigned)mbcuda_st(ctx)->sm_count * 16;
    if (blocks > cap) blocks = cap;
    MBCUDA_LAUNCH("causal_conv1d", k_conv_par<XT>, dim3(blocks), dim3(256), 0, x, ldx, w, bias, conv_state, batch, len, d, (int)k, out, ldo, out_preact, out_bf16);
  }
  if (conv_state && k > 1) {
    MBCUDA_LAUNCH("causal_conv1d (state)", k_conv_state<XT>, dim3(mbcuda_blocks(chans, 128)), dim3(128), 0, x, ldx, conv_state, batch, len, d, (int)k);
  }
  return MB_OK;
}

/* x as fp32 or as bf16 bits (the forward's bf16 xz): the same kernels, each input widened as it is
 * loaded, so the arithmetic and the outputs are those of the fp32 values the bits stand for. */
extern "C" int mbcuda_causal_conv1d(mb_ctx *ctx, const float *x, const uint16_t *x_bf16,
                                    int64_t ldx, const float *w, const float *bias,
                                    float *conv_state, int64_t batch, int64_t len, int64_t d,
                                    int64_t k, float *out, int64_t ldo, float *out_preact,
                                    uint16_t *out16, const int32_t *out16_f16_exp) {
  if (batch <= 0 || len <= 0 || d <= 0 || k <= 0) return MB_OK;
  if (x_bf16)
    return causal_conv1d(ctx, x_bf16, ldx, w, bias, conv_state, batch, len, d, k, out, ldo,
                         out_preact, out16, out16_f16_exp);
  return causal_conv1d(ctx, x, ldx, w, bias, conv_state, batch, len, d, k, out, ldo, out_preact,
                       out16, out16_f16_exp);
}

/* The verification pass's conv over up to POS_CONV positions of one sequence: a thread per
 * (channel, position), a channel's positions in 8 adjacent lanes of one warp. Each output needs
 * only inputs (the rows, or the window before the call), so the positions run side by side
 * instead of one after the other in one thread (k_conv_seq: 6 blocks, 5.8 us a 384 x 24 layer);
 * each sum is k_conv_seq's in its order. Lane t == 0 of a channel holds the old window (saved to
 * state_save), lane t == len - 1 the last k - 1 inputs, the new window, stored after a
 * __syncwarp so that no lane of the channel still reads the old one. */
#define POS_CONV 8
__global__ void __launch_bounds__(256)
k_conv_pos(const float *__restrict__ x, int64_t ldx, const float *__restrict__ w,
           const float *__restrict__ bias, float *conv_state, float *__restrict__ state_save,
           int len, int64_t d, int k, float *__restrict__ out, int64_t ldo) {
  mb_pdl_trigger();
  const int t = threadIdx.x % POS_CONV;
  const int64_t c = (int64_t)blockIdx.x * (blockDim.x / POS_CONV) + threadIdx.x / POS_CONV;
  const bool on = c < d && t < len;
  float wc[CONV_KMAX], v[CONV_KMAX];
#pragma unroll
  for (int j = 0; j < CONV_KMAX; j++) wc[j] = (c < d && j < k) ? w[c * k + j] : 0.f;
  const float bc = (c < d && bias) ? bias[c] : 0.f;
  mb_pdl_wait();
  float *st = conv_state + (c < d ? c : 0) * (k - 1);
#pragma unroll
  for (int j = 0; j < CONV_KMAX; j++) {
    const int p = t - (k - 1) + j; /* the input position of tap j */
    v[j] = (on && j < k) ? (p >= 0 ? x[p * ldx + c] : st[(k - 1) + p]) : 0.f;
  }
  float acc = bc;
#pragma unroll
  for (int j = 0; j < CONV_KMAX; j++)
    if (j < k) acc += wc[j] * v[j];
  if (on) out[t * ldo + c] = mb_silu(acc);
  if (on && t == 0 && state_save) {
#pragma unroll
    for (int j = 0; j < CONV_KMAX - 1; j++)
      if (j < k - 1) state_save[c * (k - 1) + j] = v[j];
  }
  __syncwarp();
  if (on && t == len - 1) {
#pragma unroll
    for (int j = 0; j < CONV_KMAX - 1; j++)
      if (j < k - 1) st[j] = v[j + 1];
  }
}

/* The verification pass's conv (mb_verify_layers): one sequence's len positions from its window,
 * which is advanced in place, its values before the call written to state_save (k_conv_seq's
 * arithmetic: mb_causal_conv1d's bits for the same call). */
extern "C" int mbcuda_conv1d_save(mb_ctx *ctx, const float *x, int64_t ldx, const float *w,
                                  const float *bias, float *conv_state, float *state_save,
                                  int64_t len, int64_t d, int64_t k, float *out, int64_t ldo) {
  if (len <= 0 || d <= 0) return MB_OK;
  if (k > CONV_KMAX)
    return mb_fail(MB_ERR_UNSUPPORTED, "cuda: conv1d_save: d_conv %lld > %d", (long long)k,
                   CONV_KMAX);
  if (len <= POS_CONV && mbcuda_st(ctx)->conv_pos) {
    MBCUDA_LAUNCH("conv1d_save (positions)", k_conv_pos, dim3(mbcuda_blocks(d, 256 / POS_CONV)),
                  dim3(256), 0, x, ldx, w, bias, conv_state, state_save, (int)len, d, (int)k, out,
                  ldo);
    return MB_OK;
  }
  MBCUDA_LAUNCH("conv1d_save", k_conv_seq<float>, dim3(mbcuda_blocks(d, 128)), dim3(128), 0, x, ldx, w,
                bias, conv_state, state_save, (int64_t)1, len, d, (int)k, out, ldo, (float *)NULL,
                (uint16_t *)NULL);
  return MB_OK;
}
