/**
 * The numbers of a visualisation read from outputs files the extraction scripts wrote (README
 * "Output files"): `discrete_A` from extract_discrete_A.ts (reduced with `fro`, or unreduced and
 * reduced here with the same reduction code), `dt_proj` from extract_module_outputs.ts (with
 * `softplus`, or `linear` and softplus applied here), `log_probs` and `ranks` from either.
 * Several files of one prompt and model are merged.
 *
 * @module
 */

import { applyNonlinearity } from "../analysis/nonlinearity.ts";
import { MambaByteError, printable } from "../errors.ts";
import { readOutputs } from "../io/read.ts";
import { type HostTensor, isHostTensor } from "../io/tensor.ts";
import { type LayerQuantity, meanOverFeatures, type VizInputs } from "./data.ts";

/** What the page needs from the files. */
export interface OutputsNeeds {
  /** Per-layer quantities needed (the heatmap's, and the colouring's when per layer). */
  quantities: LayerQuantity[];
  /** Ranks are needed (colouring by rank). */
  ranks: boolean;
}

/** The inputs and what the files say about their source. */
export interface OutputsSource {
  inputs: VizInputs;
  model_id: string | null;
  checkpoint: string | null;
}

/** A file lacking what the page needs, or files that do not belong together; one line, exit 1. */
function missing(msg: string): MambaByteError {
  return new MambaByteError(msg, 1);
}

function floatData(t: HostTensor, what: string): Float32Array {
  if (t.dtype === "float32") return t.data as Float32Array;
  if (t.dtype === "float64") return Float32Array.from(t.data as Float64Array);
  throw missing(`${what} is ${t.dtype}, expected float32`);
}

function tensorField(rec: Record<string, unknown>, key: string, path: string): HostTensor {
  const v = rec[key];
  if (!isHostTensor(v)) throw missing(`${path}: ${key} is not a tensor`);
  return v;
}

function layerField(rec: Record<string, unknown>, key: string, path: string) {
  const v = rec[key];
  if (!(v instanceof Map) || ![...v.values()].every(isHostTensor)) {
    throw missing(`${path}: ${key} is not a map from layer index to tensor`);
  }
  return v as Map<number, HostTensor>;
}

/** "PATH: KEY of layer L" for messages; the layer key comes from the file, so it is shown printable. */
function ofLayer(path: string, key: string, layer: unknown): string {
  return `${path}: ${key} of layer ${printable(String(layer), 20)}`;
}

/** The Frobenius norm of each position's (D, N) matrix in an unreduced (L, D, N) tensor. */
function frobeniusPerPosition(x: Float32Array, L: number, perPosition: number): Float32Array {
  const out = new Float32Array(L);
  for (let p = 0; p < L; p++) {
    let s = 0;
    for (let i = p * perPosition; i < (p + 1) * perPosition; i++) s += x[i] * x[i];
    out[p] = Math.sqrt(s);
  }
  return out;
}

/** discrete-A's Frobenius norm per position from one file's `discrete_A`. */
function discreteAFro(rec: Record<string, unknown>, path: string, L: number) {
  const reduction = rec.reduction ?? null;
  const out = new Map<number, Float32Array>();
  for (const [l, t] of layerField(rec, "discrete_A", path)) {
    const what = ofLayer(path, "discrete_A", l);
    if (reduction === "fro") {
      if (t.shape.length !== 1 || t.shape[0] !== L) {
        throw missing(`${what} has shape [${t.shape}], expected [${L}] (the prompt's bytes)`);
      }
      out.set(l, floatData(t, what));
    } else if (reduction === null && t.shape.length === 3 && t.shape[0] === L) {
      const [, D, N] = t.shape;
      out.set(l, frobeniusPerPosition(floatData(t, what), L, D * N));
    } else {
      const shown = printable(String(reduction), 40);
      throw missing(
        `${path}: discrete_A was reduced with '${shown}'; the page needs one Frobenius norm ` +
          `per position: rerun extract_discrete_A.ts with --reduction fro`,
      );
    }
  }
  return out;
}

