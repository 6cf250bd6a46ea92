/**
 * run_corpus.ts's command line: the model flags and the extraction flags of the task scripts
 * (src/cli/args.ts), the corpus's own flags, and every check of their values and combinations,
 * all before any document is read or model loaded. The result is either a coordinator's run (the
 * task as a {@link TaskSpec} that workers receive) or a queue worker's settings.
 *
 * @module
 */

import {
  addExtractionFlags,
  addModelFlags,
  createParser,
  type ExtractionArgs,
  type ModelArgs,
  type OutputLayout,
  parseArgs,
  type Parser,
} from "../cli/args.ts";
import { UsageError } from "../cli/errors.ts";
import { type ExtractionName, EXTRACTIONS } from "../cli/extractions.ts";
import { checkReductionDim, flagError } from "../cli/settings.ts";
import type { DeviceSetting, DTypeSetting } from "../config/config.ts";
import { checkBounded, DEFAULTS } from "../config/defaults.ts";
import { parseQueueUrl, type QueueAddress } from "./queue_url.ts";
import { resolve } from "node:path";

/** The program name in messages. */
export const PROG = "run_corpus.ts";

/** What a run computes per document: bits per byte, or one of the extraction scripts. */
export const TASKS = ["evaluate", ...Object.keys(EXTRACTIONS) as ExtractionName[]] as const;
/** A task name. */
export type TaskName = "evaluate" | ExtractionName;

/** Result file formats. */
export const FORMATS = ["msgpack", "pkl", "safetensors", "json"] as const;
/** A result file format. */
export type Format = (typeof FORMATS)[number];

/**
 * Everything a worker needs to compute a document as the coordinator asked: plain JSON, carried
 * by each job (and recorded in the output folder, so a restart with other settings is refused).
 */
export interface TaskSpec {
  task: TaskName;
  /** The model flags (paths absolute, so workers elsewhere read the same files); no device. */
  model: {
    config_path: string | null;
    pretrained_model_filepath: string | null;
    model_id: string | null;
    seed: number | null;
    dtype: DTypeSetting | null;
  };
  /** The extraction flags (all absent for evaluate). */
  extraction: ExtractionArgs;
  output_layout: OutputLayout;
  /** Forward chunk length in bytes (null: the config's chunk_size). */
  context: number | null;
  format: Format;
}

/** A coordinator's run. */
export interface CoordinatorSettings {
  mode: "coordinator";
  spec: TaskSpec;
  inputs: string;
  /** Absolute. */
  outputDir: string;
  /** Where the embedded mode runs (null: the config's general.device). */
  device: DeviceSetting | null;
  queue: QueueAddress | null;
  attempts: number;
  backoffMs: number;
  quiet: boolean;
}

/** A queue worker's settings. */
export interface WorkerSettings {
  mode: "worker";
  queue: QueueAddress;
  device: DeviceSetting | null;
  lockMs: number;
  stalledMs: number;
  quiet: boolean;
}

interface CorpusArgs extends ModelArgs, ExtractionArgs {
  inputs: string | null;
  output_dir: string | null;
  task: TaskName;
  format: Format | null;
  output_layout: OutputLayout | null;
  context: number | null;
  attempts: number | null;
  backoff_ms: number | null;
  queue: string | null;
  worker: boolean;
  lock_ms: number | null;
  stalled_ms: number | null;
  quiet: boolean;
}

const EXTRACTION_FLAGS = [
  "layer_idxs",
  "module_ids",
  "nonlinearity",
  "return_log_probs",
  "return_ranks",
  "reduction",
  "reduction_dim",
] as const;

/** The flag a destination is spelled as. */
function flagOf(dest: string): string {
  return dest === "module_ids" ? "--module_id" : `--${dest}`;
}

function given(v: unknown): boolean {
  return v !== null && v !== undefined && v !== false;
}

function intFlag(s: string): number {
  if (!/^[+-]?\d+$/.test(s.trim())) throw new TypeError(`not an integer: ${s}`);
  return Number(s);
}
Object.defineProperty(intFlag, "name", { value: "int" });

