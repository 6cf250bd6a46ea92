/**
 * tools/train/train.py, the script that trains the bundled models, run by Debian's Python and
 * PyTorch on the CPU: its self test (the chunked scan against the sequential float64 definition,
 * values and gradients; the model's segmented forward; the checkpoint names), its refusal of the
 * CUDA scan without a GPU, a tiny training run (with extra training text) whose checkpoint the
 * toolkit loads and scores as the script did, and kjv_text.py, which makes that extra text. The CUDA scan (tools/train/scan_cuda.cu) needs a GPU: the same self test
 * checks it there (tools/device/train_scan_check.sh). Distillation (--teacher): the teacher's
 * distributions with the state carried equal one unsegmented forward, a model agrees with itself
 * everywhere, and a distilled run reports its agreement; hostile teacher files are refused.
 */
import assert from "node:assert/strict";
import { loadModel } from "../mod.ts";
import { modelBitsPerByte } from "../src/analysis/bits_per_byte.ts";
import { runPython, runPythonArgs, skipWithoutPython } from "./helpers/python.ts";
import { withTempDir } from "./helpers/temp_dir.ts";

const ROOT = new URL("../", import.meta.url).pathname;
const TRAIN = `${ROOT}tools/train/train.py`;
const ignore = await skipWithoutPython(["torch", "numpy"]);

/** train.py with `args`, one thread (the tests' CPU is shared). */
function train(args: string[]) {
  return runPythonArgs([TRAIN, ...args], { OMP_NUM_THREADS: "1" });
}

/** train.py's tiny-run flags: CPU, one thread, a 32-wide model of `layers` layers. */
function tinyRun(dir: string, name: string, layers: number, extra: string[] = []) {
  return train([
    "--data",
    `${dir}/t.txt`,
    "--out_dir",
    dir,
    "--name",
    name,
    "--device",
    "cpu",
    "--threads",
    "1",
    "--d_model",
    "32",
    "--n_layer",
    String(layers),
    "--seq_len",
    "64",
    "--batch_size",
    "4",
    "--steps",
    "6",
    "--warmup",
    "2",
    "--eval_every",
    "3",
    ...extra,
  ]);
}

Deno.test({
  name: "train.py --self_test passes on the CPU",
  ignore,
  async fn() {
    const r = await train(["--self_test", "--device", "cpu"]);
    assert.equal(r.code, 0, r.stdout + r.stderr);
    assert.match(r.stdout, /\[self_test\] PASSED/);
    assert.doesNotMatch(r.stdout, /\bBAD\b/);
  },
});

Deno.test({
  name:
    "train.py: --scan cuda without a CUDA device, a missing file, no time to train: one error line",
  ignore,
  async fn() {
    await withTempDir("mb-train-", async (dir) => {
      await Deno.writeTextFile(`${dir}/t.txt`, "abc ".repeat(2000));
      const r = await train(["--data", `${dir}/t.txt`, "--device", "cpu", "--scan", "cuda"]);
      assert.equal(r.code, 2);
      assert.equal(r.stderr.trim(), "error: --scan cuda needs a CUDA device");
      const missing = await train(["--data", `${dir}/t.txt`, "--extra_data", `${dir}/none.txt`]);
      assert.equal(missing.code, 2);
      assert.equal(missing.stderr.trim(), `error: ${dir}/none.txt: no such file`);
      // no step fits the time: no checkpoint that would pass for a trained model
      const late = await train([
        "--data",
        `${dir}/t.txt`,
        "--out_dir",
        dir,
        "--device",
        "cpu",
        "--d_model",
        "16",
        "--n_layer",
        "1",
        "--max_minutes",
        "0.000001",
      ]);
      assert.equal(late.code, 1);
      assert.match(late.stderr.trim(), /^error: no training step fit in --max_minutes 1e-06/);
      assert.equal((await Array.fromAsync(Deno.readDir(dir))).length, 1); // t.txt alone
    });
  },
});

