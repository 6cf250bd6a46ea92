/*
 * dtproj_probe.cu — the forward's dt_proj against a product of our own. Over 8192 positions of
 * the 972M shape, dt_proj is x_dbl's first 112 columns (bf16) times its 3,584 x 112 weights,
 * written as 59 MB of bf16 delta: a product whose time is its output's traffic (~14 us at the
 * H200's copy rate), which cuBLAS's kernel took ~30 us of on an H100 (docs/cuda_notes.md, "Each
 * missed target against the sum of its ops' floors"). The probe: a CTA a 128 x 128 tile of delta,
 * the whole inner dimension (112) of both operands staged at once by cp.async into rows padded to
 * 240 bytes (so an ldmatrix phase meets every bank once), eight mma.sync warps of 64 x 32 each, the
 * tile rounded to bf16 and stored through shared memory as whole 128-byte lines; two CTAs an SM,
 * so one's stores overlap the other's loads. It checks the result against an fp32 reference
 * (within a bf16 rounding) and times it against cublasGemmEx's default (bf16 out, fp32 compute, as
 * the library calls it) and the copy rate, each as a graph of 48 calls over 48 weight and input
 * copies. An experiment, not part of the library:
 *   nvcc -O3 -arch=sm_90 -Itools/device -o dtproj_probe tools/device/dtproj_probe.cu -lcublas \
 *     && timeout 120 ./dtproj_probe
 */
#include <cublas_v2.h>
#include <cuda_bf16.h>
#include <cuda_runtime.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "device_check.h"
#include "probe_common.cuh"

#define M_ALL 8192  /* positions */
#define N_ALL 3584  /* d_inner */
#define KD 112      /* dt_rank */
#define BM 128
#define BN 128
#define PITCH 120   /* a staged row: 112 values + 8 (240 bytes: 15 chunks, odd, so 8 rows' chunks
                     * fall on distinct banks) */
#define OPITCH 136  /* an output row in shared memory: 128 + 8 bf16 (272 bytes) */
#define THREADS 256
#define LAYERS 48

/* a 16-byte cp.async through L2 (the library's cp_async16_cg, whose header needs the library's) */
__device__ __forceinline__ void cp16(void *dst, const void *src) {
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16;" ::"r"(smem_u32(dst)), "l"(src)
               : "memory");
}

/* Grid (N_ALL / BN, M_ALL / BM). x: rows of ldx bf16 (x_dbl's first KD columns), w: N_ALL x KD,
 * y: M_ALL x N_ALL bf16. Warp w: rows 64 (w / 4) .. +63 of the tile (4 m16 tiles), columns
 * 32 (w % 4) .. +31 (4 n8 tiles). */
__global__ void __launch_bounds__(THREADS, 2)
    k_dtproj(const uint16_t *__restrict__ x, int ldx, const uint16_t *__restrict__ w,
             uint16_t *__restrict__ y) {
  extern __shared__ __align__(16) uint16_t sm[];
  uint16_t *const As = sm, *const Bs = sm + BM * PITCH;
  const int m0 = blockIdx.y * BM, n0 = blockIdx.x * BN;
  /* stage: 128 rows x 14 chunks of 16 bytes each operand */
  for (int i = threadIdx.x; i < BM * (KD / 8); i += THREADS) {
    const int r = i / (KD / 8), c = i % (KD / 8);
    cp16(As + r * PITCH + 8 * c, x + (size_t)(m0 + r) * ldx + 8 * c);
    cp16(Bs + r * PITCH + 8 * c, w + (size_t)(n0 + r) * KD + 8 * c);
  }
  asm volatile("cp.async.commit_group;\ncp.async.wait_all;" ::: "memory");
  __syncthreads();
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  const int wm = 64 * (warp >> 2), wn = 32 * (warp & 3), mi = lane >> 3, mr = lane & 7;
  float acc[4][4][4] = {};
#pragma unroll
  for (int kk = 0; kk < KD / 16; kk++) {
    unsigned a[4][4], b[2][4];
#pragma unroll
    for (int i = 0; i < 4; i++) /* A: rows mr (+8 for matrices 1, 3), chunk 2 kk (+1 for 2, 3) */
      ldsm4(smem_u32(As + (wm + 16 * i + mr + 8 * (mi & 1)) * PITCH + 8 * (2 * kk + (mi >> 1))),
            a[i]);
#pragma unroll
    for (int p = 0; p < 2; p++) /* B: n rows mr (+8 for 2, 3), chunk 2 kk (+1 for 1, 3) */
      ldsm4(smem_u32(Bs + (wn + 16 * p + mr + 8 * (mi >> 1)) * PITCH + 8 * (2 * kk + (mi & 1))),
            b[p]);
#pragma unroll
    for (int i = 0; i < 4; i++)
#pragma unroll
      for (int p = 0; p < 2; p++) {
        mma16816(acc[i][2 * p], a[i], b[p][0], b[p][1]);
        mma16816(acc[i][2 * p + 1], a[i], b[p][2], b[p][3]);
      }
  }
  __syncthreads(); /* the operands are read: their space holds the output tile */
  uint16_t *const Os = sm;
  const int g = lane >> 2, t = lane & 3;
#pragma unroll
  for (int i = 0; i < 4; i++)
#pragma unroll
    for (int j = 0; j < 4; j++) {
      const int r = wm + 16 * i + g, c = wn + 8 * j + 2 * t;
      __nv_bfloat162 v0 = __floats2bfloat162_rn(acc[i][j][0], acc[i][j][1]);
      __nv_bfloat162 v1 = __floats2bfloat162_rn(acc[i][j][2], acc[i][j][3]);
      *(__nv_bfloat162 *)(Os + r * OPITCH + c) = v0;
      *(__nv_bfloat162 *)(Os + (r + 8) * OPITCH + c) = v1;
    }
  __syncthreads();
  /* 128 rows of 256 bytes: 16 chunks a row, whole lines */
  for (int i = threadIdx.x; i < BM * (BN / 8); i += THREADS) {
    const int r = i / (BN / 8), c = i % (BN / 8);
    *(uint4 *)(y + (size_t)(m0 + r) * N_ALL + n0 + 8 * c) =
        *(const uint4 *)(Os + r * OPITCH + 8 * c);
  }
}

