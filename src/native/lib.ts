/**
 * The one place that calls `Deno.dlopen`: the symbol table of csrc/include/mambabyte.h, the library
 * lookup, and the translation of a non-zero status into a thrown {@link NativeError}.
 *
 * @module
 */

/** A product's weight and shape, in every product's signature after its input rows. */
const PRODUCT_SHAPE = [
  "pointer", // w
  "i32", // wdtype
  "pointer", // bias
  "i64", // n
  "i64", // in_f
  "i64", // out_f
] as const;

/** mb_add_norm's arguments before its outputs, which mb_add_norm_f16 shares. */
const ADD_NORM = [
  "pointer", // ctx
  "pointer", // x
  "pointer", // residual
  "i32", // accumulate
  "pointer", // weight
  "pointer", // bias
  "i32", // norm_kind
  "f32", // eps
  "i64", // n
  "i64", // d
] as const;

/**
 * mb_linear's signature, which mb_linear_bf16 shares (its x holds bf16 bits) and
 * mb_linear_conv1d_step begins with.
 */
const LINEAR = {
  parameters: [
    "pointer", // ctx
    "pointer", // x
    "i64", // ldx
    ...PRODUCT_SHAPE,
    "pointer", // y
    "i64", // ldy
  ],
  result: "i32",
} as const;

/** The first arguments of the products that take fp32 or bf16 rows (exactly one of x, x_bf16). */
const PRODUCT_OF_X_OR_BF16 = [
  "pointer", // ctx
  "pointer", // x
  "pointer", // x_bf16
  "i64", // ldx
  ...PRODUCT_SHAPE,
] as const;

/**
 * The symbol table: one entry per function of the C ABI (csrc/include/mambabyte.h), same order;
 * tests/abi_header_test.ts holds it to the header (names, argument kinds, result). Entries named
 * in {@link TEST_ONLY_SYMBOLS} are called by tests alone.
 */
/** The dimensions and kinds every call over all layers takes, in this order (mambabyte.h). */
const LAYER_DIMS = [
  "i64", // d_model
  "i64", // d_inner
  "i64", // d_state
  "i64", // dt_rank
  "i64", // d_conv
  "i32", // wdtype
  "i32", // norm_kind
  "f32", // eps
] as const;

/** The activation rows of a decoding step's calls (decode_layers, draft_greedy), in this order. */
const STEP_ROWS = [
  "pointer", // hidden
  "pointer", // residual
  "pointer", // normed
  "pointer", // xz
  "pointer", // xc
  "pointer", // x_dbl
  "pointer", // delta
  "pointer", // y
] as const;

