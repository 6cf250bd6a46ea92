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

type All = ModelArgs & PromptArgs & ExtractionArgs & OutputArgs;

function extractionParser(prog = "extract_module_outputs.ts"): Parser {
  const p = createParser(prog, "Extract module outputs.");
  addModelFlags(p);
  addPromptFlags(p);
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

Deno.test("defaults of every shared flag", () => {
  const p = extractionParser("gen.ts");
  addGenerationFlags(p);
  const a = parseArgs<All & GenerationArgs>(p, []);
  assert.equal(a.config_path, "configs/mambabyte_lm.yml");
  assert.equal(a.seed, 4740);
  assert.equal(a.device, null); // null: the config decides
  assert.equal(a.dtype, null);
  assert.equal(a.prompt, null);
  assert.equal(a.prompt_file, null);
  assert.equal(a.layer_idxs, null);
  assert.equal(a.module_ids, null);
  assert.equal(a.nonlinearity, null);
  assert.equal(a.return_log_probs, false);
  assert.equal(a.return_ranks, false);
  assert.equal(a.reduction_dim, null);
  assert.equal(a.filepath_to_store_outputs, null);
  assert.equal(a.quiet, false);
  assert.equal(a.max_new_tokens, 100);
  assert.equal(a.num_samples, 1);
  assert.equal(a.temperature, 1.0);
  assert.equal(a.top_k, 256);
  assert.equal(a.top_p, 0.98);
  const g = parseArgs<GenerationArgs>(p, [
    "--max_new_tokens=7",
    "--temperature",
    "0.7",
    "--top_k",
    "0",
    "--top_p",
    "1",
  ]);
  assert.deepEqual(
    [g.max_new_tokens, g.temperature, g.top_k, g.top_p, g.num_samples],
    [7, 0.7, 0, 1, 1],
  );
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
  usageError(g, ["--top_p", "1.5"], /invalid probability value/);
  usageError(g, ["--num_samples", "0"], /invalid positive_int value/);
  usageError(g, ["--temperature", "-1"], /invalid nonnegative_float value/);
});
