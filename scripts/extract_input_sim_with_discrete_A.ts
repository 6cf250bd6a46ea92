/**
 * Extracts the cosine similarity over d_inner between discrete-A and the mixer input x (the first
 * half of in_proj's output, before the convolution): (L, d_state) per layer, plus optional
 * log-probabilities and ranks (the original extract_input_sim_with_discrete_A script's flags).
 *
 * deno task extract:input-sim --prompt_file pg19_samples/860.txt --return_log_probs \
 *   --return_ranks --filepath_to_store_outputs artefacts/input_sim_860.pkl
 */
import { extractInputSimilarity } from "../src/analysis/extract.ts";
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
} from "../src/cli/mod.ts";
import {
  checkOutputPath,
  openModel,
  progressCallback,
  storeOutputs,
  summarize,
} from "../src/cli/session.ts";

const PROG = "extract_input_sim_with_discrete_A.ts";

async function main(argv: string[]): Promise<void> {
  const p = createParser(PROG, "Cosine similarity of discrete-A with the input x.");
  addModelFlags(p);
  addPromptFlags(p);
  addExtractionFlags(p, { modules: false, nonlinearity: false, reduction: false });
  addOutputFlags(p);
  const args = parseArgs<ModelArgs & PromptArgs & ExtractionArgs & OutputArgs>(p, argv);
  await checkOutputPath(PROG, args.filepath_to_store_outputs);
  const prompt = await resolvePrompt(args);
  const model = await openModel(PROG, args, args.quiet);
  try {
    const bar = progressCallback("extracting input similarity", args.quiet);
    const r = await extractInputSimilarity(model.lm, prompt.bytes, {
      layers: args.layer_idxs ?? undefined,
      logProbs: args.return_log_probs,
      ranks: args.return_ranks,
      onProgress: bar.update,
    });
    bar.done();
    const record: Record<string, unknown> = {
      prompt: prompt.text,
      input_sim_with_discrete_A: r.perLayer,
    };
    if (r.logProbs) record.log_probs = r.logProbs;
    if (r.ranks) record.ranks = r.ranks;
    Object.assign(record, {
      model_id: model.config.id,
      layer_idxs: [...r.perLayer.keys()],
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
