/*
 * discrete_a.cu — the CUDA twins of csrc/cpu/discrete_a.c: discrete-A of a layer,
 * E[t, c, s] = exp(softplus(delta[t, c]) * A[c, s]), reduced as it is made (mb_discrete_a), and its
 * cosine similarity with the input (mb_discrete_a_input_sim). E lives only in registers and shared
 * memory unless MB_REDUCE_NONE asks for it. Sums accumulate in float64, as on the CPU, so the two
 * backends differ by expf's rounding (CUDA's expf: <= 2 ulp) and the order of the additions. The
 * sums (mean, norm, fro, the similarity; min / max keep expf) differ a little more: E by one ex2 of
 * a log2(e)-scaled A (DA_LOG2E's comment), and in the tile kernels (fro, dim 1, the similarity)
 * the first sums, over a thread's 16 states or a warp's 32 channels, in float32 before float64
 * takes over (each within 5 float32 roundings of the sum of its terms' magnitudes; cuda_vs_cpu
 * holds every result to the CPU's within 1e-5).
 *
 * Kernels (each op only enqueues on the context's stream; partials go to the context's scratch):
 *   NONE                one thread per element (coalesced stores of the (len, d, n) tensor).
 *   dim 2               one thread per (t, c): its n states in a loop.
 *   FRO, dim 1, sim     n == 16 (min / max over dim 1 aside): tiles of 256 (FRO) or 512 channels
 *                       x positions, a thread's rows of A in registers, each position's sums over
 *                       the thread's channels (dim 1, sim), the warp, the block's warps and the
 *                       channel tiles in a fixed order (k_da_fro_part,
 *                       k_da_dim1_part, k_da_sim_part and their merges). Otherwise one block per
 *                       position: threads over channels, float64 partials, then a block reduction
 *                       (min / max with index: ties to the lower index, NaN first, an order-free
 *                       rule, so the result does not depend on the reduction tree).
 *   dims 2 and -1       read A by states (k_da_by_states: a copy of A as (n, d) in scratch), so
 *                       that a warp's 32 channels take a state's values from one line.
 *   dim 0               threads over (c, s) x splits of the positions (partials in scratch), then
 *                       one thread per (c, s) merges the splits in order with the carried result.
 *   dim -1              one partial per block of (t, c) rows, then one block merges them in a
 *                       fixed order with the carried result (acc / out).
 *   NUC                 one block per position accumulates the (n, n) Gram matrix in float64
 *                       from tiles of E in shared memory into scratch; then one thread per
 *                       position runs the CPU's cyclic Jacobi (float64) on it in place.
 */
#include <math.h>
#include <stdint.h>

#include "cuda_internal.cuh"

#define DA_THREADS 256
#define DA_WARPS (DA_THREADS / 32)

__device__ __forceinline__ float da_softplus(float x) { return x > 20.f ? x : log1pf(expf(x)); }

/* Row t's value of channel c of rows p (0 past the rows or the channels), for the tile kernels.
 * `fro` and dim 1 ask for a position's delta before the position before it is done: loaded where
 * it was used, behind the softplus's branches, each position waited for its own load (H100, a
 * 2048-position 972M chunk: `fro` 75.0 against 78.8 us, dim 1's `norm` 65.1 against 69.9). The
 * input similarity loads at each position: its delta and x asked for early ran 108.2 against
 * 107.3. */
__device__ __forceinline__ float da_tile_load(const float *__restrict__ p, int64_t ld, int64_t c,
                                              int64_t d, int64_t t, int64_t len) {
  return c < d && t < len ? p[t * ld + c] : 0.f;
}

/* The sums' E = exp(sp A) as 2^(sp (log2(e) A)) on the MUFU unit alone (mb_fast_ex2), with
 * log2(e) A (or 2 log2(e) A for E^2) made once a channel: expf's range reduction took ~8
 * instructions an element, the kernels' bound with the float64 sums. Relative to expf(sp A): the
 * extra rounding of the scaled row and of the product, |sp A| 2^-23 or so, and ex2's ~2^-22. */
#define DA_LOG2E 1.4426950408889634f
#define DA_2LOG2E 2.8853900817779268f

/* v[0] + ... + v[N - 1] as a pairwise tree in float32 (N a power of two; the terms of a tile
 * kernel's thread, >= 0, so its error stays within log2(N) float32 roundings of the sum). */
template <int N>
__device__ __forceinline__ float da_pair_sum(float (&v)[N]) {
#pragma unroll
  for (int h = N / 2; h >= 1; h >>= 1)
#pragma unroll
    for (int j = 0; j < h; j++) v[j] += v[j + h];
  return v[0];
}

/* v[0..V) of each of the warp's 32 lanes summed over the lanes (V: 16 or 32): at each level (lane
 * offsets 16, 8, ...) a lane keeps half of its values (the lower half where its offset bit is 0)
 * and adds its partner's copy of that half, V - 1 shuffles in all where a tree for each value takes
 * 5 V. Lane l ends with the sum of value l (V = 32) or l / 2 (V = 16: one more level, so both lanes
 * of a pair hold it; a + b and b + a are the same bits) in v[0]. */
template <int H, int V>
__device__ __forceinline__ void da_transpose_level(float (&v)[V], int lane) {
  constexpr int O = 16 * 2 * H / V; /* this level's lane offset: 16 at the first */
  const bool up = lane & O;
#pragma unroll
  for (int j = 0; j < H; j++) {
    const float send = up ? v[j] : v[j + H];
    const float keep = up ? v[j + H] : v[j];
    v[j] = keep + __shfl_xor_sync(0xffffffffu, send, O);
  }
  if constexpr (H > 1) da_transpose_level<H / 2, V>(v, lane);
}

template <int V>
__device__ __forceinline__ void da_warp_transpose_sum(float (&v)[V]) {
  static_assert(V == 16 || V == 32, "16 or 32 values");
  const int lane = threadIdx.x & 31;
  da_transpose_level<V / 2, V>(v, lane); /* templated levels: v's indices stay constants */
  if constexpr (V == 16) v[0] += __shfl_xor_sync(0xffffffffu, v[0], 1);
}

/* Does x replace the running best b (torch's rule, as the CPU's better())? */
__device__ __forceinline__ bool da_better(bool is_max, float x, float b) {
  if (isnan(b)) return false;
  if (isnan(x)) return true;
  return is_max ? x > b : x < b;
}

/* Order-free merge of (v, i) with (v2, i2) for min / max with indices: a NaN beats a number, ties
 * go to the lower index; i < 0 marks "no value yet". */
__device__ __forceinline__ void da_merge(bool is_max, float &v, long long &i, float v2,
                                         long long i2) {
  if (i2 < 0) return;
  bool take;
  if (i < 0) {
    take = true;
  } else {
    const bool n1 = isnan(v), n2 = isnan(v2);
    if (n1 || n2)
      take = n2 && (!n1 || i2 < i);
    else if (v2 == v)
      take = i2 < i;
    else
      take = is_max ? v2 > v : v2 < v;
  }
  if (take) v = v2, i = i2;
}

