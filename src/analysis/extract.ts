/**
 * The three extractions of the original scripts, as library functions over a model (no files, no
 * flags): module outputs, discrete-A (reduced on the fly), and discrete-A's similarity with the
 * input; each optionally with per-byte log-probabilities and ranks from the same pass.
 *
 * @module
 */

import { MambaByteError } from "../errors.ts";
import type { HostTensor } from "../io/tensor.ts";
import { availableHostBytes, ensureMemory } from "../model/memory.ts";
import {
  type ForwardChunksOptions,
  layerIndices,
  type MambaByteLM,
  TAP_NAMES,
  type TapName,
  tapWidth,
} from "../model/model.ts";
import { DiscreteAExtraction, InputSimilarityExtraction, reducedShape } from "./discrete_a.ts";
import type { Reduction } from "./reductions.ts";
import { applyNonlinearity, type Nonlinearity } from "./nonlinearity.ts";

/** Options shared by every extraction. */
export interface ExtractCommon {
  /** Layers to extract (default all). */
  layers?: readonly number[];
  /** Also compute log p(next byte). */
  logProbs?: boolean;
  /** Also compute the rank of each next byte. */
  ranks?: boolean;
  /** Progress: positions done, total; a returned promise is awaited before the next chunk. */
  onProgress?: (done: number, total: number) => void;
  /** Refuse results larger than this many bytes (default: 80% of free memory). */
  maxResultBytes?: number;
}

/** Per-layer results plus the optional per-byte scores. */
export interface Extraction {
  /** result.get(layer) */
  perLayer: Map<number, HostTensor>;
  /** torch's int64 indices of a min / max reduction over a dimension, when asked for. */
  indices?: Map<number, HostTensor>;
  /** Per byte: log-probability of the byte that follows, (L - 1) (when asked for). */
  logProbs?: HostTensor;
  /** Per byte: the rank of the byte that follows among the 256 (when asked for). */
  ranks?: HostTensor;
}

/** Module ids accepted by the module-output extraction ("mixer.dt_proj" and "dt_proj" alike). */
export function parseModuleId(id: string): TapName {
  const name = id.startsWith("mixer.") ? id.slice("mixer.".length) : id;
  if (!(TAP_NAMES as readonly string[]).includes(name)) {
    throw new MambaByteError(`unknown module '${id}': choose from ${TAP_NAMES.join(", ")}`, 2);
  }
  return name as TapName;
}

/** Throws before any computation when the results would not fit in memory. */
export function ensureFits(bytes: number, what: string, limit?: number): void {
  ensureMemory(
    bytes,
    what,
    "choose fewer layers (--layer_idxs), a reduction (--reduction), or a shorter prompt",
    limit ?? 0.8 * availableHostBytes(),
  );
}

/**
 * Runs one pass over `bytes`: the taps of `layers` go to `onDeviceTap` (in backend memory, right
 * after each layer) and to `onTap` (downloaded into `tapTarget`'s arrays), `onChunkDone` runs
 * after each chunk, and log-probabilities and ranks are
 * collected on the backend when asked.
 */
async function pass(
  lm: MambaByteLM,
  bytes: Uint8Array,
  taps: TapName[],
  layers: number[],
  common: ExtractCommon,
  hooks: Pick<ForwardChunksOptions, "onDeviceTap" | "onChunkDone" | "onTap" | "tapTarget">,
): Promise<{ logProbs?: HostTensor; ranks?: HostTensor }> {
  const wantScores = !!(common.logProbs || common.ranks);
  const n = Math.max(0, bytes.length - 1);
  const lp = new Float32Array(n);
  const rk = new Int32Array(n);
  const collector = wantScores ? lm.logProbCollector(bytes, lp, rk) : undefined;
  try {
    const state = await lm.forwardChunks(bytes, {
      taps,
      layers,
      ...hooks,
      skipHead: !wantScores,
      onDeviceLogits: collector?.onDeviceLogits,
      onProgress: common.onProgress,
    });
    state.free();
  } finally {
    collector?.free();
  }
  const out: { logProbs?: HostTensor; ranks?: HostTensor } = {};
  if (common.logProbs) out.logProbs = { dtype: "float32", shape: [n], data: lp };
  if (common.ranks) {
    out.ranks = { dtype: "int64", shape: [n], data: BigInt64Array.from(rk, (v) => BigInt(v)) };
  }
  return out;
}

