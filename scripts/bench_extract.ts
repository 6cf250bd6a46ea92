/**
 * Extraction benchmark (`deno task bench:extract`): with the model loaded, over a PG19-sized input
 * (7,850 bytes: PG19 sample 860 when ../shared/pg19_samples/860.txt or pg19_samples/860.txt
 * exists, else seeded random bytes of that length), times
 *   forward    the plain forward (layers and head, logits left on the backend),
 *   discrete-A extractDiscreteA: fro per position, all layers, with log-probabilities and ranks
 *              (the seed README's PG19 example), and `norm` over d_inner (dim -2, its first
 *              example),
 *   input sim  extractInputSimilarity: all layers, with log-probabilities and ranks (its third),
 *   modules    extractModuleOutputs: dt_proj, all layers (every (L, d_inner) output on the host),
 *              into fresh arrays, into the previous repeat's arrays (`into`: registered as
 *              download destinations, the default), and into such arrays through the staging
 *              buffers (`pinInto: false`, the peer),
 * in two phases, the forward with the discrete-A workflows, then the forward with the module
 * outputs: in each, the cases run in turn `--repeats` times (so they see the same machine load).
 * (Two phases, because the module outputs leave ~5 GB of result arrays (972M) for the collector,
 * whose release slowed the next repeat's discrete-A cases: on an H100, the `norm` over d_inner took
 * 101 ms in turn with them against 76 ms alone.) It prints the median of each case and the median
 * over repeats of each extraction's ratio to the forward of its own phase and repeat (target: <=
 * 2), and each case's ratio to the GEMM floor (the forward's matrix-product FLOPs at the rate of
 * the model's in_proj over a chunk's positions, timed in the same run). On the CPU it also prints
 * CPU time (user + system of this process), which the neighbours' load disturbs less than wall
 * time.
 *
 * Usage: deno task bench:extract [--model_id tiny] [--device auto|cpu|cuda] [--dtype fp32|bf16]
 *        [--len 7850] [--prompt_file F] [--repeats 5] [--threads N] [--chunk_size N]
 */
import process from "node:process";
import { loadModel } from "../src/api.ts";
import {
  extractDiscreteA,
  extractInputSimilarity,
  extractModuleOutputs,
} from "../src/analysis/extract.ts";
import { createParser, parseArgs, runMain, UsageError } from "../src/cli/mod.ts";
import { gemmFlopsPerPosition, inProjRate, median, printableBytes } from "./lib/bench.ts";

const parser = createParser("bench_extract", "discrete-A and module-output extraction vs forward");
parser.add_argument("--config_path", { default: "configs/mambabyte_lm.yml" });
parser.add_argument("--model_id", { default: "tiny" });
parser.add_argument("--device", { default: "auto" });
parser.add_argument("--dtype", { default: "fp32" });
parser.add_argument("--len", { type: "int", default: 7850 });
parser.add_argument("--prompt_file", { default: null });
parser.add_argument("--repeats", { type: "int", default: 5 });
parser.add_argument("--threads", { type: "int", default: 0 });
parser.add_argument("--chunk_size", { type: "int", default: null });
// deno-lint-ignore no-explicit-any
type Args = Record<string, any>;

/** The input bytes and where they came from. */
async function input(args: Args): Promise<{ bytes: Uint8Array; what: string }> {
  const root = new URL("../", import.meta.url);
  const candidates = args.prompt_file ? [args.prompt_file] : [
    new URL("../shared/pg19_samples/860.txt", root).pathname,
    new URL("pg19_samples/860.txt", root).pathname,
  ];
  for (const path of candidates) {
    try {
      const data = await Deno.readFile(path);
      const bytes = data.subarray(0, args.len);
      return { bytes, what: `${path} (${bytes.length} bytes)` };
    } catch (e) {
      if (args.prompt_file) throw e;
    }
  }
  const bytes = printableBytes(args.len);
  return { bytes, what: `random printable bytes (${bytes.length}; no PG19 sample 860 found)` };
}

function cpuSeconds(): number {
  const u = process.cpuUsage();
  return (u.user + u.system) / 1e6;
}

