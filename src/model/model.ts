/**
 * MambaByteLM: the byte-level Mamba language model in TypeScript over the backend ops, the one
 * public model type (loadModel returns one). A forward runs chunk by chunk with the conv and SSM
 * state carried across chunks, so memory is bounded however long the input; taps return module
 * outputs of chosen layers; a recurrent state with single-byte steps serves decoding.
 *
 * Block semantics (MambaByte / mamba_ssm): residual = h + residual (fp32), h = norm(residual),
 * h = mixer(h); at the end norm_f(h + residual) and lm_head.
 *
 * @module
 */

import type { DraftModel } from "../generate/drafter.ts";
import {
  type Backend,
  envValue,
  FLAG_ALLOW_TF32,
  type LayerBuffers,
  type LayerShape,
  offsetPtr,
  type Ptr,
} from "../backend/backend.ts";
import type { Tensor } from "../backend/tensor.ts";
import { DecodeLayerPtr } from "../native/lib.ts";
import type { ModelConfig } from "../config/config.ts";
import type { ModelDims } from "../config/dims.ts";
import { MambaByteError } from "../errors.ts";
// Value imports of src/generate/ are safe here: those modules import only types from this one,
// so evaluating them does not need this module first.
import { generateBytes, type GenerateOptions } from "../generate/decode.ts";
import { type DecodeContext, keepDecodeContexts } from "../generate/decode_context.ts";
import { generateSpeculative, type SpeculativeStats } from "../generate/speculative.ts";
import { freeWeights, type ModelWeights } from "./weights.ts";
import { type F16DecodeLayer, f16ProductsByDefault, f16TwinBytes, F16Twins } from "./f16_twins.ts";
import { HostRegistry } from "./host_registry.ts";
import { TapPipeline } from "./tap_pipeline.ts";
import { RecurrentState, type VerifyBuffers, Workspace } from "./workspace.ts";
import { resolveChunkSize } from "./chunk_size.ts";

/**
 * Rows per product in a verification pass: mb_linear gives every row of a call of at most 8 rows
 * the bits of a one-row call (the header's promise), which one-position decoding steps make.
 */
export const VERIFY_BLOCK = 8;

/**
 * The largest decoding batch whose steps run as one Backend.decodeLayers call: larger batches take
 * in_proj and out_proj on bf16 rows where the backend has them and the conv step with x_proj in
 * one call ({@link MambaByteLM.stepLayers}), which that call does not.
 */
const DECODE_TABLE_MAX_BATCH = 8;

/**
 * With bf16 activations (a CUDA model with bf16 weights), decoding batches from this size run the
 * steps of more than 8 sequences (tensor-core products on bf16 rows) instead of
 * Backend.decodeLayers, whose products of up to 8 rows give each row a one-row call's bits at a
 * fraction of the bandwidth (MAMBABYTE_CUDA_TC_MIN_BATCH=N for A/B runs; 9 keeps the table's
 * steps up to 8 sequences).
 */
function tensorCoreMinBatch(): number {
  const v = Number(envValue("MAMBABYTE_CUDA_TC_MIN_BATCH"));
  return Number.isInteger(v) && v >= 2 ? v : 4;
}

/** MAMBABYTE_STEP_DELTA_OUT=1: stepLayers writes dt_proj's output without taps too (A/B runs). */
let stepDeltaOutFlag: boolean | undefined;
function stepDeltaOut(): boolean {
  return (stepDeltaOutFlag ??= envValue("MAMBABYTE_STEP_DELTA_OUT") === "1");
}

/**
 * Downloads from backend memory that run while the ops enqueued after them do
 * ({@link MambaByteLM.downloadPipeline}): at most a few in flight, each delivered in push order.
 */
export interface OverlappedDownloads {
  /**
   * Starts downloading dst.length floats at src into dst (the bytes the ops enqueued before leave
   * there); `done(dst)` runs once they are there, from a later push or from drain.
   */
  push(src: Ptr, dst: Float32Array, done: (dst: Float32Array) => void): void;
  /** Waits for every download in flight and delivers it. */
  drain(): void;
  /** Waits for the downloads in flight without delivering them (after a failure). */
  abandon(): void;
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

/**
 * The taps a forward on the weights' fp16 twins still writes as fp32 rows (in_proj's xz, x_proj's
 * x_dbl, dt_proj's delta with its bias): with only these asked for, a forward with taps takes the
 * twins where one without would (MambaByteLMOptions.f16Products), so an extraction runs the plain
 * forward's products. The others (the norm's rows, the conv's pre-activation, out_proj's output,
 * which the twins' norm and in-place out_proj never write) keep the fp32 products.
 */
export const TAPS_ON_TWINS: readonly TapName[] = ["in_proj", "x_proj", "dt_proj"];

/**
 * The layers to run taps on: `layers` (default all), checked against a model of `nLayer` layers,
 * sorted, without repeats. An index out of range is a {@link MambaByteError} with exit code 2, a
 * usage error, since layers come from the command line's --layer_idxs.
 */
export function layerIndices(nLayer: number, layers?: readonly number[]): number[] {
  const chosen = layers ?? [...Array(nLayer).keys()];
  for (const l of chosen) {
    if (!Number.isInteger(l) || l < 0 || l >= nLayer) {
      throw new MambaByteError(
        `layer index ${l} is out of range: the model has ${nLayer} layers (0..${nLayer - 1})`,
        2,
      );
    }
  }
  return [...new Set(chosen)].sort((a, b) => a - b);
}

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
  /** The layer the output comes from. */
  layer: number;
  /** The module. */
  tap: TapName;
  /** First position of the chunk. */
  start: number;
  /** Positions in the chunk. */
  rows: number;
  /** The module output's width. */
  cols: number;
  /** (rows, cols) row-major; owned by the receiver. */
  data: Float32Array;
}

/**
 * A module output of one layer in backend memory (a view into the forward's workspace): rows
 * [start, start + rows) of the layer's (L, cols) output, row r at `ptr + r * ld` floats. For ops
 * that consume it where the model runs, so nothing crosses to the host.
 */
export interface DeviceTap {
  /** The layer the output comes from. */
  layer: number;
  /** The module. */
  tap: TapName;
  /** First position of the chunk. */
  start: number;
  /** Positions in the chunk. */
  rows: number;
  /** The module output's width. */
  cols: number;
  /** The first row, in backend memory. */
  ptr: Ptr;
  /** Row stride in floats. */
  ld: number;
}

/** Options of {@link MambaByteLM.forwardChunks}. */
export interface ForwardChunksOptions {
  /** Modules to tap (default none). */
  taps?: readonly TapName[];
  /** Layers to tap (default all). */
  layers?: readonly number[];
  /** Receives every tapped chunk, in position order per layer. */
  onTap?: (chunk: TapChunk) => void | Promise<void>;
  /**
   * Where an onTap chunk's data lands: a (rows * cols)-float array (e.g. a view into the caller's
   * result, so nothing is copied twice) or undefined for a fresh array.
   */
  tapTarget?: (meta: Omit<TapChunk, "data">) => Float32Array | undefined;
  /**
   * onTap chunks are downloaded through page-locked host buffers while the next layers run
   * ({@link TapPipeline}; default: on CUDA). Off: each is downloaded synchronously after its layer.
   * The data are the same either way.
   */
  overlapTaps?: boolean;
  /**
   * Receives every tapped chunk in backend memory, right after its layer ran and in `taps` order
   * (all taps of a layer before the next layer runs). The view is valid until the forward moves
   * on to the next layer: enqueue backend ops on it (they run before the workspace is written
   * again), or download it, but do not keep it.
   */
  onDeviceTap?: (tap: DeviceTap) => void;
  /** Called after each chunk (its layers, taps and head), before the next chunk. */
  onChunkDone?: (start: number, rows: number) => void | Promise<void>;
  /** Receives the logits of every chunk (rows, vocabOut). */
  onLogits?: (start: number, logits: Float32Array) => void | Promise<void>;
  /** Called with the device logits tensor of each chunk (rows valid) before the next chunk. */
  onDeviceLogits?: (start: number, rows: number, logits: Tensor) => void | Promise<void>;
  /** Skip the head (norm_f + lm_head) when no logits are needed. */
  skipHead?: boolean;
  /**
   * Progress callback: positions done, total. A returned promise is awaited before the next chunk,
   * so a caller can yield to the event loop there (timers, messages) or stop the pass by throwing.
   */
  onProgress?: (done: number, total: number) => void | Promise<void>;
  /** Start from (and update) this state instead of a fresh one (batch 1). */
  state?: RecurrentState;
}

