/**
 * Writes a visualisation in one of three formats: the interactive HTML page, standalone SVG
 * figures (heatmap, surprisal plot, layer plot) for papers, or a PNG of the page's figure
 * rasterised by headless Chromium. Every file is written whole or not at all.
 *
 * @module
 */

import { dirname } from "node:path";
import { MambaByteError } from "../errors.ts";
import { atomicReplace } from "../io/atomic.ts";
import type { VizData } from "./data.ts";
import { renderHtml } from "./html.ts";
import { rasterisePage } from "./png.ts";
import { figureWidth, heatmapSvg, layerPlotSvg, plotLayout, surprisalPlotSvg } from "./svg.ts";

/** Output formats. */
export const VIZ_FORMATS = ["html", "svg", "png"] as const;
/** One of {@link VIZ_FORMATS}. */
export type VizFormat = (typeof VIZ_FORMATS)[number];

/** The format an output path's extension names (.html/.htm, .svg, .png), or null. */
export function formatOfPath(path: string): VizFormat | null {
  const m = /\.(html?|svg|png)$/i.exec(path);
  if (!m) return null;
  const ext = m[1].toLowerCase();
  return ext === "htm" ? "html" : ext as VizFormat;
}

/**
 * Pixels per byte when --cell_width is not given: the HTML page scrolls, so it keeps at least
 * 2 px per byte (up to 12 for short texts); SVG and PNG fit the positions into 1200 px.
 */
export function defaultCellWidth(format: VizFormat, positions: number): number {
  if (format === "html") return Math.max(2, Math.min(12, Math.floor(1200 / positions)));
  return Math.min(12, 1200 / positions);
}

/** The SVG files written for `output` (x.svg -> x.heatmap.svg, x.surprisal.svg, x.<q>.svg). */
export function svgPaths(output: string, data: VizData): string[] {
  const stem = output.replace(/\.svg$/i, "");
  const s = data.settings;
  return [
    `${stem}.heatmap.svg`,
    `${stem}.surprisal.svg`,
    `${stem}.${s.layer_quantity}_layer${s.layer}.svg`,
  ];
}

/**
 * Checks, before any work, that files can be written next to `output`: its nearest existing
 * folder is a folder and takes a file (probed with a temporary one, removed at once).
 */
export async function checkOutputFolder(output: string): Promise<void> {
  let dir = dirname(output);
  for (;;) {
    const info = await Deno.stat(dir).catch(() => null);
    if (info) {
      if (!info.isDirectory) {
        throw new MambaByteError(`cannot write ${output}: ${dir} is not a folder`);
      }
      break;
    }
    if (dirname(dir) === dir) break;
    dir = dirname(dir);
  }
  try {
    await Deno.remove(await Deno.makeTempFile({ dir, prefix: ".mambabyte-probe-" }));
  } catch (e) {
    throw new MambaByteError(`cannot write ${output}: ${(e as Error).message}`);
  }
}

/** Writes `data` as `format` to `output`; returns the paths written. */
export async function writeVisualization(
  data: VizData,
  opts: { format: VizFormat; output: string; cellWidth?: number },
): Promise<string[]> {
  const cell = opts.cellWidth ?? defaultCellWidth(opts.format, data.bytes.length);
  const layout = plotLayout(cell);
  if (opts.format === "html") {
    const html = renderHtml(data, { layout });
    await atomicReplace(opts.output, (t) => Deno.writeTextFile(t, html));
    return [opts.output];
  }
  if (opts.format === "png") {
    const html = renderHtml(data, { layout, figure: true });
    await rasterisePage(html, opts.output, figureWidth(layout, data.bytes.length));
    return [opts.output];
  }
  const paths = svgPaths(opts.output, data);
  const svgs = [
    heatmapSvg(data, layout),
    surprisalPlotSvg(data, layout),
    layerPlotSvg(data, layout),
  ];
  for (let i = 0; i < paths.length; i++) {
    const doc = `<?xml version="1.0" encoding="UTF-8"?>\n${svgs[i]}\n`;
    await atomicReplace(paths[i], (t) => Deno.writeTextFile(t, doc));
  }
  return paths;
}
