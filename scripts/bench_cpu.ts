/**
 * CPU benchmark (`deno task bench:cpu`): a 353M-shaped MambaByte with random weights.
 *
 * Prints, measured in the same run on the same machine:
 * - the read bandwidth (mb_read_probe over a buffer far larger than the caches) and the sgemm rate
 *   (mb_linear at the prefill shape 2048 x 1024 -> 4096, fp32);
 * - decode bytes/s (batch 1) in fp32 and bf16 and the ratio to the memory roofline: weight bytes
 *   read per step / read bandwidth. The host's bandwidth can move by 2x within seconds, so decoding
 *   runs in `--repeats` segments, each framed by its own probes; the row gives the median segment
 *   and the range of ratios and bandwidths;
 * - bf16 decoding of `--batches` sequences at once (default 8,32; all sequences' bytes/s) against
 *   the lower of two roofs: the weights read once a step at the read bandwidth, and the step's
 *   FLOPs at the sgemm rate (a batch of 32 is compute-bound here);
 * - prefill bytes/s over 2048 bytes and its achieved GFLOP/s over the measured sgemm rate;
 * - for the bundled small models (`--call_models`, default tiny,small), greedy decoding with each
 *   step's layers in one native call (mb_decode_layers) against five calls a layer, alternated
 *   in the same run: the ratio is what the calls themselves cost.
 *
 * Usage: deno task bench:cpu [--model_id 353M] [--decode_steps 24] [--repeats 5] [--prefill 2048]
 *        [--threads N] [--call_models tiny,small] [--batches 8,32]
 */
import { createParser, parseArgs, runMain, UsageError } from "../src/cli/mod.ts";
import { Backend } from "../src/backend/backend.ts";
import { Tensor } from "../src/backend/tensor.ts";
import { loadModel } from "../src/api.ts";
import type { MambaByteLM } from "../src/model/model.ts";
import type { ModelDims } from "../src/config/dims.ts";
import { median, strideBytes, weightBytesPerStep } from "./lib/bench.ts";

const parser = createParser("bench_cpu", "CPU speed vs roofline");
parser.add_argument("--config_path", { default: "configs/mambabyte_lm.yml" });
parser.add_argument("--model_id", { default: "353M" });
parser.add_argument("--decode_steps", { type: "int", default: 24 });
parser.add_argument("--repeats", { type: "int", default: 5 });
parser.add_argument("--prefill", { type: "int", default: 2048 });
parser.add_argument("--threads", { type: "int", default: 0 });
parser.add_argument("--call_models", { default: "tiny,small" });
parser.add_argument("--batches", { default: "8,32" });
// deno-lint-ignore no-explicit-any
type Args = Record<string, any>;

function time(fn: () => void, reps: number): number {
  const out: number[] = [];
  for (let i = 0; i < reps; i++) {
    const t0 = performance.now();
    fn();
    out.push((performance.now() - t0) / 1000);
  }
  return median(out);
}

/** FLOPs of a forward per position (matrix products dominate; scan and conv added). */
function flopsPerPosition(d: ModelDims): number {
  const mat = 2 * (2 * d.dInner * d.dModel + (d.dtRank + 2 * d.dState) * d.dInner +
    d.dInner * d.dtRank + d.dModel * d.dInner);
  const scan = 9 * d.dInner * d.dState + 2 * d.dInner * d.dConv;
  return d.nLayer * (mat + scan) + 2 * 256 * d.dModel;
}

