/**
 * visualize.ts's error paths: each ends with exactly one line on stderr, exit code 2 for a bad
 * command line and 1 for a runtime problem (a missing or unusable outputs file, no Chromium for
 * PNG), and leaves no output file behind.
 */
import assert from "node:assert/strict";
import { CONFIG, pool, runScript, runScriptOk } from "./helpers/scripts.ts";
import { writeOutputs } from "../src/io/mod.ts";
import { readOutputs } from "../src/io/read.ts";

const MODEL = ["--config_path", CONFIG, "--model_id", "test-48x2", "--device", "cpu", "--quiet"];
const PROMPT = ["--prompt", "The quick brown fox jumps over the lazy dog."];

interface Case {
  name: string;
  args: (dir: string) => string[];
  code: 1 | 2;
  /** A fragment the one error line must contain. */
  says: RegExp;
  env?: Record<string, string>;
}

const CASES: Case[] = [
  {
    name: "unknown --color_by",
    args: (d) => [...MODEL, ...PROMPT, "--color_by", "entropy", "--output", `${d}/o.html`],
    code: 2,
    says: /visualize\.ts: error: argument --color_by: invalid choice/,
  },
  {
    name: "--window 0",
    args: (d) => [...MODEL, ...PROMPT, "--window", "0", "--output", `${d}/o.html`],
    code: 2,
    says: /--window: must be >= 1/,
  },
  {
    name: "--window not a number",
    args: (d) => [...MODEL, ...PROMPT, "--window", "wide", "--output", `${d}/o.html`],
    code: 2,
    says: /--window: invalid int value/,
  },
  {
    name: "no --output",
    args: () => [...MODEL, ...PROMPT],
    code: 2,
    says: /the following arguments are required: --output/,
  },
  {
    name: "no source",
    args: (d) => [...MODEL, "--output", `${d}/o.html`],
    code: 2,
    says: /give --prompt, --prompt_file or --from_outputs/,
  },
  {
    name: "a prompt and --from_outputs",
    args: (
      d,
    ) => [...MODEL, ...PROMPT, "--from_outputs", `${d}/dt.msgpack`, "--output", `${d}/o.html`],
    code: 2,
    says: /not both/,
  },
  {
    name: "--format against the extension",
    args: (d) => [...MODEL, ...PROMPT, "--format", "png", "--output", `${d}/o.html`],
    code: 2,
    says: /--format: png does not match --output/,
  },
  {
    name: "empty --range",
    args: (d) => [...MODEL, ...PROMPT, "--range", "30:10", "--output", `${d}/o.html`],
    code: 2,
    says: /--range: 30:10 is not a non-empty range inside the prompt's 44 bytes/,
  },
  {
    name: "--layer out of range",
    args: (d) => [...MODEL, ...PROMPT, "--layer", "7", "--output", `${d}/o.html`],
    code: 2,
    says: /--layer: 7 is out of range: the model has 2 layers/,
  },
  {
    name: "--layer not in the outputs file",
    args: (
      d,
    ) => ["--from_outputs", `${d}/dA_layer1.msgpack`, "--layer", "0", "--output", `${d}/o.html`],
    code: 2,
    says: /--layer 0: no discrete_A for that layer \(layers 1\)/,
  },
  {
    name: "missing outputs file",
    args: (d) => ["--from_outputs", `${d}/nothing.msgpack`, "--output", `${d}/o.html`],
    code: 1,
    says: /^error: outputs file not found: .*nothing\.msgpack$/,
  },
  {
    name: "outputs file of an unknown kind",
    args: (d) => ["--from_outputs", `${d}/notes.txt`, "--output", `${d}/o.html`],
    code: 1,
    says: /cannot read outputs file .*notes\.txt: unknown extension '\.txt'/,
  },
  {
    name: "corrupt outputs file",
    args: (d) => ["--from_outputs", `${d}/corrupt.pkl`, "--output", `${d}/o.html`],
    code: 1,
    says: /cannot read outputs file .*corrupt\.pkl: pickle: /,
  },
  {
    name: "outputs file without discrete_A",
    args: (d) => ["--from_outputs", `${d}/dt.msgpack`, "--output", `${d}/o.html`],
    code: 1,
    says: /no discrete_A .*extract_discrete_A\.ts --reduction fro/,
  },
  {
    name: "outputs file without log_probs",
    args: (d) => ["--from_outputs", `${d}/dA_nolp.msgpack`, "--output", `${d}/o.html`],
    code: 1,
    says: /no log_probs .*--return_log_probs/,
  },
  {
    name: "outputs file without ranks for --color_by rank",
    args: (d) => [
      ...["--from_outputs", `${d}/dA_noranks.safetensors`, "--color_by", "rank"],
      ...["--output", `${d}/o.html`],
    ],
    code: 1,
    says: /no ranks .*--return_ranks/,
  },
  {
    name: "discrete_A reduced another way",
    args: (d) => ["--from_outputs", `${d}/dA_mean.pkl`, "--output", `${d}/o.html`],
    code: 1,
    says: /discrete_A was reduced with 'mean'.*--reduction fro/,
  },
  {
    name: "dt_proj through another nonlinearity",
    args: (d) => [
      ...["--from_outputs", `${d}/dt_relu.msgpack`, "--layer_quantity", "delta"],
      ...["--output", `${d}/o.html`],
    ],
    code: 1,
    says: /dt_proj went through 'relu'.*--nonlinearity softplus/,
  },
  {
    name: "a field with control characters shown printable",
    args: (d) => ["--from_outputs", `${d}/dA_hostile.msgpack`, "--output", `${d}/o.html`],
    code: 1,
    says: /discrete_A was reduced with 'fro\?\?\[2J'.*--reduction fro/,
  },
  {
    name: "outputs files of different prompts",
    args: (
      d,
    ) => ["--from_outputs", `${d}/dA.msgpack`, `${d}/dt_other.msgpack`, "--output", `${d}/o.html`],
    code: 1,
    says: /were made from different prompts/,
  },
  {
    name: "--format png without Chromium",
    args: (d) => [...MODEL, ...PROMPT, "--output", `${d}/o.png`],
    code: 1,
    says: /^error: --format png needs headless Chromium: MAMBABYTE_CHROMIUM names \/nonexistent/,
    env: { MAMBABYTE_CHROMIUM: "/nonexistent/chromium" },
  },
  {
    name: "an output folder that is a file",
    args: (d) => [...MODEL, ...PROMPT, "--output", `${d}/notes.txt/o.html`],
    code: 1,
    says: /^error: cannot write .*notes\.txt\/o\.html: .*notes\.txt is not a folder$/,
  },
  {
    name: "--format png with a Chromium that does not start",
    args: (d) => [...MODEL, ...PROMPT, "--output", `${d}/o.png`],
    code: 1,
    says: /^error: cannot start \/bin\/false: it exited/,
    env: { MAMBABYTE_CHROMIUM: "/bin/false" },
  },
];

