/**
 * The original project's config file loads unchanged (its field names, its merge of `common` under
 * the model id, its default id), the toolkit's own spellings too, and every mistake in a config is
 * one clear error naming the key and the file.
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import { loadModel } from "../mod.ts";
import { ConfigError, DEFAULT_CONFIG_PATH, parseConfig } from "../src/config/config.ts";
import { FileByteSource } from "../src/checkpoint/byte_source.ts";
import { readSafetensors } from "../src/checkpoint/safetensors.ts";
import { runScript, runScriptOk } from "./helpers/scripts.ts";

/** The original's scripts/configs/mambabyte_lm.yml, exactly (its shape and values). */
const ORIGINAL = `general:
  device: "auto"
  dtype: "fp32"

model:
  common:
    vocab_size: 256
    d_state: 16
    d_conv: 4
    norm_eps: 1.0e-5
  353M:
    d_model: 1024
    num_layers: 53
    expand: 2
  972M:
    d_model: 1792
    num_layers: 48
    expand: 2

generation:
  use_fast_path: True
  disable_optimizations: False
  is_generating: True

visualization:
  use_fast_path: False
  disable_optimizations: True
  is_generating: True
`;

Deno.test("config: the original's file loads, 972M by default, num_layers and norm_eps read", () => {
  const cfg = parseConfig(ORIGINAL, "/x/mambabyte_lm.yml");
  assert.deepEqual(cfg.modelIds, ["353M", "972M"]);
  assert.equal(cfg.defaultModelId, "972M");
  const m = cfg.model();
  assert.equal(m.id, "972M");
  assert.deepEqual(
    [m.dims.dModel, m.dims.nLayer, m.dims.dInner, m.dims.dState, m.dims.dConv, m.dims.dtRank],
    [1792, 48, 3584, 16, 4, 112],
  );
  assert.equal(m.normEpsilon, 1e-5);
  assert.equal(cfg.model("353M").dims.nLayer, 53);
  assert.deepEqual(cfg.general, { device: "auto", dtype: "fp32", seed: 4740, threads: 0 });
  assert.deepEqual(cfg.generation(), {
    use_fast_path: true,
    disable_optimizations: false,
    is_generating: true,
  });
  assert.deepEqual(cfg.visualization("353M"), {
    use_fast_path: false,
    disable_optimizations: true,
    is_generating: true,
  });
});

Deno.test("config: default id without default_model_id is 972M if defined, else the first", () => {
  const yml = (ids: string[]) =>
    `model:\n  common: {vocab_size: 256, d_state: 16, d_conv: 4}\n` +
    ids.map((id) => `  ${id}: {d_model: 32, num_layers: 1}\n`).join("");
  assert.equal(parseConfig(yml(["a", "972M"]), "c.yml").defaultModelId, "972M");
  assert.equal(parseConfig(yml(["b", "a"]), "c.yml").defaultModelId, "b");
  assert.equal(
    parseConfig(yml(["a", "972M"]) + "  default_model_id: a\n", "c.yml").defaultModelId,
    "a",
  );
});

Deno.test("config: sections split per model id are merged as the original merges them", () => {
  const cfg = parseConfig(
    `model:
  common: {vocab_size: 256, d_state: 16, d_conv: 4}
  small: {d_model: 32, n_layer: 1}
  big: {d_model: 64, n_layer: 2}
generation:
  common: {max_new_tokens: 10, top_k: 5}
  big: {top_k: 1, temperature: 0}
`,
    "c.yml",
  );
  assert.deepEqual(cfg.generation("small"), { max_new_tokens: 10, top_k: 5 });
  assert.deepEqual(cfg.generation("big"), { max_new_tokens: 10, top_k: 1, temperature: 0 });
});

