/*
 * rng.h — the counter-based uniform shared by every backend, so sampling draws the same numbers
 * on the CPU and the GPU (host and device inline code).
 */
#ifndef MAMBABYTE_RNG_H
#define MAMBABYTE_RNG_H

#include <stdint.h>

#if defined(__CUDACC__)
#define MB_HD __host__ __device__ __forceinline__
#else
#define MB_HD static inline
#endif

MB_HD uint64_t mb_splitmix64(uint64_t x) {
  x += 0x9E3779B97F4A7C15ull;
  x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
  x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
  return x ^ (x >> 31);
}

/** Uniform in [0, 1) with 24 random bits: exact in float32. */
MB_HD float mb_uniform_at(uint64_t seed, uint64_t index) {
  uint64_t r = mb_splitmix64(seed ^ mb_splitmix64(index));
  return (float)(r >> 40) * (1.0f / 16777216.0f);
}

#endif /* MAMBABYTE_RNG_H */
