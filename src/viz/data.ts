/**
 * What a visualisation shows, independent of where the numbers came from (a model run or outputs
 * files) and of how it is drawn: the prompt's bytes, each next byte's log-probability and rank,
 * and two per-layer quantities per position (discrete-A's Frobenius norm and the mean delta),
 * assembled into {@link VizData}, the JSON block the page embeds.
 *
 * Alignment: position p is byte p of the prompt. log_probs[p] = log p(byte p | bytes < p), so
 * position 0 has none (null); the extraction outputs' `log_probs[i]` lands at position i + 1.
 * discrete_A and delta at position p are those of the step that reads byte p.
 *
 * @module
 */

import { MambaByteError } from "../errors.ts";
import type { HostTensor } from "../io/tensor.ts";
import { type ColorScale, colorScale, scaleColor } from "./scale.ts";

/** The per-layer quantities. */
export const LAYER_QUANTITIES = ["discrete_A", "delta"] as const;
/** discrete_A: ||exp(delta ⊗ A)||_F per position; delta: mean over d_inner of softplus(dt_proj). */
export type LayerQuantity = (typeof LAYER_QUANTITIES)[number];

/** What the text can be coloured by. */
export const COLOR_BY = ["surprisal", "rank", ...LAYER_QUANTITIES] as const;
/** One of {@link COLOR_BY}. */
export type ColorBy = (typeof COLOR_BY)[number];

/** The numbers a visualisation is made from, for the whole prompt. */
export interface VizInputs {
  /** The prompt's bytes (L). */
  bytes: Uint8Array;
  /** Natural-log probability of each next byte, as extracted: (L-1,). */
  logProbs: Float32Array;
  /** Rank of each next byte (0 = the model's top choice), as extracted: (L-1,); optional. */
  ranks?: Int32Array;
  /** Frobenius norm of discrete-A per position, (L,) per layer. */
  discreteA?: Map<number, Float32Array>;
  /** Mean over d_inner of delta = softplus(dt_proj) per position, (L,) per layer. */
  delta?: Map<number, Float32Array>;
}

/** How the page is set up (also shown in it). */
export interface VizSettings {
  /** Model id (null when unknown). */
  model_id: string | null;
  /** Where the weights came from: a checkpoint path, "random(seed=N)", or null when unknown. */
  checkpoint: string | null;
  /** Device and storage dtype of the run (model runs only). */
  device?: string;
  dtype?: string;
  /** Where the prompt came from: "--prompt", the prompt file, or the outputs files. */
  prompt_source: string;
  /** Outputs files read (with --from_outputs). */
  outputs_files?: string[];
  /** The command line that made the page. */
  command: string;
  color_by: ColorBy;
  layer: number;
  layer_quantity: LayerQuantity;
  window: number;
  /** Shown positions [start, end). */
  range: [number, number];
  heatmap_scale: HeatmapScale;
}

/** Heatmap colours: each layer over its own range ("row"), or one range for all ("global"). */
export type HeatmapScale = "row" | "global";

/** The JSON block embedded in the page: everything its script reads. */
export interface VizData {
  /** Format tag, for readers of the block. */
  format: "mambabyte-viz/1";
  settings: VizSettings;
  /** Absolute position of the first shown byte. */
  start: number;
  /** Shown bytes. */
  bytes: number[];
  /** log p(byte p | bytes < p), natural log; null at absolute position 0. */
  log_probs: (number | null)[];
  /** Rank of byte p; null at absolute position 0; absent when not extracted. */
  ranks?: (number | null)[];
  /** discrete-A Frobenius norm per shown position, by layer; absent when not computed. */
  discrete_A_fro?: Record<string, number[]>;
  /** Mean delta per shown position, by layer; absent when not computed. */
  delta_mean?: Record<string, number[]>;
  /** The text's colours: one CSS colour per shown byte ("" where the quantity has no value). */
  color: ColorScale & { colors: string[] };
}

