/**
 * Checkpoints: safetensors (read and write), PyTorch torch.save archives (zip + restricted
 * unpickler), Hugging Face style folders and hub repos (`hf://owner/name`, cached), canonical tensor
 * names, validation against model dimensions, and random initialisation.
 *
 * @example
 * ```ts ignore
 * import { loadWeights } from "./mod.ts";
 * const w = await loadWeights("model.pt", dims, { modelName: "353M" });
 * const emb = await w.readF32("embedding.weight");
 * w.close();
 * ```
 *
 * @module
 */

export { type ByteSource, FileByteSource, MemoryByteSource } from "./byte_source.ts";
export {
  DTYPE_SIZE,
  float32ToBF16,
  type RawTensor,
  type SafetensorsDType,
  toBFloat16,
  toFloat32,
} from "./dtypes.ts";
export { CheckpointError } from "./errors.ts";
export { describeDims, expectedTensors, inferDims } from "./expected.ts";
export { type HfDims, parseHfConfig } from "./hf_config.ts";
export {
  type DownloadCallback,
  type HubOptions,
  type HubSettings,
  hubSettings,
  type HubSpec,
  isHubSpec,
  parseHubSpec,
  resolveHubSnapshot,
} from "./hub.ts";
export { canonicalizeTensors, canonicalName } from "./names.ts";
export {
  type CheckpointFormat,
  openCheckpoint,
  type OpenCheckpointOptions,
  type OpenedCheckpoint,
} from "./open.ts";
export { openPytorch, readPytorch } from "./pytorch.ts";
export { randomWeights } from "./random_init.ts";
export {
  openSafetensors,
  readSafetensors,
  type SafetensorsContents,
  type SafetensorsEntry,
  writeSafetensors,
  writeSafetensorsTo,
} from "./safetensors.ts";
export {
  detectNormKind,
  loadWeights,
  type LoadWeightsOptions,
  type WeightSource,
  weightSourceFromTensors,
} from "./weights.ts";
