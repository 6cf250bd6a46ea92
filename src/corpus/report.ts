/**
 * What a corpus run tells its user: a line per finished or failed document and a progress line
 * every few seconds on the coordinator's stderr (bytes done of the whole run, bytes/s), then the
 * summary (summary.json): per-document and corpus bits per byte, documents done and failed with
 * their errors, bytes/s.
 *
 * @module
 */

import type { TaskSpec } from "./flags.ts";
import type { Document } from "./inputs.ts";
import type { DocResult } from "./layout.ts";

/** How one document of the run ended. */
export interface Outcome {
  doc: Document;
  status: "done" | "failed";
  /** For a done document; computed is false when it was done before this run. */
  result?: DocResult & { computed: boolean };
  /** For a failed document: its last error, one line. */
  error?: string;
  /** Tries this run made. */
  attempts: number;
}

/** The events a run's engine (embedded or queue) reports as documents progress. */
export interface RunEvents {
  /** Bytes done of a document in flight. */
  progress(name: string, done: number, total: number): void;
  /** A document failed and will be tried again. */
  retry(name: string, attempt: number, error: string, delayMs: number): void;
  /** A document finished or failed for good. */
  outcome(o: Outcome): void;
  /** Anything else worth a line (a stalled job taken again, workers waited for). */
  note(line: string): void;
}

/** Progress every this often on stderr when nothing else was printed. */
const HEARTBEAT_MS = 10_000;

function kb(n: number): string {
  if (n >= 1e9) return `${(n / 1e9).toFixed(2)} GB`;
  if (n >= 1e6) return `${(n / 1e6).toFixed(2)} MB`;
  if (n >= 1e3) return `${(n / 1e3).toFixed(1)} kB`;
  return `${n} B`;
}

/** Prints a run's progress on stderr (nothing when quiet) and collects its outcomes. */
export class RunReporter implements RunEvents {
  /** The outcomes, in the order they came. */
  readonly outcomes: Outcome[] = [];
  #total: number;
  #quiet: boolean;
  #write: (line: string) => void;
  #inFlight = new Map<string, number>();
  #doneBytes = 0;
  #finished = 0;
  #failed = 0;
  #offset: number;
  #totalBytes: number;
  #start = 0;
  #end = 0;
  #lastLine = 0;
  #timer: ReturnType<typeof setInterval> | undefined;

  /**
   * `documents` and `bytes` of the whole corpus; `alreadyDone` documents were done before the
   * run began (counted as done, not in bytes/s).
   */
  constructor(
    documents: number,
    bytes: number,
    alreadyDone: number,
    quiet: boolean,
    write: (line: string) => void = (l) => console.error(l),
  ) {
    this.#total = documents;
    this.#offset = alreadyDone;
    this.#totalBytes = bytes;
    this.#quiet = quiet;
    this.#write = write;
  }

  #line(s: string): void {
    if (this.#quiet) return;
    this.#lastLine = performance.now();
    this.#write(s);
  }

