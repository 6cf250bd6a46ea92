/*
 * resume.cu — mb_resume_layers on CUDA: one kernel for up to RESUME_LAYERS layers a launch. Every
 * thread finds the accepted prefix itself (at most 64 comparisons of ids in device memory, the
 * same for all), then moves one channel of one layer: its conv window gathered from the saved
 * inputs (raw inputs, no arithmetic: the CPU twin's values) and its SSM state row copied from the
 * saved states. Device memory only, so the verification graph can hold it. mb_spec_commit, the
 * round's end, is at the bottom.
 */
#include <stdint.h>

#include "cuda_internal.cuh"

#define RESUME_LAYERS 64
#define RESUME_KMAX 8 /* d_conv - 1 window slots a thread keeps in registers */

struct ResumePtrs {
  float *conv[RESUME_LAYERS];
  float *ssm[RESUME_LAYERS];
};

/* Grid (channel blocks, layers of this launch); i0: the first layer's index in the model. */
__global__ void k_resume_layers(ResumePtrs p, int64_t i0, int64_t len, int64_t d, int64_t n,
                                int64_t w, const float *__restrict__ saved_xz,
                                const float *__restrict__ saved_ssm,
                                const float *__restrict__ saved_conv,
                                const int32_t *__restrict__ sampled,
                                const int32_t *__restrict__ drafted, int32_t *accepted) {
  MB_PDL_ENTRY();
  int64_t j = 0;
  /* the control block (draws, drafts, the count) through L2 only: see k_spec_commit */
  while (j < len - 1 && __ldcg(sampled + j) == __ldcg(drafted + j)) j++;
  const int64_t li = blockIdx.y, i = i0 + li;
  const int64_t c = blockIdx.x * (int64_t)blockDim.x + threadIdx.x;
  if (i0 == 0 && li == 0 && c == 0) *accepted = (int32_t)j;
  if (c >= d) return;
  const float *xz = saved_xz + i * len * 2 * d, *old = saved_conv + (i * d + c) * w;
  float *win = p.conv[li] + c * w;
  float v[RESUME_KMAX];
  /* all loads before the first store: old and win may be the same bytes only across layers */
#pragma unroll
  for (int q = 0; q < RESUME_KMAX; q++) {
    const int64_t pos = j - (w - 1) + q;
    v[q] = q < w ? (pos >= 0 ? xz[pos * 2 * d + c] : old[w + pos]) : 0.f;
  }
#pragma unroll
  for (int q = 0; q < RESUME_KMAX; q++)
    if (q < w) win[q] = v[q];
  if (j != len - 1) {
    const float *src = saved_ssm + ((i * len + j) * d + c) * n;
    float *dst = p.ssm[li] + c * n;
    for (int64_t s = 0; s < n; s++) dst[s] = src[s];
  }
}

extern "C" int mbcuda_resume_layers(mb_ctx *ctx, const uint64_t *layers, int64_t n_layer,
                                    int64_t len, int64_t d_inner, int64_t d_state, int64_t d_conv,
                                    const float *saved_xz, const float *saved_ssm,
                                    const float *saved_conv, const int32_t *sampled,
                                    const int32_t *drafted, int32_t *accepted) {
  if (d_conv - 1 > RESUME_KMAX)
    return mb_fail(MB_ERR_UNSUPPORTED, "cuda: resume_layers: d_conv %lld > %d",
                   (long long)d_conv, RESUME_KMAX + 1);
  for (int64_t i0 = 0; i0 < n_layer; i0 += RESUME_LAYERS) {
    const int64_t nl = n_layer - i0 < RESUME_LAYERS ? n_layer - i0 : RESUME_LAYERS;
    ResumePtrs p;
    for (int64_t li = 0; li < nl; li++) {
      p.conv[li] = (float *)(uintptr_t)layers[(i0 + li) * MB_DL_PTRS + MB_DL_CONV_STATE];
      p.ssm[li] = (float *)(uintptr_t)layers[(i0 + li) * MB_DL_PTRS + MB_DL_SSM_STATE];
    }
    const dim3 grid(mbcuda_blocks(d_inner, 128), (unsigned)nl);
    MBCUDA_LAUNCH("resume_layers", k_resume_layers, grid, dim3(128), 0, p, i0, len, d_inner,
                  d_state, d_conv - 1, saved_xz, saved_ssm, saved_conv, sampled, drafted,
                  accepted);
  }
  return MB_OK;
}