__device__ __forceinline__ double warp_sum_d(double v) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}

/* Sum over the block of K values per thread; the result in v[] of thread 0 (and every thread of
 * warp 0). red: DA_WARPS * K doubles of shared memory. */
template <int K>
__device__ void block_sum_d(double (&v)[K], double *red) {
  const int lane = threadIdx.x & 31, wid = threadIdx.x >> 5;
#pragma unroll
  for (int k = 0; k < K; k++) v[k] = warp_sum_d(v[k]);
  __syncthreads();
  if (lane == 0)
#pragma unroll
    for (int k = 0; k < K; k++) red[wid * K + k] = v[k];
  __syncthreads();
  if (wid == 0)
#pragma unroll
    for (int k = 0; k < K; k++) {
      double x = lane < DA_WARPS ? red[lane * K + k] : 0.0;
      v[k] = warp_sum_d(x);
    }
}

/* ---- A by states -------------------------------------------------------------------------------
 * dims 2 and -1 take a thread a (position, channel), so a warp's 32 threads read state s of 32
 * channels at once: from A's rows (d, n) 32 values n floats apart, 32 lines a load. From A by
 * states, At = A as (n, d), made once a call (a 972M layer's A: 229 KB), they are one line: the
 * same values in the same order, so the same bits, and on an H100 a 2048-position 972M chunk's
 * `mean` over dim 2 took 122 us against 234, `max` 176 against 239, `mean` over dim -1 122 against
 * 253. dim 1 and the input similarity (a block a position, a thread 14 channels) ran slower from At
 * (`norm` 304 against 185 us, `min` 428 against 333, the similarity 350 against 328;
 * docs/cuda_notes.md) and keep A's rows. The sums (mean, norm) take At scaled by log2(e) (or
 * 2 log2(e) for the squares), so that E (E^2) is one ex2, as in the tile kernels; min / max take A
 * as it is (scale 1) and expf, whose rounding orders near ties as the CPU's does. */
__global__ void k_da_by_states(const float *__restrict__ A, int64_t d, int64_t n, float scale,
                               float *__restrict__ At) {
  MB_PDL_ENTRY(); /* At is the scratch an earlier op may still read */
  const int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
  if (i >= d * n) return;
  const int64_t s = i / d, c = i - s * d;
  At[i] = A[c * n + s] * scale;
}

/* ---- NONE: one thread per element ------------------------------------------------------------ */

__global__ void k_da_none(const float *__restrict__ delta, int64_t ld, const float *__restrict__ A,
                          int64_t len, int64_t d, int64_t n, float *__restrict__ out) {
  MB_PDL_ENTRY();
  const int64_t total = len * d * n;
  for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < total;
       i += (int64_t)gridDim.x * blockDim.x) {
    const int64_t row = i / n, s = i - row * n, t = row / d, c = row - t * d;
    out[i] = expf(da_softplus(delta[t * ld + c]) * A[c * n + s]);
  }
}

/* ---- dim 2: one thread per (t, c) ------------------------------------------------------------- */

__global__ void k_da_dim2(const float *__restrict__ delta, int64_t ld, const float *__restrict__ At,
                          int64_t len, int64_t d, int64_t n, int red, float *__restrict__ out,
                          int64_t *__restrict__ idx) {
  MB_PDL_ENTRY();
  const int64_t rows = len * d;
  const bool minmax = red == MB_REDUCE_MIN || red == MB_REDUCE_MAX, is_max = red == MB_REDUCE_MAX;
  for (int64_t r = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; r < rows;
       r += (int64_t)gridDim.x * blockDim.x) {
    const int64_t t = r / d, c = r - t * d;
    const float sp = da_softplus(delta[t * ld + c]);
    const float *a = At + c; /* state s at a[s * d] */
    if (minmax) {
      float b = expf(sp * a[0]);
      int64_t bi = 0;
      for (int s = 1; s < n; s++) {
        const float e = expf(sp * a[s * d]);
        if (da_better(is_max, e, b)) b = e, bi = s;
      }
      out[r] = b;
      if (idx) idx[r] = bi;
    } else {
      double acc = 0.0; /* At by log2(e), or 2 log2(e) for the norm: E or E^2 by one ex2 */
      for (int s = 0; s < n; s++) acc += (double)mb_fast_ex2(sp * a[s * d]);
      out[r] = (float)(red == MB_REDUCE_NORM ? sqrt(acc) : acc / (double)n);
    }
  }
}

/* ---- FRO: one block per position -------------------------------------------------------------- */

__global__ void __launch_bounds__(DA_THREADS)
    k_da_fro(const float *__restrict__ delta, int64_t ld, const float *__restrict__ A, int64_t d,
             int64_t n, float *__restrict__ out) {
  MB_PDL_ENTRY();
  __shared__ double red[DA_WARPS];
  const int64_t t = blockIdx.x;
  double acc[1] = {0.0};
  for (int64_t c = threadIdx.x; c < d; c += DA_THREADS) {
    const float sp = da_softplus(delta[t * ld + c]);
    const float *a = A + c * n;
    for (int64_t s = 0; s < n; s++) {
      const double e = expf(sp * a[s]);
      acc[0] += e * e;
    }
  }
  block_sum_d<1>(acc, red);
  if (threadIdx.x == 0) out[t] = (float)sqrt(acc[0]);
}

/* ---- FRO for n <= 16: tiles of channels x positions -------------------------------------------
 * k_da_fro reads a thread's A row once a position, 16 scalar loads whose addresses lie n floats
 * apart across the warp (32 lines a load): 238 us a 2048-position 972M chunk on an H100, against
 * 99 us here (tools/device/da_ab.sh). Here block (x, y) takes channels [256 x, 256 x + 256) over
 * positions [32 y, 32 y + 32): a thread loads its channel's A row into registers once, then each
 * position's squares (by ex2) sum over the thread's states as a float32 tree, then 16 positions'
 * sums at once over the warp in float32 (da_warp_transpose_sum: a float64 tree a position took
 * 10 shuffles a lane, its float64 adds and a conversion), then in float64 over the block's warps
 * in warp order into psum[t][x]; k_da_fro_merge sums each position's channel tiles in order. NS:
 * n when it is 16 (the states' loop without guards), else 0. */
#define DA_FRO_T 32    /* positions a block */
#define DA_FRO_NMAX 16 /* states a thread keeps in registers */

