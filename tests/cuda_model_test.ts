/**
 * The model on the CUDA backend against the CPU backend (its reference) and against the
 * independent fixtures. Skipped, saying why, where the library has no CUDA or there is no GPU.
 * Per-op CUDA-vs-CPU checks on random inputs live in csrc/tests/cuda_vs_cpu.c (tools/device).
 */
import assert from "node:assert/strict";
import { loadModel, type MambaByteLM, type SpeculativeStats } from "../mod.ts";
import { cudaDeviceCount, hasCuda } from "../src/backend/backend.ts";
import {
  extractDiscreteA,
  extractInputSimilarity,
  extractModuleOutputs,
} from "../src/analysis/extract.ts";
import { openCheckpoint } from "../src/checkpoint/mod.ts";
import { workspaceBytes } from "../src/model/workspace.ts";
import { AUTO_CHUNKS } from "../src/model/chunk_size.ts";
import { firstDifference, maxRelError } from "./helpers/compare.ts";
import { forkStates, stepByte, verifyRows, withVerifyWorkspaces } from "./helpers/verify_pass.ts";

const CONFIG = new URL("../configs/mambabyte_lm.yml", import.meta.url).pathname;
const FIXTURES = new URL("./fixtures/", import.meta.url).pathname;

function gpuReason(): string | null {
  try {
    if (!hasCuda()) return "the native library was built without CUDA";
    if (cudaDeviceCount() === 0) return "no CUDA GPU is present";
    return null;
  } catch (e) {
    return `native library unavailable: ${(e as Error).message}`;
  }
}

const reason = gpuReason();
if (reason) console.warn(`cuda_model_test: skipped: ${reason}`);
const ignore = reason !== null;

const TEXT = new TextEncoder().encode(
  "GPU and CPU must agree — ÆØÅ ünïcödé 0123456789.\n".repeat(4),
);

/** The fixture model with bf16 weights on the GPU, in chunks of 64 positions. */
const BF16_GPU = {
  configPath: CONFIG,
  modelId: "test-64x3",
  seed: 3,
  dtype: "bf16",
  chunkSize: 64,
  device: "cuda",
} as const;

async function pair(
  dtype: "fp32" | "bf16",
  strictFp32: boolean,
  chunkSize = 64,
): Promise<[MambaByteLM, MambaByteLM]> {
  const common = { configPath: CONFIG, modelId: "test-64x3", seed: 3, dtype, chunkSize };
  const cpu = await loadModel({ ...common, device: "cpu" });
  const gpu = await loadModel({ ...common, device: "cuda", strictFp32 });
  return [cpu, gpu];
}

Deno.test({
  name:
    "chunk_size: auto on the GPU: the longest chunk whose workspace fits a quarter of its memory",
  ignore,
  async fn() {
    const lm = await loadModel({ configPath: CONFIG, modelId: "tiny", device: "cuda" });
    try {
      const free = Number(lm.backend.info().mem_free);
      const expect = AUTO_CHUNKS.find((rows) =>
        workspaceBytes(lm.dims, rows, 256, lm.bf16Activations) <= free / 4
      ) ?? 2048;
      assert.equal(lm.chunkSize, expect);
      const text = TEXT.subarray(0, 100);
      const a = await lm.forwardChunks(text, { skipHead: false });
      a.free();
    } finally {
      lm.close();
    }
  },
});

/** Weight formats the GPU is held to the CPU in, with the tolerance of each. */
const WEIGHT_FORMS = [
  ["fp32 strict", "fp32", true, 1e-5, undefined],
  ["fp32 TF32", "fp32", false, 1e-3, undefined],
  ["fp32 TF32, every product of more than 8 rows on fp16 operands", "fp32", false, 1e-3, "2"],
  ["bf16 weights", "bf16", false, 1e-2, undefined],
] as const;

