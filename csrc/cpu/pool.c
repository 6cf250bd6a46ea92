/*
 * pool.c — the context's own thread pool: every parallel CPU kernel runs on it.
 *
 * A decoding step runs ~4 short parallel regions per layer (10-150 us each). An OpenMP region
 * costs ~3.7 us to fork and join on the 2-vCPU VMs measured (empty region, libgomp, with or
 * without OMP_WAIT_POLICY=active), a hand-off through one spinning worker ~1 us: over 53 layers
 * that is ~0.6 ms of a ~13 ms bf16 step. And two runtimes of spinning threads starve each other
 * on few cores (libgomp's idle workers spin for milliseconds: batch-8 decoding ran 6.5x slower
 * with OpenMP regions between pool jobs), so OpenMP is not used at all.
 *
 * Workers spin for a while after each job (the next one comes microseconds later while decoding)
 * and then sleep on a condition variable, so an idle context costs no CPU. Every wait spins alone
 * for its first 20 us only, then yields the CPU at each turn (MB_POOL_YIELD_NS): two of the
 * pool's threads on one CPU must not hold it from each other for a time slice. With more threads
 * than CPUs they sleep at once (spinning would take the CPUs the busy threads need). OpenBLAS
 * products run as single-threaded slices on this pool too (linear.c), so no other runtime's threads
 * spin beside it. The caller is thread 0 and runs its share itself.
 *
 * One job at a time per context (contexts are not shared between threads); a job that itself
 * asks for a parallel region runs it on its own thread.
 */
#ifdef __linux__
#define _GNU_SOURCE /* sched_getcpu, CPU_SET, pthread_attr_setaffinity_np */
#endif
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

#include "cpu_backend.h"

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#define MB_SPIN_PAUSE() _mm_pause()
#else
#define MB_SPIN_PAUSE() ((void)0)
#endif

/* How long an idle worker spins before it sleeps; longer than a decoding step's host-side gaps
 * (sampling, the caller's callbacks), short enough not to matter after the last step. */
#define MB_POOL_SPIN_NS 2000000LL
/* After this long a waiting thread (a worker for its next job, the caller for the workers) yields
 * the CPU on every turn of its spin: the scheduler may have put two of the pool's threads on one
 * CPU (at a pool's start, before it balances them, or beside the host's other threads), and a
 * pure spin then holds the CPU the other needs until its time slice ends. Measured on a 2-vCPU
 * VM (docs/cpu_notes.md, "The pool's waits yield"): a 2048 x 896 conv on two threads took 3-9 ms
 * a call for its first calls and 4.4-4.9 ms with both threads on one CPU (taskset), against 0.43
 * once apart and 0.85 on one thread; with the yields 0.83-0.85 on one CPU. Alone on its CPU,
 * sched_yield returns at once, so a wait past this point only spins slower. */
#define MB_POOL_YIELD_NS 20000LL

struct mbcpu_pool {
  int workers;        /* threads besides the caller */
  int oversubscribed; /* more threads than CPUs: nobody spins (workers sleep, the caller yields) */
  pthread_t *threads;
  /* the job: published by bumping `generation` */
  mbcpu_pool_fn fn;
  void *arg;
  int nt;
  _Alignas(64) atomic_uint generation;
  _Alignas(64) atomic_int done; /* workers finished with the current generation */
  _Alignas(64) atomic_int sleepers;
  atomic_int quit;
  pthread_mutex_t mu;
  pthread_cond_t wake;
#ifdef __linux__
  cpu_set_t allowed; /* the caller's CPUs when the pool started: where its workers may run */
#endif
};

static long long now_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (long long)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

/* The turns of one wait: a pause each, a yield each from MB_POOL_YIELD_NS on (see there). */
typedef struct {
  unsigned turns;
  int yielding;
  long long start;
} spin_wait;

/* One turn of a wait; returns how long the wait has lasted, in ns, every 256 turns (else 0). */
static long long spin_turn(spin_wait *w) {
  if (w->yielding)
    sched_yield();
  else
    MB_SPIN_PAUSE();
  if ((++w->turns & 255) != 0) return 0;
  const long long t = now_ns();
  if (!w->start) w->start = t;
  const long long age = t - w->start;
  if (age > MB_POOL_YIELD_NS) w->yielding = 1;
  return age;
}

/* Waits until `generation` differs from `seen`: spin first, then sleep. A worker counts itself in
 * `sleepers` and re-reads `generation` under the mutex; the publisher bumps `generation` before it
 * reads `sleepers` (both sequentially consistent), so either the worker sees the new generation
 * or the publisher sees the sleeper and signals. */
