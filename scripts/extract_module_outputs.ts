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
import {
  addExtractionFlags,
  addModelFlags,
  addOutputFlags,
  addPromptFlags,
  createParser,
  type ExtractionArgs,
  type ModelArgs,
  type OutputArgs,
  parseArgs,
  type PromptArgs,
  resolvePrompt,
  runMain,
  UsageError,
} from "../src/cli/mod.ts";
import {
  checkOutputPath,
  openModel,
  progressCallback,
  storeOutputs,
  summarize,
} from "../src/cli/session.ts";

const PROG = "extract_module_outputs.ts";

async function main(argv: string[]): Promise<void> {
  const p = createParser(PROG, "Extract module outputs of a MambaByte model.");
  addModelFlags(p);
  addPromptFlags(p);
  addExtractionFlags(p, { reduction: false });
  addOutputFlags(p);
  const args = parseArgs<ModelArgs & PromptArgs & ExtractionArgs & OutputArgs>(p, argv);
  if (!args.module_ids) {
    throw new UsageError(PROG, "the following arguments are required: --module_id", "");
  }
  const modules = args.module_ids.map(parseModuleId);
  await checkOutputPath(PROG, args.filepath_to_store_outputs);
  const prompt = await resolvePrompt(args);
  const model = await openModel(PROG, args, args.quiet);
  try {
    const bar = progressCallback("extracting", args.quiet);
    const r = await extractModuleOutputs(model.lm, prompt.bytes, {
      modules,
      layers: args.layer_idxs ?? undefined,
      nonlinearity: args.nonlinearity ?? "linear",
      logProbs: args.return_log_probs,
      ranks: args.return_ranks,
      onProgress: bar.update,
    });
    bar.done();
    const record: Record<string, unknown> = { prompt: prompt.text };
    args.module_ids.forEach((id, i) => (record[id] = r.modules.get(modules[i])));
    if (r.logProbs) record.log_probs = r.logProbs;
    if (r.ranks) record.ranks = r.ranks;
    Object.assign(record, {
      model_id: model.config.id,
      module_id: args.module_ids.length === 1 ? args.module_ids[0] : args.module_ids,
      layer_idxs: [...r.modules.get(modules[0])!.keys()],
      nonlinearity: args.nonlinearity ?? "linear",
      pretrained_model_filepath: args.pretrained_model_filepath,
    });
    if (args.filepath_to_store_outputs) {
      await storeOutputs(args.filepath_to_store_outputs, record, args.quiet);
    } else {
      console.log(summarize(record).join("\n"));
    }
  } finally {
    model.close();
  }
}

if (import.meta.main) await runMain(main);