for (
  const [label, dtype, strict, tol, tf32F16] of WEIGHT_FORMS
) {
  Deno.test({
    name: `cuda forward and taps equal the CPU: ${label}`,
    ignore,
    async fn() {
      // MAMBABYTE_CUDA_TF32_F16 is read when the GPU model's context is made
      if (tf32F16) Deno.env.set("MAMBABYTE_CUDA_TF32_F16", tf32F16);
      const [cpu, gpu] = await pair(dtype, strict).finally(() => {
        if (tf32F16) Deno.env.delete("MAMBABYTE_CUDA_TF32_F16");
      });
      try {
        const opts = { taps: ["dt_proj", "conv1d", "mixer"] as const, layers: [0, 2] };
        const a = await cpu.forward(TEXT, opts);
        const b = await gpu.forward(TEXT, opts);
        const e = maxRelError(b.logits, a.logits);
        assert.ok(e < tol, `logits ${e}`);
        for (const tap of opts.taps) {
          for (const l of opts.layers) {
            const et = maxRelError(b.taps.get(tap)!.get(l)!, a.taps.get(tap)!.get(l)!);
            assert.ok(et < tol, `${tap}.${l}: ${et}`);
          }
        }
      } finally {
        cpu.close();
        gpu.close();
      }
    },
  });
}

Deno.test({
  name: "cuda forward in chunks of 16384 positions equals chunks of 2048 (tiny, 20,000 bytes)",
  ignore,
  async fn() {
    const common = {
      configPath: CONFIG,
      modelId: "tiny",
      device: "cuda",
      strictFp32: true,
    } as const;
    const long = await loadModel({ ...common, chunkSize: 16384 });
    const short = await loadModel({ ...common, chunkSize: 2048 });
    try {
      const bytes = new Uint8Array(20000);
      for (let i = 0; i < bytes.length; i++) bytes[i] = (i * 2654435761) >>> 24;
      const a = await long.forward(bytes);
      const b = await short.forward(bytes);
      const e = maxRelError(a.logits, b.logits);
      assert.ok(e < 1e-4, `logits ${e}`);
    } finally {
      long.close();
      short.close();
    }
  },
});

// Chunks of more than 256 positions add out_proj into the residual inside the GEMM (bf16 weights,
// and fp32 weights where TF32 is allowed; mb_linear_add_norm), on cuBLASLt's fixed entries.
const LONG_TEXT = new TextEncoder().encode(
  "Chunks longer than the decoding batches take other products. ".repeat(19),
);
for (
  const [label, dtype, strict, tol] of WEIGHT_FORMS
) {
  Deno.test({
    name: `cuda forward in chunks of 512 positions equals the CPU: ${label}`,
    ignore,
    async fn() {
      const [cpu, gpu] = await pair(dtype, strict, 512);
      try {
        const a = await cpu.forward(LONG_TEXT);
        const b = await gpu.forward(LONG_TEXT);
        const e = maxRelError(b.logits, a.logits);
        assert.ok(e < tol, `logits ${e} (${LONG_TEXT.length} bytes)`);
      } finally {
        cpu.close();
        gpu.close();
      }
    },
  });
}

Deno.test({
  name: "cuda bf16 activations: forward logits, taps and batch decoding are the bits of fp32 ones",
  ignore,
  async fn() {
    // chunks of 64 and tails of 28 (bf16 activations) and of 5 rows (a short chunk: fp32)
    // (xz and delta stay fp32 here: bf16MixerActivations rounds them, the next test)
    const on = await loadModel({
      ...BF16_GPU,
      bf16Activations: true,
      bf16MixerActivations: false,
    });
    const off = await loadModel({ ...BF16_GPU, bf16Activations: false });
    try {
      assert.ok(on.bf16Activations && !off.bf16Activations && !on.bf16MixerActivations);
      for (const text of [TEXT, TEXT.subarray(0, 133)]) {
        for (const taps of [[], ["norm", "dt_proj", "conv1d", "x_proj", "mixer"]] as const) {
          const opts = { taps, layers: [0, 2] };
          const a = await on.forward(text, opts);
          const b = await off.forward(text, opts);
          assert.deepEqual(
            a.logits,
            b.logits,
            `logits (${text.length} bytes, ${taps.length} taps)`,
          );
          for (const tap of taps) {
            for (const l of opts.layers) {
              assert.deepEqual(a.taps.get(tap)!.get(l), b.taps.get(tap)!.get(l), `${tap}.${l}`);
            }
          }
        }
      }
      // decoding more than 8 sequences: in_proj on the norm's bf16 rows (greedy and sampled)
      for (const opts of [{ topK: 1 }, { seed: 9 }]) {
        const gen = { maxNewTokens: 24, numSamples: 12, ...opts };
        const prompt = TEXT.subarray(0, 40);
        assert.deepEqual(await on.generate(prompt, gen), await off.generate(prompt, gen));
      }
    } finally {
      on.close();
      off.close();
    }
  },
});