static unsigned wait_generation(struct mbcpu_pool *p, unsigned seen) {
  unsigned g;
  spin_wait w = {0, 0, 0};
  while (!p->oversubscribed) {
    g = atomic_load_explicit(&p->generation, memory_order_acquire);
    if (g != seen) return g;
    if (spin_turn(&w) > MB_POOL_SPIN_NS) break;
  }
  pthread_mutex_lock(&p->mu);
  atomic_fetch_add(&p->sleepers, 1);
  while ((g = atomic_load(&p->generation)) == seen) pthread_cond_wait(&p->wake, &p->mu);
  atomic_fetch_sub(&p->sleepers, 1);
  pthread_mutex_unlock(&p->mu);
  return g;
}

/* 1 on a thread while it runs a job's share: a nested mbcpu_parallel runs inline */
static _Thread_local int in_job;

typedef struct {
  struct mbcpu_pool *pool;
  int tid;
#ifdef __linux__
  int placed; /* started on one CPU (place_worker): widened to the pool's `allowed` at once */
#endif
} worker_arg;

/*
 * Each worker starts on a CPU of the caller's set other than the caller's own, and then may run
 * anywhere in that set. Left to the scheduler, a new worker often started on the caller's CPU and
 * stayed there for the pool's first ~60-100 ms (until the load balancer's averages ramped up), so
 * the first parallel calls of a process ran at one thread's speed: on a 2-vCPU VM, 10 of 12 and 5
 * of 16 fresh processes timed a 2048 x 896 -> 448 product at 13 ms a call for their first 5-7
 * calls, against 6.6 once apart (docs/cpu_notes.md, "The pool's workers start apart"). Linux
 * only; with more threads than CPUs the scheduler places them.
 */
#ifdef __linux__
struct placement {
  int here; /* the caller's CPU, or -1: no placement */
  int next; /* the CPU to try first for the next worker */
};

static void placement_begin(struct placement *pl, struct mbcpu_pool *p) {
  pl->next = 0;
  pl->here = p->oversubscribed || sched_getaffinity(0, sizeof p->allowed, &p->allowed) != 0
                 ? -1
                 : sched_getcpu();
}

/* Gives the worker's start the next CPU of the pool's set after the last one given that is not
 * the caller's (round robin); nothing when none is (one CPU) or the attribute is refused. */
static void place_worker(struct placement *pl, const struct mbcpu_pool *p, pthread_attr_t *attr,
                         worker_arg *wa) {
  wa->placed = 0;
  if (pl->here < 0) return;
  for (int k = 0; k < CPU_SETSIZE && !wa->placed; k++) {
    const int cpu = pl->next;
    pl->next = (pl->next + 1) % CPU_SETSIZE;
    if (cpu == pl->here || !CPU_ISSET(cpu, &p->allowed)) continue;
    cpu_set_t one;
    CPU_ZERO(&one);
    CPU_SET(cpu, &one);
    wa->placed = pthread_attr_setaffinity_np(attr, sizeof one, &one) == 0;
  }
}
#else
struct placement {
  int none;
};
static void placement_begin(struct placement *pl, struct mbcpu_pool *p) { (void)pl, (void)p; }
static void place_worker(struct placement *pl, const struct mbcpu_pool *p, pthread_attr_t *attr,
                         worker_arg *wa) {
  (void)pl, (void)p, (void)attr, (void)wa;
}
#endif

static void *worker_main(void *raw) {
  worker_arg *wa = (worker_arg *)raw;
  struct mbcpu_pool *p = wa->pool;
  const int tid = wa->tid;
#ifdef __linux__
  if (wa->placed) pthread_setaffinity_np(pthread_self(), sizeof p->allowed, &p->allowed);
#endif
  free(wa);
  unsigned seen = 0;
  for (;;) {
    seen = wait_generation(p, seen);
    if (atomic_load(&p->quit)) return NULL;
    if (tid < p->nt) {
      in_job = 1;
      p->fn(p->arg, tid, p->nt);
      in_job = 0;
    }
    atomic_fetch_add_explicit(&p->done, 1, memory_order_acq_rel);
  }
}

