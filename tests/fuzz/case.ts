/**
 * What a fuzz case is (the files to create, the entry point, the payload), the small model every
 * generated checkpoint holds, and helpers the generators share.
 *
 * @module
 */

import { completeDims, type ModelDims, type NormKind } from "../../src/config/dims.ts";
import { type FakeTensor, modelTensors, type Scheme } from "../checkpoint_helpers.ts";
import type { Rng } from "./rng.ts";

/** The formats fuzzed, each with its own entry point (see targets.ts). */
export const TARGETS = [
  "safetensors",
  "torch-zip",
  "legacy-torch",
  "pickle",
  "yaml",
  "hf-folder",
  "raw",
  "write",
  "read",
  "tokenizer",
  "argv",
] as const;
/** One of {@link TARGETS}. */
export type Target = (typeof TARGETS)[number];

/** A file (or FIFO, folder, link) to create in the case's folder. */
export interface CaseFile {
  path: string;
  data?: Uint8Array;
  kind?: "file" | "fifo" | "dir" | "symlink";
  /** Symlink target. */
  link?: string;
  /** Extend the file to this size (sparse: never written, reads as zeros). */
  size?: number;
}

/** Everything a worker needs to run one case. */
export interface FuzzCase {
  target: Target;
  /** What was generated and how it was mutated (for reports). */
  desc: string;
  files: CaseFile[];
  /** The checkpoint file or folder, relative to the case folder. */
  entry: string;
  /** pickle: the opcode stream given straight to unpickle() (else through a zip). */
  pickle?: Uint8Array;
  /** yaml: the document. */
  yaml?: string;
  /** write: the record and the output file name. */
  record?: Record<string, unknown>;
  /** argv: the command line (`@DIR@` stands for the case folder) and the script it runs. */
  argv?: string[];
  script?: "discrete_A" | "module_outputs" | "input_sim" | "generate" | "evaluate";
  /** Also run the command line on the entry (a child process; see targets.ts). */
  cli?: boolean;
}

/** The model every generated checkpoint holds (small: files of ~40 KB). */
export const FUZZ_DIMS: ModelDims = completeDims({
  vocabSize: 256,
  dModel: 8,
  nLayer: 2,
  dState: 4,
  dConv: 4,
  expand: 2,
});

/** UTF-8 encoder shared by the generators. */
export const enc = new TextEncoder();
const tensorCache = new Map<string, FakeTensor[]>();

/** Builds the base tensors once per worker (random init is deterministic). */
export async function initGenerators(): Promise<void> {
  for (const norm of ["layernorm", "rmsnorm"] as NormKind[]) {
    for (const scheme of ["canonical", "transformers", "mamba_ssm", "mambabyte"] as Scheme[]) {
      tensorCache.set(`${norm}/${scheme}`, await modelTensors(FUZZ_DIMS, norm, scheme));
    }
  }
}

/** The fuzz model's tensors in a random naming scheme and norm (copies). */
export function baseTensors(rng: Rng): FakeTensor[] {
  const key = `${rng.pick(["layernorm", "rmsnorm"])}/${
    rng.pick(["canonical", "transformers", "mamba_ssm", "mambabyte"])
  }`;
  const ts = tensorCache.get(key);
  if (!ts) throw new Error("initGenerators() was not called");
  return ts.map((t) => ({ ...t, shape: t.shape.slice() }));
}

/** Strings that stress names and values: control characters, escapes, long, unicode. */
export function nastyString(rng: Rng): string {
  return rng.pick([
    "",
    "\u0000",
    "\x1b[31mred\x1b[0m\n",
    "a\nb",
    "\ud800",
    "__proto__",
    "constructor",
    "../../etc/passwd",
    "x".repeat(rng.size(200_000)),
    "\u202eevil",
    "layers.0.mixer.D",
    "embedding.weight",
    "🦀".repeat(rng.size(100)),
  ]);
}

/** JSON nested `depth` levels deep. */
export function deepJson(rng: Rng, depth: number): string {
  const [open, close] = rng.chance(0.5) ? ["[", "]"] : ['{"a":', "}"];
  return open.repeat(depth) + "1" + close.repeat(depth);
}
