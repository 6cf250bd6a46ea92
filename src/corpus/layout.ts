/**
 * The output folder of a corpus run:
 *
 * ```
 * <output_dir>/<name>.<ext>            one result per document (its name keeps the document's)
 * <output_dir>/summary.json            the run's summary
 * <output_dir>/.corpus/run.json        the settings the results were made with
 * <output_dir>/.corpus/done/<name>.json  written after a result: its statistics
 * ```
 *
 * Every file is written whole or not at all (src/io/atomic.ts). A document is done when its result
 * and its done-record both exist: the result is written first, so a run killed between the two
 * computes that one document again, and a restarted run computes nothing that is done.
 *
 * @module
 */

import { join } from "node:path";
import { UsageError } from "../cli/errors.ts";
import { atomicReplace } from "../io/atomic.ts";
import { readTextFileLimited } from "../io/read_limited.ts";

/** The summary's file name in the output folder. */
export const SUMMARY_FILE = "summary.json";
/** The run's own bookkeeping, beside the results. */
const STATE_DIR = ".corpus";
/** Done-records and run.json are small; anything larger is not ours. */
const MAX_RECORD_BYTES = 1 << 20;

/** What a finished document's done-record holds (also what a worker reports). */
export interface DocResult {
  /** The document's name. */
  name: string;
  /** Its absolute path. */
  path: string;
  /** Its bytes. */
  bytes: number;
  /** The result file, relative to the output folder. */
  result: string;
  /** Seconds the computation took (reading and writing included). */
  seconds: number;
  /** Who computed it: `<host>:<pid>/<device>`. */
  worker: string;
  /** The model's id and where its weights came from. */
  model_id: string;
  source: string;
  /** Bytes scored, their negative log-likelihood in nats, and bits per byte (when computed). */
  scored?: number;
  nats?: number;
  bits_per_byte?: number | null;
}

async function readJson(path: string): Promise<unknown> {
  try {
    return JSON.parse(await readTextFileLimited(path, MAX_RECORD_BYTES, "record"));
  } catch {
    return null;
  }
}

async function exists(path: string): Promise<boolean> {
  try {
    return (await Deno.stat(path)).isFile;
  } catch {
    return false;
  }
}

async function writeJsonFile(path: string, value: unknown): Promise<void> {
  await atomicReplace(
    path,
    (tmp) => Deno.writeTextFile(tmp, JSON.stringify(value, null, 2) + "\n"),
  );
}

/** `{model: {seed: 1}}` as `model.seed` -> "1", for naming the settings that differ. */
function flatten(v: Record<string, unknown>, prefix = "", out = new Map<string, string>()) {
  for (const [k, x] of Object.entries(v)) {
    if (x !== null && typeof x === "object" && !Array.isArray(x)) {
      flatten(x as Record<string, unknown>, `${prefix}${k}.`, out);
    } else {
      out.set(`${prefix}${k}`, JSON.stringify(x));
    }
  }
  return out;
}

/** Paths and records of one output folder. */
export class OutputFolder {
  /** The folder (absolute). */
  readonly dir: string;
  /** The result files' extension, without the dot. */
  readonly ext: string;

  /** `dir` must be absolute: workers on other hosts receive it as it is. */
  constructor(dir: string, ext: string) {
    this.dir = dir;
    this.ext = ext;
  }

  /** The result file of a document, relative to the folder. */
  resultName(name: string): string {
    return `${name}.${this.ext}`;
  }

  /** The result file of a document. */
  resultPath(name: string): string {
    return join(this.dir, this.resultName(name));
  }

  /** The done-record of a document. */
  donePath(name: string): string {
    return join(this.dir, STATE_DIR, "done", `${name}.json`);
  }

  /** The summary. */
  get summaryPath(): string {
    return join(this.dir, SUMMARY_FILE);
  }

  /** The statistics of a finished document, or null when it is not done. */
  async done(name: string): Promise<DocResult | null> {
    if (!(await exists(this.resultPath(name)))) return null;
    const rec = await readJson(this.donePath(name)) as DocResult | null;
    if (rec === null || typeof rec !== "object" || rec.name !== name) return null;
    return rec;
  }

  /** Records a finished document (after its result file is in place). */
  async markDone(r: DocResult): Promise<void> {
    await writeJsonFile(this.donePath(r.name), r);
  }

  /** Writes the summary. */
  async writeSummary(summary: unknown): Promise<void> {
    await writeJsonFile(this.summaryPath, summary);
  }

  /**
   * Checks that the folder holds no results made with other settings (then records these), so a
   * restarted run never mixes results of two settings. `settings` must be plain JSON.
   */
  async claim(settings: Record<string, unknown>): Promise<void> {
    const path = join(this.dir, STATE_DIR, "run.json");
    const before = await readJson(path) as Record<string, unknown> | null;
    if (before !== null) {
      const a = flatten(before);
      const b = flatten(settings);
      const differ = [...new Set([...a.keys(), ...b.keys()])].filter((k) => a.get(k) !== b.get(k));
      if (differ.length === 0) return;
      throw new UsageError(
        "run_corpus.ts",
        `argument --output_dir: ${this.dir} holds results of a run with other settings ` +
          `(${differ.join(", ")} differ): use another folder, or remove it`,
      );
    }
    await writeJsonFile(path, settings);
  }
}
