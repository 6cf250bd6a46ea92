/*
 * nuc4_check.c — discrete_a.c's nuclear_from_gram4 (the Jacobi eigenvalue sweeps of 4 positions'
 * Gram matrices at once, a lane each) against nuclear_from_gram (one matrix), bit for bit.
 * tests/cpu_avx2_test.ts builds it for x86-64-v3 with -std=c11 and -std=gnu11 (which lets gcc
 * contract multiply-adds) and runs it where the processor has AVX2 + FMA.
 *
 * The matrices: Gram matrices of 64 random rows of exp(-dt * (1..n) * jitter) (the shape of
 * discrete-A's rows), n = 5, 16 and 17, 1 to 4 lanes a call, with a lane of zeros (trace 0) and a
 * lane with a NaN off the diagonal (rotated, as the one-matrix form rotates it) among them.
 *
 * Usage: nuc4_check   (prints one line; exit 0 when every lane matched)
 */
#include "cpu/discrete_a.c" /* the static functions under test */

#include <stdio.h>

#if !(defined(__AVX2__) && defined(__FMA__))
#error "nuc4_check needs AVX2 + FMA"
#endif

static uint64_t rng_state = 88172645463325252ull;

static double uniform(void) { /* xorshift64 */
  rng_state ^= rng_state << 13;
  rng_state ^= rng_state >> 7;
  rng_state ^= rng_state << 17;
  return (double)(rng_state >> 11) / 9007199254740992.0;
}

enum { NMAX = 17, ROWS = 64 };

static void random_gram(double *g, int64_t n, double dt_scale) {
  memset(g, 0, sizeof(double) * (size_t)(n * n));
  for (int r = 0; r < ROWS; r++) {
    float e[NMAX];
    const double dt = 0.001 + uniform() * dt_scale;
    for (int64_t k = 0; k < n; k++)
      e[k] = (float)exp(-dt * (double)(k + 1) * (0.7 + 0.6 * uniform()));
    for (int64_t i = 0; i < n; i++)
      for (int64_t k = i; k < n; k++) g[i * n + k] += (double)e[i] * (double)e[k];
  }
  for (int64_t i = 0; i < n; i++)
    for (int64_t k = 0; k < i; k++) g[i * n + k] = g[k * n + i];
}

int main(void) {
  static double a[4][NMAX * NMAX], b[4][NMAX * NMAX];
  static double w[4 * NMAX * NMAX] __attribute__((aligned(32)));
  int lanes = 0, mismatched = 0;
  for (int trial = 0; trial < 3000; trial++) {
    const int64_t n = trial % 5 == 0 ? 5 : trial % 7 == 0 ? 17 : 16;
    const int cnt = 1 + trial % 4;
    double *pa[4];
    for (int l = 0; l < cnt; l++) {
      random_gram(a[l], n, trial % 3 == 0 ? 3.0 : 0.1);
      if (trial % 11 == 0 && l == 1) a[l][3] = a[l][3 * n] = NAN;
      if (trial % 13 == 0 && l == 0) memset(a[l], 0, sizeof(double) * (size_t)(n * n));
      memcpy(b[l], a[l], sizeof(double) * (size_t)(n * n));
      pa[l] = a[l];
    }
    double got[4];
    nuclear_from_gram4(pa, cnt, n, w, got);
    for (int l = 0; l < cnt; l++, lanes++) {
      const double want = nuclear_from_gram(b[l], n);
      if (memcmp(&want, &got[l], sizeof want) != 0 && !(isnan(want) && isnan(got[l])) &&
          mismatched++ < 5)
        printf("trial %d lane %d n %lld: one matrix %.17g, four %.17g\n", trial, l, (long long)n,
               want, got[l]);
    }
  }
  printf("%d lanes checked, %d mismatched\n", lanes, mismatched);
  return mismatched != 0;
}
