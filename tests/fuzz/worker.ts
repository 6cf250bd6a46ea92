/**
 * The fuzz worker: a child process that reads cases (one JSON line each: index, seed, target,
 * cli) on stdin, runs each in a fresh folder, and answers one line per case on stdout:
 * `@@fuzz {"index", "outcome", "detail", "ms", "peakMB", "growthMB", "cli"}` (cli: whether the
 * command line ran; argv cases of generate.ts and evaluate.ts always do): peakMB is this process's
 * peak resident memory while the library ran (Linux: VmHWM, reset through /proc/self/clear_refs
 * once the case's files are written), growthMB that peak less the resident memory at the reset,
 * i.e. what the case cost beyond the harness's own (generating a case can leave garbage).
 * The supervisor (runner.ts) handles hangs and runaway memory by killing this process.
 *
 * @module
 */

import { join } from "node:path";
import { generate, initGenerators, type Target } from "./generators.ts";
import { runCase, type Verdict } from "./targets.ts";
import { RUN_AS_SCRIPT } from "./gen_argv.ts";

const enc = new TextEncoder();

function procStatusKB(field: string): number | null {
  try {
    const m = new RegExp(`^${field}:\\s+(\\d+) kB`, "m").exec(
      Deno.readTextFileSync("/proc/self/status"),
    );
    return m ? Number(m[1]) : null;
  } catch {
    return null;
  }
}

function resetPeak(): void {
  try {
    Deno.writeTextFileSync("/proc/self/clear_refs", "5");
  } catch {
    // Not Linux: the peak then covers the whole run.
  }
}

const gc = (globalThis as { gc?: () => void }).gc;
let unhandled: unknown = null;
globalThis.addEventListener("unhandledrejection", (e) => {
  // A promise the library dropped on the floor: a crash of the case that caused it.
  e.preventDefault();
  unhandled = e.reason;
});

async function main(): Promise<void> {
  await initGenerators();
  const given = Deno.env.get("FUZZ_ROOT");
  const root = given ?? await Deno.makeTempDir({ prefix: "mambabyte_fuzz_" });
  const lines = Deno.stdin.readable.pipeThrough(new TextDecoderStream());
  let buf = "";
  try {
    for await (const chunk of lines) {
      buf += chunk;
      let nl: number;
      while ((nl = buf.indexOf("\n")) >= 0) {
        const line = buf.slice(0, nl);
        buf = buf.slice(nl + 1);
        if (line.trim()) await one(JSON.parse(line), root);
      }
    }
  } finally {
    if (!given) await Deno.remove(root, { recursive: true }).catch(() => {});
  }
}

async function one(
  req: { index: number; seed: number; target: Target; cli: boolean; cliTimeoutMs: number },
  root: string,
): Promise<void> {
  const dir = join(root, `c${req.index}`);
  await Deno.mkdir(dir);
  const t0 = performance.now();
  let verdict: Verdict;
  let desc = req.target as string;
  let baseKB = 0;
  let ranCli = req.cli;
  const onStart = () => {
    if ((procStatusKB("VmRSS") ?? 0) > 200 * 1024) gc?.();
    baseKB = procStatusKB("VmRSS") ?? 0;
    resetPeak();
  };
  try {
    const c = await generate(req.target, req.seed);
    c.cli = req.cli;
    ranCli = req.cli || RUN_AS_SCRIPT.has(c.script ?? "");
    desc = c.desc;
    verdict = await runCase(c, dir, { cliTimeoutMs: req.cliTimeoutMs, onStart });
  } catch (e) {
    // The harness itself failed (a generator bug): report it as a crash, with its cause.
    verdict = { outcome: "crash", detail: `harness: ${(e as Error)?.stack ?? e}`.slice(0, 500) };
  }
  // Let dropped promises surface before judging the case.
  await new Promise((r) => setTimeout(r, 0));
  if (unhandled !== null) {
    const r = unhandled as Error;
    verdict = { outcome: "crash", detail: `unhandled rejection: ${r?.name}: ${r?.message}` };
    unhandled = null;
  }
  const ms = performance.now() - t0;
  const peakKB = procStatusKB("VmHWM") ?? 0;
  const peakMB = peakKB / 1024;
  const growthMB = Math.max(0, peakKB - baseKB) / 1024;
  await Deno.remove(dir, { recursive: true }).catch(() => {});
  const result = {
    index: req.index,
    desc: desc.slice(0, 200),
    ...verdict,
    ms,
    peakMB,
    growthMB,
    cli: ranCli,
  };
  const bytes = enc.encode(`@@fuzz ${JSON.stringify(result)}\n`);
  for (let off = 0; off < bytes.length;) off += await Deno.stdout.write(bytes.subarray(off));
}

if (import.meta.main) await main();
