/**
 * A backend instance (CPU or CUDA) over the native library: explicit memory and one method per op
 * of the C ABI, with named arguments that mirror the C signatures (sizes in elements).
 *
 * @module
 */

import {
  BackendCode,
  check,
  DecodeLayerPtr,
  DTypeCode,
  Flag,
  native,
  NativeError,
  NormCode,
  ReduceCode,
  Status,
} from "../native/lib.ts";

/** A pointer into a backend's memory (host memory for CPU, device memory for CUDA). */
export type Ptr = Deno.PointerValue;
/** The backend kinds. */
export type DeviceKind = "cpu" | "cuda";
/** Dtypes of the large weight matrices. */
export type WeightDType = "f32" | "bf16";
/**
 * A product's weight type: a model's, or "f16" (IEEE binary16 bits: the decoding twins of fp32
 * in_proj and out_proj; {@link Backend.linear} on CUDA up to 8 rows).
 */
export type ProductDType = WeightDType | "f16";
/**
 * A layer table's weight type ({@link LayerShape}): a model's, or "f32-f16io" (fp32 matrices but
 * in_proj and out_proj as "f16" twins: decodeLayers and verifyLayers).
 */
export type LayerDType = WeightDType | "f32-f16io";
/** Norm kinds understood by {@link Backend.addNorm}. */
export type NormKindCode = "layernorm" | "rmsnorm";

/**
 * The recurrence's operands that {@link Backend.selectiveScan}, {@link Backend.stateUpdateDt} and
 * {@link Backend.scanDt} share (rows r = b * len + t at base + r * ld).
 */
export interface ScanOperands {
  /** The input u (the conv's output), (rows, d). */
  u: Ptr;
  /** u's leading dimension. */
  ldu: number;
  /** A = -exp(A_log), (d, n). */
  A: Ptr;
  /** B, (rows, n). */
  B: Ptr;
  /** B's leading dimension. */
  ldb: number;
  /** C, (rows, n). */
  C: Ptr;
  /** C's leading dimension. */
  ldc: number;
  /** The skip D, (d), or null. */
  D: Ptr;
  /** The gate z, (rows, d), or null. */
  z: Ptr;
  /** z's leading dimension. */
  ldz: number;
  /** The state (batch, d, n): the initial one on entry, the final one on return. */
  state: Ptr;
  /** Channels. */
  d: number;
  /** States per channel. */
  n: number;
  /** Whether delta goes through softplus. */
  deltaSoftplus: boolean;
  /** The output y, (rows, d). */
  y: Ptr;
  /** y's leading dimension. */
  ldy: number;
}

/** dt_proj's operands, for the ops that run it inside the state update. */
export interface DtProjOperands {
  /** x_proj's output; its first dtRank columns are dt_proj's input. */
  xDbl: Ptr;
  /** xDbl's leading dimension. */
  ldXDbl: number;
  /** dt_proj's weight, (d, dtRank). */
  dtW: Ptr;
  /** The weight's type. */
  wdtype: WeightDType;
  /** dt_proj's bias, (d), or null. */
  dtBias: Ptr;
  /** dt_proj's input width. */
  dtRank: number;
}

/** The operands of {@link Backend.addNorm} and {@link Backend.addNormF16} before their outputs. */
export interface NormOperands {
  /** The rows added to the residual (may be the residual itself when not accumulating). */
  x: Ptr;
  /** The residual stream, updated in place. */
  residual: Ptr;
  /** residual = residual + x (true) or x (false). */
  accumulate: boolean;
  /** The norm's weight, (d). */
  weight: Ptr;
  /** Its bias, (d), or null. */
  bias: Ptr;
  /** LayerNorm or RMSNorm. */
  normKind: NormKindCode;
  /** The norm's epsilon. */
  eps: number;
  /** Rows. */
  n: number;
  /** Row width. */
  d: number;
}

/** The operands of {@link Backend.linear} and {@link Backend.linearBf16}. */
export interface LinearArgs {
  /** The input rows: fp32 for linear, bfloat16 bits for linearBf16. */
  x: Ptr;
  /** x's leading dimension (default inF). */
  ldx?: number;
  /** The weight, (outF, inF) row-major. */
  w: Ptr;
  /** The weight's type ("f16" for linear only: the decoding twins). */
  wdtype: ProductDType;
  /** (outF) or null. */
  bias: Ptr;
  /** Rows. */
  n: number;
  /** Input features. */
  inF: number;
  /** Output features. */
  outF: number;
  /** The output rows, fp32. */
  y: Ptr;
  /** y's leading dimension (default outF). */
  ldy?: number;
}

const BACKEND_CODE: Record<DeviceKind, number> = { cpu: BackendCode.CPU, cuda: BackendCode.CUDA };
const WDTYPE_CODE: Record<ProductDType | LayerDType, number> = {
  f32: DTypeCode.F32,
  bf16: DTypeCode.BF16,
  f16: DTypeCode.F16,
  "f32-f16io": DTypeCode.F32_F16IO,
};

/** A product's weight and shape arguments (lib.ts's PRODUCT_SHAPE), after its input rows. */
function productShape(a: Omit<LinearArgs, "x" | "ldx" | "y" | "ldy">) {
  return [a.w, WDTYPE_CODE[a.wdtype], a.bias, I(a.n), I(a.inF), I(a.outF)] as const;
}
const NORM_CODE: Record<NormKindCode, number> = {
  layernorm: NormCode.LAYER,
  rmsnorm: NormCode.RMS,
};

/** Reductions of {@link Backend.discreteA}: "none" writes the whole (len, d, n) tensor. */
export type DiscreteAReduction = "none" | "mean" | "min" | "max" | "norm" | "fro" | "nuc";
const REDUCE_CODE: Record<DiscreteAReduction, number> = {
  none: ReduceCode.NONE,
  mean: ReduceCode.MEAN,
  min: ReduceCode.MIN,
  max: ReduceCode.MAX,
  norm: ReduceCode.NORM,
  fro: ReduceCode.FRO,
  nuc: ReduceCode.NUC,
};

/** Context flag: fp32 GEMMs may use TF32 tensor cores (CUDA). */
export const FLAG_ALLOW_TF32: number = Flag.ALLOW_TF32;
/** Context flag: the fused decoding ops run as their two plain ops (set from MAMBABYTE_CUDA_FUSED). */
export const FLAG_UNFUSED_STEPS: number = Flag.UNFUSED_STEPS;

