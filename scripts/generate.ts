/**
 * Generates bytes after a prompt (the original generate script's flags and printed layout:
 * PROMPT, GENERATIONS, each sample followed by 80 dashes). The first sample streams to stdout as it
 * is made, UTF-8 decoded across steps (invalid sequences show as U+FFFD). Without a prompt the
 * generation is unconditional (see GenerateOptions in src/generate/decode.ts).
 *
 * deno task generate --prompt "ROMEO:" [--model_id tiny] [--max_new_tokens 100] [--top_k 256] ...
 *
 * Speculative decoding: --draft_model_id tiny (or --draft_pretrained_model_filepath, with
 * --draft_tokenizer for a subword drafter) and --draft_length k; the bytes are the same.
 */
import {
  addDraftFlags,
  addGenerationFlags,
  addModelFlags,
  addOutputFlags,
  addPromptFlags,
  createParser,
  type DraftArgs,
  type GenerationArgs,
  type ModelArgs,
  type OutputArgs,
  parseArgs,
  type PromptArgs,
  resolvePrompt,
  runMain,
} from "../src/cli/mod.ts";
import {
  checkOutputPath,
  openConfig,
  openModel,
  progressCallback,
  storeOutputs,
} from "../src/cli/session.ts";
import { resolveDraft, resolveGeneration, resolveSeed, resolveStops } from "../src/cli/settings.ts";
import { type DraftModel, loadDraftModel } from "../src/api.ts";
import type { SpeculativeStats } from "../src/generate/speculative.ts";
import { uint8 } from "../src/io/tensor.ts";
import { ensureMemory, stateBytes } from "../src/model/memory.ts";

const PROG = "generate.ts";
const SEPARATOR = "-".repeat(80);