template <int NS>
__global__ void __launch_bounds__(DA_THREADS)
    k_da_fro_part(const float *__restrict__ delta, int64_t ld, const float *__restrict__ A,
                  int64_t len, int64_t d, int n, int tiles, double *__restrict__ psum) {
  if (NS) n = NS;
  MB_PDL_ENTRY();
  __shared__ double red[DA_WARPS][DA_FRO_T];
  const int lane = threadIdx.x & 31, wid = threadIdx.x >> 5;
  const int64_t c = (int64_t)blockIdx.x * DA_THREADS + threadIdx.x;
  const int64_t t0 = (int64_t)blockIdx.y * DA_FRO_T;
  float a[DA_FRO_NMAX]; /* 2 log2(e) A: E^2 = 2^(sp a[s]) */
#pragma unroll
  for (int s = 0; s < DA_FRO_NMAX; s++) a[s] = c < d && s < n ? A[c * n + s] * DA_2LOG2E : 0.f;
  for (int g = 0; g < DA_FRO_T; g += 16) { /* 16 positions' sums over the warp at once */
    float dv[16]; /* the 16 positions' deltas asked for together (da_tile_load) */
#pragma unroll
    for (int k = 0; k < 16; k++) dv[k] = da_tile_load(delta, ld, c, d, t0 + g + k, len);
    float v[16];
#pragma unroll
    for (int k = 0; k < 16; k++) {
      float e2[DA_FRO_NMAX];
      const bool on = c < d && t0 + g + k < len;
      const float sp = on ? da_softplus(dv[k]) : 0.f;
#pragma unroll
      for (int s = 0; s < DA_FRO_NMAX; s++) e2[s] = on && s < n ? mb_fast_ex2(sp * a[s]) : 0.f;
      v[k] = da_pair_sum<DA_FRO_NMAX>(e2);
    }
    da_warp_transpose_sum<16>(v);
    if (!(lane & 1)) red[wid][g + (lane >> 1)] = v[0];
  }
  __syncthreads();
  if (threadIdx.x < DA_FRO_T && t0 + threadIdx.x < len) {
    double v = red[0][threadIdx.x];
#pragma unroll
    for (int w = 1; w < DA_WARPS; w++) v += red[w][threadIdx.x];
    psum[(t0 + threadIdx.x) * tiles + blockIdx.x] = v;
  }
}

__global__ void k_da_fro_merge(int64_t len, int tiles, const double *__restrict__ psum,
                               float *__restrict__ out) {
  MB_PDL_ENTRY();
  const int64_t t = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
  if (t >= len) return;
  double v = 0.0;
  for (int x = 0; x < tiles; x++) v += psum[t * tiles + x];
  out[t] = (float)sqrt(v);
}

/* A's rows of a warp's 32 channels c0 .. c0 + 31 when n is 16 and A 16-byte aligned: four coalesced
 * 16-byte loads a lane through shared memory (rows 5 float4 apart: the reads hit each bank once a
 * quarter-warp), where a thread's own 16 scalar loads lie 64 bytes apart across the warp (32 lines a
 * load, once a channel and position). Rows past d read as zeros; every lane of the warp calls it.
 * stage: 32 x 5 float4 of the warp's own. The lane's row comes back in r (the same values). */
#define DA_STAGE_F4 (32 * 5)
__device__ __forceinline__ void da_rows16(const float *__restrict__ A, int64_t c0, int64_t d,
                                          float4 *stage, float (&r)[16]) {
  const int lane = threadIdx.x & 31;
  __syncwarp();
#pragma unroll
  for (int j = 0; j < 4; j++) {
    const int q = lane + 32 * j, row = q >> 2, col = q & 3;
    stage[row * 5 + col] = c0 + row < d ? __ldg((const float4 *)(A + (c0 + row) * 16) + col)
                                        : make_float4(0.f, 0.f, 0.f, 0.f);
  }
  __syncwarp();
#pragma unroll
  for (int j = 0; j < 4; j++) {
    const float4 v = stage[lane * 5 + j];
    r[4 * j] = v.x, r[4 * j + 1] = v.y, r[4 * j + 2] = v.z, r[4 * j + 3] = v.w;
  }
}

/* Runs body(c, a) for each of the thread's channels c = threadIdx.x + k DA_THREADS < d in order, a
 * indexing c's row of A from s0: with R16 (n == 16, A aligned) the row staged by da_rows16, else A
 * itself. */
template <bool R16, typename Body>
__device__ __forceinline__ void da_channels(const float *__restrict__ A, int64_t d, int64_t n,
                                            int64_t s0, float4 *stage, Body body) {
  if (R16) {
    const int lane = threadIdx.x & 31;
    for (int64_t c0 = threadIdx.x - lane; c0 < d; c0 += DA_THREADS) {
      float r[16];
      da_rows16(A, c0, d, stage, r);
      if (c0 + lane < d) body(c0 + lane, r);
    }
  } else {
    for (int64_t c = threadIdx.x; c < d; c += DA_THREADS) body(c, A + c * n + s0);
  }
}

/* ---- dim 1: one block per position, 16 states at a time ---------------------------------------- */

template <bool R16>
__global__ void __launch_bounds__(DA_THREADS)
    k_da_dim1(const float *__restrict__ delta, int64_t ld, const float *__restrict__ A, int64_t d,
              int64_t n, int red, float *__restrict__ out, int64_t *__restrict__ idx) {
  MB_PDL_ENTRY();
  __shared__ float4 stage[R16 ? DA_WARPS * DA_STAGE_F4 : 1];
  __shared__ double sred[DA_WARPS * 16];
  __shared__ float sval[DA_WARPS * 16];
  __shared__ long long sidx[DA_WARPS * 16];
  const int64_t t = blockIdx.x;
  const bool minmax = red == MB_REDUCE_MIN || red == MB_REDUCE_MAX, is_max = red == MB_REDUCE_MAX;
  const bool sq = red == MB_REDUCE_NORM;
  const int lane = threadIdx.x & 31, wid = threadIdx.x >> 5;
  for (int64_t s0 = 0; s0 < n; s0 += 16) {
    const int cnt = (int)(n - s0 < 16 ? n - s0 : 16);
    double acc[16];
    float bv[16];
    long long bi[16];
#pragma unroll
    for (int k = 0; k < 16; k++) acc[k] = 0.0, bv[k] = 0.f, bi[k] = -1;
    da_channels<R16>(A, d, n, s0, stage + (R16 ? wid * DA_STAGE_F4 : 0), [&](int64_t c, auto &&a) {
      const float sp = da_softplus(delta[t * ld + c]);
#pragma unroll
      for (int k = 0; k < 16; k++) {
        if (k >= cnt) break;
        const float e = expf(sp * a[k]);
        if (minmax) {
          if (bi[k] < 0 || da_better(is_max, e, bv[k])) bv[k] = e, bi[k] = c;
        } else {
          acc[k] += sq ? (double)e * e : (double)e;
        }
      }
    });
    if (minmax) {
      /* warp: shuffle-merge, then the warps' results through shared memory */
#pragma unroll
      for (int k = 0; k < 16; k++)
        for (int o = 16; o > 0; o >>= 1) {
          const float v2 = __shfl_xor_sync(0xffffffffu, bv[k], o);
          const long long i2 = __shfl_xor_sync(0xffffffffu, bi[k], o);
          da_merge(is_max, bv[k], bi[k], v2, i2);
        }
      if (lane == 0)
#pragma unroll
        for (int k = 0; k < 16; k++) sval[wid * 16 + k] = bv[k], sidx[wid * 16 + k] = bi[k];
      __syncthreads();
      if (threadIdx.x < cnt) {
        float v = sval[threadIdx.x];
        long long i = sidx[threadIdx.x];
        for (int w = 1; w < DA_WARPS; w++)
          da_merge(is_max, v, i, sval[w * 16 + threadIdx.x], sidx[w * 16 + threadIdx.x]);
        out[t * n + s0 + threadIdx.x] = v;
        if (idx) idx[t * n + s0 + threadIdx.x] = i;
      }
      __syncthreads();
    } else {
      block_sum_d<16>(acc, sred);
      if (threadIdx.x == 0)
#pragma unroll
        for (int k = 0; k < 16; k++) /* constant indices: acc stays in registers */
          if (k < cnt) out[t * n + s0 + k] = (float)(sq ? sqrt(acc[k]) : acc[k] / (double)d);
      __syncthreads();
    }
  }
}

