/**
 * YAML configuration -> model configurations and runtime settings, read as the original scripts
 * read their `scripts/configs/mambabyte_lm.yml`: `general` holds runtime settings; every other
 * top-level mapping that has a key equal to the model id becomes its `common` entry updated with
 * that key's entry (so `model.common` is merged under `model.<model_id>`, and `generation` or
 * `visualization` may be split per model the same way). Both spellings of the original and of
 * mamba_ssm are read (`num_layers`/`n_layer`, `norm_eps`/`norm_epsilon`); unknown keys are errors.
 *
 * @module
 */

import { dirname, isAbsolute, join } from "node:path";
import { fileURLToPath } from "node:url";
import { MambaByteError, printable } from "../errors.ts";
import { BOUNDS, checkBounded, DEFAULTS, describe, TEMPERATURE_RANGE } from "./defaults.ts";
import { completeDims, type ModelDims, type NormKind } from "./dims.ts";
import { readTextFileLimited } from "../io/read_limited.ts";
import { MAX_CONFIG_BYTES, parseYaml } from "./yaml.ts";

/**
 * Where a model runs: "auto" picks CUDA when the library has it and a GPU is present; "cuda" is
 * the first visible GPU, "cuda:N" the N-th (as PyTorch and CUDA_VISIBLE_DEVICES number them).
 */
export type DeviceSetting = "auto" | "cpu" | "cuda" | `cuda:${number}`;

/** The device settings {@link parseDeviceSetting} accepts, for messages. */
export const DEVICE_CHOICES = "auto, cpu, cuda, cuda:N";

/**
 * A device setting from text ("auto", "cpu", "cuda", "cuda:N" with N from 0 to the bound of
 * device_index), or null when the text is none of them.
 */
export function parseDeviceSetting(text: unknown): DeviceSetting | null {
  if (text === "auto" || text === "cpu" || text === "cuda") return text;
  const m = typeof text === "string" ? /^cuda:(0|[1-9][0-9]{0,5})$/.exec(text) : null;
  if (!m || checkBounded("device_index", Number(m[1])) !== null) return null;
  return `cuda:${Number(m[1])}`;
}

/** The backend and device index a device setting names (auto and cuda: index 0). */
export function deviceIndex(device: DeviceSetting): number {
  return device.startsWith("cuda:") ? Number(device.slice(5)) : 0;
}
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

/** Settings of a model that do not depend on its dimensions. */
export interface ModelSettings {
  /** The norms' epsilon. */
  normEpsilon: number;
  /** Norm used for random initialisation (checkpoints decide for themselves). */
  norm: NormKind;
  /** Forward chunk length in positions, or "auto" (by the device: src/model/chunk_size.ts). */
  chunkSize: number | "auto";
}

/** One model of the configuration file. */
export interface ModelConfig extends ModelSettings {
  /** The id under `model:` (e.g. "972M"). */
  id: string;
  /** The network's shape (the checkpoint's, once one is read). */
  dims: ModelDims;
  /** Default checkpoint: a path resolved against the config file's folder, or an hf:// URL. */
  checkpoint?: string;
}

/** Runtime settings from `general`. */
export interface RuntimeConfig {
  /** general.device: "auto", "cpu", "cuda" or "cuda:N". */
  device: DeviceSetting;
  /** general.dtype: the weights' type in backend memory. */
  dtype: DTypeSetting;
  /** general.seed: random initialisation and sampling. */
  seed: number;
  /** general.threads: CPU threads (0: every CPU this process may run on). */
  threads: number;
}

/**
 * The original's runtime switches (passed there as keyword arguments to the model). They select
 * PyTorch code paths in the original; here the same kernels serve every script, so they are
 * accepted and have no effect.
 */
export interface OriginalSwitches {
  /** The original's mamba_ssm fast path switch (accepted, no effect). */
  use_fast_path?: boolean;
  /** The original's switch off its optimisations (accepted, no effect). */
  disable_optimizations?: boolean;
  /** The original's generation-mode switch (accepted, no effect). */
  is_generating?: boolean;
}

