/**
 * runMain: the wrapper every script's entry point goes through, turning errors into one line on
 * stderr and an exit code — 2 for a bad command line, 1 for anything else (a user-facing error,
 * the machine running out of memory or its GPU failing, or a bug) — never a raw stack trace unless
 * MAMBABYTE_DEBUG=1.
 *
 * @module
 */

import { MambaByteError } from "../errors.ts";
import { NativeError } from "../native/lib.ts";
import { HelpExit, UsageError } from "./errors.ts";

export { HelpExit, UsageError, UserError } from "./errors.ts";

/** Built-in error names: these signal a bug in the program, not a user mistake. */
const BUILTIN_ERRORS = new Set([
  "Error",
  "TypeError",
  "RangeError",
  "ReferenceError",
  "SyntaxError",
  "EvalError",
  "URIError",
  "AggregateError",
  "AssertionError",
]);

/**
 * True for errors a user can cause: our error classes (a `userFacing` marker, MambaByteError and
 * its subclasses, or another `*Error` class with an `exitCode`), and filesystem errors such as
 * Deno.errors.NotFound or PermissionDenied.
 */
export function isUserFacing(err: unknown): err is Error {
  if (!(err instanceof Error)) return false;
  if (err instanceof MambaByteError) return true;
  if ((err as { userFacing?: unknown }).userFacing === true) return true;
  if (Object.values(Deno.errors).some((cls) => err instanceof cls)) return true;
  const named = err.name.endsWith("Error") && !BUILTIN_ERRORS.has(err.name);
  return named && typeof (err as { exitCode?: unknown }).exitCode === "number";
}

/** Characters of an error line past which the rest is cut (a value the user gave may be quoted). */
const MAX_LINE = 1000;

/**
 * `s` as one printable line for a terminal: line breaks (and the space around them) become one
 * space, control and format characters (escape sequences, NUL, bidi overrides) are shown as
 * `\uXXXX`, so that a quoted flag value or file name cannot restyle or reorder what the terminal
 * shows, and a line longer than {@link MAX_LINE} characters is cut, saying how much was left out.
 */
export function oneLine(s: string): string {
  const t = s.replace(/\s*\n\s*/g, " ").trim().replace(
    /[\p{Cc}\p{Cf}]/gu,
    (c) => `\\u${c.codePointAt(0)!.toString(16).padStart(4, "0")}`,
  );
  if (t.length <= MAX_LINE) return t;
  const cut = /[\ud800-\udbff]/.test(t[MAX_LINE - 1]) ? MAX_LINE - 1 : MAX_LINE; // whole pairs
  return `${t.slice(0, cut)}... (${t.length - cut} more characters)`;
}

/** What to print and which exit code to use for `err`, given whether debug output is on. */
export function describeError(
  err: unknown,
  debug = false,
): { code: number; lines: string[] } {
  if (err instanceof HelpExit) return { code: err.status, lines: [] };
  if (err instanceof UsageError) {
    return { code: 2, lines: [`${err.prog}: error: ${oneLine(err.message)}`] };
  }
  if (err instanceof NativeError && err.machineFailure) { // out of memory, a device failure
    const lines = [`error: ${oneLine(err.userMessage)}`];
    if (debug && err.stack) lines.push(err.stack);
    return { code: 1, lines };
  }
  if (isUserFacing(err)) {
    const code = (err as { exitCode?: unknown }).exitCode;
    const lines = [`error: ${oneLine(err.message)}`];
    if (debug && err.stack) lines.push(err.stack);
    return { code: typeof code === "number" && code > 0 ? code : 1, lines };
  }
  const e = err instanceof Error ? err : new Error(String(err));
  const lines = [
    `error: internal error (${e.name}): ${oneLine(e.message)}` +
    (debug ? "" : " (set MAMBABYTE_DEBUG=1 for the stack trace)"),
  ];
  if (debug && e.stack) lines.push(e.stack);
  return { code: 1, lines };
}

/**
 * Runs `main(Deno.args)` and exits the process: 0 on success (or after `--help`), 2 on a
 * {@link UsageError}, the error's exit code (1) on a user-facing error, 1 on a bug.
 *
 * @example
 * ```ts ignore
 * import { runMain } from "./main.ts";
 * if (import.meta.main) {
 *   await runMain(async (args) => {
 *     console.log(args);
 *   });
 * }
 * ```
 */
export async function runMain(
  main: (args: string[]) => Promise<void>,
  args: string[] = Deno.args,
): Promise<never> {
  let code = 0;
  try {
    await main(args);
  } catch (err) {
    const debug = Deno.env.get("MAMBABYTE_DEBUG") === "1";
    const report = describeError(err, debug);
    for (const line of report.lines) console.error(line);
    code = report.code;
  }
  Deno.exit(code);
}