// bf16MixerActivations (the default with bf16 activations): a forward without taps stores xz, u
// and delta as bf16, each value within 2^-9 of its fp32 form (one rounding); the logits then stay
// within the bf16 weights' tolerance of the CPU (1e-2, as above) and differ from the fp32 ones'
// (the path ran); forwards with taps keep fp32 xz, u and delta, so their logits keep those bits.
Deno.test({
  name:
    "cuda bf16 xz, u and delta: a forward without taps within 1e-2 of the CPU; a dt_proj tap keeps " +
    "them, an in_proj tap takes fp32 xz",
  ignore,
  async fn() {
    const mix = await loadModel({ ...BF16_GPU, chunkSize: 512 });
    const fp32 = await loadModel({ ...BF16_GPU, chunkSize: 512, bf16MixerActivations: false });
    const cpu = await loadModel({ ...BF16_GPU, chunkSize: 512, device: "cpu" });
    try {
      assert.ok(mix.bf16MixerActivations && !fp32.bf16MixerActivations);
      for (const text of [TEXT, LONG_TEXT]) {
        const a = await mix.forward(text), b = await fp32.forward(text);
        const c = await cpu.forward(text);
        assert.notDeepEqual(a.logits, b.logits, `bf16 xz changed nothing (${text.length} bytes)`);
        const eFp32 = maxRelError(a.logits, b.logits), eCpu = maxRelError(a.logits, c.logits);
        assert.ok(eFp32 < 1e-2, `against fp32 xz: ${eFp32} (${text.length} bytes)`);
        assert.ok(eCpu < 1e-2, `against the CPU: ${eCpu} (${text.length} bytes)`);
        console.log(
          `bf16 xz, u and delta, ${text.length} bytes: max rel. error ${eFp32.toExponential(2)} ` +
            `against fp32 xz, ${eCpu.toExponential(2)} against the CPU`,
        );
        // a dt_proj tap: the plain forward's bf16 xz, u and delta (its logits to the bit), and
        // the tap's fp32 delta with its bias (from dt_proj's own fp32 product) near the others'
        const dt = { taps: ["dt_proj"] as const, layers: [1] };
        const ta = await mix.forward(text, dt), tb = await fp32.forward(text, dt);
        const tc = await cpu.forward(text, dt);
        const at = firstDifference(ta.logits, a.logits);
        assert.equal(at, -1, `dt_proj tap: logits differ at ${at} (${text.length} bytes)`);
        const [da, db, dc] = [ta, tb, tc].map((r) => r.taps.get("dt_proj")!.get(1)!);
        const eTap = maxRelError(da, db), eTapCpu = maxRelError(da, dc);
        assert.ok(eTap < 1e-2, `dt_proj tap against fp32 xz's: ${eTap} (${text.length} bytes)`);
        assert.ok(eTapCpu < 1e-2, `dt_proj tap against the CPU's: ${eTapCpu}`);
        // an in_proj tap reads xz: fp32 xz, as the model without bf16 xz
        const xz = { taps: ["in_proj", "dt_proj"] as const, layers: [1] };
        const xa = await mix.forward(text, xz), xb = await fp32.forward(text, xz);
        const ax = firstDifference(xa.logits, xb.logits);
        assert.equal(ax, -1, `in_proj tap: logits differ at ${ax} (${text.length} bytes)`);
        const ix = firstDifference(
          xa.taps.get("in_proj")!.get(1)!,
          xb.taps.get("in_proj")!.get(1)!,
        );
        assert.equal(ix, -1, `in_proj tap: xz differs at ${ix} (${text.length} bytes)`);
      }
    } finally {
      mix.close();
      fp32.close();
      cpu.close();
    }
  },
});

