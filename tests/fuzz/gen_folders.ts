/**
 * Fuzz generators of configuration: YAML configs and Hugging Face folders (config.json, indexes).
 *
 * @module
 */

import { buildZip, torchArchiveFiles, torchSavePickle } from "../checkpoint_helpers.ts";
import { baseTensors, type CaseFile, deepJson, enc, type FuzzCase } from "./case.ts";
import { safetensorsFile, torchZip } from "./gen_checkpoints.ts";
import { mutateBytes, mutateText } from "./mutate.ts";
import type { Rng } from "./rng.ts";

// ---- YAML configs ------------------------------------------------------------------------------

const YAML_BASE = `general:
  device: cpu
  dtype: fp32
  seed: 4740
  threads: 1
model:
  default_model_id: fuzz
  common:
    vocab_size: 256
    d_state: 4
    d_conv: 4
    expand: 2
    dt_rank: auto
    norm: layernorm
    norm_epsilon: 1.0e-5
    chunk_size: 64
  fuzz:
    d_model: 8
    n_layer: 2
    checkpoint: m.safetensors
generation:
  max_new_tokens: 1
  top_k: 1
`;

const YAML_TOKENS = [
  "1e400",
  "-1",
  "0",
  "0x10",
  "1.5",
  "abc",
  "[]",
  "{}",
  "~",
  "null",
  "true",
  '"\\x00"',
  "!!binary aGVsbG8=",
  "!!js/function 'x'",
  "&a [1]",
  "*a",
  "*undefined_alias",
  "[[[[[[[[[[[[[[[[]]]]]]]]]]]]]]]]",
  "|\n  block",
  ">-",
  "'unterminated",
  "{a: {b: {c: {d: 1}}}}",
  "9".repeat(400),
  "- - - -",
  "\t1",
  "? complex",
  "%YAML 1.2",
  "---",
  "...",
];

/** A YAML config case (through parseConfig). */
export function genYaml(rng: Rng): FuzzCase {
  const ops: string[] = [];
  let text = YAML_BASE;
  const mode = rng.int(10);
  if (mode < 2) {
    ops.push("valid");
  } else if (mode < 5) {
    ops.push("text");
    text = mutateText(rng, text, YAML_TOKENS);
  } else if (mode === 5) {
    ops.push("deep");
    const n = rng.pick([100, 5000, 50_000]);
    text += `deep: ${"[".repeat(n)}${"]".repeat(n)}\n`;
  } else if (mode === 6) {
    ops.push("aliases");
    // A billion-laughs document: each level refers to the previous one ten times.
    let doc = "a0: &a0 [x, x, x, x, x, x, x, x, x, x]\n";
    for (let i = 1; i < rng.pick([5, 10, 20]); i++) {
      doc += `a${i}: &a${i} [${Array(10).fill(`*a${i - 1}`).join(", ")}]\n`;
    }
    text += doc;
  } else if (mode === 7) {
    ops.push("many-keys");
    const n = rng.pick([1000, 100_000]);
    text += Array.from({ length: n }, (_, i) => `  m${i}:\n    d_model: 8\n    n_layer: 2`).join(
      "\n",
    )
      .replace(/^/, "model2:\n");
  } else {
    ops.push("bytes");
    const m = mutateBytes(rng, enc.encode(text));
    text = new TextDecoder().decode(m.data);
    ops.push(...m.ops);
  }
  return { target: "yaml", desc: `yaml ${ops.join(",")}`, files: [], entry: "", yaml: text };
}

// ---- Hugging Face folders ----------------------------------------------------------------------

