/**
 * What every task script does around its job: open the model its flags name (with progress),
 * check the output path before any work, store a result record, and print a short summary.
 *
 * @module
 */

import { dirname } from "node:path";
import { ensureFits } from "../analysis/extract.ts";
import { loadModel } from "../api.ts";
import type { MambaByteLM } from "../model/model.ts";
import {
  DEFAULT_CONFIG_PATH,
  loadConfig,
  type MambaByteConfig,
  type ModelConfig,
} from "../config/config.ts";
import type { ModelDims } from "../config/dims.ts";
import { type HostTensor, isHostTensor } from "../io/tensor.ts";
import { TorchMinMax, TorchTensor } from "../io/value.ts";
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
  type OutputLayout,
  parseArgs,
  type PromptArgs,
} from "./args.ts";
import { UsageError, UserError } from "./errors.ts";
import { checkReductionDim, resolveSeed } from "./settings.ts";
import { approxSize } from "../model/memory.ts";
import { layerIndices } from "../model/model.ts";

/** msgpack's bin 32 holds at most 2^32 - 1 bytes per value. */
const MSGPACK_MAX_BIN = 2 ** 32;
import { progress } from "./progress.ts";
import { type ResolvedPrompt, resolvePrompt } from "./prompt.ts";

/** Loads the configuration the flags name (the toolkit's own file by default). */
export async function openConfig(prog: string, args: ModelArgs): Promise<MambaByteConfig> {
  const cfg = await loadConfig(args.config_path ?? DEFAULT_CONFIG_PATH);
  if (args.model_id !== null && !cfg.modelIds.includes(args.model_id)) {
    throw new UsageError(
      prog,
      `argument --model_id: invalid choice: '${args.model_id}' (${cfg.path} defines ${
        cfg.modelIds.map((m) => `'${m}'`).join(", ")
      })`,
    );
  }
  return cfg;
}

/**
 * Loads the model named by the common model flags; the config supplies what they leave out.
 * `beforeAllocate` sees the resolved model before any memory is taken (checks of the work).
 */
export async function openModel(
  args: ModelArgs,
  cfg: MambaByteConfig,
  quiet: boolean,
  beforeAllocate?: (config: ModelConfig) => void,
): Promise<MambaByteLM> {
  const seed = args.seed ?? cfg.general.seed;
  const checkpoint = args.pretrained_model_filepath ??
    (args.model_id === null ? cfg.model() : cfg.model(args.model_id)).checkpoint;
  const label = checkpoint ? `loading ${checkpoint}` : `initialising random weights (seed ${seed})`;
  const bar = progressCallback(label, quiet);
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
      configPath: cfg.path,
      modelId: args.model_id ?? undefined,
      checkpoint: args.pretrained_model_filepath ?? undefined,
      device: args.device ?? undefined,
      dtype: args.dtype ?? undefined,
      seed,
      onProgress,
      onDownload,
      beforeAllocate,
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
export async function checkOutputPath(
  prog: string,
  path: string | null,
  layout: OutputLayout = "default",
): Promise<void> {
  if (path === null) return;
  const flag = "argument --filepath_to_store_outputs";
  const base = path.slice(path.lastIndexOf("/") + 1);
  const ext = base.includes(".") ? base.slice(base.lastIndexOf(".")).toLowerCase() : "";
  if (!OUTPUT_EXTENSIONS.includes(ext)) {
    throw new UsageError(
      prog,
      `${flag}: unsupported extension '${ext || base}' (use ${OUTPUT_EXTENSIONS.join(", ")})`,
    );
  }
  if (base.length === ext.length) {
    throw new UsageError(prog, `${flag}: '${base}' has an extension but no name`);
  }
  // The temporary name adds ~24 bytes; most filesystems allow 255 per name.
  if (new TextEncoder().encode(base).length > 200) {
    throw new UsageError(prog, `${flag}: the file name is longer than 200 bytes`);
  }
  if (layout === "original" && ext !== ".pkl" && ext !== ".pickle") {
    throw new UsageError(
      prog,
      `argument --output_layout: original is the original's pickle: use a .pkl or .pickle file`,
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
    if (v instanceof TorchTensor) return `torch.${describe(v.tensor)}`;
    if (v instanceof TorchMinMax) return `torch.return_types.${v.kind}(${describe(v.values)}, ...)`;
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
   * Bytes of each result tensor for a model of `dims`, `positions` bytes and these layers, so
   * memory and format limits are checked before the model's weights are even read.
   */
  resultBytes: (
    dims: ModelDims,
    positions: number,
    layers: number[],
    args: ExtractionArgs & OutputArgs,
  ) => number[];
  /**
   * Computes the record's fields after `prompt` (result key, log_probs, ranks, then metadata),
   * in the order they should be stored.
   */
  compute: (
    model: MambaByteLM,
    prompt: ResolvedPrompt,
    args: ModelArgs & PromptArgs & ExtractionArgs & OutputArgs,
    onProgress: (done: number, total: number) => void,
  ) => Promise<Record<string, unknown>>;
}

/**
 * Refuses, before any computation, an extraction of `positions` bytes whose results cannot be
 * stored (one msgpack value over 4 GiB, when `out` is a .msgpack file; `flag` names the output in
 * the message) or cannot fit in memory.
 */
export function checkExtractionWork(
  s: ExtractionScript,
  args: ExtractionArgs & OutputArgs,
  mc: ModelConfig,
  positions: number,
  out: string | null,
  flag: string,
): void {
  const layers = layerIndices(mc.dims.nLayer, args.layer_idxs ?? undefined);
  const sizes = s.resultBytes(mc.dims, positions, layers, args);
  const largest = Math.max(0, ...sizes);
  if (out?.toLowerCase().endsWith(".msgpack") && largest >= MSGPACK_MAX_BIN) {
    throw new UsageError(
      s.prog,
      `argument ${flag}: one result tensor would be ${
        approxSize(largest)
      }, beyond msgpack's 4 GiB limit per value: use .pkl or .safetensors`,
    );
  }
  ensureFits(sizes.reduce((a, b) => a + b, 0), "the requested outputs");
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
  addOutputFlags(p, true);
  const args = parseArgs<ModelArgs & PromptArgs & ExtractionArgs & OutputArgs>(p, argv);
  s.validate?.(args);
  if (s.flags.reduction !== false) checkReductionDim(s.prog, args.reduction, args.reduction_dim);
  const out = args.filepath_to_store_outputs;
  await checkOutputPath(s.prog, out, args.output_layout);
  const cfg = await openConfig(s.prog, args);
  resolveSeed(s.prog, args.seed, cfg);
  const prompt = await resolvePrompt(args);
  if (prompt.bytes.length === 0) {
    throw new UsageError(s.prog, "argument --prompt: the prompt is empty: give at least one byte");
  }
  const checkWork = (mc: ModelConfig) =>
    checkExtractionWork(s, args, mc, prompt.bytes.length, out, "--filepath_to_store_outputs");
  const model = await openModel(args, cfg, args.quiet, checkWork);
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
