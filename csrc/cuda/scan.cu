/*
 * scan.cu — mb_selective_scan on CUDA: one thread per (batch, channel), the n states in registers
 * (k_scan_seq); when batch * d is small and len >= 64, the sequence is cut into chunks run in three
 * passes (chunk-local scan, carry across chunks, output), the carries in the context's scratch.
 * The CPU version (csrc/cpu/scan.c) is the reference; csrc/tests/cuda_vs_cpu.c holds the two equal.
 */
#include <math.h>
#include <stdint.h>

#include "cuda_internal.cuh"

struct ScanArgs {
  const float *u; int64_t ldu;
  const float *delta; int64_t ld_delta;
  const float *A;
  const float *Bm; int64_t ldb;
  const float *Cm; int64_t ldc;
  const float *Dskip;
  const float *z; int64_t ldz;
  float *state;
  float *states_all;
  int64_t batch, len, d;
  int n;
  int softplus;
  float *y; int64_t ldy;
  /* chunked scan */
  int64_t chunk;      /* positions per chunk */
  int64_t nchunks;
  float *hloc;        /* (batch, nchunks, d, n): chunk-local end state, then the state entering */
  float *dtsum;       /* (batch, nchunks, d): sum of dt over the chunk */
};

/* Runs positions [t0, t1) of channel (b, c) from h; writes y (and states_all) when OUT, and
 * returns the dt sum. */
template <int NMAX, bool OUT>
__device__ __forceinline__ float scan_range(const ScanArgs &a, int64_t b, int64_t c, int64_t t0,
                                            int64_t t1, float (&h)[NMAX]) {
  const int n = a.n;
  float Ac[NMAX];
#pragma unroll
  for (int s = 0; s < NMAX; s++) Ac[s] = s < n ? a.A[c * n + s] * MB_LOG2E : 0.f; /* exp via exp2 */
  float Dc = a.Dskip ? a.Dskip[c] : 0.f;
  float dts = 0.f;
  for (int64_t t = t0; t < t1; t++) {
    int64_t r = b * a.len + t;
    float uu = __ldg(a.u + r * a.ldu + c);
    float dt = __ldg(a.delta + r * a.ld_delta + c);
    if (a.softplus) dt = mb_softplus(dt);
    dts += dt;
    const float *Br = a.Bm + r * a.ldb;
    const float *Cr = a.Cm + r * a.ldc;
    float du = dt * uu;
    float yv = 0.f;
#pragma unroll
    for (int s = 0; s < NMAX; s++) {
      if (s < n) {
        float dA = exp2f(dt * Ac[s]);
        h[s] = dA * h[s] + __ldg(Br + s) * du;
        if (OUT) yv += __ldg(Cr + s) * h[s];
      }
    }
    if (OUT) {
      yv += Dc * uu;
      if (a.z) yv *= mb_silu(__ldg(a.z + r * a.ldz + c));
      a.y[r * a.ldy + c] = yv;
      if (a.states_all) {
        float *sa = a.states_all + (r * a.d + c) * n;
#pragma unroll
        for (int s = 0; s < NMAX; s++)
          if (s < n) sa[s] = h[s];
      }
    }
  }
  return dts;
}

/* One thread per (b, c), sequential over the whole length. */
template <int NMAX>
__global__ void k_scan_seq(ScanArgs a) {
  MB_PDL_ENTRY();
  int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x;
  if (i >= a.batch * a.d) return;
  int64_t b = i / a.d, c = i - b * a.d;
  float h[NMAX];
  float *st = a.state ? a.state + (b * a.d + c) * a.n : nullptr;
#pragma unroll
  for (int s = 0; s < NMAX; s++) h[s] = (st && s < a.n) ? st[s] : 0.f;
  scan_range<NMAX, true>(a, b, c, 0, a.len, h);
  if (st) {
#pragma unroll
    for (int s = 0; s < NMAX; s++)
      if (s < a.n) st[s] = h[s];
  }
}

/* Chunked pass 1: per (b, chunk, c), the chunk's end state from zero and its dt sum. */
template <int NMAX>
__global__ void k_scan_chunk_local(ScanArgs a) {
  MB_PDL_ENTRY();
  int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x;
  if (i >= a.batch * a.nchunks * a.d) return;
  int64_t c = i % a.d, bk = i / a.d, k = bk % a.nchunks, b = bk / a.nchunks;
  if (k == a.nchunks - 1) return; /* the last chunk's local state is never needed */
  float h[NMAX];
#pragma unroll
  for (int s = 0; s < NMAX; s++) h[s] = 0.f;
  int64_t t0 = k * a.chunk, t1 = t0 + a.chunk < a.len ? t0 + a.chunk : a.len;
  float dts = scan_range<NMAX, false>(a, b, c, t0, t1, h);
  float *hl = a.hloc + i * a.n;
#pragma unroll
  for (int s = 0; s < NMAX; s++)
    if (s < a.n) hl[s] = h[s];
  a.dtsum[i] = dts;
}

