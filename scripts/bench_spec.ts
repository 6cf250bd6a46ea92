/**
 * Speculative decoding benchmark (`deno task bench:spec`): plain vs speculative decoding of the
 * same bytes (same prompt from the Tiny Shakespeare held-out text, same seed), with each drafter,
 * greedy and sampled, on each device: bytes/s of both, the speedup, the acceptance rate, the mean
 * accepted length, and whether the bytes are identical (they must be, in every case; the script
 * exits 1 otherwise). With --profile, one more speculative run per case times the three phases of
 * a round (drafting, verifying, resuming; each ended by a device synchronisation) and prints them
 * per round beside plain decoding's time per byte: where a round's time goes (those runs go
 * through the host). --prompt_file with --prompts N runs every case over N prompts of 300 bytes
 * spread over that text's held-out part and reports sums over them (one prompt's acceptance
 * varies much between drafters that agree with the target equally often on the text). --rounds
 * both runs the byte drafter with its rounds on the device (the default; one graph a round on
 * CUDA) and through the host, a row each: the two forms side by side.
 *
 * Models (defaults): the target pretrained_models/spec/target.safetensors when it has been built
 * (tools/device/train_spec.sh), else the bundled `small`; the byte-level drafter
 * pretrained_models/spec/draft_bytes.safetensors, else `tiny`; the subword drafter
 * pretrained_models/spec/draft_subword (a Hugging Face folder with its tokenizer.json), skipped
 * when absent.
 *
 * Usage: deno task bench:spec [--devices cpu,cuda] [--max_new_tokens 512] [--draft_length 7]
 *        [--target PATH|ID] [--byte_drafter PATH|ID] [--subword_drafter DIR|none] [--dtype bf16]
 *        [--repeats 3] [--json results.json] [--profile] [--rounds auto|host|device|both]
 *        [--prompt_file tinyshakespeare.txt --prompts 8]
 */
import { createParser, parseArgs, runMain, UsageError, UserError } from "../src/cli/mod.ts";
import { type DraftModel, loadDraftModel, loadModel } from "../src/api.ts";
import type { MambaByteLM } from "../src/model/model.ts";
import { cudaDeviceCount, hasCuda } from "../src/backend/backend.ts";
import type { SpeculativeStats } from "../src/generate/speculative.ts";
import { median } from "./lib/bench.ts";

const ROOT = new URL("../", import.meta.url).pathname;
const CONFIG = `${ROOT}configs/mambabyte_lm.yml`;
const SPEC = `${ROOT}pretrained_models/spec`;

/** 300 bytes of the held-out text (bytes [floor(0.95 n) + 1000, +300) of tinyshakespeare.txt). */
const PROMPT = " Pisa.\n\nBAPTISTA:\nI follow you.\n\nBIONDELLO:\nCambio!\n\nLUCENTIO:\nWhat " +
  "sayest thou, Biondello?\n\nBIONDELLO:\nYou saw my master wink and laugh upon you?\n\n" +
  "LUCENTIO:\nBiondello, what of that?\n\nBIONDELLO:\nFaith, nothing; but has left me here " +
  "behind, to\nexpound the meaning or moral of his signs and tokens.\n\nLU";

const parser = createParser("bench_spec", "plain vs speculative decoding, same bytes");
parser.add_argument("--devices", { default: "auto" });
parser.add_argument("--max_new_tokens", { type: "int", default: 512 });
parser.add_argument("--draft_length", { type: "int", default: 7 });
parser.add_argument("--target", { default: null });
parser.add_argument("--byte_drafter", { default: null });
parser.add_argument("--subword_drafter", { default: null });
parser.add_argument("--dtype", { choices: ["fp32", "bf16"], default: "fp32" });
parser.add_argument("--repeats", { type: "int", default: 3 });
parser.add_argument("--seed", { type: "int", default: 4740 });
parser.add_argument("--json", { default: null });
parser.add_argument("--profile", { action: "store_true" });
parser.add_argument("--rounds", { choices: ["auto", "host", "device", "both"], default: "auto" });
parser.add_argument("--prompt_file", { default: null });
parser.add_argument("--prompts", { type: "int", default: 1 });
// deno-lint-ignore no-explicit-any
type Args = Record<string, any>;

const exists = (p: string) => {
  try {
    Deno.statSync(p);
    return true;
  } catch {
    return false;
  }
};

/** A checkpoint path, or a config id when the argument names no file. */
function source(arg: string | null, fallbackPath: string, fallbackId: string) {
  const v = arg ?? (exists(fallbackPath) ? fallbackPath : fallbackId);
  return exists(v) ? { checkpoint: v, label: v.replace(ROOT, "") } : { modelId: v, label: v };
}

const SAMPLINGS = [
  { name: "greedy", opts: { topK: 1 } },
  { name: "sampled (top_k 256, top_p 0.98, T 1)", opts: { topK: 256, topP: 0.98, temperature: 1 } },
];

