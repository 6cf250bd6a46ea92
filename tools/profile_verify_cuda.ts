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
 * Usage (GPU machine): deno run -A tools/profile_verify_cuda.ts [--d_model 384] [--n_layer 24]
 *   [--k 7] [--dtype fp32|bf16] [--replays 200] [--only step|verify|round|draft]
 */
import { createParser, parseArgs, runMain, UserError } from "../src/cli/mod.ts";
import { Backend, loadModel, RecurrentState, Tensor } from "../mod.ts";
import { offsetPtr } from "../src/backend/backend.ts";
import { VerifyBuffers } from "../src/model/workspace.ts";
import { median } from "../scripts/lib/bench.ts";

const parser = createParser("profile_verify_cuda", "verification's cost by ablation (CUDA)");
parser.add_argument("--d_model", { type: "int", default: 384 });
parser.add_argument("--n_layer", { type: "int", default: 24 });
parser.add_argument("--k", { type: "int", default: 7 });
parser.add_argument("--dtype", { choices: ["fp32", "bf16"], default: "fp32" });
parser.add_argument("--replays", { type: "int", default: 200 });
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
}
async function main(argv: string[]): Promise<void> {
  const args = parseArgs<Args>(parser, argv);
  if (!(args.k >= 1 && args.k <= 63) || !(args.replays >= 1)) {
    throw new UserError("profile_verify_cuda: --k must be 1..63 and --replays at least 1");
  }

  const dir = await Deno.makeTempDir();
  const config = `${dir}/shape.yml`;
  await Deno.writeTextFile(
    config,
    `model:\n  common: {vocab_size: 256, d_state: 16, d_conv: 4, expand: 2, dt_rank: auto, norm: layernorm, norm_epsilon: 1.0e-5}\n  shape: {d_model: ${args.d_model}, n_layer: ${args.n_layer}}\n`,
  );
  const model = await loadModel({
    configPath: config,
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
  const sampleRow = (row: number) =>
    be.sample({
      logits: ws.logits.at(row * 256),
      batch: 1,
      v: 256,
      temperature: 1,
      topK: 1,
      topP: 0,
      seed: 1n,
      counter: counters.at(row),
      out: offsetPtr(sampled, row * 4),
    });
  const step = () => {
    model.embed(ws, 1);
    model.stepLayers(ws, state, 1);
    model.runHead(ws, 1);
    sampleRow(0);
  };
  const verify = () => {
    model.embed(ws, M);
    model.verifyLayers(ws, state, saved);
    model.verifyHead(ws, M);
    for (let i = 0; i < M; i++) sampleRow(i);
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

  // Which backend calls the verification makes (and how many).
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
  verify();
  be.sync();
  for (const name of methods) delete inst[name];
  const ablate = [...calls.keys()].filter((n) => !["sync", "graphBegin", "graphEnd"].includes(n));

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
  console.log("verify without one kind of call (its cost = verify - without):");
  for (const name of ablate) {
    inst[name] = () => {};
    let t: number;
    try {
      t = timeGraph(verify);
    } finally {
      delete inst[name];
    }
    console.log(
      `  ${name.padEnd(16)} ${String(calls.get(name)).padStart(4)} calls  without ${
        t.toFixed(1).padStart(7)
      } us  cost ${(tVerify - t).toFixed(1).padStart(7)} us`,
    );
  }

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
