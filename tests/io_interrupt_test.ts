// A write interrupted by SIGINT or SIGTERM removes its temporary file, says so in one line and
// exits 130 / 143; a temporary file left by a process killed outright is removed by the next
// write to the same target. The interrupted writer is a real child process.

import assert from "node:assert/strict";
import { join } from "node:path";
import { float32, writeOutputs } from "../src/io/mod.ts";
import { entryNames as names, withTempDir } from "./helpers/temp_dir.ts";

const HELPER = new URL("./helpers/write_large_output.ts", import.meta.url).pathname;

function withDir(fn: (dir: string) => Promise<void>): Promise<void> {
  return withTempDir("mambabyte_interrupt_", fn);
}

/** Starts the writer, signals it once its temporary file has data, and returns what it did. */
async function interrupt(
  dir: string,
  file: string,
  signal: Deno.Signal,
): Promise<{ code: number; stderr: string; during: string[] }> {
  const child = new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", HELPER, join(dir, file), "1"],
    stdout: "piped",
    stderr: "piped",
    env: { NO_COLOR: "1" },
  }).spawn();
  const output = child.output();
  const tmp = new RegExp(`^\\.${file.replace(".", "\\.")}\\.${child.pid}\\.[0-9a-z]+\\.tmp$`);
  let during: string[] = [];
  const deadline = Date.now() + 60_000;
  for (;;) {
    during = names(dir);
    const t = during.find((n) => tmp.test(n));
    if (t && Deno.statSync(join(dir, t)).size > 0) break;
    if (during.includes(file)) break; // finished before we could catch it: reported below
    assert.ok(Date.now() < deadline, `no temporary file appeared: ${during}`);
    await new Promise((r) => setTimeout(r, 5));
  }
  try {
    child.kill(signal);
  } catch {
    // Already exited: the assertions below say so.
  }
  const out = await output;
  return { code: out.code, stderr: new TextDecoder().decode(out.stderr), during };
}

for (
  const [signal, code, file] of [
    ["SIGINT", 130, "out.pkl"],
    ["SIGTERM", 143, "out.safetensors"],
    ["SIGINT", 130, "out.msgpack"],
  ] as const
) {
  Deno.test(`${signal} during a ${file} write: temp file removed, one line, exit ${code}`, async () => {
    await withDir(async (dir) => {
      const r = await interrupt(dir, file, signal);
      assert.notEqual(r.code, 0, `the writer finished before the ${signal}; enlarge its output`);
      // Exactly one temporary file while writing: `.out.safetensors.<pid>.<rand>.tmp`, without
      // the second `.tmp-<id>` name the safetensors writer used to add.
      assert.equal(r.during.length, 1, `files during the write: ${r.during}`);
      assert.equal(r.code, code, r.stderr);
      const lines = r.stderr.trim().split("\n");
      assert.equal(lines.length, 1, r.stderr);
      assert.equal(
        lines[0],
        `error: interrupted by ${signal} while writing ${join(dir, file)}; no partial file is left`,
      );
      assert.deepEqual(names(dir), []);
    });
  });
}

Deno.test("a later write removes stale temp files of dead processes, and only those", async () => {
  await withDir(async (dir) => {
    const gone = new Deno.Command("true").spawn();
    await gone.status;
    const dead = gone.pid;
    const keep = [
      `.out.pkl.${Deno.pid}.live.tmp`, // this process: alive
      `.other.pkl.${dead}.abc.tmp`, // another target
      `.out.pkl.${dead}.abc.tmp.bak`, // not the pattern
      `out.pkl.${dead}.abc.tmp`, // not hidden: not ours
    ];
    const stale = [`.out.pkl.${dead}.abc.tmp`, `.out.pkl.${dead}.z9.tmp`];
    for (const n of [...keep, ...stale]) await Deno.writeTextFile(join(dir, n), "partial");
    await writeOutputs(join(dir, "out.pkl"), { x: float32([1], Float32Array.of(1)) });
    assert.deepEqual(names(dir), [...keep, "out.pkl"].sort());
  });
});

Deno.test("no signal listener is left once writes finish", async () => {
  // A child that writes, then waits: SIGINT must then end it the default way (no message).
  const script = `
    import { float32, writeOutputs } from ${
    JSON.stringify(new URL("../src/io/mod.ts", import.meta.url).href)
  };
    const dir = await Deno.makeTempDir();
    await writeOutputs(dir + "/a.msgpack", { x: float32([1], Float32Array.of(1)) });
    await Deno.remove(dir, { recursive: true });
    console.log("written");
    await new Promise((r) => setTimeout(r, 20000));
  `;
  const child = new Deno.Command(Deno.execPath(), {
    args: ["eval", script],
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  const reader = child.stdout.getReader();
  const { value } = await reader.read();
  assert.match(new TextDecoder().decode(value), /written/);
  await reader.cancel();
  child.kill("SIGINT");
  const [status, stderr] = await Promise.all([child.status, new Response(child.stderr).text()]);
  assert.equal(status.signal, "SIGINT");
  assert.equal(stderr, "");
});
