/**
 * Extracts discrete-A = exp(delta ⊗ A) (L, d_inner, d_state) of chosen layers, optionally reduced
 * (mean/min/max/norm over --reduction_dim, fro/nuc per position), plus optional log-probabilities
 * and ranks (the original extract_discrete_A script's flags).
 *
 * deno task extract:discrete-A --prompt_file pg19_samples/860.txt --reduction fro \
 *   --return_log_probs --return_ranks --filepath_to_store_outputs artefacts/dA_860_fro.pkl
 */
import { extractDiscreteA } from "../src/analysis/extract.ts";
import { runMain } from "../src/cli/mod.ts";
import { runExtractionScript, scoreFields } from "../src/cli/session.ts";

if (import.meta.main) {
  await runMain((argv) =>
    runExtractionScript({
      prog: "extract_discrete_A.ts",
      description: "Extract discrete-A (exp(delta * A)) of a MambaByte model.",
      flags: { modules: false, nonlinearity: false },
      label: "extracting discrete_A",
      compute: async (model, prompt, args, onProgress) => {
        const r = await extractDiscreteA(model.lm, prompt.bytes, {
          layers: args.layer_idxs ?? undefined,
          reduction: args.reduction,
          reductionDim: args.reduction_dim,
          logProbs: args.return_log_probs,
          ranks: args.return_ranks,
          onProgress,
        });
        return {
          discrete_A: r.perLayer,
          ...scoreFields(r),
          model_id: model.config.id,
          layer_idxs: [...r.perLayer.keys()],
          reduction: args.reduction,
          reduction_dim: args.reduction_dim,
          pretrained_model_filepath: args.pretrained_model_filepath,
        };
      },
    }, argv)
  );
}
