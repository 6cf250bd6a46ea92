/**
 * Random weights initialised as mamba_ssm and the original MambaByte code initialise a Mamba LM,
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
const EMBEDDING_STD = 0.02;

/** A randomly initialised Mamba LM for `dims`, deterministic in `seed`; lm_head is tied. */
export function randomWeights(
  dims: ModelDims,
  seed: number,
  normKind: NormKind = "layernorm",
): WeightSource {
  const names = new Map<string, number[]>();
  for (const [name, e] of expectedTensors(dims, normKind)) {
    // mamba_ssm's Mamba has conv1d.bias but no in_proj / out_proj biases; lm_head is tied.
    if (!e.required && !name.endsWith("conv1d.bias")) continue;
    names.set(name, name.endsWith("conv1d.weight") ? [dims.dInner, dims.dConv] : e.shapes[0]);
  }
  names.set("lm_head.weight", names.get("embedding.weight")!);
  const generate = (name: string): Float32Array => {
    const shape = names.get(name);
    if (!shape) throw new CheckpointError(`random weights have no tensor ${name}`);
    const key = name === "lm_head.weight" ? "embedding.weight" : name;
    return initTensor(key, shape, dims, new Xoshiro128(seed, hashString(key)));
  };
  return {
    normKind,
    lmHeadTied: true,
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
    case "embedding.weight":
      return fill(n, () => EMBEDDING_STD * rng.normal());
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
      return uniform(1 / Math.sqrt(shape[1]));
    case "mixer.out_proj.weight": {
      // mamba_ssm's rescale_prenorm_residual: divide by sqrt(n_layer).
      const w = uniform(1 / Math.sqrt(shape[1]));
      const s = 1 / Math.sqrt(dims.nLayer);
      for (let i = 0; i < n; i++) w[i] *= s;
      return w;
    }
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