interface Row {
  device: string;
  drafter: string;
  sampling: string;
  plainBytesPerSecond: number;
  specBytesPerSecond: number;
  speedup: number;
  acceptanceRate: number;
  meanAcceptedLength: number;
  identical: boolean;
  /** Milliseconds a round of the timed speculative run (its last repeat's rounds). */
  msPerRound?: number;
  /** --profile: milliseconds per round of each phase, from one more (synchronised) run. */
  phaseMsPerRound?: { draft: number; verify: number; resume: number };
}

/** Bytes of each prompt (300 of them). */
const PROMPT_BYTES = 300;

/**
 * The prompts: the built-in one, or `count` slices of PROMPT_BYTES evenly spaced over the held-out
 * part of `file` (from floor(0.95 n) + 1000, as the built-in one is for tinyshakespeare.txt).
 */
export function benchPrompts(file: Uint8Array | null, count: number): Uint8Array[] {
  if (!Number.isSafeInteger(count) || count < 1 || count > 1000) {
    throw new UsageError("bench_spec", `--prompts must be 1..1000, not ${count}`);
  }
  if (!file) {
    if (count > 1) {
      throw new UsageError(
        "bench_spec",
        "--prompts > 1 needs --prompt_file (a text to draw them from)",
      );
    }
    return [new TextEncoder().encode(PROMPT)];
  }
  const start = Math.floor(file.length * 0.95) + 1000;
  const room = file.length - start - PROMPT_BYTES;
  if (room < 0) {
    throw new UserError(
      `--prompt_file holds ${file.length} bytes: its held-out part is too short for a prompt`,
    );
  }
  const step = count > 1 ? Math.floor(room / (count - 1)) : 0;
  if (count > 1 && step < PROMPT_BYTES) {
    throw new UserError(`--prompt_file's held-out part holds fewer than ${count} distinct prompts`);
  }
  return Array.from(
    { length: count },
    (_, i) => file.subarray(start + i * step, start + i * step + PROMPT_BYTES),
  );
}

async function timeIt(f: () => Promise<Uint8Array>, repeats: number) {
  const times: number[] = [];
  let out: Uint8Array = new Uint8Array(0);
  for (let r = 0; r < repeats; r++) {
    const t0 = performance.now();
    out = await f();
    times.push((performance.now() - t0) / 1000);
  }
  return { out, seconds: median(times) };
}

/** The drafter's runs for --rounds: undefined = the default; a subword drafter only has host rounds. */
function roundModes(rounds: string, kind: "bytes" | "subword"): (boolean | undefined)[] {
  if (rounds === "auto" || kind === "subword") return [undefined];
  if (rounds === "both") return [true, false];
  return [rounds === "device"];
}