/** Defaults of generate.ts from the `generation` section (flags override them). */
export interface GenerationSection extends OriginalSwitches {
  /** Bytes to generate per sample. */
  max_new_tokens?: number;
  /** Samples per prompt. */
  num_samples?: number;
  /** Sampling temperature (0: greedy). */
  temperature?: number;
  /** Keep the k most likely bytes (0: off). */
  top_k?: number;
  /** Keep the smallest set of bytes with this much probability (0 or 1: off). */
  top_p?: number;
}

/** The whole configuration file. */
export interface MambaByteConfig {
  /** The file it came from. */
  path: string;
  /** The `general` section. */
  general: RuntimeConfig;
  /** Model ids in file order. */
  modelIds: string[];
  /** model.default_model_id, else "972M" when defined (the original's default), else the first. */
  defaultModelId: string;
  /** Resolves a model id; throws {@link ConfigError} naming the known ids. */
  model(id?: string): ModelConfig;
  /** `model.common`'s settings, for a model whose dimensions come from its checkpoint. */
  commonSettings(): ModelSettings;
  /** The `generation` section for a model id (merged per model as the original does). */
  generation(id?: string): GenerationSection;
  /** The `visualization` section for a model id (the original's switches only). */
  visualization(id?: string): OriginalSwitches;
}

const SWITCH_KEYS = ["use_fast_path", "disable_optimizations", "is_generating"] as const;
const GENERAL_KEYS = ["device", "dtype", "seed", "threads"];
const MODEL_KEYS = [
  "vocab_size",
  "d_model",
  "n_layer",
  "num_layers",
  "d_state",
  "d_conv",
  "expand",
  "dt_rank",
  "norm",
  "norm_epsilon",
  "norm_eps",
  "chunk_size",
  "checkpoint",
  ...SWITCH_KEYS,
];
const GENERATION_KEYS = ["max_new_tokens", "num_samples", "temperature", "top_k", "top_p"];
const TOP_LEVEL_KEYS = ["general", "model", "generation", "visualization"];
const RESERVED_MODEL_KEYS = new Set(["common", "default_model_id"]);
/** Spellings of one setting: the original's first, then mamba_ssm's. */
const ALIASES: readonly [string, string][] = [["num_layers", "n_layer"], [
  "norm_eps",
  "norm_epsilon",
]];

type Mapping = Record<string, unknown>;

function isRecord(v: unknown): v is Mapping {
  return typeof v === "object" && v !== null && !Array.isArray(v);
}

