/*
 * device_check.h — the exit-on-error checks of the standalone device tools (blas_sweep.cu,
 * cublas_pdl_probe.cu): CK for a CUDA runtime call, BK for a cuBLAS(Lt) call; each prints the
 * failing call and its place, then exits 1.
 */
#ifndef MAMBABYTE_DEVICE_CHECK_H
#define MAMBABYTE_DEVICE_CHECK_H

#include <stdio.h>
#include <stdlib.h>

#define CK(x)                                                                              \
  do {                                                                                     \
    cudaError_t e_ = (x);                                                                  \
    if (e_ != cudaSuccess) {                                                               \
      fprintf(stderr, "%s:%d %s: %s\n", __FILE__, __LINE__, #x, cudaGetErrorString(e_)); \
      exit(1);                                                                             \
    }                                                                                      \
  } while (0)
#define BK(x)                                                              \
  do {                                                                     \
    int s_ = (int)(x);                                                     \
    if (s_ != 0) {                                                         \
      fprintf(stderr, "%s:%d %s: status %d\n", __FILE__, __LINE__, #x, s_); \
      exit(1);                                                             \
    }                                                                      \
  } while (0)

#endif
