/**
 * Fuzz generator of command lines for the three extraction scripts, generate.ts and evaluate.ts:
 * a valid command line of the original's flags (on the fuzz model of a small config in the case
 * folder), then a few mutations: flags dropped, repeated, left without a value or given another
 * script's, unknown flags, stray words, and values that are odd (negative, huge, non-numeric,
 * empty, control characters, paths that are folders, missing, FIFOs or too large). `@DIR@` in an
 * argument stands for the case folder (targets.ts puts it in).
 *
 * @module
 */

import { enc, type FuzzCase, nastyString } from "./case.ts";
import type { Rng } from "./rng.ts";

/** The scripts an argv case runs (see targets.ts for their definitions). */
export const ARGV_SCRIPTS = [
  "discrete_A",
  "module_outputs",
  "input_sim",
  "generate",
  "evaluate",
] as const;
/** One of {@link ARGV_SCRIPTS}. */
export type ArgvScript = (typeof ARGV_SCRIPTS)[number];
/** The scripts an argv case runs only as a process (they write to the process's stdout). */
export const RUN_AS_SCRIPT: ReadonlySet<string> = new Set(["generate", "evaluate"]);

/** The config every argv case runs with: one small model, on the CPU. */
export const FUZZ_CLI_CONFIG = `general: {device: cpu, dtype: fp32, seed: 1, threads: 1}
model:
  default_model_id: fuzz
  common: {vocab_size: 256, d_state: 4, d_conv: 4, expand: 2, chunk_size: 64}
  fuzz: {d_model: 8, n_layer: 2}
`;

const MODULES = ["dt_proj", "mixer.dt_proj", "conv1d", "norm", "in_proj", "x_proj", "out_proj"];
const NONLINEARITIES = ["linear", "relu", "lrelu", "elu", "gelu", "silu", "tanh", "softplus"];
const REDUCTIONS = ["mean", "min", "max", "norm", "fro", "nuc"];
const OUTPUT_EXTS = [".pkl", ".pickle", ".npz", ".json", ".msgpack", ".safetensors"];

/** Odd values of every kind, for any flag. */
function oddValue(rng: Rng): string {
  return rng.pick([
    "",
    "-1",
    "0",
    "2",
    "-0",
    "1.5",
    "1e3",
    "0x10",
    "NaN",
    "Infinity",
    "99999999999999999999",
    "9007199254740993",
    " 1",
    "--prompt",
    "@DIR@",
    "@DIR@/missing.pkl",
    "@DIR@/prompt.txt",
    "@DIR@/fifo",
    nastyString(rng),
  ]);
}