/** The parser (exported for --help and the tests). */
export function corpusParser(): Parser {
  const p = createParser(
    PROG,
    "Run a task over every document of a corpus: bits per byte (evaluate) or an extraction, " +
      "one result file per document, resumable; on this machine (one worker per GPU) or through " +
      "a Redis queue that workers on any host take documents from.",
  );
  const c = p.add_argument_group({ title: "corpus" });
  c.add_argument("--inputs", {
    default: null,
    help: "a folder (every non-hidden file below it), a glob ('books/*.txt', quoted) or a " +
      "manifest file listing one path per line (relative to the manifest's folder)",
  });
  c.add_argument("--output_dir", {
    default: null,
    help: "folder of the results (one file per document, named after it) and summary.json; " +
      "documents already done there are not computed again",
  });
  c.add_argument("--task", {
    choices: [...TASKS],
    default: "evaluate",
    help: "evaluate: bits per byte; or an extraction script's name, with its flags " +
      "(default: evaluate)",
  });
  c.add_argument("--format", {
    choices: [...FORMATS],
    default: null,
    help: "result file format (default: json for evaluate, msgpack for the extractions)",
  });
  c.add_argument("--context", {
    type: intFlag,
    default: null,
    help: "forward chunk length in bytes; the state is carried across chunks, so documents of " +
      "any length run in bounded memory (default: the config's chunk_size)",
  });
  c.add_argument("--attempts", {
    type: intFlag,
    default: null,
    help: `tries per document before it is recorded as failed (default: ${DEFAULTS.attempts})`,
  });
  c.add_argument("--backoff_ms", {
    type: intFlag,
    default: null,
    help:
      `delay before the first retry, doubled for each later one (default: ${DEFAULTS.backoff_ms})`,
  });
  c.add_argument("--quiet", { action: "store_true", help: "no progress on stderr" });
  const q = p.add_argument_group({ title: "queue (several hosts)" });
  q.add_argument("--queue", {
    default: null,
    help: "redis://host:port/<name>: put the run's documents on this BullMQ queue (the " +
      "coordinator) or take them from it (with --worker); default: run here, one worker per GPU",
  });
  q.add_argument("--worker", {
    action: "store_true",
    help: "take documents from --queue until stopped (SIGINT/SIGTERM: finish the document, then " +
      "exit); one process per GPU, pinned with --device cuda:N",
  });
  q.add_argument("--lock_ms", {
    type: intFlag,
    default: null,
    help: "worker: how long a claim on a document lasts unless renewed (renewed while it runs); " +
      `a killed worker's document is taken again after about this (default: ${DEFAULTS.lock_ms})`,
  });
  q.add_argument("--stalled_ms", {
    type: intFlag,
    default: null,
    help: "worker: how often to look for documents of workers that died " +
      `(default: ${DEFAULTS.stalled_ms})`,
  });
  addModelFlags(p);
  addExtractionFlags(p);
  const o = p.add_argument_group({ title: "output" });
  o.add_argument("--output_layout", {
    choices: ["default", "original"],
    default: null,
    help: "extractions: default, or original: exactly what the original scripts pickle " +
      "(--format pkl only) (default: default)",
  });
  return p;
}

function bounded(name: string, value: number | null, fallback: number): number {
  if (value === null) return fallback;
  const bad = checkBounded(name, value, "value");
  if (bad) flagError(PROG, name, bad.replace(/^value /, ""));
  return value;
}

function checkWorker(a: CorpusArgs): WorkerSettings {
  if (a.queue === null) {
    flagError(PROG, "worker", "a worker needs --queue redis://host:port/<name>");
  }
  const coordinatorOnly = [
    "inputs",
    "output_dir",
    "format",
    "output_layout",
    "context",
    "attempts",
    "backoff_ms",
    "config_path",
    "pretrained_model_filepath",
    "model_id",
    "seed",
    "dtype",
    ...EXTRACTION_FLAGS,
  ] as const;
  for (const k of coordinatorOnly) {
    if (given(a[k])) {
      flagError(
        PROG,
        k === "module_ids" ? "module_id" : k,
        "a worker takes the task from the queue: give this to the coordinator",
      );
    }
  }
  if (a.task !== "evaluate") {
    flagError(PROG, "task", "a worker takes the task from the queue: give this to the coordinator");
  }
  const queue = parseQueueUrl(a.queue);
  if (typeof queue === "string") flagError(PROG, "queue", queue);
  return {
    mode: "worker",
    queue,
    device: a.device,
    lockMs: bounded("lock_ms", a.lock_ms, DEFAULTS.lock_ms),
    stalledMs: bounded("stalled_ms", a.stalled_ms, DEFAULTS.stalled_ms),
    quiet: a.quiet,
  };
}