async function main(argv: string[]): Promise<void> {
  const args = parseArgs<Args>(parser, argv);
  for (const [flag, min] of [["len", 2], ["repeats", 1], ["threads", 0]] as const) {
    if (!(args[flag] >= min)) {
      throw new UsageError("bench_extract", `argument --${flag}: must be >= ${min}`, "");
    }
  }
  const { bytes, what } = await input(args);
  const model = await loadModel({
    configPath: args.config_path,
    modelId: args.model_id,
    device: args.device,
    dtype: args.dtype,
    threads: args.threads,
    ...(args.chunk_size ? { chunkSize: args.chunk_size } : {}),
  });
  try {
    const be = model.backend, dims = model.dims;
    console.log(`machine: ${JSON.stringify(be.info())}`);
    console.log(`input: ${what}`);
    console.log(
      `model ${model.config.id} (${model.source}), ${args.dtype}, ` +
        `${dims.nLayer} layers, d_model ${dims.dModel}, d_inner ${dims.dInner}, d_state ` +
        `${dims.dState}, chunk ${model.chunkSize}, on ${be.kind}`,
    );
    let into: Awaited<ReturnType<typeof extractModuleOutputs>>["modules"] | undefined;
    let pinned: typeof into;
    const forward = async () => {
      const st = await model.forwardChunks(bytes, { skipHead: false });
      be.sync();
      st.free();
    };
    // [name, phase, run]: each phase's first case is its forward
    const cases: [string, number, () => Promise<unknown>][] = [
      ["forward", 0, forward],
      [
        "discrete-A",
        0,
        () => extractDiscreteA(model, bytes, { reduction: "fro", logProbs: true, ranks: true }),
      ],
      [
        "discrete-A-norm",
        0,
        () =>
          extractDiscreteA(model, bytes, {
            reduction: "norm",
            reductionDim: -2,
            logProbs: true,
            ranks: true,
          }),
      ],
      [
        "input-sim",
        0,
        () => extractInputSimilarity(model, bytes, { logProbs: true, ranks: true }),
      ],
      ["forward-modules", 1, forward],
      ["modules", 1, () => extractModuleOutputs(model, bytes, { modules: ["dt_proj"] })],
      // the same into the previous repeat's arrays (`into`, registered as download destinations
      // by default; CUDA: no copy on the host). Registered in the warm-up, so that registering
      // stays out of the timed runs.
      ["modules-pinned", 1, async () => {
        pinned = (await extractModuleOutputs(model, bytes, {
          modules: ["dt_proj"],
          into: pinned,
        })).modules;
      }],
      // the peer: into mapped arrays through the staging buffers (pinInto: false)
      ["modules-into", 1, async () => {
        into = (await extractModuleOutputs(model, bytes, {
          modules: ["dt_proj"],
          into,
          pinInto: false,
        })).modules;
      }],
    ];
    // warm-up: every path once on a short input (allocations, thread pool, kernels)
    const warm = bytes.subarray(0, Math.min(bytes.length, 300));
    await model.forwardChunks(warm).then((s) => s.free());
    await extractDiscreteA(model, warm, { reduction: "fro", logProbs: true, ranks: true });
    await extractDiscreteA(model, warm, { reduction: "norm", reductionDim: -2 });
    await extractInputSimilarity(model, warm, {});
    await extractModuleOutputs(model, warm, { modules: ["dt_proj"] });
    into = (await extractModuleOutputs(model, bytes, { modules: ["dt_proj"] })).modules;
    pinned = (await extractModuleOutputs(model, bytes, { modules: ["dt_proj"] })).modules;
    pinned = (await extractModuleOutputs(model, bytes, { modules: ["dt_proj"], into: pinned }))
      .modules;
    const rate = inProjRate(model, Math.min(bytes.length, model.chunkSize));
    const floorS = bytes.length * gemmFlopsPerPosition(dims) / rate;
    const wall = new Map<string, number[]>(), cpu = new Map<string, number[]>();
    for (const [name] of cases) wall.set(name, []), cpu.set(name, []);
    for (const phase of [0, 1]) {
      for (let r = 0; r < args.repeats; r++) {
        for (const [name, p, run] of cases) {
          if (p !== phase) continue;
          const c0 = cpuSeconds(), t0 = performance.now();
          await run();
          be.sync();
          wall.get(name)!.push((performance.now() - t0) / 1000);
          cpu.get(name)!.push(cpuSeconds() - c0);
        }
      }
    }
    const fmt = (x: number) => x < 1 ? `${(x * 1000).toFixed(1)} ms` : `${x.toFixed(3)} s`;
    const span = (xs: number[]) => `${Math.min(...xs).toFixed(2)}..${Math.max(...xs).toFixed(2)}`;
    const labels: Record<string, string> = {
      forward: "plain forward (layers + head)",
      "forward-modules": "plain forward (module outputs' phase)",
      "discrete-A": "discrete-A fro, all layers, log-probs + ranks",
      "discrete-A-norm": "discrete-A norm over d_inner, the same",
      "input-sim": "input similarity, the same",
      modules: "module outputs dt_proj, all layers",
      "modules-pinned": "  the same, into the last result's arrays (registered)",
      "modules-into": "  the same, staged copy (pinInto: false)",
    };
    console.log("");
    console.log(
      `GEMM floor ${fmt(floorS)} (${bytes.length} positions at in_proj's ${
        (rate / 1e9).toFixed(0)
      } GFLOP/s)`,
    );
    console.log(`${args.repeats} repeats of each phase, its cases in turn; medians:`);
    for (const [name, phase] of cases) {
      const w = wall.get(name)!, c = cpu.get(name)!;
      const forwardName = phase === 0 ? "forward" : "forward-modules";
      const fw = wall.get(forwardName)!, fc = cpu.get(forwardName)!;
      let line = `${labels[name].padEnd(46)} wall ${fmt(median(w)).padStart(9)}`;
      line += ` | floor/wall ${(floorS / median(w)).toFixed(2)}`;
      if (be.kind === "cpu") line += ` | cpu ${fmt(median(c)).padStart(9)}`;
      if (name !== forwardName) {
        const rw = w.map((x, i) => x / fw[i]);
        line += ` | ratio to forward: wall ${median(rw).toFixed(2)} (${span(rw)})`;
        if (be.kind === "cpu") {
          const rc = c.map((x, i) => x / fc[i]);
          line += `, cpu ${median(rc).toFixed(2)} (${span(rc)})`;
        }
      }
      console.log(line);
    }
    const dtBytes = bytes.length * dims.dInner * 4 * dims.nLayer;
    console.log(
      `(module outputs move ${(dtBytes / 1e6).toFixed(1)} MB to the host; target ratio <= 2)`,
    );
  } finally {
    model.close();
  }
}

if (import.meta.main) await runMain(main);
