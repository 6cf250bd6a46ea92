/**
 * Flag values checked and merged with the config, in one place per argument: a flag given on the
 * command line wins, then the config file, then the built-in default (src/config/defaults.ts).
 * Every check runs before a model is loaded, and a bad value is a usage error (exit 2).
 *
 * @module
 */

import type { Reduction } from "../analysis/reductions.ts";
import {
  type GenerationSection,
  type MambaByteConfig,
  temperatureError,
  topPError,
} from "../config/config.ts";
import { checkBounded, DEFAULTS } from "../config/defaults.ts";
import type { GenerationArgs } from "./args.ts";
import { UsageError } from "./errors.ts";

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
