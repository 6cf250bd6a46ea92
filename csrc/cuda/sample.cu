/*
 * sample.cu — mb_sample on CUDA: one block per row, bitonic sort in shared memory, then the CPU's
 * exact algorithm (csrc/cpu/sample.c); the last block to finish advances *counter on the device,
 * so the op replays inside a graph.
 */
#include <math.h>
#include <stdint.h>

#include "cuda_internal.cuh"
#include "../common/rng.h"

#define SAMPLE_VMAX 4096
#define SAMPLE_THREADS 256

/* Sorted order: larger logit first, lower index first on ties. */
__device__ __forceinline__ bool before(float va, int ia, float vb, int ib) {
  return va > vb || (va == vb && ia < ib);
}

/* Counter handling: every block reads *counter; the last block to finish increments it (the
 * "done" counter in context memory returns to 0), so the op replays inside a graph. With a counter
 * a row (mb_sample_rows, done == NULL), each block increments its own. */
/* The draw's index of row b: the row's own counter (mb_sample_rows, done == NULL), or the op's
 * counter's row b. Read before sample_finish advances it. */
__device__ __forceinline__ int64_t sample_draw_index(const int64_t *counter, int64_t batch,
                                                    int64_t b, const unsigned int *done) {
  return done ? *(const volatile int64_t *)counter * batch + b
              : *(const volatile int64_t *)(counter + b);
}

__device__ void sample_finish(int64_t *counter, unsigned int *done) {
  __shared__ bool last;
  __syncthreads();
  if (!done) {
    if (threadIdx.x == 0) counter[blockIdx.x] += 1;
    return;
  }
  if (threadIdx.x == 0) {
    __threadfence();
    unsigned int prev = atomicAdd(done, 1u);
    last = (prev == gridDim.x - 1);
    if (last) {
      *done = 0;
      *(volatile int64_t *)counter = *(volatile int64_t *)counter + 1;
      __threadfence();
    }
  }
}

__global__ void k_sample_greedy(const float *__restrict__ logits, int64_t v, int32_t *out_ids,
                                int64_t *counter, unsigned int *done) {
  MB_PDL_ENTRY();
  __shared__ float sv[32];
  __shared__ int si[32];
  const float *row = logits + blockIdx.x * v;
  float bv = -INFINITY;
  int bi = 0x7fffffff;
  for (int64_t c = threadIdx.x; c < v; c += blockDim.x) {
    float x = row[c];
    if (bi == 0x7fffffff || before(x, (int)c, bv, bi)) { bv = x; bi = (int)c; }
  }
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) {
    float ov = __shfl_xor_sync(0xffffffffu, bv, o);
    int oi = __shfl_xor_sync(0xffffffffu, bi, o);
    if (oi != 0x7fffffff && (bi == 0x7fffffff || before(ov, oi, bv, bi))) { bv = ov; bi = oi; }
  }
  int lane = threadIdx.x & 31, wid = threadIdx.x >> 5, nw = blockDim.x >> 5;
  if (lane == 0) { sv[wid] = bv; si[wid] = bi; }
  __syncthreads();
  if (threadIdx.x == 0) {
    for (int w = 1; w < nw; w++)
      if (si[w] != 0x7fffffff && (bi == 0x7fffffff || before(sv[w], si[w], bv, bi))) {
        bv = sv[w]; bi = si[w];
      }
    out_ids[blockIdx.x] = bi == 0x7fffffff ? 0 : bi;
  }
  sample_finish(counter, done);
}

/* One block per row: bitonic sort of the row (padded to a power of two), then top-k,
 * temperature, top-p and the draw, as the CPU does (csrc/cpu). */
