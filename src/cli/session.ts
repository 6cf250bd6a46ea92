/**
 * What every task script does around its job: open the model its flags name (with progress),
 * check the output path before any work, store a result record, and print a short summary.
 *
 * @module
 */

import { dirname } from "node:path";
import { loadModel, type Model } from "../api.ts";
import { loadConfig } from "../config/config.ts";
import { type HostTensor, isHostTensor } from "../io/tensor.ts";
import { OUTPUT_EXTENSIONS, writeOutputs } from "../io/write.ts";
import {
  addExtractionFlags,
  addModelFlags,
  addOutputFlags,
  addPromptFlags,
  createParser,
  type ExtractionArgs,
  type ExtractionFlagOptions,
  type ModelArgs,
  type OutputArgs,
  parseArgs,
  type PromptArgs,
} from "./args.ts";
import { UsageError, UserError } from "./errors.ts";
import { progress } from "./progress.ts";
import { type ResolvedPrompt, resolvePrompt } from "./prompt.ts";

/** Loads the model named by the common model flags; the config supplies what they leave out. */
export async function openModel(prog: string, args: ModelArgs, quiet: boolean): Promise<Model> {
  const cfg = await loadConfig(args.config_path);
  if (args.model_id !== null && !cfg.modelIds.includes(args.model_id)) {
    throw new UsageError(
      prog,
      `argument --model_id: invalid choice: '${args.model_id}' (choose from ${
        cfg.modelIds.map((m) => `'${m}'`).join(", ")
      })`,
      "",
    );
  }
  const bar = progressCallback("loading weights", quiet);
  // An hf:// checkpoint's download: one bar per file.
  let fileBar: ReturnType<typeof progressCallback> | undefined;
  let barFile = "";
  const onDownload = (done: number, total: number, file: string) => {
    if (file !== barFile) {
      fileBar?.done();
      fileBar = progressCallback(`downloading ${file}`, quiet);
      barFile = file;
    }
    fileBar!.update(done, total);
  };
  // Downloads are over once the upload reports; end their bar before that one draws.
  const onProgress = (done: number, total: number) => {
    fileBar?.done();
    fileBar = undefined;
    bar.update(done, total);
  };
  try {
    return await loadModel({
      configPath: args.config_path,
      modelId: args.model_id ?? undefined,
      checkpoint: args.pretrained_model_filepath ?? undefined,
      device: args.device ?? undefined,
      dtype: args.dtype ?? undefined,
      seed: args.seed,
      onProgress,
      onDownload,
    });
  } finally {
    fileBar?.done();
    bar.done();
  }
}

/** A (done, total) callback drawing a progress bar on a terminal stderr; `done()` ends it. */
export function progressCallback(
  label: string,
  quiet: boolean,
): { update: (done: number, total: number) => void; done: () => void } {
  let bar: ReturnType<typeof progress> | undefined;
  let seen = 0;
  return {
    update: (done, total) => {
      bar ??= progress(label, total, { quiet });
      bar.tick(done - seen);
      seen = done;
    },
    done: () => bar?.done(),
  };
}

/**
 * Checks an output path before any computation: a known extension (else a usage error) and a
 * folder that exists or can be made and written to (else a runtime error).
 */
export async function checkOutputPath(prog: string, path: string | null): Promise<void> {
  if (path === null) return;
  const base = path.slice(path.lastIndexOf("/") + 1);
  const ext = base.includes(".") ? base.slice(base.lastIndexOf(".")).toLowerCase() : "";
  if (!OUTPUT_EXTENSIONS.includes(ext)) {
    throw new UsageError(
      prog,
      `argument --filepath_to_store_outputs: unsupported extension '${ext || base}' (use ${
        OUTPUT_EXTENSIONS.join(", ")
      })`,
      "",
    );
  }
  // Probe the nearest existing folder without creating anything: a rejected run leaves no trace.
  let dir = dirname(path);
  for (;;) {
    const info = await Deno.stat(dir).catch(() => null);
    if (info) {
      if (!info.isDirectory) {
        throw new UserError(`cannot write outputs to ${path}: ${dir} is not a folder`);
      }
      break;
    }
    const up = dirname(dir);
    if (up === dir) break;
    dir = up;
  }
  try {
    const probe = await Deno.makeTempFile({ dir, prefix: ".mambabyte-probe-" });
    await Deno.remove(probe);
  } catch (e) {
    throw new UserError(`cannot write outputs to ${path}: ${(e as Error).message}`);
  }
}

