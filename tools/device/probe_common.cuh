/*
 * probe_common.cuh — what the standalone device tools (batch_gemm_probe.cu, dtproj_probe.cu,
 * fused_inproj_probe.cu, blas_sweep.cu) share: seeded bf16 and fp32 fills, an fp32 reference
 * product, ldmatrix and mma.sync as inline PTX (shared-memory addresses and bulk copies from the
 * library's bulk_copy.cuh), the swizzled 64-wide tiles and a warp's 16-row product step over them,
 * a graph timer, the device's copy rate and a cuBLAS handle set up as the library's. Not part of
 * the library.
 */
#ifndef MAMBABYTE_PROBE_COMMON_CUH
#define MAMBABYTE_PROBE_COMMON_CUH

#include <cublas_v2.h>
#include <cuda_runtime.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>

#include "../../csrc/cuda/bulk_copy.cuh"
#include "device_check.h"

/* n bf16 values of random sign and mantissa with the exponent field exp_bits (0x3c80: [1/64,
 * 1/32), 0x3f00: [0.5, 1)) */
__global__ void k_fill(uint16_t *p, size_t n, uint32_t seed, int exp_bits) {
  for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n;
       i += (size_t)gridDim.x * blockDim.x) {
    uint32_t h = (uint32_t)i * 2654435761u ^ seed;
    h ^= h >> 13;
    h *= 0x5bd1e995u;
    p[i] = (uint16_t)((h & 0x8000u) | (uint32_t)exp_bits | ((h >> 16) & 0x7fu));
  }
}

/* y[m][n] = sum_k x[m][k] w[n][k] in fp32, k in order (bf16 x with rows ldx apart, w N x K): the
 * probes' reference. Grid ((N + 127) / 128, M), 128 threads. */
__global__ void k_ref(const uint16_t *x, int ldx, const uint16_t *w, int N, int K, float *y) {
  const int n = blockIdx.x * blockDim.x + threadIdx.x, m = blockIdx.y;
  if (n >= N) return;
  float s = 0.f;
  for (int k = 0; k < K; k++)
    s = fmaf(__uint_as_float((uint32_t)x[(size_t)m * ldx + k] << 16),
             __uint_as_float((uint32_t)w[(size_t)n * K + k] << 16), s);
  y[(size_t)m * N + n] = s;
}

