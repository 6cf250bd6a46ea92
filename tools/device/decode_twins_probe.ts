// decode_twins_probe.ts — whether b1 fp32 decoding takes the fp16 twins and how fast a step is, through
// generate and through stepLayers directly (run on the GPU machine with MAMBABYTE_CUDA_TF32_F16=0 as
// its peer): deno run --cached-only --no-check -A tools/device/decode_twins_probe.ts
import { loadModel } from "../../src/api.ts";
const model = await loadModel({
  configPath: "configs/mambabyte_lm.yml",
  modelId: "972M",
  checkpoint: null,
  device: "cuda",
  dtype: "fp32",
});
console.log(`f16Products ${model.f16Products} flags ${model.backend.flags}`);
const p = new TextEncoder().encode("Hello");
await model.generate(p, { maxNewTokens: 20, topK: 1 });
for (let r = 0; r < 2; r++) {
  const t0 = performance.now();
  await model.generate(p, { maxNewTokens: 200, topK: 1 });
  console.log(`200 steps: ${((performance.now() - t0) / 200 * 1000).toFixed(1)} us a step`);
}
const ws = model.newWorkspace(1), st = model.newState(1);
model.embed(ws, 1);
model.stepLayers(ws, st, 1);
model.backend.sync();
const t0 = performance.now();
for (let i = 0; i < 50; i++) model.stepLayers(ws, st, 1);
model.backend.sync();
console.log(`stepLayers direct: ${((performance.now() - t0) / 50 * 1000).toFixed(1)} us a step`);
model.close();
