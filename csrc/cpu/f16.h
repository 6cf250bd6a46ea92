/*
 * f16.h — IEEE binary16 (fp16) conversions and the power of two of the scaled fp16 operands
 * (mambabyte.h: mb_to_f16_scaled, mb_linear_f16, mb_add_norm_f16), in portable C11 on bits (no
 * _Float16: any C11 compiler builds them). f16.c uses them; they are here so tests and other
 * files share the one definition.
 */
#ifndef MAMBABYTE_CPU_F16_H
#define MAMBABYTE_CPU_F16_H

#include <math.h>
#include <stdint.h>
#include <string.h>

/** fp32 -> fp16 bits, round to nearest even: subnormals rounded as such, beyond the largest finite
 * fp16 (65504, and from 65520 up, its tie included) inf, NaN a quiet NaN (sign and the payload's
 * top bits kept). */
static inline uint16_t mbcpu_f32_to_f16(float f) {
  uint32_t u;
  memcpy(&u, &f, 4);
  const uint16_t sign = (uint16_t)((u >> 16) & 0x8000u);
  const uint32_t a = u & 0x7fffffffu;
  if (a > 0x7f800000u) return (uint16_t)(sign | 0x7e00u | ((a >> 13) & 0x3ffu)); /* quiet NaN */
  if (a >= 0x477ff000u) return (uint16_t)(sign | 0x7c00u); /* 65520 and up (and inf): inf */
  if (a >= 0x38800000u) { /* 2^-14 and up: an fp16 normal (a carry into the exponent is right) */
    const uint32_t r = a - 0x38000000u; /* exponent rebiased from 127 to 15 */
    return (uint16_t)(sign | ((r + 0xfffu + ((r >> 13) & 1u)) >> 13));
  }
  /* an fp16 subnormal (or zero): the significand m 2^(E-150) in units of 2^-24, m >> (126 - E) */
  const uint32_t E = a >> 23;
  const uint32_t shift = 126u - E; /* >= 14: E <= 112 here */
  if (shift > 25u) return sign;     /* below 2^-25: rounds to zero (so do float subnormals) */
  const uint32_t m = (a & 0x7fffffu) | 0x800000u;
  uint32_t q = m >> shift;
  const uint32_t rem = m & ((1u << shift) - 1u), half = 1u << (shift - 1u);
  if (rem > half || (rem == half && (q & 1u))) q++; /* 0x400 is the smallest normal: right too */
  return (uint16_t)(sign | q);
}

/** fp16 bits -> fp32 (exact: every fp16 value is a float). */
static inline float mbcpu_f16_to_f32(uint16_t h) {
  const uint32_t sign = (uint32_t)(h & 0x8000u) << 16;
  const uint32_t ex = (h >> 10) & 0x1fu, mant = h & 0x3ffu;
  uint32_t u;
  if (ex == 0x1fu) {
    u = sign | 0x7f800000u | (mant << 13); /* inf, NaN */
  } else if (ex != 0) {
    u = sign | ((ex + 112u) << 23) | (mant << 13);
  } else {
    const float v = (float)mant * 0x1p-24f; /* a subnormal: exact */
    memcpy(&u, &v, 4);
    u |= sign;
  }
  float f;
  memcpy(&f, &u, 4);
  return f;
}

/** The power of two e that puts a block's largest magnitude amax (NaN already skipped) in
 * [2^14, 2^15): amax = m 2^E with m in [0.5, 1), e = 15 - E (-113 to 163); 0 when amax is 0, inf
 * or NaN (the values then pass unscaled). CUDA's mb_f16_scale_exp is this rule. */
static inline int mbcpu_f16_scale_exp(float amax) {
  if (!(amax > 0.0f) || isinf(amax)) return 0;
  int E;
  (void)frexpf(amax, &E);
  return 15 - E;
}

#endif /* MAMBABYTE_CPU_F16_H */
