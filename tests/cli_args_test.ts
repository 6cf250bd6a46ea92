// Flag parsing with the command lines of the original README, and argparse errors as UsageError.

import assert from "node:assert/strict";
import {
  addExtractionFlags,
  addGenerationFlags,
  addModelFlags,
  addOutputFlags,
  addPromptFlags,
  createParser,
  type ExtractionArgs,
  type GenerationArgs,
  type ModelArgs,
  type OutputArgs,
  parseArgs,
  type Parser,
  type PromptArgs,
  UsageError,
} from "../src/cli/args.ts";
import { resolveGeneration } from "../src/cli/settings.ts";

type All = ModelArgs & PromptArgs & ExtractionArgs & OutputArgs;

function extractionParser(prog = "extract_module_outputs.ts", promptRequired = false): Parser {
  const p = createParser(prog, "Extract module outputs.");
  addModelFlags(p);
  addPromptFlags(p, promptRequired);
  addExtractionFlags(p);
  addOutputFlags(p);
  return p;
}

const PROMPT = `High up on the hillside in the midst of a rugged group of jack pines the
Union Jack shook out its folds gallantly in the breeze that swept down
the Kicking Horse Pass. `;
const HOME = "/home/u";

Deno.test("README: extract_module_outputs command line", () => {
  const args = parseArgs<All>(extractionParser(), [
    "--config_path",
    `${HOME}/mambabyte/scripts/configs/mambabyte_lm.yml`,
    "--filepath_to_store_outputs",
    `${HOME}/mambabyte/artefacts/test_run_outputs.pkl`,
    "--prompt",
    PROMPT,
    "--layer_idxs",
    "0",
    "1",
    "2",
    "--pretrained_model_filepath",
    `${HOME}/mambabyte/pretrained_models/mambabyte_972M.pt`,
    "--model_id",
    "972M",
    "--module_ids",
    "dt_proj",
    "--nonlinearity",
    "softplus",
    "--return_log_probs",
    "--return_ranks",
    "--seed",
    "4740",
  ]);
  assert.equal(args.config_path, `${HOME}/mambabyte/scripts/configs/mambabyte_lm.yml`);
  assert.equal(args.filepath_to_store_outputs, `${HOME}/mambabyte/artefacts/test_run_outputs.pkl`);
  assert.equal(args.prompt, PROMPT);
  assert.deepEqual(args.layer_idxs, [0, 1, 2]);
  assert.equal(
    args.pretrained_model_filepath,
    `${HOME}/mambabyte/pretrained_models/mambabyte_972M.pt`,
  );
  assert.equal(args.model_id, "972M");
  assert.deepEqual(args.module_ids, ["dt_proj"]);
  assert.equal(args.nonlinearity, "softplus");
  assert.equal(args.return_log_probs, true);
  assert.equal(args.return_ranks, true);
  assert.equal(args.seed, 4740);
  assert.equal(args.reduction, null);
  assert.equal(args.quiet, false);
});

Deno.test("README: extract_discrete_A with --reduction_dim -2 (a negative value)", () => {
  const p = createParser("extract_discrete_A.ts", "Extract discrete A.");
  addModelFlags(p);
  addPromptFlags(p);
  addExtractionFlags(p, { modules: false, nonlinearity: false });
  addOutputFlags(p);
  const args = parseArgs<All>(p, [
    "--config_path",
    "c.yml",
    "--filepath_to_store_outputs",
    "a/test_discrete_A.pkl",
    "--prompt",
    PROMPT,
    "--layer_idxs",
    "0",
    "1",
    "--pretrained_model_filepath",
    "m.pt",
    "--model_id",
    "972M",
    "--return_log_probs",
    "--return_ranks",
    "--reduction",
    "norm",
    "--reduction_dim",
    "-2",
    "--seed",
    "4740",
  ]);
  assert.deepEqual(args.layer_idxs, [0, 1]);
  assert.equal(args.reduction, "norm");
  assert.equal(args.reduction_dim, -2);
  assert.ok(!("module_ids" in args) && !("nonlinearity" in args));
  // The fro variant over a whole PG19 sample, prompt from a file, no --layer_idxs.
  const fro = parseArgs<All>(p, [
    "--prompt_file",
    "pg19_samples/860.txt",
    "--reduction",
    "fro",
    "--reduction_dim=-2",
  ]);
  assert.equal(fro.prompt_file, "pg19_samples/860.txt");
  assert.equal(fro.layer_idxs, null);
  assert.equal(fro.reduction_dim, -2);
  // module_ids was left out of this script: passing it is an error.
  assert.throws(() => parseArgs(p, ["--module_ids", "x"]), UsageError);
});

Deno.test("--module_id and --module_ids are one flag taking one or more values", () => {
  const p = extractionParser();
  assert.deepEqual(parseArgs<All>(p, ["--module_id", "dt_proj"]).module_ids, ["dt_proj"]);
  assert.deepEqual(parseArgs<All>(p, ["--module_ids", "x_proj", "dt_proj"]).module_ids, [
    "x_proj",
    "dt_proj",
  ]);
});

