/*
 * blas_sweep.cu — does cuBLAS's default pick leave time on the table for our products? For each
 * product shape the library runs (decoding batches and the forward, 972M shapes), it times
 * cublasGemmEx with CUBLAS_GEMM_DEFAULT (what csrc/cuda/gemm.cu calls) and every algorithm that
 * cublasLtMatmulAlgoGetHeuristic returns for the same problem, each as a CUDA graph of one call per
 * layer over distinct weight copies (so that, as in a decoding step, a layer's weights are not in
 * L2), and prints each one's time and its configuration. An experiment, not part of the library:
 *   nvcc -O2 -arch=sm_90 -o blas_sweep tools/device/blas_sweep.cu -lcublasLt -lcublas
 *   [SWEEP_ONLY=<parts of shapes' names, comma-separated>] [SWEEP_DIRTY_MB=N] [SWEEP_FORCE=1]
 *   ./blas_sweep [max algorithms (32)]
 */
#include <cublasLt.h>
#include <cublas_v2.h>
#include <cuda_bf16.h>
#include <cuda_runtime.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "device_check.h"
#include "probe_common.cuh"

struct Shape {
  const char *name;
  int out_f, in_f, n;
  bool bf16; /* bf16 weights and input; else fp32 with TF32 allowed */
  float beta = 0.f; /* 1: the product added to y in place (a forward's out_proj into the residual) */
  bool out_bf16 = false; /* y as bf16 (fp32 accumulation): in_proj writing xz for the conv and scan */
};

static const int LAYERS = 48;
static size_t g_ws_bytes = (size_t)32 << 20; /* the library's (MBCUDA_BLAS_WS, context.cu) */

/* A graph of `LAYERS` calls, replayed 4 times (probe_common.cuh's timer); us per call, the best
 * of 5 timings. */
template <typename F>
static double time_layers(cudaStream_t s, F &&launch_all) {
  return time_graph(s, 4, launch_all) / LAYERS;
}

static int cfg(const cublasLtMatmulAlgo_t *algo, cublasLtMatmulAlgoConfigAttributes_t at) {
  int v = -1;
  size_t w = 0;
  if (cublasLtMatmulAlgoConfigGetAttribute(algo, at, &v, sizeof v, &w) != CUBLAS_STATUS_SUCCESS) return -1;
  return v;
}

/* Whether `name` contains one of the comma-separated substrings of `only` (all when unset). */
static bool name_selected(const char *name, const char *only) {
  if (!only || !*only) return true;
  char buf[256];
  snprintf(buf, sizeof buf, "%s", only);
  for (char *t = strtok(buf, ","); t; t = strtok(NULL, ","))
    if (*t && strstr(name, t)) return true;
  return false;
}

