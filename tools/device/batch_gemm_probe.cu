/*
 * batch_gemm_probe.cu — can a product of our own stream a decoding batch's weights faster than
 * cuBLAS? At 64 sequences cuBLAS runs in_proj (64 x 1792 -> 7168, bf16) and out_proj (64 x 3584 ->
 * 1792) at ~0.55-0.6 of the copy rate, and the two rings of our own built before streamed at ~1.4-2
 * TB/s ("in_proj and out_proj's parts at decoding batches on a ring of weight stages",
 * docs/cuda_notes.md): many small copies a stage, rows 3,584 bytes apart. This probe takes the step
 * that note left untried: weights laid out at load in 64 x 64 tiles (8 KB, contiguous, their
 * 16-byte chunks swizzled so that ldmatrix meets no bank twice), so that a stage is two bulk copies
 * of 8 KB (a weight tile and the matching tile of x), STAGES stages in flight, a producer warp and
 * four mma.sync warps a CTA, one CTA an SM; out_proj's inner dimension split over 4 CTAs, the
 * partials summed by a second kernel in a fixed order. It checks both products against a plain
 * fp32 reference, then times each (a graph of 48 calls over 48 weight copies, as a step's layers,
 * so no layer's weights are in L2) against cublasGemmEx's default on the same data and against the
 * device's copy rate. An experiment, not part of the library:
 *   nvcc -O3 -arch=sm_90 -Itools/device -o batch_gemm_probe tools/device/batch_gemm_probe.cu \
 *     -lcublas && timeout 120 ./batch_gemm_probe
 */
#include <cublas_v2.h>
#include <cuda_bf16.h>
#include <cuda_runtime.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#include "device_check.h"
#include "probe_common.cuh"

#define MROWS 64  /* the batch: every CTA's x tile holds all of it */
#define TN 64     /* weight rows (outputs) a tile */
#define TK 64     /* inputs a tile */
#define TILE (TN * TK)   /* elements of a tile: 8 KB of bf16 */
#define CONSUMERS 4      /* mma warps: 16 weight rows each */
#define THREADS ((CONSUMERS + 1) * 32)
#define LAYERS 48

/* tiles in probe_common.cuh's tile_at layout (64 x 64: TN = TK = 64) */
static_assert(TN == 64 && TK == 64, "tile_at's tiles");

/* rows x cols row-major -> tiles [rows / TN][cols / TK], each tile_at-ordered */
__global__ void k_to_tiles(const uint16_t *src, int rows, int cols, uint16_t *dst) {
  const size_t n = (size_t)rows * cols;
  for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n;
       i += (size_t)gridDim.x * blockDim.x) {
    const int r = (int)(i / cols), k = (int)(i % cols);
    const size_t t = (size_t)(r / TN) * (cols / TK) + k / TK;
    dst[t * TILE + tile_at(r % TN, k % TK)] = src[i];
  }
}

/* Grid (N / TN, split): CTA (n, s) takes weight tile row n and the s-th of `split` slices of the
 * inner tiles; y (split 1) or part[s] (64 x N fp32 each) gets its sums. Warp CONSUMERS is the
 * producer (its lane 0 issues every stage); consumer warp w owns weight rows 16 w to 16 w + 15 of
 * the tile against all 64 batch rows (8 n8 tiles, 32 accumulators a thread). */
template <int STAGES>
__global__ void __launch_bounds__(THREADS, 1)
    k_probe(const uint16_t *__restrict__ wt, const uint16_t *__restrict__ xt, int N, int K,
            float *__restrict__ y) {
  extern __shared__ __align__(128) uint16_t sm[];
  __shared__ __align__(8) uint64_t full[STAGES], empty[STAGES];
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  const int kt_all = K / TK, split = gridDim.y;
  const int kt0 = blockIdx.y * kt_all / split, kt1 = (blockIdx.y + 1) * kt_all / split;
  const int nk = kt1 - kt0;
  if (threadIdx.x == 0) {
    /* full: the stage's two bulk copies (an arrival each); empty: the consumer warps */
    for (int s = 0; s < STAGES; s++) mbar_init(&full[s], 2), mbar_init(&empty[s], CONSUMERS);
  }
  __syncthreads();
  if (warp == CONSUMERS) {
    if (lane == 0) {
      const uint16_t *wrow = wt + (size_t)blockIdx.x * kt_all * TILE;
      for (int i = 0; i < nk; i++) {
        const int s = i % STAGES;
        if (i >= STAGES) mbar_wait(&empty[s], (unsigned)(i / STAGES - 1) & 1u);
        uint16_t *const dst = sm + (size_t)s * 2 * TILE;
        bulk_load(dst, wrow + (size_t)(kt0 + i) * TILE, TILE * 2, &full[s]);
        bulk_load(dst + TILE, xt + (size_t)(kt0 + i) * TILE, TILE * 2, &full[s]);
      }
    }
    return;
  }
  float acc[8][4];
#pragma unroll
  for (int j = 0; j < 8; j++) acc[j][0] = acc[j][1] = acc[j][2] = acc[j][3] = 0.f;
  for (int i = 0; i < nk; i++) {
    const int s = i % STAGES;
    mbar_wait(&full[s], (unsigned)(i / STAGES) & 1u);
    const uint16_t *wtile = sm + (size_t)s * 2 * TILE, *xtile = wtile + TILE;
    mma_rows16_x64(wtile, 16 * warp, xtile, acc);
    __syncwarp();
    if (lane == 0) mbar_arrive(&empty[s]);
  }
  /* y[b][n]: the warp's 16 weight rows against the 64 batch rows */
  store_acc_t(y + (size_t)blockIdx.y * MROWS * N, N, blockIdx.x * TN + 16 * warp, acc);
}

