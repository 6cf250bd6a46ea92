/*
 * cublas_pdl_probe.cu — do cuBLAS's kernels wait for the kernel before them when a graph lets them
 * start early (a programmatic edge)? The backend's graphs let our kernels start under cuBLAS's
 * (context.cu, rewrite_foreign_edges: ours wait), never cuBLAS's under ours unless this says so.
 *
 * For each product the decoding batches and the forward run, a graph is captured: a memset of the
 * product's input, a one-block kernel that triggers its dependents at entry, spins SPIN us and only
 * then writes the input, then the cuBLAS call. The edge from that kernel into cuBLAS's first
 * kernel is made programmatic, so cuBLAS's kernel is launched while the input is still zero. Its
 * output equals the product of the real input only if it waits (griddepcontrol.wait) before it
 * reads; else it is the product of zeros. Prints one line a case, and the edge type the capture
 * gave the edge from the product into a PDL launch after it (what the backend's rewriting finds).
 * On the H200 with cuBLAS 13 (2026-12-03) every bf16 decoding-batch case printed DOES NOT WAIT.
 *
 *   nvcc -arch=sm_90 -O2 -o probe tools/device/cublas_pdl_probe.cu -lcublas && ./probe
 */
#include <cublas_v2.h>
#include <cuda_bf16.h>
#include <cuda_runtime.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "device_check.h"

static const long long SPIN_NS = 300000;

/* triggers at entry, spins, then copies src into dst (bytes) */
__global__ void k_late_copy(const unsigned char *src, unsigned char *dst, size_t bytes) {
  asm volatile("griddepcontrol.launch_dependents;" ::: "memory");
  if (threadIdx.x == 0) {
    unsigned long long t0, t;
    asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(t0));
    do asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(t)); while (t - t0 < SPIN_NS);
  }
  __syncthreads();
  for (size_t i = threadIdx.x; i < bytes; i += blockDim.x) dst[i] = src[i];
}

/* a PDL kernel after the product (as ours are): its waiting makes the capture's edge visible */
__global__ void k_after(float *p) {
  asm volatile("griddepcontrol.wait;" ::: "memory");
  if (threadIdx.x == 0) p[0] += 0.f;
}

struct Case {
  const char *name;
  int rows, in_f, out_f, parts; /* parts > 1: the strided batch over in_f (mb_linear_add_norm) */
  bool f32;                     /* fp32 weights and input, TF32 allowed */
};

static cublasHandle_t H;

static void product(const Case &c, const void *x, const void *w, float *y, cudaStream_t s) {
  BK(cublasSetStream(H, s));
  const float one = 1.f, zero = 0.f;
  const cudaDataType_t t = c.f32 ? CUDA_R_32F : CUDA_R_16BF;
  const cublasComputeType_t ct = c.f32 ? CUBLAS_COMPUTE_32F_FAST_TF32 : CUBLAS_COMPUTE_32F;
  if (c.parts > 1) {
    const int kp = c.in_f / c.parts;
    BK(cublasGemmStridedBatchedEx(H, CUBLAS_OP_T, CUBLAS_OP_N, c.out_f, c.rows, kp, &one, w, t,
                                  c.in_f, kp, x, t, c.in_f, kp, &zero, y, CUDA_R_32F, c.out_f,
                                  (long long)c.rows * c.out_f, c.parts, ct, CUBLAS_GEMM_DEFAULT));
  } else {
    BK(cublasGemmEx(H, CUBLAS_OP_T, CUBLAS_OP_N, c.out_f, c.rows, c.in_f, &one, w, t, c.in_f, x,
                    t, c.in_f, &zero, y, CUDA_R_32F, c.out_f, ct, CUBLAS_GEMM_DEFAULT));
  }
}

/* whether kernel node n runs f (cuBLAS's nodes, launched through the driver, fail the query:
 * its error is cleared, or the next launch would report it) */
static bool runs(cudaGraphNode_t n, const void *f) {
  cudaKernelNodeParams p;
  if (cudaGraphKernelNodeGetParams(n, &p) != cudaSuccess) {
    (void)cudaGetLastError();
    return false;
  }
  return p.func == f;
}

/* n uniform values in [-0.5, 0.5], as floats or as bf16 */
static void fill_random(unsigned char *p, size_t n, bool f32) {
  for (size_t i = 0; i < n; i++) {
    const float v = (float)rand() / RAND_MAX - 0.5f;
    if (f32) ((float *)p)[i] = v;
    else ((__nv_bfloat16 *)p)[i] = __float2bfloat16(v);
  }
}

