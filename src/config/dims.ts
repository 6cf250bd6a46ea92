/** Shapes that fully determine a MambaByte network's parameter tensors. */
export interface ModelDims {
  /** Byte vocabulary: 256 for MambaByte (a checkpoint may pad it). */
  vocabSize: number;
  /** Width of the residual stream. */
  dModel: number;
  /** Mamba blocks. */
  nLayer: number;
  /** SSM states per channel (N). */
  dState: number;
  /** Width of the causal depthwise conv. */
  dConv: number;
  /** d_inner / d_model. */
  expand: number;
  /** expand * dModel. */
  dInner: number;
  /** ceil(dModel / 16) unless set explicitly. */
  dtRank: number;
}

/** Which normalisation the blocks use: MambaByte's LayerNorm with bias, or mamba_ssm's RMSNorm. */
export type NormKind = "layernorm" | "rmsnorm";

/** Fills in the derived fields (dInner, dtRank "auto") of a partial set of dimensions. */
export function completeDims(
  d: Omit<ModelDims, "dInner" | "dtRank"> & { dtRank?: number | "auto" },
): ModelDims {
  const dInner = d.expand * d.dModel;
  const dtRank = d.dtRank === undefined || d.dtRank === "auto"
    ? Math.ceil(d.dModel / 16)
    : d.dtRank;
  return { ...d, dInner, dtRank };
}