/* y = the split's partials summed in order */
__global__ void k_sum_parts(const float *part, int split, size_t n, float *y) {
  for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n;
       i += (size_t)gridDim.x * blockDim.x) {
    float s = part[i];
    for (int p = 1; p < split; p++) s += part[(size_t)p * n + i];
    y[i] = s;
  }
}

/* the largest relative difference of a against the reference r over n values (against r's
 * largest magnitude, as cuda_vs_cpu's rel_err) */
static double rel_diff(const float *a, const float *r, size_t n) {
  double m = 0.0, d = 0.0;
  for (size_t i = 0; i < n; i++) m = fmax(m, fabs((double)r[i]));
  for (size_t i = 0; i < n; i++) d = fmax(d, fabs((double)a[i] - r[i]));
  return m > 0 ? d / m : d;
}

struct Case {
  const char *name;
  int N, K, split;
};

/* sum: the split's partials summed into y (else left in part, as the library's out_proj leaves
 * its parts for the next norm's kernel to sum) */
template <int STAGES>
static void launch_probe(cudaStream_t st, const uint16_t *wt, const uint16_t *xt, const Case &c,
                         float *y, float *part, bool sum = true) {
  const size_t smem = (size_t)STAGES * 2 * TILE * 2;
  k_probe<STAGES><<<dim3(c.N / TN, c.split), THREADS, smem, st>>>(wt, xt, c.N, c.K,
                                                                 c.split > 1 ? part : y);
  if (c.split > 1 && sum) k_sum_parts<<<264, 256, 0, st>>>(part, c.split, (size_t)MROWS * c.N, y);
}

template <int STAGES>
static void run_stages(cudaStream_t st, const Case &c, uint16_t *const *wts, const uint16_t *xt,
                       float *y, float *part, float *h, const float *href, double copy_tbs) {
  CK(cudaFuncSetAttribute(k_probe<STAGES>, cudaFuncAttributeMaxDynamicSharedMemorySize,
                          STAGES * 2 * TILE * 2));
  const size_t ny = (size_t)MROWS * c.N;
  launch_probe<STAGES>(st, wts[0], xt, c, y, part);
  CK(cudaGetLastError()); /* a launch the device refused (its shared memory) */
  CK(cudaStreamSynchronize(st));
  CK(cudaMemcpy(h, y, ny * 4, cudaMemcpyDeviceToHost));
  const double err = rel_diff(h, href, ny);
  const double us = time_graph(st, 20, [&] {
                      for (int l = 0; l < LAYERS; l++)
                        launch_probe<STAGES>(st, wts[l], xt, c, y, part);
                    }) / LAYERS;
  const double gbs = (double)c.N * c.K * 2 / (us * 1e-6) / 1e12;
  printf("%-9s probe, %2d stages x 16 KB: %7.2f us a call, weights at %.2f TB/s (%.2f of the "
         "copy rate), rel. diff %.1e %s\n",
         c.name, STAGES, us, gbs, gbs / copy_tbs, err, err < 1e-4 ? "ok" : "FAILED");
  if (c.split > 1) {
    const double up = time_graph(st, 20, [&] {
                        for (int l = 0; l < LAYERS; l++)
                          launch_probe<STAGES>(st, wts[l], xt, c, y, part, false);
                      }) / LAYERS;
    printf("%-9s   ... its %d partials left unsummed: %7.2f us a call\n", c.name, c.split, up);
  }
}

