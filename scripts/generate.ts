/**
 * Generates bytes from a prompt (the original generate script's flags). The first sample streams to
 * stdout as it is made, UTF-8 decoded across steps (invalid sequences show as U+FFFD); the final
 * layout is the original's: PROMPT, GENERATIONS, samples separated by 80 dashes.
 *
 * deno task generate --prompt "ROMEO:" [--model_id tiny] [--max_new_tokens 100] [--top_k 256] ...
 */
import {
  addGenerationFlags,
  addModelFlags,
  addOutputFlags,
  addPromptFlags,
  createParser,
  type GenerationArgs,
  type ModelArgs,
  type OutputArgs,
  parseArgs,
  type PromptArgs,
  resolvePrompt,
  runMain,
} from "../src/cli/mod.ts";
import { checkOutputPath, openModel, storeOutputs } from "../src/cli/session.ts";
import { uint8 } from "../src/io/tensor.ts";

const PROG = "generate.ts";
const SEPARATOR = "-".repeat(80);

async function main(argv: string[]): Promise<void> {
  const p = createParser(PROG, "Generate bytes with a MambaByte model.");
  addModelFlags(p);
  addPromptFlags(p);
  addGenerationFlags(p);
  addOutputFlags(p);
  const args = parseArgs<ModelArgs & PromptArgs & GenerationArgs & OutputArgs>(p, argv);
  await checkOutputPath(PROG, args.filepath_to_store_outputs);
  const prompt = await resolvePrompt(args);
  const model = await openModel(PROG, args, args.quiet);
  const out = Deno.stdout;
  const enc = new TextEncoder();
  const write = (s: string) => out.writeSync(enc.encode(s));
  try {
    write(`PROMPT:\n${prompt.text}\n${SEPARATOR}\nGENERATIONS:\n`);
    const decoder = new TextDecoder("utf-8", { fatal: false });
    const samples = await model.generate(prompt.bytes, {
      maxNewTokens: args.max_new_tokens,
      numSamples: args.num_samples,
      temperature: args.temperature,
      topK: args.top_k,
      topP: args.top_p,
      seed: args.seed,
      onBytes: (bytes) => {
        const text = decoder.decode(bytes.subarray(0, 1), { stream: true });
        if (text) write(text);
      },
    });
    write(decoder.decode());
    for (let s = 1; s < samples.length; s++) {
      write(`\n${SEPARATOR}\n${new TextDecoder().decode(samples[s])}`);
    }
    write("\n");
    if (args.filepath_to_store_outputs) {
      await storeOutputs(args.filepath_to_store_outputs, {
        prompt: prompt.text,
        prompt_bytes: uint8([prompt.bytes.length], prompt.bytes),
        generations: samples.map((s) => new TextDecoder().decode(s)),
        generated_bytes: new Map(samples.map((s, i) => [i, uint8([s.length], s)])),
        model_id: model.config.id,
        pretrained_model_filepath: args.pretrained_model_filepath,
        max_new_tokens: args.max_new_tokens,
        num_samples: args.num_samples,
        temperature: args.temperature,
        top_k: args.top_k,
        top_p: args.top_p,
        seed: args.seed,
      }, args.quiet);
    }
  } finally {
    model.close();
  }
}

if (import.meta.main) await runMain(main);
