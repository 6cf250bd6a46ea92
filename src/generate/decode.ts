/**
 * The decode loop: prefill the prompt once, fan its state out to `numSamples` sequences, then step
 * one byte at a time as a batch, sampling on the backend (mamba_ssm's sample(): top-k, temperature,
 * top-p; greedy when topK is 1). On CUDA the whole step (embedding, all layers, head and sampling)
 * is captured once in a graph and replayed; the host reads back only the sampled bytes, and queues
 * each step before it reads the last one's (GenerateOptions.overlap).
 *
 * @module
 */

import { envValue, type Ptr } from "../backend/backend.ts";
import { temperatureError, topPError } from "../config/config.ts";
import { checkBounded, DEFAULTS } from "../config/defaults.ts";
import { MambaByteError } from "../errors.ts";
import type { MambaByteLM } from "../model/model.ts";
import type { RecurrentState, Workspace } from "../model/workspace.ts";
import { DecodeContext, decodeContextKey } from "./decode_context.ts";
import { StopMatcher, validateStops } from "./stop.ts";

/**
 * What an empty prompt conditions on: MambaByte has no beginning-of-text token, so unconditional
 * generation starts from the zero state after one newline byte (a paragraph boundary, as between
 * the documents it was trained on). The newline is not part of the output.
 */
export const UNCONDITIONAL_CONTEXT: Uint8Array = Uint8Array.of(0x0a);

/** Sampling and length settings; defaults are the original generate script's. */
export interface GenerateOptions {
  /** Bytes to generate per sample, 0..2^30 (default 100). */
  maxNewTokens?: number;
  /** Softmax temperature, 0 (greedy; needs topK 1) or 1e-6..1e6 (default 1.0). */
  temperature?: number;
  /** Keep the k most likely bytes, 0..256; 1 = greedy whatever the temperature, 0 = off (256). */
  topK?: number;
  /** Nucleus threshold in [0, 1]; 0 and 1 = off (default 0.98). */
  topP?: number;
  /** Seed of the sampler (default 4740). */
  seed?: number;
  /** Independent samples, decoded together as one batch, 1..4096 (default 1). */
  numSamples?: number;
  /**
   * Stop sequences: a sample ends right after it generates one of them (kept in its output), or
   * after `maxNewTokens` bytes; decoding ends when every sample has ended (at most 16, each 1..256
   * bytes; default none).
   */
  stop?: readonly Uint8Array[];
  /**
   * Called after every step with the new byte of each sample (index = sample). The byte of a
   * sample that ended at an earlier step is not part of its output (see `onEnd`).
   */
  onBytes?: (bytes: Uint8Array, step: number) => void | Promise<void>;
  /** Called once per sample when it ends, with its whole output (after that step's `onBytes`). */
  onEnd?: (sample: number, bytes: Uint8Array) => void | Promise<void>;
  /** Use CUDA graph replay when the backend supports it (default true). */
  useGraphs?: boolean;
  /**
   * Queue each decoding step before reading the previous step's bytes, so that the host's work
   * (downloading and handing out the bytes, stop sequences, callbacks) overlaps the device's
   * (default: on backends that run ops asynchronously, i.e. CUDA). The bytes are the same; when
   * every sample ends on a stop sequence, one step past the end has been computed and is dropped.
   * MAMBABYTE_DECODE_OVERLAP=0 turns the default off (A/B runs).
   */
  overlap?: boolean;
}

/** Checks sampling settings (the same bounds as the flags), throwing one-line errors. */
export function validateGenerateOptions(
  o: GenerateOptions,
): Required<Omit<GenerateOptions, "onBytes" | "onEnd" | "stop" | "overlap">> & {
  stop: Uint8Array[];
  overlap?: boolean;
} {
  const r = {
    maxNewTokens: o.maxNewTokens ?? DEFAULTS.max_new_tokens,
    temperature: o.temperature ?? DEFAULTS.temperature,
    topK: o.topK ?? DEFAULTS.top_k,
    topP: o.topP ?? DEFAULTS.top_p,
    seed: o.seed ?? DEFAULTS.seed,
    numSamples: o.numSamples ?? DEFAULTS.num_samples,
    useGraphs: o.useGraphs ?? true,
    stop: validateStops(o.stop ?? []),
    overlap: o.overlap,
  };
  const bad = checkBounded("max_new_tokens", r.maxNewTokens) ??
    checkBounded("num_samples", r.numSamples) ?? checkBounded("top_k", r.topK);
  if (bad) throw new MambaByteError(bad, 2);
  const t = temperatureError(r.temperature);
  if (t) throw new MambaByteError(`temperature ${t}`, 2);
  const p = topPError(r.topP);
  if (p) throw new MambaByteError(`top_p ${p}`, 2);
  if (r.temperature === 0 && r.topK !== 1) {
    throw new MambaByteError("temperature 0 means greedy decoding and needs topK 1", 2);
  }
  if (!Number.isSafeInteger(r.seed)) {
    throw new MambaByteError(`seed must be an integer (got ${r.seed})`, 2);
  }
  return r;
}

/**
 * Prefill: one pass over the prompt; its state goes to every sequence of `state` and its last
 * logits to the first `rows` rows of ws.logits (each sample's first byte is drawn from them).
 */
