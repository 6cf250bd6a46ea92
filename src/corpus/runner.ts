/**
 * DocumentRunner: what every worker (a thread of the embedded mode, a queue worker process) does
 * with one document — read it (size-bounded), run the task with the model it loaded once, write
 * the result file, then its done-record — through the same library functions as evaluate.ts and
 * the extraction scripts, so a corpus result is what the script writes for that document.
 *
 * @module
 */

import { basename } from "node:path";
import { modelBitsPerByte } from "../analysis/bits_per_byte.ts";
import { loadModel } from "../api.ts";
import type { MambaByteLM } from "../model/model.ts";
import type { ExtractionArgs, ModelArgs, OutputArgs, PromptArgs } from "../cli/args.ts";
import { EXTRACTIONS } from "../cli/extractions.ts";
import { checkExtractionWork } from "../cli/session.ts";
import { DEFAULT_CONFIG_PATH, type DeviceSetting } from "../config/config.ts";
import { MAX_DOCUMENT_BYTES } from "../config/defaults.ts";
import { MambaByteError } from "../errors.ts";
import { writeJson } from "../io/json.ts";
import { InputFileError, readFileLimited } from "../io/read_limited.ts";
import { writeOutputs } from "../io/write.ts";
import { layerIndices } from "../model/model.ts";
import type { TaskSpec } from "./flags.ts";
import { type DocResult, OutputFolder } from "./layout.ts";

/** One document to compute: what a job carries besides the task. */
export interface CorpusJob {
  /** The document's name (its result's name). */
  name: string;
  /** Its absolute path. */
  path: string;
  /** The output folder (absolute). */
  outputDir: string;
}

/** Hooks of one document's computation. */
export interface RunHooks {
  /** Bytes done, total (called once per chunk). */
  onProgress?: (done: number, total: number) => void;
  /** Polled once per chunk: a true answer stops the computation (nothing is written). */
  shouldStop?: () => boolean;
  /**
   * Let the event loop run (timers: a queue lock's renewal) at least this often while the
   * document runs; each time costs about a millisecond. Default: never.
   */
  yieldMs?: number;
}

/** A document that cannot succeed however often it is tried (so it is not retried). */
export class PermanentError extends MambaByteError {
  /** Creates the error. */
  constructor(message: string) {
    super(message);
    this.name = "PermanentError";
  }
}

/** A computation stopped by {@link RunHooks.shouldStop}. */
export class StoppedError extends Error {
  /** Creates the error. */
  constructor(name: string) {
    super(`${name}: stopped`);
    this.name = "StoppedError";
  }
}

/**
 * True for failures that trying again cannot fix: a file that does not exist, is not a regular
 * file or is over the size bound, an empty document for an extraction, and a usage error (a layer
 * out of range, results beyond msgpack's limit).
 */
export function isPermanent(err: unknown): boolean {
  if (err instanceof PermanentError) return true;
  if (err instanceof InputFileError) return err.reason !== "unreadable";
  return err instanceof MambaByteError && err.exitCode === 2;
}

function macrotask(): Promise<void> {
  return new Promise((r) => setTimeout(r, 0));
}

/** What decides the model a spec loads: specs with equal keys can share a runner. */
export function modelKey(spec: TaskSpec): string {
  return JSON.stringify([spec.model, spec.context]);
}

/** Loads the task's model once and computes documents with it. */
export class DocumentRunner {
  /** The task. */
  readonly spec: TaskSpec;
  /** The loaded model. */
  readonly model: MambaByteLM;
  /** `<host>:<pid>/<device>`, recorded with each result. */
  readonly label: string;

  private constructor(spec: TaskSpec, model: MambaByteLM, label: string) {
    this.spec = spec;
    this.model = model;
    this.label = label;
  }

  /**
   * Loads the model the spec names on `device`; the layers an extraction asks for are checked
   * against it before its weights are read.
   */
  static async open(spec: TaskSpec, device: DeviceSetting | null): Promise<DocumentRunner> {
    const m = spec.model;
    const model = await loadModel({
      configPath: m.config_path ?? DEFAULT_CONFIG_PATH,
      modelId: m.model_id ?? undefined,
      checkpoint: m.pretrained_model_filepath ?? undefined,
      device: device ?? undefined,
      dtype: m.dtype ?? undefined,
      seed: m.seed ?? undefined,
      chunkSize: spec.context ?? undefined,
      beforeAllocate: (mc) => layerIndices(mc.dims.nLayer, spec.extraction.layer_idxs ?? undefined),
    });
    const where = model.device === "cuda" ? `cuda:${model.deviceIndex}` : "cpu";
    return new DocumentRunner(spec, model, `${hostname()}:${Deno.pid}/${where}`);
  }