export const SYMBOLS = {
  mb_last_error: { parameters: [], result: "pointer" },
  mb_abi_version: { parameters: [], result: "i32" },
  mb_has_cuda: { parameters: [], result: "i32" },
  mb_cuda_device_count: { parameters: ["buffer"], result: "i32" },
  mb_ctx_create: { parameters: ["i32", "i32", "i32", "buffer"], result: "i32" },
  mb_ctx_destroy: { parameters: ["pointer"], result: "i32" },
  mb_ctx_synchronize: { parameters: ["pointer"], result: "i32" },
  mb_ctx_set_flags: { parameters: ["pointer", "u32"], result: "i32" },
  mb_ctx_info: { parameters: ["pointer", "buffer", "usize"], result: "i32" },
  mb_alloc: { parameters: ["pointer", "usize", "buffer"], result: "i32" },
  mb_free: { parameters: ["pointer", "pointer"], result: "i32" },
  mb_memcpy_h2d: { parameters: ["pointer", "pointer", "buffer", "usize"], result: "i32" },
  mb_memcpy_d2h: { parameters: ["pointer", "buffer", "pointer", "usize"], result: "i32" },
  mb_memcpy_d2d: { parameters: ["pointer", "pointer", "pointer", "usize"], result: "i32" },
  mb_memset: { parameters: ["pointer", "pointer", "i32", "usize"], result: "i32" },
  mb_host_alloc: { parameters: ["pointer", "usize", "buffer"], result: "i32" },
  mb_host_free: { parameters: ["pointer", "pointer"], result: "i32" },
  mb_host_register: { parameters: ["pointer", "buffer", "usize"], result: "i32" },
  mb_host_unregister: { parameters: ["pointer", "buffer"], result: "i32" },
  mb_download_async: {
    parameters: ["pointer", "pointer", "pointer", "usize", "buffer"],
    result: "i32",
  },
  mb_download_async_direct: {
    parameters: ["pointer", "pointer", "pointer", "usize", "buffer"],
    result: "i32",
  },
  mb_download_wait: { parameters: ["pointer", "u64"], result: "i32" },
  mb_host_copy: { parameters: ["pointer", "buffer", "pointer", "usize"], result: "i32" },
  mb_host_prefault: { parameters: ["pointer", "buffer", "buffer", "usize"], result: "i32" },
  mb_host_prefault_wait: { parameters: ["pointer"], result: "i32" },
  mb_embedding: {
    parameters: ["pointer", "pointer", "i64", "pointer", "i32", "i64", "i64", "pointer"],
    result: "i32",
  },
  mb_add_norm: {
    parameters: [
      ...ADD_NORM,
      "pointer", // out
      "pointer", // out_bf16
    ],
    result: "i32",
  },
  mb_linear: LINEAR,
  mb_linear_bf16: LINEAR, // x as bf16 bits
  mb_linear_to_bf16: {
    parameters: [
      ...PRODUCT_OF_X_OR_BF16,
      "pointer", // y (bf16 bits)
      "i64", // ldy
    ],
    result: "i32",
  },
  mb_linear_add_norm: {
    parameters: [
      ...PRODUCT_OF_X_OR_BF16,
      "pointer", // h_scratch
      "pointer", // residual
      "i32", // accumulate
      "pointer", // norm_weight
      "pointer", // norm_bias
      "i32", // norm_kind
      "f32", // eps
      "pointer", // out
      "pointer", // out_bf16
    ],
    result: "i32",
  },
  mb_to_f16_scaled: {
    parameters: [
      "pointer", // ctx
      "pointer", // x
      "i64", // ldx
      "i64", // rows
      "i64", // cols
      "pointer", // out (fp16 bits)
      "pointer", // out_exp (int32)
    ],
    result: "i32",
  },
  mb_linear_f16: {
    parameters: [
      "pointer", // ctx
      "pointer", // x
      "pointer", // x_f16
      "pointer", // x_exp
      "i64", // ldx
      "pointer", // w_f16
      "pointer", // w_exp
      "pointer", // bias
      "i64", // n
      "i64", // in_f
      "i64", // out_f
      "pointer", // y
      "i64", // ldy
      "i32", // accumulate
      "pointer", // y_f16
      "pointer", // y_exp (int32)
    ],
    result: "i32",
  },
  mb_add_norm_f16: {
    parameters: [
      ...ADD_NORM,
      "pointer", // out_f16
      "pointer", // out_exp (int32)
      "i32", // exp_given
    ],
    result: "i32",
  },
  mb_causal_conv1d: {
    parameters: [
      "pointer", // ctx
      "pointer", // x
      "pointer", // x_bf16
      "i64", // ldx
      "pointer", // w
      "pointer", // bias
      "pointer", // conv_state
      "i64", // batch
      "i64", // len
      "i64", // d
      "i64", // k
      "pointer", // out
      "i64", // ldo
      "pointer", // out_preact
      "pointer", // out16
      "pointer", // out16_f16_exp (int32)
    ],
    result: "i32",
  },
  mb_linear_conv1d_step: {
    parameters: [
      ...LINEAR.parameters, // mb_linear's, then the conv step's
      "pointer", // conv_w
      "pointer", // conv_bias
      "pointer", // conv_state
      "i64", // d_conv
      "i64", // k
      "pointer", // xc
      "i64", // ldo
    ],
    result: "i32",
  },
  mb_conv1d_step_linear: {
    parameters: [
      "pointer", // ctx
      "pointer", // x
      "i64", // ldx
      "pointer", // conv_w
      "pointer", // conv_bias
      "pointer", // conv_state
      "i64", // n
      "i64", // d
      "i64", // k
      "pointer", // xc
      "i64", // ldo
      "pointer", // w
      "i32", // wdtype
      "pointer", // bias
      "i64", // out_f
      "pointer", // y
      "i64", // ldy
    ],
    result: "i32",
  },
  mb_linear_bf16_conv1d_step_linear: {
    parameters: [
      "pointer", // ctx
      "pointer", // x
      "i64", // ldx
      "pointer", // w
      "i32", // wdtype
      "i64", // n
      "i64", // in_f
      "i64", // out_f
      "pointer", // y
      "i64", // ldy
      "pointer", // conv_w
      "pointer", // conv_bias
      "pointer", // conv_state
      "i64", // d
      "i64", // k
      "pointer", // xc
      "i64", // ldo
      "pointer", // w2
      "i64", // out_f2
      "pointer", // y2
      "i64", // ldy2
    ],
    result: "i32",
  },
  mb_selective_scan: {
    parameters: [
      "pointer", // ctx
      "pointer", // u
      "pointer", // u_bf16
      "i64", // ldu
      "pointer", // delta
      "pointer", // delta_bf16
      "i64", // ld_delta
      "pointer", // delta_bias
      "pointer", // A
      "pointer", // Bm
      "i64", // ldb
      "pointer", // Cm
      "i64", // ldc
      "pointer", // Dskip
      "pointer", // z
      "pointer", // z_bf16
      "i64", // ldz
      "pointer", // state
      "pointer", // states_all
      "i64", // batch
      "i64", // len
      "i64", // d
      "i64", // n
      "i32", // delta_softplus
      "pointer", // y
      "i64", // ldy
      "pointer", // y_bf16
      "pointer", // y_f16_exp
      "pointer", // u_f16_exp
      "pointer", // delta_f16_exp
    ],
    result: "i32",
  },
  mb_selective_state_update_dt: {
    parameters: [
      "pointer", // ctx
      "pointer", // u
      "i64", // ldu
      "pointer", // x_dbl
      "i64", // ld_xdbl
      "pointer", // dt_w
      "i32", // wdtype
      "pointer", // dt_bias
      "i64", // dt_rank
      "pointer", // A
      "pointer", // Bm
      "i64", // ldb
      "pointer", // Cm
      "i64", // ldc
      "pointer", // Dskip
      "pointer", // z
      "i64", // ldz
      "pointer", // state
      "i64", // batch
      "i64", // d
      "i64", // n
      "i32", // delta_softplus
      "pointer", // delta_out
      "pointer", // y
      "i64", // ldy
      "pointer", // y_bf16
    ],
    result: "i32",
  },
  mb_selective_scan_dt: {
    parameters: [
      "pointer", // ctx
      "pointer", // u
      "i64", // ldu
      "pointer", // x_dbl
      "i64", // ld_xdbl
      "pointer", // dt_w
      "i32", // wdtype
      "pointer", // dt_bias
      "i64", // dt_rank
      "pointer", // A
      "pointer", // Bm
      "i64", // ldb
      "pointer", // Cm
      "i64", // ldc
      "pointer", // Dskip
      "pointer", // z
      "i64", // ldz
      "pointer", // state
      "pointer", // states_all
      "i64", // batch
      "i64", // len
      "i64", // d
      "i64", // n
      "i32", // delta_softplus
      "pointer", // delta_out
      "pointer", // y
      "i64", // ldy
    ],
    result: "i32",
  },
  mb_decode_layers: {
    parameters: [
      "pointer", // ctx
      "buffer", // layers (host)
      "i64", // n_layer
      "i64", // batch
      ...LAYER_DIMS, // d_model .. eps
      ...STEP_ROWS, // hidden .. y
    ],
    result: "i32",
  },
  mb_verify_layers: {
    parameters: [
      "pointer", // ctx
      "buffer", // layers (host)
      "i64", // n_layer
      "i64", // len
      ...LAYER_DIMS, // d_model .. eps
      "pointer", // hidden
      "pointer", // residual
      "pointer", // normed
      "pointer", // xc
      "pointer", // x_dbl
      "pointer", // delta
      "pointer", // y
      "pointer", // saved_xz
      "pointer", // saved_ssm
      "pointer", // saved_conv
    ],
    result: "i32",
  },
  mb_resume_layers: {
    parameters: [
      "pointer", // ctx
      "buffer", // layers (host)
      "i64", // n_layer
      "i64", // len
      "i64", // d_inner
      "i64", // d_state
      "i64", // d_conv
      "pointer", // saved_xz
      "pointer", // saved_ssm
      "pointer", // saved_conv
      "pointer", // sampled
      "pointer", // drafted
      "pointer", // accepted
    ],
    result: "i32",
  },
  mb_spec_commit: {
    parameters: [
      "pointer", // ctx
      "i64", // len
      "pointer", // sampled
      "pointer", // accepted
      "pointer", // out
      "i64", // cap
      "pointer", // progress
      "pointer", // ids
      "pointer", // counters
      "pointer", // dst
      "pointer", // src
      "i64", // src_stride
      "i64", // bytes
    ],
    result: "i32",
  },
  mb_draft_greedy: {
    parameters: [
      "pointer", // ctx
      "buffer", // layers (host)
      "i64", // n_layer
      ...LAYER_DIMS, // d_model .. eps
      "pointer", // embedding
      "i64", // vocab_rows
      "pointer", // norm_f_w
      "pointer", // norm_f_b
      "pointer", // lm_head
      "i64", // vocab_out
      ...STEP_ROWS, // hidden .. y
      "pointer", // read_id
      "pointer", // logits
      "pointer", // counter
      "pointer", // state
      "i64", // state_bytes
      "pointer", // stack
      "pointer", // ids
      "i64", // k
    ],
    result: "i32",
  },
  mb_log_softmax: {
    parameters: ["pointer", "pointer", "i64", "i64", "pointer"],
    result: "i32",
  },
  mb_logprob_rank: {
    parameters: ["pointer", "pointer", "i64", "i64", "pointer", "pointer", "pointer"],
    result: "i32",
  },
  mb_discrete_a: {
    parameters: [
      "pointer", // ctx
      "pointer", // delta
      "i64", // ld_delta
      "pointer", // A
      "i64", // len
      "i64", // d
      "i64", // n
      "i32", // reduction
      "i32", // dim
      "i64", // pos0
      "pointer", // acc
      "pointer", // out
      "pointer", // out_idx
    ],
    result: "i32",
  },
  mb_discrete_a_input_sim: {
    parameters: [
      "pointer", // ctx
      "pointer", // delta
      "i64", // ld_delta
      "pointer", // A
      "pointer", // x
      "i64", // ldx
      "i64", // len
      "i64", // d
      "i64", // n
      "f32", // eps
      "pointer", // out
    ],
    result: "i32",
  },
  mb_sample: {
    parameters: [
      "pointer", // ctx
      "pointer", // logits
      "i64", // batch
      "i64", // v
      "f32", // temperature
      "i32", // top_k
      "f32", // top_p
      "u64", // seed
      "pointer", // counter
      "pointer", // out_ids
    ],
    result: "i32",
  },
  mb_sample_rows: {
    parameters: [
      "pointer", // ctx
      "pointer", // logits
      "i64", // n
      "i64", // v
      "f32", // temperature
      "i32", // top_k
      "f32", // top_p
      "u64", // seed
      "pointer", // counters
      "pointer", // out_ids
    ],
    result: "i32",
  },
  mb_read_probe: { parameters: ["pointer", "pointer", "usize", "pointer"], result: "i32" },
  mb_graph_begin: { parameters: ["pointer"], result: "i32" },
  mb_graph_end: { parameters: ["pointer", "buffer"], result: "i32" },
  mb_graph_launch: { parameters: ["pointer", "i32"], result: "i32" },
  mb_graph_destroy: { parameters: ["pointer", "i32"], result: "i32" },
  // test-only (the header's last section): the uniform behind mb_sample's draws
  mb_uniform: { parameters: ["u64", "u64"], result: "f32" },
} as const;

