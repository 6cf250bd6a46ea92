/**
 * Corpus runs on this machine (scripts/run_corpus.ts without --queue): the inputs (folder, glob,
 * manifest), one result per document equal to what the task's own script writes, resume without
 * recomputing, a document that fails recorded with its error while the others finish (retried
 * with backoff when trying again may help), and bad flags as one line with exit code 2.
 */
import assert from "node:assert/strict";
import { parseCorpusArgs } from "../src/corpus/flags.ts";
import { listDocuments } from "../src/corpus/inputs.ts";
import { parseQueueUrl } from "../src/corpus/queue_url.ts";
import { filesBelow, results, runCorpus, summaryOf, TINY, writeCorpus } from "./helpers/corpus.ts";
import { runScript } from "./helpers/scripts.ts";
import { withTempDir } from "./helpers/temp_dir.ts";

const CPU = [...TINY, "--device", "cpu"];

function withDir(fn: (dir: string) => Promise<void>): Promise<void> {
  return withTempDir("mambabyte-corpus-", fn);
}

Deno.test("inputs: a folder (hidden files left out), a glob, a manifest; names are relative", async () => {
  await withDir(async (dir) => {
    await Deno.mkdir(`${dir}/c/sub`, { recursive: true });
    await Deno.mkdir(`${dir}/c/.hidden`);
    for (const f of ["c/a.txt", "c/sub/b.txt", "c/.dot.txt", "c/.hidden/x.txt", "c/sub/c.md"]) {
      await Deno.writeTextFile(`${dir}/${f}`, f);
    }
    const folder = await listDocuments(`${dir}/c`);
    assert.equal(folder.kind, "folder");
    assert.deepEqual(folder.documents.map((d) => d.name), ["a.txt", "sub/b.txt", "sub/c.md"]);
    assert.deepEqual(folder.documents[1], {
      name: "sub/b.txt",
      path: `${dir}/c/sub/b.txt`,
      bytes: 11,
    });
    const glob = await listDocuments(`${dir}/c/**/*.txt`);
    assert.equal(glob.kind, "glob");
    assert.deepEqual(glob.documents.map((d) => d.name), ["a.txt", "sub/b.txt"]);
    await Deno.writeTextFile(
      `${dir}/c/list`,
      "# the corpus\nsub/b.txt\n\n  \na.txt\r\nsub/b.txt\n../elsewhere.txt\n",
    );
    const manifest = await listDocuments(`${dir}/c/list`);
    assert.equal(manifest.kind, "manifest");
    // Listed twice, kept once; a missing file is listed (it fails on its own when run).
    assert.deepEqual(manifest.documents.map((d) => d.name), [
      "c/a.txt",
      "c/sub/b.txt",
      "elsewhere.txt",
    ]);
    assert.equal(manifest.base, dir);
    await assert.rejects(listDocuments(`${dir}/nope`), /no such folder, manifest or glob/);
    await assert.rejects(listDocuments(`${dir}/c/*.pdf`), /the glob lists no document/);
    await Deno.mkdir(`${dir}/empty`);
    await assert.rejects(listDocuments(`${dir}/empty`), /the folder lists no document/);
  });
});

Deno.test("--queue: redis://host:port/<name>, anything else says what is expected", () => {
  const q = parseQueueUrl("redis://10.0.0.5:6380/pg19-test");
  assert.deepEqual(q, {
    host: "10.0.0.5",
    port: 6380,
    name: "pg19-test",
    display: "redis://10.0.0.5:6380/pg19-test",
  });
  const p = parseQueueUrl("redis://:s3cret@host/q");
  assert.ok(typeof p !== "string");
  assert.equal(p.password, "s3cret");
  assert.equal(p.port, 6379);
  assert.ok(!p.display.includes("s3cret"));
  for (
    const bad of [
      "host:6379/q",
      "http://h:1/q",
      "redis://h:1/",
      "redis://h:1/a:b",
      "redis://h:1/q?x=1",
    ]
  ) {
    assert.equal(typeof parseQueueUrl(bad), "string", bad);
  }
});

