/**
 * Flag values checked and merged with the config, in one place per argument: a flag given on the
 * command line wins, then the config file, then the built-in default (src/config/defaults.ts).
 * Every check runs before a model is loaded, and a bad value is a usage error (exit 2).
 *
 * @module
 */

import { MambaByteError } from "../errors.ts";
import { decodeStopArgument, validateStops } from "../generate/stop.ts";
import type { Reduction } from "../analysis/reductions.ts";
import {
  type GenerationSection,
  type MambaByteConfig,
  temperatureError,
  topPError,
} from "../config/config.ts";
import { checkBounded, DEFAULTS } from "../config/defaults.ts";
import type { DraftArgs, GenerationArgs } from "./args.ts";
import { UsageError, UserError } from "./errors.ts";

/** Sampling settings after flags, config and defaults are merged. */
export interface GenerationSettings {
  maxNewTokens: number;
  numSamples: number;
  temperature: number;
  topK: number;
  topP: number;
}

/** Throws the usage error of one flag. */
export function flagError(prog: string, flag: string, message: string): never {
  throw new UsageError(prog, `argument --${flag}: ${message}`);
}

/** Checks the generation flags that were given, then merges them with the config's section. */
export function resolveGeneration(
  prog: string,
  args: GenerationArgs,
  section: GenerationSection,
): GenerationSettings {
  for (const k of ["max_new_tokens", "num_samples", "top_k"] as const) {
    if (args[k] === null) continue;
    const bad = checkBounded(k, args[k], "value");
    if (bad) flagError(prog, k, bad.replace(/^value /, ""));
  }
  if (args.temperature !== null) {
    const bad = temperatureError(args.temperature);
    if (bad) flagError(prog, "temperature", bad);
  }
  if (args.top_p !== null) {
    const bad = topPError(args.top_p);
    if (bad) flagError(prog, "top_p", bad);
  }
  const s: GenerationSettings = {
    maxNewTokens: args.max_new_tokens ?? section.max_new_tokens ?? DEFAULTS.max_new_tokens,
    numSamples: args.num_samples ?? section.num_samples ?? DEFAULTS.num_samples,
    temperature: args.temperature ?? section.temperature ?? DEFAULTS.temperature,
    topK: args.top_k ?? section.top_k ?? DEFAULTS.top_k,
    topP: args.top_p ?? section.top_p ?? DEFAULTS.top_p,
  };
  if (s.temperature === 0 && s.topK !== 1) {
    flagError(
      prog,
      "temperature",
      `0 means greedy decoding and needs --top_k 1 (top_k is ${s.topK}); or give a temperature > 0`,
    );
  }
  return s;
}

/** The stop sequences of --stop (escapes decoded, bounds checked), or none. */
export function resolveStops(prog: string, stop: readonly string[] | null): Uint8Array[] {
  try {
    return validateStops((stop ?? []).map(decodeStopArgument));
  } catch (e) {
    if (e instanceof MambaByteError) flagError(prog, "stop", e.message);
    throw e;
  }
}

/** The seed: --seed, else general.seed, else the default. */
export function resolveSeed(prog: string, seed: number | null, cfg: MambaByteConfig): number {
  if (seed !== null && !Number.isSafeInteger(seed)) {
    flagError(prog, "seed", `${seed} is not an integer JavaScript can hold exactly`);
  }
  return seed ?? cfg.general.seed ?? DEFAULTS.seed;
}

/** Dimensions of discrete-A, (L, d_inner, d_state), that --reduction_dim may name. */
const DISCRETE_A_RANK = 3;

/** Checks --reduction_dim against discrete-A's rank (any reduction; fro and nuc ignore it). */
export function checkReductionDim(
  prog: string,
  reduction: Reduction | null,
  dim: number | null,
): void {
  if (dim === null) return;
  if (!(dim >= -DISCRETE_A_RANK && dim < DISCRETE_A_RANK)) {
    flagError(
      prog,
      "reduction_dim",
      `${dim} is not a dimension of discrete_A (L, d_inner, d_state): use -3..2` +
        (reduction === "fro" || reduction === "nuc" ? ` (${reduction} reduces the last two)` : ""),
    );
  }
}

/** The speculative decoding settings; absent when no drafter is asked for. */
export interface DraftSettings {
  checkpoint: string | null;
  modelId: string | null;
  tokenizer: string | null;
  length: number;
}

/**
 * Checks the drafter flags before anything is loaded: a drafter needs a checkpoint or a model id
 * of the config, draft_length is bounded, a tokenizer file must exist, and speculative decoding
 * draws one sample. Returns undefined when no drafter is asked for (then the other draft flags
 * must be absent).
 */
export async function resolveDraft(
  prog: string,
  args: DraftArgs,
  cfg: MambaByteConfig,
  gen: GenerationSettings,
): Promise<DraftSettings | undefined> {
  if (args.draft_length !== null) {
    const bad = checkBounded("draft_length", args.draft_length, "value");
    if (bad) flagError(prog, "draft_length", bad.replace(/^value /, ""));
  }
  if (args.draft_model_id !== null && !cfg.modelIds.includes(args.draft_model_id)) {
    flagError(
      prog,
      "draft_model_id",
      `invalid choice: '${args.draft_model_id}' (${cfg.path} defines ${
        cfg.modelIds.map((m) => `'${m}'`).join(", ")
      })`,
    );
  }
  const wanted = args.draft_pretrained_model_filepath !== null || args.draft_model_id !== null;
  if (!wanted) {
    for (const k of ["draft_tokenizer", "draft_length"] as const) {
      if (args[k] !== null) {
        flagError(
          prog,
          k,
          "needs a drafter: --draft_pretrained_model_filepath or --draft_model_id",
        );
      }
    }
    return undefined;
  }
  if (args.draft_model_id !== null && args.draft_pretrained_model_filepath === null) {
    if (!cfg.model(args.draft_model_id).checkpoint) {
      flagError(
        prog,
        "draft_model_id",
        `model '${args.draft_model_id}' has no checkpoint in ${cfg.path}: a drafter needs trained ` +
          "weights (give --draft_pretrained_model_filepath)",
      );
    }
  }
  if (gen.numSamples !== 1) {
    flagError(prog, "num_samples", `speculative decoding draws one sample (got ${gen.numSamples})`);
  }
  if (args.draft_tokenizer !== null) {
    const info = await Deno.stat(args.draft_tokenizer).catch(() => null);
    if (!info) throw new UserError(`tokenizer not found: ${args.draft_tokenizer}`);
  }
  return {
    checkpoint: args.draft_pretrained_model_filepath,
    modelId: args.draft_model_id,
    tokenizer: args.draft_tokenizer,
    length: args.draft_length ?? DEFAULTS.draft_length,
  };
}
