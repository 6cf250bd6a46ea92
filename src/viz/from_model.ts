/**
 * The numbers of a visualisation computed from a model, through the extraction API the scripts
 * use (src/analysis/extract.ts): discrete-A reduced to its Frobenius norm per position, dt_proj's
 * outputs with softplus (delta) averaged over d_inner, and the log-probabilities and ranks of the
 * same pass.
 *
 * @module
 */

import { extractDiscreteA, extractModuleOutputs } from "../analysis/extract.ts";
import type { HostTensor } from "../io/tensor.ts";
import type { MambaByteLM } from "../model/model.ts";
import { meanOverFeatures, type VizInputs } from "./data.ts";

/** A progress bar factory, as src/cli/session.ts's progressCallback. */
export type ProgressFactory = (label: string) => {
  update: (done: number, total: number) => void;
  done: () => void;
};

/** Options of {@link vizInputsFromModel}. */
export interface FromModelOptions {
  /** Compute discrete-A's Frobenius norms (all layers). */
  discreteA: boolean;
  /** Compute the mean delta (all layers). */
  delta: boolean;
  /** Progress bars, one per pass. */
  progress?: ProgressFactory;
  /**
   * Bytes of dt_proj outputs one pass may hold (default 512 MiB): the layers are split into
   * passes so a large model over a long prompt stays within it.
   */
  passBytes?: number;
}

function scores(r: { logProbs?: HostTensor; ranks?: HostTensor }) {
  return {
    logProbs: r.logProbs!.data as Float32Array,
    ranks: Int32Array.from(r.ranks!.data as BigInt64Array, Number),
  };
}

/** Runs the model over `bytes` and returns what the page needs (every layer). */
export async function vizInputsFromModel(
  lm: MambaByteLM,
  bytes: Uint8Array,
  opts: FromModelOptions,
): Promise<VizInputs> {
  const layers = [...Array(lm.dims.nLayer).keys()];
  const bar = (label: string) => opts.progress?.(label) ?? { update: () => {}, done: () => {} };
  let out: VizInputs | undefined;
  if (opts.discreteA) {
    const b = bar("discrete-A (fro) and log-probs");
    const r = await extractDiscreteA(lm, bytes, {
      layers,
      reduction: "fro",
      logProbs: true,
      ranks: true,
      onProgress: b.update,
    });
    b.done();
    const discreteA = new Map<number, Float32Array>();
    for (const [l, t] of r.perLayer) discreteA.set(l, t.data as Float32Array);
    out = { bytes, ...scores(r), discreteA };
  }
  if (opts.delta || !out) {
    const perLayer = bytes.length * lm.dims.dInner * 4;
    const group = Math.max(1, Math.floor((opts.passBytes ?? 512 * 2 ** 20) / perLayer));
    const delta = new Map<number, Float32Array>();
    for (let i = 0; i < layers.length; i += group) {
      const part = layers.slice(i, i + group);
      const b = bar(`delta (softplus(dt_proj)), layers ${part[0]}-${part.at(-1)}`);
      // The first pass also scores the bytes when discrete-A did not.
      const first = !out;
      const r = await extractModuleOutputs(lm, bytes, {
        modules: ["dt_proj"],
        layers: part,
        nonlinearity: "softplus",
        logProbs: first,
        ranks: first,
        onProgress: b.update,
      });
      b.done();
      for (const [l, t] of r.modules.get("dt_proj")!) delta.set(l, meanOverFeatures(t));
      if (first) out = { bytes, ...scores(r) };
      if (!opts.delta) break;
    }
    if (opts.delta) out!.delta = delta;
  }
  return out!;
}
