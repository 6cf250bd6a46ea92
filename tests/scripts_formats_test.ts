/**
 * Every extraction script end to end on test-48x2 (random init), with its outputs in all three
 * formats read back by Debian's Python (pickle from the standard library, msgpack, a numpy
 * safetensors reader) and compared: keys, shapes, dtypes, integer layer keys, values, fields.
 */
import assert from "node:assert/strict";
import { skipWithoutPython } from "./helpers/python.ts";
import {
  assertNoProblems,
  CONFIG,
  listDir,
  pool,
  pyCheck,
  runScriptOk,
} from "./helpers/scripts.ts";

const noPython = await skipWithoutPython(["numpy", "msgpack"]);

const PROMPT = "Formats: ä, ß, 漢字 — and a second line\nending here.";
const EXTS = [".pkl", ".msgpack", ".safetensors"];

interface Case {
  script: string;
  flags: string[];
  /** Expected tensors: name -> [dtype, shape] with L = prompt bytes. */
  tensors: (L: number) => Record<string, [string, number[]]>;
  /** Expected non-tensor fields (subset). */
  fields: Record<string, unknown>;
}

const CASES: Case[] = [
  {
    script: "extract_module_outputs.ts",
    flags: ["--module_ids", "dt_proj", "conv1d", "--nonlinearity", "softplus", "--layer_idxs"],
    tensors: (L) => ({
      "dt_proj.0": ["float32", [L, 96]],
      "dt_proj.1": ["float32", [L, 96]],
      "conv1d.0": ["float32", [L, 96]],
      "conv1d.1": ["float32", [L, 96]],
      "log_probs": ["float32", [L - 1]],
      "ranks": ["int64", [L - 1]],
    }),
    fields: {
      model_id: "test-48x2",
      module_id: ["dt_proj", "conv1d"],
      nonlinearity: "softplus",
      pretrained_model_filepath: null,
    },
  },
  {
    script: "extract_discrete_A.ts",
    flags: ["--reduction", "norm", "--reduction_dim", "-2", "--layer_idxs"],
    tensors: (L) => ({
      "discrete_A.0": ["float32", [L, 16]],
      "discrete_A.1": ["float32", [L, 16]],
      "log_probs": ["float32", [L - 1]],
      "ranks": ["int64", [L - 1]],
    }),
    fields: { model_id: "test-48x2", reduction: "norm", reduction_dim: -2 },
  },
  {
    script: "extract_discrete_A.ts",
    flags: ["--layer_idxs"], // unreduced: (L, d_inner, d_state)
    tensors: (L) => ({
      "discrete_A.0": ["float32", [L, 96, 16]],
      "discrete_A.1": ["float32", [L, 96, 16]],
      "log_probs": ["float32", [L - 1]],
      "ranks": ["int64", [L - 1]],
    }),
    fields: { model_id: "test-48x2", reduction: null },
  },
  {
    script: "extract_input_sim_with_discrete_A.ts",
    flags: ["--layer_idxs"],
    tensors: (L) => ({
      "input_sim_with_discrete_A.0": ["float32", [L, 16]],
      "input_sim_with_discrete_A.1": ["float32", [L, 16]],
      "log_probs": ["float32", [L - 1]],
      "ranks": ["int64", [L - 1]],
    }),
    fields: { model_id: "test-48x2" },
  },
];

const CHECK = String.raw`
paths, want_t, want_f, prompt = ARG["paths"], ARG["tensors"], ARG["fields"], ARG["prompt"]
flats = {p: flat(p) for p in paths}
for p in paths:
    if p.endswith(".pkl"):
        with open(p, "rb") as f:
            head = f.read(2)
        equal(f"{p}: pickle protocol", head, b"\x80\x04")
        rec = load_record(p)
    elif p.endswith(".msgpack"):
        rec = load_record(p)
    else:
        rec = None
    if rec is not None:
        equal(f"{p}: prompt", rec.get("prompt"), prompt)
        for k in want_t:
            if "." in k:
                key, layer = k.rsplit(".", 1)
                if not isinstance(rec.get(key), dict) or int(layer) not in rec[key]:
                    problems.append(f"{p}: {key}[{layer}] (int key) missing")
    tensors, fields = flats[p]
    equal(f"{p}: tensor names", sorted(tensors), sorted(want_t))
    for k, (dt, shape) in want_t.items():
        if k in tensors:
            equal(f"{p}: {k} dtype", str(tensors[k].dtype), dt)
            equal(f"{p}: {k} shape", list(tensors[k].shape), shape)
            if not np.isfinite(tensors[k]).all(): problems.append(f"{p}: {k} not finite")
    for k, v in want_f.items():
        equal(f"{p}: field {k}", fields.get(k), v)
    equal(f"{p}: field prompt", fields.get("prompt"), prompt)
t0, f0 = flats[paths[0]]
for p in paths[1:]:
    t, f = flats[p]
    equal(f"{p}: fields vs {paths[0]}", f, f0)
    for k in t0:
        if k in t:
            equal(f"{p}: {k} dtype vs {paths[0]}", t[k].dtype.str, t0[k].dtype.str)
            if t[k].shape == t0[k].shape and not np.array_equal(t[k], t0[k]):
                problems.append(f"{p}: {k} values differ from {paths[0]}")
finish(names=sorted(t0))
`;

for (const c of CASES) {
  Deno.test({
    name: `scripts formats: ${c.script} ${
      c.flags.slice(0, -1).join(" ")
    } -> .pkl .msgpack .safetensors`,
    ignore: noPython,
    async fn() {
      const dir = await Deno.makeTempDir({ prefix: "mb-scripts-formats-" });
      try {
        const paths = EXTS.map((e) => `${dir}/sub dir/out${e}`);
        await pool(
          3,
          paths.map((path) => () =>
            runScriptOk(c.script, [
              ...["--config_path", CONFIG, "--model_id", "test-48x2", "--prompt", PROMPT],
              ...c.flags,
              ...["0", "1", "--return_log_probs", "--return_ranks"],
              ...["--filepath_to_store_outputs", path, "--quiet"],
            ])
          ),
        );
        // Parents created; nothing but the three outputs (no temp or probe files) left behind.
        assert.deepEqual(await listDir(`${dir}/sub dir`), EXTS.map((e) => `out${e}`).sort());
        const L = new TextEncoder().encode(PROMPT).length;
        const report = await pyCheck(CHECK, {
          paths,
          tensors: c.tensors(L),
          fields: { ...c.fields, layer_idxs: [0, 1] },
          prompt: PROMPT,
        });
        assertNoProblems(report, c.script);
      } finally {
        await Deno.remove(dir, { recursive: true });
      }
    },
  });
}