Deno.test({
  name: "train.py: a tiny run's checkpoint loads, and the toolkit scores it as the script did",
  ignore,
  async fn() {
    await withTempDir("mb-train-", async (dir) => {
      const line = "To be, or not to be, that is the question: whether 'tis nobler in the mind\n";
      const text = new TextEncoder().encode(line.repeat(300));
      await Deno.writeFile(`${dir}/t.txt`, text);
      await Deno.writeTextFile(
        `${dir}/extra.txt`,
        "And God said, Let there be light.\n".repeat(40),
      );
      const r = await tinyRun(dir, "t", 2, [
        "--extra_data",
        `${dir}/extra.txt`,
        "--extra_fraction",
        "0.5",
      ]);
      assert.equal(r.code, 0, r.stdout + r.stderr);
      const log = JSON.parse(await Deno.readTextFile(`${dir}/t.json`));
      assert.equal(log.steps_done, 6);
      assert.equal(log.model_args.scan, "chunked");
      assert.equal(log.data.extra.length, 1);
      assert.equal(log.data.extra[0].bytes, 34 * 40);
      assert.equal(log.data.extra_rows_per_batch, 2); // half of the batch of 4
      const model = await loadModel({ checkpoint: `${dir}/t.safetensors`, device: "cpu" });
      try {
        assert.equal(model.dims.dModel, 32);
        assert.equal(model.dims.nLayer, 2);
        const held = text.subarray(Math.floor(text.length * 0.95));
        const s = await modelBitsPerByte(model, held);
        assert.equal(s.scored, log.held_out_scored_bytes);
        assert.ok(
          Math.abs(s.bitsPerByte - log.held_out_bits_per_byte) < 0.01,
          `toolkit ${s.bitsPerByte} vs script ${log.held_out_bits_per_byte}`,
        );
      } finally {
        model.close();
      }
    });
  },
});

