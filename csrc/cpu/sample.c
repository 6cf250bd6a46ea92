/*
 * sample.c — mamba_ssm's sample() on the CPU, rows split over the pool's threads.
 *
 *   top_k == 1: argmax (lowest index on ties).
 *   else: candidates = the top_k largest logits (all when top_k <= 0 or >= v), ordered by
 *   descending logit (ties: lower index first) — a partial sort (quickselect, then sort of k);
 *   logits / temperature; softmax over the candidates; top-p (0 < top_p < 1): drop every candidate
 *   whose ascending cumulative probability (the sum of its own and all smaller probabilities) is
 *   <= 1 - top_p (the most probable is always kept); renormalise; draw: walk the kept candidates
 *   in descending order and pick the first whose cumulative probability exceeds u * total, with
 *   u = mb_uniform(seed, counter * batch + row). Probabilities in double.
 */
#include <math.h>
#include <stdatomic.h>
#include <stdlib.h>

#include "../common/rng.h"
#include "cpu_backend.h"

typedef struct {
  float v;
  int32_t i;
} cand;

/* a before b: larger value, then lower index */
static inline int cand_before(const cand *a, const cand *b) {
  return a->v > b->v || (a->v == b->v && a->i < b->i);
}
static int cand_cmp(const void *pa, const void *pb) {
  const cand *a = (const cand *)pa, *b = (const cand *)pb;
  return cand_before(a, b) ? -1 : (cand_before(b, a) ? 1 : 0);
}

/* Rearranges c[0, n) so that c[0, k) holds the k first candidates (any order). */
static void select_top(cand *c, int64_t n, int64_t k) {
  int64_t lo = 0, hi = n - 1;
  while (lo < hi) {
    cand piv = c[lo + (hi - lo) / 2];
    int64_t i = lo, j = hi;
    while (i <= j) {
      while (cand_before(&c[i], &piv)) i++;
      while (cand_before(&piv, &c[j])) j--;
      if (i <= j) {
        cand t = c[i];
        c[i] = c[j];
        c[j] = t;
        i++;
        j--;
      }
    }
    if (k - 1 <= j)
      hi = j;
    else if (k - 1 >= i)
      lo = i;
    else
      break;
  }
}

static int32_t sample_row(const float *r, int64_t v, float temperature, int32_t top_k,
                          float top_p, float u, cand *c, double *p) {
  if (top_k == 1) {
    int64_t best = 0;
    for (int64_t k = 1; k < v; k++)
      if (r[k] > r[best]) best = k;
    return (int32_t)best;
  }
  const int64_t k = (top_k <= 0 || top_k >= v) ? v : top_k;
  for (int64_t i = 0; i < v; i++) {
    c[i].v = r[i];
    c[i].i = (int32_t)i;
  }
  if (k < v) select_top(c, v, k);
  qsort(c, (size_t)k, sizeof *c, cand_cmp);
  /* softmax of logits / temperature over the k candidates (descending) */
  const double inv_t = 1.0 / (double)temperature;
  const double mx = (double)c[0].v * inv_t;
  double total = 0.0;
  for (int64_t i = 0; i < k; i++) {
    p[i] = exp((double)c[i].v * inv_t - mx);
    total += p[i];
  }
  int64_t kept = k;
  if (top_p > 0.0f && top_p < 1.0f) {
    /* ascending cumulative probability of candidate i = sum of p[i..k) / total */
    const double thr = 1.0 - (double)top_p;
    double tail = 0.0;
    int64_t i = k - 1;
    for (; i > 0; i--) {
      tail += p[i] / total;
      if (tail > thr) break;
    }
    kept = i + 1;
    total = 0.0;
    for (int64_t j = 0; j < kept; j++) total += p[j];
  }
  const double target = (double)u * total;
  double cum = 0.0;
  for (int64_t i = 0; i < kept; i++) {
    cum += p[i];
    if (cum > target) return c[i].i;
  }
  return c[kept - 1].i;
}

typedef struct {
  const float *logits;
  int64_t v;
  float temperature;
  int32_t top_k;
  float top_p;
  uint64_t seed, base;
  const int64_t *counters; /* mb_sample_rows: row b's index is counters[b] (else base + b) */
  int32_t *out_ids;
  atomic_int failed;
} sample_job;

static void sample_rows(void *raw, int64_t b0, int64_t b1) {
  sample_job *j = (sample_job *)raw;
  const int64_t v = j->v;
  cand *c = NULL;
  double *p = NULL;
  if (j->top_k != 1) {
    c = (cand *)malloc((size_t)v * sizeof *c);
    p = (double *)malloc((size_t)v * sizeof *p);
    if (!c || !p) {
      atomic_store(&j->failed, 1);
      b1 = b0;
    }
  }
  for (int64_t b = b0; b < b1; b++)
    j->out_ids[b] = sample_row(j->logits + b * v, v, j->temperature, j->top_k, j->top_p,
                               mb_uniform_at(j->seed, j->counters ? (uint64_t)j->counters[b]
                                                                  : j->base + (uint64_t)b),
                               c, p);
  free(c);
  free(p);
}

/* Draws the job's n rows (on the context's threads when there is enough work). */
static int run_sample_job(mb_ctx *ctx, sample_job *job, int64_t n, const char *fn) {
  const int nt = n > 1 && n * job->v > 4096 ? ctx->num_threads : 1;
  mbcpu_parallel_for(ctx, nt, n, sample_rows, job);
  if (atomic_load(&job->failed)) return mb_fail(MB_ERR_OOM, "%s: out of memory", fn);
  return MB_OK;
}

int mbcpu_sample(mb_ctx *ctx, const float *logits, int64_t batch, int64_t v, float temperature,
                 int32_t top_k, float top_p, uint64_t seed, int64_t *counter, int32_t *out_ids) {
  sample_job job = {.logits = logits, .v = v, .temperature = temperature, .top_k = top_k,
                    .top_p = top_p, .seed = seed,
                    .base = (uint64_t)(*counter) * (uint64_t)batch, .out_ids = out_ids};
  const int st = run_sample_job(ctx, &job, batch, "mb_sample");
  if (st == MB_OK) *counter += 1;
  return st;
}

int mbcpu_sample_rows(mb_ctx *ctx, const float *logits, int64_t n, int64_t v, float temperature,
                      int32_t top_k, float top_p, uint64_t seed, int64_t *counters,
                      int32_t *out_ids) {
  sample_job job = {.logits = logits, .v = v, .temperature = temperature, .top_k = top_k,
                    .top_p = top_p, .seed = seed, .counters = counters, .out_ids = out_ids};
  const int st = run_sample_job(ctx, &job, n, "mb_sample_rows");
  for (int64_t b = 0; st == MB_OK && b < n; b++) counters[b] += 1;
  return st;
}