Deno.test("config: every mistake is one error naming the key and the file", () => {
  const base = `model:\n  common: {vocab_size: 256, d_state: 16, d_conv: 4}\n`;
  const bad = (text: string, message: RegExp) =>
    assert.throws(() => parseConfig(text, "/etc/cfg.yml"), (e: unknown) => {
      assert.ok(e instanceof ConfigError, String(e));
      assert.match(e.message, /^\/etc\/cfg\.yml: /);
      assert.match(e.message, message);
      assert.ok(!e.message.includes("\n"));
      return true;
    });
  bad(
    base + "  m: {d_model: 32, num_layers: 2, n_layer: 3}\n",
    /'num_layers' \(2\) and 'n_layer' \(3\)/,
  );
  bad(base + "  m: {d_model: 32, n_layer: 2, norm_eps: 0.5, norm_epsilon: 0.1}\n", /norm_eps/);
  bad(base + "  m: {d_model: 32, n_layer: 2, d_modle: 3}\n", /unknown key 'd_modle' in model\.m/);
  bad(base + "  m: {d_model: 32, n_layer: 2}\ngeneration: {top_kk: 3}\n", /unknown key 'top_kk'/);
  bad(base + "  m: {d_model: 32, n_layer: 2}\ntraining: {}\n", /unknown key 'training' in the top/);
  bad(base + "  m: {d_model: 32, n_layer: 2}\ngeneral: {seeed: 1}\n", /unknown key 'seeed'/);
  bad(base + "  m: {d_model: 32, n_layer: 2, use_fast_path: 3}\n", /'use_fast_path' must be true/);
  bad(base + "  m: {d_model: 32}\n", /'n_layer' is required/);
  bad(base + "  m: {d_model: 32, n_layer: 100000000}\n", /'n_layer' must be an integer from 1/);
  bad(base + "  m: {d_model: 20000, n_layer: 2}\n", /'d_model' must be an integer from 1 to 16384/);
  bad(base + "  m: {d_model: 32, n_layer: 2, d_state: 1000000}\n", /'d_state'/);
  bad(base + "  m: {d_model: 32, n_layer: 2, d_conv: 100000000}\n", /'d_conv'/);
  bad(base + "  m: {d_model: 32, n_layer: 2, expand: 1000000}\n", /'expand'/);
  bad(base + "  m: {d_model: 32, n_layer: 2, dt_rank: 100000000}\n", /'dt_rank'/);
  bad(base + "  m: {d_model: 9007199254740993, n_layer: 2}\n", /'d_model'/);
  bad(
    base + "  m: {d_model: 32, n_layer: 2, vocab_size: 16}\n",
    /'vocab_size' must be an integer from 256/,
  );
  bad(base + "  m: {d_model: 32, n_layer: 2, norm_epsilon: .inf}\n", /'norm_epsilon'/);
  bad(base + "  m: {d_model: 32, n_layer: 2, chunk_size: 1000000000000}\n", /'chunk_size'/);
  bad(base + "  m: {d_model: 32, n_layer: 2}\ngeneral: {threads: 4294967297}\n", /threads/);
  bad(base + "  m: {d_model: 32, n_layer: 2}\ngeneration: {temperature: 1e39}\n", /temperature/);
  bad(base + "  m: {d_model: 32, n_layer: 2}\ngeneration: {top_p: 2}\n", /top_p/);
});

Deno.test("config: norm_eps takes effect (eps 0.5 computes differently from 1e-5)", async () => {
  const dir = await Deno.makeTempDir({ prefix: "mb-cfg-eps-" });
  try {
    const logits: Float32Array[] = [];
    for (const eps of ["1.0e-5", "0.5"]) {
      const path = join(dir, `c${eps}.yml`);
      await Deno.writeTextFile(
        path,
        `model:\n  common: {vocab_size: 256, d_state: 16, d_conv: 4, norm_eps: ${eps}}\n` +
          `  972M: {d_model: 48, num_layers: 2, expand: 2}\n`,
      );
      const model = await loadModel({ configPath: path, device: "cpu", seed: 1 });
      try {
        assert.equal(model.eps, Number(eps));
        logits.push((await model.forward(new TextEncoder().encode("abc"))).logits);
      } finally {
        model.close();
      }
    }
    assert.notDeepEqual(logits[0], logits[1]);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("config: the default --config_path is the toolkit's, from any working folder", async () => {
  assert.ok(DEFAULT_CONFIG_PATH.endsWith("/configs/mambabyte_lm.yml"));
  const r = await runScript("generate.ts", ["--prompt", "hi", "--max_new_tokens", "3", "--quiet"], {
    cwd: "/tmp",
  });
  assert.equal(r.code, 0, r.stderr);
  assert.match(r.stdout, /^PROMPT\n/);
});

Deno.test("config: generation defaults and general.seed apply (flag > config > default)", async () => {
  const dir = await Deno.makeTempDir({ prefix: "mb-cfg-gen-" });
  try {
    const path = join(dir, "c.yml");
    const write = (seed: number) =>
      Deno.writeTextFile(
        path,
        `general: {seed: ${seed}}\nmodel:\n  common: {vocab_size: 256, d_state: 16, d_conv: 4}\n` +
          `  m: {d_model: 48, n_layer: 2}\ngeneration: {max_new_tokens: 7, top_k: 50}\n`,
      );
    /** The generated bytes and the stored settings of one run. */
    const gen = async (args: string[]) => {
      const out = join(dir, `o${Math.random()}.safetensors`);
      await runScriptOk("generate.ts", [
        ...["--config_path", path, "--quiet", "--prompt", "x"],
        ...["--filepath_to_store_outputs", out, ...args],
      ]);
      const src = await FileByteSource.open(out);
      try {
        const st = await readSafetensors(src);
        const bytes = await st.tensors.get("generated_bytes.0")!.read();
        return { bytes: [...bytes], meta: st.metadata ?? {} };
      } finally {
        src.close();
      }
    };
    await write(1);
    const a = await gen([]);
    assert.equal(a.bytes.length, 7, "generation.max_new_tokens");
    assert.equal(a.meta.top_k, "50", "generation.top_k");
    assert.equal((await gen(["--max_new_tokens", "4"])).bytes.length, 4, "the flag wins");
    assert.deepEqual((await gen(["--seed", "1"])).bytes, a.bytes, "general.seed is the seed");
    assert.equal(a.meta.seed, "1");
    await write(2);
    assert.notDeepEqual((await gen([])).bytes, a.bytes);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
