/**
 * Bits per byte of a model over text files (the paper's measure), with the state carried across
 * chunks of --context bytes, next to xz -9e and gzip -9 on the same bytes for scale.
 *
 * deno task evaluate --text_files pg19_samples/860.txt --model_id tiny \
 *   [--context 2048] [--filepath_to_store_outputs results/eval.json]
 */
import { baselineBitsPerByte, modelBitsPerByte } from "../src/analysis/bits_per_byte.ts";
import { checkBounded } from "../src/config/defaults.ts";
import {
  addModelFlags,
  addOutputFlags,
  createParser,
  type ModelArgs,
  type OutputArgs,
  parseArgs,
  runMain,
  UsageError,
  UserError,
} from "../src/cli/mod.ts";
import {
  checkOutputPath,
  openConfig,
  openModel,
  progressCallback,
  storeOutputs,
} from "../src/cli/session.ts";
import { atomicReplace } from "../src/io/atomic.ts";
import { readFileLimited } from "../src/io/read_limited.ts";
import { MambaByteLM } from "../src/model/model.ts";

const PROG = "evaluate.ts";
/**
 * Largest text file scored: 256 MiB. Scoring runs at thousands of bytes a second at best (hours
 * for this much), and the xz/gzip baselines hold the file in memory; split larger corpora.
 */
const MAX_TEXT_FILE_BYTES = 256 << 20;

interface EvalArgs extends ModelArgs, OutputArgs {
  text_files: string[];
  context: number | null;
}

interface Row {
  file: string;
  bytes: number;
  model_bits_per_byte: number;
  xz_bits_per_byte: number | null;
  gzip_bits_per_byte: number | null;
  nats: number;
  scored: number;
}

function fmt(x: number | null): string {
  return x === null ? "n/a" : x.toFixed(4);
}

async function main(argv: string[]): Promise<void> {
  const p = createParser(PROG, "Bits per byte of a MambaByte model over text files.");
  addModelFlags(p);
  p.add_argument("--text_files", { nargs: "+", required: true, help: "files to score" });
  p.add_argument("--context", {
    type: "int",
    default: null,
    help: "chunk length in bytes; the state is carried across chunks (default: the config's)",
  });
  addOutputFlags(p);
  const args = parseArgs<EvalArgs>(p, argv);
  const badContext = args.context === null ? null : checkBounded("context", args.context, "value");
  if (badContext) {
    throw new UsageError(PROG, `argument --context: ${badContext.replace(/^value /, "")}`);
  }
  const out = args.filepath_to_store_outputs;
  if (out !== null && !out.toLowerCase().endsWith(".json")) await checkOutputPath(PROG, out);
  const texts: { file: string; bytes: Uint8Array }[] = [];
  for (const file of args.text_files) {
    const bytes = await readFileLimited(file, MAX_TEXT_FILE_BYTES, "text file", {
      makeError: (message) => new UserError(message),
    });
    texts.push({ file, bytes });
  }
  const cfg = await openConfig(PROG, args);
  const model = await openModel(args, cfg, args.quiet);
  try {
    // --context: a second view of the same weights with another chunk length (never closed: the
    // weights and the backend are the loaded model's).
    const lm = args.context === null ? model : new MambaByteLM(
      model.backend,
      model.config,
      model.weights,
      { source: model.source, chunkSize: args.context },
    );
    const rows: Row[] = [];
    for (const t of texts) {
      const bar = progressCallback(`scoring ${t.file}`, args.quiet);
      const r = await modelBitsPerByte(lm, t.bytes, bar.update);
      bar.done();
      const base = await baselineBitsPerByte(t.bytes);
      rows.push({
        file: t.file,
        bytes: t.bytes.length,
        model_bits_per_byte: r.bitsPerByte,
        xz_bits_per_byte: base.xz,
        gzip_bits_per_byte: base.gzip,
        nats: r.nats,
        scored: r.scored,
      });
    }
    const nats = rows.reduce((s, r) => s + r.nats, 0);
    const scored = rows.reduce((s, r) => s + r.scored, 0);
    const overall = scored ? nats / Math.LN2 / scored : NaN;
    const modelId = model.config.id;
    console.log(`model ${modelId} (${model.source}), context ${lm.chunkSize}`);
    console.log("file | bytes | model bits/byte | xz -9e | gzip -9");
    for (const r of rows) {
      console.log(
        `${r.file} | ${r.bytes} | ${fmt(r.model_bits_per_byte)} | ${fmt(r.xz_bits_per_byte)} | ${
          fmt(r.gzip_bits_per_byte)
        }`,
      );
    }
    console.log(`overall | ${scored + rows.length} | ${fmt(overall)} | | `);
    if (out !== null) {
      const record = {
        model_id: modelId,
        pretrained_model_filepath: args.pretrained_model_filepath,
        source: model.source,
        context: lm.chunkSize,
        files: rows,
        overall_bits_per_byte: overall,
      };
      if (out.toLowerCase().endsWith(".json")) {
        await atomicReplace(
          out,
          (tmp) => Deno.writeTextFile(tmp, JSON.stringify(record, null, 2) + "\n"),
        );
        if (!args.quiet) console.error(`stored outputs in ${out}`);
      } else {
        await storeOutputs(out, record, args.quiet);
      }
    }
  } finally {
    model.close();
  }
}

if (import.meta.main) await runMain(main);