int main() {
  int dev = 0;
  cudaDeviceProp prop;
  CK(cudaGetDeviceProperties(&prop, dev));
  printf("batch_gemm_probe: %s, %d SMs\n", prop.name, prop.multiProcessorCount);
  if (prop.major < 9) {
    printf("needs sm_90 (bulk copies)\n");
    return 1;
  }
  cudaStream_t st;
  CK(cudaStreamCreate(&st));
  cublasHandle_t hb = cublas_for(st);

  const double copy_tbs = copy_rate(st);

  /* in_proj also split in two (224 CTAs: two an SM where the stages fit, 6 x 16 KB) */
  const Case cases[] = {
      {"in_proj", 7168, 1792, 1}, {"in_proj/2", 7168, 1792, 2}, {"out_proj", 1792, 3584, 4}};
  for (const Case &c : cases) {
    const size_t nw = (size_t)c.N * c.K, nx = (size_t)MROWS * c.K, ny = (size_t)MROWS * c.N;
    uint16_t *w[LAYERS], *wt[LAYERS], *x, *xt;
    for (int l = 0; l < LAYERS; l++) {
      CK(cudaMalloc(&w[l], nw * 2));
      CK(cudaMalloc(&wt[l], nw * 2));
      k_fill<<<1024, 256, 0, st>>>(w[l], nw, 1234u + l, 0x3c80); /* |w| in [1/64, 1/32) */
      k_to_tiles<<<1024, 256, 0, st>>>(w[l], c.N, c.K, wt[l]);
    }
    CK(cudaMalloc(&x, nx * 2));
    CK(cudaMalloc(&xt, nx * 2));
    k_fill<<<256, 256, 0, st>>>(x, nx, 99u, 0x3f00); /* |x| in [0.5, 1) */
    k_to_tiles<<<256, 256, 0, st>>>(x, MROWS, c.K, xt);
    float *y, *yref, *part;
    CK(cudaMalloc(&y, ny * 4));
    CK(cudaMalloc(&yref, ny * 4));
    CK(cudaMalloc(&part, ny * 4 * c.split));
    k_ref<<<dim3((c.N + 127) / 128, MROWS), 128, 0, st>>>(x, c.K, w[0], c.N, c.K, yref);
    CK(cudaStreamSynchronize(st));
    CK(cudaGetLastError());
    float *h = (float *)malloc(ny * 4), *href = (float *)malloc(ny * 4);
    CK(cudaMemcpy(href, yref, ny * 4, cudaMemcpyDeviceToHost));

    /* cuBLAS as the library calls it: y^T (N x 64) = W (row-major N x K, op T) x^T */
    const float one = 1.f, zero = 0.f;
    const auto gemm = [&](const uint16_t *wl) {
      BK(cublasGemmEx(hb, CUBLAS_OP_T, CUBLAS_OP_N, c.N, MROWS, c.K, &one, wl, CUDA_R_16BF, c.K,
                      x, CUDA_R_16BF, c.K, &zero, y, CUDA_R_32F, c.N, CUBLAS_COMPUTE_32F,
                      CUBLAS_GEMM_DEFAULT));
    };
    gemm(w[0]);
    CK(cudaStreamSynchronize(st));
    CK(cudaMemcpy(h, y, ny * 4, cudaMemcpyDeviceToHost));
    const double err = rel_diff(h, href, ny);
    const double us = time_graph(st, 20, [&] {
                        for (int l = 0; l < LAYERS; l++) gemm(w[l]);
                      }) / LAYERS;
    const double gbs = (double)nw * 2 / (us * 1e-6) / 1e12;
    printf("%-9s cuBLAS GemmEx (64 x %d -> %d, bf16): %7.2f us a call, weights at %.2f TB/s "
           "(%.2f of the copy rate), rel. diff %.1e\n",
           c.name, c.K, c.N, us, gbs, gbs / copy_tbs, err);
    run_stages<6>(st, c, wt, xt, y, part, h, href, copy_tbs);
    run_stages<8>(st, c, wt, xt, y, part, h, href, copy_tbs);
    run_stages<12>(st, c, wt, xt, y, part, h, href, copy_tbs);
    for (int l = 0; l < LAYERS; l++) {
      CK(cudaFree(w[l]));
      CK(cudaFree(wt[l]));
    }
    CK(cudaFree(x));
    CK(cudaFree(xt));
    CK(cudaFree(y));
    CK(cudaFree(yref));
    CK(cudaFree(part));
    free(h);
    free(href);
  }
  return 0;
}
