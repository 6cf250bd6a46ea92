/**
 * The bundled models (pretrained_models/, trained by tools/train/train.py): they load through the
 * config ids, the toolkit's bits per byte (also the byte drafter's) on the held-out Tiny Shakespeare text equals the training
 * script's own evaluation (recorded in pretrained_models/<id>.json) within 0.01, evaluate.ts runs
 * end to end, and greedy generation from tiny is deterministic and mostly printable.
 */
import assert from "node:assert/strict";
import { loadModel } from "../mod.ts";
import { modelBitsPerByte } from "../src/analysis/bits_per_byte.ts";
import { runScript } from "./helpers/scripts.ts";

const ROOT = new URL("../", import.meta.url).pathname;
const CONFIG = `${ROOT}configs/mambabyte_lm.yml`;
const CORPUS = `${ROOT}../shared/corpora/tinyshakespeare.txt`;

const corpus = await Deno.readFile(CORPUS).catch(() => null);
if (!corpus) console.warn(`pretrained_test: ${CORPUS} is absent; held-out checks skipped`);

/** The training script's split: the last 5% of the bytes, from floor(0.95 n). */
function heldOut(bytes: Uint8Array): Uint8Array {
  return bytes.subarray(Math.floor(bytes.length * 0.95));
}

for (const id of ["tiny", "small"]) {
  Deno.test(`bundled ${id}: loads by id without --pretrained_model_filepath`, async () => {
    const model = await loadModel({ configPath: CONFIG, modelId: id, device: "cpu" });
    try {
      assert.match(model.source, new RegExp(`pretrained_models/${id}\\.safetensors$`));
      assert.equal(model.weights.normKind, "layernorm");
    } finally {
      model.close();
    }
  });

  Deno.test({
    name: `bundled ${id}: held-out bits per byte equal the training script's within 0.01`,
    ignore: !corpus,
    async fn() {
      const log = JSON.parse(await Deno.readTextFile(`${ROOT}pretrained_models/${id}.json`));
      const model = await loadModel({ configPath: CONFIG, modelId: id, device: "cpu" });
      try {
        const r = await modelBitsPerByte(model, heldOut(corpus!));
        assert.equal(r.scored, log.held_out_scored_bytes);
        const diff = Math.abs(r.bitsPerByte - log.held_out_bits_per_byte);
        assert.ok(
          diff < 0.01,
          `toolkit ${r.bitsPerByte} vs training ${log.held_out_bits_per_byte}`,
        );
      } finally {
        model.close();
      }
    },
  });
}

Deno.test({
  name: "bundled spec/draft_bytes: held-out bits per byte equal the training script's within 0.01",
  ignore: !corpus,
  async fn() {
    const log = JSON.parse(
      await Deno.readTextFile(`${ROOT}pretrained_models/spec/draft_bytes.json`),
    );
    const model = await loadModel({
      checkpoint: `${ROOT}pretrained_models/spec/draft_bytes.safetensors`,
      device: "cpu",
    });
    try {
      const r = await modelBitsPerByte(model, heldOut(corpus!));
      assert.equal(r.scored, log.held_out_scored_bytes);
      const diff = Math.abs(r.bitsPerByte - log.held_out_bits_per_byte);
      assert.ok(diff < 0.01, `toolkit ${r.bitsPerByte} vs training ${log.held_out_bits_per_byte}`);
    } finally {
      model.close();
    }
  },
});

Deno.test("evaluate.ts end to end on a small file, stored as JSON", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const text = `${dir}/sample.txt`;
    await Deno.writeTextFile(text, "To be, or not to be, that is the question:\n".repeat(20));
    const out = `${dir}/eval.json`;
    const r = await runScript("evaluate.ts", [
      "--model_id",
      "tiny",
      "--text_files",
      text,
      "--context",
      "100",
      "--device",
      "cpu",
      "--filepath_to_store_outputs",
      out,
      "--quiet",
    ]);
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, /model bits\/byte/);
    const rec = JSON.parse(await Deno.readTextFile(out));
    assert.equal(rec.model_id, "tiny");
    assert.equal(rec.context, 100);
    const row = rec.files[0];
    assert.equal(row.bytes, 860);
    // A repeated line is easy for a trained model: far below the 8 bits of a uniform guess.
    assert.ok(
      row.model_bits_per_byte > 0 && row.model_bits_per_byte < 4,
      `${row.model_bits_per_byte}`,
    );
    assert.ok(row.gzip_bits_per_byte === null || row.gzip_bits_per_byte > 0);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("greedy generation from tiny is deterministic and mostly printable", async () => {
  const model = await loadModel({ configPath: CONFIG, modelId: "tiny", device: "cpu" });
  try {
    const prompt = new TextEncoder().encode("ROMEO:\n");
    const [a] = await model.generate(prompt, { maxNewTokens: 200, topK: 1 });
    const [b] = await model.generate(prompt, { maxNewTokens: 200, topK: 1 });
    assert.deepEqual(a, b);
    const printable = a.filter((c) => (c >= 32 && c < 127) || c === 10).length;
    assert.ok(printable / a.length > 0.95, `printable fraction ${printable / a.length}`);
    const text = new TextDecoder().decode(a);
    assert.match(text, /[a-z]{3,} [a-z]{2,}/, "expected words");
  } finally {
    model.close();
  }
});
