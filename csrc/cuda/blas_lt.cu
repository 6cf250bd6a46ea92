/*
 * blas_lt.cu — forward chunks' products through cuBLASLt with an algorithm fixed by the problem:
 * entry `index` of cuBLASLt's heuristic list for the product's shape, types, leading dimensions,
 * pointer alignments and workspace. For some of the forward's shapes an entry is faster on the H200
 * than cublasGemmEx's default pick (tools/device/blas_sweep.cu; docs/cuda_notes.md). The list
 * depends only on the problem, the GPU and the cuBLAS version, never on timings, so a context
 * gives a product the same bits every run and in graph replay, as with GemmEx. Plans (descriptors
 * and the chosen algorithm) are kept per problem.
 */
#include <cublasLt.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "cuda_internal.cuh"

#define LT_PLANS 16

struct LtKey {
  int64_t m, n, k, lda, ldb, ldc;
  int atype, btype, ctype, compute;
  int beta_nonzero;
  int device_scalars; /* alpha and beta read from device memory */
  int bias_epi;       /* a bias vector added in the epilogue (its pointer set at each call) */
  int index;         /* the heuristic list's entry */
  uint32_t align[3]; /* of A, B and C/D, in bytes (at most 256) */
};

struct LtPlan {
  LtKey key;
  int used;
  cublasLtMatmulDesc_t desc;
  cublasLtMatrixLayout_t la, lb, lc;
  cublasLtMatmulAlgo_t algo;
  int have_algo; /* 0: the heuristic offered nothing, or cuBLASLt refused the problem (GemmEx
                  * runs the product) */
};

struct mbcuda_lt {
  cublasLtHandle_t h;
  LtPlan plans[LT_PLANS];
  int next; /* the plan replaced when all are in use (round robin) */
};

static uint32_t ptr_align(const void *p) {
  const uintptr_t a = (uintptr_t)p;
  uint32_t al = 256;
  while (al > 1 && (a % al) != 0) al >>= 1;
  return al;
}

static void plan_free(LtPlan *p) {
  if (!p->used) return;
  if (p->la) cublasLtMatrixLayoutDestroy(p->la);
  if (p->lb) cublasLtMatrixLayoutDestroy(p->lb);
  if (p->lc) cublasLtMatrixLayoutDestroy(p->lc);
  if (p->desc) cublasLtMatmulDescDestroy(p->desc);
  memset(p, 0, sizeof *p);
}

/* The handle, made with the context (outside any graph capture); without one every product runs
 * on cublasGemmEx. */
void mbcuda_lt_init(mb_ctx *ctx) {
  mbcuda_state *st = mbcuda_st(ctx);
  mbcuda_lt *lt = (mbcuda_lt *)calloc(1, sizeof(mbcuda_lt));
  if (lt && cublasLtCreate(&lt->h) != CUBLAS_STATUS_SUCCESS) {
    free(lt);
    lt = NULL;
  }
  st->lt = lt;
}

void mbcuda_lt_destroy(mb_ctx *ctx) {
  mbcuda_state *st = mbcuda_st(ctx);
  mbcuda_lt *lt = st ? (mbcuda_lt *)st->lt : NULL;
  if (!lt) return;
  for (int i = 0; i < LT_PLANS; i++) plan_free(&lt->plans[i]);
  if (lt->h) cublasLtDestroy(lt->h);
  free(lt);
  st->lt = NULL;
}

#define LT_TRY(call)                                   \
  do {                                                 \
    if ((call) != CUBLAS_STATUS_SUCCESS) return false; \
  } while (0)

/* Builds the plan for key (the heuristic's entry key.index, or the last usable one before it);
 * false when cuBLASLt refused a step (p then holds partial descriptors for plan_free). */
