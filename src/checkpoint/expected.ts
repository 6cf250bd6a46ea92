/**
 * The canonical parameter set of a MambaByte LM for given dimensions, and the reverse: the
 * dimensions a set of canonical tensors implies (to tell a user which model a checkpoint is).
 *
 * @module
 */

import type { ModelDims, NormKind } from "../config/dims.ts";

/** One parameter the model uses. */
export interface ExpectedTensor {
  /** Allowed shapes (conv1d weights come as (d_inner, 1, d_conv) or (d_inner, d_conv)). */
  shapes: number[][];
  /** False for the biases and lm_head that a checkpoint may omit. */
  required: boolean;
}

/** Canonical names -> shapes for `dims` (the embedding's rows are checked separately). */
export function expectedTensors(dims: ModelDims, normKind: NormKind): Map<string, ExpectedTensor> {
  const { dModel, dInner, dState, dConv, dtRank } = dims;
  const m = new Map<string, ExpectedTensor>();
  const req = (name: string, ...shapes: number[][]) => m.set(name, { shapes, required: true });
  const opt = (name: string, ...shapes: number[][]) => m.set(name, { shapes, required: false });
  const ln = normKind === "layernorm";
  req("embedding.weight", [dims.vocabSize, dModel]);
  for (let i = 0; i < dims.nLayer; i++) {
    const p = `layers.${i}`;
    req(`${p}.norm.weight`, [dModel]);
    if (ln) req(`${p}.norm.bias`, [dModel]);
    req(`${p}.mixer.in_proj.weight`, [2 * dInner, dModel]);
    opt(`${p}.mixer.in_proj.bias`, [2 * dInner]);
    req(`${p}.mixer.conv1d.weight`, [dInner, 1, dConv], [dInner, dConv]);
    opt(`${p}.mixer.conv1d.bias`, [dInner]);
    req(`${p}.mixer.x_proj.weight`, [dtRank + 2 * dState, dInner]);
    req(`${p}.mixer.dt_proj.weight`, [dInner, dtRank]);
    req(`${p}.mixer.dt_proj.bias`, [dInner]);
    req(`${p}.mixer.A_log`, [dInner, dState]);
    req(`${p}.mixer.D`, [dInner]);
    req(`${p}.mixer.out_proj.weight`, [dModel, dInner]);
    opt(`${p}.mixer.out_proj.bias`, [dModel]);
  }
  req("norm_f.weight", [dModel]);
  if (ln) req("norm_f.bias", [dModel]);
  opt("lm_head.weight", [dims.vocabSize, dModel]);
  return m;
}

/** Dimensions implied by canonical tensor shapes; fields that cannot be told are absent. */
export function inferDims(shapes: ReadonlyMap<string, number[]>): Partial<ModelDims> {
  const out: Partial<ModelDims> = {};
  const emb = shapes.get("embedding.weight");
  if (emb?.length === 2) [out.vocabSize, out.dModel] = emb;
  let layers = 0;
  for (const name of shapes.keys()) {
    const m = /^layers\.(\d+)\./.exec(name);
    if (m) layers = Math.max(layers, Number(m[1]) + 1);
  }
  if (layers > 0) out.nLayer = layers;
  const inProj = shapes.get("layers.0.mixer.in_proj.weight");
  if (inProj?.length === 2) {
    out.dInner = inProj[0] / 2;
    out.dModel ??= inProj[1];
  }
  const aLog = shapes.get("layers.0.mixer.A_log");
  if (aLog?.length === 2) out.dState = aLog[1];
  const conv = shapes.get("layers.0.mixer.conv1d.weight");
  if (conv && conv.length >= 2) out.dConv = conv[conv.length - 1];
  const dt = shapes.get("layers.0.mixer.dt_proj.weight");
  if (dt?.length === 2) out.dtRank = dt[1];
  if (out.dInner !== undefined && out.dModel) out.expand = out.dInner / out.dModel;
  return out;
}

/** "d_model=1024 n_layer=53 ..." for the fields present. */
export function describeDims(d: Partial<ModelDims>): string {
  const parts: [string, number | undefined][] = [
    ["vocab", d.vocabSize],
    ["d_model", d.dModel],
    ["n_layer", d.nLayer],
    ["d_inner", d.dInner],
    ["expand", d.expand],
    ["d_state", d.dState],
    ["d_conv", d.dConv],
    ["dt_rank", d.dtRank],
  ];
  return parts.filter(([, v]) => v !== undefined).map(([k, v]) => `${k}=${v}`).join(" ");
}
