/**
 * The fuzz supervisor: feeds cases to a worker process (worker.ts) one at a time, kills it when a
 * case runs past its time limit (a hang) or the worker's resident memory passes a hard limit
 * (3x the cap), counts a case whose library call grew resident memory by more than the cap as
 * "memory", records
 * a case whose worker died as a crash (or as memory when V8 ran out of heap), and starts a fresh
 * worker to go on. Cases are (seed, index) pairs, so any result can be rerun alone.
 *
 * @module
 */

import { generate, initGenerators, type Target, TARGETS } from "./generators.ts";
import { caseSeed } from "./rng.ts";
import { type Outcome, OUTCOMES } from "./targets.ts";

/** Options of {@link runFuzz}. */
export interface FuzzOptions {
  /** Seed of the run. */
  seed: number;
  /** Number of cases. */
  cases: number;
  /** First case index (default 0). */
  start?: number;
  /** Per-case time limit in ms (default 20 s; command-line cases get 6x). */
  timeoutMs?: number;
  /** Most resident memory (MiB) one case may add while the library runs (default 512). */
  memoryMB?: number;
  /** One checkpoint case in n (by seed) also runs the command line (default 100; 0 = never). */
  cliEvery?: number;
  /** Only these targets (default all). */
  targets?: readonly string[];
  /** Called after each case. */
  onResult?: (r: CaseReport) => void;
}

/** One case's result. */
export interface CaseReport {
  index: number;
  seed: number;
  target: string;
  desc: string;
  outcome: Outcome;
  detail?: string;
  ms: number;
  /** The worker's peak resident memory while the library ran, and its growth over the case. */
  peakMB: number;
  growthMB: number;
  cli: boolean;
}

/** A run's totals. */
export interface FuzzSummary {
  counts: Record<Outcome, number>;
  byTarget: Record<string, Partial<Record<Outcome, number>>>;
  /** Every case that was neither a clean error nor a success. */
  failures: CaseReport[];
  /** The largest growth of resident memory in one case (MiB), and the case. */
  maxGrowthMB: number;
  maxGrowthCase: string;
  /** The largest resident memory of a worker seen (MiB). */
  maxPeakMB: number;
  /** The slowest cases. */
  slowest: CaseReport[];
  cliCases: number;
  seconds: number;
}

const WORKER = new URL("./worker.ts", import.meta.url).pathname;
const CLI_TARGETS = new Set([
  "safetensors",
  "torch-zip",
  "legacy-torch",
  "hf-folder",
  "raw",
  "argv",
]);

/** Sends SIGKILL unless the process has already ended (kill() throws then). */
function killChild(child: Deno.ChildProcess): void {
  try {
    child.kill("SIGKILL");
  } catch {
    // already gone
  }
}

function rssMB(pid: number): number {
  try {
    const m = /^VmRSS:\s+(\d+) kB/m.exec(Deno.readTextFileSync(`/proc/${pid}/status`));
    return m ? Number(m[1]) / 1024 : 0;
  } catch {
    return 0;
  }
}

class Worker {
  readonly child: Deno.ChildProcess;
  readonly #writer: WritableStreamDefaultWriter<Uint8Array>;
  readonly #reader: ReadableStreamDefaultReader<string>;
  #buf = "";
  stderrTail = "";
  /** The worker's scratch folder, removed here even when the worker is killed. */
  readonly root = Deno.makeTempDirSync({ prefix: "mambabyte_fuzz_" });

  constructor(memoryMB: number) {
    this.child = new Deno.Command(Deno.execPath(), {
      args: [
        "run",
        "-A",
        `--v8-flags=--expose-gc,--max-old-space-size=${Math.round(memoryMB * 1.5)}`,
        WORKER,
      ],
      stdin: "piped",
      stdout: "piped",
      stderr: "piped",
      env: { NO_COLOR: "1", FUZZ_ROOT: this.root },
    }).spawn();
    this.#writer = this.child.stdin.getWriter();
    this.#reader = this.child.stdout.pipeThrough(new TextDecoderStream()).getReader();
    const stderr = this.child.stderr.pipeThrough(new TextDecoderStream());
    (async () => {
      for await (const s of stderr) this.stderrTail = (this.stderrTail + s).slice(-4000);
    })().catch(() => {});
  }

  async send(line: string): Promise<void> {
    await this.#writer.write(new TextEncoder().encode(line + "\n"));
  }

  /** The next result line, or null when the worker's output ended. */
  async next(): Promise<string | null> {
    for (;;) {
      const nl = this.#buf.indexOf("\n");
      if (nl >= 0) {
        const line = this.#buf.slice(0, nl);
        this.#buf = this.#buf.slice(nl + 1);
        if (line.startsWith("@@fuzz ")) return line.slice(7);
        continue; // anything else the worker printed is not a result
      }
      const { value, done } = await this.#reader.read();
      if (done) return null;
      this.#buf += value;
    }
  }

