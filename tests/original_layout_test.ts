/**
 * `--output_layout original`: the pickle holds what the original scripts store for the same
 * command, key for key and value for value, read back with Debian's python3-torch and compared
 * with an independent float64 PyTorch re-implementation of the original's hooks
 * (tests/reference/original_hooks.py) on the original-format fixture checkpoint.
 */
import assert from "node:assert/strict";
import { pythonMissing, runPythonJson } from "./helpers/python.ts";
import { FIXTURES, pool, REPO_ROOT, runScriptOk } from "./helpers/scripts.ts";

const noTorch = await pythonMissing(["torch"]);
if (noTorch) console.warn(`skipping the original-layout tests: ${noTorch}`);

const CKPT = `${FIXTURES}/ln_model.pt`;
const PROMPT = "High up on the hillside, the Union Jack — shook out its folds.";

interface Job {
  name: string;
  script: string;
  prompt: string;
  args: string[];
  /** What the reference needs besides prompt/script (the original's parameters). */
  ref: Record<string, unknown>;
}

const J = (
  name: string,
  script: string,
  args: string[],
  ref: Record<string, unknown>,
  prompt = PROMPT,
): Job => ({
  name,
  script,
  prompt,
  args,
  ref,
});
const EMO = "extract_module_outputs";
const DA = "extract_discrete_A";
const SIM = "extract_input_sim_with_discrete_A";

const JOBS: Job[] = [
  J("dt_proj softplus, scores", EMO, [
    "--module_id",
    "dt_proj",
    "--nonlinearity",
    "softplus",
    "--return_log_probs",
    "--return_ranks",
  ], {
    module_id: "dt_proj",
    nonlinearity: "softplus",
    return_log_probs: true,
    return_ranks: true,
  }),
  J("conv1d padded, layer 1", EMO, ["--module_id", "conv1d", "--layer_idxs", "1"], {
    module_id: "conv1d",
    layer_idxs: [1],
  }),
  J("conv1d, two bytes", EMO, ["--module_id", "conv1d"], { module_id: "conv1d" }, "ab"),
  J("x_proj of one byte is 1-D", EMO, ["--module_id", "x_proj", "--return_ranks"], {
    module_id: "x_proj",
    return_ranks: true,
  }, "a"),
  J("in_proj", EMO, ["--module_id", "in_proj", "--layer_idxs", "0"], {
    module_id: "in_proj",
    layer_idxs: [0],
  }),
  J("out_proj relu", EMO, ["--module_id", "out_proj", "--nonlinearity", "relu"], {
    module_id: "out_proj",
    nonlinearity: "relu",
  }),
  J("mixer tanh", EMO, ["--module_id", "mixer", "--nonlinearity", "tanh"], {
    module_id: "mixer",
    nonlinearity: "tanh",
  }),
  J("norm never fires", EMO, ["--module_id", "norm"], { module_id: "norm" }),
  J("discrete_A whole", DA, ["--return_log_probs"], { return_log_probs: true }),
  J("min over positions, layers 1 0", DA, [
    "--reduction",
    "min",
    "--reduction_dim",
    "0",
    "--layer_idxs",
    "1",
    "0",
  ], {
    reduction: "min",
    reduction_dim: 0,
    layer_idxs: [1, 0],
  }),
  J("max over d_state", DA, ["--reduction", "max", "--reduction_dim", "-1"], {
    reduction: "max",
    reduction_dim: -1,
  }),
  J("norm over d_inner (the README's)", DA, [
    "--reduction",
    "norm",
    "--reduction_dim",
    "-2",
    "--return_ranks",
  ], {
    reduction: "norm",
    reduction_dim: -2,
    return_ranks: true,
  }),
  J("mean over d_inner", DA, ["--reduction", "mean", "--reduction_dim", "1"], {
    reduction: "mean",
    reduction_dim: 1,
  }),
  J("mean of all", DA, ["--reduction", "mean"], { reduction: "mean" }),
  J("fro", DA, ["--reduction", "fro", "--reduction_dim", "-2"], {
    reduction: "fro",
    reduction_dim: -2,
  }),
  J("nuc", DA, ["--reduction", "nuc"], { reduction: "nuc" }),
  J("input similarity", SIM, ["--return_log_probs", "--return_ranks"], {
    return_log_probs: true,
    return_ranks: true,
  }),
];

Deno.test({
  name: "--output_layout original equals a float64 PyTorch run of the original's hooks",
  ignore: noTorch !== null,
  async fn() {
    const dir = await Deno.makeTempDir({ prefix: "mb-original-" });
    try {
      const specs = await pool(
        4,
        JOBS.map((j, i) => async () => {
          const pickle = `${dir}/${i}.pkl`;
          await runScriptOk(`${j.script}.ts`, [
            ...["--pretrained_model_filepath", CKPT, "--model_id", "test-48x2", "--quiet"],
            ...["--prompt", j.prompt, "--output_layout", "original"],
            ...["--filepath_to_store_outputs", pickle, ...j.args],
          ]);
          return {
            name: j.name,
            script: j.script,
            prompt: j.prompt,
            pickle,
            ckpt: CKPT,
            model_id: "test-48x2",
            ...j.ref,
          };
        }),
      );
      const jobFile = `${dir}/jobs.json`;
      await Deno.writeTextFile(jobFile, JSON.stringify(specs));
      const code = `import runpy, sys; sys.argv = ["x", ${JSON.stringify(CKPT)}, ${
        JSON.stringify(jobFile)
      }]; runpy.run_path(${
        JSON.stringify(`${REPO_ROOT}/tests/reference/original_hooks.py`)
      }, run_name="__main__")`;
      const report = await runPythonJson(code) as { job: string; problems: string[] }[];
      assert.equal(report.length, JOBS.length);
      const bad = report.filter((r) => r.problems.length > 0);
      assert.deepEqual(bad, [], JSON.stringify(bad, null, 1));
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  },
});
