/**
 * Activation buffers for `rows` positions (a forward chunk, or a decoding batch) and the recurrent
 * state (conv and SSM) of every layer. Allocated once and reused, so a long input runs in bounded
 * memory and a decoding step allocates nothing (a requirement for CUDA graph capture).
 *
 * @module
 */

import { type Backend, envValue, type Ptr } from "../backend/backend.ts";
import { Tensor } from "../backend/tensor.ts";
import type { ModelDims } from "../config/dims.ts";

/**
 * MAMBABYTE_STATE_COPY=layers: one-sequence states are copied a layer's window and SSM state at a
 * time, as before they were one allocation (A/B runs).
 */
function layerCopies(): boolean {
  return (layerCopiesFlag ??= envValue("MAMBABYTE_STATE_COPY") === "layers");
}
let layerCopiesFlag: boolean | undefined;

/** Per-position activation buffers. */
export class Workspace {
  /** Rows the buffers hold. */
  readonly rows: number;
  /** Byte ids (int32). */
  readonly ids: Tensor;
  /** Block output h, (rows, d_model). */
  readonly hidden: Tensor;
  /** Residual stream in fp32, (rows, d_model). */
  readonly residual: Tensor;
  /** Normalised mixer input, (rows, d_model). */
  readonly normed: Tensor;
  /** in_proj output x|z, (rows, 2*d_inner). */
  readonly xz: Tensor;
  /** silu(conv1d(x)), (rows, d_inner). */
  readonly xConv: Tensor;
  /** conv1d before SiLU (filled only when tapped), (rows, d_inner). */
  readonly convPre: Tensor;
  /** x_proj output dt|B|C, (rows, dt_rank + 2*d_state). */
  readonly xDbl: Tensor;
  /** dt_proj output before softplus, (rows, d_inner). */
  readonly delta: Tensor;
  /** Gated scan output, (rows, d_inner). */
  readonly y: Tensor;
  /** Logits, (rows, logitsWidth): 256 bytes, or a subword model's whole vocabulary. */
  readonly logits: Tensor;
  /**
   * The products' inputs as bfloat16 (normed, xConv, y), which the producers write for the
   * tensor cores when the workspace has them (a CUDA model with bf16 weights); else null.
   */
  readonly bf16: { normed: Tensor; xConv: Tensor; y: Tensor } | null;
  readonly #all: Tensor[];

  /**
   * Allocates buffers for `rows` positions (logits of `logitsWidth` columns, default 256), and the
   * bf16 activations when `bf16Activations`.
   */
  constructor(
    backend: Backend,
    dims: ModelDims,
    rows: number,
    logitsWidth = 256,
    bf16Activations = false,
  ) {
    this.rows = rows;
    const f = (cols: number) => Tensor.empty(backend, "f32", [rows, cols]);
    this.ids = Tensor.zeros(backend, "i32", [rows]);
    this.hidden = f(dims.dModel);
    this.residual = f(dims.dModel);
    this.normed = f(dims.dModel);
    this.xz = f(2 * dims.dInner);
    this.xConv = f(dims.dInner);
    this.convPre = f(dims.dInner);
    this.xDbl = f(dims.dtRank + 2 * dims.dState);
    this.delta = f(dims.dInner);
    this.y = f(dims.dInner);
    this.logits = f(logitsWidth);
    const b = (cols: number) => Tensor.empty(backend, "bf16", [rows, cols]);
    this.bf16 = bf16Activations
      ? { normed: b(dims.dModel), xConv: b(dims.dInner), y: b(dims.dInner) }
      : null;
    this.#all = [
      ...(this.bf16 ? [this.bf16.normed, this.bf16.xConv, this.bf16.y] : []),
      this.ids,
      this.hidden,
      this.residual,
      this.normed,
      this.xz,
      this.xConv,
      this.convPre,
      this.xDbl,
      this.delta,
      this.y,
      this.logits,
    ];
  }

  /** Frees every buffer. */
  free(): void {
    for (const t of this.#all) t.free();
  }
}

/** Bytes a {@link Workspace} of `rows` positions allocates (the buffers its constructor makes). */
export function workspaceBytes(
  dims: ModelDims,
  rows: number,
  logitsWidth = 256,
  bf16Activations = false,
): number {
  const d = dims.dModel, di = dims.dInner;
  const f32 = 3 * d + 2 * di + 4 * di + dims.dtRank + 2 * dims.dState + logitsWidth;
  const bf16 = bf16Activations ? d + 2 * di : 0;
  return rows * (4 + 4 * f32 + 2 * bf16); // + the i32 ids
}

/**
 * The recurrent state of `batch` sequences: per layer a conv window and an SSM state, all in one
 * allocation (every layer's window, then every layer's SSM state), so that a whole state of one
 * sequence is copied in one call: the drafters of speculative decoding keep the state after each
 * drafted byte, one copy node a byte in their graphs instead of two a layer.
 */
export class RecurrentState {
  /** Sequences in the batch. */
  readonly batch: number;
  /** Per layer: the last d_conv-1 conv inputs, (batch, d_inner, d_conv-1). */
  readonly conv: Tensor[];
  /** Per layer: the SSM state, (batch, d_inner, d_state). */
  readonly ssm: Tensor[];
  /** The one allocation the per-layer tensors view. */
  readonly #all: Tensor;

