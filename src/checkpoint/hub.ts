/**
 * Resolves `hf://owner/name[@revision]` to a local snapshot folder (config.json + weights) in
 * huggingface_hub's cache, so the cache is shared with Python users:
 *
 * ```text
 * <cache>/models--<owner>--<name>/
 *   blobs/<etag>                the contents, named by sha256 (LFS files) or git blob sha1
 *   snapshots/<commit>/<file>   relative symlinks to ../../blobs/<etag>
 *   refs/<revision>             the commit a branch or tag resolved to
 * ```
 *
 * `<cache>` is `$HF_HUB_CACHE`, else `$HF_HOME/hub`, else `~/.cache/huggingface/hub`. A revision
 * whose ref (or commit) and snapshot files are already in the cache is used without touching the
 * network: a branch is resolved once and stays pinned to that commit until `refs/<revision>` is
 * deleted; name a commit (`@<40 hex>`) to be explicit. Otherwise the files are fetched from
 * `$HF_ENDPOINT` (with `$HF_TOKEN`), resumably and verified (see hub_http.ts); `HF_HUB_OFFLINE=1`
 * forbids that.
 *
 * @module
 */

import { join } from "node:path";
import { CheckpointError } from "./errors.ts";
import { quote, showPath } from "./show.ts";
// The sizes the readers of a local folder accept: a download is refused at the same bound.
import { MAX_HF_CONFIG_BYTES, MAX_HF_INDEX_BYTES } from "./limits.ts";
import {
  blobMatches,
  downloadBlob,
  headFile,
  type HubHttp,
  type MissingFile,
  type RemoteFile,
} from "./hub_http.ts";
import { HF_WEIGHT_FILES, readShardIndex } from "./shard_index.ts";

/** The prefix that marks a hub spec. */
export const HUB_SCHEME = "hf://";

/** Progress of one file's download: bytes on disk, its size, its name in the repo. */
export type DownloadCallback = (done: number, total: number, file: string) => void;

/** Options of {@link resolveHubSnapshot}. */
export interface HubOptions {
  /** Called while a file downloads (not called when everything is cached). */
  onDownload?: DownloadCallback;
  /** Environment lookup (default `Deno.env.get`); tests pass their own. */
  env?: (name: string) => string | undefined;
  /** Resumed attempts per file, within one call, after a transfer breaks off (default 2). */
  retries?: number;
}

/** A parsed `hf://owner/name[@revision]`. */
export interface HubSpec {
  owner: string;
  name: string;
  /** Branch, tag or commit (default "main"). */
  revision: string;
}

/** What the environment says, as huggingface_hub reads it. */
export interface HubSettings {
  cacheDir: string;
  endpoint: string;
  token?: string;
  offline: boolean;
  headTimeoutMs: number;
  downloadTimeoutMs: number;
}

/** Largest weight file accepted (the 972M model is ~4 GB in float32). */
export const MAX_WEIGHT_BYTES = 64 * 2 ** 30;

/** Weight files asked for, in order: single files first, as transformers looks for them. */
const HUB_WEIGHT_ORDER = [
  "model.safetensors",
  "model.safetensors.index.json",
  "pytorch_model.bin",
  "pytorch_model.bin.index.json",
];

const SPEC = /^hf:\/\/([^/@]+)\/([^/@]+)(?:@(.*))?$/;
const REPO_PART = /^[A-Za-z0-9](?:[A-Za-z0-9._-]{0,94}[A-Za-z0-9])?$/;
const REVISION = /^[A-Za-z0-9._-]+(?:\/[A-Za-z0-9._-]+)*$/;
const COMMIT = /^[0-9a-f]{40}$/;
const TRUE_VALUES = new Set(["1", "ON", "YES", "TRUE"]);

/** True when `path` is a hub spec (`hf://...`). */
export function isHubSpec(path: string): boolean {
  return path.startsWith(HUB_SCHEME);
}

/** Parses `hf://owner/name[@revision]`; a malformed spec is a {@link CheckpointError}. */
export function parseHubSpec(spec: string): HubSpec {
  const m = SPEC.exec(spec);
  const bad = (why: string) =>
    new CheckpointError(
      `${showPath(spec)}: ${why} (expected hf://owner/name or hf://owner/name@revision)`,
    );
  if (!m) throw bad("not a hub repo");
  const [, owner, name, rev] = m;
  for (const part of [owner, name]) {
    if (!REPO_PART.test(part) || part.includes("--") || part.includes("..")) {
      throw bad(`invalid repo name part ${quote(part)}`);
    }
  }
  const revision = rev ?? "main";
  if (
    revision.length > 255 || !REVISION.test(revision) ||
    revision.split("/").some((s) => s === "." || s === "..")
  ) {
    throw bad(`invalid revision ${quote(revision)}`);
  }
  return { owner, name, revision };
}

function expandHome(p: string, env: (n: string) => string | undefined): string {
  return p === "~" || p.startsWith("~/") ? (env("HOME") ?? "") + p.slice(1) : p;
}

