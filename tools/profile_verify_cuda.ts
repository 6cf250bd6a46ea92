/**
 * Where a speculative round's verification goes on CUDA, by ablation: the decoding step's graph
 * and the verification pass's graph (embed, verifyLayers over k + 1 positions, verifyHead, one
 * sample per position) are captured and replayed; then the verification graph is captured again
 * with one kind of backend call left out at a time, and the difference in replay time is that
 * call's cost inside the graph (PDL overlap and graph scheduling included, which timing ops one
 * at a time would miss). The host's part of a round (the ids and counters uploaded, the samples
 * downloaded) is timed apart. Random weights: only the shapes matter here.
 *
 * With --only, one graph alone: the step, the pass, the round, or `draft` (a byte drafter's k
 * greedy drafts with the state after each, Backend.draftGreedy: time it at a drafter's shape,
 * e.g. --d_model 256 --n_layer 2, with MAMBABYTE_CUDA_DRAFT_CLUSTER=1 and 0).
 *
 * `--spec`: a whole speculative round as generateSpeculative runs it on the device
 * (enqueueDeviceRound: a byte drafter of --draft_d_model x --draft_n_layer reading the settled
 * byte and drafting k, the pass, its draws, the resume and the commit), then by ablation the same
 * way: where a round goes inside its graph. Random weights (the drafts are rarely kept; the graph's work does
 * not depend on it).
 *
 * Usage (GPU machine): deno run -A tools/profile_verify_cuda.ts [--d_model 384] [--n_layer 24]
 *   [--k 7] [--dtype fp32|bf16] [--replays 200] [--only step|verify|round|draft]
 *   [--spec [--draft_d_model 256] [--draft_n_layer 2] [--draft_dtype fp32|bf16]]
 */
import { createParser, parseArgs, runMain, UserError } from "../src/cli/mod.ts";
import { Backend, loadModel, RecurrentState, Tensor } from "../mod.ts";
import { ModelDrafter } from "../src/generate/drafter.ts";
import { enqueueDeviceRound } from "../src/generate/speculative.ts";
import { VerifyBuffers } from "../src/model/workspace.ts";
import { median } from "../scripts/lib/bench.ts";

const parser = createParser("profile_verify_cuda", "verification's cost by ablation (CUDA)");
parser.add_argument("--d_model", { type: "int", default: 384 });
parser.add_argument("--n_layer", { type: "int", default: 24 });
parser.add_argument("--k", { type: "int", default: 7 });
parser.add_argument("--dtype", { choices: ["fp32", "bf16"], default: "fp32" });
parser.add_argument("--replays", { type: "int", default: 200 });
parser.add_argument("--spec", {
  action: "store_true",
  help: "a whole device round with a byte drafter, and its parts by ablation",
});
parser.add_argument("--draft_d_model", { type: "int", default: 256 });
parser.add_argument("--draft_n_layer", { type: "int", default: 2 });
parser.add_argument("--draft_dtype", {
  choices: ["fp32", "bf16"],
  help: "the drafter's weights (default: --dtype)",
});
parser.add_argument("--only", {
  choices: ["step", "verify", "round", "draft"],
  help: "time that graph alone, nothing else (for nsys: its kernels only)",
});
interface Args {
  d_model: number;
  n_layer: number;
  k: number;
  dtype: "fp32" | "bf16";
  replays: number;
  only?: "step" | "verify" | "round" | "draft";
  spec: boolean;
  draft_d_model: number;
  draft_n_layer: number;
  draft_dtype?: "fp32" | "bf16";
}