  /** Bytes computed this run (finished documents plus the parts of those in flight). */
  get computedBytes(): number {
    let b = this.#doneBytes;
    for (const v of this.#inFlight.values()) b += v;
    return b;
  }

  /** Seconds from {@link start} to the last outcome (or now, while running). */
  get seconds(): number {
    if (this.#start === 0) return 0;
    return ((this.#end || performance.now()) - this.#start) / 1000;
  }

  /** Starts the clock (when the workers are ready) and the progress lines. */
  start(): void {
    this.#start = performance.now();
    if (this.#quiet) return;
    this.#timer = setInterval(() => {
      if (performance.now() - this.#lastLine >= HEARTBEAT_MS) this.#line(this.#status());
    }, 1000);
  }

  #status(): string {
    const s = this.seconds;
    const rate = s > 0 ? `, ${kb(this.computedBytes / s)}/s` : "";
    const done = this.#offset + this.#finished - this.#failed;
    return `corpus: ${done}/${this.#total} done, ${this.#failed} failed, ` +
      `${kb(this.computedBytes)} computed of ${kb(this.#totalBytes)}${rate}`;
  }

  progress(name: string, done: number, _total?: number): void {
    this.#inFlight.set(name, done);
  }

  retry(name: string, attempt: number, error: string, delayMs: number): void {
    this.#line(`corpus: ${name} failed (try ${attempt}), again in ${delayMs} ms: ${error}`);
  }

  outcome(o: Outcome): void {
    this.outcomes.push(o);
    this.#inFlight.delete(o.doc.name);
    this.#finished++;
    this.#end = performance.now();
    const n = `[${this.#offset + this.#finished}/${this.#total}]`;
    if (o.status === "failed") {
      this.#failed++;
      const tries = `${o.attempts} ${o.attempts === 1 ? "try" : "tries"}`;
      this.#line(`${n} ${o.doc.name}: FAILED after ${tries}: ${o.error}`);
      return;
    }
    const r = o.result!;
    if (r.computed) this.#doneBytes += r.bytes;
    const bpb = typeof r.bits_per_byte === "number"
      ? `, ${r.bits_per_byte.toFixed(4)} bits/byte`
      : "";
    const how = r.computed ? `${r.seconds.toFixed(2)} s on ${r.worker}` : "done before";
    this.#line(`${n} ${o.doc.name}: ${r.bytes} bytes${bpb}, ${how}`);
  }

  note(line: string): void {
    this.#line(`corpus: ${line}`);
  }

  /** Stops the progress lines. */
  finish(): void {
    if (this.#timer !== undefined) clearInterval(this.#timer);
    this.#timer = undefined;
  }
}

/** summary.json. */
export interface Summary {
  task: string;
  inputs: string;
  output_dir: string;
  format: string;
  model: TaskSpec["model"] & { model_id: string | null; source: string | null };
  context: number | null;
  documents: number;
  done: number;
  failed: number;
  /** Done by this run / before it. */
  computed: number;
  resumed: number;
  /** Bytes of the done documents / of those computed by this run. */
  bytes: number;
  computed_bytes: number;
  /** From the workers being ready to the last document. */
  seconds: number;
  /** computed_bytes / seconds (null when nothing was computed). */
  bytes_per_second: number | null;
  /** Over every done document with scores: sum of nats / ln 2 / bytes scored. */
  bits_per_byte: number | null;
  scored: number;
  nats: number;
  workers: string[];
  failures: { name: string; path: string; error: string; attempts: number }[];
  per_document: {
    name: string;
    status: "done" | "failed";
    bytes: number;
    bits_per_byte?: number | null;
    scored?: number;
    nats?: number;
    seconds?: number;
    worker?: string;
    result?: string;
    computed?: boolean;
    error?: string;
    attempts: number;
  }[];
}

/** Builds the summary of a run from its outcomes (those done before it included). */
export function buildSummary(
  run: { spec: TaskSpec; inputs: string; outputDir: string },
  outcomes: Outcome[],
  seconds: number,
): Summary {
  const sorted = [...outcomes].sort((a, b) => (a.doc.name < b.doc.name ? -1 : 1));
  const done = sorted.filter((o) => o.status === "done").map((o) => o.result!);
  const computed = done.filter((r) => r.computed);
  const scoredDocs = done.filter((r) => typeof r.scored === "number" && typeof r.nats === "number");
  const scored = scoredDocs.reduce((s, r) => s + r.scored!, 0);
  const nats = scoredDocs.reduce((s, r) => s + r.nats!, 0);
  const computedBytes = computed.reduce((s, r) => s + r.bytes, 0);
  return {
    task: run.spec.task,
    inputs: run.inputs,
    output_dir: run.outputDir,
    format: run.spec.format,
    model: {
      ...run.spec.model,
      model_id: done[0]?.model_id ?? null,
      source: done[0]?.source ?? null,
    },
    context: run.spec.context,
    documents: outcomes.length,
    done: done.length,
    failed: outcomes.length - done.length,
    computed: computed.length,
    resumed: done.length - computed.length,
    bytes: done.reduce((s, r) => s + r.bytes, 0),
    computed_bytes: computedBytes,
    seconds,
    bytes_per_second: computed.length && seconds > 0 ? computedBytes / seconds : null,
    bits_per_byte: scored > 0 ? nats / Math.LN2 / scored : null,
    scored,
    nats,
    workers: [...new Set(computed.map((r) => r.worker))].sort(),
    failures: sorted.filter((o) => o.status === "failed").map((o) => ({
      name: o.doc.name,
      path: o.doc.path,
      error: o.error!,
      attempts: o.attempts,
    })),
    per_document: sorted.map((o) =>
      o.status === "done"
        ? {
          name: o.doc.name,
          status: "done" as const,
          bytes: o.result!.bytes,
          ...(o.result!.scored !== undefined
            ? {
              bits_per_byte: o.result!.bits_per_byte,
              scored: o.result!.scored,
              nats: o.result!.nats,
            }
            : {}),
          seconds: o.result!.seconds,
          worker: o.result!.worker,
          result: o.result!.result,
          computed: o.result!.computed,
          attempts: o.attempts,
        }
        : {
          name: o.doc.name,
          status: "failed" as const,
          bytes: o.doc.bytes,
          error: o.error!,
          attempts: o.attempts,
        }
    ),
  };
}