Deno.test("visualize: error paths give one line, exit 2 or 1, and no output", async (t) => {
  const dir = await Deno.makeTempDir({ prefix: "mb-viz-errors-" });
  try {
    const ex = async (script: string, args: string[], name: string) => {
      await runScriptOk(script, [
        ...MODEL,
        ...args,
        "--filepath_to_store_outputs",
        `${dir}/${name}`,
      ]);
    };
    const fro = ["--reduction", "fro"];
    const scores = ["--return_log_probs", "--return_ranks"];
    await Promise.all([
      ex("extract_discrete_A.ts", [...PROMPT, ...fro, ...scores], "dA.msgpack"),
      ex(
        "extract_discrete_A.ts",
        [...PROMPT, ...fro, ...scores, "--layer_idxs", "1"],
        "dA_layer1.msgpack",
      ),
      ex("extract_discrete_A.ts", [...PROMPT, ...fro, "--return_ranks"], "dA_nolp.msgpack"),
      ex(
        "extract_discrete_A.ts",
        [...PROMPT, ...fro, "--return_log_probs"],
        "dA_noranks.safetensors",
      ),
      ex("extract_discrete_A.ts", [
        ...PROMPT,
        "--reduction",
        "mean",
        "--reduction_dim",
        "-1",
        ...scores,
      ], "dA_mean.pkl"),
      ex("extract_module_outputs.ts", [
        ...PROMPT,
        "--module_ids",
        "dt_proj",
        "--nonlinearity",
        "softplus",
        ...scores,
      ], "dt.msgpack"),
      ex("extract_module_outputs.ts", [
        ...PROMPT,
        "--module_ids",
        "dt_proj",
        "--nonlinearity",
        "relu",
        ...scores,
      ], "dt_relu.msgpack"),
      ex("extract_module_outputs.ts", [
        "--prompt",
        "Another prompt.",
        "--module_ids",
        "dt_proj",
        ...scores,
      ], "dt_other.msgpack"),
    ]);
    // a record whose reduction holds a new line and a terminal escape (an edited file)
    const hostile = await readOutputs(`${dir}/dA.msgpack`);
    hostile.reduction = "fro\n\u001b[2J";
    await writeOutputs(`${dir}/dA_hostile.msgpack`, hostile);
    await Deno.writeTextFile(`${dir}/notes.txt`, "not an outputs file\n");
    await Deno.writeFile(
      `${dir}/corrupt.pkl`,
      Uint8Array.of(0x80, 0x04, 0x95, 9, 0, 0, 0, 0, 0, 0, 0, 0x7d, 0x28),
    );
    // Run every case first (several at once: each is a deno start-up), then check them.
    const results = await pool(
      4,
      CASES.map((c) => () => runScript("visualize.ts", c.args(dir), { env: c.env })),
    );
    for (const [k, c] of CASES.entries()) {
      await t.step(c.name, () => {
        const r = results[k];
        const lines = r.stderr.split("\n").filter((l) => l.trim() !== "");
        assert.equal(r.code, c.code, `exit ${r.code}, stderr:\n${r.stderr}`);
        assert.equal(lines.length, 1, `expected one line, got:\n${r.stderr}`);
        assert.match(lines[0], c.says);
        assert.equal(r.stdout, "");
      });
    }
    await t.step("--help exits 0 and lists the flags", async () => {
      const r = await runScript("visualize.ts", ["--help"]);
      assert.equal(r.code, 0, r.stderr);
      for (
        const f of ["--from_outputs", "--color_by", "--layer_quantity", "--window", "--format"]
      ) {
        assert.ok(r.stdout.includes(f), f);
      }
    });
    // No case left an output file (or a temporary one) behind.
    const left = [];
    for await (const e of Deno.readDir(dir)) if (/^\.?o\./.test(e.name)) left.push(e.name);
    assert.deepEqual(left, []);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
