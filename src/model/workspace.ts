/**
 * Activation buffers for `rows` positions (a forward chunk, or a decoding batch) and the recurrent
 * state (conv and SSM) of every layer. Allocated once and reused, so a long input runs in bounded
 * memory and a decoding step allocates nothing (a requirement for CUDA graph capture).
 *
 * @module
 */

import type { Backend } from "../backend/backend.ts";
import { Tensor } from "../backend/tensor.ts";
import type { ModelDims } from "../config/dims.ts";

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

/** The recurrent state of `batch` sequences: per layer a conv window and an SSM state. */
export class RecurrentState {
  /** Sequences in the batch. */
  readonly batch: number;
  /** Per layer: the last d_conv-1 conv inputs, (batch, d_inner, d_conv-1). */
  readonly conv: Tensor[];
  /** Per layer: the SSM state, (batch, d_inner, d_state). */
  readonly ssm: Tensor[];

  /** Allocates a zero state (the state before any input). */
  constructor(backend: Backend, dims: ModelDims, batch: number) {
    this.batch = batch;
    this.conv = [];
    this.ssm = [];
    for (let i = 0; i < dims.nLayer; i++) {
      this.conv.push(Tensor.zeros(backend, "f32", [batch, dims.dInner, dims.dConv - 1]));
      this.ssm.push(Tensor.zeros(backend, "f32", [batch, dims.dInner, dims.dState]));
    }
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
    for (let i = 0; i < this.conv.length; i++) {
      for (const [dst, s] of [[this.conv[i], src.conv[i]], [this.ssm[i], src.ssm[i]]] as const) {
        const per = s.bytes / src.batch;
        for (let b = 0; b < this.batch; b++) {
          dst.backend.copy(dst.at((b * per) / 4), s.at((from * per) / 4), per);
        }
      }
    }
  }

  /** Frees the state. */
  free(): void {
    for (const t of [...this.conv, ...this.ssm]) t.free();
    this.#decode = null;
  }
}

/**
 * What a verification pass over up to `rows` positions keeps so the state can be moved to just
 * after any of them (speculative decoding; MambaByteLM.verifyLayers and resumeLayers): per layer
 * the in_proj rows (x | z: the conv's inputs) and the SSM state after every position, and one
 * scratch conv window the pass runs on (the state's own windows stay where the pass started).
 */
export class VerifyBuffers {
  /** Positions the buffers hold. */
  readonly rows: number;
  /** Per layer: in_proj's output x | z, (rows, 2*d_inner). */
  readonly xz: Tensor[];
  /** Per layer: the SSM state after every position, (rows, d_inner, d_state). */
  readonly ssm: Tensor[];
  /** The conv window the pass advances, (d_inner, d_conv-1). */
  readonly conv: Tensor;

  /** Allocates the buffers for `rows` positions. */
  constructor(backend: Backend, dims: ModelDims, rows: number) {
    this.rows = rows;
    this.xz = [];
    this.ssm = [];
    for (let i = 0; i < dims.nLayer; i++) {
      this.xz.push(Tensor.empty(backend, "f32", [rows, 2 * dims.dInner]));
      this.ssm.push(Tensor.empty(backend, "f32", [rows, dims.dInner, dims.dState]));
    }
    this.conv = Tensor.zeros(backend, "f32", [dims.dInner, dims.dConv - 1]);
  }

  /** Frees the buffers. */
  free(): void {
    for (const t of [...this.xz, ...this.ssm, this.conv]) t.free();
  }
}
