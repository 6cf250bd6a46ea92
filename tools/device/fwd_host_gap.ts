// fwd_host_gap.ts — where a forward through mod.ts spends the time that cuda_bench's replayed
// forward does not (bench:gpu's forward 8192 bf16 has run ~2-3 ms above `cuda_bench
// --timeline-fwd`'s untraced pass). Times, each the median of seven runs after two untimed (972M
// shape, random weights, bench:gpu's 8192 bytes): bench:gpu's pass as it is (a new state each
// run, freed after it, the head), then the same with the state made once and reused, without the
// head, and the host's share (the time until forwardChunks returns, before the sync). On the GPU
// machine, after tools/device/lib.sh's setup_deno:
//   deno run --cached-only --no-check -A tools/device/fwd_host_gap.ts [bf16|fp32] [LEN] [972M]
import { loadModel } from "../../src/api.ts";
import { median } from "../../scripts/lib/bench.ts";

const dtype = Deno.args[0] === "fp32" ? "fp32" : "bf16";
const len = Number(Deno.args[1] ?? 8192);
const model = await loadModel({
  configPath: "configs/mambabyte_lm.yml",
  modelId: Deno.args[2] ?? "972M",
  checkpoint: null,
  device: "cuda",
  dtype,
});
const be = model.backend;
const text = new Uint8Array(len).map((_, i) => 32 + (i * 7) % 90); // bench:gpu's bytes
console.log(`${dtype}: chunk ${model.chunkSize}, ${len} bytes`);

/** Median ms of seven runs after two untimed: the whole run, and until `f` returned (host). */
async function time(label: string, f: () => Promise<() => void>) {
  const whole: number[] = [];
  const host: number[] = [];
  for (let i = 0; i < 9; i++) {
    be.sync();
    const t0 = performance.now();
    const after = await f();
    const t1 = performance.now();
    be.sync();
    after();
    const t2 = performance.now();
    if (i >= 2) whole.push(t2 - t0), host.push(t1 - t0);
  }
  console.log(
    `${dtype} ${label.padEnd(44)} ${median(whole).toFixed(2).padStart(8)} ms` +
      ` (enqueued in ${median(host).toFixed(2)} ms)`,
  );
}

// bench:gpu's pass: a state made for the run and freed after its sync, the head run
await time("as bench:gpu (new state, head)", async () => {
  const st = await model.forwardChunks(text, { skipHead: false });
  return () => st.free();
});
const state = model.newState(1);
await time("state reused, head", async () => {
  await model.forwardChunks(text, { skipHead: false, state });
  return () => {};
});
await time("state reused, no head", async () => {
  await model.forwardChunks(text, { skipHead: true, state });
  return () => {};
});
await time("a new state alone (made, zeroed, freed)", () => {
  const st = model.newState(1);
  return Promise.resolve(() => st.free());
});
state.free();
model.close();
