/**
 * The library API: load a configured model (checkpoint or random initialisation) onto a backend,
 * then run forwards with taps, log-probabilities, and generation.
 *
 * @module
 */

import { Backend, cudaDeviceCount, FLAG_ALLOW_TF32, hasCuda } from "./backend/backend.ts";
import { f16ProductsByDefault, f16TwinBytes } from "./model/f16_twins.ts";
import { basename } from "node:path";
import { checkpointModel, describeShape, sameDims } from "./checkpoint/describe.ts";
import {
  type DownloadCallback,
  openCheckpoint,
  randomWeights,
  type WeightSource,
  weightSourceFromTensors,
} from "./checkpoint/mod.ts";
import { checkBounded } from "./config/defaults.ts";
import {
  DEFAULT_CONFIG_PATH,
  deviceIndex,
  type DeviceSetting,
  type DTypeSetting,
  loadConfig,
  type MambaByteConfig,
  type ModelConfig,
} from "./config/config.ts";
import { MambaByteError } from "./errors.ts";
import { DraftModel } from "./generate/drafter.ts";
import { SubwordTokenizer } from "./generate/tokenizer.ts";
import { MambaByteLM } from "./model/model.ts";
import { ensureMemory, weightBytes } from "./model/memory.ts";
import { uploadWeights } from "./model/weights.ts";

/** Re-exported: mod.ts and scripts take it from here. */
export { DraftModel };

export type { DraftOptions, ModelGenerateOptions } from "./model/model.ts";

/** Options of {@link loadModel}. */
export interface LoadModelOptions {
  /** YAML configuration (default configs/mambabyte_lm.yml). */
  configPath?: string;
  /**
   * A model id of the configuration. Default: with a checkpoint, the checkpoint's own dimensions
   * (and the id of a config entry of that shape, if any); without, model.default_model_id.
   * Given with a checkpoint, it must have the checkpoint's dimensions.
   */
  modelId?: string;
  /**
   * A .safetensors, .pt/.bin or Hugging Face folder, or a hub repo `hf://owner/name[@revision]`
   * (downloaded once into the Hugging Face cache). Default: the config entry's checkpoint, or
   * random initialisation from `seed` when it has none. Pass null to force random weights.
   */
  checkpoint?: string | null;
  /** auto | cpu | cuda | cuda:N (default: the config's general.device); cuda is cuda:0. */
  device?: DeviceSetting;
  /** Storage of the large matrices, fp32 | bf16 (default: the config's general.dtype). */
  dtype?: DTypeSetting;
  /** Seed for random initialisation (default: the config's general.seed). */
  seed?: number;
  /** CPU threads (default: the config's general.threads; 0 = all cores). */
  threads?: number;
  /**
   * Forbid TF32 in fp32 GEMMs on CUDA (default false: allowed, as the original sets allow_tf32;
   * wide forward products then run on fp16 operands scaled by powers of two, at TF32's precision).
   */
  strictFp32?: boolean;
  /**
   * With fp32 weights and TF32 allowed, whether forwards run in_proj and out_proj on the weights'
   * fp16 twins (MambaByteLMOptions.f16Products). Default: on CUDA unless
   * MAMBABYTE_CUDA_TF32_F16=0; true on the CPU gives its forward the same rounding (tests).
   */
  f16Products?: boolean;
  /** Forward chunk length in positions (default: the config's chunk_size). */
  chunkSize?: number;
  /** CUDA with bf16 weights: the forward's bf16 activations (see MambaByteLMOptions; default on). */
  bf16Activations?: boolean;
  /**
   * CUDA with bf16 activations: a forward without taps stores xz, u and delta as bf16 (see
   * MambaByteLMOptions.bf16MixerActivations; default on).
   */
  bf16MixerActivations?: boolean;
  /**
   * Decoding steps of up to 8 sequences run every layer in one native call, with the same bits
   * as the per-op steps (default true; false for A/B runs).
   */
  decodeLayers?: boolean;
  /** Called while weights upload: tensors done, total. */
  onProgress?: (done: number, total: number) => void;
  /**
   * Called once the model is known (its configuration, with the checkpoint's dimensions) and
   * before any memory is allocated or weights read: the place to refuse work that cannot fit.
   */
  beforeAllocate?: (config: ModelConfig) => void;
  /** Called while an `hf://` checkpoint downloads: bytes done, total, file name. */
  onDownload?: DownloadCallback;
  /**
   * Logits per position (default 256: the bytes). A subword drafter's model scores its whole
   * vocabulary: its tokenizer's size (at most the embedding's rows).
   */
  vocabOut?: number;
}

