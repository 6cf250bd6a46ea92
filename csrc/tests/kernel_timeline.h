/*
 * kernel_timeline.h — when each kernel of a replayed graph ran, through CUPTI's activity API
 * (libcupti loaded at run time, so the programs need no CUPTI to build or run elsewhere), and a
 * summary per kernel name over a sequence of kernels repeated `steps` times (a decoding step).
 *
 * The device has no Nsight Systems; this is its timeline for one purpose: with programmatic
 * dependent launch, a kernel starts before its predecessor ends, so its time alone (ncu) and its
 * cost by ablation do not say how much of the step it holds. Per kernel i of a step, in start order:
 *   exposed = end_i - max(end of the kernels before it): the step's time that ends with it
 *   lead    = start_i - end_{i-1}: negative when it started under its predecessor
 * The exposed times of a step add up to its span (first start to last end), apart from the gap
 * between steps.
 *
 * Include after ROW (cuda_bench.c's table macro).
 */
#ifndef MAMBABYTE_KERNEL_TIMELINE_H
#define MAMBABYTE_KERNEL_TIMELINE_H

#include <dlfcn.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cupti_activity.h>

typedef struct {
  uint64_t start, end;
  int grid, block; /* x dimensions: with the name, they tell apart one kernel's uses in a step */
  char name[40];
} kt_rec;

static kt_rec *kt_recs;
static size_t kt_n, kt_cap;
static int kt_keep;   /* records arriving while 0 are dropped (warm-up) */
static int kt_ready;  /* 1: CUPTI loaded and kernel activity enabled; -1: not available */
static CUptiResult (*kt_flush)(uint32_t);
static CUptiResult (*kt_next)(uint8_t *, size_t, CUpti_Activity **);

/* "_Z11k_gemv_normI..." -> "k_gemv_norm"; "_ZN7cutlass6KernelI..." -> "cutlass::Kernel"; other
 * names (cuBLAS's unmangled ones) cut to fit. */
static void kt_short_name(const char *m, char *out, size_t n) {
  out[0] = 0;
  if (!m) {
    snprintf(out, n, "?");
    return;
  }
  if (strncmp(m, "_Z", 2) != 0) {
    snprintf(out, n, "%s", m);
    return;
  }
  const char *p = m + 2;
  const int nested = *p == 'N';
  if (nested) p++;
  size_t used = 0;
  for (int part = 0; part < (nested ? 2 : 1) && *p >= '0' && *p <= '9'; part++) {
    const long len = strtol(p, (char **)&p, 10);
    if (len <= 0 || (size_t)len > strlen(p)) break;
    used += (size_t)snprintf(out + used, used < n ? n - used : 0, "%s%.*s", part ? "::" : "",
                             (int)len, p);
    if (used >= n) break;
    p += len;
  }
  if (!out[0]) snprintf(out, n, "%s", m);
}

static void CUPTIAPI kt_buffer_requested(uint8_t **buf, size_t *size, size_t *max_records) {
  *size = (size_t)8 << 20;
  *buf = (uint8_t *)aligned_alloc(8, *size);
  *max_records = 0;
}

static void CUPTIAPI kt_buffer_completed(CUcontext ctx, uint32_t stream, uint8_t *buf, size_t size,
                                         size_t valid) {
  (void)ctx, (void)stream, (void)size;
  CUpti_Activity *r = NULL;
  while (kt_next(buf, valid, &r) == CUPTI_SUCCESS) {
    if (!kt_keep || (r->kind != CUPTI_ACTIVITY_KIND_CONCURRENT_KERNEL &&
                     r->kind != CUPTI_ACTIVITY_KIND_KERNEL))
      continue;
    const CUpti_ActivityKernel10 *k = (const CUpti_ActivityKernel10 *)r;
    if (kt_n == kt_cap) {
      kt_cap = kt_cap ? 2 * kt_cap : 65536;
      kt_recs = (kt_rec *)realloc(kt_recs, kt_cap * sizeof *kt_recs);
      if (!kt_recs) {
        fprintf(stderr, "FATAL: kernel timeline: out of memory\n");
        exit(1);
      }
    }
    kt_rec *o = &kt_recs[kt_n++];
    o->start = k->start, o->end = k->end;
    o->grid = k->gridX, o->block = k->blockX;
    kt_short_name(k->name, o->name, sizeof o->name);
  }
  free(buf);
}

/* Loads libcupti and enables kernel records (call before the graph is captured). 0 when ready;
 * -1 (with a line on stderr) when CUPTI is not there. */
