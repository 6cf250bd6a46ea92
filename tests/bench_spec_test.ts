/**
 * bench:spec's prompts (scripts/bench_spec.ts): the built-in one, or N slices spread over a text's
 * held-out part; a run over two prompts on the CPU sums them and still checks every output against
 * plain decoding; bad --prompts values get one usage line.
 */
import assert from "node:assert/strict";
import { benchPrompts } from "../scripts/bench_spec.ts";
import { UserError } from "../src/cli/mod.ts";
import { runScript } from "./helpers/scripts.ts";
import { withTempDir } from "./helpers/temp_dir.ts";

/** A text of n bytes whose every 300-byte slice is distinct. */
function text(n: number): Uint8Array {
  const t = new Uint8Array(n);
  for (let i = 0; i < n; i++) t[i] = 32 + ((i * 7 + Math.floor(i / 95)) % 95);
  return t;
}

Deno.test("bench:spec prompts: the built-in one, or slices spread over the held-out part", () => {
  const [builtIn] = benchPrompts(null, 1);
  assert.equal(builtIn.length, 300);
  assert.match(new TextDecoder().decode(builtIn), /^ Pisa\.\n\nBAPTISTA:/);
  const t = text(200_000);
  const ps = benchPrompts(t, 5);
  assert.equal(ps.length, 5);
  const start = Math.floor(t.length * 0.95) + 1000;
  assert.equal(ps[0].byteOffset, start);
  assert.equal(ps[4].byteOffset + 300, t.length); // the last ends at the text's end
  for (const p of ps) assert.equal(p.length, 300);
  for (let i = 1; i < 5; i++) assert.ok(ps[i].byteOffset - ps[i - 1].byteOffset >= 300);
  assert.throws(() => benchPrompts(null, 2), UserError);
  assert.throws(() => benchPrompts(t, 0), UserError);
  assert.throws(() => benchPrompts(text(20_000), 1), /too short/);
  assert.throws(() => benchPrompts(t, 1000), /fewer than 1000 distinct prompts/);
});

Deno.test("bench:spec over two prompts on the CPU: sums, every output plain decoding's", async () => {
  await withTempDir("mb-bench-spec-", async (dir) => {
    await Deno.writeFile(`${dir}/t.txt`, text(60_000));
    const r = await runScript("bench_spec.ts", [
      "--devices",
      "cpu",
      "--target",
      "tiny",
      "--byte_drafter",
      "tiny",
      "--subword_drafter",
      "none",
      "--max_new_tokens",
      "24",
      "--draft_length",
      "3",
      "--repeats",
      "1",
      "--prompt_file",
      `${dir}/t.txt`,
      "--prompts",
      "2",
      "--json",
      `${dir}/b.json`,
    ]);
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, /2 prompts from .*t\.txt \(sums over them\)/);
    assert.match(r.stdout, /all outputs identical to plain decoding/);
    const j = JSON.parse(await Deno.readTextFile(`${dir}/b.json`));
    assert.equal(j.prompts, 2);
    assert.equal(j.rows.length, 2); // greedy and sampled
    for (const row of j.rows) {
      assert.equal(row.identical, true);
      assert.ok(row.acceptanceRate >= 0 && row.acceptanceRate <= 1);
      assert.ok(row.meanAcceptedLength >= 0 && row.meanAcceptedLength <= 3);
    }
    // tiny drafting for itself agrees on every greedy draft
    assert.equal(j.rows[0].acceptanceRate, 1);
  });
});

Deno.test("bench:spec: --prompts out of range or without a text, one usage line", async () => {
  for (
    const [args, says] of [
      [["--prompts", "0"], /--prompts must be 1\.\.1000, not 0/],
      [["--prompts", "3"], /--prompts > 1 needs --prompt_file/],
    ] as const
  ) {
    const r = await runScript("bench_spec.ts", ["--devices", "cpu", ...args]);
    const lines = r.stderr.split("\n").filter((l) => l.trim() !== "");
    assert.equal(r.code, 2, r.stderr);
    assert.equal(lines.length, 1, r.stderr);
    assert.match(lines[0], says);
  }
});