int main(int argc, char **argv) {
  const int max_algos = argc > 1 ? atoi(argv[1]) : 32;
  const Shape shapes[] = {
      {"in_proj b8", 7168, 1792, 8, true},      {"in_proj b32", 7168, 1792, 32, true},
      {"in_proj b16", 7168, 1792, 16, true},    {"in_proj b64", 7168, 1792, 64, true},
      {"in_proj b128", 7168, 1792, 128, true},  {"in_proj b256", 7168, 1792, 256, true},
      {"out_proj b16", 1792, 3584, 16, true},   {"out_proj b64", 1792, 3584, 64, true},
      {"out_proj b128", 1792, 3584, 128, true}, {"out_proj b256", 1792, 3584, 256, true},
      {"x_proj b128", 144, 3584, 128, true},    {"x_proj b256", 144, 3584, 256, true},
      {"in_proj fwd8192", 7168, 1792, 8192, true}, {"out_proj fwd8192", 1792, 3584, 8192, true},
      {"x_proj fwd8192", 144, 3584, 8192, true},   {"dt_proj fwd8192", 3584, 112, 8192, true},
      {"in_proj fwd8192 tf32", 7168, 1792, 8192, false},
      {"out_proj fwd8192 tf32", 1792, 3584, 8192, false},
      /* the TF32 forward's small products: 72-74 and 45-49 us a layer in the forward's timeline
       * (cuda_bench --timeline-fwd), against ~28 us each of fp32 traffic at the copy rate */
      {"x_proj fwd8192 tf32", 144, 3584, 8192, false},
      {"dt_proj fwd8192 tf32", 3584, 112, 8192, false},
      {"out_proj fwd8192 +=", 1792, 3584, 8192, true, 1.f},
      {"in_proj fwd8192 -> bf16", 7168, 1792, 8192, true, 0.f, true},
      {"dt_proj fwd8192 -> bf16", 3584, 112, 8192, true, 0.f, true},
      {"out_proj fwd8192 tf32 +=", 1792, 3584, 8192, false, 1.f},
  };
  /* substrings of the shapes' names to run, comma-separated */
  const char *only = getenv("SWEEP_ONLY");
  const char *dirty_env = getenv("SWEEP_DIRTY_MB"), *force = getenv("SWEEP_FORCE");
  const size_t dirty = dirty_env ? (size_t)(atof(dirty_env) * 1e6) : 0;
  const bool forced = force && force[0] == '1';
  cudaStream_t s;
  CK(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking));
  cublasHandle_t h;
  BK(cublasCreate(&h));
  BK(cublasSetStream(h, s));
  cublasLtHandle_t lt;
  BK(cublasLtCreate(&lt));
  void *ws;
  CK(cudaMalloc(&ws, g_ws_bytes));
  BK(cublasSetWorkspace(h, ws, g_ws_bytes));
  int dev = 0;
  cudaDeviceProp prop;
  CK(cudaGetDeviceProperties(&prop, dev));
  printf("blas_sweep on %s, cuBLAS %d, cuBLASLt %zu; us per call (graph of %d layers' distinct weights)\n",
         prop.name, CUBLAS_VERSION, cublasLtGetVersion(), LAYERS);
  for (const Shape &sh : shapes) {
    if (!name_selected(sh.name, only)) continue;
    const size_t esz = sh.bf16 ? 2 : 4;
    const size_t wbytes = (size_t)sh.out_f * sh.in_f * esz;
    /* enough weight copies that a round does not fit in L2, at most LAYERS */
    int copies = (int)((size_t)400 * 1000000 / wbytes) + 1;
    if (copies > LAYERS) copies = LAYERS;
    if (copies < 2) copies = 2;
    if (sh.n >= 8192) copies = 2; /* compute-bound: the weights' place does not matter */
    char *w, *x;
    float *y;
    CK(cudaMalloc(&w, wbytes * copies));
    CK(cudaMalloc(&x, (size_t)sh.n * sh.in_f * esz));
    CK(cudaMalloc(&y, (size_t)sh.n * sh.out_f * 4));
    k_fill<<<1024, 256>>>((uint16_t *)w, wbytes * copies / 2, 1, 0x3c80); /* [-1/32, 1/32) */
    k_fill<<<1024, 256>>>((uint16_t *)x, (size_t)sh.n * sh.in_f * esz / 2, 2, 0x3c80);
    CK(cudaDeviceSynchronize());
    const float alpha = 1.f, beta = sh.beta;
    const cudaDataType_t dt = sh.bf16 ? CUDA_R_16BF : CUDA_R_32F;
    const cudaDataType_t yt = sh.out_bf16 ? CUDA_R_16BF : CUDA_R_32F;
    const cublasComputeType_t ct = sh.bf16 ? CUBLAS_COMPUTE_32F : CUBLAS_COMPUTE_32F_FAST_TF32;
    const double flop = 2.0 * sh.out_f * sh.in_f * sh.n;
    /* layer l's product with GemmEx's default pick (what csrc/cuda/gemm.cu calls) */
    const auto gemm_ex = [&](int l) {
      BK(cublasGemmEx(h, CUBLAS_OP_T, CUBLAS_OP_N, sh.out_f, sh.n, sh.in_f, &alpha, w + (l % copies) * wbytes, dt,
                      sh.in_f, x, dt, sh.in_f, &beta, y, yt, sh.out_f, ct, CUBLAS_GEMM_DEFAULT));
    };
    const double t_def = time_layers(s, [&] {
      for (int l = 0; l < LAYERS; l++) gemm_ex(l);
    });
    printf("\n%-22s out %d in %d n %d: GemmEx default %8.2f us (%.0f GB/s of weights, %.0f TFLOP/s)\n", sh.name,
           sh.out_f, sh.in_f, sh.n, t_def, wbytes / t_def / 1e3, flop / t_def / 1e6);
    fflush(stdout);
    /* SWEEP_DIRTY_MB=N: each product after N MB written (a memset), as a decoding step's in_proj
     * comes after the state update has written the layer's states: its time less the memsets'
     * alone says what the write-back of those lines from L2 costs the product */
    if (dirty > 0 && sh.n < 8192) {
      char *dbuf;
      CK(cudaMalloc(&dbuf, dirty * 2));
      const double t_mem = time_layers(s, [&] {
        for (int l = 0; l < LAYERS; l++) CK(cudaMemsetAsync(dbuf + (l % 2) * dirty, l & 0xff, dirty, s));
      });
      const double t_both = time_layers(s, [&] {
        for (int l = 0; l < LAYERS; l++) {
          CK(cudaMemsetAsync(dbuf + (l % 2) * dirty, l & 0xff, dirty, s));
          gemm_ex(l);
        }
      });
      printf("  after %.1f MB written: %8.2f us with the memset, %.2f us the memset alone, %.2f the product\n",
             dirty / 1e6, t_both, t_mem, t_both - t_mem);
      fflush(stdout);
      CK(cudaFree(dbuf));
    }
    /* Decoding batches: the inner dimension as a strided batch of `parts` products of its slices,
     * each writing its own partial (a consumer would sum them), as mb_linear_add_norm runs out_proj */
    if (sh.n < 8192 && sh.beta == 0.f && !sh.out_bf16 && sh.bf16) {
      float *yp;
      CK(cudaMalloc(&yp, (size_t)8 * sh.n * sh.out_f * 4));
      for (int parts = 2; parts <= 8; parts *= 2) {
        if (sh.in_f % (8 * parts)) continue;
        const int kp = sh.in_f / parts;
        const double t = time_layers(s, [&] {
          for (int l = 0; l < LAYERS; l++)
            BK(cublasGemmStridedBatchedEx(h, CUBLAS_OP_T, CUBLAS_OP_N, sh.out_f, sh.n, kp, &alpha,
                                          w + (l % copies) * wbytes, dt, sh.in_f, (long long)kp, x, dt,
                                          sh.in_f, (long long)kp, &beta, yp, CUDA_R_32F, sh.out_f,
                                          (long long)sh.n * sh.out_f, parts, ct, CUBLAS_GEMM_DEFAULT));
        });
        printf("  %d parts (strided batch)  %8.2f us (%5.3f of default, %.0f GB/s of weights)\n", parts, t,
               t / t_def, wbytes / t / 1e3);
        fflush(stdout);
      }
      CK(cudaFree(yp));
    }
    cublasLtMatmulDesc_t md;
    BK(cublasLtMatmulDescCreate(&md, ct, CUDA_R_32F));
    cublasOperation_t ta = CUBLAS_OP_T, tb = CUBLAS_OP_N;
    BK(cublasLtMatmulDescSetAttribute(md, CUBLASLT_MATMUL_DESC_TRANSA, &ta, sizeof ta));
    BK(cublasLtMatmulDescSetAttribute(md, CUBLASLT_MATMUL_DESC_TRANSB, &tb, sizeof tb));
    cublasLtMatrixLayout_t la, lb, lc;
    BK(cublasLtMatrixLayoutCreate(&la, dt, sh.in_f, sh.out_f, sh.in_f));
    BK(cublasLtMatrixLayoutCreate(&lb, dt, sh.in_f, sh.n, sh.in_f));
    BK(cublasLtMatrixLayoutCreate(&lc, yt, sh.out_f, sh.n, sh.out_f));
    cublasLtMatmulPreference_t pref;
    BK(cublasLtMatmulPreferenceCreate(&pref));
    BK(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &g_ws_bytes,
                                            sizeof g_ws_bytes));
    cublasLtMatmulHeuristicResult_t res[128];
    int got = 0;
    int want = max_algos < 128 ? max_algos : 128;
    BK(cublasLtMatmulAlgoGetHeuristic(lt, md, la, lb, lc, lc, pref, want, res, &got));
    /* the 48 layers' products on one cuBLASLt algorithm, us a call */
    const auto time_lt = [&](const cublasLtMatmulAlgo_t *algo) {
      return time_layers(s, [&] {
        for (int l = 0; l < LAYERS; l++)
          BK(cublasLtMatmul(lt, md, &alpha, w + (l % copies) * wbytes, la, x, lb, &beta, y, lc, y, lc,
                            algo, ws, g_ws_bytes, s));
      });
    };
    double best = 1e30;
    int best_i = -1;
    for (int i = 0; i < got; i++) {
      if (res[i].state != CUBLAS_STATUS_SUCCESS) continue;
      const double t = time_lt(&res[i].algo);
      const cublasLtMatmulAlgo_t *a = &res[i].algo;
      printf("  lt#%-2d %8.2f us (%5.3f of default)  id %d tile %d splitK %d red %d swz %d stages %d cluster %d ws %zu waves %.2f\n",
             i, t, t / t_def, cfg(a, CUBLASLT_ALGO_CONFIG_ID), cfg(a, CUBLASLT_ALGO_CONFIG_TILE_ID),
             cfg(a, CUBLASLT_ALGO_CONFIG_SPLITK_NUM), cfg(a, CUBLASLT_ALGO_CONFIG_REDUCTION_SCHEME),
             cfg(a, CUBLASLT_ALGO_CONFIG_CTA_SWIZZLING), cfg(a, CUBLASLT_ALGO_CONFIG_STAGES_ID),
             cfg(a, CUBLASLT_ALGO_CONFIG_CLUSTER_SHAPE_ID), res[i].workspaceSize, res[i].wavesCount);
      fflush(stdout);
      if (t < best) best = t, best_i = i;
    }
    /* SWEEP_FORCE=1: each heuristic algorithm again with its split-K count and its tile forced to
     * every value its capabilities allow (more CTAs for a skinny product), each checked by
     * cublasLtMatmulAlgoCheck before it is timed */
    for (int i = 0; forced && i < got; i++) {
      if (res[i].state != CUBLAS_STATUS_SUCCESS) continue;
      int splitk_cap = 0, tiles[64];
      size_t cap_bytes = 0;
      cublasLtMatmulAlgoCapGetAttribute(&res[i].algo, CUBLASLT_ALGO_CAP_SPLITK_SUPPORT, &splitk_cap,
                                        sizeof splitk_cap, &cap_bytes);
      size_t tb = 0;
      int ntiles = 0;
      if (cublasLtMatmulAlgoCapGetAttribute(&res[i].algo, CUBLASLT_ALGO_CAP_TILE_IDS, tiles,
                                            sizeof tiles, &tb) == CUBLAS_STATUS_SUCCESS)
        ntiles = (int)(tb / sizeof(int));
      if (ntiles > 64) ntiles = 64;
      printf("  lt#%-2d forced: split-K %s, %d tiles\n", i, splitk_cap ? "allowed" : "not allowed", ntiles);
      const int splits[] = {1, 2, 3, 4, 6, 8, 12, 16};
      for (int ti = -1; ti < ntiles; ti++) {
        for (int si = 0; si < 8; si++) {
          if (!splitk_cap && splits[si] > 1) continue;
          if (ti < 0 && splits[si] == 1) continue; /* the heuristic's own, timed above */
          cublasLtMatmulAlgo_t a = res[i].algo;
          if (ti >= 0 &&
              cublasLtMatmulAlgoConfigSetAttribute(&a, CUBLASLT_ALGO_CONFIG_TILE_ID, &tiles[ti],
                                                   sizeof(int)) != CUBLAS_STATUS_SUCCESS)
            continue;
          if (cublasLtMatmulAlgoConfigSetAttribute(&a, CUBLASLT_ALGO_CONFIG_SPLITK_NUM, &splits[si],
                                                   sizeof(int)) != CUBLAS_STATUS_SUCCESS)
            continue;
          cublasLtMatmulHeuristicResult_t chk;
          if (cublasLtMatmulAlgoCheck(lt, md, la, lb, lc, lc, &a, &chk) != CUBLAS_STATUS_SUCCESS ||
              chk.workspaceSize > g_ws_bytes)
            continue;
          const double t = time_lt(&a);
          printf("    forced lt#%d tile %d splitK %d red %d: %8.2f us (%5.3f of default) waves %.2f\n", i,
                 cfg(&a, CUBLASLT_ALGO_CONFIG_TILE_ID), cfg(&a, CUBLASLT_ALGO_CONFIG_SPLITK_NUM),
                 cfg(&a, CUBLASLT_ALGO_CONFIG_REDUCTION_SCHEME), t, t / t_def, chk.wavesCount);
          fflush(stdout);
          if (t < best) best = t, best_i = 1000 + i; /* 1000 +: a forced form of lt#i */
        }
      }
    }
    printf("  best: lt#%d%s %.2f us, %.3f of the default (%d algorithms)\n", best_i % 1000,
           best_i >= 1000 ? " forced" : "", best, best / t_def, got);
    BK(cublasLtMatmulPreferenceDestroy(pref));
    BK(cublasLtMatrixLayoutDestroy(la));
    BK(cublasLtMatrixLayoutDestroy(lb));
    BK(cublasLtMatrixLayoutDestroy(lc));
    BK(cublasLtMatmulDescDestroy(md));
    CK(cudaFree(w));
    CK(cudaFree(x));
    CK(cudaFree(y));
  }
  return 0;
}
