/**
 * All-or-nothing file writes: write a temporary file next to the target, then rename it over the
 * target, so a reader never sees a partial file and a failure leaves nothing behind.
 *
 * The temporary file is `.<name>.<pid>.<random>.tmp` beside the target. While a write is in flight,
 * SIGINT and SIGTERM are handled: the temporary files are removed, one line says what was
 * interrupted, and the process exits 130 (SIGINT) or 143 (SIGTERM), as the shell reports a
 * process killed by the signal. A process killed outright (SIGKILL, a crash) still leaves its
 * temporary file; the next write to the same target removes those of processes no longer alive.
 *
 * @module
 */

import { OutputError } from "./errors.ts";

function splitPath(path: string): { dir: string; base: string } {
  const i = path.lastIndexOf("/");
  if (i < 0) return { dir: ".", base: path };
  return { dir: i === 0 ? "/" : path.slice(0, i), base: path.slice(i + 1) };
}

function isFsError(err: unknown): boolean {
  return Object.values(Deno.errors).some((cls) => err instanceof cls);
}

function reason(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}

/** Temporary files of the writes in flight -> their targets. */
const inFlight = new Map<string, string>();
const SIGNALS: readonly (readonly [Deno.Signal, number])[] = [["SIGINT", 130], ["SIGTERM", 143]];
const listeners: [Deno.Signal, () => void][] = [];

function onSignal(signal: Deno.Signal, code: number): void {
  for (const tmp of inFlight.keys()) {
    try {
      Deno.removeSync(tmp);
    } catch {
      // Not created yet, or already renamed: nothing to remove.
    }
  }
  const targets = [...new Set(inFlight.values())].join(", ");
  console.error(
    `error: interrupted by ${signal} while writing ${targets}; no partial file is left`,
  );
  Deno.exit(code);
}

function track(tmp: string, target: string): void {
  inFlight.set(tmp, target);
  if (listeners.length > 0) return;
  for (const [signal, code] of SIGNALS) {
    const listener = () => onSignal(signal, code);
    try {
      Deno.addSignalListener(signal, listener);
      listeners.push([signal, listener]);
    } catch {
      // A platform without this signal (SIGTERM on Windows).
    }
  }
}

function untrack(tmp: string): void {
  inFlight.delete(tmp);
  if (inFlight.size > 0) return;
  // With no listener left, the signals' default action (terminate) applies again.
  for (const [signal, listener] of listeners.splice(0)) {
    Deno.removeSignalListener(signal, listener);
  }
}

function escapeRegExp(s: string): string {
  return s.replace(/[.*+?^${}()|[\]\\]/g, "\\$&");
}

/** True unless `pid` is known to be gone (only Linux's /proc can tell; elsewhere, assume alive). */
async function pidAlive(pid: number): Promise<boolean> {
  if (pid === Deno.pid) return true;
  try {
    await Deno.stat(`/proc/${pid}`);
    return true;
  } catch (err) {
    if (!(err instanceof Deno.errors.NotFound)) return true;
    try {
      await Deno.stat("/proc/self");
      return false;
    } catch {
      return true;
    }
  }
}

/** Removes `.<base>.<pid>.<random>.tmp` files in `dir` left by processes that are gone. */
async function removeStaleTemps(dir: string, base: string): Promise<void> {
  const pattern = new RegExp(`^\\.${escapeRegExp(base)}\\.(\\d+)\\.[0-9a-z]+\\.tmp$`);
  try {
    for await (const entry of Deno.readDir(dir)) {
      const m = pattern.exec(entry.name);
      if (!m || !entry.isFile || await pidAlive(Number(m[1]))) continue;
      await Deno.remove(`${dir}/${entry.name}`).catch(() => {});
    }
  } catch {
    // Cleaning up is a courtesy: an unreadable directory fails the write itself, later.
  }
}

/**
 * Runs `produce(tmpPath)` to create a temporary file in the target's directory (created if
 * missing), then renames it to `path`. On any failure the temporary file is removed and the error
 * propagates; filesystem failures become an {@link OutputError} naming the path.
 */
export async function atomicReplace(
  path: string,
  produce: (tmpPath: string) => Promise<void>,
): Promise<void> {
  const { dir, base } = splitPath(path);
  if (base === "") throw new OutputError(`output path names a directory: ${path}`);
  try {
    await Deno.mkdir(dir, { recursive: true });
  } catch (err) {
    throw new OutputError(`cannot create directory for ${path}: ${reason(err)}`, { cause: err });
  }
  await removeStaleTemps(dir, base);
  const rand = crypto.getRandomValues(new Uint32Array(1))[0].toString(36);
  const tmp = `${dir}/.${base}.${Deno.pid}.${rand}.tmp`;
  track(tmp, path);
  try {
    await produce(tmp);
    await Deno.rename(tmp, path);
  } catch (err) {
    await Deno.remove(tmp).catch(() => {});
    // Filesystem failures (missing dir, permission, read-only fs, no space) are the user's.
    if (isFsError(err)) {
      throw new OutputError(`cannot write ${path}: ${reason(err)}`, { cause: err });
    }
    throw err;
  } finally {
    untrack(tmp);
  }
}

/**
 * Creates a temporary file, hands it to `write`, closes it and renames it to `path`
 * (see {@link atomicReplace}).
 */
export async function atomicWrite(
  path: string,
  write: (file: Deno.FsFile) => Promise<void>,
): Promise<void> {
  await atomicReplace(path, async (tmp) => {
    const file = await Deno.open(tmp, { write: true, createNew: true });
    try {
      await write(file);
    } finally {
      file.close();
    }
  });
}
