// runMain exit codes and stderr, checked by running tiny scripts in a child Deno process.

import assert from "node:assert/strict";
import { oneLine } from "../src/cli/main.ts";

const ROOT = new URL("..", import.meta.url).pathname;
const SCRIPT = `
import { addExtractionFlags, addPromptFlags, createParser, parseArgs } from "${ROOT}src/cli/args.ts";
import { runMain, UserError } from "${ROOT}src/cli/main.ts";
import { resolvePrompt } from "${ROOT}src/cli/prompt.ts";
import { writeOutputs } from "${ROOT}src/io/mod.ts";
import { Backend } from "${ROOT}src/backend/backend.ts";
import { NativeError, Status } from "${ROOT}src/native/lib.ts";

await runMain(async (argv) => {
  const [mode, ...rest] = argv;
  const p = createParser("tiny.ts", "A tiny script.");
  addPromptFlags(p, false);
  addExtractionFlags(p);
  const args = parseArgs<Record<string, string | null>>(p, rest);
  if (mode === "ok") console.log("fine");
  if (mode === "prompt") await resolvePrompt(args);
  if (mode === "user") throw new UserError("bad\\nthing");
  if (mode === "ctl") throw new UserError("unknown model id '\\x1b[31mred\\x1b[0m\\u202e'");
  if (mode === "output") await writeOutputs("/tmp/x.json", {});
  if (mode === "fs") await Deno.readFile("/nonexistent/mambabyte");
  if (mode === "bug") (null as unknown as { x: number }).x;
  if (mode === "oom") Backend.create("cpu").alloc(2 ** 52); // 4 PiB: the library says OOM
  if (mode === "device") throw new NativeError("linear", Status.DEVICE, "cuda: gemm: launch failed");
  if (mode === "invalid") throw new NativeError("linear", Status.INVALID, "mb_linear: n (-1) < 0");
});
`;

let scriptPath: string | null = null;

async function run(args: string[], env: Record<string, string> = {}) {
  if (scriptPath === null) {
    scriptPath = await Deno.makeTempFile({ prefix: "mambabyte_cli_", suffix: ".ts" });
    await Deno.writeTextFile(scriptPath, SCRIPT);
  }
  const out = await new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", "--quiet", "--config", `${ROOT}deno.json`, scriptPath, ...args],
    cwd: ROOT,
    env: { NO_COLOR: "1", MAMBABYTE_DEBUG: "0", ...env },
    stdout: "piped",
    stderr: "piped",
  }).output();
  const dec = new TextDecoder();
  return { code: out.code, stdout: dec.decode(out.stdout), stderr: dec.decode(out.stderr) };
}

function lines(s: string): string[] {
  return s.split("\n").filter((l) => l.length > 0);
}