/** The value of an environment variable, or undefined when unset or not readable. */
export function envValue(name: string): string | undefined {
  try {
    return Deno.env.get(name);
  } catch {
    return undefined;
  }
}

/** Offsets a pointer by a number of bytes (null stays null). */
export function offsetPtr(p: Ptr, bytes: number): Ptr {
  if (p === null || bytes === 0) return p;
  return Deno.UnsafePointer.offset(p as Deno.PointerObject, bytes);
}

/**
 * The context flags the environment asks for on a new backend of `kind`:
 * {@link FLAG_UNFUSED_STEPS} for CUDA when MAMBABYTE_CUDA_FUSED=0, else none.
 */
export function envFlags(kind: DeviceKind): number {
  return kind === "cuda" && envValue("MAMBABYTE_CUDA_FUSED") === "0" ? FLAG_UNFUSED_STEPS : 0;
}

/** True when the library was built with CUDA support. */
export function hasCuda(): boolean {
  return native().mb_has_cuda() === 1;
}

/** Number of CUDA devices the library can use (0 without CUDA support or GPU). */
export function cudaDeviceCount(): number {
  const out = new Int32Array(1);
  check(native().mb_cuda_device_count(out), "cuda_device_count");
  return out[0];
}

/** The sampling uniform of the native library (identical on every backend); test-only. */
export function uniform(seed: bigint, index: bigint): number {
  return native().mb_uniform(BigInt.asUintN(64, seed), BigInt.asUintN(64, index));
}

/** Options for {@link Backend.create}. */
export interface BackendOptions {
  /** CUDA device index (default 0). */
  device?: number;
  /** CPU threads (default 0 = all cores). */
  threads?: number;
}

/**
 * One backend instance: owns a native context. Memory is allocated and freed explicitly; close()
 * releases the context (and with it nothing else: free your buffers first or let close end the
 * process's use of them).
 */
export class Backend {
  /** "cpu" or "cuda". */
  readonly kind: DeviceKind;
  /** The CUDA device index (0 for the CPU). */
  readonly device: number;
  #ctx: Deno.PointerObject | null;
  #lib = native();
  #flags = 0;

  private constructor(kind: DeviceKind, ctx: Deno.PointerObject, device: number) {
    this.kind = kind;
    this.device = device;
    this.#ctx = ctx;
  }

  /**
   * Creates a backend of the given kind; throws a NativeError when it is unavailable.
   *
   * The fused decoding ops (in_proj + conv step, dt_proj + state update) are used unless the
   * context has {@link FLAG_UNFUSED_STEPS}, set here for CUDA when MAMBABYTE_CUDA_FUSED=0 (A/B
   * runs): the CPU's fused ops give the unfused bits, and the CUDA ones were held equal to the
   * CPU on an H200 (cuda_vs_cpu, the model tests) and decode faster there.
   */
  static create(kind: DeviceKind, options: BackendOptions = {}): Backend {
    const lib = native();
    const out = new BigUint64Array(1);
    check(
      lib.mb_ctx_create(BACKEND_CODE[kind], options.device ?? 0, options.threads ?? 0, out),
      "ctx_create",
    );
    const ctx = Deno.UnsafePointer.create(out[0]);
    if (!ctx) throw new NativeError("ctx_create", Status.INTERNAL, "null context");
    const backend = new Backend(kind, ctx, kind === "cuda" ? options.device ?? 0 : 0);
    const flags = envFlags(kind);
    if (flags !== 0) backend.setFlags(flags);
    return backend;
  }

  get #c(): Deno.PointerObject {
    if (!this.#ctx) throw new Error("backend is closed");
    return this.#ctx;
  }

