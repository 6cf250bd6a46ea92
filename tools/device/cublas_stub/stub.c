/* The link-time stand-in for libcublas.so.13 / libcublasLt.so.13 (tools/device/prebuild.sh):
 * symbols only, so that libmambabyte.so links against the soname; every call fails, and it is
 * never loaded where the real library is found first (the GPU machine). */
int cublasCreate_v2(void) { return 1; }
int cublasDestroy_v2(void) { return 1; }
int cublasSetStream_v2(void) { return 1; }
int cublasSetWorkspace_v2(void) { return 1; }
int cublasSetMathMode(void) { return 1; }
int cublasSetPointerMode_v2(void) { return 1; }
int cublasGemmEx(void) { return 1; }
int cublasGemmStridedBatchedEx(void) { return 1; }
int cublasLtCreate(void) { return 1; }
int cublasLtDestroy(void) { return 1; }
int cublasLtMatmulDescCreate(void) { return 1; }
int cublasLtMatmulDescDestroy(void) { return 1; }
int cublasLtMatmulDescSetAttribute(void) { return 1; }
int cublasLtMatrixLayoutCreate(void) { return 1; }
int cublasLtMatrixLayoutDestroy(void) { return 1; }
int cublasLtMatmulPreferenceCreate(void) { return 1; }
int cublasLtMatmulPreferenceDestroy(void) { return 1; }
int cublasLtMatmulPreferenceSetAttribute(void) { return 1; }
int cublasLtMatmulAlgoGetHeuristic(void) { return 1; }
int cublasLtMatmul(void) { return 1; }