static int kt_open(void) {
  if (kt_ready) return kt_ready > 0 ? 0 : -1;
  kt_ready = -1;
  const char *env = getenv("MAMBABYTE_CUPTI_LIB");
  const char *names[] = {env, "libcupti.so", "libcupti.so.13", "/usr/local/cuda/lib64/libcupti.so",
                         "/usr/local/cuda/extras/CUPTI/lib64/libcupti.so",
#ifdef MB_CUDA_LIB_DIR
                         MB_CUDA_LIB_DIR "/libcupti.so",
#endif
                         NULL};
  void *lib = NULL;
  for (size_t i = 0; i < sizeof names / sizeof names[0] && !lib; i++)
    if (names[i]) lib = dlopen(names[i], RTLD_NOW);
  if (!lib) {
    fprintf(stderr, "kernel timeline: libcupti not found (set MAMBABYTE_CUPTI_LIB)\n");
    return -1;
  }
  CUptiResult (*reg)(CUpti_BuffersCallbackRequestFunc, CUpti_BuffersCallbackCompleteFunc) =
      (CUptiResult(*)(CUpti_BuffersCallbackRequestFunc, CUpti_BuffersCallbackCompleteFunc))dlsym(
          lib, "cuptiActivityRegisterCallbacks");
  CUptiResult (*enable)(CUpti_ActivityKind) =
      (CUptiResult(*)(CUpti_ActivityKind))dlsym(lib, "cuptiActivityEnable");
  kt_flush = (CUptiResult(*)(uint32_t))dlsym(lib, "cuptiActivityFlushAll");
  kt_next = (CUptiResult(*)(uint8_t *, size_t, CUpti_Activity **))dlsym(
      lib, "cuptiActivityGetNextRecord");
  if (!reg || !enable || !kt_flush || !kt_next) {
    fprintf(stderr, "kernel timeline: libcupti lacks the activity API\n");
    return -1;
  }
  CUptiResult st = reg(kt_buffer_requested, kt_buffer_completed);
  if (st == CUPTI_SUCCESS) st = enable(CUPTI_ACTIVITY_KIND_CONCURRENT_KERNEL);
  if (st != CUPTI_SUCCESS) {
    fprintf(stderr, "kernel timeline: CUPTI error %d\n", (int)st);
    return -1;
  }
  kt_ready = 1;
  return 0;
}

/* Records from now on are kept (earlier ones flushed and dropped). */
static void kt_begin(void) {
  kt_keep = 0;
  kt_flush(1);
  kt_n = 0;
  kt_keep = 1;
}

/* After a synchronisation: every record of the kept run is delivered. */
static void kt_end(void) {
  kt_flush(1);
  kt_keep = 0;
}

static int kt_cmp_start(const void *a, const void *b) {
  const kt_rec *x = (const kt_rec *)a, *y = (const kt_rec *)b;
  return x->start < y->start ? -1 : x->start > y->start;
}

typedef struct {
  char name[40];
  int grid, block;
  char after[16]; /* a library kernel's predecessor (cuBLAS runs different products under one name) */
  double count;  /* per step */
  double dur, exposed, lead; /* summed over the steps, ns */
} kt_sum;

/* ROWs: per kernel name in order of first appearance in the step, its count a step, mean time,
 * mean exposed time and lead, and its share of the step's exposed time. `untraced_s`: the step's
 * time without tracing (to show the tracing's own cost). */
static void kt_report(int steps, double untraced_s, const char *label) {
  if (steps <= 0 || kt_n == 0 || kt_n % (size_t)steps) {
    ROW("timeline %s: %zu kernel records do not make %d equal steps", label, kt_n, steps);
    return;
  }
  qsort(kt_recs, kt_n, sizeof *kt_recs, kt_cmp_start);
  const size_t K = kt_n / (size_t)steps;
  kt_sum *s = (kt_sum *)calloc(K, sizeof *s);
  int ns = 0;
  double span = 0, exposed_all = 0;
  for (int t = 0; t < steps; t++) {
    const kt_rec *r = kt_recs + (size_t)t * K;
    uint64_t end_max = t ? r[-1].end : r[0].start; /* the previous step's last kernel */
    if (t) {
      for (size_t i = 1; i <= K; i++)
        if (r[-(long)i].end > end_max) end_max = r[-(long)i].end;
    }
    for (size_t i = 0; i < K; i++) {
      /* cuBLAS's kernels (names not ours, which start with k_) told apart by what they follow */
      char after[16] = "";
      if (strncmp(r[i].name, "k_", 2) && i > 0) snprintf(after, sizeof after, "%s", r[i - 1].name);
      int j = 0;
      while (j < ns && (strcmp(s[j].name, r[i].name) || s[j].grid != r[i].grid ||
                        s[j].block != r[i].block || strcmp(s[j].after, after)))
        j++;
      if (j == ns) {
        snprintf(s[j].name, sizeof s[j].name, "%s", r[i].name);
        snprintf(s[j].after, sizeof s[j].after, "%s", after);
        s[j].grid = r[i].grid, s[j].block = r[i].block;
        ns++;
      }
      const uint64_t prev_end = i ? r[i - 1].end : (t ? r[-1].end : r[0].start);
      const double ex = r[i].end > end_max ? (double)(r[i].end - end_max) : 0.0;
      s[j].count += 1.0 / steps;
      s[j].dur += (double)(r[i].end - r[i].start);
      s[j].exposed += ex;
      s[j].lead += (double)r[i].start - (double)prev_end;
      exposed_all += ex;
      if (r[i].end > end_max) end_max = r[i].end;
    }
    span += (double)end_max - (double)r[0].start; /* this step's first start to its last end */
  }
  ROW("timeline %s: %zu kernels a step, traced span %.1f us a step (untraced graph replay %.1f "
      "us), exposed sum %.1f us",
      label, K, span / steps / 1e3, untraced_s * 1e6, exposed_all / steps / 1e3);
  ROW("  %-32s %11s %7s %9s %11s %9s %6s", "kernel", "grid x blk", "a step", "mean us",
      "exposed us", "lead us", "share");
  for (int j = 0; j < ns; j++) {
    const double n = s[j].count * steps;
    char gb[24];
    snprintf(gb, sizeof gb, "%dx%d", s[j].grid, s[j].block);
    char label[64];
    if (s[j].after[0])
      snprintf(label, sizeof label, "%.18s < %.13s", s[j].name, s[j].after);
    else
      snprintf(label, sizeof label, "%s", s[j].name);
    ROW("  %-32.32s %11s %7.1f %9.2f %11.2f %9.2f %5.1f%%", label, gb, s[j].count,
        s[j].dur / n / 1e3, s[j].exposed / n / 1e3, s[j].lead / n / 1e3,
        100 * s[j].exposed / exposed_all);
  }
  free(s);
}

#endif
