/**
 * Extracts module outputs (e.g. dt_proj, the pre-softplus delta) of chosen layers over a prompt,
 * with a nonlinearity applied, plus optional log-probabilities and ranks (the original
 * extract_module_outputs script's flags).
 *
 * deno task extract:module-outputs --prompt "..." --layer_idxs 0 1 2 --module_ids dt_proj \
 *   --nonlinearity softplus --return_log_probs --return_ranks \
 *   --filepath_to_store_outputs artefacts/out.pkl
 */
import { extractModuleOutputs, parseModuleId } from "../src/analysis/extract.ts";
import { runMain, UsageError } from "../src/cli/mod.ts";
import { runExtractionScript, scoreFields } from "../src/cli/session.ts";

const PROG = "extract_module_outputs.ts";

if (import.meta.main) {
  await runMain((argv) =>
    runExtractionScript({
      prog: PROG,
      description: "Extract module outputs of a MambaByte model.",
      flags: { reduction: false },
      label: "extracting",
      validate: (args) => {
        if (!args.module_ids) {
          throw new UsageError(PROG, "the following arguments are required: --module_id", "");
        }
        args.module_ids.forEach(parseModuleId);
      },
      compute: async (model, prompt, args, onProgress) => {
        const ids = args.module_ids!;
        const modules = ids.map(parseModuleId);
        const r = await extractModuleOutputs(model.lm, prompt.bytes, {
          modules,
          layers: args.layer_idxs ?? undefined,
          nonlinearity: args.nonlinearity ?? "linear",
          logProbs: args.return_log_probs,
          ranks: args.return_ranks,
          onProgress,
        });
        const results = Object.fromEntries(ids.map((id, i) => [id, r.modules.get(modules[i])]));
        return {
          ...results,
          ...scoreFields(r),
          model_id: model.config.id,
          module_id: ids.length === 1 ? ids[0] : ids,
          layer_idxs: [...r.modules.get(modules[0])!.keys()],
          nonlinearity: args.nonlinearity ?? "linear",
          pretrained_model_filepath: args.pretrained_model_filepath,
        };
      },
    }, argv)
  );
}