/* ---- dim 0: (c, s) x splits of the positions, then a merge ------------------------------------- */

__global__ void k_da_dim0_part(const float *__restrict__ delta, int64_t ld,
                               const float *__restrict__ A, int64_t len, int64_t d, int64_t n,
                               int red, int64_t pos0, int splits, double *__restrict__ psum,
                               float *__restrict__ pval, long long *__restrict__ pidx) {
  MB_PDL_ENTRY();
  const int64_t dn = d * n;
  const int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x;
  if (i >= dn) return;
  const int k = blockIdx.y;
  const int64_t t0 = len * k / splits, t1 = len * (k + 1) / splits;
  const int64_t c = i / n;
  const float a = A[i];
  const bool minmax = red == MB_REDUCE_MIN || red == MB_REDUCE_MAX, is_max = red == MB_REDUCE_MAX;
  const bool sq = red == MB_REDUCE_NORM;
  double acc = 0.0;
  float b = 0.f;
  long long bi = -1;
  for (int64_t t = t0; t < t1; t++) {
    const float e = expf(da_softplus(delta[t * ld + c]) * a);
    if (minmax) {
      if (bi < 0 || da_better(is_max, e, b)) b = e, bi = pos0 + t;
    } else {
      acc += sq ? (double)e * e : (double)e;
    }
  }
  if (minmax) {
    pval[k * dn + i] = b;
    pidx[k * dn + i] = bi;
  } else {
    psum[k * dn + i] = acc;
  }
}

__global__ void k_da_dim0_merge(int64_t len, int64_t dn, int red, int64_t pos0, int splits,
                                const double *__restrict__ psum, const float *__restrict__ pval,
                                const long long *__restrict__ pidx, double *acc, float *out,
                                int64_t *idx) {
  MB_PDL_ENTRY();
  const int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x;
  if (i >= dn) return;
  const bool minmax = red == MB_REDUCE_MIN || red == MB_REDUCE_MAX, is_max = red == MB_REDUCE_MAX;
  if (minmax) {
    float b = pos0 > 0 ? out[i] : 0.f;
    long long bi = pos0 > 0 ? (idx ? (long long)idx[i] : 0) : -1;
    /* splits in order: later positions replace only when strictly better (NaN rule) */
    for (int k = 0; k < splits; k++) {
      const float v = pval[k * dn + i];
      if (bi < 0 || da_better(is_max, v, b)) b = v, bi = pidx[k * dn + i];
    }
    out[i] = b;
    if (idx) idx[i] = bi;
  } else {
    double s = pos0 > 0 ? acc[i] : 0.0;
    for (int k = 0; k < splits; k++) s += psum[k * dn + i];
    acc[i] = s;
    out[i] = (float)(red == MB_REDUCE_NORM ? sqrt(s) : s / (double)(pos0 + len));
  }
}

/* ---- dim -1: block partials over (t, c) rows, then one block merges ---------------------------- */

__global__ void __launch_bounds__(DA_THREADS)
    k_da_all_part(const float *__restrict__ delta, int64_t ld, const float *__restrict__ At,
                  int64_t len, int64_t d, int64_t n, int red, double *__restrict__ psum,
                  float *__restrict__ pval, int *__restrict__ phas) {
  MB_PDL_ENTRY();
  __shared__ double sred[DA_WARPS];
  __shared__ float sv[DA_WARPS];
  __shared__ int sh[DA_WARPS];
  const bool minmax = red == MB_REDUCE_MIN || red == MB_REDUCE_MAX, is_max = red == MB_REDUCE_MAX;
  const int64_t r = blockIdx.x * (int64_t)DA_THREADS + threadIdx.x;
  double acc[1] = {0.0};
  float b = 0.f;
  long long has = -1; /* da_merge's "no value" marker; the index itself is not used */
  if (r < len * d) {
    const int64_t t = r / d, c = r - t * d;
    const float sp = da_softplus(delta[t * ld + c]);
    for (int64_t s = 0; s < n; s++) {
      if (minmax) {
        const float e = expf(sp * At[s * d + c]);
        if (has < 0 || da_better(is_max, e, b)) b = e, has = 0;
      } else { /* At by log2(e), or 2 log2(e) for the norm: E or E^2 by one ex2 */
        acc[0] += (double)mb_fast_ex2(sp * At[s * d + c]);
      }
    }
  }
  if (minmax) {
    const int lane = threadIdx.x & 31, wid = threadIdx.x >> 5;
    for (int o = 16; o > 0; o >>= 1) {
      const float v2 = __shfl_xor_sync(0xffffffffu, b, o);
      const long long h2 = __shfl_xor_sync(0xffffffffu, has, o);
      da_merge(is_max, b, has, v2, h2);
    }
    if (lane == 0) sv[wid] = b, sh[wid] = has >= 0;
    __syncthreads();
    if (threadIdx.x == 0) {
      float v = 0.f;
      long long h = -1;
      for (int w = 0; w < DA_WARPS; w++) da_merge(is_max, v, h, sv[w], sh[w] ? 0 : -1);
      pval[blockIdx.x] = v;
      phas[blockIdx.x] = h >= 0;
    }
  } else {
    block_sum_d<1>(acc, sred);
    if (threadIdx.x == 0) psum[blockIdx.x] = acc[0];
  }
}

#define DA_MERGE_THREADS 1024

