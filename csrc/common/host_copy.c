/*
 * host_copy.c — large host-to-host copies with several threads (mb_host_copy; the CPU backend's
 * downloads). Writing into fresh memory costs a page fault per 4 KiB page (the first touch of a
 * result array); faults taken by several threads at once overlap, and each thread first asks the
 * kernel to map its whole slice (MADV_POPULATE_WRITE, Linux 5.14+), which is cheaper than a fault
 * per page, and a fresh destination of 8 MiB or more is first advised onto transparent huge pages
 * (advise_huge). `deno run -A tools/bench_host_copy.ts` (a plain copy against this one, alternating):
 * 29 MiB into a fresh array on a 2-vCPU VM, ~104 ms plain, ~34 ms here. A destination that is
 * already mapped (an allocator's reused memory; three pages sampled with mincore) skips the
 * populate calls, which there only cost time; its copy still splits over threads when large, for
 * memory bandwidth, and copies of 4 MiB and more use streaming stores (copy_stream).
 * mb_host_prefault's job (below) maps fresh destinations ahead on background threads; a copy into
 * one of its ranges waits for that range, then copies as into mapped memory.
 */
#define _GNU_SOURCE /* sched_getaffinity, CPU_COUNT, MADV_POPULATE_WRITE */
#include <pthread.h>
#include <stdatomic.h>
#include <sched.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>
#if defined(__x86_64__) && defined(__SSE2__)
#include <emmintrin.h>
#endif

#include "internal.h"

#if defined(__linux__) && !defined(MADV_POPULATE_WRITE)
#define MADV_POPULATE_WRITE 23
#endif
#if defined(__linux__) && !defined(MADV_HUGEPAGE)
#define MADV_HUGEPAGE 14
#endif

#define HOST_COPY_MAX_THREADS 16
#define HOST_COPY_MIN_SLICE ((size_t)4 << 20) /* below this a thread costs more than it saves */
#define HOST_COPY_PAGE ((uintptr_t)4096)
#define HOST_COPY_MIN_POPULATE ((size_t)256 << 10) /* smaller copies: a plain memcpy */
#define HOST_COPY_HUGE ((uintptr_t)2 << 20)        /* a transparent huge page (x86-64, arm64 4K) */

struct copy_slice {
  char *dst;
  const char *src;
  size_t bytes;
  int populate; /* map dst's pages first (fresh memory) */
  int stream;   /* non-temporal stores (copy_stream) */
};

/* A copy whose stores bypass the caches (SSE2's movntdq, baseline on x86-64): a plain store first
 * reads the destination's line into the cache (read for ownership), so a copy into memory that is
 * not cached moves each byte three times over the memory bus; streaming stores make it two, and
 * leave the caches to the data that is used next. memcpy does this only above a size threshold
 * that a thread's slice of a tap chunk stays under. Elsewhere: memcpy. */
static void copy_stream(char *dst, const char *src, size_t bytes) {
#if defined(__x86_64__) && defined(__SSE2__)
  size_t head = (size_t)((16 - ((uintptr_t)dst & 15)) & 15);
  if (head > bytes) head = bytes;
  memcpy(dst, src, head);
  dst += head, src += head, bytes -= head;
  size_t i = 0;
  for (; i + 64 <= bytes; i += 64) {
    const __m128i a = _mm_loadu_si128((const __m128i *)(src + i));
    const __m128i b = _mm_loadu_si128((const __m128i *)(src + i + 16));
    const __m128i c = _mm_loadu_si128((const __m128i *)(src + i + 32));
    const __m128i d = _mm_loadu_si128((const __m128i *)(src + i + 48));
    _mm_stream_si128((__m128i *)(dst + i), a);
    _mm_stream_si128((__m128i *)(dst + i + 16), b);
    _mm_stream_si128((__m128i *)(dst + i + 32), c);
    _mm_stream_si128((__m128i *)(dst + i + 48), d);
  }
  memcpy(dst + i, src + i, bytes - i);
  _mm_sfence(); /* the streamed stores are ordered before whatever follows the copy */
#else
  memcpy(dst, src, bytes);
#endif
}