/** Result of {@link MambaByteLM.forward}. */
export interface ForwardResult {
  /** (L, vocabOut) row-major: (L, 256) for a byte model. */
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

/** A drafter for {@link MambaByteLM.generate}'s speculative decoding: see loadDraftModel. */
export interface DraftOptions {
  /** The drafting model (and its tokenizer, for a subword drafter). */
  model: DraftModel;
  /** Bytes drafted per verification pass, 1..64 (default 7). */
  length?: number;
  /** Receives the statistics once the generation is done. */
  onStats?: (stats: SpeculativeStats) => void;
  /** Time the phases of every round into the statistics (SpeculativeOptions.profilePhases). */
  profilePhases?: boolean;
  /**
   * Rounds on the device with no host step between them, or through the host
   * (SpeculativeOptions.deviceRounds; default: on the device, MAMBABYTE_SPEC_ROUNDS=host aside).
   */
  deviceRounds?: boolean;
}

/** Options of {@link MambaByteLM.generate}. */
export interface ModelGenerateOptions extends GenerateOptions {
  /**
   * Speculative decoding: draft with this model, verify with this one; the bytes are exactly
   * those of plain decoding (same options and seed), one sample (numSamples 1).
   */
  draft?: DraftOptions;
}

/** Options of the {@link MambaByteLM} constructor. */
export interface MambaByteLMOptions {
  /** Where the weights came from: a path, or "random(seed=N)". */
  source: string;
  /** Forward chunk length in positions (default: the config's chunkSize). */
  chunkSize?: number;
  /** Logits per position (default 256: the bytes); see {@link MambaByteLM.vocabOut}. */
  vocabOut?: number;
  /**
   * Whether the model owns the backend, so that {@link MambaByteLM.close} closes it too (default
   * false: the backend is the caller's, and stays open).
   */
  ownsBackend?: boolean;
  /**
   * Whether the forward's products take their inputs as bfloat16 written by the ops before them
   * (no conversion pass per product), as do in_proj and x_proj in decoding steps of more than 8
   * sequences; the results are the same bits. Default: on for a CUDA model with bf16 weights unless
   * MAMBABYTE_CUDA_BF16_ACTS=0 (A/B runs); ignored elsewhere.
   */
  bf16Activations?: boolean;
  /**
   * With bf16 activations, whether a forward without taps also stores in_proj's xz, the conv's
   * output u and dt_proj's delta as bfloat16 only (Backend.linearToBf16; the conv and the scan read
   * them as such): half their traffic, at the cost of rounding them, so the logits are no longer
   * the fp32 activations' bits (within a bound the CUDA model tests hold). Forwards with taps keep
   * fp32 xz, u and delta. Default: on with bf16 activations unless MAMBABYTE_CUDA_BF16_MIXER=0
   * (A/B runs).
   */
  bf16MixerActivations?: boolean;
  /**
   * Whether decoding steps of up to 8 sequences run their layers in one Backend.decodeLayers call
   * instead of five calls a layer; the results are the same bits. Default true (false: A/B runs
   * and the tests that hold the two equal).
   */
  decodeLayers?: boolean;
  /** Whether close() frees the weights (default true; false: {@link MambaByteLM.onBackend}). */
  ownsWeights?: boolean;
  /**
   * Whether forwards without taps (or with taps only of TAPS_ON_TWINS) run in_proj and out_proj of
   * chunks over 8 positions on fp16 operands scaled by powers of two (Backend.linearF16: TF32's
   * rounding of every operand, on the fp16 tensor cores): the weights' fp16 twins are made here,
   * once (3 d_inner d_model 2 bytes a layer), and the norm writes in_proj's input as such. fp32
   * weights only; used while the backend allows TF32. Default: on for a CUDA model with fp32
   * weights whose backend allows TF32 unless MAMBABYTE_CUDA_TF32_F16=0; the CPU (exact fp32
   * products of the rounded operands) when asked.
   */
  f16Products?: boolean;
}

/**
 * The byte-level Mamba LM bound to a backend: what loadModel returns. Besides forwards,
 * log-probabilities and generation, it exposes the lower-level pieces (chunked forwards, states,
 * workspaces, the layer loops) that the analyses and decoders build on.
 */
export class MambaByteLM {
  /** The backend the model runs on. */
  readonly backend: Backend;
  /** The configuration entry it was built from (with the checkpoint's dimensions). */
  readonly config: ModelConfig;
  /** Where the weights came from: a path, or "random(seed=N)". */
  readonly source: string;
  /** Network shape (the config's dims). */
  readonly dims: ModelDims;
  /** Parameters in backend memory. */
  readonly weights: ModelWeights;
  /** Norm epsilon. */
  readonly eps: number;
  /** Forward chunk length (the config's `auto` resolved for the device: model/chunk_size.ts). */
  readonly chunkSize: number;
  /**
   * Logits per position: 256 (the bytes; rows of a padded vocabulary beyond them are never
   * scored), or a subword model's whole vocabulary (a speculative drafter's).
   */
  readonly vocabOut: number;
  /** Whether close() closes the backend too (a backend loadModel created for this model). */
  readonly ownsBackend: boolean;
  /** Whether the forward writes its products' inputs as bf16 (MambaByteLMOptions.bf16Activations). */
  readonly bf16Activations: boolean;
  /** Whether a forward without taps stores xz, u and delta as bf16 (bf16MixerActivations). */
  readonly bf16MixerActivations: boolean;
  /** With bf16 activations, decoding batches from this size take the tensor-core products. */
  readonly #tcMinBatch: number;
  /** Whether decoding steps take Backend.decodeLayers (MambaByteLMOptions.decodeLayers). */
  readonly decodeLayers: boolean;
  #chunkWs: Workspace | undefined;
  #tapPipe: TapPipeline | undefined;
  #hostRegistry: HostRegistry | undefined;
  #decodeKept: DecodeContext | null = null;
  /** The last layer forwardLayers ran left its dt_proj tap in ws.y (bf16 xz), not ws.delta. */
  #deltaTapInY = false;
  #closed = false;
  readonly #ownsWeights: boolean;
  /** The weights' fp16 twins (MambaByteLMOptions.f16Products), or null. */
  #f16: F16Twins | null;
  /** Whether close() frees them (not a model of onBackend's, which shares them). */
  #ownsF16: boolean;