Deno.test("runMain: exit codes and one-line stderr", async (t) => {
  try {
    await t.step("success -> 0", async () => {
      const r = await run(["ok", "--layer_idxs", "0", "1"]);
      assert.equal(r.code, 0, r.stderr);
      assert.equal(r.stdout, "fine\n");
      assert.equal(r.stderr, "");
    });
    await t.step("unknown flag -> 2, '<prog>: error: ...'", async () => {
      const r = await run(["ok", "--bogus"]);
      assert.equal(r.code, 2);
      assert.deepEqual(lines(r.stderr), ["tiny.ts: error: unrecognized arguments: --bogus"]);
    });
    await t.step("bad choice -> 2", async () => {
      const r = await run(["ok", "--reduction", "median"]);
      assert.equal(r.code, 2);
      assert.equal(lines(r.stderr).length, 1);
      assert.match(r.stderr, /^tiny\.ts: error: argument --reduction: invalid choice: 'median'/);
    });
    await t.step("control and format characters in a message are shown escaped", async () => {
      const r = await run(["ctl"]);
      assert.equal(r.code, 1);
      assert.deepEqual(lines(r.stderr), [
        "error: unknown model id '\\u001b[31mred\\u001b[0m\\u202e'",
      ]);
    });
    await t.step("--help -> 0, help on stdout", async () => {
      const r = await run(["ok", "--help"]);
      assert.equal(r.code, 0, r.stderr);
      assert.match(r.stdout, /^usage: tiny\.ts/);
      assert.match(r.stdout, /--layer_idxs LAYER_IDXS \[LAYER_IDXS \.\.\.\]/);
      assert.match(r.stdout, /--module_id MODULE_IDS/);
      assert.equal(r.stderr, "");
    });
    await t.step("missing prompt file -> 1, 'error: prompt file not found: <path>'", async () => {
      const r = await run(["prompt", "--prompt_file", "/nope/p.txt"]);
      assert.equal(r.code, 1);
      assert.deepEqual(lines(r.stderr), ["error: prompt file not found: /nope/p.txt"]);
    });
    await t.step("UserError -> 1, newlines folded into one line", async () => {
      const r = await run(["user"]);
      assert.equal(r.code, 1);
      assert.deepEqual(lines(r.stderr), ["error: bad thing"]);
    });
    await t.step("OutputError (bad extension) -> 1, one line", async () => {
      const r = await run(["output"]);
      assert.equal(r.code, 1);
      assert.equal(lines(r.stderr).length, 1);
      assert.match(r.stderr, /^error: unsupported output extension for \/tmp\/x\.json/);
    });
    await t.step("filesystem error -> 1, one line", async () => {
      const r = await run(["fs"]);
      assert.equal(r.code, 1);
      assert.equal(lines(r.stderr).length, 1);
      assert.match(r.stderr, /^error: .*No such file/);
    });
    await t.step("bug -> 1, one line without a stack", async () => {
      const r = await run(["bug"]);
      assert.equal(r.code, 1);
      assert.equal(lines(r.stderr).length, 1, r.stderr);
      assert.match(r.stderr, /^error: internal error \(TypeError\): .*MAMBABYTE_DEBUG=1/);
    });
    await t.step("out of memory in the library -> 1, one line saying so", async () => {
      const r = await run(["oom"]);
      assert.equal(r.code, 1, r.stderr);
      assert.equal(lines(r.stderr).length, 1, r.stderr);
      assert.match(r.stderr, /^error: out of memory \(alloc: .*\): free some memory/);
      assert.doesNotMatch(r.stderr, /internal error/);
    });
    await t.step("a device failure -> 1, one line saying so", async () => {
      const r = await run(["device"]);
      assert.equal(r.code, 1, r.stderr);
      assert.deepEqual(lines(r.stderr), [
        "error: the device failed (linear: cuda: gemm: launch failed): check the GPU and its " +
        "driver (nvidia-smi), or run on the CPU",
      ]);
    });
    await t.step("another library status is a bug -> internal error", async () => {
      const r = await run(["invalid"]);
      assert.equal(r.code, 1, r.stderr);
      assert.match(r.stderr, /^error: internal error \(NativeError\): linear: mb_linear/);
    });
    await t.step("bug with MAMBABYTE_DEBUG=1 -> the stack too", async () => {
      const r = await run(["bug"], { MAMBABYTE_DEBUG: "1" });
      assert.equal(r.code, 1);
      assert.match(r.stderr, /^error: internal error \(TypeError\)/);
      assert.match(r.stderr, /\n\s+at /);
    });
  } finally {
    if (scriptPath !== null) await Deno.remove(scriptPath);
  }
});

Deno.test("oneLine: breaks folded, control and format characters escaped, long lines cut", () => {
  assert.equal(oneLine("  a\n  b \r\n c\td"), "a b c\\u0009d");
  assert.equal(
    oneLine("x\u0000y\u007fz\u009b\u200b\u202e"),
    "x\\u0000y\\u007fz\\u009b\\u200b\\u202e",
  );
  assert.equal(oneLine("é中🦀 ok"), "é中🦀 ok");
  const long = oneLine("v".repeat(1500));
  assert.equal(long, `${"v".repeat(1000)}... (500 more characters)`);
  // a cut never splits a surrogate pair
  const pairs = oneLine(`${"v".repeat(999)}${"🦀".repeat(10)}`);
  assert.equal(pairs, `${"v".repeat(999)}... (20 more characters)`);
});
