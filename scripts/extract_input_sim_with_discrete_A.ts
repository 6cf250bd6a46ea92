/**
 * Extracts the cosine similarity over d_inner between discrete-A and the mixer input x,
 * (L, d_state) per layer, plus optional log-probabilities and ranks (the original
 * extract_input_sim_with_discrete_A script's flags).
 *
 * deno task extract:input-sim --prompt_file pg19_samples/860.txt --return_log_probs \
 *   --filepath_to_store_outputs artefacts/input_sim_860.pkl
 */
import { extractInputSimilarity } from "../src/analysis/extract.ts";
import { originalScores } from "../src/analysis/original_layout.ts";
import { runMain } from "../src/cli/mod.ts";
import { runExtractionScript, scoreFields } from "../src/cli/session.ts";
import { torchTensor } from "../src/io/value.ts";

if (import.meta.main) {
  await runMain((argv) =>
    runExtractionScript({
      prog: "extract_input_sim_with_discrete_A.ts",
      description: "Cosine similarity of discrete-A with the input x.",
      flags: { modules: false, nonlinearity: false, reduction: false },
      label: "extracting input similarity",
      resultBytes: (dims, L, layers) => layers.map(() => L * dims.dState * 4),
      compute: async (model, prompt, args, onProgress) => {
        const r = await extractInputSimilarity(model.lm, prompt.bytes, {
          layers: args.layer_idxs ?? undefined,
          logProbs: args.return_log_probs,
          ranks: args.return_ranks,
          onProgress,
        });
        const layers = [...r.perLayer.keys()];
        if (args.output_layout === "original") {
          const order = [...new Set(args.layer_idxs ?? layers)];
          return {
            input_sim_with_discrete_A: new Map(
              order.map((l) => [l, torchTensor(r.perLayer.get(l)!)]),
            ),
            ...originalScores(r),
            model_id: args.model_id ?? model.config.id,
            layer_idxs: args.layer_idxs ?? layers,
            pretrained_model_filepath: args.pretrained_model_filepath,
          };
        }
        return {
          input_sim_with_discrete_A: r.perLayer,
          ...scoreFields(r),
          model_id: model.config.id,
          layer_idxs: layers,
          pretrained_model_filepath: args.pretrained_model_filepath,
        };
      },
    }, argv)
  );
}