Deno.test("flags: defaults by task, absolute paths, worker settings", () => {
  const s = parseCorpusArgs(["--inputs", "x", "--output_dir", "out", "--model_id", "tiny"]);
  assert.equal(s.mode, "coordinator");
  if (s.mode !== "coordinator") return;
  assert.equal(s.spec.format, "json");
  assert.equal(s.outputDir, `${Deno.cwd()}/out`);
  assert.equal(s.attempts, 3);
  const e = parseCorpusArgs([
    ...["--inputs", "x", "--output_dir", "o", "--task", "extract_discrete_A"],
    ...["--reduction", "fro", "--pretrained_model_filepath", "m.pt"],
  ]);
  assert.ok(e.mode === "coordinator" && e.spec.format === "msgpack");
  assert.ok(
    e.mode === "coordinator" && e.spec.model.pretrained_model_filepath === `${Deno.cwd()}/m.pt`,
  );
  const w = parseCorpusArgs(["--worker", "--queue", "redis://h:1/q", "--device", "cuda:1"]);
  assert.deepEqual(w.mode === "worker" && [w.device, w.lockMs, w.stalledMs], [
    "cuda:1",
    60000,
    30000,
  ]);
});

/** The two flags every embedded run needs, with placeholder values. */
const IO = ["--inputs", "x", "--output_dir", "o"];