Deno.test({
  name: "cuda bf16 decoding of 3 to 80 sequences picks the forward's argmax (tensor cores from 4)",
  ignore,
  async fn() {
    const gpu = await loadModel(BF16_GPU);
    try {
      const prompt = TEXT.subarray(0, 30);
      // 3: Backend.decodeLayers' GEMVs; 4 and 8: the tensor-core steps (with out_proj + norm);
      // 12 and 80: also the conv step with x_proj on the tensor cores (above 64 rows too)
      for (const numSamples of [3, 4, 8, 12, 80]) {
        const gens = await gpu.generate(prompt, { maxNewTokens: 16, topK: 1, numSamples });
        assert.equal(gens.length, numSamples);
        for (const [s, gen] of gens.entries()) {
          const seq = new Uint8Array(prompt.length + gen.length);
          seq.set(prompt), seq.set(gen, prompt.length);
          const { logits } = await gpu.forward(seq);
          for (let i = 0; i < gen.length; i++) {
            const row = logits.subarray((prompt.length - 1 + i) * 256, (prompt.length + i) * 256);
            let top = -Infinity, scale = 0;
            for (const v of row) top = Math.max(top, v), scale = Math.max(scale, Math.abs(v));
            // greedy up to bf16 rounding: the chosen byte's logit within 2% of the row's scale
            assert.ok(
              row[gen[i]] >= top - 0.02 * scale - 1e-3,
              `${numSamples} sequences, #${s} byte ${i}: ${row[gen[i]]} against ${top}`,
            );
          }
        }
      }
    } finally {
      gpu.close();
    }
  },
});

Deno.test({
  name: "cuda greedy generation (graph replay, batch 1, 3 and 64) equals the CPU's",
  ignore,
  async fn() {
    const [cpu, gpu] = await pair("fp32", true);
    try {
      // 64: steps of more than 8 sequences take the batch products (cuBLAS) and state update
      for (const numSamples of [1, 3, 64]) {
        const opts = { maxNewTokens: 40, topK: 1, numSamples };
        const a = await cpu.generate(TEXT.subarray(0, 30), opts);
        const b = await gpu.generate(TEXT.subarray(0, 30), opts);
        assert.deepEqual(b, a);
        const c = await gpu.generate(TEXT.subarray(0, 30), { ...opts, useGraphs: false });
        assert.deepEqual(c, a);
        // the default overlaps each step with the host's work on the last one's bytes
        const d = await gpu.generate(TEXT.subarray(0, 30), { ...opts, overlap: false });
        assert.deepEqual(d, a);
      }
      // sampled, ending on stop sequences: one step past the end was queued, and dropped
      const stop = [new TextEncoder().encode("e")];
      const sampled = { maxNewTokens: 50, seed: 7, numSamples: 3, stop };
      assert.deepEqual(
        await gpu.generate(TEXT.subarray(0, 30), sampled),
        await gpu.generate(TEXT.subarray(0, 30), { ...sampled, overlap: false }),
      );
      const s1 = await gpu.generate(TEXT.subarray(0, 30), {
        maxNewTokens: 30,
        seed: 5,
        numSamples: 2,
      });
      const s2 = await gpu.generate(TEXT.subarray(0, 30), {
        maxNewTokens: 30,
        seed: 5,
        numSamples: 2,
      });
      assert.deepEqual(s1, s2);
    } finally {
      cpu.close();
      gpu.close();
    }
  },
});