/** Picks the backend for a device setting; throws a clear error when CUDA is asked for but absent. */
export function resolveDevice(device: DeviceSetting): "cpu" | "cuda" {
  return resolveDeviceIndex(device).kind;
}

/**
 * The backend and GPU index of a device setting (index 0 for the CPU, auto and cuda); throws a
 * clear error when CUDA is asked for but absent, or cuda:N names a GPU this process cannot see.
 */
export function resolveDeviceIndex(device: DeviceSetting): { kind: "cpu" | "cuda"; index: number } {
  if (device === "cpu") return { kind: "cpu", index: 0 };
  const built = hasCuda();
  const gpus = built ? cudaDeviceCount() : 0;
  if (device === "auto") return { kind: gpus > 0 ? "cuda" : "cpu", index: 0 };
  if (!built) {
    throw new MambaByteError(
      `device ${device}: this build of the native library has no CUDA backend (rebuild on a ` +
        "machine with the CUDA toolkit and cuBLAS: deno task build), or use --device cpu",
    );
  }
  if (gpus === 0) throw new MambaByteError(`device ${device}: no CUDA GPU found; use --device cpu`);
  const index = deviceIndex(device);
  if (index >= gpus) {
    throw new MambaByteError(
      `device ${device}: this process sees ${gpus} CUDA GPU${gpus === 1 ? "" : "s"} ` +
        `(cuda:0 to cuda:${gpus - 1}; CUDA_VISIBLE_DEVICES may hide others)`,
    );
  }
  return { kind: "cuda", index };
}

/**
 * A loaded model: an alias of {@link MambaByteLM}, the one model type, kept so that
 * `import { type Model }` still type-checks. Not a second type.
 */
export type Model = MambaByteLM;

/** The model a load resolves to, before any weights move: its configuration and weight reader. */
interface ResolvedModel {
  config: ModelConfig;
  reader: WeightSource;
  /** Where the weights come from: a path, or "random(seed=N)". */
  source: string;
}

/**
 * Picks the model: a checkpoint defines its own dimensions (from its tensors and config.json), and
 * a model id given with it must agree; without a checkpoint the id's entry in the config is used
 * (with the entry's own checkpoint, else random weights from `seed`).
 */
async function resolveModel(
  cfg: MambaByteConfig,
  options: LoadModelOptions,
  seed: number,
): Promise<ResolvedModel> {
  const named = options.modelId === undefined ? undefined : cfg.model(options.modelId);
  const path = options.checkpoint === null
    ? undefined
    : options.checkpoint ?? (named ?? cfg.model()).checkpoint;
  if (!path) {
    const mc = named ?? cfg.model();
    return {
      config: mc,
      reader: randomWeights(mc.dims, seed, mc.norm),
      source: `random(seed=${seed})`,
    };
  }
  const ckpt = await openCheckpoint(path, { onDownload: options.onDownload });
  try {
    const found = checkpointModel(ckpt.tensors, ckpt.hfDims, path);
    let mc: ModelConfig;
    if (named) {
      if (!sameDims(named.dims, found.dims)) {
        throw new MambaByteError(
          `checkpoint ${path} has ${describeShape(found.dims)}, but model '${named.id}' of ` +
            `${cfg.path} has ${describeShape(named.dims)}: leave out --model_id to use the ` +
            `checkpoint's own dimensions`,
        );
      }
      mc = named;
    } else {
      // A config entry of the same shape lends its id and settings (the default id first).
      const ids = [cfg.defaultModelId, ...cfg.modelIds.filter((i) => i !== cfg.defaultModelId)];
      const match = ids.map((i) => cfg.model(i)).find((m) => sameDims(m.dims, found.dims));
      mc = match ?? { id: checkpointStem(path), dims: found.dims, ...cfg.commonSettings() };
    }
    if (found.normEpsilon !== undefined) mc = { ...mc, normEpsilon: found.normEpsilon };
    const reader = weightSourceFromTensors(ckpt.tensors, mc.dims, {
      label: path,
      modelName: mc.id,
      close: ckpt.close,
    });
    return { config: mc, reader, source: path };
  } catch (e) {
    ckpt.close();
    throw e;
  }
}

/** The checkpoint's name without folders and extension (the id of a model no config names). */
function checkpointStem(path: string): string {
  const base = basename(path.replace(/[/@]+$/, "").split("@")[0]);
  return base.replace(/\.(safetensors|pt|pth|bin|ckpt)$/i, "") || "checkpoint";
}

