/**
 * Runs one fuzz case against the project's entry points (openCheckpoint and loadWeights for
 * checkpoints, unpickle for raw pickles, parseConfig for YAML, writeOutputs for records, and the
 * command line for a sample of checkpoints) and classifies what happened.
 *
 * @module
 */

import { dirname, join } from "node:path";
import { StorageRef } from "../../src/checkpoint/unpickle.ts";
import { CheckpointError } from "../../src/checkpoint/errors.ts";
import { openCheckpoint } from "../../src/checkpoint/open.ts";
import { unpickle } from "../../src/checkpoint/unpickle.ts";
import { loadWeights } from "../../src/checkpoint/weights.ts";
import { parseConfig } from "../../src/config/config.ts";
import { MambaByteError } from "../../src/errors.ts";
import { writeOutputs } from "../../src/io/mod.ts";
import { vizInputsFromOutputs } from "../../src/viz/from_outputs.ts";
import { SubwordTokenizer } from "../../src/generate/tokenizer.ts";
import {
  EXTRACT_DISCRETE_A,
  EXTRACT_INPUT_SIM,
  EXTRACT_MODULE_OUTPUTS,
} from "../../src/cli/extractions.ts";
import { describeError } from "../../src/cli/main.ts";
import { type ExtractionScript, runExtractionScript } from "../../src/cli/session.ts";
import { enc } from "./case.ts";
import { type ArgvScript, FUZZ_CLI_CONFIG, RUN_AS_SCRIPT } from "./gen_argv.ts";
import { FUZZ_DIMS, type FuzzCase } from "./generators.ts";

/** What a case did. Only "clean-error" and "success" are acceptable. */
export type Outcome =
  | "clean-error"
  | "success"
  | "crash"
  | "hang"
  | "memory"
  | "stack-trace"
  | "partial-file"
  | "bad-message";

/** All outcomes, in report order. */
export const OUTCOMES: readonly Outcome[] = [
  "clean-error",
  "success",
  "crash",
  "hang",
  "memory",
  "stack-trace",
  "partial-file",
  "bad-message",
];

/** The outcome of a case and a short explanation of anything unacceptable. */
export interface Verdict {
  outcome: Outcome;
  detail?: string;
}

/** The argv target's scripts: their definitions (in-process) and files (through the CLI).
 * generate.ts and evaluate.ts run only as the script (they write to the process's stdout, the
 * worker's channel). */
const ARGV_SPECS: Record<ArgvScript, { spec?: ExtractionScript; file: string }> = {
  discrete_A: { spec: EXTRACT_DISCRETE_A, file: "scripts/extract_discrete_A.ts" },
  module_outputs: { spec: EXTRACT_MODULE_OUTPUTS, file: "scripts/extract_module_outputs.ts" },
  input_sim: { spec: EXTRACT_INPUT_SIM, file: "scripts/extract_input_sim_with_discrete_A.ts" },
  generate: { file: "scripts/generate.ts" },
  evaluate: { file: "scripts/evaluate.ts" },
};

/** An argv case's command line with the case folder in place of `@DIR@`. */
function argvIn(c: FuzzCase, dir: string): string[] {
  return c.argv!.map((a) => a.replaceAll("@DIR@", dir));
}

/** The output file (relative to the case folder) a successful argv case writes, if any. */
function argvOutput(c: FuzzCase): string | null {
  let out: string | null = null;
  const argv = c.argv!;
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    if (a === "--filepath_to_store_outputs") out = argv[i + 1] ?? null;
    else if (a.startsWith("--filepath_to_store_outputs=")) out = a.slice(a.indexOf("=") + 1);
  }
  if (argv.includes("--help")) return null; // help, or an error before it: nothing written
  return out?.startsWith("@DIR@/") ? out.slice("@DIR@/".length) : null;
}

const REPO = new URL("../../", import.meta.url).pathname;

async function materialise(c: FuzzCase, dir: string): Promise<void> {
  for (const f of c.files) {
    const p = join(dir, f.path);
    await Deno.mkdir(dirname(p), { recursive: true });
    if (f.kind === "fifo") {
      const r = await new Deno.Command("mkfifo", { args: [p] }).output();
      if (!r.success) throw new Error(`mkfifo ${p} failed`);
    } else if (f.kind === "dir") await Deno.mkdir(p, { recursive: true });
    else if (f.kind === "symlink") await Deno.symlink(f.link!, p);
    else {
      await Deno.writeFile(p, f.data ?? new Uint8Array());
      if (f.size !== undefined) await Deno.truncate(p, f.size);
    }
  }
}

