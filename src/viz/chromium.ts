/**
 * Headless Chromium over the DevTools protocol, with nothing but Deno's own WebSocket: find the
 * browser, start it on a throw-away profile, open a page, evaluate script, move the mouse, take
 * screenshots, collect console errors and requests. Used to rasterise pages (`--format png`) and
 * by the browser tests.
 *
 * @module
 */

import { MambaByteError } from "../errors.ts";

/** Where Chromium is looked for when MAMBABYTE_CHROMIUM is not set. */
export const CHROMIUM_CANDIDATES = [
  "/usr/bin/chromium",
  "/usr/bin/chromium-browser",
  "/usr/bin/google-chrome",
  "/usr/bin/google-chrome-stable",
];

/** Path of the Chromium to use ($MAMBABYTE_CHROMIUM, else the first candidate present), or null. */
export function findChromium(): string | null {
  const env = Deno.env.get("MAMBABYTE_CHROMIUM");
  const list = env ? [env] : CHROMIUM_CANDIDATES;
  for (const p of list) {
    try {
      if (Deno.statSync(p).isFile) return p;
    } catch {
      // not there
    }
  }
  return null;
}

/** Why no Chromium can be used (a sentence), or null when one is found. */
export function chromiumMissing(): string | null {
  if (findChromium() !== null) return null;
  const env = Deno.env.get("MAMBABYTE_CHROMIUM");
  return env
    ? `MAMBABYTE_CHROMIUM names ${env}, which does not exist`
    : `no Chromium found (looked for ${CHROMIUM_CANDIDATES.join(", ")}; install Debian's ` +
      `chromium or set MAMBABYTE_CHROMIUM)`;
}

/** A DevTools protocol event: its method and parameters. */
export interface CdpEvent {
  method: string;
  // deno-lint-ignore no-explicit-any
  params: any;
}

/** One browser process and its DevTools connection. */
export class Browser {
  #proc: Deno.ChildProcess;
  #ws: WebSocket;
  #profile: string;
  #next = 1;
  #pending = new Map<number, { resolve: (v: unknown) => void; reject: (e: Error) => void }>();
  #listeners = new Map<string, ((e: CdpEvent) => void)[]>();
  #stderrTail: string[] = [];
  #closed = false;