/** A config file of one random-weight entry `shape` (d_model x n_layer, the models' other dims). */
async function shapeConfig(dir: string, name: string, dModel: number, nLayer: number) {
  const path = `${dir}/${name}.yml`;
  await Deno.writeTextFile(
    path,
    `model:\n  common: {vocab_size: 256, d_state: 16, d_conv: 4, expand: 2, dt_rank: auto, norm: layernorm, norm_epsilon: 1.0e-5}\n  shape: {d_model: ${dModel}, n_layer: ${nLayer}}\n`,
  );
  return path;
}
async function main(argv: string[]): Promise<void> {
  const args = parseArgs<Args>(parser, argv);
  if (!(args.k >= 1 && args.k <= 63) || !(args.replays >= 1)) {
    throw new UserError("profile_verify_cuda: --k must be 1..63 and --replays at least 1");
  }

  const dir = await Deno.makeTempDir();
  const model = await loadModel({
    configPath: await shapeConfig(dir, "target", args.d_model, args.n_layer),
    modelId: "shape",
    checkpoint: null,
    device: "cuda",
    dtype: args.dtype,
  });
  const be = model.backend;
  const M = args.k + 1;
  const ws = model.newWorkspace(M);
  const saved = new VerifyBuffers(be, model.dims, M);
  const state = model.newState(1);
  const counters = Tensor.zeros(be, "i64", [M]);
  const sampled = saved.control.at(saved.sampled);
  /** The draws of positions 0..n-1, a counter each (as generateSpeculative draws them). */
  const drawRows = (n: number) =>
    be.sampleRows({
      logits: ws.logits.ptr,
      n,
      v: 256,
      temperature: 1,
      topK: 1,
      topP: 0,
      seed: 1n,
      counters: counters.ptr,
      out: sampled,
    });
  const step = () => {
    model.embed(ws, 1);
    model.stepLayers(ws, state, 1);
    model.runHead(ws, 1);
    drawRows(1);
  };
  const verify = () => {
    model.embed(ws, M);
    model.verifyLayers(ws, state, saved);
    model.verifyHead(ws, M);
    drawRows(M);
  };
  /** A round's graph: the pass, its draws, the accepted prefix and the resume (on the device). */
  const round = () => {
    verify();
    model.resumeLayers(state, saved);
  };

  /** The drafter's part of a round: k greedy drafts, the state after each into the stack. */
  const stack = Tensor.zeros(be, "f32", [((args.k + 1) * RecurrentState.bytes(model.dims, 1)) / 4]);
  const draft = () =>
    model.draftGreedy(ws, state, {
      logits: ws.logits.ptr,
      counter: counters.ptr,
      stack: stack.ptr,
      ids: ws.ids.ptr,
      k: args.k,
    });

  /** Microseconds per replay of body's graph (median of 5 runs of `replays`). */
  function timeGraph(body: () => void): number {
    body(); // direct first: kernels load, scratch reaches its size
    be.sync();
    be.graphBegin();
    body();
    const g = be.graphEnd();
    try {
      for (let i = 0; i < 20; i++) be.graphLaunch(g);
      be.sync();
      const runs: number[] = [];
      for (let r = 0; r < 5; r++) {
        const t0 = performance.now();
        for (let i = 0; i < args.replays; i++) be.graphLaunch(g);
        be.sync();
        runs.push((performance.now() - t0) * 1000 / args.replays);
      }
      return median(runs);
    } finally {
      be.graphDestroy(g);
    }
  }

  /** Frees what the profile allocated, and its config. */
  const release = async () => {
    counters.free();
    stack.free();
    state.free();
    saved.free();
    ws.free();
    model.close();
    await Deno.remove(dir, { recursive: true });
  };

  if (args.only) {
    const body = { step, verify, round, draft }[args.only];
    console.log(`${args.only} graph ${timeGraph(body).toFixed(1)} us`);
    return await release();
  }

  /**
   * Times body's graph with each kind of backend call it makes left out in turn (its cost inside
   * the graph = the whole graph's time - the time without it) and prints one line a kind.
   */
  const ablate = (body: () => void, whole: number, label: string) => {
    const calls = new Map<string, number>();
    const proto = Backend.prototype as unknown as Record<string, unknown>;
    const methods = Object.getOwnPropertyNames(proto).filter((n) =>
      n !== "constructor" && typeof Object.getOwnPropertyDescriptor(proto, n)?.value === "function"
    );
    const inst = be as unknown as Record<string, unknown>;
    for (const name of methods) {
      const f = proto[name] as (...a: unknown[]) => unknown;
      inst[name] = (...a: unknown[]) => {
        calls.set(name, (calls.get(name) ?? 0) + 1);
        return f.apply(be, a);
      };
    }
    try {
      body();
      be.sync();
    } finally {
      for (const name of methods) delete inst[name];
    }
    console.log(`${label} without one kind of call (its cost = ${label} - without):`);
    for (const name of calls.keys()) {
      if (["sync", "graphBegin", "graphEnd"].includes(name)) continue;
      inst[name] = () => {};
      let t: number;
      try {
        t = timeGraph(body);
      } finally {
        delete inst[name];
      }
      console.log(
        `  ${name.padEnd(16)} ${String(calls.get(name)).padStart(4)} calls  without ${
          t.toFixed(1).padStart(7)
        } us  cost ${(whole - t).toFixed(1).padStart(7)} us`,
      );
    }
  };

  if (args.spec) {
    // A device round as generateSpeculative runs it, with a random byte drafter of its own shape.
    const drafterLM = await loadModel({
      configPath: await shapeConfig(dir, "drafter", args.draft_d_model, args.draft_n_layer),
      modelId: "shape",
      checkpoint: null,
      device: "cuda",
      dtype: args.draft_dtype ?? args.dtype,
    });
    const drafter = new ModelDrafter(drafterLM);
    const cap = 64 * M;
    const settled = Tensor.zeros(be, "i32", [cap]);
    const progress = Tensor.zeros(be, "i64", [3]);
    try {
      await drafter.start(new TextEncoder().encode("The quick brown fox "));
      const drafting = drafter.onDevice(be, args.k);
      if (!drafting) {
        throw new UserError("profile_verify_cuda: the drafter cannot run on the device");
      }
      // Every replay settles bytes from 0 again (the progress and counters are not reset: the
      // settled bytes stay within cap because the commit stops at it).
      const specRound = () =>
        enqueueDeviceRound({
          model,
          ws,
          state,
          saved,
          drafting,
          drawRows: () => drawRows(M),
          settled: settled.ptr,
          cap,
          progress: progress.ptr,
          counters: counters.ptr,
        });
      const tSpec = timeGraph(specRound);
      const tDraft = timeGraph(() =>
        drafting.draft(saved.control.at(saved.ids + 1), saved.control.at(saved.ids))
      );
      const tPass = timeGraph(verify);
      console.log(
        `spec round graph ${
          tSpec.toFixed(1)
        } us: target ${args.d_model} x ${args.n_layer}, drafter ${args.draft_d_model} x ${args.draft_n_layer} (${
          args.draft_dtype ?? args.dtype
        }), ${args.dtype}, k ${args.k}; alone: the drafter's read + drafts ${
          tDraft.toFixed(1)
        } us, pass + draws ${tPass.toFixed(1)} us`,
      );
      ablate(specRound, tSpec, "spec round");
      drafting.free();
    } finally {
      settled.free();
      progress.free();
      drafter.free();
      drafterLM.close();
    }
    return await release();
  }

  console.log(
    `shape ${args.d_model} x ${args.n_layer} (d_inner ${model.dims.dInner}), ${args.dtype}, k ${args.k} (${M} positions), random weights, ${args.replays} replays x 5`,
  );
  const tStep = timeGraph(step);
  const tVerify = timeGraph(verify);
  console.log(
    `step graph   ${tStep.toFixed(1)} us  (${(tStep / args.n_layer).toFixed(2)} us a layer)`,
  );
  console.log(
    `verify graph ${tVerify.toFixed(1)} us  (${(tVerify / args.n_layer).toFixed(2)} us a layer; ${
      (tVerify / tStep).toFixed(2)
    }x the step)`,
  );
  const tRound = timeGraph(round);
  console.log(
    `verify + resume graph ${tRound.toFixed(1)} us  (${(tRound / tStep).toFixed(2)}x the step)`,
  );
  ablate(verify, tVerify, "verify");

  // The host's part of a round: ids and counters up, one graph launch, the samples down.
  const ids = new Int32Array(M), ctr = new BigInt64Array(M), got = new Int32Array(M);
  be.graphBegin();
  verify();
  const g = be.graphEnd();
  const host: number[] = [];
  for (let r = 0; r < 200; r++) {
    const t0 = performance.now();
    be.upload(ws.ids.ptr, ids);
    be.upload(counters.ptr, ctr);
    be.graphLaunch(g);
    be.download(got, sampled);
    host.push((performance.now() - t0) * 1000);
  }
  be.graphDestroy(g);
  console.log(
    `round trip (upload ids + counters, launch, download samples): ${
      median(host).toFixed(1)
    } us median, against ${tVerify.toFixed(1)} us of graph`,
  );
  await release();
}

if (import.meta.main) await runMain(main);
