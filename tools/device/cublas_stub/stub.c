/* The link-time stand-in for libcublas.so.13 / libcublasLt.so.13 (tools/device/prebuild.sh):
 * symbols only, so that libmambabyte.so links against the soname; every call fails, and it is
 * never loaded where the real library is found first (the GPU machine). */
int cublasCreate_v2(void) { return 1; }
int cublasDestroy_v2(void) { return 1; }
int cublasSetStream_v2(void) { return 1; }
int cublasSetWorkspace_v2(void) { return 1; }
int cublasSetMathMode(void) { return 1; }
int cublasGemmEx(void) { return 1; }
int cublasGemmStridedBatchedEx(void) { return 1; }