__global__ void __launch_bounds__(SAMPLE_THREADS)
k_sample(const float *__restrict__ logits, int64_t batch, int v, int P, float temperature,
         int top_k, float top_p, uint64_t seed, int64_t *counter, int32_t *out_ids,
         unsigned int *done) {
  MB_PDL_ENTRY();
  extern __shared__ unsigned char smem[];
  float *val = (float *)smem; /* sorted logits, then (in place) their exp-weights */
  int *idx = (int *)(val + P);
  float *p = val;
  __shared__ float red[32];
  const int64_t b = blockIdx.x;
  const float *row = logits + b * v;
  const int64_t ctr = sample_draw_index(counter, batch, b, done);
  for (int i = threadIdx.x; i < P; i += blockDim.x) {
    val[i] = i < v ? row[i] : -INFINITY;
    idx[i] = i < v ? i : 0x7fffffff;
  }
  __syncthreads();
  /* bitonic sort, "before" order */
  for (int size = 2; size <= P; size <<= 1) {
    for (int stride = size >> 1; stride > 0; stride >>= 1) {
      for (int i = threadIdx.x; i < P; i += blockDim.x) {
        int j = i ^ stride;
        if (j > i) {
          bool up = (i & size) == 0;
          float vi = val[i], vj = val[j];
          int ii = idx[i], ij = idx[j];
          bool jfirst = before(vj, ij, vi, ii);
          if (jfirst == up) {
            val[i] = vj; val[j] = vi; idx[i] = ij; idx[j] = ii;
          }
        }
      }
      __syncthreads();
    }
  }
  int k = (top_k <= 0 || top_k > v) ? v : top_k;
  /* probabilities of the kept top-k after temperature, relative to the largest */
  float s0 = val[0] / temperature;
  __syncthreads(); /* everyone has read val[0] before it is overwritten */
  float part = 0.f;
  for (int i = threadIdx.x; i < k; i += blockDim.x) {
    float e = expf(val[i] / temperature - s0);
    p[i] = e;
    part += e;
  }
  float total = block_sum(part, red);
  /* top-p: drop the tail whose cumulative probability (ascending) is <= 1 - top_p */
  if (threadIdx.x < 32) {
    int lane = threadIdx.x;
    int kept = k;
    if (top_p > 0.f && top_p < 1.f) {
      float thr = 1.f - top_p;
      float carry = 0.f; /* sum of p over indices above the current chunk, normalised */
      kept = 1;
      for (int base = ((k - 1) / 32) * 32; base >= 0; base -= 32) {
        int i = base + lane;
        float x = i < k ? p[i] / total : 0.f;
        /* suffix sum within the chunk: sum over lanes >= lane */
        float sfx = x;
#pragma unroll
        for (int o = 1; o < 32; o <<= 1) {
          float t = __shfl_down_sync(0xffffffffu, sfx, o);
          if (lane + o < 32) sfx += t;
        }
        float cum = carry + sfx;
        bool keep = (i < k) && (i == 0 || cum > thr);
        unsigned m = __ballot_sync(0xffffffffu, keep);
        if (m) { /* cum decreases with i: the kept set is a prefix */
          int hi = 31 - __clz(m);
          kept = max(kept, base + hi + 1);
        }
        carry += __shfl_sync(0xffffffffu, sfx, 0);
      }
    }
    /* draw over the kept prefix in sorted order */
    float sub = 0.f;
    for (int i = lane; i < kept; i += 32) sub += p[i];
    sub = warp_sum(sub);
    float target = mb_uniform_at(seed, (uint64_t)ctr) * sub;
    int chosen = kept - 1;
    float run = 0.f;
    for (int base = 0; base < kept; base += 32) {
      int i = base + lane;
      float x = i < kept ? p[i] : 0.f;
      float inc = x;
#pragma unroll
      for (int o = 1; o < 32; o <<= 1) {
        float t = __shfl_up_sync(0xffffffffu, inc, o);
        if (lane >= o) inc += t;
      }
      unsigned m = __ballot_sync(0xffffffffu, i < kept && run + inc > target);
      if (m) { chosen = base + __ffs(m) - 1; break; }
      run += __shfl_sync(0xffffffffu, inc, 31);
    }
    if (lane == 0) out_ids[b] = idx[chosen];
  }
  sample_finish(counter, done);
}