/** Parses a configuration document (already read); `path` is used for messages and relative paths. */
export function parseConfig(text: string, path: string): MambaByteConfig {
  let doc: unknown;
  try {
    doc = parseYaml(text);
  } catch (e) {
    const first = String((e as Error).message).split("\n")[0];
    throw new ConfigError(`${path}: invalid YAML: ${printable(first, 200)}`);
  }
  if (!isRecord(doc)) throw new ConfigError(`${path}: expected a mapping at the top level`);
  const fail = (msg: string): never => {
    throw new ConfigError(`${path}: ${msg}`);
  };
  checkKeys(doc, TOP_LEVEL_KEYS, "the top level", fail);
  const mapping = (v: unknown, where: string): Mapping => {
    if (v === undefined || v === null) return {};
    return isRecord(v) ? v : fail(`'${where}' must be a mapping`);
  };
  const general = mapping(doc.general, "general");
  checkKeys(general, GENERAL_KEYS, "general", fail);
  const models = mapping(doc.model, "model");
  const common = mapping(models.common, "model.common");
  const modelIds = Object.keys(models).filter((k) => !RESERVED_MODEL_KEYS.has(k));
  if (modelIds.length === 0) fail("no models under 'model:'");
  const declared = models.default_model_id;
  if (declared !== undefined && declared !== null && typeof declared !== "string") {
    fail(`model.default_model_id must be a model id (got ${describe(declared)})`);
  }
  const defaultModelId = typeof declared === "string"
    ? declared
    : modelIds.includes(DEFAULTS.model_id)
    ? DEFAULTS.model_id
    : modelIds[0];
  if (!modelIds.includes(defaultModelId)) {
    fail(`default_model_id '${defaultModelId}' is not a model id (${modelIds.join(", ")})`);
  }
  const runtime = parseGeneral(general, fail);
  const baseDir = dirname(path);
  // Every entry is checked now, so a typo anywhere is reported whichever model is used.
  const parsed = new Map<string, ModelConfig>();
  for (const id of modelIds) {
    const own = mapping(models[id], `model.${id}`);
    parsed.set(id, parseModel(id, { ...common, ...own }, baseDir, fail));
  }
  const commonEntry = mergedAliases(common, "model.common", fail);
  checkKeys(commonEntry, MODEL_KEYS, "model.common", fail);
  const commonSettings = parseSettings(commonEntry, "model.common", fail);
  const perModel = (name: string, keys: string[]) => {
    const raw = mapping(doc[name], name);
    const sections = new Map<string, Mapping>();
    for (const id of [...modelIds, ""]) {
      const m = mergeForModel(raw, id, name, fail);
      checkKeys(m, keys, id ? `${name} (model ${id})` : name, fail);
      sections.set(id, m);
    }
    return (id?: string) => sections.get(id ?? defaultModelId) ?? sections.get("")!;
  };
  const generation = perModel("generation", [...GENERATION_KEYS, ...SWITCH_KEYS]);
  const visualization = perModel("visualization", [...SWITCH_KEYS]);
  for (const id of [...modelIds, undefined]) {
    const where = id ? `generation (model ${id})` : "generation";
    parseGeneration(generation(id), where, fail);
    parseSwitches(visualization(id), id ? `visualization (model ${id})` : "visualization", fail);
  }
  return {
    path,
    general: runtime,
    modelIds,
    defaultModelId,
    model: (id?: string) => {
      const key = id ?? defaultModelId;
      const m = parsed.get(key);
      if (!m) {
        throw new ConfigError(
          `unknown model id '${key}' (${path} defines: ${modelIds.join(", ")})`,
        );
      }
      return m;
    },
    commonSettings: () => commonSettings,
    generation: (id?: string) => parseGeneration(generation(id), "generation", fail),
    visualization: (id?: string) => parseSwitches(visualization(id), "visualization", fail),
  };
}

/** The original's merge: a section with the model id as a key becomes common + that entry. */
function mergeForModel(
  raw: Mapping,
  id: string,
  name: string,
  fail: (m: string) => never,
): Mapping {
  const perModel = Object.hasOwn(raw, "common") || (id !== "" && Object.hasOwn(raw, id));
  if (!perModel) return raw;
  const pick = (k: string): Mapping => {
    const v = raw[k];
    if (v === undefined || v === null) return {};
    return isRecord(v) ? v : fail(`'${name}.${k}' must be a mapping`);
  };
  return { ...pick("common"), ...(id !== "" && Object.hasOwn(raw, id) ? pick(id) : {}) };
}

function checkKeys(
  m: Mapping,
  allowed: readonly string[],
  where: string,
  fail: (m: string) => never,
) {
  for (const k of Object.keys(m)) {
    if (!allowed.includes(k)) {
      fail(
        `unknown key '${describe(k).replace(/^"|"$/g, "")}' in ${where} (known: ${
          allowed.join(", ")
        })`,
      );
    }
  }
}

/** Folds the original's spellings into mamba_ssm's; both present and different is an error. */
function mergedAliases(m: Mapping, where: string, fail: (m: string) => never): Mapping {
  const out = { ...m };
  for (const [original, ssm] of ALIASES) {
    if (!Object.hasOwn(out, original)) continue;
    if (Object.hasOwn(out, ssm) && out[ssm] !== out[original]) {
      fail(
        `${where}: '${original}' (${describe(out[original])}) and '${ssm}' (${
          describe(out[ssm])
        }) are the same setting with different values: keep one`,
      );
    }
    out[ssm] = out[original];
    delete out[original];
  }
  return out;
}

