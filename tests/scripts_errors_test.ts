/**
 * Bad input to the task scripts: exit code 2 for a bad command line, 1 for a runtime error, exactly
 * one line on stderr (no stack trace), and no output or temporary file left behind.
 */
import assert from "node:assert/strict";
import { CONFIG, pool, runScript } from "./helpers/scripts.ts";

const MODEL = ["--config_path", CONFIG, "--model_id", "test-48x2", "--quiet"];

interface BadCase {
  name: string;
  script: string;
  /** Flags; `OUT` is replaced by an output path inside a fresh temp dir. */
  args: string[];
  code: 1 | 2;
  /** A fragment the error line must contain. */
  says: RegExp;
  /** Set up the temp dir before the run (e.g. create a regular file). */
  setup?: (dir: string) => Promise<void>;
}

const EXTRACT = "extract_module_outputs.ts";
const DA = "extract_discrete_A.ts";
const SIM = "extract_input_sim_with_discrete_A.ts";
const GEN = "generate.ts";
const P = ["--prompt", "hello"];

const CASES: BadCase[] = [
  {
    name: "unknown module",
    script: EXTRACT,
    args: [...P, "--module_ids", "dt_projj", "--filepath_to_store_outputs", "OUT/a/out.pkl"],
    code: 2,
    says: /dt_projj/,
  },
  ...[EXTRACT, DA, SIM].map((script): BadCase => ({
    name: `layer out of range (${script})`,
    script,
    args: [
      ...P,
      ...(script === EXTRACT ? ["--module_ids", "dt_proj"] : []),
      ...["--layer_idxs", "0", "2", "--filepath_to_store_outputs", "OUT/a/out.msgpack"],
    ],
    code: 2,
    says: /layer.*2/,
  })),
  {
    name: "negative layer",
    script: DA,
    args: [...P, "--layer_idxs", "-1", "--filepath_to_store_outputs", "OUT/out.pkl"],
    code: 2,
    says: /-1/,
  },
  {
    name: "--top_p 1.5",
    script: GEN,
    args: [...P, "--top_p", "1.5", "--filepath_to_store_outputs", "OUT/out.msgpack"],
    code: 2,
    says: /top_p/,
  },
  {
    name: "missing --prompt_file",
    script: DA,
    args: ["--prompt_file", "OUT/nope.txt", "--filepath_to_store_outputs", "OUT/out.pkl"],
    code: 1,
    says: /nope\.txt/,
  },
  {
    name: "missing --prompt_file (generate)",
    script: GEN,
    args: ["--prompt_file", "OUT/nope.txt", "--filepath_to_store_outputs", "OUT/out.msgpack"],
    code: 1,
    says: /nope\.txt/,
  },
  {
    name: "unwritable output under /proc",
    script: SIM,
    args: [...P, "--filepath_to_store_outputs", "/proc/x/out.pkl"],
    code: 1,
    says: /\/proc\/x\/out\.pkl/,
  },
  {
    name: "output path under a regular file",
    script: EXTRACT,
    args: [...P, "--module_ids", "dt_proj", "--filepath_to_store_outputs", "OUT/file/out.pkl"],
    code: 1,
    says: /out\.pkl/,
    setup: (dir) => Deno.writeTextFile(`${dir}/file`, "keep me\n"),
  },
  {
    name: "output path under a regular file (generate)",
    script: GEN,
    args: [...P, "--max_new_tokens", "3", "--filepath_to_store_outputs", "OUT/file/x/o.msgpack"],
    code: 1,
    says: /o\.msgpack/,
    setup: (dir) => Deno.writeTextFile(`${dir}/file`, "keep me\n"),
  },
  {
    name: "unknown --model_id",
    script: DA,
    args: [...P, "--model_id", "nope-9x9", "--filepath_to_store_outputs", "OUT/out.pkl"],
    code: 2,
    says: /nope-9x9/,
  },
  {
    name: "unsupported output extension",
    script: DA,
    args: [...P, "--filepath_to_store_outputs", "OUT/out.csv"],
    code: 2,
    says: /\.csv/,
  },
  {
    name: "unknown flag",
    script: SIM,
    args: [...P, "--bogus_flag", "1", "--filepath_to_store_outputs", "OUT/out.pkl"],
    code: 2,
    says: /--bogus_flag/,
  },
  // Every value is checked before the model is loaded, and a bad flag is a usage error (2).
  ...([
    [GEN, ["--top_k", "2147483648"], /--top_k: must be an integer from 0 to 256/],
    [GEN, ["--top_k", "257"], /--top_k/],
    [GEN, ["--temperature", "0"], /--temperature: 0 means greedy decoding and needs --top_k 1/],
    [GEN, ["--temperature", "1e-300"], /--temperature: must be 0 or a number/],
    [GEN, ["--temperature", "1e39"], /--temperature/],
    [GEN, ["--num_samples", "2147483648"], /--num_samples: must be an integer from 1 to 4096/],
    [GEN, ["--max_new_tokens", "1000000000000"], /--max_new_tokens/],
    [DA, ["--reduction", "mean", "--reduction_dim", "5"], /--reduction_dim: 5 is not a dimension/],
    [DA, ["--reduction", "fro", "--reduction_dim", "99"], /--reduction_dim: 99/],
    [DA, ["--reduction_dim", "3"], /--reduction_dim: 3/],
    [DA, ["--output_layout", "original"], /--output_layout: original .*\.pkl/],
    [
      EXTRACT,
      ["--module_ids", "dt_proj", "x_proj", "--output_layout", "original"],
      /one --module_id/,
    ],
    ["evaluate.ts", ["--text_files", "OUT/x.txt", "--context", "1000000000000"], /--context/],
  ] as [string, string[], RegExp][]).map(([script, args, says]): BadCase => ({
    name: `${script} ${args.join(" ")}`,
    script,
    args: [
      ...(script === "evaluate.ts" ? [] : P),
      ...(script === EXTRACT && !args.includes("--module_ids") ? ["--module_ids", "dt_proj"] : []),
      ...args,
      ...(args.includes("--output_layout") ? ["--filepath_to_store_outputs", "OUT/o.msgpack"] : []),
    ],
    code: 2,
    says,
  })),
  ...([
    [[], /one of the arguments --prompt --prompt_file is required/],
    [["--prompt", ""], /the prompt is empty/],
    [
      ["--prompt", "x", "--filepath_to_store_outputs", "OUT/.msgpack"],
      /'\.msgpack' has an extension but no name/,
    ],
    [
      ["--prompt", "x", "--filepath_to_store_outputs", `OUT/${"n".repeat(250)}.pkl`],
      /longer than 200 bytes/,
    ],
  ] as [string[], RegExp][]).map(([args, says]): BadCase => ({
    name: `extract_discrete_A.ts ${args.join(" ").slice(0, 60)}`,
    script: DA,
    args,
    code: 2,
    says,
  })),
  {
    name: "unreduced discrete-A beyond msgpack's 4 GiB, refused before any work",
    script: DA,
    args: [
      ...["--prompt_file", "OUT/big.txt", "--filepath_to_store_outputs", "OUT/o.msgpack"],
      ...["--model_id", "972M", "--layer_idxs", "0"],
    ],
    code: 2,
    says: /msgpack's 4 GiB limit/,
    // 18,800 bytes x 3584 x 16 floats = 4.0 GiB for one layer of the 972M shape.
    setup: (dir) => Deno.writeTextFile(`${dir}/big.txt`, "a".repeat(18_800)),
  },
  {
    name: "missing checkpoint file",
    script: DA,
    args: [
      ...P,
      "--pretrained_model_filepath",
      "OUT/none.pt",
      "--filepath_to_store_outputs",
      "OUT/o.pkl",
    ],
    code: 1,
    says: /none\.pt/,
  },
];