Deno.test({
  name: "cuda generate calls with the same batch and sampling replay the last call's graphs",
  ignore,
  async fn() {
    const [cpu, gpu] = await pair("fp32", true);
    const be = gpu.backend;
    const begin = be.graphBegin.bind(be);
    let captures = 0;
    be.graphBegin = () => (captures++, begin());
    const captured = async (prompt: Uint8Array, o: Parameters<MambaByteLM["generate"]>[1]) => {
      captures = 0;
      const got = await gpu.generate(prompt, o);
      return { got, captures };
    };
    try {
      for (const numSamples of [1, 3, 64]) {
        const greedy = { maxNewTokens: 24, topK: 1, numSamples };
        // the two step graphs (one a parity of the step), then none while the key holds: other
        // prompts and lengths, and a long prompt's forward between the calls
        for (const [i, [len, n]] of [[30, 24], [7, 24], [30, 9], [150, 24]].entries()) {
          const opts = { ...greedy, maxNewTokens: n };
          const r = await captured(TEXT.subarray(0, len), opts);
          assert.deepEqual(r.got, await cpu.generate(TEXT.subarray(0, len), opts));
          assert.equal(r.captures, i === 0 ? 2 : 0, `batch ${numSamples}, call ${i}`);
          if (i === 2) await gpu.forward(TEXT);
        }
      }
      // sampled: the draw counter starts at 0 in every call, kept context or not
      const sampled = { maxNewTokens: 30, seed: 11, numSamples: 3, temperature: 0.8 };
      const first = await captured(TEXT.subarray(0, 20), sampled);
      const again = await captured(TEXT.subarray(0, 20), sampled);
      assert.deepEqual([first.captures, again.captures], [2, 0]);
      assert.deepEqual(again.got, first.got);
      // another seed is another key: captured anew, and the kept context of the first freed
      const other = await captured(TEXT.subarray(0, 20), { ...sampled, seed: 12 });
      assert.equal(other.captures, 2);
      assert.notDeepEqual(other.got, first.got);
      const back = await captured(TEXT.subarray(0, 20), sampled);
      assert.deepEqual([back.got, back.captures], [first.got, 2]);
      gpu.releaseDecodeBuffers();
      assert.deepEqual((await captured(TEXT.subarray(0, 20), sampled)).captures, 2);
      Deno.env.set("MAMBABYTE_DECODE_KEEP", "0");
      try {
        await gpu.generate(TEXT.subarray(0, 20), sampled); // frees the context it took
        const none = await captured(TEXT.subarray(0, 20), sampled);
        assert.deepEqual([none.got, none.captures], [first.got, 2]);
      } finally {
        Deno.env.delete("MAMBABYTE_DECODE_KEEP");
      }
    } finally {
      be.graphBegin = begin;
      cpu.close();
      gpu.close();
    }
  },
});

Deno.test({
  name: "cuda log-probs and ranks equal the CPU's",
  ignore,
  async fn() {
    const [cpu, gpu] = await pair("fp32", true, 50);
    try {
      const a = await cpu.logProbs(TEXT);
      const b = await gpu.logProbs(TEXT);
      assert.ok(maxRelError(b.logProbs, a.logProbs) < 1e-5);
      let mismatched = 0;
      for (let i = 0; i < a.ranks.length; i++) if (a.ranks[i] !== b.ranks[i]) mismatched++;
      assert.ok(mismatched <= 1, `${mismatched} ranks differ`); // ties within rounding only
    } finally {
      cpu.close();
      gpu.close();
    }
  },
});

/**
 * Reads an unreduced (L, D, N) tensor along the reduced `dim`: (output element, index along dim)
 * to the value there, for checking the indices of a reduction over `dim`.
 */
function argValueReader(
  E: Float32Array,
  shape: readonly number[],
  dim: number,
): (i: number, k: number) => number {
  const [, D, N] = shape;
  const d = dim < 0 ? dim + 3 : dim;
  if (d === 0) return (i, k) => E[k * D * N + i];
  if (d === 1) return (i, k) => E[Math.floor(i / N) * D * N + k * N + (i % N)];
  return (i, k) => E[i * N + k];
}

