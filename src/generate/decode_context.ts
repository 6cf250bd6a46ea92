/**
 * The buffers and captured step graphs of one decoding batch. A generate call on CUDA hands its
 * context back to the model when it ends, and the next call with the same batch and sampling
 * settings takes it again: its steps replay the graphs the first call captured instead of running
 * a step directly and capturing two more (0.8-3.5 ms a call on the H200 at batches 1 to 256, and
 * more in a process's first call), and nothing is allocated.
 * The model keeps one context at a time ({@link MambaByteLM.releaseDecodeBuffers} frees it;
 * MAMBABYTE_DECODE_KEEP=0 keeps none).
 *
 * @module
 */

import { envValue, type Ptr } from "../backend/backend.ts";
import { Tensor } from "../backend/tensor.ts";
import type { MambaByteLM } from "../model/model.ts";
import type { RecurrentState, Workspace } from "../model/workspace.ts";
import { GraphCache } from "./graphs.ts";

/** What a captured step bakes in besides its buffers: the batch and the sampler's arguments. */
export interface DecodeKeyParts {
  /** Sequences decoded together. */
  batch: number;
  /** Steps queued before the last one's bytes are read (two step graphs, one a parity). */
  overlap: boolean;
  /** Whether the steps are captured and replayed at all. */
  useGraphs: boolean;
  /** The sampler's temperature as the kernel takes it (1 for greedy). */
  temperature: number;
  /** The sampler's top-k. */
  topK: number;
  /** The sampler's top-p. */
  topP: number;
  /** The sampler's seed. */
  seed: number;
}

/** The key under which a context's graphs are valid. */
export function decodeContextKey(p: DecodeKeyParts): string {
  return JSON.stringify([p.batch, p.overlap, p.useGraphs, p.temperature, p.topK, p.topP, p.seed]);
}

/** Whether finished contexts are kept for the next call (MAMBABYTE_DECODE_KEEP=0: never). */
export function keepDecodeContexts(): boolean {
  return envValue("MAMBABYTE_DECODE_KEEP") !== "0";
}

/** A decoding batch's workspace, state, sampler counter, id buffers and step graphs. */
export class DecodeContext {
  /** {@link decodeContextKey} of the calls it serves. */
  readonly key: string;
  /** Activations of one step of the batch. */
  readonly ws: Workspace;
  /** The batch's recurrent state (the prompt's, fanned out, at the start of each call). */
  readonly state: RecurrentState;
  /** The sampler's draw counter (int64), zeroed by {@link reset} at the start of every call. */
  readonly counter: Tensor;
  /** Overlapped steps sample into ws.ids and this buffer in turn (null when not overlapped). */
  readonly idsAlt: Tensor | null;
  /** The step graphs (`step`, or `step0` and `step1` when overlapped). */
  readonly graphs: GraphCache<string>;
  /** Page-locked host buffer the sampled ids are downloaded into (overlapped steps). */
  readonly idsHost: Ptr;
  readonly #model: MambaByteLM;
  #freed = false;

  /** Allocates the buffers of `p.batch` sequences for `model`; the graphs come with the steps. */
  constructor(model: MambaByteLM, key: string, p: DecodeKeyParts) {
    this.#model = model;
    this.key = key;
    const be = model.backend;
    const made: { free(): void }[] = [];
    try {
      this.ws = model.newWorkspace(p.batch);
      made.push(this.ws);
      this.state = model.newState(p.batch);
      made.push(this.state);
      this.counter = Tensor.zeros(be, "i64", [1]);
      made.push(this.counter);
      this.idsAlt = p.overlap ? Tensor.zeros(be, "i32", [p.batch]) : null;
      if (this.idsAlt) made.push(this.idsAlt);
      this.idsHost = p.overlap ? be.hostAlloc(4 * p.batch) : null;
    } catch (e) {
      for (const m of made.reverse()) m.free();
      throw e;
    }
    this.graphs = new GraphCache<string>(be, p.useGraphs);
  }

  /** The model whose buffers these are. */
  get model(): MambaByteLM {
    return this.#model;
  }

  /** Readies a taken context for a new call: the sampler's counter back to 0. */
  reset(): void {
    this.#model.backend.memset(this.counter.ptr, 0, this.counter.bytes);
  }

  /** Frees the graphs and buffers. Idempotent. */
  free(): void {
    if (this.#freed) return;
    this.#freed = true;
    this.graphs.free();
    this.#model.backend.hostFree(this.idsHost);
    this.idsAlt?.free();
    this.counter.free();
    this.state.free();
    this.ws.free();
  }
}