/** Symbols that only tests call (the header's "test-only" section); the toolkit never does. */
export const TEST_ONLY_SYMBOLS: readonly (keyof typeof SYMBOLS)[] = ["mb_uniform"];

/** The loaded library's symbols, typed from {@link SYMBOLS}. */
export type NativeSymbols = Deno.DynamicLibrary<typeof SYMBOLS>["symbols"];

/** The ABI version these bindings were written for (MB_ABI_VERSION). */
export const ABI_VERSION = 18;

/** Status codes of the C ABI (MB_OK, MB_ERR_*). */
export const Status = {
  OK: 0,
  INVALID: 1,
  OOM: 2,
  UNSUPPORTED: 3,
  DEVICE: 4,
  INTERNAL: 5,
} as const;

/** Backend kinds of mb_ctx_create (MB_BACKEND_*). */
export const BackendCode = { CPU: 0, CUDA: 1 } as const;

/** Storage types of the large weight matrices (MB_DTYPE_*). */
export const DTypeCode = { F32: 0, BF16: 1, F16: 2, F32_F16IO: 3 } as const;

/** Norm kinds of mb_add_norm (MB_NORM_*). */
export const NormCode = { LAYER: 0, RMS: 1 } as const;

/** Reductions of mb_discrete_a (MB_REDUCE_*). */
export const ReduceCode = {
  NONE: 0,
  MEAN: 1,
  MIN: 2,
  MAX: 3,
  NORM: 4,
  FRO: 5,
  NUC: 6,
} as const;

