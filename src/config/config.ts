/**
 * YAML configuration -> model configurations and runtime settings, with the original scripts'
 * semantics: `general` holds runtime defaults, `model.common` is merged under `model.<model_id>`,
 * and the `generation` / `visualization` sections give script defaults.
 *
 * @module
 */

import { dirname, isAbsolute, join } from "node:path";
import { isHubSpec } from "../checkpoint/hub.ts";
import { MambaByteError } from "../errors.ts";
import { completeDims, type ModelDims, type NormKind } from "./dims.ts";
import { parseYaml } from "./yaml.ts";

/** Where a model runs: "auto" picks CUDA when the library has it and a GPU is present. */
export type DeviceSetting = "auto" | "cpu" | "cuda";
/** Storage of the large weight matrices. */
export type DTypeSetting = "fp32" | "bf16";

/** A malformed or missing configuration. */
export class ConfigError extends MambaByteError {
  /** Creates the error. */
  constructor(message: string) {
    super(message);
    this.name = "ConfigError";
  }
}

/** One model of the configuration file. */
export interface ModelConfig {
  /** The id under `model:` (e.g. "972M"). */
  id: string;
  dims: ModelDims;
  normEpsilon: number;
  /** Norm used for random initialisation (checkpoints decide for themselves). */
  norm: NormKind;
  /** Forward chunk length in positions. */
  chunkSize: number;
  /** Default checkpoint, resolved against the config file's folder (an `hf://` spec as is). */
  checkpoint?: string;
}

/** Runtime settings from `general`. */
export interface RuntimeConfig {
  device: DeviceSetting;
  dtype: DTypeSetting;
  seed: number;
  threads: number;
}

/** The whole configuration file. */
export interface MambaByteConfig {
  /** The file it came from. */
  path: string;
  general: RuntimeConfig;
  /** Model ids in file order. */
  modelIds: string[];
  defaultModelId: string;
  /** Raw `generation` section (script defaults). */
  generation: Record<string, unknown>;
  /** Raw `visualization` section (script defaults). */
  visualization: Record<string, unknown>;
  /** Resolves a model id; throws {@link ConfigError} naming the known ids. */
  model(id?: string): ModelConfig;
}

const RESERVED_MODEL_KEYS = new Set(["common", "default_model_id"]);

function isRecord(v: unknown): v is Record<string, unknown> {
  return typeof v === "object" && v !== null && !Array.isArray(v);
}

function section(root: Record<string, unknown>, key: string, path: string) {
  const v = root[key];
  if (v === undefined || v === null) return {};
  if (!isRecord(v)) throw new ConfigError(`${path}: '${key}' must be a mapping`);
  return v;
}

function intField(m: Record<string, unknown>, key: string, where: string, min = 1): number {
  const v = m[key];
  if (typeof v !== "number" || !Number.isInteger(v) || v < min) {
    throw new ConfigError(
      `${where}: '${key}' must be an integer >= ${min} (got ${JSON.stringify(v)})`,
    );
  }
  return v;
}

function choice<T extends string>(v: unknown, options: readonly T[], where: string, def: T): T {
  if (v === undefined || v === null) return def;
  if (typeof v !== "string" || !options.includes(v as T)) {
    throw new ConfigError(
      `${where} must be one of ${options.join(", ")} (got ${JSON.stringify(v)})`,
    );
  }
  return v as T;
}

