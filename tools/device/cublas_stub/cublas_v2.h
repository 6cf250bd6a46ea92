/* cublas_v2.h for tools/device/prebuild.sh: the cuBLAS names and values csrc/cuda/gemm.cu uses
 * (as cuBLAS 13 declares them: the _v2 entry points behind the plain names), so that this machine,
 * which has nvcc but no cuBLAS, builds the CUDA library; the GPU machine's real libcublas.so.13 is
 * what runs. A name gemm.cu starts to use must be added here. */
#pragma once
#include <cuda_runtime.h>
#include <library_types.h>
#ifdef __cplusplus
extern "C" {
#endif
typedef enum { CUBLAS_STATUS_SUCCESS=0, CUBLAS_STATUS_NOT_INITIALIZED=1, CUBLAS_STATUS_ALLOC_FAILED=3, CUBLAS_STATUS_INVALID_VALUE=7, CUBLAS_STATUS_ARCH_MISMATCH=8, CUBLAS_STATUS_MAPPING_ERROR=11, CUBLAS_STATUS_EXECUTION_FAILED=13, CUBLAS_STATUS_INTERNAL_ERROR=14, CUBLAS_STATUS_NOT_SUPPORTED=15, CUBLAS_STATUS_LICENSE_ERROR=16 } cublasStatus_t;
typedef struct cublasContext *cublasHandle_t;
typedef enum { CUBLAS_OP_N=0, CUBLAS_OP_T=1, CUBLAS_OP_C=2 } cublasOperation_t;
typedef enum { CUBLAS_COMPUTE_32F=68, CUBLAS_COMPUTE_32F_FAST_TF32=77 } cublasComputeType_t;
typedef enum { CUBLAS_DEFAULT_MATH=0, CUBLAS_TF32_TENSOR_OP_MATH=3, CUBLAS_MATH_DISALLOW_REDUCED_PRECISION_REDUCTION=16 } cublasMath_t;
typedef enum { CUBLAS_GEMM_DEFAULT=-1 } cublasGemmAlgo_t;
typedef enum { CUBLAS_POINTER_MODE_HOST=0, CUBLAS_POINTER_MODE_DEVICE=1 } cublasPointerMode_t;
cublasStatus_t cublasCreate_v2(cublasHandle_t*);
cublasStatus_t cublasDestroy_v2(cublasHandle_t);
cublasStatus_t cublasSetStream_v2(cublasHandle_t, cudaStream_t);
cublasStatus_t cublasSetWorkspace_v2(cublasHandle_t, void*, size_t);
cublasStatus_t cublasSetMathMode(cublasHandle_t, cublasMath_t);
cublasStatus_t cublasSetPointerMode_v2(cublasHandle_t, cublasPointerMode_t);
cublasStatus_t cublasGemmEx(cublasHandle_t, cublasOperation_t, cublasOperation_t, int, int, int, const void*, const void*, cudaDataType, int, const void*, cudaDataType, int, const void*, void*, cudaDataType, int, cublasComputeType_t, cublasGemmAlgo_t);
cublasStatus_t cublasGemmStridedBatchedEx(cublasHandle_t, cublasOperation_t, cublasOperation_t, int, int, int, const void*, const void*, cudaDataType, int, long long, const void*, cudaDataType, int, long long, const void*, void*, cudaDataType, int, long long, int, cublasComputeType_t, cublasGemmAlgo_t);
#ifdef __cplusplus
}
#endif
#define cublasCreate cublasCreate_v2
#define cublasDestroy cublasDestroy_v2
#define cublasSetStream cublasSetStream_v2
#define cublasSetWorkspace cublasSetWorkspace_v2
#define cublasSetPointerMode cublasSetPointerMode_v2
