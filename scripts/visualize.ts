/**
 * Pictures of MambaByte's internals over a text (the paper's Appendix F): the text with each byte
 * coloured by its surprisal, rank, discrete-A norm or delta; a layers x positions heatmap; line
 * plots of surprisal and of one layer's quantity with a moving average; the settings. One
 * self-contained HTML page (nothing loaded from the network), standalone SVG figures, or a PNG.
 *
 * deno task visualize --prompt_file pg19_samples/860.txt --color_by discrete_A --layer 3 \
 *   --output artefacts/860.html
 * deno task visualize --from_outputs artefacts/dA_860_fro.msgpack --output artefacts/860.svg
 */
import {
  addModelFlags,
  addPromptFlags,
  createParser,
  type ModelArgs,
  parseArgs,
  type PromptArgs,
  resolvePrompt,
  runMain,
  UsageError,
  UserError,
} from "../src/cli/mod.ts";
import { openConfig, openModel, progressCallback } from "../src/cli/session.ts";
import { MambaByteError } from "../src/errors.ts";
import {
  assembleViz,
  COLOR_BY,
  type ColorBy,
  type HeatmapScale,
  LAYER_QUANTITIES,
  type LayerQuantity,
  parseRange,
  type VizInputs,
  type VizSettings,
} from "../src/viz/data.ts";
import { chromiumMissing } from "../src/viz/chromium.ts";
import { vizInputsFromModel } from "../src/viz/from_model.ts";
import { vizInputsFromOutputs } from "../src/viz/from_outputs.ts";
import {
  checkOutputFolder,
  formatOfPath,
  VIZ_FORMATS,
  type VizFormat,
  writeVisualization,
} from "../src/viz/write.ts";

const PROG = "visualize.ts";

interface VizArgs extends ModelArgs, PromptArgs {
  from_outputs: string[] | null;
  color_by: ColorBy;
  layer: number | null;
  layer_quantity: LayerQuantity | null;
  heatmap_scale: HeatmapScale;
  window: number;
  range: string | null;
  cell_width: number | null;
  format: VizFormat | null;
  output: string;
  quiet: boolean;
}

