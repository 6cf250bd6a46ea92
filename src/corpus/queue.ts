// deno-lint-ignore-file no-import-prefix -- see the bullmq import below
/**
 * The queue mode, over BullMQ on Redis: the only module that knows the job engine. The
 * coordinator puts one job per document on the queue named by --queue and follows them through
 * BullMQ's events; workers (`run_corpus.ts --worker`, one process per GPU, on any host that sees
 * the same files) take jobs one at a time. BullMQ does the distributed part: retries with an
 * exponential backoff, UnrecoverableError for documents that cannot succeed, and locks renewed
 * while a document runs, so a killed worker's document is taken again by another once its lock
 * expires (the stalled-job check).
 *
 * Paths travel as they are: inputs, --output_dir, a checkpoint and a config must be visible at
 * the same paths on every worker's host (a shared filesystem).
 *
 * @module
 */

// Versioned inline: a project importing mod.ts by URL does not see our deno.json import map.
import {
  type ConnectionOptions,
  type Job,
  Queue,
  QueueEvents,
  UnrecoverableError,
  Worker,
} from "npm:bullmq@5.81.5";
import { createHash } from "node:crypto";
import { UserError } from "../cli/errors.ts";
import type { DeviceSetting } from "../config/config.ts";
import type { TaskSpec, WorkerSettings } from "./flags.ts";
import type { Document } from "./inputs.ts";
import { type DocResult, OutputFolder } from "./layout.ts";
import { errorInfo } from "./messages.ts";
import type { QueueAddress } from "./queue_url.ts";
import type { RunEvents } from "./report.ts";
import { type CorpusJob, DocumentRunner, isPermanent, modelKey } from "./runner.ts";

/** What a job carries. */
interface JobData {
  spec: TaskSpec;
  job: CorpusJob;
}

/** What a finished job returns. */
type JobResult = DocResult & { computed: boolean; attempt: number };

/** How long to wait for Redis before saying it cannot be reached. */
const CONNECT_TIMEOUT_MS = 10_000;
/** How often a worker lets its timers run while a document computes (at most). */
const YIELD_MS = 250;
/** How long closing a connection may take. */
const CLOSE_TIMEOUT_MS = 2000;
/** Progress updates (one Redis call each) at most this often per document. */
const PROGRESS_MS = 1000;
/** How often the coordinator looks at the queue's counts (and for lost jobs). */
const CHECK_MS = 5000;
/** Jobs added or looked up per Redis round of the coordinator. */
const BATCH = 500;

function connection(a: QueueAddress, blocking: boolean): ConnectionOptions {
  return {
    host: a.host,
    port: a.port,
    ...(a.password !== undefined ? { password: a.password } : {}),
    ...(a.username !== undefined ? { username: a.username } : {}),
    // Blocking connections (workers, events) must wait out a Redis restart, not fail.
    ...(blocking ? { maxRetriesPerRequest: null } : {}),
  };
}

/** A job's id: the same document of the same output folder is the same job. */
export function jobIdOf(outputDir: string, name: string): string {
  return "doc-" + createHash("sha256").update(`${outputDir}\n${name}`).digest("hex").slice(0, 40);
}

/** Waits until `ready` resolves, or fails with the last connection error after a timeout. */
async function reach(
  a: QueueAddress,
  ready: Promise<unknown>,
  lastError: () => string,
): Promise<void> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(
      () =>
        reject(
          new UserError(`cannot reach the queue at ${a.display}: ${lastError() || "no answer"}`),
        ),
      CONNECT_TIMEOUT_MS,
    );
  });
  try {
    await Promise.race([ready, timeout]);
  } finally {
    clearTimeout(timer);
  }
}

/** Settings of the coordinator of a queued run. */
export interface QueuedOptions {
  spec: TaskSpec;
  outputDir: string;
  address: QueueAddress;
  attempts: number;
  backoffMs: number;
  events: RunEvents;
  /** Called once the jobs are on the queue (the clock of bytes/s starts). */
  onReady?: () => void;
}

/**
 * Puts `docs` on the queue (a document already queued by an earlier coordinator of the same run
 * is followed, not added again) and reports each outcome to `o.events` until all are done or
 * failed.
 */