async function main(argv: string[]): Promise<void> {
  const p = createParser(PROG, "Generate (text) bytes with a MambaByte model.");
  addModelFlags(p);
  addPromptFlags(p, false);
  addGenerationFlags(p);
  addDraftFlags(p);
  addOutputFlags(p);
  const args = parseArgs<ModelArgs & PromptArgs & GenerationArgs & DraftArgs & OutputArgs>(p, argv);
  await checkOutputPath(PROG, args.filepath_to_store_outputs);
  const cfg = await openConfig(PROG, args);
  const gen = resolveGeneration(PROG, args, cfg.generation(args.model_id ?? undefined));
  const seed = resolveSeed(PROG, args.seed, cfg);
  const stop = resolveStops(PROG, args.stop);
  const draft = await resolveDraft(PROG, args, cfg, gen);
  const prompt = args.prompt === null && args.prompt_file === null
    ? { bytes: new Uint8Array(0), text: "" }
    : await resolvePrompt(args);
  const model = await openModel(args, cfg, args.quiet, (mc) => {
    // Per sample: its bytes, its recurrent state, and a workspace row of activations and logits.
    const perSample = gen.maxNewTokens + stateBytes(mc.dims) + 4 * (6 * mc.dims.dInner + 512);
    ensureMemory(
      gen.numSamples * perSample,
      `${gen.numSamples} samples of ${gen.maxNewTokens} bytes`,
      "ask for fewer --num_samples or --max_new_tokens",
    );
  });
  const enc = new TextEncoder();
  const write = (s: string) => Deno.stdout.writeSync(enc.encode(s));
  let drafter: DraftModel | undefined;
  try {
    if (draft) {
      const label = `loading the drafter ${draft.checkpoint ?? draft.modelId}`;
      const bar = progressCallback(label, args.quiet);
      try {
        drafter = await loadDraftModel({
          configPath: cfg.path,
          modelId: draft.modelId ?? undefined,
          checkpoint: draft.checkpoint ?? undefined,
          tokenizer: draft.tokenizer ?? undefined,
          device: args.device ?? undefined,
          dtype: args.dtype ?? undefined,
          seed,
          onProgress: bar.update,
        });
      } finally {
        bar.done();
      }
    }
    write(`PROMPT\n${"=".repeat(6)}\n${prompt.text}\n\nGENERATIONS\n${"=".repeat(11)}\n`);
    // Sample 0 streams as it is made; every other sample is printed whole as soon as it and the
    // samples before it have ended (each ends on its own: a --stop sequence or --max_new_tokens).
    const decoder = new TextDecoder("utf-8", { fatal: false });
    const ended = new Array<boolean>(gen.numSamples).fill(false);
    const whole: (Uint8Array | undefined)[] = new Array(gen.numSamples);
    let printed = 0;
    const printEnded = () => {
      while (printed < gen.numSamples && ended[printed]) {
        if (printed === 0) write(`${decoder.decode()}\n${SEPARATOR}\n`);
        else write(`${new TextDecoder().decode(whole[printed])}\n${SEPARATOR}\n`);
        whole[printed] = undefined;
        printed++;
      }
    };
    let stats: SpeculativeStats | undefined;
    let first = 0;
    const t0 = performance.now();
    const samples = await model.generate(prompt.bytes, {
      ...gen,
      seed,
      stop,
      onBytes: (bytes, step) => {
        if (step === 0) first = performance.now();
        if (!ended[0]) {
          const text = decoder.decode(bytes.subarray(0, 1), { stream: true });
          if (text) write(text);
        }
      },
      onEnd: (sample, bytes) => {
        ended[sample] = true;
        whole[sample] = bytes;
        printEnded();
      },
      draft: drafter && {
        model: drafter,
        length: draft!.length,
        onStats: (s) => stats = s,
      },
    });
    const seconds = (performance.now() - (first || t0)) / 1000;
    const made = samples.reduce((n, s) => n + Math.max(0, s.length - 1), 0);
    const bytesPerSecond = stats?.bytesPerSecond ?? (seconds > 0 ? made / seconds : 0);
    // Nothing generated (--max_new_tokens 0): no sample ended, so print the empty ones now.
    ended.fill(true);
    printEnded();
    if (args.verbose) {
      const rate = `${bytesPerSecond.toFixed(1)} bytes/s after the first byte`;
      console.error(
        stats
          ? `speculative decoding (${stats.drafter} drafter '${drafter!.model.config.id}', ` +
            `k=${stats.draftLength}): ${stats.bytes} bytes in ${stats.rounds} verification ` +
            `passes, acceptance rate ${stats.acceptanceRate.toFixed(3)} (${stats.accepted}/` +
            `${stats.drafted}), mean accepted length ${
              stats.meanAcceptedLength.toFixed(2)
            }, ${rate}, rounds ${stats.onDevice ? "on the device" : "through the host"}`
          : `decoding: ${gen.numSamples} x ${gen.maxNewTokens} bytes, ${rate}`,
      );
    }
    if (args.filepath_to_store_outputs) {
      await storeOutputs(args.filepath_to_store_outputs, {
        prompt: prompt.text,
        prompt_bytes: uint8([prompt.bytes.length], prompt.bytes),
        generations: samples.map((s) => new TextDecoder().decode(s)),
        generated_bytes: new Map(samples.map((s, i) => [i, uint8([s.length], s)])),
        model_id: model.config.id,
        pretrained_model_filepath: args.pretrained_model_filepath,
        max_new_tokens: gen.maxNewTokens,
        num_samples: gen.numSamples,
        temperature: gen.temperature,
        top_k: gen.topK,
        top_p: gen.topP,
        seed,
        ...(args.stop.length > 0 && { stop: args.stop }),
        ...(stats && {
          bytes_per_second: bytesPerSecond,
          draft_model_id: drafter!.model.config.id,
          draft_pretrained_model_filepath: draft!.checkpoint,
          draft_tokenizer: drafter!.tokenizer?.path ?? null,
          drafter: stats.drafter,
          draft_length: stats.draftLength,
          verification_rounds: stats.rounds,
          device_rounds: stats.onDevice,
          drafted_bytes: stats.drafted,
          accepted_bytes: stats.accepted,
          acceptance_rate: stats.acceptanceRate,
          mean_accepted_length: stats.meanAcceptedLength,
        }),
      }, args.quiet);
    }
  } finally {
    drafter?.close();
    model.close();
  }
}

if (import.meta.main) await runMain(main);