const BAD: [string, string[], RegExp][] = [
  ["no --inputs", ["--output_dir", "o"], /argument --inputs: required/],
  ["no --output_dir", ["--inputs", "x"], /argument --output_dir: required/],
  ["unknown task", [...IO, "--task", "gen"], /--task: invalid choice/],
  [
    "extraction flag with evaluate",
    [...IO, "--reduction", "fro"],
    /--reduction: --task evaluate does not take it/,
  ],
  [
    "flag the extraction does not take",
    [...IO, "--task", "extract_discrete_A", "--module_id", "dt_proj"],
    /--module_id: --task extract_discrete_A does not take it/,
  ],
  [
    "the extraction's own check",
    [...IO, "--task", "extract_module_outputs"],
    /required: --module_id/,
  ],
  [
    "reduction_dim out of range",
    [...IO, "--task", "extract_discrete_A", "--reduction", "mean", "--reduction_dim", "3"],
    /--reduction_dim: 3 is not a dimension/,
  ],
  [
    "original layout as json",
    [
      ...IO,
      "--task",
      "extract_input_sim_with_discrete_A",
      "--output_layout",
      "original",
      "--format",
      "json",
    ],
    /--output_layout: .*--format pkl/,
  ],
  ["format", [...IO, "--format", "csv"], /--format: invalid choice/],
  ["context", [...IO, "--context", "0"], /--context: must be an integer from 1/],
  ["attempts", [...IO, "--attempts", "0"], /--attempts: must be an integer from 1 to 100/],
  ["worker without queue", ["--worker"], /--worker: a worker needs --queue/],
  [
    "worker with inputs",
    ["--worker", "--queue", "redis://h:1/q", "--inputs", "x"],
    /--inputs: a worker takes the task from the queue/,
  ],
  [
    "worker with a model flag",
    ["--worker", "--queue", "redis://h:1/q", "--model_id", "tiny"],
    /--model_id: a worker takes the task/,
  ],
  ["lock_ms without worker", [...IO, "--lock_ms", "5000"], /--lock_ms: a worker's setting/],
  [
    "lock_ms too short",
    ["--worker", "--queue", "redis://h:1/q", "--lock_ms", "10"],
    /--lock_ms: must be an integer from 1000/,
  ],
  ["queue URL", [...IO, "--queue", "h:6379/q"], /--queue: .*expected redis:\/\/host:port\/<name>/],
  [
    "device with queue",
    [...IO, "--queue", "redis://h:1/q", "--device", "cpu"],
    /--device: with --queue each worker picks its own/,
  ],
  ["device", [...IO, "--device", "cuda:x"], /--device: invalid choice/],
  ["unknown model id", [...IO, "--model_id", "nope"], /--model_id: invalid choice: 'nope'/],
];

Deno.test("bad flags: one line naming the flag, exit code 2, nothing written", async () => {
  await withDir(async (dir) => {
    for (const [what, args, says] of BAD) {
      const r = await runScript("run_corpus.ts", args, { cwd: dir });
      assert.equal(r.code, 2, `${what}: exit ${r.code}\n${r.stderr}`);
      const lines = r.stderr.trim().split("\n");
      assert.equal(lines.length, 1, `${what}: ${r.stderr}`);
      assert.match(lines[0], /^run_corpus\.ts: error: /, what);
      assert.match(lines[0], says, what);
    }
    assert.deepEqual(await filesBelow(dir), []);
  });
});

Deno.test("embedded: one result per document, resume computes nothing, other settings refused", async () => {
  await withDir(async (dir) => {
    const names = await writeCorpus(`${dir}/corpus`, 6);
    await Deno.mkdir(`${dir}/corpus/sub`);
    await Deno.copyFile(`${dir}/corpus/doc00.txt`, `${dir}/corpus/sub/doc00.txt`);
    const out = `${dir}/out`;
    const r = await runCorpus(["--inputs", `${dir}/corpus`, "--output_dir", out, ...CPU]);
    assert.equal(r.code, 0, r.stderr.join("\n"));
    assert.match(
      r.stdout,
      /^7 documents: 7 done \(0 before this run\), 0 failed; \d+ bytes, [0-9.]+ bits\/byte/,
    );
    // A line per document on stderr, numbered.
    assert.equal(r.stderr.filter((l) => /^\[\d\/7\] .*bits\/byte/.test(l)).length, 7);
    const files = await results(out);
    assert.deepEqual(
      [...files.keys()],
      [...names.map((n) => `${n}.json`), "sub/doc00.txt.json"].sort(),
    );
    const s = await summaryOf(out);
    assert.equal(s.done, 7);
    assert.equal(s.computed, 7);
    assert.equal(s.failed, 0);
    const rows = s.per_document as {
      name: string;
      nats: number;
      scored: number;
      bits_per_byte: number;
    }[];
    const nats = rows.reduce((a, x) => a + x.nats, 0);
    const scored = rows.reduce((a, x) => a + x.scored, 0);
    assert.ok(Math.abs((s.bits_per_byte as number) - nats / Math.LN2 / scored) < 1e-12);
    const doc = JSON.parse(new TextDecoder().decode(files.get("doc00.txt.json")!));
    assert.equal(doc.bits_per_byte, rows.find((x) => x.name === "doc00.txt")!.bits_per_byte);
    assert.equal(doc.bytes, (await Deno.stat(`${dir}/corpus/doc00.txt`)).size);
    // The same document in two places: the same result, under two names.
    assert.deepEqual(files.get("sub/doc00.txt.json")!.length > 0, true);
    assert.equal(
      JSON.parse(new TextDecoder().decode(files.get("sub/doc00.txt.json")!)).nats,
      doc.nats,
    );
    // evaluate.ts on one document says the same.
    const ev = await runScript("evaluate.ts", [...CPU, "--text_files", `${dir}/corpus/doc03.txt`]);
    assert.equal(ev.code, 0, ev.stderr);
    const bpb = rows.find((x) => x.name === "doc03.txt")!.bits_per_byte;
    assert.match(ev.stdout, new RegExp(`doc03\\.txt \\| \\d+ \\| ${bpb.toFixed(4)}`));

    // Restarted: nothing computed, nothing rewritten; the model is not even loaded.
    const mtimes = await Promise.all(
      [...files.keys()].map(async (f) => (await Deno.stat(`${out}/${f}`)).mtime),
    );
    await Deno.writeTextFile(`${dir}/corpus/doc99.txt`, "one more document");
    const again = await runCorpus(["--inputs", `${dir}/corpus`, "--output_dir", out, ...CPU]);
    assert.equal(again.code, 0, again.stderr.join("\n"));
    assert.match(again.stdout, /^8 documents: 8 done \(7 before this run\)/);
    const s2 = await summaryOf(out);
    assert.deepEqual([s2.computed, s2.resumed, s2.bytes_per_second !== null], [1, 7, true]);
    const after = await Promise.all(
      [...files.keys()].map(async (f) => (await Deno.stat(`${out}/${f}`)).mtime),
    );
    assert.deepEqual(after, mtimes);
    const third = await runCorpus(["--inputs", `${dir}/corpus`, "--output_dir", out, ...CPU]);
    assert.match(third.stdout, /8 done \(8 before this run\)/);
    // An output folder inside the corpus: its files are not documents.
    const inside = `${dir}/corpus/results`;
    const nested = await runCorpus(["--inputs", `${dir}/corpus`, "--output_dir", inside, ...CPU]);
    assert.match(nested.stdout, /^8 documents: 8 done \(0 before this run\)/);
    const again2 = await runCorpus(["--inputs", `${dir}/corpus`, "--output_dir", inside, ...CPU]);
    assert.match(again2.stdout, /^8 documents: 8 done \(8 before this run\)/);
    assert.ok(
      again2.stderr.some((l) => /9 files under --output_dir left out/.test(l)),
      again2.stderr.join("\n"),
    );
    assert.ok(!third.stderr.some((l) => /worker/.test(l)), third.stderr.join("\n"));
    // Results of another model are not mixed in.
    const other = await runCorpus([
      "--inputs",
      `${dir}/corpus`,
      "--output_dir",
      out,
      "--model_id",
      "small",
    ]);
    assert.equal(other.code, 2);
    assert.match(
      other.stderr.join("\n"),
      /--output_dir: .* other settings \(model\.model_id differ\)/,
    );
  });
});

Deno.test("embedded: an extraction's result per document is what its script writes", async () => {
  await withDir(async (dir) => {
    await writeCorpus(`${dir}/corpus`, 2);
    const flags = ["--reduction", "fro", "--return_log_probs", "--layer_idxs", "0", "5"];
    const out = `${dir}/out`;
    const r = await runCorpus([
      ...["--inputs", `${dir}/corpus`, "--output_dir", out, "--task", "extract_discrete_A"],
      ...flags,
      ...CPU,
    ]);
    assert.equal(r.code, 0, r.stderr.join("\n"));
    for (const name of ["doc00.txt", "doc01.txt"]) {
      const script = await runScript("extract_discrete_A.ts", [
        ...flags,
        ...CPU,
        ...["--prompt_file", `${dir}/corpus/${name}`, "--quiet"],
        ...["--filepath_to_store_outputs", `${dir}/${name}.msgpack`],
      ]);
      assert.equal(script.code, 0, script.stderr);
      assert.deepEqual(
        await Deno.readFile(`${out}/${name}.msgpack`),
        await Deno.readFile(`${dir}/${name}.msgpack`),
        name,
      );
    }
    // Bits per byte from the log-probabilities the extraction computed.
    const s = await summaryOf(out);
    assert.equal(typeof s.bits_per_byte, "number");
  });
});

Deno.test("embedded: a document that fails is recorded with its error; the others finish", async () => {
  await withDir(async (dir) => {
    await writeCorpus(`${dir}/corpus`, 3);
    const fifo = `${dir}/corpus/fifo.txt`;
    await new Deno.Command("mkfifo", { args: [fifo] }).output();
    await Deno.writeTextFile(
      `${dir}/list`,
      [
        "corpus/doc00.txt",
        "corpus/missing.txt",
        "corpus/fifo.txt",
        "corpus/doc01.txt",
        "corpus/doc02.txt",
      ]
        .join("\n"),
    );
    const out = `${dir}/out`;
    // A folder where doc02's result goes: writing it fails every time (retried, with backoff).
    await Deno.mkdir(`${out}/doc02.txt.json`, { recursive: true });
    const t0 = performance.now();
    const r = await runCorpus([
      ...["--inputs", `${dir}/list`, "--output_dir", out, "--backoff_ms", "200", ...CPU],
    ]);
    const seconds = (performance.now() - t0) / 1000;
    assert.equal(r.code, 1, r.stderr.join("\n"));
    assert.match(r.stderr.at(-1)!, /^error: 3 of 5 documents failed \(first: doc02\.txt: /);
    const s = await summaryOf(out);
    assert.deepEqual([s.done, s.failed], [2, 3]);
    const failures = s.failures as { name: string; error: string; attempts: number }[];
    assert.deepEqual(failures.map((f) => [f.name, f.attempts]), [
      ["doc02.txt", 3],
      ["fifo.txt", 1],
      ["missing.txt", 1],
    ]);
    assert.match(failures[0].error, /doc02\.txt\.json/);
    assert.match(failures[1].error, /is a FIFO, not a regular file/);
    assert.match(failures[2].error, /document not found: .*missing\.txt/);
    // Two retries of doc02, after 200 then 400 ms.
    assert.equal(
      r.stderr.filter((l) => /doc02\.txt failed \(try [12]\), again in (200|400) ms/.test(l))
        .length,
      2,
    );
    assert.ok(seconds > 0.6, `${seconds} s`);
    assert.deepEqual([...(await results(out)).keys()], ["doc00.txt.json", "doc01.txt.json"]);
  });
});
