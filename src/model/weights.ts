/**
 * The model's parameters in backend memory, uploaded from any weight reader (a checkpoint or the
 * random initialiser) under the canonical names of src/checkpoint.
 *
 * @module
 */

import type { Backend, WeightDType } from "../backend/backend.ts";
import { Tensor } from "../backend/tensor.ts";
import type { ModelDims, NormKind } from "../config/dims.ts";

/** What the model needs from a weight source (src/checkpoint's WeightSource satisfies it). */
export interface WeightReader {
  /** LayerNorm with bias (MambaByte) or RMSNorm (mamba_ssm, transformers). */
  normKind: NormKind;
  /** True when the canonical tensor is present. */
  has(name: string): boolean;
  /** Shape of a canonical tensor. */
  shape(name: string): number[];
  /** The tensor as float32. */
  readF32(name: string): Promise<Float32Array>;
  /** The tensor as bfloat16 bits (round to nearest even). */
  readBF16(name: string): Promise<Uint16Array>;
}

/** One block's parameters. Matrices use the model's weight dtype; the rest is fp32. */
export interface LayerWeights {
  /** The block's norm weight, (d_model). */
  normWeight: Tensor;
  /** The norm's bias (null for RMSNorm). */
  normBias: Tensor | null;
  /** in_proj, (2 d_inner, d_model): x then z. */
  inProj: Tensor;
  /** in_proj's bias, when the checkpoint has one. */
  inProjBias: Tensor | null;
  /** (d_inner, d_conv) */
  convWeight: Tensor;
  /** The conv's bias, (d_inner), when present. */
  convBias: Tensor | null;
  /** x_proj, (dt_rank + 2 d_state, d_inner): dt, B, C. */
  xProj: Tensor;
  /** dt_proj, (d_inner, dt_rank). */
  dtProj: Tensor;
  /** dt_proj's bias, (d_inner). */
  dtProjBias: Tensor;
  /** A = -exp(A_log), (d_inner, d_state), fp32. */
  A: Tensor;
  /** The skip connection D, (d_inner). */
  D: Tensor;
  /** out_proj, (d_model, d_inner). */
  outProj: Tensor;
  /** out_proj's bias, when the checkpoint has one. */
  outProjBias: Tensor | null;
}

/** All parameters of a MambaByte LM in backend memory. */
export interface ModelWeights {
  /** The large matrices' type (fp32 or bf16). */
  wdtype: WeightDType;
  /** The blocks' norm (LayerNorm or RMSNorm). */
  normKind: NormKind;
  /** Rows in the embedding table (>= 256; padded vocabularies are allowed). */
  vocabRows: number;
  /** The byte embedding, (vocabRows, d_model). */
  embedding: Tensor;
  /** Every block's parameters, in order. */
  layers: LayerWeights[];
  /** norm_f's weight. */
  normFWeight: Tensor;
  /** norm_f's bias (null for RMSNorm). */
  normFBias: Tensor | null;
  /** The output projection; the same tensor as `embedding` when tied. */
  lmHead: Tensor;
  /** A per layer on the host, for analyses (discrete-A). */
  hostA: Float32Array[];
}

/** Uploads every parameter; `onProgress(done, total)` is called per tensor. */
export async function uploadWeights(
  backend: Backend,
  reader: WeightReader,
  dims: ModelDims,
  wdtype: WeightDType,
  onProgress?: (done: number, total: number) => void,
): Promise<ModelWeights> {
  const total = 4 + dims.nLayer * 13;
  let done = 0;
  const owned: Tensor[] = [];
  const tick = () => onProgress?.(++done, total);

  const vec = async (name: string): Promise<Tensor> => {
    const data = await reader.readF32(name);
    const t = Tensor.fromHost(backend, data, [data.length], "f32");
    owned.push(t);
    tick();
    return t;
  };
  const optVec = async (name: string): Promise<Tensor | null> => {
    if (!reader.has(name)) {
      tick();
      return null;
    }
    return await vec(name);
  };
  const matrix = async (name: string): Promise<Tensor> => {
    const shape = reader.shape(name);
    const t = wdtype === "bf16"
      ? Tensor.fromHost(backend, await reader.readBF16(name), shape, "bf16")
      : Tensor.fromHost(backend, await reader.readF32(name), shape, "f32");
    owned.push(t);
    tick();
    return t;
  };

  try {
    const embedding = await matrix("embedding.weight");
    const layers: LayerWeights[] = [];
    const hostA: Float32Array[] = [];
    for (let i = 0; i < dims.nLayer; i++) {
      const p = `layers.${i}`;
      const aLog = await reader.readF32(`${p}.mixer.A_log`);
      const a = new Float32Array(aLog.length);
      for (let j = 0; j < a.length; j++) a[j] = -Math.exp(aLog[j]);
      hostA.push(a);
      const A = Tensor.fromHost(backend, a, [dims.dInner, dims.dState], "f32");
      owned.push(A);
      tick();
      layers.push({
        normWeight: await vec(`${p}.norm.weight`),
        normBias: await optVec(`${p}.norm.bias`),
        inProj: await matrix(`${p}.mixer.in_proj.weight`),
        inProjBias: await optVec(`${p}.mixer.in_proj.bias`),
        convWeight: await vec(`${p}.mixer.conv1d.weight`),
        convBias: await optVec(`${p}.mixer.conv1d.bias`),
        xProj: await matrix(`${p}.mixer.x_proj.weight`),
        dtProj: await matrix(`${p}.mixer.dt_proj.weight`),
        dtProjBias: await vec(`${p}.mixer.dt_proj.bias`),
        A,
        D: await vec(`${p}.mixer.D`),
        outProj: await matrix(`${p}.mixer.out_proj.weight`),
        outProjBias: await optVec(`${p}.mixer.out_proj.bias`),
      });
    }
    const normFWeight = await vec("norm_f.weight");
    const normFBias = await optVec("norm_f.bias");
    const tied = !reader.has("lm_head.weight") || sameTensor(reader);
    const lmHead = tied ? embedding : await matrix("lm_head.weight");
    if (tied) tick();
    return {
      wdtype,
      normKind: reader.normKind,
      vocabRows: embedding.shape[0],
      embedding,
      layers,
      normFWeight,
      normFBias,
      lmHead,
      hostA,
    };
  } catch (e) {
    for (const t of owned) t.free();
    throw e;
  }
}

// A reader that ties lm_head reports it through `lmHeadTied`; reuse the embedding then.
function sameTensor(reader: WeightReader): boolean {
  return (reader as { lmHeadTied?: boolean }).lmHeadTied === true;
}

/** Frees every tensor of the weights. */
export function freeWeights(w: ModelWeights): void {
  const all = new Set<Tensor>([w.embedding, w.lmHead, w.normFWeight]);
  if (w.normFBias) all.add(w.normFBias);
  for (const l of w.layers) {
    for (const t of Object.values(l)) if (t) all.add(t as Tensor);
  }
  for (const t of all) t.free();
}
