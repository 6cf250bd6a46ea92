/**
 * Drafters for speculative decoding ({@link Drafter}): a language model run greedily by our own
 * model code, either byte-level (any MambaByte checkpoint, e.g. `tiny` drafting for `small`) or a
 * subword Mamba model with its tokenizer (the paper's drafter), detokenized to bytes.
 *
 * A subword drafter keeps the tokens of the text so far except the last one, whose bytes stay
 * pending: the next bytes may still merge into it. Its first draft token must extend the pending
 * bytes (it is chosen among the tokens that start with them, as "token healing" does); after each
 * verification pass the drafter goes back to where the pass started and reads the accepted bytes,
 * retokenizing only the pending tail. The drafter's choices never change the output, only how
 * many bytes each verification pass settles.
 *
 * @module
 */

import type { Backend, Ptr } from "../backend/backend.ts";
import { Tensor } from "../backend/tensor.ts";
import type { MambaByteLM } from "../model/model.ts";
import { RecurrentState, type Workspace } from "../model/workspace.ts";
import { GraphCache } from "./graphs.ts";
import type { DeviceDrafting, Drafter } from "./speculative.ts";
import type { SubwordTokenizer } from "./tokenizer.ts";

/** The most tokens one proposal drafts after its first (each is at least one byte). */
const MAX_STEPS = 64;

/**
 * A greedy drafter over a model of ours: byte-level without a tokenizer (its first 256 logits are
 * the bytes), subword with one (its logits span the tokenizer's vocabulary).
 */
export class ModelDrafter implements Drafter {
  readonly kind: "bytes" | "subword";
  readonly #lm: MambaByteLM;
  readonly #tok: SubwordTokenizer | undefined;
  readonly #be: Backend;
  readonly #V: number;
  readonly #ws: Workspace;
  readonly #state: RecurrentState;
  readonly #snap: RecurrentState;
  /** The logits after the text so far (a copy of the last row the model produced). */
  readonly #logits: Tensor;
  readonly #snapLogits: Tensor;
  readonly #counter: Tensor;
  readonly #drafts: Tensor;
  /** Bytes to read, staged on the device for {@link ModelDrafter.#stepRead}. */
  readonly #toRead: Tensor;
  /** Bytes: #after[i] is the state after reading the first i bytes of the proposal (i >= 1). */
  readonly #after: RecurrentState[] = [];
  readonly #draftGraphs: GraphCache<number>;
  readonly #readGraphs: GraphCache<string>;
  /** Subword: bytes of the text not yet read by the model (the last token's, and any partial). */
  #pending = new Uint8Array(0);
  /** Bytes: the last proposal; the model has read all of it but its last byte. */
  #proposal = new Uint8Array(0);

  /** `lm` with vocabOut 256 (bytes) or the tokenizer's vocabulary size (subword). */
  constructor(lm: MambaByteLM, tokenizer?: SubwordTokenizer) {
    this.#lm = lm;
    this.#tok = tokenizer;
    this.kind = tokenizer ? "subword" : "bytes";
    this.#be = lm.backend;
    this.#V = lm.vocabOut;
    this.#ws = lm.newWorkspace(1);
    this.#state = lm.newState(1);
    this.#snap = lm.newState(1);
    this.#logits = Tensor.zeros(this.#be, "f32", [this.#V]);
    this.#snapLogits = Tensor.zeros(this.#be, "f32", [this.#V]);
    this.#counter = Tensor.zeros(this.#be, "i64", [1]);
    this.#drafts = Tensor.zeros(this.#be, "i32", [MAX_STEPS + 1]);
    this.#toRead = Tensor.zeros(this.#be, "i32", [MAX_STEPS + 1]);
    this.#draftGraphs = new GraphCache(this.#be);
    this.#readGraphs = new GraphCache(this.#be);
  }