__global__ void __launch_bounds__(DA_MERGE_THREADS)
    k_da_all_merge(int64_t blocks, int64_t count, int red, int64_t pos0,
                   const double *__restrict__ psum, const float *__restrict__ pval,
                   const int *__restrict__ phas, double *acc, float *out) {
  MB_PDL_ENTRY();
  __shared__ double sd[DA_MERGE_THREADS];
  __shared__ float sv[DA_MERGE_THREADS];
  __shared__ int sh[DA_MERGE_THREADS];
  const bool minmax = red == MB_REDUCE_MIN || red == MB_REDUCE_MAX, is_max = red == MB_REDUCE_MAX;
  double s = 0.0;
  float b = 0.f;
  int has = 0;
  for (int64_t k = threadIdx.x; k < blocks; k += DA_MERGE_THREADS) {
    if (minmax) {
      if (phas[k] && (!has || da_better(is_max, pval[k], b))) b = pval[k], has = 1;
    } else {
      s += psum[k];
    }
  }
  sd[threadIdx.x] = s, sv[threadIdx.x] = b, sh[threadIdx.x] = has;
  __syncthreads();
  for (int w = DA_MERGE_THREADS / 2; w > 0; w >>= 1) { /* a fixed tree: deterministic */
    if (threadIdx.x < w) {
      const int o = threadIdx.x + w;
      if (minmax) {
        if (sh[o] && (!sh[threadIdx.x] || da_better(is_max, sv[o], sv[threadIdx.x])))
          sv[threadIdx.x] = sv[o], sh[threadIdx.x] = 1;
      } else {
        sd[threadIdx.x] += sd[o];
      }
    }
    __syncthreads();
  }
  if (threadIdx.x == 0) {
    if (minmax) {
      float v = sv[0];
      if (pos0 > 0 && !da_better(is_max, v, out[0])) v = out[0];
      out[0] = v;
    } else {
      const double tot = (pos0 > 0 ? acc[0] : 0.0) + sd[0];
      acc[0] = tot;
      out[0] = (float)(red == MB_REDUCE_NORM ? sqrt(tot) : tot / (double)count);
    }
  }
}

/* ---- NUC: Gram matrices, then Jacobi ----------------------------------------------------------- */

/* Elements of E per shared-memory tile (16 KiB). */
#define DA_TILE 4096

__global__ void __launch_bounds__(DA_THREADS)
    k_da_gram(const float *__restrict__ delta, int64_t ld, const float *__restrict__ A, int64_t d,
              int64_t n, double *__restrict__ gram) {
  MB_PDL_ENTRY();
  __shared__ float tile[DA_TILE];
  __shared__ float sps[DA_TILE];
  const int64_t t = blockIdx.x;
  const int64_t tc = DA_TILE / n > 0 ? DA_TILE / n : 1; /* channels per tile (n <= DA_TILE) */
  const int64_t nn = n * n;
  double *g = gram + t * nn;
  for (int64_t p0 = 0; p0 < nn; p0 += DA_THREADS) { /* up to 256 (i, j) pairs per pass */
    const int64_t p = p0 + threadIdx.x;
    const int64_t i = p / n, j = p - i * n;
    double acc = 0.0;
    for (int64_t c0 = 0; c0 < d; c0 += tc) {
      const int64_t cc = d - c0 < tc ? d - c0 : tc;
      __syncthreads();
      for (int64_t k = threadIdx.x; k < cc; k += DA_THREADS)
        sps[k] = da_softplus(delta[t * ld + c0 + k]);
      __syncthreads();
      for (int64_t k = threadIdx.x; k < cc * n; k += DA_THREADS)
        tile[k] = expf(sps[k / n] * A[c0 * n + k]);
      __syncthreads();
      if (p < nn && j >= i)
        for (int64_t k = 0; k < cc; k++) acc += (double)tile[k * n + i] * (double)tile[k * n + j];
    }
    if (p < nn && j >= i) g[i * n + j] = g[j * n + i] = acc;
  }
}

/* The CPU's nuclear_from_gram (csrc/cpu/discrete_a.c), on a matrix in global memory. */
__device__ double da_nuclear_from_gram(double *a, int64_t n) {
  double tr = 0.0;
  for (int64_t i = 0; i < n; i++) tr += a[i * n + i];
  if (!isfinite(tr)) return tr;
  if (tr <= 0.0) return 0.0;
  const double tiny = 1e-17 * tr;
  for (int sweep = 0; sweep < 100; sweep++) {
    bool rotated = false;
    for (int64_t p = 0; p < n - 1; p++)
      for (int64_t q = p + 1; q < n; q++) {
        const double apq = a[p * n + q];
        if (fabs(apq) <= tiny) continue;
        rotated = true;
        const double app = a[p * n + p], aqq = a[q * n + q];
        const double theta = (aqq - app) / (2.0 * apq);
        const double tt = fabs(theta) > 1e150
                              ? 0.5 / theta
                              : (theta >= 0 ? 1.0 : -1.0) / (fabs(theta) + sqrt(theta * theta + 1.0));
        const double c = 1.0 / sqrt(tt * tt + 1.0), s = tt * c;
        for (int64_t k = 0; k < n; k++) {
          if (k == p || k == q) continue;
          const double akp = a[k * n + p], akq = a[k * n + q];
          const double np = c * akp - s * akq, nq = s * akp + c * akq;
          a[k * n + p] = np;
          a[p * n + k] = np;
          a[k * n + q] = nq;
          a[q * n + k] = nq;
        }
        a[p * n + p] = app - tt * apq;
        a[q * n + q] = aqq + tt * apq;
        a[p * n + q] = 0.0;
        a[q * n + p] = 0.0;
      }
    if (!rotated) break;
  }
  double s = 0.0;
  for (int64_t i = 0; i < n; i++) s += sqrt(fmax(a[i * n + i], 0.0));
  return s;
}

__global__ void k_da_jacobi(int64_t len, int64_t n, double *__restrict__ gram,
                            float *__restrict__ out) {
  MB_PDL_ENTRY();
  const int64_t t = blockIdx.x * (int64_t)blockDim.x + threadIdx.x;
  if (t < len) out[t] = (float)da_nuclear_from_gram(gram + t * n * n, n);
}

/* ---- input similarity: one block per position, 16 states at a time -----------------------------
 * (A's rows staged as dim 1 stages them lost here: 136 registers, one block an SM, 417 against 330
 * us a 2048-position 972M chunk on an H100; so did A by states, 350 against 328.) */

__global__ void __launch_bounds__(DA_THREADS)
    k_da_sim(const float *__restrict__ delta, int64_t ld, const float *__restrict__ A,
             const float *__restrict__ x, int64_t ldx, int64_t d, int64_t n, float eps,
             float *__restrict__ out) {
  MB_PDL_ENTRY();
  __shared__ double sred[DA_WARPS * 33];
  const int64_t t = blockIdx.x;
  for (int64_t s0 = 0; s0 < n; s0 += 16) {
    const int cnt = (int)(n - s0 < 16 ? n - s0 : 16);
    double v[33]; /* dot[16], squares[16], x^2 */
#pragma unroll
    for (int k = 0; k < 33; k++) v[k] = 0.0;
    for (int64_t c = threadIdx.x; c < d; c += DA_THREADS) {
      const float sp = da_softplus(delta[t * ld + c]);
      const double xv = x[t * ldx + c];
      const float *a = A + c * n + s0;
      v[32] += xv * xv;
#pragma unroll
      for (int k = 0; k < 16; k++) {
        if (k >= cnt) break;
        const double e = expf(sp * a[k]);
        v[k] += e * xv;
        v[16 + k] += e * e;
      }
    }
    block_sum_d<33>(v, sred);
    if (threadIdx.x == 0) {
      double nx = sqrt(v[32]);
      nx = nx < (double)eps ? (double)eps : nx; /* torch's clamp; a NaN stays NaN */
#pragma unroll
      for (int k = 0; k < 16; k++) { /* constant indices: v stays in registers */
        if (k >= cnt) break;
        double ne = sqrt(v[16 + k]);
        ne = ne < (double)eps ? (double)eps : ne;
        out[t * n + s0 + k] = (float)(v[k] / (ne * nx));
      }
    }
    __syncthreads();
  }
}