async function main(argv: string[]): Promise<void> {
  const args = parseArgs<Args>(parser, argv);
  const batches = String(args.batches).split(",").filter((x) => x).map(Number);
  if (!batches.every((b) => Number.isInteger(b) && b >= 1 && b <= 256)) {
    throw new UsageError(
      "bench_cpu",
      `argument --batches: integers in 1..256 (got ${args.batches})`,
      "",
    );
  }
  for (
    const [flag, min] of [["decode_steps", 2], ["repeats", 1], ["prefill", 1], [
      "threads",
      0,
    ]] as const
  ) {
    if (!(args[flag] >= min)) {
      throw new UsageError("bench_cpu", `argument --${flag}: must be >= ${min}`, "");
    }
  }
  const be = Backend.create("cpu", { threads: args.threads });
  const info = be.info();

  // Read bandwidth: 1 GiB, well beyond any cache. This host's bandwidth moves with its neighbours'
  // load, so every case is framed by probes taken just before and after it.
  const probeBytes = 1 << 30;
  const probeBuf = be.alloc(probeBytes);
  be.memset(probeBuf, 1, probeBytes);
  const sink = be.alloc(64);
  const probeRates: number[] = [];
  function probe(): number {
    const t = time(() => be.readProbe(probeBuf, probeBytes, sink), 3);
    probeRates.push(probeBytes / t);
    return probeBytes / t;
  }
  const readBw = probe();

  // sgemm rate at the prefill shape of in_proj.
  const [gn, gk, gm] = [2048, 1024, 4096];
  const x = Tensor.fromHost(be, new Float32Array(gn * gk).fill(0.5), [gn, gk]);
  const w = Tensor.fromHost(be, new Float32Array(gm * gk).fill(0.25), [gm, gk]);
  const y = Tensor.empty(be, "f32", [gn, gm]);
  const gemm = () =>
    be.linear({
      x: x.ptr,
      w: w.ptr,
      wdtype: "f32",
      bias: null,
      n: gn,
      inF: gk,
      outF: gm,
      y: y.ptr,
    });
  gemm();
  const tGemm = time(gemm, 5);
  const sgemmRate = (2 * gn * gk * gm) / tGemm;
  for (const t of [x, w, y]) t.free();

  console.log(`machine: ${JSON.stringify(info)}`);
  console.log(`read bandwidth: ${(readBw / 1e9).toFixed(2)} GB/s (mb_read_probe, 1 GiB)`);
  console.log(`sgemm: ${(sgemmRate / 1e9).toFixed(1)} GFLOP/s (${gn}x${gk} . ${gk}x${gm})`);

  const prompt = new TextEncoder().encode("High up on the hillside in the midst of a rugged group");
  const rows: string[][] = [];

  /** Decoding `id` with one native call a step against five a layer, alternated (median rates). */
  async function benchCalls(id: string) {
    const common = { configPath: args.config_path, modelId: id, device: "cpu" as const };
    const one = await loadModel({ ...common, threads: args.threads });
    const ops = await loadModel({ ...common, threads: args.threads, decodeLayers: false });
    try {
      const rate = { one: [] as number[], ops: [] as number[] };
      const n = 256;
      for (let r = 0; r < args.repeats + 1; r++) {
        for (const [k, m] of [["one", one], ["ops", ops]] as const) {
          const t0 = performance.now();
          await m.generate(prompt, { maxNewTokens: n, topK: 1 });
          if (r > 0) rate[k].push(n / ((performance.now() - t0) / 1000)); // r = 0: warm-up
        }
      }
      const a = median(rate.one), b = median(rate.ops);
      rows.push([
        `decode ${id} (${one.dims.dModel} x ${one.dims.nLayer}), one call a step`,
        `${a.toFixed(0)} bytes/s`,
        `five calls a layer ${b.toFixed(0)} bytes/s`,
        `ratio ${(a / b).toFixed(2)} (medians of ${rate.one.length} alternated runs)`,
      ]);
    } finally {
      one.close();
      ops.close();
    }
  }

  async function benchDecode(dtype: "fp32" | "bf16") {
    const model: MambaByteLM = await loadModel({
      configPath: args.config_path,
      modelId: args.model_id,
      checkpoint: null,
      device: "cpu",
      dtype,
      threads: args.threads,
    });
    try {
      const bytesPerStep = weightBytesPerStep(model.dims, dtype === "bf16" ? 2 : 4);
      const span = (xs: number[], f: (x: number) => string) =>
        `${f(Math.min(...xs))}..${f(Math.max(...xs))}`;
      /** `repeats` segments of `batch` sequences, each framed by probes; `roof(bw)` in bytes/s. */
      const segmentsOf = async (batch: number, roof: (bw: number) => number) => {
        await model.generate(prompt, { maxNewTokens: 2, topK: 1, numSamples: batch }); // warm-up
        const segments: { rate: number; bw: number; ratio: number }[] = [];
        for (let r = 0; r < args.repeats; r++) {
          const before = probe();
          const stamps: number[] = [];
          await model.generate(prompt, {
            maxNewTokens: args.decode_steps + 1,
            topK: 1,
            numSamples: batch,
            onBytes: () => {
              stamps.push(performance.now());
            },
          });
          const steps: number[] = [];
          for (let i = 1; i < stamps.length; i++) steps.push((stamps[i] - stamps[i - 1]) / 1000);
          const rate = batch / median(steps);
          const bw = median([before, probe()]);
          segments.push({ rate, bw, ratio: rate / roof(bw) });
        }
        const mid = [...segments].sort((a, b) =>
          a.ratio - b.ratio
        )[Math.floor(segments.length / 2)];
        return { segments, mid, ratios: segments.map((g) => g.ratio) };
      };
      const { segments, mid, ratios } = await segmentsOf(1, (bw) => bw / bytesPerStep);
      const bws = segments.map((g) => g.bw / 1e9);
      rows.push([
        `decode ${dtype}`,
        `${mid.rate.toFixed(2)} bytes/s`,
        `roofline ${(mid.bw / bytesPerStep).toFixed(2)} bytes/s (${
          (bytesPerStep / 1e6).toFixed(0)
        } MB/step at ${(mid.bw / 1e9).toFixed(1)} GB/s)`,
        `ratio ${mid.ratio.toFixed(2)} (median of ${segments.length} segments; ${
          span(ratios, (x) => x.toFixed(2))
        } at ${span(bws, (x) => x.toFixed(0))} GB/s)`,
      ]);
      if (dtype === "bf16") {
        const flopRoof = sgemmRate / flopsPerPosition(model.dims);
        for (const batch of batches.filter((b) => b > 1)) {
          const memRoof = (bw: number) => (batch * bw) / bytesPerStep;
          const got = await segmentsOf(batch, (bw) => Math.min(memRoof(bw), flopRoof));
          rows.push([
            `decode bf16 batch ${batch}`,
            `${got.mid.rate.toFixed(0)} bytes/s (all sequences)`,
            `roofline ${Math.min(memRoof(got.mid.bw), flopRoof).toFixed(0)} bytes/s (read ${
              memRoof(got.mid.bw).toFixed(0)
            }, sgemm ${flopRoof.toFixed(0)})`,
            `ratio ${got.mid.ratio.toFixed(2)} (median of ${got.segments.length} segments; ${
              span(got.ratios, (x) => x.toFixed(2))
            })`,
          ]);
        }
      }
      if (dtype === "fp32") {
        const text = strideBytes(args.prefill);
        await model.forwardChunks(text.subarray(0, 64)).then((s) => s.free()); // warm-up
        const t0 = performance.now();
        const st = await model.forwardChunks(text);
        const secs = (performance.now() - t0) / 1000;
        st.free();
        const gflops = (flopsPerPosition(model.dims) * args.prefill) / secs;
        rows.push([
          `prefill ${args.prefill} fp32`,
          `${(args.prefill / secs).toFixed(0)} bytes/s`,
          `${(gflops / 1e9).toFixed(1)} GFLOP/s`,
          `ratio to sgemm ${(gflops / sgemmRate).toFixed(2)}`,
        ]);
      }
    } finally {
      model.close();
    }
  }

  await benchDecode("fp32");
  await benchDecode("bf16");
  for (const id of String(args.call_models).split(",").filter((x) => x)) await benchCalls(id);
  be.free(probeBuf);
  be.free(sink);
  be.close();
  const lo = Math.min(...probeRates) / 1e9, hi = Math.max(...probeRates) / 1e9;
  console.log("");
  console.log(`read bandwidth over the run: ${lo.toFixed(1)} .. ${hi.toFixed(1)} GB/s`);
  console.log(`model ${args.model_id} (random weights), CPU threads: ${info.threads}`);
  for (const r of rows) console.log(r.join(" | "));
}

if (import.meta.main) await runMain(main);
