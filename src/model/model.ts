/**
 * MambaByteLM: the byte-level Mamba language model in TypeScript over the backend ops. A forward
 * runs chunk by chunk with the conv and SSM state carried across chunks, so memory is bounded
 * however long the input; taps return module outputs of chosen layers; a recurrent state with
 * single-byte steps serves decoding.
 *
 * Block semantics (MambaByte / mamba_ssm): residual = h + residual (fp32), h = norm(residual),
 * h = mixer(h); at the end norm_f(h + residual) and lm_head.
 *
 * @module
 */

import type { Backend } from "../backend/backend.ts";
import type { Tensor } from "../backend/tensor.ts";
import type { ModelDims } from "../config/dims.ts";
import { MambaByteError } from "../errors.ts";
import { freeWeights, type ModelWeights } from "./weights.ts";
import { RecurrentState, Workspace } from "./workspace.ts";

/** The value of an environment variable, or undefined when unset or not readable. */
function envValue(name: string): string | undefined {
  try {
    return Deno.env.get(name);
  } catch {
    return undefined;
  }
}

/** Module outputs that can be tapped, per layer. */
export const TAP_NAMES = [
  "norm",
  "in_proj",
  "conv1d",
  "x_proj",
  "dt_proj",
  "out_proj",
  "mixer",
] as const;
/** A tappable module: the normalised mixer input, a mixer sub-module, or the mixer output. */
export type TapName = typeof TAP_NAMES[number];

/** Width (features) of a tap's output for the given dims. */
export function tapWidth(tap: TapName, dims: ModelDims): number {
  switch (tap) {
    case "norm":
    case "out_proj":
    case "mixer":
      return dims.dModel;
    case "in_proj":
      return 2 * dims.dInner;
    case "conv1d":
    case "dt_proj":
      return dims.dInner;
    case "x_proj":
      return dims.dtRank + 2 * dims.dState;
  }
}

/** A chunk of tapped output: rows [start, start + rows) of one layer's module output. */
export interface TapChunk {
  layer: number;
  tap: TapName;
  /** First position of the chunk. */
  start: number;
  rows: number;
  cols: number;
  /** (rows, cols) row-major; owned by the receiver. */
  data: Float32Array;
}

/** Options of {@link MambaByteLM.forwardChunks}. */
export interface ForwardChunksOptions {
  /** Modules to tap (default none). */
  taps?: readonly TapName[];
  /** Layers to tap (default all). */
  layers?: readonly number[];
  /** Receives every tapped chunk, in position order per layer. */
  onTap?: (chunk: TapChunk) => void | Promise<void>;
  /** Receives the logits of every chunk (rows, 256). */
  onLogits?: (start: number, logits: Float32Array) => void | Promise<void>;
  /** Called with the device logits tensor of each chunk (rows valid) before the next chunk. */
  onDeviceLogits?: (start: number, rows: number, logits: Tensor) => void | Promise<void>;
  /** Skip the head (norm_f + lm_head) when no logits are needed. */
  skipHead?: boolean;
  /** Progress callback: positions done, total. */
  onProgress?: (done: number, total: number) => void;
  /** Start from (and update) this state instead of a fresh one (batch 1). */
  state?: RecurrentState;
}

/** Result of {@link MambaByteLM.forward}. */
export interface ForwardResult {
  /** (L, 256) row-major. */
  logits: Float32Array;
  /** taps.get(tap).get(layer) = (L, width) row-major. */
  taps: Map<TapName, Map<number, Float32Array>>;
}

/** Per-position natural-log probabilities of each next byte and their ranks. */
export interface LogProbResult {
  /** (L-1,): log p(byte[t+1] | bytes[..t]). */
  logProbs: Float32Array;
  /** (L-1,): number of bytes strictly more probable than the true next byte. */
  ranks: Int32Array;
}

/** The byte-level Mamba LM bound to a backend. */
export class MambaByteLM {
  /** The backend the model runs on. */
  readonly backend: Backend;
  /** Network shape. */
  readonly dims: ModelDims;
  /** Parameters in backend memory. */
  readonly weights: ModelWeights;
  /** Norm epsilon. */
  readonly eps: number;
  /** Forward chunk length. */
  readonly chunkSize: number;
  #chunkWs: Workspace | undefined;
  #closed = false;
  readonly #fusedSteps: boolean;

