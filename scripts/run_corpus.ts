/**
 * Runs a task over every document of a corpus — bits per byte (--task evaluate) or one of the
 * extraction scripts with its flags — one result file per document in --output_dir plus
 * summary.json. A restarted run computes only what is not done. Without --queue it runs here,
 * one worker per GPU (or one on the CPU); with --queue redis://host:port/<name> the documents go
 * on a BullMQ queue that `run_corpus.ts --worker --queue ...` processes take them from, on any
 * host.
 *
 * deno task corpus --inputs pg19_samples --output_dir results/pg19 --model_id tiny
 * deno task corpus --inputs 'books/*.txt' --output_dir results/dA --task extract_discrete_A \
 *   --reduction fro --return_log_probs --queue redis://10.0.0.5:6379/pg19
 * deno task corpus --worker --queue redis://10.0.0.5:6379/pg19 --device cuda:1
 */
import { runMain, UserError } from "../src/cli/mod.ts";
import { parseCorpusArgs } from "../src/corpus/flags.ts";
import { runCorpus } from "../src/corpus/run.ts";

async function main(argv: string[]): Promise<void> {
  const settings = parseCorpusArgs(argv);
  if (settings.mode === "worker") {
    // Loaded only for workers and queued runs: the embedded mode needs no job engine.
    const { runQueueWorker } = await import("../src/corpus/queue.ts");
    return await runQueueWorker(settings);
  }
  const s = await runCorpus(settings);
  const bpb = s.bits_per_byte === null ? "" : `, ${s.bits_per_byte.toFixed(4)} bits/byte`;
  const rate = s.bytes_per_second === null ? "" : `, ${Math.round(s.bytes_per_second)} bytes/s`;
  console.log(
    `${s.documents} documents: ${s.done} done (${s.resumed} before this run), ${s.failed} ` +
      `failed; ${s.bytes} bytes${bpb}${rate}; summary in ${s.output_dir}/summary.json`,
  );
  if (s.failed > 0) {
    throw new UserError(
      `${s.failed} of ${s.documents} documents failed (first: ${s.failures[0].name}: ` +
        `${s.failures[0].error}); their errors are in ${s.output_dir}/summary.json`,
    );
  }
}

if (import.meta.main) await runMain(main);