/** Options of {@link assembleViz}. */
export interface AssembleOptions {
  colorBy: ColorBy;
  layer: number;
  layerQuantity: LayerQuantity;
  window: number;
  /** [start, end) positions to show; default all. */
  range?: [number, number];
  heatmapScale: HeatmapScale;
  /** Settings fields that describe the source (model, prompt, command). */
  source: Pick<
    VizSettings,
    "model_id" | "checkpoint" | "device" | "dtype" | "prompt_source" | "outputs_files" | "command"
  >;
}

/** Mean over the last axis of a (L, D) float tensor, accumulated in float64: (L,). */
export function meanOverFeatures(t: HostTensor): Float32Array {
  if (t.shape.length !== 2 || (t.dtype !== "float32" && t.dtype !== "float64")) {
    throw new MambaByteError(`expected a (positions, features) float tensor, got [${t.shape}]`);
  }
  const [L, D] = t.shape;
  const x = t.data as Float32Array | Float64Array;
  const out = new Float32Array(L);
  for (let p = 0; p < L; p++) {
    let s = 0;
    for (let d = p * D; d < (p + 1) * D; d++) s += x[d];
    out[p] = s / D;
  }
  return out;
}

/** Surprisal in bits of a natural-log probability. */
export function surprisalBits(logProb: number): number {
  return -logProb / Math.LN2;
}

/**
 * Centred moving average over `window` positions (the window is clipped at the ends and skips
 * nulls); null where the window holds no value.
 */
export function movingAverage(
  values: readonly (number | null)[],
  window: number,
): (number | null)[] {
  if (!Number.isInteger(window) || window < 1) throw new RangeError(`window ${window} < 1`);
  const n = values.length;
  const sum = new Float64Array(n + 1);
  const cnt = new Int32Array(n + 1);
  for (let i = 0; i < n; i++) {
    const v = values[i];
    const ok = v !== null && Number.isFinite(v);
    sum[i + 1] = sum[i] + (ok ? v : 0);
    cnt[i + 1] = cnt[i] + (ok ? 1 : 0);
  }
  const before = Math.floor((window - 1) / 2);
  const after = window - 1 - before;
  const out: (number | null)[] = new Array(n);
  for (let i = 0; i < n; i++) {
    const a = Math.max(0, i - before), b = Math.min(n, i + after + 1);
    const c = cnt[b] - cnt[a];
    out[i] = c ? (sum[b] - sum[a]) / c : null;
  }
  return out;
}

/**
 * The shortest decimal that reads back as the same float32 (at most 9 significant digits), so
 * the embedded JSON is compact and `Math.fround(JSON value)` is the extracted value exactly.
 */
export function float32Json(x: number): number {
  const f = Math.fround(x);
  if (!Number.isFinite(f) || f === 0) return f;
  for (let digits = 6; digits < 9; digits++) {
    const y = Number(f.toPrecision(digits));
    if (Math.fround(y) === f) return y;
  }
  return Number(f.toPrecision(9));
}

/** Parses "START:END" (either side may be empty) against a prompt of `length` bytes. */
export function parseRange(spec: string | null, length: number): [number, number] {
  if (spec === null) return [0, length];
  const m = /^\s*(\d*)\s*:\s*(\d*)\s*$/.exec(spec);
  if (!m) {
    throw new MambaByteError(
      `argument --range: expected START:END byte positions, got '${spec}'`,
      2,
    );
  }
  const start = m[1] === "" ? 0 : Number(m[1]);
  const end = m[2] === "" ? length : Number(m[2]);
  if (!(start < end) || end > length) {
    throw new MambaByteError(
      `argument --range: ${spec} is not a non-empty range inside the prompt's ${length} bytes`,
      2,
    );
  }
  return [start, end];
}

function layerMap(q: LayerQuantity, inputs: VizInputs): Map<number, Float32Array> | undefined {
  return q === "discrete_A" ? inputs.discreteA : inputs.delta;
}

