/*
 * internal.h — what the CPU and CUDA halves share behind the public ABI (not installed).
 *
 * csrc/api.c implements every mb_* function of mambabyte.h: it validates the arguments once, then
 * dispatches on ctx->backend to mbcpu_<name> (csrc/cpu) or mbcuda_<name> (csrc/cuda, only when
 * built with MB_WITH_CUDA). Each backend function has exactly the public signature of mb_<name>,
 * declared from the list in ops.def, and may assume validated arguments (non-null required
 * pointers, sizes >= 0, n > 0 work).
 */
#ifndef MAMBABYTE_INTERNAL_H
#define MAMBABYTE_INTERNAL_H

#include <stddef.h>
#include <stdint.h>
#include "../include/mambabyte.h"

#ifdef __cplusplus
extern "C" {
#endif

struct mb_ctx {
  int backend;     /* MB_BACKEND_* */
  int device;      /* CUDA device index */
  int num_threads; /* CPU threads actually used */
  uint32_t flags;  /* MB_FLAG_* */
  void *cuda;      /* CUDA backend state (stream, cuBLAS handle, graphs), owned by csrc/cuda */
  uint64_t downloads; /* tickets issued by mb_download_async */
};

/** Records a printf-style message as this thread's last error and returns status. */
int mb_fail(int status, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 2, 3)))
#endif
    ;

/** Copies bytes of host memory with up to max_threads threads (large copies only; see
 * common/host_copy.c). */
void mbc_host_copy(void *dst, const void *src, size_t bytes, int max_threads);
/** The CPUs this process may run on (its affinity mask: taskset and cgroup cpusets shrink it),
 * at least 1. In common/host_copy.c; CPU contexts count their default threads with it too. */
int mbc_allowed_cpus(void);

/* MB_DECLARE_AS(impl, name): declares the function `impl` with exactly the type of the public
 * function `name` (the header is the one place a signature is written; see ops.def). */
#ifdef __cplusplus
#define MB_DECLARE_AS(impl, name) extern decltype(name) impl
#else
#define MB_DECLARE_AS(impl, name) extern __typeof__(name) impl
#endif

#ifdef MB_WITH_CUDA
/* Implemented in csrc/cuda: mbcuda_<name> for every entry of ops.def, plus the context's set-up. */
#define MB_OP(name) MB_DECLARE_AS(mbcuda_##name, mb_##name);
#define MB_CUDA_OP(name) MB_DECLARE_AS(mbcuda_##name, mb_##name);
#include "ops.def"
int mbcuda_ctx_init(mb_ctx *ctx); /* ctx->device is set; fills ctx->cuda */
#endif

#ifdef __cplusplus
}
#endif

#endif /* MAMBABYTE_INTERNAL_H */