  /** The model id and where its weights came from. */
  get modelInfo(): { model_id: string; source: string } {
    return { model_id: this.model.config.id, source: this.model.source };
  }

  /**
   * Computes one document and writes its result and done-record; a document already done is
   * returned as it was recorded, without computing it again. `spec` may differ from the one the
   * runner was opened with in anything but {@link modelKey}.
   */
  async run(
    job: CorpusJob,
    hooks: RunHooks = {},
    spec: TaskSpec = this.spec,
  ): Promise<DocResult & { computed: boolean }> {
    const out = new OutputFolder(job.outputDir, spec.format);
    const before = await out.done(job.name);
    if (before) return { ...before, computed: false };
    const t0 = performance.now();
    const bytes = await readFileLimited(job.path, MAX_DOCUMENT_BYTES, "document");
    let last = performance.now();
    const onProgress = async (done: number, total: number) => {
      hooks.onProgress?.(done, total);
      // The forward runs synchronously chunk after chunk: let timers (a queue lock's renewal)
      // and messages through now and then, and stop here when asked to.
      if (hooks.yieldMs !== undefined && performance.now() - last >= hooks.yieldMs) {
        await macrotask();
        last = performance.now();
      }
      if (hooks.shouldStop?.()) throw new StoppedError(job.name);
    };
    const path = out.resultPath(job.name);
    const { record, scores } = spec.task === "evaluate"
      ? await this.#evaluate(job, bytes, onProgress)
      : await this.#extract(spec, job, bytes, path, onProgress);
    if (hooks.shouldStop?.()) throw new StoppedError(job.name);
    if (spec.format === "json") await writeJson(path, record);
    else await writeOutputs(path, record);
    const result: DocResult = {
      name: job.name,
      path: job.path,
      bytes: bytes.length,
      result: out.resultName(job.name),
      seconds: (performance.now() - t0) / 1000,
      worker: this.label,
      ...this.modelInfo,
      ...scores,
    };
    await out.markDone(result);
    return { ...result, computed: true };
  }

  async #evaluate(
    job: CorpusJob,
    bytes: Uint8Array,
    onProgress: (done: number, total: number) => Promise<void>,
  ): Promise<{ record: Record<string, unknown>; scores: Partial<DocResult> }> {
    const r = await modelBitsPerByte(this.model, bytes, onProgress);
    const bpb = r.scored ? r.bitsPerByte : null;
    const scores = { scored: r.scored, nats: r.nats, bits_per_byte: bpb };
    const record = {
      document: job.name,
      bytes: bytes.length,
      ...scores,
      model_id: this.model.config.id,
      source: this.model.source,
      context: this.model.chunkSize,
    };
    return { record, scores };
  }

  async #extract(
    spec: TaskSpec,
    job: CorpusJob,
    bytes: Uint8Array,
    resultPath: string,
    onProgress: (done: number, total: number) => Promise<void>,
  ): Promise<{ record: Record<string, unknown>; scores: Partial<DocResult> }> {
    if (bytes.length === 0) throw new PermanentError(`document ${job.path} is empty`);
    const s = EXTRACTIONS[spec.task as keyof typeof EXTRACTIONS];
    const args: ModelArgs & PromptArgs & ExtractionArgs & OutputArgs = {
      ...spec.model,
      device: null,
      prompt: null,
      prompt_file: job.path,
      ...spec.extraction,
      filepath_to_store_outputs: resultPath,
      output_layout: spec.output_layout,
      quiet: true,
    };
    checkExtractionWork(s, args, this.model.config, bytes.length, resultPath, "--format");
    const prompt = { bytes, text: new TextDecoder().decode(bytes), source: "prompt_file" as const };
    const fields = await s.compute(this.model, prompt, args, onProgress);
    return { record: { prompt: prompt.text, ...fields }, scores: scoresOf(fields) };
  }

  /** Frees the model. */
  close(): void {
    this.model.close();
  }
}

/** Bits per byte of an extraction that computed log-probabilities (natural logs, default layout). */
function scoresOf(fields: Record<string, unknown>): Partial<DocResult> {
  const lp = fields.log_probs as { data?: unknown } | undefined;
  if (!(lp?.data instanceof Float32Array)) return {};
  let nats = 0;
  for (const x of lp.data) nats -= x;
  const scored = lp.data.length;
  return { scored, nats, bits_per_byte: scored ? nats / Math.LN2 / scored : null };
}

function hostname(): string {
  try {
    return Deno.hostname();
  } catch {
    return basename(Deno.execPath());
  }
}
