/**
 * A throw-away redis-server for the queue tests (Debian's redis-server): on a free loopback port,
 * with a temporary folder, no persistence, stopped (and its folder removed) by `stop()`.
 *
 * @module
 */

/** Why redis-server cannot be started here, or null when it can. */
export async function redisMissing(): Promise<string | null> {
  try {
    const out = await new Deno.Command("redis-server", { args: ["--version"], stdout: "null" })
      .output();
    return out.success ? null : "redis-server --version failed";
  } catch {
    return "redis-server is not installed (Debian: apt-get install redis-server)";
  }
}

/** A running server. */
export interface RedisServer {
  port: number;
  /** `redis://127.0.0.1:<port>/<name>`. */
  url(name: string): string;
  stop(): Promise<void>;
}

function freePort(): number {
  const l = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = (l.addr as Deno.NetAddr).port;
  l.close();
  return port;
}

/** Starts a server and waits until it accepts connections (at most 10 s). */
export async function startRedis(): Promise<RedisServer> {
  const dir = await Deno.makeTempDir({ prefix: "mambabyte-redis-" });
  const port = freePort();
  const child = new Deno.Command("redis-server", {
    args: [
      "--port",
      String(port),
      "--bind",
      "127.0.0.1",
      "--dir",
      dir,
      "--save",
      "",
      "--appendonly",
      "no",
    ],
    stdout: "null",
    stderr: "null",
  }).spawn();
  const stop = async () => {
    try {
      child.kill("SIGTERM");
    } catch {
      // Already gone.
    }
    await child.status;
    await Deno.remove(dir, { recursive: true }).catch(() => {});
  };
  const deadline = Date.now() + 10_000;
  for (;;) {
    try {
      const conn = await Deno.connect({ hostname: "127.0.0.1", port });
      await conn.write(new TextEncoder().encode("PING\r\n"));
      const buf = new Uint8Array(16);
      const n = await conn.read(buf);
      conn.close();
      if (n && new TextDecoder().decode(buf.subarray(0, n)).startsWith("+PONG")) break;
    } catch {
      // Not listening yet.
    }
    if (Date.now() > deadline) {
      await stop();
      throw new Error(`redis-server did not start on port ${port}`);
    }
    await new Promise((r) => setTimeout(r, 50));
  }
  return { port, url: (name) => `redis://127.0.0.1:${port}/${name}`, stop };
}