/* ---- dim 1 (mean, norm) and the input similarity for n == 16: tiles of channels x positions ------
 * As the fro tiles: block (x, y) takes channels [512 x, 512 x + 512) over DA_TP positions, each
 * thread its DA_TILE_CPT channels' A rows in registers for them all, where k_da_dim1 and k_da_sim
 * (a block a position) read every row again at each position from L2. Each position's per-state
 * sums (dim 1: 16; the similarity: 16 dots with x, 16 squares, and x's square) are summed over
 * the thread's channels in order, then over the warp by
 * da_warp_transpose_sum, over the block's warps in order into psum[t][x][.], and over the channel
 * tiles in order by the merge kernels. The warp's sums are float32 (its 32 channels' terms, by
 * ex2; half the shuffles of float64 and no conversion a term), the block's and the tiles' float64.
 * H100, a 2048-position 972M chunk with float64 warp sums and expf: `norm` over dim 1 121 against
 * 185 us a block a position, the similarity 203 against 328 (tools/device/da_ab.sh). */
#define DA_TP 16 /* positions a tile block */
/* Channels a thread in the dim-1 and similarity tiles (c, c + 256, ...): its terms summed in the
 * thread before the warp's transposing sum, whose shuffles and selects (~4 instructions a term for
 * one channel a thread, ~8 for the similarity's 32 sums) then serve twice the terms. */
#define DA_TILE_CPT 2
#define DA_TILE_CH (DA_THREADS * DA_TILE_CPT) /* channels a dim-1 or similarity tile block */

/* A tile block's thread: its channel's row of A times scale (zeros past d). */
__device__ __forceinline__ void da_tile_row(const float *__restrict__ A, int64_t c, int64_t d,
                                            float scale, float (&a)[16]) {
#pragma unroll
  for (int s = 0; s < 16; s++) a[s] = c < d ? A[c * 16 + s] * scale : 0.f;
}

/* A tile block's W sums a position, each summed over the block's warps in order into
 * psum[t][blockIdx.x][.] (tiles channel tiles a position). */
template <int W>
__device__ __forceinline__ void da_tile_store(const double (&red)[DA_WARPS][DA_TP][W], int64_t t0,
                                              int64_t len, int tiles, double *__restrict__ psum) {
  __syncthreads();
  for (int i = threadIdx.x; i < DA_TP * W; i += DA_THREADS) {
    const int k = W == 16 ? i >> 4 : i / W, j = W == 16 ? i & 15 : i - k * W; /* i >= 0 */
    if (t0 + k >= len) continue;
    double v = red[0][k][j];
#pragma unroll
    for (int w = 1; w < DA_WARPS; w++) v += red[w][k][j];
    psum[((t0 + k) * tiles + blockIdx.x) * W + j] = v;
  }
}

__global__ void __launch_bounds__(DA_THREADS)
    k_da_dim1_part(const float *__restrict__ delta, int64_t ld, const float *__restrict__ A,
                   int64_t len, int64_t d, bool sq, int tiles, double *__restrict__ psum) {
  MB_PDL_ENTRY();
  __shared__ double red[DA_WARPS][DA_TP][16];
  const int lane = threadIdx.x & 31, wid = threadIdx.x >> 5;
  const int64_t c0 = (int64_t)blockIdx.x * DA_TILE_CH + threadIdx.x; /* + j DA_THREADS */
  const int64_t t0 = (int64_t)blockIdx.y * DA_TP;
  float a[DA_TILE_CPT][16]; /* log2(e) A, or 2 log2(e) A for the squares: E = 2^(sp a[s]) */
  float next[DA_TILE_CPT];  /* each channel's delta a position ahead (da_tile_load) */
#pragma unroll
  for (int j = 0; j < DA_TILE_CPT; j++) {
    da_tile_row(A, c0 + j * DA_THREADS, d, sq ? DA_2LOG2E : DA_LOG2E, a[j]);
    next[j] = da_tile_load(delta, ld, c0 + j * DA_THREADS, d, t0, len);
  }
  for (int k = 0; k < DA_TP; k++) {
    const int64_t t = t0 + k;
    float v[16];
#pragma unroll
    for (int j = 0; j < DA_TILE_CPT; j++) { /* the thread's channels summed in order */
      const int64_t c = c0 + j * DA_THREADS;
      const float dv = next[j];
      if (k + 1 < DA_TP) next[j] = da_tile_load(delta, ld, c, d, t + 1, len);
      const bool on = c < d && t < len;
      const float sp = on ? da_softplus(dv) : 0.f;
#pragma unroll
      for (int s = 0; s < 16; s++) {
        const float e = on ? mb_fast_ex2(sp * a[j][s]) : 0.f;
        v[s] = j == 0 ? e : v[s] + e;
      }
    }
    da_warp_transpose_sum<16>(v);
    if (!(lane & 1)) red[wid][k][lane >> 1] = v[0];
  }
  da_tile_store<16>(red, t0, len, tiles, psum);
}

__global__ void k_da_dim1_merge(int64_t len, int64_t d, bool sq, int tiles,
                                const double *__restrict__ psum, float *__restrict__ out) {
  MB_PDL_ENTRY();
  const int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; /* (t, s) */
  if (i >= len * 16) return;
  const int64_t t = i >> 4, s = i & 15;
  double v = 0.0;
  for (int x = 0; x < tiles; x++) v += psum[(t * tiles + x) * 16 + s];
  out[i] = (float)(sq ? sqrt(v) : v / (double)d);
}

/* psum[t][x][0..31]: the dots with x of states 0..15, then the squares; [32]: x's square */
#define DA_SIM_W 33

