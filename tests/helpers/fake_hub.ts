/**
 * A Hugging Face hub stand-in on 127.0.0.1 for the hub tests: `/{owner}/{name}/resolve/{rev}/{file}`
 * answers HEAD and GET as the hub does (X-Repo-Commit, ETag = git blob sha1 for small files;
 * weights as LFS files: a 302 to a second server, the "CDN", with X-Linked-Etag = sha256 and
 * X-Linked-Size), the CDN serves blobs with Range, and faults can be injected (a body cut short, a
 * corrupted body, a wrong size, a renamed repo). Every request is logged.
 *
 * @module
 */

import { createHash } from "node:crypto";

/** One request as a server saw it. */
export interface LoggedRequest {
  server: "hub" | "cdn";
  method: string;
  path: string;
  range: string | null;
  authorization: string | null;
}

interface Revision {
  commit: string;
  files: Map<string, Uint8Array>;
}

/** git's blob sha1 of `data`. */
export function gitSha1(data: Uint8Array): string {
  return createHash("sha1").update(`blob ${data.length}\0`).update(data).digest("hex");
}

/** sha256 of `data`, hex. */
export function sha256(data: Uint8Array): string {
  return createHash("sha256").update(data).digest("hex");
}

const isLfs = (file: string) => /\.(bin|safetensors|pt)$/.test(file);

/** The fake hub and its CDN. */
export class FakeHub {
  /** What to pass as HF_ENDPOINT. */
  readonly endpoint: string;
  /** Every request, in order. */
  readonly requests: LoggedRequest[] = [];
  /** Repos: "owner/name" -> revision name (branch, tag) -> files at that commit. */
  readonly #repos = new Map<string, Map<string, Revision>>();
  /** Old "owner/name" -> new one (answered with a relative redirect). */
  readonly #renames = new Map<string, string>();
  /** etag -> [bytes to send before cutting the connection, how many more times]. */
  readonly #cuts = new Map<string, [number, number]>();
  /** etags whose body is served with one byte flipped. */
  readonly corrupt = new Set<string>();
  /** file name -> size announced in place of the real one. */
  readonly sizeOverride = new Map<string, number>();
  /** "head": the hub never answers; "body": the CDN sends one chunk, then nothing (until close). */
  stall: "none" | "head" | "body" = "none";
  #release!: () => void;
  readonly #released = new Promise<void>((r) => this.#release = r);
  readonly #hub: Deno.HttpServer<Deno.NetAddr>;
  readonly #cdn: Deno.HttpServer<Deno.NetAddr>;
  readonly #cdnBase: string;
  readonly #blobs = new Map<string, Uint8Array>();

  constructor() {
    const opts = { hostname: "127.0.0.1", port: 0, onListen() {} };
    this.#cdn = Deno.serve(opts, (req) => this.#serveCdn(req));
    this.#hub = Deno.serve(opts, (req) => this.#serveHub(req));
    this.#cdnBase = `http://127.0.0.1:${this.#cdn.addr.port}`;
    this.endpoint = `http://127.0.0.1:${this.#hub.addr.port}`;
  }

  /** Adds a revision of a repo (a new random commit) and returns its commit hash. */
  addRepo(repoId: string, files: Record<string, Uint8Array>, revisions = ["main"]): string {
    const commit = createHash("sha1").update(crypto.randomUUID()).digest("hex");
    const rev: Revision = { commit, files: new Map(Object.entries(files)) };
    const revs = this.#repos.get(repoId) ?? new Map<string, Revision>();
    for (const r of [...revisions, commit]) revs.set(r, rev);
    this.#repos.set(repoId, revs);
    for (const data of Object.values(files)) this.#blobs.set(sha256(data), data);
    return commit;
  }

  /** Answers requests for `from` with a relative redirect to `to`. */
  rename(from: string, to: string): void {
    this.#renames.set(from, to);
  }

  /** The next `times` GETs of the body with this etag stop after `bytes` bytes. */
  cut(etag: string, bytes: number, times = 1): void {
    this.#cuts.set(etag, [bytes, times]);
  }

  /** Stops both servers (a stalled request is let go first). */
  async close(): Promise<void> {
    this.#release();
    await this.#hub.shutdown();
    await this.#cdn.shutdown();
  }