/**
 * Module outputs (L, features) of each module in each layer, with a nonlinearity applied. Each
 * layer's chunk is downloaded into its place in the result (on CUDA through page-locked buffers
 * while the next layers run: forwardChunks' overlapTaps). `into`: arrays to fill instead of new
 * ones, e.g. an earlier result's for texts of the same length: a float32 tensor of the right shape
 * is overwritten (its memory is already mapped, so the fill skips the first-touch page faults of
 * fresh arrays, most of this extraction's time on a GPU); any other is allocated anew.
 * On CUDA the reused arrays are also registered as download destinations (
 * {@link MambaByteLM.pinHostArrays}), so each chunk goes from the device straight into them with
 * no copy on the host (H200, 972M shape, dt_proj of 7,850 bytes: 1.16x the forward against 3.35x
 * through the staging buffers); the model keeps them registered (and alive) until a later call
 * reuses other arrays (a call into fresh ones leaves them), `pinInto: true` with none to reuse, or
 * its close. Registering costs about a first touch, so it pays when the same arrays are
 * filled again and again; `pinInto: false` keeps the staged copy (e.g. when alternating between
 * several sets of arrays). Fresh arrays are mapped by background threads while the layers run
 * (`prefault`, default on CUDA: `Backend.hostPrefault`), so that their fill does not wait on
 * page faults.
 */
export async function extractModuleOutputs(
  lm: MambaByteLM,
  bytes: Uint8Array,
  options: ExtractCommon & {
    modules: readonly TapName[];
    nonlinearity?: Nonlinearity;
    into?: Map<TapName, Map<number, HostTensor>>;
    pinInto?: boolean;
    /** Map fresh result arrays on background threads while the layers run (default: on CUDA). */
    prefault?: boolean;
  },
): Promise<
  { modules: Map<TapName, Map<number, HostTensor>>; logProbs?: HostTensor; ranks?: HostTensor }
> {
  const layers = layerIndices(lm.dims.nLayer, options.layers);
  const modules = [...new Set(options.modules)];
  const L = bytes.length;
  const total = modules.reduce((s, m) => s + L * tapWidth(m, lm.dims) * 4 * layers.length, 0);
  ensureFits(total, "the requested module outputs", options.maxResultBytes);
  const result = new Map<TapName, Map<number, HostTensor>>();
  const reused: Float32Array[] = [];
  for (const m of modules) {
    const perLayer = new Map<number, HostTensor>();
    for (const l of layers) {
      const w = tapWidth(m, lm.dims);
      const old = options.into?.get(m)?.get(l);
      const reuse = old && old.dtype === "float32" && old.data instanceof Float32Array &&
        old.shape.length === 2 && old.shape[0] === L && old.shape[1] === w &&
        old.data.length === L * w;
      if (reuse) reused.push(old.data as Float32Array);
      perLayer.set(
        l,
        reuse ? old : { dtype: "float32", shape: [L, w], data: new Float32Array(L * w) },
      );
    }
    result.set(m, perLayer);
  }
  // By default, on CUDA, only a call that reuses arrays changes the registered set: a call into
  // fresh arrays between two refills must not unregister them (registering 5.4 GB again costs
  // ~0.25 s). On the CPU registering gains nothing and would keep the arrays alive.
  if (options.pinInto ?? (reused.length > 0 && lm.backend.kind === "cuda")) {
    lm.pinHostArrays(reused);
  }
  // Fresh arrays are mapped by background threads while the layers run (in the order the taps
  // arrive), so that their downloads do not each fault on their pages: the first touch of 5.4 GB
  // was most of this extraction's time on a GPU. The CPU backend's own threads are busy then.
  const fresh: Float32Array[] = [];
  if (options.prefault ?? lm.backend.kind === "cuda") {
    const reusedSet = new Set(reused);
    for (const l of layers) {
      for (const m of modules) {
        const data = result.get(m)!.get(l)!.data as Float32Array;
        if (!reusedSet.has(data)) fresh.push(data);
      }
    }
    lm.backend.hostPrefault(fresh);
  }
  const nl: Nonlinearity = options.nonlinearity ?? "linear";
  try {
    const scores = await pass(lm, bytes, modules, layers, options, {
      tapTarget: (t) => {
        const all = result.get(t.tap)!.get(t.layer)!.data as Float32Array;
        return all.subarray(t.start * t.cols, (t.start + t.rows) * t.cols);
      },
      onTap: (t) => {
        if (nl !== "linear") applyNonlinearity(nl, t.data, t.rows, t.cols, t.data);
      },
    });
    return { modules: result, ...scores };
  } finally {
    if (fresh.length) lm.backend.hostPrefaultWait();
  }
}