__global__ void __launch_bounds__(DA_THREADS)
    k_da_sim_part(const float *__restrict__ delta, int64_t ld, const float *__restrict__ A,
                  const float *__restrict__ x, int64_t ldx, int64_t len, int64_t d, int tiles,
                  double *__restrict__ psum) {
  MB_PDL_ENTRY();
  __shared__ double red[DA_WARPS][DA_TP][DA_SIM_W];
  const int lane = threadIdx.x & 31, wid = threadIdx.x >> 5;
  const int64_t c0 = (int64_t)blockIdx.x * DA_TILE_CH + threadIdx.x; /* + j DA_THREADS */
  const int64_t t0 = (int64_t)blockIdx.y * DA_TP;
  float a[DA_TILE_CPT][16]; /* log2(e) A: E = 2^(sp a[s]) */
#pragma unroll
  for (int j = 0; j < DA_TILE_CPT; j++) da_tile_row(A, c0 + j * DA_THREADS, d, DA_LOG2E, a[j]);
  for (int k = 0; k < DA_TP; k++) {
    const int64_t t = t0 + k;
    float v[32];
    double xx = 0.0;
#pragma unroll
    for (int j = 0; j < DA_TILE_CPT; j++) { /* the thread's channels summed in order */
      const int64_t c = c0 + j * DA_THREADS;
      const bool on = c < d && t < len;
      const float sp = on ? da_softplus(da_tile_load(delta, ld, c, d, t, len)) : 0.f;
      const float xv = da_tile_load(x, ldx, c, d, t, len);
#pragma unroll
      for (int s = 0; s < 16; s++) {
        const float e = on ? mb_fast_ex2(sp * a[j][s]) : 0.f;
        v[s] = j == 0 ? e * xv : v[s] + e * xv;
        v[16 + s] = j == 0 ? e * e : v[16 + s] + e * e;
      }
      xx += (double)xv * xv;
    }
    xx = warp_sum_d(xx);
    da_warp_transpose_sum<32>(v);
    red[wid][k][lane] = v[0];
    if (lane == 0) red[wid][k][32] = xx;
  }
  da_tile_store<DA_SIM_W>(red, t0, len, tiles, psum);
}

__global__ void k_da_sim_merge(int64_t len, float eps, int tiles, const double *__restrict__ psum,
                               float *__restrict__ out) {
  MB_PDL_ENTRY();
  const int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; /* (t, s) */
  if (i >= len * 16) return;
  const int64_t t = i >> 4, s = i & 15;
  double dot = 0.0, ee = 0.0, xx = 0.0;
  for (int x = 0; x < tiles; x++) {
    const double *p = psum + (t * tiles + x) * DA_SIM_W;
    dot += p[s], ee += p[16 + s], xx += p[32];
  }
  double nx = sqrt(xx), ne = sqrt(ee);
  nx = nx < (double)eps ? (double)eps : nx; /* torch's clamp; a NaN stays NaN */
  ne = ne < (double)eps ? (double)eps : ne;
  out[i] = (float)(dot / (ne * nx));
}

/* ---- entry points ------------------------------------------------------------------------------- */

/* A by states in the context's scratch (*at), made on the stream before the kernels that read it,
 * after `before` bytes of the op's own (*own: the scratch's start; may be NULL if before is 0). */
static int da_by_states(mb_ctx *ctx, const float *A, int64_t d, int64_t n, float scale,
                        size_t before, const char *op, const float **at, void **own) {
  before = (before + 255) & ~(size_t)255;
  void *g;
  int st = mbcuda_scratch(ctx, before + (size_t)(d * n) * sizeof(float), op, &g);
  if (st != MB_OK) return st;
  float *t = (float *)((char *)g + before);
  MBCUDA_LAUNCH(op, k_da_by_states, dim3(mbcuda_blocks(d * n, DA_THREADS)), dim3(DA_THREADS), 0,
                A, d, n, scale, t);
  *at = t;
  if (own) *own = g;
  return MB_OK;
}

/* A by states' scale for a reduction (k_da_by_states) */
static float da_sum_scale(int reduction) {
  return reduction == MB_REDUCE_NORM ? DA_2LOG2E : reduction == MB_REDUCE_MEAN ? DA_LOG2E : 1.f;
}

/* da_rows16's case: rows of 16 states from a 16-byte aligned A */
static bool da_rows16_ok(const float *A, int64_t n) {
  return n == 16 && ((uintptr_t)A & 15) == 0;
}

static unsigned int da_grid(int64_t work, int threads) {
  unsigned int b = mbcuda_blocks(work, threads);
  return b > 65535u * 16 ? 65535u * 16 : b;
}