  #log(server: "hub" | "cdn", req: Request): void {
    this.requests.push({
      server,
      method: req.method,
      path: decodeURIComponent(new URL(req.url).pathname),
      range: req.headers.get("Range"),
      authorization: req.headers.get("Authorization"),
    });
  }

  async #serveHub(req: Request): Promise<Response> {
    this.#log("hub", req);
    if (this.stall === "head") {
      await this.#released;
      return new Response("stalled", { status: 503 });
    }
    const m = /^\/([^/]+)\/([^/]+)\/resolve\/([^/]+)\/([^/]+)$/.exec(new URL(req.url).pathname);
    if (!m) return new Response("not found", { status: 404 });
    const [, owner, name, revEnc, fileEnc] = m;
    const repoId = `${owner}/${name}`;
    const rev = decodeURIComponent(revEnc);
    const file = decodeURIComponent(fileEnc);
    const renamed = this.#renames.get(repoId);
    if (renamed) {
      return new Response(null, {
        status: 307,
        headers: { Location: `/${renamed}/resolve/${revEnc}/${fileEnc}` },
      });
    }
    const repo = this.#repos.get(repoId);
    if (!repo) return hubError(404, "RepoNotFound", "Repository not found");
    const revision = repo.get(rev);
    if (!revision) return hubError(404, "RevisionNotFound", "Invalid rev id");
    const data = revision.files.get(file);
    if (!data) {
      const r = hubError(404, "EntryNotFound", "Entry not found");
      r.headers.set("X-Repo-Commit", revision.commit);
      return r;
    }
    const size = String(this.sizeOverride.get(file) ?? data.length);
    if (isLfs(file)) {
      const sha = sha256(data);
      return new Response(null, {
        status: 302,
        headers: {
          Location: `${this.#cdnBase}/blobs/${sha}`,
          "X-Repo-Commit": revision.commit,
          "X-Linked-Etag": `"${sha}"`,
          "X-Linked-Size": size,
          ETag: `"${gitSha1(new TextEncoder().encode(`version lfs ${sha}`))}"`,
        },
      });
    }
    const etag = gitSha1(data);
    const headers = { "X-Repo-Commit": revision.commit, ETag: `"${etag}"`, "Content-Length": size };
    if (req.method === "HEAD") return new Response(null, { headers });
    return new Response(this.#body(etag, data, 0), { headers });
  }

  #serveCdn(req: Request): Response {
    this.#log("cdn", req);
    const m = /^\/blobs\/([0-9a-f]{64})$/.exec(new URL(req.url).pathname);
    const data = m && this.#blobs.get(m[1]);
    if (!data) return new Response("no such blob", { status: 404 });
    const range = /^bytes=(\d+)-$/.exec(req.headers.get("Range") ?? "");
    const start = range ? Number(range[1]) : 0;
    if (start >= data.length && range) {
      return new Response(null, {
        status: 416,
        headers: { "Content-Range": `bytes */${data.length}` },
      });
    }
    const headers: Record<string, string> = {
      "Content-Length": String(data.length - start),
      ETag: `"${m![1]}"`,
    };
    if (range) headers["Content-Range"] = `bytes ${start}-${data.length - 1}/${data.length}`;
    return new Response(this.#body(m![1], data, start), { status: range ? 206 : 200, headers });
  }

  /** The body from `start`, corrupted or cut short when asked. */
  #body(etag: string, data: Uint8Array, start: number): ReadableStream<Uint8Array> {
    let body = data.slice(start);
    if (this.corrupt.has(etag)) body[body.length >> 1] ^= 0xff;
    const cut = this.#cuts.get(etag);
    if (cut && cut[1] > 0) {
      cut[1]--;
      body = body.subarray(0, cut[0]);
    }
    let sent = false;
    const stall = this.stall === "body" ? this.#released : undefined;
    // Closing early with a larger Content-Length makes the server drop the connection mid-body.
    return new ReadableStream({
      async pull(c) {
        if (stall) {
          c.enqueue(body.slice(0, 1000));
          await stall;
          return c.close();
        }
        if (sent) return c.close();
        sent = true;
        for (let off = 0; off < body.length; off += 16384) c.enqueue(body.slice(off, off + 16384));
      },
    });
  }
}

function hubError(status: number, code: string, message: string): Response {
  return new Response(message, {
    status,
    headers: { "X-Error-Code": code, "X-Error-Message": message },
  });
}