/** Every regular file under `dir`, relative paths. */
async function filesUnder(dir: string, rel = ""): Promise<string[]> {
  const out: string[] = [];
  for await (const e of Deno.readDir(`${dir}/${rel}`)) {
    const p = rel ? `${rel}/${e.name}` : e.name;
    if (e.isDirectory) out.push(...(await filesUnder(dir, p)));
    else out.push(p);
  }
  return out.sort();
}

Deno.test("scripts errors: one line on stderr, exit 2 (usage) or 1 (runtime), nothing left", async () => {
  const failures: string[] = [];
  await pool(
    6,
    CASES.map((c) => async () => {
      const dir = await Deno.makeTempDir({ prefix: "mb-scripts-errors-" });
      try {
        await c.setup?.(dir);
        const before = await filesUnder(dir);
        const args = [...MODEL, ...c.args.map((a) => a.replace(/^OUT/, dir))];
        // A later --model_id overrides the one in MODEL, as argparse does.
        const r = await runScript(c.script, args);
        const lines = r.stderr.split("\n").filter((l) => l.trim() !== "");
        const why: string[] = [];
        if (r.code !== c.code) why.push(`exit ${r.code}, want ${c.code}`);
        if (lines.length !== 1) why.push(`${lines.length} stderr lines`);
        if (/^\s+at /m.test(r.stderr)) why.push("stack trace");
        if (!c.says.test(lines[0] ?? "")) why.push(`stderr does not match ${c.says}`);
        if (r.stdout.trim() !== "") why.push(`stdout not empty: ${JSON.stringify(r.stdout)}`);
        const after = await filesUnder(dir);
        if (JSON.stringify(after) !== JSON.stringify(before)) {
          why.push(`left behind: ${after.filter((f) => !before.includes(f)).join(", ")}`);
        }
        const kept = await Deno.readTextFile(`${dir}/file`).catch(() => null);
        if (kept !== null && kept !== "keep me\n") {
          why.push("the existing file was changed");
        }
        if (why.length > 0) {
          failures.push(`${c.name}: ${why.join("; ")}\n    stderr: ${JSON.stringify(r.stderr)}`);
        }
      } finally {
        await Deno.remove(dir, { recursive: true });
      }
    }),
  );
  assert.deepEqual(failures, [], failures.join("\n"));
});

