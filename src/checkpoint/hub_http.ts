/**
 * The HTTP side of Hugging Face hub downloads, following huggingface_hub's rules: a HEAD request
 * (relative redirects followed, the redirect to a CDN host not) gives a file's commit
 * (`X-Repo-Commit`), its content hash (`X-Linked-Etag`, else `ETag`), its size (`X-Linked-Size`,
 * else `Content-Length`) and where to fetch it; a GET then streams it into a partial file, resuming
 * with `Range` where an earlier transfer stopped; the result is checked against the hash before the
 * caller moves it into the cache. Every failure is a one-line {@link CheckpointError}.
 *
 * @module
 */

import { createHash } from "node:crypto";
import { CheckpointError } from "./errors.ts";
import { quote } from "./show.ts";

/** How to talk to the hub, and the `hf://` spec that names the repo in messages. */
export interface HubHttp {
  /** The spec as the user gave it, e.g. `hf://owner/name@main` (starts every message). */
  label: string;
  /** e.g. `https://huggingface.co` (no trailing slash). */
  endpoint: string;
  /** Sent as `Authorization: Bearer` to the endpoint's host only (never to a CDN). */
  token?: string;
  /** Limit for a HEAD request, in milliseconds. */
  headTimeoutMs: number;
  /** Limit for a GET to start answering, and for any pause between body chunks, in ms. */
  downloadTimeoutMs: number;
}

/** A file of a repo at one commit, as the hub describes it. */
export interface RemoteFile {
  /** The file name in the repo. */
  file: string;
  /** The 40-hex commit the revision resolved to. */
  commit: string;
  /** sha256 (LFS files, 64 hex) or git blob sha1 (40 hex) of the content; also the blob's name. */
  etag: string;
  /** Content length in bytes. */
  size: number;
  /** Where to GET it: the resolve URL, or the CDN URL it redirects to. */
  url: string;
}

/** The hub's answer to a HEAD for a file that does not exist (and nothing worse). */
export interface MissingFile {
  missing: true;
  /** The failure as a one-line error, for callers that need the file. */
  error: CheckpointError;
}

const USER_AGENT = "mambabyte/0.1 (Deno; hf-hub-compatible)";
const COMMIT = /^[0-9a-f]{40}$/;
const SHA1_OR_SHA256 = /^(?:[0-9a-f]{40}|[0-9a-f]{64})$/;
const MAX_RELATIVE_REDIRECTS = 5;

function oneLine(s: string, max = 200): string {
  const t = s.replace(/\s+/g, " ").trim();
  return t.length > max ? `${t.slice(0, max - 3)}...` : t;
}

function host(url: string): string {
  try {
    return new URL(url).host;
  } catch {
    return url;
  }
}

/** The error for an HTTP status, refined by the hub's `X-Error-Code` like huggingface_hub does. */
function statusError(
  http: HubHttp,
  res: Response,
  file: string,
  revision: string,
): CheckpointError {
  const code = res.headers.get("X-Error-Code") ?? "";
  const msg = res.headers.get("X-Error-Message") ?? "";
  const at = `HTTP ${res.status} for ${file}`;
  const base = `${http.label}: ${at}`;
  if (code === "GatedRepo") {
    return new CheckpointError(
      `${base}: gated repository (accept its terms on the hub, then set HF_TOKEN)`,
    );
  }
  if (res.status === 401 && msg === "Invalid credentials in Authorization header") {
    return new CheckpointError(`${base}: HF_TOKEN is not valid on ${http.endpoint}`);
  }
  // The hub answers 401 for missing repos as well as private ones (it does not say which).
  if (code === "RepoNotFound" || res.status === 401) {
    return new CheckpointError(
      `${http.label}: repository not found on ${http.endpoint} (${at}; a private or gated repo ` +
        `needs HF_TOKEN)`,
    );
  }
  if (code === "RevisionNotFound") {
    return new CheckpointError(`${http.label}: revision ${quote(revision)} not found (${at})`);
  }
  if (code === "EntryNotFound") return new CheckpointError(`${base}: no such file in the repo`);
  if (res.status === 404) {
    return new CheckpointError(
      `${base} on ${http.endpoint} (no such repository, revision or file)`,
    );
  }
  return new CheckpointError(
    `${base} from ${host(res.url || http.endpoint)}${msg ? ` (${oneLine(msg)})` : ""}`,
  );
}

/** fetch() with an abort timer; the timer keeps running (the caller re-arms or clears it). */
class TimedRequest {
  readonly ac = new AbortController();
  #timer: ReturnType<typeof setTimeout> | undefined;
  readonly #ms: number;