/** A value for `flag`: mostly valid, sometimes one of its own odd ones. */
function valueFor(rng: Rng, flag: string): string[] {
  const valid = rng.chance(0.7);
  switch (flag) {
    case "--layer_idxs":
      return valid
        ? rng.pick([["0"], ["1"], ["1", "0"], ["0", "1"]])
        : rng.pick([[], ["0", "0"], ["-1"], ["2"], ["-3"], ["a"], ["1", "x"], [oddValue(rng)]]);
    case "--module_ids":
    case "--module_id":
      return valid
        ? [rng.pick(MODULES)]
        : rng.pick([[], ["DT_PROJ"], ["dt_proj.weight"], ["mixer"], ["dt_proj", "conv1d"], [
          oddValue(rng),
        ]]);
    case "--nonlinearity":
      return [valid ? rng.pick(NONLINEARITIES) : rng.pick(["Softplus", "none", "softmax"])];
    case "--reduction":
      return [valid ? rng.pick(REDUCTIONS) : rng.pick(["sum", "FRO", oddValue(rng)])];
    case "--reduction_dim":
      return [valid ? rng.pick(["-1", "-2", "0", "1", "2"]) : rng.pick(["3", "-4", oddValue(rng)])];
    case "--seed":
      return [valid ? rng.pick(["0", "1", "4740"]) : oddValue(rng)];
    case "--device":
      return [valid ? "cpu" : rng.pick(["cuda", "cuda:0", "cuda:-1", "gpu", "cpu:0", ""])];
    case "--dtype":
      return [valid ? rng.pick(["fp32", "bf16"]) : rng.pick(["fp16", "float32", ""])];
    case "--filepath_to_store_outputs":
      return [
        valid ? `@DIR@/${rng.pick(["out", "sub/dir/out"])}${rng.pick(OUTPUT_EXTS)}` : rng.pick([
          "@DIR@/out.txt",
          "@DIR@/.pkl",
          "@DIR@/",
          "@DIR@/prompt.txt/out.pkl",
          "@DIR@/out",
          `@DIR@/${"x".repeat(rng.size(300))}.pkl`,
          oddValue(rng),
        ]),
      ];
    case "--output_layout":
      return [valid ? "original" : rng.pick(["ours", "ORIGINAL", ""])];
    case "--prompt":
      return [valid ? rng.pick(["a", "High up on the hillside", "é中🦀"]) : nastyString(rng)];
    case "--prompt_file":
      return [
        valid ? "@DIR@/prompt.txt" : rng.pick([
          "@DIR@/empty.txt",
          "@DIR@/big.txt",
          "@DIR@/fifo",
          "@DIR@",
          "@DIR@/missing.txt",
        ]),
      ];
    case "--config_path":
      return [valid ? "@DIR@/fuzz.yml" : rng.pick(["@DIR@/prompt.txt", "@DIR@", "@DIR@/no.yml"])];
    case "--model_id":
      return [valid ? "fuzz" : rng.pick(["972M", "", "Fuzz", nastyString(rng)])];
    case "--pretrained_model_filepath":
    case "--draft_pretrained_model_filepath":
      return [rng.pick(["@DIR@/prompt.txt", "@DIR@/missing.pt", "@DIR@", "@DIR@/fifo"])];
    // generate.ts: valid values keep a run short on the fuzz model
    case "--max_new_tokens":
      return [
        valid ? String(rng.int(9)) : rng.pick(["-1", "1.5", "2147483648", "1e2", oddValue(rng)]),
      ];
    case "--num_samples":
      return [valid ? String(1 + rng.int(3)) : rng.pick(["0", "4097", "-2", oddValue(rng)])];
    case "--temperature":
      return [valid ? rng.pick(["0.5", "1", "1.3"]) : rng.pick(["0", "-1", "NaN", oddValue(rng)])];
    case "--top_k":
      return [valid ? rng.pick(["0", "1", "5", "256"]) : rng.pick(["-1", "257", oddValue(rng)])];
    case "--top_p":
      return [
        valid ? rng.pick(["0", "0.5", "0.98", "1"]) : rng.pick(["1.5", "-0.1", oddValue(rng)]),
      ];
    case "--stop":
      return [
        valid ? rng.pick(["\\n", "a", "\\x41"]) : rng.pick(["", "\\x", "\\q", nastyString(rng)]),
      ];
    case "--draft_length":
      return [valid ? String(1 + rng.int(8)) : rng.pick(["0", "65", oddValue(rng)])];
    case "--draft_model_id":
      return [valid ? "fuzz" : rng.pick(["972M", "", nastyString(rng)])];
    // evaluate.ts (no file above the 64 MiB prompt limit: a valid one would be scored whole)
    case "--text_files":
      return valid
        ? rng.pick([["@DIR@/prompt.txt"], ["@DIR@/prompt.txt", "@DIR@/empty.txt"]])
        : rng.pick([[], ["@DIR@/missing.txt"], ["@DIR@"], ["@DIR@/fifo"], [oddValue(rng)]]);
    case "--context":
      return [
        valid ? rng.pick(["1", "7", "64", "4096"]) : rng.pick(["0", "16777217", oddValue(rng)]),
      ];
    case "--draft_tokenizer":
      return [rng.pick(["@DIR@/prompt.txt", "@DIR@/missing.json", "@DIR@", "@DIR@/fifo"])];
    default:
      return [oddValue(rng)];
  }
}

/** The flags a script takes, besides the common ones. */
function scriptFlags(script: ArgvScript): string[] {
  switch (script) {
    case "discrete_A":
      return ["--reduction", "--reduction_dim", "--output_layout"];
    case "module_outputs":
      return ["--module_ids", "--nonlinearity", "--output_layout"];
    case "input_sim":
      return ["--output_layout"];
    case "evaluate":
      return ["--context"];
    case "generate":
      return [
        "--max_new_tokens",
        "--num_samples",
        "--temperature",
        "--top_k",
        "--top_p",
        "--stop",
        "--draft_length",
        "--draft_model_id",
        "--verbose",
      ];
  }
}

const COMMON = [
  "--layer_idxs",
  "--seed",
  "--device",
  "--dtype",
  "--filepath_to_store_outputs",
  "--return_log_probs",
  "--return_ranks",
  "--quiet",
];
const BOOLEAN = new Set(["--return_log_probs", "--return_ranks", "--quiet", "--help", "--verbose"]);
/** Flags generate.ts and evaluate.ts do not take: their command lines have them only as foreign
 * ones. */