  /**
   * Binds weights uploaded for `config.dims` to the backend (norm epsilon and chunk length from
   * the config unless options say otherwise); prefer loadModel() from mod.ts.
   */
  constructor(
    backend: Backend,
    config: ModelConfig,
    weights: ModelWeights,
    options: MambaByteLMOptions,
  ) {
    this.backend = backend;
    this.config = config;
    this.source = options.source;
    this.dims = config.dims;
    this.weights = weights;
    this.eps = config.normEpsilon;
    this.vocabOut = options.vocabOut ?? 256;
    this.ownsBackend = options.ownsBackend ?? false;
    // Only CUDA's bf16 products round their input to bf16; elsewhere that would change results.
    this.bf16Activations = backend.kind === "cuda" && weights.wdtype === "bf16" &&
      (options.bf16Activations ?? envValue("MAMBABYTE_CUDA_BF16_ACTS") !== "0");
    this.bf16MixerActivations = this.bf16Activations &&
      (options.bf16MixerActivations ?? envValue("MAMBABYTE_CUDA_BF16_MIXER") !== "0");
    // (the environment is read only where it matters: a CUDA model with bf16 activations)
    this.#tcMinBatch = this.bf16Activations ? tensorCoreMinBatch() : Infinity;
    const f16 = weights.wdtype === "f32" &&
      (options.f16Products ??
        ((backend.flags & FLAG_ALLOW_TF32) !== 0 && f16ProductsByDefault(backend.kind)));
    this.#ownsF16 = f16;
    // the twins made below come out of the memory an automatic chunk size may take
    const twinBytes = this.#ownsF16 ? f16TwinBytes(config.dims) : 0;
    this.chunkSize = resolveChunkSize(options.chunkSize ?? config.chunkSize, {
      device: backend.kind === "cuda" ? "cuda" : "cpu",
      dims: config.dims,
      freeBytes: backend.kind === "cuda"
        ? Math.max(0, Number(backend.info().mem_free ?? 0) - twinBytes)
        : 0,
      logitsWidth: this.vocabOut,
      bf16Activations: this.bf16Activations,
    });
    this.decodeLayers = options.decodeLayers ?? true;
    this.#ownsWeights = options.ownsWeights ?? true;
    if (
      !Number.isSafeInteger(this.vocabOut) || this.vocabOut < 1 ||
      this.vocabOut > weights.vocabRows
    ) {
      throw new MambaByteError(
        `vocabOut ${this.vocabOut} is outside 1..${weights.vocabRows} (the embedding's rows)`,
      );
    }
    this.#f16 = f16 ? F16Twins.make(backend, weights, config.dims) : null;
  }

  /** Whether forwards run in_proj and out_proj on fp16 twins (MambaByteLMOptions.f16Products). */
  get f16Products(): boolean {
    return this.#f16 !== null;
  }

  /**
   * This model's weights run by another backend of the same device (its ops on that backend's
   * stream; weights, states and workspaces of either are the same memory), or null when `be` is
   * on another device. So one captured graph can hold the ops of two models (speculative
   * decoding's drafter and target). close() of the result leaves the weights (this model's).
   */
  onBackend(be: Backend): MambaByteLM | null {
    if (be === this.backend) return this;
    if (be.kind !== this.backend.kind || be.device !== this.backend.device) return null;
    const m = new MambaByteLM(be, this.config, this.weights, {
      source: this.source,
      chunkSize: this.chunkSize,
      vocabOut: this.vocabOut,
      bf16Activations: this.bf16Activations,
      bf16MixerActivations: this.bf16MixerActivations,
      decodeLayers: this.decodeLayers,
      ownsWeights: false,
      f16Products: false, // this model's twins, below
    });
    m.#f16 = this.#f16;
    return m;
  }

  /** "cpu" or "cuda". */
  get device(): "cpu" | "cuda" {
    return this.backend.kind;
  }

  /** The GPU index of a CUDA model (0 for the CPU). */
  get deviceIndex(): number {
    return this.backend.device;
  }

  /**
   * A zero recurrent state for `batch` sequences, with the table of its layers' pointers that
   * {@link stepLayers} hands to Backend.decodeLayers (one native call a step, up to 8 sequences)
   * and verification to Backend.verifyLayers.
   */
  newState(batch = 1): RecurrentState {
    const state = new RecurrentState(this.backend, this.dims, batch);
    state.setDecodeTable(this.weights, this.#decodeTable(state));
    return state;
  }

  /** The pointer table of `state` with this model's weights (newState made it). */
  #layerTable(state: RecurrentState): BigUint64Array {
    const table = state.decodeTable(this.weights);
    if (!table) throw new MambaByteError("a recurrent state of another model");
    return table;
  }

  /**
   * Backend.decodeLayers' pointers of every layer: this model's weights and `state`'s buffers;
   * with fp16 twins (unless `plain`), in_proj and out_proj on them with the scaled norm, x_proj
   * and D copies ({@link #layerShape}'s "f32-f16io").
   */
  #decodeTable(state: RecurrentState, plain = false): BigUint64Array {
    const P = DecodeLayerPtr;
    const t = new BigUint64Array(this.dims.nLayer * P.PTRS);
    const v = (p: Ptr | undefined) => p ? BigInt(Deno.UnsafePointer.value(p)) : 0n;
    this.weights.layers.forEach((w, i) => {
      const at = (k: number, p: Ptr | undefined) => t[i * P.PTRS + k] = v(p);
      at(P.NORM_W, w.normWeight.ptr);
      at(P.NORM_B, w.normBias?.ptr);
      at(P.IN_W, w.inProj.ptr);
      at(P.IN_B, w.inProjBias?.ptr);
      at(P.CONV_W, w.convWeight.ptr);
      at(P.CONV_B, w.convBias?.ptr);
      at(P.CONV_STATE, state.conv[i].ptr);
      at(P.X_W, w.xProj.ptr);
      at(P.DT_W, w.dtProj.ptr);
      at(P.DT_B, w.dtProjBias.ptr);
      at(P.A, w.A.ptr);
      at(P.D, w.D.ptr);
      at(P.SSM_STATE, state.ssm[i].ptr);
      at(P.OUT_W, w.outProj.ptr);
      at(P.OUT_B, w.outProjBias?.ptr);
      const tw = plain ? undefined : this.#f16?.decodeLayer(i);
      if (!tw) return;
      at(P.NORM_W, tw.normW);
      at(P.NORM_B, tw.normB);
      at(P.IN_W, tw.inW);
      at(P.X_W, tw.xW);
      at(P.D, tw.D);
      at(P.OUT_W, tw.outW);
    });
    return t;
  }