function seconds(env: (n: string) => string | undefined, name: string, fallback: number): number {
  const v = env(name);
  if (v === undefined || v === "") return fallback * 1000;
  const s = Number(v);
  if (!(s > 0)) {
    throw new CheckpointError(`${name} must be a positive number of seconds (got ${v})`);
  }
  return s * 1000;
}

/** Reads the hub settings from the environment, with huggingface_hub's names and defaults. */
export function hubSettings(
  env: (name: string) => string | undefined = (n) => Deno.env.get(n),
): HubSettings {
  const get = (n: string) => env(n) || undefined; // an empty variable counts as unset
  const home = get("HF_HOME") ??
    join(get("XDG_CACHE_HOME") ?? join(get("HOME") ?? "~", ".cache"), "huggingface");
  const cacheDir = expandHome(
    get("HF_HUB_CACHE") ?? get("HUGGINGFACE_HUB_CACHE") ?? join(expandHome(home, env), "hub"),
    env,
  );
  const endpoint = (get("HF_ENDPOINT") ?? "https://huggingface.co").replace(/\/+$/, "");
  if (!/^https?:\/\/[^/]/.test(endpoint)) {
    throw new CheckpointError(`HF_ENDPOINT must be an http(s) URL (got ${endpoint})`);
  }
  const offline = get("HF_HUB_OFFLINE") ?? get("TRANSFORMERS_OFFLINE");
  return {
    cacheDir,
    endpoint,
    token: get("HF_TOKEN"),
    offline: offline !== undefined && TRUE_VALUES.has(offline.toUpperCase()),
    headTimeoutMs: seconds(env, "HF_HUB_ETAG_TIMEOUT", 10),
    downloadTimeoutMs: seconds(env, "HF_HUB_DOWNLOAD_TIMEOUT", 10),
  };
}

/** The repo's folder in the cache: `models--<owner>--<name>`. */
export function repoFolderName(spec: HubSpec): string {
  return `models--${spec.owner}--${spec.name}`;
}

async function isFile(path: string): Promise<boolean> {
  try {
    return (await Deno.stat(path)).isFile; // follows the snapshot symlink to its blob
  } catch {
    return false;
  }
}

/** True when the snapshot has config.json and a complete set of weights. */
async function snapshotComplete(dir: string): Promise<boolean> {
  if (!(await isFile(join(dir, "config.json")))) return false;
  for (const f of HF_WEIGHT_FILES) {
    if (!(await isFile(join(dir, f)))) continue;
    if (!f.endsWith(".index.json")) return true;
    let shards: string[];
    try {
      shards = await readShardIndex(join(dir, f));
    } catch {
      return false;
    }
    for (const s of shards) if (!(await isFile(join(dir, s)))) return false;
    return true;
  }
  return false;
}

/** The cached snapshot of a revision when it is complete; undefined otherwise. */
async function cachedSnapshot(repoDir: string, revision: string): Promise<string | undefined> {
  let commit: string | undefined = COMMIT.test(revision) ? revision : undefined;
  if (!commit) {
    try {
      commit = (await Deno.readTextFile(join(repoDir, "refs", revision))).trim();
    } catch {
      return undefined;
    }
    if (!COMMIT.test(commit)) return undefined;
  }
  const dir = join(repoDir, "snapshots", commit);
  return (await snapshotComplete(dir)) ? dir : undefined;
}

/**
 * Returns the local snapshot folder of `spec` (`hf://owner/name[@revision]`), downloading what the
 * cache lacks. Errors are one-line {@link CheckpointError}s naming the repo.
 */
export async function resolveHubSnapshot(spec: string, opts: HubOptions = {}): Promise<string> {
  const repo = parseHubSpec(spec);
  const settings = hubSettings(opts.env);
  const folder = repoFolderName(repo);
  const repoDir = join(settings.cacheDir, folder);
  const cached = await cachedSnapshot(repoDir, repo.revision);
  if (cached) return cached;
  if (settings.offline) {
    throw new CheckpointError(
      `${spec}: not in the Hugging Face cache (${repoDir}) and HF_HUB_OFFLINE is set; run once ` +
        `online to download it`,
    );
  }
  try {
    return await download(spec, repo, settings, opts);
  } catch (e) {
    // File-system trouble in the cache (permissions, a full disk): one line, not a stack.
    if (!Object.values(Deno.errors).some((c) => e instanceof c)) throw e;
    throw new CheckpointError(
      `${spec}: cannot store it in ${repoDir} (${(e as Error).message.replace(/\s+/g, " ")})`,
    );
  }
}

