/*
 * probe_common.cuh — what the standalone device tools (batch_gemm_probe.cu, dtproj_probe.cu,
 * blas_sweep.cu) share: a seeded bf16 fill, an fp32 reference product, ldmatrix and mma.sync as
 * inline PTX (shared-memory addresses and bulk copies from the library's bulk_copy.cuh), a graph
 * timer, the device's copy rate and a cuBLAS handle set up as the library's. Not part of the
 * library.
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