/** Regular files under `dir` (relative paths); FIFOs, links and folders are not listed. */
async function filesUnder(dir: string, rel = ""): Promise<string[]> {
  const out: string[] = [];
  for await (const e of Deno.readDir(join(dir, rel))) {
    const p = rel ? `${rel}/${e.name}` : e.name;
    if (e.isDirectory) out.push(...await filesUnder(dir, p));
    else if (e.isFile) out.push(p);
  }
  return out;
}

function hasControl(s: string): boolean {
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i);
    if (c < 0x20 || c === 0x7f) return true;
  }
  return false;
}

/** A script's error is clean when runMain would print one short printable line that is not an
 * internal error (its exit code 1 or 2); --help is a success. */
function judgeScriptError(e: unknown): Verdict {
  const r = describeError(e);
  if (r.code === 0) return { outcome: "success" };
  const line = r.lines[0] ?? "";
  if (r.lines.length !== 1 || line.includes("internal error")) {
    return { outcome: "crash", detail: line.slice(0, 300) };
  }
  return judgeMessage(line);
}

/** A clean error's message is short and printable. */
function judgeMessage(m: string): Verdict {
  if (m.length > 2000 || hasControl(m)) {
    return { outcome: "bad-message", detail: JSON.stringify(m.slice(0, 300)) };
  }
  return { outcome: "clean-error" };
}

/** A user-facing error is clean when its message is one short printable line. */
function judgeError(e: unknown): Verdict {
  if (!(e instanceof MambaByteError)) {
    const err = e instanceof Error ? e : new Error(String(e));
    const where = err.stack?.split("\n").find((l) => l.includes("/src/"))?.trim() ?? "";
    return { outcome: "crash", detail: `${err.name}: ${err.message.slice(0, 300)} ${where}` };
  }
  return judgeMessage(e.message);
}

/** Opens and reads every tensor, then loads the weights for the fuzz model and reads them. */
async function readCheckpoint(path: string): Promise<void> {
  const ck = await openCheckpoint(path);
  try {
    for (const t of ck.tensors.values()) await t.read();
  } finally {
    ck.close();
  }
  const w = await loadWeights(path, FUZZ_DIMS, { modelName: "fuzz" });
  try {
    for (const name of ["embedding.weight", "layers.0.mixer.in_proj.weight", "lm_head.weight"]) {
      if (w.has(name)) await w.readF32(name);
    }
  } finally {
    w.close();
  }
}

function persistentLoad(pid: unknown): StorageRef {
  if (!Array.isArray(pid) || pid[0] !== "storage") throw new CheckpointError("fuzz: bad pid");
  const n = typeof pid[4] === "number" && Number.isSafeInteger(pid[4]) ? pid[4] : 0;
  return new StorageRef(String(pid[2]).slice(0, 20), "F32", n, "cpu");
}

async function runTarget(c: FuzzCase, dir: string): Promise<void> {
  const entry = join(dir, c.entry);
  switch (c.target) {
    case "pickle":
      if (c.pickle) {
        unpickle(c.pickle, { label: "fuzz.pkl", persistentLoad });
        return;
      }
      return await readCheckpoint(entry);
    case "yaml": {
      const cfg = parseConfig(c.yaml!, join(dir, "fuzz.yml"));
      for (const id of cfg.modelIds) cfg.model(id);
      return;
    }
    case "write":
      return await writeOutputs(entry, c.record!);
    case "read":
      // read back (readOutputs) and made into the page's inputs, as visualize.ts --from_outputs does
      await vizInputsFromOutputs([entry], { quantities: ["discrete_A", "delta"], ranks: false });
      return;
    case "tokenizer": {
      const tk = await SubwordTokenizer.load(entry);
      tk.encodeBytes(enc.encode("To be, or not to be: that is the question. 3\u00e9\u4e2d"));
      return;
    }
    case "argv":
      return await runExtractionScript(ARGV_SPECS[c.script!].spec!, argvIn(c, dir));
    default:
      return await readCheckpoint(entry);
  }
}

/** Runs the command line (generate on the case's checkpoint, or an argv case's script and
 * command line): one error line or success, nothing else. */
