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
        if (c.setup && (await Deno.readTextFile(`${dir}/file`)) !== "keep me\n") {
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
