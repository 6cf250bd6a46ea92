/**
 * The library API: load a configured model (checkpoint or random initialisation) onto a backend,
 * then run forwards with taps, log-probabilities, and generation.
 *
 * @module
 */

import { Backend, cudaDeviceCount, FLAG_ALLOW_TF32, hasCuda } from "./backend/backend.ts";
import { loadWeights, randomWeights } from "./checkpoint/mod.ts";
import {
  DEFAULT_CONFIG_PATH,
  type DeviceSetting,
  type DTypeSetting,
  loadConfig,
  type ModelConfig,
} from "./config/config.ts";
import { MambaByteError } from "./errors.ts";
import { generateBytes, type GenerateOptions } from "./generate/decode.ts";
import {
  type ForwardChunksOptions,
  type ForwardResult,
  type LogProbResult,
  MambaByteLM,
  type TapName,
} from "./model/model.ts";
import { uploadWeights } from "./model/weights.ts";
import type { RecurrentState } from "./model/workspace.ts";

/** Options of {@link loadModel}. */
export interface LoadModelOptions {
  /** YAML configuration (default configs/mambabyte_lm.yml). */
  configPath?: string;
  /** A model id of the configuration (default: its default_model_id). */
  modelId?: string;
  /**
   * A .safetensors, .pt/.bin or Hugging Face folder. Default: the config entry's checkpoint, or
   * random initialisation from `seed` when it has none. Pass null to force random weights.
   */
  checkpoint?: string | null;
  /** auto | cpu | cuda (default: the config's general.device). */
  device?: DeviceSetting;
  /** Storage of the large matrices, fp32 | bf16 (default: the config's general.dtype). */
  dtype?: DTypeSetting;
  /** Seed for random initialisation (default: the config's general.seed). */
  seed?: number;
  /** CPU threads (default: the config's general.threads; 0 = all cores). */
  threads?: number;
  /** Forbid TF32 in fp32 GEMMs on CUDA (default false: allowed, as the original sets allow_tf32). */
  strictFp32?: boolean;
  /** Forward chunk length in positions (default: the config's chunk_size). */
  chunkSize?: number;
  /** Called while weights upload: tensors done, total. */
  onProgress?: (done: number, total: number) => void;
}

/** Picks the backend for a device setting; throws a clear error when CUDA is asked for but absent. */
export function resolveDevice(device: DeviceSetting): "cpu" | "cuda" {
  if (device === "cpu") return "cpu";
  const built = hasCuda();
  const gpus = built ? cudaDeviceCount() : 0;
  if (device === "auto") return gpus > 0 ? "cuda" : "cpu";
  if (!built) {
    throw new MambaByteError(
      "device cuda: this build of the native library has no CUDA backend (rebuild on a machine " +
        "with the CUDA toolkit and cuBLAS: deno task build), or use --device cpu",
    );
  }
  if (gpus === 0) throw new MambaByteError("device cuda: no CUDA GPU found; use --device cpu");
  return "cuda";
}

/** A loaded MambaByte model with its backend. */
export class Model {
  /** The network (for lower-level work: chunked forwards, states, workspaces). */
  readonly lm: MambaByteLM;
  /** The configuration entry it was built from. */
  readonly config: ModelConfig;
  /** Where the weights came from: a path, or "random(seed=N)". */
  readonly source: string;
  #backend: Backend;

  /** Use {@link loadModel}. */
  constructor(lm: MambaByteLM, config: ModelConfig, source: string, backend: Backend) {
    this.lm = lm;
    this.config = config;
    this.source = source;
    this.#backend = backend;
  }

  /** "cpu" or "cuda". */
  get device(): "cpu" | "cuda" {
    return this.#backend.kind;
  }

  /** Logits (L, 256) and tapped module outputs ((L, width) per tap and layer). */
  forward(
    bytes: Uint8Array,
    options: { taps?: readonly TapName[]; layers?: readonly number[] } = {},
  ): Promise<ForwardResult> {
    return this.lm.forward(bytes, options);
  }

  /** Streams a chunked forward (bounded memory); see MambaByteLM.forwardChunks. */
  forwardChunks(bytes: Uint8Array, options: ForwardChunksOptions = {}): Promise<RecurrentState> {
    return this.lm.forwardChunks(bytes, options);
  }

  /** Natural-log probability and rank of each next byte, (L-1,) each. */
  logProbs(bytes: Uint8Array): Promise<LogProbResult> {
    return this.lm.logProbs(bytes);
  }

  /** Generates bytes after the prompt; one Uint8Array per sample. */
  generate(prompt: Uint8Array, options: GenerateOptions = {}): Promise<Uint8Array[]> {
    return generateBytes(this.lm, prompt, options);
  }

  /** Frees the weights and the backend. Idempotent. */
  close(): void {
    this.lm.close();
    this.#backend.close();
  }
}

/** Loads a model from a configuration (and optionally a checkpoint) onto a backend. */
export async function loadModel(options: LoadModelOptions = {}): Promise<Model> {
  const threads = options.threads;
  if (threads !== undefined && !(Number.isInteger(threads) && threads >= 0)) {
    throw new MambaByteError(`threads must be an integer >= 0 (0 = all cores; got ${threads})`);
  }
  const cfg = await loadConfig(options.configPath ?? DEFAULT_CONFIG_PATH);
  const mc = cfg.model(options.modelId);
  const seed = options.seed ?? cfg.general.seed;
  const dtype = options.dtype ?? cfg.general.dtype;
  const kind = resolveDevice(options.device ?? cfg.general.device);
  const path = options.checkpoint === null ? undefined : options.checkpoint ?? mc.checkpoint;
  const reader = path ? await loadWeights(path, mc.dims) : randomWeights(mc.dims, seed, mc.norm);
  const backend = Backend.create(kind, { threads: threads ?? cfg.general.threads });
  try {
    if (kind === "cuda" && !options.strictFp32) backend.setFlags(backend.flags | FLAG_ALLOW_TF32);
    const weights = await uploadWeights(
      backend,
      reader,
      mc.dims,
      dtype === "bf16" ? "bf16" : "f32",
      options.onProgress,
    );
    const lm = new MambaByteLM(backend, mc.dims, weights, {
      eps: mc.normEpsilon,
      chunkSize: options.chunkSize ?? mc.chunkSize,
    });
    return new Model(lm, mc, path ?? `random(seed=${seed})`, backend);
  } catch (e) {
    backend.close();
    throw e;
  } finally {
    reader.close();
  }
}
