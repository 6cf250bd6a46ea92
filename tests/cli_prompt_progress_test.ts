// Prompt resolution (--prompt / --prompt_file) and the stderr progress display.

import assert from "node:assert/strict";
import { UserError } from "../src/cli/errors.ts";
import { progress, setQuiet } from "../src/cli/progress.ts";
import { resolvePrompt } from "../src/cli/prompt.ts";

Deno.test("prompt from --prompt is its UTF-8 bytes", async () => {
  const p = await resolvePrompt({ prompt: "héllo\n", prompt_file: null });
  assert.deepEqual([...p.bytes], [...new TextEncoder().encode("héllo\n")]);
  assert.equal(p.text, "héllo\n");
  assert.equal(p.source, "prompt");
  assert.equal((await resolvePrompt({ prompt: "" })).bytes.length, 0);
});

Deno.test("prompt from --prompt_file keeps the file's exact bytes", async () => {
  const path = await Deno.makeTempFile();
  try {
    const raw = Uint8Array.of(0x48, 0x69, 0xff, 0x0a, 0xe2, 0x9c, 0x93);
    await Deno.writeFile(path, raw);
    const p = await resolvePrompt({ prompt: null, prompt_file: path });
    assert.deepEqual(p.bytes, raw);
    assert.equal(p.text, "Hi\ufffd\n✓");
    assert.equal(p.source, "prompt_file");
  } finally {
    await Deno.remove(path);
  }
});

Deno.test("prompt errors are UserErrors with one-line messages", async () => {
  await assert.rejects(
    resolvePrompt({ prompt_file: "/nope/860.txt" }),
    (e: Error) => e instanceof UserError && e.message === "prompt file not found: /nope/860.txt",
  );
  await assert.rejects(
    resolvePrompt({}),
    (e: Error) => e instanceof UserError && /required/.test(e.message),
  );
  await assert.rejects(resolvePrompt({ prompt: "a", prompt_file: "b" }), UserError);
  const dir = await Deno.makeTempDir();
  try {
    await assert.rejects(resolvePrompt({ prompt_file: dir }), UserError);
  } finally {
    await Deno.remove(dir);
  }
});

Deno.test("progress: silent when stderr is not a terminal or when quiet", () => {
  const out: string[] = [];
  const write = (s: string) => void out.push(s);
  // Under `deno test` stderr is a pipe or a terminal; without force, draw only on a terminal.
  const p = progress("load", 10, { write });
  p.tick(10);
  p.done();
  if (!Deno.stderr.isTerminal()) assert.deepEqual(out, []);
  out.length = 0;
  const q = progress("load", 10, { write, force: true, quiet: true });
  q.tick(5);
  q.done();
  assert.deepEqual(out, []);
  setQuiet(true);
  try {
    const g = progress("load", 10, { write, force: true });
    g.tick(3);
    g.done();
    assert.deepEqual(out, []);
  } finally {
    setQuiet(false);
  }
});

Deno.test("progress: draws a bar and ends the line", () => {
  const out: string[] = [];
  const p = progress("prefill", 200, { write: (s) => void out.push(s), force: true });
  for (let i = 0; i < 4; i++) p.tick(50);
  p.done();
  p.done(); // idempotent
  p.tick(); // ignored after done
  const text = out.join("");
  assert.match(text, /\rprefill \[#{24}\] 100% 200\/200/);
  assert.ok(text.endsWith("\n"));
  assert.equal(text.split("\n").length, 2);
});