  private constructor(proc: Deno.ChildProcess, ws: WebSocket, profile: string, tail: string[]) {
    this.#proc = proc;
    this.#ws = ws;
    this.#profile = profile;
    this.#stderrTail = tail;
    ws.onmessage = (m) => this.#receive(JSON.parse(String(m.data)));
    ws.onclose = () => {
      for (const p of this.#pending.values()) p.reject(new Error("the browser went away"));
      this.#pending.clear();
    };
  }

  /** Starts headless Chromium (throws a MambaByteError saying why when it cannot). */
  static async launch(opts: { timeoutMs?: number } = {}): Promise<Browser> {
    const exe = findChromium();
    if (exe === null) throw new MambaByteError(chromiumMissing()!);
    const profile = await Deno.makeTempDir({ prefix: "mambabyte-chromium-" });
    const proc = new Deno.Command(exe, {
      args: [
        "--headless",
        // Containers and root have no usable sandbox; only our own local page is loaded.
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--no-first-run",
        "--no-default-browser-check",
        "--disable-extensions",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-default-apps",
        "--mute-audio",
        "--hide-scrollbars",
        "--remote-debugging-port=0",
        `--user-data-dir=${profile}`,
        "about:blank",
      ],
      stdin: "null",
      stdout: "null",
      stderr: "piped",
    }).spawn();
    const tail: string[] = [];
    const giveUp = async (why: string): Promise<never> => {
      try {
        proc.kill("SIGKILL");
      } catch { /* already gone */ }
      await proc.status;
      await Deno.remove(profile, { recursive: true }).catch(() => {});
      throw new MambaByteError(`cannot start ${exe}: ${why}`);
    };
    let endpoint = "";
    try {
      endpoint = await readEndpoint(proc, tail, opts.timeoutMs ?? 30_000);
    } catch (e) {
      await giveUp((e as Error).message);
    }
    const ws = new WebSocket(endpoint);
    try {
      await new Promise<void>((resolve, reject) => {
        ws.onopen = () => resolve();
        ws.onerror = () => reject(new Error(`no DevTools connection at ${endpoint}`));
      });
    } catch (e) {
      await giveUp((e as Error).message);
    }
    return new Browser(proc, ws, profile, tail);
  }

  #receive(
    msg: {
      id?: number;
      result?: unknown;
      error?: { message: string };
      method?: string;
      params?: unknown;
      sessionId?: string;
    },
  ) {
    if (msg.id !== undefined) {
      const p = this.#pending.get(msg.id);
      if (!p) return;
      this.#pending.delete(msg.id);
      if (msg.error) p.reject(new Error(`DevTools: ${msg.error.message}`));
      else p.resolve(msg.result);
      return;
    }
    const key = `${msg.sessionId ?? ""}|${msg.method}`;
    for (const f of this.#listeners.get(key) ?? []) f({ method: msg.method!, params: msg.params });
  }

  /** Sends a DevTools command (to a page session when `sessionId` is given). */
  send<T = Record<string, unknown>>(
    method: string,
    params: Record<string, unknown> = {},
    sessionId?: string,
  ): Promise<T> {
    const id = this.#next++;
    return new Promise<T>((resolve, reject) => {
      this.#pending.set(id, { resolve: resolve as (v: unknown) => void, reject });
      this.#ws.send(JSON.stringify({ id, method, params, ...(sessionId ? { sessionId } : {}) }));
    });
  }

  /** Calls `f` for every `method` event of a session. */
  on(sessionId: string, method: string, f: (e: CdpEvent) => void): void {
    const key = `${sessionId}|${method}`;
    this.#listeners.set(key, [...(this.#listeners.get(key) ?? []), f]);
  }

  /** Opens a new page (tab) of the given viewport size. */
  async newPage(width = 1280, height = 900): Promise<Page> {
    const { targetId } = await this.send<{ targetId: string }>("Target.createTarget", {
      url: "about:blank",
    });
    const { sessionId } = await this.send<{ sessionId: string }>("Target.attachToTarget", {
      targetId,
      flatten: true,
    });
    const page = new Page(this, sessionId);
    await Promise.all(
      ["Page.enable", "Runtime.enable", "Log.enable", "Network.enable"].map((m) => page.send(m)),
    );
    await page.setViewport(width, height);
    return page;
  }

  /** The last lines Chromium wrote on stderr (for error messages). */
  get stderrTail(): string {
    return this.#stderrTail.join("\n");
  }

  /** Closes the browser and removes its profile; idempotent. */
  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    try {
      await Promise.race([this.send("Browser.close"), new Promise((r) => setTimeout(r, 3000))]);
    } catch {
      // the browser may already be gone
    }
    this.#ws.close();
    const exited = await Promise.race([
      this.#proc.status.then(() => true),
      new Promise<boolean>((r) => setTimeout(() => r(false), 5000)),
    ]);
    if (!exited) {
      try {
        this.#proc.kill("SIGKILL");
      } catch { /* gone */ }
      await this.#proc.status;
    }
    await Deno.remove(this.#profile, { recursive: true }).catch(() => {});
  }
}

/** Reads Chromium's stderr until it announces its DevTools endpoint; keeps draining after. */
async function readEndpoint(proc: Deno.ChildProcess, tail: string[], timeoutMs: number) {
  const reader = proc.stderr.pipeThrough(new TextDecoderStream()).getReader();
  let buf = "";
  let timer: ReturnType<typeof setTimeout> | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(
      () => reject(new Error(`no DevTools endpoint after ${timeoutMs} ms`)),
      timeoutMs,
    );
  });
  const found = (async () => {
    for (;;) {
      const { value, done } = await reader.read();
      if (done) throw new Error(`it exited: ${tail.slice(-3).join(" | ") || "no output"}`);
      buf += value;
      const lines = buf.split("\n");
      buf = lines.pop()!;
      for (const line of lines) {
        tail.push(line);
        if (tail.length > 20) tail.shift();
        const m = /DevTools listening on (ws:\/\/\S+)/.exec(line);
        if (m) return m[1];
      }
    }
  })();
  try {
    const endpoint = await Promise.race([found, timeout]);
    // Keep reading so a full pipe never blocks the browser.
    (async () => {
      try {
        for (;;) {
          const { value, done } = await reader.read();
          if (done) return;
          for (const line of value.split("\n")) {
            if (!line) continue;
            tail.push(line);
            if (tail.length > 20) tail.shift();
          }
        }
      } catch { /* closed */ }
    })();
    return endpoint;
  } finally {
    clearTimeout(timer);
  }
}

