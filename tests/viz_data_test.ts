/**
 * The values visualize.ts embeds in its page against those the extraction scripts store for the
 * same prompt and model, read back by Python (numpy, msgpack, pickle) rather than by our readers:
 * log_probs and ranks shifted to the byte they score, discrete-A's Frobenius norms, and the mean
 * over d_inner of softplus(dt_proj). Then the page made from those outputs files (every format,
 * reduced or not, softplus or linear) must carry the same data as the page made from the model.
 */
import assert from "node:assert/strict";
import { skipWithoutPython } from "./helpers/python.ts";
import { assertNoProblems, pyCheck, runScriptOk } from "./helpers/scripts.ts";
import { pageData } from "./helpers/viz.ts";
import type { VizData } from "../src/viz/data.ts";

const noPython = await skipWithoutPython(["numpy", "msgpack"]);

// Multi-byte characters and newlines, so alignment errors and UTF-8 slips would show.
const PROMPT = `ROMEO:
But soft, what light through yonder window breaks?
It is the east, and Juliet is the sun. — naïve café, Ærø, 日本, 🎭!
JULIET:
O Romeo, Romeo, wherefore art thou Romeo?
`;

const MODEL = ["--model_id", "tiny", "--device", "cpu", "--quiet"];

/** Compares a page's data block with extraction outputs (Python reads both). */
const CHECK = String.raw`
page = json.load(open(ARG["page"]))
tA, _ = flat(ARG["dA"])
tD, _ = flat(ARG["dt"])
s, n = page["start"], len(page["bytes"])
equal("bytes", bytes(page["bytes"]), ARG["prompt"].encode("utf-8")[s:s + n])
lp, rk = tA["log_probs"], tA["ranks"]
equal("ranks from both scripts", rk.tolist(), tD["ranks"].tolist())
pos = [p for p in range(s, s + n) if p > 0]
if s == 0:
    equal("log_probs at position 0", page["log_probs"][0], None)
    equal("ranks at position 0", page["ranks"][0], None)
# Exact: the page stores each float32 with enough digits to read back the same float32.
got = np.array([page["log_probs"][p - s] for p in pos], np.float32)
equal("log_probs", got.tobytes() == lp[[p - 1 for p in pos]].tobytes(), True)
equal("ranks", [page["ranks"][p - s] for p in pos], rk[[p - 1 for p in pos]].tolist())
layers = sorted(int(k.split(".")[1]) for k in tA if k.startswith("discrete_A."))
equal("discrete_A layers", sorted(map(int, page["discrete_A_fro"])), layers)
for l in layers:
    want = tA[f"discrete_A.{l}"][s:s + n]
    got = np.array(page["discrete_A_fro"][str(l)], np.float32)
    equal(f"discrete_A fro layer {l}", got.tobytes() == want.tobytes(), True)
    delta = tD[f"dt_proj.{l}"].astype(np.float64).mean(axis=1)[s:s + n]
    close(f"delta mean layer {l}", page["delta_mean"][str(l)], delta, 2.5e-7)
finish(n=n, layers=layers)
`;

/** The data fields of a page (all but the settings, which name the source). */
function dataPart(d: VizData): Omit<VizData, "settings"> {
  const { settings: _, ...rest } = d;
  return rest;
}

Deno.test({
  name: "visualize: page values equal the extraction outputs; --from_outputs pages equal it",
  ignore: noPython,
  async fn() {
    const dir = await Deno.makeTempDir({ prefix: "mb-viz-data-" });
    try {
      const common = [...MODEL, "--prompt", PROMPT];
      const scores = ["--return_log_probs", "--return_ranks"];
      const out = (name: string) => ["--filepath_to_store_outputs", `${dir}/${name}`];
      await Promise.all([
        runScriptOk("extract_discrete_A.ts", [
          ...common,
          ...["--reduction", "fro", ...scores, ...out("dA.msgpack")],
        ]),
        runScriptOk("extract_module_outputs.ts", [
          ...common,
          ...["--module_ids", "dt_proj", "--nonlinearity", "softplus", ...scores],
          ...out("dt.pkl"),
        ]),
      ]);
      await Promise.all([
        // Unreduced discrete-A and pre-softplus dt_proj: the page reduces / applies softplus.
        runScriptOk("extract_discrete_A.ts", [...common, ...scores, ...out("dA_full.safetensors")]),
        runScriptOk("extract_module_outputs.ts", [
          ...common,
          ...["--module_ids", "dt_proj", "--nonlinearity", "linear", ...out("dt_lin.safetensors")],
        ]),
        runScriptOk("extract_discrete_A.ts", [
          ...common,
          ...["--reduction", "fro", ...scores, ...out("dA.pkl")],
        ]),
      ]);
      const flags = ["--color_by", "discrete_A", "--layer", "2", "--layer_quantity", "delta"];
      const page = async (name: string, source: string[], extra: string[] = []) => {
        const path = `${dir}/${name}.html`;
        await runScriptOk("visualize.ts", [...source, ...flags, ...extra, "--output", path]);
        const d = pageData(await Deno.readTextFile(path));
        await Deno.writeTextFile(`${dir}/${name}.json`, JSON.stringify(d));
        return d;
      };
      const fromModel = await page("model", common);
      const report = await pyCheck(CHECK, {
        page: `${dir}/model.json`,
        dA: `${dir}/dA.msgpack`,
        dt: `${dir}/dt.pkl`,
        prompt: PROMPT,
      });
      assertNoProblems(report, "page from the model vs extraction outputs");
      assert.equal(report.info.n, new TextEncoder().encode(PROMPT).length);
      assert.deepEqual(report.info.layers, [0, 1, 2, 3, 4, 5]);
      assert.equal(fromModel.settings.model_id, "tiny");
      assert.equal(fromModel.color.colors.length, fromModel.bytes.length);
      assert.ok(fromModel.color.colors.every((c) => /^#[0-9a-f]{6}$/.test(c)));

      const quiet = ["--quiet"];
      const viaFiles = await page("files", [
        "--from_outputs",
        `${dir}/dA.msgpack`,
        `${dir}/dt.pkl`,
        ...quiet,
      ]);
      assert.deepEqual(dataPart(viaFiles), dataPart(fromModel));
      assert.deepEqual(viaFiles.settings.outputs_files, [`${dir}/dA.msgpack`, `${dir}/dt.pkl`]);
      assert.equal(viaFiles.settings.model_id, "tiny");
      const viaPkl = await page("pkl", [
        "--from_outputs",
        `${dir}/dt.pkl`,
        `${dir}/dA.pkl`,
        ...quiet,
      ]);
      assert.deepEqual(dataPart(viaPkl), dataPart(fromModel));
      const viaRaw = await page("raw", [
        "--from_outputs",
        `${dir}/dA_full.safetensors`,
        `${dir}/dt_lin.safetensors`,
        ...quiet,
      ]);
      assert.deepEqual(dataPart(viaRaw), dataPart(fromModel));

      // A range: positions shift, values stay those of the whole prompt's pass.
      const ranged = await page("range", common, ["--range", "10:90"]);
      assert.equal(ranged.start, 10);
      assert.equal(ranged.bytes.length, 80);
      const r2 = await pyCheck(CHECK, {
        page: `${dir}/range.json`,
        dA: `${dir}/dA.msgpack`,
        dt: `${dir}/dt.pkl`,
        prompt: PROMPT,
      });
      assertNoProblems(r2, "page of --range 10:90 vs extraction outputs");
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  },
});
