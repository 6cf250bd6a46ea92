/*
 * in_conv_xproj.cu — mb_linear_bf16_conv1d_step_linear on CUDA: a decoding batch's in_proj (bf16
 * rows), then its conv step with x_proj (mbcuda_conv1d_step_linear: one kernel from 9 rows).
 *
 * The call exists so that the three can become one kernel: each in_proj output tile of 64
 * channels x the batch holds every input of those channels' conv step and of x_proj's partial
 * sums over them, so the conv step with x_proj's launch, its weights' round trip and its conv loads
 * could ride on in_proj's epilogue. That kernel waits for a GPU as a probe
 * (tools/device/fused_inproj_probe.cu; docs/cuda_notes.md, "The conv step and x_proj in in_proj's
 * epilogue at decoding batches: a probe"); until it is measured the call runs the two ops.
 */
#include <stdint.h>

#include "cuda_internal.cuh"

extern "C" int mbcuda_linear_bf16_conv1d_step_linear(
    mb_ctx *ctx, const uint16_t *x, int64_t ldx, const void *w, int wdtype, int64_t n,
    int64_t in_f, int64_t out_f, float *y, int64_t ldy, const float *conv_w,
    const float *conv_bias, float *conv_state, int64_t d, int64_t k, float *xc, int64_t ldo,
    const void *w2, int64_t out_f2, float *y2, int64_t ldy2) {
  const int e = mbcuda_linear_bf16(ctx, x, ldx, w, wdtype, NULL, n, in_f, out_f, y, ldy);
  if (e != MB_OK) return e;
  return mbcuda_conv1d_step_linear(ctx, y, ldy, conv_w, conv_bias, conv_state, n, d, k, xc, ldo,
                                   w2, wdtype, NULL, out_f2, y2, ldy2);
}