function parseGeneral(g: Mapping, fail: (m: string) => never): RuntimeConfig {
  const seed = g.seed ?? DEFAULTS.seed;
  if (typeof seed !== "number" || !Number.isSafeInteger(seed)) {
    fail(`general.seed must be an integer (got ${describe(seed)})`);
  }
  const threads = g.threads ?? DEFAULTS.threads;
  const bad = checkBounded("threads", threads, "general.threads");
  if (bad) fail(bad);
  return {
    device: deviceChoice(g.device, fail) ?? DEFAULTS.device,
    dtype: choice(g.dtype, ["fp32", "bf16"] as const, "general.dtype", fail) ?? DEFAULTS.dtype,
    seed: seed as number,
    threads: threads as number,
  };
}

function deviceChoice(v: unknown, fail: (m: string) => never): DeviceSetting | undefined {
  if (v === undefined || v === null) return undefined;
  const device = parseDeviceSetting(v);
  if (device === null) fail(`general.device must be one of ${DEVICE_CHOICES} (got ${describe(v)})`);
  return device;
}

function choice<T extends string>(
  v: unknown,
  options: readonly T[],
  where: string,
  fail: (m: string) => never,
): T | undefined {
  if (v === undefined || v === null) return undefined;
  if (typeof v !== "string" || !options.includes(v as T)) {
    fail(`${where} must be one of ${options.join(", ")} (got ${describe(v)})`);
  }
  return v as T;
}

function parseSettings(m: Mapping, where: string, fail: (m: string) => never): ModelSettings {
  const eps = m.norm_epsilon ?? DEFAULTS.norm_epsilon;
  if (typeof eps !== "number" || !Number.isFinite(eps) || !(eps > 0) || eps > 1) {
    fail(`${where}: 'norm_epsilon' must be a number in (0, 1] (got ${describe(eps)})`);
  }
  const chunk = m.chunk_size ?? DEFAULTS.chunk_size;
  const bad = chunk === "auto" ? null : checkBounded("chunk_size", chunk, `${where}: 'chunk_size'`);
  if (bad) fail(`${bad}, or auto`);
  return {
    normEpsilon: eps as number,
    norm: choice(m.norm, ["layernorm", "rmsnorm"] as const, `${where}: 'norm'`, fail) ??
      "layernorm",
    chunkSize: chunk as number | "auto",
  };
}

function parseModel(
  id: string,
  raw: Mapping,
  baseDir: string,
  fail: (m: string) => never,
): ModelConfig {
  const where = `model.${id}`;
  const m = mergedAliases(raw, where, fail);
  checkKeys(m, MODEL_KEYS, where, fail);
  parseSwitches(m, where, fail);
  const int = (key: string) => {
    if (m[key] === undefined) fail(`${where}: '${key}' is required`);
    const bad = checkBounded(key, m[key], `${where}: '${key}'`);
    return bad ? fail(bad) : m[key] as number;
  };
  const dtRank = m.dt_rank ?? "auto";
  if (dtRank !== "auto") {
    const bad = checkBounded("dt_rank", dtRank, `${where}: 'dt_rank' ("auto" or an integer)`);
    if (bad) fail(bad);
  }
  const dims = completeDims({
    vocabSize: int("vocab_size"),
    dModel: int("d_model"),
    nLayer: int("n_layer"),
    dState: int("d_state"),
    dConv: int("d_conv"),
    expand: m.expand === undefined ? 2 : int("expand"),
    dtRank: dtRank as number | "auto",
  });
  const ckpt = m.checkpoint;
  if (ckpt !== undefined && ckpt !== null && typeof ckpt !== "string") {
    fail(`${where}: 'checkpoint' must be a path (got ${describe(ckpt)})`);
  }
  return {
    id,
    dims,
    ...parseSettings(m, where, fail),
    checkpoint: typeof ckpt === "string" ? resolveCheckpoint(ckpt, baseDir) : undefined,
  };
}

