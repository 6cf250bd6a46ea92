/**
 * Extracts discrete-A = exp(delta ⊗ A) (L, d_inner, d_state) of chosen layers, optionally reduced
 * (mean/min/max/norm over --reduction_dim, fro/nuc per position), plus optional log-probabilities
 * and ranks (the original extract_discrete_A script's flags).
 *
 * deno task extract:discrete-A --prompt_file pg19_samples/860.txt --reduction fro \
 *   --return_log_probs --return_ranks --filepath_to_store_outputs artefacts/dA_860_fro.pkl
 */
import { reducedShape } from "../src/analysis/discrete_a.ts";
import { extractDiscreteA } from "../src/analysis/extract.ts";
import { originalDiscreteA, originalScores } from "../src/analysis/original_layout.ts";
import { runMain } from "../src/cli/mod.ts";
import { runExtractionScript, scoreFields } from "../src/cli/session.ts";

if (import.meta.main) {
  await runMain((argv) =>
    runExtractionScript({
      prog: "extract_discrete_A.ts",
      description: "Extract discrete-A (exp(delta * A)) of a MambaByte model.",
      flags: { modules: false, nonlinearity: false },
      label: "extracting discrete_A",
      resultBytes: (dims, L, layers, args) => {
        const shape = reducedShape(
          [L, dims.dInner, dims.dState],
          args.reduction,
          args.reduction_dim,
        );
        const n = shape.reduce((a, b) => a * b, 1);
        const withIndices = args.output_layout === "original" &&
          (args.reduction === "min" || args.reduction === "max");
        return layers.map(() => n * (withIndices ? 12 : 4));
      },
      compute: async (model, prompt, args, onProgress) => {
        const original = args.output_layout === "original";
        const r = await extractDiscreteA(model.lm, prompt.bytes, {
          layers: args.layer_idxs ?? undefined,
          reduction: args.reduction,
          reductionDim: args.reduction_dim,
          indices: original,
          logProbs: args.return_log_probs,
          ranks: args.return_ranks,
          onProgress,
        });
        const layers = [...r.perLayer.keys()];
        if (original) {
          // The original fills its dict in --layer_idxs order.
          const order = [...new Set(args.layer_idxs ?? layers)];
          return {
            discrete_A: new Map(order.map((l) => [
              l,
              originalDiscreteA(r.perLayer.get(l)!, r.indices?.get(l), args.reduction),
            ])),
            ...originalScores(r),
            model_id: args.model_id ?? model.config.id,
            layer_idxs: args.layer_idxs ?? layers,
            reduction: args.reduction,
            pretrained_model_filepath: args.pretrained_model_filepath,
          };
        }
        return {
          discrete_A: r.perLayer,
          ...scoreFields(r),
          model_id: model.config.id,
          layer_idxs: layers,
          reduction: args.reduction,
          reduction_dim: args.reduction_dim,
          pretrained_model_filepath: args.pretrained_model_filepath,
        };
      },
    }, argv)
  );
}