/** Stores the record (format by extension) and says where on stderr unless quiet. */
export async function storeOutputs(
  path: string,
  record: Record<string, unknown>,
  quiet: boolean,
): Promise<void> {
  await writeOutputs(path, record);
  if (!quiet) console.error(`stored outputs in ${path}`);
}

/** One line per field: tensors by dtype and shape, per-layer maps by layer. */
export function summarize(record: Record<string, unknown>): string[] {
  const lines: string[] = [];
  const describe = (v: unknown): string => {
    if (isHostTensor(v)) return `${v.dtype}[${v.shape.join(", ")}]`;
    if (typeof v === "string") return JSON.stringify(v.length > 60 ? `${v.slice(0, 57)}...` : v);
    return JSON.stringify(v);
  };
  for (const [k, v] of Object.entries(record)) {
    if (v instanceof Map) {
      for (const [layer, t] of v) lines.push(`${k}[${layer}]: ${describe(t)}`);
    } else {
      lines.push(`${k}: ${describe(v)}`);
    }
  }
  return lines;
}

/** What an extraction script supplies to {@link runExtractionScript}. */
export interface ExtractionScript {
  /** Script name for messages, e.g. "extract_discrete_A.ts". */
  prog: string;
  /** One-line description for --help. */
  description: string;
  /** Which extraction flags the script takes. */
  flags: ExtractionFlagOptions;
  /** Progress label. */
  label: string;
  /** Checks the flags before anything is loaded (throw a UsageError for a bad combination). */
  validate?: (args: ModelArgs & PromptArgs & ExtractionArgs & OutputArgs) => void;
  /**
   * Computes the record's fields after `prompt` (result key, log_probs, ranks, then metadata),
   * in the order they should be stored.
   */
  compute: (
    model: Model,
    prompt: ResolvedPrompt,
    args: ModelArgs & PromptArgs & ExtractionArgs & OutputArgs,
    onProgress: (done: number, total: number) => void,
  ) => Promise<Record<string, unknown>>;
}

/**
 * The whole life of an extraction script: flags, output-path check, prompt, model, computation
 * with progress, then the record stored (or summarised on stdout when no output path is given).
 */
export async function runExtractionScript(s: ExtractionScript, argv: string[]): Promise<void> {
  const p = createParser(s.prog, s.description);
  addModelFlags(p);
  addPromptFlags(p);
  addExtractionFlags(p, s.flags);
  addOutputFlags(p);
  const args = parseArgs<ModelArgs & PromptArgs & ExtractionArgs & OutputArgs>(p, argv);
  s.validate?.(args);
  await checkOutputPath(s.prog, args.filepath_to_store_outputs);
  const prompt = await resolvePrompt(args);
  const model = await openModel(s.prog, args, args.quiet);
  try {
    const bar = progressCallback(s.label, args.quiet);
    const fields = await s.compute(model, prompt, args, bar.update);
    bar.done();
    const record = { prompt: prompt.text, ...fields };
    if (args.filepath_to_store_outputs) {
      await storeOutputs(args.filepath_to_store_outputs, record, args.quiet);
    } else {
      console.log(summarize(record).join("\n"));
    }
  } finally {
    model.close();
  }
}

/** The optional per-byte scores of an extraction, under the original's keys. */
export function scoreFields(
  r: { logProbs?: HostTensor; ranks?: HostTensor },
): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  if (r.logProbs) out.log_probs = r.logProbs;
  if (r.ranks) out.ranks = r.ranks;
  return out;
}