/** Parses a configuration document (already read); `path` is used for messages and relative paths. */
export function parseConfig(text: string, path: string): MambaByteConfig {
  let doc: unknown;
  try {
    doc = parseYaml(text);
  } catch (e) {
    throw new ConfigError(`${path}: invalid YAML: ${(e as Error).message.split("\n")[0]}`);
  }
  if (!isRecord(doc)) throw new ConfigError(`${path}: expected a mapping at the top level`);
  const general = section(doc, "general", path);
  const models = section(doc, "model", path);
  const common = section(models, "common", path);
  const modelIds = Object.keys(models).filter((k) => !RESERVED_MODEL_KEYS.has(k));
  if (modelIds.length === 0) throw new ConfigError(`${path}: no models under 'model:'`);
  const declaredDefault = models["default_model_id"];
  const defaultModelId = declaredDefault === undefined ? modelIds[0] : String(declaredDefault);
  if (!modelIds.includes(defaultModelId)) {
    throw new ConfigError(`${path}: default_model_id '${defaultModelId}' is not a model id`);
  }
  const seed = general["seed"] ?? 4740;
  if (typeof seed !== "number" || !Number.isInteger(seed)) {
    throw new ConfigError(`${path}: general.seed must be an integer`);
  }
  const threads = general["threads"] ?? 0;
  if (typeof threads !== "number" || !Number.isInteger(threads) || threads < 0) {
    throw new ConfigError(`${path}: general.threads must be an integer >= 0`);
  }
  const runtime: RuntimeConfig = {
    device: choice(
      general["device"],
      ["auto", "cpu", "cuda"] as const,
      `${path}: general.device`,
      "auto",
    ),
    dtype: choice(general["dtype"], ["fp32", "bf16"] as const, `${path}: general.dtype`, "fp32"),
    seed,
    threads,
  };
  const baseDir = dirname(path);
  const model = (id?: string): ModelConfig => {
    const key = id ?? defaultModelId;
    if (!modelIds.includes(key)) {
      throw new ConfigError(`unknown model id '${key}' (${path} defines: ${modelIds.join(", ")})`);
    }
    const own = models[key];
    if (!isRecord(own)) throw new ConfigError(`${path}: model.${key} must be a mapping`);
    const m = { ...common, ...own };
    const where = `${path}: model.${key}`;
    const dtRank = m["dt_rank"] ?? "auto";
    if (
      dtRank !== "auto" && (typeof dtRank !== "number" || !Number.isInteger(dtRank) || dtRank < 1)
    ) {
      throw new ConfigError(`${where}: 'dt_rank' must be "auto" or a positive integer`);
    }
    const dims = completeDims({
      vocabSize: intField(m, "vocab_size", where),
      dModel: intField(m, "d_model", where),
      nLayer: intField(m, "n_layer", where),
      dState: intField(m, "d_state", where),
      dConv: intField(m, "d_conv", where),
      expand: intField(m, "expand", where),
      dtRank: dtRank as number | "auto",
    });
    const eps = m["norm_epsilon"] ?? 1e-5;
    if (typeof eps !== "number" || !(eps > 0)) {
      throw new ConfigError(`${where}: 'norm_epsilon' must be a positive number`);
    }
    const ckpt = m["checkpoint"];
    if (ckpt !== undefined && ckpt !== null && typeof ckpt !== "string") {
      throw new ConfigError(`${where}: 'checkpoint' must be a path`);
    }
    return {
      id: key,
      dims,
      normEpsilon: eps,
      norm: choice(m["norm"], ["layernorm", "rmsnorm"] as const, `${where}: 'norm'`, "layernorm"),
      chunkSize: m["chunk_size"] === undefined ? 2048 : intField(m, "chunk_size", where),
      checkpoint: typeof ckpt === "string"
        ? (isAbsolute(ckpt) || isHubSpec(ckpt) ? ckpt : join(baseDir, ckpt))
        : undefined,
    };
  };
  return {
    path,
    general: runtime,
    modelIds,
    defaultModelId,
    generation: section(doc, "generation", path),
    visualization: section(doc, "visualization", path),
    model,
  };
}

/** Reads and parses a configuration file; a missing file is a {@link ConfigError}. */
export async function loadConfig(path: string): Promise<MambaByteConfig> {
  let text: string;
  try {
    text = await Deno.readTextFile(path);
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) throw new ConfigError(`config file not found: ${path}`);
    throw new ConfigError(`cannot read config file ${path}: ${(e as Error).message}`);
  }
  return parseConfig(text, path);
}

/** The configuration file shipped with the package (configs/mambabyte_lm.yml). */
export const DEFAULT_CONFIG_PATH = "configs/mambabyte_lm.yml";