Deno.test({
  name:
    "cuda extractions (discrete-A, every reduction; input similarity; module outputs) equal the CPU's",
  ignore,
  async fn() {
    // chunk 50 over 200 bytes: 4 chunks, so reductions across positions carry between chunks
    const [cpu, gpu] = await pair("fp32", true, 50);
    try {
      const cases: [string | null, number | null][] = [
        [null, null],
        ["fro", null],
        ["nuc", null],
        ...(["mean", "min", "max", "norm"] as const).flatMap((
          r,
        ) => [null, 0, 1, -1].map((d) => [r, d] as [string, number | null])),
      ];
      const full = await extractDiscreteA(cpu, TEXT, { reduction: null, layers: [0, 2] });
      for (const [reduction, dim] of cases) {
        const opts = {
          reduction: reduction as "mean" | null,
          reductionDim: dim,
          indices: true,
          logProbs: true,
          layers: [0, 2],
        };
        const a = await extractDiscreteA(cpu, TEXT, opts);
        const b = await extractDiscreteA(gpu, TEXT, opts);
        for (const l of [0, 2]) {
          // dt_proj differs by ~1e-6 between the backends; E = exp(softplus(dt) A) by |A| times
          // that relatively
          const e = maxRelError(
            b.perLayer.get(l)!.data as Float32Array,
            a.perLayer.get(l)!.data as Float32Array,
          );
          assert.ok(e < 1e-4, `${reduction} dim ${dim} layer ${l}: ${e}`);
          const ia = a.indices?.get(l)?.data as BigInt64Array | undefined;
          const ib = b.indices?.get(l)?.data as BigInt64Array | undefined;
          assert.equal(!ia, !ib);
          if (ia && ib) {
            // An arg-min/max may differ only between near-ties: the CPU's own values at the two
            // indices agree within the values' tolerance (expf differs by an ulp or two).
            const E = full.perLayer.get(l)!.data as Float32Array;
            const at = argValueReader(E, full.perLayer.get(l)!.shape, dim!);
            for (let i = 0; i < ia.length; i++) {
              if (ia[i] === ib[i]) continue;
              const va = at(i, Number(ia[i])), vb = at(i, Number(ib[i]));
              assert.ok(
                Math.abs(va - vb) <= 1e-4 * Math.max(Math.abs(va), Math.abs(vb)) + 1e-30,
                `${reduction} dim ${dim} layer ${l} element ${i}: index ${ia[i]} (${va}) on the ` +
                  `CPU, ${ib[i]} (${vb}) on CUDA`,
              );
            }
          }
        }
        assert.ok(
          maxRelError(b.logProbs!.data as Float32Array, a.logProbs!.data as Float32Array) < 1e-5,
        );
      }
      const sa = await extractInputSimilarity(cpu, TEXT, { layers: [1] });
      const sb = await extractInputSimilarity(gpu, TEXT, { layers: [1] });
      const es = maxRelError(
        sb.perLayer.get(1)!.data as Float32Array,
        sa.perLayer.get(1)!.data as Float32Array,
      );
      assert.ok(es < 1e-4, `input similarity ${es}`);
      const ma = await extractModuleOutputs(cpu, TEXT, { modules: ["dt_proj", "in_proj"] });
      const mb = await extractModuleOutputs(gpu, TEXT, { modules: ["dt_proj", "in_proj"] });
      for (const m of ["dt_proj", "in_proj"] as const) {
        for (const l of [0, 1, 2]) {
          const e = maxRelError(
            mb.modules.get(m)!.get(l)!.data as Float32Array,
            ma.modules.get(m)!.get(l)!.data as Float32Array,
          );
          assert.ok(e < 1e-5, `${m}.${l}: ${e}`);
        }
      }
      // reused result arrays, registered as download destinations (mb_host_register): the
      // chunks land in them straight from the device; twice, the second time already registered
      const long = TEXT.length * 10;
      const LONG = new Uint8Array(long).map((_, i) => TEXT[i % TEXT.length]);
      const mods = ["dt_proj", "in_proj"] as const;
      const pa = await extractModuleOutputs(cpu, LONG, { modules: mods });
      let pb = await extractModuleOutputs(gpu, LONG, { modules: mods });
      for (let k = 0; k < 2; k++) {
        pb = await extractModuleOutputs(gpu, LONG, {
          modules: mods,
          into: pb.modules, // registered as download destinations (the default)
        });
        for (const m of mods) {
          for (const l of [0, 1, 2]) {
            const e = maxRelError(
              pb.modules.get(m)!.get(l)!.data as Float32Array,
              pa.modules.get(m)!.get(l)!.data as Float32Array,
            );
            assert.ok(e < 1e-5, `pinned ${m}.${l} (${k}): ${e}`);
          }
        }
      }
    } finally {
      cpu.close();
      gpu.close();
    }
  },
});