/**
 * discrete_A = exp(softplus(dt_proj) ⊗ A) per layer, reduced as torch would, computed on the
 * model's backend from dt_proj's output as the forward produces it (mb_discrete_a).
 */
export async function extractDiscreteA(
  lm: MambaByteLM,
  bytes: Uint8Array,
  options: ExtractCommon & {
    reduction?: Reduction | null;
    reductionDim?: number | null;
    /** Also return the indices of a min / max over a dimension (torch's (values, indices)). */
    indices?: boolean;
  },
): Promise<Extraction> {
  const layers = layerIndices(lm.dims.nLayer, options.layers);
  const { dInner: D, dState: N } = lm.dims;
  const L = bytes.length;
  const reduction = options.reduction ?? null;
  const dim = options.reductionDim ?? null;
  const shape = reducedShape([L, D, N], reduction, dim);
  const bytesNeeded = shape.reduce((a, b) => a * b, 1) * 4 * layers.length;
  ensureFits(bytesNeeded, "discrete_A for these layers", options.maxResultBytes);
  const ex = new DiscreteAExtraction(lm, layers, L, reduction, dim, options.indices);
  try {
    const scores = await pass(lm, bytes, ["dt_proj"], layers, options, {
      onDeviceTap: (t) => ex.push(t.layer, t.ptr, t.ld, t.start, t.rows),
      onChunkDone: () => ex.flush(),
    });
    const { values, indices } = ex.results();
    return { perLayer: values, ...(indices.size ? { indices } : {}), ...scores };
  } finally {
    ex.free();
  }
}

/** Cosine similarity over d_inner of discrete_A with the mixer input x: (L, d_state) per layer. */
export async function extractInputSimilarity(
  lm: MambaByteLM,
  bytes: Uint8Array,
  options: ExtractCommon,
): Promise<Extraction> {
  const layers = layerIndices(lm.dims.nLayer, options.layers);
  const N = lm.dims.dState;
  const L = bytes.length;
  ensureFits(L * N * 4 * layers.length, "input similarity", options.maxResultBytes);
  const sim = new InputSimilarityExtraction(lm, layers, L);
  try {
    // in_proj and dt_proj of a layer arrive one after the other, before the next layer runs
    let x: { layer: number; ptr: Deno.PointerValue; ld: number } | null = null;
    const scores = await pass(lm, bytes, ["in_proj", "dt_proj"], layers, options, {
      onDeviceTap: (t) => {
        if (t.tap === "in_proj") {
          x = { layer: t.layer, ptr: t.ptr, ld: t.ld };
          return;
        }
        const xi = x!;
        if (xi.layer !== t.layer) throw new Error("in_proj and dt_proj of different layers");
        sim.push(t.layer, t.ptr, t.ld, xi.ptr, xi.ld, t.start, t.rows);
        x = null;
      },
      onChunkDone: () => sim.flush(),
    });
    return { perLayer: sim.results(), ...scores };
  } finally {
    sim.free();
  }
}