/* Vocabularies of up to SAMPLE_THREADS (the models' 256): k_sample's draws, bit for bit, with an
 * element a thread. k_sample's chains were serial: 36 sort steps each behind a barrier, then the
 * top-p suffix sums and the draw's prefix sums a 32-element chunk after another on one warp. Here
 * the sort's strides below 32 run by shuffles; each warp scans its own chunk at once (the same
 * shuffles as k_sample's loop body), and each chunk's carry is summed from the chunks' totals in
 * k_sample's order, so every float is the one k_sample computes. A compare-exchange is decided by
 * both threads of a pair with k_sample's comparison and argument order, so a NaN logit moves as it
 * does there. */
__global__ void __launch_bounds__(SAMPLE_THREADS)
k_sample256(const float *__restrict__ logits, int64_t batch, int v, float temperature, int top_k,
            float top_p, uint64_t seed, int64_t *counter, int32_t *out_ids, unsigned int *done) {
  MB_PDL_ENTRY();
  constexpr int NW = SAMPLE_THREADS / 32;
  __shared__ float sv[SAMPLE_THREADS]; /* the exchange of the wide strides, then the weights p */
  __shared__ int si[SAMPLE_THREADS];   /* ... and the sorted indices */
  __shared__ float red[32];
  __shared__ float ctot[NW]; /* each chunk's total */
  __shared__ int cint[NW];   /* each chunk's kept count or first hit */
  __shared__ float bcast;
  const int t = threadIdx.x, lane = t & 31, w = t >> 5;
  const int64_t b = blockIdx.x;
  const float *row = logits + b * v;
  const int64_t ctr = sample_draw_index(counter, batch, b, done);
  float x = t < v ? row[t] : -INFINITY;
  int ix = t < v ? t : 0x7fffffff;
  /* bitonic sort, "before" order: thread t ends with the element k_sample's val[t] holds */
  for (int size = 2; size <= SAMPLE_THREADS; size <<= 1) {
    for (int stride = size >> 1; stride > 0; stride >>= 1) {
      float ox;
      int oi;
      if (stride >= 32) {
        sv[t] = x, si[t] = ix;
        __syncthreads();
        ox = sv[t ^ stride], oi = si[t ^ stride];
        __syncthreads();
      } else {
        ox = __shfl_xor_sync(0xffffffffu, x, stride);
        oi = __shfl_xor_sync(0xffffffffu, ix, stride);
      }
      const bool lower = (t & stride) == 0, up = (t & size) == 0;
      /* k_sample's test for the pair (i, j = i ^ stride, i < j): does j come first? */
      const bool jfirst = lower ? before(ox, oi, x, ix) : before(x, ix, ox, oi);
      if (jfirst == up) x = ox, ix = oi;
    }
  }
  const int k = (top_k <= 0 || top_k > v) ? v : top_k;
  if (t == 0) bcast = x / temperature;
  si[t] = ix; /* the last wide stride's reads were followed by a barrier */
  __syncthreads();
  const float s0 = bcast;
  /* probabilities of the kept top-k after temperature, relative to the largest */
  const float e = t < k ? expf(x / temperature - s0) : 0.f;
  sv[t] = e;
  const float total = block_sum(e, red);
  int kept = k;
  if (top_p > 0.f && top_p < 1.f) { /* drop the tail whose cumulative probability is <= 1 - top_p */
    const float thr = 1.f - top_p;
    float sfx = t < k ? e / total : 0.f; /* suffix sum within the chunk: lanes >= lane */
#pragma unroll
    for (int o = 1; o < 32; o <<= 1) {
      const float u = __shfl_down_sync(0xffffffffu, sfx, o);
      if (lane + o < 32) sfx += u;
    }
    if (lane == 0) ctot[w] = sfx;
    __syncthreads();
    float carry = 0.f; /* the chunks above, from the top one down, as k_sample adds them */
    for (int c = (k - 1) / 32; c > w; c--) carry += ctot[c];
    const bool keep = t < k && (t == 0 || carry + sfx > thr);
    const unsigned m = __ballot_sync(0xffffffffu, keep); /* a prefix: cum falls as t grows */
    if (lane == 0) cint[w] = m ? w * 32 + (31 - __clz(m)) + 1 : 1;
    __syncthreads();
    kept = 1;
#pragma unroll
    for (int c = 0; c < NW; c++) kept = max(kept, cint[c]);
  }
  /* the draw over the kept prefix in sorted order: its weights' sum as k_sample sums it */
  if (w == 0) {
    float sub = 0.f;
    for (int i = lane; i < kept; i += 32) sub += sv[i];
    sub = warp_sum(sub);
    if (lane == 0) bcast = mb_uniform_at(seed, (uint64_t)ctr) * sub;
  }
  __syncthreads();
  const float target = bcast;
  float inc = t < kept ? sv[t] : 0.f; /* inclusive prefix sum within the chunk */
#pragma unroll
  for (int o = 1; o < 32; o <<= 1) {
    const float u = __shfl_up_sync(0xffffffffu, inc, o);
    if (lane >= o) inc += u;
  }
  if (lane == 31) ctot[w] = inc;
  __syncthreads();
  float run = 0.f; /* the chunks before, in order */
  for (int c = 0; c < w; c++) run += ctot[c];
  const unsigned m = __ballot_sync(0xffffffffu, t < kept && run + inc > target);
  if (lane == 0) cint[w] = m ? w * 32 + __ffs(m) - 1 : -1;
  __syncthreads();
  if (t == 0) {
    int chosen = kept - 1;
    for (int c = 0; c < NW; c++)
      if (cint[c] >= 0) {
        chosen = cint[c];
        break;
      }
    out_ids[b] = si[chosen];
  }
  sample_finish(counter, done);
}