Deno.test({
  name: "cuda extractions with TF32 allowed run on the fp16 twins, close to the CPU's fp32",
  ignore,
  async fn() {
    // TF32 allowed: the GPU model takes the weights' twins, and so do extractions whose taps the
    // twins' path writes in fp32 (TAPS_ON_TWINS); the CPU's twins run the same operand rounding
    const [cpu, gpu] = await pair("fp32", false, 50);
    const common = { configPath: CONFIG, modelId: "test-64x3", seed: 3, chunkSize: 50 } as const;
    const cpuTwins = await loadModel({ ...common, device: "cpu", f16Products: true });
    try {
      assert.equal(gpu.f16Products, true);
      const mods = ["in_proj", "x_proj", "dt_proj"] as const;
      const a = await extractModuleOutputs(cpu, TEXT, { modules: mods });
      const t = await extractModuleOutputs(cpuTwins, TEXT, { modules: mods });
      const b = await extractModuleOutputs(gpu, TEXT, { modules: mods });
      const at = (r: typeof a, m: (typeof mods)[number], l: number) =>
        r.modules.get(m)!.get(l)!.data as Float32Array;
      for (const m of mods) {
        for (const l of [0, 1, 2]) {
          const e = maxRelError(at(b, m, l), at(a, m, l));
          // (the CPU's own twins put x_proj 5e-4 from fp32 on this model; dt_proj adds TF32's)
          assert.ok(e < 2e-3, `${m}.${l}: ${e} from the CPU's fp32`);
        }
      }
      // layer 0's in_proj is the twin's product alone (its input, the embedding's norm, is the
      // same on both): the CPU's twin up to the order of the sums (and a rare norm element an fp32
      // ulp apart that rounds to the next fp16, ~6e-5 here), not fp32's (~3e-4)
      const twin = maxRelError(at(b, "in_proj", 0), at(t, "in_proj", 0));
      const fp32 = maxRelError(at(b, "in_proj", 0), at(a, "in_proj", 0));
      assert.ok(twin < 1e-4 && twin < fp32, `in_proj.0: ${twin} from the twins, ${fp32} from fp32`);
      const opts = { reduction: "fro" as const, logProbs: true };
      const da = await extractDiscreteA(cpu, TEXT, opts);
      const db = await extractDiscreteA(gpu, TEXT, opts);
      for (const l of [0, 1, 2]) {
        const e = maxRelError(
          db.perLayer.get(l)!.data as Float32Array,
          da.perLayer.get(l)!.data as Float32Array,
        );
        assert.ok(e < 1e-3, `discrete-A fro layer ${l}: ${e}`);
      }
      const lp = maxRelError(db.logProbs!.data as Float32Array, da.logProbs!.data as Float32Array);
      assert.ok(lp < 1e-3, `log-probabilities: ${lp}`);
    } finally {
      cpu.close();
      gpu.close();
      cpuTwins.close();
    }
  },
});

/**
 * The fixtures' forwards on the GPU: strict fp32 (logits within 1e-4, greedy bytes equal), and
 * with TF32 allowed with every product of more than 8 rows on fp16 operands
 * (`MAMBABYTE_CUDA_TF32_F16=2`: the path wide forward products take), within TF32's 1e-3.
 */
const REFERENCE_FORMS = [
  ["strict fp32", true, undefined, 1e-4],
  ["TF32 by default: in_proj and out_proj on fp16 twins", false, undefined, 1e-3],
  ["TF32 on fp16 operands", false, "2", 1e-3],
  ["TF32 without fp16 operands", false, "0", 1e-3],
] as const;

for (const [label, strictFp32, tf32F16, tol] of REFERENCE_FORMS) {
  Deno.test({
    name: `cuda matches the independent references (fixtures, ${label})`,
    ignore: ignore || !(await Deno.stat(`${FIXTURES}expected.safetensors`).catch(() => null)),
    async fn() {
      const ck = await openCheckpoint(`${FIXTURES}expected.safetensors`);
      const get = async (k: string) => (await ck.tensors.get(k)!.read()).slice().buffer;
      // the backend reads its switches when the model's context is made
      if (tf32F16) Deno.env.set("MAMBABYTE_CUDA_TF32_F16", tf32F16);
      try {
        for (const [kind, path] of [["ln", "ln_model.safetensors"], ["rms", "rms_hf"]] as const) {
          const ids = new Int32Array(await get(`${kind}.input_ids`));
          const model = await loadModel({
            configPath: CONFIG,
            modelId: "test-48x2",
            checkpoint: `${FIXTURES}${path}`,
            device: "cuda",
            strictFp32,
          });
          try {
            // the weights' fp16 twins: with TF32, unless the switch says 0
            assert.equal(model.f16Products, !strictFp32 && tf32F16 !== "0");
            const bytes = Uint8Array.from(ids);
            const { logits } = await model.forward(bytes);
            const e = maxRelError(logits, new Float32Array(await get(`${kind}.logits`)));
            assert.ok(e < tol, `${kind} logits ${e}`);
            if (!strictFp32) continue;
            const [greedy] = await model.generate(bytes, { maxNewTokens: 32, topK: 1 });
            assert.deepEqual([...greedy], [...new Int32Array(await get(`${kind}.greedy`))]);
          } finally {
            model.close();
          }
        }
      } finally {
        if (tf32F16) Deno.env.delete("MAMBABYTE_CUDA_TF32_F16");
        ck.close();
      }
    },
  });
}