Deno.test("flags not given stay null: the config or the defaults table decides", () => {
  const p = extractionParser("gen.ts");
  addGenerationFlags(p);
  const a = parseArgs<All & GenerationArgs>(p, []);
  for (
    const k of [
      "config_path",
      "seed",
      "device",
      "dtype",
      "prompt",
      "prompt_file",
      "layer_idxs",
      "module_ids",
      "nonlinearity",
      "reduction_dim",
      "filepath_to_store_outputs",
      "max_new_tokens",
      "num_samples",
      "temperature",
      "top_k",
      "top_p",
    ] as const
  ) assert.equal(a[k], null, k);
  assert.equal(a.return_log_probs, false);
  assert.equal(a.return_ranks, false);
  assert.equal(a.quiet, false);
  // flag > config > built-in default
  assert.deepEqual(resolveGeneration("gen.ts", a, {}), {
    maxNewTokens: 100,
    numSamples: 1,
    temperature: 1.0,
    topK: 256,
    topP: 0.98,
  });
  const g = parseArgs<GenerationArgs>(p, ["--max_new_tokens=7", "--top_k", "0", "--top_p", "0"]);
  assert.deepEqual(
    resolveGeneration("gen.ts", g, { max_new_tokens: 50, temperature: 0.5, top_p: 0.9 }),
    { maxNewTokens: 7, numSamples: 1, temperature: 0.5, topK: 0, topP: 0 },
  );
});

Deno.test("generation values: bounds, top_k 1 greedy at temperature 0, usage errors", () => {
  const p = createParser("generate.ts", "g");
  addGenerationFlags(p);
  const check = (argv: string[]) => resolveGeneration("generate.ts", parseArgs(p, argv), {});
  assert.equal(check(["--temperature", "0", "--top_k", "1"]).temperature, 0);
  const bad = (argv: string[], message: RegExp) =>
    assert.throws(() => check(argv), (e: unknown) => {
      assert.ok(e instanceof UsageError, String(e));
      assert.equal(e.exitCode, 2);
      assert.match(e.message, message);
      return true;
    });
  bad(["--temperature", "0"], /--temperature: 0 means greedy decoding and needs --top_k 1/);
  bad(["--top_p", "1.5"], /--top_p: must be a number from 0 to 1/);
  bad(["--top_p", "-0.1"], /--top_p/);
  bad(["--num_samples", "0"], /--num_samples: must be an integer from 1 to 4096/);
  bad(["--num_samples", "2147483648"], /--num_samples/);
  bad(["--top_k", "2147483648"], /--top_k: must be an integer from 0 to 256/);
  bad(["--max_new_tokens", "-1"], /--max_new_tokens/);
  bad(["--temperature", "-1"], /--temperature: must be 0 or a number from 0.000001 to 1000000/);
  bad(["--temperature", "1e-300"], /--temperature/);
  bad(["--temperature", "1e39"], /--temperature/);
  bad(["--temperature", "nan"], /--temperature/);
});

Deno.test("the extraction scripts require a prompt; generate.ts does not", () => {
  const p = extractionParser("extract_module_outputs.ts", true);
  assert.throws(() => parseArgs(p, []), /one of the arguments --prompt --prompt_file is required/);
  assert.equal(parseArgs<All>(p, ["--prompt", "x"]).prompt, "x");
  assert.equal(parseArgs<All>(extractionParser(), []).prompt, null);
});

function usageError(p: Parser, argv: string[], message: RegExp): void {
  assert.throws(() => parseArgs(p, argv), (e: unknown) => {
    assert.ok(e instanceof UsageError, String(e));
    assert.equal(e.exitCode, 2);
    assert.equal(e.prog, "extract_module_outputs.ts");
    assert.match(e.message, message);
    assert.match(e.usage, /^usage: extract_module_outputs\.ts/);
    return true;
  });
}

Deno.test("bad command lines throw UsageError with argparse's message", () => {
  const p = extractionParser();
  usageError(p, ["--bogus"], /unrecognized arguments: --bogus/);
  usageError(p, ["--nonlinearity", "sigmoidx"], /invalid choice: 'sigmoidx'/);
  usageError(p, ["--reduction", "median"], /invalid choice/);
  usageError(p, ["--device", "tpu"], /invalid choice/);
  usageError(p, ["--seed", "abc"], /invalid int value: 'abc'/);
  usageError(p, ["--seed", ""], /invalid int value/);
  usageError(p, ["--layer_idxs", "1.5"], /invalid int value/);
  usageError(p, ["--layer_idxs"], /expected at least one argument/);
  usageError(p, ["--prompt"], /expected one argument/);
  usageError(p, ["--prompt", "a", "--prompt_file", "f"], /not allowed with argument/);
  usageError(p, ["stray"], /unrecognized arguments: stray/);
  const g = createParser("extract_module_outputs.ts", "g");
  addGenerationFlags(g);
  usageError(g, ["--top_p", "x"], /invalid float value/);
  usageError(g, ["--num_samples", "1.5"], /invalid int value/);
});