  /** Ends the worker: politely (end of input) unless `kill`, then by SIGKILL after 5 s. */
  async stop(kill = false): Promise<void> {
    if (!kill) await this.#writer.close().catch(() => {});
    const timer = setTimeout(() => killChild(this.child), kill ? 0 : 5000);
    await this.child.status;
    clearTimeout(timer);
    await this.#writer.abort().catch(() => {});
    await this.#reader.cancel().catch(() => {});
    await Deno.remove(this.root, { recursive: true }).catch(() => {});
  }
}

let generatorsReady = false;

/** What case (target, seed) is, rebuilt here when its worker died before saying. */
async function describeCase(target: string, seed: number): Promise<string> {
  try {
    if (!generatorsReady) await initGenerators();
    generatorsReady = true;
    return (await generate(target as Target, seed)).desc.slice(0, 200);
  } catch {
    return "(worker lost)";
  }
}

/** Runs the cases and returns the totals. */
export async function runFuzz(opts: FuzzOptions): Promise<FuzzSummary> {
  const timeoutMs = opts.timeoutMs ?? 20_000;
  const memoryMB = opts.memoryMB ?? 512;
  const cliEvery = opts.cliEvery ?? 100;
  const targets = opts.targets?.length ? opts.targets : TARGETS;
  const counts = Object.fromEntries(OUTCOMES.map((o) => [o, 0])) as Record<Outcome, number>;
  const byTarget: FuzzSummary["byTarget"] = {};
  const failures: CaseReport[] = [];
  const all: CaseReport[] = [];
  let maxGrowthMB = 0;
  let maxGrowthCase = "";
  let maxPeakMB = 0;
  let cliCases = 0;
  const t0 = performance.now();
  let worker: Worker | null = null;
  try {
    const start = opts.start ?? 0;
    for (let index = start; index < start + opts.cases; index++) {
      const target = targets[index % targets.length];
      const seed = caseSeed(opts.seed, index);
      const cli = cliEvery > 0 && CLI_TARGETS.has(target) && seed % cliEvery === 0;
      const limit = cli ? timeoutMs * 6 : timeoutMs;
      worker ??= new Worker(memoryMB);
      const w: Worker = worker;
      await w.send(JSON.stringify({ index, seed, target, cli, cliTimeoutMs: limit - 1000 }));
      let watchdog: "hang" | "memory" | null = null;
      let peak = 0;
      const timer = setTimeout(() => {
        watchdog = "hang";
        killChild(w.child);
      }, limit);
      const poll = setInterval(() => {
        const mb = rssMB(w.child.pid);
        peak = Math.max(peak, mb);
        if (mb > memoryMB * 3 && watchdog === null) {
          watchdog = "memory";
          killChild(w.child);
        }
      }, 20);
      const line = await w.next();
      clearTimeout(timer);
      clearInterval(poll);
      let report: CaseReport;
      if (line !== null && watchdog === null) {
        const r = JSON.parse(line);
        report = { ...r, seed, target, cli: r.cli ?? cli }; // the worker says if it ran the CLI
        if (report.growthMB > memoryMB) {
          report.detail = `grew ${report.growthMB.toFixed(0)} MiB; ${report.detail ?? ""}`;
          report.outcome = "memory";
        }
      } else {
        // The worker is gone: a hang, runaway memory, or a crash of the process itself.
        await w.stop(true);
        const oom = /heap out of memory|Allocation failed/i.test(w.stderrTail);
        const outcome: Outcome = watchdog ?? (oom ? "memory" : "crash");
        const detail = watchdog === "hang"
          ? `no answer within ${limit} ms`
          : watchdog === "memory"
          ? `worker resident memory passed ${memoryMB} MiB`
          : `worker died: ${w.stderrTail.trim().split("\n").slice(-3).join(" | ").slice(0, 400)}`;
        report = {
          index,
          seed,
          target,
          desc: await describeCase(target, seed),
          outcome,
          detail,
          ms: limit,
          peakMB: peak,
          growthMB: peak,
          cli,
        };
        worker = null;
      }
      if (report.cli) cliCases++;
      counts[report.outcome]++;
      const bt = byTarget[target] ??= {};
      bt[report.outcome] = (bt[report.outcome] ?? 0) + 1;
      if (report.outcome !== "clean-error" && report.outcome !== "success") failures.push(report);
      if (report.growthMB > maxGrowthMB) {
        maxGrowthMB = report.growthMB;
        maxGrowthCase = `#${index} ${report.desc}`;
      }
      maxPeakMB = Math.max(maxPeakMB, report.peakMB, peak);
      all.push(report);
      if (all.length > 50) {
        all.sort((a, b) => b.ms - a.ms);
        all.length = 10;
      }
      opts.onResult?.(report);
    }
  } finally {
    await worker?.stop();
  }
  all.sort((a, b) => b.ms - a.ms);
  return {
    counts,
    byTarget,
    failures,
    maxGrowthMB,
    maxGrowthCase,
    maxPeakMB,
    slowest: all.slice(0, 5),
    cliCases,
    seconds: (performance.now() - t0) / 1000,
  };
}
