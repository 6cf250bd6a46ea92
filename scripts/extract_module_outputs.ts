/**
 * Extracts module outputs (e.g. delta = softplus(dt_proj)) of chosen layers, with optional
 * log-probabilities and ranks (the original extract_module_outputs script's flags).
 *
 * deno task extract:module-outputs --prompt "Hello" --module_id dt_proj --nonlinearity softplus \
 *   --layer_idxs 0 1 --return_log_probs --return_ranks --filepath_to_store_outputs out.pkl
 */
import { extractModuleOutputs, parseModuleId } from "../src/analysis/extract.ts";
import { originalModuleOutput, originalScores } from "../src/analysis/original_layout.ts";
import { runMain, UsageError } from "../src/cli/mod.ts";
import { runExtractionScript, scoreFields } from "../src/cli/session.ts";
import type { TapName } from "../src/model/model.ts";
import { tapWidth } from "../src/model/model.ts";

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
          throw new UsageError(PROG, "the following arguments are required: --module_id");
        }
        try {
          args.module_ids.forEach(parseModuleId);
        } catch (e) {
          throw new UsageError(PROG, `argument --module_id: ${(e as Error).message}`);
        }
        if (args.output_layout === "original" && args.module_ids.length !== 1) {
          throw new UsageError(
            PROG,
            "argument --output_layout: original stores one module: give one --module_id",
          );
        }
      },
      resultBytes: (dims, L, layers, args) =>
        args.module_ids!.flatMap((id) =>
          layers.map(() => L * tapWidth(parseModuleId(id), dims) * 4)
        ),
      compute: async (model, prompt, args, onProgress) => {
        const ids = args.module_ids!;
        const modules = ids.map(parseModuleId);
        const original = args.output_layout === "original";
        // The original's conv1d output includes the padded tail, which needs x from in_proj.
        const taps: TapName[] = original && modules[0] === "conv1d"
          ? ["conv1d", "in_proj"]
          : modules;
        const nonlinearity = args.nonlinearity ?? "linear";
        const r = await extractModuleOutputs(model.lm, prompt.bytes, {
          modules: taps,
          layers: args.layer_idxs ?? undefined,
          nonlinearity: original ? "linear" : nonlinearity,
          logProbs: args.return_log_probs,
          ranks: args.return_ranks,
          onProgress,
        });
        const layers = [...r.modules.get(modules[0])!.keys()];
        if (original) {
          const tap = modules[0];
          const perLayer = new Map(layers.map((l) => [
            l,
            originalModuleOutput(
              model.lm,
              tap,
              l,
              r.modules.get(tap)!.get(l)!,
              nonlinearity,
              r.modules.get("in_proj")?.get(l),
            ),
          ]));
          return {
            [ids[0]]: perLayer,
            ...originalScores(r),
            model_id: args.model_id ?? model.config.id,
            module_id: ids[0],
            layer_idxs: args.layer_idxs ?? layers,
            pretrained_model_filepath: args.pretrained_model_filepath,
          };
        }
        const results = Object.fromEntries(ids.map((id, i) => [id, r.modules.get(modules[i])]));
        return {
          ...results,
          ...scoreFields(r),
          model_id: model.config.id,
          module_id: ids.length === 1 ? ids[0] : ids,
          layer_idxs: layers,
          nonlinearity,
          pretrained_model_filepath: args.pretrained_model_filepath,
        };
      },
    }, argv)
  );
}
