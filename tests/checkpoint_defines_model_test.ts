/**
 * A checkpoint defines its own model: a mamba_ssm-format Hugging Face folder (config.json +
 * pytorch_model.bin, as the paper's released checkpoints), a .pt or a .safetensors loads without
 * --model_id; a padded vocabulary loads (only the first 256 rows are bytes); a --model_id that
 * disagrees is one short line.
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import { loadModel } from "../mod.ts";
import { writeSafetensors } from "../src/checkpoint/safetensors.ts";
import { completeDims } from "../src/config/dims.ts";
import { mambaSsmConfig, modelTensors } from "./checkpoint_helpers.ts";
import { FIXTURES, runScript } from "./helpers/scripts.ts";

const TEXT = new TextEncoder().encode("MambaByte reads bytes.");

async function logitsOf(options: Parameters<typeof loadModel>[0]) {
  const model = await loadModel({ device: "cpu", ...options });
  try {
    return { id: model.config.id, logits: (await model.forward(TEXT)).logits };
  } finally {
    model.close();
  }
}

Deno.test("checkpoint defines the model: a mamba_ssm HF folder loads without --model_id", async () => {
  const dir = await Deno.makeTempDir({ prefix: "mb-hf-" });
  try {
    await Deno.copyFile(`${FIXTURES}/rms_model.pt`, join(dir, "pytorch_model.bin"));
    await Deno.writeTextFile(join(dir, "config.json"), JSON.stringify(mambaSsmConfig(48, 2)));
    const viaFolder = await logitsOf({ checkpoint: dir });
    const viaFile = await logitsOf({
      checkpoint: `${FIXTURES}/rms_model.pt`,
      modelId: "test-48x2",
    });
    assert.equal(viaFolder.id, "test-48x2", "the config entry of the same shape lends its id");
    assert.deepEqual(viaFolder.logits, viaFile.logits);
    // config.json that disagrees with the weights is refused.
    await Deno.writeTextFile(join(dir, "config.json"), JSON.stringify(mambaSsmConfig(48, 3)));
    await assert.rejects(
      () => logitsOf({ checkpoint: dir }),
      /config\.json disagrees with the weights: n_layer 3 \(weights: 2\)/,
    );
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("checkpoint defines the model: padded vocabulary, unknown shape, wrong --model_id", async () => {
  const dir = await Deno.makeTempDir({ prefix: "mb-pad-" });
  try {
    // 264 rows (pad_vocab_size_multiple 8 of a 260-token vocabulary): the first 256 are bytes.
    const dims = completeDims({
      vocabSize: 264,
      dModel: 40,
      nLayer: 3,
      dState: 8,
      dConv: 3,
      expand: 2,
    });
    const path = join(dir, "padded.safetensors");
    const ts = await modelTensors(dims, "rmsnorm", "mamba_ssm", { lmHead: true });
    await writeSafetensors(path, ts.map((t) => ({ ...t, dtype: "F32" as const })));
    const model = await loadModel({ checkpoint: path, device: "cpu" });
    try {
      assert.equal(model.config.id, "padded", "no config entry has this shape: the file's name");
      assert.deepEqual(
        [model.dims.dModel, model.dims.nLayer, model.dims.dState, model.dims.dConv],
        [40, 3, 8, 3],
      );
      assert.equal(model.weights.vocabRows, 264);
      const { logits } = await model.forward(TEXT);
      assert.equal(logits.length, TEXT.length * 256);
    } finally {
      model.close();
    }
    const r = await runScript("extract_discrete_A.ts", [
      ...["--pretrained_model_filepath", path, "--model_id", "972M", "--prompt", "x", "--quiet"],
    ]);
    assert.equal(r.code, 1);
    const lines = r.stderr.trim().split("\n");
    assert.equal(lines.length, 1, r.stderr);
    assert.match(
      lines[0],
      /^error: checkpoint .*padded\.safetensors has d_model=40 n_layer=3 .* but model '972M' of .* has d_model=1792 n_layer=48 .*leave out --model_id/,
    );
    assert.ok(lines[0].length < 400, "one short line");
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