export async function runQueued(docs: Document[], o: QueuedOptions): Promise<void> {
  if (docs.length === 0) return;
  const a = o.address;
  let lastError = "";
  const onError = (e: Error) => (lastError = e.message);
  const queue = new Queue<JobData, JobResult>(a.name, { connection: connection(a, false) });
  const events = new QueueEvents(a.name, { connection: connection(a, true) });
  queue.on("error", onError);
  events.on("error", onError);
  try {
    await reach(a, Promise.all([queue.waitUntilReady(), events.waitUntilReady()]), () => lastError);
    const byId = new Map<string, Document>();
    for (const d of docs) byId.set(jobIdOf(o.outputDir, d.name), d);
    const pending = new Set(byId.keys());
    // Failed jobs whose tries are being read (their outcome is on its way).
    const reading = new Set<string>();
    let settle: () => void = () => {};
    const allDone = new Promise<void>((r) => (settle = r));
    const finish = (id: string) => {
      pending.delete(id);
      if (pending.size === 0) settle();
    };
    // Listen before adding, so no outcome is missed.
    events.on("completed", ({ jobId, returnvalue }) => {
      const doc = byId.get(jobId);
      if (!doc || !pending.has(jobId)) return;
      const r =
        (typeof returnvalue === "string" ? JSON.parse(returnvalue) : returnvalue) as JobResult;
      const { attempt, ...result } = r;
      o.events.outcome({ doc, status: "done", result, attempts: attempt });
      finish(jobId);
    });
    events.on("failed", async ({ jobId, failedReason }) => {
      const doc = byId.get(jobId);
      if (!doc || !pending.has(jobId) || reading.has(jobId)) return;
      reading.add(jobId);
      const job = await queue.getJob(jobId).catch(() => undefined);
      o.events.outcome({
        doc,
        status: "failed",
        error: failedReason,
        attempts: job?.attemptsMade ?? o.attempts,
      });
      await job?.remove().catch(() => {});
      finish(jobId);
    });
    events.on("progress", ({ jobId, data }) => {
      const doc = byId.get(jobId);
      const p = data as { done?: number; total?: number };
      if (doc && typeof p?.done === "number") o.events.progress(doc.name, p.done, p.total ?? 0);
    });
    events.on("stalled", ({ jobId }) => {
      const doc = byId.get(jobId);
      if (doc) o.events.note(`${doc.name}: its worker stopped answering; it is queued again`);
    });
    await enqueue(queue, [...byId.keys()], byId, o);
    o.onReady?.();
    await watch(queue, { pending, reading, byId, allDone, finish }, o);
  } finally {
    await closeWithin(events.close());
    await closeWithin(queue.close());
  }
}

/**
 * Waits for a connection to close, at most a few seconds: one that never connected does not
 * close (its reconnection timers end with the process).
 */
async function closeWithin(closing: Promise<unknown>): Promise<void> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  await Promise.race([
    closing.catch(() => {}),
    new Promise((r) => (timer = setTimeout(r, CLOSE_TIMEOUT_MS))),
  ]);
  clearTimeout(timer);
}

/** Adds the jobs not on the queue yet; a finished job of an earlier coordinator is replaced. */
async function enqueue(
  queue: Queue<JobData, JobResult>,
  ids: string[],
  byId: Map<string, Document>,
  o: QueuedOptions,
): Promise<void> {
  for (let i = 0; i < ids.length; i += BATCH) {
    const batch = ids.slice(i, i + BATCH);
    const states = await Promise.all(batch.map((id) => queue.getJobState(id)));
    const add: string[] = [];
    for (let k = 0; k < batch.length; k++) {
      if (states[k] === "completed" || states[k] === "failed") {
        await (await queue.getJob(batch[k]))?.remove();
        add.push(batch[k]);
      } else if (states[k] === "unknown") {
        add.push(batch[k]);
      }
    }
    await queue.addBulk(add.map((id) => jobOf(id, byId.get(id)!, o)));
  }
}

function jobOf(id: string, doc: Document, o: QueuedOptions) {
  const data: JobData = {
    spec: o.spec,
    job: { name: doc.name, path: doc.path, outputDir: o.outputDir },
  };
  return {
    name: "document",
    data,
    opts: {
      jobId: id,
      attempts: o.attempts,
      backoff: { type: "exponential", delay: o.backoffMs },
      removeOnComplete: true,
      // Kept until the coordinator has read its tries, then removed.
      removeOnFail: false,
    },
  };
}

/**
 * Waits for every job's outcome; meanwhile says when no worker is there, and re-adds a job that
 * left the queue without an outcome the coordinator saw (its done-record decides whether it is
 * done).
 */
async function watch(
  queue: Queue<JobData, JobResult>,
  run: {
    pending: Set<string>;
    reading: Set<string>;
    byId: Map<string, Document>;
    allDone: Promise<void>;
    finish: (id: string) => void;
  },
  o: QueuedOptions,
): Promise<void> {
  const { pending, reading, byId, allDone, finish } = run;
  let idleChecks = 0;
  let warned = 0;
  const out = new OutputFolder(o.outputDir, o.spec.format);
  const check = async () => {
    const workers = await queue.getWorkersCount().catch(() => -1);
    if (workers === 0 && performance.now() - warned > 60_000) {
      warned = performance.now();
      o.events.note(
        `no worker is taking documents from ${o.address.display}: start one with ` +
          `run_corpus.ts --worker --queue ${o.address.display}`,
      );
    }
    const c = await queue.getJobCounts("active", "waiting", "delayed", "prioritized", "paused");
    const queued = Object.values(c).reduce((s, n) => s + n, 0);
    // Twice nothing queued while outcomes are missing: look at each missing job.
    idleChecks = queued === 0 && pending.size > 0 ? idleChecks + 1 : 0;
    if (idleChecks < 2) return;
    idleChecks = 0;
    for (const id of [...pending]) {
      const state = await queue.getJobState(id);
      if (state !== "unknown" && state !== "completed") continue;
      if (!pending.has(id) || reading.has(id)) continue;
      const doc = byId.get(id)!;
      const done = await out.done(doc.name);
      if (done) {
        o.events.outcome({ doc, status: "done", result: { ...done, computed: true }, attempts: 1 });
        finish(id);
      } else {
        await queue.add("document", jobOf(id, doc, o).data, jobOf(id, doc, o).opts);
      }
    }
  };
  let timer: ReturnType<typeof setTimeout> | undefined;
  const loop = async () => {
    try {
      await check();
    } catch {
      // The queue's own reconnection handles Redis going away; try again next time.
    }
    if (pending.size > 0) timer = setTimeout(loop, CHECK_MS);
  };
  timer = setTimeout(loop, CHECK_MS);
  try {
    if (pending.size > 0) await allDone;
  } finally {
    clearTimeout(timer);
  }
}

