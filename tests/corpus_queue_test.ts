/**
 * Corpus runs through a BullMQ queue on a throw-away redis-server: the same results as the
 * embedded mode, three workers with one killed (SIGKILL) mid-run and every document done exactly
 * once, a restarted run that computes nothing, failures recorded with their errors (retried with
 * backoff when trying again may help), and an unreachable queue as one error line.
 */
import assert from "node:assert/strict";
import {
  type CorpusProcess,
  filesBelow,
  results,
  runCorpus,
  spawnCorpus,
  summaryOf,
  TINY,
  writeCorpus,
} from "./helpers/corpus.ts";
import { redisMissing, type RedisServer, startRedis } from "./helpers/redis.ts";

const noRedis = await redisMissing();
if (noRedis) console.warn(`corpus_queue_test: queue tests skipped: ${noRedis}`);

/** Workers that notice a dead worker's document within seconds, not minutes. */
const FAST = ["--lock_ms", "3000", "--stalled_ms", "500"];

async function withRun(fn: (dir: string, redis: RedisServer) => Promise<void>): Promise<void> {
  const dir = await Deno.makeTempDir({ prefix: "mambabyte-queue-" });
  const redis = await startRedis();
  try {
    await fn(dir, redis);
  } finally {
    await redis.stop();
    await Deno.remove(dir, { recursive: true });
  }
}

function startWorkers(n: number, url: string): CorpusProcess[] {
  return Array.from(
    { length: n },
    () => spawnCorpus(["--worker", "--queue", url, "--device", "cpu", ...FAST]),
  );
}

/** SIGTERM: each worker finishes its document and exits 0. */
async function stopWorkers(workers: CorpusProcess[]): Promise<void> {
  await Promise.all(workers.map((w) => w.waitFor(/taking documents from/)));
  for (const w of workers) w.child.kill("SIGTERM");
  for (const w of workers) {
    const r = await w.done();
    assert.equal(r.code, 0, r.stderr.join("\n"));
    assert.ok(r.stderr.some((l) => /SIGTERM: stopping after the current document/.test(l)));
  }
}