/** The command line as a shell would take it back (very long values shortened). */
function commandLine(argv: string[]): string {
  const quote = (a: string) => {
    const s = a.length > 120 ? `${a.slice(0, 60)}...(${a.length} chars)` : a;
    return /^[\w@%+=:,./-]+$/.test(s) ? s : `'${s.replace(/'/g, `'\\''`)}'`;
  };
  return ["deno", "task", "visualize", ...argv.map(quote)].join(" ");
}

// Argparse names a converter that throws in its message ("invalid int value: 'x'"), as the other
// scripts' flags read.
function int(s: string): number {
  if (!/^[+-]?\d+$/.test(s.trim())) throw new TypeError(`not an integer: ${s}`);
  return Number(s);
}
function float(s: string): number {
  const x = Number(s);
  if (s.trim() === "" || !Number.isFinite(x)) throw new TypeError(`not a number: ${s}`);
  return x;
}

function usage(message: string): UsageError {
  return new UsageError(PROG, message, "");
}

/** Runs `f`, reporting its flag errors (MambaByteError with exit code 2) as usage errors. */
function asUsage<T>(f: () => T): T {
  try {
    return f();
  } catch (e) {
    if (e instanceof MambaByteError && e.exitCode === 2) throw usage(e.message);
    throw e;
  }
}

async function main(argv: string[]): Promise<void> {
  const p = createParser(
    PROG,
    "Draw MambaByte's internals over a text (the paper's Appendix F): an HTML page, SVG or PNG.",
  );
  addModelFlags(p);
  addPromptFlags(p, false);
  const g = p.add_argument_group({ title: "visualization" });
  g.add_argument("--from_outputs", {
    nargs: "+",
    default: null,
    help: "draw from outputs files of the extraction scripts (.msgpack, .pkl, .safetensors) " +
      "instead of running a model",
  });
  g.add_argument("--color_by", {
    choices: [...COLOR_BY],
    default: "surprisal",
    help: "per-byte quantity that colours the text",
  });
  g.add_argument("--layer", {
    type: int,
    default: null,
    help: "layer of discrete_A / delta for the colours and the line plot; null: the first",
  });
  g.add_argument("--layer_quantity", {
    choices: [...LAYER_QUANTITIES],
    default: null,
    help: "per-layer quantity of the heatmap and the second line plot; null: --color_by " +
      "when it is one, else discrete_A",
  });
  g.add_argument("--heatmap_scale", {
    choices: ["row", "global"],
    default: "row",
    help: "heatmap colours per layer (row) or on one scale for all layers (global)",
  });
  g.add_argument("--window", {
    type: int,
    default: 32,
    help: "moving-average window of the line plots, in bytes",
  });
  g.add_argument("--range", {
    default: null,
    help: "byte positions to show, START:END (the model still reads the whole prompt)",
  });
  g.add_argument("--cell_width", {
    type: float,
    default: null,
    help: "pixels per byte in the heatmap and plots; null: html 2-12, svg/png fit 1200 px",
  });
  g.add_argument("--format", {
    choices: [...VIZ_FORMATS],
    default: null,
    help: "output format; null: from --output's extension, else html",
  });
  g.add_argument("--output", {
    required: true,
    help: "output file (svg: x.svg writes x.heatmap.svg, x.surprisal.svg, x.<quantity>_layerN.svg)",
  });
  g.add_argument("--quiet", { action: "store_true", help: "no progress display on stderr" });
  const args = parseArgs<VizArgs>(p, argv);

  const fromModel = args.from_outputs === null;
  if (!fromModel && (args.prompt !== null || args.prompt_file !== null)) {
    throw usage("give a prompt (--prompt or --prompt_file) or --from_outputs, not both");
  }
  if (fromModel && args.prompt === null && args.prompt_file === null) {
    throw usage("give --prompt, --prompt_file or --from_outputs");
  }
  if (args.window < 1) throw usage("argument --window: must be >= 1");
  if (args.layer !== null && args.layer < 0) throw usage("argument --layer: must be >= 0");
  if (args.cell_width !== null && !(args.cell_width > 0 && args.cell_width <= 100)) {
    throw usage("argument --cell_width: must be in (0, 100]");
  }
  const extFormat = formatOfPath(args.output);
  if (args.format !== null && extFormat !== null && args.format !== extFormat) {
    throw usage(`argument --format: ${args.format} does not match --output ${args.output}`);
  }
  const format: VizFormat = args.format ?? extFormat ?? "html";
  const output = extFormat === null ? `${args.output}.${format}` : args.output;
  if (format === "png" && chromiumMissing() !== null) {
    throw new UserError(`--format png needs headless Chromium: ${chromiumMissing()}`);
  }
  await checkOutputFolder(output);
  const colorLayered = args.color_by === "discrete_A" || args.color_by === "delta";
  const layerQuantity: LayerQuantity = args.layer_quantity ??
    (colorLayered ? args.color_by as LayerQuantity : "discrete_A");
  const quantities = [
    ...new Set([layerQuantity, ...(colorLayered ? [args.color_by] : [])]),
  ] as LayerQuantity[];

  let inputs: VizInputs;
  let source: Pick<
    VizSettings,
    "model_id" | "checkpoint" | "device" | "dtype" | "prompt_source" | "outputs_files" | "command"
  >;
  const command = commandLine(argv);
  if (fromModel) {
    const prompt = await resolvePrompt(args);
    if (prompt.bytes.length < 2) throw usage("the prompt needs at least 2 bytes (one to predict)");
    asUsage(() => parseRange(args.range, prompt.bytes.length));
    const cfg = await openConfig(PROG, args);
    const model = await openModel(args, cfg, args.quiet, (mc) => {
      const n = mc.dims.nLayer;
      if (args.layer !== null && args.layer >= n) {
        throw usage(`argument --layer: ${args.layer} is out of range: the model has ${n} layers`);
      }
    });
    try {
      inputs = await vizInputsFromModel(model, prompt.bytes, {
        discreteA: quantities.includes("discrete_A"),
        delta: quantities.includes("delta"),
        progress: (label) => progressCallback(label, args.quiet),
      });
      source = {
        model_id: model.config.id,
        checkpoint: model.source,
        device: model.device,
        dtype: args.dtype ?? cfg.general.dtype,
        prompt_source: prompt.source === "prompt_file"
          ? args.prompt_file!
          : `--prompt (${prompt.bytes.length} bytes)`,
        command,
      };
    } finally {
      model.close();
    }
  } else {
    const r = await vizInputsFromOutputs(args.from_outputs!, {
      quantities,
      ranks: args.color_by === "rank",
    });
    inputs = r.inputs;
    source = {
      model_id: r.model_id,
      checkpoint: r.checkpoint,
      prompt_source: `the prompt stored in ${args.from_outputs![0]}`,
      outputs_files: args.from_outputs!,
      command,
    };
  }
  const layerMap = layerQuantity === "discrete_A" ? inputs.discreteA! : inputs.delta!;
  const layer = args.layer ?? Math.min(...layerMap.keys());
  const data = asUsage(() =>
    assembleViz(inputs, {
      colorBy: args.color_by,
      layer,
      layerQuantity,
      window: args.window,
      range: parseRange(args.range, inputs.bytes.length),
      heatmapScale: args.heatmap_scale,
      source,
    })
  );
  const t0 = performance.now();
  const written = await writeVisualization(data, {
    format,
    output,
    cellWidth: args.cell_width ?? undefined,
  });
  if (!args.quiet) {
    const ms = Math.round(performance.now() - t0);
    for (const w of written) console.error(`wrote ${w}`);
    console.error(`(${format} rendered in ${ms} ms)`);
  }
}

if (import.meta.main) await runMain(main);
