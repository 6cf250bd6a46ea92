/*
 * bench_util.h — what the CPU benchmark programs share: a monotonic clock and CK(), which ends the
 * program with mb_last_error() when a call of the C ABI fails.
 */
#ifndef MAMBABYTE_BENCH_UTIL_H
#define MAMBABYTE_BENCH_UTIL_H

#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#include "mambabyte.h"

static inline double now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return ts.tv_sec + ts.tv_nsec * 1e-9;
}

#define CK(x)                                                                                     \
  do {                                                                                            \
    if ((x) != MB_OK) {                                                                           \
      fprintf(stderr, "%s failed: %s\n", #x, mb_last_error());                                    \
      exit(1);                                                                                    \
    }                                                                                             \
  } while (0)

#endif /* MAMBABYTE_BENCH_UTIL_H */