async function main(argv: string[]): Promise<void> {
  const args = parseArgs<Args>(parser, argv);
  const gpu = hasCuda() && cudaDeviceCount() > 0;
  const devices = args.devices === "auto"
    ? (gpu ? ["cuda", "cpu"] : ["cpu"])
    : String(args.devices).split(",");
  if (devices.includes("cuda") && !gpu) throw new UserError("bench:spec: no CUDA GPU here");
  const target = source(args.target, `${SPEC}/target.safetensors`, "small");
  const byteDraft = source(args.byte_drafter, `${SPEC}/draft_bytes.safetensors`, "tiny");
  const subDir = args.subword_drafter === "none" ? null : args.subword_drafter ??
    (exists(`${SPEC}/draft_subword`) ? `${SPEC}/draft_subword` : null);
  const promptFile = args.prompt_file ? await Deno.readFile(args.prompt_file) : null;
  const prompts = benchPrompts(promptFile, args.prompts);
  const prompt = prompts[0]; // warm-ups and --profile
  const N = args.max_new_tokens, K = args.draft_length;
  const rows: Row[] = [];
  let allSame = true;
  console.log(
    `target ${target.label}; drafters: bytes ${byteDraft.label}, subword ${
      subDir
        ? subDir.replace(ROOT, "")
        : args.subword_drafter === "none"
        ? "none"
        : "none (no pretrained_models/spec/draft_subword)"
    }; ${N} bytes, k=${K}, seed ${args.seed}, ${args.dtype}, median of ${args.repeats}; ${
      promptFile
        ? `${prompts.length} prompts from ${args.prompt_file} (sums over them)`
        : "the built-in prompt"
    }`,
  );
  console.log(
    "device | drafter | sampling | plain B/s | spec B/s | speedup | acceptance | mean accepted | identical | round",
  );
  for (const device of devices) {
    const common = {
      configPath: CONFIG,
      device: device as "cpu" | "cuda",
      dtype: args.dtype as "fp32" | "bf16",
    };
    const model: MambaByteLM = await loadModel({ ...common, ...target });
    const drafters: [string, DraftModel][] = [];
    try {
      drafters.push([
        `bytes ${byteDraft.label}`,
        await loadDraftModel({ ...common, ...byteDraft }),
      ]);
      if (subDir) {
        drafters.push([
          `subword ${subDir.replace(ROOT, "")}`,
          await loadDraftModel({ ...common, checkpoint: subDir }),
        ]);
      }
      for (const s of SAMPLINGS) {
        const o = { maxNewTokens: N, seed: args.seed, ...s.opts };
        await model.generate(prompt, { ...o, maxNewTokens: 16 }); // warm-up (kernels, graphs)
        const plain: { out: Uint8Array; seconds: number }[] = [];
        for (const p of prompts) {
          plain.push(await timeIt(async () => (await model.generate(p, o))[0], args.repeats));
        }
        const plainSeconds = plain.reduce((a, r) => a + r.seconds, 0);
        for (const [drafterName, draft] of drafters) {
          for (const deviceRounds of roundModes(args.rounds, draft.kind)) {
            const name = deviceRounds === undefined
              ? drafterName
              : `${drafterName} (${deviceRounds ? "device" : "host"} rounds)`;
            await model.generate(prompt, {
              ...o,
              maxNewTokens: 3 * (K + 1),
              draft: { model: draft, length: K, deviceRounds },
            }); // warm-up
            // each prompt timed, its last repeat's stats summed
            let specSeconds = 0, rounds = 0, accepted = 0, drafted = 0, identical = true;
            for (let i = 0; i < prompts.length; i++) {
              let stats: SpeculativeStats | undefined;
              const spec = await timeIt(async () =>
                (await model.generate(prompts[i], {
                  ...o,
                  draft: { model: draft, length: K, deviceRounds, onStats: (st) => stats = st },
                }))[0], args.repeats);
              specSeconds += spec.seconds;
              rounds += stats!.rounds;
              accepted += stats!.accepted;
              drafted += stats!.drafted;
              identical &&= spec.out.length === plain[i].out.length &&
                spec.out.every((b, j) => b === plain[i].out[j]);
            }
            allSame &&= identical;
            const bytes = N * prompts.length;
            const row: Row = {
              device,
              drafter: name,
              sampling: s.name,
              plainBytesPerSecond: bytes / plainSeconds,
              specBytesPerSecond: bytes / specSeconds,
              speedup: plainSeconds / specSeconds,
              acceptanceRate: drafted ? accepted / drafted : 0,
              meanAcceptedLength: accepted / Math.max(1, rounds),
              identical,
            };
            rows.push(row);
            row.msPerRound = specSeconds / Math.max(1, rounds) * 1e3;
            console.log(
              `${device} | ${name} | ${s.name} | ${row.plainBytesPerSecond.toFixed(1)} | ${
                row.specBytesPerSecond.toFixed(1)
              } | ${row.speedup.toFixed(2)}x | ${row.acceptanceRate.toFixed(3)} | ${
                row.meanAcceptedLength.toFixed(2)
              } of ${K} | ${identical ? "yes" : "NO"} | ${row.msPerRound.toFixed(3)} ms a round`,
            );
            if (args.profile && deviceRounds !== true) {
              let prof: SpeculativeStats | undefined;
              await model.generate(prompt, {
                ...o,
                draft: { model: draft, length: K, profilePhases: true, onStats: (st) => prof = st },
              });
              const p = prof!.phaseSeconds!, r = Math.max(1, prof!.rounds);
              row.phaseMsPerRound = {
                draft: p.draft / r * 1e3,
                verify: p.verify / r * 1e3,
                resume: p.resume / r * 1e3,
              };
              const f = (x: number) => x.toFixed(3);
              console.log(
                `  phases per round (${prof!.rounds} rounds, ${
                  (prof!.meanAcceptedLength + 1).toFixed(2)
                } bytes each): draft ${f(row.phaseMsPerRound.draft)} ms, verify ${
                  f(row.phaseMsPerRound.verify)
                } ms, resume ${f(row.phaseMsPerRound.resume)} ms; plain decoding ${
                  f(1e3 / row.plainBytesPerSecond)
                } ms a byte`,
              );
            }
          }
        }
      }
    } finally {
      for (const [, d] of drafters) d.close();
      model.close();
    }
  }
  if (args.json) {
    await Deno.writeTextFile(
      args.json,
      JSON.stringify(
        { target: target.label, maxNewTokens: N, draftLength: K, prompts: prompts.length, rows },
        null,
        2,
      ) +
        "\n",
    );
  }
  console.log(allSame ? "all outputs identical to plain decoding" : "OUTPUTS DIFFER");
  if (!allSame) Deno.exit(1);
}

if (import.meta.main) await runMain(main);