export async function prefill(
  model: MambaByteLM,
  prompt: Uint8Array,
  ws: Workspace,
  state: RecurrentState,
  rows: number,
): Promise<void> {
  const be = model.backend;
  const L = prompt.length;
  const st = await model.forwardChunks(prompt, {
    onDeviceLogits: (start, n, logits) => {
      if (start + n !== L) return;
      for (let b = 0; b < rows; b++) be.copy(ws.logits.at(b * 256), logits.at((n - 1) * 256), 1024);
    },
  });
  state.broadcastFrom(st);
  st.free();
}

/** Generates bytes after `prompt`; returns the new bytes of each sample, each to its own end. */
export async function generateBytes(
  model: MambaByteLM,
  prompt: Uint8Array,
  options: GenerateOptions = {},
): Promise<Uint8Array[]> {
  const o = validateGenerateOptions(options);
  if (prompt.length === 0) prompt = UNCONDITIONAL_CONTEXT;
  const B = o.numSamples;
  const out = Array.from({ length: B }, () => new Uint8Array(o.maxNewTokens));
  if (o.maxNewTokens === 0) return out;
  const be = model.backend;
  const overlap = o.overlap ?? (be.supportsGraphs && envValue("MAMBABYTE_DECODE_OVERLAP") !== "0");
  // top_k 1 ignores the temperature; the kernel only needs it positive.
  const temperature = o.topK === 1 ? 1 : o.temperature;
  const keyParts = {
    batch: B,
    overlap,
    useGraphs: o.useGraphs,
    temperature,
    topK: o.topK,
    topP: o.topP,
    seed: o.seed,
  };
  const key = decodeContextKey(keyParts);
  const ctx = model.takeDecodeContext(key) ?? new DecodeContext(model, key, keyParts);
  const { ws, state, counter, graphs, idsHost } = ctx;
  let ticket = 0n;
  let finished = false;
  try {
    ctx.reset();
    await prefill(model, prompt, ws, state, B);

    // Overlapped, the steps sample into two buffers in turn, so that a step's bytes are copied
    // to the host straight from their buffer while the next step runs (it reads them and writes
    // the other); the step after that, which overwrites them, is queued only once they are in.
    const idsBufs = [ws.ids, ctx.idsAlt ?? ws.ids];
    const sample = (out: Ptr) =>
      be.sample({
        logits: ws.logits.ptr,
        batch: B,
        v: 256,
        temperature,
        topK: o.topK,
        topP: o.topP,
        seed: BigInt(o.seed),
        counter: counter.ptr,
        out,
      });
    // The step that makes byte s reads byte s - 1 from one buffer and samples into the other (the
    // two graphs run the same ops: one direct run sizes the scratch for both captures). A context
    // kept from an earlier call with the same key replays the graphs that call captured.
    const runStep = (s: number) =>
      graphs.run(overlap ? `step${s % 2}` : "step", () => {
        model.embed(ws, B, idsBufs[(s - 1) % 2].ptr);
        model.stepLayers(ws, state, B);
        model.runHead(ws, B);
        sample(idsBufs[s % 2].ptr);
      }, "step");

    sample(idsBufs[0].ptr);
    const ids = new Int32Array(B);
    const stepBytes = new Uint8Array(B);
    const matchers = o.stop.length > 0 ? out.map(() => new StopMatcher(o.stop)) : null;
    const lengths = new Int32Array(B).fill(-1);
    let live = B;
    // Overlapped: step s + 1 is queued before byte s is read (it takes it from its buffer on the
    // device), and byte s + 1 is downloaded once byte s is in.
    if (overlap) ticket = be.downloadAsyncDirect(idsHost, idsBufs[0].ptr, 4 * B);
    for (let s = 0; s < o.maxNewTokens; s++) {
      if (overlap) {
        if (s + 1 < o.maxNewTokens) runStep(s + 1);
        be.downloadWait(ticket);
        be.hostCopy(ids, idsHost);
      } else {
        be.download(ids, ws.ids.ptr);
      }
      const ended: number[] = [];
      for (let b = 0; b < B; b++) {
        stepBytes[b] = ids[b];
        if (lengths[b] >= 0) continue;
        out[b][s] = ids[b];
        if (s + 1 === o.maxNewTokens || matchers?.[b].push(ids[b])) ended.push(b);
      }
      await options.onBytes?.(stepBytes.slice(), s);
      for (const b of ended) {
        lengths[b] = s + 1;
        live--;
        await options.onEnd?.(b, out[b].subarray(0, s + 1));
      }
      if (live === 0) break;
      if (overlap) ticket = be.downloadAsyncDirect(idsHost, idsBufs[(s + 1) % 2].ptr, 4 * B);
      else runStep(s + 1);
    }
    finished = true;
    return out.map((o, b) => lengths[b] === o.length ? o : o.slice(0, lengths[b]));
  } finally {
    try {
      if (overlap) be.sync(); // a step queued past the end may still run
    } finally {
      // a call that failed part-way (a capture, a callback) leaves nothing for the next one
      if (finished) model.keepDecodeContext(ctx);
      else ctx.free();
    }
  }
}
