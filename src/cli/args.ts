// deno-lint-ignore-file no-import-prefix -- see the argparse import below
/**
 * Command-line flags shared by the task scripts, over npm:argparse (the port of Python's
 * argparse, so nargs "+", choices, store_true and negative-number values behave as in the
 * original scripts). Errors never exit the process here: a bad command line throws
 * {@link UsageError}, `--help` prints and throws {@link HelpExit}; src/cli/main.ts turns both into
 * exit codes.
 *
 * @module
 */

// Versioned inline: a project importing mod.ts by URL does not see our deno.json import map.
// @ts-types="npm:@types/argparse@2.0.17"
import { ArgumentParser, ArgumentTypeError } from "npm:argparse@2.0.1";
import { NONLINEARITIES, type Nonlinearity } from "../analysis/nonlinearity.ts";
import { type Reduction, REDUCTIONS } from "../analysis/reductions.ts";
import { DEFAULTS } from "../config/defaults.ts";
import {
  DEFAULT_CONFIG_PATH,
  DEVICE_CHOICES,
  type DeviceSetting,
  parseDeviceSetting,
} from "../config/config.ts";
import { HelpExit, UsageError } from "./errors.ts";

export { HelpExit, UsageError };

/**
 * Argparse type converters; argparse reports a thrown TypeError as
 * "invalid <function name> value: '<text>'", so the names read like Python's (`int`, `float`).
 */
const TYPES: Record<string, (s: string) => number> = {
  int: (s) => {
    if (!/^[+-]?\d+$/.test(s.trim())) throw new TypeError(`not an integer: ${s}`);
    return Number(s);
  },
  float: (s) => {
    const x = Number(s);
    if (s.trim() === "" || Number.isNaN(x)) throw new TypeError(`not a number: ${s}`);
    return x;
  },
};

/** Argparse type converter of --device: auto, cpu, cuda or cuda:N. */
function device(s: string): DeviceSetting {
  const d = parseDeviceSetting(s.trim());
  if (d === null) {
    throw new ArgumentTypeError(`invalid choice: '${s}' (choose from ${DEVICE_CHOICES})`);
  }
  return d;
}

/** An argparse parser whose errors throw instead of exiting the process. */
export class Parser extends ArgumentParser {
  /** The program name shown in usage and error lines. */
  readonly prog: string;

  /** Use {@link createParser}. */
  constructor(prog: string, description: string) {
    // Each help text states its own default: several come from the config file, not from here.
    super({ prog, description });
    this.prog = prog;
  }

  /** Throws {@link UsageError} (argparse would print usage and exit 2). */
  override error(err: string | Error): never {
    const message = typeof err === "string" ? err : err.message;
    throw new UsageError(this.prog, message, this.format_usage().trim());
  }

  /** Throws {@link HelpExit} (argparse would exit the process). */
  override exit(status = 0, message?: string): never {
    if (message) console.error(message.trimEnd());
    throw new HelpExit(status);
  }
}

/**
 * Creates a parser for one script.
 *
 * @example
 * ```ts
 * import { addPromptFlags, createParser, parseArgs, type PromptArgs } from "./args.ts";
 * const p = createParser("generate.ts", "Generate bytes.");
 * addPromptFlags(p);
 * const args = parseArgs<PromptArgs>(p, ["--prompt", "Hello"]);
 * console.log(args.prompt); // "Hello"
 * ```
 */
export function createParser(prog: string, description: string): Parser {
  return new Parser(prog, description);
}

/** Parses `argv` into a plain object; throws {@link UsageError} or {@link HelpExit}. */
export function parseArgs<T>(parser: Parser, argv: string[]): T {
  return { ...parser.parse_args(argv) } as T;
}

