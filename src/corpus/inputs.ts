/**
 * The documents of a corpus run, from --inputs: a folder (every file below it, hidden ones left
 * out), a glob (`corpus/*.txt`, `books/**\/*.txt`), or a manifest (a file listing one path per
 * line; blank lines and lines starting with # are skipped; relative paths are read from the
 * manifest's folder). Each document is named by its path relative to the folder (or to the
 * deepest folder holding every listed file), which names its result file too.
 *
 * Only the listing happens here: a listed file that cannot be read fails on its own when its turn
 * comes, and the others run.
 *
 * @module
 */

import { glob } from "node:fs/promises";
import { dirname, isAbsolute, join, relative, resolve, sep } from "node:path";
import { MAX_CORPUS_DOCUMENTS, MAX_MANIFEST_BYTES } from "../config/defaults.ts";
import { UserError } from "../cli/errors.ts";
import { readTextFileLimited } from "../io/read_limited.ts";

/** One document of a run. */
export interface Document {
  /** Its path relative to the corpus's folder ("860.txt", "books/860.txt"): names its result. */
  name: string;
  /** Its absolute path. */
  path: string;
  /** Its size when listed (0 when it could not be read then). */
  bytes: number;
}

/** How --inputs was read. */
export type InputKind = "folder" | "glob" | "manifest";

/** The documents --inputs names, sorted by name. */
export interface DocumentList {
  kind: InputKind;
  /** The folder the names are relative to. */
  base: string;
  documents: Document[];
}

const GLOB_CHARS = /[*?[\]{}]/;

async function statOrNull(path: string): Promise<Deno.FileInfo | null> {
  try {
    return await Deno.stat(path);
  } catch {
    return null;
  }
}

/** Every non-hidden file below `dir`; folders reached through links are not entered (cycles). */
async function walk(dir: string, out: string[]): Promise<void> {
  const entries: Deno.DirEntry[] = [];
  try {
    for await (const e of Deno.readDir(dir)) entries.push(e);
  } catch (err) {
    throw new UserError(`cannot list ${dir}: ${(err as Error).message}`);
  }
  for (const e of entries) {
    if (e.name.startsWith(".")) continue;
    const path = join(dir, e.name);
    if (e.isDirectory) await walk(path, out);
    else out.push(path);
    if (out.length > MAX_CORPUS_DOCUMENTS) tooMany(dir);
  }
}

function tooMany(where: string): never {
  throw new UserError(
    `${where} lists more than ${MAX_CORPUS_DOCUMENTS} documents: split the corpus into several runs`,
  );
}

/** The lines of a manifest that name documents, resolved against the manifest's folder. */
async function readManifest(path: string): Promise<string[]> {
  const text = await readTextFileLimited(path, MAX_MANIFEST_BYTES, "manifest", {
    makeError: (message) => new UserError(message),
  });
  const dir = dirname(path);
  const out: string[] = [];
  for (const raw of text.split("\n")) {
    const line = raw.replace(/\r$/, "");
    if (line.trim() === "" || line.trimStart().startsWith("#")) continue;
    out.push(resolve(dir, line));
    if (out.length > MAX_CORPUS_DOCUMENTS) tooMany(`manifest ${path}`);
  }
  return out;
}

/** Files (and anything else that is not a folder) matching a glob, relative to the cwd. */
async function expand(pattern: string): Promise<string[]> {
  const out: string[] = [];
  try {
    for await (const e of glob(pattern, { withFileTypes: true })) {
      if (e.isDirectory()) continue;
      out.push(resolve(e.parentPath, e.name));
      if (out.length > MAX_CORPUS_DOCUMENTS) tooMany(`--inputs ${pattern}`);
    }
  } catch (err) {
    throw new UserError(`cannot expand --inputs ${pattern}: ${(err as Error).message}`);
  }
  return out;
}

/** The deepest folder holding every path. */
function commonFolder(paths: string[]): string {
  let base = dirname(paths[0]);
  for (const p of paths) {
    while (relative(base, p).startsWith("..") || isAbsolute(relative(base, p))) {
      base = dirname(base);
    }
  }
  return base;
}

/**
 * Lists the documents of `inputs` (a folder, a glob or a manifest). Throws a {@link UserError}
 * when it names nothing that exists, or lists no document.
 */
export async function listDocuments(inputs: string): Promise<DocumentList> {
  const info = await statOrNull(inputs);
  let kind: InputKind;
  let paths: string[];
  let base: string;
  if (info?.isDirectory) {
    kind = "folder";
    base = resolve(inputs);
    paths = [];
    await walk(base, paths);
  } else if (info) {
    kind = "manifest";
    paths = await readManifest(resolve(inputs));
    base = paths.length ? commonFolder(paths) : dirname(resolve(inputs));
  } else if (GLOB_CHARS.test(inputs)) {
    kind = "glob";
    paths = await expand(inputs);
    base = paths.length ? commonFolder(paths) : resolve(".");
  } else {
    throw new UserError(`--inputs ${inputs}: no such folder, manifest or glob`);
  }
  const unique = [...new Set(paths)];
  if (unique.length === 0) {
    throw new UserError(`--inputs ${inputs}: the ${kind} lists no document`);
  }
  const documents: Document[] = [];
  for (const path of unique) {
    const name = relative(base, path).split(sep).join("/");
    const size = (await statOrNull(path))?.size ?? 0;
    documents.push({ name, path, bytes: size });
  }
  documents.sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
  return { kind, base, documents };
}