/* mb_spec_commit: block 0 keeps the books (the settled bytes, the counts, the next pass's id and
 * counters); every block copies its share of the drafter's state after j drafts, in units of T.
 * Every load is through L2 only (ld.global.cg): the count, the draws and the next ids share
 * cache lines that kernels of the same graph write and read back, and under programmatic
 * dependent launch an SM's non-coherent L1 may still hold such a line as an earlier kernel of the
 * round read it (k_resume_layers reads the draws, then writes the count beside them): a commit
 * that read the count through L1 settled a stale count on the H200. */
template <typename T>
__global__ void k_spec_commit(int64_t len, const int32_t *sampled, const int32_t *accepted,
                              int32_t *out, int64_t cap,
                              int64_t *progress, int32_t *ids, int64_t *counters, T *dst,
                              const T *src, int64_t stride_units, int64_t units) {
  MB_PDL_ENTRY();
  int64_t j = __ldcg(accepted);
  j = j < 0 ? 0 : (j > len - 1 ? len - 1 : j);
  if (blockIdx.x == 0) {
    const long long e = __ldcg((const long long *)progress);
    __syncthreads(); /* every thread has read e before thread 0 moves it */
    for (int64_t t = threadIdx.x; t < len; t += blockDim.x) {
      if (t <= j && e + t >= 0 && e + t < cap) out[e + t] = __ldcg(sampled + t);
      counters[t] = e + j + 1 + t;
    }
    if (threadIdx.x == 0) {
      progress[0] = e + j + 1;
      progress[1] = __ldcg((const long long *)progress + 1) + j;
      progress[2] = __ldcg((const long long *)progress + 2) + 1;
      ids[0] = __ldcg(sampled + j);
    }
  }
  const T *from = src + j * stride_units;
  for (int64_t q = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; q < units;
       q += (int64_t)gridDim.x * blockDim.x)
    dst[q] = __ldcg(from + q);
}

template <typename T>
static int spec_commit_as(mb_ctx *ctx, int64_t len, const int32_t *sampled,
                          const int32_t *accepted, int32_t *out, int64_t cap, int64_t *progress,
                          int32_t *ids, int64_t *counters, void *dst, const void *src,
                          int64_t src_stride, int64_t bytes) {
  const int64_t units = bytes / (int64_t)sizeof(T);
  unsigned blocks = mbcuda_blocks(units, 256);
  if (blocks > 1024) blocks = 1024;
  MBCUDA_LAUNCH("spec_commit", k_spec_commit<T>, dim3(blocks), dim3(256), 0, len, sampled,
                accepted, out, cap, progress, ids, counters, (T *)dst, (const T *)src,
                src_stride / (int64_t)sizeof(T), units);
  return MB_OK;
}

extern "C" int mbcuda_spec_commit(mb_ctx *ctx, int64_t len, const int32_t *sampled,
                                  const int32_t *accepted, int32_t *out, int64_t cap,
                                  int64_t *progress, int32_t *ids, int64_t *counters, void *dst,
                                  const void *src, int64_t src_stride, int64_t bytes) {
  /* the widest unit that divides the addresses, the stride and the size */
  const uint64_t all = (uint64_t)(uintptr_t)dst | (uint64_t)(uintptr_t)src |
                       (uint64_t)src_stride | (uint64_t)bytes;
  if (all % 16 == 0)
    return spec_commit_as<int4>(ctx, len, sampled, accepted, out, cap, progress, ids, counters,
                                dst, src, src_stride, bytes);
  if (all % 4 == 0)
    return spec_commit_as<int32_t>(ctx, len, sampled, accepted, out, cap, progress, ids,
                                   counters, dst, src, src_stride, bytes);
  return spec_commit_as<unsigned char>(ctx, len, sampled, accepted, out, cap, progress, ids,
                                       counters, dst, src, src_stride, bytes);
}
