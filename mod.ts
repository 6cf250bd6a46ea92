/**
 * mambabyte: MambaByte, the token-free byte-level Mamba language model, for Deno.
 *
 * Load a configured model (a checkpoint, or random weights as the original initialises them),
 * run it over bytes with taps on its modules, score bytes, and generate. The model loadModel
 * returns is a {@link MambaByteLM}: the same object serves the lower-level work (chunked forwards,
 * recurrent states, workspaces) and the analyses.
 *
 * @example
 * ```ts
 * import { loadModel } from "./mod.ts";
 *
 * const model = await loadModel({ modelId: "test-48x2", device: "cpu" });
 * const bytes = new TextEncoder().encode("ROMEO:");
 * const { logits, taps } = await model.forward(bytes, { taps: ["dt_proj"], layers: [0] });
 * console.log(logits.length / 256, taps.get("dt_proj")!.get(0)!.length);
 * const { logProbs, ranks } = await model.logProbs(bytes);
 * const [sample] = await model.generate(bytes, { maxNewTokens: 8, topK: 1 });
 * console.log(logProbs.length, ranks.length, sample.length);
 * model.close();
 * ```
 *
 * @module
 */

export {
  DraftModel,
  type DraftOptions,
  loadDraftModel,
  type LoadDraftModelOptions,
  loadModel,
  type LoadModelOptions,
  type Model,
  type ModelGenerateOptions,
  resolveDevice,
  resolveDeviceIndex,
} from "./src/api.ts";
export {
  type DeviceDrafting,
  type Drafter,
  generateSpeculative,
  ROUNDS_AHEAD,
  type SpeculativeOptions,
  type SpeculativeStats,
} from "./src/generate/speculative.ts";
export type { DownloadCallback } from "./src/checkpoint/hub.ts";
export {
  type DeviceSetting,
  type DTypeSetting,
  type GenerationSection,
  loadConfig,
  type MambaByteConfig,
  type ModelConfig,
  type ModelSettings,
  type OriginalSwitches,
  parseConfig,
  type RuntimeConfig,
} from "./src/config/config.ts";
export { completeDims, type ModelDims, type NormKind } from "./src/config/dims.ts";
export { MambaByteError } from "./src/errors.ts";
export {
  type DeviceTap,
  type ForwardChunksOptions,
  type ForwardResult,
  type LogProbResult,
  MambaByteLM,
  type MambaByteLMOptions,
  type OverlappedDownloads,
  TAP_NAMES,
  type TapChunk,
  type TapName,
  tapWidth,
} from "./src/model/model.ts";
export { RecurrentState, type VerifyBuffers, Workspace } from "./src/model/workspace.ts";
export type { LayerWeights, ModelWeights } from "./src/model/weights.ts";
export type { SubwordTokenizer } from "./src/generate/tokenizer.ts";
export { generateBytes, type GenerateOptions } from "./src/generate/decode.ts";
export type { DecodeContext, DecodeKeyParts } from "./src/generate/decode_context.ts";
export type { GraphCache } from "./src/generate/graphs.ts";
export {
  Backend,
  type DeviceKind,
  type DiscreteAReduction,
  type DtProjOperands,
  type LayerBuffers,
  type LayerDType,
  type LayerShape,
  type LinearArgs,
  type NormKindCode,
  type NormOperands,
  type ProductDType,
  type Ptr,
  type ScanOperands,
  type WeightDType,
} from "./src/backend/backend.ts";
export { type ElemType, type HostArray, Tensor } from "./src/backend/tensor.ts";
export type { HostData, HostDType, HostTensor } from "./src/io/tensor.ts";
export { type Reduction, REDUCTIONS } from "./src/analysis/reductions.ts";
export { NONLINEARITIES, type Nonlinearity } from "./src/analysis/nonlinearity.ts";
export {
  type ExtractCommon,
  extractDiscreteA,
  extractInputSimilarity,
  type Extraction,
  extractModuleOutputs,
  parseModuleId,
} from "./src/analysis/extract.ts";