/** Flags from {@link addModelFlags}; null means not given (the config or a default decides). */
export interface ModelArgs {
  /** YAML config of the model and runtime (null: the toolkit's configs/mambabyte_lm.yml). */
  config_path: string | null;
  /** Checkpoint (.pt, .bin, .safetensors, a Hugging Face folder or hf:// repo). */
  pretrained_model_filepath: string | null;
  /** Model name from the config, e.g. "972M". */
  model_id: string | null;
  /** Seed of random init and sampling (null: general.seed, else 4740). */
  seed: number | null;
  /** Where to run: auto, cpu, cuda or cuda:N (null: the config's). */
  device: DeviceSetting | null;
  /** Storage of the large matrices (null: the config's). */
  dtype: "fp32" | "bf16" | null;
}

/** The ids of the shipped configuration, for help texts (empty if it cannot be read). */
function shippedModelIds(): string {
  try {
    const text = Deno.readTextFileSync(DEFAULT_CONFIG_PATH);
    const ids: string[] = [];
    let inModel = false;
    for (const line of text.split("\n")) {
      if (/^\S/.test(line)) inModel = line.startsWith("model:");
      const m = inModel ? /^ {2}([^\s#:][^:]*):/.exec(line) : null;
      if (m && m[1] !== "common" && m[1] !== "default_model_id") ids.push(m[1]);
    }
    return ids.join(", ");
  } catch {
    return "";
  }
}

/** Adds --config_path, --pretrained_model_filepath, --model_id, --seed, --device, --dtype. */
export function addModelFlags(p: Parser): void {
  const g = p.add_argument_group({ title: "model" });
  g.add_argument("--config_path", {
    default: null,
    help: "YAML config with the model sizes and runtime settings (default: the toolkit's " +
      "configs/mambabyte_lm.yml, wherever you run from)",
  });
  g.add_argument("--pretrained_model_filepath", {
    default: null,
    help: "checkpoint: .pt/.bin, .safetensors, a Hugging Face folder, or hf://owner/name; it " +
      "defines the model's dimensions (default: the model id's checkpoint in the config, else " +
      "random initialisation from --seed)",
  });
  const ids = shippedModelIds();
  g.add_argument("--model_id", {
    default: null,
    help: `a model id of the config${ids ? ` (shipped: ${ids})` : ""}; with a checkpoint, ` +
      "optional and checked against it (default: model.default_model_id, else 972M)",
  });
  g.add_argument("--seed", {
    type: TYPES.int,
    default: null,
    help:
      `random seed of initialisation and sampling (default: general.seed, else ${DEFAULTS.seed})`,
  });
  g.add_argument("--device", {
    type: device,
    default: null,
    help:
      `auto, cpu, cuda or cuda:N, the N-th visible GPU (default: general.device, else ${DEFAULTS.device})`,
  });
  g.add_argument("--dtype", {
    choices: ["fp32", "bf16"],
    default: null,
    help: `storage of the large weight matrices (default: general.dtype, else ${DEFAULTS.dtype})`,
  });
}

/** Flags from {@link addPromptFlags}; see src/cli/prompt.ts to resolve them. */
export interface PromptArgs {
  /** The prompt text. */
  prompt: string | null;
  /** A file holding the prompt (read as raw bytes). */
  prompt_file: string | null;
}

/**
 * Adds --prompt and --prompt_file (mutually exclusive); with `required`, one of them must be given
 * (the extraction scripts), else both may be absent (generate.ts: unconditional generation).
 */
export function addPromptFlags(p: Parser, required = true): void {
  const g = p.add_argument_group({ title: "prompt" });
  const x = g.add_mutually_exclusive_group({ required });
  x.add_argument("--prompt", {
    default: null,
    help: required
      ? "prompt text (required unless --prompt_file)"
      : "prompt text (default: none, " +
        "unconditional generation)",
  });
  x.add_argument("--prompt_file", {
    default: null,
    help: "file whose bytes are the prompt (e.g. a PG19 sample)",
  });
}

/** Flags from {@link addExtractionFlags} (absent ones stay undefined). */
export interface ExtractionArgs {
  /** Layers to extract from; null means all. */
  layer_idxs: number[] | null;
  /** Module names inside each mixer, e.g. ["dt_proj"]. */
  module_ids: string[] | null;
  /** Nonlinearity applied to module outputs; null leaves them raw. */
  nonlinearity: Nonlinearity | null;
  /** Also store per-byte log-probabilities. */
  return_log_probs: boolean;
  /** Also store per-byte ranks. */
  return_ranks: boolean;
  /** Reduction of discrete-A; null stores it whole. */
  reduction: Reduction | null;
  /** Dimension the reduction runs over (negative counts from the end). */
  reduction_dim: number | null;
}

/** Which extraction flags a script takes; all by default. */
export interface ExtractionFlagOptions {
  /** --module_id / --module_ids. */
  modules?: boolean;
  /** --nonlinearity. */
  nonlinearity?: boolean;
  /** --reduction, --reduction_dim. */
  reduction?: boolean;
}

/**
 * Adds --layer_idxs, --return_log_probs, --return_ranks and, per `opts`, --module_id(s),
 * --nonlinearity, --reduction, --reduction_dim.
 */
export function addExtractionFlags(p: Parser, opts: ExtractionFlagOptions = {}): void {
  const g = p.add_argument_group({ title: "extraction" });
  g.add_argument("--layer_idxs", {
    type: TYPES.int,
    nargs: "+",
    default: null,
    help: "layer indices to extract from, 0-based (default: all layers)",
  });
  if (opts.modules ?? true) {
    g.add_argument("--module_id", "--module_ids", {
      dest: "module_ids",
      nargs: "+",
      default: null,
      help: "mixer modules whose outputs to extract: norm, in_proj, conv1d, x_proj, dt_proj, " +
        "out_proj, mixer (a mixer. prefix is accepted)",
    });
  }
  if (opts.nonlinearity ?? true) {
    g.add_argument("--nonlinearity", {
      choices: [...NONLINEARITIES],
      default: null,
      help: "nonlinearity applied to the extracted outputs (default: none)",
    });
  }
  g.add_argument("--return_log_probs", {
    action: "store_true",
    help: "also store per-byte log-probabilities",
  });
  g.add_argument("--return_ranks", { action: "store_true", help: "also store per-byte ranks" });
  if (opts.reduction ?? true) {
    g.add_argument("--reduction", {
      choices: [...REDUCTIONS],
      default: null,
      help: "reduce discrete-A instead of storing it whole: mean/min/max/norm over " +
        "--reduction_dim, fro/nuc one matrix norm per position (default: none)",
    });
    g.add_argument("--reduction_dim", {
      type: TYPES.int,
      default: null,
      help: "dimension of (L, d_inner, d_state) to reduce over, -3..2 (default: all elements; " +
        "fro and nuc always reduce the last two)",
    });
  }
}

/** Flags from {@link addGenerationFlags}; null means not given (the config or a default decides). */
export interface GenerationArgs {
  /** Bytes to generate per sample. */
  max_new_tokens: number | null;
  /** Number of samples. */
  num_samples: number | null;
  /** Softmax temperature (0: greedy, with top_k 1). */
  temperature: number | null;
  /** Keep the k most likely bytes (0: off; 1: greedy). */
  top_k: number | null;
  /** Nucleus sampling mass (0: off). */
  top_p: number | null;
  /** Stop sequences as given (escapes decoded by resolveStops); [] when none. */
  stop: string[];
}

/** Adds --max_new_tokens, --num_samples, --temperature, --top_k, --top_p, --stop. */
export function addGenerationFlags(p: Parser): void {
  const g = p.add_argument_group({
    title: "generation",
    description: "defaults come from the config's generation section, else the values shown",
  });
  g.add_argument("--max_new_tokens", {
    type: TYPES.int,
    default: null,
    help: `bytes to generate per sample (default: ${DEFAULTS.max_new_tokens})`,
  });
  g.add_argument("--num_samples", {
    type: TYPES.int,
    default: null,
    help: `samples to draw, decoded as one batch (default: ${DEFAULTS.num_samples})`,
  });
  g.add_argument("--temperature", {
    type: TYPES.float,
    default: null,
    help: `sampling temperature; 0 needs --top_k 1 (default: ${DEFAULTS.temperature})`,
  });
  g.add_argument("--top_k", {
    type: TYPES.int,
    default: null,
    help: `keep the k most likely bytes, 0..256; 0: off, 1: greedy (default: ${DEFAULTS.top_k})`,
  });
  g.add_argument("--top_p", {
    type: TYPES.float,
    default: null,
    help: `keep the smallest set of bytes whose probability reaches p, 0..1; 0 or 1: off ` +
      `(default: ${DEFAULTS.top_p})`,
  });
  g.add_argument("--stop", {
    action: "append",
    // argparse's append copies its default (a null one fails there).
    default: [],
    metavar: "TEXT",
    help: "end a sample right after it generates TEXT (kept in its output); repeat for several; " +
      "escapes \\n \\t \\r \\\\ \\xHH (default: none: every sample runs to --max_new_tokens)",
  });
}

/** Flags from {@link addDraftFlags}; null means not given. */
export interface DraftArgs {
  /** The drafter's checkpoint (speculative decoding). */
  draft_pretrained_model_filepath: string | null;
  /** The drafter's model id in the config. */
  draft_model_id: string | null;
  /** A subword drafter's tokenizer.json. */
  draft_tokenizer: string | null;
  /** Bytes drafted per verification pass. */
  draft_length: number | null;
  /** Statistics on stderr. */
  verbose: boolean;
}

/**
 * Adds the speculative decoding flags: --draft_pretrained_model_filepath, --draft_model_id,
 * --draft_tokenizer, --draft_length, and --verbose.
 */
export function addDraftFlags(p: Parser): void {
  const g = p.add_argument_group({
    title: "speculative decoding",
    description: "a drafter proposes bytes, this model verifies them in one pass: the output is " +
      "exactly that of plain decoding with the same seed",
  });
  g.add_argument("--draft_pretrained_model_filepath", {
    default: null,
    help: "the drafter's checkpoint: a smaller MambaByte model, or a subword Mamba model " +
      "(Hugging Face folder with config.json, weights and tokenizer.json) (default: no drafter)",
  });
  g.add_argument("--draft_model_id", {
    default: null,
    help: "the drafter's model id in the config (e.g. tiny); with a checkpoint, optional and " +
      "checked against it",
  });
  g.add_argument("--draft_tokenizer", {
    default: null,
    help: "a subword drafter's tokenizer.json (default: the one in the drafter's folder, else " +
      "the drafter is byte-level)",
  });
  g.add_argument("--draft_length", {
    type: TYPES.int,
    default: null,
    help: `bytes drafted per verification pass, 1..64 (default: ${DEFAULTS.draft_length})`,
  });
  g.add_argument("--verbose", {
    action: "store_true",
    help: "print decoding statistics on stderr (bytes/s; with a drafter the acceptance rate " +
      "and mean accepted length)",
  });
}

/** How a stored record is laid out. */
export type OutputLayout = "default" | "original";

/** Flags from {@link addOutputFlags}. */
export interface OutputArgs {
  /** Where to store results (.pkl, .pickle, .msgpack, .safetensors). */
  filepath_to_store_outputs: string | null;
  /** The record's layout (extraction scripts only; generate.ts has no such flag). */
  output_layout?: OutputLayout;
  /** No progress display. */
  quiet: boolean;
}

/** Adds --filepath_to_store_outputs, --quiet and, with `layouts`, --output_layout. */
export function addOutputFlags(p: Parser, layouts = false): void {
  const g = p.add_argument_group({ title: "output" });
  g.add_argument("--filepath_to_store_outputs", {
    default: null,
    help: "output file: .pkl/.pickle, .msgpack or .safetensors (default: nothing stored)",
  });
  if (layouts) {
    g.add_argument("--output_layout", {
      choices: ["default", "original"],
      default: "default",
      help: "default: numpy arrays, natural-log log_probs; original: exactly what the original " +
        "scripts pickle (torch tensors, probabilities under log_probs, None for what was not " +
        "asked), .pkl/.pickle only (default: default)",
    });
  }
  g.add_argument("--quiet", { action: "store_true", help: "no progress display on stderr" });
}
