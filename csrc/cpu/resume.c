/*
 * resume.c — mb_resume_layers on the CPU: after a verification pass (mb_verify_layers), the
 * accepted prefix and every layer's state moved to just after its last position. The window is
 * gathered from the saved inputs (a conv window holds raw inputs, so no arithmetic: the bits are
 * the decoding steps'); the SSM state is the saved row. mb_spec_commit, the round's end, is at
 * the bottom.
 */
#include <string.h>

#include "cpu_backend.h"

int mbcpu_resume_layers(mb_ctx *ctx, const uint64_t *layers, int64_t n_layer, int64_t len,
                        int64_t d_inner, int64_t d_state, int64_t d_conv, const float *saved_xz,
                        const float *saved_ssm, const float *saved_conv, const int32_t *sampled,
                        const int32_t *drafted, int32_t *accepted) {
  (void)ctx;
  int64_t j = 0;
  while (j < len - 1 && sampled[j] == drafted[j]) j++;
  *accepted = (int32_t)j;
  const int64_t d = d_inner, w = d_conv - 1;
  for (int64_t i = 0; i < n_layer; i++) {
    const uint64_t *P = layers + i * MB_DL_PTRS;
    float *win = (float *)(uintptr_t)P[MB_DL_CONV_STATE];
    float *ssm = (float *)(uintptr_t)P[MB_DL_SSM_STATE];
    const float *xz = saved_xz + i * len * 2 * d, *old = saved_conv + i * d * w;
    for (int64_t c = 0; c < d; c++)
      for (int64_t q = 0; q < w; q++) {
        const int64_t p = j - (w - 1) + q; /* the input position of window slot q */
        win[c * w + q] = p >= 0 ? xz[p * 2 * d + c] : old[c * w + w + p];
      }
    if (j != len - 1)
      memcpy(ssm, saved_ssm + (i * len + j) * d * d_state, (size_t)(d * d_state) * sizeof(float));
  }
  return MB_OK;
}

/* The round's end (mb_spec_commit): the settled bytes, the counts, the next pass's first id and
 * counters, and the drafter's state after its agreed drafts. */
int mbcpu_spec_commit(mb_ctx *ctx, int64_t len, const int32_t *sampled, const int32_t *accepted,
                      int32_t *out, int64_t cap, int64_t *progress, int32_t *ids,
                      int64_t *counters, void *dst, const void *src, int64_t src_stride,
                      int64_t bytes) {
  (void)ctx;
  int64_t j = *accepted;
  if (j < 0) j = 0;
  if (j > len - 1) j = len - 1;
  const int64_t e = progress[0];
  for (int64_t t = 0; t <= j; t++)
    if (e + t >= 0 && e + t < cap) out[e + t] = sampled[t];
  progress[0] = e + j + 1;
  progress[1] += j;
  progress[2] += 1;
  ids[0] = sampled[j];
  for (int64_t t = 0; t < len; t++) counters[t] = e + j + 1 + t;
  if (bytes > 0) memcpy(dst, (const char *)src + j * src_stride, (size_t)bytes);
  return MB_OK;
}