extern "C" int mbcuda_discrete_a(mb_ctx *ctx, const float *delta, int64_t ld_delta,
                                 const float *A, int64_t len, int64_t d, int64_t n, int reduction,
                                 int dim, int64_t pos0, double *acc, float *out,
                                 int64_t *out_idx) {
  if (len <= 0) return MB_OK;
  if (len > 0x7fffffff) return mb_fail(MB_ERR_INVALID, "cuda: discrete_a: len too large");
  const int per_dim = reduction >= MB_REDUCE_MEAN && reduction <= MB_REDUCE_NORM;
  const int minmax = reduction == MB_REDUCE_MIN || reduction == MB_REDUCE_MAX;
  int64_t *idx = minmax && per_dim && dim >= 0 ? out_idx : NULL;
  const dim3 blk(DA_THREADS);
  if (reduction == MB_REDUCE_NONE) {
    MBCUDA_LAUNCH("discrete_a", k_da_none, dim3(da_grid(len * d * n, DA_THREADS)), blk, 0,
                  delta, ld_delta, A, len, d, n, out);
    return MB_OK;
  }
  if (reduction == MB_REDUCE_FRO && n <= DA_FRO_NMAX && (len + DA_FRO_T - 1) / DA_FRO_T <= 65535) {
    const int tiles = (int)((d + DA_THREADS - 1) / DA_THREADS);
    void *g;
    int st = mbcuda_scratch(ctx, (size_t)(len * tiles) * sizeof(double), "discrete_a", &g);
    if (st != MB_OK) return st;
    const dim3 grid((unsigned)tiles, (unsigned)((len + DA_FRO_T - 1) / DA_FRO_T));
    if (n == DA_FRO_NMAX)
      MBCUDA_LAUNCH("discrete_a", k_da_fro_part<DA_FRO_NMAX>, grid, blk, 0, delta, ld_delta, A,
                    len, d, (int)n, tiles, (double *)g);
    else
      MBCUDA_LAUNCH("discrete_a", k_da_fro_part<0>, grid, blk, 0, delta, ld_delta, A, len, d,
                    (int)n, tiles, (double *)g);
    MBCUDA_LAUNCH("discrete_a", k_da_fro_merge, dim3(mbcuda_blocks(len, DA_THREADS)), blk, 0, len,
                  tiles, (const double *)g, out);
    return MB_OK;
  }
  if (reduction == MB_REDUCE_FRO) { /* n > 16 */
    MBCUDA_LAUNCH("discrete_a", k_da_fro, dim3((unsigned)len), blk, 0, delta, ld_delta, A, d, n,
                  out);
    return MB_OK;
  }
  if (reduction == MB_REDUCE_NUC) {
    if (n > DA_TILE)
      return mb_fail(MB_ERR_UNSUPPORTED, "cuda: discrete_a: nuc needs n <= %d (n = %lld)",
                     DA_TILE, (long long)n);
    void *g;
    int st = mbcuda_scratch(ctx, (size_t)(len * n * n) * sizeof(double), "discrete_a", &g);
    if (st != MB_OK) return st;
    MBCUDA_LAUNCH("discrete_a", k_da_gram, dim3((unsigned)len), blk, 0, delta, ld_delta, A, d, n,
                  (double *)g);
    MBCUDA_LAUNCH("discrete_a", k_da_jacobi, dim3(mbcuda_blocks(len, 64)), dim3(64), 0, len, n,
                  (double *)g, out);
    return MB_OK;
  }
  if (dim == 2) {
    const float *at;
    int st = da_by_states(ctx, A, d, n, da_sum_scale(reduction), 0, "discrete_a", &at, NULL);
    if (st != MB_OK) return st;
    MBCUDA_LAUNCH("discrete_a", k_da_dim2, dim3(da_grid(len * d, DA_THREADS)), blk, 0, delta,
                  ld_delta, at, len, d, n, reduction, out, idx);
    return MB_OK;
  }
  if (dim == 1 && n == 16 && !minmax && (len + DA_TP - 1) / DA_TP <= 65535) {
    const int tiles = (int)((d + DA_TILE_CH - 1) / DA_TILE_CH);
    void *g;
    int st = mbcuda_scratch(ctx, (size_t)(len * tiles * 16) * sizeof(double), "discrete_a", &g);
    if (st != MB_OK) return st;
    const bool sq = reduction == MB_REDUCE_NORM;
    MBCUDA_LAUNCH("discrete_a", k_da_dim1_part,
                  dim3((unsigned)tiles, (unsigned)((len + DA_TP - 1) / DA_TP)), blk, 0, delta,
                  ld_delta, A, len, d, sq, tiles, (double *)g);
    MBCUDA_LAUNCH("discrete_a", k_da_dim1_merge, dim3(mbcuda_blocks(len * 16, DA_THREADS)), blk, 0,
                  len, d, sq, tiles, (const double *)g, out);
    return MB_OK;
  }
  if (dim == 1) {
    if (da_rows16_ok(A, n))
      MBCUDA_LAUNCH("discrete_a", k_da_dim1<true>, dim3((unsigned)len), blk, 0, delta, ld_delta, A,
                    d, n, reduction, out, idx);
    else
      MBCUDA_LAUNCH("discrete_a", k_da_dim1<false>, dim3((unsigned)len), blk, 0, delta, ld_delta, A,
                    d, n, reduction, out, idx);
    return MB_OK;
  }
  if (dim == 0) {
    const int64_t dn = d * n;
    const int sms = mbcuda_st(ctx)->sm_count > 0 ? mbcuda_st(ctx)->sm_count : 100;
    int64_t splits = (sms * 2048LL + dn - 1) / dn; /* enough threads to fill the GPU */
    if (splits > (len + 15) / 16) splits = (len + 15) / 16; /* >= 16 positions per split */
    if (splits > 1024) splits = 1024;
    if (splits < 1) splits = 1;
    const size_t per = minmax ? sizeof(float) + sizeof(long long) : sizeof(double);
    void *p;
    int st = mbcuda_scratch(ctx, (size_t)(splits * dn) * per + 256, "discrete_a", &p);
    if (st != MB_OK) return st;
    double *psum = (double *)p;
    long long *pidx = (long long *)p;
    float *pval = (float *)(pidx + splits * dn);
    if (dn > 0x7fffffffLL * DA_THREADS)
      return mb_fail(MB_ERR_INVALID, "cuda: discrete_a: d * n too large");
    MBCUDA_LAUNCH("discrete_a", k_da_dim0_part,
                  dim3(mbcuda_blocks(dn, DA_THREADS), (unsigned)splits), blk, 0, delta, ld_delta,
                  A, len, d, n, reduction, pos0, (int)splits, psum, pval, pidx);
    MBCUDA_LAUNCH("discrete_a", k_da_dim0_merge, dim3(mbcuda_blocks(dn, DA_THREADS)), blk, 0,
                  len, dn, reduction, pos0, (int)splits, psum, pval, pidx, acc, out, idx);
    return MB_OK;
  }
  /* dim -1 */
  const int64_t blocks = (len * d + DA_THREADS - 1) / DA_THREADS;
  if (blocks > 0x7fffffff) return mb_fail(MB_ERR_INVALID, "cuda: discrete_a: len * d too large");
  void *p;
  const float *at;
  int st = da_by_states(ctx, A, d, n, da_sum_scale(reduction),
                        (size_t)blocks * (sizeof(double) + sizeof(float) + sizeof(int)),
                        "discrete_a", &at, &p);
  if (st != MB_OK) return st;
  double *psum = (double *)p;
  float *pval = (float *)(psum + blocks);
  int *phas = (int *)(pval + blocks);
  MBCUDA_LAUNCH("discrete_a", k_da_all_part, dim3((unsigned)blocks), blk, 0, delta, ld_delta, at,
                len, d, n, reduction, psum, pval, phas);
  MBCUDA_LAUNCH("discrete_a", k_da_all_merge, dim3(1), dim3(DA_MERGE_THREADS), 0, blocks,
                (pos0 + len) * d * n, reduction, pos0, psum, pval, phas, acc, out);
  return MB_OK;
}

extern "C" int mbcuda_discrete_a_input_sim(mb_ctx *ctx, const float *delta, int64_t ld_delta,
                                           const float *A, const float *x, int64_t ldx,
                                           int64_t len, int64_t d, int64_t n, float eps,
                                           float *out) {
  if (len <= 0) return MB_OK;
  if (len > 0x7fffffff) return mb_fail(MB_ERR_INVALID, "cuda: discrete_a_input_sim: len too large");
  if (n == 16 && (len + DA_TP - 1) / DA_TP <= 65535) {
    const int tiles = (int)((d + DA_TILE_CH - 1) / DA_TILE_CH);
    void *g;
    int st = mbcuda_scratch(ctx, (size_t)(len * tiles * DA_SIM_W) * sizeof(double),
                            "discrete_a_input_sim", &g);
    if (st != MB_OK) return st;
    MBCUDA_LAUNCH("discrete_a_input_sim", k_da_sim_part,
                  dim3((unsigned)tiles, (unsigned)((len + DA_TP - 1) / DA_TP)), dim3(DA_THREADS), 0,
                  delta, ld_delta, A, x, ldx, len, d, tiles, (double *)g);
    MBCUDA_LAUNCH("discrete_a_input_sim", k_da_sim_merge,
                  dim3(mbcuda_blocks(len * 16, DA_THREADS)), dim3(DA_THREADS), 0, len, eps, tiles,
                  (const double *)g, out);
    return MB_OK;
  }
  MBCUDA_LAUNCH("discrete_a_input_sim", k_da_sim, dim3((unsigned)len), dim3(DA_THREADS), 0, delta,
                ld_delta, A, x, ldx, d, n, eps, out);
  return MB_OK;
}
