/**
 * Extracts the cosine similarity over d_inner between discrete-A and the mixer input x (the first
 * half of in_proj's output, before the convolution): (L, d_state) per layer, plus optional
 * log-probabilities and ranks (the original extract_input_sim_with_discrete_A script's flags).
 *
 * deno task extract:input-sim --prompt_file pg19_samples/860.txt --return_log_probs \
 *   --return_ranks --filepath_to_store_outputs artefacts/input_sim_860.pkl
 */
import { extractInputSimilarity } from "../src/analysis/extract.ts";
import { runMain } from "../src/cli/mod.ts";
import { runExtractionScript, scoreFields } from "../src/cli/session.ts";

if (import.meta.main) {
  await runMain((argv) =>
    runExtractionScript({
      prog: "extract_input_sim_with_discrete_A.ts",
      description: "Cosine similarity of discrete-A with the input x.",
      flags: { modules: false, nonlinearity: false, reduction: false },
      label: "extracting input similarity",
      compute: async (model, prompt, args, onProgress) => {
        const r = await extractInputSimilarity(model.lm, prompt.bytes, {
          layers: args.layer_idxs ?? undefined,
          logProbs: args.return_log_probs,
          ranks: args.return_ranks,
          onProgress,
        });
        return {
          input_sim_with_discrete_A: r.perLayer,
          ...scoreFields(r),
          model_id: model.config.id,
          layer_idxs: [...r.perLayer.keys()],
          pretrained_model_filepath: args.pretrained_model_filepath,
        };
      },
    }, argv)
  );
}
