/**
 * Stop sequences (src/generate/stop.ts): each sample of a batch ends right after its own stop
 * sequence or at max_new_tokens; plain and speculative decoding end at the same byte; generate.ts
 * --stop prints every sample to its own end, in order, and stores the truncated bytes.
 */
import assert from "node:assert/strict";
import { loadModel } from "../mod.ts";
import { ModelDrafter } from "../src/generate/drafter.ts";
import { generateSpeculative } from "../src/generate/speculative.ts";
import { decodeStopArgument, StopMatcher, validateStops } from "../src/generate/stop.ts";
import { MambaByteError } from "../src/errors.ts";
import { readOutputs } from "../src/io/read.ts";
import type { HostTensor } from "../src/io/tensor.ts";
import { CONFIG, runScript, runScriptOk } from "./helpers/scripts.ts";

const enc = new TextEncoder();

/** The index just past the first occurrence of any stop in `bytes`, or bytes.length. */
function firstEnd(bytes: Uint8Array, stops: Uint8Array[]): number {
  for (let i = 1; i <= bytes.length; i++) {
    for (const s of stops) {
      if (i >= s.length && s.every((b, k) => bytes[i - s.length + k] === b)) return i;
    }
  }
  return bytes.length;
}

Deno.test("stop sequences: escapes, bounds, and the matcher against a plain search", () => {
  assert.deepEqual(
    decodeStopArgument("a\\n\\t\\r\\\\\\x00\\xfF"),
    Uint8Array.of(97, 10, 9, 13, 92, 0, 255),
  );
  assert.deepEqual(decodeStopArgument("é🚀"), enc.encode("é🚀"));
  for (const bad of ["\\q", "\\", "\\x4", "\\xzz"]) {
    assert.throws(
      () => decodeStopArgument(bad),
      (e: unknown) => e instanceof MambaByteError && e.exitCode === 2,
    );
  }
  assert.throws(() => validateStops([new Uint8Array(0)]), /1 to 256 bytes/);
  assert.throws(() => validateStops([new Uint8Array(257)]), /1 to 256 bytes/);
  assert.throws(
    () => validateStops(Array.from({ length: 17 }, () => Uint8Array.of(1))),
    /at most 16/,
  );
  // The matcher ends where a plain search finds the first occurrence.
  let seed = 12345;
  const rand = () => (seed = (seed * 1103515245 + 12345) >>> 0) % 3;
  for (let t = 0; t < 200; t++) {
    const bytes = Uint8Array.from({ length: 40 }, () => 97 + rand());
    const stops = [
      Uint8Array.from({ length: 1 + (t % 4) }, () => 97 + rand()),
      Uint8Array.of(97, 98, 99),
    ];
    const m = new StopMatcher(stops);
    let end = bytes.length;
    for (let i = 0; i < bytes.length; i++) {
      if (m.push(bytes[i])) {
        end = i + 1;
        break;
      }
    }
    assert.equal(end, firstEnd(bytes, stops), `case ${t}`);
  }
});

Deno.test("generate: every sample of a batch ends at its own stop; speculative decoding ends there too", async () => {
  const model = await loadModel({ configPath: CONFIG, modelId: "tiny", device: "cpu" });
  const drafterModel = await loadModel({ configPath: CONFIG, modelId: "tiny", device: "cpu" });
  try {
    const prompt = enc.encode("ROMEO:\n");
    const base = {
      maxNewTokens: 60,
      numSamples: 4,
      seed: 3,
      temperature: 1,
      topK: 256,
      topP: 0.98,
    };
    const full = await model.generate(prompt, base);
    const stops = [enc.encode("e"), enc.encode("\n")];
    const ends: [number, number][] = [];
    let steps = 0;
    const cut = await model.generate(prompt, {
      ...base,
      stop: stops,
      onBytes: () => void steps++,
      onEnd: (b, bytes) => void ends.push([b, bytes.length]),
    });
    const want = full.map((f) => firstEnd(f, stops));
    assert.ok(want.some((n) => n < 60), "the test needs a sample that stops early");
    for (let b = 0; b < 4; b++) {
      assert.deepEqual(cut[b], full[b].subarray(0, want[b]), `sample ${b}`);
    }
    assert.deepEqual(ends.map(([b]) => b).sort(), [0, 1, 2, 3]);
    for (const [b, n] of ends) assert.equal(n, want[b]);
    assert.equal(steps, Math.max(...want), "decoding stops when the last sample ends");
    // One sample, speculatively: the same bytes, the same end.
    // Rounds through the host and on the device (whose rounds run ahead past the stop).
    for (const s of [0, 1, 2]) {
      const one = { ...base, numSamples: 1, seed: s, stop: stops };
      const [plain] = await model.generate(prompt, one);
      for (const deviceRounds of [false, true]) {
        const d = new ModelDrafter(drafterModel);
        try {
          let ended = -1, streamed = 0;
          const { bytes } = await generateSpeculative(model, prompt, d, {
            ...one,
            deviceRounds,
            onBytes: () => void streamed++,
            onEnd: (_b, bytes) => void (ended = bytes.length),
          });
          assert.deepEqual(bytes, plain, `seed ${s} device=${deviceRounds}`);
          assert.equal(ended, plain.length);
          assert.equal(streamed, plain.length, "no byte past the stop is streamed");
        } finally {
          d.free();
        }
      }
    }
  } finally {
    model.close();
    drafterModel.close();
  }
});

