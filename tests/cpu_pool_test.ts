/**
 * The CPU context's own thread pool (csrc/cpu/pool.c), which runs every parallel CPU kernel:
 * every slice runs exactly once for any thread count, workers that fell asleep wake for the next
 * job, back-to-back jobs do not race, no thread stays busy after a BLAS product, and destroying a
 * context stops its threads.
 *
 * A row's arithmetic does not depend on how rows are split between threads, so results must be
 * bit-identical across thread counts; a skipped or doubled slice shows as a difference (outputs
 * start as NaN, and the state update is not idempotent).
 *
 * Run after `deno task build`: deno test --allow-all tests/cpu_pool_test.ts
 */
import assert from "node:assert/strict";
import { Backend, offsetPtr, type Ptr } from "../src/backend/backend.ts";
import { randomFloats } from "./helpers/compare.ts";

const D_MODEL = 512, D_INNER = 1100, N = 16, R = 40;

/** bf16 bits by truncation (any bf16 values will do here). */
function bf16(a: Float32Array): Uint16Array {
  return Uint16Array.from(new Uint32Array(a.buffer), (u) => u >>> 16);
}

const SEED = 20261129;
/** Uniform in [lo, hi) from the shared seeded generator; `k` picks an independent stream. */
const rand = (k: number, n: number, lo = -1, hi = 1) =>
  randomFloats(n, SEED + k).map((v) => lo + (hi - lo) * (v + 1) / 2);
const inputs = {
  x: rand(0, D_MODEL),
  w: bf16(rand(1, 2 * D_INNER * D_MODEL, -0.2, 0.2)), // 2.2 MB: threaded
  u: rand(2, D_INNER, -2, 2),
  xDbl: rand(3, R + 2 * N),
  z: rand(4, D_INNER, -3, 3),
  dtW: rand(5, D_INNER * R, -0.5, 0.5), // fp32, 176 KB: threaded
  dtBias: rand(6, D_INNER, -4, -1),
  A: Float32Array.from({ length: D_INNER * N }, (_, i) => -(1 + (i % N))),
  D: rand(7, D_INNER),
  state: rand(8, D_INNER * N),
};

/** One decoding layer's threaded ops on a context; returns (in_proj out, y, state). */
class Job {
  readonly #ptrs: Ptr[] = [];
  readonly #p: Record<string, Ptr> = {};
  constructor(readonly be: Backend) {
    for (const [k, v] of Object.entries(inputs)) this.#p[k] = this.#put(v);
    this.#p.xz = this.#put(new Float32Array(2 * D_INNER).fill(NaN));
    this.#p.y = this.#put(new Float32Array(D_INNER).fill(NaN));
  }
  #put(a: ArrayBufferView): Ptr {
    const p = this.be.alloc(a.byteLength);
    this.be.upload(p, a);
    this.#ptrs.push(p);
    return p;
  }
  run(steps: number): { xz: Float32Array; y: Float32Array; state: Float32Array } {
    const p = this.#p, be = this.be;
    for (let s = 0; s < steps; s++) {
      be.linear({
        x: p.x,
        w: p.w,
        wdtype: "bf16",
        bias: null,
        n: 1,
        inF: D_MODEL,
        outF: 2 * D_INNER,
        y: p.xz,
      });
      be.stateUpdateDt({
        u: p.u,
        ldu: D_INNER,
        xDbl: p.xDbl,
        ldXDbl: R + 2 * N,
        dtW: p.dtW,
        wdtype: "f32",
        dtBias: p.dtBias,
        dtRank: R,
        A: p.A,
        B: offsetPtr(p.xDbl, R * 4),
        ldb: R + 2 * N,
        C: offsetPtr(p.xDbl, (R + N) * 4),
        ldc: R + 2 * N,
        D: p.D,
        z: p.z,
        ldz: D_INNER,
        state: p.state,
        batch: 1,
        d: D_INNER,
        n: N,
        deltaSoftplus: true,
        deltaOut: null,
        y: p.y,
        ldy: D_INNER,
      });
    }
    const get = (ptr: Ptr, n: number) => {
      const a = new Float32Array(n);
      be.download(a, ptr);
      return a;
    };
    return { xz: get(p.xz, 2 * D_INNER), y: get(p.y, D_INNER), state: get(p.state, D_INNER * N) };
  }
  free(): void {
    for (const p of this.#ptrs) this.be.free(p);
  }
}