  /** Allocates a zero state (the state before any input). */
  constructor(backend: Backend, dims: ModelDims, batch: number) {
    this.batch = batch;
    const convShape = [batch, dims.dInner, dims.dConv - 1];
    const ssmShape = [batch, dims.dInner, dims.dState];
    const convLen = batch * dims.dInner * (dims.dConv - 1),
      ssmLen = batch * dims.dInner * dims.dState;
    this.#all = Tensor.zeros(backend, "f32", [RecurrentState.bytes(dims, batch) / 4]);
    const ssm0 = dims.nLayer * convLen;
    this.conv = [];
    this.ssm = [];
    for (let i = 0; i < dims.nLayer; i++) {
      this.conv.push(Tensor.view(backend, "f32", convShape, this.#all.at(i * convLen)));
      this.ssm.push(Tensor.view(backend, "f32", ssmShape, this.#all.at(ssm0 + i * ssmLen)));
    }
  }

  /** Bytes of the state of `batch` sequences of a model of `dims` (one allocation). */
  static bytes(dims: ModelDims, batch: number): number {
    return 4 * dims.nLayer * batch * dims.dInner * (dims.dConv - 1 + dims.dState);
  }

  /** Where the state's one allocation starts. */
  get ptr(): Ptr {
    return this.#all.ptr;
  }

  /**
   * Keeps the pointer table Backend.decodeLayers takes for this state with `owner`'s weights
   * (each layer's weights and this state's buffers).
   */
  setDecodeTable(owner: object, table: BigUint64Array): void {
    this.#decode = { owner, table };
  }

  /** The table {@link setDecodeTable} kept for `owner`, or null. */
  decodeTable(owner: object): BigUint64Array | null {
    return this.#decode?.owner === owner ? this.#decode.table : null;
  }

  #decode: { owner: object; table: BigUint64Array } | null = null;

  /** Copies sequence `from` of `src` into every sequence of this state (prefill fan-out). */
  broadcastFrom(src: RecurrentState, from = 0): void {
    if (
      this.batch === 1 && src.batch === 1 && this.#all.bytes === src.#all.bytes && !layerCopies()
    ) {
      this.#all.backend.copy(this.#all.ptr, src.#all.ptr, this.#all.bytes); // the whole state
      return;
    }
    // Per tensor: the sequence into the first slot, then the filled slots doubled into the next
    // ones (1 + ceil(log2 batch) copies a tensor, where a copy a sequence made a batch of 256
    // queue 24,576 of them at the 972M shape)
    for (let i = 0; i < this.conv.length; i++) {
      for (const [dst, s] of [[this.conv[i], src.conv[i]], [this.ssm[i], src.ssm[i]]] as const) {
        const per = s.bytes / src.batch;
        dst.backend.copy(dst.ptr, s.at((from * per) / 4), per);
        for (let have = 1; have < this.batch; have *= 2) {
          const n = Math.min(have, this.batch - have);
          dst.backend.copy(dst.at((have * per) / 4), dst.ptr, n * per);
        }
      }
    }
  }

  /** Zeroes the state (the state before any input), one memset. */
  clear(): void {
    this.#all.backend.memset(this.#all.ptr, 0, this.#all.bytes);
  }

  /** Frees the state. */
  free(): void {
    this.#all.free();
    this.#decode = null;
  }
}

/**
 * What a verification pass over `rows` positions keeps so the state can be moved to just after
 * any of them (speculative decoding; MambaByteLM.verifyLayers and resumeLayers, mb_verify_layers'
 * layout): every layer's in_proj rows (x | z: the conv's inputs), its SSM state after every
 * position and its conv window before the pass; and the pass's small int32 control block.
 */
export class VerifyBuffers {
  /** Positions the buffers hold (the pass's len). */
  readonly rows: number;
  /** in_proj's output x | z, (n_layer, rows, 2*d_inner). */
  readonly xz: Tensor;
  /** The SSM state after every position, (n_layer, rows, d_inner, d_state). */
  readonly ssm: Tensor;
  /** The conv window before the pass, (n_layer, d_inner, d_conv-1). */
  readonly conv: Tensor;
  /**
   * int32: the ids the pass reads (rows: the last byte, then the drafts), the drafted ids
   * (rows - 1, -1 where nothing was drafted), the draws at each position (rows), and the accepted
   * count (1); offsets {@link VerifyBuffers.ids} .. {@link VerifyBuffers.accepted}.
   */
  readonly control: Tensor;

  /** Allocates the buffers for `rows` positions. */
  constructor(backend: Backend, dims: ModelDims, rows: number) {
    this.rows = rows;
    const L = dims.nLayer, di = dims.dInner;
    this.xz = Tensor.empty(backend, "f32", [L, rows, 2 * di]);
    this.ssm = Tensor.empty(backend, "f32", [L, rows, di, dims.dState]);
    this.conv = Tensor.zeros(backend, "f32", [L, di, Math.max(dims.dConv - 1, 1)]);
    this.control = Tensor.zeros(backend, "i32", [3 * rows]);
  }

  /** Offset (int32 elements) of the ids in {@link control}. */
  get ids(): number {
    return 0;
  }
  /** Offset of the drafted ids. */
  get drafted(): number {
    return this.rows;
  }
  /** Offset of the draws (the sampled id after each position). */
  get sampled(): number {
    return 2 * this.rows - 1;
  }
  /** Offset of the accepted count. */
  get accepted(): number {
    return 3 * this.rows - 1;
  }

  /** Frees the buffers. */
  free(): void {
    for (const t of [this.xz, this.ssm, this.conv, this.control]) t.free();
  }
}