/* Streaming stores unless MAMBABYTE_HOST_COPY_NT=0 (A/B runs). */
static int use_stream(void) {
  const char *e = getenv("MAMBABYTE_HOST_COPY_NT");
  return !(e && e[0] == '0');
}

static void copy_slice_run(const struct copy_slice *s) {
#ifdef MADV_POPULATE_WRITE
  if (s->populate) {
  /* the whole pages inside the slice; errors (an older kernel) leave the faults to memcpy */
  uintptr_t lo = ((uintptr_t)s->dst + HOST_COPY_PAGE - 1) & ~(HOST_COPY_PAGE - 1);
  uintptr_t hi = ((uintptr_t)s->dst + s->bytes) & ~(HOST_COPY_PAGE - 1);
  if (hi > lo) (void)madvise((void *)lo, hi - lo, MADV_POPULATE_WRITE);
  }
#endif
  if (s->stream) copy_stream(s->dst, s->src, s->bytes);
  else memcpy(s->dst, s->src, s->bytes);
}

static void *copy_slice_main(void *arg) {
  copy_slice_run((const struct copy_slice *)arg);
  return NULL;
}

/* Whether dst's first, middle and last pages are mapped (a fresh mmap'd array has none). */
static int probably_mapped(const void *dst, size_t bytes) {
#ifdef __linux__
  const uintptr_t a = (uintptr_t)dst;
  const uintptr_t probes[3] = {a, a + bytes / 2, a + bytes - 1};
  for (int i = 0; i < 3; i++) {
    unsigned char v = 0;
    void *page = (void *)(probes[i] & ~(HOST_COPY_PAGE - 1));
    if (mincore(page, (size_t)HOST_COPY_PAGE, &v) != 0 || !(v & 1)) return 0;
  }
  return 1;
#else
  (void)dst;
  (void)bytes;
  return 0;
#endif
}

/* Fresh destinations of a few huge pages or more are asked to be backed by transparent huge pages
 * (MADV_HUGEPAGE on the 2 MiB-aligned part; where the system's THP mode is `madvise` or `always`):
 * one fault and one zeroing per 2 MiB instead of 512 faults. MAMBABYTE_HOST_HUGEPAGES=0 leaves
 * them to 4 KiB pages. Returns whether the advice was taken, so that slices follow huge pages. */
static int advise_huge(void *dst, size_t bytes) {
#ifdef MADV_HUGEPAGE
  const char *e = getenv("MAMBABYTE_HOST_HUGEPAGES");
  if ((e && e[0] == '0') || bytes < 4 * HOST_COPY_HUGE) return 0;
  uintptr_t lo = ((uintptr_t)dst + HOST_COPY_HUGE - 1) & ~(HOST_COPY_HUGE - 1);
  uintptr_t hi = ((uintptr_t)dst + bytes) & ~(HOST_COPY_HUGE - 1);
  return hi > lo && madvise((void *)lo, hi - lo, MADV_HUGEPAGE) == 0;
#else
  (void)dst;
  (void)bytes;
  return 0;
#endif
}

int mbc_allowed_cpus(void) {
#ifdef CPU_COUNT
  cpu_set_t set;
  if (sched_getaffinity(0, sizeof set, &set) == 0 && CPU_COUNT(&set) >= 1) return CPU_COUNT(&set);
#endif
  const long n = sysconf(_SC_NPROCESSORS_ONLN);
  return n >= 1 ? (int)n : 1;
}

