/**
 * Maps the tensor names of the three checkpoint schemes to one canonical set:
 * transformers (`backbone.embeddings.weight`), mamba_ssm (`backbone.embedding.weight`) and the
 * original MambaByte code under DDP (`module.mambabyte.token_embedding.weight`) all become
 * `embedding.weight`, `layers.<i>.mixer.*`, `layers.<i>.norm.*`, `norm_f.*`, `lm_head.weight`.
 *
 * @module
 */

import type { RawTensor } from "./dtypes.ts";
import { CheckpointError } from "./errors.ts";
import { quote, showName } from "./show.ts";

const ROOT_PREFIXES = ["backbone.", "mambabyte.", "model."];
const FIRST_COMPONENT: Readonly<Record<string, string>> = {
  embeddings: "embedding",
  token_embedding: "embedding",
  embedding: "embedding",
  final_norm: "norm_f",
  norm_f: "norm_f",
};

/** The canonical name of a tensor name found in a file. */
export function canonicalName(name: string): string {
  let n = name;
  while (n.startsWith("module.")) n = n.slice("module.".length);
  const root = ROOT_PREFIXES.find((p) => n.startsWith(p));
  if (root) n = n.slice(root.length);
  const dot = n.indexOf(".");
  const first = dot < 0 ? n : n.slice(0, dot);
  const mapped = Object.hasOwn(FIRST_COMPONENT, first) ? FIRST_COMPONENT[first] : undefined;
  return mapped === undefined ? n : mapped + (dot < 0 ? "" : n.slice(dot));
}

/**
 * Re-keys tensors by canonical name; two file names with the same canonical name are an error
 * (`label` names the checkpoint in the message).
 */
export function canonicalizeTensors(
  tensors: ReadonlyMap<string, RawTensor>,
  label: string,
): Map<string, RawTensor> {
  const out = new Map<string, RawTensor>();
  for (const [name, t] of tensors) {
    const c = canonicalName(name);
    const prev = out.get(c);
    if (prev) {
      throw new CheckpointError(
        `${label}: tensors ${quote(prev.name)} and ${quote(name)} both map to ${showName(c)}`,
      );
    }
    out.set(c, t);
  }
  return out;
}