// ---- speculative decoding on CUDA: bit-exact verification, the same bytes as plain decoding ----

const SPEC_PROMPT = new TextEncoder().encode("KING RICHARD III:\nNow is the winter of our ");

for (const dtype of ["fp32", "bf16"] as const) {
  Deno.test({
    name: `cuda: a verification pass equals stepping bit for bit and resumes anywhere (${dtype})`,
    ignore,
    async fn() {
      const gpu = await loadModel({ configPath: CONFIG, modelId: "small", device: "cuda", dtype });
      const M = 10;
      const bits = (t: { toHost(): unknown }) =>
        new Uint32Array((t.toHost() as Float32Array).buffer);
      await withVerifyWorkspaces(gpu, M, async ({ ws, ws1, saved }) => {
        for (const pos of [0, 3, M - 1]) {
          const { stepped, verified } = await forkStates(gpu, SPEC_PROMPT);
          const rows = new TextEncoder().encode("discontent");
          verifyRows(gpu, ws, verified, rows, saved);
          const logits = bits(ws.logits);
          let at: Uint32Array[] = [];
          for (let t = 0; t < M; t++) {
            stepByte(gpu, ws1, stepped, rows[t]);
            assert.deepEqual(logits.subarray(t * 256, (t + 1) * 256), bits(ws1.logits), `row ${t}`);
            if (t === pos) at = [...stepped.conv, ...stepped.ssm].map(bits);
          }
          gpu.resumeAt(verified, saved, pos);
          [...verified.conv, ...verified.ssm].forEach((t, i) =>
            assert.deepEqual(bits(t), at[i], `state ${i} after position ${pos}`)
          );
          stepped.free();
          verified.free();
        }
      });
    },
  });

  Deno.test({
    name: `cuda: speculative generation returns plain generation's bytes (${dtype})`,
    ignore,
    async fn() {
      const { loadDraftModel } = await import("../mod.ts");
      const small = await loadModel({
        configPath: CONFIG,
        modelId: "small",
        device: "cuda",
        dtype,
      });
      const tiny = await loadDraftModel({
        configPath: CONFIG,
        modelId: "tiny",
        device: "cuda",
        dtype,
      });
      try {
        for (
          const s of [
            { topK: 1 },
            { topK: 256, topP: 0.98, temperature: 1.0 },
            { topK: 40, topP: 0.9, temperature: 0.7 },
          ]
        ) {
          for (const length of [7, 12]) {
            const o = { maxNewTokens: 300, seed: 4740, ...s };
            const [plain] = await small.generate(SPEC_PROMPT, o);
            // Rounds on the device (one graph a round: CUDA's default) and through the host.
            for (const deviceRounds of [true, false]) {
              let stats: SpeculativeStats | undefined;
              const [spec] = await small.generate(SPEC_PROMPT, {
                ...o,
                draft: { model: tiny, length, deviceRounds, onStats: (st) => stats = st },
              });
              const what = `${JSON.stringify(s)} k=${length} device=${deviceRounds}`;
              assert.deepEqual(spec, plain, what);
              assert.ok(stats && stats.rounds > 0 && stats.accepted <= stats.drafted, what);
              assert.equal(stats.onDevice, deviceRounds, what);
            }
          }
        }
      } finally {
        tiny.close();
        small.close();
      }
    },
  });
}
