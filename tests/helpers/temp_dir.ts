/** Temporary folders for tests. */

/** Runs `fn` in a fresh temporary folder named with `prefix`, removed afterwards, pass or fail. */
export async function withTempDir<T>(prefix: string, fn: (dir: string) => Promise<T>): Promise<T> {
  const dir = await Deno.makeTempDir({ prefix });
  try {
    return await fn(dir);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

/** The names of the entries of `dir`, sorted. */
export function entryNames(dir: string): string[] {
  return [...Deno.readDirSync(dir)].map((e) => e.name).sort();
}
