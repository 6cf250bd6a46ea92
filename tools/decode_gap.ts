/**
 * Where generate's decoding loses to graph replay on CUDA (bench:gpu's bytes/s sit 2-4% under
 * cuda_bench's replayed step): for each batch, in one process over one 972M-shaped model with
 * random bf16 weights,
 *   graph    the model's own step (embed, stepLayers, runHead, sample: what generate captures)
 *            replayed back to back, nothing between replays;
 *   +copy    the same with each replay followed by Backend.downloadAsync of the ids and a wait
 *            for the one before (what generate's overlapped loop did until it sampled into two
 *            buffers: a staging copy on the compute stream between replays);
 *   +direct  the step captured twice, sampling into two id buffers in turn (each reading the
 *            other's), each replay followed by Backend.downloadAsyncDirect of its ids and a wait
 *            for the one before (what generate's overlapped loop adds now);
 *   generate generate() over --steps bytes as bench:gpu times it (a 1-byte run subtracted).
 * With MAMBABYTE_STEP_DELTA_OUT=1 in the environment, the step writes dt_proj's output as
 * before (the A/B peer of stepLayers skipping it without taps).
 *
 * Usage (GPU machine): deno run -A tools/decode_gap.ts [--batches 1,64,256] [--steps 200]
 */
import { createParser, parseArgs, runMain, UserError } from "../src/cli/mod.ts";
import { loadModel, Tensor } from "../mod.ts";
import { cudaDeviceCount, hasCuda } from "../src/backend/backend.ts";
import { median } from "../scripts/lib/bench.ts";

const parser = createParser("decode_gap", "generate's decoding against graph replay (CUDA)");
parser.add_argument("--config_path", { default: "configs/mambabyte_lm.yml" });
parser.add_argument("--model_id", { default: "972M" });
parser.add_argument("--batches", { default: "1,64,256" });
parser.add_argument("--steps", { type: "int", default: 200 });
interface Args {
  config_path: string;
  model_id: string;
  batches: string;
  steps: number;
}

async function main(argv: string[]): Promise<void> {
  const args = parseArgs<Args>(parser, argv);
  if (!hasCuda() || cudaDeviceCount() === 0) throw new UserError("decode_gap: no CUDA GPU");
  const model = await loadModel({
    configPath: args.config_path,
    modelId: args.model_id,
    checkpoint: null,
    device: "cuda",
    dtype: "bf16",
  });
  const be = model.backend;
  const prompt = new TextEncoder().encode("High up on the hillside in the midst of a rugged group");
  try {
    for (const B of args.batches.split(",").map(Number)) {
      const ws = model.newWorkspace(B);
      const state = model.newState(B);
      const counter = Tensor.zeros(be, "i64", [1]);
      const host = be.hostAlloc(4 * B);
      const idsAlt = Tensor.zeros(be, "i32", [B]);
      const step = (idsIn = ws.ids, idsOut = ws.ids) => {
        model.embed(ws, B, idsIn.ptr);
        model.stepLayers(ws, state, B);
        model.runHead(ws, B);
        be.sample({
          logits: ws.logits.ptr,
          batch: B,
          v: 256,
          temperature: 1,
          topK: 1,
          topP: 0,
          seed: 1n,
          counter: counter.ptr,
          out: idsOut.ptr,
        });
      };
      step(); // direct first: kernels load, scratch reaches its size
      be.sync();
      const capture = (idsIn?: Tensor, idsOut?: Tensor) => {
        be.graphBegin();
        step(idsIn, idsOut);
        return be.graphEnd();
      };
      const g = capture();
      const pair = [capture(ws.ids, idsAlt), capture(idsAlt, ws.ids)];
      /**
       * us a step: median of 5 runs of `steps` replays (of `graphs` in turn), each followed by
       * `after(i)`
       */
      const time = (after?: (i: number) => void, graphs = [g]) => {
        const runs: number[] = [];
        for (let r = 0; r < 5; r++) {
          be.sync();
          const t0 = performance.now();
          for (let i = 0; i < args.steps; i++) {
            be.graphLaunch(graphs[i % graphs.length]);
            after?.(i);
          }
          be.sync();
          runs.push((performance.now() - t0) * 1000 / args.steps);
        }
        return median(runs);
      };
      try {
        time(); // warm
        const plain = time();
        let ticket = 0n;
        const copy = time((i) => {
          const t = be.downloadAsync(host, ws.ids.ptr, 4 * B);
          if (i > 0) be.downloadWait(ticket);
          ticket = t;
        });
        be.downloadWait(ticket);
        // replay i samples into idsAlt when i is even, into ws.ids when odd; replay i + 2, which
        // overwrites them, is queued only after this download's wait (at replay i + 1)
        const direct = time((i) => {
          const t = be.downloadAsyncDirect(host, (i % 2 ? ws.ids : idsAlt).ptr, 4 * B);
          if (i > 0) be.downloadWait(ticket);
          ticket = t;
        }, pair);
        be.downloadWait(ticket);
        const gen = async (n: number) => {
          const t0 = performance.now();
          await model.generate(prompt, { maxNewTokens: n, numSamples: B, topK: 1 });
          return performance.now() - t0;
        };
        await gen(4);
        const genUs = ((await gen(args.steps)) - (await gen(1))) * 1000 / (args.steps - 1);
        const bps = (us: number) => `${(B * 1e6 / us).toFixed(0)} B/s`;
        console.log(
          `b${B}: graph ${plain.toFixed(1)} us (${bps(plain)}) | +copy ${copy.toFixed(1)} us ` +
            `(${bps(copy)}) | +direct ${direct.toFixed(1)} us (${bps(direct)}) | generate ${
              genUs.toFixed(1)
            } us (${bps(genUs)})`,
        );
      } finally {
        be.graphDestroy(g);
        pair.forEach((p) => be.graphDestroy(p));
        idsAlt.free();
        be.hostFree(host);
        counter.free();
        state.free();
        ws.free();
      }
    }
  } finally {
    model.close();
  }
}

if (import.meta.main) runMain(main);
