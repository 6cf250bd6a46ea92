/**
 * A corpus run's coordinator: list the documents, refuse an output folder holding results of other
 * settings, skip the documents already done there, compute the rest (embedded, or through the
 * queue), and write the summary.
 *
 * @module
 */

import { openConfig } from "../cli/session.ts";
import { UserError } from "../cli/errors.ts";
import { embeddedDevices, runEmbedded } from "./embedded.ts";
import { type CoordinatorSettings, PROG } from "./flags.ts";
import { listDocuments } from "./inputs.ts";
import { OutputFolder, SUMMARY_FILE } from "./layout.ts";
import { buildSummary, type Outcome, type RunEvents, RunReporter, type Summary } from "./report.ts";

/** Checks that the output folder can be made and written, before any work. */
async function checkWritable(dir: string): Promise<void> {
  try {
    await Deno.mkdir(dir, { recursive: true });
    const probe = await Deno.makeTempFile({ dir, prefix: ".mambabyte-probe-" });
    await Deno.remove(probe);
  } catch (e) {
    throw new UserError(`cannot write to --output_dir ${dir}: ${(e as Error).message}`);
  }
}

/** Runs the coordinator's side of a run; returns its summary (also written to summary.json). */
export async function runCorpus(s: CoordinatorSettings): Promise<Summary> {
  const spec = s.spec;
  // The config and model id are checked here, before any worker loads anything.
  const cfg = await openConfig(PROG, { ...spec.model, device: null });
  const listed = (await listDocuments(s.inputs)).documents;
  // Results kept inside the corpus's folder are not documents of it.
  const documents = listed.filter((d) => !d.path.startsWith(`${s.outputDir}/`));
  if (documents.length === 0) {
    throw new UserError(`--inputs ${s.inputs} lists no document outside --output_dir`);
  }
  const out = new OutputFolder(s.outputDir, spec.format);
  const clash = documents.find((d) => out.resultName(d.name) === SUMMARY_FILE);
  if (clash) {
    throw new UserError(
      `document ${clash.path} would be stored as ${SUMMARY_FILE}, the run's summary: rename it`,
    );
  }
  await checkWritable(s.outputDir);
  await out.claim({ ...spec } as unknown as Record<string, unknown>);
  const before: Outcome[] = [];
  const todo = [];
  for (const doc of documents) {
    const done = await out.done(doc.name);
    if (done) {
      before.push({ doc, status: "done", result: { ...done, computed: false }, attempts: 0 });
    } else todo.push(doc);
  }
  const totalBytes = documents.reduce((n, d) => n + d.bytes, 0);
  const reporter = new RunReporter(documents.length, totalBytes, before.length, s.quiet);
  if (listed.length > documents.length) {
    reporter.note(`${listed.length - documents.length} files under --output_dir left out`);
  }
  if (before.length > 0) {
    reporter.note(`${before.length} of ${documents.length} documents were done before: kept`);
  }
  // Not done when the run began, so done by it: a worker that found a document done had seen
  // it finished by another worker of this run (one killed before it could say so).
  const events: RunEvents = {
    progress: (name, done, total) => reporter.progress(name, done, total),
    retry: (name, attempt, error, delay) => reporter.retry(name, attempt, error, delay),
    note: (line) => reporter.note(line),
    outcome: (o) =>
      reporter.outcome(o.result ? { ...o, result: { ...o.result, computed: true } } : o),
  };
  try {
    if (todo.length > 0 && s.queue === null) {
      const devices = embeddedDevices(s.device ?? cfg.general.device);
      await runEmbedded(todo, {
        spec,
        outputDir: s.outputDir,
        devices,
        attempts: s.attempts,
        backoffMs: s.backoffMs,
        events,
        onReady: (labels) => {
          reporter.note(
            `${labels.length} worker${labels.length > 1 ? "s" : ""}: ${labels.join(", ")}`,
          );
          reporter.start();
        },
      });
    } else if (todo.length > 0 && s.queue !== null) {
      // Loaded only here: the embedded mode needs neither the job engine nor Redis.
      const { runQueued } = await import("./queue.ts");
      await runQueued(todo, {
        spec,
        outputDir: s.outputDir,
        address: s.queue,
        attempts: s.attempts,
        backoffMs: s.backoffMs,
        events,
        onReady: () => {
          reporter.note(`${todo.length} documents queued on ${s.queue!.display}`);
          reporter.start();
        },
      });
    }
  } finally {
    reporter.finish();
  }
  const summary = buildSummary(
    { spec, inputs: s.inputs, outputDir: s.outputDir },
    [...before, ...reporter.outcomes],
    reporter.seconds,
  );
  await out.writeSummary(summary);
  return summary;
}