/** The pointers of one layer in mb_decode_layers' table, by index (MB_DL_*). */
export const DecodeLayerPtr = {
  NORM_W: 0,
  NORM_B: 1,
  IN_W: 2,
  IN_B: 3,
  CONV_W: 4,
  CONV_B: 5,
  CONV_STATE: 6,
  X_W: 7,
  DT_W: 8,
  DT_B: 9,
  A: 10,
  D: 11,
  SSM_STATE: 12,
  OUT_W: 13,
  OUT_B: 14,
  PTRS: 15,
} as const;

/** Context flags of mb_ctx_set_flags (MB_FLAG_*). */
export const Flag = {
  /** CUDA: fp32 GEMMs may use TF32 tensor cores. */
  ALLOW_TF32: 1,
  /** The fused decoding ops run as their two plain ops (A/B runs; MAMBABYTE_CUDA_FUSED=0). */
  UNFUSED_STEPS: 2,
} as const;

/** The command that builds the native library, quoted in every "not found" message. */
export const BUILD_COMMAND = "deno task build";

/**
 * A failure reported by the native library: names the op and carries the C status. Out of memory
 * and a device failure come from the machine, not from a bug: {@link NativeError.userMessage}
 * says so for them, and the command-line layer reports them as one line with exit code 1.
 */