  constructor(ms: number) {
    this.#ms = ms;
  }
  /** (Re)starts the timer. */
  arm(): void {
    this.clear();
    this.#timer = setTimeout(() => this.ac.abort(), this.#ms);
  }
  /** Stops the timer. */
  clear(): void {
    if (this.#timer !== undefined) clearTimeout(this.#timer);
    this.#timer = undefined;
  }
  get timedOut(): boolean {
    return this.ac.signal.aborted;
  }
}

function networkError(
  http: HubHttp,
  e: unknown,
  url: string,
  file: string,
  timedOut: boolean,
  ms: number,
): CheckpointError {
  if (timedOut) {
    return new CheckpointError(
      `${http.label}: no answer from ${host(url)} within ${ms / 1000} s for ${file}`,
    );
  }
  return new CheckpointError(
    `${http.label}: cannot reach ${host(url)} for ${file} (${oneLine((e as Error).message)})`,
  );
}

function baseHeaders(http: HubHttp, url: string): Record<string, string> {
  // The real size is wanted, not a compressed one.
  const h: Record<string, string> = { "Accept-Encoding": "identity", "User-Agent": USER_AGENT };
  // A token goes to the hub only; a CDN URL is already signed.
  if (http.token && host(url) === host(http.endpoint)) h.Authorization = `Bearer ${http.token}`;
  return h;
}

/** The resolve URL of a file at a revision (the revision URL-encoded whole, as the hub expects). */
export function resolveUrl(http: HubHttp, repoId: string, revision: string, file: string): string {
  return `${http.endpoint}/${repoId}/resolve/${encodeURIComponent(revision)}/${
    encodeURIComponent(file)
  }`;
}

function normalizeEtag(etag: string | null): string | null {
  if (etag === null) return null;
  return etag.replace(/^W\//, "").replace(/^"|"$/g, "");
}

/**
 * Asks the hub about one file. A plain 404 (no `X-Error-Code` other than EntryNotFound) comes back
 * as {@link MissingFile}; every other failure throws.
 */
export async function headFile(
  http: HubHttp,
  repoId: string,
  revision: string,
  file: string,
): Promise<RemoteFile | MissingFile> {
  let url = resolveUrl(http, repoId, revision, file);
  let res: Response | undefined;
  for (let hop = 0; hop <= MAX_RELATIVE_REDIRECTS; hop++) {
    const req = new TimedRequest(http.headTimeoutMs);
    req.arm();
    try {
      res = await fetch(url, {
        method: "HEAD",
        headers: baseHeaders(http, url),
        redirect: "manual",
        signal: req.ac.signal,
      });
    } catch (e) {
      throw networkError(http, e, url, file, req.timedOut, http.headTimeoutMs);
    } finally {
      req.clear();
    }
    await res.body?.cancel();
    const loc = res.headers.get("Location");
    // A renamed repo redirects within the hub (relative Location): follow it. An LFS file
    // redirects to a CDN host (absolute Location): that is where the GET will go.
    if (res.status >= 300 && res.status < 400 && loc && !/^([a-z][a-z0-9+.-]*:)?\/\//i.test(loc)) {
      url = new URL(loc, url).href;
      continue;
    }
    break;
  }
  res = res!;
  const redirect = res.status >= 300 && res.status < 400;
  if (!res.ok && !redirect) {
    const code = res.headers.get("X-Error-Code");
    const error = statusError(http, res, file, revision);
    if (res.status === 404 && (code === null || code === "EntryNotFound")) {
      return { missing: true, error };
    }
    throw error;
  }
  const commit = res.headers.get("X-Repo-Commit");
  if (commit === null || !COMMIT.test(commit)) {
    throw new CheckpointError(
      `${http.label}: ${http.endpoint} answered for ${file} without a commit (X-Repo-Commit); ` +
        `is HF_ENDPOINT a Hugging Face hub?`,
    );
  }
  const etag = normalizeEtag(res.headers.get("X-Linked-Etag") ?? res.headers.get("ETag"));
  if (etag === null || !SHA1_OR_SHA256.test(etag)) {
    throw new CheckpointError(
      `${http.label}: ${file} has no sha256 or git sha1 ETag (got ${
        JSON.stringify(etag)
      }), so it cannot be verified`,
    );
  }
  const sizeText = res.headers.get("X-Linked-Size") ??
    (redirect ? null : res.headers.get("Content-Length"));
  const size = sizeText !== null && /^\d+$/.test(sizeText) ? Number(sizeText) : NaN;
  if (!Number.isSafeInteger(size)) {
    throw new CheckpointError(`${http.label}: the hub gave no size for ${file}`);
  }
  const location = redirect && res.headers.get("Location")
    ? new URL(res.headers.get("Location")!, url).href
    : url;
  return { file, commit, etag, size, url: location };
}

/** Options of {@link downloadBlob}. */
export interface DownloadOptions {
  /** Refuse a file larger than this (bytes). */
  maxBytes: number;
  /** Called as data arrives: bytes on disk, total. */
  onProgress?: (done: number, total: number) => void;
  /** Further attempts, each resuming, after a transfer breaks off having made progress. */
  retries: number;
}

class Interrupted extends Error {
  constructor(readonly done: number, readonly gained: number, reason: string) {
    super(reason);
  }
}

async function sizeOf(path: string): Promise<number> {
  try {
    return (await Deno.stat(path)).size;
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) return 0;
    throw e;
  }
}

/**
 * Brings `partial` (the cache's `blobs/<etag>.incomplete`) up to the whole of `remote`, continuing
 * from what is already there. It does not verify the hash: see {@link blobMatches}.
 */
export async function downloadBlob(
  http: HubHttp,
  remote: RemoteFile,
  partial: string,
  opts: DownloadOptions,
): Promise<void> {
  if (remote.size > opts.maxBytes) {
    throw new CheckpointError(
      `${http.label}: ${remote.file} is ${remote.size} bytes, more than the ${opts.maxBytes} ` +
        `allowed for it; refusing to download`,
    );
  }
  for (let attempt = 0;; attempt++) {
    let have = await sizeOf(partial);
    if (have > remote.size) {
      await Deno.remove(partial);
      have = 0;
    }
    if (have === remote.size) {
      opts.onProgress?.(have, remote.size);
      return;
    }
    try {
      await transfer(http, remote, partial, have, opts);
      return;
    } catch (e) {
      if (!(e instanceof Interrupted)) throw e;
      if (e.gained > 0 && attempt < opts.retries) continue;
      throw new CheckpointError(
        `${http.label}: download of ${remote.file} interrupted at ${e.done} of ${remote.size} ` +
          `bytes (${oneLine(e.message)}); run again to resume`,
      );
    }
  }
}

async function transfer(
  http: HubHttp,
  remote: RemoteFile,
  partial: string,
  have: number,
  opts: DownloadOptions,
): Promise<void> {
  const { file, size, url } = remote;
  const headers = baseHeaders(http, url);
  if (have > 0) headers.Range = `bytes=${have}-`;
  const req = new TimedRequest(http.downloadTimeoutMs);
  req.arm();
  let res: Response;
  try {
    res = await fetch(url, { headers, signal: req.ac.signal });
  } catch (e) {
    req.clear();
    throw networkError(http, e, url, file, req.timedOut, http.downloadTimeoutMs);
  }
  let reader: ReadableStreamDefaultReader<Uint8Array> | undefined;
  let out: Deno.FsFile | undefined;
  let done = have;
  let discard = false;
  try {
    let start: number;
    if (res.status === 206) {
      const range = res.headers.get("Content-Range");
      if (range !== `bytes ${have}-${size - 1}/${size}`) {
        throw new CheckpointError(
          `${http.label}: ${file}: the server answered the resume request with range ${
            JSON.stringify(range)
          }, expected bytes ${have}-${size - 1}/${size}`,
        );
      }
      start = have;
    } else if (res.status === 200) {
      start = 0; // a server that ignores Range sends the whole file
    } else {
      throw statusError(http, res, file, remote.commit);
    }
    const length = res.headers.get("Content-Length");
    if (length !== null && Number(length) !== size - start) {
      throw new CheckpointError(
        `${http.label}: ${file}: the server sends ${length} bytes where ${size - start} are ` +
          `expected`,
      );
    }
    out = await Deno.open(partial, { write: true, create: true, append: start > 0 });
    if (start === 0) await out.truncate(0);
    done = start;
    opts.onProgress?.(done, size);
    reader = res.body!.getReader();
    for (;;) {
      req.arm(); // an idle limit between chunks
      let chunk: ReadableStreamReadResult<Uint8Array>;
      try {
        chunk = await reader.read();
      } catch (e) {
        throw new Interrupted(
          done,
          done - start,
          req.timedOut ? `no data for ${http.downloadTimeoutMs / 1000} s` : (e as Error).message,
        );
      }
      if (chunk.done) break;
      const data = chunk.value;
      if (done + data.length > size) {
        discard = true;
        throw new CheckpointError(
          `${http.label}: ${file}: the server sends more than the ${size} bytes announced`,
        );
      }
      for (let off = 0; off < data.length;) off += await out.write(data.subarray(off));
      done += data.length;
      opts.onProgress?.(done, size);
    }
    if (done < size) throw new Interrupted(done, done - start, "connection closed early");
  } finally {
    req.clear();
    out?.close();
    if (discard) await Deno.remove(partial).catch(() => {});
    if (reader) await reader.cancel().catch(() => {});
    else await res.body?.cancel().catch(() => {});
  }
}

/**
 * True when the file's content has the hash its etag names: sha256 for a 64-hex etag (LFS), git's
 * blob sha1 (`"blob <size>\0" + content`) for a 40-hex one.
 */
export async function blobMatches(path: string, etag: string): Promise<boolean> {
  const file = await Deno.open(path, { read: true });
  try {
    const size = (await file.stat()).size;
    const hash = createHash(etag.length === 64 ? "sha256" : "sha1");
    if (etag.length !== 64) hash.update(`blob ${size}\0`);
    const buf = new Uint8Array(1 << 22);
    for (;;) {
      const n = await file.read(buf);
      if (n === null) break;
      hash.update(buf.subarray(0, n));
    }
    return hash.digest("hex") === etag;
  } finally {
    file.close();
  }
}