async function runCli(c: FuzzCase, dir: string, timeoutMs: number): Promise<Verdict> {
  // an argv case brings its own config in the case folder; generate on a checkpoint gets one here
  const config = c.target === "argv" ? null : join(dir, "fuzz-cli.yml");
  const args = config === null
    ? ["run", "-A", join(REPO, ARGV_SPECS[c.script!].file), ...argvIn(c, dir)]
    : generateArgs(c, dir, config);
  // a process's arguments cannot hold NUL, nor one over 128 KiB or all over ~2 MiB (Linux):
  // such a command line cannot reach a script (the in-process run has had it)
  const bytes = args.map((a) => enc.encode(a).length);
  if (
    args.some((a) => a.includes("\0")) || Math.max(...bytes) >= 131_072 ||
    bytes.reduce((x, y) => x + y, 0) >= 1 << 20
  ) return { outcome: "success" };
  if (config !== null) await Deno.writeTextFile(config, FUZZ_CLI_CONFIG);
  const child = new Deno.Command(Deno.execPath(), {
    args,
    cwd: REPO,
    env: { NO_COLOR: "1", OMP_NUM_THREADS: "1" },
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  const timer = setTimeout(() => child.kill("SIGKILL"), timeoutMs);
  const out = await child.output();
  clearTimeout(timer);
  if (config !== null) await Deno.remove(config);
  const stderr = new TextDecoder().decode(out.stderr).trim();
  if (out.signal === "SIGKILL") return { outcome: "hang", detail: "command line timed out" };
  if (out.code === 0) return { outcome: "success" };
  // a successful extraction says where it stored its outputs on stderr; an error is one line
  const lines = stderr.split("\n");
  if (/^\s+at /m.test(stderr)) return { outcome: "stack-trace", detail: lines[0] };
  if (out.code !== 1 && out.code !== 2) {
    return { outcome: "crash", detail: `exit ${out.code}: ${lines[0]?.slice(0, 200)}` };
  }
  if (lines.length !== 1 || !/^(\S+: )?error: /.test(lines[0])) {
    return { outcome: "bad-message", detail: JSON.stringify(stderr.slice(0, 300)) };
  }
  if (lines[0].includes("internal error")) return { outcome: "crash", detail: lines[0] };
  return { outcome: "clean-error" };
}

/** generate.ts on the case's checkpoint, one byte. */
function generateArgs(c: FuzzCase, dir: string, config: string): string[] {
  return [
    "run",
    "-A",
    join(REPO, "scripts/generate.ts"),
    "--config_path",
    config,
    "--model_id",
    "fuzz",
    "--pretrained_model_filepath",
    join(dir, c.entry),
    "--prompt",
    "a",
    "--max_new_tokens",
    "1",
    "--device",
    "cpu",
    "--quiet",
  ];
}

/** Runs case `c` in the empty folder `dir`; never throws. */
export async function runCase(
  c: FuzzCase,
  dir: string,
  opts: { cliTimeoutMs?: number; onStart?: () => void } = {},
): Promise<Verdict> {
  await materialise(c, dir);
  const before = new Set(await filesUnder(dir));
  opts.onStart?.();
  // Anything printed while the case runs: the library itself must print nothing.
  const printed: string[] = [];
  let verdict: Verdict;
  // generate.ts and evaluate.ts run only as the script (the files they leave are checked below
  // all the same)
  const asScript = RUN_AS_SCRIPT.has(c.script ?? "");
  if (asScript) verdict = await runCli(c, dir, opts.cliTimeoutMs ?? 60_000);
  else {
    const saved = { error: console.error, warn: console.warn, log: console.log };
    const capture = (...args: unknown[]) => void printed.push(args.map(String).join(" "));
    console.error = console.warn = console.log = capture;
    try {
      await runTarget(c, dir);
      verdict = { outcome: "success" };
    } catch (e) {
      verdict = c.target === "argv" ? judgeScriptError(e) : judgeError(e);
    } finally {
      Object.assign(console, saved);
    }
  }
  const text = printed.join("\n");
  if (/^\s+at /m.test(text)) {
    return { outcome: "stack-trace", detail: text.split("\n")[0].slice(0, 200) };
  }
  const after = await filesUnder(dir);
  const made = after.filter((f) => !before.has(f));
  const written = c.target === "argv" ? argvOutput(c) : c.entry;
  const expected = (c.target === "write" || c.target === "argv") &&
      verdict.outcome === "success" && written
    ? [written]
    : [];
  const extra = made.filter((f) => !expected.includes(f));
  if (extra.length > 0) return { outcome: "partial-file", detail: extra.join(", ").slice(0, 300) };
  if (expected.length && !made.includes(expected[0])) {
    return { outcome: "partial-file", detail: `success without ${expected[0]}` };
  }
  if (c.cli && !asScript && verdict.outcome !== "crash") {
    const cli = await runCli(c, dir, opts.cliTimeoutMs ?? 60_000);
    if (cli.outcome !== "success" && cli.outcome !== "clean-error") return cli;
  }
  return verdict;
}