  /** Binds uploaded weights to the backend; prefer loadModel() from mod.ts. */
  constructor(
    backend: Backend,
    dims: ModelDims,
    weights: ModelWeights,
    options: { eps: number; chunkSize: number },
  ) {
    this.backend = backend;
    this.dims = dims;
    this.weights = weights;
    this.eps = options.eps;
    this.chunkSize = options.chunkSize;
    // The fused decoding ops (in_proj + conv step, dt_proj + state update): the CPU's give its
    // unfused bits; the CUDA ones were held equal to the CPU on an H200 (cuda_vs_cpu, the model
    // tests) and decode faster there. MAMBABYTE_CUDA_FUSED=0 turns them off on CUDA (A/B runs).
    this.#fusedSteps = backend.kind === "cpu" || envValue("MAMBABYTE_CUDA_FUSED") !== "0";
  }

  /** A zero recurrent state for `batch` sequences. */
  newState(batch = 1): RecurrentState {
    return new RecurrentState(this.backend, this.dims, batch);
  }

  /** A workspace for `rows` positions (forward chunks or a decoding batch). */
  newWorkspace(rows: number): Workspace {
    return new Workspace(this.backend, this.dims, rows);
  }

  #workspace(): Workspace {
    this.#assertOpen();
    this.#chunkWs ??= this.newWorkspace(this.chunkSize);
    return this.#chunkWs;
  }

  #assertOpen(): void {
    if (this.#closed) throw new MambaByteError("the model is closed");
  }

  /**
   * Runs the layers over `rows` = batch*len positions already embedded in ws.hidden. For a
   * forward chunk batch is 1 and len the chunk length; for a decoding step len is 1.
   * `tapped(layer)` says which taps to fill for a layer (pre-activation conv output on request).
   */
  runLayers(
    ws: Workspace,
    state: RecurrentState,
    batch: number,
    len: number,
    wantConvPre: (layer: number) => boolean = () => false,
    afterLayer?: (layer: number) => void,
  ): void {
    const be = this.backend;
    const { dModel: d, dInner: di, dState: n, dtRank: r, dConv: k } = this.dims;
    const rows = batch * len;
    const xdblCols = r + 2 * n;
    const wd = this.weights.wdtype;
    for (let i = 0; i < this.dims.nLayer; i++) {
      const w = this.weights.layers[i];
      be.addNorm({
        x: ws.hidden.ptr,
        residual: ws.residual.ptr,
        accumulate: i > 0,
        weight: w.normWeight.ptr,
        bias: w.normBias?.ptr ?? null,
        normKind: this.weights.normKind,
        eps: this.eps,
        n: rows,
        d,
        out: ws.normed.ptr,
      });
      // One position per sequence (decoding) without a conv1d tap: the fused ops.
      const fused = len === 1 && this.#fusedSteps && !wantConvPre(i);
      const inProj = {
        x: ws.normed.ptr,
        w: w.inProj.ptr,
        wdtype: wd,
        bias: w.inProjBias?.ptr ?? null,
        n: rows,
        inF: d,
        outF: 2 * di,
        y: ws.xz.ptr,
      };
      if (fused) {
        be.linearConv1dStep({
          ...inProj,
          convW: w.convWeight.ptr,
          convBias: w.convBias?.ptr ?? null,
          convState: state.conv[i].ptr,
          dConv: di,
          k,
          xc: ws.xConv.ptr,
          ldo: di,
        });
      } else {
        be.linear(inProj);
        be.conv1d({
          x: ws.xz.ptr,
          ldx: 2 * di,
          w: w.convWeight.ptr,
          bias: w.convBias?.ptr ?? null,
          state: state.conv[i].ptr,
          batch,
          len,
          d: di,
          k,
          out: ws.xConv.ptr,
          ldo: di,
          outPreact: wantConvPre(i) ? ws.convPre.ptr : null,
        });
      }
      be.linear({
        x: ws.xConv.ptr,
        w: w.xProj.ptr,
        wdtype: wd,
        bias: null,
        n: rows,
        inF: di,
        outF: xdblCols,
        y: ws.xDbl.ptr,
      });
      // The recurrence's operands, the same for the fused step and the unfused scan.
      const scan = {
        u: ws.xConv.ptr,
        ldu: di,
        A: w.A.ptr,
        B: ws.xDbl.at(r),
        ldb: xdblCols,
        C: ws.xDbl.at(r + n),
        ldc: xdblCols,
        D: w.D.ptr,
        z: ws.xz.at(di),
        ldz: 2 * di,
        state: state.ssm[i].ptr,
        d: di,
        n,
        deltaSoftplus: true,
        y: ws.y.ptr,
        ldy: di,
      };
      if (fused) {
        // delta (dt_proj's output) is still written: a dt_proj tap of a 1-position chunk reads it
        be.stateUpdateDt({
          ...scan,
          xDbl: ws.xDbl.ptr,
          ldXDbl: xdblCols,
          dtW: w.dtProj.ptr,
          wdtype: wd,
          dtBias: w.dtProjBias.ptr,
          dtRank: r,
          batch: rows,
          deltaOut: ws.delta.ptr,
        });
      } else {
        be.linear({
          x: ws.xDbl.ptr,
          ldx: xdblCols,
          w: w.dtProj.ptr,
          wdtype: wd,
          bias: w.dtProjBias.ptr,
          n: rows,
          inF: r,
          outF: di,
          y: ws.delta.ptr,
        });
        be.selectiveScan({
          ...scan,
          delta: ws.delta.ptr,
          ldDelta: di,
          statesAll: null,
          batch,
          len,
        });
      }
      be.linear({
        x: ws.y.ptr,
        w: w.outProj.ptr,
        wdtype: wd,
        bias: w.outProjBias?.ptr ?? null,
        n: rows,
        inF: di,
        outF: d,
        y: ws.hidden.ptr,
      });
      afterLayer?.(i);
    }
  }

  /** norm_f(h + residual) then lm_head into ws.logits (first 256 vocabulary rows). */
  runHead(ws: Workspace, rows: number): void {
    const be = this.backend;
    const d = this.dims.dModel;
    be.addNorm({
      x: ws.hidden.ptr,
      residual: ws.residual.ptr,
      accumulate: this.dims.nLayer > 0,
      weight: this.weights.normFWeight.ptr,
      bias: this.weights.normFBias?.ptr ?? null,
      normKind: this.weights.normKind,
      eps: this.eps,
      n: rows,
      d,
      out: ws.normed.ptr,
    });
    be.linear({
      x: ws.normed.ptr,
      w: this.weights.lmHead.ptr,
      wdtype: this.weights.wdtype,
      bias: null,
      n: rows,
      inF: d,
      outF: 256,
      y: ws.logits.ptr,
    });
  }

  /** Embeds ws.ids[0..rows) into ws.hidden. */
  embed(ws: Workspace, rows: number): void {
    this.backend.embedding({
      ids: ws.ids.ptr,
      n: rows,
      table: this.weights.embedding.ptr,
      wdtype: this.weights.wdtype,
      vocab: this.weights.vocabRows,
      d: this.dims.dModel,
      out: ws.hidden.ptr,
    });
  }

  /**
   * Runs the model over `bytes` chunk by chunk (state carried across chunks), streaming tapped
   * module outputs and logits to callbacks. Returns the final state (owned by the caller unless
   * it was passed in).
   */
  async forwardChunks(
    bytes: Uint8Array,
    options: ForwardChunksOptions = {},
  ): Promise<RecurrentState> {
    const ws = this.#workspace();
    const taps = options.taps ?? [];
    const layerSet = this.#layerSet(options.layers);
    const state = options.state ?? this.newState(1);
    const L = bytes.length;
    const ids = new Int32Array(ws.rows);
    const wantTaps = taps.length > 0 && options.onTap !== undefined;
    for (let start = 0; start < L; start += ws.rows) {
      const rows = Math.min(ws.rows, L - start);
      for (let t = 0; t < rows; t++) ids[t] = bytes[start + t];
      this.backend.upload(ws.ids.ptr, ids.subarray(0, rows));
      this.embed(ws, rows);
      const pending: TapChunk[] = [];
      this.runLayers(
        ws,
        state,
        1,
        rows,
        (i) => wantTaps && layerSet.has(i) && taps.includes("conv1d"),
        wantTaps
          ? (i) => {
            if (!layerSet.has(i)) return;
            for (const tap of taps) pending.push(this.#readTap(ws, tap, i, start, rows));
          }
          : undefined,
      );
      for (const c of pending) await options.onTap!(c);
      if (!options.skipHead) {
        this.runHead(ws, rows);
        if (options.onDeviceLogits) await options.onDeviceLogits(start, rows, ws.logits);
        if (options.onLogits) {
          const out = new Float32Array(rows * 256);
          this.backend.download(out, ws.logits.ptr);
          await options.onLogits(start, out);
        }
      }
      options.onProgress?.(start + rows, L);
    }
    return state;
  }

  #layerSet(layers?: readonly number[]): Set<number> {
    const all = [...Array(this.dims.nLayer).keys()];
    const chosen = layers ?? all;
    for (const l of chosen) {
      if (!Number.isInteger(l) || l < 0 || l >= this.dims.nLayer) {
        throw new MambaByteError(
          `layer index ${l} is out of range: the model has ${this.dims.nLayer} layers (0..${
            this.dims.nLayer - 1
          })`,
        );
      }
    }
    return new Set(chosen);
  }

  #readTap(ws: Workspace, tap: TapName, layer: number, start: number, rows: number): TapChunk {
    const cols = tapWidth(tap, this.dims);
    const src = {
      norm: ws.normed,
      in_proj: ws.xz,
      conv1d: ws.convPre,
      x_proj: ws.xDbl,
      dt_proj: ws.delta,
      out_proj: ws.hidden,
      mixer: ws.hidden,
    }[tap];
    const data = new Float32Array(rows * cols);
    this.backend.download(data, src.ptr);
    return { layer, tap, start, rows, cols, data };
  }

  /**
   * Logits of every position, (L, 256), and the tapped module outputs of the chosen layers, each
   * (L, width). For long inputs prefer {@link forwardChunks}, which streams.
   */
  async forward(
    bytes: Uint8Array,
    options: { taps?: readonly TapName[]; layers?: readonly number[] } = {},
  ): Promise<ForwardResult> {
    const L = bytes.length;
    const logits = new Float32Array(L * 256);
    const taps = new Map<TapName, Map<number, Float32Array>>();
    const layers = [...this.#layerSet(options.layers)].sort((a, b) => a - b);
    for (const tap of options.taps ?? []) {
      const m = new Map<number, Float32Array>();
      for (const l of layers) m.set(l, new Float32Array(L * tapWidth(tap, this.dims)));
      taps.set(tap, m);
    }
    const state = await this.forwardChunks(bytes, {
      taps: options.taps,
      layers,
      onTap: (c) => taps.get(c.tap)!.get(c.layer)!.set(c.data, c.start * c.cols),
      onLogits: (start, chunk) => logits.set(chunk, start * 256),
    });
    state.free();
    return { logits, taps };
  }

  /**
   * Natural-log probability of each next byte given its prefix, and its rank (0 = the model's top
   * choice), computed on the backend chunk by chunk.
   */
  async logProbs(
    bytes: Uint8Array,
    onProgress?: (done: number, total: number) => void,
  ): Promise<LogProbResult> {
    const L = bytes.length;
    const n = Math.max(0, L - 1);
    const logProbs = new Float32Array(n);
    const ranks = new Int32Array(n);
    const collector = this.logProbCollector(bytes, logProbs, ranks);
    const state = await this.forwardChunks(bytes, {
      onDeviceLogits: collector.onDeviceLogits,
      onProgress,
    });
    collector.free();
    state.free();
    return { logProbs, ranks };
  }

  /**
   * A forwardChunks `onDeviceLogits` handler that fills `logProbs`/`ranks` (length L-1) for
   * `bytes`; lets one pass produce taps and log-probabilities together.
   */
  logProbCollector(
    bytes: Uint8Array,
    logProbs: Float32Array,
    ranks: Int32Array,
  ): {
    onDeviceLogits: (start: number, rows: number, logits: Tensor) => void;
    free: () => void;
  } {
    const be = this.backend;
    const cap = this.chunkSize;
    const targets = be.alloc(cap * 4);
    const lp = be.alloc(cap * 4);
    const rk = be.alloc(cap * 4);
    const hostTargets = new Int32Array(cap);
    const L = bytes.length;
    return {
      onDeviceLogits: (start, rows, logits) => {
        const m = Math.min(rows, L - 1 - start); // the last position has no next byte
        if (m <= 0) return;
        for (let t = 0; t < m; t++) hostTargets[t] = bytes[start + t + 1];
        be.upload(targets, hostTargets.subarray(0, m));
        be.logprobRank({ logits: logits.ptr, n: m, v: 256, targets, logprob: lp, rank: rk });
        be.download(logProbs.subarray(start, start + m), lp);
        be.download(ranks.subarray(start, start + m), rk);
      },
      free: () => {
        be.free(targets);
        be.free(lp);
        be.free(rk);
      },
    };
  }

  /** Releases the weights and buffers. Idempotent; the backend stays open. */
  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    this.#chunkWs?.free();
    freeWeights(this.weights);
  }
}
