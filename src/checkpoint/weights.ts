/**
 * The model-facing view of a checkpoint: canonical names, the norm kind, lm_head tying, and one
 * error that lists everything wrong when the checkpoint does not fit the requested dimensions.
 *
 * @module
 */

import type { ModelDims, NormKind } from "../config/dims.ts";
import { isFloatDType, type RawTensor, toBFloat16, toFloat32 } from "./dtypes.ts";
import { CheckpointError } from "./errors.ts";
import { describeDims, expectedTensors, inferDims } from "./expected.ts";
import { canonicalizeTensors } from "./names.ts";
import type { HubOptions } from "./hub.ts";
import { showInts, showName } from "./show.ts";
import { openCheckpoint } from "./open.ts";

/** Parameters under canonical names, converted on read. */
export interface WeightSource {
  /** LayerNorm with bias (MambaByte) or RMSNorm (mamba_ssm, transformers). */
  normKind: NormKind;
  /** True when lm_head is the embedding (absent from the checkpoint, or sharing its storage). */
  lmHeadTied: boolean;
  /** Canonical names present (after tying, lm_head.weight is always available). */
  has(name: string): boolean;
  /** Shape of a canonical tensor; conv1d weights are reported as (d_inner, d_conv). */
  shape(name: string): number[];
  /** The tensor as float32 (from F64, F32, F16 or BF16). */
  readF32(name: string): Promise<Float32Array>;
  /** The tensor as bfloat16 bits: a raw copy for BF16 data, round-to-nearest-even otherwise. */
  readBF16(name: string): Promise<Uint16Array>;
  /** Releases the checkpoint's files. */
  close(): void;
}

/** Options of {@link loadWeights}; the hub options matter only for `hf://` paths. */
export interface LoadWeightsOptions extends HubOptions {
  /** The model id named in mismatch errors (e.g. "353M"). */
  modelName?: string;
}

const NORM_WEIGHT = /^(layers\.\d+\.norm|norm_f)\.weight$/;
/** Names listed per category before "(N more)". */
const LIST_LIMIT = 12;

/**
 * Opens the checkpoint at `path` (a file, a Hugging Face folder, or `hf://owner/name[@revision]`),
 * checks it against `dims`, and returns its weights.
 */
export async function loadWeights(
  path: string,
  dims: ModelDims,
  opts: LoadWeightsOptions = {},
): Promise<WeightSource> {
  const ckpt = await openCheckpoint(path, opts);
  try {
    return weightSourceFromTensors(ckpt.tensors, dims, {
      label: path,
      modelName: opts.modelName,
      close: ckpt.close,
    });
  } catch (e) {
    ckpt.close();
    throw e;
  }
}

/** Detects the norm kind from which norms carry a bias; a mix is an error. */
export function detectNormKind(canonical: ReadonlyMap<string, unknown>, label: string): NormKind {
  const withBias: string[] = [];
  const without: string[] = [];
  for (const name of canonical.keys()) {
    const m = NORM_WEIGHT.exec(name);
    if (!m) continue;
    (canonical.has(`${m[1]}.bias`) ? withBias : without).push(m[1]);
  }
  if (withBias.length > 0 && without.length > 0) {
    throw new CheckpointError(
      `${label}: mixed norms: ${withBias[0]} has a bias (LayerNorm) but ${
        without[0]
      } has none (RMSNorm)`,
    );
  }
  return without.length > 0 ? "rmsnorm" : "layernorm";
}

/**
 * Checks tensors (under their file names) against `dims` and wraps them as a WeightSource.
 * Throws one CheckpointError listing every missing, unexpected and mis-shaped tensor.
 */