function withJob<T>(threads: number, f: (job: Job) => T): T {
  const be = Backend.create("cpu", { threads });
  const job = new Job(be);
  try {
    return f(job);
  } finally {
    job.free();
    be.close();
  }
}

const reference = withJob(1, (job) => job.run(5));

Deno.test("pool: every thread count gives the single-thread bits", () => {
  assert.ok(reference.xz.every(Number.isFinite) && reference.y.every(Number.isFinite));
  for (const threads of [2, 3, 5]) {
    const got = withJob(threads, (job) => job.run(5));
    assert.deepEqual(got, reference, `${threads} threads`);
  }
});

Deno.test("pool: workers asleep after an idle spell wake for the next job", async () => {
  const be = Backend.create("cpu", { threads: 2 });
  const job = new Job(be);
  try {
    for (let i = 0; i < 5; i++) {
      job.run(1);
      await new Promise((res) => setTimeout(res, 15)); // idle workers sleep after ~2 ms
    }
    assert.deepEqual(job.run(0), reference);
  } finally {
    job.free();
    be.close();
  }
});

/** A zero-filled fp32 product (n x k) . (m x k)^T on `be`, large enough for the BLAS path (sgemm
 * slices on the pool): `run()` computes it, `free()` releases its buffers. */
function blasProduct(be: Backend, n: number, k: number, m: number) {
  const x = be.alloc(n * k * 4), w = be.alloc(m * k * 4), y = be.alloc(n * m * 4);
  be.memset(x, 0, n * k * 4);
  be.memset(w, 0, m * k * 4);
  return {
    run: () => be.linear({ x, w, wdtype: "f32", bias: null, n, inF: k, outF: m, y }),
    free: () => [x, w, y].forEach((p) => be.free(p)),
  };
}

Deno.test("pool: jobs right after a BLAS product give the same bits", () => {
  const be = Backend.create("cpu", { threads: 2 });
  const job = new Job(be);
  const product = blasProduct(be, 64, 256, 512);
  try {
    for (let i = 0; i < 5; i++) {
      product.run();
      job.run(1);
    }
    assert.deepEqual(job.run(0), reference);
  } finally {
    product.free();
    job.free();
    be.close();
  }
});

Deno.test("pool: thousands of back-to-back jobs do not race", () => {
  const many = withJob(2, (job) => job.run(1500));
  const single = withJob(1, (job) => job.run(1500));
  assert.deepEqual(many, single);
});

/** CPU time (clock ticks) of each thread of this process but the calling one (Linux). */
function otherThreadTicks(): number {
  let ticks = 0;
  for (const e of Deno.readDirSync("/proc/self/task")) {
    if (e.name === String(Deno.pid)) continue; // the main thread
    try {
      const st = Deno.readTextFileSync(`/proc/self/task/${e.name}/stat`);
      const f = st.slice(st.lastIndexOf(")") + 2).split(" ");
      ticks += Number(f[11]) + Number(f[12]); // utime + stime
    } catch { /* the thread ended */ }
  }
  return ticks;
}

Deno.test({
  name: "pool: after a BLAS-sized product no thread keeps a CPU busy",
  ignore: Deno.build.os !== "linux",
  async fn() {
    // OpenBLAS's own threads spin for ~0.1 s after each product; on few cores they took the CPU
    // from the pool's workers (decoding steps right after a prefill ran 500x slower). Products
    // now run as single-threaded sgemm slices on the pool, whose workers sleep ~2 ms after a job.
    const be = Backend.create("cpu", { threads: 2 });
    const product = blasProduct(be, 256, 512, 1024);
    try {
      for (let i = 0; i < 3; i++) product.run();
      await new Promise((res) => setTimeout(res, 10));
      const before = otherThreadTicks();
      await new Promise((res) => setTimeout(res, 300));
      const busy = otherThreadTicks() - before;
      assert.ok(busy <= 5, `other threads used ${busy} ticks of the 300 ms idle window`);
    } finally {
      product.free();
      be.close();
    }
  },
});

