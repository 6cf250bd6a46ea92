/**
 * Runs Debian's system Python (with numpy, msgpack) from tests, so outputs are checked with real
 * readers. Tests skip with a visible reason when it is absent.
 *
 * @module
 */
import { withTempDir } from "./temp_dir.ts";

/** The interpreter used: Debian's, not a pyenv shim earlier on PATH. */
export const PYTHON = Deno.env.get("MAMBABYTE_TEST_PYTHON") ?? "/usr/bin/python3";

/** What a Python run produced. */
export interface PythonResult {
  /** Exit code. */
  code: number;
  /** Standard output, UTF-8 decoded. */
  stdout: string;
  /** Standard error, UTF-8 decoded. */
  stderr: string;
}

/** Runs `python3 -c code args...` with a clean environment (no PYTHONPATH surprises). */
export function runPython(code: string, args: string[] = []): Promise<PythonResult> {
  return runPythonArgs(["-c", code, ...args]);
}

/** Runs `python3 args...` with a clean environment plus `env` (e.g. a script and its flags). */
export async function runPythonArgs(
  args: string[],
  env: Record<string, string> = {},
): Promise<PythonResult> {
  const out = await new Deno.Command(PYTHON, {
    args,
    clearEnv: true,
    env: { PATH: "/usr/bin:/bin", LANG: "C.UTF-8", PYTHONIOENCODING: "utf-8", ...env },
    stdout: "piped",
    stderr: "piped",
  }).output();
  const dec = new TextDecoder();
  return { code: out.code, stdout: dec.decode(out.stdout), stderr: dec.decode(out.stderr) };
}

/**
 * Runs `python3 script <file> args...` on `text` written to a temporary file named `name` (the
 * readers of the GPU machine's reports: Nsight Compute pages, `cuobjdump` text).
 */
export function runPythonOnText(
  script: string,
  name: string,
  text: string,
  args: string[] = [],
): Promise<PythonResult> {
  return withTempDir("mambabyte_py_input_", async (dir) => {
    await Deno.writeTextFile(`${dir}/${name}`, text);
    return await runPythonArgs([script, `${dir}/${name}`, ...args]);
  });
}

/** Runs Python and parses its stdout as JSON, throwing with stderr when it fails. */
export async function runPythonJson(code: string, args: string[] = []): Promise<unknown> {
  const r = await runPython(code, args);
  if (r.code !== 0) throw new Error(`python exited ${r.code}:\n${r.stderr}`);
  return JSON.parse(r.stdout);
}

const cache = new Map<string, Promise<string | null>>();

/** Why Python with `modules` cannot run here, or null when it can. */
export function pythonMissing(modules: string[]): Promise<string | null> {
  const key = modules.join(",");
  let p = cache.get(key);
  if (p === undefined) {
    p = (async () => {
      try {
        await Deno.stat(PYTHON);
      } catch {
        return `${PYTHON} not found`;
      }
      const r = await runPython(`import ${modules.join(", ")}`);
      return r.code === 0 ? null : `${PYTHON} lacks ${key}: ${r.stderr.trim().split("\n").at(-1)}`;
    })();
    cache.set(key, p);
  }
  return p;
}

/** True when {@link PYTHON} exists and imports every module in `modules`. */
export async function hasPythonWith(modules: string[]): Promise<boolean> {
  return (await pythonMissing(modules)) === null;
}

/**
 * `ignore` for a Deno.test needing Python with `modules`; warns once with the reason when the
 * test will be skipped.
 */
export async function skipWithoutPython(modules: string[]): Promise<boolean> {
  const why = await pythonMissing(modules);
  if (why !== null) console.warn(`skipping Python-checked tests: ${why}`);
  return why !== null;
}