  /** Reads `ids` (bytes or token ids) from the current state; the last logits into #logits. */
  async #read(ids: Uint8Array | Int32Array): Promise<void> {
    if (ids.length === 0) return;
    const V = this.#V;
    await this.#lm.forwardChunks(ids, {
      state: this.#state,
      onDeviceLogits: (start, rows, logits) => {
        if (start + rows === ids.length) {
          this.#be.copy(this.#logits.ptr, logits.at((rows - 1) * V), V * 4);
        }
      },
    });
  }

  async start(context: Uint8Array): Promise<void> {
    this.#state.clear();
    this.#proposal = new Uint8Array(0);
    if (!this.#tok) return await this.#read(context);
    this.#pending = new Uint8Array(0);
    await this.#readText(context, true);
  }

  /**
   * Subword: tokenizes `pending + bytes` and reads every token but the last (whose bytes stay
   * pending, with any incomplete UTF-8 tail); at the start, a single token is read too (there is
   * nothing before it to condition on).
   */
  async #readText(bytes: Uint8Array, atStart: boolean): Promise<void> {
    const tok = this.#tok!;
    const text = new Uint8Array(this.#pending.length + bytes.length);
    text.set(this.#pending);
    text.set(bytes, this.#pending.length);
    const { ids, rest } = tok.encodeBytes(text);
    let keep = ids.length > 0 ? 1 : 0;
    if (atStart && ids.length === 1) keep = 0;
    const read = ids.slice(0, ids.length - keep);
    // Pending: the held-back token's bytes and the incomplete tail, when the tokens spell the
    // text; else (a tokenizer that drops bytes) only the tail.
    let spelled = 0;
    for (const id of ids) spelled += tok.tokenBytes(id).length;
    const exact = spelled === text.length - rest.length;
    if (!exact) {
      await this.#read(Int32Array.from(ids));
      this.#pending = text.slice(text.length - rest.length);
      return;
    }
    await this.#read(Int32Array.from(read));
    this.#pending = text.slice(
      text.length - rest.length - (keep ? tok.tokenBytes(ids.at(-1)!).length : 0),
    );
  }

  #snapshot(): void {
    this.#snap.broadcastFrom(this.#state);
    this.#be.copy(this.#snapLogits.ptr, this.#logits.ptr, this.#V * 4);
  }

  #restore(): void {
    this.#state.broadcastFrom(this.#snap);
    this.#be.copy(this.#logits.ptr, this.#snapLogits.ptr, this.#V * 4);
  }

  /**
   * On the device: the greedy token after the current logits into drafts[0], then `steps` times
   * read it and draw the next into drafts[i] (one CUDA graph per step count, from its second use).
   */
  #draftSteps(steps: number): void {
    const be = this.#be, lm = this.#lm, ws = this.#ws;
    // Bytes: keep the state after each step, so that accept() resumes from the last agreed byte
    // instead of reading the accepted bytes again.
    const keep = !this.#tok;
    if (keep) {
      while (this.#after.length <= steps) this.#after.push(lm.newState(1));
    }
    this.#draftGraphs.run(steps, () => {
      // Bytes: the state before the proposal, in the graph (the subword drafter snapshots first).
      if (keep) this.#snapshot();
      this.#greedy(be, this.#logits.ptr, this.#drafts.at(0));
      for (let i = 1; i <= steps; i++) {
        lm.embed(ws, 1, this.#drafts.at(i - 1)); // the last draft, where the sampler wrote it
        lm.stepLayers(ws, this.#state, 1);
        if (keep) this.#after[i].broadcastFrom(this.#state);
        lm.runHead(ws, 1);
        this.#greedy(be, ws.logits.ptr, this.#drafts.at(i));
      }
    });
  }

  /** On `be`: the greedy id after `logits` (V of them) into `out` (int32, device). */
  #greedy(be: Backend, logits: Ptr, out: Ptr): void {
    be.sample({
      logits,
      batch: 1,
      v: this.#V,
      temperature: 1,
      topK: 1,
      topP: 0,
      seed: 0n,
      counter: this.#counter.ptr,
      out,
    });
  }

  /**
   * Reads `bytes` (at most MAX_STEPS + 1) one decoding step each, starting from the state after
   * the first `from` bytes of the proposal (0: the state before it, #snap), the last logits into
   * #logits: one upload, then one graph per (from, length).
   */
  #stepRead(from: number, bytes: Uint8Array): void {
    const be = this.#be, lm = this.#lm, ws = this.#ws, n = bytes.length;
    const current = from === this.#proposal.length - 1;
    be.upload(this.#toRead.ptr, Int32Array.from(bytes));
    this.#readGraphs.run(`${current ? "current" : from}:${n}`, () => {
      if (!current) this.#state.broadcastFrom(from === 0 ? this.#snap : this.#after[from]);
      for (let i = 0; i < n; i++) {
        lm.embed(ws, 1, this.#toRead.at(i));
        lm.stepLayers(ws, this.#state, 1);
      }
      lm.runHead(ws, 1);
      be.copy(this.#logits.ptr, ws.logits.ptr, this.#V * 4);
    });
  }

  propose(k: number): Promise<Uint8Array> {
    return Promise.resolve(this.#tok ? this.#proposeSubword(k) : this.#proposeBytes(k));
  }

  #proposeBytes(k: number): Uint8Array {
    k = Math.min(k, MAX_STEPS);
    this.#draftSteps(k - 1);
    const ids = new Int32Array(k);
    this.#be.download(ids, this.#drafts.ptr);
    this.#proposal = Uint8Array.from(ids);
    return this.#proposal;
  }

  #proposeSubword(k: number): Uint8Array {
    const tok = this.#tok!;
    this.#snapshot();
    // The first token extends the pending bytes: the best of the tokens that start with them.
    const logits = new Float32Array(this.#V);
    this.#be.download(logits, this.#logits.ptr);
    const first = tok.bestExtension(logits, this.#pending);
    if (first === undefined) return new Uint8Array(0);
    const head = tok.tokenBytes(first).subarray(this.#pending.length);
    const steps = Math.min(MAX_STEPS, Math.max(0, k - head.length));
    // Read the first token, then draft `steps` more greedily on the device.
    this.#be.upload(this.#logits.ptr, logitsOf(first, this.#V));
    this.#draftSteps(steps);
    const ids = new Int32Array(steps + 1);
    this.#be.download(ids, this.#drafts.ptr);
    const out = new Uint8Array(k);
    let n = 0;
    for (const b of head) if (n < k) out[n++] = b;
    for (let i = 1; i <= steps && n < k; i++) {
      const bytes = tok.tokenBytes(ids[i]);
      if (bytes.length === 0) break; // a special token: no text
      for (const b of bytes) if (n < k) out[n++] = b;
    }
    return out.subarray(0, n);
  }

  async accept(bytes: Uint8Array): Promise<void> {
    if (!this.#tok) {
      // The model has read all of the proposal p but its last byte, keeping the state after each
      // of them: resume after the longest agreed prefix (m bytes) and read the rest.
      const p = this.#proposal;
      if (p.length === 0 || bytes.length === 0) {
        this.#restore();
        return await this.#read(bytes);
      }
      let m = 0;
      const most = Math.min(p.length - 1, bytes.length - 1);
      while (m < most && bytes[m] === p[m]) m++;
      const rest = bytes.subarray(m);
      if (rest.length <= MAX_STEPS + 1) return this.#stepRead(m, rest);
      if (m === 0) this.#restore();
      else if (m < p.length - 1) this.#state.broadcastFrom(this.#after[m]);
      return await this.#read(rest);
    }
    this.#restore();
    await this.#readText(bytes, false);
  }

  /**
   * Byte drafters: drafting on `be`'s stream with no host step (see {@link DeviceDrafting}), k
   * drafts a round; null for a subword drafter (its tokens go through the tokenizer on the host),
   * a model on another device, or k outside 1..64. Call after {@link start} with the text but its
   * last byte (each round reads the byte the round before settled, the first round the text's
   * last); the proposal state of the host methods is then stale (start again before using them).
   */
  onDevice(be: Backend, k: number): DeviceDrafting | null {
    if (this.#tok || !Number.isSafeInteger(k) || k < 1 || k > MAX_STEPS) return null;
    const lm = this.#lm.onBackend(be);
    if (!lm) return null;
    // start() read the text on this drafter's stream; `be` works on the same buffers after it.
    this.#be.sync();
    const ws = this.#ws, state = this.#state;
    const bytes = RecurrentState.bytes(lm.dims, 1);
    // The stack's slot i: the state after reading the settled byte and i drafts of the round.
    const stack = Tensor.empty(be, "f32", [((k + 1) * bytes) / 4]);
    const counter = this.#counter.ptr;
    const own = this.#lm;
    return {
      draft(ids: Ptr, readId: Ptr): void {
        // the settled byte read, then greedy drafts, the state after each into its slot: one
        // native call
        lm.draftGreedy(ws, state, {
          readId,
          logits: ws.logits.ptr,
          counter,
          stack: stack.ptr,
          ids,
          k,
        });
      },
      commit: { dst: state.ptr, src: stack.ptr, srcStride: bytes, bytes },
      free(): void {
        stack.free();
        if (lm !== own) lm.close();
      },
    };
  }

  free(): void {
    this.#draftGraphs.free();
    this.#readGraphs.free();
    for (const st of this.#after) st.free();
    this.#after.length = 0;
    this.#toRead.free();
    this.#ws.free();
    this.#state.free();
    this.#snap.free();
    this.#logits.free();
    this.#snapLogits.free();
    this.#counter.free();
    this.#drafts.free();
  }
}

/** Logits whose greedy choice is `id`: how the chosen first token is fed to the device steps. */
function logitsOf(id: number, V: number): Float32Array {
  const l = new Float32Array(V);
  l[id] = 1;
  return l;
}

/** A drafting model for speculative decoding: byte-level, or subword with its tokenizer. */
export class DraftModel {
  /** The model. */
  readonly model: MambaByteLM;
  /** The tokenizer of a subword drafter (undefined: byte-level). */
  readonly tokenizer: SubwordTokenizer | undefined;

  /** Use `loadDraftModel` (mod.ts). */
  constructor(model: MambaByteLM, tokenizer?: SubwordTokenizer) {
    this.model = model;
    this.tokenizer = tokenizer;
  }

  /** "bytes" or "subword". */
  get kind(): "bytes" | "subword" {
    return this.tokenizer ? "subword" : "bytes";
  }

  /** A fresh drafter over this model (free it after use). */
  drafter(): Drafter {
    return new ModelDrafter(this.model, this.tokenizer);
  }

  /** Closes the model. */
  close(): void {
    this.model.close();
  }
}
