/**
 * Model dimensions from a Hugging Face style config.json, in either transformers' MambaConfig
 * vocabulary (hidden_size, num_hidden_layers, state_size, ...) or mamba_ssm's (d_model, n_layer,
 * ssm_cfg{d_state, d_conv, expand}, rms_norm, ...).
 *
 * @module
 */

import type { ModelDims, NormKind } from "../config/dims.ts";
import { InputFileError, readTextFileLimited } from "../io/read_limited.ts";
import { CheckpointError } from "./errors.ts";
import { JsonSyntaxError, parseJsonStrict } from "./json.ts";
import { MAX_HF_CONFIG_BYTES } from "./limits.ts";

/** What a config.json says about the model; fields it does not give are absent. */
export type HfDims = Partial<ModelDims> & {
  normEpsilon?: number;
  /** From mamba_ssm's `rms_norm` (transformers' Mamba always uses RMSNorm). */
  normKind?: NormKind;
  tieEmbeddings?: boolean;
};

function posInt(v: unknown): number | undefined {
  return typeof v === "number" && Number.isSafeInteger(v) && v > 0 ? v : undefined;
}

function num(v: unknown): number | undefined {
  return typeof v === "number" && Number.isFinite(v) ? v : undefined;
}

function bool(v: unknown): boolean | undefined {
  return typeof v === "boolean" ? v : undefined;
}

/** Parses the JSON object of a config.json (`label` names it in errors). */
export function parseHfConfig(json: unknown, label: string): HfDims {
  if (typeof json !== "object" || json === null || Array.isArray(json)) {
    throw new CheckpointError(`${label}: config.json is not a JSON object`);
  }
  const c = json as Record<string, unknown>;
  const ssm = typeof c.ssm_cfg === "object" && c.ssm_cfg !== null
    ? c.ssm_cfg as Record<string, unknown>
    : {};
  const out: HfDims = {
    vocabSize: posInt(c.vocab_size),
    dModel: posInt(c.d_model) ?? posInt(c.hidden_size),
    nLayer: posInt(c.n_layer) ?? posInt(c.num_hidden_layers),
    dState: posInt(ssm.d_state) ?? posInt(c.state_size) ?? posInt(c.d_state),
    dConv: posInt(ssm.d_conv) ?? posInt(c.conv_kernel) ?? posInt(c.d_conv),
    expand: posInt(ssm.expand) ?? posInt(c.expand),
    dtRank: posInt(ssm.dt_rank) ?? posInt(c.time_step_rank) ?? posInt(c.dt_rank),
    dInner: posInt(c.intermediate_size),
    normEpsilon: num(c.layer_norm_epsilon) ?? num(c.norm_epsilon),
    tieEmbeddings: bool(c.tie_embeddings) ?? bool(c.tie_word_embeddings),
  };
  const rms = bool(c.rms_norm);
  if (rms !== undefined) out.normKind = rms ? "rmsnorm" : "layernorm";
  else if (c.model_type === "mamba") out.normKind = "rmsnorm";
  if (out.dInner === undefined && out.dModel !== undefined && out.expand !== undefined) {
    out.dInner = out.dModel * out.expand;
  }
  if (out.dtRank === undefined && out.dModel !== undefined) out.dtRank = Math.ceil(out.dModel / 16);
  for (const k of Object.keys(out) as (keyof HfDims)[]) if (out[k] === undefined) delete out[k];
  return out;
}

/** Reads and parses `<dir>/config.json` (at most 1 MiB); undefined when the folder has none. */
export async function readHfConfig(path: string): Promise<HfDims | undefined> {
  let text: string;
  try {
    text = await readTextFileLimited(path, MAX_HF_CONFIG_BYTES, "Hugging Face config");
  } catch (e) {
    if (e instanceof InputFileError && e.reason === "missing") return undefined;
    throw new CheckpointError((e as Error).message);
  }
  let json: unknown;
  try {
    json = parseJsonStrict(text);
  } catch (e) {
    if (!(e instanceof JsonSyntaxError)) throw e;
    throw new CheckpointError(`${path}: invalid JSON (${e.message})`);
  }
  return parseHfConfig(json, path);
}