export class NativeError extends Error {
  /** The op that failed, e.g. "linear". */
  readonly op: string;
  /** The C status (see {@link Status}). */
  readonly status: number;
  /** Creates the error for `op` with the library's message. */
  constructor(op: string, status: number, message: string) {
    super(`${op}: ${message}`);
    this.name = "NativeError";
    this.op = op;
    this.status = status;
  }

  /** True for a failure of the machine (out of memory, a device or driver error), not a bug. */
  get machineFailure(): boolean {
    return this.status === Status.OOM || this.status === Status.DEVICE;
  }

  /** The line a user reads: what happened and what to try, then the library's message. */
  get userMessage(): string {
    switch (this.status) {
      case Status.OOM:
        return `out of memory (${this.message}): free some memory, or use a smaller model, ` +
          `bf16 weights or fewer samples`;
      case Status.DEVICE:
        return `the device failed (${this.message}): check the GPU and its driver ` +
          `(nvidia-smi), or run on the CPU`;
      default:
        return this.message;
    }
  }
}

/** The native library could not be found or loaded. */
export class NativeLibraryError extends Error {
  /** Creates the error with a message that says how to build the library. */
  constructor(message: string) {
    super(message);
    this.name = "NativeLibraryError";
  }
}

function libraryFileName(): string {
  switch (Deno.build.os) {
    case "darwin":
      return "libmambabyte.dylib";
    case "windows":
      return "mambabyte.dll";
    default:
      return "libmambabyte.so";
  }
}