/** Loads a model from a configuration (and optionally a checkpoint) onto a backend. */
export async function loadModel(options: LoadModelOptions = {}): Promise<MambaByteLM> {
  const threads = options.threads;
  if (threads !== undefined) {
    const bad = checkBounded("threads", threads, "threads (0 = all cores)");
    if (bad) throw new MambaByteError(bad);
  }
  if (options.chunkSize !== undefined) {
    const bad = checkBounded("chunk_size", options.chunkSize, "chunkSize");
    if (bad) throw new MambaByteError(bad);
  }
  const cfg = await loadConfig(options.configPath ?? DEFAULT_CONFIG_PATH);
  const seed = options.seed ?? cfg.general.seed;
  const dtype = options.dtype ?? cfg.general.dtype;
  const { kind, index } = resolveDeviceIndex(options.device ?? cfg.general.device);
  const { config: mc, reader, source } = await resolveModel(cfg, options, seed);
  let backend: Backend | undefined;
  try {
    options.beforeAllocate?.(mc);
    const matrixBytes = dtype === "bf16" ? 2 : 4;
    // fp32 weights with TF32 allowed (on CUDA by default): in_proj's and out_proj's fp16 twins
    const f16 = dtype !== "bf16" && !options.strictFp32 &&
      (options.f16Products ?? f16ProductsByDefault(kind));
    const twins = f16 ? f16TwinBytes(mc.dims) : 0;
    const need = twins + weightBytes(mc.dims, matrixBytes, {
      vocabRows: reader.has("embedding.weight") ? reader.shape("embedding.weight")[0] : undefined,
      untiedHead: !reader.lmHeadTied,
    });
    const hint = "use a smaller model, --dtype bf16, or another device";
    ensureMemory(need, `model '${mc.id}' (${describeShape(mc.dims)})`, hint);
    backend = Backend.create(kind, { threads: threads ?? cfg.general.threads, device: index });
    if (kind === "cuda") {
      const free = Number(backend.info().mem_free ?? 0);
      if (free > 0) ensureMemory(need, `model '${mc.id}'`, hint, 0.95 * free, "GPU memory");
      if (!options.strictFp32) backend.setFlags(backend.flags | FLAG_ALLOW_TF32);
    }
    // the CPU's products are fp32 whatever the flag; it asks for the twins' rounding here
    if (f16 && kind !== "cuda") backend.setFlags(backend.flags | FLAG_ALLOW_TF32);
    const weights = await uploadWeights(
      backend,
      reader,
      mc.dims,
      dtype === "bf16" ? "bf16" : "f32",
      options.onProgress,
    );
    return new MambaByteLM(backend, mc, weights, {
      source,
      chunkSize: options.chunkSize,
      vocabOut: options.vocabOut,
      ownsBackend: true,
      bf16Activations: options.bf16Activations,
      bf16MixerActivations: options.bf16MixerActivations,
      decodeLayers: options.decodeLayers,
      f16Products: f16,
    });
  } catch (e) {
    backend?.close();
    throw e;
  } finally {
    reader.close();
  }
}

/** Options of {@link loadDraftModel}: a model's, plus its tokenizer. */
export interface LoadDraftModelOptions extends LoadModelOptions {
  /**
   * A subword drafter's tokenizer.json (or a folder holding one). Default: the checkpoint
   * folder's tokenizer.json when it has one, else the drafter is byte-level. null: byte-level.
   */
  tokenizer?: string | null;
}

/** The tokenizer.json a local checkpoint folder holds, if any. */
async function folderTokenizer(checkpoint: string | null | undefined): Promise<string | undefined> {
  if (!checkpoint || checkpoint.startsWith("hf://")) return undefined;
  const path = `${checkpoint.replace(/\/+$/, "")}/tokenizer.json`;
  try {
    return (await Deno.stat(path)).isFile ? path : undefined;
  } catch {
    return undefined;
  }
}

/**
 * Loads a drafter for speculative decoding ({@link MambaByteLM.generate}'s `draft`): any smaller
 * MambaByte model (byte-level), or a subword Mamba language model in the Hugging Face layout with
 * its tokenizer.json, run by our own model code over its whole vocabulary.
 */
export async function loadDraftModel(options: LoadDraftModelOptions = {}): Promise<DraftModel> {
  const { tokenizer: tokOpt, ...rest } = options;
  const tokPath = tokOpt === null ? undefined : tokOpt ?? await folderTokenizer(options.checkpoint);
  const tokenizer = tokPath === undefined ? undefined : await SubwordTokenizer.load(tokPath);
  // One thread on the CPU unless asked: a drafter's steps are small, and the target's pool
  // workers spin between its own ops (two pools of spinning workers starve each other).
  const model = await loadModel({
    ...rest,
    threads: rest.threads ?? 1,
    vocabOut: tokenizer?.vocabSize,
  });
  return new DraftModel(model, tokenizer);
}