/**
 * Ids of this process's threads (Linux) named as the thread running this code is. The library's
 * threads inherit that name (they are started from it); the runtime's own workers ("V8
 * DefaultWorke", "tokio-runtime-w"), which it may start at any moment, do not count (one starting
 * mid-test had the process's total off by one in a CI run).
 */
function libraryThreads(): Set<string> {
  const comm = (tid: string) => Deno.readTextFileSync(`/proc/self/task/${tid}/comm`).trim();
  const main = Deno.readTextFileSync("/proc/thread-self/comm").trim();
  const out = new Set<string>();
  for (const e of Deno.readDirSync("/proc/self/task")) {
    try {
      if (comm(e.name) === main) out.add(e.name);
    } catch {
      // the thread ended between the listing and the read
    }
  }
  return out;
}

/** How many of those threads there are, or null where /proc cannot tell. */
function threadCount(): number | null {
  try {
    return libraryThreads().size;
  } catch {
    return null;
  }
}

Deno.test("pool: closing a context stops its threads", { ignore: threadCount() === null }, () => {
  // count from after one threaded job (a first product may start threads elsewhere)
  withJob(4, (job) => job.run(1));
  const before = threadCount()!;
  for (let i = 0; i < 20; i++) withJob(4, (job) => job.run(1));
  assert.equal(threadCount(), before);
  const be = Backend.create("cpu", { threads: 4 });
  const job = new Job(be);
  job.run(1);
  assert.equal(threadCount(), before + 3, "a 4-thread context runs 3 pool workers");
  job.free();
  be.close();
  assert.equal(threadCount(), before);
});

/** The CPUs a thread may run on (the thread-self or a task's status), as the kernel lists them. */
const cpusAllowed = (statusPath: string) =>
  /Cpus_allowed_list:\s*(\S+)/.exec(Deno.readTextFileSync(statusPath))![1];

const libc = (() => {
  if (Deno.build.os !== "linux") return null;
  try {
    return Deno.dlopen("libc.so.6", {
      sched_getaffinity: { parameters: ["i32", "usize", "buffer"], result: "i32" },
      sched_setaffinity: { parameters: ["i32", "usize", "buffer"], result: "i32" },
    });
  } catch {
    return null;
  }
})();

/** The CPUs the pool's worker of a new 2-thread context may run on once its first jobs ran (more
 * threads than CPUs would leave the placement to the scheduler). */
function newWorkersAllowed(): string[] {
  const before = libraryThreads();
  const be = Backend.create("cpu", { threads: 2 });
  const job = new Job(be);
  try {
    assert.deepEqual(job.run(5), reference);
    return [...libraryThreads()].filter((t) => !before.has(t))
      .map((t) => cpusAllowed(`/proc/self/task/${t}/status`));
  } finally {
    job.free();
    be.close();
  }
}

// A new worker starts on a CPU other than the caller's (csrc/cpu/pool.c: left to the scheduler,
// it often shared the caller's CPU for the pool's first ~100 ms, and the first jobs ran at one
// thread's speed; measured by build/bench_cpu_ops with BENCH_CPU_OPS_PER_CALL=1). What a test can
// hold without timing: that start leaves no worker pinned, and never takes one outside the CPUs
// the caller may use.
Deno.test({
  name: "pool: new workers may run on every CPU the caller may, no more",
  ignore: libc === null,
  fn() {
    const mine = cpusAllowed("/proc/thread-self/status");
    assert.deepEqual(newWorkersAllowed(), [mine]);
    // the caller held to one CPU: so are its workers (they inherit it; no placement is possible)
    const whole = new Uint8Array(128);
    assert.equal(libc!.symbols.sched_getaffinity(0, BigInt(whole.length), whole), 0);
    const first = [...Array(whole.length * 8).keys()].find((c) => whole[c >> 3] & (1 << (c & 7)))!;
    const one = new Uint8Array(128);
    one[first >> 3] = 1 << (first & 7);
    assert.equal(libc!.symbols.sched_setaffinity(0, BigInt(one.length), one), 0);
    try {
      assert.deepEqual(newWorkersAllowed(), [String(first)]);
    } finally {
      libc!.symbols.sched_setaffinity(0, BigInt(whole.length), whole);
    }
    assert.equal(cpusAllowed("/proc/thread-self/status"), mine);
  },
});