  /** Describes the context (backend, threads or device name, BLAS, ...). */
  info(): Record<string, unknown> {
    const buf = new Uint8Array(1024);
    check(this.#lib.mb_ctx_info(this.#c, buf, BigInt(buf.length)), "ctx_info");
    const end = buf.indexOf(0);
    return JSON.parse(new TextDecoder().decode(buf.subarray(0, end < 0 ? buf.length : end)));
  }

  /** The context flags (MB_FLAG_* bits), as last set. */
  get flags(): number {
    return this.#flags;
  }

  /** Replaces the context flags (e.g. `backend.flags | FLAG_ALLOW_TF32`). */
  setFlags(flags: number): void {
    check(this.#lib.mb_ctx_set_flags(this.#c, flags >>> 0), "ctx_set_flags");
    this.#flags = flags >>> 0;
  }

  /** Waits for all queued work. */
  sync(): void {
    check(this.#lib.mb_ctx_synchronize(this.#c), "ctx_synchronize");
  }

  /** Releases the context. Idempotent. */
  close(): void {
    if (!this.#ctx) return;
    const ctx = this.#ctx;
    this.#ctx = null;
    check(this.#lib.mb_ctx_destroy(ctx), "ctx_destroy");
  }

  // ---- memory ------------------------------------------------------------------------------

  /** Allocates `bytes` of backend memory (null for 0 bytes). */
  alloc(bytes: number): Ptr {
    const out = new BigUint64Array(1);
    check(this.#lib.mb_alloc(this.#c, BigInt(bytes), out), "alloc");
    return Deno.UnsafePointer.create(out[0]);
  }

  /** Frees memory from {@link alloc}. */
  free(p: Ptr): void {
    if (p !== null) check(this.#lib.mb_free(this.#c, p), "free");
  }

  /** Copies a host array into backend memory at dst. */
  upload(dst: Ptr, src: ArrayBufferView): void {
    if (src.byteLength === 0) return;
    check(
      this.#lib.mb_memcpy_h2d(this.#c, dst, viewBytes(src), BigInt(src.byteLength)),
      "memcpy_h2d",
    );
  }

  /** Copies backend memory at src into a host array (synchronous). */
  download(dst: ArrayBufferView, src: Ptr): void {
    if (dst.byteLength === 0) return;
    check(
      this.#lib.mb_memcpy_d2h(this.#c, viewBytes(dst), src, BigInt(dst.byteLength)),
      "memcpy_d2h",
    );
  }

  /**
   * Allocates `bytes` of host memory for {@link downloadAsync} (page-locked on CUDA; null for 0
   * bytes). Read it through `Deno.UnsafePointerView`; free it with {@link hostFree}.
   */
  hostAlloc(bytes: number): Ptr {
    const out = new BigUint64Array(1);
    check(this.#lib.mb_host_alloc(this.#c, BigInt(bytes), out), "host_alloc");
    return Deno.UnsafePointer.create(out[0]);
  }

  /** Frees memory from {@link hostAlloc} (after waiting for the downloads in flight). */
  hostFree(p: Ptr): void {
    if (p !== null) check(this.#lib.mb_host_free(this.#c, p), "host_free");
  }

  /**
   * Registers `view`'s memory as a destination of {@link downloadAsync} (mb_host_register): on
   * CUDA it is page-locked in place, so downloads land in it without a host-side copy; on the CPU
   * nothing happens. It must not overlap another registered range or {@link hostAlloc} memory,
   * and must be unregistered ({@link hostUnregister}) before the array can be let go.
   */
  hostRegister(view: ArrayBufferView): void {
    if (view.byteLength > 0) {
      check(
        this.#lib.mb_host_register(this.#c, viewBytes(view), BigInt(view.byteLength)),
        "host_register",
      );
    }
  }

  /** Undoes {@link hostRegister} for the same view (after the downloads in flight end). */
  hostUnregister(view: ArrayBufferView): void {
    if (view.byteLength > 0) {
      check(this.#lib.mb_host_unregister(this.#c, viewBytes(view)), "host_unregister");
    }
  }

  /**
   * Starts copying `bytes` of backend memory at src into host memory at dst (from
   * {@link hostAlloc}, or inside a {@link hostRegister}ed array) and returns a ticket for
   * {@link downloadWait}. The bytes are src's as the ops issued before this call leave it; ops
   * issued after it may overwrite src at once, and on CUDA the transfer overlaps them (a staging
   * copy, then a second stream). dst must not be read before `downloadWait(ticket)`. On the CPU
   * the copy is done on return.
   */
  downloadAsync(dst: Ptr, src: Ptr, bytes: number): bigint {
    const out = new BigUint64Array(1);
    check(this.#lib.mb_download_async(this.#c, dst, src, BigInt(bytes), out), "download_async");
    return out[0];
  }

  /**
   * {@link downloadAsync} without the staging copy: on CUDA the copy stream reads src itself once
   * the ops issued before this call are done, so nothing runs between those ops and the next
   * ones. In exchange nothing issued after this call may write src before
   * `downloadWait(ticket)` returns (a decoding loop samples into two buffers in turn for it). On
   * the CPU the copy is done on return.
   */
  downloadAsyncDirect(dst: Ptr, src: Ptr, bytes: number): bigint {
    const out = new BigUint64Array(1);
    check(
      this.#lib.mb_download_async_direct(this.#c, dst, src, BigInt(bytes), out),
      "download_async_direct",
    );
    return out[0];
  }

  /** Returns once download `ticket` (and every earlier one) is in host memory. */
  downloadWait(ticket: bigint): void {
    check(this.#lib.mb_download_wait(this.#c, ticket), "download_wait");
  }

  /**
   * Fills dst from dst.byteLength bytes of host memory at src (e.g. a {@link hostAlloc} buffer
   * after {@link downloadWait}), with several threads when it is large: the first fill of a fresh
   * array is page faults, and several threads take them at once (mb_host_copy).
   */
  hostCopy(dst: ArrayBufferView, src: Ptr): void {
    if (dst.byteLength > 0) {
      check(
        this.#lib.mb_host_copy(this.#c, viewBytes(dst), src, BigInt(dst.byteLength)),
        "host_copy",
      );
    }
  }

  /**
   * Starts mapping the memory of `views` (fresh arrays that downloads will fill) on background
   * threads (mb_host_prefault), so that their first fill finds the pages there; the contents are
   * unchanged. The views must stay alive until {@link hostPrefaultWait}; a second call waits for
   * the first.
   */
  hostPrefault(views: readonly ArrayBufferView[]): void {
    const some = views.filter((v) => v.byteLength > 0);
    if (!some.length) return;
    const ptrs = new BigUint64Array(some.length);
    const sizes = new BigUint64Array(some.length);
    some.forEach((v, i) => {
      ptrs[i] = BigInt(Deno.UnsafePointer.value(Deno.UnsafePointer.of(v)));
      sizes[i] = BigInt(v.byteLength);
    });
    check(
      this.#lib.mb_host_prefault(this.#c, ptrs, sizes, BigInt(some.length)),
      "host_prefault",
    );
  }

  /** Returns once the mapping {@link hostPrefault} started has ended. */
  hostPrefaultWait(): void {
    check(this.#lib.mb_host_prefault_wait(this.#c), "host_prefault_wait");
  }

  /** Copies bytes within backend memory. */
  copy(dst: Ptr, src: Ptr, bytes: number): void {
    if (bytes > 0) check(this.#lib.mb_memcpy_d2d(this.#c, dst, src, BigInt(bytes)), "memcpy_d2d");
  }

  /** Sets bytes of backend memory to a byte value. */
  memset(dst: Ptr, value: number, bytes: number): void {
    if (bytes > 0) check(this.#lib.mb_memset(this.#c, dst, value, BigInt(bytes)), "memset");
  }

  // ---- ops ---------------------------------------------------------------------------------

  /** out[i, :] = table[ids[i], :] as fp32. */
  embedding(a: {
    ids: Ptr;
    n: number;
    table: Ptr;
    wdtype: WeightDType;
    vocab: number;
    d: number;
    out: Ptr;
  }): void {
    check(
      this.#lib.mb_embedding(
        this.#c,
        a.ids,
        I(a.n),
        a.table,
        WDTYPE_CODE[a.wdtype],
        I(a.vocab),
        I(a.d),
        a.out,
      ),
      "embedding",
    );
  }

  /**
   * residual (+)= x; out = norm(residual) * weight + bias. `outBf16` (n, d), when given, receives
   * out as bfloat16 bits (for {@link Backend.linearBf16}); `out` may then be null.
   */
  addNorm(a: NormOperands & { out: Ptr; outBf16?: Ptr }): void {
    check(this.#lib.mb_add_norm(...this.#normArgs(a), a.out, a.outBf16 ?? null), "add_norm");
  }

  /** mb_add_norm's and mb_add_norm_f16's arguments before their outputs. */
  #normArgs(a: NormOperands) {
    return [
      this.#c,
      a.x,
      a.residual,
      a.accumulate ? 1 : 0,
      a.weight,
      a.bias,
      NORM_CODE[a.normKind],
      a.eps,
      I(a.n),
      I(a.d),
    ] as const;
  }

  /** y = x W^T + bias, W (outF, inF). ldx defaults to inF, ldy to outF. */
  linear(a: LinearArgs): void {
    this.#product("mb_linear", a, "linear");
  }

  /**
   * {@link Backend.linear} with x as bfloat16 bits (a producer's `outBf16`): on CUDA with bf16
   * weights and n > 8, the tensor-core product without a conversion pass (the bits linear gives
   * for the fp32 rows they were rounded from).
   */
  linearBf16(a: LinearArgs): void {
    this.#product("mb_linear_bf16", a, "linear_bf16");
  }

  /**
   * {@link Backend.linear} with y stored as bfloat16 bits (mb_linear_to_bf16: the forward's
   * in_proj -> xz and dt_proj -> delta with bf16 activations): the fp32 result rounded to nearest
   * even; x is fp32, or bfloat16 bits with `xBf16`. On CUDA with bf16 weights, n > 8 and no bias
   * the GEMM writes bf16 itself (within bf16 rounding of linear's result, not its bits).
   */
  linearToBf16(a: LinearArgs & { xBf16?: boolean }): void {
    check(
      this.#lib.mb_linear_to_bf16(...this.#productOfXOrBf16(a), a.y, I(a.ldy ?? I(a.outF))),
      "linear_to_bf16",
    );
  }

  /** The arguments mb_linear_to_bf16 and mb_linear_add_norm begin with (x as fp32 or bf16). */
  #productOfXOrBf16(a: Omit<LinearArgs, "y" | "ldy"> & { xBf16?: boolean }) {
    return [
      this.#c,
      a.xBf16 ? null : a.x,
      a.xBf16 ? a.x : null,
      I(a.ldx ?? I(a.inF)),
      ...productShape(a),
    ] as const;
  }

  /**
   * A product and the add + norm of its output in one call (mb_linear_add_norm: out_proj and the
   * next layer's norm): h = x W^T + bias, then {@link Backend.addNorm} of h. x is fp32, or bfloat16
   * bits with `xBf16`; `hScratch` (n, outF) may be used for h and is left unspecified. On CUDA with
   * bf16 weights, 2 to 256 rows split the product over inF and sum its parts in the norm's kernel,
   * and more rows have the GEMM add it to the residual (bits of their own, the same in every call).
   */
  linearAddNorm(
    a: Omit<LinearArgs, "y" | "ldy"> & {
      /** x holds bfloat16 bits (as for linearBf16), not fp32. */
      xBf16?: boolean;
      hScratch: Ptr;
      residual: Ptr;
      accumulate: boolean;
      normWeight: Ptr;
      normBias: Ptr;
      normKind: NormKindCode;
      eps: number;
      out: Ptr;
      outBf16?: Ptr;
    },
  ): void {
    check(
      this.#lib.mb_linear_add_norm(
        ...this.#productOfXOrBf16(a),
        a.hScratch,
        a.residual,
        a.accumulate ? 1 : 0,
        a.normWeight,
        a.normBias,
        NORM_CODE[a.normKind],
        a.eps,
        a.out,
        a.outBf16 ?? null,
      ),
      "linear_add_norm",
    );
  }

  /**
   * Scaled fp16 rows (mb_to_f16_scaled, the operands of {@link Backend.linearF16}): out (rows,
   * cols, dense) = fp16(x * 2^e), rounded to nearest even, and `outExp` (one int32 in backend
   * memory) = e, the power of two that puts the largest finite magnitude in [2^14, 2^15) (0 when
   * every value is 0 or the largest is infinite). ldx defaults to cols.
   */
  toF16Scaled(a: {
    x: Ptr;
    ldx?: number;
    rows: number;
    cols: number;
    out: Ptr;
    outExp: Ptr;
  }): void {
    check(
      this.#lib.mb_to_f16_scaled(
        this.#c,
        a.x,
        I(a.ldx ?? a.cols),
        I(a.rows),
        I(a.cols),
        a.out,
        a.outExp,
      ),
      "to_f16_scaled",
    );
  }

  /**
   * A product of scaled fp16 operands (mb_linear_f16): y = 2^-(ex + ew) xh wh^T + bias (+ y with
   * `accumulate`), fp32 accumulation. x is given as fp32 rows (`x`, scaled and rounded first as
   * toF16Scaled does) or as scaled fp16 rows (`xF16` with its exponent `xExp`); exactly one. With
   * `x`, `xExp` may give the exponent (selectiveScan's `yF16Exp`): x is then scaled by 2^xExp, with
   * no pass for its largest magnitude (one above toF16Scaled's can overflow fp16). `wF16` (outF,
   * inF) dense with its exponent `wExp` (toF16Scaled's). ldx defaults to inF, ldy to outF.
   * `yF16` instead of `y` (no bias, no accumulate): the product as scaled fp16 rows (ld ldy), its
   * exponent ex + ew - 15 - ceil(log2(inF)) written to `yExp` (no value can overflow).
   */
  linearF16(a: {
    x?: Ptr;
    xF16?: Ptr;
    xExp?: Ptr;
    ldx?: number;
    wF16: Ptr;
    wExp: Ptr;
    bias?: Ptr;
    n: number;
    inF: number;
    outF: number;
    y: Ptr;
    ldy?: number;
    accumulate?: boolean;
    yF16?: Ptr;
    yExp?: Ptr;
  }): void {
    check(
      this.#lib.mb_linear_f16(
        this.#c,
        a.x ?? null,
        a.xF16 ?? null,
        a.xExp ?? null,
        I(a.ldx ?? a.inF),
        a.wF16,
        a.wExp,
        a.bias ?? null,
        I(a.n),
        I(a.inF),
        I(a.outF),
        a.y,
        I(a.ldy ?? a.outF),
        a.accumulate ? 1 : 0,
        a.yF16 ?? null,
        a.yExp ?? null,
      ),
      "linear_f16",
    );
  }

  /**
   * {@link Backend.addNorm} with its output as scaled fp16 rows (mb_add_norm_f16, in_proj's operand
   * for {@link Backend.linearF16}): the residual is updated as addNorm updates it, `outF16` (n, d)
   * = fp16(out * 2^e) and `outExp` = e, from the bound sqrt(d) max|weight| + max|bias|. x may equal
   * residual when accumulate is false. `expGiven`: `outExp` already holds e, from an earlier call
   * with this weight and bias, and is read, not found again.
   */
  addNormF16(a: NormOperands & { outF16: Ptr; outExp: Ptr; expGiven?: boolean }): void {
    check(
      this.#lib.mb_add_norm_f16(...this.#normArgs(a), a.outF16, a.outExp, a.expGiven ? 1 : 0),
      "add_norm_f16",
    );
  }

  /** mb_linear and mb_linear_bf16: one signature, x's type aside. */
  #product(fn: "mb_linear" | "mb_linear_bf16", a: LinearArgs, op: string): void {
    check(
      this.#lib[fn](
        this.#c,
        a.x,
        I(a.ldx ?? I(a.inF)),
        ...productShape(a),
        a.y,
        I(a.ldy ?? I(a.outF)),
      ),
      op,
    );
  }

  /**
   * Causal depthwise conv1d with state; out = silu(conv), outPreact = conv (optional), outBf16 =
   * out as bfloat16 bits, (batch * len, d) (optional; `out` may then be null). With `xBf16`, x
   * holds bfloat16 bits (a bf16 xz from linearToBf16), read as the floats they stand for. With
   * `outF16Exp` (an int32 e in backend memory), `outBf16` receives instead the scaled fp16 rows
   * fp16(out * 2^e): {@link Backend.linearF16}'s `xF16` with `xExp` = outF16Exp, and
   * {@link Backend.selectiveScan}'s u with `uBf16` and `uF16Exp`.
   */
  conv1d(a: {
    x: Ptr;
    xBf16?: boolean;
    ldx: number;
    w: Ptr;
    bias: Ptr;
    state: Ptr;
    batch: number;
    len: number;
    d: number;
    k: number;
    out: Ptr;
    ldo: number;
    outPreact: Ptr;
    outBf16?: Ptr;
    outF16Exp?: Ptr;
  }): void {
    check(
      this.#lib.mb_causal_conv1d(
        this.#c,
        a.xBf16 ? null : a.x,
        a.xBf16 ? a.x : null,
        I(a.ldx),
        a.w,
        a.bias,
        a.state,
        I(a.batch),
        I(a.len),
        I(a.d),
        I(a.k),
        a.out,
        I(a.ldo),
        a.outPreact,
        a.outBf16 ?? null,
        a.outF16Exp ?? null,
      ),
      "causal_conv1d",
    );
  }

  /**
   * Decoding: {@link Backend.linear} (x -> y) then the conv1d step ({@link Backend.conv1d} with
   * len 1, `n` sequences) on y's first `dConv` columns into `xc` (one kernel on CUDA for n <= 8).
   */
  linearConv1dStep(
    a: LinearArgs & {
      convW: Ptr;
      convBias: Ptr;
      convState: Ptr;
      dConv: number;
      k: number;
      xc: Ptr;
      ldo?: number;
    },
  ): void {
    check(
      this.#lib.mb_linear_conv1d_step(
        this.#c,
        a.x,
        I(a.ldx ?? a.inF),
        a.w,
        WDTYPE_CODE[a.wdtype],
        a.bias,
        I(a.n),
        I(a.inF),
        I(a.outF),
        a.y,
        I(a.ldy ?? a.outF),
        a.convW,
        a.convBias,
        a.convState,
        I(a.dConv),
        I(a.k),
        a.xc,
        I(a.ldo ?? a.dConv),
      ),
      "linear_conv1d_step",
    );
  }

  /**
   * Decoding batches: the conv1d step of `n` rows (x's first `d` columns, ld `ldx`; the window in
   * `convState`, (n, d, k-1)) into `xc` (ld `ldo`, default d), then `y = xc W^T (+ bias)` with W
   * (outF, d) (x_proj), as {@link conv1d} and {@link linear} run them; one kernel on CUDA for
   * 8 < n <= 64.
   */
  conv1dStepLinear(a: {
    x: Ptr;
    ldx: number;
    convW: Ptr;
    convBias: Ptr;
    convState: Ptr;
    n: number;
    d: number;
    k: number;
    xc: Ptr;
    ldo?: number;
    w: Ptr;
    wdtype: WeightDType;
    bias: Ptr;
    outF: number;
    y: Ptr;
    ldy?: number;
  }): void {
    check(
      this.#lib.mb_conv1d_step_linear(
        this.#c,
        a.x,
        I(a.ldx),
        a.convW,
        a.convBias,
        a.convState,
        I(a.n),
        I(a.d),
        I(a.k),
        a.xc,
        I(a.ldo ?? a.d),
        a.w,
        WDTYPE_CODE[a.wdtype],
        a.bias,
        I(a.outF),
        a.y,
        I(a.ldy ?? a.outF),
      ),
      "conv1d_step_linear",
    );
  }

  /**
   * Decoding batches with bf16 activations: {@link linearBf16} (in_proj, no bias: x bfloat16
   * bits, W (outF, inF)) into `y` (ld `ldy`, default outF), then {@link conv1dStepLinear} of y's
   * first `d` columns with x_proj's `w2` (outF2, d) into `y2` (ld `ldy2`, default outF2). A
   * backend may run the three as one kernel and leave y's first d columns (the conv's input)
   * unwritten, so a caller that reads them (a tap) makes the two calls instead.
   */
  linearBf16Conv1dStepLinear(a: {
    x: Ptr;
    ldx?: number;
    w: Ptr;
    wdtype: WeightDType;
    n: number;
    inF: number;
    outF: number;
    y: Ptr;
    ldy?: number;
    convW: Ptr;
    convBias: Ptr;
    convState: Ptr;
    d: number;
    k: number;
    xc: Ptr;
    ldo?: number;
    w2: Ptr;
    outF2: number;
    y2: Ptr;
    ldy2?: number;
  }): void {
    check(
      this.#lib.mb_linear_bf16_conv1d_step_linear(
        this.#c,
        a.x,
        I(a.ldx ?? a.inF),
        a.w,
        WDTYPE_CODE[a.wdtype],
        I(a.n),
        I(a.inF),
        I(a.outF),
        a.y,
        I(a.ldy ?? a.outF),
        a.convW,
        a.convBias,
        a.convState,
        I(a.d),
        I(a.k),
        a.xc,
        I(a.ldo ?? a.d),
        a.w2,
        I(a.outF2),
        a.y2,
        I(a.ldy2 ?? a.outF2),
      ),
      "linear_bf16_conv1d_step_linear",
    );
  }

  /**
   * Selective scan with initial/final state and optional every-position states; `deltaBias` (d),
   * when given, is added to delta before the softplus (dt_proj's bias, mamba_ssm's delta_bias).
   * `yBf16`, when given, receives y as bfloat16 bits (row r at r * ldy); `y` may then be null.
   * With `uBf16` / `deltaBf16` / `zBf16`, u / delta / z hold bfloat16 bits (the forward's bf16
   * activations), read as the floats they stand for. `yF16Exp` (one int32 in backend memory), when
   * given (`y` then required), receives the exponent {@link Backend.toF16Scaled} would choose for
   * y's batch * len rows: out_proj's `xExp` for {@link Backend.linearF16} with the fp32 y.
   * `uF16Exp` (with `uBf16`): u holds scaled fp16 rows instead, fp16(u 2^e) with e the int32 there
   * ({@link Backend.conv1d}'s `outF16Exp` copy), read as 2^-e times their values; `deltaF16Exp`
   * (with `deltaBf16`) the same for delta ({@link Backend.linearF16}'s `yF16`).
   */
  selectiveScan(
    a: ScanOperands & {
      uBf16?: boolean;
      delta: Ptr;
      deltaBf16?: boolean;
      zBf16?: boolean;
      ldDelta: number;
      deltaBias?: Ptr;
      statesAll: Ptr;
      batch: number;
      len: number;
      yBf16?: Ptr;
      yF16Exp?: Ptr;
      uF16Exp?: Ptr;
      deltaF16Exp?: Ptr;
    },
  ): void {
    check(
      this.#lib.mb_selective_scan(
        this.#c,
        a.uBf16 ? null : a.u,
        a.uBf16 ? a.u : null,
        I(a.ldu),
        a.deltaBf16 ? null : a.delta,
        a.deltaBf16 ? a.delta : null,
        I(a.ldDelta),
        a.deltaBias ?? null,
        a.A,
        a.B,
        I(a.ldb),
        a.C,
        I(a.ldc),
        a.D,
        a.zBf16 ? null : a.z,
        a.zBf16 ? a.z : null,
        I(a.ldz),
        a.state,
        a.statesAll,
        I(a.batch),
        I(a.len),
        I(a.d),
        I(a.n),
        a.deltaSoftplus ? 1 : 0,
        a.y,
        I(a.ldy),
        a.yBf16 ?? null,
        a.yF16Exp ?? null,
        a.uF16Exp ?? null,
        a.deltaF16Exp ?? null,
      ),
      "selective_scan",
    );
  }

  /**
   * One SSM decoding step for `batch` rows (state required) with dt_proj fused in (one kernel on
   * CUDA): delta = xDbl[:, :dtRank] @ dtW^T + dtBias (what {@link Backend.linear} would write),
   * then {@link Backend.selectiveScan} over one position with it. `deltaOut` (batch, d), when
   * given, receives delta (required with {@link FLAG_UNFUSED_STEPS}); `yBf16`, when given, y as
   * bfloat16 bits too (row b at b * ldy), out_proj's input for {@link Backend.linearBf16}.
   */
  stateUpdateDt(
    a: ScanOperands & DtProjOperands & { batch: number; deltaOut: Ptr; yBf16?: Ptr },
  ): void {
    check(
      this.#lib.mb_selective_state_update_dt(
        this.#c,
        a.u,
        I(a.ldu),
        a.xDbl,
        I(a.ldXDbl),
        a.dtW,
        WDTYPE_CODE[a.wdtype],
        a.dtBias,
        I(a.dtRank),
        a.A,
        a.B,
        I(a.ldb),
        a.C,
        I(a.ldc),
        a.D,
        a.z,
        I(a.ldz),
        a.state,
        I(a.batch),
        I(a.d),
        I(a.n),
        a.deltaSoftplus ? 1 : 0,
        a.deltaOut,
        a.y,
        I(a.ldy),
        a.yBf16 ?? null,
      ),
      "selective_state_update_dt",
    );
  }

  /**
   * {@link Backend.stateUpdateDt} over `len` positions of each of `batch` sequences in one call,
   * position after position (rows b * len + t), each with the bits of a decoding step;
   * `statesAll` (batch, len, d, n), when given, receives the state after every position
   * (speculative verification resumes from any of them). `deltaOut` is (batch * len, d).
   */
  scanDt(
    a: ScanOperands & DtProjOperands & {
      statesAll: Ptr;
      batch: number;
      len: number;
      deltaOut: Ptr;
    },
  ): void {
    check(
      this.#lib.mb_selective_scan_dt(
        this.#c,
        a.u,
        I(a.ldu),
        a.xDbl,
        I(a.ldXDbl),
        a.dtW,
        WDTYPE_CODE[a.wdtype],
        a.dtBias,
        I(a.dtRank),
        a.A,
        a.B,
        I(a.ldb),
        a.C,
        I(a.ldc),
        a.D,
        a.z,
        I(a.ldz),
        a.state,
        a.statesAll,
        I(a.batch),
        I(a.len),
        I(a.d),
        I(a.n),
        a.deltaSoftplus ? 1 : 0,
        a.deltaOut,
        a.y,
        I(a.ldy),
      ),
      "selective_scan_dt",
    );
  }

  /**
   * Every mixer layer of one decoding step of `batch` sequences in one native call
   * (mb_decode_layers): per layer exactly add + norm, in_proj with the conv step, x_proj, dt_proj
   * with the state update and out_proj, as {@link addNorm}, {@link linearConv1dStep},
   * {@link linear} and {@link stateUpdateDt} run them (the same bits). `layers` holds each layer's
   * pointers (indexes `DecodeLayerPtr`); the buffers are (batch, width) rows, `normed` scratch.
   */
  decodeLayers(a: LayerShape & LayerBuffers & { batch: number; xz: Ptr }): void {
    checkTable("decodeLayers", a.layers, a.nLayer);
    check(
      this.#lib.mb_decode_layers(
        this.#c,
        a.layers,
        I(a.nLayer),
        I(a.batch),
        ...layerDims(a),
        ...stepRows(a),
      ),
      "decode_layers",
    );
  }