/** A worker's line on stderr (nothing when quiet). */
type Log = (line: string) => void;

/**
 * A queue worker: takes documents from the queue one at a time until SIGINT or SIGTERM (the first
 * lets the current document finish; a second stops at once, and the document is taken again by
 * another worker when its lock expires). The model is loaded at the first job and kept while the
 * jobs' model settings stay the same.
 */
export async function runQueueWorker(s: WorkerSettings): Promise<void> {
  const a = s.queue;
  const log: Log = s.quiet ? () => {} : (l) => console.error(l);
  let runner: DocumentRunner | null = null;
  let runnerKey = "";
  const lost = new Set<string>();
  let lastError = "";
  const processor = async (job: Job<JobData, JobResult>): Promise<JobResult> => {
    const { spec, job: doc } = job.data;
    const attempt = job.attemptsMade + 1;
    try {
      if (runner === null || runnerKey !== modelKey(spec)) {
        runner?.close();
        runner = null;
        runner = await DocumentRunner.open(spec, s.device as DeviceSetting | null);
        runnerKey = modelKey(spec);
        log(
          `worker ${runner.label}: loaded ${runner.modelInfo.model_id} (${runner.modelInfo.source})`,
        );
      }
      log(`worker ${runner.label}: start ${doc.name} (try ${attempt})`);
      let last = 0;
      const r = await runner.run(doc, {
        onProgress: (done, total) => {
          const now = performance.now();
          if (now - last < PROGRESS_MS) return;
          last = now;
          job.updateProgress({ done, total }).catch(() => {});
        },
        shouldStop: () => lost.has(job.id!),
        // The lock is renewed by a timer: let it run well within the lock's life.
        yieldMs: Math.min(YIELD_MS, s.lockMs / 8),
      }, spec);
      const bpb = typeof r.bits_per_byte === "number"
        ? `, ${r.bits_per_byte.toFixed(4)} bits/byte`
        : "";
      log(
        `worker ${runner.label}: ${r.computed ? "done" : "already done"} ${doc.name}: ` +
          `${r.bytes} bytes${bpb}, ${r.seconds.toFixed(2)} s`,
      );
      return { ...r, attempt };
    } catch (err) {
      const info = errorInfo(err);
      log(
        `worker ${runner?.label ?? Deno.pid}: failed ${doc.name} (try ${attempt}): ${info.message}`,
      );
      if (isPermanent(err)) throw new UnrecoverableError(info.message);
      throw new Error(info.message);
    } finally {
      lost.delete(job.id!);
    }
  };
  const worker = new Worker<JobData, JobResult>(a.name, processor, {
    connection: connection(a, true),
    concurrency: 1,
    lockDuration: s.lockMs,
    stalledInterval: s.stalledMs,
    // A document whose worker died twice is still tried once more before it counts as failed.
    maxStalledCount: 2,
    autorun: false,
  });
  let ready = false;
  worker.on("error", (e) => {
    // Before the first connection, the one error line says it (see reach).
    if (ready && e.message !== lastError) log(`worker ${Deno.pid}: ${e.message}`);
    lastError = e.message;
  });
  worker.on("lockRenewalFailed", (ids) => {
    // Another worker may take these documents now: stop computing them (nothing is written).
    for (const id of ids) lost.add(id);
  });
  const running = worker.run();
  try {
    await reach(a, worker.waitUntilReady(), () => lastError);
  } catch (e) {
    await closeWithin(worker.close(true));
    throw e;
  }
  ready = true;
  log(
    `worker ${Deno.pid}: taking documents from ${a.display} (device ${
      s.device ?? "from the config"
    })`,
  );
  const stop = new Promise<void>((resolve) => {
    let stopping = false;
    for (const [signal, code] of [["SIGINT", 130], ["SIGTERM", 143]] as const) {
      Deno.addSignalListener(signal, () => {
        if (stopping) Deno.exit(code);
        stopping = true;
        log(`worker ${Deno.pid}: ${signal}: stopping after the current document (again: now)`);
        resolve();
      });
    }
  });
  await Promise.race([stop, running]);
  await worker.close();
  await running.catch(() => {});
  (runner as DocumentRunner | null)?.close();
}