Deno.test("scripts errors: --help exits 0 and prints the original flag names", async () => {
  const r = await runScript(DA, ["--help"]);
  assert.equal(r.code, 0, r.stderr);
  for (const flag of ["--reduction_dim", "--return_log_probs", "--filepath_to_store_outputs"]) {
    assert.match(r.stdout, new RegExp(flag));
  }
  // The prompt is required (argparse shows a required group in parentheses).
  assert.match(r.stdout, /\(--prompt PROMPT \| --prompt_file PROMPT_FILE\)/);
  const g = await runScript(GEN, ["--help"]);
  assert.equal(g.code, 0, g.stderr);
  const help = g.stdout.replace(/\s+/g, " ");
  assert.doesNotMatch(help, /default: (null|undefined)/);
  assert.doesNotMatch(help, /\(default: [^)]*\) \(default:/, "one default per flag");
  assert.match(help, /shipped: 353M, 972M, tiny, small/);
  assert.match(
    help,
    /--top_k TOP_K keep the k most likely bytes, 0\.\.256; 0: off, 1: greedy \(default: 256\)/,
  );
  assert.match(help, /0 or 1: off \(default: 0\.98\)/);
  assert.match(help, /\[--prompt PROMPT \| --prompt_file PROMPT_FILE\]/, "optional for generate");
});

Deno.test("scripts errors: bench:cpu checks its flags before it measures", async () => {
  for (
    const [args, says] of [
      [["--repeats", "0"], /--repeats: must be >= 1/],
      [["--threads", "-1"], /--threads: must be >= 0/],
      [["--decode_steps", "1"], /--decode_steps: must be >= 2/],
      [["--bogus"], /--bogus/],
    ] as const
  ) {
    const r = await runScript("bench_cpu.ts", [...args]);
    const lines = r.stderr.split("\n").filter((l) => l.trim() !== "");
    assert.equal(r.code, 2, `${args.join(" ")}: ${r.stderr}`);
    assert.equal(lines.length, 1, r.stderr);
    assert.match(lines[0], says);
    assert.equal(r.stdout.trim(), "", "nothing measured");
  }
});