  /**
   * The verification pass of speculative decoding in one native call (mb_verify_layers): `len`
   * positions of one sequence through every layer of the table ({@link decodeLayers}' layout),
   * each with a batch-1 decoding step's bits. Per layer, savedXz receives in_proj's rows, savedSsm
   * the SSM state after each position and savedConv the conv window before the pass (each layer
   * at offset i * its size for this `len`); the table's states end after the last position.
   */
  verifyLayers(
    a: LayerShape & LayerBuffers & {
      len: number;
      savedXz: Ptr;
      savedSsm: Ptr;
      savedConv: Ptr;
    },
  ): void {
    checkTable("verifyLayers", a.layers, a.nLayer);
    check(
      this.#lib.mb_verify_layers(
        this.#c,
        a.layers,
        I(a.nLayer),
        I(a.len),
        ...layerDims(a),
        a.hidden,
        a.residual,
        a.normed,
        a.xc,
        a.xDbl,
        a.delta,
        a.y,
        a.savedXz,
        a.savedSsm,
        a.savedConv,
      ),
      "verify_layers",
    );
  }

  /**
   * After {@link verifyLayers} (mb_resume_layers): the accepted prefix j (the longest with
   * sampled[t] == drafted[t], t < len - 1; int32 device values) into `accepted`, and every
   * layer's state moved to just after position j, all on the device (a graph can hold it).
   */
  resumeLayers(
    a: Pick<LayerShape, "layers" | "nLayer" | "dInner" | "dState" | "dConv"> & {
      len: number;
      savedXz: Ptr;
      savedSsm: Ptr;
      savedConv: Ptr;
      sampled: Ptr;
      drafted: Ptr;
      accepted: Ptr;
    },
  ): void {
    checkTable("resumeLayers", a.layers, a.nLayer);
    check(
      this.#lib.mb_resume_layers(
        this.#c,
        a.layers,
        I(a.nLayer),
        I(a.len),
        I(a.dInner),
        I(a.dState),
        I(a.dConv),
        a.savedXz,
        a.savedSsm,
        a.savedConv,
        a.sampled,
        a.drafted,
        a.accepted,
      ),
      "resume_layers",
    );
  }

  /**
   * A byte drafter's k greedy drafts in one native call (mb_draft_greedy): ids[0] = argmax of
   * `logits`, the state copied to stack slot 0, then k times: the embedding of the last draft, one
   * decoding step ({@link decodeLayers}), the state copied to slot i, and (before the last) the
   * head and its argmax into ids[i]; slot i is stack + i * stateBytes. The same calls as the
   * drafter makes one by one, so the same drafts and states.
   */
  draftGreedy(
    a: LayerShape & LayerBuffers & {
      xz: Ptr;
      embedding: Ptr;
      vocabRows: number;
      normFWeight: Ptr;
      normFBias: Ptr | null;
      lmHead: Ptr;
      vocabOut: number;
      /** The byte (int32) to read first, whose logits give the first draft; null: `logits`'. */
      readId?: Ptr | null;
      logits: Ptr;
      counter: Ptr;
      state: Ptr;
      stateBytes: number;
      stack: Ptr;
      ids: Ptr;
      k: number;
    },
  ): void {
    checkTable("draftGreedy", a.layers, a.nLayer);
    check(
      this.#lib.mb_draft_greedy(
        this.#c,
        a.layers,
        I(a.nLayer),
        ...layerDims(a),
        a.embedding,
        I(a.vocabRows),
        a.normFWeight,
        a.normFBias,
        a.lmHead,
        I(a.vocabOut),
        ...stepRows(a),
        a.readId ?? null,
        a.logits,
        a.counter,
        a.state,
        I(a.stateBytes),
        a.stack,
        a.ids,
        I(a.k),
      ),
      "draft_greedy",
    );
  }

  /**
   * The end of a speculative decoding round on the device (mb_spec_commit), after
   * {@link resumeLayers}: with j the accepted count and e = progress[0], the draws 0..j into
   * out[e..e+j] (int32, within `cap`), progress (int64[3]: bytes, accepted drafts, rounds)
   * advanced, the next pass's first id into ids[0] and its draw counters (e+j+1+t) into
   * counters, and `bytes` bytes from src + j * srcStride to dst (a drafter's state).
   */
  specCommit(a: {
    len: number;
    sampled: Ptr;
    accepted: Ptr;
    out: Ptr;
    cap: number;
    progress: Ptr;
    ids: Ptr;
    counters: Ptr;
    dst: Ptr;
    src: Ptr;
    srcStride: number;
    bytes: number;
  }): void {
    check(
      this.#lib.mb_spec_commit(
        this.#c,
        I(a.len),
        a.sampled,
        a.accepted,
        a.out,
        I(a.cap),
        a.progress,
        a.ids,
        a.counters,
        a.dst,
        a.src,
        I(a.srcStride),
        I(a.bytes),
      ),
      "spec_commit",
    );
  }

  /** Row-wise log-softmax. */
  logSoftmax(a: { logits: Ptr; n: number; v: number; out: Ptr }): void {
    check(this.#lib.mb_log_softmax(this.#c, a.logits, I(a.n), I(a.v), a.out), "log_softmax");
  }

  /** Log-probability and rank of each row's target. */
  logprobRank(a: {
    logits: Ptr;
    n: number;
    v: number;
    targets: Ptr;
    logprob: Ptr;
    rank: Ptr;
  }): void {
    check(
      this.#lib.mb_logprob_rank(this.#c, a.logits, I(a.n), I(a.v), a.targets, a.logprob, a.rank),
      "logprob_rank",
    );
  }

  /**
   * discrete-A of a layer, E = exp(softplus(delta) * A) over `len` positions (delta (len, d) with
   * row stride `ldDelta`, A (d, n)), reduced as it is made (mb_discrete_a): "none" writes E
   * (len, d, n); "fro" / "nuc" one matrix norm per position (len); mean / min / max / norm over
   * `dim` 1 (len, n) or 2 (len, d), or across positions over `dim` 0 (d, n) or -1 (everything, 1
   * value), carried across calls: `pos0` is delta's first position in the sequence (0 starts a new
   * reduction) and mean / norm keep float64 sums in `acc` (d * n or 1 doubles). `outIdx` (int64,
   * out's shape, or null) receives torch's indices of min / max over dim 0, 1 or 2.
   */
  discreteA(a: {
    delta: Ptr;
    ldDelta: number;
    A: Ptr;
    len: number;
    d: number;
    n: number;
    reduction: DiscreteAReduction;
    dim: number;
    pos0: number;
    acc: Ptr;
    out: Ptr;
    outIdx: Ptr;
  }): void {
    check(
      this.#lib.mb_discrete_a(
        this.#c,
        a.delta,
        I(a.ldDelta),
        a.A,
        I(a.len),
        I(a.d),
        I(a.n),
        REDUCE_CODE[a.reduction],
        a.dim,
        I(a.pos0),
        a.acc,
        a.out,
        a.outIdx,
      ),
      "discrete_a",
    );
  }

  /**
   * Cosine similarity over d between each state column of discrete-A and the input x (row t at
   * x + t * ldx), torch's cosine_similarity(E, x[..., None], dim=-2, eps): out (len, n).
   */
  discreteAInputSim(a: {
    delta: Ptr;
    ldDelta: number;
    A: Ptr;
    x: Ptr;
    ldx: number;
    len: number;
    d: number;
    n: number;
    eps: number;
    out: Ptr;
  }): void {
    check(
      this.#lib.mb_discrete_a_input_sim(
        this.#c,
        a.delta,
        I(a.ldDelta),
        a.A,
        a.x,
        I(a.ldx),
        I(a.len),
        I(a.d),
        I(a.n),
        a.eps,
        a.out,
      ),
      "discrete_a_input_sim",
    );
  }

  /** Draws one id per row (mamba_ssm's sample()); counter is an int64 in backend memory. */
  sample(a: {
    logits: Ptr;
    batch: number;
    v: number;
    temperature: number;
    topK: number;
    topP: number;
    seed: bigint;
    counter: Ptr;
    out: Ptr;
  }): void {
    check(
      this.#lib.mb_sample(
        this.#c,
        a.logits,
        I(a.batch),
        I(a.v),
        a.temperature,
        a.topK,
        a.topP,
        BigInt.asUintN(64, a.seed),
        a.counter,
        a.out,
      ),
      "sample",
    );
  }

  /**
   * Draws one id per row of `n` rows of logits as {@link sample} does with batch 1, each row b
   * with its own counter (the int64 at counters + 8 b, then incremented): n such calls in one.
   */
  sampleRows(a: {
    logits: Ptr;
    n: number;
    v: number;
    temperature: number;
    topK: number;
    topP: number;
    seed: bigint;
    counters: Ptr;
    out: Ptr;
  }): void {
    check(
      this.#lib.mb_sample_rows(
        this.#c,
        a.logits,
        I(a.n),
        I(a.v),
        a.temperature,
        a.topK,
        a.topP,
        BigInt.asUintN(64, a.seed),
        a.counters,
        a.out,
      ),
      "sample_rows",
    );
  }

  /** Reads `bytes` at p once (bandwidth probe); writes a checksum float at sink. */
  readProbe(p: Ptr, bytes: number, sink: Ptr): void {
    check(this.#lib.mb_read_probe(this.#c, p, BigInt(bytes), sink), "read_probe");
  }

  // ---- graphs (CUDA) -------------------------------------------------------------------------

  /** True when this backend can capture and replay graphs. */
  get supportsGraphs(): boolean {
    return this.kind === "cuda";
  }

  /** Starts capturing the following ops into a graph. */
  graphBegin(): void {
    check(this.#lib.mb_graph_begin(this.#c), "graph_begin");
  }

  /** Ends the capture and returns the graph id. */
  graphEnd(): number {
    const out = new Int32Array(1);
    check(this.#lib.mb_graph_end(this.#c, out), "graph_end");
    return out[0];
  }

  /** Replays a captured graph. */
  graphLaunch(graph: number): void {
    check(this.#lib.mb_graph_launch(this.#c, graph), "graph_launch");
  }

  /** Releases a captured graph. */
  graphDestroy(graph: number): void {
    check(this.#lib.mb_graph_destroy(this.#c, graph), "graph_destroy");
  }
}

const I = BigInt;

function viewBytes(v: ArrayBufferView): Uint8Array<ArrayBuffer> {
  return new Uint8Array(v.buffer as ArrayBuffer, v.byteOffset, v.byteLength);
}

/**
 * What the calls over every layer (Backend.decodeLayers, verifyLayers, resumeLayers) share: the
 * table of each layer's pointers ({@link DecodeLayerPtr} layout), the model's dimensions and kinds.
 */
export interface LayerShape {
  /** nLayer * DecodeLayerPtr.PTRS pointers as uint64 values, layer after layer. */
  layers: BigUint64Array;
  /** Mixer layers. */
  nLayer: number;
  /** Model width. */
  dModel: number;
  /** Mixer width (expand * dModel). */
  dInner: number;
  /** SSM state size per channel. */
  dState: number;
  /** dt_proj's inner width. */
  dtRank: number;
  /** Conv window length. */
  dConv: number;
  /** Storage type of the large matrices ("f32-f16io": the table's in_proj and out_proj are fp16). */
  wdtype: LayerDType;
  /** LayerNorm or RMSNorm. */
  normKind: NormKindCode;
  /** The norms' epsilon. */
  eps: number;
}

/** The activation rows a decoding step and a verification pass share ((rows, width), in order). */
export interface LayerBuffers {
  /** Block output h. */
  hidden: Ptr;
  /** Residual stream. */
  residual: Ptr;
  /** Normalised mixer input (scratch). */
  normed: Ptr;
  /** silu(conv1d(x)). */
  xc: Ptr;
  /** x_proj output dt|B|C. */
  xDbl: Ptr;
  /** dt_proj output. */
  delta: Ptr;
  /** Gated scan output. */
  y: Ptr;
}

/**
 * The model dimensions and kinds of a call over every layer, in the C order they share: d_model,
 * d_inner, d_state, dt_rank, d_conv, wdtype, norm_kind, eps (lib.ts's LAYER_DIMS).
 */
function layerDims(
  a: LayerShape,
): [bigint, bigint, bigint, bigint, bigint, number, number, number] {
  return [
    I(a.dModel),
    I(a.dInner),
    I(a.dState),
    I(a.dtRank),
    I(a.dConv),
    WDTYPE_CODE[a.wdtype],
    NORM_CODE[a.normKind],
    a.eps,
  ];
}

/** The activation rows of a decoding step's calls (decode_layers, draft_greedy), in the C order. */
function stepRows(a: LayerBuffers & { xz: Ptr }): [Ptr, Ptr, Ptr, Ptr, Ptr, Ptr, Ptr, Ptr] {
  return [a.hidden, a.residual, a.normed, a.xz, a.xc, a.xDbl, a.delta, a.y];
}

/** A layer table ({@link DecodeLayerPtr} layout) of the right length for `nLayer` layers. */
function checkTable(op: string, layers: BigUint64Array, nLayer: number): void {
  const want = nLayer * DecodeLayerPtr.PTRS;
  if (!Number.isSafeInteger(nLayer) || nLayer < 0 || layers.length !== want) {
    throw new RangeError(
      `${op}: a table of ${layers.length} pointers for ${nLayer} layers (needs ${want})`,
    );
  }
}