/** What a page reported while it ran: console errors, exceptions, failed loads, requests. */
export interface PageReport {
  /** Console messages of level error, uncaught exceptions and browser log errors. */
  errors: string[];
  /** Every URL the page requested. */
  requests: string[];
}

/** One tab of a {@link Browser}. */
export class Page {
  readonly #browser: Browser;
  readonly #session: string;
  /** What the page reported so far. */
  readonly report: PageReport = { errors: [], requests: [] };

  /** Use {@link Browser.newPage}. */
  constructor(browser: Browser, sessionId: string) {
    this.#browser = browser;
    this.#session = sessionId;
    browser.on(sessionId, "Runtime.consoleAPICalled", (e) => {
      if (e.params.type === "error" || e.params.type === "assert") {
        // deno-lint-ignore no-explicit-any
        this.report.errors.push(e.params.args.map((a: any) => a.value ?? a.description).join(" "));
      }
    });
    browser.on(sessionId, "Runtime.exceptionThrown", (e) => {
      const d = e.params.exceptionDetails;
      this.report.errors.push(d.exception?.description ?? d.text);
    });
    browser.on(sessionId, "Log.entryAdded", (e) => {
      if (e.params.entry.level === "error") this.report.errors.push(e.params.entry.text);
    });
    browser.on(sessionId, "Network.requestWillBeSent", (e) => {
      this.report.requests.push(e.params.request.url);
    });
  }

  /** Sends a DevTools command to this page. */
  send<T = Record<string, unknown>>(method: string, params: Record<string, unknown> = {}) {
    return this.#browser.send<T>(method, params, this.#session);
  }

  /** Sets the viewport size (CSS pixels, device scale 1). */
  async setViewport(width: number, height: number): Promise<void> {
    await this.send("Emulation.setDeviceMetricsOverride", {
      width: Math.ceil(width),
      height: Math.ceil(height),
      deviceScaleFactor: 1,
      mobile: false,
    });
  }

  /** Loads `url` and waits for its load event. */
  async goto(url: string, timeoutMs = 60_000): Promise<void> {
    const loaded = new Promise<void>((resolve) => {
      this.#browser.on(this.#session, "Page.loadEventFired", () => resolve());
    });
    const r = await this.send<{ errorText?: string }>("Page.navigate", { url });
    if (r.errorText) throw new MambaByteError(`Chromium cannot load ${url}: ${r.errorText}`);
    let timer: ReturnType<typeof setTimeout> | undefined;
    await Promise.race([
      loaded,
      new Promise((_, reject) => {
        timer = setTimeout(
          () => reject(new Error(`${url} did not load in ${timeoutMs} ms`)),
          timeoutMs,
        );
      }),
    ]).finally(() => clearTimeout(timer));
  }

  /** Evaluates an expression in the page and returns its (JSON) value; throws on exceptions. */
  async evaluate<T = unknown>(expression: string): Promise<T> {
    const r = await this.send<
      {
        result: { value?: T };
        exceptionDetails?: { text: string; exception?: { description?: string } };
      }
    >(
      "Runtime.evaluate",
      { expression, returnByValue: true, awaitPromise: true },
    );
    if (r.exceptionDetails) {
      const d = r.exceptionDetails;
      throw new Error(`page script failed: ${d.exception?.description ?? d.text}`);
    }
    return r.result.value as T;
  }

  /** Waits until `expression` is truthy in the page. */
  async waitFor(expression: string, timeoutMs = 30_000): Promise<void> {
    const until = Date.now() + timeoutMs;
    while (!(await this.evaluate<boolean>(`!!(${expression})`))) {
      if (Date.now() > until) throw new Error(`timed out waiting for ${expression}`);
      await new Promise((r) => setTimeout(r, 50));
    }
  }

  /** Moves the mouse to (x, y) in viewport CSS pixels. */
  async mouseMove(x: number, y: number): Promise<void> {
    await this.send("Input.dispatchMouseEvent", { type: "mouseMoved", x, y });
  }

  /** A PNG of the given region (CSS pixels of the page), or of the viewport. */
  async screenshot(
    clip?: { x: number; y: number; width: number; height: number },
  ): Promise<Uint8Array> {
    const { data } = await this.send<{ data: string }>("Page.captureScreenshot", {
      format: "png",
      ...(clip ? { clip: { ...clip, scale: 1 }, captureBeyondViewport: true } : {}),
    });
    return Uint8Array.from(atob(data), (ch) => ch.charCodeAt(0));
  }
}