/** Where the library is looked for, in order: $MAMBABYTE_LIB, the repo's build/, ./build/. */
export function libraryCandidates(): string[] {
  const out: string[] = [];
  const fromEnv = Deno.env.get("MAMBABYTE_LIB");
  if (fromEnv) out.push(fromEnv);
  const name = libraryFileName();
  const here = new URL(import.meta.url);
  if (here.protocol === "file:") {
    out.push(decodeURIComponent(new URL(`../../build/${name}`, here).pathname));
  }
  out.push(`${Deno.cwd()}/build/${name}`);
  return [...new Set(out)];
}

function exists(path: string): boolean {
  try {
    return Deno.statSync(path).isFile;
  } catch {
    return false;
  }
}

/** The first of {@link libraryCandidates} that exists (the file `native()` opens), if any. */
export function findLibrary(): string | undefined {
  return libraryCandidates().find(exists);
}

let loaded: Deno.DynamicLibrary<typeof SYMBOLS> | undefined;

/** Opens the native library once and returns its symbols; throws {@link NativeLibraryError}. */
export function native(): NativeSymbols {
  if (loaded) return loaded.symbols;
  const path = findLibrary();
  if (!path) {
    throw new NativeLibraryError(
      `native library not found (looked at ${libraryCandidates().join(", ")}); build it with ` +
        `\`${BUILD_COMMAND}\` in the project folder, or set MAMBABYTE_LIB to its path`,
    );
  }
  let lib: Deno.DynamicLibrary<typeof SYMBOLS>;
  try {
    lib = Deno.dlopen(path, SYMBOLS);
  } catch (e) {
    throw new NativeLibraryError(
      `cannot load ${path}: ${(e as Error).message}; rebuild it with \`${BUILD_COMMAND}\``,
    );
  }
  const version = lib.symbols.mb_abi_version();
  if (version !== ABI_VERSION) {
    lib.close();
    throw new NativeLibraryError(
      `${path} has ABI version ${version}, expected ${ABI_VERSION}; rebuild it with ` +
        `\`${BUILD_COMMAND}\``,
    );
  }
  loaded = lib;
  return lib.symbols;
}

/** The library's message for the last failure on this thread. */
export function lastError(): string {
  const p = native().mb_last_error();
  return p ? new Deno.UnsafePointerView(p).getCString() : "";
}

/** Throws a {@link NativeError} naming `op` when `status` is not OK. */
export function check(status: number, op: string): void {
  if (status !== Status.OK) throw new NativeError(op, status, lastError() || `status ${status}`);
}