export function weightSourceFromTensors(
  tensors: ReadonlyMap<string, RawTensor>,
  dims: ModelDims,
  opts: { label: string; modelName?: string; close?: () => void },
): WeightSource {
  const label = opts.label;
  const canon = canonicalizeTensors(tensors, label);
  const normKind = detectNormKind(canon, label);
  const expected = expectedTensors(dims, normKind);
  const missing: string[] = [];
  const unexpected: string[] = [];
  const wrong: string[] = [];
  const emb = canon.get("embedding.weight");
  // A padded vocabulary (more rows than 256) is fine; lm_head must then match the embedding.
  const vocabRows = emb && emb.shape.length === 2 && emb.shape[0] >= dims.vocabSize
    ? emb.shape[0]
    : dims.vocabSize;
  for (const [name, exp] of expected) {
    const t = canon.get(name);
    if (!t) {
      if (exp.required) missing.push(name);
      continue;
    }
    let shapes = exp.shapes;
    if (name === "embedding.weight" || name === "lm_head.weight") {
      shapes = [[vocabRows, dims.dModel]];
    }
    if (!shapes.some((s) => sameShape(s, t.shape))) {
      wrong.push(`${name} has shape ${showInts(t.shape)}, expected [${shapes[0]}]`);
    } else if (!isFloatDType(t.dtype)) {
      wrong.push(`${name} has dtype ${t.dtype}, expected a floating-point type`);
    }
  }
  for (const name of canon.keys()) if (!expected.has(name)) unexpected.push(showName(name));
  if (missing.length + unexpected.length + wrong.length > 0) {
    const model = opts.modelName ? `model ${opts.modelName}` : "the model";
    const parts = [
      `checkpoint ${label} does not match ${model} (${describeDims(dims)})`,
    ];
    const found = inferDims(new Map([...canon].map(([k, t]) => [k, t.shape])));
    const differs = (Object.keys(found) as (keyof ModelDims)[]).some((k) =>
      k === "vocabSize" ? (found[k] ?? 0) < dims.vocabSize : found[k] !== dims[k]
    );
    if (differs) {
      parts.push(
        `the checkpoint has ${describeDims(found)}: choose the --model_id with these dimensions`,
      );
    }
    if (missing.length) parts.push(`missing ${list(missing)}`);
    if (unexpected.length) parts.push(`unexpected ${list(unexpected)}`);
    if (wrong.length) parts.push(list(wrong));
    throw new CheckpointError(parts.join("; "));
  }
  const lm = canon.get("lm_head.weight");
  const lmHeadTied = !lm || (lm.storageKey !== undefined && lm.storageKey === emb?.storageKey);
  return new TensorWeights(canon, normKind, lmHeadTied, dims, opts.close ?? (() => {}));
}

function sameShape(a: readonly number[], b: readonly number[]): boolean {
  return a.length === b.length && a.every((d, i) => d === b[i]);
}

function list(items: string[]): string {
  const shown = items.slice(0, LIST_LIMIT).join(", ");
  return items.length > LIST_LIMIT ? `${shown}, ... (${items.length - LIST_LIMIT} more)` : shown;
}

class TensorWeights implements WeightSource {
  readonly normKind: NormKind;
  readonly lmHeadTied: boolean;
  readonly #tensors: Map<string, RawTensor>;
  readonly #dims: ModelDims;
  readonly #close: () => void;

  constructor(
    tensors: Map<string, RawTensor>,
    normKind: NormKind,
    lmHeadTied: boolean,
    dims: ModelDims,
    close: () => void,
  ) {
    this.#tensors = tensors;
    this.normKind = normKind;
    this.lmHeadTied = lmHeadTied;
    this.#dims = dims;
    this.#close = close;
  }

  #get(name: string): RawTensor {
    const key = name === "lm_head.weight" && this.lmHeadTied ? "embedding.weight" : name;
    const t = this.#tensors.get(key);
    if (!t) throw new CheckpointError(`checkpoint has no tensor ${name}`);
    return t;
  }

  has(name: string): boolean {
    return this.#tensors.has(name) || name === "lm_head.weight";
  }

  shape(name: string): number[] {
    const s = this.#get(name).shape;
    if (name.endsWith(".conv1d.weight")) return [this.#dims.dInner, this.#dims.dConv];
    return s.slice();
  }

  async readF32(name: string): Promise<Float32Array> {
    const t = this.#get(name);
    return toFloat32(await t.read(), t.dtype, showName(t.name));
  }

  async readBF16(name: string): Promise<Uint16Array> {
    const t = this.#get(name);
    return toBFloat16(await t.read(), t.dtype, showName(t.name));
  }

  close(): void {
    this.#close();
  }
}