/* Chunked pass 2: per (b, c), carries the state across chunks; hloc becomes the entering state. */
template <int NMAX>
__global__ void k_scan_chunk_carry(ScanArgs a) {
  MB_PDL_ENTRY();
  int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x;
  if (i >= a.batch * a.d) return;
  int64_t b = i / a.d, c = i - b * a.d;
  float h[NMAX], Ac[NMAX];
  float *st = a.state ? a.state + (b * a.d + c) * a.n : nullptr;
#pragma unroll
  for (int s = 0; s < NMAX; s++) {
    h[s] = (st && s < a.n) ? st[s] : 0.f;
    Ac[s] = s < a.n ? a.A[c * a.n + s] * MB_LOG2E : 0.f;
  }
  for (int64_t k = 0; k < a.nchunks; k++) {
    int64_t j = (b * a.nchunks + k) * a.d + c;
    float *hl = a.hloc + j * a.n;
    float dts = k < a.nchunks - 1 ? a.dtsum[j] : 0.f;
#pragma unroll
    for (int s = 0; s < NMAX; s++) {
      if (s < a.n) {
        float loc = k < a.nchunks - 1 ? hl[s] : 0.f;
        hl[s] = h[s];
        h[s] = exp2f(dts * Ac[s]) * h[s] + loc;
      }
    }
  }
}

/* Chunked pass 3: per (b, chunk, c), reruns the chunk from its entering state with outputs. */
template <int NMAX>
__global__ void k_scan_chunk_out(ScanArgs a) {
  MB_PDL_ENTRY();
  int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x;
  if (i >= a.batch * a.nchunks * a.d) return;
  int64_t c = i % a.d, bk = i / a.d, k = bk % a.nchunks, b = bk / a.nchunks;
  float h[NMAX];
  const float *hl = a.hloc + i * a.n;
#pragma unroll
  for (int s = 0; s < NMAX; s++) h[s] = s < a.n ? hl[s] : 0.f;
  int64_t t0 = k * a.chunk, t1 = t0 + a.chunk < a.len ? t0 + a.chunk : a.len;
  scan_range<NMAX, true>(a, b, c, t0, t1, h);
  if (k == a.nchunks - 1 && a.state) {
    float *st = a.state + (b * a.d + c) * a.n;
#pragma unroll
    for (int s = 0; s < NMAX; s++)
      if (s < a.n) st[s] = h[s];
  }
}

template <int NMAX>
static int scan_launch(mb_ctx *ctx, ScanArgs &a) {
  cudaStream_t s = mbcuda_stream(ctx);
  int64_t chans = a.batch * a.d;
  int64_t target = (int64_t)mbcuda_st(ctx)->sm_count * 1024;
  int64_t nchunks = 1;
  if (a.len >= 64 && chans < target) {
    nchunks = (target + chans - 1) / chans;
    int64_t maxc = a.len / 32;
    if (nchunks > maxc) nchunks = maxc;
    if (nchunks < 1) nchunks = 1;
  }
  if (nchunks <= 1) {
    MBCUDA_LAUNCH("selective_scan", k_scan_seq<NMAX>, dim3(mbcuda_blocks(chans, 128)), dim3(128), 0, a);
    return MB_OK;
  }
  a.chunk = (a.len + nchunks - 1) / nchunks;
  a.nchunks = (a.len + a.chunk - 1) / a.chunk;
  size_t hl_bytes = (size_t)(a.batch * a.nchunks * a.d * a.n) * sizeof(float);
  size_t dt_bytes = (size_t)(a.batch * a.nchunks * a.d) * sizeof(float);
  hl_bytes = (hl_bytes + 255) & ~(size_t)255;
  void *scr = NULL;
  int rc = mbcuda_scratch(ctx, hl_bytes + dt_bytes, "selective_scan", &scr);
  if (rc) return rc;
  a.hloc = (float *)scr;
  a.dtsum = (float *)((char *)scr + hl_bytes);
  int64_t work = a.batch * a.nchunks * a.d;
  MBCUDA_LAUNCH("selective_scan (chunk local)", k_scan_chunk_local<NMAX>, dim3(mbcuda_blocks(work, 128)), dim3(128), 0, a);
  MBCUDA_LAUNCH("selective_scan (chunk carry)", k_scan_chunk_carry<NMAX>, dim3(mbcuda_blocks(chans, 128)), dim3(128), 0, a);
  MBCUDA_LAUNCH("selective_scan (chunk out)", k_scan_chunk_out<NMAX>, dim3(mbcuda_blocks(work, 128)), dim3(128), 0, a);
  return MB_OK;
}

extern "C" int mbcuda_selective_scan(mb_ctx *ctx, const float *u, int64_t ldu, const float *delta,
                                     int64_t ld_delta, const float *A, const float *Bm,
                                     int64_t ldb, const float *Cm, int64_t ldc,
                                     const float *Dskip, const float *z, int64_t ldz,
                                     float *state, float *states_all, int64_t batch, int64_t len,
                                     int64_t d, int64_t n, int delta_softplus, float *y,
                                     int64_t ldy) {
  if (batch <= 0 || len <= 0 || d <= 0) return MB_OK;
  ScanArgs a = {u, ldu, delta, ld_delta, A, Bm, ldb, Cm, ldc, Dskip, z, ldz, state, states_all,
                batch, len, d, (int)n, delta_softplus, y, ldy, 0, 0, nullptr, nullptr};
  /* n >= 1 here: api.c rejects n < 1 */
  if (n <= 4) return scan_launch<4>(ctx, a);
  if (n <= 8) return scan_launch<8>(ctx, a);
  if (n <= 16) return scan_launch<16>(ctx, a);
  if (n <= 32) return scan_launch<32>(ctx, a);
  if (n <= 64) return scan_launch<64>(ctx, a);
  return mb_fail(MB_ERR_UNSUPPORTED, "cuda: selective_scan: d_state %lld > 64 is not supported",
                 (long long)n);
}