const EXTRACTION_ONLY = new Set(["--layer_idxs", "--return_log_probs", "--return_ranks"]);
const FOREIGN = [
  "--reduction",
  "--module_id",
  "--max_new_tokens",
  "--top_k",
  "--foo",
  "-x",
  "--layer-idxs",
  "--",
  "--help",
  "--pretrained_model_filepath",
  "--draft_pretrained_model_filepath",
  "--draft_tokenizer",
  "--return_ranks",
];

/** A command line for one of {@link ARGV_SCRIPTS}, valid or mutated. */
export function genArgv(rng: Rng): FuzzCase {
  const script = rng.pick(ARGV_SCRIPTS);
  // the command line as flag groups, so that mutations keep or break them whole
  const groups: string[][] = [
    ["--config_path", ...valueFor(rng, "--config_path")],
    ["--model_id", ...valueFor(rng, "--model_id")],
    script === "evaluate"
      ? ["--text_files", ...valueFor(rng, "--text_files")]
      : rng.chance(0.8)
      ? ["--prompt", ...valueFor(rng, "--prompt")]
      : ["--prompt_file", ...valueFor(rng, "--prompt_file")],
  ];
  if (script === "module_outputs") groups.push(["--module_ids", ...valueFor(rng, "--module_ids")]);
  // generate's default is 100 bytes: keep a valid run short
  if (script === "generate") {
    groups.push(["--max_new_tokens", ...valueFor(rng, "--max_new_tokens")]);
  }
  const given = new Set(groups.map((g) => g[0]));
  for (const flag of [...COMMON, ...scriptFlags(script)]) {
    if (given.has(flag) || !rng.chance(0.35)) continue;
    if (RUN_AS_SCRIPT.has(script) && EXTRACTION_ONLY.has(flag)) continue;
    groups.push(BOOLEAN.has(flag) ? [flag] : [flag, ...valueFor(rng, flag)]);
  }
  const mutations: string[] = [];
  for (let m = rng.int(4); m > 0; m--) {
    const kind = rng.pick(["drop", "repeat", "no-value", "foreign", "stray", "equals"]);
    const i = rng.int(groups.length);
    mutations.push(kind);
    switch (kind) {
      case "drop":
        groups.splice(i, 1);
        break;
      case "repeat": {
        const g = groups[i];
        if (g) groups.push(BOOLEAN.has(g[0]) ? [g[0]] : [g[0], ...valueFor(rng, g[0])]);
        break;
      }
      case "no-value":
        if (groups[i]) groups[i] = [groups[i][0]];
        break;
      case "foreign": {
        const f = rng.pick(FOREIGN);
        groups.splice(i, 0, BOOLEAN.has(f) || f === "--" ? [f] : [f, ...valueFor(rng, f)]);
        break;
      }
      case "stray":
        groups.splice(i, 0, [oddValue(rng)]);
        break;
      case "equals": // --flag=value, which argparse also reads
        if (groups[i]?.length === 2) groups[i] = [`${groups[i][0]}=${groups[i][1]}`];
        break;
    }
  }
  // Without the case's config the toolkit's own applies, whose default model is the 972M shape
  // (random weights, ~4 GB): a valid command line then loads it, past the worker's memory cap.
  // The last --model_id wins, so name a small model there.
  if (!groups.some((g) => g[0] === "--config_path" || g[0].startsWith("--config_path="))) {
    groups.push(["--model_id", "tiny"]);
  }
  // generate.ts and evaluate.ts run only as a process, whose arguments cannot hold NUL and are
  // bounded in size
  const argv = (rng.chance(0.03) ? [] : groups.flat())
    .map((a) => RUN_AS_SCRIPT.has(script) ? a.replaceAll("\0", "").slice(0, 20_000) : a);
  return {
    target: "argv",
    desc: `argv ${script}${mutations.length ? ` (${mutations.join(",")})` : ""}: ${
      JSON.stringify(argv).slice(0, 160)
    }`,
    files: [
      { path: "fuzz.yml", data: enc.encode(FUZZ_CLI_CONFIG) },
      { path: "prompt.txt", data: enc.encode("To be, or not to be: that is the question.\n") },
      { path: "empty.txt", data: new Uint8Array() },
      { path: "big.txt", data: new Uint8Array(), size: 65 * 1024 * 1024 },
      { path: "fifo", kind: "fifo" },
    ],
    entry: "fuzz.yml",
    argv,
    script,
  };
}
