/**
 * GPU benchmark (`deno task bench:gpu`): a 972M-shaped MambaByte with random weights on CUDA.
 *
 * Measures in the same run the device-to-device copy bandwidth (bytes read + written), then for
 * each case prints bytes/s (a decoding case: generate over --decode_steps bytes less one over 1,
 * per byte, after a first call with the same settings, whose step graphs the later calls replay;
 * then its steady step, generate over --decode_steps bytes less one over 5, and the fixed part of
 * the first call and of a later one: what its first 4 steps take beyond steady steps, the direct
 * step and the captures in a first call), the ratio to the
 * bandwidth roofline (the bytes a step moves, its weights once and its state read and written, at
 * the copy bandwidth) or, for a forward, to the
 * GEMM floor (the forward's matrix-product FLOPs at the rate of the model's in_proj product over
 * the same positions, timed in the same case), and the largest device memory in use sampled while
 * the case holds its state (each decoding step of the warm-up run; after each forward pass, before
 * its state is freed):
 *   decode batch 1 bf16, decode batch 1 fp32 (TF32 off: the weights are read as fp32 either way),
 *   decode batch 8, 64 and 256 bf16, forward over 8192 bytes bf16 and fp32/TF32, and (not in the
 *   default list) fwd-bf16-f32acts and b64-bf16-f32acts, the bf16 forward and batch-64 decoding
 *   with fp32 activations (each product converting its input: the peers of the bf16
 *   activations), and fwd1m-bf16 (~25 s), a forward over a 1 MiB prompt in chunks, bf16. With
 *   bf16 weights the GEMM floor's rate is that of in_proj's bf16 input (the tensor-core product
 *   alone).
 *
 * Usage: deno task bench:gpu [--model_id 972M] [--decode_steps 200] [--forward_len 8192]
 *        [--chunk_size N (the forward's chunk; default: the config's, auto: 8192 with room)]
 *        [--cases b1-bf16,b1-fp32,b8-bf16,b64-bf16,b256-bf16,fwd-bf16,fwd-tf32,fwd1m-bf16,
 *                 fwd-bf16-f32acts,b64-bf16-f32acts,fwd-tf32-no-twins,b1-fp32-tf32]
 */
import { createParser, parseArgs, runMain, UserError } from "../src/cli/mod.ts";
import { loadModel } from "../src/api.ts";
import type { MambaByteLM } from "../src/model/model.ts";
import { Backend, cudaDeviceCount, hasCuda } from "../src/backend/backend.ts";
import { gemmFlopsPerPosition, inProjRate, median, stepBytes, strideBytes } from "./lib/bench.ts";

const parser = createParser("bench_gpu", "GPU speed vs roofline");
parser.add_argument("--config_path", { default: "configs/mambabyte_lm.yml" });
parser.add_argument("--model_id", { default: "972M" });
parser.add_argument("--decode_steps", { type: "int", default: 200 });
parser.add_argument("--forward_len", { type: "int", default: 8192 });
parser.add_argument("--chunk_size", { type: "int", default: null });
parser.add_argument("--cases", {
  default: "b1-bf16,b1-fp32,b8-bf16,b64-bf16,b256-bf16,fwd-bf16,fwd-tf32",
});
// deno-lint-ignore no-explicit-any
type Args = Record<string, any>;

/** Device memory in use now (bytes, all processes: cudaMemGetInfo), or 0 where unknown. */
function memUsed(model: MambaByteLM): number {
  const info = (model.backend.info() ?? {}) as Record<string, number>;
  return typeof info.mem_total === "number" && typeof info.mem_free === "number"
    ? info.mem_total - info.mem_free
    : 0;
}

/** The memory column: the most in use at the case's sample points (while its state is held). */
function peakGB(bytes: number, when: string): string {
  return bytes > 0
    ? `peak ${(bytes / 1e9).toFixed(2)} GB device memory in use ${when}`
    : "memory n/a";
}