static void run(const Case &c) {
  const size_t es = c.f32 ? 4 : 2;
  const size_t xb = (size_t)c.rows * c.in_f * es, wb = (size_t)c.out_f * c.in_f * es;
  const size_t yn = (size_t)c.rows * c.out_f * (c.parts > 1 ? c.parts : 1);
  unsigned char *hx = (unsigned char *)malloc(xb), *hw = (unsigned char *)malloc(wb);
  srand(7);
  fill_random(hx, xb / es, c.f32);
  fill_random(hw, wb / es, c.f32);
  unsigned char *src, *x, *w;
  float *y, *yref, *side;
  CK(cudaMalloc(&src, xb));
  CK(cudaMalloc(&x, xb));
  CK(cudaMalloc(&w, wb));
  CK(cudaMalloc(&y, yn * 4));
  CK(cudaMalloc(&yref, yn * 4));
  CK(cudaMalloc(&side, 4));
  CK(cudaMemcpy(src, hx, xb, cudaMemcpyHostToDevice));
  CK(cudaMemcpy(x, hx, xb, cudaMemcpyHostToDevice));
  CK(cudaMemcpy(w, hw, wb, cudaMemcpyHostToDevice));
  cudaStream_t s;
  CK(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking));
  product(c, x, w, yref, s);
  CK(cudaStreamSynchronize(s));

  CK(cudaStreamBeginCapture(s, cudaStreamCaptureModeThreadLocal));
  CK(cudaMemsetAsync(x, 0, xb, s));
  k_late_copy<<<1, 256, 0, s>>>(src, x, xb);
  CK(cudaGetLastError());
  product(c, x, w, y, s);
  cudaLaunchConfig_t cfg = {};
  cfg.gridDim = dim3(1);
  cfg.blockDim = dim3(32);
  cfg.stream = s;
  cudaLaunchAttribute at[1];
  at[0].id = cudaLaunchAttributeProgrammaticStreamSerialization;
  at[0].val.programmaticStreamSerializationAllowed = 1;
  cfg.attrs = at;
  cfg.numAttrs = 1;
  CK(cudaLaunchKernelEx(&cfg, k_after, side));
  cudaGraph_t g;
  CK(cudaStreamEndCapture(s, &g));

  size_t ne = 0;
  CK(cudaGraphGetEdges(g, NULL, NULL, NULL, &ne));
  cudaGraphNode_t *from = (cudaGraphNode_t *)malloc(ne * sizeof *from);
  cudaGraphNode_t *to = (cudaGraphNode_t *)malloc(ne * sizeof *to);
  cudaGraphEdgeData *ed = (cudaGraphEdgeData *)malloc(ne * sizeof *ed);
  CK(cudaGraphGetEdges(g, from, to, ed, &ne));
  int changed = 0, kernels = 0;
  for (size_t i = 0; i < ne; i++) {
    cudaGraphNodeType tf, tt;
    CK(cudaGraphNodeGetType(from[i], &tf));
    CK(cudaGraphNodeGetType(to[i], &tt));
    const bool from_late = tf == cudaGraphNodeTypeKernel && runs(from[i], (void *)k_late_copy);
    const bool to_after = tt == cudaGraphNodeTypeKernel && runs(to[i], (void *)k_after);
    if (tt == cudaGraphNodeTypeKernel && !to_after) kernels++;
    if (to_after)
      printf("  capture: edge into the PDL kernel after the product: type %d, port %d\n",
             ed[i].type, ed[i].from_port);
    if (from_late && tt == cudaGraphNodeTypeKernel) {
      cudaGraphEdgeData nd = {};
      nd.type = cudaGraphDependencyTypeProgrammatic;
      nd.from_port = cudaGraphKernelNodePortProgrammatic;
      CK(cudaGraphRemoveDependencies(g, &from[i], &to[i], &ed[i], 1));
      CK(cudaGraphAddDependencies(g, &from[i], &to[i], &nd, 1));
      changed++;
    }
  }
  cudaGraphExec_t ex;
  CK(cudaGraphInstantiate(&ex, g, 0));
  double worst = 0, ref_scale = 0;
  float *hy = (float *)malloc(yn * 4), *hr = (float *)malloc(yn * 4);
  CK(cudaMemcpy(hr, yref, yn * 4, cudaMemcpyDeviceToHost));
  for (size_t i = 0; i < yn; i++) ref_scale = fmax(ref_scale, fabs(hr[i]));
  for (int rep = 0; rep < 5; rep++) {
    CK(cudaMemset(y, 0x7f, yn * 4));
    CK(cudaGraphLaunch(ex, s));
    CK(cudaStreamSynchronize(s));
    CK(cudaMemcpy(hy, y, yn * 4, cudaMemcpyDeviceToHost));
    for (size_t i = 0; i < yn; i++) worst = fmax(worst, fabs((double)hy[i] - hr[i]));
  }
  printf("%-34s %d kernel nodes, edges made programmatic %d; max |y - ref| %.3g of scale %.3g: "
         "%s\n",
         c.name, kernels, changed, worst, ref_scale,
         changed == 0 ? "NOT PROBED" : worst <= 1e-3 * ref_scale ? "WAITS" : "DOES NOT WAIT");
  fflush(stdout);
  CK(cudaGraphExecDestroy(ex));
  CK(cudaGraphDestroy(g));
  CK(cudaStreamDestroy(s));
  cudaFree(src), cudaFree(x), cudaFree(w), cudaFree(y), cudaFree(yref), cudaFree(side);
  free(hx), free(hw), free(hy), free(hr), free(from), free(to), free(ed);
}

int main() {
  BK(cublasCreate(&H));
  void *ws;
  CK(cudaMalloc(&ws, 32 << 20));
  BK(cublasSetWorkspace(H, ws, 32 << 20));
  const Case cases[] = {
      {"in_proj bf16, 8 rows", 8, 1792, 7168, 1, false},
      {"in_proj bf16, 16 rows", 16, 1792, 7168, 1, false},
      {"in_proj bf16, 64 rows", 64, 1792, 7168, 1, false},
      {"in_proj bf16, 256 rows", 256, 1792, 7168, 1, false},
      {"out_proj bf16, 64 rows, 4 parts", 64, 3584, 1792, 4, false},
      {"out_proj bf16, 256 rows, 4 parts", 256, 3584, 1792, 4, false},
      {"x_proj bf16, 64 rows", 64, 3584, 144, 1, false},
      {"in_proj bf16, 8192 rows", 8192, 1792, 7168, 1, false},
      {"out_proj bf16, 8192 rows", 8192, 3584, 1792, 1, false},
      {"dt_proj bf16, 8192 rows", 8192, 112, 3584, 1, false},
      {"in_proj fp32 TF32, 8192 rows", 8192, 1792, 7168, 1, true},
      {"in_proj fp32 TF32, 64 rows", 64, 1792, 7168, 1, true},
  };
  for (const Case &c : cases) run(c);
  return 0;
}