/** Mean delta per position from one file's `dt_proj`. */
function deltaMean(rec: Record<string, unknown>, key: string, path: string, L: number) {
  const nl = rec.nonlinearity ?? "linear";
  if (nl !== "softplus" && nl !== "linear") {
    const shown = printable(String(nl), 40);
    throw missing(
      `${path}: ${key} went through '${shown}'; delta is softplus(dt_proj): rerun ` +
        `extract_module_outputs.ts with --nonlinearity softplus`,
    );
  }
  const out = new Map<number, Float32Array>();
  for (const [l, t] of layerField(rec, key, path)) {
    const what = ofLayer(path, key, l);
    if (t.shape.length !== 2 || t.shape[0] !== L) {
      throw missing(`${what} has shape [${t.shape}], expected [${L}, d_inner]`);
    }
    const [, D] = t.shape;
    let data = floatData(t, what);
    if (nl === "linear") data = applyNonlinearity("softplus", data, L, D);
    out.set(l, meanOverFeatures({ dtype: "float32", shape: [L, D], data }));
  }
  return out;
}

/** The one string value of `key` the records agree on (null when none has it). */
function agreed(records: [string, Record<string, unknown>][], key: string, what: string) {
  let value: string | null = null, from = "";
  for (const [path, rec] of records) {
    const v = rec[key];
    if (v === null || v === undefined) continue;
    if (typeof v !== "string") throw missing(`${path}: ${key} is not a string`);
    if (value !== null && v !== value) {
      throw missing(
        `${from} and ${path} come from different ${what} ` +
          `(${printable(value, 80)} vs ${printable(v, 80)})`,
      );
    }
    value = v;
    from = path;
  }
  return value;
}

/** Reads and merges outputs files into the page's inputs, or says in one line what is missing. */
export async function vizInputsFromOutputs(
  paths: readonly string[],
  needs: OutputsNeeds,
): Promise<OutputsSource> {
  const records: [string, Record<string, unknown>][] = [];
  for (const p of paths) records.push([p, await readOutputs(p)]);
  for (const [path, rec] of records) {
    if (typeof rec.prompt !== "string") {
      throw missing(`${path} has no prompt: not a record written by an extraction script`);
    }
  }
  const prompts = new Set(records.map(([, r]) => r.prompt));
  if (prompts.size > 1) {
    throw missing(`${paths.join(", ")} were made from different prompts`);
  }
  const prompt = records[0][1].prompt as string;
  const bytes = new TextEncoder().encode(prompt);
  const L = bytes.length;
  const model_id = agreed(records, "model_id", "models");
  const checkpoint = agreed(records, "pretrained_model_filepath", "checkpoints");
  const find = (key: string) => records.find(([, r]) => r[key] !== undefined && r[key] !== null);

  const lp = find("log_probs");
  if (!lp) {
    throw missing(
      `${paths.join(", ")}: no log_probs (the surprisal plot needs them): rerun the extraction ` +
        `with --return_log_probs`,
    );
  }
  const logProbs = floatData(tensorField(lp[1], "log_probs", lp[0]), `${lp[0]}: log_probs`);
  if (logProbs.length !== L - 1) {
    throw missing(
      `${lp[0]}: log_probs has ${logProbs.length} values but the prompt has ${L} bytes ` +
        `(expected ${L - 1}); the stored prompt is not valid UTF-8 or the file was edited`,
    );
  }
  const inputs: VizInputs = { bytes, logProbs };
  const rk = find("ranks");
  if (rk) {
    const t = tensorField(rk[1], "ranks", rk[0]);
    inputs.ranks = Int32Array.from(t.data as ArrayLike<number | bigint>, Number);
  } else if (needs.ranks) {
    throw missing(
      `${paths.join(", ")}: no ranks (--color_by rank needs them): rerun the extraction with ` +
        `--return_ranks`,
    );
  }
  for (const q of new Set(needs.quantities)) {
    if (q === "discrete_A") {
      const f = find("discrete_A");
      if (!f) {
        throw missing(
          `${paths.join(", ")}: no discrete_A (needed for discrete_A): make it with ` +
            `extract_discrete_A.ts --reduction fro`,
        );
      }
      inputs.discreteA = discreteAFro(f[1], f[0], L);
    } else {
      const key = find("dt_proj") ? "dt_proj" : "mixer.dt_proj";
      const f = find(key);
      if (!f) {
        throw missing(
          `${paths.join(", ")}: no dt_proj (needed for delta): make it with ` +
            `extract_module_outputs.ts --module_ids dt_proj --nonlinearity softplus`,
        );
      }
      inputs.delta = deltaMean(f[1], key, f[0], L);
    }
  }
  return { inputs, model_id, checkpoint };
}