async function main(argv: string[]): Promise<void> {
  const args = parseArgs<Args>(parser, argv);
  const cases = new Set(String(args.cases).split(","));
  if (!hasCuda()) throw new UserError("bench:gpu: the native library was built without CUDA");
  if (cudaDeviceCount() === 0) throw new UserError("bench:gpu: no CUDA GPU is present");
  // Each row is printed as soon as it is measured: a run cut short still reports.
  const report = (row: string) => console.log(`model ${args.model_id} (random weights) | ${row}`);
  // Copy bandwidth: 2 GiB device-to-device, counting bytes read and written.
  const be = Backend.create("cuda");
  console.log(`device: ${JSON.stringify(be.info())}`);
  const n = 2 ** 31; // not 1 << 31: that is a negative int32 in JS
  const a = be.alloc(n);
  const b = be.alloc(n);
  be.memset(a, 1, n);
  const copies: number[] = [];
  for (let i = 0; i < 6; i++) {
    be.sync();
    const t0 = performance.now();
    be.copy(b, a, n);
    be.sync();
    copies.push((performance.now() - t0) / 1000);
  }
  const copyBw = (2 * n) / median(copies.slice(1));
  be.free(a);
  be.free(b);
  be.close();
  console.log(`d2d copy bandwidth: ${(copyBw / 1e12).toFixed(2)} TB/s (read + write)`);

  const prompt = new TextEncoder().encode("High up on the hillside in the midst of a rugged group");

  async function withModel(
    dtype: "fp32" | "bf16",
    strict: boolean,
    fn: (m: MambaByteLM) => Promise<void>,
    bf16Activations = true,
    f16Products?: boolean,
  ) {
    const model = await loadModel({
      f16Products,
      configPath: args.config_path,
      modelId: args.model_id,
      checkpoint: null,
      device: "cuda",
      dtype,
      strictFp32: strict,
      bf16Activations,
      chunkSize: args.chunk_size ?? undefined,
    });
    try {
      await fn(model);
    } finally {
      model.close();
    }
  }

  async function decode(
    label: string,
    dtype: "fp32" | "bf16",
    batch: number,
    bf16Activations = true,
    strict = true,
  ) {
    await withModel(dtype, strict, async (model) => {
      // the warm-up samples the memory at each step, while the batch's state is held (the timed
      // run makes the same allocations, and is not slowed by the sampling)
      let peak = 0;
      const tFirst0 = performance.now();
      await model.generate(prompt, {
        maxNewTokens: 5,
        numSamples: batch,
        topK: 1,
        onBytes: () => void (peak = Math.max(peak, memUsed(model))),
      });
      const tFirst5 = performance.now() - tFirst0;
      const timed = async (n: number) => {
        const t0 = performance.now();
        await model.generate(prompt, { maxNewTokens: n, numSamples: batch, topK: 1 });
        return performance.now() - t0;
      };
      // The first call ran a step directly and captured the two step graphs (one a parity of
      // the step); later calls with the same batch and sampling replay them (decode_context.ts)
      const N = args.decode_steps;
      const tN = await timed(N);
      const t1 = await timed(1); // the prefill and the first byte's draw: no step
      const t5 = await timed(5);
      const secs = (tN - t1) / 1000;
      const steps = N - 1;
      const stepsPerS = steps / secs;
      // What a call's first 4 steps take beyond steady ones: in the first call the direct step
      // and the captures (and the first use of each kernel), in a later one next to nothing
      const steadyMs = (tN - t5) / (N - 5);
      const firstMs = tFirst5 - t1 - 4 * steadyMs;
      const laterMs = t5 - t1 - 4 * steadyMs;
      // A copy moves (read + written) bytes at the HBM rate; a decoding step reads its weights and
      // reads and writes its state at that same rate, so the roofline is steps/s = copy bandwidth
      // / (weight bytes + state bytes) per step.
      // fp32 weights with TF32 allowed decode batches up to 8 on the fp16 twins of in_proj and
      // out_proj, so their roofline counts those at 2 bytes a weight
      const twins = model.f16Products && batch <= 8;
      const roofline = copyBw / stepBytes(model.dims, dtype === "bf16" ? 2 : 4, batch, twins);
      report(
        `${label} | ${(stepsPerS * batch).toFixed(0)} bytes/s | roofline ${
          (roofline * batch).toFixed(0)
        } | ratio ${(stepsPerS / roofline).toFixed(2)} | steady ${
          (batch * 1000 / steadyMs).toFixed(0)
        } bytes/s (${(steadyMs * 1000).toFixed(1)} us a step); fixed part ${
          firstMs.toFixed(1)
        } ms in a first call (first launches, captures), ${laterMs.toFixed(1)} ms in later ones | ${
          peakGB(peak, "while decoding")
        }`,
      );
    }, bf16Activations);
  }

  async function forward(
    label: string,
    dtype: "fp32" | "bf16",
    strict: boolean,
    len: number,
    bf16Activations = true,
    f16Products?: boolean,
  ) {
    await withModel(
      dtype,
      strict,
      async (model) => {
        const text = strideBytes(len);
        let peak = 0;
        const run = async () => {
          const st = await model.forwardChunks(text, { skipHead: false });
          model.backend.sync();
          peak = Math.max(peak, memUsed(model)); // the workspace and the state still held
          st.free();
        };
        // A long prompt runs chunk by chunk (the state carried): one timed pass after a short one.
        const long = len > 65536;
        if (long) {
          await model.forwardChunks(text.subarray(0, 4096), { skipHead: false }).then((s) =>
            s.free()
          );
        } else await run();
        const times: number[] = [];
        for (let i = 0; i < (long ? 1 : 5); i++) {
          const t0 = performance.now();
          await run();
          times.push(performance.now() - t0);
        }
        const ms = median(times);
        const rate = inProjRate(model, Math.min(len, 8192));
        const floorMs = len * gemmFlopsPerPosition(model.dims) / rate * 1000;
        report(
          `${label} | chunk ${model.chunkSize} | ${ms.toFixed(1)} ms | ${
            (len / (ms / 1000)).toFixed(0)
          } bytes/s | GEMM floor ${floorMs.toFixed(1)} ms at ${
            (rate / 1e12).toFixed(0)
          } TFLOP/s | ratio ${(floorMs / ms).toFixed(2)} | ${peakGB(peak, "after a pass")}`,
        );
      },
      bf16Activations,
      f16Products,
    );
  }

  if (args.decode_steps < 8) throw new UserError("bench:gpu: --decode_steps must be >= 8");
  if (cases.has("b1-bf16")) await decode("decode b1 bf16", "bf16", 1);
  if (cases.has("b1-fp32")) await decode("decode b1 fp32", "fp32", 1);
  // fp32 weights with TF32 allowed (loadModel's default): in_proj and out_proj on the fp16 twins
  if (cases.has("b1-fp32-tf32")) await decode("decode b1 fp32, TF32", "fp32", 1, true, false);
  if (cases.has("b8-bf16")) await decode("decode b8 bf16", "bf16", 8);
  if (cases.has("b64-bf16")) await decode("decode b64 bf16", "bf16", 64);
  if (cases.has("b64-bf16-f32acts")) {
    await decode("decode b64 bf16, fp32 activations", "bf16", 64, false);
  }
  if (cases.has("b256-bf16")) await decode("decode b256 bf16", "bf16", 256);
  const fl = args.forward_len;
  if (cases.has("fwd-bf16")) await forward(`forward ${fl} bf16`, "bf16", false, fl);
  if (cases.has("fwd-tf32")) await forward(`forward ${fl} fp32/tf32`, "fp32", false, fl);
  if (cases.has("fwd-tf32-no-twins")) {
    // its peer: the weights without fp16 twins (in_proj's operands converted a call)
    await forward(`forward ${fl} fp32/tf32, no fp16 twins`, "fp32", false, fl, true, false);
  }
  if (cases.has("fwd-bf16-f32acts")) {
    await forward(`forward ${fl} bf16, fp32 activations`, "bf16", false, fl, false);
  }
  if (cases.has("fwd1m-bf16")) await forward("forward 1 MiB bf16", "bf16", false, 1 << 20);
}

if (import.meta.main) await runMain(main);
