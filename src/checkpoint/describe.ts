/**
 * What model a checkpoint holds: its dimensions from the tensor shapes (any checkpoint) checked
 * against its config.json (Hugging Face folders), so a checkpoint loads without naming a model id.
 *
 * @module
 */

import { BOUNDS } from "../config/defaults.ts";
import type { ModelDims } from "../config/dims.ts";
import type { RawTensor } from "./dtypes.ts";
import { CheckpointError } from "./errors.ts";
import { describeDims, inferDims } from "./expected.ts";
import type { HfDims } from "./hf_config.ts";
import { canonicalizeTensors } from "./names.ts";

/** A checkpoint's model, as far as the checkpoint itself tells. */
export interface CheckpointModel {
  /** Dimensions (vocabSize is 256: rows beyond the bytes are padding). */
  dims: ModelDims;
  /** The norm epsilon its config.json gives, if any. */
  normEpsilon?: number;
}

const BYTE_VOCAB = 256;
const DIM_FIELDS: [keyof ModelDims, string][] = [
  ["dModel", "d_model"],
  ["nLayer", "n_layer"],
  ["dState", "d_state"],
  ["dConv", "d_conv"],
  ["dtRank", "dt_rank"],
];

/** The model a checkpoint's tensors (and config.json, when given) describe. */
export function checkpointModel(
  tensors: ReadonlyMap<string, RawTensor>,
  hf: HfDims | undefined,
  label: string,
): CheckpointModel {
  const canon = canonicalizeTensors(tensors, label);
  const found = inferDims(new Map([...canon].map(([k, t]) => [k, t.shape])));
  for (const [key, name] of [...DIM_FIELDS, ["dInner", "d_inner"]] as [keyof ModelDims, string][]) {
    if (found[key] === undefined || !Number.isSafeInteger(found[key])) {
      throw new CheckpointError(
        `${label} does not hold a MambaByte model: cannot tell its ${name} from the tensors ` +
          `(need embedding, layers.0.mixer.{in_proj,conv1d,dt_proj}.weight and A_log)`,
      );
    }
  }
  const rows = found.vocabSize ?? 0;
  if (rows < BYTE_VOCAB) {
    throw new CheckpointError(
      `${label} is not a byte-level model: its embedding has ${rows} rows (at least 256 needed)`,
    );
  }
  const dims: ModelDims = {
    vocabSize: BYTE_VOCAB,
    dModel: found.dModel!,
    nLayer: found.nLayer!,
    dState: found.dState!,
    dConv: found.dConv!,
    dInner: found.dInner!,
    expand: found.dInner! / found.dModel!,
    dtRank: found.dtRank!,
  };
  for (const [key, name] of DIM_FIELDS) {
    const [lo, hi] = BOUNDS[name];
    const v = dims[key];
    if (v < lo || v > hi) {
      throw new CheckpointError(`${label}: ${name} ${v} is outside ${lo}..${hi}`);
    }
  }
  if (hf) {
    const wrong: string[] = [];
    for (
      const [key, name] of [...DIM_FIELDS, ["dInner", "d_inner"]] as [keyof ModelDims, string][]
    ) {
      if (hf[key] !== undefined && hf[key] !== dims[key]) {
        wrong.push(`${name} ${hf[key]} (weights: ${dims[key]})`);
      }
    }
    if (hf.vocabSize !== undefined && hf.vocabSize > rows) {
      wrong.push(`vocab_size ${hf.vocabSize} (weights: ${rows} rows)`);
    }
    if (wrong.length > 0) {
      throw new CheckpointError(
        `${label}: config.json disagrees with the weights: ${wrong.join(", ")}`,
      );
    }
  }
  return { dims, normEpsilon: hf?.normEpsilon };
}

/** True when two models have the same shape (the byte vocabulary is the same for both). */
export function sameDims(a: ModelDims, b: ModelDims): boolean {
  return (["dModel", "nLayer", "dState", "dConv", "dInner", "dtRank"] as const).every((k) =>
    a[k] === b[k]
  );
}

/** "d_model=1792 n_layer=48 ..." without the vocabulary (padding makes it uninformative). */
export function describeShape(d: ModelDims): string {
  return describeDims({ ...d, vocabSize: undefined });
}
