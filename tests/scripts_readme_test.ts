/**
 * The command lines of the original README (../shared/seed/README.md), run through bash unchanged
 * apart from `python script.py` -> `deno run -A scripts/script.ts` and the paths: the config is
 * configs/mambabyte_lm.yml, the checkpoint is the PyTorch fixture (or, until it lands, a
 * LayerNorm checkpoint written by numpy), --model_id is a test model, outputs go to a temp dir.
 * The first line asks for layers 0 1 2, so it runs on test-64x3 (3 layers, random init).
 */
import assert from "node:assert/strict";
import { skipWithoutPython } from "./helpers/python.ts";
import {
  assertNoProblems,
  exists,
  FIXTURES,
  fixturesMissing,
  pyCheck,
  REPO_ROOT,
} from "./helpers/scripts.ts";

const noPython = await skipWithoutPython(["numpy", "msgpack"]);
const PG19 = `${REPO_ROOT}/../shared/pg19_samples/860.txt`;
const havePg19 = await exists(PG19);
if (!havePg19) console.warn(`scripts_readme_test: PG19 lines skipped: ${PG19} is missing`);

const HILLSIDE = `High up on the hillside in the midst of a rugged group of jack pines the
Union Jack shook out its folds gallantly in the breeze that swept down
the Kicking Horse Pass. `;

/** Runs a bash script in the repository root with DENO, OUT and CK set; throws on failure. */
async function bash(script: string, env: Record<string, string>): Promise<void> {
  const out = await new Deno.Command("bash", {
    args: ["-euo", "pipefail", "-c", script],
    cwd: REPO_ROOT,
    env: { ...env, DENO: Deno.execPath(), NO_COLOR: "1" },
    stdout: "piped",
    stderr: "piped",
  }).output();
  const dec = new TextDecoder();
  assert.equal(out.code, 0, `bash exited ${out.code}:\n${dec.decode(out.stderr)}`);
}

/** A checkpoint for the lines that name one: the fixture, else one written by numpy. */
async function checkpoint(dir: string): Promise<string> {
  if ((await fixturesMissing()) === null) return `${FIXTURES}/ln_model.safetensors`;
  const ck = `${dir}/numpy_ln.safetensors`;
  await pyCheck(`make_checkpoint(ARG, 31337, 48, 2); finish()`, ck);
  return ck;
}