static void pool_destroy(struct mbcpu_pool *p, int started) {
  atomic_store(&p->quit, 1);
  atomic_fetch_add(&p->generation, 1);
  pthread_mutex_lock(&p->mu);
  pthread_cond_broadcast(&p->wake);
  pthread_mutex_unlock(&p->mu);
  for (int i = 0; i < started; i++) pthread_join(p->threads[i], NULL);
  pthread_mutex_destroy(&p->mu);
  pthread_cond_destroy(&p->wake);
  free(p->threads);
  free(p);
}

/* NULL when threads cannot be started: the caller then runs jobs on its own thread. */
static struct mbcpu_pool *pool_create(int workers) {
  struct mbcpu_pool *p = (struct mbcpu_pool *)calloc(1, sizeof *p);
  if (!p) return NULL;
  p->threads = (pthread_t *)calloc((size_t)workers, sizeof(pthread_t));
  if (!p->threads) {
    free(p);
    return NULL;
  }
  p->workers = workers;
  const long cpus = sysconf(_SC_NPROCESSORS_ONLN);
  p->oversubscribed = cpus >= 1 && workers + 1 > cpus;
  atomic_init(&p->generation, 0);
  atomic_init(&p->done, 0);
  atomic_init(&p->sleepers, 0);
  atomic_init(&p->quit, 0);
  pthread_mutex_init(&p->mu, NULL);
  pthread_cond_init(&p->wake, NULL);
  struct placement where;
  placement_begin(&where, p);
  for (int i = 0; i < workers; i++) {
    worker_arg *wa = (worker_arg *)malloc(sizeof *wa);
    pthread_attr_t attr;
    const int attr_ok = pthread_attr_init(&attr) == 0;
    if (wa) {
      *wa = (worker_arg){.pool = p, .tid = i + 1};
      if (attr_ok) place_worker(&where, p, &attr, wa);
    }
    const int ok =
        wa && pthread_create(&p->threads[i], attr_ok ? &attr : NULL, worker_main, wa) == 0;
    if (attr_ok) pthread_attr_destroy(&attr);
    if (!ok) {
      free(wa);
      pool_destroy(p, i);
      return NULL;
    }
  }
  return p;
}

void mbcpu_pool_release(mb_ctx *ctx) {
  mbcpu_ctx *c = mbcpu(ctx);
  if (c->pool) pool_destroy(c->pool, c->pool->workers);
  c->pool = NULL;
}

void mbcpu_parallel(mb_ctx *ctx, int nt, mbcpu_pool_fn fn, void *arg) {
  mbcpu_ctx *c = mbcpu(ctx);
  if (nt > ctx->num_threads) nt = ctx->num_threads;
  if (nt > 1 && !c->pool && !c->pool_failed) {
    c->pool = pool_create(ctx->num_threads - 1);
    c->pool_failed = c->pool == NULL;
  }
  struct mbcpu_pool *p = c->pool;
  if (nt <= 1 || !p || in_job) {
    /* one thread: the whole job here, as thread 0 of 1 */
    fn(arg, 0, 1);
    return;
  }
  p->fn = fn;
  p->arg = arg;
  p->nt = nt;
  atomic_store_explicit(&p->done, 0, memory_order_relaxed);
  atomic_fetch_add(&p->generation, 1); /* publishes fn, arg, nt (seq_cst) */
  if (atomic_load(&p->sleepers) > 0) {
    pthread_mutex_lock(&p->mu);
    pthread_cond_broadcast(&p->wake);
    pthread_mutex_unlock(&p->mu);
  }
  in_job = 1;
  fn(arg, 0, nt);
  in_job = 0;
  /* oversubscribed: the workers need this CPU from the start */
  spin_wait w = {0, p->oversubscribed, 0};
  while (atomic_load_explicit(&p->done, memory_order_acquire) < p->workers) spin_turn(&w);
}

/* ---- loops over items --------------------------------------------------------------------- */

typedef struct {
  mbcpu_for_fn fn;
  void *arg;
  int64_t n;
} for_job;

static void for_slice(void *raw, int tid, int nt) {
  const for_job *j = (const for_job *)raw;
  int64_t b, e;
  mbcpu_range(j->n, tid, nt, &b, &e);
  if (b < e) j->fn(j->arg, b, e);
}

void mbcpu_parallel_for(mb_ctx *ctx, int nt, int64_t n, mbcpu_for_fn fn, void *arg) {
  if (n <= 0) return;
  if (nt <= 1 || n == 1) {
    fn(arg, 0, n);
    return;
  }
  for_job job = {fn, arg, n};
  mbcpu_parallel(ctx, nt < n ? nt : (int)n, for_slice, &job);
}
