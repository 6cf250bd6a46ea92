/**
 * --device cuda:N (and general.device: cuda:N): the setting is parsed in one place, refused with a
 * usage error when malformed, and loadModel puts the model on GPU N or says why it cannot.
 */
import assert from "node:assert/strict";
import { loadModel, resolveDeviceIndex } from "../mod.ts";
import { cudaDeviceCount, hasCuda } from "../src/backend/backend.ts";
import { addModelFlags, createParser, type ModelArgs, parseArgs } from "../src/cli/args.ts";
import { UsageError } from "../src/cli/errors.ts";
import { ConfigError, deviceIndex, parseConfig, parseDeviceSetting } from "../src/config/config.ts";
import { MambaByteError } from "../src/errors.ts";

const CONFIG = new URL("../configs/mambabyte_lm.yml", import.meta.url).pathname;
const gpus = hasCuda() ? cudaDeviceCount() : 0;
const noGpu = gpus === 0 ? (hasCuda() ? "no CUDA GPU is present" : "built without CUDA") : "";
if (noGpu) console.warn(`device_index_test: GPU checks skipped: ${noGpu}`);

Deno.test("device settings: auto, cpu, cuda, cuda:N and nothing else", () => {
  for (const ok of ["auto", "cpu", "cuda", "cuda:0", "cuda:7", "cuda:1023"]) {
    assert.equal(parseDeviceSetting(ok), ok);
  }
  for (
    const bad of ["gpu", "cuda:", "cuda:-1", "cuda:01", "cuda:1024", "cuda:x", "CUDA", 1, null]
  ) {
    assert.equal(parseDeviceSetting(bad), null, String(bad));
  }
  assert.equal(deviceIndex("cuda:3"), 3);
  assert.equal(deviceIndex("cuda"), 0);
  assert.equal(deviceIndex("cpu"), 0);
});

Deno.test("--device cuda:N parses; a malformed one is a usage error naming the choices", () => {
  const p = createParser("x.ts", "x");
  addModelFlags(p);
  assert.equal(parseArgs<ModelArgs>(p, ["--device", "cuda:2"]).device, "cuda:2");
  assert.equal(parseArgs<ModelArgs>(p, ["--device", "cpu"]).device, "cpu");
  for (const bad of ["gpu", "cuda:a", "cuda:2048"]) {
    assert.throws(() => parseArgs<ModelArgs>(p, ["--device", bad]), (e: Error) => {
      assert.ok(e instanceof UsageError);
      assert.match(e.message, /--device: invalid choice: .*cuda:N/);
      return true;
    });
  }
});

Deno.test("general.device: cuda:N is accepted, anything else names the choices", () => {
  const shipped = Deno.readTextFileSync(CONFIG);
  const yml = (d: string) => shipped.replace(/^( {2}device:) auto\b/m, `$1 ${d}`);
  assert.notEqual(yml("cuda:1"), shipped);
  assert.equal(parseConfig(yml("cuda:1"), "c.yml").general.device, "cuda:1");
  assert.throws(() => parseConfig(yml("cuda:x"), "c.yml"), (e: Error) => {
    assert.ok(e instanceof ConfigError);
    assert.match(e.message, /general\.device must be one of auto, cpu, cuda, cuda:N/);
    return true;
  });
});

Deno.test("resolveDeviceIndex: the CPU is index 0; cuda:N without that GPU is a clear error", () => {
  assert.deepEqual(resolveDeviceIndex("cpu"), { kind: "cpu", index: 0 });
  if (gpus === 0) assert.deepEqual(resolveDeviceIndex("auto"), { kind: "cpu", index: 0 });
  assert.throws(() => resolveDeviceIndex(`cuda:${gpus}`), (e: Error) => {
    assert.ok(e instanceof MambaByteError);
    assert.match(e.message, new RegExp(`^device cuda:${gpus}: `));
    assert.match(
      e.message,
      hasCuda() ? (gpus ? new RegExp(`sees ${gpus} CUDA GPU`) : /no CUDA GPU/) : /no CUDA backend/,
    );
    return true;
  });
});

Deno.test("loadModel with cuda:N beyond the visible GPUs fails before loading anything", async () => {
  await assert.rejects(
    loadModel({ configPath: CONFIG, modelId: "test-48x2", device: `cuda:${gpus}` }),
    (e: Error) => e instanceof MambaByteError && e.message.startsWith(`device cuda:${gpus}: `),
  );
});

Deno.test({
  name: "loadModel on cuda:N runs on GPU N (the last one visible) and gives the CPU's logits",
  ignore: gpus === 0,
  async fn() {
    const bytes = new TextEncoder().encode("High up on the hillside");
    const n = gpus - 1;
    const gpu = await loadModel({ configPath: CONFIG, modelId: "test-48x2", device: `cuda:${n}` });
    const cpu = await loadModel({ configPath: CONFIG, modelId: "test-48x2", device: "cpu" });
    try {
      assert.equal(gpu.device, "cuda");
      assert.equal(gpu.deviceIndex, n);
      assert.equal(cpu.deviceIndex, 0);
      const a = (await gpu.forward(bytes)).logits;
      const b = (await cpu.forward(bytes)).logits;
      let err = 0;
      for (let i = 0; i < a.length; i++) err = Math.max(err, Math.abs(a[i] - b[i]));
      assert.ok(err < 1e-2, `max |cuda:${n} - cpu| = ${err}`);
    } finally {
      gpu.close();
      cpu.close();
    }
  },
});
