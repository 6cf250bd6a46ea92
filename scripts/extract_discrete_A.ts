/**
 * Extracts discrete-A = exp(delta ⊗ A) (L, d_inner, d_state) of chosen layers, optionally reduced
 * (mean/min/max/norm over --reduction_dim, fro/nuc per position), plus optional log-probabilities
 * and ranks (the original extract_discrete_A script's flags).
 *
 * deno task extract:discrete-A --prompt_file pg19_samples/860.txt --reduction fro \
 *   --return_log_probs --return_ranks --filepath_to_store_outputs artefacts/dA_860_fro.pkl
 */
import { extractDiscreteA } from "../src/analysis/extract.ts";
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

const PROG = "extract_discrete_A.ts";

async function main(argv: string[]): Promise<void> {
  const p = createParser(PROG, "Extract discrete-A (exp(delta * A)) of a MambaByte model.");
  addModelFlags(p);
  addPromptFlags(p);
  addExtractionFlags(p, { modules: false, nonlinearity: false });
  addOutputFlags(p);
  const args = parseArgs<ModelArgs & PromptArgs & ExtractionArgs & OutputArgs>(p, argv);
  await checkOutputPath(PROG, args.filepath_to_store_outputs);
  const prompt = await resolvePrompt(args);
  const model = await openModel(PROG, args, args.quiet);
  try {
    const bar = progressCallback("extracting discrete_A", args.quiet);
    const r = await extractDiscreteA(model.lm, prompt.bytes, {
      layers: args.layer_idxs ?? undefined,
      reduction: args.reduction,
      reductionDim: args.reduction_dim,
      logProbs: args.return_log_probs,
      ranks: args.return_ranks,
      onProgress: bar.update,
    });
    bar.done();
    const record: Record<string, unknown> = { prompt: prompt.text, discrete_A: r.perLayer };
    if (r.logProbs) record.log_probs = r.logProbs;
    if (r.ranks) record.ranks = r.ranks;
    Object.assign(record, {
      model_id: model.config.id,
      layer_idxs: [...r.perLayer.keys()],
      reduction: args.reduction,
      reduction_dim: args.reduction_dim,
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
