/**
 * All-or-nothing file writes: write a temporary file next to the target, then rename it over the
 * target, so a reader never sees a partial file and a failure leaves nothing behind.
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
  const rand = crypto.getRandomValues(new Uint32Array(1))[0].toString(36);
  const tmp = `${dir}/.${base}.${Deno.pid}.${rand}.tmp`;
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
