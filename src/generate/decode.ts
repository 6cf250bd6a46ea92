/**
 * The decode loop: prefill the prompt once, fan its state out to `numSamples` sequences, then step
 * one byte at a time as a batch, sampling on the backend (mamba_ssm's sample(): top-k, temperature,
 * top-p; greedy when topK is 1). On CUDA the whole step (embedding, all layers, head and sampling)
 * is captured once in a graph and replayed; the host reads back only the sampled bytes.
 *
 * @module
 */

import { Tensor } from "../backend/tensor.ts";
import { MambaByteError } from "../errors.ts";
import type { MambaByteLM } from "../model/model.ts";

/** Sampling and length settings; defaults are the original generate script's. */
export interface GenerateOptions {
  /** Bytes to generate per sample (default 100). */
  maxNewTokens?: number;
  /** Softmax temperature (default 1.0). */
  temperature?: number;
  /** Keep the k most likely bytes; 1 = greedy, 0 or >= 256 = all (default 256). */
  topK?: number;
  /** Nucleus threshold in (0, 1] (default 0.98). */
  topP?: number;
  /** Seed of the sampler (default 4740). */
  seed?: number;
  /** Independent samples, decoded together as one batch (default 1). */
  numSamples?: number;
  /** Called after every step with the new byte of each sample (index = sample). */
  onBytes?: (bytes: Uint8Array, step: number) => void | Promise<void>;
  /** Use CUDA graph replay when the backend supports it (default true). */
  useGraphs?: boolean;
}

/** Checks sampling settings, throwing a one-line MambaByteError for a bad value. */
export function validateGenerateOptions(
  o: GenerateOptions,
): Required<Omit<GenerateOptions, "onBytes">> {
  const r = {
    maxNewTokens: o.maxNewTokens ?? 100,
    temperature: o.temperature ?? 1.0,
    topK: o.topK ?? 256,
    topP: o.topP ?? 0.98,
    seed: o.seed ?? 4740,
    numSamples: o.numSamples ?? 1,
    useGraphs: o.useGraphs ?? true,
  };
  if (!Number.isInteger(r.maxNewTokens) || r.maxNewTokens < 0) {
    throw new MambaByteError(`max_new_tokens must be an integer >= 0 (got ${r.maxNewTokens})`);
  }
  if (!Number.isInteger(r.numSamples) || r.numSamples < 1) {
    throw new MambaByteError(`num_samples must be an integer >= 1 (got ${r.numSamples})`);
  }
  if (!(r.temperature > 0) || !Number.isFinite(r.temperature)) {
    throw new MambaByteError(`temperature must be > 0 (got ${r.temperature})`);
  }
  if (!Number.isInteger(r.topK) || r.topK < 0) {
    throw new MambaByteError(`top_k must be an integer >= 0 (got ${r.topK})`);
  }
  if (!(r.topP > 0 && r.topP <= 1)) {
    throw new MambaByteError(`top_p must be in (0, 1] (got ${r.topP})`);
  }
  if (!Number.isInteger(r.seed)) {
    throw new MambaByteError(`seed must be an integer (got ${r.seed})`);
  }
  return r;
}

/** Generates bytes after `prompt`; returns the new bytes of each sample. */
export async function generateBytes(
  model: MambaByteLM,
  prompt: Uint8Array,
  options: GenerateOptions = {},
): Promise<Uint8Array[]> {
  const o = validateGenerateOptions(options);
  if (prompt.length === 0) throw new MambaByteError("the prompt is empty: give at least one byte");
  const B = o.numSamples;
  const out = Array.from({ length: B }, () => new Uint8Array(o.maxNewTokens));
  if (o.maxNewTokens === 0) return out;
  const be = model.backend;
  const ws = model.newWorkspace(B);
  const state = model.newState(B);
  const counter = Tensor.zeros(be, "i64", [1]);
  let graph: number | undefined;
  try {
    // Prefill: one pass over the prompt; its last logits seed every sample.
    const L = prompt.length;
    const prefill = await model.forwardChunks(prompt, {
      onDeviceLogits: (start, rows, logits) => {
        if (start + rows !== L) return;
        for (let b = 0; b < B; b++) {
          be.copy(ws.logits.at(b * 256), logits.at((rows - 1) * 256), 1024);
        }
      },
    });
    state.broadcastFrom(prefill);
    prefill.free();

    const sample = () =>
      be.sample({
        logits: ws.logits.ptr,
        batch: B,
        v: 256,
        temperature: o.temperature,
        topK: o.topK,
        topP: o.topP,
        seed: BigInt(o.seed),
        counter: counter.ptr,
        out: ws.ids.ptr,
      });
    const step = () => {
      model.embed(ws, B);
      model.stepLayers(ws, state, B);
      model.runHead(ws, B);
      sample();
    };

    sample();
    const ids = new Int32Array(B);
    const stepBytes = new Uint8Array(B);
    for (let s = 0; s < o.maxNewTokens; s++) {
      be.download(ids, ws.ids.ptr);
      for (let b = 0; b < B; b++) {
        stepBytes[b] = ids[b];
        out[b][s] = ids[b];
      }
      await options.onBytes?.(stepBytes.slice(), s);
      if (s + 1 === o.maxNewTokens) break;
      // The first step runs directly (kernels load, scratch reaches its size); later steps
      // replay a graph captured on the second.
      if (o.useGraphs && be.supportsGraphs && s > 0) {
        if (graph === undefined) {
          be.graphBegin();
          try {
            step();
          } finally {
            graph = be.graphEnd();
          }
        }
        be.graphLaunch(graph);
      } else {
        step();
      }
    }
    return out;
  } finally {
    if (graph !== undefined) be.graphDestroy(graph);
    counter.free();
    state.free();
    ws.free();
  }
}