/* the largest difference of bf16 results a from the fp32 reference r, in units of r's largest
 * magnitude */
static double rel_diff_bf16(const uint16_t *a, const float *r, size_t n) {
  double m = 0.0, d = 0.0;
  for (size_t i = 0; i < n; i++) m = fmax(m, fabs((double)r[i]));
  for (size_t i = 0; i < n; i++) {
    uint32_t u = (uint32_t)a[i] << 16;
    float v;
    memcpy(&v, &u, 4);
    d = fmax(d, fabs((double)v - r[i]));
  }
  return m > 0 ? d / m : d;
}

int main() {
  cudaDeviceProp prop;
  CK(cudaGetDeviceProperties(&prop, 0));
  printf("dtproj_probe: %s, %d SMs; delta = x_dbl[:, :%d] (bf16, %d x %d) x W^T (%d x %d), bf16\n",
         prop.name, prop.multiProcessorCount, KD, M_ALL, KD, N_ALL, KD);
  cudaStream_t st;
  CK(cudaStreamCreate(&st));
  cublasHandle_t hb = cublas_for(st);

  const double copy_tbs = copy_rate(st);

  /* x as x_dbl's rows (144 bf16 columns, of which dt_proj reads the first 112), as a forward's */
  const int ldx = 144;
  const size_t nx = (size_t)M_ALL * ldx, nw = (size_t)N_ALL * KD, ny = (size_t)M_ALL * N_ALL;
  uint16_t *x[LAYERS], *w[LAYERS], *y;
  for (int l = 0; l < LAYERS; l++) {
    CK(cudaMalloc(&x[l], nx * 2));
    CK(cudaMalloc(&w[l], nw * 2));
    k_fill<<<512, 256, 0, st>>>(x[l], nx, 77u + l, 0x3f00);  /* |x| in [0.5, 1) */
    k_fill<<<512, 256, 0, st>>>(w[l], nw, 555u + l, 0x3c80); /* |w| in [1/64, 1/32) */
  }
  CK(cudaMalloc(&y, ny * 2));
  float *yref;
  CK(cudaMalloc(&yref, ny * 4));
  k_ref<<<dim3(N_ALL / 128, M_ALL), 128, 0, st>>>(x[0], ldx, w[0], N_ALL, KD, yref);
  CK(cudaStreamSynchronize(st));
  CK(cudaGetLastError());
  float *href = (float *)malloc(ny * 4);
  uint16_t *h = (uint16_t *)malloc(ny * 2);
  CK(cudaMemcpy(href, yref, ny * 4, cudaMemcpyDeviceToHost));
  const double out_bytes = (double)ny * 2;

  /* cuBLAS: delta^T (N x M, bf16) = W (row-major N x K, op T) x x^T (ld 144) */
  const float one = 1.f, zero = 0.f;
  const auto gemm = [&](int l) {
    BK(cublasGemmEx(hb, CUBLAS_OP_T, CUBLAS_OP_N, N_ALL, M_ALL, KD, &one, w[l], CUDA_R_16BF, KD,
                    x[l], CUDA_R_16BF, ldx, &zero, y, CUDA_R_16BF, N_ALL, CUBLAS_COMPUTE_32F,
                    CUBLAS_GEMM_DEFAULT));
  };
  gemm(0);
  CK(cudaStreamSynchronize(st));
  CK(cudaMemcpy(h, y, ny * 2, cudaMemcpyDeviceToHost));
  double err = rel_diff_bf16(h, href, ny);
  double us = time_graph(st, 10, [&] {
                for (int l = 0; l < LAYERS; l++) gemm(l);
              }) / LAYERS;
  printf("cuBLAS GemmEx: %7.2f us a call, delta written at %.2f TB/s (%.2f of the copy rate), "
         "rel. diff %.1e\n",
         us, out_bytes / (us * 1e-6) / 1e12, out_bytes / (us * 1e-6) / 1e12 / copy_tbs, err);

  const size_t smem = (size_t)2 * BM * PITCH * 2; /* 61,440 bytes; the output tile reuses it */
  static_assert(BM * OPITCH <= 2 * BM * PITCH, "the output tile fits the operands' space");
  CK(cudaFuncSetAttribute(k_dtproj, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)smem));
  const auto probe = [&](int l) {
    k_dtproj<<<dim3(N_ALL / BN, M_ALL / BM), THREADS, smem, st>>>(x[l], ldx, w[l], y);
  };
  probe(0);
  CK(cudaGetLastError());
  CK(cudaStreamSynchronize(st));
  CK(cudaMemcpy(h, y, ny * 2, cudaMemcpyDeviceToHost));
  err = rel_diff_bf16(h, href, ny);
  us = time_graph(st, 10, [&] {
         for (int l = 0; l < LAYERS; l++) probe(l);
       }) / LAYERS;
  printf("probe:         %7.2f us a call, delta written at %.2f TB/s (%.2f of the copy rate), "
         "rel. diff %.1e %s\n",
         us, out_bytes / (us * 1e-6) / 1e12, out_bytes / (us * 1e-6) / 1e12 / copy_tbs, err,
         err < 1e-2 ? "ok" : "FAILED");
  return 0;
}
