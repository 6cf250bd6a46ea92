/**
 * What the original PyTorch scripts store, value for value, for `--output_layout original`: their
 * forward hooks record each module's output as the module returns it (`squeeze(0)` of the batch),
 * so shapes follow PyTorch's module calls, not the toolkit's (L, features) convention:
 * - conv1d is nn.Conv1d with padding d_conv - 1 on both sides: (d_inner, L + d_conv - 1), before
 *   SiLU; the last d_conv - 1 columns convolve the zero padding after the text;
 * - x_proj runs on (L, d_inner) rows, so a one-byte prompt gives a 1-D (features,) tensor;
 * - norm never fires (the blocks use a fused add+norm), so each layer holds an empty list;
 * - log_probs hold probabilities (the original's name notwithstanding), ranks are int64, and a
 *   score not asked for is None; min / max reductions are torch's (values, indices).
 *
 * @module
 */

import { MambaByteError } from "../errors.ts";
import type { HostTensor } from "../io/tensor.ts";
import { type TorchMinMax, torchMinMax, type TorchTensor, torchTensor } from "../io/value.ts";
import type { MambaByteLM, TapName } from "../model/model.ts";
import { applyNonlinearity, type Nonlinearity } from "./nonlinearity.ts";

/** The original's `log_probs` (probabilities) and `ranks`, None when not asked for. */
export function originalScores(
  r: { logProbs?: HostTensor; ranks?: HostTensor },
): { log_probs: TorchTensor | null; ranks: TorchTensor | null } {
  let probs: TorchTensor | null = null;
  if (r.logProbs) {
    const lp = r.logProbs.data as Float32Array;
    probs = torchTensor({ dtype: "float32", shape: r.logProbs.shape, data: lp.map(Math.exp) });
  }
  return { log_probs: probs, ranks: r.ranks ? torchTensor(r.ranks) : null };
}

/** A per-layer discrete-A result as torch's reducer returns it. */
export function originalDiscreteA(
  values: HostTensor,
  indices: HostTensor | undefined,
  reduction: string | null,
): TorchTensor | TorchMinMax {
  if (indices && (reduction === "min" || reduction === "max")) {
    return torchMinMax(reduction, values, indices);
  }
  return torchTensor(values);
}

/**
 * One module's output in the original's shape, with the nonlinearity applied over its last axis
 * (as the original's hook does after the squeeze). `out` is the toolkit's (L, width) tap; conv1d
 * also needs in_proj's tap of the same layer (its x half feeds the padded tail).
 */
export function originalModuleOutput(
  lm: MambaByteLM,
  tap: TapName,
  layer: number,
  out: HostTensor,
  nonlinearity: Nonlinearity,
  inProj?: HostTensor,
): TorchTensor | never[] {
  if (tap === "norm") return [];
  const [L, w] = out.shape;
  const src = out.data as Float32Array;
  let shape: number[];
  let data: Float32Array;
  if (tap === "conv1d") {
    if (!inProj) throw new MambaByteError("conv1d in the original layout needs in_proj's output");
    data = paddedConv(lm, layer, src, L, w, inProj);
    shape = [w, L + lm.dims.dConv - 1];
  } else {
    data = src;
    shape = tap === "x_proj" && L === 1 ? [w] : [L, w];
  }
  const cols = shape[shape.length - 1];
  const rows = data.length / cols;
  const result = nonlinearity === "linear"
    ? data
    : applyNonlinearity(nonlinearity, data, rows, cols);
  return torchTensor({ dtype: "float32", shape, data: result });
}

/** nn.Conv1d(padding = k - 1)'s full output (d, L + k - 1) from the causal part and x's tail. */
function paddedConv(
  lm: MambaByteLM,
  layer: number,
  causal: Float32Array,
  L: number,
  d: number,
  inProj: HostTensor,
): Float32Array {
  const k = lm.dims.dConv;
  const lw = lm.weights.layers[layer];
  const w = lw.convWeight.toHost() as Float32Array; // (d, k)
  const bias = lw.convBias ? lw.convBias.toHost() as Float32Array : new Float32Array(d);
  const x = inProj.data as Float32Array; // (L, 2d): x is the first half
  const width = L + k - 1;
  const out = new Float32Array(d * width);
  for (let c = 0; c < d; c++) {
    for (let t = 0; t < L; t++) out[c * width + t] = causal[t * d + c];
    // Column L + j sees the inputs L + j - (k - 1) + i for taps i whose input is inside the text.
    for (let j = 0; j < k - 1; j++) {
      let acc = bias[c];
      for (let i = 0; i < k - 1 - j; i++) {
        const t = L + j - (k - 1) + i;
        if (t >= 0) acc += w[c * k + i] * x[t * 2 * d + c];
      }
      out[c * width + L + j] = acc;
    }
  }
  return out;
}