  /** A workspace for `rows` positions (forward chunks or a decoding batch). */
  newWorkspace(rows: number): Workspace {
    // bf16 activations serve products of more than 8 rows (tensor cores): forward chunks, and
    // decoding steps of more than 8 sequences (from tensorCoreMinBatch)
    const bf16 = this.bf16Activations && (rows > 8 || rows >= this.#tcMinBatch);
    return new Workspace(this.backend, this.dims, rows, this.vocabOut, bf16);
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
   * The layers over a sequence (mamba_simple's `forward`): `len` positions of one sequence,
   * already embedded in ws.hidden, with the conv and SSM state carried in `state` (batch 1).
   * `convPre(layer)` asks for the conv output before SiLU in ws.convPre (the conv1d tap);
   * `afterLayer(layer)` runs once the layer's module outputs are in ws (where taps read them).
   * `dtProjOut(layer)`: whether ws.delta must hold dt_proj's output (the dt_proj tap; default:
   * in every layer when `afterLayer` is given). Elsewhere dt_proj's bias is left to the scan
   * (delta_bias), which saves the product a pass over its output; the sum is the same float
   * addition either way, so the results are the same bits. With ws.bf16 (and len > 8) the norm,
   * the conv and the scan also write their outputs as bf16 for in_proj, x_proj and out_proj: the
   * values those products' tensor-core path rounds its input to, without a pass of its own; the
   * fp32 norm output is then written only for a tap, and the scan's y not at all. Without
   * `afterLayer`, chunks of more than 8 positions run out_proj with the next layer's add + norm,
   * and with bf16MixerActivations in_proj writes xz and dt_proj delta as bf16 bits into the first
   * half of ws.xz's and ws.delta's bytes, which the conv and the scan read as such; the conv then
   * writes only its bf16 copy, which the scan reads as u. With the weights' fp16 twins
   * (f16Products) and TF32 allowed, such chunks run in_proj, x_proj and out_proj on the twins: the
   * norm writes in_proj's input as scaled fp16, the conv u only as scaled fp16 rows (x_proj's and
   * the scan's input, in ws.xConv's bytes), both by exponents the twins found at load; dt_proj
   * runs on its twin too, writing delta as scaled fp16 rows for the scan; out_proj adds into the
   * residual in place. `tapsOnTwins`: `afterLayer` reads only TAPS_ON_TWINS, so the twins are
   * taken with it too (dt_proj then writes fp32 delta with its bias where dtProjOut asks), and so
   * are out_proj with the next layer's add + norm and, unless `xzTapped` (in_proj's output is
   * read), bf16 xz and delta: dt_proj then also writes fp32 delta with its bias into ws.y (which
   * bf16 activations leave unused) for the tap, where {@link #tapSource} finds it.
   */
  forwardLayers(
    ws: Workspace,
    state: RecurrentState,
    len: number,
    convPre: (layer: number) => boolean = () => false,
    afterLayer?: (layer: number) => void,
    dtProjOut: (layer: number) => boolean = () => afterLayer !== undefined,
    tapsOnTwins = false,
    xzTapped = true,
  ): void {
    const be = this.backend;
    const { dInner: di, dtRank: r } = this.dims;
    const bf = len > 8 ? ws.bf16 : null;
    // taps that read only what the plain forward's forms still write in fp32 (TAPS_ON_TWINS) leave
    // the layer to those forms
    const plain = afterLayer === undefined || tapsOnTwins;
    // A chunk of more than 8 positions runs each out_proj but the last with the next layer's add +
    // norm (Backend.linearAddNorm: on CUDA the GEMM adds the product to the residual itself);
    // shorter chunks keep the products of up to 8 rows (a one-row call's bits).
    const fuseNorm = plain && len > 8;
    // xz and delta as bf16 (no tap reads xz; a dt_proj tap gets its fp32 copy in ws.y)
    const mixBf16 = bf !== null && plain && !(afterLayer && xzTapped) &&
      this.bf16MixerActivations;
    // in_proj and out_proj on the weights' fp16 twins while TF32 is allowed (fp32 weights); with
    // taps only where they read what the twins' path writes in fp32
    const f16 = len > 8 && plain && bf === null &&
        (be.flags & FLAG_ALLOW_TF32) !== 0 && ws.rows * this.dims.dModel >= 16
      ? this.#f16
      : null;
    for (let i = 0; i < this.dims.nLayer; i++) {
      const w = this.weights.layers[i];
      if (f16) {
        if (i === 0) this.#normF16(ws, i, len, ws.hidden.ptr, false);
        be.linearF16({
          ...this.#inProj(ws, i, len),
          x: null,
          xF16: ws.normed.ptr,
          xExp: f16.normExp(i),
          ...f16.inProj(i),
        });
      } else {
        if (!fuseNorm || i === 0) this.#norm(ws, i, len, bf?.normed, bf !== null && plain);
        if (mixBf16) {
          be.linearToBf16({ ...this.#inProj(ws, i, len), x: bf.normed.ptr, xBf16: true });
        } else if (bf) be.linearBf16({ ...this.#inProj(ws, i, len), x: bf.normed.ptr });
        else be.linear(this.#inProj(ws, i, len));
      }
      this.#conv(ws, i, ws.xz.ptr, state.conv[i].ptr, 1, len, {
        xBf16: mixBf16,
        outPreact: convPre(i) ? ws.convPre.ptr : null,
        // on the twins, u only as scaled fp16 rows (x_proj's twin and the scan read them), in the
        // first half of ws.xConv's bytes
        outBf16: f16 ? ws.xConv.ptr : bf?.xConv.ptr ?? null,
        outF16Exp: f16?.uExp(i),
        outF32: !mixBf16 && !f16, // with bf16 xz the scan reads the bf16 copy as u
      });
      if (f16) {
        be.linearF16({
          ...this.#xProjOperands(ws, i, len),
          x: null,
          xF16: ws.xConv.ptr,
          xExp: f16.uExp(i),
          ...f16.xProj(i),
        });
      } else if (bf) be.linearBf16({ ...this.#xProjOperands(ws, i, len), x: bf.xConv.ptr });
      else be.linear(this.#xProjOperands(ws, i, len));
      const tapDelta = dtProjOut(i);
      // with bf16 xz a dt_proj tap takes its own fp32 delta with the bias, in ws.y; the scan's
      // delta stays bf16 (a tile scan reads bf16 u and z only with bf16 delta)
      const deltaInY = mixBf16 && tapDelta;
      const biasInScan = !tapDelta || deltaInY;
      const deltaF16 = f16 !== null && biasInScan; // (a dt_proj tap takes fp32 delta)
      const dtProj = {
        x: ws.xDbl.ptr,
        ldx: this.#xDblCols,
        w: w.dtProj.ptr,
        wdtype: this.weights.wdtype,
        bias: biasInScan ? null : w.dtProjBias.ptr,
        n: len,
        inF: r,
        outF: di,
        y: ws.delta.ptr,
      };
      if (deltaInY) be.linear({ ...dtProj, bias: w.dtProjBias.ptr, y: ws.y.ptr });
      this.#deltaTapInY = deltaInY;
      // on the twins: delta as scaled fp16 rows in ws.delta's first half, its exponent found by the
      // product (no output can overflow)
      if (deltaF16) {
        be.linearF16({
          ...dtProj,
          ...f16!.dtProj(i),
          y: null,
          yF16: ws.delta.ptr,
          yExp: this.#deltaF16Exp(ws),
        });
      } else if (mixBf16) be.linearToBf16(dtProj);
      else be.linear(dtProj);
      be.selectiveScan({
        ...this.#scanOperands(ws, state, i),
        // bf16 u (the conv's copy) and z (the second half of a bf16 xz row, 2 bytes an element)
        ...(mixBf16
          ? { u: bf.xConv.ptr, uBf16: true, z: offsetPtr(ws.xz.ptr, di * 2), zBf16: true }
          : {}),
        // on the twins: u's scaled fp16 rows (the conv's), by their exponent
        ...(f16 ? { u: ws.xConv.ptr, uBf16: true, uF16Exp: f16.uExp(i) } : {}),
        delta: ws.delta.ptr,
        deltaBf16: mixBf16 || deltaF16,
        deltaF16Exp: deltaF16 ? this.#deltaF16Exp(ws) : undefined, // ... and delta's (dt_proj's)
        ldDelta: di,
        deltaBias: biasInScan ? w.dtProjBias.ptr : null,
        statesAll: null,
        batch: 1,
        len,
        y: bf ? null : ws.y.ptr,
        yBf16: bf?.y.ptr ?? null,
        // out_proj's twin takes y with this exponent: no pass for y's largest magnitude
        yF16Exp: f16 ? this.#yF16Exp(ws) : null,
      });
      if (f16) this.#outProjF16(ws, i, len, f16);
      else if (fuseNorm && i + 1 < this.dims.nLayer) this.#outProjNorm(ws, i, len, bf);
      else if (bf) be.linearBf16({ ...this.#outProjOperands(ws, i, len), x: bf.y.ptr });
      else be.linear(this.#outProjOperands(ws, i, len));
      afterLayer?.(i);
    }
  }

  /**
   * Layer i's add + norm with its output as scaled fp16 rows for in_proj's twin: x (+ ws.residual)
   * -> ws.residual, and the rows into the first half of ws.normed's bytes (an fp32 normed row is
   * not needed then), by the exponent the twins found at load (F16Twins.normExp).
   */
  #normF16(ws: Workspace, i: number, rows: number, x: Ptr, accumulate: boolean): void {
    this.backend.addNormF16({
      ...this.#normOperands(ws, i, rows, x, accumulate),
      outF16: ws.normed.ptr,
      outExp: this.#f16!.normExp(i),
      expGiven: true,
    });
  }

  /**
   * Where the scan puts y's scaled fp16 exponent for out_proj's twin: past ws.rows fp16 rows of
   * ws.normed (the norm's), 16-byte aligned.
   */
  #yF16Exp(ws: Workspace): Ptr {
    return offsetPtr(ws.normed.ptr, Math.ceil((ws.rows * this.dims.dModel * 2) / 16) * 16);
  }

  /** Where dt_proj's twin puts delta's scaled fp16 exponent for the scan: after y's. */
  #deltaF16Exp(ws: Workspace): Ptr {
    return offsetPtr(this.#yF16Exp(ws), 4);
  }

  /**
   * Layer i's out_proj on its fp16 twin (ws.y scaled by the exponent the scan found, and rounded
   * by the call): added to
   * ws.residual in place, then layer i + 1's norm of it; the last layer's into ws.hidden (the
   * head adds it).
   */
  #outProjF16(ws: Workspace, i: number, rows: number, f16: F16Twins): void {
    const last = i + 1 === this.dims.nLayer;
    const { y: _, ...product } = this.#outProjOperands(ws, i, rows);
    this.backend.linearF16({
      ...product,
      xExp: this.#yF16Exp(ws), // the scan's
      ...f16.outProj(i),
      y: last ? ws.hidden.ptr : ws.residual.ptr,
      accumulate: !last,
    });
    if (!last) this.#normF16(ws, i + 1, rows, ws.residual.ptr, false);
  }

  /**
   * One decoding step (mamba_simple's `step`): one position of each of `batch` sequences, already
   * embedded in ws.hidden, through the fused decoding ops (in_proj + conv step, dt_proj + state
   * update; the context's FLAG_UNFUSED_STEPS runs each as its two plain ops). `afterLayer(layer)`
   * runs once the layer's module outputs are in ws; only then (or with
   * MAMBABYTE_STEP_DELTA_OUT=1, A/B runs) does ws.delta receive dt_proj's output: a step without
   * taps skips that store (a batch-64 step's 44 MB).
   */
  stepLayers(
    ws: Workspace,
    state: RecurrentState,
    batch: number,
    afterLayer?: (layer: number) => void,
  ): void {
    const be = this.backend;
    const { dInner: di, dConv: k } = this.dims;
    // More than 8 sequences (with bf16 activations, from tensorCoreMinBatch): in_proj and out_proj
    // are tensor-core products, which take the norm's and the state update's bf16 rows (the bits
    // they made of the fp32 rows), and the conv step shares a call with x_proj (one kernel on CUDA).
    const many = batch > 8 || (ws.bf16 !== null && batch >= this.#tcMinBatch);
    const bf = many ? ws.bf16 : null;
    // Only states of up to DECODE_TABLE_MAX_BATCH sequences carry a table (newState).
    const table =
      this.decodeLayers && !many && batch <= DECODE_TABLE_MAX_BATCH && afterLayer === undefined
        ? state.decodeTable(this.weights)
        : null;
    if (table) return be.decodeLayers(this.decodeLayersArgs(ws, table, batch));
    // Without taps, those steps run each out_proj but the last with the next layer's add + norm
    // (Backend.linearAddNorm: on CUDA the product's parts are summed by the norm's kernel).
    const fuseNorm = many && afterLayer === undefined;
    // up to 8 sequences without taps: on the fp16 twins, as decodeLayers' table (the same bits);
    // taps see the modules' own values, so a step with taps keeps the fp32 weights
    const twins = !many && afterLayer === undefined ? this.#f16 : null;
    for (let i = 0; i < this.dims.nLayer; i++) {
      const w = this.weights.layers[i];
      const tw = twins?.decodeLayer(i);
      const lastLayer = i + 1 === this.dims.nLayer;
      if (!fuseNorm || i === 0) {
        this.#norm(ws, i, batch, bf?.normed, bf !== null && afterLayer === undefined, tw);
      }
      if (many) {
        // in_proj, the conv step and x_proj in one call where nothing reads xz's x half after it
        // (no taps; in_proj without a bias, which the call does not take)
        if (bf && afterLayer === undefined && !w.inProjBias) {
          this.#inConvXProj(ws, i, state.conv[i].ptr, batch, bf.normed.ptr);
        } else {
          if (bf) be.linearBf16({ ...this.#inProj(ws, i, batch), x: bf.normed.ptr });
          else be.linear(this.#inProj(ws, i, batch));
          this.#convXProj(ws, i, state.conv[i].ptr, batch);
        }
      } else {
        be.linearConv1dStep({
          ...this.#inProj(ws, i, batch),
          ...(tw ? { w: tw.inW, wdtype: "f16" as const } : {}),
          convW: w.convWeight.ptr,
          convBias: w.convBias?.ptr ?? null,
          convState: state.conv[i].ptr,
          dConv: di,
          k,
          xc: ws.xConv.ptr,
          ldo: di,
        });
        be.linear({ ...this.#xProjOperands(ws, i, batch), ...(tw ? { w: tw.xW } : {}) });
      }
      be.stateUpdateDt({
        ...this.#scanOperands(ws, state, i),
        ...(tw ? { D: tw.D } : {}),
        ...this.#dtProjOperands(ws, i),
        batch,
        deltaOut: afterLayer !== undefined || stepDeltaOut() ? ws.delta.ptr : null,
        yBf16: bf?.y.ptr,
      });
      // out_proj on the update's bf16 y: the bits its conversion of the fp32 y would make
      if (fuseNorm && !lastLayer) this.#outProjNorm(ws, i, batch, bf);
      else if (bf) be.linearBf16({ ...this.#outProjOperands(ws, i, batch), x: bf.y.ptr });
      else if (tw) be.linear({ ...this.#outProjOperands(ws, i, batch), w: tw.outW, wdtype: "f16" });
      else this.#outProj(ws, i, batch);
      afterLayer?.(i);
    }
  }

  /**
   * Layer i's out_proj with layer i + 1's add + norm (what {@link #norm} does for it): ws.y (or
   * its bf16 copy) -> ws.residual and ws.normed (or its bf16 copy); ws.hidden is scratch.
   */
  #outProjNorm(ws: Workspace, i: number, rows: number, bf: Workspace["bf16"]): void {
    const { y: _, ...product } = this.#outProjOperands(ws, i, rows);
    const next = this.weights.layers[i + 1];
    this.backend.linearAddNorm({
      ...product,
      x: bf ? bf.y.ptr : ws.y.ptr,
      xBf16: bf !== null,
      hScratch: ws.hidden.ptr,
      residual: ws.residual.ptr,
      accumulate: true,
      normWeight: next.normWeight.ptr,
      normBias: next.normBias?.ptr ?? null,
      normKind: this.weights.normKind,
      eps: this.eps,
      out: bf ? null : ws.normed.ptr,
      outBf16: bf?.normed.ptr ?? null,
    });
  }

  /**
   * The table `layers` with this model's dimensions and kinds (every per-layer call's); `plain`:
   * a table of the fp32 weights alone (a drafter's, {@link draftGreedy}), not the twins'.
   */
  #layerShape(layers: BigUint64Array, plain = false): LayerShape {
    const d = this.dims;
    return {
      layers,
      nLayer: d.nLayer,
      dModel: d.dModel,
      dInner: d.dInner,
      dState: d.dState,
      dtRank: d.dtRank,
      dConv: d.dConv,
      wdtype: this.#f16 && !plain ? "f32-f16io" : this.weights.wdtype,
      normKind: this.weights.normKind,
      eps: this.eps,
    };
  }

  /** The activation rows of `ws` that the per-layer calls take. */
  #layerBuffers(ws: Workspace): LayerBuffers {
    return {
      hidden: ws.hidden.ptr,
      residual: ws.residual.ptr,
      normed: ws.normed.ptr,
      xc: ws.xConv.ptr,
      xDbl: ws.xDbl.ptr,
      delta: ws.delta.ptr,
      y: ws.y.ptr,
    };
  }

  /**
   * Backend.decodeLayers' arguments for one decoding step of `batch` sequences in `ws` with the
   * pointer table `layers` ({@link stepLayers} passes its state's table).
   */
  decodeLayersArgs(
    ws: Workspace,
    layers: BigUint64Array,
    batch: number,
  ): Parameters<Backend["decodeLayers"]>[0] {
    return {
      ...this.#layerShape(layers),
      ...this.#layerBuffers(ws),
      batch,
      xz: ws.xz.ptr,
    };
  }

  /**
   * A byte drafter's k greedy drafts from `state` in one native call (Backend.draftGreedy): with
   * `readId`, first a step reading the byte there and its head into `logits`; then ids[0] = the
   * argmax of `logits`, k steps ({@link embed}, {@link stepLayers}), the state after each copied
   * into `stack` (slot i at i * RecurrentState.bytes(dims, 1); slot 0: the state before the first
   * draft), and ids[i] = the argmax of the head ({@link runHead}) after step i < k. `counter` is
   * the draws' counter (int64).
   */
  draftGreedy(
    ws: Workspace,
    state: RecurrentState,
    a: { readId?: Ptr | null; logits: Ptr; counter: Ptr; stack: Ptr; ids: Ptr; k: number },
  ): void {
    const w = this.weights;
    // the drafting kernel takes the fp32 weights: a plain table (drafts are proposals; the
    // target's verification and steps share the twins' bits)
    const table = this.#f16 ? this.#decodeTable(state, true) : this.#layerTable(state);
    this.backend.draftGreedy({
      ...this.#layerShape(table, true),
      ...this.#layerBuffers(ws),
      xz: ws.xz.ptr,
      embedding: w.embedding.ptr,
      vocabRows: w.vocabRows,
      normFWeight: w.normFWeight.ptr,
      normFBias: w.normFBias?.ptr ?? null,
      lmHead: w.lmHead.ptr,
      vocabOut: this.vocabOut,
      state: state.ptr,
      stateBytes: RecurrentState.bytes(this.dims, state.batch),
      ...a,
    });
  }

  /**
   * Verification (speculative decoding): `saved.rows` positions of one sequence, embedded in
   * ws.hidden, each with exactly the arithmetic of a decoding step ({@link stepLayers}) from
   * `state`, so the logits equal those of as many steps bit for bit, in one native call
   * (Backend.verifyLayers). Afterwards `state` is the state after the last position, and `saved`
   * keeps what {@link resumeLayers} needs to move it to just after any position.
   */
  verifyLayers(ws: Workspace, state: RecurrentState, saved: VerifyBuffers): void {
    if (saved.rows > ws.rows) {
      throw new MambaByteError(`verifyLayers: ${saved.rows} positions exceed the workspace's rows`);
    }
    this.backend.verifyLayers(this.verifyLayersArgs(ws, this.#layerTable(state), saved));
  }

  /** Backend.verifyLayers' arguments for a pass over `saved.rows` positions with table `layers`. */
  verifyLayersArgs(
    ws: Workspace,
    layers: BigUint64Array,
    saved: VerifyBuffers,
  ): Parameters<Backend["verifyLayers"]>[0] {
    return {
      ...this.#layerShape(layers),
      ...this.#layerBuffers(ws),
      len: saved.rows,
      savedXz: saved.xz.ptr,
      savedSsm: saved.ssm.ptr,
      savedConv: saved.conv.ptr,
    };
  }

  /**
   * After {@link verifyLayers}: on the device, the accepted prefix j of the drafts (the longest
   * whose ids in saved.control's drafted block equal the draws in its sampled block) into its
   * accepted slot, and `state` moved to just after position j, as if positions 0..j alone had
   * been stepped (Backend.resumeLayers; nothing is recomputed). `drafted`: where the drafted ids
   * are (default saved.control's drafted block; the device rounds pass its ids after the first).
   */
  resumeLayers(
    state: RecurrentState,
    saved: VerifyBuffers,
    drafted: Ptr = saved.control.at(saved.drafted),
  ): void {
    this.backend.resumeLayers(this.resumeLayersArgs(this.#layerTable(state), saved, drafted));
  }

  /**
   * Backend.resumeLayers' arguments after a pass over `saved.rows` positions with `layers`, the
   * drafted ids at `drafted` (default saved.control's drafted block).
   */
  resumeLayersArgs(
    layers: BigUint64Array,
    saved: VerifyBuffers,
    drafted: Ptr = saved.control.at(saved.drafted),
  ): Parameters<Backend["resumeLayers"]>[0] {
    return {
      ...this.#layerShape(layers),
      len: saved.rows,
      savedXz: saved.xz.ptr,
      savedSsm: saved.ssm.ptr,
      savedConv: saved.conv.ptr,
      sampled: saved.control.at(saved.sampled),
      drafted,
      accepted: saved.control.at(saved.accepted),
    };
  }

  /**
   * {@link resumeLayers} to a known position `pos` (tests and tools): writes draws and drafts
   * that agree up to `pos` into saved.control, then resumes.
   */
  resumeAt(state: RecurrentState, saved: VerifyBuffers, pos: number): void {
    const M = saved.rows;
    if (!(Number.isInteger(pos) && pos >= 0 && pos < M)) {
      throw new MambaByteError(`resumeAt: position ${pos} is not one of ${M} verified`);
    }
    const drafted = new Int32Array(2 * M - 1); // drafted (M - 1) then sampled (M)
    if (pos < M - 1) drafted[pos] = -1;
    this.backend.upload(saved.control.at(saved.drafted), drafted);
    this.resumeLayers(state, saved);
  }

  /** runHead with lm_head in calls of at most VERIFY_BLOCK rows (verification). */
  verifyHead(ws: Workspace, rows: number): void {
    this.#head(ws, rows, (a) => this.#linearRows(a));
  }

  /** Backend.linear in calls of at most VERIFY_BLOCK rows (x and y row-contiguous). */
  #linearRows(a: Parameters<Backend["linear"]>[0]): void {
    const ldx = a.ldx ?? a.inF, ldy = a.ldy ?? a.outF;
    for (let r0 = 0; r0 < a.n; r0 += VERIFY_BLOCK) {
      this.backend.linear({
        ...a,
        x: offsetPtr(a.x, r0 * ldx * 4),
        ldx,
        n: Math.min(VERIFY_BLOCK, a.n - r0),
        y: offsetPtr(a.y, r0 * ldy * 4),
        ldy,
      });
    }
  }

  /** Columns of x_proj's output: dt | B | C. */
  get #xDblCols(): number {
    return this.dims.dtRank + 2 * this.dims.dState;
  }

  /**
   * Layer i's residual add and norm: ws.hidden (+ ws.residual) -> ws.normed, and into `bf16` as
   * bf16 bits when given (then ws.normed is skipped when `bf16Only`); `twin`: a decoding step's
   * weights on the fp16 twins.
   */
  #norm(
    ws: Workspace,
    i: number,
    rows: number,
    bf16?: Tensor,
    bf16Only = false,
    twin?: F16DecodeLayer,
  ): void {
    this.backend.addNorm({
      ...this.#normOperands(ws, i, rows, ws.hidden.ptr, i > 0),
      // on the twins, the weight and bias times 2^-e_in (in_proj's input carries the scale)
      ...(twin ? { weight: twin.normW, bias: twin.normB } : {}),
      out: bf16Only ? null : ws.normed.ptr,
      outBf16: bf16?.ptr ?? null,
    });
  }

  /** Layer i's add + norm of x into ws.residual over `rows` rows, before its outputs. */
  #normOperands(ws: Workspace, i: number, rows: number, x: Ptr, accumulate: boolean) {
    const w = this.weights.layers[i];
    return {
      x,
      residual: ws.residual.ptr,
      accumulate,
      weight: w.normWeight.ptr,
      bias: w.normBias?.ptr ?? null,
      normKind: this.weights.normKind,
      eps: this.eps,
      n: rows,
      d: this.dims.dModel,
    };
  }

  /** Layer i's in_proj: ws.normed -> ws.xz (x | z). */
  #inProj(ws: Workspace, i: number, rows: number) {
    const w = this.weights.layers[i];
    return {
      x: ws.normed.ptr,
      w: w.inProj.ptr,
      wdtype: this.weights.wdtype,
      bias: w.inProjBias?.ptr ?? null,
      n: rows,
      inF: this.dims.dModel,
      outF: 2 * this.dims.dInner,
      y: ws.xz.ptr,
    };
  }

  /**
   * Layer i's conv over `len` positions of `batch` sequences: x (in_proj's x half, ld 2 d_inner)
   * -> ws.xConv, the window carried in `state`; optionally the pre-activation and a bf16 copy
   * (`outF32: false`: that copy alone), or with `outF16Exp` that copy as scaled fp16 rows.
   */
  #conv(
    ws: Workspace,
    i: number,
    x: Ptr,
    state: Ptr,
    batch: number,
    len: number,
    extra: {
      xBf16?: boolean;
      outPreact?: Ptr;
      outBf16?: Ptr;
      outF16Exp?: Ptr;
      outF32?: boolean;
    } = {},
  ): void {
    const w = this.weights.layers[i];
    const di = this.dims.dInner;
    this.backend.conv1d({
      x,
      xBf16: extra.xBf16,
      ldx: 2 * di,
      w: w.convWeight.ptr,
      bias: w.convBias?.ptr ?? null,
      state,
      batch,
      len,
      d: di,
      k: this.dims.dConv,
      out: extra.outF32 === false ? null : ws.xConv.ptr,
      ldo: di,
      outPreact: extra.outPreact ?? null,
      outBf16: extra.outBf16 ?? null,
      outF16Exp: extra.outF16Exp ?? null,
    });
  }

  /** Layer i's decoding conv step and x_proj in one call: ws.xz -> ws.xConv -> ws.xDbl. */
  #convXProj(ws: Workspace, i: number, state: Ptr, batch: number): void {
    const w = this.weights.layers[i];
    const di = this.dims.dInner;
    this.backend.conv1dStepLinear({
      x: ws.xz.ptr,
      ldx: 2 * di,
      convW: w.convWeight.ptr,
      convBias: w.convBias?.ptr ?? null,
      convState: state,
      n: batch,
      d: di,
      k: this.dims.dConv,
      xc: ws.xConv.ptr,
      ldo: di,
      w: w.xProj.ptr,
      wdtype: this.weights.wdtype,
      bias: null,
      outF: this.#xDblCols,
      y: ws.xDbl.ptr,
    });
  }

  /**
   * Layer i's decoding in_proj (no bias) on the norm's bf16 rows `xBf16`, conv step and x_proj in
   * one call: -> ws.xz's z half (the x half may be left unwritten), ws.xConv, ws.xDbl.
   */
  #inConvXProj(ws: Workspace, i: number, state: Ptr, batch: number, xBf16: Ptr): void {
    const w = this.weights.layers[i];
    const { dModel, dInner: di, dConv: k } = this.dims;
    this.backend.linearBf16Conv1dStepLinear({
      x: xBf16,
      w: w.inProj.ptr,
      wdtype: this.weights.wdtype,
      n: batch,
      inF: dModel,
      outF: 2 * di,
      y: ws.xz.ptr,
      convW: w.convWeight.ptr,
      convBias: w.convBias?.ptr ?? null,
      convState: state,
      d: di,
      k,
      xc: ws.xConv.ptr,
      ldo: di,
      w2: w.xProj.ptr,
      outF2: this.#xDblCols,
      y2: ws.xDbl.ptr,
    });
  }

  /** Layer i's x_proj: ws.xConv -> ws.xDbl (dt | B | C). */
  #xProjOperands(ws: Workspace, i: number, rows: number) {
    return {
      x: ws.xConv.ptr,
      w: this.weights.layers[i].xProj.ptr,
      wdtype: this.weights.wdtype,
      bias: null,
      n: rows,
      inF: this.dims.dInner,
      outF: this.#xDblCols,
      y: ws.xDbl.ptr,
    };
  }

  /** Layer i's dt_proj for the ops that run it inside the state update (x_dbl's first columns). */
  #dtProjOperands(ws: Workspace, i: number) {
    const w = this.weights.layers[i];
    return {
      xDbl: ws.xDbl.ptr,
      ldXDbl: this.#xDblCols,
      dtW: w.dtProj.ptr,
      wdtype: this.weights.wdtype,
      dtBias: w.dtProjBias.ptr,
      dtRank: this.dims.dtRank,
    };
  }

  /** The recurrence's operands of layer i, the same for the scan and the decoding step. */
  #scanOperands(ws: Workspace, state: RecurrentState, i: number) {
    const w = this.weights.layers[i];
    const { dInner: di, dtRank: r, dState: n } = this.dims;
    return {
      u: ws.xConv.ptr,
      ldu: di,
      A: w.A.ptr,
      B: ws.xDbl.at(r),
      ldb: this.#xDblCols,
      C: ws.xDbl.at(r + n),
      ldc: this.#xDblCols,
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
  }

  /** Layer i's out_proj: ws.y -> ws.hidden (the mixer's output). */
  #outProj(ws: Workspace, i: number, rows: number): void {
    this.backend.linear(this.#outProjOperands(ws, i, rows));
  }

  #outProjOperands(ws: Workspace, i: number, rows: number) {
    const w = this.weights.layers[i];
    return {
      x: ws.y.ptr,
      w: w.outProj.ptr,
      wdtype: this.weights.wdtype,
      bias: w.outProjBias?.ptr ?? null,
      n: rows,
      inF: this.dims.dInner,
      outF: this.dims.dModel,
      y: ws.hidden.ptr,
    };
  }

  /** norm_f(h + residual) then lm_head into ws.logits (the first vocabOut vocabulary rows). */
  runHead(ws: Workspace, rows: number): void {
    this.#head(ws, rows, (a) => this.backend.linear(a));
  }

  /** runHead's norm_f, then its lm_head through `linear`. */
  #head(ws: Workspace, rows: number, linear: (a: Parameters<Backend["linear"]>[0]) => void): void {
    const d = this.dims.dModel;
    this.backend.addNorm({
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
    linear({
      x: ws.normed.ptr,
      w: this.weights.lmHead.ptr,
      wdtype: this.weights.wdtype,
      bias: null,
      n: rows,
      inF: d,
      outF: this.vocabOut,
      y: ws.logits.ptr,
    });
  }

  /** Embeds `rows` ids (default ws.ids) into ws.hidden. */
  embed(ws: Workspace, rows: number, ids: Ptr = ws.ids.ptr): void {
    this.backend.embedding({
      ids,
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
   * it was passed in). A subword model (a drafter) reads token ids as an Int32Array.
   */
  async forwardChunks(
    bytes: Uint8Array | Int32Array,
    options: ForwardChunksOptions = {},
  ): Promise<RecurrentState> {
    const ws = this.#workspace();
    const taps = options.taps ?? [];
    const layerSet = this.#layerSet(options.layers);
    const state = options.state ?? this.newState(1);
    const L = bytes.length;
    const ids = new Int32Array(ws.rows);
    const wantTaps = taps.length > 0 &&
      (options.onTap !== undefined || options.onDeviceTap !== undefined);
    const tapsOnTwins = taps.every((t) => TAPS_ON_TWINS.includes(t));
    const pipe = wantTaps && options.onTap &&
        (options.overlapTaps ?? this.backend.kind === "cuda")
      ? this.downloadPipeline()
      : undefined;
    try {
      for (let start = 0; start < L; start += ws.rows) {
        const rows = Math.min(ws.rows, L - start);
        for (let t = 0; t < rows; t++) ids[t] = bytes[start + t];
        this.backend.upload(ws.ids.ptr, ids.subarray(0, rows));
        this.embed(ws, rows);
        const pending: TapChunk[] = [];
        const convPre = (i: number) => wantTaps && layerSet.has(i) && taps.includes("conv1d");
        const dtProjOut = (i: number) => wantTaps && layerSet.has(i) && taps.includes("dt_proj");
        const afterLayer = wantTaps
          ? (i: number) => {
            if (!layerSet.has(i)) return;
            for (const tap of taps) {
              if (options.onDeviceTap) {
                options.onDeviceTap(this.#deviceTap(ws, tap, i, start, rows));
              }
              if (!options.onTap) continue;
              const meta = { layer: i, tap, start, rows, cols: tapWidth(tap, this.dims) };
              const dst = options.tapTarget?.(meta) ?? new Float32Array(rows * meta.cols);
              if (dst.length !== rows * meta.cols) {
                throw new RangeError(
                  `tapTarget gave ${dst.length} floats for ${tap} (${rows} x ${meta.cols})`,
                );
              }
              const src = this.#tapSource(ws, tap).ptr;
              if (pipe) pipe.push(src, dst, (data) => pending.push({ ...meta, data }));
              else {
                this.backend.download(dst, src);
                pending.push({ ...meta, data: dst });
              }
            }
          }
          : undefined;
        // A one-position chunk is a decoding step (as mamba_simple's forward hands a single cached
        // position to step), unless a conv1d tap needs the pre-activation conv only the scan path
        // writes.
        this.#deltaTapInY = false; // forwardLayers sets it where it applies
        if (rows === 1 && !(wantTaps && taps.includes("conv1d"))) {
          this.stepLayers(ws, state, 1, afterLayer);
        } else {
          this.forwardLayers(
            ws,
            state,
            rows,
            convPre,
            afterLayer,
            dtProjOut,
            tapsOnTwins,
            taps.includes("in_proj"),
          );
        }
        pipe?.drain();
        for (const c of pending) await options.onTap!(c);
        if (!options.skipHead) {
          this.runHead(ws, rows);
          if (options.onDeviceLogits) await options.onDeviceLogits(start, rows, ws.logits);
          if (options.onLogits) {
            const out = new Float32Array(rows * this.vocabOut);
            this.backend.download(out, ws.logits.ptr);
            await options.onLogits(start, out);
          }
        }
        if (options.onChunkDone) await options.onChunkDone(start, rows);
        await options.onProgress?.(start + rows, L);
      }
    } catch (err) {
      pipe?.abandon();
      // A callback stopped the pass: a state made here is nobody else's to free.
      if (!options.state) state.free();
      throw err;
    }
    return state;
  }

  #layerSet(layers?: readonly number[]): Set<number> {
    return new Set(layerIndices(this.dims.nLayer, layers));
  }

  /** The workspace buffer that holds a tap's output after its layer (rows of tapWidth floats). */
  #tapSource(ws: Workspace, tap: TapName): Tensor {
    if (tap === "dt_proj" && this.#deltaTapInY) return ws.y;
    return {
      norm: ws.normed,
      in_proj: ws.xz,
      conv1d: ws.convPre,
      x_proj: ws.xDbl,
      dt_proj: ws.delta,
      out_proj: ws.hidden,
      mixer: ws.hidden,
    }[tap];
  }

  #deviceTap(ws: Workspace, tap: TapName, layer: number, start: number, rows: number): DeviceTap {
    const cols = tapWidth(tap, this.dims);
    return { layer, tap, start, rows, cols, ptr: this.#tapSource(ws, tap).ptr, ld: cols };
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
    const V = this.vocabOut;
    const logits = new Float32Array(L * V);
    const taps = new Map<TapName, Map<number, Float32Array>>();
    const layers = layerIndices(this.dims.nLayer, options.layers);
    for (const tap of options.taps ?? []) {
      const m = new Map<number, Float32Array>();
      for (const l of layers) m.set(l, new Float32Array(L * tapWidth(tap, this.dims)));
      taps.set(tap, m);
    }
    const state = await this.forwardChunks(bytes, {
      taps: options.taps,
      layers,
      // each chunk lands in its place in the result; nothing is left to do when it arrives
      tapTarget: (c) =>
        taps.get(c.tap)!.get(c.layer)!.subarray(c.start * c.cols, (c.start + c.rows) * c.cols),
      onTap: () => {},
      onLogits: (start, chunk) => logits.set(chunk, start * V),
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
    try {
      const state = await this.forwardChunks(bytes, {
        onDeviceLogits: collector.onDeviceLogits,
        onProgress,
      });
      state.free();
    } finally {
      collector.free();
    }
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
        be.logprobRank({
          logits: logits.ptr,
          n: m,
          v: this.vocabOut,
          targets,
          logprob: lp,
          rank: rk,
        });
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

  /**
   * Generates bytes after the prompt; one Uint8Array per sample. With `draft`, speculatively
   * (the same bytes, fewer passes of this model).
   */
  async generate(prompt: Uint8Array, options: ModelGenerateOptions = {}): Promise<Uint8Array[]> {
    const { draft, ...rest } = options;
    if (!draft) return await generateBytes(this, prompt, rest);
    const drafter = draft.model.drafter();
    try {
      const { bytes, stats } = await generateSpeculative(this, prompt, drafter, {
        ...rest,
        draftLength: draft.length,
        profilePhases: draft.profilePhases,
        deviceRounds: draft.deviceRounds,
      });
      draft.onStats?.(stats);
      return [bytes];
    } finally {
      drafter.free();
    }
  }

  /**
   * Registers these result arrays as download destinations of the module-output taps, and
   * unregisters those of an earlier call ({@link HostRegistry}): on CUDA each tapped chunk then
   * goes from the device straight into its place (page-locked in place; arrays under 1 MiB, or
   * that the driver refuses, keep the staged path). The model holds the registered arrays until
   * the next call or {@link close}. CPU: registering does nothing (its copies go straight into
   * the array already, or do so through the same path with `overlapTaps`).
   */
  pinHostArrays(arrays: Iterable<ArrayBufferView>): void {
    this.#registry().keepOnly([...arrays].map((a) => a.buffer));
  }

  /** Bytes of result arrays now registered by {@link pinHostArrays} (0 when none). */
  get registeredHostBytes(): number {
    return this.#hostRegistry?.bytes ?? 0;
  }

  /**
   * The decoding context the last generate call left (see decode_context.ts) when its key is
   * `key`, handed over to the caller; a kept context of another key is freed. Null when none fits.
   */
  takeDecodeContext(key: string): DecodeContext | null {
    const kept = this.#decodeKept;
    this.#decodeKept = null;
    if (kept?.key === key) return kept;
    kept?.free();
    return null;
  }

  /**
   * Keeps a finished call's decoding context for the next call (frees it instead on a closed
   * model, with MAMBABYTE_DECODE_KEEP=0, or on a backend without graphs, where keeping would only
   * hold memory); one context at a time, the latest.
   */
  keepDecodeContext(ctx: DecodeContext): void {
    if (
      this.#closed || ctx.model !== this || !this.backend.supportsGraphs || !keepDecodeContexts()
    ) {
      ctx.free();
      return;
    }
    if (this.#decodeKept !== ctx) this.#decodeKept?.free();
    this.#decodeKept = ctx;
  }

  /**
   * Frees the buffers and step graphs that the last generate call left for the next one (a batch
   * of 256 sequences holds ~3.5 GB of state at the 972M shape). Generate calls with the same batch
   * and sampling settings reuse them; this makes room for other work.
   */
  releaseDecodeBuffers(): void {
    this.#decodeKept?.free();
    this.#decodeKept = null;
  }

  /**
   * The model's downloads that overlap the layers after them (a TapPipeline): forwardChunks' onTap
   * chunks go through it, and an extraction's own results may too in a pass without onTap
   * (drained before the pass ends).
   */
  downloadPipeline(): OverlappedDownloads {
    this.#assertOpen();
    return this.#tapPipe ??= new TapPipeline(this.backend, 4, this.#registry());
  }

  #registry(): HostRegistry {
    return this.#hostRegistry ??= new HostRegistry(this.backend);
  }

  /**
   * Releases the weights and buffers, then the backend when the model owns it (as a model from
   * loadModel does); a backend the caller passed in stays open. Idempotent.
   */
  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    this.#chunkWs?.free();
    this.releaseDecodeBuffers();
    this.#tapPipe?.free();
    this.#hostRegistry?.clear();
    if (this.#ownsF16) this.#f16?.free();
    if (this.#ownsWeights) freeWeights(this.weights);
    if (this.ownsBackend) this.backend.close();
  }
}