/** Checks that the inputs hold what the options need; throws one clear line otherwise. */
export function checkInputs(inputs: VizInputs, opts: AssembleOptions): void {
  const L = inputs.bytes.length;
  if (L < 2) throw new MambaByteError("the prompt needs at least 2 bytes (one to predict)");
  if (inputs.logProbs.length !== L - 1) {
    throw new MambaByteError(
      `log_probs has ${inputs.logProbs.length} values but the prompt has ${L} bytes (need ${
        L - 1
      })`,
    );
  }
  if (inputs.ranks && inputs.ranks.length !== L - 1) {
    throw new MambaByteError(
      `ranks has ${inputs.ranks.length} values but the prompt has ${L} bytes (need ${L - 1})`,
    );
  }
  if (opts.colorBy === "rank" && !inputs.ranks) {
    throw new MambaByteError("--color_by rank needs ranks, and none were given");
  }
  const wanted = new Set<LayerQuantity>([opts.layerQuantity]);
  if (opts.colorBy === "discrete_A" || opts.colorBy === "delta") wanted.add(opts.colorBy);
  for (const q of wanted) {
    const m = layerMap(q, inputs);
    if (!m || m.size === 0) throw new MambaByteError(`no ${q} values were given`);
    for (const [l, v] of m) {
      if (v.length !== L) {
        throw new MambaByteError(`${q} of layer ${l} has ${v.length} positions, the prompt ${L}`);
      }
    }
    if (!m.has(opts.layer)) {
      throw new MambaByteError(
        `--layer ${opts.layer}: no ${q} for that layer (layers ${[...m.keys()].join(", ")})`,
        2,
      );
    }
  }
}

/** Per-position values (absolute positions) of what the text is coloured by; null = none. */
export function colorValues(inputs: VizInputs, by: ColorBy, layer: number): (number | null)[] {
  const L = inputs.bytes.length;
  if (by === "surprisal" || by === "rank") {
    const src = by === "surprisal" ? inputs.logProbs : inputs.ranks!;
    const out: (number | null)[] = [null];
    for (let i = 0; i < L - 1; i++) out.push(by === "surprisal" ? surprisalBits(src[i]) : src[i]);
    return out;
  }
  return Array.from(layerMap(by, inputs)!.get(layer)!);
}

/** Assembles the page's data block from the inputs (checked first). */
export function assembleViz(inputs: VizInputs, opts: AssembleOptions): VizData {
  checkInputs(inputs, opts);
  const L = inputs.bytes.length;
  const [start, end] = opts.range ?? [0, L];
  const shifted = <T>(src: ArrayLike<T>, f: (x: T) => number): (number | null)[] => {
    const out: (number | null)[] = [];
    for (let p = start; p < end; p++) out.push(p === 0 ? null : f(src[p - 1]));
    return out;
  };
  const perLayer = (m: Map<number, Float32Array> | undefined) => {
    if (!m) return undefined;
    const o: Record<string, number[]> = {};
    for (const l of [...m.keys()].sort((a, b) => a - b)) {
      o[String(l)] = Array.from(m.get(l)!.subarray(start, end), float32Json);
    }
    return o;
  };
  const values = colorValues(inputs, opts.colorBy, opts.layer).slice(start, end);
  const scale = colorScale(opts.colorBy, values, opts.layer);
  const data: VizData = {
    format: "mambabyte-viz/1",
    settings: {
      ...opts.source,
      color_by: opts.colorBy,
      layer: opts.layer,
      layer_quantity: opts.layerQuantity,
      window: opts.window,
      range: [start, end],
      heatmap_scale: opts.heatmapScale,
    },
    start,
    bytes: Array.from(inputs.bytes.subarray(start, end)),
    log_probs: shifted(inputs.logProbs, float32Json),
    color: { ...scale, colors: values.map((v) => v === null ? "" : scaleColor(scale, v)) },
  };
  if (inputs.ranks) data.ranks = shifted(inputs.ranks, Number);
  const dA = perLayer(inputs.discreteA);
  if (dA) data.discrete_A_fro = dA;
  const dm = perLayer(inputs.delta);
  if (dm) data.delta_mean = dm;
  return data;
}
