/**
 * What the corpus tests share: a corpus of small documents cut from the README (always present),
 * run_corpus.ts as a child process whose stderr lines are collected as they come, and the output
 * folder's files.
 *
 * @module
 */

import { REPO_ROOT } from "./scripts.ts";

/** The model flags of every corpus test: the bundled tiny model on the CPU. */
export const TINY = ["--model_id", "tiny"];

/** Writes `n` documents (`doc00.txt`, ...) of 300 to `300 + spread` bytes into `dir`. */
export async function writeCorpus(dir: string, n: number, spread = 900): Promise<string[]> {
  const text = await Deno.readTextFile(`${REPO_ROOT}/README.md`);
  await Deno.mkdir(dir, { recursive: true });
  const names: string[] = [];
  for (let i = 0; i < n; i++) {
    const start = (i * 613) % (text.length - 2000);
    const doc = text.slice(start, start + 300 + ((i * 97) % spread));
    const name = `doc${String(i).padStart(2, "0")}.txt`;
    await Deno.writeTextFile(`${dir}/${name}`, doc);
    names.push(name);
  }
  return names;
}

/** A running run_corpus.ts. */
export interface CorpusProcess {
  child: Deno.ChildProcess;
  /** Its stderr lines so far. */
  lines: string[];
  /** Resolves with the first line (already seen or to come) that matches. */
  waitFor(pattern: RegExp, timeoutMs?: number): Promise<string>;
  /** Exit code, stdout and every stderr line, once it has ended. */
  done(): Promise<{ code: number; stdout: string; stderr: string[] }>;
}

/** Starts `deno run -A scripts/run_corpus.ts ...args` in the repository root. */
export function spawnCorpus(args: string[], env: Record<string, string> = {}): CorpusProcess {
  const child = new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", `${REPO_ROOT}/scripts/run_corpus.ts`, ...args],
    cwd: REPO_ROOT,
    env: { NO_COLOR: "1", ...env },
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  const lines: string[] = [];
  const waiters: { pattern: RegExp; resolve: (l: string) => void }[] = [];
  const reading = (async () => {
    const take = (line: string) => {
      lines.push(line);
      for (const w of waiters.splice(0)) {
        if (w.pattern.test(line)) w.resolve(line);
        else waiters.push(w);
      }
    };
    let rest = "";
    for await (const chunk of child.stderr.pipeThrough(new TextDecoderStream())) {
      const parts = (rest + chunk).split("\n");
      rest = parts.pop()!;
      parts.forEach(take);
    }
    if (rest) take(rest);
  })();
  const stdout = new Response(child.stdout).text();
  return {
    child,
    lines,
    waitFor(pattern, timeoutMs = 60_000) {
      const seen = lines.find((l) => pattern.test(l));
      if (seen !== undefined) return Promise.resolve(seen);
      return new Promise((resolve, reject) => {
        const t = setTimeout(
          () =>
            reject(
              new Error(`no line matching ${pattern} in ${timeoutMs} ms:\n${lines.join("\n")}`),
            ),
          timeoutMs,
        );
        waiters.push({
          pattern,
          resolve: (l) => {
            clearTimeout(t);
            resolve(l);
          },
        });
      });
    },
    async done() {
      const status = await child.status;
      await reading;
      return { code: status.code, stdout: await stdout, stderr: lines };
    },
  };
}

/** Runs run_corpus.ts to its end. */
export function runCorpus(
  args: string[],
  env: Record<string, string> = {},
): Promise<{ code: number; stdout: string; stderr: string[] }> {
  return spawnCorpus(args, env).done();
}

/** Every file below `dir` (relative paths, sorted), hidden ones included. */
export async function filesBelow(dir: string, prefix = ""): Promise<string[]> {
  const out: string[] = [];
  for await (const e of Deno.readDir(`${dir}/${prefix}`)) {
    const rel = prefix ? `${prefix}/${e.name}` : e.name;
    if (e.isDirectory) out.push(...await filesBelow(dir, rel));
    else out.push(rel);
  }
  return out.sort();
}

/** The result files of an output folder (not the summary, not the bookkeeping), by name. */
export async function results(dir: string): Promise<Map<string, Uint8Array>> {
  const out = new Map<string, Uint8Array>();
  for (const f of await filesBelow(dir)) {
    if (f === "summary.json" || f.startsWith(".corpus/")) continue;
    out.set(f, await Deno.readFile(`${dir}/${f}`));
  }
  return out;
}

/** The summary of an output folder. */
export async function summaryOf(dir: string): Promise<Record<string, unknown>> {
  return JSON.parse(await Deno.readTextFile(`${dir}/summary.json`));
}