function resolveCheckpoint(ckpt: string, baseDir: string): string {
  if (/^[a-z][a-z0-9+.-]*:\/\//i.test(ckpt) || isAbsolute(ckpt)) return ckpt;
  return join(baseDir, ckpt);
}

function parseSwitches(m: Mapping, where: string, fail: (m: string) => never): OriginalSwitches {
  const out: OriginalSwitches = {};
  for (const k of SWITCH_KEYS) {
    if (m[k] === undefined || m[k] === null) continue;
    if (typeof m[k] !== "boolean") {
      fail(`${where}: '${k}' must be true or false (got ${describe(m[k])})`);
    }
    out[k] = m[k] as boolean;
  }
  return out;
}

function parseGeneration(m: Mapping, where: string, fail: (m: string) => never): GenerationSection {
  const out: GenerationSection = parseSwitches(m, where, fail);
  for (const k of ["max_new_tokens", "num_samples", "top_k"] as const) {
    if (m[k] === undefined || m[k] === null) continue;
    const bad = checkBounded(k, m[k], `${where}: '${k}'`);
    if (bad) fail(bad);
    out[k] = m[k] as number;
  }
  if (m.temperature !== undefined && m.temperature !== null) {
    const bad = temperatureError(m.temperature);
    if (bad) fail(`${where}: 'temperature' ${bad}`);
    out.temperature = m.temperature as number;
  }
  if (m.top_p !== undefined && m.top_p !== null) {
    const bad = topPError(m.top_p);
    if (bad) fail(`${where}: 'top_p' ${bad}`);
    out.top_p = m.top_p as number;
  }
  return out;
}

/** Why a temperature is unusable, or null (0 means greedy and needs top_k 1). */
export function temperatureError(t: unknown): string | null {
  const [lo, hi] = TEMPERATURE_RANGE;
  if (typeof t !== "number" || !(t === 0 || (t >= lo && t <= hi))) {
    return `must be 0 or a number from ${lo} to ${hi} (got ${describe(t)})`;
  }
  return null;
}

/** Why a top-p value is unusable, or null (0 and 1 both mean off). */
export function topPError(p: unknown): string | null {
  if (typeof p !== "number" || !(p >= 0 && p <= 1)) {
    return `must be a number from 0 to 1 (got ${describe(p)})`;
  }
  return null;
}

/** Reads and parses a configuration file (a path, a file: URL or an http(s) URL). */
export async function loadConfig(path: string): Promise<MambaByteConfig> {
  if (/^https?:\/\//.test(path)) return parseConfig(await fetchConfig(path), path);
  const file = path.startsWith("file:") ? fileURLToPath(path) : path;
  const text = await readTextFileLimited(file, MAX_CONFIG_BYTES, "config file", {
    makeError: (message) => new ConfigError(message),
  });
  return parseConfig(text, file);
}

async function fetchConfig(url: string): Promise<string> {
  let res: Response;
  try {
    res = await fetch(url, { signal: AbortSignal.timeout(30_000) });
  } catch (e) {
    throw new ConfigError(`cannot fetch config ${url}: ${(e as Error).message}`);
  }
  if (!res.ok) {
    await res.body?.cancel();
    throw new ConfigError(`cannot fetch config ${url}: HTTP ${res.status}`);
  }
  const body = new Uint8Array(await res.arrayBuffer());
  if (body.length > MAX_CONFIG_BYTES) {
    throw new ConfigError(`config ${url} is larger than ${MAX_CONFIG_BYTES} bytes`);
  }
  return new TextDecoder().decode(body);
}

/**
 * The configuration file shipped with the toolkit (configs/mambabyte_lm.yml), located from this
 * module, so it is found whatever the working folder (a path, or a URL when imported by URL).
 */
export const DEFAULT_CONFIG_PATH: string = (() => {
  const url = new URL("../../configs/mambabyte_lm.yml", import.meta.url);
  return url.protocol === "file:" ? fileURLToPath(url) : url.href;
})();

/** Bounds of the integer settings, for help texts and other modules. */
export { BOUNDS };