/** Fetches config.json and the weights of the revision into the cache; returns the snapshot. */
async function download(
  spec: string,
  repo: HubSpec,
  settings: HubSettings,
  opts: HubOptions,
): Promise<string> {
  const folder = repoFolderName(repo);
  const repoDir = join(settings.cacheDir, folder);
  const http: HubHttp = {
    label: spec,
    endpoint: settings.endpoint,
    token: settings.token,
    headTimeoutMs: settings.headTimeoutMs,
    downloadTimeoutMs: settings.downloadTimeoutMs,
  };
  const repoId = `${repo.owner}/${repo.name}`;
  const need = (r: RemoteFile | MissingFile): RemoteFile => {
    if ("missing" in r) throw r.error;
    return r;
  };
  const config = need(await headFile(http, repoId, repo.revision, "config.json"));
  const commit = config.commit;
  // Every further request names the commit, so all files come from the same one.
  const sameCommit = (r: RemoteFile): RemoteFile => {
    if (r.commit !== commit) {
      throw new CheckpointError(
        `${spec}: ${r.file} came from commit ${r.commit}, not ${commit} as config.json did`,
      );
    }
    return r;
  };
  const store = (r: RemoteFile, maxBytes: number) =>
    fetchToSnapshot(http, settings.cacheDir, folder, sameCommit(r), maxBytes, opts);

  await store(config, MAX_HF_CONFIG_BYTES);
  let weights: RemoteFile | undefined;
  for (const f of HUB_WEIGHT_ORDER) {
    const r = await headFile(http, repoId, commit, f);
    if (!("missing" in r)) {
      weights = r;
      break;
    }
  }
  if (!weights) {
    throw new CheckpointError(
      `${spec}: the repo has no model.safetensors or pytorch_model.bin (or a sharded index) at ` +
        `commit ${commit}`,
    );
  }
  if (weights.file.endsWith(".index.json")) {
    const index = await store(weights, MAX_HF_INDEX_BYTES);
    for (const shard of await readShardIndex(index)) {
      await store(need(await headFile(http, repoId, commit, shard)), MAX_WEIGHT_BYTES);
    }
  } else {
    await store(weights, MAX_WEIGHT_BYTES);
  }
  if (repo.revision !== commit) await writeRef(repoDir, repo.revision, commit);
  return join(repoDir, "snapshots", commit);
}

/** Places one file in the snapshot (downloading its blob unless cached); returns its path. */
async function fetchToSnapshot(
  http: HubHttp,
  cacheDir: string,
  folder: string,
  remote: RemoteFile,
  maxBytes: number,
  opts: HubOptions,
): Promise<string> {
  const repoDir = join(cacheDir, folder);
  const pointer = join(repoDir, "snapshots", remote.commit, remote.file);
  if (await isFile(pointer)) return pointer;
  const blob = join(repoDir, "blobs", remote.etag);
  if (!(await isFile(blob))) {
    await Deno.mkdir(join(repoDir, "blobs"), { recursive: true });
    // The lock huggingface_hub takes for the same blob, so a Python download and ours never
    // append to one partial file together.
    await withLock(join(cacheDir, ".locks", folder, `${remote.etag}.lock`), async () => {
      if (await isFile(blob)) return; // another process finished it meanwhile
      const partial = `${blob}.incomplete`;
      await downloadBlob(http, remote, partial, {
        maxBytes,
        retries: opts.retries ?? 2,
        onProgress: opts.onDownload && ((d, t) => opts.onDownload!(d, t, remote.file)),
      });
      if (!(await blobMatches(partial, remote.etag))) {
        await Deno.remove(partial).catch(() => {});
        throw new CheckpointError(
          `${http.label}: ${remote.file} does not match its ${
            remote.etag.length === 64 ? "sha256" : "git sha1"
          } ${remote.etag}; the download was discarded, run again`,
        );
      }
      await Deno.rename(partial, blob);
    });
  }
  await linkPointer(pointer, remote.etag);
  return pointer;
}

async function withLock(path: string, body: () => Promise<void>): Promise<void> {
  await Deno.mkdir(join(path, ".."), { recursive: true });
  const f = await Deno.open(path, { read: true, write: true, create: true });
  try {
    await f.lock(true);
    await body();
  } finally {
    f.close(); // releases the lock
  }
}

/** snapshots/<commit>/<file> -> ../../blobs/<etag>, relative as huggingface_hub makes it. */
async function linkPointer(pointer: string, etag: string): Promise<void> {
  await Deno.mkdir(join(pointer, ".."), { recursive: true });
  // A dangling link (its blob deleted) is replaced.
  await Deno.remove(pointer).catch(() => {});
  try {
    await Deno.symlink(`../../blobs/${etag}`, pointer);
  } catch (e) {
    // Another process linked it between the two calls.
    if (!(e instanceof Deno.errors.AlreadyExists && await isFile(pointer))) throw e;
  }
}

/** refs/<revision> = commit, written whole (temp file + rename). */
async function writeRef(repoDir: string, revision: string, commit: string): Promise<void> {
  const ref = join(repoDir, "refs", revision);
  await Deno.mkdir(join(ref, ".."), { recursive: true });
  const tmp = `${ref}.tmp-${crypto.randomUUID().slice(0, 8)}`;
  await Deno.writeTextFile(tmp, commit);
  await Deno.rename(tmp, ref);
}