static bool plan_try(const mbcuda_state *st, const mbcuda_lt *lt, const LtKey &key, LtPlan *p) {
  memset(p, 0, sizeof *p);
  p->used = 1;
  p->key = key;
  const cublasOperation_t ta = CUBLAS_OP_T, tb = CUBLAS_OP_N;
  LT_TRY(cublasLtMatmulDescCreate(&p->desc, (cublasComputeType_t)key.compute, CUDA_R_32F));
  LT_TRY(cublasLtMatmulDescSetAttribute(p->desc, CUBLASLT_MATMUL_DESC_TRANSA, &ta, sizeof ta));
  LT_TRY(cublasLtMatmulDescSetAttribute(p->desc, CUBLASLT_MATMUL_DESC_TRANSB, &tb, sizeof tb));
  if (key.device_scalars) {
    const int32_t pm = CUBLASLT_POINTER_MODE_DEVICE;
    LT_TRY(cublasLtMatmulDescSetAttribute(p->desc, CUBLASLT_MATMUL_DESC_POINTER_MODE, &pm,
                                          sizeof pm));
  }
  if (key.bias_epi) { /* D = alpha (A B) + bias, the bias of D's type (fp32) */
    const uint32_t epi = CUBLASLT_EPILOGUE_BIAS;
    LT_TRY(
        cublasLtMatmulDescSetAttribute(p->desc, CUBLASLT_MATMUL_DESC_EPILOGUE, &epi, sizeof epi));
  }
  /* column-major, as cuBLAS: A is (k, m) read transposed, B (k, n), C (m, n) */
  LT_TRY(cublasLtMatrixLayoutCreate(&p->la, (cudaDataType)key.atype, key.k, key.m, key.lda));
  LT_TRY(cublasLtMatrixLayoutCreate(&p->lb, (cudaDataType)key.btype, key.k, key.n, key.ldb));
  LT_TRY(cublasLtMatrixLayoutCreate(&p->lc, (cudaDataType)key.ctype, key.m, key.n, key.ldc));
  cublasLtMatmulPreference_t pref = NULL;
  LT_TRY(cublasLtMatmulPreferenceCreate(&pref));
  const size_t ws = st->blas_ws_bytes;
  bool ok = cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES,
                                                 &ws, sizeof ws) == CUBLAS_STATUS_SUCCESS;
  const cublasLtMatmulPreferenceAttributes_t al[4] = {
      CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES,
      CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES};
  for (int i = 0; i < 4 && ok; i++)
    ok = cublasLtMatmulPreferenceSetAttribute(pref, al[i], &key.align[i < 3 ? i : 2],
                                              sizeof(uint32_t)) == CUBLAS_STATUS_SUCCESS;
  cublasLtMatmulHeuristicResult_t res[8];
  int got = 0;
  const int want = key.index + 1 < 8 ? key.index + 1 : 8;
  if (ok)
    ok = cublasLtMatmulAlgoGetHeuristic(lt->h, p->desc, p->la, p->lb, p->lc, p->lc, pref, want,
                                        res, &got) == CUBLAS_STATUS_SUCCESS;
  cublasLtMatmulPreferenceDestroy(pref);
  if (!ok) return false;
  for (int i = (key.index < got ? key.index : got - 1); i >= 0; i--) {
    if (res[i].state == CUBLAS_STATUS_SUCCESS && res[i].workspaceSize <= ws) {
      p->algo = res[i].algo;
      p->have_algo = 1;
      break;
    }
  }
  return true;
}

/* The plan for key in p; where cuBLASLt refuses the problem, a plan without an algorithm (GemmEx
 * runs the product, always). */
static void plan_build(const mbcuda_state *st, const mbcuda_lt *lt, const LtKey &key, LtPlan *p) {
  if (plan_try(st, lt, key, p)) return;
  plan_free(p);
  p->used = 1;
  p->key = key;
}

/* y (out_f x n, ld ldy, of type ytype) = w x (+ beta y) (+ bias, a vector of out_f floats)
 * through cuBLASLt with entry `index` of its heuristic list, when index >= 0 and n >= lt_min_rows:
 * w (out_f, in_f) read transposed, x rows of in_f at ldx; alpha 1, or with dev_ab alpha and beta
 * read from dev_ab[0] and dev_ab[1] in device memory (beta then only says whether it is zero).
 * *done = 0 when it did not run the product (the caller runs cublasGemmEx, and adds the bias). */
int mbcuda_gemm_lt(mb_ctx *ctx, int index, const void *w, int wtype, const void *x, int xtype,
                   int64_t ldx, int64_t n, int64_t in_f, int64_t out_f, void *y, int ytype,
                   int64_t ldy, float beta, const float *dev_ab, const float *bias, int compute,
                   const char *op, int *done) {
  *done = 0;
  mbcuda_state *st = mbcuda_st(ctx);
  mbcuda_lt *lt = (mbcuda_lt *)st->lt;
  if (index < 0 || n < st->lt_min_rows || !lt) return MB_OK;
  if (bias && (ytype != CUDA_R_32F || ptr_align(bias) < 16)) return MB_OK;
  LtKey key;
  memset(&key, 0, sizeof key); /* padding too: keys are compared with memcmp */
  key.m = out_f, key.n = n, key.k = in_f, key.lda = in_f, key.ldb = ldx, key.ldc = ldy;
  key.atype = wtype, key.btype = xtype, key.ctype = ytype, key.compute = compute;
  key.beta_nonzero = beta != 0.f;
  key.device_scalars = dev_ab != NULL;
  key.bias_epi = bias != NULL;
  key.index = index;
  key.align[0] = ptr_align(w), key.align[1] = ptr_align(x), key.align[2] = ptr_align(y);
  LtPlan *p = NULL;
  for (int i = 0; i < LT_PLANS && !p; i++)
    if (lt->plans[i].used && !memcmp(&lt->plans[i].key, &key, sizeof key)) p = &lt->plans[i];
  if (!p) {
    p = &lt->plans[lt->next];
    lt->next = (lt->next + 1) % LT_PLANS;
    plan_free(p);
    plan_build(st, lt, key, p);
  }
  if (!p->have_algo) return MB_OK;
  if (bias && cublasLtMatmulDescSetAttribute(p->desc, CUBLASLT_MATMUL_DESC_BIAS_POINTER, &bias,
                                             sizeof bias) != CUBLAS_STATUS_SUCCESS)
    return MB_OK;
  const float alpha = 1.f;
  const cublasStatus_t s = cublasLtMatmul(
      lt->h, p->desc, dev_ab ? (const void *)dev_ab : &alpha, w, p->la, x, p->lb,
      dev_ab ? (const void *)(dev_ab + 1) : &beta, y, p->lc, y, p->lc, &p->algo, st->blas_ws,
      st->blas_ws_bytes, st->stream);
  if (s != CUBLAS_STATUS_SUCCESS)
    return mb_fail(MB_ERR_DEVICE, "cuda: %s: cublasLtMatmul failed (status %d)", op, (int)s);
  *done = 1;
  return MB_OK;
}
