/*
 * vmath8_check.c — mbv8_exp's fast path against mbv8_exp_full, bit for bit (tests/cpu_avx2_test.ts
 * builds it for x86-64-v3 and runs it where the processor has AVX2 + FMA).
 *
 * mbv8_exp adds n to p's exponent field when every lane's result is a normal float; the full form
 * scales by two powers of two. Both must give the same bits. Checked: every float near the ends of
 * the fast range (where lanes leave it: results near 2^-126 and near the largest float), whole
 * vectors that mix lanes inside and outside it, and every `stride`-th vector of 8 consecutive
 * floats over all 2^32 patterns (stride 1 checks every float, ~13 s).
 *
 * Usage: vmath8_check [stride]   (prints one line; exit 0 when every lane matched)
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cpu/vmath.h"

#if !MB_AVX2
#error "vmath8_check needs the 8-lane build (-mavx2 -mfma, no AVX-512)"
#endif

static uint64_t checked, mismatched;

static void check(const uint32_t u[8]) {
  __m256 x;
  memcpy(&x, u, 32);
  const __m256 a = mbv8_exp(x), b = mbv8_exp_full(x);
  uint32_t ua[8], ub[8];
  memcpy(ua, &a, 32);
  memcpy(ub, &b, 32);
  for (int i = 0; i < 8; i++, checked++)
    if (ua[i] != ub[i] && mismatched++ < 5)
      printf("x = 0x%08x: fast 0x%08x, full 0x%08x\n", u[i], ua[i], ub[i]);
}

static uint32_t bits(float f) {
  uint32_t u;
  memcpy(&u, &f, 4);
  return u;
}

int main(int argc, char **argv) {
  const uint64_t stride = argc > 1 ? strtoull(argv[1], NULL, 10) : 7;
  if (stride < 1) return 2;
  uint32_t u[8];
  /* every float within 2^20 patterns of the fast range's ends (x = n / log2 e near n = -125.5
   * and n = 127.5), both signs of the neighbourhoods' step */
  const float ends[] = {-125.5f * 0.69314718f, 127.5f * 0.69314718f, -87.0f, 88.0f, 88.72f};
  for (size_t e = 0; e < sizeof ends / sizeof ends[0]; e++)
    for (int64_t d = -(1 << 20); d < (1 << 20); d += 8) {
      for (int i = 0; i < 8; i++) u[i] = bits(ends[e]) + (uint32_t)(d + i);
      check(u);
    }
  /* mixed vectors: lanes in the fast range beside tiny, huge, infinite and NaN arguments */
  const float odd[] = {-200.0f, -104.0f, -87.5f, 89.0f, 1e30f, -1e30f, 0.0f, -0.0f};
  const uint32_t special[] = {0x7f800000u, 0xff800000u, 0x7fc00000u, 0xffc00001u};
  for (size_t k = 0; k < sizeof odd / sizeof odd[0] + 4; k++)
    for (int lane = 0; lane < 8; lane++) {
      for (int i = 0; i < 8; i++) u[i] = bits(0.37f * (float)(i - 4));
      u[lane] = k < sizeof odd / sizeof odd[0] ? bits(odd[k]) : special[k - 8];
      check(u);
    }
  /* every stride-th vector of 8 consecutive patterns */
  for (uint64_t b = 0; b < (1ull << 32); b += 8 * stride) {
    for (int i = 0; i < 8; i++) u[i] = (uint32_t)(b + (uint64_t)i);
    check(u);
  }
  printf("%llu lanes checked, %llu mismatched\n", (unsigned long long)checked,
         (unsigned long long)mismatched);
  return mismatched != 0;
}