/* Both entry points: one block a row; done == NULL: a counter a row. */
static int sample_launch(mb_ctx *ctx, const float *logits, int64_t batch, int64_t v,
                         float temperature, int32_t top_k, float top_p, uint64_t seed,
                         int64_t *counter, int32_t *out_ids, unsigned int *done) {
  if (batch <= 0) return MB_OK;
  if (batch > 0x7fffffff) return mb_fail(MB_ERR_INVALID, "cuda: sample: batch too large");
  if (top_k == 1 || temperature <= 0.f) {
    MBCUDA_LAUNCH("sample (greedy)", k_sample_greedy, dim3((unsigned)batch), dim3(256), 0, logits, v, out_ids, counter, done);
    return MB_OK;
  }
  if (v > SAMPLE_VMAX)
    return mb_fail(MB_ERR_UNSUPPORTED, "cuda: sample: vocabulary %lld > %d with top_k != 1",
                   (long long)v, SAMPLE_VMAX);
  if (v <= SAMPLE_THREADS && !mbcuda_st(ctx)->sample_serial) {
    MBCUDA_LAUNCH("sample", k_sample256, dim3((unsigned)batch), dim3(SAMPLE_THREADS), 0, logits, batch, (int)v, temperature, top_k, top_p, seed, counter, out_ids, done);
    return MB_OK;
  }
  int P = 32;
  while (P < v) P <<= 1;
  size_t sm = (size_t)P * (sizeof(float) + sizeof(int));
  MBCUDA_LAUNCH("sample", k_sample, dim3((unsigned)batch), dim3(SAMPLE_THREADS), sm, logits, batch, (int)v, P, temperature, top_k, top_p, seed, counter, out_ids, done);
  return MB_OK;
}

extern "C" int mbcuda_sample(mb_ctx *ctx, const float *logits, int64_t batch, int64_t v,
                             float temperature, int32_t top_k, float top_p, uint64_t seed,
                             int64_t *counter, int32_t *out_ids) {
  return sample_launch(ctx, logits, batch, v, temperature, top_k, top_p, seed, counter, out_ids,
                       mbcuda_st(ctx)->done);
}

extern "C" int mbcuda_sample_rows(mb_ctx *ctx, const float *logits, int64_t n, int64_t v,
                                  float temperature, int32_t top_k, float top_p, uint64_t seed,
                                  int64_t *counters, int32_t *out_ids) {
  return sample_launch(ctx, logits, n, v, temperature, top_k, top_p, seed, counters, out_ids,
                       NULL);
}
