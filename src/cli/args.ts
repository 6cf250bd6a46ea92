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
import { ArgumentDefaultsHelpFormatter, ArgumentParser } from "npm:argparse@2.0.1";
import { NONLINEARITIES, type Nonlinearity } from "../analysis/nonlinearity.ts";
import { type Reduction, REDUCTIONS } from "../analysis/reductions.ts";
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
  positive_int: (s) => {
    const x = TYPES.int(s);
    if (x < 1) throw new TypeError(`not positive: ${s}`);
    return x;
  },
  nonnegative_int: (s) => {
    const x = TYPES.int(s);
    if (x < 0) throw new TypeError(`negative: ${s}`);
    return x;
  },
  nonnegative_float: (s) => {
    const x = TYPES.float(s);
    if (!(x >= 0) || !Number.isFinite(x)) throw new TypeError(`negative: ${s}`);
    return x;
  },
  probability: (s) => {
    const x = TYPES.float(s);
    if (!(x > 0 && x <= 1)) throw new TypeError(`not in (0, 1]: ${s}`);
    return x;
  },
};

/** An argparse parser whose errors throw instead of exiting the process. */
export class Parser extends ArgumentParser {
  /** The program name shown in usage and error lines. */
  readonly prog: string;

  /** Use {@link createParser}. */
  constructor(prog: string, description: string) {
    super({ prog, description, formatter_class: ArgumentDefaultsHelpFormatter });
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
 * Creates a parser for one script; `--help` shows each flag's default.
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

/** Flags from {@link addModelFlags}. */
export interface ModelArgs {
  /** YAML config of the model and runtime. */
  config_path: string;
  /** Checkpoint (.pt, .bin, .safetensors or a Hugging Face folder); random init when null. */
  pretrained_model_filepath: string | null;
  /** Model name from the config, e.g. "972M". */
  model_id: string | null;
  /** Seed of random init and sampling. */
  seed: number;
  /** Where to run (null: the config's). */
  device: "auto" | "cpu" | "cuda" | null;
  /** Storage of the large matrices (null: the config's). */
  dtype: "fp32" | "bf16" | null;
}

/** Adds --config_path, --pretrained_model_filepath, --model_id, --seed, --device, --dtype. */
export function addModelFlags(p: Parser): void {
  const g = p.add_argument_group({ title: "model" });
  g.add_argument("--config_path", {
    default: "configs/mambabyte_lm.yml",
    help: "YAML config with the model sizes and runtime settings",
  });
  g.add_argument("--pretrained_model_filepath", {
    default: null,
    help: "checkpoint (.pt, .bin, .safetensors or a Hugging Face folder); random init if absent",
  });
  g.add_argument("--model_id", { default: null, help: "model id in the config, e.g. 972M" });
  g.add_argument("--seed", { type: TYPES.int, default: 4740, help: "random seed" });
  g.add_argument("--device", {
    choices: ["auto", "cpu", "cuda"],
    default: null,
    help: "device (default: the config's general.device)",
  });
  g.add_argument("--dtype", {
    choices: ["fp32", "bf16"],
    default: null,
    help: "storage of the large weight matrices (default: the config's general.dtype)",
  });
}

/** Flags from {@link addPromptFlags}; see src/cli/prompt.ts to resolve them. */
export interface PromptArgs {
  /** The prompt text. */
  prompt: string | null;
  /** A file holding the prompt (read as raw bytes). */
  prompt_file: string | null;
}

/** Adds --prompt and --prompt_file (mutually exclusive). */
export function addPromptFlags(p: Parser): void {
  const g = p.add_argument_group({ title: "prompt" });
  const x = g.add_mutually_exclusive_group({ required: false });
  x.add_argument("--prompt", { default: null, help: "prompt text" });
  x.add_argument("--prompt_file", { default: null, help: "file whose bytes are the prompt" });
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
    help: "layer indices to extract from (default: all layers)",
  });
  if (opts.modules ?? true) {
    g.add_argument("--module_id", "--module_ids", {
      dest: "module_ids",
      nargs: "+",
      default: null,
      help: "mixer modules whose outputs to extract, e.g. dt_proj",
    });
  }
  if (opts.nonlinearity ?? true) {
    g.add_argument("--nonlinearity", {
      choices: [...NONLINEARITIES],
      default: null,
      help: "nonlinearity applied to the extracted outputs",
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
      help: "reduce discrete-A per position instead of storing it whole",
    });
    g.add_argument("--reduction_dim", {
      type: TYPES.int,
      default: null,
      help: "dimension to reduce over (negative counts from the end)",
    });
  }
}

/** Flags from {@link addGenerationFlags}. */
export interface GenerationArgs {
  /** Bytes to generate per sample. */
  max_new_tokens: number;
  /** Number of samples. */
  num_samples: number;
  /** Softmax temperature. */
  temperature: number;
  /** Keep the k most likely bytes (0 disables). */
  top_k: number;
  /** Nucleus sampling mass. */
  top_p: number;
}

/** Adds --max_new_tokens, --num_samples, --temperature, --top_k, --top_p. */
export function addGenerationFlags(p: Parser): void {
  const g = p.add_argument_group({ title: "generation" });
  g.add_argument("--max_new_tokens", {
    type: TYPES.nonnegative_int,
    default: 100,
    help: "bytes to generate",
  });
  g.add_argument("--num_samples", {
    type: TYPES.positive_int,
    default: 1,
    help: "samples to draw",
  });
  g.add_argument("--temperature", {
    type: TYPES.nonnegative_float,
    default: 1.0,
    help: "sampling temperature",
  });
  g.add_argument("--top_k", {
    type: TYPES.nonnegative_int,
    default: 256,
    help: "keep the k most likely bytes (0: all)",
  });
  g.add_argument("--top_p", { type: TYPES.probability, default: 0.98, help: "nucleus mass" });
}

/** Flags from {@link addOutputFlags}. */
export interface OutputArgs {
  /** Where to store results (.pkl, .pickle, .msgpack, .safetensors). */
  filepath_to_store_outputs: string | null;
  /** No progress display. */
  quiet: boolean;
}

/** Adds --filepath_to_store_outputs and --quiet. */
export function addOutputFlags(p: Parser): void {
  const g = p.add_argument_group({ title: "output" });
  g.add_argument("--filepath_to_store_outputs", {
    default: null,
    help: "output file: .pkl/.pickle, .msgpack or .safetensors",
  });
  g.add_argument("--quiet", { action: "store_true", help: "no progress display on stderr" });
}