__device__ __forceinline__ void ldsm4(unsigned addr, unsigned (&r)[4]) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0, %1, %2, %3}, [%4];"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(addr));
}
__device__ __forceinline__ void mma16816(float (&d)[4], const unsigned (&a)[4], unsigned b0,
                                         unsigned b1) {
  asm volatile(
      "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, "
      "{%8, %9}, {%0, %1, %2, %3};"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

/* element (r, k) of a swizzled tile of 64-element bf16 rows: 16-byte chunk c of row r at
 * c ^ (r % 8), so that an ldmatrix phase's 8 rows meet every bank once; the layout a 2D tensor copy
 * with CU_TENSOR_MAP_SWIZZLE_128B writes for a box 128 bytes wide into a 1024-byte aligned place */
__host__ __device__ __forceinline__ int tile_at(int r, int k) {
  return r * 64 + ((((k >> 3) ^ r) & 7) << 3) + (k & 7);
}

/* A warp's share of one 64-wide step of a product on the tensor cores: rows a_row0 .. a_row0 + 15
 * of the swizzled tile a (the m16 side) against the 64 rows of the swizzled tile b (the n side, 8
 * n8 tiles), into acc[j] (mma.sync m16n8k16, fp32 accumulators). */
__device__ __forceinline__ void mma_rows16_x64(const uint16_t *a, int a_row0, const uint16_t *b,
                                               float (&acc)[8][4]) {
  const int lane = threadIdx.x & 31, mi = lane >> 3, mr = lane & 7;
#pragma unroll
  for (int kk = 0; kk < 4; kk++) {
    unsigned af[4];
    { /* A: rows a_row0 + mr (+8 for matrices 1, 3), chunk 2 kk (+1 for matrices 2, 3) */
      const int r = a_row0 + mr + 8 * (mi & 1), c = 2 * kk + (mi >> 1);
      ldsm4(smem_u32(a + tile_at(r, 8 * c)), af);
    }
#pragma unroll
    for (int p = 0; p < 4; p++) { /* B: rows 16 p + mr (+8 for matrices 2, 3), chunk 2 kk (+1 odd) */
      unsigned bf[4];
      const int r = 16 * p + mr + 8 * (mi >> 1), c = 2 * kk + (mi & 1);
      ldsm4(smem_u32(b + tile_at(r, 8 * c)), bf);
      mma16816(acc[2 * p], af, bf[0], bf[1]);
      mma16816(acc[2 * p + 1], af, bf[2], bf[3]);
    }
  }
}

/* mma_rows16_x64's accumulators stored transposed: dst[n * ld + m] for the warp's rows m = m0 ..
 * m0 + 15 and the 64 n (d0, d1: row g, n 2t and 2t + 1 of n8 tile j; d2, d3: row g + 8). */
__device__ __forceinline__ void store_acc_t(float *dst, int ld, int m0, const float (&acc)[8][4]) {
  const int lane = threadIdx.x & 31, g = lane >> 2, t = lane & 3, m = m0 + g;
#pragma unroll
  for (int j = 0; j < 8; j++) {
    const int n = 8 * j + 2 * t;
    dst[(size_t)n * ld + m] = acc[j][0];
    dst[(size_t)(n + 1) * ld + m] = acc[j][1];
    dst[(size_t)n * ld + m + 8] = acc[j][2];
    dst[(size_t)(n + 1) * ld + m + 8] = acc[j][3];
  }
}

/* fp32 values in [-scale, scale) from a seed */
__global__ void k_fill_f32(float *p, size_t n, uint32_t seed, float scale) {
  for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n;
       i += (size_t)gridDim.x * blockDim.x) {
    uint32_t h = (uint32_t)i * 2654435761u ^ seed;
    h ^= h >> 15;
    h *= 0x2c1b3c6du;
    h ^= h >> 12;
    p[i] = scale * ((float)(h >> 8) * (1.f / 8388608.f) - 1.f);
  }
}

/* Replays a graph of what `launch_all` enqueues, `reps` times; the best of 5 timings, us per
 * replay. */
template <typename F>
static double time_graph(cudaStream_t st, int reps, F &&launch_all) {
  cudaGraph_t gr;
  cudaGraphExec_t ge;
  CK(cudaStreamBeginCapture(st, cudaStreamCaptureModeGlobal));
  launch_all();
  CK(cudaStreamEndCapture(st, &gr));
  CK(cudaGraphInstantiate(&ge, gr, 0));
  cudaEvent_t e0, e1;
  CK(cudaEventCreate(&e0));
  CK(cudaEventCreate(&e1));
  CK(cudaGraphLaunch(ge, st));
  CK(cudaStreamSynchronize(st));
  double best = 1e30;
  for (int round = 0; round < 5; round++) {
    CK(cudaEventRecord(e0, st));
    for (int r = 0; r < reps; r++) CK(cudaGraphLaunch(ge, st));
    CK(cudaEventRecord(e1, st));
    CK(cudaEventSynchronize(e1));
    float ms = 0.f;
    CK(cudaEventElapsedTime(&ms, e0, e1));
    best = fmin(best, 1e3 * ms / reps);
  }
  CK(cudaGraphExecDestroy(ge));
  CK(cudaGraphDestroy(gr));
  CK(cudaEventDestroy(e0));
  CK(cudaEventDestroy(e1));
  return best;
}

/* The copy rate, TB/s: a device-to-device copy of 1 GiB, bytes read and written; printed. */
static inline double copy_rate(cudaStream_t st) {
  const size_t bytes = (size_t)1 << 30;
  void *a, *b;
  CK(cudaMalloc(&a, bytes));
  CK(cudaMalloc(&b, bytes));
  const double us =
      time_graph(st, 5, [&] { CK(cudaMemcpyAsync(b, a, bytes, cudaMemcpyDeviceToDevice, st)); });
  const double tbs = 2.0 * bytes / (us * 1e-6) / 1e12;
  printf("copy rate (1 GiB device to device, read + written): %.2f TB/s\n", tbs);
  CK(cudaFree(a));
  CK(cudaFree(b));
  return tbs;
}

/* A cuBLAS handle on st with the library's 32 MiB workspace (a graph capture needs one). */
static inline cublasHandle_t cublas_for(cudaStream_t st) {
  cublasHandle_t hb;
  BK(cublasCreate(&hb));
  BK(cublasSetStream(hb, st));
  void *ws;
  CK(cudaMalloc(&ws, (size_t)32 << 20));
  BK(cublasSetWorkspace(hb, ws, (size_t)32 << 20));
  return hb;
}

#endif