Deno.test("generate, overlapped (each step queued before the last one's bytes are read): plain decoding's bytes, ends and callbacks", async () => {
  // The CPU runs ops as they are called, so this holds the loop's logic; the CUDA test holds it
  // where the next step really overlaps the host (tests/cuda_model_test.ts).
  const model = await loadModel({ configPath: CONFIG, modelId: "tiny", device: "cpu" });
  try {
    const prompt = enc.encode("ROMEO:\n");
    const stops = [enc.encode("e"), enc.encode("\n")];
    for (
      const opts of [
        { maxNewTokens: 40, numSamples: 1, topK: 1 },
        { maxNewTokens: 1, numSamples: 2, seed: 9 },
        { maxNewTokens: 60, numSamples: 4, seed: 3, stop: stops },
      ]
    ) {
      const run = async (overlap: boolean) => {
        const calls: string[] = [];
        const bytes = await model.generate(prompt, {
          ...opts,
          overlap,
          onBytes: (b, s) => void calls.push(`bytes ${s} ${b.join(",")}`),
          onEnd: (i, b) => void calls.push(`end ${i} ${b.length}`),
        });
        return { bytes, calls };
      };
      const plain = await run(false), overlapped = await run(true);
      assert.deepEqual(overlapped, plain, JSON.stringify(opts));
      assert.ok(plain.calls.some((c) => c.startsWith("end")));
    }
  } finally {
    model.close();
  }
});

Deno.test("generate.ts --stop: every sample printed to its own end, in order; the stored bytes are those", async () => {
  const dir = await Deno.makeTempDir({ prefix: "mb-stop-" });
  try {
    const out = `${dir}/g.msgpack`;
    const common = ["--config_path", CONFIG, "--model_id", "tiny", "--device", "cpu", "--quiet"];
    const args = [
      ...common,
      "--prompt",
      "ROMEO:\n",
      "--num_samples",
      "3",
      "--max_new_tokens",
      "80",
      "--seed",
      "5",
    ];
    const r = await runScriptOk("generate.ts", [
      ...args,
      "--stop",
      "\\n",
      "--stop",
      "e ",
      "--filepath_to_store_outputs",
      out,
    ]);
    const sep = "-".repeat(80);
    const body = r.stdout.split(`GENERATIONS\n${"=".repeat(11)}\n`)[1];
    const samples = body.slice(0, -(sep.length + 2)).split(`\n${sep}\n`);
    assert.equal(samples.length, 3);
    // The stored bytes end at each sample's own end, and are a prefix of the unstopped run's.
    const fullOut = `${dir}/full.msgpack`;
    await runScriptOk("generate.ts", [...args, "--filepath_to_store_outputs", fullOut]);
    const bytesOf = async (path: string) => {
      const rec = await readOutputs(path);
      const g = rec.generated_bytes as Map<number, HostTensor>;
      return [0, 1, 2].map((i) => g.get(i)!.data as Uint8Array);
    };
    const [cut, whole] = [await bytesOf(out), await bytesOf(fullOut)];
    const stops = [Uint8Array.of(10), enc.encode("e ")];
    for (let i = 0; i < 3; i++) {
      const n = firstEnd(whole[i], stops);
      assert.deepEqual(cut[i], whole[i].subarray(0, n), `sample ${i}`);
      assert.equal(samples[i], new TextDecoder().decode(cut[i]), `printed sample ${i}`);
    }
    assert.deepEqual((await readOutputs(out)).stop, ["\\n", "e "]);
    const bad = await runScript("generate.ts", [...common, "--prompt", "x", "--stop", "\\q"]);
    assert.equal(bad.code, 2);
    assert.match(bad.stderr, /argument --stop: unknown escape/);
    assert.equal(bad.stderr.trim().split("\n").length, 1);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
