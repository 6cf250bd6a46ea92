// fwd_input_probe.ts — a forward over 8192 bytes of text against one over ids all 0 (as cuda_bench
// feeds it), through forwardChunks and through embed + forwardLayers + head called directly: where
// bench:gpu's forward differs from cuda_bench's (docs/cuda_notes.md, "bench:gpu against
// cuda_bench: the input, not mod.ts"). On the GPU machine, after tools/device/lib.sh's setup_deno:
//   deno run --cached-only --no-check -A tools/device/fwd_input_probe.ts [fp32|bf16]
import { loadModel } from "../../src/api.ts";
import { strideBytes } from "../../scripts/lib/bench.ts";

const dtype = Deno.args[0] === "bf16" ? "bf16" : "fp32";
const model = await loadModel({
  configPath: "configs/mambabyte_lm.yml",
  modelId: "972M",
  checkpoint: null,
  device: "cuda",
  dtype,
});
const text = strideBytes(8192); // bench:gpu's bytes
const zeros = new Uint8Array(8192);

/** The median of five timed runs after one untimed, in ms. */
async function time(label: string, f: () => Promise<void> | void) {
  await f();
  model.backend.sync();
  const t: number[] = [];
  for (let i = 0; i < 5; i++) {
    const t0 = performance.now();
    await f();
    model.backend.sync();
    t.push(performance.now() - t0);
  }
  console.log(`${dtype} ${label}: ${t.sort((a, b) => a - b)[2].toFixed(2)} ms`);
}

for (const [name, bytes] of [["text", text], ["ids 0", zeros]] as const) {
  await time(`forwardChunks over ${name}`, async () => {
    (await model.forwardChunks(bytes, { skipHead: false })).free();
  });
  const ws = model.newWorkspace(model.chunkSize), st = model.newState(1);
  const ids = new Int32Array(ws.rows);
  ids.set(bytes);
  model.backend.upload(ws.ids.ptr, ids);
  await time(`embed + forwardLayers + head over ${name}`, () => {
    model.embed(ws, bytes.length);
    model.forwardLayers(ws, st, bytes.length);
    model.runHead(ws, bytes.length);
  });
  ws.free();
  st.free();
}
model.close();
