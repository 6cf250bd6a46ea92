/**
 * Random weights initialised as the original MambaByte code initialises its model (PyTorch's module
 * defaults plus Mamba's dt/A/D initialisation; no _init_weights pass, so unlike mamba_ssm: the
 * embedding is N(0, 1), lm_head is a separate untied Linear, out_proj is not rescaled),
 * served through the same WeightSource interface as a checkpoint. Each tensor is generated on
 * demand from (seed, name), so the result does not depend on read order and a large model never
 * needs two copies in host memory.
 *
 * @module
 */

import type { ModelDims, NormKind } from "../config/dims.ts";
import { float32ToBF16, numel } from "./dtypes.ts";
import { CheckpointError } from "./errors.ts";
import { expectedTensors } from "./expected.ts";
import { hashString, Xoshiro128 } from "./prng.ts";
import type { WeightSource } from "./weights.ts";

/** Bounds of the log-uniform initial step size, and its floor (mamba_ssm's defaults). */
const DT_MIN = 0.001;
const DT_MAX = 0.1;
const DT_FLOOR = 1e-4;

/** A randomly initialised MambaByte LM for `dims`, deterministic in `seed`; lm_head is untied. */
export function randomWeights(
  dims: ModelDims,
  seed: number,
  normKind: NormKind = "layernorm",
): WeightSource {
  const names = new Map<string, number[]>();
  for (const [name, e] of expectedTensors(dims, normKind)) {
    // Mamba has conv1d.bias but no in_proj / out_proj biases.
    if (!e.required && !name.endsWith("conv1d.bias")) continue;
    names.set(name, name.endsWith("conv1d.weight") ? [dims.dInner, dims.dConv] : e.shapes[0]);
  }
  names.set("lm_head.weight", [dims.vocabSize, dims.dModel]);
  const generate = (name: string): Float32Array => {
    const shape = names.get(name);
    if (!shape) throw new CheckpointError(`random weights have no tensor ${name}`);
    return initTensor(name, shape, dims, new Xoshiro128(seed, hashString(name)));
  };
  return {
    normKind,
    lmHeadTied: false,
    has: (name) => names.has(name),
    shape: (name) => {
      const s = names.get(name);
      if (!s) throw new CheckpointError(`random weights have no tensor ${name}`);
      return s.slice();
    },
    readF32: (name) => Promise.resolve(generate(name)),
    readBF16: (name) => Promise.resolve(float32ToBF16(generate(name))),
    close: () => {},
  };
}

function fill(n: number, f: (i: number) => number): Float32Array {
  const out = new Float32Array(n);
  for (let i = 0; i < n; i++) out[i] = f(i);
  return out;
}

/** One tensor's initial values; `name` is canonical. */
function initTensor(name: string, shape: number[], dims: ModelDims, rng: Xoshiro128): Float32Array {
  const n = numel(shape);
  const uniform = (bound: number) => fill(n, () => rng.uniformIn(-bound, bound));
  const leaf = name.replace(/^layers\.\d+\./, "");
  switch (leaf) {
    case "embedding.weight": // nn.Embedding: N(0, 1)
      return fill(n, () => rng.normal());
    case "norm.weight":
    case "norm_f.weight":
    case "mixer.D":
      return fill(n, () => 1);
    case "norm.bias":
    case "norm_f.bias":
      return new Float32Array(n);
    // nn.Linear / nn.Conv1d defaults: kaiming_uniform(a=sqrt(5)) = U(+-1/sqrt(fan_in)).
    case "mixer.in_proj.weight":
    case "mixer.x_proj.weight":
    case "mixer.out_proj.weight":
    case "lm_head.weight":
      return uniform(1 / Math.sqrt(shape[1]));
    case "mixer.conv1d.weight":
    case "mixer.conv1d.bias":
      return uniform(1 / Math.sqrt(dims.dConv));
    case "mixer.dt_proj.weight":
      return uniform(dims.dtRank ** -0.5);
    case "mixer.dt_proj.bias":
      return fill(n, () => dtBias(rng.uniform()));
    case "mixer.A_log":
      return fill(n, (i) => Math.log((i % dims.dState) + 1));
    default:
      throw new CheckpointError(`random weights have no initialiser for ${name}`);
  }
}

/** Inverse softplus of a log-uniform step size in [DT_MIN, DT_MAX] (floored) from u in [0, 1). */
export function dtBias(u: number): number {
  const dt = Math.max(
    Math.exp(u * (Math.log(DT_MAX) - Math.log(DT_MIN)) + Math.log(DT_MIN)),
    DT_FLOOR,
  );
  return dt + Math.log(-Math.expm1(-dt));
}