Deno.test({
  name: "train.py --teacher: distributions, agreement, a distilled run, and a refused teacher",
  ignore,
  async fn() {
    await withTempDir("mb-distill-", async (dir) => {
      const line =
        "Now is the winter of our discontent made glorious summer by this sun of York;\n";
      await Deno.writeTextFile(`${dir}/t.txt`, line.repeat(200));
      const teacher = await tinyRun(dir, "teacher", 2);
      assert.equal(teacher.code, 0, teacher.stdout + teacher.stderr);
      // The teacher's rows, segment by segment with the state carried, against one forward; a
      // model agrees with itself on every byte.
      const check = await runPython(
        `
import sys, numpy as np, torch
sys.path.insert(0, sys.argv[1])
import train
t = train.load_checkpoint(sys.argv[2], torch.device("cpu"))
data = np.frombuffer(open(sys.argv[3], "rb").read()[:700], dtype=np.uint8)
cpu = torch.device("cpu")
lp = train.teacher_log_probs(t, data, cpu, rows=1, segment=97)
with torch.no_grad():
    full = torch.log_softmax(t(torch.from_numpy(data.astype(np.int64))[None, :-1])[0].float(), -1)
print("rows", lp.shape[0], lp.shape[1])
print("maxdiff", float((lp.float() - full).abs().max()))
print("mass", float((lp.float().exp().sum(-1) - 1).abs().max()))
# slices side by side (two for 699 bytes: each at least 4 x warm), the second warmed up by 64 bytes:
# the first slice is exact, the second sees 64 bytes of context (more than this model remembers)
lp5 = train.teacher_log_probs(t, data, cpu, rows=5, warm=64, segment=50)
print("first", float((lp5[:140].float() - full[:140]).abs().max()))
print("all", float((lp5.float() - full).abs().max()))
print("self", train.argmax_agreement(t, t, data, cpu, rows=3, warm=32, segment=64))
`,
        [`${ROOT}tools/train`, `${dir}/teacher.safetensors`, `${dir}/t.txt`],
      );
      assert.equal(check.code, 0, check.stderr);
      const v = Object.fromEntries(
        check.stdout.trim().split("\n").map((l) => {
          const [k, ...rest] = l.split(" ");
          return [k, rest.map(Number)];
        }),
      );
      assert.deepEqual(v.rows, [699, 256]);
      assert.ok(v.maxdiff[0] < 0.05, `bf16 rows vs one forward: ${v.maxdiff[0]}`); // bf16 rounding of log p
      assert.ok(v.mass[0] < 0.05, `probabilities sum to ${v.mass[0]} off 1`);
      assert.ok(v.first[0] < 0.05, `the first slice: ${v.first[0]}`);
      assert.ok(v.all[0] < 0.1, `warmed slices vs one forward: ${v.all[0]}`);
      assert.equal(v.self[0], 1);

      const student = await tinyRun(dir, "student", 1, ["--teacher", `${dir}/teacher.safetensors`]);
      assert.equal(student.code, 0, student.stdout + student.stderr);
      const log = JSON.parse(await Deno.readTextFile(`${dir}/student.json`));
      assert.equal(log.distill_weight, 0.9);
      for (const part of ["selection", "held_out"]) {
        const a = log[`teacher_agreement_${part}`];
        assert.ok(a >= 0 && a <= 1, `${part}: ${a}`);
      }
      assert.match(student.stdout, /agreement with the teacher's most probable byte/);

      // A header that claims more bytes than the file holds: one error line, exit 2, no run.
      const bad = new Uint8Array(16);
      new DataView(bad.buffer).setBigUint64(0, 1n << 40n, true);
      await Deno.writeFile(`${dir}/bad.safetensors`, bad);
      const refused = await tinyRun(dir, "refused", 1, ["--teacher", `${dir}/bad.safetensors`]);
      assert.equal(refused.code, 2);
      assert.match(
        refused.stderr.trim(),
        /^error: --teacher .*bad\.safetensors: header of \d+ bytes/,
      );
      assert.equal(refused.stderr.trim().split("\n").length, 1);
      // A config that claims far more layers than the file's tensors hold: refused before the
      // model is allocated.
      const file = await Deno.readFile(`${dir}/teacher.safetensors`);
      const hlen = Number(new DataView(file.buffer).getBigUint64(0, true));
      const header = JSON.parse(new TextDecoder().decode(file.subarray(8, 8 + hlen)));
      const config = JSON.parse(header.__metadata__.config);
      header.__metadata__.config = JSON.stringify({ ...config, n_layer: 100000 });
      const hb = new TextEncoder().encode(JSON.stringify(header));
      const huge = new Uint8Array(8 + hb.length + file.length - 8 - hlen);
      new DataView(huge.buffer).setBigUint64(0, BigInt(hb.length), true);
      huge.set(hb, 8);
      huge.set(file.subarray(8 + hlen), 8 + hb.length);
      await Deno.writeFile(`${dir}/huge.safetensors`, huge);
      const claims = await tinyRun(dir, "claims", 1, ["--teacher", `${dir}/huge.safetensors`]);
      assert.equal(claims.code, 2);
      assert.match(claims.stderr.trim(), /its config claims \d+ parameters, the file holds \d+$/);
      const weight = await tinyRun(dir, "w", 1, [
        "--teacher",
        `${dir}/teacher.safetensors`,
        "--distill_weight",
        "1.5",
      ]);
      assert.equal(weight.code, 2);
      assert.equal(weight.stderr.trim(), "error: --distill_weight must be between 0 and 1");
    });
  },
});

Deno.test({
  name: "kjv_text.py: one verse a line, a blank line between books, the markup removed",
  ignore,
  async fn() {
    await withTempDir("mb-kjv-", async (dir) => {
      const verses = {
        "Genesis 1:1": "In the beginning God created the heaven and the earth.",
        "Genesis 1:2": "# And darkness [was] upon  the face of the deep.",
        "1 John 1:1": "That which was from the beginning, [which] we have heard,",
      };
      await Deno.writeTextFile(`${dir}/v.json`, JSON.stringify(verses));
      const r = await runPythonArgs([
        `${ROOT}tools/train/kjv_text.py`,
        `${dir}/v.json`,
        `${dir}/k.txt`,
      ]);
      assert.equal(r.code, 0, r.stderr);
      assert.equal(
        await Deno.readTextFile(`${dir}/k.txt`),
        "In the beginning God created the heaven and the earth.\n" +
          "And darkness was upon the face of the deep.\n\n" +
          "That which was from the beginning, which we have heard,\n",
      );
      assert.match(r.stdout, /k\.txt: \d+ bytes, sha256 [0-9a-f]{64}/);
    });
  },
});