function hfConfig(rng: Rng, ops: string[]): string {
  const c: Record<string, unknown> = rng.chance(0.5)
    ? {
      model_type: "mamba",
      vocab_size: 256,
      hidden_size: 8,
      num_hidden_layers: 2,
      state_size: 4,
      conv_kernel: 4,
      expand: 2,
    }
    : { d_model: 8, n_layer: 2, vocab_size: 256, ssm_cfg: { d_state: 4, d_conv: 4, expand: 2 } };
  if (rng.chance(0.2)) {
    ops.push("config-values");
    c[rng.pick(Object.keys(c))] = rng.pick<unknown>([1e308, -1, "8", null, [], {}, 2 ** 53 + 2]);
  }
  let text = JSON.stringify(c);
  if (rng.chance(0.1)) {
    ops.push("config-dup");
    text = text.replace("{", '{"d_model": 9999,');
  }
  if (rng.chance(0.05)) {
    ops.push("config-deep");
    text = text.replace("{", `{"deep": ${deepJson(rng, rng.pick([100, 100_000]))},`);
  }
  if (rng.chance(0.05)) {
    ops.push("config-bom");
    text = "\ufeff" + text;
  }
  if (rng.chance(0.05)) {
    ops.push("config-big");
    text = text.replace("{", `{"pad": "${"x".repeat(rng.pick([1000, 2 << 20]))}",`);
  }
  return text;
}

/** A Hugging Face folder case: config.json, weights, maybe an index. */
export async function genHfFolder(rng: Rng): Promise<FuzzCase> {
  const ops: string[] = [];
  const files: CaseFile[] = [];
  if (rng.chance(0.9)) {
    let cfg: Uint8Array = enc.encode(hfConfig(rng, ops));
    if (rng.chance(0.2)) {
      const m = mutateBytes(rng, cfg);
      cfg = m.data;
      ops.push("config-bytes");
    }
    const kind = rng.next();
    if (kind < 0.03) {
      ops.push("config-fifo");
      files.push({ path: "hf/config.json", kind: "fifo" });
    } else if (kind < 0.06) {
      ops.push("config-dir");
      files.push({ path: "hf/config.json", kind: "dir" });
    } else files.push({ path: "hf/config.json", data: cfg });
  }
  const tensors = baseTensors(rng);
  const layout = rng.pick(["safetensors", "bin", "sharded", "sharded-bin"]);
  ops.push(layout);
  const wOps: string[] = [];
  if (layout === "safetensors") {
    files.push({ path: "hf/model.safetensors", data: safetensorsFile(rng, tensors, wOps) });
  } else if (layout === "bin") {
    files.push({ path: "hf/pytorch_model.bin", data: await torchZip(rng, wOps) });
  } else {
    const half = rng.int(tensors.length + 1);
    const shards = [tensors.slice(0, half), tensors.slice(half)];
    const names = ["model-00001-of-00002", "model-00002-of-00002"].map((n) =>
      layout === "sharded" ? `${n}.safetensors` : `${n}.bin`
    );
    const map: Record<string, unknown> = {};
    for (let s = 0; s < 2; s++) {
      for (const t of shards[s]) map[t.name] = names[s];
      const data = layout === "sharded" ? safetensorsFile(rng, shards[s], wOps) : await buildZip(
        torchArchiveFiles(
          ...Object.values(torchSavePickle(shards[s])) as [Uint8Array, Map<string, Uint8Array>],
        ),
      );
      files.push({ path: `hf/${names[s]}`, data });
    }
    if (rng.chance(0.2)) {
      ops.push("index-names");
      map[rng.pick(Object.keys(map))] = rng.pick<unknown>([
        "../config.json",
        "",
        ".",
        5,
        null,
        "/etc/passwd",
        names[0],
      ]);
    }
    let index = JSON.stringify({ metadata: {}, weight_map: rng.chance(0.97) ? map : [map] });
    if (rng.chance(0.1)) {
      ops.push("index-dup");
      index = index.replace('{"metadata"', '{"weight_map":{},"metadata"');
    }
    if (rng.chance(0.05)) {
      ops.push("index-deep");
      index = index.replace("{", `{"x":${deepJson(rng, 100_000)},`);
    }
    const idx = layout === "sharded"
      ? "model.safetensors.index.json"
      : "pytorch_model.bin.index.json";
    files.push({ path: `hf/${idx}`, data: enc.encode(index) });
  }
  if (wOps.length) ops.push(...wOps);
  if (rng.chance(0.3)) {
    const f = rng.pick(files.filter((f) => f.data));
    const m = mutateBytes(rng, f.data!);
    f.data = m.data;
    ops.push(`${f.path.slice(3)}:${m.ops.join("+")}`);
  }
  return { target: "hf-folder", desc: `hf folder ${ops.join(",")}`, files, entry: "hf" };
}
