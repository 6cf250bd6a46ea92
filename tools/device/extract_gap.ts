// extract_gap.ts — where the discrete-A extractions spend their time beyond the forward: the
// forward alone, with the taps they ask for (callbacks that do nothing), with the log-probability
// collector, with the discrete-A ops enqueued but their results read only at the end, and the
// whole extractions, each the median of five runs after one untimed (972M shape, random weights,
// bench:extract's 7,850 random bytes). On the GPU machine, after tools/device/lib.sh's setup_deno:
//   deno run --cached-only --no-check -A tools/device/extract_gap.ts [fp32|bf16] [972M] [cuda]
// (a model id and cpu after it: a quick try of the script here)
import { loadModel } from "../../src/api.ts";
import { DiscreteAExtraction, InputSimilarityExtraction } from "../../src/analysis/discrete_a.ts";
import { extractDiscreteA, extractInputSimilarity } from "../../src/analysis/extract.ts";
import type { DeviceTap, TapName } from "../../src/model/model.ts";
import { median, printableBytes } from "../../scripts/lib/bench.ts";

const dtype = Deno.args[0] === "bf16" ? "bf16" : "fp32";
const model = await loadModel({
  configPath: "configs/mambabyte_lm.yml",
  modelId: Deno.args[1] ?? "972M",
  checkpoint: null,
  device: Deno.args[2] === "cpu" ? "cpu" : "cuda",
  dtype,
});
const be = model.backend;
const bytes = printableBytes(7850); // bench:extract's bytes when no PG19 sample is at hand
const layers = [...Array(model.dims.nLayer).keys()];
console.log(`${dtype}: chunk ${model.chunkSize}, ${bytes.length} bytes`);

/** The median of five timed runs after one untimed, in ms; `parts` are summed per run too. */
async function time(label: string, f: (parts: Map<string, number>) => Promise<void>) {
  await f(new Map());
  be.sync();
  const t: number[] = [];
  const parts = new Map<string, number[]>();
  for (let i = 0; i < 5; i++) {
    const p = new Map<string, number>();
    const t0 = performance.now();
    await f(p);
    be.sync();
    t.push(performance.now() - t0);
    for (const [k, v] of p) parts.set(k, [...(parts.get(k) ?? []), v]);
  }
  const extra = [...parts].map(([k, v]) => `, ${k} ${median(v).toFixed(2)}`).join("");
  console.log(`${dtype} ${label.padEnd(52)} ${median(t).toFixed(2).padStart(8)} ms${extra}`);
}

/** After the pass's ops have run: how long reading the results takes (their downloads). */
function timeResults(parts: Map<string, number>, results: () => unknown) {
  be.sync();
  const t0 = performance.now();
  results();
  parts.set("results()", performance.now() - t0);
}

/** A forward with `taps` handed to `onDeviceTap`, and log-probabilities when `scores`. */
async function pass(
  taps: TapName[],
  scores: boolean,
  onDeviceTap: ((t: DeviceTap) => void) | undefined,
  parts: Map<string, number>,
) {
  const n = bytes.length - 1;
  const collector = scores
    ? model.logProbCollector(bytes, new Float32Array(n), new Int32Array(n))
    : undefined;
  let host = 0;
  const st = await model.forwardChunks(bytes, {
    taps,
    layers,
    skipHead: !scores,
    onDeviceTap: onDeviceTap
      ? (t) => {
        const t0 = performance.now();
        onDeviceTap(t);
        host += performance.now() - t0;
      }
      : undefined,
    onDeviceLogits: collector?.onDeviceLogits,
  });
  st.free();
  collector?.free();
  parts.set("host in taps", host);
}

await time("forward, no head", async (p) => await pass([], false, undefined, p));
await time("forward + head", async () => {
  (await model.forwardChunks(bytes, { skipHead: false })).free();
});
await time("forward + log-probs and ranks", async (p) => await pass([], true, undefined, p));
await time("forward, tap dt_proj (nothing done)", async (p) => {
  await pass(["dt_proj"], false, () => {}, p);
});
await time("forward, taps in_proj + dt_proj (nothing done)", async (p) => {
  await pass(["in_proj", "dt_proj"], false, () => {}, p);
});
for (
  const [name, reduction, dim] of [["fro", "fro", null], ["norm d_inner", "norm", -2]] as const
) {
  await time(`forward, tap dt_proj, discrete-A ${name} enqueued`, async (p) => {
    const ex = new DiscreteAExtraction(model, layers, bytes.length, reduction, dim);
    try {
      await pass(["dt_proj"], false, (t) => ex.push(t.layer, t.ptr, t.ld, t.start, t.rows), p);
      timeResults(p, () => ex.results());
    } finally {
      ex.free();
    }
  });
}
await time("forward, taps, input similarity enqueued", async (p) => {
  const sim = new InputSimilarityExtraction(model, layers, bytes.length);
  let x: { ptr: Deno.PointerValue; ld: number } | null = null;
  try {
    await pass(["in_proj", "dt_proj"], false, (t) => {
      if (t.tap === "in_proj") x = { ptr: t.ptr, ld: t.ld };
      else sim.push(t.layer, t.ptr, t.ld, x!.ptr, x!.ld, t.start, t.rows);
    }, p);
    timeResults(p, () => sim.results());
  } finally {
    sim.free();
  }
});
const common = { logProbs: true, ranks: true };
await time("extractDiscreteA fro + log-probs, ranks", async () => {
  await extractDiscreteA(model, bytes, { reduction: "fro", ...common });
});
await time("extractDiscreteA norm d_inner + log-probs, ranks", async () => {
  await extractDiscreteA(model, bytes, { reduction: "norm", reductionDim: -2, ...common });
});
await time("extractInputSimilarity + log-probs, ranks", async () => {
  await extractInputSimilarity(model, bytes, common);
});
model.close();