void mbc_host_copy(void *dst, const void *src, size_t bytes, int max_threads, int mapped) {
  size_t nt = bytes / HOST_COPY_MIN_SLICE;
  if (max_threads < 1) max_threads = 1;
  if (nt > (size_t)max_threads) nt = (size_t)max_threads;
  if (nt > HOST_COPY_MAX_THREADS) nt = HOST_COPY_MAX_THREADS;
  if (bytes < HOST_COPY_MIN_POPULATE) {
    memcpy(dst, src, bytes);
    return;
  }
  const int fresh = !mapped && !probably_mapped(dst, bytes);
  const int huge = fresh && advise_huge(dst, bytes);
  /* copies of a few MiB and more: far larger than a core's caches, and a result is rarely read
   * right after its download */
  const int stream = bytes >= HOST_COPY_MIN_SLICE && use_stream();
  if (nt <= 1) {
    struct copy_slice s = {(char *)dst, (const char *)src, bytes, fresh, stream};
    copy_slice_run(&s);
    return;
  }
  /* slices of whole pages (huge ones where advised, counted from dst's first 2 MiB boundary), so
   * that no two threads fault on the same page */
  const uintptr_t unit = huge ? HOST_COPY_HUGE : HOST_COPY_PAGE;
  const size_t head =
      huge ? (size_t)((HOST_COPY_HUGE - ((uintptr_t)dst & (HOST_COPY_HUGE - 1))) & (HOST_COPY_HUGE - 1))
           : 0;
  /* a ceiling division first, so that nt slices always reach the end */
  size_t per = ((bytes - head + nt - 1) / nt + unit - 1) & ~(size_t)(unit - 1);
  struct copy_slice sl[HOST_COPY_MAX_THREADS];
  pthread_t th[HOST_COPY_MAX_THREADS];
  int started[HOST_COPY_MAX_THREADS] = {0};
  for (size_t i = 0; i < nt; i++) {
    size_t off = i == 0 ? 0 : head + per * i < bytes ? head + per * i : bytes;
    size_t end = head + per * (i + 1) < bytes ? head + per * (i + 1) : bytes;
    sl[i] = (struct copy_slice){(char *)dst + off, (const char *)src + off, end - off, fresh, stream};
  }
  for (size_t i = 1; i < nt; i++) started[i] = pthread_create(&th[i], NULL, copy_slice_main, &sl[i]) == 0;
  copy_slice_run(&sl[0]);
  for (size_t i = 1; i < nt; i++) {
    if (started[i]) pthread_join(th[i], NULL);
    else copy_slice_run(&sl[i]); /* no thread to be had: this one does the slice */
  }
}

/* ---- mapping fresh memory ahead of its first write (mb_host_prefault) ----------------------- */

#define PREFAULT_PIECE ((uintptr_t)8 << 20) /* a thread's unit of work: four huge pages */

/* One range, in pieces of PREFAULT_PIECE counted from the aligned address below lo, so that no
 * two threads populate the same huge page. */
struct prefault_range {
  uintptr_t lo, hi, base;
  size_t first_piece; /* the job's index of this range's first piece */
  size_t n_pieces;
  atomic_size_t done; /* pieces mapped */
};

struct mbc_prefault {
  struct prefault_range *ranges;
  size_t n_ranges, n_pieces;
  atomic_size_t next;
  pthread_mutex_t mu; /* with cv: copies waiting for their ranges (mbc_host_prefault_cover) */
  pthread_cond_t cv;
  pthread_t th[HOST_COPY_MAX_THREADS];
  int n_threads;
};

static void prefault_piece(struct mbc_prefault *job, size_t k) {
  size_t a = 0, b = job->n_ranges; /* the last range whose first piece is <= k */
  while (b - a > 1) {
    const size_t mid = (a + b) / 2;
    if (job->ranges[mid].first_piece <= k) a = mid;
    else b = mid;
  }
  struct prefault_range *r = &job->ranges[a];
  const uintptr_t j = (uintptr_t)(k - r->first_piece);
  uintptr_t lo = r->base + j * PREFAULT_PIECE, hi = lo + PREFAULT_PIECE;
  if (lo < r->lo) lo = r->lo;
  if (hi > r->hi) hi = r->hi;
#ifdef MADV_POPULATE_WRITE
  if (hi > lo) (void)madvise((void *)lo, hi - lo, MADV_POPULATE_WRITE);
#endif
  if (atomic_fetch_add(&r->done, 1) + 1 == r->n_pieces) {
    pthread_mutex_lock(&job->mu);
    pthread_cond_broadcast(&job->cv);
    pthread_mutex_unlock(&job->mu);
  }
}

