/*
 * mufu_rate.cu — the rate of the exps the tile scan runs (ex2.approx.ftz.f32, the MUFU unit), per
 * SM per clock and per second, beside fp32 FMAs for scale: the figure behind the scan's floor in
 * docs/cuda_notes.md ("Each missed target against the sum of its ops' floors"), measured instead of
 * taken from the datasheet. An experiment, not part of the library:
 *   nvcc -O3 -arch=sm_90 -o mufu_rate tools/device/mufu_rate.cu && ./mufu_rate
 * Each thread runs 8 independent chains (so the unit's throughput, not one chain's latency, bounds
 * it), 2 blocks of 512 threads an SM; each block times itself with clock64, the host with events.
 */
#include <cuda_runtime.h>
#include <stdio.h>
#include <stdlib.h>

#include "device_check.h"

#define CHAINS 8
#define THREADS 512
#define BLOCKS_PER_SM 2

__device__ __forceinline__ float ex2_ftz(float x) {
  float y;
  asm volatile("ex2.approx.ftz.f32 %0, %1;" : "=f"(y) : "f"(x));
  return y;
}

/* EXP: each step of a chain is one ex2 of the last value mapped into [-1, -0.25) by one FFMA (on
 * its own pipe), so the values stay in [0.5, 0.85); else one FFMA a step. */
template <bool EXP>
__global__ void __launch_bounds__(THREADS) k_rate(int iters, float *sink, long long *cycles) {
  float v[CHAINS];
#pragma unroll
  for (int j = 0; j < CHAINS; j++) v[j] = -0.5f - 0.01f * (threadIdx.x % 7) - 0.001f * j;
  __syncthreads();
  const long long t0 = clock64();
  for (int i = 0; i < iters; i++) {
#pragma unroll
    for (int j = 0; j < CHAINS; j++) {
      if (EXP) v[j] = ex2_ftz(fmaf(v[j], 0.5f, -0.75f));
      else v[j] = fmaf(v[j], 0.999f, 0.0001f);
    }
  }
  __syncthreads();
  const long long t1 = clock64();
  float s = 0.f;
#pragma unroll
  for (int j = 0; j < CHAINS; j++) s += v[j];
  if (s == 12345.f) *sink = s; /* keeps the chains live */
  if (threadIdx.x == 0) cycles[blockIdx.x] = t1 - t0;
}

static int cmp_ll(const void *a, const void *b) {
  const long long x = *(const long long *)a, y = *(const long long *)b;
  return (x > y) - (x < y);
}

template <bool EXP>
static void measure(const char *name, int sms, float *sink, long long *d_cycles) {
  const int blocks = sms * BLOCKS_PER_SM, iters = 1 << 14;
  cudaEvent_t a, b;
  CK(cudaEventCreate(&a));
  CK(cudaEventCreate(&b));
  k_rate<EXP><<<blocks, THREADS>>>(iters, sink, d_cycles); /* warm-up */
  CK(cudaDeviceSynchronize());
  float best_ms = 1e30f;
  long long *cyc = (long long *)malloc(sizeof(long long) * blocks);
  double best_per_clock = 0.0;
  for (int r = 0; r < 5; r++) {
    CK(cudaEventRecord(a));
    k_rate<EXP><<<blocks, THREADS>>>(iters, sink, d_cycles);
    CK(cudaEventRecord(b));
    CK(cudaEventSynchronize(b));
    float ms;
    CK(cudaEventElapsedTime(&ms, a, b));
    if (ms < best_ms) best_ms = ms;
    CK(cudaMemcpy(cyc, d_cycles, sizeof(long long) * blocks, cudaMemcpyDeviceToHost));
    qsort(cyc, blocks, sizeof(long long), cmp_ll);
    /* the blocks of an SM run side by side: its operations over the median block's cycles */
    const double per_sm = (double)BLOCKS_PER_SM * THREADS * CHAINS * iters;
    const double pc = per_sm / (double)cyc[blocks / 2];
    if (pc > best_per_clock) best_per_clock = pc;
  }
  const double total = (double)blocks * THREADS * CHAINS * iters;
  printf("%-26s %6.2f an SM a clock (median block)   %8.1f G/s (events, best of 5)\n", name,
         best_per_clock, total / (best_ms * 1e-3) / 1e9);
  free(cyc);
  CK(cudaEventDestroy(a));
  CK(cudaEventDestroy(b));
}

int main(void) {
  cudaDeviceProp p;
  CK(cudaGetDeviceProperties(&p, 0));
  int clock_khz = 0;
  CK(cudaDeviceGetAttribute(&clock_khz, cudaDevAttrClockRate, 0));
  printf("%s, %d SMs, max SM clock %.0f MHz\n", p.name, p.multiProcessorCount, clock_khz / 1e3);
  float *sink;
  long long *cycles;
  CK(cudaMalloc(&sink, sizeof(float)));
  CK(cudaMalloc(&cycles, sizeof(long long) * p.multiProcessorCount * BLOCKS_PER_SM));
  measure<true>("ex2.approx.ftz.f32 (+FFMA)", p.multiProcessorCount, sink, cycles);
  measure<false>("fp32 FFMA", p.multiProcessorCount, sink, cycles);
  CK(cudaFree(sink));
  CK(cudaFree(cycles));
  return 0;
}