/** The checks of the task's own flags, as its script makes them. */
function checkTask(a: CorpusArgs): void {
  if (a.task === "evaluate") {
    for (const k of EXTRACTION_FLAGS) {
      if (given(a[k])) flagError(PROG, flagOf(k).slice(2), "--task evaluate does not take it");
    }
    if (a.output_layout !== null) {
      flagError(PROG, "output_layout", "--task evaluate does not take it");
    }
    return;
  }
  const s = EXTRACTIONS[a.task];
  const takes: Record<string, boolean> = {
    module_ids: s.flags.modules ?? true,
    nonlinearity: s.flags.nonlinearity ?? true,
    reduction: s.flags.reduction ?? true,
    reduction_dim: s.flags.reduction ?? true,
  };
  for (const [k, ok] of Object.entries(takes)) {
    if (!ok && given(a[k as keyof CorpusArgs])) {
      flagError(PROG, flagOf(k).slice(2), `--task ${a.task} does not take it`);
    }
  }
  try {
    s.validate?.({
      ...a,
      prompt: null,
      prompt_file: null,
      filepath_to_store_outputs: null,
      output_layout: a.output_layout ?? "default",
    });
  } catch (e) {
    // The script's own check, reported under this program's name.
    if (e instanceof UsageError) throw new UsageError(PROG, e.message);
    throw e;
  }
  if (takes.reduction) checkReductionDim(PROG, a.reduction, a.reduction_dim);
}

function checkCoordinator(a: CorpusArgs): CoordinatorSettings {
  for (const k of ["lock_ms", "stalled_ms"] as const) {
    if (a[k] !== null) flagError(PROG, k, "a worker's setting: give it with --worker");
  }
  if (a.inputs === null) flagError(PROG, "inputs", "required (a folder, a glob or a manifest)");
  if (a.output_dir === null) flagError(PROG, "output_dir", "required");
  checkTask(a);
  const format = a.format ?? (a.task === "evaluate" ? "json" : "msgpack");
  const layout = a.output_layout ?? "default";
  if (layout === "original" && format !== "pkl") {
    flagError(PROG, "output_layout", "original is the original's pickle: use --format pkl");
  }
  const context = a.context === null ? null : bounded("context", a.context, 0);
  const attempts = bounded("attempts", a.attempts, DEFAULTS.attempts);
  const backoffMs = bounded("backoff_ms", a.backoff_ms, DEFAULTS.backoff_ms);
  let queue: QueueAddress | null = null;
  if (a.queue !== null) {
    const q = parseQueueUrl(a.queue);
    if (typeof q === "string") flagError(PROG, "queue", q);
    queue = q;
    if (a.device !== null) {
      flagError(PROG, "device", "with --queue each worker picks its own: give it with --worker");
    }
  }
  const absolute = (p: string | null) => (p === null || p.startsWith("hf://") ? p : resolve(p));
  const spec: TaskSpec = {
    task: a.task,
    model: {
      config_path: absolute(a.config_path),
      pretrained_model_filepath: absolute(a.pretrained_model_filepath),
      model_id: a.model_id,
      seed: a.seed,
      dtype: a.dtype,
    },
    extraction: {
      layer_idxs: a.layer_idxs,
      module_ids: a.module_ids,
      nonlinearity: a.nonlinearity,
      return_log_probs: a.return_log_probs,
      return_ranks: a.return_ranks,
      reduction: a.reduction,
      reduction_dim: a.reduction_dim,
    },
    output_layout: layout,
    context,
    format,
  };
  return {
    mode: "coordinator",
    spec,
    inputs: a.inputs,
    outputDir: resolve(a.output_dir),
    device: a.device,
    queue,
    attempts,
    backoffMs,
    quiet: a.quiet,
  };
}

/**
 * Parses and checks run_corpus.ts's command line; throws a {@link UsageError} (exit 2) naming the
 * first bad flag.
 */
export function parseCorpusArgs(argv: string[]): CoordinatorSettings | WorkerSettings {
  const a = parseArgs<CorpusArgs>(corpusParser(), argv);
  if (a.seed !== null && !Number.isSafeInteger(a.seed)) {
    flagError(PROG, "seed", "not a safe integer");
  }
  return a.worker ? checkWorker(a) : checkCoordinator(a);
}