/** The index of the first worker to start its `n`-th document. */
async function firstToStart(workers: CorpusProcess[], n: number): Promise<number> {
  const deadline = Date.now() + 60_000;
  for (;;) {
    const i = workers.findIndex((w) =>
      w.lines.filter((l) => /: start \S+ \(try/.test(l)).length >= n
    );
    if (i >= 0) return i;
    if (Date.now() > deadline) throw new Error("no worker started two documents within 60 s");
    await new Promise((r) => setTimeout(r, 5));
  }
}

/** How many times each document was reported `done` (or `already done`), from the workers' lines. */
function reportCounts(
  workers: CorpusProcess[],
  kind: "done" | "already done",
): Map<string, number> {
  const n = new Map<string, number>();
  const pattern = new RegExp(`: ${kind} (\\S+): \\d+ bytes`);
  for (const w of workers) {
    for (const l of w.lines) {
      const m = pattern.exec(l);
      if (m) n.set(m[1], (n.get(m[1]) ?? 0) + 1);
    }
  }
  return n;
}

/** The document a worker had started last and not reported done when it stopped. */
function unfinished(w: CorpusProcess): string | undefined {
  const started = w.lines.flatMap((l) => /: start (\S+) \(try/.exec(l)?.[1] ?? []);
  const last = started.at(-1);
  const reported = w.lines.some((l) =>
    l.includes(`: done ${last}: `) || l.includes(`: already done ${last}: `)
  );
  return last !== undefined && !reported ? last : undefined;
}

Deno.test({
  name: "queue: two workers give the embedded mode's results, byte for byte (30 documents)",
  ignore: noRedis !== null,
  async fn() {
    await withRun(async (dir, redis) => {
      await writeCorpus(`${dir}/corpus`, 30);
      const inputs = ["--inputs", `${dir}/corpus`, ...TINY];
      const embedded = await runCorpus([...inputs, "--output_dir", `${dir}/a`, "--device", "cpu"]);
      assert.equal(embedded.code, 0, embedded.stderr.join("\n"));
      const workers = startWorkers(2, redis.url("same"));
      try {
        // Both ready before any document is queued: a worker slow to start under load would find
        // the other had taken all 30 (~50 ms each).
        await Promise.all(workers.map((w) => w.waitFor(/taking documents from/)));
        const queued = await runCorpus([
          ...inputs,
          ...["--output_dir", `${dir}/b`, "--queue", redis.url("same")],
        ]);
        assert.equal(queued.code, 0, queued.stderr.join("\n"));
        assert.match(queued.stdout, /^30 documents: 30 done \(0 before this run\), 0 failed/);
      } finally {
        await stopWorkers(workers);
      }
      const a = await results(`${dir}/a`);
      const b = await results(`${dir}/b`);
      assert.equal(a.size, 30);
      assert.deepEqual([...b.keys()], [...a.keys()]);
      for (const [name, bytes] of a) assert.deepEqual(b.get(name), bytes, name);
      const [sa, sb] = [await summaryOf(`${dir}/a`), await summaryOf(`${dir}/b`)];
      assert.equal(sb.bits_per_byte, sa.bits_per_byte);
      assert.deepEqual([sb.done, sb.failed, sb.computed], [30, 0, 30]);
      // Both workers took documents.
      assert.equal((sb.workers as string[]).length, 2, JSON.stringify(sb.workers));
    });
  },
});

Deno.test({
  name:
    "queue: three workers, one killed mid-run: every document done once; a restart computes nothing",
  ignore: noRedis !== null,
  async fn() {
    await withRun(async (dir, redis) => {
      const names = await writeCorpus(`${dir}/corpus`, 30, 2400);
      const out = `${dir}/out`;
      const url = redis.url("kill");
      const workers = startWorkers(3, url);
      const args = ["--inputs", `${dir}/corpus`, "--output_dir", out, "--queue", url, ...TINY];
      const survivors = workers.slice();
      try {
        const coordinator = spawnCorpus(args);
        // The first worker to start its second document is killed in the middle of it: at once,
        // since a document takes this model only ~50 ms.
        const first = await firstToStart(workers, 2);
        workers[first].child.kill("SIGKILL");
        const killed = await workers[first].done();
        assert.equal(killed.code, 137);
        survivors.splice(first, 1);
        const r = await coordinator.done();
        assert.equal(r.code, 0, r.stderr.join("\n"));
        assert.match(r.stdout, /^30 documents: 30 done \(0 before this run\), 0 failed/);
        // BullMQ's stalled-job check gave the dead worker's document to another.
        assert.ok(
          r.stderr.some((l) => /its worker stopped answering; it is queued again/.test(l)),
          r.stderr.join("\n"),
        );
        // Each document computed once. The killed worker may have written its document's result
        // just before the signal and not said so: then a survivor finds it already done.
        const killedDoc = unfinished(workers[first]);
        assert.ok(killedDoc !== undefined, workers[first].lines.join("\n"));
        const counts = reportCounts(workers, "done");
        const found = reportCounts(survivors, "already done");
        for (const n of names) {
          const times: number = (counts.get(n) ?? 0) + (n === killedDoc ? found.get(n) ?? 0 : 0);
          assert.equal(
            times,
            1,
            `${n} computed ${counts.get(n)} times, found done ${found.get(n)}`,
          );
          if (n !== killedDoc) assert.equal(found.get(n), undefined, n);
        }
        // Every file is whole: results, the summary, the bookkeeping; no temporary file is left.
        const files = await filesBelow(out);
        const expected = [
          ...names.map((n) => `${n}.json`),
          ...names.map((n) => `.corpus/done/${n}.json`),
          ".corpus/run.json",
          "summary.json",
        ].sort();
        assert.deepEqual(files, expected);
        for (const n of names) JSON.parse(await Deno.readTextFile(`${out}/${n}.json`));
        const s = await summaryOf(out);
        assert.deepEqual([s.done, s.failed, s.computed, s.resumed], [30, 0, 30, 0]);
        const rows = s.per_document as { nats: number; scored: number; bytes: number }[];
        assert.equal(s.bytes, rows.reduce((a, x) => a + x.bytes, 0));
        const nats = rows.reduce((a, x) => a + x.nats, 0);
        const scored = rows.reduce((a, x) => a + x.scored, 0);
        assert.ok(Math.abs((s.bits_per_byte as number) - nats / Math.LN2 / scored) < 1e-12);

        // Restarted with the workers still there: nothing is queued, nothing computed or rewritten.
        const mtimes = await Promise.all(
          names.map(async (n) => (await Deno.stat(`${out}/${n}.json`)).mtime),
        );
        const before = survivors.map((w) => w.lines.length);
        const again = await runCorpus(args);
        assert.equal(again.code, 0, again.stderr.join("\n"));
        assert.match(again.stdout, /^30 documents: 30 done \(30 before this run\), 0 failed/);
        const s2 = await summaryOf(out);
        assert.deepEqual([s2.computed, s2.resumed, s2.bits_per_byte], [0, 30, s.bits_per_byte]);
        await new Promise((r) => setTimeout(r, 500));
        assert.deepEqual(survivors.map((w) => w.lines.length), before);
        assert.deepEqual(
          await Promise.all(names.map(async (n) => (await Deno.stat(`${out}/${n}.json`)).mtime)),
          mtimes,
        );
      } finally {
        await stopWorkers(survivors);
      }
    });
  },
});

Deno.test({
  name: "queue: failures are recorded with their errors (retried with backoff when it may help)",
  ignore: noRedis !== null,
  async fn() {
    await withRun(async (dir, redis) => {
      await writeCorpus(`${dir}/corpus`, 3);
      await Deno.writeTextFile(
        `${dir}/list`,
        "corpus/doc00.txt\ncorpus/missing.txt\ncorpus/doc01.txt\ncorpus/doc02.txt\n",
      );
      const out = `${dir}/out`;
      await Deno.mkdir(`${out}/doc01.txt.json`, { recursive: true });
      const url = redis.url("fail");
      const workers = startWorkers(1, url);
      try {
        const r = await runCorpus([
          ...["--inputs", `${dir}/list`, "--output_dir", out, "--queue", url],
          ...["--backoff_ms", "100", ...TINY],
        ]);
        assert.equal(r.code, 1, r.stderr.join("\n"));
        assert.match(r.stderr.at(-1)!, /^error: 2 of 4 documents failed/);
        const s = await summaryOf(out);
        assert.deepEqual([s.done, s.failed], [2, 2]);
        const f = s.failures as { name: string; error: string; attempts: number }[];
        assert.deepEqual(f.map((x) => [x.name, x.attempts]), [["doc01.txt", 3], [
          "missing.txt",
          1,
        ]]);
        assert.match(f[0].error, /doc01\.txt\.json/);
        assert.match(f[1].error, /^document not found: .*missing\.txt$/);
        const tries = workers[0].lines.filter((l) => /failed doc01\.txt \(try [123]\)/.test(l));
        assert.equal(tries.length, 3, workers[0].lines.join("\n"));
      } finally {
        await stopWorkers(workers);
      }
    });
  },
});

Deno.test({
  name: "queue: an unreachable queue is one error line, exit 1, for the coordinator and a worker",
  ignore: noRedis !== null,
  async fn() {
    await withRun(async (dir, redis) => {
      await writeCorpus(`${dir}/corpus`, 1);
      const port = redis.port;
      await redis.stop();
      const url = `redis://127.0.0.1:${port}/gone`;
      for (
        const args of [
          ["--inputs", `${dir}/corpus`, "--output_dir", `${dir}/out`, "--queue", url, ...TINY],
          ["--worker", "--queue", url],
        ]
      ) {
        const r = await runCorpus(args);
        assert.equal(r.code, 1, r.stderr.join("\n"));
        assert.deepEqual(r.stderr.length, 1, r.stderr.join("\n"));
        assert.match(
          r.stderr[0],
          new RegExp(`^error: cannot reach the queue at redis://127\\.0\\.0\\.1:${port}/gone`),
        );
      }
    });
  },
});