Deno.test({
  name: "README: extract_module_outputs (layers 0 1 2) and extract_discrete_A (norm, -2)",
  ignore: noPython,
  async fn() {
    const dir = await Deno.makeTempDir({ prefix: "mb-scripts-readme-" });
    try {
      const ck = await checkpoint(dir);
      await bash(
        String.raw`
prompt="High up on the hillside in the midst of a rugged group of jack pines the
Union Jack shook out its folds gallantly in the breeze that swept down
the Kicking Horse Pass. "
"$DENO" run -A scripts/extract_module_outputs.ts \
    --config_path "configs/mambabyte_lm.yml" \
    --filepath_to_store_outputs "$OUT/artefacts/test_run_outputs.pkl" \
    --prompt "$prompt" \
    --layer_idxs 0 1 2 \
    --model_id "test-64x3" \
    --module_ids "dt_proj" \
    --nonlinearity "softplus" \
    --return_log_probs \
    --return_ranks \
    --seed 4740

# discrete_A: (l, d, n)
"$DENO" run -A scripts/extract_discrete_A.ts \
    --config_path "configs/mambabyte_lm.yml" \
    --filepath_to_store_outputs "$OUT/artefacts/test_discrete_A.pkl" \
    --prompt "$prompt" \
    --layer_idxs 0 1 \
    --pretrained_model_filepath "$CK" \
    --model_id "test-48x2" \
    --return_log_probs \
    --return_ranks \
    --reduction "norm" \
    --reduction_dim -2 \
    --seed 4740
`,
        { OUT: dir, CK: ck },
      );
      const report = await pyCheck(
        String.raw`
L = len(ARG["prompt"].encode())
r = load_record(ARG["out"] + "/artefacts/test_run_outputs.pkl")
equal("prompt (newlines kept)", r["prompt"], ARG["prompt"])
equal("dt_proj layers", sorted(r["dt_proj"]), [0, 1, 2])
for l, v in r["dt_proj"].items():
    equal(f"dt_proj[{l}]", (str(v.dtype), v.shape), ("float32", (L, 128)))
    if not (v > 0).all(): problems.append(f"dt_proj[{l}] after softplus is not positive")
equal("log_probs shape", r["log_probs"].shape, (L - 1,))
equal("ranks dtype", str(r["ranks"].dtype), "int64")
equal("fields", (r["model_id"], r["module_id"], r["layer_idxs"], r["nonlinearity"]),
      ("test-64x3", "dt_proj", [0, 1, 2], "softplus"))
d = load_record(ARG["out"] + "/artefacts/test_discrete_A.pkl")
w, _ = read_safetensors(ARG["ck"])
ref = reference(w, list(ARG["prompt"].encode()))
equal("discrete_A layers", sorted(d["discrete_A"]), [0, 1])
for l in (0, 1):
    want = np.linalg.norm(discrete_a(ref[f"dt_proj.{l}"], A_of(w, l)), axis=-2)
    close(f"discrete_A[{l}] norm over d_inner", d["discrete_A"][l], want, 1e-4)
close("log_probs", d["log_probs"], ref["logprobs"], 1e-4)
equal("fields", (d["reduction"], d["reduction_dim"], d["pretrained_model_filepath"]),
      ("norm", -2, ARG["ck"]))
finish()
`,
        { out: dir, ck, prompt: HILLSIDE },
      );
      assertNoProblems(report, "README hillside lines");
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  },
});

Deno.test({
  name: 'README: PG19 860 lines (fro; input similarity) via --prompt "$(<file)" and --prompt_file',
  ignore: noPython || !havePg19,
  async fn() {
    const dir = await Deno.makeTempDir({ prefix: "mb-scripts-readme-pg19-" });
    try {
      const ck = await checkpoint(dir);
      await bash(
        String.raw`
prompt=$(<../shared/pg19_samples/860.txt)
# Extract the frobenius norm of discrete-A.
"$DENO" run -A scripts/extract_discrete_A.ts \
    --config_path "configs/mambabyte_lm.yml" \
    --filepath_to_store_outputs "$OUT/artefacts/discrete_A_860_fro.pkl" \
    --prompt "$prompt" \
    --pretrained_model_filepath "$CK" \
    --model_id "test-48x2" \
    --return_log_probs \
    --return_ranks \
    --reduction "fro" \
    --reduction_dim -2 \
    --seed 4740

"$DENO" run -A scripts/extract_input_sim_with_discrete_A.ts \
    --config_path "configs/mambabyte_lm.yml" \
    --filepath_to_store_outputs "$OUT/artefacts/input_sim_with_discrete_A_860.pkl" \
    --prompt "$prompt" \
    --pretrained_model_filepath "$CK" \
    --model_id "test-48x2" \
    --return_log_probs \
    --return_ranks \
    --seed 4740

# The same through --prompt_file (the file's exact bytes, trailing newline included).
"$DENO" run -A scripts/extract_discrete_A.ts --config_path "configs/mambabyte_lm.yml" \
    --filepath_to_store_outputs "$OUT/file/discrete_A_860_fro.msgpack" \
    --prompt_file ../shared/pg19_samples/860.txt --pretrained_model_filepath "$CK" \
    --model_id "test-48x2" --return_log_probs --return_ranks --reduction "fro" \
    --reduction_dim -2 --seed 4740
"$DENO" run -A scripts/extract_input_sim_with_discrete_A.ts \
    --config_path "configs/mambabyte_lm.yml" \
    --filepath_to_store_outputs "$OUT/file/input_sim_with_discrete_A_860.safetensors" \
    --prompt_file ../shared/pg19_samples/860.txt --pretrained_model_filepath "$CK" \
    --model_id "test-48x2" --return_log_probs --return_ranks --seed 4740
`,
        { OUT: dir, CK: ck },
      );
      const report = await pyCheck(
        String.raw`
with open(ARG["pg19"], "rb") as f:
    raw = f.read()
text = raw.decode("utf-8").rstrip("\n")  # what bash's $(<file) gives
n = len(text.encode())
p_fro = load_record(ARG["out"] + "/artefacts/discrete_A_860_fro.pkl")
p_sim = load_record(ARG["out"] + "/artefacts/input_sim_with_discrete_A_860.pkl")
f_fro = load_record(ARG["out"] + "/file/discrete_A_860_fro.msgpack")
f_sim_t, f_sim_meta = read_safetensors(ARG["out"] + "/file/input_sim_with_discrete_A_860.safetensors")
equal("--prompt text", p_fro["prompt"], text)
equal("--prompt_file text", f_fro["prompt"], raw.decode("utf-8"))
# Causal model: the --prompt run equals the --prompt_file run on the common prefix (all of it
# when the file has no trailing newline).
for l in (0, 1):
    equal(f"fro[{l}] shape", p_fro["discrete_A"][l].shape, (n,))
    equal(f"file fro[{l}] shape", f_fro["discrete_A"][l].shape, (len(raw),))
    close(f"fro[{l}] --prompt vs --prompt_file", p_fro["discrete_A"][l], f_fro["discrete_A"][l][:n], 1e-6)
    equal(f"sim[{l}] shape", p_sim["input_sim_with_discrete_A"][l].shape, (n, 16))
    close(f"sim[{l}] --prompt vs --prompt_file", p_sim["input_sim_with_discrete_A"][l],
          f_sim_t[f"input_sim_with_discrete_A.{l}"][:n], 1e-6)
close("log_probs --prompt vs --prompt_file", p_fro["log_probs"], f_fro["log_probs"][:n - 1], 1e-6)
equal("ranks --prompt vs --prompt_file", p_sim["ranks"].tolist(), f_sim_t["ranks"][:n - 1].tolist())
# And the values against numpy, over the whole 860 sample.
w, _ = read_safetensors(ARG["ck"])
ref = reference(w, list(raw))
for l in (0, 1):
    dA = discrete_a(ref[f"dt_proj.{l}"], A_of(w, l))
    close(f"fro[{l}] vs numpy", f_fro["discrete_A"][l], np.sqrt((dA * dA).sum((1, 2))), 1e-4)
    close(f"sim[{l}] vs numpy", f_sim_t[f"input_sim_with_discrete_A.{l}"],
          cosine(dA, ref[f"in_proj.{l}"][:, :96]), 1e-4)
close("log_probs vs numpy", f_fro["log_probs"], ref["logprobs"], 1e-4)
finish(bytes=len(raw))
`,
        { out: dir, ck, pg19: PG19 },
      );
      assertNoProblems(report, "README PG19 lines");
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  },
});