int mbc_host_prefault_cover(mbc_prefault *job, const void *dst, size_t bytes) {
  if (!job) return 0;
  const uintptr_t a = (uintptr_t)dst, b = a + bytes;
  int covered = 0;
  for (size_t i = 0; i < job->n_ranges; i++) {
    struct prefault_range *r = &job->ranges[i];
    if (r->hi <= a || b <= r->lo) continue;
    if (atomic_load(&r->done) < r->n_pieces) {
      pthread_mutex_lock(&job->mu);
      while (atomic_load(&r->done) < r->n_pieces) pthread_cond_wait(&job->cv, &job->mu);
      pthread_mutex_unlock(&job->mu);
    }
    covered = 1;
  }
  return covered;
}

static void *prefault_main(void *arg) {
  struct mbc_prefault *job = (struct mbc_prefault *)arg;
  for (;;) {
    const size_t k = atomic_fetch_add(&job->next, 1);
    if (k >= job->n_pieces) return NULL;
    prefault_piece(job, k);
  }
}

void mbc_host_prefault_wait(mbc_prefault *job) {
  if (!job) return;
  for (int i = 0; i < job->n_threads; i++) pthread_join(job->th[i], NULL);
  pthread_cond_destroy(&job->cv);
  pthread_mutex_destroy(&job->mu);
  free(job->ranges);
  free(job);
}

int mbc_host_prefault_start(void *const *ptrs, const size_t *bytes, size_t n, mbc_prefault **out) {
  *out = NULL;
  /* every CPU but the caller's (which goes on queuing the device's work), at most 16;
   * MAMBABYTE_HOST_PREFAULT=N: at most N (0: none) */
  int nt = mbc_allowed_cpus() - 1;
  if (nt > HOST_COPY_MAX_THREADS) nt = HOST_COPY_MAX_THREADS;
  const char *e = getenv("MAMBABYTE_HOST_PREFAULT");
  if (e && e[0]) {
    const int want = atoi(e);
    if (want <= 0) return 0;
    if (want < nt) nt = want;
  }
  if (nt < 1) nt = 1;
  mbc_prefault *job = (mbc_prefault *)calloc(1, sizeof *job);
  struct prefault_range *r = (struct prefault_range *)calloc(n ? n : 1, sizeof *r);
  if (!job || !r) {
    free(job);
    free(r);
    return -1;
  }
  size_t pieces = 0, m = 0;
  for (size_t i = 0; i < n; i++) {
    if (!ptrs[i] || bytes[i] < HOST_COPY_MIN_POPULATE) continue;
    const uintptr_t lo = ((uintptr_t)ptrs[i] + HOST_COPY_PAGE - 1) & ~(HOST_COPY_PAGE - 1);
    const uintptr_t hi = ((uintptr_t)ptrs[i] + bytes[i]) & ~(HOST_COPY_PAGE - 1);
    if (hi <= lo) continue;
    (void)advise_huge(ptrs[i], bytes[i]);
    const uintptr_t base = lo & ~(PREFAULT_PIECE - 1);
    const size_t np = (size_t)((hi - base + PREFAULT_PIECE - 1) / PREFAULT_PIECE);
    r[m].lo = lo, r[m].hi = hi, r[m].base = base, r[m].first_piece = pieces, r[m].n_pieces = np;
    atomic_init(&r[m].done, 0);
    pieces += np;
    m++;
  }
  job->ranges = r;
  job->n_ranges = m;
  job->n_pieces = pieces;
  atomic_init(&job->next, 0);
  pthread_mutex_init(&job->mu, NULL);
  pthread_cond_init(&job->cv, NULL);
  if ((size_t)nt > pieces) nt = (int)pieces;
  for (int i = 0; i < nt; i++) {
    if (pthread_create(&job->th[job->n_threads], NULL, prefault_main, job) != 0) break;
    job->n_threads++;
  }
  if (job->n_threads == 0) { /* no thread to be had (or nothing to map): nothing runs */
    mbc_host_prefault_wait(job);
    return 0;
  }
  *out = job;
  return 0;
}
